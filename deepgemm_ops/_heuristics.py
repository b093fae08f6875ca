"""Kernel configuration for the SM90 FP8 NT GEMM family (pure Python: no torch, no CUDA).

``choose_fp8_gemm_config`` picks block sizes, pipeline depth and tile order for one problem. N, K and every
``GemmConfig`` field are compile-time constants of the generated kernel; M (and the per-group row counts of grouped
GEMMs) stay run-time arguments, so one compiled kernel serves every M that maps to the same config.

Python -> C++ contract: ``GemmConfig.as_ints()`` lists the fields in declaration order, which is the field order of
``Fp8GemmKernelConfig`` in ``csrc/host/sm90_fp8_gemm_launch.hpp``; string fields travel as their index in
``GEMM_TYPES`` / ``SFB_RECIPES`` / ``OUT_DTYPES`` (the C++ enum values in ``csrc/kernels/params.h``).
"""

from __future__ import annotations

import dataclasses
import functools

from ._constants import ceil_div

# k_grouped: the weight gradient (groups along K, ks read on the device); K is a run-time extent of its kernels.
GEMM_TYPES = ("normal", "contiguous", "masked", "k_grouped")
SFB_RECIPES = ("128x128", "1x128")
OUT_DTYPES = ("bf16", "fp32")

