"""deepgemm_ops: DeepGEMM-style FP8 GEMMs with fine-grained scaling as ``torch.ops.deepgemm`` operators.

Importing registers the ops (schemas, fakes, CPU reference kernels) without initialising CUDA or compiling anything.
"""

from . import (
    _cuda,  # noqa: F401  (registers the CUDA kernels; builds nothing until first use)
    _ops,  # noqa: F401  (registers torch.ops.deepgemm.*: schemas, fakes, CPU kernels)
    nn,  # noqa: F401  (deepgemm_ops.nn.FP8Linear, fp8_linear)
    ops,
)
from ._cuda import warmup
from ._heuristics import get_mk_alignment_for_contiguous_layout
from ._layout import get_tma_aligned_size
from ._pdl import get_pdl, set_pdl
from ._precompile import GemmCall, precompile
from ._sms import get_num_sms, set_num_sms
from .ops import *  # noqa: F403  (the typed op functions: deepgemm_ops.fp8_gemm_nt, ...)

__all__ = [
    *ops.__all__,
    "GemmCall",
    "precompile",
    "get_tma_aligned_size",
    "get_mk_alignment_for_contiguous_layout",
    "get_num_sms",
    "set_num_sms",
    "get_pdl",
    "set_pdl",
    "warmup",
]
__version__ = "0.1.0"
