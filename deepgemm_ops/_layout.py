"""Scale-factor layouts and the FP8 casts (pure torch: they run on any device)."""

from __future__ import annotations

import torch

from ._constants import SCALE_BLOCK, TMA_ALIGNMENT_BYTES, ceil_div
from ._validate import FP8

FP8_MAX = torch.finfo(FP8).max  # 448
# Keeps an all-zero group from producing a zero scale (and 0/0 when quantizing).
AMAX_FLOOR = 1e-4


def get_tma_aligned_size(mn: int, element_size: int) -> int:
    """``mn`` rounded up so that ``mn * element_size`` bytes is a multiple of the TMA alignment (16 bytes)."""
    if not isinstance(element_size, int) or element_size < 1 or TMA_ALIGNMENT_BYTES % element_size:
        raise ValueError(f"element_size must be 1, 2, 4, 8 or 16 bytes, got {element_size!r}")
    return ceil_div(mn, TMA_ALIGNMENT_BYTES // element_size) * (TMA_ALIGNMENT_BYTES // element_size)


def mn_major_strides(shape) -> tuple:
    """Strides of an MN-major [.., MN, KB] fp32 scale tensor whose MN stride is padded to the TMA alignment."""
    *batch, mn, kb = shape
    aligned = get_tma_aligned_size(mn, 4)
    strides = (1, aligned)
    if batch:
        strides = (kb * aligned, *strides)
    return strides


def is_mn_major_tma_aligned(sf: torch.Tensor) -> bool:
    if sf.numel() == 0:
        return True
    want = mn_major_strides(sf.shape)
    # Size-1 dims may carry any stride.
    return all(s == w or n == 1 for s, w, n in zip(sf.stride(), want, sf.shape))


def empty_mn_major(shape, device) -> torch.Tensor:
    return torch.empty_strided(tuple(shape), mn_major_strides(shape), dtype=torch.float32, device=device)


def to_mn_major_tma_aligned(sf: torch.Tensor) -> torch.Tensor:
    """Same values as ``sf``; MN-major storage with the TMA-aligned MN stride (no copy when already so)."""
    if is_mn_major_tma_aligned(sf):
        return sf
    return empty_mn_major(sf.shape, sf.device).copy_(sf)


def _within(block: int, size: int) -> int:
    """A block longer than the dimension covers all of it: the same scales, without padding up to the block (a huge
    group size would otherwise allocate until torch overflows)."""
    return max(1, min(block, size))


def _amax_blocks(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """amax of |x| over [rows, cols] blocks (edge blocks partial), as fp32 [ceil(M/rows), ceil(K/cols)]."""
    m, k = x.shape
    rows, cols = _within(rows, m), _within(cols, k)
    pm, pk = ceil_div(m, rows) * rows, ceil_div(k, cols) * cols
    padded = torch.nn.functional.pad(x.float().abs(), (0, pk - k, 0, pm - m))
    return padded.view(pm // rows, rows, pk // cols, cols).amax(dim=(1, 3)).clamp(min=AMAX_FLOOR)


def quantize(x: torch.Tensor, sf: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """e4m3(x / scale), each scale of sf covering a [rows, cols] block of x (edge blocks partial)."""
    m, k = x.shape
    rows, cols = _within(rows, m), _within(cols, k)
    expanded = sf.repeat_interleave(rows, dim=0)[:m].repeat_interleave(cols, dim=1)[:, :k]
    # contiguous: an elementwise result follows x's strides, and the op contract (and its fake) is a row-major q
    return (x.float() / expanded).to(FP8).contiguous()


def scale_of(amax: torch.Tensor) -> torch.Tensor:
    """amax / 448, the IEEE quotient on every device. The divisor is a tensor on amax's device: torch's CUDA division
    by a Python scalar multiplies by its reciprocal, which rounds differently from the CPU and the fused kernels."""
    return amax / torch.full((), FP8_MAX, dtype=amax.dtype, device=amax.device)


def per_token_cast(x: torch.Tensor, group_size: int, mn_major_scales: bool = False):
    """Each row's groups of ``group_size`` K-elements share one scale: (e4m3 [M, K], fp32 [M, ceil(K/group_size)]);
    the scales MN-major with the TMA-aligned M stride when ``mn_major_scales`` (the layout the GEMM kernels read)."""
    sf = scale_of(_amax_blocks(x, 1, group_size))
    q = quantize(x, sf, 1, group_size)
    return q, (empty_mn_major(sf.shape, sf.device).copy_(sf) if mn_major_scales else sf)


def per_block_cast(x: torch.Tensor, block_size: int):
    """Square ``block_size`` blocks share one scale: (e4m3 [N, K], fp32 [ceil(N/bs), ceil(K/bs)])."""
    sf = scale_of(_amax_blocks(x, block_size, block_size))
    return quantize(x, sf, block_size, block_size), sf


def per_block_cast_and_transpose(x: torch.Tensor):
    """(q, sf, q_t, sf_t): the 128 x 128 cast of x and of x's transpose. 128 x 128 blocks transpose exactly, so q_t and
    sf_t are q and sf transposed (the bytes moved through uint8, which every backend copies; always copies, since a
    functional op's outputs must not alias each other)."""
    q, sf = per_block_cast(x, SCALE_BLOCK)
    q_t = q.view(torch.uint8).t().clone(memory_format=torch.contiguous_format).view(q.dtype)
    return q, sf, q_t, sf.t().clone(memory_format=torch.contiguous_format)


def per_token_cast_and_transpose(x: torch.Tensor, mn_major_scales: bool = False, mn_major_scales_t: bool = False):
    """(q, sf, q_t, sf_t): the 1 x 128 cast of x [M, K] (groups along K) and of x's transpose (q_t [K, M], groups along
    M, sf_t [K, ceil(M/128)]), each with its scales MN-major when asked."""
    q, sf = per_token_cast(x, SCALE_BLOCK, mn_major_scales)
    q_t, sf_t = per_token_cast(x.t(), SCALE_BLOCK, mn_major_scales_t)
    return q, sf, q_t, sf_t


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """fp32 [K]: the sums of x [M, K] over its rows, accumulated in fp32 (a linear layer's bias gradient)."""
    return x.sum(0, dtype=torch.float32)


def per_token_cast_transpose_and_sum(x: torch.Tensor, mn_major_scales: bool = False, mn_major_scales_t: bool = False):
    """(q, sf, q_t, sf_t, sums): per_token_cast_and_transpose and column_sums of x."""
    return *per_token_cast_and_transpose(x, mn_major_scales, mn_major_scales_t), column_sums(x)


def dequantize_rows(x: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
    """fp32 values of an FP8 [R, K] tensor whose rows carry 1x128 scales sf [R, ceil(K/128)]."""
    k = x.shape[-1]
    return x.float() * sf.repeat_interleave(SCALE_BLOCK, dim=-1)[..., :k]


def dequantize_b(b: torch.Tensor, sfb: torch.Tensor, recipe: str) -> torch.Tensor:
    """fp32 values of B [N, K] under either weight recipe (128x128 blocks or 1x128 rows)."""
    if recipe == "128x128":
        sfb = sfb.repeat_interleave(SCALE_BLOCK, dim=0)[: b.shape[0]]
    return dequantize_rows(b, sfb)
