"""deepgemm_ops._jit: source -> cubin with NVRTC (default) or nvcc and a content-hashed disk cache; _toolchain lookups.

Compiling needs the CUTLASS headers (skips without); no GPU.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path
from unittest import mock

import expecttest
from conftest import HAVE_CUTLASS, HAVE_NVRTC, NVCC, requires_nvcc, requires_nvrtc

from deepgemm_ops import _jit, _nvrtc, _toolchain

REPO = Path(__file__).resolve().parent.parent



TINY_KERNEL = textwrap.dedent(
    """\
    extern "C" __global__ void fill(float* out, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) out[i] = static_cast<float>(i);
    }
    """
)
# Includes a CuTe header, so a precompiled header has something to cover.
CUTE_KERNEL = '#include <cute/arch/mma_sm90_gmma.hpp>\n' + TINY_KERNEL


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
    os.environ["DG_JIT_USE_NVRTC"] = "0"
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
        env["DG_JIT_USE_NVRTC"] = "0"  # the nvcc tests count compiles through a wrapper; TestNvrtc sets it back
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
        command = command.replace(str(_toolchain.cutlass_include_dir()), "<cutlass>")
        tmp_name = command.split(" -o ")[1].split()[0]
        self.assertExpectedInline(
            command.replace(tmp_name, "<entry>/<tmp>"),
            """\
[deepgemm_ops.jit] <nvcc> -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -cubin -I<kernels> -I<cutlass> -o <entry>/<tmp> <entry>/kernel.cu
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


class TestCacheEdges(JitTestCase):
    """A busy lock, a compiler that writes nothing, an unusable cache directory (no compile needed for the first and
    the last; the second runs a fake nvcc)."""

    def setUp(self) -> None:
        super().setUp()
        if not HAVE_CUTLASS:
            self.skipTest("needs the CUTLASS headers (every compile configuration names them)")

    def test_waiting_for_a_busy_lock_is_announced_and_times_out(self):
        import fcntl

        del os.environ["DG_JIT_USE_NVRTC"]
        if not HAVE_NVRTC:
            self.skipTest("needs NVRTC")
        cubin = _jit._cubin_path(TINY_KERNEL, "busy", _jit.Compiler(), [_jit.kernel_dir()])
        cubin.parent.mkdir(parents=True)
        os.environ["DG_JIT_LOCK_TIMEOUT"] = "0.3"
        with open(cubin.parent / ".lock", "a") as held, mock.patch("sys.stderr", new_callable=io.StringIO) as err:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as another process compiling the same kernel would
            with self.assertRaises(RuntimeError) as ctx:
                _jit.compile_cubin(TINY_KERNEL, "busy")
        lock = str(cubin.parent / ".lock")
        self.assertExpectedInline(err.getvalue().replace(lock, "<lock>").replace(cubin.parent.name, "<entry>"), """\
[deepgemm_ops.jit] waiting for another process compiling <entry> (lock <lock>)
""")
        self.assertExpectedInline(str(ctx.exception).replace(lock, "<lock>"), """deepgemm_ops: another process has held the compile lock <lock> for 0.3 s (DG_JIT_LOCK_TIMEOUT); if no compile is running, a process holding it hangs: stop it, or raise DG_JIT_LOCK_TIMEOUT""")
        os.environ["DG_JIT_LOCK_TIMEOUT"] = "soon"
        with self.assertRaises(ValueError) as ctx:
            _jit.lock_timeout_s()
        self.assertExpectedInline(str(ctx.exception), """DG_JIT_LOCK_TIMEOUT must be a number of seconds >= 0, got 'soon'""")

    def test_a_compiler_that_writes_nothing_publishes_nothing(self):
        fake = self.tmp / "silent_nvcc"
        fake.write_text('#!/bin/sh\ncase " $* " in *" --version "*) echo "Cuda compilation tools, release 13.0";; esac\n'
                        "exit 0\n")
        fake.chmod(0o755)
        os.environ["DG_JIT_NVCC_COMPILER"] = str(fake)
        with self.assertRaises(RuntimeError) as ctx:
            _jit.compile_cubin(TINY_KERNEL, "silent")
        (entry,) = (self.cache / "kernels").iterdir()
        self.assertExpectedInline(str(ctx.exception).replace(str(entry), "<entry>").replace(entry.name, "<name>"), """deepgemm_ops: nvcc reported success for <name> but wrote no cubin (0 bytes); source kept at <entry>/kernel.cu""")
        self.assertEqual(sorted(p.name for p in entry.iterdir()), [".lock", "kernel.cu"])

    def test_unusable_cache_directory(self):
        blocker = self.tmp / "a_file"
        blocker.write_text("")
        os.environ["DG_JIT_CACHE_DIR"] = str(blocker / "cache")
        with self.assertRaises(RuntimeError) as ctx:
            _jit.compile_cubin(TINY_KERNEL, "nowhere")
        self.assertExpectedInline(str(ctx.exception).replace(str(self.tmp), "<tmp>"), """deepgemm_ops: cannot write the kernel cache at <tmp>/a_file/cache (Not a directory): set DG_JIT_CACHE_DIR to a writable directory""")


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
        memo = next((self.cache / "nvcc").iterdir())
        memo.write_text("garbage")  # a corrupt memo is not trusted
        _jit.nvcc_version.cache_clear()
        self.assertIn("release 13.0", _jit.nvcc_version(str(fake)))
        self.assertEqual(runs(), 2)
        self.assertIn("release 13.0", memo.read_text())
        write("13.1, a newer build")
        os.utime(fake, ns=(0, 10**18))  # a different mtime even within the clock's resolution
        _jit.nvcc_version.cache_clear()
        self.assertIn("release 13.1", _jit.nvcc_version(str(fake)))
        self.assertEqual(runs(), 3)
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


