"""The host C++ module (``csrc/host/*.cpp``): built on first use, once per content, cached across processes.

:func:`host_module` returns the loaded Python extension module. Its name carries a hash of every host source, the
project headers they include, the build flags and the torch/Python versions, so an edit builds a new module and an
unchanged tree reuses the built one. A new process with a built module imports it directly (no compiler check, no
ninja run); otherwise ``torch.utils.cpp_extension.load_inline`` builds it under ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), serialising concurrent builders with its own lock file.

The sources are plain C++ calling the CUDA runtime and, through ``csrc/host/driver.hpp``, the driver API: there is
no device code, but the build needs the CUDA headers, cudart and torch's CUDA libraries (``with_cuda=True``). The
module imports without a GPU or driver.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

from . import _jit, _pdl, _toolchain

_CFLAGS = ("-O3",)
_MODULE_PREFIX = "deepgemm_ops_host"

_lock = threading.Lock()
_module: ModuleType | None = None


def host_dir() -> Path:
    return _jit.csrc_dir() / "host"


def host_sources() -> list[Path]:
    return sorted(host_dir().glob("*.cpp"))


def module_name(sources: list[Path]) -> str:
    """``deepgemm_ops_host_<hash12>`` over the sources, the project headers they include, flags and the torch
    and Python versions."""
    h = hashlib.sha256()
    for part in (torch.__version__, f"{sys.version_info.major}.{sys.version_info.minor}", *_CFLAGS):
        h.update(part.encode() + b"\0")
    roots = [host_dir(), _jit.kernel_dir()]
    headers: dict[str, bytes] = {}
    for src in sources:
        text = src.read_text()
        h.update(f"source {src.name}:{len(text)}:".encode() + text.encode())
        headers.update(_jit.project_headers(text, roots))
    for rel, data in sorted(headers.items()):
        h.update(f"header {rel}:{len(data)}:".encode() + data)
    return f"{_MODULE_PREFIX}_{h.hexdigest()[:12]}"


def build_root() -> Path:
    """Same location as ``torch.utils.cpp_extension.get_default_build_root`` without importing that module (50 ms)."""
    override = os.environ.get("TORCH_EXTENSIONS_DIR")
    if override:
        return Path(override)
    from torch import _appdirs

    return Path(os.path.realpath(_appdirs.user_cache_dir(appname="torch_extensions")))


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def _import_extension(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"deepgemm_ops: cannot import the host module from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its "No CUDA runtime is found" warning: on a machine without a
    GPU that is expected, and the build needs only the toolkit's headers."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def ensure_cuda_home() -> Path:
    """The toolkit root torch's extension builder should use: its own guess when that has ``include/cuda.h``, else
    ours. Torch guesses from ``which nvcc``, which on machines with an nvcc wrapper script in /usr/local/bin lands on
    /usr/local (no CUDA headers). Changes nothing; :func:`_build_environment` applies it for the build."""
    guess = _cpp_extension().CUDA_HOME
    if guess and (Path(guess) / "include" / "cuda.h").is_file():
        return Path(guess)
    home = _toolchain.cuda_home()
    if home is None:
        raise RuntimeError(
            "deepgemm_ops: building the host module needs the CUDA toolkit headers: set CUDA_HOME to a toolkit "
            f"root containing include/cuda.h (torch guessed {guess!r}; /usr/local/cuda has none either)"
        )
    return home


@contextlib.contextmanager
def _build_environment(home: Path):
    """For the duration of the build: torch's builder pointed at ``home`` (it reads the module's CUDA_HOME and, in
    the ninja file, the environment), and TORCH_CUDA_ARCH_LIST set (torch derives nvcc arch flags even without a .cu
    source and fails without a GPU otherwise). Both, and os.environ, are restored afterwards."""
    cpp_extension = _cpp_extension()
    saved_module_home = cpp_extension.CUDA_HOME
    saved_env = {name: os.environ.get(name) for name in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    cpp_extension.CUDA_HOME = str(home)
    os.environ["CUDA_HOME"] = str(home)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
    try:
        yield cpp_extension
    finally:
        cpp_extension.CUDA_HOME = saved_module_home
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _build(name: str, sources: list[Path], build_dir: Path) -> ModuleType:
    home = ensure_cuda_home()
    include_paths = [host_dir(), _jit.kernel_dir(), home / "include"]
    build_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _build_environment(home) as cpp_extension:
        # load_inline compiles the sources as one translation unit; the #line directives keep compiler messages
        # pointing at the real file and line.
        module = cpp_extension.load_inline(
            name=name,
            cpp_sources=[f'#line 1 "{s}"\n' + s.read_text() for s in sources],
            extra_cflags=list(_CFLAGS),
            extra_include_paths=[str(p) for p in include_paths],
            build_directory=str(build_dir),
            with_cuda=True,
            is_python_module=True,
            verbose=_jit.debug_enabled(),
        )
    if _jit.debug_enabled():
        _jit.debug_log(f"built host module {name} in {time.perf_counter() - start:.1f} s")
    return module


def host_module() -> ModuleType:
    """The host extension module, built with ``load_inline`` if needed. Thread-safe; the first call per process pays
    the import."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            sources = host_sources()
            if not sources:
                raise RuntimeError(f"deepgemm_ops: no host sources (*.cpp) in {host_dir()}")
            name = module_name(sources)
            build_dir = build_root() / name
            library = build_dir / f"{name}.so"
            # The stamp is written after a successful build: a library without a matching one may be half-linked.
            stamp = build_dir / f"{name}.so.ok"
            if library.is_file() and stamp.is_file() and stamp.read_text() == _stamp(library):
                module = _import_extension(name, library)
                if _jit.debug_enabled():
                    _jit.debug_log(f"host module {name} loaded from {library}")
            else:
                module = _build(name, sources, build_dir)
                stamp.write_text(_stamp(library))
            module.set_pdl(_pdl.get_pdl())  # before it is published: no launch may miss the setting
            _module = module
    return _module


def apply_pdl_setting() -> None:
    """Hands deepgemm_ops.set_pdl's value to the host module if it is loaded (builds nothing); host_module() hands it
    over when it loads. Under the load lock, so a module being loaded cannot miss a change."""
    with _lock:
        if _module is not None:
            _module.set_pdl(_pdl.get_pdl())


def check(error: str) -> None:
    """Raise the error a host-module entry point returned ("" = success). The host module never lets a C++
    exception reach pybind11 (see ``no_throw`` in csrc/host/python_bindings.hpp)."""
    if error:
        kind, _, message = error.partition(": ")
        if kind == "ValueError":
            raise ValueError(message)
        if message.startswith("CUDA out of memory"):  # an allocation in the C++ GEMM door or casts: torch's own type
            raise torch.OutOfMemoryError(message)
        raise RuntimeError(message)
