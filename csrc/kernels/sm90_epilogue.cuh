// Epilogue: one math warpgroup's 64-row slices of the tile (one, or two for 256-row tiles), straight from the wgmma
// accumulator layout.
//
// bf16 output (store_d_by_tma): stmatrix packs the slice into a swizzled shared-memory staging tile of [64 rows][W
// columns] chunks (W = 64/32/16, see d_store_box_cols: wide boxes keep the TMA store to few, full-line requests; the
// first version used 8-column boxes, 16-byte rows, and its stores cost as much as the main loop at K = 512), then
// warp 0 TMA-stores one chunk per lane and moves on; the TMA engine clips rows/columns outside the tensor map, and the next tile's main loop overlaps the
// store. The staging tile is reused only after the previous stores have read it (bulk wait_group.read).
// Otherwise (fp32 output, C, or a row stride TMA cannot take): bounds-checked stores of 2 adjacent columns per lane.
#pragma once
#include <cuda_bf16.h>

#include "params.h"
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"

namespace deepgemm_ops::kernels {

template <int kN, int kBlockM, int kBlockN, GemmType kType, bool kOutFp32, bool kHasC>
struct Epilogue {
  static_assert(!kHasC || kOutFp32, "C is accumulated in FP32: the output must be FP32");
  static_assert(kOutFp32 || kBlockN % 16 == 0, "the bf16 epilogue stores pairs of 8-column chunks: BLOCK_N % 16 == 0");

  // C through the read-only cache, except for k-grouped GEMMs, whose C may be D itself (in-place accumulation; each
  // element is read and then written by the same thread).
  template <class T>
  __device__ static T load_c(const T* c) {
    if constexpr (kType == GemmType::KGrouped) return *c;
    return __ldg(c);
  }

  // Stores the pair (v0, v1) at columns col, col + 1 of `row`; col is even. `paired` = the row stride is even, so
  // the pair is aligned for one vector access.
  __device__ static void store_pair(const Fp8GemmParams& p, int64_t row, int col, float v0, float v1, bool paired) {
    if constexpr (kHasC) {
      const float* c = p.c + row * p.ldc + col;
      if (paired && col + 1 < kN) {
        const float2 cv = load_c(reinterpret_cast<const float2*>(c));
        v0 += cv.x;
        v1 += cv.y;
      } else {
        v0 += load_c(c);
        if (col + 1 < kN) v1 += load_c(c + 1);
      }
    }
    if constexpr (kOutFp32) {
      float* d = static_cast<float*>(p.d) + row * p.ldd + col;
      if (paired && col + 1 < kN) {
        *reinterpret_cast<float2*>(d) = make_float2(v0, v1);
      } else {
        d[0] = v0;
        if (col + 1 < kN) d[1] = v1;
      }
    } else {
      __nv_bfloat16* d = static_cast<__nv_bfloat16*>(p.d) + row * p.ldd + col;
      if (paired && col + 1 < kN) {
        *reinterpret_cast<__nv_bfloat162*>(d) = __floats2bfloat162_rn(v0, v1);
      } else {
        d[0] = __float2bfloat16_rn(v0);
        if (col + 1 < kN) d[1] = __float2bfloat16_rn(v1);
      }
    }
  }

  // The tile's 64-row slice `slice`. K-grouped: group g's tile goes to D[g] (and adds C[g]), rows g * M + row of
  // the flattened [G * M, N].
  __device__ static void store_direct(const Fp8GemmParams& p, const Tile& t, int slice, int warp_in_wg, int lane,
                                      const float (&acc)[kBlockN / 2]) {
    const int row = t.a_row + slice * 64 + warp_in_wg * 16 + lane / 4;
    const bool row0_ok = row < t.row_end, row1_ok = row + 8 < t.row_end;
    const int64_t row0 = (kType == GemmType::KGrouped ? static_cast<int64_t>(t.group) * p.m : 0) + row;
    const bool paired = (p.ldd % 2 == 0) && (!kHasC || p.ldc % 2 == 0);
    const int col0 = t.n_block * kBlockN + (lane % 4) * 2;
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      const int col = col0 + j * 8;
      if (col >= kN) break;
      if (row0_ok) store_pair(p, row0, col, acc[4 * j + 0], acc[4 * j + 1], paired);
      if (row1_ok) store_pair(p, row0 + 8, col, acc[4 * j + 2], acc[4 * j + 3], paired);
    }
  }

