"""Compile CUDA kernel source to an sm_90a cubin, cached on disk by content.

Public entry point: :func:`compile_cubin`. Compilers: NVRTC by default (in-process, no CUDA toolkit needed: it
comes with CUDA torch's wheels; automatic precompiled headers make every compile after the first in a process
cheaper), nvcc with ``DG_JIT_USE_NVRTC=0``. Where each comes from: ``_toolchain``. The kernels include CUTLASS/CuTe
(``_toolchain.cutlass_include_dir``).

The cache key covers everything that can change the cubin — the source, every project header it includes
(transitively), the compiler's identity and flags, the CUTLASS and (NVRTC) CUDA / libcu++ header versions, the
arch — and no absolute path, so a cache survives a moved checkout or virtualenv. CUTLASS's headers enter by their
release (``cutlass/version.h``), not their contents: hashing the thousands of CuTe headers would cost every first
use of a kernel.

Layout: ``<cache_dir>/kernels/<name>_<hash16>/`` holds ``kernel.cu`` (kept for debugging), ``kernel.cubin``,
``kernel.cubin.sha256`` (written after the cubin; a cubin without a matching sidecar is rebuilt) and ``.lock``.

Environment variables (read on every call):
  DG_JIT_CACHE_DIR               cache root (default ``~/.cache/deepgemm_ops``)
  DG_JIT_USE_NVRTC               ``0`` compiles with nvcc instead of NVRTC (default ``1``)
  DG_JIT_DEBUG                   log cache hits, misses and compile times to stderr
  DG_PRINT_CONFIGS               the op layer prints chosen kernel configs (see :func:`print_configs_enabled`)
  DG_JIT_NVCC_COMPILER           nvcc to use (default: ``$CUDA_HOME/bin/nvcc``, ``/usr/local/cuda/bin/nvcc``, PATH)
  DG_JIT_PTXAS_VERBOSE           compile with ptxas ``-v`` and print its report
  DG_JIT_PRINT_COMPILER_COMMAND  print each compiler command line (NVRTC: library and options)
  DG_JIT_LOCK_TIMEOUT            seconds to wait for another process compiling the same kernel (default 600)
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import _nvrtc, _toolchain

ARCH = "sm_90a"
NVCC_FLAGS = (
    "-std=c++17",
    "-O3",
    "-gencode=arch=compute_90a,code=sm_90a",
    "--expt-relaxed-constexpr",
    "-cubin",
)
# NVRTC (to LTO IR, _nvrtc adds -dlto): -default-device lets CUTLASS's unannotated constexpr helpers run on the device
# (nvcc: --expt-relaxed-constexpr). nvJitLink (LTO IR -> cubin): -optimize-unused-variables drops the device globals
# -default-device makes of every static constexpr member the headers instantiate.
NVRTC_FLAGS = ("-std=c++17", f"-arch={ARCH}", "-default-device")
NVJITLINK_FLAGS = (f"-arch={ARCH}", "-lto", "-optimize-unused-variables")
# Bump when the key's composition or the cache layout changes.
_KEY_SCHEMA = "deepgemm_ops-jit-3"
_ELF_MAGIC = b"\x7fELF"
_NVCC_VERSION_MARK = "Cuda compilation tools"

_PACKAGE_DIR = Path(__file__).resolve().parent


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def print_configs_enabled() -> bool:
    """True when ``DG_PRINT_CONFIGS`` is set: the op layer then prints each chosen kernel config."""
    return _env_flag("DG_PRINT_CONFIGS")


def debug_enabled() -> bool:
    return _env_flag("DG_JIT_DEBUG")


def debug_log(msg: str) -> None:
    print(f"[deepgemm_ops.jit] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Locations: our sources; the compilers
# ---------------------------------------------------------------------------------------------------------------


def csrc_dir() -> Path:
    """The ``csrc`` tree: package data next to this module when installed, else the source checkout's."""
    for candidate in (_PACKAGE_DIR / "csrc", _PACKAGE_DIR.parent / "csrc"):
        if (candidate / "kernels").is_dir():
            return candidate
    raise RuntimeError(
        f"deepgemm_ops: kernel sources not found: expected {_PACKAGE_DIR / 'csrc' / 'kernels'} (installed package "
        f"data) or {_PACKAGE_DIR.parent / 'csrc' / 'kernels'} (source checkout)"
    )