def _nvrtc_compiles() -> int:
    setup = _toolchain.nvrtc_setup()
    return _nvrtc.load(setup.library, setup.jitlink).compiles


@requires_nvrtc
class TestNvrtc(JitTestCase):
    def setUp(self) -> None:
        super().setUp()
        del os.environ["DG_JIT_USE_NVRTC"]  # the default

    def test_default_compiler_miss_then_hit(self):
        before = _nvrtc_compiles()
        first = _jit.compile_cubin(TINY_KERNEL, "tiny")
        self.assertTrue(first.read_bytes().startswith(b"\x7fELF"))
        self.assertEqual(_jit.compile_cubin(TINY_KERNEL, "tiny"), first)
        self.assertEqual(_nvrtc_compiles(), before + 1)
        self.assertEqual(self.compiles(), 0)  # nvcc never ran

    def test_key_differs_from_nvcc(self):
        if NVCC is None:
            self.skipTest("needs nvcc")
        nvrtc = _jit.compile_cubin(TINY_KERNEL, "both")
        os.environ["DG_JIT_USE_NVRTC"] = "0"
        self.assertNotEqual(_jit.compile_cubin(TINY_KERNEL, "both"), nvrtc)

    def test_compile_error_names_kernel_and_kept_source(self):
        with self.assertRaises(RuntimeError) as ctx:
            _jit.compile_cubin("this is not C++;\n", "broken")
        (entry,) = (self.cache / "kernels").iterdir()
        lines = str(ctx.exception).replace(str(entry), "<entry>").splitlines()
        self.assertExpectedInline(
            lines[0],
            """deepgemm_ops: NVRTC failed to compile kernel 'broken' (nvrtcCompileProgram failed: NVRTC_ERROR_COMPILATION (6)); source kept at <entry>/kernel.cu""",
        )
        self.assertIn("error", lines[1])
        self.assertEqual(sorted(p.name for p in entry.iterdir()), [".lock", "kernel.cu"])

    def test_print_compiler_command(self):
        os.environ["DG_JIT_PRINT_COMPILER_COMMAND"] = "1"
        setup = _toolchain.nvrtc_setup()
        with mock.patch("sys.stderr", new_callable=io.StringIO) as err:
            cubin = _jit.compile_cubin(TINY_KERNEL, "cmd", pch=False)
        command = err.getvalue()
        for path, tag in ((cubin.parent, "<entry>"), (_jit.kernel_dir(), "<kernels>"), (setup.library, "<libnvrtc>"),
                          (setup.jitlink, "<libnvJitLink>"),
                          (_toolchain.cutlass_include_dir(), "<cutlass>"), (setup.libcudacxx_include, "<libcu++>"),
                          (setup.cuda_include, "<cuda>")):  # here the CUDA headers hold cccl/, so no third -I
            command = command.replace(str(path), tag)
        self.assertExpectedInline(
            command,
            """\
[deepgemm_ops.jit] NVRTC <libnvrtc> -std=c++17 -arch=sm_90a -default-device -I<kernels> -I<cutlass> -I<cuda> -I<libcu++> -dlto <entry>/kernel.cu | nvJitLink <libnvJitLink> -arch=sm_90a -lto -optimize-unused-variables
""",
        )

    def test_ptxas_verbose(self):
        os.environ["DG_JIT_PTXAS_VERBOSE"] = "1"
        with mock.patch("sys.stderr", new_callable=io.StringIO) as err:
            _jit.compile_cubin(TINY_KERNEL, "verbose")
        self.assertIn("ptxas info", err.getvalue())

    def test_pch_from_the_second_compile_of_a_process(self):
        # A fresh process: no PCH for its first compile (the fastest cold first call), one for the next.
        code = f"""
            import os
            from deepgemm_ops import _jit, _nvrtc, _toolchain
            setup = _toolchain.nvrtc_setup()
            nvrtc = _nvrtc.load(setup.library, setup.jitlink)
            source = {CUTE_KERNEL!r}
            _jit.compile_cubin(source, "first")
            print(sorted(os.listdir(nvrtc.pch_dir())))
            _jit.compile_cubin(source.replace("fill", "fill2"), "second")
            print([name.endswith(".pch") for name in os.listdir(nvrtc.pch_dir())])
        """
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=os.environ.copy(),
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.splitlines(), ["[]", "[True]"])


