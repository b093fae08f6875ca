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
                out_dtype: torch.dtype | None = None, bias: Tensor | None = None) -> Tensor:
    """D = C + A·Bᵀ (+ bias) with fine-grained scaling.

    a: e4m3 [M, K] with sfa fp32 [M, ceil(K/128)]; b: e4m3 [N, K] with sfb fp32 [ceil(N/128), ceil(K/128)] (128x128
    blocks) or [N, ceil(K/128)] (1x128 rows); c: optional fp32 [M, N]. Returns bf16 [M, N], or fp32 when
    ``out_dtype=torch.float32`` or ``c`` is given. Both operands K-major. ``bias``: optional [N] in the output's
    dtype, added to every row in the kernel's epilogue (fp32 accumulator + bias, rounded once), as a linear layer's
    bias.
    """
    return _ops.fp8_gemm_nt.default(a, sfa, b, sfb, c, out_dtype, bias)


def fp8_gemm_nt_out(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, out: Tensor, c: Tensor | None = None,
                    bias: Tensor | None = None) -> None:
    """:func:`fp8_gemm_nt` into ``out`` (bf16 or fp32 [M, N]; fp32 with ``c``; may be a row-strided slice or ``c``
    itself; ``bias`` in out's dtype)."""
    _ops.fp8_gemm_nt_out.default(a, sfa, b, sfb, out, c, bias)


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


