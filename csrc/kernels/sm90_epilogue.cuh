// Epilogue: one math warpgroup's 64-row slices of the tile (one, or two for 256-row tiles), straight from the wgmma
// accumulator layout.
//
// TMA epilogue (d_store Tma / TmaAdd): the slice is written into a swizzled shared-memory staging tile of [64 rows]
// [W columns] chunks (bf16 packed by stmatrix, fp32 as pairs; W from d_store_box_cols: wide boxes keep the TMA store
// to few, full-line requests; the first version used 8-column boxes, 16-byte rows, and its stores cost as much as the
// main loop at K = 512), then warp 0 TMA-stores one chunk per lane and moves on; the TMA engine clips rows/columns
// outside the tensor map, and the next tile's main loop overlaps the store. The staging tile is reused only after the
// previous stores have read it (bulk wait_group.read). A 256-row fp32 tile stages one 64-row wave per warpgroup at a
// time (staged_slices): the second waits for the first's read.
// TmaAdd: D already holds C (C is D), and the TMA adds the tile into it in L2 (cp.reduce.async.bulk .add): the math
// warps never read C, and the weight gradient's accumulation runs under the next tile's main loop as DeepGEMM's does.
// Otherwise (direct: C distinct from D, or a row stride TMA cannot take): bounds-checked stores of 2 adjacent columns
// per lane.
// A bias (normal GEMMs, p.bias in D's dtype) is added to the fp32 accumulator before the one rounding to D's dtype;
// each thread reads the BLOCK_N / 4 values of its columns once per tile.
//
// C in the direct epilogue, 64/128-row tiles: when a tile starts, each math thread copies the C values of its
// accumulator elements into its own slots of the staging tile (cp.async, zero-filled outside D), so C's read runs
// under the main loop and the epilogue only waits for its own copies. Read in the epilogue, C stalled both math
// warpgroups with the tensor cores idle: a third of the time of k-grouped GEMMs with many small groups
// (docs/PERF.md). A 256-row tile's C (128 KB) would leave no room for the pipeline: it reads C in the epilogue.
// (The direct epilogue of 256-row fp32 tiles, also without C, held the weight gradient's accumulation into C at
// 0.95x the 128-row tiles' speed, where with bf16 output 256-row tiles were 1.18x faster: docs/PERF.md.)
#pragma once
#include <cuda_bf16.h>

#include "params.h"
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"

namespace deepgemm_ops::kernels {

// Bytes of the staging tile at the start of shared memory (SmemLayout): the D slices the TMA epilogue stages at once,
// which hold the C slots in the direct one where the whole fp32 tile fits (tiles up to 128 rows: C is prefetched);
// _heuristics.staging_bytes() mirrors it.
constexpr bool prefetches_c(int block_m, bool has_c) { return has_c && block_m <= 128; }
constexpr int staging_bytes(int block_m, int block_n, bool out_fp32) {
  return math_warpgroups(block_m) * staged_slices(block_m, out_fp32) * 64 * block_n * (out_fp32 ? 4 : 2);
}

template <int kN, int kBlockM, int kBlockN, GemmType kType, bool kOutFp32, bool kHasC>
struct Epilogue {
  static_assert(!kHasC || kOutFp32, "C is accumulated in FP32: the output must be FP32");
  static_assert(kOutFp32 || kBlockN % 16 == 0, "the bf16 epilogue stores pairs of 8-column chunks: BLOCK_N % 16 == 0");
  static constexpr int kStagingBytes = staging_bytes(kBlockM, kBlockN, kOutFp32);
  static constexpr bool kPrefetchC = prefetches_c(kBlockM, kHasC);
  static constexpr int kStagedSlices = staged_slices(kBlockM, kOutFp32);

  // This thread's element coordinates in 64-row slice `slice`: rows row and row + 8 (k-grouped: of D[g], row g * M +
  // row of the flattened [G * M, N]) and columns col0 + 8j + {0, 1}.
  struct Place {
    int64_t row0;
    bool row0_ok, row1_ok;
    int col0;
  };
  __device__ static Place place(const Fp8GemmParams& p, const Tile& t, int slice, int warp_in_wg, int lane) {
    const int row = t.a_row + slice * 64 + warp_in_wg * 16 + lane / 4;
    return {(kType == GemmType::KGrouped ? static_cast<int64_t>(t.group) * p.m : 0) + row, row < t.row_end,
            row + 8 < t.row_end, t.n_block * kBlockN + (lane % 4) * 2};
  }