  __device__ static uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }

  // smem_d: this warpgroup's staging tiles, one 64 x BLOCK_N tile (kSliceBytes) per slice, each as BLOCK_N / W chunks of [64 rows][W columns] (W =
  // d_store_box_cols), each swizzled like the TMA's 2W-byte swizzle mode: the 16-byte unit u of row r sits at unit
  // u ^ ((r / (8 / units)) % units), units = 2W / 16 (the Swizzle<log2(units), 4, 3> pattern on byte offsets; chunks
  // are 1024-byte aligned). The 8 rows one stmatrix matrix writes land in 8 different 16-byte bank groups.
  // Masked GEMMs store through a 3D map [G][Mmax][N] so a tile never spills into the next group's rows (rows >=
  // masked_m inside the group are unspecified by the contract).
  static constexpr int kBoxCols = d_store_box_cols(kBlockN);
  static constexpr int kUnits = kBoxCols / 8;  // 16-byte units per staged row: 8, 4 or 2
  static constexpr int kBoxBytes = 64 * kBoxCols * 2;
  static constexpr int kSliceBytes = 64 * kBlockN * 2;
  static_assert(kBoxBytes % 1024 == 0, "swizzled D chunks must stay 1024-byte aligned");

  __device__ static uint32_t staged_offset(int row, int col8) {
    const int chunk = col8 / kUnits, unit = col8 % kUnits;
    const int swizzled = unit ^ ((row * kUnits / 8) % kUnits);
    return static_cast<uint32_t>(chunk * kBoxBytes + row * kBoxCols * 2 + swizzled * 16);
  }

  // The warpgroup's kWaves slices math_wg * kWaves + w, in one round of barriers.
  template <int kWaves>
  __device__ static void store_tma(const Tile& t, int math_wg, int warp_in_wg, int lane,
                                   const float (&acc)[kWaves][kBlockN / 2], uint8_t* smem_d, const TmaDescriptor& tma_d) {
    const uint32_t barrier_id = static_cast<uint32_t>(math_wg);  // NamedBarrier skips CUTLASS's reserved ids
    if (warp_in_wg == 0) cute::tma_store_wait<0>();  // the previous tile's stores have read the staging tile
    cutlass::arch::NamedBarrier::sync(128, barrier_id);
    // stmatrix x4: lanes 8q..8q+7 address the rows of matrix q = (8-column group j + q / 2, rows (q % 2) * 8 + 0..7).
    const int q = lane / 8;
    const int row = warp_in_wg * 16 + (q % 2) * 8 + lane % 8;
#pragma unroll
    for (int w = 0; w < kWaves; ++w) {
      const float(&a)[kBlockN / 2] = acc[w];
#pragma unroll
      for (int j = 0; j < kBlockN / 8; j += 2) {
        uint8_t* dst = smem_d + w * kSliceBytes + staged_offset(row, j + q / 2);
        cute::SM90_U32x4_STSM_N::copy(pack_bf16(a[4 * j + 0], a[4 * j + 1]), pack_bf16(a[4 * j + 2], a[4 * j + 3]),
                                      pack_bf16(a[4 * j + 4], a[4 * j + 5]), pack_bf16(a[4 * j + 6], a[4 * j + 7]),
                                      *reinterpret_cast<cute::uint128_t*>(dst));
      }
    }
    cute::tma_store_fence();  // make the generic-proxy smem writes visible to the TMA (async proxy)
    cutlass::arch::NamedBarrier::sync(128, barrier_id);
    if (warp_in_wg == 0) {
      for (int i = lane; i < kWaves * (kBlockN / kBoxCols); i += 32) {
        const int w = i / (kBlockN / kBoxCols), c = i % (kBlockN / kBoxCols);
        const int col = t.n_block * kBlockN + c * kBoxCols;
        const int row = (math_wg * kWaves + w) * 64;
        if (col >= kN) continue;
        uint8_t* src = smem_d + w * kSliceBytes + c * kBoxBytes;
        if constexpr (kType == GemmType::Masked) {
          cute::SM90_TMA_STORE_3D::copy(&tma_d, src, col, t.m_block * kBlockM + row, t.group);
        } else {
          cute::SM90_TMA_STORE_2D::copy(&tma_d, src, col, t.a_row + row);
        }
      }
      cute::tma_store_arrive();  // commits the group of stores
    }
  }

  // Before the CTA exits: the staging tile must stay valid until the last stores have read it.
  __device__ static void drain(int warp_in_wg) {
    if (warp_in_wg == 0) cute::tma_store_wait<0>();
  }
};

}  // namespace deepgemm_ops::kernels
