// PTX wrappers for the SM90 features the kernels use: mbarriers, TMA, cp.async, wgmma, stmatrix, clusters, setmaxnreg.
//
// Why our own and not CUTLASS/CuTe's: any one CuTe arch header costs nvcc 0.5-1.7 s of parsing (cluster_sm90.hpp
// alone doubles the time of an empty kernel; barrier.h pulls in the SM100 headers), and every kernel is compiled cold
// on the user's first call of a shape. With this header a kernel compiles in well under half the time (docs/PERF.md,
// "cold JIT"). Each wrapper is one or two PTX instructions (ISA 8.0, sm_90a) with the operand constraints they need.
#pragma once
#include <cuda.h>  // CUtensorMap (the tensor maps arrive as __grid_constant__ kernel arguments)
#include <stdint.h>

namespace deepgemm_ops::kernels::ptx {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// --- mbarrier (8 bytes of shared memory) ---

struct Mbarrier {
  uint64_t state;

  __device__ uint32_t addr() const { return smem_addr(this); }

  __device__ void init(uint32_t arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(addr()), "r"(arrivals) : "memory");
  }
  __device__ void arrive() {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(addr()) : "memory");
  }
  // Arrives on the barrier at the same offset in CTA `cta` of the cluster (mapa translates the address).
  __device__ void arrive_cluster(uint32_t cta) {
    asm volatile(
        "{\n\t.reg .b32 remote;\n\t"
        "mapa.shared::cluster.u32 remote, %0, %1;\n\t"
        "mbarrier.arrive.shared::cluster.b64 _, [remote];\n\t}" ::"r"(addr()),
        "r"(cta)
        : "memory");
  }
  // One arrival that also announces `bytes` of asynchronous (TMA) transfer the phase must wait for.
  __device__ void arrive_expect_tx(uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(addr()), "r"(bytes) : "memory");
  }
  // Blocks until the phase with parity `phase` has completed. The "memory" clobber keeps the compiler from moving
  // shared-memory reads of the stage above the wait.
  __device__ void wait(uint32_t phase) {
    uint32_t done;
    do {
      asm volatile(
          "{\n\t.reg .pred p;\n\t"
          "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2, %3;\n\t"
          "selp.u32 %0, 1, 0, p;\n\t}"
          : "=r"(done)
          : "r"(addr()), "r"(phase), "r"(kSuspendHintNs)
          : "memory");
    } while (!done);
  }
  // try_wait may suspend the thread up to this long before it reports "not yet" (a hint; the loop retries).
  static constexpr uint32_t kSuspendHintNs = 10'000'000;
};
static_assert(sizeof(Mbarrier) == 8, "an mbarrier is one 64-bit shared-memory word");

// Makes mbarrier.init visible to the other threads of the cluster (and to the async proxy) before they use it.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// --- cp.async (Ampere-style) ---

// 4-byte copy global -> shared; with pred false the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_4_zfill(void* dst, const void* src, bool pred) {
  asm volatile("cp.async.ca.shared.global.L2::128B [%0], [%1], 4, %2;" ::"r"(smem_addr(dst)), "l"(src),
               "r"(pred ? 4 : 0)
               : "memory");
}

// Arrives on `bar` once every cp.async this thread issued before has landed (noinc: the arrival is one of the
// barrier's initial count).
__device__ __forceinline__ void cp_async_arrive_noinc(Mbarrier& bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar.addr()) : "memory");
}

// --- TMA (cp.async.bulk.tensor) ---

// The L2 policy the loads pass: evict-normal, i.e. the default, spelled out as the cache-hint operand.
constexpr uint64_t kL2EvictNormal = 0x1000000000000000ull;

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Box at (x = inner coordinate, y) of `map` -> dst; completion is counted on bar in bytes.
__device__ __forceinline__ void tma_load_2d(const CUtensorMap* map, Mbarrier& bar, void* dst, int x, int y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%3, %4}], [%2], %5;" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar.addr()), "r"(x), "r"(y), "l"(kL2EvictNormal)
      : "memory");
}

// Same, written to the same shared-memory offset of every CTA in cta_mask, each counting on its own bar.
__device__ __forceinline__ void tma_load_2d_multicast(const CUtensorMap* map, Mbarrier& bar, void* dst, int x, int y,
                                                      uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster.L2::cache_hint"
      " [%0], [%1, {%4, %5}], [%2], %3, %6;" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar.addr()), "h"(cta_mask), "r"(x), "r"(y), "l"(kL2EvictNormal)
      : "memory");
}

__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, const void* src, int x, int y) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smem_addr(src)), "r"(x), "r"(y)
               : "memory");
}

__device__ __forceinline__ void tma_store_3d(const CUtensorMap* map, const void* src, int x, int y, int z) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smem_addr(src)), "r"(x), "r"(y), "r"(z)
               : "memory");
}

// Closes the group of bulk stores issued so far by this thread.
__device__ __forceinline__ void tma_store_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }

// Waits until at most kPending store groups of this thread still have to read their shared-memory source.
template <int kPending>
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(kPending) : "memory");
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy (TMA) reads of them.
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// --- wgmma ---

// Before the first wgmma of a batch: orders earlier register / shared-memory accesses with the async wgmma reads.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}
// Pins an accumulator register at this point of the instruction order: the compiler may not move reads or writes of
// it across, so nothing touches it while a wgmma that owns it is in flight.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Shared-memory matrix descriptor of a K-major tile with 128-byte rows and the 128B swizzle: start address and the
// 1024-byte stride between 8-row core-matrix groups, both in 16-byte units; the leading-byte offset is unused for
// swizzled K-major layouts; bits 62-63 = 1 selects SWIZZLE_128B.
__device__ __forceinline__ uint64_t kmajor_sw128_desc(const void* tile) {
  const uint64_t start = (smem_addr(tile) >> 4) & 0x3FFF;
  const uint64_t stride = 1024 >> 4;
  return start | (stride << 32) | (1ull << 62);
}

// wgmma.mma_async m64nNk32, e4m3 x e4m3 -> f32, A and B from shared memory; d has N / 2 registers per thread.
// One specialisation per N: the instruction names every accumulator register, so its asm cannot be written once for
// all N. The generated kernel source defines the one for its BLOCK_N (_codegen.wgmma_source).
template <int N>
struct Fp8Wgmma;

// --- stmatrix, clusters, named barriers, setmaxnreg ---

// Four 8x8 b16 matrices from the warp's registers (r_i = matrix i's row lane / 4, columns 2 (lane % 4) + {0, 1}) to
// the rows whose addresses lanes 8i .. 8i + 7 give.
__device__ __forceinline__ void stmatrix_x4(void* dst, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.x4.m8n8.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem_addr(dst)), "r"(r0),
               "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// Every thread of every CTA in the cluster; release/acquire, so barrier inits and shared writes before it are seen.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
}

// Hardware barrier `id` (1..15; 0 is __syncthreads') over `threads` threads, a multiple of 32.
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Per-warpgroup register budget (every thread of the warpgroup executes it).
template <uint32_t kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}
template <uint32_t kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}

}  // namespace deepgemm_ops::kernels::ptx
