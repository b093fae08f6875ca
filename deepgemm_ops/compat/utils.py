"""``deep_gemm.utils``: DeepGEMM's cast and layout helpers on this library's ops.

The casts compute scales the way this library does everywhere (amax of the group floored at 1e-4, divided by 448,
values divided by the scale with IEEE division), on the fused kernels where the layout allows; DeepGEMM's own helpers
multiply by the reciprocal instead, so an occasional e4m3 value may differ in its last bit. ``use_ue8m0`` rounds each
scale up to a power of two (the UE8M0 format) before quantizing, as DeepGEMM does.
"""

from __future__ import annotations

import torch

from .. import _layout
from .._constants import ceil_div
from .._heuristics import get_mk_alignment_for_contiguous_layout
from .._layout import get_tma_aligned_size

_ops = torch.ops.deepgemm


def align(x: int, y: int) -> int:
    return ceil_div(x, y) * y


def ceil_to_ue8m0(x: torch.Tensor) -> torch.Tensor:
    """Each value rounded up in magnitude to a power of two."""
    return torch.exp2(torch.ceil(torch.log2(x.abs())))


def per_token_cast_to_fp8(x: torch.Tensor, use_ue8m0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (K % 128 == 0) -> (e4m3 [M, K], fp32 [M, K/128])."""
    if x.dim() != 2 or x.shape[1] % 128:
        raise ValueError(f"x must be 2-D with K a multiple of 128, got {list(x.shape)}")
    q, sf = _ops.per_token_cast_to_fp8(x)
    if use_ue8m0:
        sf = ceil_to_ue8m0(sf)
        q = _layout.quantize(x, sf, 1, 128)
    return q, sf


def per_channel_cast_to_fp8(x: torch.Tensor, use_ue8m0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, N] (M % 128 == 0) -> (e4m3 [M, N], fp32 [M/128, N]): one scale per column and 128 rows."""
    if x.dim() != 2 or x.shape[0] % 128:
        raise ValueError(f"x must be 2-D with M a multiple of 128, got {list(x.shape)}")
    q_t, sf_t = per_token_cast_to_fp8(x.t(), use_ue8m0)
    return q_t.t().contiguous(), sf_t.t().contiguous()


def per_block_cast_to_fp8(x: torch.Tensor, use_ue8m0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, N] -> (e4m3 [M, N], fp32 [ceil(M/128), ceil(N/128)])."""
    q, sf = _ops.per_block_cast_to_fp8(x)
    if use_ue8m0:
        sf = ceil_to_ue8m0(sf)
        q = _layout.quantize(x, sf, 128, 128)
    return q, sf


def per_custom_dims_cast_to_fp8(x: torch.Tensor, dims: tuple, use_ue8m0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per index of the kept ``dims`` (amax over all other dims); the scale tensor squeezed."""
    reduce = tuple(i for i in range(x.dim()) if i not in set(dims))
    sf = _layout.scale_of(x.abs().float().amax(dim=reduce, keepdim=True).clamp(min=_layout.AMAX_FLOOR))
    if use_ue8m0:
        sf = ceil_to_ue8m0(sf)
    return (x.float() / sf).to(torch.float8_e4m3fn), sf.squeeze()


def get_mn_major_tma_aligned_tensor(sf: torch.Tensor) -> torch.Tensor:
    return _ops.get_mn_major_tma_aligned_tensor(sf)


def get_mn_major_tma_aligned_packed_ue8m0_tensor(sf: torch.Tensor) -> torch.Tensor:
    """fp32 power-of-two scales [.., MN, K] -> their exponent bytes packed four per int32 along K, as int32
    [.., MN, ceil(K/4)] stored MN-major with the TMA-aligned MN stride (the SM100 scale format)."""
    if sf.dtype != torch.float32 or sf.dim() not in (2, 3):
        raise ValueError(f"sf must be float32 [MN, K] or [G, MN, K], got {sf.dtype} {list(sf.shape)}")
    batched = sf if sf.dim() == 3 else sf.unsqueeze(0)
    g, mn, k = batched.shape
    exponents = (batched.contiguous().view(torch.int32) >> 23).to(torch.uint8)
    packed = torch.zeros(g, mn, align(k, 4), dtype=torch.uint8, device=sf.device)
    packed[:, :, :k] = exponents
    words = packed.view(torch.int32)  # [g, mn, ceil(k/4)]
    aligned = get_tma_aligned_size(mn, 4)
    out = torch.empty_strided((g, mn, words.shape[-1]), (words.shape[-1] * aligned, 1, aligned), dtype=torch.int32,
                              device=sf.device)
    out.copy_(words)
    return out if sf.dim() == 3 else out.squeeze(0)


def get_k_grouped_mn_major_tma_aligned_packed_ue8m0_tensor(sf: torch.Tensor, ks_tensor: torch.Tensor,
                                                           ks) -> torch.Tensor:
    """Per-channel fp32 power-of-two scales of a k-grouped operand, [sum(ks) / 128, MN] (group g's k-blocks back to
    back) -> each group's exponent bytes packed four k-blocks per int32, ceil(ks[g] / 512) rows of MN words per group,
    the groups back to back: int32 [sum_g ceil(ks[g] / 512), MN]. ``ks`` (host ints, multiples of 128) gives the
    layout; ``ks_tensor`` is its device copy, taken for DeepGEMM's signature."""
    ks = [int(k) for k in ks]
    if sf.dtype != torch.float32 or sf.dim() != 2:
        raise ValueError(f"sf must be float32 [sum(ks) / 128, MN], got {sf.dtype} {list(sf.shape)}")
    if any(k < 0 or k % 128 for k in ks) or sum(ks) // 128 != sf.shape[0]:
        raise ValueError(f"ks must be non-negative multiples of 128 summing to 128 * sf.shape[0] = "
                         f"{128 * sf.shape[0]}, got {ks}")
    if ks_tensor.numel() != len(ks):
        raise ValueError(f"ks_tensor must hold the {len(ks)} values of ks, got {ks_tensor.numel()}")
    # Each group's [k / 128, MN] block is the MN-major packing of its transpose, transposed back.
    parts = [part.t() for part in sf.split([k // 128 for k in ks]) if part.shape[0]]
    packed = [get_mn_major_tma_aligned_packed_ue8m0_tensor(part).t() for part in parts]
    return torch.cat(packed) if packed else torch.empty(0, sf.shape[1], dtype=torch.int32, device=sf.device)


__all__ = [
    "align", "ceil_div", "ceil_to_ue8m0", "get_k_grouped_mn_major_tma_aligned_packed_ue8m0_tensor",
    "get_mk_alignment_for_contiguous_layout", "get_mn_major_tma_aligned_packed_ue8m0_tensor",
    "get_mn_major_tma_aligned_tensor", "get_tma_aligned_size", "per_block_cast_to_fp8", "per_channel_cast_to_fp8",
    "per_custom_dims_cast_to_fp8", "per_token_cast_to_fp8",
]
