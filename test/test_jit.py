"""deepgemm_ops._jit: nvcc → cubin with a content-hashed disk cache. Needs nvcc (skips without), no GPU."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import shutil
import tempfile
import textwrap
import unittest
from pathlib import Path
from unittest import mock

import expecttest

from deepgemm_ops import _jit


def _find_nvcc() -> str | None:
    try:
        return _jit.nvcc_path()
    except RuntimeError:
        return None


NVCC = _find_nvcc()
requires_nvcc = unittest.skipIf(NVCC is None, "nvcc not found")

TINY_KERNEL = textwrap.dedent(
    """\
    extern "C" __global__ void fill(float* out, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) out[i] = static_cast<float>(i);
    }
    """
)


def _nvcc_wrapper(directory: Path, log: Path) -> Path:
    """An nvcc that appends one line per compile (not per --version) to `log`, then runs the real nvcc."""
    wrapper = directory / "nvcc"
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" -cubin "*) echo compile >> "{log}";; esac\nexec "{NVCC}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def _race_worker(cache: str, nvcc: str, barrier, results) -> None:
    os.environ["DG_JIT_CACHE_DIR"] = cache
    os.environ["DG_JIT_NVCC_COMPILER"] = nvcc
    barrier.wait()
    try:
        results.put(str(_jit.compile_cubin(TINY_KERNEL, "race")))
    except Exception as e:  # reported to the parent, which fails the test
        results.put(f"error: {e!r}")


class JitTestCase(expecttest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(tempfile.mkdtemp(prefix="dg_jit_test_"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.cache = self.tmp / "cache"
        self.log = self.tmp / "nvcc.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DG_")}
        env["DG_JIT_CACHE_DIR"] = str(self.cache)
        if NVCC is not None:
            env["DG_JIT_NVCC_COMPILER"] = str(_nvcc_wrapper(self.tmp, self.log))
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def compiles(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def headers(self, root: Path, files: dict[str, str]) -> Path:
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        return root


class TestIncludeScanning(JitTestCase):
    def test_include_targets(self):
        text = '#include "a.cuh"\n  #  include <dir/b.hpp>\n#include MACRO\n#define X\n// #include "c.h"\n'
        self.assertEqual(_jit._include_targets(text), [("a.cuh", True), ("dir/b.hpp", False)])

    def test_project_headers_transitive_and_relative(self):
        root = self.headers(
            self.tmp / "inc",
            {"a.cuh": '#include "sub/b.cuh"\n#include <cuda.h>\n', "sub/b.cuh": '#include "c.cuh"\n', "sub/c.cuh": "x"},
        )
        found = _jit.project_headers('#include "a.cuh"\n#include <vector>\n', [root])
        self.assertEqual(sorted(found), ["0/a.cuh", "0/sub/b.cuh", "0/sub/c.cuh"])


@requires_nvcc
class TestCompileCubin(JitTestCase):
    def test_miss_then_hit(self):
        first = _jit.compile_cubin(TINY_KERNEL, "tiny")
        self.assertTrue(first.read_bytes().startswith(b"\x7fELF"))
        self.assertEqual(first.parent.parent, self.cache / "kernels")
        self.assertTrue(first.parent.name.startswith("tiny_"))
        self.assertEqual((first.parent / "kernel.cu").read_text(), TINY_KERNEL)
        second = _jit.compile_cubin(TINY_KERNEL, "tiny")
        self.assertEqual(first, second)
        self.assertEqual(self.compiles(), 1)

    def test_key_ignores_cache_dir_and_include_locations(self):
        files = {"a.cuh": '#include "b.cuh"\n', "b.cuh": "#define VALUE 3\n"}
        source = '#include "a.cuh"\n' + TINY_KERNEL
        first = _jit.compile_cubin(source, "moved", include_dirs=[self.headers(self.tmp / "one", files)])
        os.environ["DG_JIT_CACHE_DIR"] = str(self.tmp / "other_cache")
        second = _jit.compile_cubin(source, "moved", include_dirs=[self.headers(self.tmp / "two" / "deeper", files)])
        self.assertNotEqual(first, second)
        self.assertEqual(first.parent.name, second.parent.name)

    def test_key_follows_included_header_contents(self):
        root = self.headers(self.tmp / "inc", {"a.cuh": '#include "b.cuh"\n', "b.cuh": "#define VALUE 3\n"})
        source = '#include "a.cuh"\n' + TINY_KERNEL
        first = _jit.compile_cubin(source, "hdr", include_dirs=[root])
        self.assertEqual(_jit.compile_cubin(source, "hdr", include_dirs=[root]), first)
        (root / "b.cuh").write_text("#define VALUE 4\n")
        self.assertNotEqual(_jit.compile_cubin(source, "hdr", include_dirs=[root]), first)
        self.assertEqual(self.compiles(), 2)

    def test_key_follows_flags(self):
        first = _jit.compile_cubin(TINY_KERNEL, "flags")
        second = _jit.compile_cubin(TINY_KERNEL, "flags", extra_flags=["-DEXTRA=1"])
        self.assertNotEqual(first, second)

    def test_corrupt_or_incomplete_cubin_is_rebuilt(self):
        cubin = _jit.compile_cubin(TINY_KERNEL, "corrupt")
        good = cubin.read_bytes()
        sidecar = cubin.with_name("kernel.cubin.sha256")
        damage = [
            lambda: cubin.write_bytes(good[: len(good) // 2]),  # truncated
            lambda: cubin.write_bytes(b"\0" * len(good)),  # not an ELF file
            lambda: cubin.write_bytes(good[:-1] + bytes([good[-1] ^ 1])),  # one flipped bit
            lambda: sidecar.unlink(),  # crash between publishing the cubin and its checksum
        ]
        for i, damage_entry in enumerate(damage):
            damage_entry()
            (cubin.parent / "kernel.cubin.tmp_killed").write_bytes(b"partial")  # from a compile that was killed
            self.assertEqual(_jit.compile_cubin(TINY_KERNEL, "corrupt"), cubin)
            self.assertEqual(cubin.read_bytes(), good)
            self.assertEqual(self.compiles(), i + 2)
            self.assertFalse((cubin.parent / "kernel.cubin.tmp_killed").exists())

    def test_processes_racing_cold_compile_once(self):
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        nvcc = os.environ["DG_JIT_NVCC_COMPILER"]
        workers = [ctx.Process(target=_race_worker, args=(str(self.cache), nvcc, barrier, results)) for _ in range(4)]
        for w in workers:
            w.start()
        paths = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(timeout=60)
            self.assertEqual(w.exitcode, 0)
        self.assertEqual(len(set(paths)), 1, paths)
        self.assertTrue(Path(paths[0]).read_bytes().startswith(b"\x7fELF"))
        self.assertEqual(self.compiles(), 1)
        leftovers = sorted(p.name for p in Path(paths[0]).parent.iterdir())
        self.assertEqual(leftovers, [".lock", "kernel.cu", "kernel.cubin", "kernel.cubin.sha256"])

    def test_compile_error_names_kernel_and_kept_source(self):
        with self.assertRaises(RuntimeError) as ctx:
            _jit.compile_cubin("this is not C++;\n", "broken")
        message = str(ctx.exception)
        kept = self.cache / "kernels"
        (entry,) = kept.iterdir()
        self.assertEqual((entry / "kernel.cu").read_text(), "this is not C++;\n")
        first_line = message.splitlines()[0].replace(str(entry), "<entry>")
        self.assertExpectedInline(
            first_line,
            """deepgemm_ops: nvcc failed to compile kernel 'broken' (exit code 1); source kept at <entry>/kernel.cu""",
        )
        self.assertIn("error", message.splitlines()[1])
        self.assertEqual(sorted(p.name for p in entry.iterdir()), [".lock", "kernel.cu"])

    def test_print_compiler_command(self):
        os.environ["DG_JIT_PRINT_COMPILER_COMMAND"] = "1"
        with mock.patch("sys.stderr", new_callable=io.StringIO) as err:
            cubin = _jit.compile_cubin(TINY_KERNEL, "cmd")
        command = err.getvalue().replace(os.environ["DG_JIT_NVCC_COMPILER"], "<nvcc>")
        command = command.replace(str(cubin.parent), "<entry>").replace(str(_jit.kernel_dir()), "<kernels>")
        tmp_name = command.split(" -o ")[1].split()[0]
        self.assertExpectedInline(
            command.replace(tmp_name, "<entry>/<tmp>"),
            """\