BLOCK_K = 128
# Rows of each group in the m-grouped contiguous layout start at a multiple of this; every BLOCK_M we use divides it.
MK_ALIGNMENT_FOR_CONTIGUOUS_LAYOUT = 128
# Opt-in dynamic shared memory per block on SM90 (227 KB).
SM90_MAX_SMEM_BYTES = 232448
MAX_STAGES = 16
BLOCK_M_CANDIDATES = (256, 128, 64)
# Multiples of 16 up to 160, and 192 (two FP32 BLOCK_N/2 accumulators in the 232 math registers; 192 uses 214 of
# them). 192 only for BLOCK_M=128 tiles of compute-bound problems (see _estimated_cycles).
BLOCK_N_CANDIDATES = (192,) + tuple(range(160, 15, -16))
# Problems with at least this many BLOCK_M=128 m-blocks are treated as compute-bound and use the wide-tile fit below.
_WIDE_TILE_MIN_M_BLOCKS = 4
# Relative main-loop efficiency of BLOCK_M=128 tiles of compute-bound problems, fitted to same-run sweeps
# (docs/PERF.md, 2026-11-22, H100): 128 (the widest ping-pong tile, promotion overlapped with the next k-block's
# wgmmas) ~ 192 > 160 > 144 (single-buffer loop; 144 also stores D in 16-column boxes); narrower ping-pong tiles
# (112, 96: 0.85x and 0.82x of 128 per tile) use the generic formula in _estimated_cycles.
_WIDE_TILE_EFFICIENCY = {128: 0.93, 144: 0.85, 160: 0.90, 192: 0.93}
# 256-row tiles (normal GEMMs with 128x128 B scales, compute-bound problems; two 64-row waves per math warpgroup, a
# 2-CTA cluster of n-block pairs sharing A): half the tiles of 128-row ones, less L2 traffic per FLOP. Same-run sweep
# (docs/PERF.md, 2026-12-02, H200) against the 128-row pick: +4-16% at K <= 4096 (most at K = 512), level at
# K >= 7168; slower only where pairing n-blocks adds a wave (N = 2112), which the wave count below sees. Per B-scale
# recipe. With 1x128 B scales (the dense weight gradient) every accumulator takes its own scale product and the
# 256x128 math warpgroups spill; 256x112 takes ~8% less time per FLOP (same-run sweeps, docs/PERF.md, 2026-12-03
# session 17, H200: 7168x7168x8192 -5.5% with 14 waves against 12, 4096x7168x8192 -7.6% with 8 against 7,
# 7168x4096x8192 +3% with 9 against 7), hence a value above 1: these numbers only rank tiles.
_WIDE_256_EFFICIENCY = {"128x128": {128: 0.97}, "1x128": {128: 0.97, 112: 1.05}}
SWIZZLE_GROUP_N = 8
# Split-K (normal GEMMs, csrc/kernels/params.h): the splits of a tile are the CTAs of one cluster, at most the portable
# cluster size (kMaxSplits).
MAX_SPLITS = 8
# The heuristic splits K in two where the model (below) gains more than _SPLIT_CYCLES over the unsplit pick, both
# floored at the problem's DRAM time (_DRAM_BYTES_PER_CYCLE: the GPU's, in the model's cycles). Same-run sweeps
# (docs/PERF.md, 2026-12-03 session 13, H200, us per call): 1 x 2112 x 7168 24.5 -> 16.6, 64 x 2112 x 7168 16.3 -> 12.9
# (64x16 -> 64x32 tiles), 128 x 2112 x 7168 16.5 -> 13.7, 128 x 4096 x 7168 19.4 -> 18.6, 128 x 7168 x 16384 46.4 ->
# 44.9, 256 x 2112 x 7168 17.7 -> 16.1 (model gains 3328-6802 cycles); slower with two splits: K = 2048 and 64 x 7168 x
# 16384 (gains 0-707: DRAM-bound), 256 x 4096 x 7168 +3.6% (gain 3072). One win had a small gain (64 x 4096 x 7168, 766:
# 18.3 -> 17.2) and is left. 3-8 splits were never faster than 2, and clusters of 4 beyond ~30 tiles did not all fit
# at once (a second wave).
HEURISTIC_SPLITS = 2
_SPLIT_CYCLES = 3200
_DRAM_BYTES_PER_CYCLE = 3000
# m-grouped GEMMs (contiguous, masked; 128x128 B scales, the measured recipe) in 2-CTA clusters of n-block pairs
# sharing A, for problems of at least this many waves of full-height tiles. Same-run sweep beside DeepGEMM
# (docs/PERF.md, 2026-12-03, H200): contiguous 4 x 8192 rows N 4096 K 7168 -9% time (8 x 4096: level), N 7168 K 2048
# -3.5%; masked 32 x ~192 rows (128x192) -4%; masked 1 x 1024 (two waves) +3-6%, hence the threshold. Masked
# 256-row tiles (always clustered) take the same threshold, or one wave: masked 1 x 1024, 2 x 512 and 4 x 256 rows at
# N 4096 K 7168 ran 4-7% faster as one wave of 256x128 cl2 tiles than as two of 128x128 ones; at N 7168 K 2048 (1.7
# waves of 256x128 against 2.7 of 128x160) 0-4% slower (docs/PERF.md, 2026-12-03 session 17, H200).
_GROUPED_CLUSTER_MIN_WAVES = 4
# BLOCK_N that k_grouped kernels skip: their math warpgroups spill registers (per-column B scales, the run-time K loop;
# ptxas 13.0, sm_90a, NVRTC: 8 bytes at 128-row 144/192 tiles). 128 and 160 stopped spilling when C left the registers
# (the TMA reduce-add epilogue), and 128x128 is the fastest k-grouped tile: 3-17% over 128x112 on all six bench cases
# (docs/PERF.md, 2026-12-03, H200).
_K_GROUPED_SPILLING_BLOCK_N = (144, 192)
# The one width of k-grouped 256-row tiles (no cluster): 256x128 ran +0.1-2.9% over 128x128 on all six bench --wgrad
# cases, 256x112 and 256x96 -5 to +2.4% (docs/PERF.md, 2026-12-04 session 19, H200).
_K_GROUPED_256_BLOCK_N = 128

# Cost model constants (per SM per cycle, H100/H200 class): FP8 tensor-core FLOPs and L2 -> SM bytes.
_FLOPS_PER_CYCLE = 8192
_L2_BYTES_PER_CYCLE = 64


def math_warpgroups(block_m: int) -> int:
    """Math warpgroups of a tile: one for 64 rows, else two (a 256-row tile: 128 rows each, as two 64-row waves).
    Mirrors math_warpgroups in csrc/kernels/params.h."""
    return 1 if block_m == 64 else 2


