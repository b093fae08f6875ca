"""NVRTC + nvJitLink through ctypes: CUDA C++ source -> sm_90a cubin inside this process (no compiler subprocess).

Two steps. NVRTC compiles the source to LTO IR (``-dlto``); nvJitLink optimises and assembles it into the cubin
with ``-optimize-unused-variables``. NVRTC needs ``-default-device`` for the CUTLASS/CuTe headers, which turns
every static constexpr member they instantiate into a device global: a cubin straight from NVRTC carries ~900 of
them (160 KB instead of 30 KB) and loading it took 6-7 ms instead of 0.4 ms on an H200 (docs/PERF.md). The link
step drops them at no extra compile time; the SASS is the same.

Precompiled headers: with ``pch=True`` a compile passes ``-pch`` (automatic PCH): NVRTC writes a PCH of the
source's leading ``#include`` lines into this process's PCH directory, and later compiles with the same includes
skip parsing them (a kernel 1.4-1.8 s -> 0.5-0.7 s on a 2-core CPU; docs/PERF.md). Creating the PCH costs extra on
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
_JITLINK_INPUT_LTOIR = 3  # nvJitLinkInputType (nvJitLink.h)

PROGRAM_NAME = "deepgemm_ops_kernel.cu"  # fixed: automatic PCH files are named after the program

_p, _sz, _i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int


class NvrtcError(RuntimeError):
    """A failed NVRTC or nvJitLink call; ``log`` holds the compiler's or linker's log when there is one."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


@dataclass
class CompileResult:
    cubin: bytes
    log: str  # NVRTC's log, then nvJitLink's (the ptxas report when asked for)


def _bind(lib: ctypes.CDLL, signatures: dict, symbol=lambda name: name) -> None:
    for name, (args, res) in signatures.items():
        fn = getattr(lib, symbol(name))
        fn.argtypes, fn.restype = args, res
        setattr(lib, name, fn)


def _read(get_size, get, handle, *, text: bool):
    size = ctypes.c_size_t()
    if get_size(handle, ctypes.byref(size)) != _SUCCESS or size.value == 0:
        return "" if text else b""
    buf = ctypes.create_string_buffer(size.value)
    get(handle, buf)
    return buf.value.decode(errors="replace") if text else buf.raw


class JitLink:
    """nvJitLink, bound through the versioned symbols of the API of release ``major``.0 (the library exports every
    minor's API under its own name)."""

    def __init__(self, library: Path, major: int):
        self._lib = lib = ctypes.CDLL(str(library))
        _bind(lib, {
            "nvJitLinkCreate": ([ctypes.POINTER(_p), ctypes.c_uint32, ctypes.POINTER(ctypes.c_char_p)], _i),
            "nvJitLinkDestroy": ([ctypes.POINTER(_p)], _i),
            "nvJitLinkAddData": ([_p, _i, ctypes.c_char_p, _sz, ctypes.c_char_p], _i),
            "nvJitLinkComplete": ([_p], _i),
            "nvJitLinkGetLinkedCubinSize": ([_p, ctypes.POINTER(_sz)], _i),
            "nvJitLinkGetLinkedCubin": ([_p, ctypes.c_char_p], _i),
            "nvJitLinkGetErrorLogSize": ([_p, ctypes.POINTER(_sz)], _i),
            "nvJitLinkGetErrorLog": ([_p, ctypes.c_char_p], _i),
            "nvJitLinkGetInfoLogSize": ([_p, ctypes.POINTER(_sz)], _i),
            "nvJitLinkGetInfoLog": ([_p, ctypes.c_char_p], _i),
        }, symbol=lambda name: f"__{name}_{major}_0")

    def link(self, ltoir: bytes, options: list[str]) -> tuple[bytes, str]:
        lib, handle = self._lib, ctypes.c_void_p()
        argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        result = lib.nvJitLinkCreate(ctypes.byref(handle), len(options), argv)
        if result != _SUCCESS:
            raise NvrtcError(f"nvJitLinkCreate failed ({result}); options {options}")
        try:
            result = lib.nvJitLinkAddData(handle, _JITLINK_INPUT_LTOIR, ltoir, len(ltoir), PROGRAM_NAME.encode())
            if result == _SUCCESS:
                result = lib.nvJitLinkComplete(handle)
            info = _read(lib.nvJitLinkGetInfoLogSize, lib.nvJitLinkGetInfoLog, handle, text=True)
            if result != _SUCCESS:
                error = _read(lib.nvJitLinkGetErrorLogSize, lib.nvJitLinkGetErrorLog, handle, text=True)
                raise NvrtcError(f"nvJitLink failed ({result})", error + info)
            return _read(lib.nvJitLinkGetLinkedCubinSize, lib.nvJitLinkGetLinkedCubin, handle, text=False), info
        finally:
            lib.nvJitLinkDestroy(ctypes.byref(handle))


