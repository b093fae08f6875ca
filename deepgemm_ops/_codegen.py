"""CUDA source generation for the SM90 kernel families (pure Python): FP8 NT GEMM, BF16 GEMM, FP8 casts.

A generated translation unit instantiates a family's kernel template (``fp8_gemm_kernel`` in
csrc/kernels/sm90_fp8_gemm.cuh, ``bf16_gemm_kernel`` in sm90_bf16_gemm.cuh) with N, K and the config baked in, behind
an ``extern "C"`` wrapper so the symbol name is not mangled. ``_jit.compile_cubin`` compiles it (flags and include
dirs: ``_jit``). The config's BLOCK_N selects CuTe's wgmma atom (:func:`wgmma_atom`, :func:`bf16_wgmma_atom`).
"""

from __future__ import annotations

import math

from ._bf16_heuristics import BF16_BLOCK_K, Bf16GemmConfig, bf16_smem_bytes, operand_majors
from ._constants import ceil_div
from ._heuristics import (
    BLOCK_K,
    MAX_SPLITS,
    GemmConfig,
    cluster_multicasts_a,
    math_warpgroups,
    smem_bytes,
    smem_problem,
)

_GEMM_TYPE_ENUM = {"normal": "Normal", "contiguous": "Contiguous", "masked": "Masked", "k_grouped": "KGrouped"}
_RECIPE_ENUM = {"128x128": "Block128x128", "1x128": "Row1x128"}


def fp8_gemm_kernel_name(cfg: GemmConfig, n: int, k: int) -> str:
    """k: K, or 0 for a k_grouped kernel (K at run time; its name has no K)."""
    c = "_c" if cfg.has_c else ""
    k_part = f"_k{k}" if cfg.gemm_type != "k_grouped" else ""
    split = f"_sk{cfg.num_splits}" if cfg.num_splits > 1 else ""
    return (
        f"dg_fp8_gemm_{cfg.gemm_type}_n{n}{k_part}_bm{cfg.block_m}_bn{cfg.block_n}_s{cfg.num_stages}"
        f"_cl{cfg.cluster_size}{split}_g{cfg.swizzle_group_n}_sfb{cfg.sfb_recipe}_{cfg.out_dtype}{c}"
    )


def _shared_problems(cfg, expected_smem: int) -> list[str]:
    """The rules every kernel family's config shares: warpgroups and threads follow from block_m, shared memory from
    the tile and stages (and fits the SM), a C operand needs an fp32 output."""
    problems = []
    wgs = math_warpgroups(cfg.block_m)
    if cfg.num_math_warpgroups != wgs or cfg.num_threads != (wgs + 1) * 128:
        problems.append(
            f"num_math_warpgroups/num_threads must be {wgs}/{(wgs + 1) * 128} for "
            f"block_m={cfg.block_m}, got {cfg.num_math_warpgroups}/{cfg.num_threads}"
        )
    if cfg.smem_bytes != expected_smem:
        problems.append(f"smem_bytes must be {expected_smem}, got {cfg.smem_bytes}")
    too_large = smem_problem(expected_smem, cfg.block_m, cfg.block_n, cfg.num_stages)
    if too_large:
        problems.append(too_large)
    if cfg.has_c and cfg.out_dtype != "fp32":
        problems.append(f"has_c needs out_dtype 'fp32', got {cfg.out_dtype!r}")
    return problems