def cluster_multicasts_a(block_m: int, gemm_type: str) -> bool:
    """2-CTA clusters of 256-row tiles and of m-grouped GEMMs (contiguous, masked: both CTAs then stay in one group)
    pair n-blocks and share A; those of narrower normal tiles pair m-blocks and share B (params.h)."""
    return block_m == 256 or gemm_type in ("contiguous", "masked")


def get_mk_alignment_for_contiguous_layout() -> int:
    return MK_ALIGNMENT_FOR_CONTIGUOUS_LAYOUT


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    # Field order is the C++ Fp8GemmKernelConfig field order (see as_ints); do not reorder.
    block_m: int
    block_n: int
    block_k: int
    num_stages: int
    num_math_warpgroups: int  # math_warpgroups(block_m)
    num_threads: int  # (num_math_warpgroups + 1) * 128: the last warpgroup is the TMA producer
    cluster_size: int  # CTAs per cluster (TMA multicast); 1 = no cluster
    swizzle_group_n: int  # n-blocks per swath of the L2-friendly tile order
    smem_bytes: int  # dynamic shared memory per CTA
    num_sms: int  # persistent grid size
    gemm_type: str  # one of GEMM_TYPES
    sfb_recipe: str  # one of SFB_RECIPES
    out_dtype: str  # one of OUT_DTYPES
    has_c: bool
    num_splits: int = 1  # split-K: CTAs (one cluster) per tile, each summing 1/num_splits of K; 1 = none

    def as_ints(self) -> tuple[int, ...]:
        """The fields in declaration order as ints, strings as their index in GEMM_TYPES / SFB_RECIPES / OUT_DTYPES."""
        return config_ints(self, {"gemm_type": GEMM_TYPES, "sfb_recipe": SFB_RECIPES, "out_dtype": OUT_DTYPES})


def config_ints(cfg, enums: dict[str, tuple[str, ...]]) -> tuple[int, ...]:
    """A kernel config dataclass as its C++ struct (a flat list of ints) reads it: every field in declaration order
    as an int, a string field as its index in ``enums[field name]``."""
    return tuple(enums[f.name].index(getattr(cfg, f.name)) if f.name in enums else int(getattr(cfg, f.name))
                 for f in dataclasses.fields(cfg))


def staging_bytes(block_m: int, block_n: int, out_dtype: str) -> int:
    """Mirror of staging_bytes() in csrc/kernels/sm90_epilogue.cuh: the epilogue's shared-memory tile, the D slices
    the TMA epilogue stages at once (a 256-row tile's fp32 waves one at a time per warpgroup), which hold the C slots
    when D is stored directly (both GEMM families)."""
    if out_dtype == "bf16":
        return block_m * block_n * 2
    return min(block_m, 128) * block_n * 4


def smem_bytes(block_m: int, block_n: int, num_stages: int, out_dtype: str, num_splits: int = 1) -> int:
    """Mirror of SmemLayout<...>::total in csrc/kernels/sm90_mainloop.cuh: the epilogue's staging tile, then per stage
    the A, B, sfa, sfb tiles and the full/empty barriers, then split-K's barrier."""
    sfa = ceil_div(block_m * 4, 128) * 128
    per_stage = block_m * BLOCK_K + block_n * BLOCK_K + sfa + block_n * 4 + 16
    return staging_bytes(block_m, block_n, out_dtype) + num_stages * per_stage + (8 if num_splits > 1 else 0)


def _max_stages(block_m: int, block_n: int, out_dtype: str, num_splits: int = 1) -> int:
    stages = MAX_STAGES
    while stages > 1 and smem_bytes(block_m, block_n, stages, out_dtype, num_splits) > SM90_MAX_SMEM_BYTES:
        stages -= 1
    return stages


