"""What the tests need from the machine, probed once: an SM90 GPU, nvcc, NVRTC, the CUTLASS headers, cuobjdump. Each
requirement has one predicate and one skip reason here; test modules import them (``from conftest import ...``)."""

import os
import shutil

import pytest
import torch

from deepgemm_ops import _toolchain


def _available(lookup) -> bool:
    try:
        lookup()
        return True
    except RuntimeError:
        return False


def _find_cuobjdump():
    try:
        import nvidia.cu13  # noqa: F401  (the nvidia-cuda-cuobjdump wheel)

        path = os.path.join(list(nvidia.cu13.__path__)[0], "bin", "cuobjdump")
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    return shutil.which("cuobjdump")


SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
HAVE_CUTLASS = _available(_toolchain.cutlass_include_dir)
HAVE_NVRTC = _available(_toolchain.nvrtc_setup)
NVCC = _toolchain.nvcc_path() if _available(_toolchain.nvcc_path) else None
CUOBJDUMP = _find_cuobjdump()

requires_sm90 = pytest.mark.skipif(not SM90, reason="needs an SM90 (Hopper) GPU")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
requires_nvcc = pytest.mark.skipif(NVCC is None or not HAVE_CUTLASS, reason="needs nvcc and the CUTLASS headers")
requires_nvrtc = pytest.mark.skipif(not (HAVE_NVRTC and HAVE_CUTLASS), reason="needs NVRTC and the CUTLASS headers")
requires_cuobjdump = pytest.mark.skipif(CUOBJDUMP is None, reason="needs cuobjdump (nvidia-cuda-cuobjdump)")
TWO_GPUS = SM90 and torch.cuda.device_count() >= 2
requires_two_gpus = pytest.mark.skipif(not TWO_GPUS, reason="needs two SM90 GPUs")


@pytest.fixture
def force_tile(monkeypatch):
    """Makes the FP8 planner use a given tile (and forget every plan made before and after)."""
    from deepgemm_ops import _cuda
    from deepgemm_ops import _heuristics as H

    chosen = H.choose_fp8_gemm_config

    def force(block_m, block_n, cluster_size, num_splits=1):
        monkeypatch.setattr(H, "choose_fp8_gemm_config", lambda *a, **kw: H.with_tile(
            chosen(*a, **kw), block_m=block_m, block_n=block_n, cluster_size=cluster_size, num_splits=num_splits))
        _cuda.clear_plans()

    yield force
    monkeypatch.undo()
    _cuda.clear_plans()
