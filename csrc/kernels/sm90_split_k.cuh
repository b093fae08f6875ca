// Split-K reduction (params.h): the splits of one tile are the CTAs of one cluster, so they are resident together and
// split 0 can wait for the others without any global flag (nothing to zero before a launch, nothing that outlives it,
// so CUDA graphs and concurrent streams are safe). Splits 1.. store their accumulators to their workspace slot and
// each math thread arrives, with release semantics at cluster scope, on split 0's barrier; split 0 waits on it with
// acquire semantics, adds the partials in split order and goes on to the epilogue.
#pragma once
#include "params.h"
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"

namespace deepgemm_ops::kernels {

template <int kBlockM, int kBlockN, int kSplits, int kMathThreads>
struct SplitK {
  static_assert(kSplits == 1 || kBlockM <= 128, "split-K keeps one 64-row slice per math warpgroup: BLOCK_M <= 128");
  static constexpr int kVecs = kBlockN / 8;  // a thread's BLOCK_N / 2 accumulators as float4s

  // One thread: split 0's barrier counts every math thread of the other splits.
  __device__ static void init(uint64_t* bar) {
    if constexpr (kSplits > 1) Barrier::init(bar, (kSplits - 1) * kMathThreads);
  }

  // Workspace slot of split s (>= 1) of tile `unit`; a thread's float4 v at [v * kMathThreads + thread], so a warp's
  // stores and loads cover 512 contiguous bytes.
  __device__ static float4* slot(const Fp8GemmParams& p, int unit, int split) {
    return reinterpret_cast<float4*>(p.split_ws) +
           (static_cast<int64_t>(unit) * (kSplits - 1) + split - 1) * kVecs * kMathThreads;
  }

  // Returns true in split 0 once acc holds the whole tile's sum (it then stores the tile); false in the others, whose
  // partial went to split 0. thread: the math thread's index (0 .. kMathThreads).
  __device__ static bool reduce(const Fp8GemmParams& p, const Tile& t, int thread, uint64_t* bar,
                                float (&acc)[kBlockN / 2]) {
    if (t.split != 0) {
      float4* dst = slot(p, t.unit, t.split);
#pragma unroll
      for (int v = 0; v < kVecs; ++v) {
        dst[v * kMathThreads + thread] = make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]);
      }
      const uint32_t remote = cute::cast_smem_ptr_to_uint(bar);
      asm volatile(
          "{\n\t.reg .b32 r;\n\t"
          "mapa.shared::cluster.u32 r, %0, 0;\n\t"
          "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [r];\n\t}" ::"r"(remote)
          : "memory");
      return false;
    }
    // One tile per cluster (the launch's grid), so the barrier's first phase is this tile's.
    const uint32_t addr = cute::cast_smem_ptr_to_uint(bar);
    uint32_t done = 0;
    while (!done) {
      asm volatile(
          "{\n\t.reg .pred p;\n\t"
          "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], 0;\n\t"
          "selp.u32 %0, 1, 0, p;\n\t}"
          : "=r"(done)
          : "r"(addr)
          : "memory");
    }
#pragma unroll 1
    for (int s = 1; s < kSplits; ++s) {
      const float4* src = slot(p, t.unit, s);
#pragma unroll
      for (int v = 0; v < kVecs; ++v) {
        const float4 x = __ldcg(src + v * kMathThreads + thread);
        acc[4 * v] += x.x, acc[4 * v + 1] += x.y, acc[4 * v + 2] += x.z, acc[4 * v + 3] += x.w;
      }
    }
    return true;
  }
};

}  // namespace deepgemm_ops::kernels