def _tile_fields(block_m: int, block_n: int, num_stages: int | None, out_dtype: str, num_splits: int = 1) -> dict:
    """The GemmConfig fields a tile shape determines: the math warpgroups plus the producer warpgroup, and the
    shared memory of num_stages stages (default: the most that fit)."""
    if num_stages is None:
        num_stages = _max_stages(block_m, block_n, out_dtype, num_splits)
    return dict(
        block_m=block_m,
        block_n=block_n,
        num_stages=num_stages,
        num_math_warpgroups=math_warpgroups(block_m),
        num_threads=(math_warpgroups(block_m) + 1) * 128,
        smem_bytes=smem_bytes(block_m, block_n, num_stages, out_dtype, num_splits),
        num_splits=num_splits,
    )


def smem_problem(smem: int, block_m: int, block_n: int, num_stages: int) -> str | None:
    """Why a kernel needing ``smem`` bytes of dynamic shared memory cannot run on SM90, or None (both GEMM families).
    Checked before a kernel is compiled: it would otherwise fail at load time with a bare CUDA error."""
    if smem <= SM90_MAX_SMEM_BYTES:
        return None
    return (f"num_stages={num_stages} with a {block_m}x{block_n} tile needs {smem} bytes of shared memory; an SM90 "
            f"block has at most {SM90_MAX_SMEM_BYTES}")


def check_forced_smem(smem: int, block_m: int, block_n: int, num_stages: int, max_stages: int) -> None:
    """A forced config must fit the SM's shared memory (smem_problem); the message says how many stages do."""
    problem = smem_problem(smem, block_m, block_n, num_stages)
    if problem:
        raise ValueError(f"{problem} (at most {max_stages} stages fit)")


def with_tile(
    cfg: GemmConfig, *, block_m: int, block_n: int, num_stages: int | None = None, cluster_size: int = 1,
    num_splits: int = 1,
) -> GemmConfig:
    """``cfg`` with another tile shape, cluster and split-K, and the fields that follow from them (warpgroups,
    threads, shared memory; stages default to the most that fit). For tools and tests that force a config."""
    most = _max_stages(block_m, block_n, cfg.out_dtype, num_splits)
    fields = _tile_fields(block_m, block_n, most if num_stages is None else num_stages, cfg.out_dtype, num_splits)
    check_forced_smem(fields["smem_bytes"], block_m, block_n, fields["num_stages"], most)
    return dataclasses.replace(cfg, cluster_size=cluster_size, **fields)


def _pairs_n_blocks(block_m: int, gemm_type: str) -> bool:
    """Whether the tile runs in a 2-CTA cluster of n-block pairs sharing A: 256-row tiles, but k-grouped ones (the
    k-grouped scheduler has no clusters)."""
    return block_m == 256 and gemm_type != "k_grouped"


def _estimated_cycles(block_m: int, block_n: int, tiles: int, k: int, num_sms: int, out_bytes: int,
                      wide: bool = False, sfb_recipe: str = "128x128") -> float | None:
    """Rough time of the persistent kernel: waves x per-tile cost (tensor cores or L2 feed, whichever is slower).
    wide: the problem has >= _WIDE_TILE_MIN_M_BLOCKS m-blocks of 128 rows; None = candidate not considered."""
    if block_m == 256 and not (wide and block_n in _WIDE_256_EFFICIENCY[sfb_recipe]):
        return None
    if block_n > 160 and not (wide and block_m == 128):
        return None
    waves = ceil_div(tiles, num_sms)
    # One math warpgroup cannot overlap its scale promotion with another warpgroup's wgmma; narrow tiles pay the
    # per-k-block promotion and barrier overhead over fewer FLOPs.
    if block_m == 256:
        efficiency = _WIDE_256_EFFICIENCY[sfb_recipe][block_n]
    elif wide and block_m == 128 and block_n in _WIDE_TILE_EFFICIENCY:
        efficiency = _WIDE_TILE_EFFICIENCY[block_n]
    else:
        efficiency = (0.9 if block_m == 128 else 0.7) * block_n / (block_n + 16)
    compute = 2 * block_m * block_n * k / _FLOPS_PER_CYCLE / efficiency
    feed = (block_m + block_n) * k / _L2_BYTES_PER_CYCLE
    epilogue = block_m * block_n * out_bytes / 32
    return waves * (max(compute, feed) + epilogue)