def per_block_cast_to_fp8_and_transpose(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x bf16/f16/f32 [N, K] -> (q, sf, q_t, sf_t): the 128 x 128 cast of x (as ``per_block_cast_to_fp8``) and of its
    transpose ([K, N] and [ceil(K/128), ceil(N/128)], bit for bit q and sf transposed), from one pass over x on the
    GPU. An FP8 linear layer's weight for the forward and the input-gradient GEMM."""
    return _ops.per_block_cast_to_fp8_and_transpose.default(x)


def per_token_cast_to_fp8_and_transpose(x: Tensor, mn_major_scales: bool = False,
                                        mn_major_scales_t: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x bf16/f16/f32 [M, K] -> (q, sf, q_t, sf_t): the 1 x 128 cast of x (as ``per_token_cast_to_fp8``) and of its
    transpose (q_t [K, M], scales [K, ceil(M/128)], as ``per_token_cast_to_fp8(x.t())``), from one pass over x on the
    GPU (rows % 16 == 0; other shapes run the two casts). A linear layer's activations for the forward GEMM (K =
    features) and the weight gradient (K = tokens); ``mn_major_scales`` / ``mn_major_scales_t`` lay each scale tensor
    out MN-major, the layout a GEMM reads for its A operand."""
    return _ops.per_token_cast_to_fp8_and_transpose.default(x, mn_major_scales, mn_major_scales_t)


def per_token_cast_to_fp8_transpose_and_sum(
        x: Tensor, mn_major_scales: bool = False, mn_major_scales_t: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`per_token_cast_to_fp8_and_transpose` and, from the same pass over x, its column sums (fp32 [K], summed
    in fp32 in a fixed order: deterministic): a linear layer's output gradient cast for the input- and weight-gradient
    GEMMs together with its bias gradient."""
    return _ops.per_token_cast_to_fp8_transpose_and_sum.default(x, mn_major_scales, mn_major_scales_t)


def get_mn_major_tma_aligned_tensor(sf: Tensor) -> Tensor:
    """The same scale values ([MN, KB] or [G, MN, KB]) stored MN-major with the MN stride rounded up to 16 bytes,
    the layout the GEMM kernels read; always a new tensor."""
    return _ops.get_mn_major_tma_aligned_tensor.default(sf)


def _bf16_layout(layout: str, math: str):
    """The typed pair (bf16_gemm_<layout>, bf16_gemm_<layout>_out)."""
    op, op_out = getattr(_ops, f"bf16_gemm_{layout}").default, getattr(_ops, f"bf16_gemm_{layout}_out").default

    def gemm(a: Tensor, b: Tensor, c: Tensor | None = None, out_dtype: torch.dtype | None = None) -> Tensor:
        return op(a, b, c, out_dtype)

    def gemm_out(a: Tensor, b: Tensor, out: Tensor, c: Tensor | None = None) -> None:
        op_out(a, b, out, c)

    name = f"bf16_gemm_{layout}"
    gemm.__name__ = gemm.__qualname__ = name
    gemm_out.__name__ = gemm_out.__qualname__ = name + "_out"
    gemm.__doc__ = (f"BF16 GEMM, {math} (the letters say how a and b are stored, as in DeepGEMM). Returns bf16 "
                    "[M, N], or fp32 when ``out_dtype=torch.float32`` or ``c`` (fp32 [M, N]) is given. On the GPU each "
                    "operand's row stride as stored must be a multiple of 8 elements (TMA).")
    gemm_out.__doc__ = f":func:`{name}` into ``out`` [M, N] (bf16 or fp32; fp32 with ``c``)."
    return gemm, gemm_out


bf16_gemm_nt, bf16_gemm_nt_out = _bf16_layout("nt", "a [M, K], b [N, K]: D = C + a·bᵀ")
bf16_gemm_nn, bf16_gemm_nn_out = _bf16_layout("nn", "a [M, K], b [K, N]: D = C + a·b")
bf16_gemm_tn, bf16_gemm_tn_out = _bf16_layout("tn", "a [K, M], b [K, N]: D = C + aᵀ·b")
bf16_gemm_tt, bf16_gemm_tt_out = _bf16_layout("tt", "a [K, M], b [N, K]: D = C + aᵀ·bᵀ")


def m_grouped_bf16_gemm_nt_contiguous(a: Tensor, b: Tensor, m_indices: Tensor) -> Tensor:
    """:func:`m_grouped_fp8_gemm_nt_contiguous` for bfloat16 operands (no scales): a [ΣM, K], b [G, N, K]. CPU
    reference only for now."""
    return _ops.m_grouped_bf16_gemm_nt_contiguous.default(a, b, m_indices)


def m_grouped_bf16_gemm_nt_contiguous_out(a: Tensor, b: Tensor, m_indices: Tensor, out: Tensor) -> None:
    """:func:`m_grouped_bf16_gemm_nt_contiguous` into ``out`` [ΣM, N]."""
    _ops.m_grouped_bf16_gemm_nt_contiguous_out.default(a, b, m_indices, out)


def m_grouped_bf16_gemm_nt_masked(a: Tensor, b: Tensor, masked_m: Tensor, expected_m: int) -> Tensor:
    """:func:`m_grouped_fp8_gemm_nt_masked` for bfloat16 operands (no scales): a [G, Mmax, K], b [G, N, K]. CPU
    reference only for now."""
    V.check_expected_m(expected_m)
    return _ops.m_grouped_bf16_gemm_nt_masked.default(a, b, masked_m, expected_m)


def m_grouped_bf16_gemm_nt_masked_out(a: Tensor, b: Tensor, masked_m: Tensor, expected_m: int, out: Tensor) -> None:
    """:func:`m_grouped_bf16_gemm_nt_masked` into ``out`` [G, Mmax, N]."""
    V.check_expected_m(expected_m)
    _ops.m_grouped_bf16_gemm_nt_masked_out.default(a, b, masked_m, expected_m, out)


def k_grouped_fp8_gemm_nt_contiguous(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, ks: Tensor,
                                     c: Tensor | None = None) -> Tensor:
    """Weight-gradient GEMM over groups that split K (MoE experts whose reduction length — their token count —
    differs): a [M, ΣK], b [N, ΣK] e4m3 K-major, sfa [M, ΣK/128] and sfb [N, ΣK/128] fp32 (1x128 on both), ``ks``
    int32 [G] (each a multiple of 128, summing to ΣK). Returns fp32 [G, M, N], D[g] = C[g] + the group's A·Bᵀ.
    DeepGEMM's ``k_grouped_fp8_gemm_tn_contiguous`` takes these operands transposed. CPU reference only for now."""
    return _ops.k_grouped_fp8_gemm_nt_contiguous.default(a, sfa, b, sfb, ks, c)


def k_grouped_fp8_gemm_nt_contiguous_out(a: Tensor, sfa: Tensor, b: Tensor, sfb: Tensor, ks: Tensor, out: Tensor,
                                         c: Tensor | None = None) -> None:
    """:func:`k_grouped_fp8_gemm_nt_contiguous` into ``out`` (fp32 [G, M, N]; may be ``c`` itself, accumulating a
    gradient in place)."""
    _ops.k_grouped_fp8_gemm_nt_contiguous_out.default(a, sfa, b, sfb, ks, out, c)


__all__ = [
    "k_grouped_fp8_gemm_nt_contiguous",
    "k_grouped_fp8_gemm_nt_contiguous_out",
    "bf16_gemm_nt",
    "bf16_gemm_nt_out",
    "bf16_gemm_nn",
    "bf16_gemm_nn_out",
    "bf16_gemm_tn",
    "bf16_gemm_tn_out",
    "bf16_gemm_tt",
    "bf16_gemm_tt_out",
    "m_grouped_bf16_gemm_nt_contiguous",
    "m_grouped_bf16_gemm_nt_contiguous_out",
    "m_grouped_bf16_gemm_nt_masked",
    "m_grouped_bf16_gemm_nt_masked_out",
    "fp8_gemm_nt",
    "fp8_gemm_nt_out",
    "get_mn_major_tma_aligned_tensor",
    "m_grouped_fp8_gemm_nt_contiguous",
    "m_grouped_fp8_gemm_nt_contiguous_out",
    "m_grouped_fp8_gemm_nt_masked",
    "m_grouped_fp8_gemm_nt_masked_out",
    "per_block_cast_to_fp8",
    "per_block_cast_to_fp8_and_transpose",
    "per_token_cast_to_fp8_and_transpose",
    "per_token_cast_to_fp8_transpose_and_sum",
    "per_token_cast_to_fp8",
]
