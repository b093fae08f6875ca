"""deepgemm_ops._runtime: the host C++ module builds against this torch and imports without a GPU.

The build takes ~15-60 s on a 2-core machine the first time (then torch's extension cache serves it); set
DG_SKIP_HOST_BUILD_TESTS=1 to skip the tests that build. GPU tests skip without a CUDA device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path
from unittest import mock

import expecttest
import torch
from conftest import NVCC, requires_cuda, requires_no_cuda

from deepgemm_ops import _jit, _runtime, _toolchain

REPO = Path(__file__).resolve().parent.parent


requires_build = unittest.skipIf(
    os.environ.get("DG_SKIP_HOST_BUILD_TESTS", "0") not in ("", "0") or NVCC is None,
    "host module build tests disabled (DG_SKIP_HOST_BUILD_TESTS) or nvcc absent",
)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (a clean CUDA_HOME / import state) from the repository root."""
    full_env = {**os.environ, **env}
    full_env.pop("CUDA_HOME", None)  # exercise the detection; the nvcc wrapper on PATH misleads torch's guess
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=full_env, capture_output=True, text=True
    )


@requires_build
class TestHostModuleBuild(unittest.TestCase):
    def test_builds_and_imports_without_gpu_then_loads_warm(self):
        code = """
            import time
            import torch
            from deepgemm_ops import _runtime
            start = time.perf_counter()
            m = _runtime.host_module()
            elapsed = time.perf_counter() - start
            assert _runtime.host_module() is m
            print("exports", sorted(n for n in dir(m) if not n.startswith("_")))
            print("has_kernel", m.has_kernel("nothing", 0), "loaded", m.loaded_kernels())
            a = torch.zeros(64, 128).to(torch.float8_e4m3fn)
            sf = torch.ones(64, 1)
            print("door on CPU tensors", m.gemm_door(0, a, sf, a, sf, None, None, None, None, 0, -1, 0))
            ks = torch.tensor([128], dtype=torch.int32)
            print("k-grouped door on CPU tensors", m.k_grouped_gemm_door(a, sf, a, sf, ks, None, None, 0))
            cfg = [128, 128, 128, 5, 2, 384, 1, 8, 100000, 132, 0, 0, 0, 0, 1]
            print("install unloaded", m.install_gemm_plan(0, 0, 64, 64, 128, 1, 0, 0, 0, False, 132, "nothing", cfg))
            print("install bad config", m.install_gemm_plan(0, 0, 64, 64, 128, 1, 0, 0, 0, False, 132, "nothing",
                                                            [96] + cfg[1:]))
            print("plans", m.num_gemm_plans(), m.clear_gemm_plans())
            print("seconds", elapsed)
        """
        cold = _run_python(code, DG_JIT_DEBUG="1")
        self.assertEqual(cold.returncode, 0, cold.stderr[-5000:])
        self.assertIn(
            "exports ['bf16_gemm_door', 'clear_bf16_gemm_plans', 'clear_gemm_plans', 'fp8_cast', 'gemm_door', 'has_kernel', "
            "'install_bf16_gemm_plan', 'install_cast_kernel', 'install_gemm_plan', 'k_grouped_gemm_door', "
            "'load_kernel', 'loaded_kernels', 'num_gemm_plans', 'set_pdl']",
            cold.stdout,
        )
        self.assertIn("has_kernel False loaded []", cold.stdout)
        self.assertNotIn("No CUDA runtime is found", cold.stderr)  # torch's warning, meaningless for the build
        self.assertIn("door on CPU tensors None", cold.stdout)  # declined: the planning path handles it
        self.assertIn("k-grouped door on CPU tensors None", cold.stdout)
        self.assertIn("install unloaded RuntimeError: deepgemm_ops: install_gemm_plan: kernel 'nothing' is not loaded "
                      "on cuda:0", cold.stdout)
        self.assertIn("install bad config ValueError: deepgemm_ops fp8 gemm launch: cfg.block_m must be 64, 128 or 256, got 96",
                      cold.stdout)
        self.assertIn("plans 0 0", cold.stdout)

        warm = _run_python(code, DG_JIT_DEBUG="1")
        self.assertEqual(warm.returncode, 0, warm.stderr[-5000:])
        self.assertNotIn("built host module", warm.stderr)  # the stamped library is imported, nothing is rebuilt
        seconds = float(warm.stdout.split("seconds ")[1])
        self.assertLess(seconds, 2.0, warm.stdout)

    @requires_no_cuda
    def test_loading_without_gpu_raises(self):
        result = _run_python(
            """
            from deepgemm_ops import _runtime
            m = _runtime.host_module()
            try:
                _runtime.check(m.load_kernel("k", 0, b"not a cubin", "fn", 0))
            except RuntimeError as e:
                print("RuntimeError")
            """
        )
        self.assertEqual(result.returncode, 0, result.stderr[-5000:])
        self.assertIn("RuntimeError", result.stdout)


class TestCheck(unittest.TestCase):
    def test_error_texts_become_exceptions(self):
        _runtime.check("")
        for text, kind in (("ValueError: bad a", ValueError), ("RuntimeError: launch failed", RuntimeError),
                           ("RuntimeError: CUDA out of memory. Tried to allocate 56.00 MiB", torch.OutOfMemoryError)):
            with self.assertRaises(kind) as e:
                _runtime.check(text)
            self.assertEqual(str(e.exception), text.partition(": ")[2])


