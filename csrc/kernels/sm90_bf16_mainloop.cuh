// BF16 main loop: shared-memory layout, the TMA producer and the wgmma consumer (no promotion: wgmma accumulates in
// FP32 registers over all of K).
//
// Per stage s the producer fills A[s] (BLOCK_M x 64 k) and B[s] (BLOCK_N x 64 k), 128B-swizzled, in the major order
// the operand has in global memory, so no transpose pass is needed (wgmma reads 16-bit operands of either order):
//   K-major:  rows of 64 k = 128 bytes; one TMA box {64 k, rows}. 8-row swizzle atoms 1024 bytes apart (SBO).
//   MN-major: rows/64 chunks, each [64 k][64 mn] (one TMA box {64 mn, 64 k}); inside a chunk 8-k-row swizzle atoms
//             1024 bytes apart (SBO), chunks 64 * 64 * 2 = 8192 bytes apart (LBO).
// full[s] completes when the TMA bytes have landed; empty[s] when every math warp has finished reading the stage.
#pragma once
#include "params.h"
#include "sm90_mainloop.cuh"  // PipelineState
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"

namespace deepgemm_ops::kernels {

using GmmaMajor = cute::SM90::GMMA::Major;

constexpr int kBf16BlockK = 64;  // one 128-byte swizzle row of bf16
constexpr int kBf16WgmmaK = 16;
constexpr int kMnAtom = 64;  // MN-major: bf16 elements per 128-byte swizzle row

// Byte offsets inside dynamic shared memory; _bf16_heuristics.bf16_smem_bytes() mirrors total(). The epilogue's
// staging tile (staging_bytes(), sm90_epilogue.cuh) comes first, as in the FP8 layout.
template <int kBlockM, int kBlockN, int kStages, int kStagingBytes>
struct Bf16SmemLayout {
  static constexpr int kABytes = kBlockM * kBf16BlockK * 2;
  static constexpr int kBBytes = kBlockN * kBf16BlockK * 2;
  static constexpr int staging = 0;
  static constexpr int a = staging + kStagingBytes;
  static constexpr int b = a + kStages * kABytes;
  static constexpr int full_bar = b + kStages * kBBytes;
  static constexpr int empty_bar = full_bar + kStages * 8;
  static constexpr int total = empty_bar + kStages * 8;
  static_assert(kStagingBytes % 1024 == 0 && kABytes % 1024 == 0 && kBBytes % 1024 == 0,
                "128B-swizzled tiles must stay 1024-byte aligned");
};

// One operand tile of kRows (M or N) x 64 k in shared memory, in major order kMajor.
template <GmmaMajor kMajor, int kRows>
struct Bf16Tile {
  static constexpr bool kMnMajor = kMajor == GmmaMajor::MN;
  static_assert(!kMnMajor || kRows % kMnAtom == 0, "an MN-major tile is made of whole 64-wide swizzle chunks");
  static constexpr int kChunkBytes = kBf16BlockK * kMnAtom * 2;  // MN-major: one [64 k][64 mn] chunk
  // Start address move per k16 step: 16 elements of a 128-byte row (K-major), 16 rows of 128 bytes (MN-major).
  static constexpr uint32_t kKStepBytes = kMnMajor ? kBf16WgmmaK * 128 : kBf16WgmmaK * 2;

  // Byte offset of row `row` (a multiple of 64) of the tile: where a warpgroup's 64-row slice of A starts.
  __device__ static constexpr int row_offset(int row) { return kMnMajor ? row / kMnAtom * kChunkBytes : row * 128; }

  // The wgmma descriptor of the tile's k16 slice 0 from `tile` on. The address-independent fields fold to constants;
  // the start address goes through a shuffle so the descriptor stays in uniform registers (sm90_primitives.cuh).
  __device__ static uint64_t desc(const uint8_t* tile) {
    if constexpr (kMnMajor) {
      cute::GmmaDescriptor d;
      d.bitfield.leading_byte_offset_ = kChunkBytes >> 4;  // next 64 mn elements
      d.bitfield.stride_byte_offset_ = 1024 >> 4;          // next 8 k rows
      d.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
      d.reg32_[0] |= __shfl_sync(0xffffffff, (cute::cast_smem_ptr_to_uint(tile) >> 4) & 0x3FFF, 0);
      return d.desc_;
    } else {
      return kmajor_sw128_desc(tile);
    }
  }