class Nvrtc:
    def __init__(self, library: Path, jitlink: Path):
        # libnvrtc opens its builtins library by soname at compile time: load it first, from the same directory.
        for builtins in sorted(library.parent.glob("libnvrtc-builtins.so.*")):
            if ".alt." not in builtins.name:
                ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
        self._lib = lib = ctypes.CDLL(str(library))
        _bind(lib, {
            "nvrtcGetErrorString": ([_i], ctypes.c_char_p),
            "nvrtcVersion": ([ctypes.POINTER(_i), ctypes.POINTER(_i)], _i),
            "nvrtcCreateProgram": ([ctypes.POINTER(_p), ctypes.c_char_p, ctypes.c_char_p, _i, _p, _p], _i),
            "nvrtcDestroyProgram": ([ctypes.POINTER(_p)], _i),
            "nvrtcCompileProgram": ([_p, _i, ctypes.POINTER(ctypes.c_char_p)], _i),
            "nvrtcGetProgramLogSize": ([_p, ctypes.POINTER(_sz)], _i),
            "nvrtcGetProgramLog": ([_p, ctypes.c_char_p], _i),
            "nvrtcGetLTOIRSize": ([_p, ctypes.POINTER(_sz)], _i),
            "nvrtcGetLTOIR": ([_p, ctypes.c_char_p], _i),
            "nvrtcGetPCHCreateStatus": ([_p], _i),
            "nvrtcGetPCHHeapSizeRequired": ([_p, ctypes.POINTER(_sz)], _i),
            "nvrtcSetPCHHeapSize": ([_sz], _i),
        })
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        self.jitlink = JitLink(jitlink, major.value)
        self._lock = threading.Lock()
        self._pch_dir: Path | None = None
        self.compiles = 0  # successful NVRTC compiles in this process

    def _check(self, result: int, what: str, log: str = "") -> None:
        if result != _SUCCESS:
            text = self._lib.nvrtcGetErrorString(result).decode()
            raise NvrtcError(f"{what} failed: {text} ({result})", log)

    def pch_dir(self) -> Path:
        if self._pch_dir is None:
            self._pch_dir = Path(tempfile.mkdtemp(prefix="deepgemm_ops_pch_"))
            atexit.register(shutil.rmtree, self._pch_dir, ignore_errors=True)
        return self._pch_dir

    def compile(self, source: str, options: list[str], link_options: list[str], *, pch: bool) -> CompileResult:
        """``source`` -> LTO IR (:meth:`compile_ltoir`) -> cubin with nvJitLink's ``link_options``; raises NvrtcError
        with the log when either step fails."""
        ltoir, log = self.compile_ltoir(source, options, pch=pch)
        return self.link(ltoir, link_options, log)

    def link(self, ltoir: bytes, link_options: list[str], compile_log: str = "") -> CompileResult:
        try:
            cubin, link_log = self.jitlink.link(ltoir, link_options)
        except NvrtcError as e:
            raise NvrtcError(str(e), compile_log + e.log) from None
        return CompileResult(cubin, compile_log + link_log)

    def compile_ltoir(self, source: str, options: list[str], *, pch: bool) -> tuple[bytes, str]:
        """(LTO IR, NVRTC's log) of ``source`` with ``options`` + ``-dlto`` and, when ``pch``, the automatic-PCH
        options."""
        with self._lock:
            options = [*options, "-dlto"] + (["-pch", f"-pch-dir={self.pch_dir()}"] if pch else [])
            lib, prog = self._lib, ctypes.c_void_p()
            self._check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), PROGRAM_NAME.encode(), 0, None,
                                               None), "nvrtcCreateProgram")
            try:
                argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
                result = lib.nvrtcCompileProgram(prog, len(options), argv)
                log = _read(lib.nvrtcGetProgramLogSize, lib.nvrtcGetProgramLog, prog, text=True)
                self._check(result, "nvrtcCompileProgram", log)
                if pch and lib.nvrtcGetPCHCreateStatus(prog) == _ERROR_PCH_CREATE_HEAP_EXHAUSTED:
                    self._grow_pch_heap(prog)
                self.compiles += 1
                return _read(lib.nvrtcGetLTOIRSize, lib.nvrtcGetLTOIR, prog, text=False), log
            finally:
                lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _grow_pch_heap(self, prog) -> None:
        # The compile itself succeeded without a PCH; the next one with these includes creates it.
        required = ctypes.c_size_t()
        if self._lib.nvrtcGetPCHHeapSizeRequired(prog, ctypes.byref(required)) == _SUCCESS and required.value:
            self._check(self._lib.nvrtcSetPCHHeapSize(required.value), "nvrtcSetPCHHeapSize")


_instances: dict[Path, Nvrtc] = {}
_instances_lock = threading.Lock()


def load(library: Path, jitlink: Path) -> Nvrtc:
    """The process-wide binding of ``library`` (loaded once)."""
    with _instances_lock:
        if library not in _instances:
            _instances[library] = Nvrtc(library, jitlink)
        return _instances[library]
