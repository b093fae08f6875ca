"""Where the JIT's compilers and headers come from (pure lookups, nothing is compiled here).

- CUTLASS/CuTe headers: the ``third_party/cutlass`` submodule of a source checkout when it is populated, else the
  ``nvidia-cutlass`` wheel (its ``cutlass_library/source/include``; the wheel is found without importing it, so its
  Python dependencies need not be installed).
- NVRTC (the default compiler): ``libnvrtc`` from the NVIDIA wheels that CUDA builds of torch install
  (``nvidia-cuda-nvrtc``), else a CUDA toolkit's, with ``libnvJitLink`` beside it (``nvidia-nvjitlink``: it turns
  NVRTC's LTO IR into the cubin, see ``_nvrtc``). It needs the CUDA headers (``nvidia-cuda-runtime`` or the toolkit)
  and the libcu++ headers (``nvidia-cuda-cccl`` or the toolkit's ``include/cccl``): with the wheels no toolkit is
  needed at all.
- nvcc (``DG_JIT_USE_NVRTC=0``): ``DG_JIT_NVCC_COMPILER``, ``$CUDA_HOME/bin/nvcc``, ``/usr/local/cuda/bin/nvcc``, PATH.

Every function returns absolute paths for this machine; none of them enters a cache key (see ``_jit.cache_key``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

# The CUTLASS release the kernels are written against: the submodule's pinned commit and the wheel's version.
CUTLASS_MIN_VERSION = (4, 2)
CUTLASS_WHEEL = "nvidia-cutlass==4.2.0.0"
_CUTLASS_PROBE = "cute/arch/mma_sm90_gmma.hpp"

# What the kernels include from the CUDA headers and from libcu++ (probes for a directory that has them).
_CUDA_HEADER_PROBE = "cuda_bf16.h"
_LIBCUDACXX_PROBE = "cuda/std/cstdint"


def cuda_home() -> Path | None:
    """A CUDA toolkit root holding ``include/cuda.h``: $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, or None."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "include" / "cuda.h").is_file():
            return Path(candidate)
    return None


# ---------------------------------------------------------------------------------------------------------------
# CUTLASS / CuTe
# ---------------------------------------------------------------------------------------------------------------


def _on_sys_path(name: str) -> list[Path]:
    """``<entry>/<name>`` for every sys.path entry that has that directory: where ``import name`` would look, found
    without importing anything (a few stats; importlib's find_spec lists whole directories, ~0.5 ms of every new
    process's first kernel lookup)."""
    return [Path(entry or ".") / name for entry in sys.path if os.path.isdir(os.path.join(entry or ".", name))]


def _cutlass_candidates() -> list[Path]:
    found = [_PACKAGE_DIR.parent / "third_party" / "cutlass" / "include"]
    return found + [package / "source" / "include" for package in _on_sys_path("cutlass_library")]