class TestModuleName(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="dg_runtime_test_"))
        (self.tmp / "host").mkdir()
        (self.tmp / "kernels").mkdir()
        (self.tmp / "host" / "a.cpp").write_text('#include "a.hpp"\n')
        (self.tmp / "host" / "a.hpp").write_text('#include "shared.cuh"\n')
        (self.tmp / "kernels" / "shared.cuh").write_text("struct Params {};\n")
        (self.tmp / "kernels" / "device_only.cuh").write_text("// not included by host code\n")
        patcher = mock.patch.object(_jit, "csrc_dir", return_value=self.tmp)
        patcher.start()
        self.addCleanup(patcher.stop)

    def name(self) -> str:
        return _runtime.module_name(_runtime.host_sources())

    def test_follows_sources_and_included_headers_only(self):
        first = self.name()
        self.assertRegex(first, r"^deepgemm_ops_host_[0-9a-f]{12}$")
        (self.tmp / "kernels" / "device_only.cuh").write_text("// edited\n")
        self.assertEqual(self.name(), first)
        (self.tmp / "kernels" / "shared.cuh").write_text("struct Params { int n; };\n")
        second = self.name()
        self.assertNotEqual(second, first)
        (self.tmp / "host" / "b.cpp").write_text("\n")
        self.assertNotEqual(self.name(), second)


class TestCudaHome(expecttest.TestCase):
    def test_replaces_a_guess_without_headers_and_changes_nothing_outside_the_build(self):
        from torch.utils import cpp_extension

        if _toolchain.cuda_home() is None:
            self.skipTest("no CUDA toolkit")
        with mock.patch.object(cpp_extension, "CUDA_HOME", "/usr/local"), mock.patch.dict(os.environ):
            os.environ.pop("CUDA_HOME", None)
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
            home = _runtime.ensure_cuda_home()
            self.assertTrue((home / "include" / "cuda.h").is_file())
            self.assertEqual(cpp_extension.CUDA_HOME, "/usr/local")
            with _runtime._build_environment(home):
                self.assertEqual((cpp_extension.CUDA_HOME, os.environ["CUDA_HOME"]), (str(home), str(home)))
                self.assertEqual(os.environ["TORCH_CUDA_ARCH_LIST"], "9.0a")
            self.assertEqual(cpp_extension.CUDA_HOME, "/usr/local")
            self.assertNotIn("CUDA_HOME", os.environ)
            self.assertNotIn("TORCH_CUDA_ARCH_LIST", os.environ)

    def test_no_toolkit_is_a_clear_error(self):
        from torch.utils import cpp_extension

        with mock.patch.object(cpp_extension, "CUDA_HOME", "/usr/local"), mock.patch.object(
            _toolchain, "cuda_home", return_value=None
        ):
            with self.assertRaises(RuntimeError) as ctx:
                _runtime.ensure_cuda_home()
        self.assertExpectedInline(
            str(ctx.exception),
            """deepgemm_ops: building the host module needs the CUDA toolkit headers: set CUDA_HOME to a toolkit root containing include/cuda.h (torch guessed '/usr/local'; /usr/local/cuda has none either)""",
        )


class TestNumSms(unittest.TestCase):
    def test_sm_count_of_the_given_device_not_the_current_one(self):
        from types import SimpleNamespace

        from deepgemm_ops import _sms

        props = {0: SimpleNamespace(multi_processor_count=132), 1: SimpleNamespace(multi_processor_count=114)}
        with mock.patch.object(torch.cuda, "is_available", return_value=True), \
                mock.patch.object(torch.cuda, "current_device", return_value=0), \
                mock.patch.object(torch.cuda, "get_device_properties", side_effect=props.__getitem__), \
                mock.patch.object(_sms, "_num_sms", None):
            self.assertEqual((_sms.get_num_sms(), _sms.get_num_sms(1), _sms.get_num_sms(0)), (132, 114, 132))
            with mock.patch.object(_sms, "_num_sms", 100):
                self.assertEqual(_sms.get_num_sms(1), 100)  # set_num_sms wins on every device


TINY_KERNEL = 'extern "C" __global__ void fill(float* out, int n) { if (threadIdx.x < n) out[threadIdx.x] = 7.0f; }\n'


@requires_build
@requires_cuda
class TestKernelRegistryOnGpu(unittest.TestCase):
    def test_load_find_and_refuse_during_capture(self):
        m = _runtime.host_module()
        cubin = _jit.compile_cubin(TINY_KERNEL, "registry_test")
        key = f"registry_test {cubin.parent.name}"
        for device in range(torch.cuda.device_count()):
            _runtime.check(m.load_kernel(key, device, str(cubin), "fill", 0))
            _runtime.check(m.load_kernel(key, device, cubin.read_bytes(), "fill", 0))  # already loaded: no-op
            self.assertTrue(m.has_kernel(key, device))
        self.assertFalse(m.has_kernel(key + " other", 0))

        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.stream(stream):
            with self.assertRaisesRegex(RuntimeError, r"capturing a CUDA graph.*deepgemm_ops\.warmup"):
                with torch.cuda.graph(graph, stream=stream):
                    _runtime.check(m.load_kernel(key + " cold during capture", 0, str(cubin), "fill", 0))
        self.assertFalse(m.has_kernel(key + " cold during capture", 0))


if __name__ == "__main__":
    unittest.main()