  // C's element i of this thread (row at.row0 or at.row0 + 8, column at.col0 + i / 4 * 8 + i % 2): its address, and
  // whether it lies inside D (else the address is p.c itself, never read).
  __device__ static const float* c_element(const Fp8GemmParams& p, const Place& at, int i, bool& ok) {
    const int col = at.col0 + i / 4 * 8 + i % 2;
    const bool second_row = i % 4 >= 2;
    ok = (second_row ? at.row1_ok : at.row0_ok) && col < kN;
    return ok ? p.c + (at.row0 + (second_row ? 8 : 0)) * p.ldc + col : p.c;
  }

  // This thread's C slots of 64-row slice `slice` of the tile: element i at [i * 128] (a warp's lanes on consecutive
  // words).
  __device__ static float* c_slots(uint8_t* staging, int slice, int warp_in_wg, int lane) {
    return reinterpret_cast<float*>(staging) + slice * (kBlockN / 2) * 128 + warp_in_wg * 32 + lane;
  }

  // Tile start, direct epilogue: the copies of C for this thread's elements of the warpgroup's kWaves slices
  // (k-grouped: C[g]; C may be D itself where TMA cannot take D, each element read here and written in store_direct
  // by the same thread). Nothing without them.
  template <int kWaves>
  __device__ static void prefetch_c(const Fp8GemmParams& p, const Tile& t, int math_wg, int warp_in_wg, int lane,
                                    uint8_t* staging) {
    if constexpr (kPrefetchC) {
      if (p.d_store != static_cast<int>(DStore::Direct)) return;
      asm volatile("" ::: "memory");  // the previous tile's reads of the slots stay before these copies
#pragma unroll
      for (int w = 0; w < kWaves; ++w) {
        const int slice = math_wg * kWaves + w;
        const Place at = place(p, t, slice, warp_in_wg, lane);
        float* slots = c_slots(staging, slice, warp_in_wg, lane);
#pragma unroll
        for (int i = 0; i < kBlockN / 2; ++i) {
          bool ok;
          const float* src = c_element(p, at, i, ok);
          cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<float>::copy(*src, slots[i * 128], ok);
        }
      }
    }
  }

  // Stores the pair (v0, v1) at columns col, col + 1 of `row`; col is even. `paired` = the row stride is even, so
  // the pair is aligned for one vector access.
  __device__ static void store_pair(const Fp8GemmParams& p, int64_t row, int col, float v0, float v1, bool paired) {
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

  // C at element i of slice `slice` for this thread (its slot, or from global memory; 0 outside D or without C).
  __device__ static float c_value(const Fp8GemmParams& p, const Place& at, int i, const float* slots) {
    if constexpr (kPrefetchC) {
      return slots[i * 128];
    } else if constexpr (kHasC) {
      bool ok;
      const float* src = c_element(p, at, i, ok);
      return ok ? __ldg(src) : 0.0f;
    } else {
      return 0.0f;
    }
  }

  // This thread's bias values for its columns of the tile: column col0 + 8j + e at [2j + e]; 0 past N or without a
  // bias (a warp-uniform branch: the pointer is the same for the whole grid).
  using BiasT = cute::conditional_t<kOutFp32, float, __nv_bfloat16>;
  struct Bias {
    float v[kBlockN / 4];
  };
  __device__ static Bias load_bias(const Fp8GemmParams& p, const Tile& t, int lane) {
    Bias b{};
    if constexpr (kType == GemmType::Normal) {
      if (p.bias != nullptr) {
        const BiasT* bias = static_cast<const BiasT*>(p.bias);
        const int col0 = t.n_block * kBlockN + (lane % 4) * 2;
#pragma unroll
        for (int i = 0; i < kBlockN / 4; ++i) {
          const int col = col0 + i / 2 * 8 + i % 2;
          if (col < kN) b.v[i] = static_cast<float>(bias[col]);
        }
      }
    }
    return b;
  }
  // Normal GEMMs with a bias: the tile's bias values into L1, one line per lane (the tile's columns span at most
  // BLOCK_N * 4 bytes, 8 lines at 256 fp32 columns).
  __device__ static void prefetch_bias(const Fp8GemmParams& p, const Tile& t, int lane) {
    constexpr int kLines = (kBlockN * static_cast<int>(sizeof(BiasT)) + 127) / 128 + 1;  // +1: an unaligned start
    const int col = t.n_block * kBlockN + lane * (128 / static_cast<int>(sizeof(BiasT)));
    if (lane < kLines && col < kN) {
      asm volatile("prefetch.global.L1 [%0];" ::"l"(static_cast<const BiasT*>(p.bias) + col));
    }
  }
  // The bias of accumulator element i (column col0 + i / 4 * 8 + i % 2).
  __device__ static float bias_of(const Bias& b, int i) { return b.v[i / 4 * 2 + i % 2]; }

  // Bounds-checked stores of the warpgroup's kWaves slices (acc[w]: slice math_wg * kWaves + w), plus C (from this
  // thread's slots once its copies have landed).
  template <int kWaves>
  __device__ static void store_direct(const Fp8GemmParams& p, const Tile& t, int math_wg, int warp_in_wg, int lane,
                                      const float (&acc)[kWaves][kBlockN / 2], uint8_t* staging) {
    if constexpr (kPrefetchC) cute::cp_async_wait<0>();
    const bool paired = p.ldd % 2 == 0;
    const Bias bias = load_bias(p, t, lane);
#pragma unroll
    for (int w = 0; w < kWaves; ++w) {
      const int slice = math_wg * kWaves + w;
      const Place at = place(p, t, slice, warp_in_wg, lane);
      [[maybe_unused]] const float* slots = c_slots(staging, slice, warp_in_wg, lane);
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const int col = at.col0 + j * 8;
        if (col >= kN) break;
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = acc[w][4 * j + e] + c_value(p, at, 4 * j + e, slots) + bias_of(bias, 4 * j + e);
        if (at.row0_ok) store_pair(p, at.row0, col, v[0], v[1], paired);
        if (at.row1_ok) store_pair(p, at.row0 + 8, col, v[2], v[3], paired);
      }
    }
  }