def _sass_instructions(cubin: Path) -> list[str]:
    from test_kernel_compile import CUOBJDUMP

    sass = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    return [line.split("*/", 1)[1].split("/*")[0].strip() for line in sass.splitlines() if line.strip().startswith("/*0")]


@requires_nvrtc
class TestCompileCubins(JitTestCase):
    def setUp(self) -> None:
        super().setUp()
        del os.environ["DG_JIT_USE_NVRTC"]  # the default

    def kernels(self) -> list[tuple[str, str]]:
        from deepgemm_ops import _precompile as P

        calls = [P.GemmCall(64, 256, 128), P.GemmCall(4096, 256, 128), P.GemmCall(128, 7168, 2048)]
        return [(k.source(), k.name) for k in P.plan(calls, num_sms=132)]

    def test_one_program_links_each_kernel_as_its_own_compile_would(self):
        from test_kernel_compile import CUOBJDUMP

        if CUOBJDUMP is None:
            self.skipTest("needs cuobjdump")
        kernels = self.kernels()
        before = _nvrtc_compiles()
        seen = []
        batch = _jit.compile_cubins(kernels, lambda i, compiled: seen.append((i, compiled)))
        self.assertEqual(_nvrtc_compiles(), before + 2)  # bn16 + bn64 in one program, bn112 (the ext header) alone
        self.assertEqual(sorted(seen), [(0, True), (1, True), (2, True)])
        for (source, name), (cubin, _) in zip(kernels, batch):
            self.assertEqual((cubin.parent / "kernel.cu").read_text(), source)
            for _, other in kernels:
                self.assertEqual(other.encode() in cubin.read_bytes(), other == name)
        os.environ["DG_JIT_CACHE_DIR"] = str(self.tmp / "singles")
        for (source, name), (cubin, _) in zip(kernels, batch):
            single = _jit.compile_cubin(source, name, pch=True)
            self.assertEqual(single.parent.name, cubin.parent.name)  # same key
            self.assertEqual(_sass_instructions(single), _sass_instructions(cubin))
        os.environ["DG_JIT_CACHE_DIR"] = str(self.cache)
        self.assertEqual(_jit.compile_cubins(kernels), [(cubin, False) for cubin, _ in batch])

    def test_a_broken_kernel_is_named_and_the_others_still_compile(self):
        good = self.kernels()[:2]
        broken = (good[0][0].split("\n", 1)[0] + "\nthis is not C++;\n", "broken")
        with self.assertRaises(RuntimeError) as ctx:
            _jit.compile_cubins([*good, broken])
        self.assertIn("failed to compile kernel 'broken'", str(ctx.exception))
        self.assertEqual([c for _, c in _jit.compile_cubins(good)], [False, False])  # published before the error


