// FP8 NT GEMM with fine-grained scaling for SM90 (normal, m-grouped contiguous, m-grouped masked, k-grouped):
//   D[m, n] = C[m, n] + sum_kb (sum_{k in kb} A[m, k] B[n, k]) * sfa[m, kb] * sfb(n, kb)
// K-grouped (the weight gradient): D[g] = C[g] + the same sum over group g's k-blocks, which start where group g - 1's
// end (ks, read on the device); kK is 0 there, K being a run-time extent.
// Persistent CTAs: the math warpgroups (math_warpgroups(kBlockM): 64 rows each, or 128 as two 64-row waves in
// 256-row tiles) come first, the last warpgroup produces (warp 0: TMA for A, B, sfa; warp 1: the B scales).
// kSplits > 1: split-K over a cluster of kSplits CTAs (params.h, sm90_split_k.cuh). The generated source instantiates
// this from an extern "C" __global__ wrapper with __launch_bounds__(num_threads(kBlockM), 1).
#pragma once
#include "sm90_epilogue.cuh"
#include "sm90_mainloop.cuh"
#include "grid_dependency.cuh"
#include "params.h"
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"
#include "sm90_split_k.cuh"

namespace deepgemm_ops::kernels {

__host__ __device__ constexpr int num_threads(int block_m) { return (math_warpgroups(block_m) + 1) * 128; }

template <int kBlockM, int kBlockN, int kStages, bool kOutFp32, int kSplits>
constexpr int smem_bytes() {
  return SmemLayout<kBlockM, kBlockN, kStages, staging_bytes(kBlockM, kBlockN, kOutFp32), (kSplits > 1)>::total;
}

// Wgmma: the CuTe wgmma atom m64 x kBlockN x k32 (e4m3 x e4m3 -> f32, SS, K-major A and B).
template <int kN, int kK, int kBlockM, int kBlockN, int kStages, int kSwizzleGroupN, GemmType kType,
          SfbRecipe kRecipe, bool kOutFp32, bool kHasC, int kCluster, int kSplits, class Wgmma>
__device__ __forceinline__ void fp8_gemm_kernel(const Fp8GemmParams& p, const TmaDescriptor& tma_a,
                                                const TmaDescriptor& tma_b, const TmaDescriptor& tma_sfa,
                                                const TmaDescriptor& tma_d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  static_assert(kBlockM == 64 || kBlockM == 128 || kBlockM == 256, "BLOCK_M must be 64, 128 or 256");
  static_assert(kBlockM < 256 || kBlockN <= 128, "256-row tiles hold two accumulators and a partial: BLOCK_N <= 128");
  static_assert(kType != GemmType::KGrouped || (kK == 0 && kRecipe == SfbRecipe::Row1x128 && kOutFp32),
                "k-grouped kernels take K at run time (kK = 0), per-row B scales, an fp32 output");
  static_assert(kBlockN % 8 == 0 && kBlockN >= 8 && kBlockN <= 256, "BLOCK_N must be a multiple of 8 in [8, 256]");
  static_assert(kK % 16 == 0, "K must be a multiple of 16 (TMA row stride)");
  static_assert(kCluster == 1 || kCluster == 2, "cluster size must be 1 or 2");
  static_assert(kSplits == 1 || (kSplits <= kMaxSplits && kCluster == 1 && kBlockM <= 128 && kType == GemmType::Normal),
                "split-K: at most kMaxSplits splits of a normal GEMM's tiles of at most 128 rows, no multicast");
  using Epi = Epilogue<kN, kBlockM, kBlockN, kType, kOutFp32, kHasC>;
  using Loop = Mainloop<kN, kK, kBlockM, kBlockN, kStages, kType, kRecipe, Epi::kStagingBytes, kCluster, kSplits, Wgmma>;
  using Sched = TileScheduler<kType, kN, Loop::kNumKBlocks, kBlockM, kBlockN, kSwizzleGroupN, kCluster, kSplits>;
  using Split = SplitK<kBlockM, kBlockN, kSplits, Loop::kNumMathWarpgroups * 128>;

  // Register split: the producer needs few; the math warpgroups hold three BLOCK_N/2 arrays each (accumulators and
  // partials).
  constexpr uint32_t kProducerRegs = 40;
  constexpr uint32_t kMathRegs = Loop::kNumMathWarpgroups == 2 ? 232 : 240;

  extern __shared__ __align__(1024) uint8_t smem[];
  const Loop loop = Loop::make(smem);
  uint64_t* const split_bar = reinterpret_cast<uint64_t*>(smem + Loop::Layout::split_bar);
  const int warpgroup = threadIdx.x / 128;
  const int warp_in_wg = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    cute::prefetch_tma_descriptor(&tma_a);
    cute::prefetch_tma_descriptor(&tma_b);
    cute::prefetch_tma_descriptor(&tma_sfa);
    if (p.d_store != static_cast<int>(DStore::Direct)) cute::prefetch_tma_descriptor(&tma_d);
    Split::init(split_bar);  // before init_barriers, whose fence makes every barrier's init visible to the cluster
    loop.init_barriers();
  }
  enter_dependent_grid();  // everything below reads or writes global memory (scheduler, TMA, C, D)
  if constexpr (kCluster > 1 || kSplits > 1) {
    cute::cluster_sync();  // the peers' barriers are initialised before any multicast or remote arrive reaches them
  } else {
    __syncthreads();
  }

  if (warpgroup == Loop::kNumMathWarpgroups) {
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegs>();
    PipelineState<kStages> st;
    Sched sched(p);
    Tile t;
    if (warp_in_wg == 0) {
      // elect.sync, not lane == 0: ptxas then knows one thread runs the loop and keeps its TMA operands in uniform
      // registers (with lane == 0 it wrapped every TMA issue in an R2UR retry loop: 82 vs 49 instructions per k-block).
      if (cute::elect_one_sync()) {
        while (sched.next(t)) {
          if constexpr (kType == GemmType::Contiguous) {
            if (t.group < 0) continue;  // padding rows only (Tile::group)
          }
          loop.produce_tma(t, st, tma_a, tma_b, tma_sfa);
        }
        if constexpr (kCluster > 1) loop.wait_last_releases(st);
      }
    } else if (warp_in_wg == 1) {
      while (sched.next(t)) {
        if constexpr (kType == GemmType::Contiguous) {
          if (t.group < 0) continue;
        }
        loop.produce_sfb(t, st, p, lane);
      }
    }
  } else {
    cutlass::arch::warpgroup_reg_alloc<kMathRegs>();
    // Through a shuffle the compiler knows it is warp-uniform: the tile addresses derived from it stay in uniform
    // registers (main loop 6-15% fewer instructions, test_kernel_compile.MAIN_LOOP_BOUND).
    const int math_wg = __shfl_sync(0xffffffff, warpgroup, 0);
    PipelineState<kStages> st;
    Sched sched(p);
    Tile t;
    constexpr int kWaves = Loop::kWaves;
    float acc[kWaves][kBlockN / 2];
    uint8_t* staging = smem + Loop::Layout::staging;
    while (sched.next(t)) {
      if constexpr (kType == GemmType::Contiguous) {
        if (t.group < 0) continue;
      }
      if (kSplits == 1 || t.split == 0) Epi::template prefetch_c<kWaves>(p, t, math_wg, warp_in_wg, lane, staging);
      loop.consume(st, t, math_wg, warp_in_wg, lane, acc);
      if constexpr (kSplits > 1) {
        if (!Split::reduce(p, t, threadIdx.x, split_bar, acc[0])) continue;  // math threads come first: 0 .. 255
      }
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