def _split_k_tile(m: int, n: int, k: int, num_sms: int, out_bytes: int, unsplit_cost: float) -> tuple[int, int] | None:
    """(BLOCK_M, BLOCK_N) of the best HEURISTIC_SPLITS-way split-K tile of a normal GEMM when it beats the unsplit
    pick (cost unsplit_cost) by more than _SPLIT_CYCLES, both floored at the problem's DRAM time; else None. Its
    clusters (one per tile) must all fit at once, and every split keeps at least two k-blocks."""
    if ceil_div(k, BLOCK_K) < 2 * HEURISTIC_SPLITS:
        return None
    floor = (m * k + n * k + m * n * out_bytes) / _DRAM_BYTES_PER_CYCLE
    best, best_cost = None, max(unsplit_cost, floor) - _SPLIT_CYCLES
    for block_m in (128, 64):
        for block_n in BLOCK_N_CANDIDATES:
            tiles = ceil_div(m, block_m) * ceil_div(n, block_n)
            if tiles * HEURISTIC_SPLITS > num_sms:
                continue
            cost = _estimated_cycles(block_m, block_n, tiles * HEURISTIC_SPLITS, k // HEURISTIC_SPLITS, num_sms,
                                     out_bytes)
            if cost is not None and max(cost, floor) < best_cost:
                best, best_cost = (block_m, block_n), max(cost, floor)
    return best