def _check(cfg: GemmConfig, n: int, k: int) -> None:
    problems = []
    if cfg.block_k != BLOCK_K:
        problems.append(f"block_k must be {BLOCK_K}, got {cfg.block_k}")
    if cfg.block_m not in (64, 128, 256):
        problems.append(f"block_m must be 64, 128 or 256, got {cfg.block_m}")
    elif cfg.block_m == 256 and cfg.block_n > 128:
        problems.append(f"block_m 256 needs block_n <= 128 (registers), got {cfg.block_n}")
    if cfg.block_n % 8 != 0 or not 8 <= cfg.block_n <= 256:
        problems.append(f"block_n must be a multiple of 8 in [8, 256], got {cfg.block_n}")
    if cfg.cluster_size not in (1, 2):
        problems.append(f"cluster_size must be 1 or 2, got {cfg.cluster_size}")
    elif cfg.cluster_size == 2 and (
            cfg.gemm_type == "k_grouped"
            or (cfg.block_n % 16 != 0 and not cluster_multicasts_a(cfg.block_m, cfg.gemm_type))):
        problems.append(
            f"cluster_size 2 needs a GEMM that is not k-grouped and, multicasting B (normal, block_m < 256), "
            f"block_n % 16 == 0; got "
            f"{cfg.gemm_type!r}, block_m={cfg.block_m}, block_n={cfg.block_n}"
        )
    if not 1 <= cfg.num_splits <= MAX_SPLITS:
        problems.append(f"num_splits must be in [1, {MAX_SPLITS}], got {cfg.num_splits}")
    elif cfg.num_splits > 1 and (cfg.gemm_type != "normal" or cfg.cluster_size != 1 or cfg.block_m > 128
                                 or ceil_div(k, BLOCK_K) < cfg.num_splits):
        problems.append(f"num_splits {cfg.num_splits} needs a normal GEMM, cluster_size 1, block_m <= 128 and at least "
                        f"one 128-deep k-block per split; got {cfg.gemm_type!r}, cluster_size={cfg.cluster_size}, "
                        f"block_m={cfg.block_m}, k={k}")
    problems += _shared_problems(
        cfg, smem_bytes(cfg.block_m, cfg.block_n, cfg.num_stages, cfg.out_dtype, cfg.num_splits))
    if cfg.out_dtype == "bf16" and cfg.block_n % 16 != 0:
        problems.append(f"a bf16 output needs block_n % 16 == 0 (stmatrix epilogue), got {cfg.block_n}")
    if cfg.sfb_recipe == "128x128" and cfg.block_n > 128 + math.gcd(cfg.block_n, 128):
        # the main loop keeps the B scales of two 128-column blocks per tile (sm90_mainloop.cuh, kSfbGcd)
        problems.append(
            "with 128x128 B scales a tile must span at most two 128-column blocks, block_n <= 128 + "
            f"gcd(block_n, 128); got {cfg.block_n}"
        )
    if cfg.gemm_type == "k_grouped":
        if cfg.sfb_recipe != "1x128" or cfg.out_dtype != "fp32":
            problems.append(f"a k_grouped kernel needs sfb_recipe '1x128' and out_dtype 'fp32', got "
                            f"{cfg.sfb_recipe!r} and {cfg.out_dtype!r}")
        if n < 1 or k != 0:
            problems.append(f"a k_grouped kernel takes K at run time: need n >= 1 and k == 0, got n={n}, k={k}")
    elif n < 1 or k < 16 or k % 16 != 0:
        problems.append(f"need n >= 1 and k a positive multiple of 16, got n={n}, k={k}")
    if problems:
        raise ValueError("invalid FP8 GEMM kernel config: " + "; ".join(problems))


def fp8_gemm_source(cfg: GemmConfig, n: int, k: int) -> tuple[str, str]:
    """(CUDA source, unmangled kernel symbol) of the FP8 NT GEMM kernel for ``cfg`` with N = n, K = k (k_grouped:
    k = 0, K at run time)."""
    _check(cfg, n, k)
    name = fp8_gemm_kernel_name(cfg, n, k)
    out_fp32 = "true" if cfg.out_dtype == "fp32" else "false"
    template_args = ", ".join(
        [
            str(n),
            str(k),
            str(cfg.block_m),
            str(cfg.block_n),
            str(cfg.num_stages),
            str(cfg.swizzle_group_n),
            f"deepgemm_ops::GemmType::{_GEMM_TYPE_ENUM[cfg.gemm_type]}",
            f"deepgemm_ops::SfbRecipe::{_RECIPE_ENUM[cfg.sfb_recipe]}",
            out_fp32,
            "true" if cfg.has_c else "false",
            str(cfg.cluster_size),
            str(cfg.num_splits),
        ]
    )
    smem_args = f"{cfg.block_m}, {cfg.block_n}, {cfg.num_stages}, {out_fp32}, {cfg.num_splits}"
    atom, atom_header = wgmma_atom(cfg.block_n)
    template_args += f", {atom}"
    # Includes first and identical for every kernel of a header set: NVRTC's automatic precompiled header covers
    # the leading run of #include lines (_jit.py).
    includes = '#include "sm90_fp8_gemm.cuh"' + (f"\n#include <{atom_header}>" if atom_header else "")
    source = f"""\
{includes}
// Generated by deepgemm_ops._codegen: FP8 NT GEMM ({cfg.gemm_type}), N={n}, K={k or "at run time"}.

static_assert(deepgemm_ops::kernels::smem_bytes<{smem_args}>() == {cfg.smem_bytes},
              "GemmConfig.smem_bytes disagrees with the kernel's shared-memory layout");
static_assert(deepgemm_ops::kernels::num_threads({cfg.block_m}) == {cfg.num_threads},
              "GemmConfig.num_threads disagrees with the kernel's warpgroup layout");

extern "C" __global__ void __launch_bounds__({cfg.num_threads}, 1)
{name}(const __grid_constant__ deepgemm_ops::Fp8GemmParams params,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_a,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_b,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_sfa,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_d) {{
  deepgemm_ops::kernels::fp8_gemm_kernel<{template_args}>(params, tma_a, tma_b, tma_sfa, tma_d);
}}
"""
    return source, name