class TestToolchain(expecttest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(tempfile.mkdtemp(prefix="dg_toolchain_test_"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        for cached in (_toolchain.cutlass_include_dir, _toolchain.nvrtc_setup):
            cached.cache_clear()
            self.addCleanup(cached.cache_clear)

    def fake_cutlass(self, root: Path, minor: int) -> Path:
        (root / "cute" / "arch").mkdir(parents=True)
        (root / "cute" / "arch" / "mma_sm90_gmma.hpp").write_text("")
        (root / "cutlass").mkdir()
        (root / "cutlass" / "version.h").write_text(
            f"#define CUTLASS_MAJOR 4\n#define CUTLASS_MINOR {minor}\n#define CUTLASS_PATCH 0\n")
        return root

    def test_cutlass_submodule_before_wheel_and_version_check(self):
        submodule = self.fake_cutlass(self.tmp / "third_party" / "cutlass" / "include", minor=2)
        wheel = self.fake_cutlass(self.tmp / "wheel", minor=2)
        with mock.patch.object(_toolchain, "_cutlass_candidates", return_value=[submodule, wheel]):
            self.assertEqual(_toolchain.cutlass_include_dir(), submodule)
        old = self.fake_cutlass(self.tmp / "old", minor=1)
        _toolchain.cutlass_include_dir.cache_clear()
        with mock.patch.object(_toolchain, "_cutlass_candidates", return_value=[self.tmp / "empty", old]):
            with self.assertRaises(RuntimeError) as ctx:
                _toolchain.cutlass_include_dir()
        self.assertExpectedInline(str(ctx.exception).replace(str(self.tmp), "<tmp>"), """deepgemm_ops: the kernels need CUTLASS >= 4.2, found 4.1.0 at <tmp>/old: pip install --no-deps 'nvidia-cutlass==4.2.0.0'""")

    def test_cutlass_missing(self):
        with mock.patch.object(_toolchain, "_cutlass_candidates", return_value=[self.tmp / "a", self.tmp / "b"]):
            with self.assertRaises(RuntimeError) as ctx:
                _toolchain.cutlass_include_dir()
        self.assertExpectedInline(str(ctx.exception).replace(str(self.tmp), "<tmp>"), """deepgemm_ops: CUTLASS/CuTe headers not found (the kernels are built on them). In a source checkout: git submodule update --init third_party/cutlass; otherwise: pip install --no-deps 'nvidia-cutlass==4.2.0.0' (headers only; --no-deps skips its Python dependencies, which are not needed). Looked in: <tmp>/a, <tmp>/b""")

    def test_the_submodule_is_pinned_and_looked_up(self):
        gitmodules = (REPO / ".gitmodules").read_text()
        self.assertIn('[submodule "third_party/cutlass"]', gitmodules)
        self.assertEqual(_toolchain._cutlass_candidates()[0], REPO / "third_party" / "cutlass" / "include")

    def fake_wheel_root(self, *, cccl: bool, jitlink: bool = True) -> Path:
        root = self.tmp / "nvidia" / "cu13"
        (root / "lib").mkdir(parents=True)
        for name in ("libnvrtc.so.13", "libnvrtc.alt.so.13", "libnvrtc-builtins.so.13.0", "libnvJitLink.so.12"):
            (root / "lib" / name).write_text("")
        if jitlink:
            (root / "lib" / "libnvJitLink.so.13").write_text("")
        (root / "include").mkdir()
        (root / "include" / "cuda_bf16.h").write_text("")
        if cccl:
            (root / "include" / "cccl" / "cuda" / "std").mkdir(parents=True)
            (root / "include" / "cccl" / "cuda" / "std" / "cstdint").write_text("")
        return root

    def test_nvrtc_from_wheels(self):
        root = self.fake_wheel_root(cccl=True)
        with mock.patch.object(_toolchain, "_nvidia_wheel_roots", return_value=[root]), \
                mock.patch.object(_toolchain, "cuda_home", return_value=None):
            setup = _toolchain.nvrtc_setup()
        self.assertEqual(setup, _toolchain.NvrtcSetup(root / "lib" / "libnvrtc.so.13", root / "lib" / "libnvJitLink.so.13",
                                                      root / "include", root / "include" / "cccl", "wheels"))

    def test_nvrtc_include_dirs_with_libcudacxx_in_another_site_directory(self):
        # CUTLASS includes <cccl/cuda/std/...> under CUDA 13: the directory above cccl/ must be searched too.
        root = self.fake_wheel_root(cccl=False)
        other = self.tmp / "site2" / "nvidia" / "cu13"
        (other / "include" / "cccl" / "cuda" / "std").mkdir(parents=True)
        (other / "include" / "cccl" / "cuda" / "std" / "cstdint").write_text("")
        with mock.patch.object(_toolchain, "_nvidia_wheel_roots", return_value=[other, root]), \
                mock.patch.object(_toolchain, "cuda_home", return_value=None):
            dirs = _toolchain.nvrtc_setup().include_dirs()
        self.assertEqual(dirs, [root / "include", other / "include" / "cccl", other / "include"])

    def test_nvrtc_without_jitlink_and_libcudacxx_names_the_wheels(self):
        root = self.fake_wheel_root(cccl=False, jitlink=False)
        with mock.patch.object(_toolchain, "_nvidia_wheel_roots", return_value=[root]), \
                mock.patch.object(_toolchain, "cuda_home", return_value=None):
            with self.assertRaises(RuntimeError) as ctx:
                _toolchain.nvrtc_setup()
        self.assertExpectedInline(str(ctx.exception).replace(str(self.tmp), "<tmp>"), """deepgemm_ops: NVRTC (<tmp>/nvidia/cu13/lib/libnvrtc.so.13) needs nvJitLink (libnvJitLink.so.13: pip install nvidia-nvjitlink) and the libcu++ headers (cuda/std/cstdint: pip install nvidia-cuda-cccl) with the same CUDA version, or a CUDA toolkit (set CUDA_HOME); looked in <tmp>/nvidia/cu13""")

    def test_no_nvrtc_anywhere(self):
        with mock.patch.object(_toolchain, "_nvidia_wheel_roots", return_value=[]), \
                mock.patch.object(_toolchain, "cuda_home", return_value=None):
            with self.assertRaises(RuntimeError) as ctx:
                _toolchain.nvrtc_setup()
        self.assertExpectedInline(str(ctx.exception), """deepgemm_ops: NVRTC not found: a CUDA build of torch installs it (the nvidia-cuda-nvrtc wheel), so does a CUDA toolkit (lib64/libnvrtc.so; set CUDA_HOME). Or compile with nvcc: DG_JIT_USE_NVRTC=0""")


def _without_toolkit_command() -> list[str] | None:
    """A command prefix that runs its argument with the CUDA toolkit hidden: a private mount namespace with an empty
    tmpfs over /usr/local/cuda (needs root and unshare), or None where that is not possible."""
    unshare = shutil.which("unshare")
    if unshare is None or not Path("/usr/local/cuda").is_dir():
        return None
    probe = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /usr/local/cuda && test -z \"$(ls -A /usr/local/cuda)\""],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return [unshare, "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none /usr/local/cuda && exec "$@"',
            "hide-toolkit"]


@requires_nvrtc
class TestWithoutToolkit(unittest.TestCase):
    def test_compiles_and_sass_checks_a_kernel_from_the_wheels_alone(self):
        hide = _without_toolkit_command()
        if hide is None:
            self.skipTest("cannot hide the CUDA toolkit here (needs root and unshare)")
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH") and not k.startswith("DG_")}
        env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                      if d and not os.path.exists(os.path.join(d, "nvcc")))
        with tempfile.TemporaryDirectory() as cache:
            env["DG_JIT_CACHE_DIR"] = cache
            code = """
                import shutil, subprocess, sys
                sys.path.insert(0, "test")
                from deepgemm_ops import _codegen, _jit, _toolchain
                from test_kernel_compile import CASES, CUOBJDUMP
                assert shutil.which("nvcc") is None and _toolchain.cuda_home() is None, "the toolkit is visible"
                setup = _toolchain.nvrtc_setup()
                cfg, n, k = CASES["dense_bf16_large"]
                source, symbol = _codegen.fp8_gemm_source(cfg, n, k)
                cubin = _jit.compile_cubin(source, symbol)
                sass = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
                print(setup.source, "QGMMA.64x128x32.F32.E4M3.E4M3" in sass, "STSM" in sass)
            """
            done = subprocess.run([*hide, sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=600)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertEqual(done.stdout.split(), ["wheels", "True", "True"])


if __name__ == "__main__":
    unittest.main()
