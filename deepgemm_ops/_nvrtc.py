"""NVRTC through ctypes: CUDA C++ source -> sm_90a cubin inside this process (no compiler subprocess).

Precompiled headers: with ``pch=True`` a compile passes ``-pch`` (automatic PCH): NVRTC writes a PCH of the
source's leading ``#include`` lines into this process's PCH directory, and later compiles with the same includes
skip parsing them (a kernel 1.4-1.8 s -> 0.55-0.75 s on a 2-core CPU; docs/PERF.md). Creating the PCH costs extra on
that compile, and a PCH file cannot be used by another process (its heap lands at another address), so the
directory is private to the process and removed at exit. When the PCH heap is too small NVRTC compiles anyway and
reports how much it needs; the heap is grown for the next compile.

Compiles are serialised per process: concurrent automatic-PCH compiles would create the same file at once.
"""

from __future__ import annotations

import atexit
import ctypes
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

# nvrtcResult values this module tells apart (nvrtc.h).
_SUCCESS = 0
_ERROR_PCH_CREATE_HEAP_EXHAUSTED = 14

PROGRAM_NAME = "deepgemm_ops_kernel.cu"  # fixed: automatic PCH files are named after the program


class NvrtcError(RuntimeError):
    """A failed NVRTC call; ``log`` holds the compiler log when there is one."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


@dataclass
class CompileResult:
    cubin: bytes
    log: str


class Nvrtc:
    def __init__(self, library: Path):
        # libnvrtc opens its builtins library by soname at compile time: load it first, from the same directory.
        for builtins in sorted(library.parent.glob("libnvrtc-builtins.so.*")):
            if ".alt." not in builtins.name:
                ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
        self.library = library
        lib = self._lib = ctypes.CDLL(str(library))
        p, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        signatures = {
            "nvrtcGetErrorString": ([i], ctypes.c_char_p),
            "nvrtcVersion": ([ctypes.POINTER(i), ctypes.POINTER(i)], i),
            "nvrtcCreateProgram": ([ctypes.POINTER(p), ctypes.c_char_p, ctypes.c_char_p, i, p, p], i),
            "nvrtcDestroyProgram": ([ctypes.POINTER(p)], i),
            "nvrtcCompileProgram": ([p, i, ctypes.POINTER(ctypes.c_char_p)], i),
            "nvrtcGetProgramLogSize": ([p, ctypes.POINTER(sz)], i),
            "nvrtcGetProgramLog": ([p, ctypes.c_char_p], i),
            "nvrtcGetCUBINSize": ([p, ctypes.POINTER(sz)], i),
            "nvrtcGetCUBIN": ([p, ctypes.c_char_p], i),
            "nvrtcGetPCHCreateStatus": ([p], i),
            "nvrtcGetPCHHeapSizeRequired": ([p, ctypes.POINTER(sz)], i),
            "nvrtcGetPCHHeapSize": ([ctypes.POINTER(sz)], i),
            "nvrtcSetPCHHeapSize": ([sz], i),
        }
        for name, (args, res) in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        major, minor = i(), i()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        self._lock = threading.Lock()
        self._pch_dir: Path | None = None
        self.compiles = 0  # successful compiles in this process

    def _check(self, result: int, what: str, log: str = "") -> None:
        if result != _SUCCESS:
            text = self._lib.nvrtcGetErrorString(result).decode()
            raise NvrtcError(f"{what} failed: {text} ({result})", log)

    def pch_dir(self) -> Path:
        if self._pch_dir is None:
            self._pch_dir = Path(tempfile.mkdtemp(prefix="deepgemm_ops_pch_"))
            atexit.register(shutil.rmtree, self._pch_dir, ignore_errors=True)
        return self._pch_dir

    def compile(self, source: str, options: list[str], *, pch: bool) -> CompileResult:
        """Compile ``source`` with ``options`` (+ the automatic-PCH options when ``pch``); raises NvrtcError with
        the compiler log when it fails."""
        with self._lock:
            if pch:
                options = [*options, "-pch", f"-pch-dir={self.pch_dir()}"]
            lib, prog = self._lib, ctypes.c_void_p()
            self._check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), PROGRAM_NAME.encode(), 0, None,
                                               None), "nvrtcCreateProgram")
            try:
                argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
                result = lib.nvrtcCompileProgram(prog, len(options), argv)
                log = self._log(prog)
                self._check(result, "nvrtcCompileProgram", log)
                if pch and lib.nvrtcGetPCHCreateStatus(prog) == _ERROR_PCH_CREATE_HEAP_EXHAUSTED:
                    self._grow_pch_heap(prog)
                size = ctypes.c_size_t()
                self._check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
                cubin = ctypes.create_string_buffer(size.value)
                self._check(lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
                self.compiles += 1
                return CompileResult(cubin.raw, log)
            finally:
                lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _log(self, prog) -> str:
        size = ctypes.c_size_t()
        if self._lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)) != _SUCCESS or size.value <= 1:
            return ""
        buf = ctypes.create_string_buffer(size.value)
        self._lib.nvrtcGetProgramLog(prog, buf)
        return buf.value.decode(errors="replace")

    def _grow_pch_heap(self, prog) -> None:
        # The compile itself succeeded without a PCH; the next one with these includes creates it.
        required = ctypes.c_size_t()
        if self._lib.nvrtcGetPCHHeapSizeRequired(prog, ctypes.byref(required)) == _SUCCESS and required.value:
            self._check(self._lib.nvrtcSetPCHHeapSize(required.value), "nvrtcSetPCHHeapSize")


_instances: dict[Path, Nvrtc] = {}
_instances_lock = threading.Lock()


def load(library: Path) -> Nvrtc:
    """The process-wide binding of ``library`` (loaded once)."""
    with _instances_lock:
        if library not in _instances:
            _instances[library] = Nvrtc(library)
        return _instances[library]