# BLOCK_N whose wgmma atom is in cute/arch/mma_sm90_gmma.hpp; every other multiple of 8 up to 256 is in
# mma_sm90_gmma_ext.hpp, a header that costs ~0.35 s of compile time, so only the kernels that need it include it.
_BASE_WGMMA_N = (8, 16, 32, 64, 96, 128, 192, 256)


def wgmma_atom(n: int) -> tuple[str, str | None]:
    """(CuTe wgmma atom for m64 x n x k32, e4m3 x e4m3 -> f32 with A and B in shared memory, extra header or None)."""
    if n % 8 != 0 or not 8 <= n <= 256:
        raise ValueError(f"wgmma N must be a multiple of 8 in [8, 256], got {n}")
    header = None if n in _BASE_WGMMA_N else "cute/arch/mma_sm90_gmma_ext.hpp"
    return f"cute::SM90::GMMA::MMA_64x{n}x32_F32E4M3E4M3_SS_TN<>", header


def bf16_wgmma_atom(n: int, layout: str) -> tuple[str, str | None]:
    """(CuTe wgmma atom for m64 x n x k16, bf16 x bf16 -> f32 with A and B in shared memory in the majors of
    ``layout``, extra header or None)."""
    if n % 8 != 0 or not 8 <= n <= 256:
        raise ValueError(f"wgmma N must be a multiple of 8 in [8, 256], got {n}")
    header = None if n in _BASE_WGMMA_N else "cute/arch/mma_sm90_gmma_ext.hpp"
    a_mn, b_mn = operand_majors(layout)
    majors = ", ".join(f"cute::SM90::GMMA::Major::{'MN' if mn else 'K'}" for mn in (a_mn, b_mn))
    return f"cute::SM90::GMMA::MMA_64x{n}x16_F32BF16BF16_SS<{majors}>", header


def bf16_gemm_kernel_name(cfg: Bf16GemmConfig, n: int, k: int) -> str:
    c = "_c" if cfg.has_c else ""
    return (f"dg_bf16_gemm_{cfg.gemm_type}_{cfg.layout}_n{n}_k{k}_bm{cfg.block_m}_bn{cfg.block_n}_s{cfg.num_stages}"
            f"_g{cfg.swizzle_group_n}_{cfg.out_dtype}{c}")