  // TMA of the tile at (k0, row0) of the operand: a K-major map is {K, rows}, an MN-major one {rows, K}.
  __device__ static void load(const TmaDescriptor& tma, uint64_t* bar, uint8_t* dst, int k0, int row0) {
    if constexpr (kMnMajor) {
#pragma unroll
      for (int c = 0; c < kRows / kMnAtom; ++c) {
        cute::SM90_TMA_LOAD_2D::copy(&tma, bar, kL2EvictNormal, dst + c * kChunkBytes, row0 + c * kMnAtom, k0);
      }
    } else {
      cute::SM90_TMA_LOAD_2D::copy(&tma, bar, kL2EvictNormal, dst, k0, row0);
    }
  }
};

// Wgmma: the CuTe atom m64 x BLOCK_N x k16, bf16 x bf16 -> f32, A and B from shared memory in majors kMajorA/B.
template <int kN, int kK, int kBlockM, int kBlockN, int kStages, GmmaMajor kMajorA, GmmaMajor kMajorB,
          int kStagingBytes, class Wgmma>
struct Bf16Mainloop {
  using Layout = Bf16SmemLayout<kBlockM, kBlockN, kStages, kStagingBytes>;
  using TileA = Bf16Tile<kMajorA, kBlockM>;
  using TileB = Bf16Tile<kMajorB, kBlockN>;
  static constexpr int kNumKBlocks = (kK + kBf16BlockK - 1) / kBf16BlockK;
  static constexpr int kNumMathWarpgroups = kBlockM / 64;
  // Out-of-bounds box elements (M, N and K tails) are zero-filled and count towards the transaction bytes.
  static constexpr uint32_t kTmaBytes = Layout::kABytes + Layout::kBBytes;

  uint8_t* smem;

  __device__ uint64_t* full(int s) const { return reinterpret_cast<uint64_t*>(smem + Layout::full_bar) + s; }
  __device__ uint64_t* empty(int s) const { return reinterpret_cast<uint64_t*>(smem + Layout::empty_bar) + s; }
  __device__ uint8_t* a_tile(int s) const { return smem + Layout::a + s * Layout::kABytes; }
  __device__ uint8_t* b_tile(int s) const { return smem + Layout::b + s * Layout::kBBytes; }

  // One thread.
  __device__ void init_barriers() const {
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(full(s), 1);
      Barrier::init(empty(s), kNumMathWarpgroups * 4);  // one arrival per math warp
    }
    cutlass::arch::fence_barrier_init();
  }

  // TMA issue for one tile; run by a single thread. Grouped B is [G * N, K] (K-major only).
  __device__ void produce(const Tile& t, PipelineState<kStages>& st, const TmaDescriptor& tma_a,
                          const TmaDescriptor& tma_b) const {
    const int b_row = t.group * kN + t.n_block * kBlockN;
#pragma unroll 1
    for (int kb = 0; kb < kNumKBlocks; ++kb, st.advance()) {
      wait_barrier(empty(st.stage), st.phase ^ 1);
      uint64_t* bar = full(st.stage);
      Barrier::arrive_and_expect_tx(bar, kTmaBytes);
      TileA::load(tma_a, bar, a_tile(st.stage), kb * kBf16BlockK, t.a_row);
      TileB::load(tma_b, bar, b_tile(st.stage), kb * kBf16BlockK, b_row);
    }
  }

  // One math warpgroup computes its 64 x BLOCK_N slice of the tile into acc (wgmma m64nN accumulator layout, see
  // sm90_mainloop.cuh). Each k-block's wgmmas are drained before its stage is released; the other math warpgroup
  // (BLOCK_M = 128) keeps the tensor cores busy meanwhile.
  __device__ void consume(PipelineState<kStages>& st, int math_wg, int lane, float (&acc)[kBlockN / 2]) const {
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.0f;
    const int a_offset = TileA::row_offset(math_wg * 64);
#pragma unroll 1
    for (int kb = 0; kb < kNumKBlocks; ++kb, st.advance()) {
      wait_barrier(full(st.stage), st.phase);
      const uint64_t desc_a = TileA::desc(a_tile(st.stage) + a_offset);
      const uint64_t desc_b = TileB::desc(b_tile(st.stage));
#pragma unroll
      for (int i = 0; i < kBlockN / 2; ++i) cute::warpgroup_fence_operand(acc[i]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int kk = 0; kk < kBf16BlockK / kBf16WgmmaK; ++kk) {
        wgmma_fma<Wgmma>(advance_desc(desc_a, kk * TileA::kKStepBytes), advance_desc(desc_b, kk * TileB::kKStepBytes),
                         acc, true);
      }
      cute::warpgroup_commit_batch();
#pragma unroll
      for (int i = 0; i < kBlockN / 2; ++i) cute::warpgroup_fence_operand(acc[i]);
      cute::warpgroup_wait<0>();
      release(st.stage, lane);
    }
  }

  // One math warp is done with stage s.
  __device__ void release(int s, int lane) const {
    __syncwarp();
    if (lane == 0) Barrier::arrive(empty(s));
  }
};

}  // namespace deepgemm_ops::kernels
