"""Kernel configuration for the SM90 BF16 GEMM family (pure Python: no torch, no CUDA).

``choose_bf16_gemm_config`` picks block sizes and pipeline depth for one problem. As for the FP8 family, N, K and
every ``Bf16GemmConfig`` field are compile-time constants of the generated kernel and M stays a run-time argument.

Python -> C++ contract: ``Bf16GemmConfig.as_ints()`` lists the fields in declaration order, which is the field order
of ``Bf16GemmKernelConfig`` in ``csrc/host/sm90_bf16_gemm_launch.hpp``; string fields travel as their index in
``_heuristics.GEMM_TYPES`` / ``BF16_LAYOUTS`` / ``_heuristics.OUT_DTYPES``.
"""

from __future__ import annotations

import dataclasses
import functools

from ._constants import ceil_div
from ._heuristics import (
    GEMM_TYPES,
    OUT_DTYPES,
    SM90_MAX_SMEM_BYTES,
    SWIZZLE_GROUP_N,
    check_forced_smem,
    config_ints,
    staging_bytes,
)

# The layouts as DeepGEMM names them: first letter a (n: [M, K] K-major, t: [K, M] M-major), second b (t: [N, K]
# K-major, n: [K, N] N-major). Grouped GEMMs are NT only.
BF16_LAYOUTS = ("nt", "nn", "tn", "tt")
BF16_BLOCK_K = 64  # one 128-byte swizzle row of bf16
BF16_MAX_STAGES = 8
BLOCK_M_CANDIDATES = (128, 64)
# One FP32 BLOCK_N / 2 accumulator per math thread: 256 needs 128 of the 232 registers. An N-major B tile is made of
# whole 64-column swizzle chunks (csrc/kernels/sm90_bf16_mainloop.cuh).
# 176: N = 2112 is 12 blocks of 176 (2.9 waves of 128-row tiles at M = 4096) against 11 of 192 (2.7 waves: as many
# waves of larger tiles), +5% nt and tt. 240 is left out: the model picks it at N = 24576 where it measured 1.8% slower
# than 224 (docs/PERF.md, 2026-12-03). Grouped GEMMs skip 176: measured on normal ones only, and at N = 6144 the model
# ties it with 256 (35 blocks of 176, the last one short, against 24 full ones).
BLOCK_N_CANDIDATES = (256, 224, 192, 176, 160, 128, 112, 96, 80, 64, 48, 32, 16)
_NORMAL_ONLY_BLOCK_N = (176,)
MN_MAJOR_BLOCK_N_CANDIDATES = (256, 192, 128, 64)

# Cost model constants (per SM per cycle, H100/H200 class): BF16 tensor-core FLOPs and L2 -> SM bytes.
_FLOPS_PER_CYCLE = 4096
_L2_BYTES_PER_CYCLE = 64


def operand_majors(layout: str) -> tuple[bool, bool]:
    """(a is M-major, b is N-major) for a BF16 layout."""
    return layout[0] == "t", layout[1] == "n"


@dataclasses.dataclass(frozen=True)
class Bf16GemmConfig:
    # Field order is the C++ Bf16GemmKernelConfig field order (see as_ints); do not reorder.
    block_m: int
    block_n: int
    block_k: int
    num_stages: int
    num_math_warpgroups: int  # block_m / 64
    num_threads: int  # (num_math_warpgroups + 1) * 128: the last warpgroup is the TMA producer
    swizzle_group_n: int
    smem_bytes: int
    num_sms: int
    gemm_type: str  # one of _heuristics.GEMM_TYPES
    layout: str  # one of BF16_LAYOUTS
    out_dtype: str  # one of _heuristics.OUT_DTYPES
    has_c: bool

    def as_ints(self) -> tuple[int, ...]:
        """The Bf16GemmKernelConfig ints (sm90_bf16_gemm_launch.hpp), field by field."""
        return config_ints(self, {"gemm_type": GEMM_TYPES, "layout": BF16_LAYOUTS, "out_dtype": OUT_DTYPES})


def bf16_smem_bytes(block_m: int, block_n: int, num_stages: int, out_dtype: str) -> int:
    """Mirror of Bf16SmemLayout<...>::total in csrc/kernels/sm90_bf16_mainloop.cuh: the epilogue's staging tile, then
    per stage the A and B tiles and the full/empty barriers."""
    return staging_bytes(block_m, block_n, out_dtype) + num_stages * ((block_m + block_n) * BF16_BLOCK_K * 2 + 16)


def _max_stages(block_m: int, block_n: int, out_dtype: str) -> int:
    stages = BF16_MAX_STAGES
    while stages > 1 and bf16_smem_bytes(block_m, block_n, stages, out_dtype) > SM90_MAX_SMEM_BYTES:
        stages -= 1
    return stages