[deepgemm_ops.jit] <nvcc> -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -cubin -I<kernels> -o <entry>/<tmp> <entry>/kernel.cu
""",
        )

    def test_debug_log_and_ptxas_verbose(self):
        os.environ["DG_JIT_DEBUG"] = "1"
        os.environ["DG_JIT_PTXAS_VERBOSE"] = "1"
        with mock.patch("sys.stderr", new_callable=io.StringIO) as err:
            cubin = _jit.compile_cubin(TINY_KERNEL, "verbose")
            _jit.compile_cubin(TINY_KERNEL, "verbose")
        lines = err.getvalue().splitlines()
        self.assertTrue(any("ptxas info" in line and "fill" in line for line in lines), lines)
        self.assertTrue(lines[-2].startswith(f"[deepgemm_ops.jit] compiled {cubin.parent.name} in "), lines)
        self.assertEqual(lines[-1], f"[deepgemm_ops.jit] cache hit {cubin.parent.name}")

    def test_bad_nvcc_override(self):
        os.environ["DG_JIT_NVCC_COMPILER"] = "/nonexistent/bin/nvcc"
        with self.assertRaises(RuntimeError) as ctx:
            _jit.compile_cubin(TINY_KERNEL, "tiny")
        self.assertExpectedInline(
            str(ctx.exception),
            """deepgemm_ops: DG_JIT_NVCC_COMPILER must name an executable nvcc, got '/nonexistent/bin/nvcc' (no such executable file)""",
        )


class TestNvccVersion(JitTestCase):
    def test_memoized_on_disk_per_executable(self):
        # A fake nvcc that logs each run: a new process (cleared in-process memo) reads the disk memo instead of
        # running it again; replacing the executable (new size/mtime) runs it again.
        log = self.tmp / "version.log"
        fake = self.tmp / "fake_nvcc"

        def write(version: str) -> None:
            fake.write_text(f'#!/bin/sh\necho run >> "{log}"\necho "Cuda compilation tools, release {version}"\n')
            fake.chmod(0o755)

        def runs() -> int:
            return len(log.read_text().splitlines()) if log.exists() else 0

        write("13.0")
        self.assertIn("release 13.0", _jit.nvcc_version(str(fake)))
        _jit.nvcc_version.cache_clear()
        self.assertIn("release 13.0", _jit.nvcc_version(str(fake)))
        self.assertEqual(runs(), 1)
        write("13.1, a newer build")
        os.utime(fake, ns=(0, 10**18))  # a different mtime even within the clock's resolution
        _jit.nvcc_version.cache_clear()
        self.assertIn("release 13.1", _jit.nvcc_version(str(fake)))
        self.assertEqual(runs(), 2)
        _jit.nvcc_version.cache_clear()


class TestSettings(JitTestCase):
    def test_bad_name(self):
        with self.assertRaises(ValueError) as ctx:
            _jit.compile_cubin(TINY_KERNEL, "../escape")
        self.assertExpectedInline(
            str(ctx.exception),
            """compile_cubin: name must be non-empty and use only [A-Za-z0-9_-] (it names a cache directory), got '../escape'""",
        )

    def test_cache_dir(self):
        self.assertEqual(_jit.cache_dir(), self.cache)
        del os.environ["DG_JIT_CACHE_DIR"]
        self.assertEqual(_jit.cache_dir(), Path.home() / ".cache" / "deepgemm_ops")

    def test_print_configs_enabled(self):
        self.assertFalse(_jit.print_configs_enabled())
        os.environ["DG_PRINT_CONFIGS"] = "1"
        self.assertTrue(_jit.print_configs_enabled())
        os.environ["DG_PRINT_CONFIGS"] = "0"
        self.assertFalse(_jit.print_configs_enabled())


if __name__ == "__main__":
    unittest.main()