def _check_bf16(cfg: Bf16GemmConfig, n: int, k: int) -> None:
    problems = []
    if cfg.block_k != BF16_BLOCK_K:
        problems.append(f"block_k must be {BF16_BLOCK_K}, got {cfg.block_k}")
    if cfg.block_m not in (64, 128):
        problems.append(f"block_m must be 64 or 128, got {cfg.block_m}")
    if cfg.block_n % 16 != 0 or not 16 <= cfg.block_n <= 256:
        problems.append(f"block_n must be a multiple of 16 in [16, 256], got {cfg.block_n}")
    elif operand_majors(cfg.layout)[1] and cfg.block_n % 64 != 0:
        problems.append(f"an N-major b (layout {cfg.layout!r}) needs block_n % 64 == 0, got {cfg.block_n}")
    problems += _shared_problems(cfg, bf16_smem_bytes(cfg.block_m, cfg.block_n, cfg.num_stages, cfg.out_dtype))
    if cfg.gemm_type != "normal" and cfg.layout != "nt":
        problems.append(f"grouped BF16 GEMMs are NT only, got {cfg.gemm_type!r} with layout {cfg.layout!r}")
    if n < 1 or k < 1:
        problems.append(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    if problems:
        raise ValueError("invalid BF16 GEMM kernel config: " + "; ".join(problems))


def bf16_gemm_source(cfg: Bf16GemmConfig, n: int, k: int) -> tuple[str, str]:
    """(CUDA source, unmangled kernel symbol) of the BF16 GEMM kernel for ``cfg`` with N = n, K = k."""
    _check_bf16(cfg, n, k)
    name = bf16_gemm_kernel_name(cfg, n, k)
    out_fp32 = "true" if cfg.out_dtype == "fp32" else "false"
    atom, atom_header = bf16_wgmma_atom(cfg.block_n, cfg.layout)
    a_mn, b_mn = operand_majors(cfg.layout)
    template_args = ", ".join([
        str(n), str(k), str(cfg.block_m), str(cfg.block_n), str(cfg.num_stages), str(cfg.swizzle_group_n),
        f"deepgemm_ops::GemmType::{_GEMM_TYPE_ENUM[cfg.gemm_type]}",
        f"cute::SM90::GMMA::Major::{'MN' if a_mn else 'K'}", f"cute::SM90::GMMA::Major::{'MN' if b_mn else 'K'}",
        out_fp32, "true" if cfg.has_c else "false", atom,
    ])
    smem_args = f"{cfg.block_m}, {cfg.block_n}, {cfg.num_stages}, {out_fp32}, {'true' if cfg.has_c else 'false'}"
    includes = '#include "sm90_bf16_gemm.cuh"' + (f"\n#include <{atom_header}>" if atom_header else "")
    source = f"""\
{includes}
// Generated by deepgemm_ops._codegen: BF16 GEMM ({cfg.gemm_type}, layout {cfg.layout}), N={n}, K={k}.

static_assert(deepgemm_ops::kernels::bf16_gemm_smem_bytes<{smem_args}>() == {cfg.smem_bytes},
              "Bf16GemmConfig.smem_bytes disagrees with the kernel's shared-memory layout");
static_assert(deepgemm_ops::kernels::bf16_gemm_threads({cfg.block_m}) == {cfg.num_threads},
              "Bf16GemmConfig.num_threads disagrees with the kernel's warpgroup layout");

extern "C" __global__ void __launch_bounds__({cfg.num_threads}, 1)
{name}(const __grid_constant__ deepgemm_ops::Fp8GemmParams params,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_a,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_b,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_d) {{
  deepgemm_ops::kernels::bf16_gemm_kernel<{template_args}>(params, tma_a, tma_b, tma_d);
}}
"""
    return source, name


# The FP8 casts (csrc/kernels/fp8_cast.cuh): one kernel per (kind, input dtype), no shape constants.
CAST_KINDS = ("per_token", "per_block", "per_token_transposed", "per_block_transposing", "per_token_transposing",
              "per_token_transposing_summing")
CAST_DTYPES = {"bfloat16": "BFloat16", "float16": "Float16", "float32": "Float32"}


def fp8_cast_min_ctas_per_sm(kind: str, dtype: str) -> int:
    """The CTAs per SM the ``kind`` cast kernel's launch bounds ask ptxas to fit. The per-token transposing cast of
    16-bit x (with or without the column sums) holds a 128 x 128 block per CTA and waits on its loads, so a third
    resident CTA keeps DRAM busier: capped at 80 registers (from 94-128) it ran 11% faster on the H200 (docs/PERF.md,
    session 8). The others keep ptxas's choice (one)."""
    return 3 if kind.startswith("per_token_transposing") and dtype != "float32" else 1


def fp8_cast_source(kind: str, dtype: str) -> tuple[str, str]:
    """(CUDA source, unmangled kernel symbol) of the ``kind`` cast of ``dtype`` input (a CAST_DTYPES key)."""
    if kind not in CAST_KINDS or dtype not in CAST_DTYPES:
        raise ValueError(f"no FP8 cast kernel for kind={kind!r}, dtype={dtype!r}: kinds {CAST_KINDS}, dtypes "
                         f"{tuple(CAST_DTYPES)}")
    name = f"dg_fp8_{kind}_cast_{dtype}"
    source = f"""\
#include "fp8_cast.cuh"
// Generated by deepgemm_ops._codegen: FP8 {kind} cast of {dtype} input.

extern "C" __global__ void __launch_bounds__(deepgemm_ops::kCastThreads, {fp8_cast_min_ctas_per_sm(kind, dtype)})
{name}(const __grid_constant__ deepgemm_ops::Fp8CastParams params) {{
  deepgemm_ops::kernels::enter_dependent_grid();
  deepgemm_ops::kernels::{kind}_cast<deepgemm_ops::CastDtype::{CAST_DTYPES[dtype]}>(params);
}}
"""
    return source, name
