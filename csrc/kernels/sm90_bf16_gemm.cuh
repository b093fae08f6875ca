// BF16 GEMM for SM90 (normal in the four layouts NT/NN/TN/TT, m-grouped contiguous and masked NT):
//   D[m, n] = C[m, n] + sum_k A[m, k] B[k, n], A and B bf16 in either major order, FP32 accumulation.
// Same structure as the FP8 kernel (sm90_fp8_gemm.cuh): persistent CTAs, warpgroups 0 .. kBlockM/64 - 1 do the math
// (64 rows each), the last warpgroup's first thread issues the TMA loads; the FP8 family's tile scheduler and epilogue.
// The generated source instantiates this from an extern "C" __global__ wrapper with
// __launch_bounds__(bf16_gemm_threads(kBlockM), 1).
#pragma once
#include "grid_dependency.cuh"
#include "params.h"
#include "sm90_bf16_mainloop.cuh"
#include "sm90_epilogue.cuh"
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"

namespace deepgemm_ops::kernels {

__host__ __device__ constexpr int bf16_gemm_threads(int block_m) { return (block_m / 64 + 1) * 128; }

template <int kBlockM, int kBlockN, int kStages, bool kOutFp32, bool kHasC>
constexpr int bf16_gemm_smem_bytes() {
  return Bf16SmemLayout<kBlockM, kBlockN, kStages, staging_bytes(kBlockM, kBlockN, kOutFp32)>::total;
}

// p: the FP8 family's parameters (the scheduler and epilogue read them); sfb is unused.
template <int kN, int kK, int kBlockM, int kBlockN, int kStages, int kSwizzleGroupN, GemmType kType,
          GmmaMajor kMajorA, GmmaMajor kMajorB, bool kOutFp32, bool kHasC, class Wgmma>
__device__ __forceinline__ void bf16_gemm_kernel(const Fp8GemmParams& p, const TmaDescriptor& tma_a,
                                                 const TmaDescriptor& tma_b, const TmaDescriptor& tma_d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  static_assert(kBlockM == 64 || kBlockM == 128, "BLOCK_M must be 64 or 128 (one or two math warpgroups)");
  static_assert(kBlockN % 16 == 0 && kBlockN >= 16 && kBlockN <= 256, "BLOCK_N must be a multiple of 16 in [16, 256]");
  static_assert(kK >= 1, "K must be positive (K = 0 never launches)");
  static_assert(kType == GemmType::Normal || (kMajorA == GmmaMajor::K && kMajorB == GmmaMajor::K),
                "grouped BF16 GEMMs are NT (both operands K-major)");
  using Epi = Epilogue<kN, kBlockM, kBlockN, kType, kOutFp32, kHasC>;
  using Loop = Bf16Mainloop<kN, kK, kBlockM, kBlockN, kStages, kMajorA, kMajorB, Epi::kStagingBytes, Wgmma>;
  using Sched = TileScheduler<kType, kN, Loop::kNumKBlocks, kBlockM, kBlockN, kSwizzleGroupN, 1>;
  // Register split: the producer needs few; a math thread holds one BLOCK_N / 2 accumulator (128 registers at 256).
  constexpr uint32_t kProducerRegs = 40;
  constexpr uint32_t kMathRegs = Loop::kNumMathWarpgroups == 2 ? 232 : 240;

  extern __shared__ __align__(1024) uint8_t smem[];
  const Loop loop{smem};
  const int warpgroup = threadIdx.x / 128;
  const int warp_in_wg = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    cute::prefetch_tma_descriptor(&tma_a);
    cute::prefetch_tma_descriptor(&tma_b);
    if (p.d_store != static_cast<int>(DStore::Direct)) cute::prefetch_tma_descriptor(&tma_d);
    loop.init_barriers();
  }
  enter_dependent_grid();  // everything below reads or writes global memory (scheduler, TMA, C, D)
  __syncthreads();

  if (warpgroup == Loop::kNumMathWarpgroups) {
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegs>();
    // elect.sync, not lane == 0: the TMA issue loop stays in uniform registers (sm90_fp8_gemm.cuh).
    if (warp_in_wg == 0 && cute::elect_one_sync()) {
      PipelineState<kStages> st;
      Sched sched(p);
      Tile t;
      while (sched.next(t)) {
        if constexpr (kType == GemmType::Contiguous) {
          if (t.group < 0) continue;  // padding rows only (Tile::group)
        }
        loop.produce(t, st, tma_a, tma_b);
      }
    }
  } else {
    cutlass::arch::warpgroup_reg_alloc<kMathRegs>();
    // Warp-uniform through a shuffle: the tile addresses derived from it stay in uniform registers.
    const int math_wg = __shfl_sync(0xffffffff, warpgroup, 0);
    PipelineState<kStages> st;
    Sched sched(p);
    Tile t;
    float acc[1][kBlockN / 2];  // one 64-row slice per math warpgroup (the epilogue takes slices)
    uint8_t* staging = smem + Loop::Layout::staging;
    while (sched.next(t)) {
      if constexpr (kType == GemmType::Contiguous) {
        if (t.group < 0) continue;
      }
      Epi::template prefetch_c<1>(p, t, math_wg, warp_in_wg, lane, staging);
      loop.consume(st, math_wg, lane, acc[0]);
      if (p.d_store != static_cast<int>(DStore::Direct)) {
        Epi::store_tma(p, t, math_wg, warp_in_wg, lane, acc, staging, tma_d);
        continue;
      }
      Epi::store_direct(p, t, math_wg, warp_in_wg, lane, acc, staging);
    }
    if (p.d_store != static_cast<int>(DStore::Direct)) Epi::drain(warp_in_wg);
  }
#endif
}

}  // namespace deepgemm_ops::kernels