  __device__ static uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }

  // smem_d: this warpgroup's staging tiles, one 64 x BLOCK_N tile (kSliceBytes) per slice, each as BLOCK_N / W chunks
  // of [64 rows][W columns] (W = d_store_box_cols), each swizzled like the TMA's swizzle mode of its row size: the
  // 16-byte unit u of row r sits at unit u ^ ((r / (8 / units)) % units), units = row bytes / 16 (the
  // Swizzle<log2(units), 4, 3> pattern on byte offsets; chunks are 1024-byte aligned). The 8 rows one stmatrix matrix
  // (or one fp32 pair store) writes land in 8 different 16-byte bank groups.
  // Masked and k-grouped GEMMs store through a 3D map [G][M][N] so a tile never spills into the next group's rows
  // (masked: rows >= masked_m inside the group are unspecified by the contract).
  static constexpr int kElemBytes = kOutFp32 ? 4 : 2;
  static constexpr int kBoxCols = d_store_box_cols(kBlockN, kElemBytes);
  static constexpr int kUnits = kBoxCols * kElemBytes / 16;  // 16-byte units per staged row: 8, 4 or 2
  static constexpr int kBoxBytes = 64 * kBoxCols * kElemBytes;
  static constexpr int kSliceBytes = 64 * kBlockN * kElemBytes;
  static_assert(kBoxBytes % 1024 == 0, "swizzled D chunks must stay 1024-byte aligned");

  __device__ static uint32_t staged_offset(int row, int unit16) {
    const int chunk = unit16 / kUnits, unit = unit16 % kUnits;
    const int swizzled = unit ^ ((row * kUnits / 8) % kUnits);
    return static_cast<uint32_t>(chunk * kBoxBytes + row * kUnits * 16 + swizzled * 16);
  }

