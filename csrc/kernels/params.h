// Plain kernel parameters shared by the host launcher and the device kernel (no CUDA types, so the host
// side can include it without device headers). Tensor maps travel as separate __grid_constant__ arguments.
#pragma once
#ifdef __CUDACC_RTC__
#include <cuda/std/cstdint>  // NVRTC has no C library headers; libcu++ has the fixed-width integer types
#else
#include <stdint.h>
#endif

namespace deepgemm_ops {

// Every scale covers 128 elements of K (and 128 rows of N for 128x128 weight blocks); deepgemm_ops._validate.SCALE_BLOCK.
constexpr int kScaleBlock = 128;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows of an MN-major fp32 scale tensor padded so that its K stride is a multiple of 16 bytes (TMA), as
// deepgemm_ops._layout.get_tma_aligned_size(mn, 4).
constexpr int64_t tma_aligned_scale_rows(int64_t mn) { return ceil_div(mn, 4) * 4; }

// Integer values are part of the Python -> C++ contract (_heuristics.GEMM_TYPES / SFB_RECIPES use the same order).
// KGrouped: the weight gradient, groups along K (a [M, sum K], b [N, sum K], d [G, M, N]; ks read on the device).
enum class GemmType : int { Normal = 0, Contiguous = 1, Masked = 2, KGrouped = 3 };
enum class SfbRecipe : int { Block128x128 = 0, Row1x128 = 1 };

// TMA-store epilogue: D leaves shared memory in boxes of [64 rows][W columns] whose rows are 128, 64 or 32 bytes (the
// widest that divides a BLOCK_N row; W = 64/32/16 bf16 or 32/16/8 fp32 columns), with the matching 128/64/32-byte
// swizzle in the staging tile. The host encodes the D tensor map with the same box, so both sides use this one rule.
constexpr int d_store_box_cols(int block_n, int elem_bytes) {
  return block_n * elem_bytes % 128 == 0 ? 128 / elem_bytes : block_n * elem_bytes % 64 == 0 ? 64 / elem_bytes
                                                                                             : 32 / elem_bytes;
}
// 64-row slices a math warpgroup stages at once in the TMA epilogue: all of its slices for bf16; one for fp32, so a
// 256-row tile's two fp32 waves go out one after the other through 64 x BLOCK_N x 4 bytes per warpgroup (its whole
// 128 KB fp32 tile would leave no room for the pipeline).
constexpr int staged_slices(int block_m, bool out_fp32) { return out_fp32 || block_m < 256 ? 1 : 2; }
// How the epilogue writes D (Fp8GemmParams::d_store, chosen by the host's d_store_map): bounds-checked stores from
// registers (adding C when there is one), a TMA store of the staged tile, or a TMA reduce-add of it into D, which
// already holds C (C is D itself: gradient accumulation in place).
enum class DStore : int { Direct = 0, Tma = 1, TmaAdd = 2 };

// Math warpgroups per tile: one for 64 rows, two otherwise. A 256-row tile gives each of its two warpgroups 128 rows,
// computed as two 64-row waves per k-block (wgmma's M is 64). 2-CTA clusters of 256-row tiles and of m-grouped GEMMs
// (contiguous, masked) pair n-blocks and multicast the A tile: both CTAs then hold the same rows, so they stay inside
// one group; those of 64/128-row normal GEMMs pair m-blocks and multicast B. _heuristics mirrors both rules.
constexpr int math_warpgroups(int block_m) { return block_m == 64 ? 1 : 2; }
constexpr bool cluster_multicasts_a(int block_m, int gemm_type) {
  return block_m == 256 || gemm_type == static_cast<int>(GemmType::Contiguous) ||
         gemm_type == static_cast<int>(GemmType::Masked);
}

// Split-K (normal GEMMs, tiles of at most 128 rows): the kSplits CTAs of a cluster take one tile each, split s
// summing k-blocks [s * KB / S, (s + 1) * KB / S). Splits 1.. write their fp32 partial tile to the workspace and
// arrive on split 0's barrier; split 0 adds them, in split order (the result does not depend on timing), and runs the
// epilogue. A launch gives every cluster exactly one tile, so each partial has its own workspace slot: units = the
// m-blocks x n-blocks of the problem, each (splits - 1) x BLOCK_M x BLOCK_N floats.
constexpr int kMaxSplits = 8;  // the portable cluster size
constexpr int64_t split_workspace_floats(int splits, int block_m, int block_n, int64_t m, int64_t n) {
  return splits > 1 ? ceil_div(m, block_m) * ceil_div(n, block_n) * (splits - 1) * block_m * block_n : 0;
}

struct Fp8GemmParams {
  void* d;                    // bf16 or fp32 output, row stride ldd elements
  const float* c;             // optional fp32 addend, row stride ldc elements (nullptr when the kernel has no C)
  const void* bias;           // optional [N] addend in D's dtype, the same for every row (normal GEMMs; else nullptr)
  const float* sfb;           // B scales, row-major: [G, ceil(N/128), ceil(K/128)] or [G, N, ceil(K/128)]
  const int* grouped_layout;  // contiguous: m_indices [m]; masked: masked_m [num_groups]; k-grouped: ks [num_groups];
                              // normal: unused
  int m;                      // rows of A/D (normal, contiguous: all rows; masked: Mmax, rows per group; k-grouped:
                              // rows of A and of each group of D)
  int num_groups;             // 1 for normal
  int k_blocks;               // k-grouped: sum K / 128, the k-blocks of A, B and the scales (sfb's row stride)
  int d_store;                // a DStore: Tma/TmaAdd need a 16-byte-aligned d and N, ldd multiples of 16 bytes
  int64_t ldd;
  int64_t ldc;
  float* split_ws;            // split-K partial tiles (split_workspace_floats), nullptr without split-K
};

// The FP8 casts (fp8_cast.cuh). x is [rows, cols] with unit column stride; q is e4m3 [rows, cols] with row stride
// ld_q; the scale of (row group, column group) lives at sf[r * sf_stride_row + c * sf_stride_col], which lets the
// per-token cast write row-major or MN-major (TMA-aligned, what the GEMM kernels read) scales.
enum class CastDtype : int { BFloat16 = 0, Float16 = 1, Float32 = 2 };

// Launch geometry, shared by the kernels and the host: kCastThreads threads per CTA, a thread loads 16 bytes of x
// (cast_vector_elems elements). Grid x: per-token, chunks of per_token_rows_per_cta rows; per-block, 128-row blocks.
// Grid y: the 128-column groups (at most kMaxCastColumnGroups, the grid's y limit).
constexpr int kCastThreads = 256;
constexpr int kPerTokenUnroll = 4;
constexpr int64_t kMaxCastColumnGroups = 65535;
constexpr int cast_vector_elems(CastDtype dtype) { return dtype == CastDtype::Float32 ? 4 : 8; }
// The transposed per-token cast: q rows per CTA (a 128 x kTransposeTileRows tile of the stored tensor).
constexpr int kTransposeTileRows = 64;
constexpr int per_token_rows_per_cta(CastDtype dtype) {
  return kCastThreads / (128 / cast_vector_elems(dtype)) * kPerTokenUnroll;
}

struct Fp8CastParams {
  const void* x;
  void* q;
  float* sf;
  int64_t rows;
  int64_t cols;
  int64_t ld_x;
  int64_t ld_q;
  int64_t sf_stride_row;
  int64_t sf_stride_col;
  void* q_t;    // the transposing casts only: e4m3 [cols, rows] row-major (rows % 16 == 0)
  float* sf_t;  // and its scales: per-block [ceil(cols/128), ceil(rows/128)] row-major; per-token [cols,
                // ceil(rows/128)] with the strides below
  int64_t sf_t_stride_row;
  int64_t sf_t_stride_col;
  float* col_sums;  // the per-token transposing summing cast only: x's column sums over each 128-row block,
                    // [ceil(rows/128), cols] fp32 row-major (a torch sum over the blocks finishes them)
};

}  // namespace deepgemm_ops
