"""Typed Python entry points of the ``torch.ops.deepgemm`` operators (re-exported as ``deepgemm_ops.<name>``).

Each calls the registered op, so it traces under ``torch.compile``, captures in CUDA graphs and dispatches to the CPU
reference or the GPU kernels like the op itself. Shapes: M rows of A, N rows of B, K the reduction, G groups;
scales are fp32 dequantization factors (``x ≈ q * sf``), one per 128 elements of K (and per 128 rows of N for
128x128 weight blocks). Errors are ``ValueError``\\ s naming the argument, what was expected and what was given.
The int arguments are checked here before dispatch as well: the dispatcher turns ``True`` into ``1`` for a
``SymInt`` argument, so only the Python entry points can refuse a bool.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _validate as V

_ops = torch.ops.deepgemm


def fp8_gemm_nt(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, c: Tensor | None = None,
                out_dtype: torch.dtype | None = None) -> Tensor:
    """D = C + A·Bᵀ with fine-grained scaling.

    a: e4m3 [M, K] with sfa fp32 [M, ceil(K/128)]; b: e4m3 [N, K] with sfb fp32 [ceil(N/128), ceil(K/128)] (128x128
    blocks) or [N, ceil(K/128)] (1x128 rows); c: optional fp32 [M, N]. Returns bf16 [M, N], or fp32 when
    ``out_dtype=torch.float32`` or ``c`` is given. Both operands K-major.
    """
    return _ops.fp8_gemm_nt.default(a, sfa, b, sfb, c, out_dtype)


def fp8_gemm_nt_out(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, out: Tensor, c: Tensor | None = None) -> None:
    """:func:`fp8_gemm_nt` into ``out`` (bf16 or fp32 [M, N]; fp32 with ``c``; may be a row-strided slice or ``c``
    itself)."""
    _ops.fp8_gemm_nt_out.default(a, sfa, b, sfb, out, c)


def m_grouped_fp8_gemm_nt_contiguous(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, m_indices: Tensor) -> Tensor:
    """MoE GEMM over row-concatenated groups: row r of a [ΣM, K] is multiplied with expert ``m_indices[r]`` of
    b [G, N, K] (-1: padding, output row unspecified). Each group's rows start at a multiple of
    ``get_mk_alignment_for_contiguous_layout()``. Returns bf16 [ΣM, N]."""
    return _ops.m_grouped_fp8_gemm_nt_contiguous.default(a, sfa, b, sfb, m_indices)


def m_grouped_fp8_gemm_nt_contiguous_out(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, m_indices: Tensor,
                                         out: Tensor) -> None:
    """:func:`m_grouped_fp8_gemm_nt_contiguous` into ``out`` [ΣM, N]."""
    _ops.m_grouped_fp8_gemm_nt_contiguous_out.default(a, sfa, b, sfb, m_indices, out)


def m_grouped_fp8_gemm_nt_masked(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, masked_m: Tensor,
                                 expected_m: int) -> Tensor:
    """MoE GEMM per group with device-side row counts (CUDA-graph friendly): a [G, Mmax, K], b [G, N, K];
    ``masked_m[g]`` rows of group g are valid, ``expected_m`` is the typical count (a heuristic hint only).
    Returns bf16 [G, Mmax, N]; rows at or past ``masked_m[g]`` are unspecified."""
    V.check_expected_m(expected_m)
    return _ops.m_grouped_fp8_gemm_nt_masked.default(a, sfa, b, sfb, masked_m, expected_m)


def m_grouped_fp8_gemm_nt_masked_out(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, masked_m: Tensor,
                                     expected_m: int, out: Tensor) -> None:
    """:func:`m_grouped_fp8_gemm_nt_masked` into ``out`` [G, Mmax, N] (groups back to back)."""
    V.check_expected_m(expected_m)
    _ops.m_grouped_fp8_gemm_nt_masked_out.default(a, sfa, b, sfb, masked_m, expected_m, out)


def per_token_cast_to_fp8(x: Tensor, group_size: int = 128, mn_major_scales: bool = False) -> tuple[Tensor, Tensor]:
    """x bf16/f16/f32 [M, K] -> (e4m3 [M, K], fp32 scales [M, ceil(K/group_size)]), one scale per row and
    ``group_size`` columns (``amax / 448``). ``mn_major_scales``: the scales MN-major with the TMA-aligned M stride,
    the layout the GEMMs read, so the GEMM launches without a copy."""
    V.check_size_arg("group_size", group_size)
    return _ops.per_token_cast_to_fp8.default(x, group_size, mn_major_scales)


def per_block_cast_to_fp8(x: Tensor, block_size: int = 128) -> tuple[Tensor, Tensor]:
    """x bf16/f16/f32 [N, K] -> (e4m3 [N, K], fp32 scales [ceil(N/bs), ceil(K/bs)]), one scale per square block (the
    weight recipe)."""
    V.check_size_arg("block_size", block_size)
    return _ops.per_block_cast_to_fp8.default(x, block_size)


def get_mn_major_tma_aligned_tensor(sf: Tensor) -> Tensor:
    """The same scale values ([MN, KB] or [G, MN, KB]) stored MN-major with the MN stride rounded up to 16 bytes,
    the layout the GEMM kernels read; always a new tensor."""
    return _ops.get_mn_major_tma_aligned_tensor.default(sf)


__all__ = [
    "fp8_gemm_nt",
    "fp8_gemm_nt_out",
    "get_mn_major_tma_aligned_tensor",
    "m_grouped_fp8_gemm_nt_contiguous",
    "m_grouped_fp8_gemm_nt_contiguous_out",
    "m_grouped_fp8_gemm_nt_masked",
    "m_grouped_fp8_gemm_nt_masked_out",
    "per_block_cast_to_fp8",
    "per_token_cast_to_fp8",
]