  // The warpgroup's kWaves slices math_wg * kWaves + w, kStagedSlices at a time: each round waits until the staging
  // tile has been read by the previous stores, stages its slices, and warp 0 issues their TMA stores. A bias is added
  // into acc under a grid-uniform branch (adding zeros cost every thread one FADD per element of acc); its lines are
  // prefetched into L1 before the first barrier, so the loads after it hit L1 without holding registers across.
  // staging: the tile's staging area (this warpgroup's part starts kStagedSlices slices in per warpgroup).
  template <int kWaves>
  __device__ static void store_tma(const Fp8GemmParams& p, const Tile& t, int math_wg, int warp_in_wg, int lane,
                                   float (&acc)[kWaves][kBlockN / 2], uint8_t* staging, const TmaDescriptor& tma_d) {
    static_assert(kWaves % kStagedSlices == 0, "a round stages whole slices");
    uint8_t* const smem_d = staging + math_wg * kStagedSlices * kSliceBytes;
    const bool has_bias = kType == GemmType::Normal && p.bias != nullptr;
    if (has_bias) prefetch_bias(p, t, lane);
    const uint32_t barrier_id = static_cast<uint32_t>(math_wg);  // NamedBarrier skips CUTLASS's reserved ids
    const bool add = kHasC && p.d_store == static_cast<int>(DStore::TmaAdd);  // D holds C: add the tile to it
#pragma unroll
    for (int first = 0; first < kWaves; first += kStagedSlices) {
      if (warp_in_wg == 0) cute::tma_store_wait<0>();  // the previous stores have read the staging tile
      cutlass::arch::NamedBarrier::sync(128, barrier_id);
      if (has_bias && first == 0) {
        const Bias bias = load_bias(p, t, lane);
#pragma unroll
        for (int w = 0; w < kWaves; ++w) {
#pragma unroll
          for (int i = 0; i < kBlockN / 2; ++i) acc[w][i] += bias_of(bias, i);
        }
      }
#pragma unroll
      for (int s = 0; s < kStagedSlices; ++s) stage_slice(acc[first + s], smem_d + s * kSliceBytes, warp_in_wg, lane);
      cute::tma_store_fence();  // make the generic-proxy smem writes visible to the TMA (async proxy)
      cutlass::arch::NamedBarrier::sync(128, barrier_id);
      if (warp_in_wg == 0) {
        for (int i = lane; i < kStagedSlices * (kBlockN / kBoxCols); i += 32) {
          const int s = i / (kBlockN / kBoxCols), c = i % (kBlockN / kBoxCols);
          const int col = t.n_block * kBlockN + c * kBoxCols;
          const int row = (math_wg * kWaves + first + s) * 64;
          if (col >= kN) continue;
          uint8_t* src = smem_d + s * kSliceBytes + c * kBoxBytes;
          if constexpr (kType == GemmType::Masked || kType == GemmType::KGrouped) {  // [G][M][N]: rows inside the group
            const int group_row = t.m_block * kBlockM + row;
            if (add) {
              cute::SM90_TMA_REDUCE_ADD_3D::copy(&tma_d, src, col, group_row, t.group);
            } else {
              cute::SM90_TMA_STORE_3D::copy(&tma_d, src, col, group_row, t.group);
            }
          } else if (add) {
            cute::SM90_TMA_REDUCE_ADD_2D::copy(&tma_d, src, col, t.a_row + row);
          } else {
            cute::SM90_TMA_STORE_2D::copy(&tma_d, src, col, t.a_row + row);
          }
        }
        cute::tma_store_arrive();  // commits the group of stores
      }
    }
  }

  // Writes one 64-row slice of accumulators (wgmma layout) into its swizzled staging tile dst.
  __device__ static void stage_slice(const float (&acc)[kBlockN / 2], uint8_t* dst_slice, int warp_in_wg, int lane) {
    if constexpr (kOutFp32) {
      // Lane pairs (2 columns, 8 bytes) of rows r and r + 8: 8-column group j is units 2j, 2j + 1.
      const int row = warp_in_wg * 16 + lane / 4;
      const int unit = (lane % 4) / 2, half = (lane % 2) * 8;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const uint32_t lo = cute::cast_smem_ptr_to_uint(dst_slice + half + staged_offset(row, 2 * j + unit));
        const uint32_t hi = cute::cast_smem_ptr_to_uint(dst_slice + half + staged_offset(row + 8, 2 * j + unit));
        asm volatile("st.shared.v2.f32 [%0], {%1, %2};" ::"r"(lo), "f"(acc[4 * j + 0]), "f"(acc[4 * j + 1]));
        asm volatile("st.shared.v2.f32 [%0], {%1, %2};" ::"r"(hi), "f"(acc[4 * j + 2]), "f"(acc[4 * j + 3]));
      }
    } else {
      // stmatrix x4: lanes 8q..8q+7 address the rows of matrix q = (8-column group j + q / 2, rows (q % 2) * 8 + 0..7).
      const int q = lane / 8;
      const int row = warp_in_wg * 16 + (q % 2) * 8 + lane % 8;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; j += 2) {
        uint8_t* dst = dst_slice + staged_offset(row, j + q / 2);
        cute::SM90_U32x4_STSM_N::copy(
            pack_bf16(acc[4 * j + 0], acc[4 * j + 1]), pack_bf16(acc[4 * j + 2], acc[4 * j + 3]),
            pack_bf16(acc[4 * j + 4], acc[4 * j + 5]), pack_bf16(acc[4 * j + 6], acc[4 * j + 7]),
            *reinterpret_cast<cute::uint128_t*>(dst));
      }
    }
  }

  // Before the CTA exits: the staging tile must stay valid until the last stores have read it.
  __device__ static void drain(int warp_in_wg) {
    if (warp_in_wg == 0) cute::tma_store_wait<0>();
  }
};

}  // namespace deepgemm_ops::kernels