def with_bf16_tile(cfg: Bf16GemmConfig, *, block_m: int, block_n: int,
                   num_stages: int | None = None) -> Bf16GemmConfig:
    """``cfg`` with another tile shape and the fields that follow from it. For tools and tests that force a config."""
    most = _max_stages(block_m, block_n, cfg.out_dtype)
    stages = most if num_stages is None else num_stages
    smem = bf16_smem_bytes(block_m, block_n, stages, cfg.out_dtype)
    check_forced_smem(smem, block_m, block_n, stages, most)
    return dataclasses.replace(cfg, block_m=block_m, block_n=block_n, num_stages=stages,
                               num_math_warpgroups=block_m // 64, num_threads=(block_m // 64 + 1) * 128,
                               smem_bytes=smem)


def _estimated_cycles(block_m: int, block_n: int, tiles: int, k: int, num_sms: int, out_bytes: int,
                      stages: int) -> float:
    """Rough time of the persistent kernel: waves x per-tile cost (tensor cores or L2 feed, whichever is slower).
    A single math warpgroup (BLOCK_M = 64) idles the tensor cores while it drains each k-block; fewer than 3 stages
    leave TMA latency exposed."""
    waves = ceil_div(tiles, num_sms)
    efficiency = (0.9 if block_m == 128 else 0.7) * block_n / (block_n + 16) * (1.0 if stages >= 3 else 0.8)
    compute = 2 * block_m * block_n * k / _FLOPS_PER_CYCLE / efficiency
    feed = (block_m + block_n) * k * 2 / _L2_BYTES_PER_CYCLE
    epilogue = block_m * block_n * out_bytes / 32
    return waves * (max(compute, feed) + epilogue)


@functools.lru_cache(maxsize=4096)
def choose_bf16_gemm_config(
    m: int,
    n: int,
    k: int,
    *,
    num_sms: int,
    layout: str,
    out_dtype: str,
    has_c: bool,
    gemm_type: str,
    num_groups: int = 1,
    expected_m: int | None = None,
) -> Bf16GemmConfig:
    """Config for D[M,N] (+C) = A·B in a BF16 layout. m: rows of A (contiguous: all groups' rows; masked: Mmax);
    expected_m: masked only, the typical valid rows per group. Ties go to the earlier (larger) candidate."""
    if gemm_type not in GEMM_TYPES:
        raise ValueError(f"gemm_type must be one of {GEMM_TYPES}, got {gemm_type!r}")
    if layout not in BF16_LAYOUTS:
        raise ValueError(f"layout must be one of {BF16_LAYOUTS}, got {layout!r}")
    if gemm_type != "normal" and layout != "nt":
        raise ValueError(f"grouped BF16 GEMMs are NT only, got layout {layout!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype!r}")
    if has_c and out_dtype != "fp32":
        raise ValueError(f"a C operand needs out_dtype 'fp32', got {out_dtype!r}")
    if min(m, n, k, num_sms, num_groups) < 1:
        raise ValueError(f"need m, n, k, num_sms, num_groups >= 1, got m={m}, n={n}, k={k}, num_sms={num_sms}, "
                         f"num_groups={num_groups}")

    rows_per_group, groups_with_tiles = m, 1
    if gemm_type == "masked":
        rows_per_group = min(m, expected_m) if expected_m is not None and expected_m > 0 else m
        groups_with_tiles = num_groups
    block_ns = MN_MAJOR_BLOCK_N_CANDIDATES if operand_majors(layout)[1] else BLOCK_N_CANDIDATES
    best = None
    for block_m in BLOCK_M_CANDIDATES:
        for block_n in block_ns:
            if gemm_type != "normal" and block_n in _NORMAL_ONLY_BLOCK_N:
                continue
            stages = _max_stages(block_m, block_n, out_dtype)
            tiles = ceil_div(rows_per_group, block_m) * ceil_div(n, block_n) * groups_with_tiles
            cost = _estimated_cycles(block_m, block_n, tiles, k, num_sms, 4 if out_dtype == "fp32" else 2, stages)
            if best is None or cost < best[0]:
                best = (cost, block_m, block_n, stages)
    _, block_m, block_n, stages = best
    return Bf16GemmConfig(
        block_m=block_m,
        block_n=block_n,
        block_k=BF16_BLOCK_K,
        num_stages=stages,
        num_math_warpgroups=block_m // 64,
        num_threads=(block_m // 64 + 1) * 128,
        swizzle_group_n=SWIZZLE_GROUP_N,
        smem_bytes=bf16_smem_bytes(block_m, block_n, stages, out_dtype),
        num_sms=num_sms,
        gemm_type=gemm_type,
        layout=layout,
        out_dtype=out_dtype,
        has_c=has_c,
    )