def define_value(text: str, macro: str) -> str | None:
    """The value of the first ``#define macro value`` line in ``text`` (plain string search: this runs on the first
    kernel lookup of every process)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "#define" and fields[1] == macro:
            return fields[2]
    return None


def cutlass_version(include_dir: Path) -> tuple[int, int, int]:
    text = (include_dir / "cutlass" / "version.h").read_text()
    parts = [define_value(text, f"CUTLASS_{p}") for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(p and p.isdigit() for p in parts):
        raise RuntimeError(
            f"deepgemm_ops: cannot read the CUTLASS version from {include_dir / 'cutlass' / 'version.h'}")
    return tuple(int(p) for p in parts)  # type: ignore[arg-type, return-value]


@functools.cache
def cutlass_include_dir() -> Path:
    """The CUTLASS/CuTe include directory (submodule first, then the wheel), checked for the minimum version."""
    for candidate in _cutlass_candidates():
        if (candidate / _CUTLASS_PROBE).is_file():
            version = cutlass_version(candidate)
            if version[:2] < CUTLASS_MIN_VERSION:
                raise RuntimeError(
                    f"deepgemm_ops: the kernels need CUTLASS >= {'.'.join(map(str, CUTLASS_MIN_VERSION))}, found "
                    f"{'.'.join(map(str, version))} at {candidate}: pip install --no-deps '{CUTLASS_WHEEL}'"
                )
            return candidate
    raise RuntimeError(
        "deepgemm_ops: CUTLASS/CuTe headers not found (the kernels are built on them). In a source checkout: "
        "git submodule update --init third_party/cutlass; otherwise: pip install --no-deps "
        f"'{CUTLASS_WHEEL}' (headers only; --no-deps skips its Python dependencies, which are not needed). "
        f"Looked in: {', '.join(str(c) for c in _cutlass_candidates())}"
    )


# ---------------------------------------------------------------------------------------------------------------
# NVRTC
# ---------------------------------------------------------------------------------------------------------------


def _nvidia_wheel_roots() -> list[Path]:
    """Roots of the NVIDIA CUDA wheels: ``site-packages/nvidia/cu13`` (CUDA 13 wheels share one tree) and the
    per-component trees of the CUDA 12 wheels (``nvidia/cuda_nvrtc``, ``nvidia/cuda_runtime``, ...)."""
    roots: list[Path] = []
    for base in _on_sys_path("nvidia"):
        roots += sorted(base.glob("cu[0-9]*"), reverse=True)  # the newest major first
        roots += [base / name for name in ("cuda_nvrtc", "nvjitlink", "cuda_runtime", "cuda_cccl")]
    return [r for r in roots if r.is_dir()]


_NVRTC_LIB = re.compile(r"libnvrtc\.so\.\d+$")  # not libnvrtc-builtins, not the .alt variant
_JITLINK_LIB = re.compile(r"libnvJitLink\.so\.\d+$")


def _first_lib(directories: list[Path], pattern: re.Pattern, major: str | None = None) -> Path | None:
    """The first library matching ``pattern`` (``lib<name>.so.<major>``; with ``major``, that major only) in the
    first of ``directories`` that has one; the highest major where a directory has several."""
    for directory in directories:
        if directory.is_dir():
            names = sorted((p for p in directory.iterdir() if pattern.match(p.name)
                            and (major is None or p.name.rsplit(".", 1)[-1] == major)), reverse=True)
            if names:
                return names[0]
    return None


@dataclass(frozen=True)
class NvrtcSetup:
    library: Path  # libnvrtc.so.N (its libnvrtc-builtins sits beside it)
    jitlink: Path  # libnvJitLink.so.N
    cuda_include: Path  # CUDA headers (cuda_bf16.h, ...)
    libcudacxx_include: Path  # libcu++ headers (cuda/std/...)
    source: str  # "wheels" or "toolkit <root>", for messages

    def include_dirs(self) -> list[Path]:
        """-I directories for NVRTC. With CUDA 13 CUTLASS spells libcu++ includes ``<cccl/cuda/std/...>``, so the
        directory holding ``cccl/`` is needed besides ``cccl/`` itself (they differ from the CUDA headers' directory
        when the nvidia-cuda-cccl wheel sits in another site directory than nvidia-cuda-runtime)."""
        dirs = [self.cuda_include, self.libcudacxx_include]
        if self.libcudacxx_include.name == "cccl":
            dirs.append(self.libcudacxx_include.parent)
        return list(dict.fromkeys(dirs))


def _find_include(probe: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for candidate in (root / "include", root / "include" / "cccl"):
            if (candidate / probe).is_file():
                return candidate
    return None


@functools.cache
def nvrtc_setup() -> NvrtcSetup:
    """NVRTC and the headers it compiles the kernels with: all from the NVIDIA wheels when they have NVRTC (headers
    from the wheels first, then the toolkit), else all from the CUDA toolkit."""
    wheel_roots = _nvidia_wheel_roots()
    home = cuda_home()
    toolkit_roots = [home] if home is not None else []
    lib_dirs = [r / "lib" for r in wheel_roots]
    library = _first_lib(lib_dirs, _NVRTC_LIB)
    header_roots = wheel_roots + toolkit_roots
    source = "wheels"
    if library is None and home is not None:
        lib_dirs = [home / "lib64", home / "lib"]
        library = _first_lib(lib_dirs, _NVRTC_LIB)
        header_roots, source = toolkit_roots, f"toolkit {home}"
    if library is None:
        raise RuntimeError(
            "deepgemm_ops: NVRTC not found: a CUDA build of torch installs it (the nvidia-cuda-nvrtc wheel), so does "
            "a CUDA toolkit (lib64/libnvrtc.so; set CUDA_HOME). Or compile with nvcc: DG_JIT_USE_NVRTC=0"
        )
    # nvJitLink of the same major version as NVRTC (LTO IR is read by the same or a newer linker).
    major = library.name.rsplit(".", 1)[-1]
    jitlink = _first_lib(lib_dirs + [library.parent], _JITLINK_LIB, major)
    cuda_include = _find_include(_CUDA_HEADER_PROBE, header_roots)
    libcudacxx_include = _find_include(_LIBCUDACXX_PROBE, header_roots)
    missing = []
    if jitlink is None:
        missing.append(f"nvJitLink (libnvJitLink.so.{major}: pip install nvidia-nvjitlink)")
    if cuda_include is None:
        missing.append(f"the CUDA headers ({_CUDA_HEADER_PROBE}: pip install nvidia-cuda-runtime)")
    if libcudacxx_include is None:
        missing.append(f"the libcu++ headers ({_LIBCUDACXX_PROBE}: pip install nvidia-cuda-cccl)")
    if missing:
        raise RuntimeError(
            f"deepgemm_ops: NVRTC ({library}) needs {' and '.join(missing)} with the same CUDA version, or a CUDA "
            f"toolkit (set CUDA_HOME); looked in {', '.join(str(r) for r in header_roots) or 'nothing'}"
        )
    return NvrtcSetup(library, jitlink, cuda_include, libcudacxx_include, source)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# nvcc
# ---------------------------------------------------------------------------------------------------------------


def nvcc_path() -> str:
    override = os.environ.get("DG_JIT_NVCC_COMPILER")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise RuntimeError(
                f"deepgemm_ops: DG_JIT_NVCC_COMPILER must name an executable nvcc, got {override!r} "
                "(no such executable file)"
            )
        return override
    home = cuda_home()
    if home is not None and (home / "bin" / "nvcc").is_file():
        return str(home / "bin" / "nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        return on_path
    raise RuntimeError(
        "deepgemm_ops: nvcc not found (DG_JIT_USE_NVRTC=0 selects it): set DG_JIT_NVCC_COMPILER or CUDA_HOME, "
        "install the toolkit at /usr/local/cuda, or put nvcc on PATH"
    )
