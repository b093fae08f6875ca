// The SM90 primitives the kernels use, from CuTe/CUTLASS: wgmma atoms and fences (cute/arch/mma_sm90_gmma.hpp), the
// shared-memory matrix descriptor (mma_sm90_desc.hpp), TMA loads / multicast / stores and descriptor prefetch
// (copy_sm90_tma.hpp, copy_sm90_desc.hpp), stmatrix (copy_sm90.hpp), cp.async (copy_sm80.hpp), cluster rank and sync
// (cluster_sm90.hpp), transaction mbarriers and named barriers (cutlass/arch/barrier.h), setmaxnreg
// (cutlass/arch/reg_reconfig.h). What is here besides the includes is what CuTe does not offer in the form we need.
//
// The wgmma atom of a kernel (cute::SM90::GMMA::MMA_64x<N>x32_F32E4M3E4M3_SS_TN) is named by the generated source:
// N that are not powers of two or 96 / 192 live in mma_sm90_gmma_ext.hpp, which only those kernels include (it
// costs ~0.35 s of every compile).
#pragma once
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/copy_sm90.hpp>
#include <cute/arch/copy_sm90_desc.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/numeric/integer_sequence.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

namespace deepgemm_ops::kernels {

using Barrier = cutlass::arch::ClusterTransactionBarrier;  // one 64-bit mbarrier in shared memory
using TmaDescriptor = cute::TmaDescriptor;                   // CUtensorMap (its bytes come from the host)

// The loads pass evict-normal, i.e. the default L2 policy, spelled out as the cache-hint operand.
constexpr uint64_t kL2EvictNormal = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);

// Blocks until the phase with parity `phase` of `bar` has completed. The retry loop is C++ around CUTLASS's try_wait
// (its wait() loops inside one asm statement: the producer's k-loop then looked branch-free to the compiler, which
// peeled it into dozens of TMA issues and spilled the 40-register producer). The empty asm with a "memory" clobber
// keeps the compiler from hoisting plain shared-memory reads of the stage (the scales) above the wait; CUTLASS's asm
// has no such clobber.
__device__ __forceinline__ void wait_barrier(uint64_t* bar, uint32_t phase) {
  while (!Barrier::try_wait(bar, phase)) {
  }
  asm volatile("" ::: "memory");
}

// The shared::cluster address of `local` (a shared-memory address of this CTA) in CTA `cta` of the cluster (mapa).
// Offsets are kept, so one mapping serves an array of barriers.
__device__ __forceinline__ uint32_t cluster_smem_addr(const void* local, uint32_t cta) {
  uint32_t addr;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(addr) : "r"(cute::cast_smem_ptr_to_uint(local)), "r"(cta));
  return addr;
}

// One arrival on the mbarrier at shared::cluster address `addr` (cluster_smem_addr), possibly in another CTA.
__device__ __forceinline__ void arrive_cluster(uint32_t addr) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(addr) : "memory");
}

// The address-independent fields fold to a constant. The start address is the same in every lane of the warp; reading
// it through a shuffle lets the compiler know, so the descriptors stay in uniform registers (a per-lane value is
// moved there, R2UR, before every wgmma).
__device__ __forceinline__ uint64_t kmajor_sw128_desc(const void* tile) {
  cute::GmmaDescriptor desc;
  desc.bitfield.stride_byte_offset_ = 1024 >> 4;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  desc.reg32_[0] = __shfl_sync(0xffffffff, (cute::cast_smem_ptr_to_uint(tile) >> 4) & 0x3FFF, 0);
  return desc.desc_;
}

// Moves a descriptor's start address by `bytes` (a multiple of 16) with a 32-bit add on the word that holds the
// 14-bit address field (shared-memory addresses stay below 2^18, so it never carries out of the field); a 64-bit add
// costs an add-with-carry pair and register moves per wgmma.
__device__ __forceinline__ uint64_t advance_desc(uint64_t desc, uint32_t bytes) {
  cute::GmmaDescriptor d(desc);
  d.reg32_[0] += bytes >> 4;
  return d.desc_;
}

// d[0 .. N/2) (+)= A * B for one m64nNk32 wgmma of atom `Wgmma`: CuTe's atoms take every accumulator register as a
// separate argument; this spreads the array over them. accumulate = false overwrites d.
template <class Wgmma, int kRegs, size_t... I>
__device__ __forceinline__ void wgmma_fma(uint64_t desc_a, uint64_t desc_b, float (&d)[kRegs], bool accumulate,
                                          cute::index_sequence<I...>) {
  Wgmma::fma(desc_a, desc_b, d[I]..., accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}
template <class Wgmma, int kRegs>
__device__ __forceinline__ void wgmma_fma(uint64_t desc_a, uint64_t desc_b, float (&d)[kRegs], bool accumulate) {
  wgmma_fma<Wgmma>(desc_a, desc_b, d, accumulate, cute::make_index_sequence<kRegs>{});
}

}  // namespace deepgemm_ops::kernels