def kernel_dir() -> Path:
    return csrc_dir() / "kernels"


@functools.cache
def nvcc_version(nvcc: str) -> str:
    """``nvcc --version`` output, once per compiler: it is also memoized in the cache directory under the executable's
    identity (real path, size, mtime, inode), so a new process does not pay the subprocess (a few ms of the first call
    of a cached kernel)."""
    memo = None
    try:
        real = os.path.realpath(nvcc)
        st = os.stat(real)
        ident = hashlib.sha256(f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()[:24]
        memo = cache_dir() / "nvcc" / f"{ident}.version"
        text = memo.read_text()
        if _NVCC_VERSION_MARK in text:  # anything else (a truncated or foreign file) is asked again
            return text
    except OSError:
        pass
    try:
        done = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    except OSError as e:
        raise RuntimeError(f"deepgemm_ops: cannot run nvcc at {nvcc!r}: {e}") from e
    if done.returncode != 0:
        raise RuntimeError(f"deepgemm_ops: '{nvcc} --version' failed (exit {done.returncode}): {done.stderr.strip()}")
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(memo, done.stdout.encode())
        except OSError:
            pass  # a read-only cache directory only costs the subprocess next time
    return done.stdout


def use_nvrtc() -> bool:
    return os.environ.get("DG_JIT_USE_NVRTC", "1").strip().lower() not in ("0", "false", "no", "off")


def _first_define(path: Path, macro: str) -> str:
    """The value of ``#define macro`` in the first 16 KB of ``path`` (version macros sit near the top)."""
    with open(path, "rb") as f:
        head = f.read(16384).decode(errors="replace")
    return _toolchain.define_value(head, macro) or "unknown"


@functools.cache
def _nvrtc_identity(setup: _toolchain.NvrtcSetup) -> str:
    """NVRTC's and nvJitLink's builds (library name + size: a stat, so a cache hit never loads the 100 MB libraries)
    and the CUDA and libcu++ header versions they compile against."""
    cudart = _first_define(setup.cuda_include / "cuda_runtime_api.h", "CUDART_VERSION")
    cccl = _first_define(setup.libcudacxx_include / "cuda" / "std" / "__cccl" / "version.h", "CCCL_VERSION")
    libs = " ".join(f"{lib.name} {lib.stat().st_size}" for lib in (setup.library, setup.jitlink))
    return f"nvrtc {libs} cudart {cudart} cccl {cccl}"


@functools.cache
def _cutlass_identity(include_dir: Path) -> str:
    return "cutlass " + (include_dir / "cutlass" / "version.h").read_text()


class Compiler:
    """One compile configuration: what identifies it in the cache key (no paths) and how to run it.

    ``nvrtc`` / ``ptxas_verbose``: None = from the environment (DG_JIT_USE_NVRTC, DG_JIT_PTXAS_VERBOSE)."""

    def __init__(self, extra_flags: Sequence[str] = (), *, nvrtc: bool | None = None,
                 ptxas_verbose: bool | None = None):
        verbose = _env_flag("DG_JIT_PTXAS_VERBOSE") if ptxas_verbose is None else ptxas_verbose
        self.cutlass = _toolchain.cutlass_include_dir()
        self.nvrtc = use_nvrtc() if nvrtc is None else nvrtc
        if self.nvrtc:
            self.setup = _toolchain.nvrtc_setup()
            self.flags = [*NVRTC_FLAGS, *extra_flags]
            self.link_flags = [*NVJITLINK_FLAGS] + (["-Xptxas=-v"] if verbose else [])
            self.identity = _nvrtc_identity(self.setup)
        else:
            self.nvcc = _toolchain.nvcc_path()
            self.flags = [*NVCC_FLAGS, *extra_flags] + (["-Xptxas", "-v"] if verbose else [])
            self.identity = nvcc_version(self.nvcc)
        self.identity += "\0" + _cutlass_identity(self.cutlass)

    @property
    def name(self) -> str:
        return "NVRTC" if self.nvrtc else "nvcc"

    def include_dirs(self, project_dirs: Sequence[Path]) -> list[Path]:
        toolchain = self.setup.include_dirs() if self.nvrtc else []
        return [*project_dirs, self.cutlass, *toolchain]

    def options(self, project_dirs: Sequence[Path] = ()) -> list[str]:
        """Flags and -I directories (csrc/kernels first, then ``project_dirs``) of a compile."""
        return [*self.flags, *(f"-I{d}" for d in self.include_dirs([kernel_dir(), *project_dirs]))]

    def nvrtc_binding(self) -> _nvrtc.Nvrtc:
        return _nvrtc.load(self.setup.library, self.setup.jitlink)

    def compile(self, source: str, src_path: Path, out_path: Path, *, name: str,
                project_dirs: Sequence[Path] = (), pch: bool | None = None) -> str:
        """Compile ``source`` (also written at ``src_path``, named in messages) to the cubin ``out_path``; returns
        the compiler's log (the ptxas report when verbose). ``pch``: see :func:`compile_cubin`."""
        options = self.options(project_dirs)
        if self.nvrtc:
            data, log = _run_nvrtc(self, options, source, name, src_path, pch)
            out_path.write_bytes(data)
            return log
        return _run_nvcc([self.nvcc, *options, "-o", str(out_path), str(src_path)], name, src_path)


# ---------------------------------------------------------------------------------------------------------------
# Cache key
# ---------------------------------------------------------------------------------------------------------------


_INCLUDE = re.compile(r'#[ \t]*include[ \t]*([<"])([^>"\n]+)[>"]')


def _include_targets(text: str) -> list[tuple[str, bool]]:
    """(path, quoted) of every ``#include "x"`` / ``#include <x>`` line. Comments are not parsed: an include in a
    comment only makes the key cover one more header. (The regex has no line anchor, which would make it try every
    position of the text; the line start is checked per match instead: this runs on every first use of a kernel.)"""
    found = []
    for m in _INCLUDE.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if not text[line_start:m.start()].strip(" \t"):
            found.append((m.group(2), m.group(1) == '"'))
    return found


def project_headers(source: str, roots: Sequence[Path]) -> dict[str, bytes]:
    """Contents of every header that ``source`` includes, transitively, resolving inside ``roots`` (our own source
    trees), keyed by ``"<root index>/<path relative to its root>"`` so the result holds no absolute path. Headers
    found elsewhere (CUDA, the C++ library) are not followed. Plain os.path strings: this runs on the
    first use of every kernel in a process."""
    real_roots = [os.path.realpath(r) for r in roots]
    found: dict[str, bytes] = {}
    seen: set[str] = set()
    pending = [(target, quoted, None) for target, quoted in _include_targets(source)]
    while pending:
        target, quoted, includer_dir = pending.pop()
        search = [includer_dir, *real_roots] if quoted and includer_dir else real_roots
        path = next((p for p in (os.path.normpath(os.path.join(b, target)) for b in search) if os.path.isfile(p)), None)
        if path is None or path in seen:
            continue
        seen.add(path)
        index = next((i for i, root in enumerate(real_roots) if path.startswith(root + os.sep)), None)
        if index is None:
            continue
        with open(path, "rb") as f:
            data = f.read()
        found[f"{index}/{path[len(real_roots[index]) + 1 :]}"] = data
        text = data.decode("utf-8", errors="replace")
        pending.extend((t, q, os.path.dirname(path)) for t, q in _include_targets(text))
    return found


def cache_key(source: str, *, project_dirs: Sequence[Path], compiler_identity: str, flags: Sequence[str]) -> str:
    """sha256 hex digest over everything that determines the cubin (see module docstring)."""
    h = hashlib.sha256()

    def part(label: str, data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        h.update(f"{label}:{len(data)}:".encode())
        h.update(data)

    part("schema", _KEY_SCHEMA)
    part("arch", ARCH)
    part("compiler", compiler_identity)
    part("flags", "\0".join(flags))
    part("source", source)
    for rel, data in sorted(project_headers(source, project_dirs).items()):
        part(f"header {rel}", data)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Disk cache
# ---------------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("DG_JIT_CACHE_DIR") or Path.home() / ".cache" / "deepgemm_ops")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_published(cubin: Path) -> bool:
    """The cubin is an ELF file whose sha256 matches the sidecar written after it."""
    try:
        sidecar = cubin.with_name(cubin.name + ".sha256").read_text().strip()
        data = cubin.read_bytes()
    except OSError:
        return False
    return data.startswith(_ELF_MAGIC) and hashlib.sha256(data).hexdigest() == sidecar


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, dest: Path) -> None:
    # mkstemp creates 0600 files; a shared cache must be readable by other users.
    os.chmod(tmp, 0o644)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def _write_atomic(dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _publish(Path(tmp), dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lock_timeout_s() -> float:
    text = os.environ.get("DG_JIT_LOCK_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"DG_JIT_LOCK_TIMEOUT must be a number of seconds >= 0, got {text!r}")
    return value


@contextmanager
def _locked(lock_path: Path):
    """Holds the entry's file lock. A holder that dies releases it (flock), so waiting long means a live process is
    still compiling, or hangs: the wait is announced once and ends after DG_JIT_LOCK_TIMEOUT seconds."""
    # The lock file is never deleted: removing it would let two processes hold "the" lock on different inodes.
    with open(lock_path, "a") as f:
        deadline, announced = None, False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + lock_timeout_s()
                if not announced:
                    debug_log(f"waiting for another process compiling {lock_path.parent.name} (lock {lock_path})")
                    announced = True
                if now >= deadline:
                    raise RuntimeError(
                        f"deepgemm_ops: another process has held the compile lock {lock_path} for "
                        f"{lock_timeout_s():g} s (DG_JIT_LOCK_TIMEOUT); if no compile is running, a process holding "
                        "it hangs: stop it, or raise DG_JIT_LOCK_TIMEOUT") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _validate_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"compile_cubin: name must be non-empty and use only [A-Za-z0-9_-] (it names a cache "
                         f"directory), got {name!r}")


def _cubin_path(source: str, name: str, compiler: Compiler, project_dirs: Sequence[Path]) -> Path:
    _validate_name(name)
    flags = compiler.flags + (["|link", *compiler.link_flags] if compiler.nvrtc else [])
    key = cache_key(source, project_dirs=project_dirs, compiler_identity=compiler.identity, flags=flags)
    return cache_dir() / "kernels" / f"{name}_{key[:16]}" / "kernel.cubin"


def compile_cubin(
    source: str,
    name: str,
    *,
    include_dirs: Iterable[Path] | None = None,
    extra_flags: Sequence[str] = (),
    pch: bool | None = None,
) -> Path:
    """Path of the sm_90a cubin for ``source``, compiling it on a cache miss.

    ``name`` prefixes the cache directory (for humans; the key is content-derived). ``include_dirs`` are extra
    project header roots: searched after ``csrc/kernels``, and hashed like it.
    ``extra_flags`` go to the compiler after the base flags and are part of the key. ``pch`` (NVRTC only): use
    automatic precompiled headers; None = from this process's second compile on (the first compile of a process
    is faster without creating one; batch compiles such as ``precompile`` pass True). Safe to call from many
    processes and threads at once: the first compiles, the others wait on a per-key file lock and reuse the result.
    Raises RuntimeError with the compiler's output and the kept source path when compilation fails.
    """
    compiler = Compiler(extra_flags)
    project_dirs = [kernel_dir(), *(Path(d) for d in include_dirs or ())]
    cubin = _cubin_path(source, name, compiler, project_dirs)

    def produce(src_path: Path, out_path: Path) -> str:
        return compiler.compile(source, src_path, out_path, name=name, project_dirs=project_dirs[1:], pch=pch)

    _build_entry(cubin, source, produce, compiler.name)
    return cubin


def _build_entry(cubin: Path, source: str, produce, compiler_name: str) -> bool:
    """Publishes ``cubin`` (a cache entry's path) unless it is published already; ``produce(src_path, out_path)``
    writes the cubin to ``out_path`` and returns the compiler's log. Returns whether it produced. Safe across
    processes: the entry's file lock serialises producers, a waiter reuses what the first published."""
    entry = cubin.parent
    if _is_published(cubin):
        if debug_enabled():
            debug_log(f"cache hit {entry.name}")
        return False
    try:
        entry.mkdir(parents=True, exist_ok=True)
        (entry / ".lock").touch()
    except OSError as e:
        raise RuntimeError(f"deepgemm_ops: cannot write the kernel cache at {cache_dir()} ({e.strerror or e}): set "
                           "DG_JIT_CACHE_DIR to a writable directory") from e
    with _locked(entry / ".lock"):
        if _is_published(cubin):  # another process compiled it while we waited for the lock
            if debug_enabled():
                debug_log(f"cache hit {entry.name} (compiled by another process)")
            return False
        if cubin.exists() and debug_enabled():
            debug_log(f"cache entry {entry.name} is corrupt or incomplete: rebuilding")
        cubin.with_name(cubin.name + ".sha256").unlink(missing_ok=True)
        for stale in entry.glob("*.tmp*"):  # left by a killed compile; every writer holds the lock, so none is live
            stale.unlink(missing_ok=True)
        src_path = entry / "kernel.cu"
        _write_atomic(src_path, source.encode())
        fd, tmp = tempfile.mkstemp(dir=entry, prefix="kernel.cubin.tmp")
        os.close(fd)
        tmp_path = Path(tmp)
        start = time.perf_counter()
        try:
            log = produce(src_path, tmp_path)
            with open(tmp_path, "rb") as f:
                if f.read(len(_ELF_MAGIC)) != _ELF_MAGIC:
                    raise RuntimeError(f"deepgemm_ops: {compiler_name} reported success for {entry.name} but wrote no "
                                       f"cubin ({tmp_path.stat().st_size} bytes); source kept at {src_path}")
            _publish(tmp_path, cubin)
        finally:
            tmp_path.unlink(missing_ok=True)
        _write_atomic(cubin.with_name(cubin.name + ".sha256"), _sha256_file(cubin).encode())
        _fsync_dir(entry)
        if _env_flag("DG_JIT_PTXAS_VERBOSE"):
            print(log, file=sys.stderr, end="", flush=True)
        if debug_enabled():
            debug_log(f"compiled {entry.name} in {time.perf_counter() - start:.2f} s ({compiler_name})")
    return True


def leading_includes(source: str) -> str:
    """The run of ``#include`` lines that starts ``source`` (the part automatic PCH covers)."""
    end = 0
    for line in source.splitlines(keepends=True):
        if not line.startswith("#include"):
            break
        end += len(line)
    return source[:end]


def compile_cubins(kernels: Sequence[tuple[str, str]], on_done=None) -> list[tuple[Path, bool]]:
    """:func:`compile_cubin` (default flags) for several ``(source, name)`` pairs, each source defining one
    ``extern "C"`` kernel whose symbol is ``name`` (as ``_codegen`` writes them). Returns ``(cubin, compiled)`` per
    pair, in order; ``on_done(index, compiled)`` after each.

    With NVRTC, the uncached kernels whose sources start with the same ``#include`` lines compile as one program —
    one front end for the group, with automatic PCH — and nvJitLink links each kernel out of its LTO IR
    (``-kernels-used``): the same SASS as one program per kernel (test_jit checks it), a quarter less time per kernel
    (docs/PERF.md). The combined source is a build detail: each entry keeps its own ``kernel.cu`` and the key of its
    own source. A lone kernel, every kernel with nvcc, and every kernel of a combined program that does not compile
    go through :func:`compile_cubin`'s path one by one (so an error names its kernel).
    """
    compiler = Compiler()
    cubins = [_cubin_path(source, name, compiler, [kernel_dir()]) for source, name in kernels]
    results: list[tuple[Path, bool] | None] = [None] * len(kernels)

    def done(i: int, compiled: bool) -> None:
        results[i] = (cubins[i], compiled)
        if on_done is not None:
            on_done(i, compiled)

    groups: dict[str, list[int]] = {}
    for i, (source, _) in enumerate(kernels):
        if _is_published(cubins[i]):
            done(i, False)
        else:
            groups.setdefault(leading_includes(source), []).append(i)
    for prefix, members in groups.items():
        ltoir, compile_log = None, ""
        if compiler.nvrtc and len(members) > 1:
            combined = prefix + "".join(kernels[i][0][len(prefix):] for i in members)
            try:
                ltoir, compile_log = compiler.nvrtc_binding().compile_ltoir(combined, compiler.options(), pch=True)
            except _nvrtc.NvrtcError:
                ltoir = None
        for i in members:
            source, name = kernels[i]
            if ltoir is None:
                done(i, _build_entry(cubins[i], source, lambda src, out, s=source, n=name: compiler.compile(
                    s, src, out, name=n), compiler.name))
                continue

            def link(src_path: Path, out_path: Path, name=name, ltoir=ltoir, compile_log=compile_log) -> str:
                try:
                    result = compiler.nvrtc_binding().link(ltoir, [*compiler.link_flags, f"-kernels-used={name}"],
                                                           compile_log)
                except _nvrtc.NvrtcError as e:
                    raise RuntimeError(f"deepgemm_ops: nvJitLink failed to link kernel {name!r} ({e}); source kept at "
                                       f"{src_path}\n{e.log.strip()}") from e
                if name.encode() not in result.cubin:
                    raise RuntimeError(f"deepgemm_ops: the cubin linked for kernel {name!r} does not define it; source "
                                       f"kept at {src_path}")
                out_path.write_bytes(result.cubin)
                return result.log

            done(i, _build_entry(cubins[i], source, link, compiler.name))
    return results  # type: ignore[return-value]


def _run_nvrtc(compiler: Compiler, options: list[str], source: str, name: str, src_path: Path,
               pch: bool | None) -> tuple[bytes, str]:
    nvrtc, setup = compiler.nvrtc_binding(), compiler.setup
    use_pch = nvrtc.compiles > 0 if pch is None else pch
    if _env_flag("DG_JIT_PRINT_COMPILER_COMMAND"):
        shown = [*options, "-dlto"] + (["-pch"] if use_pch else [])
        print(f"[deepgemm_ops.jit] NVRTC {setup.library} {subprocess.list2cmdline(shown)} {src_path} | nvJitLink "
              f"{setup.jitlink} {subprocess.list2cmdline(compiler.link_flags)}", file=sys.stderr, flush=True)
    try:
        result = nvrtc.compile(source, options, compiler.link_flags, pch=use_pch)
    except _nvrtc.NvrtcError as e:
        raise RuntimeError(
            f"deepgemm_ops: NVRTC failed to compile kernel {name!r} ({e}); source kept at {src_path}\n{e.log.strip()}"
        ) from e
    return result.cubin, result.log


def _run_nvcc(command: list[str], name: str, src_path: Path) -> str:
    if _env_flag("DG_JIT_PRINT_COMPILER_COMMAND"):
        print(f"[deepgemm_ops.jit] {subprocess.list2cmdline(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
        raise RuntimeError(f"deepgemm_ops: cannot run nvcc at {command[0]!r}: {e}") from e
    if done.returncode != 0:
        raise RuntimeError(
            f"deepgemm_ops: nvcc failed to compile kernel {name!r} (exit code {done.returncode}); "
            f"source kept at {src_path}\n{(done.stderr + done.stdout).strip()}"
        )
    return done.stdout + done.stderr