@functools.lru_cache(maxsize=4096)
def choose_fp8_gemm_config(
    m: int,
    n: int,
    k: int,
    *,
    num_sms: int,
    out_dtype: str,
    sfb_recipe: str,
    has_c: bool,
    gemm_type: str,
    num_groups: int = 1,
    expected_m: int | None = None,
) -> GemmConfig:
    """Config for D[M,N] (+C) = A[M,K] B[N,K]^T with DeepSeek scaling.

    m: rows of A (contiguous: all groups' rows; masked: Mmax, rows per group; k_grouped: rows of A and of each group's
    output). expected_m: masked only, the typical valid rows per group (defaults to m). k_grouped: k is the typical
    group's K (its kernel takes K at run time), the 1x128 recipe and an fp32 output. Deterministic: ties go to the
    earlier candidate (larger BLOCK_M, BLOCK_N).
    """
    if gemm_type not in GEMM_TYPES:
        raise ValueError(f"gemm_type must be one of {GEMM_TYPES}, got {gemm_type!r}")
    if sfb_recipe not in SFB_RECIPES:
        raise ValueError(f"sfb_recipe must be one of {SFB_RECIPES}, got {sfb_recipe!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype!r}")
    if has_c and out_dtype != "fp32":
        raise ValueError(f"a C operand needs out_dtype 'fp32', got {out_dtype!r}")
    if m < 1 or n < 1 or k < 16 or k % 16 != 0:
        raise ValueError(f"need m >= 1, n >= 1 and k a positive multiple of 16, got m={m}, n={n}, k={k}")
    if num_sms < 1 or num_groups < 1:
        raise ValueError(f"need num_sms >= 1 and num_groups >= 1, got num_sms={num_sms}, num_groups={num_groups}")
    if gemm_type == "normal" and num_groups != 1:
        raise ValueError(f"a normal GEMM has num_groups == 1, got {num_groups}")
    if gemm_type == "k_grouped" and (sfb_recipe != "1x128" or out_dtype != "fp32"):
        raise ValueError(f"a k_grouped GEMM takes sfb_recipe '1x128' and out_dtype 'fp32', got {sfb_recipe!r} and "
                         f"{out_dtype!r}")

    out_bytes = 4 if out_dtype == "fp32" else 2
    rows_per_group = m
    groups_with_tiles = 1
    if gemm_type == "masked":
        rows_per_group = min(m, expected_m) if expected_m is not None and expected_m > 0 else m
        groups_with_tiles = num_groups
    elif gemm_type == "k_grouped":  # every group has all M x N tiles
        groups_with_tiles = num_groups

    best = None
    for block_m in BLOCK_M_CANDIDATES:
        if block_m == 256 and not (gemm_type in ("normal", "k_grouped")
                                   or (gemm_type in ("contiguous", "masked") and sfb_recipe == "128x128")):
            # Measured for normal GEMMs with 128x128 B scales, and with 1x128 ones (the dense weight gradient, bf16
            # out: +4.5-5.7% over 128x128 tiles at 7168/4096 x 7168/4096 x 8192; fp32 += C through the TMA
            # epilogue: docs/PERF.md). Contiguous (128x128 B scales): a tile whose halves hold two groups runs its
            # k-blocks once per half (Tile::second_group); masked: a 64-row wave past masked_m does nothing;
            # k-grouped: 256x128 only (_K_GROUPED_256_BLOCK_N).
            continue
        for block_n in BLOCK_N_CANDIDATES:
            if gemm_type == "k_grouped" and (block_n in _K_GROUPED_SPILLING_BLOCK_N
                                             or (block_m == 256 and block_n != _K_GROUPED_256_BLOCK_N)):
                continue
            n_blocks = ceil_div(n, block_n)
            if _pairs_n_blocks(block_m, gemm_type):
                n_blocks = ceil_div(n_blocks, 2) * 2  # computed in pairs (the cluster below)
            tiles = ceil_div(rows_per_group, block_m) * n_blocks * groups_with_tiles
            if block_m == 256 and gemm_type == "masked" and num_sms < tiles < _GROUPED_CLUSTER_MIN_WAVES * num_sms:
                continue  # a partial last wave of these tiles lost (the rule's measurements above)
            wide = ceil_div(rows_per_group, 128) * groups_with_tiles >= _WIDE_TILE_MIN_M_BLOCKS
            cost = _estimated_cycles(block_m, block_n, tiles, k, num_sms, out_bytes, wide, sfb_recipe)
            if cost is not None and (best is None or cost < best[0]):
                best = (cost, block_m, block_n)
    best_cost, block_m, block_n = best
    num_splits = 1
    split = _split_k_tile(m, n, k, num_sms, out_bytes, best_cost) if gemm_type == "normal" else None
    if split is not None:
        block_m, block_n, num_splits = *split, HEURISTIC_SPLITS
    # 2-CTA cluster multicasting B to two m-blocks (normal GEMMs): measured +2-4% for 160/192-wide tiles at K >= 1536,
    # +0-3% for 128-wide ones (H200, docs/PERF.md), nothing at K = 512 or for narrower tiles. Only when pairing
    # m-blocks adds no wave.
    cluster_size = 1
    m_blocks, n_blocks = ceil_div(m, block_m), ceil_div(n, block_n)
    tiles = ceil_div(rows_per_group, block_m) * n_blocks * groups_with_tiles
    if _pairs_n_blocks(block_m, gemm_type):
        cluster_size = 2 if n_blocks >= 2 and num_sms >= 2 else 1  # n-block pairs share A
    elif (gemm_type in ("contiguous", "masked") and sfb_recipe == "128x128" and rows_per_group >= block_m
            and n_blocks >= 2 and num_sms >= 2 and tiles >= _GROUPED_CLUSTER_MIN_WAVES * num_sms):
        cluster_size = 2  # n-block pairs share A (and so one group's rows)
    elif (gemm_type == "normal" and num_splits == 1 and block_n >= 128 and k >= 1024 and m_blocks >= 2 and num_sms >= 2
            and ceil_div(ceil_div(m_blocks, 2) * 2 * n_blocks, num_sms // 2 * 2)
            <= ceil_div(m_blocks * n_blocks, num_sms)):
        cluster_size = 2
    return GemmConfig(
        **_tile_fields(block_m, block_n, None, out_dtype, num_splits),
        block_k=BLOCK_K,
        cluster_size=cluster_size,
        swizzle_group_n=SWIZZLE_GROUP_N,
        num_sms=num_sms,
        gemm_type=gemm_type,
        sfb_recipe=sfb_recipe,
        out_dtype=out_dtype,
        has_c=has_c,
    )
