// Main loop: shared-memory layout, the TMA producer and the wgmma consumer of the multi-stage pipeline.
//
// Per stage s the producer fills A[s] (BLOCK_M x 128 fp8, 128B swizzle), B[s] (BLOCK_N x 128), SFA[s] (BLOCK_M fp32
// scales of this k-block, by TMA) and SFB[s] (the B scales of this k-block, written by plain cp.async from one producer
// warp, because sfb is K-major and its rows need not be 16-byte aligned for TMA): with the 1x128 recipe one per column
// of the tile; with the 128x128 recipe only two, those of the 128-column blocks the tile touches (see kSfbGcd).
// full[s] completes when the TMA bytes have landed and the 32 SFB lanes have arrived; empty[s] when every math warp
// has finished reading the stage (every local math lane arrives).
#pragma once
#include "params.h"
#include "sm90_primitives.cuh"
#include "sm90_scheduler.cuh"

namespace deepgemm_ops::kernels {

constexpr int kBlockK = 128;
constexpr int kWgmmaK = 32;
constexpr int kNumSfbLoaderLanes = 32;

constexpr int align_up(int x, int a) { return (x + a - 1) / a * a; }

// Byte offsets inside dynamic shared memory. _heuristics.smem_bytes() mirrors total(); the generated source
// static_asserts that the two agree. The epilogue's staging tile (staging_bytes(), sm90_epilogue.cuh) comes first.
// Split-K kernels (kSplitBarrier) add the barrier on which split 0 waits for the other splits' partials.
template <int kBlockM, int kBlockN, int kStages, int kStagingBytes, bool kSplitBarrier = false>
struct SmemLayout {
  static constexpr int kABytes = kBlockM * kBlockK;        // one fp8 byte per element, 128 B per row
  static constexpr int kBBytes = kBlockN * kBlockK;
  static constexpr int kSfaBytes = align_up(kBlockM * 4, 128);  // TMA destinations want 128 B alignment
  static constexpr int kSfbBytes = kBlockN * 4;  // the 128x128 recipe uses the first 8 bytes
  static constexpr int staging = 0;
  static constexpr int a = staging + kStagingBytes;
  static constexpr int b = a + kStages * kABytes;
  static constexpr int sfa = b + kStages * kBBytes;
  static constexpr int sfb = sfa + kStages * kSfaBytes;
  static constexpr int full_bar = sfb + kStages * kSfbBytes;
  static constexpr int empty_bar = full_bar + kStages * 8;
  static constexpr int split_bar = empty_bar + kStages * 8;
  static constexpr int total = split_bar + (kSplitBarrier ? 8 : 0);
  static_assert(kStagingBytes % 1024 == 0 && kABytes % 1024 == 0 && kBBytes % 1024 == 0,
                "128B-swizzled tiles must stay 1024-byte aligned");
  static_assert(kSfbBytes % 8 == 0, "barriers need 8-byte alignment");
};

// Stage index + mbarrier parity, advanced in lock step by every role.
template <int kStages>
struct PipelineState {
  int stage = 0;
  uint32_t phase = 0;
  __device__ void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// kCluster == 2: the two CTAs of a cluster work on tiles that share one operand tile — the same n-block (64/128-row
// normal tiles: B is shared) or, for 256-row tiles and m-grouped GEMMs, the same m-block (A is shared;
// cluster_multicasts_a). Each CTA loads half of the shared tile's rows and multicasts it into both CTAs' stage, so a
// stage may be refilled only when the consumers of both CTAs released it: empty[s] counts every local math lane and
// one arrival per math warp of the peer (see release()).
// Wgmma: the CuTe atom for m64 x BLOCK_N x k32, e4m3 x e4m3 -> f32, A and B from shared memory.
// kSplits > 1 (split-K): a tile's k-blocks are its split's, from k-block t.sfa_kb0 on (the scheduler's).
template <int kN, int kK, int kBlockM, int kBlockN, int kStages, GemmType kType, SfbRecipe kRecipe, int kStagingBytes,
          int kCluster, int kSplits, class Wgmma>
struct Mainloop {
  static constexpr bool kMulticastA = kCluster > 1 && cluster_multicasts_a(kBlockM, static_cast<int>(kType));
  static_assert(kCluster == 1 || (kCluster == 2 && (kMulticastA || kBlockN % 16 == 0)),
                "multicast halves of B must be whole 8-row swizzle atoms: BLOCK_N % 16 == 0");
  using Layout = SmemLayout<kBlockM, kBlockN, kStages, kStagingBytes, (kSplits > 1)>;
  static constexpr int kNumKBlocks = (kK + kBlockK - 1) / kBlockK;
  static constexpr int kNumMathWarpgroups = math_warpgroups(kBlockM);
  static constexpr int kWaves = kBlockM / 64 / kNumMathWarpgroups;  // 64-row slices per math warpgroup
  static constexpr uint32_t kTmaBytes = Layout::kABytes + Layout::kBBytes + kBlockM * 4;

  uint8_t* smem;
  // kCluster > 1: empty[0] of the peer CTA as a shared::cluster address (peer_empty_base()), mapped once: a mapping
  // per release cost every k-block a special-register read and its address arithmetic.
  uint32_t peer_empty = 0;
  // The wgmma descriptors of stage 0's A and B tiles, made once: a stage's are these moved by whole tiles
  // (advance_desc), where making each from its address cost a shift and a mask per operand and wave every k-block.
  uint64_t desc_a0 = 0, desc_b0 = 0;

  // The Mainloop of this CTA's shared memory (every role; the math warps use the descriptors).
  __device__ static Mainloop make(uint8_t* smem) {
    return {smem, peer_empty_base(smem), kmajor_sw128_desc(smem + Layout::a), kmajor_sw128_desc(smem + Layout::b)};
  }

  __device__ static uint32_t peer_empty_base(uint8_t* smem) {
    if constexpr (kCluster > 1) {
      return cluster_smem_addr(smem + Layout::empty_bar, static_cast<uint32_t>(cute::block_rank_in_cluster()) ^ 1u);
    } else {
      return 0;
    }
  }

  // A tile's k-blocks: K's (compile-time), or a k-grouped tile's from ks, or a split's (t.num_k_blocks, from k-block
  // t.sfa_kb0 on). Every role writes the count inline as kRangedK ? t.num_k_blocks : kNumKBlocks: behind a helper
  // function, ptxas no longer saw the constant and the math warps' main loop lost its uniform registers (+30%
  // instructions).
  static constexpr bool kKGrouped = kType == GemmType::KGrouped;
  static constexpr bool kRangedK = kKGrouped || kSplits > 1;

  // Contiguous 256-row tiles whose halves hold two groups (Tile::second_group): the k-blocks run twice, with the
  // lower half's B, then the upper half's. Each math warpgroup's 128 rows are one half: it computes in its half's
  // pass and passes the other's stages through. Rare (a group boundary at an odd multiple of 128 rows), and the
  // common tile keeps the 256-row loop.
  static constexpr bool kTwoPass = kType == GemmType::Contiguous && kBlockM == 256;
  __device__ static int num_passes(const Tile& t) { return kTwoPass && t.second_group >= 0 ? 2 : 1; }
  __device__ static int pass_group(const Tile& t, int pass) { return pass == 0 ? t.group : t.second_group; }

  // The mbarrier words; Barrier's static members operate on them.
  __device__ uint64_t* full(int s) const { return reinterpret_cast<uint64_t*>(smem + Layout::full_bar) + s; }
  __device__ uint64_t* empty(int s) const { return reinterpret_cast<uint64_t*>(smem + Layout::empty_bar) + s; }
  __device__ uint8_t* a_tile(int s) const { return smem + Layout::a + s * Layout::kABytes; }
  __device__ uint8_t* b_tile(int s) const { return smem + Layout::b + s * Layout::kBBytes; }
  __device__ float* sfa_stage(int s) const { return reinterpret_cast<float*>(smem + Layout::sfa + s * Layout::kSfaBytes); }
  __device__ float* sfb_stage(int s) const { return reinterpret_cast<float*>(smem + Layout::sfb + s * Layout::kSfbBytes); }

  // One thread.
  __device__ void init_barriers() const {
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(full(s), 1 + kNumSfbLoaderLanes);
      Barrier::init(empty(s), kNumMathWarpgroups * 4 * (32 + kCluster - 1));  // every local math lane + the peer's warps
    }
    cutlass::arch::fence_barrier_init();
  }

  // TMA issue for one tile; run by a single thread.
  __device__ void produce_tma(const Tile& t, PipelineState<kStages>& st, const TmaDescriptor& tma_a,
                              const TmaDescriptor& tma_b, const TmaDescriptor& tma_sfa) const {
    for (int pass = 0; pass < num_passes(t); ++pass) produce_tma_pass(t, pass_group(t, pass), st, tma_a, tma_b, tma_sfa);
  }
  __device__ void produce_tma_pass(const Tile& t, int group, PipelineState<kStages>& st, const TmaDescriptor& tma_a,
                                   const TmaDescriptor& tma_b, const TmaDescriptor& tma_sfa) const {
    const int b_row = (kType == GemmType::KGrouped ? 0 : group * kN) + t.n_block * kBlockN;  // k-grouped: one B
    const int sfa_col = t.m_block * kBlockM;
    const int kb0 = kRangedK ? t.sfa_kb0 : 0, num_kb = kRangedK ? t.num_k_blocks : kNumKBlocks;
    [[maybe_unused]] const int rank = kCluster > 1 ? static_cast<int>(cute::block_rank_in_cluster()) : 0;
    constexpr int kARows = kBlockM / kCluster;  // rows of a shared A tile this CTA loads (and multicasts)
    constexpr int kBRows = kBlockN / kCluster;  // the same for a shared B tile
    constexpr auto kBothCtas = static_cast<uint16_t>((1 << kCluster) - 1);
#pragma unroll 1
    for (int kb = 0; kb < num_kb; ++kb, st.advance()) {
      wait_barrier(empty(st.stage), st.phase ^ 1);
      uint64_t* bar = full(st.stage);
      const int k = (kb0 + kb) * kBlockK;
      Barrier::arrive_and_expect_tx(bar, kTmaBytes);
      if constexpr (kMulticastA) {
        cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&tma_a, bar, kBothCtas, kL2EvictNormal,
                                               a_tile(st.stage) + rank * kARows * kBlockK, k,
                                               t.a_row + rank * kARows);
      } else {
        cute::SM90_TMA_LOAD_2D::copy(&tma_a, bar, kL2EvictNormal, a_tile(st.stage), k, t.a_row);
      }
      if constexpr (kCluster == 1 || kMulticastA) {
        cute::SM90_TMA_LOAD_2D::copy(&tma_b, bar, kL2EvictNormal, b_tile(st.stage), k, b_row);
      } else {
        cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&tma_b, bar, kBothCtas, kL2EvictNormal,
                                               b_tile(st.stage) + rank * kBRows * kBlockK, k,
                                               b_row + rank * kBRows);
      }
      cute::SM90_TMA_LOAD_2D::copy(&tma_sfa, bar, kL2EvictNormal, sfa_stage(st.stage), sfa_col, t.sfa_kb0 + kb);
    }
  }

  // kCluster > 1, after the producer's last tile: no CTA may exit while its peer can still arrive on its empty
  // barriers, so the producer waits until every stage is released once more, the peer's arrivals included.
  __device__ void wait_last_releases(PipelineState<kStages>& st) const {
    for (int s = 0; s < kStages; ++s, st.advance()) wait_barrier(empty(st.stage), st.phase ^ 1);
  }

  // 1x128 recipe: a stage's column scales in lane order. A lane promotes the columns 8j + 2q + {0, 1} (q = lane % 4)
  // of every 8-column group j; per 16 columns (groups j, j + 1, j even) they are stored as q's four scales side by
  // side: slot 8j + 4q + 2(j % 2) + {0, 1}. One 16-byte load serves two groups and the four lanes of a quad read 64
  // contiguous bytes (a layout with q's scales BLOCK_N / 4 apart put them in the same banks: a 4-way conflict on
  // every load, wgrad GEMM 1.5x slower, docs/PERF.md). BLOCK_N % 16 == 0 keeps the loads aligned; other widths keep
  // column order and 8-byte loads. Not for k-grouped kernels: with their run-time K, the four-register loads made
  // ptxas spill.
  static constexpr bool kLaneOrderSfb = kRecipe == SfbRecipe::Row1x128 && kBlockN % 16 == 0 && !kKGrouped;
  __device__ static int sfb_slot(int col) {
    return kLaneOrderSfb ? col / 16 * 16 + col % 8 / 2 * 4 + col / 8 % 2 * 2 + col % 2 : col;
  }

  // B scales of one tile; run by a full warp. cp.async copies each lane's scales into the stage and
  // cp.async.mbarrier.arrive.noinc counts the lane's arrival on full[s] once they have landed, so the warp never
  // waits on global-memory latency and can run as far ahead as the free stages allow. 1x128: lane l copies the scales
  // of columns l, l + 32, ...; 128x128: lanes 0 and 1 copy the scales of the tile's first 128-column block and the
  // next one. Scales past N are zero-filled (their columns are never stored). K-grouped: sfb is [N, p.k_blocks], the
  // tile reads its group's k-blocks of it.
  __device__ void produce_sfb(const Tile& t, PipelineState<kStages>& st, const Fp8GemmParams& p, int lane) const {
    for (int pass = 0; pass < num_passes(t); ++pass) produce_sfb_pass(t, pass_group(t, pass), st, p, lane);
  }
  __device__ void produce_sfb_pass(const Tile& t, int group, PipelineState<kStages>& st, const Fp8GemmParams& p,
                                   int lane) const {
    constexpr bool kBlockScales = kRecipe == SfbRecipe::Block128x128;
    constexpr int kPerLane = kBlockScales ? 1 : (kBlockN + kNumSfbLoaderLanes - 1) / kNumSfbLoaderLanes;
    constexpr int kSfbRows = kBlockScales ? ceil_div(kN, kScaleBlock) : kN;
    const int64_t row_stride = kKGrouped ? p.k_blocks : kNumKBlocks;
    const float* group_sfb =
        p.sfb + (kRangedK ? t.sfa_kb0 : static_cast<int64_t>(group) * kSfbRows * kNumKBlocks);
    const int num_kb = kRangedK ? t.num_k_blocks : kNumKBlocks;
    int src_row[kPerLane];
    bool copies[kPerLane], in_range[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int col = lane + i * kNumSfbLoaderLanes;
      const int row = kBlockScales ? t.n_block * kBlockN / 128 + lane : t.n_block * kBlockN + col;
      copies[i] = kBlockScales ? lane < 2 : col < kBlockN;
      in_range[i] = row < kSfbRows;
      src_row[i] = in_range[i] ? row : 0;
    }
#pragma unroll 1
    for (int kb = 0; kb < num_kb; ++kb, st.advance()) {
      wait_barrier(empty(st.stage), st.phase ^ 1);
      float* dst = sfb_stage(st.stage);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        if (copies[i]) {
          cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<float>::copy(group_sfb[src_row[i] * row_stride + kb],
                                                             dst[sfb_slot(lane + i * kNumSfbLoaderLanes)], in_range[i]);
        }
      }
      cutlass::arch::cpasync_barrier_arrive_noinc(full(st.stage));
    }
  }

  // --- ping-pong main loop (BLOCK_N <= 128: three BLOCK_N / 2 register arrays fit) ---
  // The single-buffer loop below waits for a k-block's wgmmas to drain before promoting them, so each warpgroup
  // leaves the tensor cores with nothing queued while it promotes and re-issues. Here k-block kb + 1 is issued into
  // the other partial buffer before k-block kb is promoted (wgmma.wait_group 1), so every warpgroup always has a batch
  // in flight.
  static constexpr bool kPingPong = kBlockN <= 128;

  // Descriptors moved from stage 0's (desc_a0/desc_b0) where that is shorter in SASS: the loops with 128x128 B scales
  // of normal and contiguous GEMMs (-3 to -6 instructions per k-block). Elsewhere the stage index is not in uniform
  // registers (masked and k-grouped walks) or registers are short (1x128 scales), and making each descriptor from the
  // stage's address is 2-7 instructions shorter.
  static constexpr bool kDescFromBase =
      kRecipe == SfbRecipe::Block128x128 && (kType == GemmType::Normal || kType == GemmType::Contiguous);

  // Issues the 4 wgmmas of stage s's k-block for the tile's 64-row slice `slice` into p (p = the raw FP8 products) as
  // one committed batch.
  __device__ void issue_kblock(int s, int slice, float (&p)[kBlockN / 2]) const {
    uint64_t desc_a, desc_b;
    if constexpr (kDescFromBase) {
      desc_a = advance_desc(desc_a0, static_cast<uint32_t>(s * Layout::kABytes + slice * 64 * kBlockK));
      desc_b = advance_desc(desc_b0, static_cast<uint32_t>(s * Layout::kBBytes));
    } else {
      desc_a = kmajor_sw128_desc(a_tile(s) + slice * 64 * kBlockK);
      desc_b = kmajor_sw128_desc(b_tile(s));
    }
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) cute::warpgroup_fence_operand(p[i]);
    cute::warpgroup_arrive();
#pragma unroll
    for (int kk = 0; kk < kBlockK / kWgmmaK; ++kk) {
      // Advancing the start address by 32 bytes selects the next K slice inside the swizzled 128-byte rows.
      wgmma_fma<Wgmma>(advance_desc(desc_a, kk * kWgmmaK), advance_desc(desc_b, kk * kWgmmaK), p, kk > 0);
    }
    cute::warpgroup_commit_batch();
  }

  // 128x128 recipe: a tile spans at most two 128-column blocks of B scales. Its columns start at n0 = n_block *
  // BLOCK_N, a multiple of g = gcd(BLOCK_N, 128), so n0 % 128 <= 128 - g and the last column is below 256 when
  // BLOCK_N <= 128 + g. The 8-column groups j < g / 8 always lie in the first block.
  static constexpr int kSfbGcd = kBlockN % 128 == 0 ? 128 : kBlockN % 64 == 0 ? 64 : kBlockN % 32 == 0 ? 32
                                 : kBlockN % 16 == 0 ? 16 : 8;
  static_assert(kRecipe != SfbRecipe::Block128x128 || kBlockN <= 128 + kSfbGcd,
                "with 128x128 B scales a tile must span at most two 128-column blocks: BLOCK_N <= 128 + gcd(BLOCK_N, 128)");

  // First 8-column group of the tile that lies in the second 128-column block (>= kBlockN / 8 when none does).
  __device__ static int second_block_group(int n_block) { return (128 - n_block * kBlockN % 128) / 8; }

  // Calls body(second) with second_block_group(n_block) as a compile-time constant (cute::Int) where it takes few
  // values: a tile starts at a multiple of kSfbGcd inside its 128-column block, so there are 128 / kSfbGcd of them,
  // one main loop each (up to 4; more would multiply the code). A constant folds the per-8-column choice between the
  // two B scales away; at run time it cost a compare and two selects per 8 columns in every k-block. Otherwise (and
  // when no tile reaches a second block, or with 1x128 scales) body gets the run-time value / any.
  template <int kT = 0, class Body>
  __device__ static void with_second_block_group(int n_block, Body&& body) {
    constexpr int kValues = 128 / kSfbGcd;
    if constexpr (kRecipe != SfbRecipe::Block128x128 || 128 % kBlockN == 0) {
      body(cute::Int<kBlockN / 8>{});
    } else if constexpr (kValues > 4) {
      body(second_block_group(n_block));
    } else if constexpr (kT + 1 == kValues) {
      body(cute::Int<(128 - kT * kSfbGcd) / 8>{});
    } else if (n_block * kBlockN % 128 == kT * kSfbGcd) {
      body(cute::Int<(128 - kT * kSfbGcd) / 8>{});
    } else {
      with_second_block_group<kT + 1>(n_block, body);
    }
  }

  // acc += part * sfa * sfb for one k-block: sa0 / sa1 are the A scales of rows r0 and r0 + 8, sfb the stage's B scales
  // (accumulator layout below, above consume_single); `second` from second_block_group().
  __device__ __forceinline__ static void promote(const float (&part)[kBlockN / 2], float sa0, float sa1,
                                                 const float* sfb, int lane, int second, float (&acc)[kBlockN / 2]) {
    if constexpr (kRecipe == SfbRecipe::Block128x128) {
      promote_blocks(part, sa0, sa1, *reinterpret_cast<const float2*>(sfb), second, acc);
    } else if constexpr (kLaneOrderSfb) {
      float4 sbv[kBlockN / 16];
      load_lane_order_sfb(sfb, lane, sbv);
      promote_lane_order(part, sa0, sa1, sbv, acc);
    } else {
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const float2 sb = *reinterpret_cast<const float2*>(sfb + j * 8 + (lane % 4) * 2);
        acc[4 * j + 0] = fmaf(part[4 * j + 0], sa0 * sb.x, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[4 * j + 1], sa0 * sb.y, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[4 * j + 2], sa1 * sb.x, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[4 * j + 3], sa1 * sb.y, acc[4 * j + 3]);
      }
    }
  }

  // 1x128 recipe, lane-ordered layout (kLaneOrderSfb): the lane's BLOCK_N / 4 column scales of a stage, sbv[j / 2]
  // holding those of 8-column groups j and j + 1.
  __device__ __forceinline__ static void load_lane_order_sfb(const float* sfb, int lane, float4 (&sbv)[kBlockN / 16]) {
#pragma unroll
    for (int j = 0; j < kBlockN / 8; j += 2) sbv[j / 2] = *reinterpret_cast<const float4*>(sfb + (lane % 4) * 4 + j * 8);
  }

  // 1x128 recipe, lane-ordered B scales already in registers (load_lane_order_sfb).
  __device__ __forceinline__ static void promote_lane_order(const float (&part)[kBlockN / 2], float sa0, float sa1,
                                                            const float4 (&sbv)[kBlockN / 16],
                                                            float (&acc)[kBlockN / 2]) {
#pragma unroll
    for (int j = 0; j < kBlockN / 8; j += 2) {
      const float4 sb = sbv[j / 2];
      acc[4 * j + 0] = fmaf(part[4 * j + 0], sa0 * sb.x, acc[4 * j + 0]);
      acc[4 * j + 1] = fmaf(part[4 * j + 1], sa0 * sb.y, acc[4 * j + 1]);
      acc[4 * j + 2] = fmaf(part[4 * j + 2], sa1 * sb.x, acc[4 * j + 2]);
      acc[4 * j + 3] = fmaf(part[4 * j + 3], sa1 * sb.y, acc[4 * j + 3]);
      acc[4 * j + 4] = fmaf(part[4 * j + 4], sa0 * sb.z, acc[4 * j + 4]);
      acc[4 * j + 5] = fmaf(part[4 * j + 5], sa0 * sb.w, acc[4 * j + 5]);
      acc[4 * j + 6] = fmaf(part[4 * j + 6], sa1 * sb.z, acc[4 * j + 6]);
      acc[4 * j + 7] = fmaf(part[4 * j + 7], sa1 * sb.w, acc[4 * j + 7]);
    }
  }

  // 128x128 recipe: sb = the B scales of the tile's first and second 128-column block.
  __device__ __forceinline__ static void promote_blocks(const float (&part)[kBlockN / 2], float sa0, float sa1,
                                                        float2 sb, int second, float (&acc)[kBlockN / 2]) {
    const float s00 = sa0 * sb.x, s10 = sa1 * sb.x, s01 = sa0 * sb.y, s11 = sa1 * sb.y;
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      const bool in_second = j >= kSfbGcd / 8 && j >= second;
      const float s0 = in_second ? s01 : s00, s1 = in_second ? s11 : s10;
      acc[4 * j + 0] = fmaf(part[4 * j + 0], s0, acc[4 * j + 0]);
      acc[4 * j + 1] = fmaf(part[4 * j + 1], s0, acc[4 * j + 1]);
      acc[4 * j + 2] = fmaf(part[4 * j + 2], s1, acc[4 * j + 2]);
      acc[4 * j + 3] = fmaf(part[4 * j + 3], s1, acc[4 * j + 3]);
    }
  }

  // Waits for stage st to be full, issues its k-block into p and moves st on.
  __device__ void issue_next(PipelineState<kStages>& st, int math_wg, float (&p)[kBlockN / 2]) const {
    wait_barrier(full(st.stage), st.phase);
    issue_kblock(st.stage, math_wg, p);
    st.advance();
  }

  // Promotes the finished k-block p of stage rel into acc, releases the stage and moves rel on.
  __device__ __forceinline__ void retire(PipelineState<kStages>& rel, int r0, int lane, int second,
                                         float (&p)[kBlockN / 2], float (&acc)[kBlockN / 2]) const {
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) cute::warpgroup_fence_operand(p[i]);
    const float* sfa = sfa_stage(rel.stage);
    promote(p, sfa[r0], sfa[r0 + 8], sfb_stage(rel.stage), lane, second, acc);
    release(rel.stage, lane);
    rel.advance();
  }

  // ptxas keeps wgmma batches asynchronous only in straight-line code that starts and ends with no batch in flight:
  // a batch still in flight on a loop back edge made it inject a wait there (C7517) or serialise every wgmma of the
  // kernel (C7514/C7515/C7518). So k-blocks go in pairs, drained at the end of each pair: the promotion of the first
  // overlaps the second's wgmmas. (Longer unrolled runs were no faster with 4 k-blocks per drain and, with 8, ran out
  // of registers and were serialised: docs/PERF.md.)
  template <class Second>
  __device__ void consume_pingpong(PipelineState<kStages>& st, const Tile& t, Second second, int math_wg, int warp_in_wg,
                                   int lane, float (&acc)[kBlockN / 2]) const {
    float p0[kBlockN / 2], p1[kBlockN / 2];
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.0f;
    const int r0 = math_wg * 64 + warp_in_wg * 16 + lane / 4;
    const int num_kb = kRangedK ? t.num_k_blocks : kNumKBlocks;
    PipelineState<kStages> rel = st;  // the k-block being promoted; st runs ahead (issue)
#pragma unroll 1
    for (int kb = 0; kb + 1 < num_kb; kb += 2) {
      issue_next(st, math_wg, p0);
      issue_next(st, math_wg, p1);
      cute::warpgroup_wait<1>();
      retire(rel, r0, lane, second, p0, acc);
      cute::warpgroup_wait<0>();
      retire(rel, r0, lane, second, p1, acc);
    }
    if (num_kb % 2 == 1) {
      issue_next(st, math_wg, p0);
      cute::warpgroup_wait<0>();
      retire(rel, r0, lane, second, p0, acc);
    }
  }

  // One math warpgroup computes its 64 x BLOCK_N slice of the tile into acc (FP32, already scaled):
  // per k-block, wgmma accumulates the raw FP8 products into `part`, then CUDA cores add part * sfa * sfb to acc.
  // Accumulator layout of wgmma m64nN: part[4j + {0,1}] = row r0, cols 8j + 2(lane%4) + {0,1}; part[4j + {2,3}] =
  // row r0 + 8, same cols, where r0 = 16 * warp + lane / 4.
  // acc[w]: the warpgroup's 64-row slice math_wg * kWaves + w. A tile without k-blocks (an empty k-group) gives zeros.
  __device__ void consume(PipelineState<kStages>& st, const Tile& t, int math_wg, int warp_in_wg, int lane,
                          float (&acc)[kWaves][kBlockN / 2]) const {
    if constexpr (kType == GemmType::Masked && kWaves == 1) {
      if (t.a_row + math_wg * 64 >= t.row_end) {  // (warpgroup-uniform) no valid row in this warpgroup's slice
        pass_through(st, t, lane, acc[0]);
        return;
      }
    }
    with_second_block_group(t.n_block, [&](auto second) {
      if constexpr (kWaves > 1) {
#pragma unroll
        for (int w = 0; w < kWaves; ++w) {
#pragma unroll
          for (int i = 0; i < kBlockN / 2; ++i) acc[w][i] = 0.0f;
        }
        const int passes = num_passes(t);
        for (int pass = 0; pass < passes; ++pass) {  // two passes: warpgroup w's rows are half w
          if (passes == 1 || pass == math_wg) {
            consume_live_waves(st, t, second, math_wg, warp_in_wg, lane, acc);
          } else {
            skip_stages(st, kNumKBlocks, lane);
          }
        }
      } else if constexpr (kPingPong) {
        consume_pingpong(st, t, second, math_wg, warp_in_wg, lane, acc[0]);
      } else {
        consume_single(st, t, second, math_wg, warp_in_wg, lane, acc[0]);
      }
    });
  }

  // A masked group's last tile often ends inside its first 64 rows: the warpgroup whose slice holds no valid row
  // skips the wgmmas and the promotion (the other one then has the tensor cores alone) and only keeps the pipeline
  // going, releasing each stage once full; its zeros are never stored (rows past masked_m).
  __device__ void pass_through(PipelineState<kStages>& st, const Tile& t, int lane, float (&acc)[kBlockN / 2]) const {
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.0f;
    skip_stages(st, kRangedK ? t.num_k_blocks : kNumKBlocks, lane);
  }
  // Releases the next num_kb stages once full, without reading them.
  __device__ void skip_stages(PipelineState<kStages>& st, int num_kb, int lane) const {
#pragma unroll 1
    for (int kb = 0; kb < num_kb; ++kb, st.advance()) {
      wait_barrier(full(st.stage), st.phase);
      release(st.stage, lane);
    }
  }

  // 256-row tiles of masked GEMMs: a 64-row wave whose rows all lie past masked_m (never stored) is not computed;
  // the warpgroup runs the loop instantiated for its count of live waves (a run-time test per wave inside the loop
  // cost ptxas 48 instructions per k-block). Other types compute every wave.
  template <class Second>
  __device__ void consume_live_waves(PipelineState<kStages>& st, const Tile& t, Second second, int math_wg,
                                     int warp_in_wg, int lane, float (&acc)[kWaves][kBlockN / 2]) const {
    if constexpr (kType == GemmType::Masked) {
      const int live = min(max(t.row_end - (t.a_row + math_wg * kWaves * 64) + 63, 0) / 64, kWaves);
      if (live == kWaves) {
        consume_waves<kWaves>(st, t, second, math_wg, warp_in_wg, lane, acc);
      } else if (live > 0) {
        consume_waves<1>(st, t, second, math_wg, warp_in_wg, lane, acc);
      } else {
        skip_stages(st, kNumKBlocks, lane);
      }
    } else {
      consume_waves<kWaves>(st, t, second, math_wg, warp_in_wg, lane, acc);
    }
  }

  // 256-row tiles (acc zeroed by the caller: a two-pass tile calls this once per half): per k-block the warpgroup
  // issues, drains and promotes one 64-row wave after the other (a second partial buffer would not fit beside two
  // accumulators); the other warpgroup's wgmmas run while this one promotes.
  // Every scale of the k-block is read into registers first, once for all waves, so the stage is released as soon as
  // the last wave's wgmmas have drained, before its promotion: with the 3 stages that fit, a release after the
  // promotion left the producer a stage short. With 1x128 B scales, reading a lane's BLOCK_N / 4 column scales per
  // wave made the shared-memory pipe the limit (ncu: its wavefronts at 77% of peak, the tensor pipe at 52%), hence
  // once per k-block (-4 to -9% weight-gradient time, docs/PERF.md). They take BLOCK_N / 4 registers more: at BLOCK_N =
  // 128 ptxas keeps a few tile coordinates in local memory across the tile's main loop (test_kernel_compile
  // TILE_SPILL_BYTES). Other 1x128 layouts keep reading them per wave and release after the last promotion.
  template <int kLiveWaves, class Second>
  __device__ void consume_waves(PipelineState<kStages>& st, const Tile& t, Second second, int math_wg, int warp_in_wg,
                                int lane, float (&acc)[kWaves][kBlockN / 2]) const {
    constexpr bool kBlockScales = kRecipe == SfbRecipe::Block128x128;
    constexpr bool kEarlyRelease = kBlockScales || kLaneOrderSfb;
    float part[kBlockN / 2];
    const int r0 = math_wg * kWaves * 64 + warp_in_wg * 16 + lane / 4;
    const int num_kb = kRangedK ? t.num_k_blocks : kNumKBlocks;
    // Two k-blocks per iteration with 128x128 B scales: ptxas then hoists every second k-block's full-barrier wait
    // under the previous one's promotion (DeepGEMM's loop, unrolled x8, has it under the FFMAs in 7 of 8); one per
    // iteration left the wait's round trip between the last promotion and the next wgmma every time. (1x128 scales:
    // the weight gradient's 256x128 kernel then spilled 112 bytes instead of 48.)
#pragma unroll(kBlockScales ? 2 : 1)
    for (int kb = 0; kb < num_kb; ++kb, st.advance()) {
      wait_barrier(full(st.stage), st.phase);
      const float* sfa = sfa_stage(st.stage);
      const float* sfb = sfb_stage(st.stage);
      float sa[kWaves][2];
#pragma unroll
      for (int w = 0; w < kWaves; ++w) sa[w][0] = sfa[r0 + w * 64], sa[w][1] = sfa[r0 + w * 64 + 8];
      [[maybe_unused]] const float2 sb = kBlockScales ? *reinterpret_cast<const float2*>(sfb) : float2{};
      [[maybe_unused]] float4 sbv[kBlockN / 16];
      if constexpr (kLaneOrderSfb) load_lane_order_sfb(sfb, lane, sbv);
#pragma unroll
      for (int w = 0; w < kWaves; ++w) {
        if (w >= kLiveWaves) {  // rows past masked_m only: nothing to compute
          if constexpr (kEarlyRelease) {
            if (w == kWaves - 1) release(st.stage, lane);
          }
          continue;
        }
        issue_kblock(st.stage, math_wg * kWaves + w, part);
        cute::warpgroup_wait<0>();
#pragma unroll
        for (int i = 0; i < kBlockN / 2; ++i) cute::warpgroup_fence_operand(part[i]);
        if constexpr (kEarlyRelease) {
          if (w == kWaves - 1) release(st.stage, lane);
        }
        if constexpr (kBlockScales) {
          promote_blocks(part, sa[w][0], sa[w][1], sb, second, acc[w]);
        } else if constexpr (kLaneOrderSfb) {
          promote_lane_order(part, sa[w][0], sa[w][1], sbv, acc[w]);
        } else {
          promote(part, sa[w][0], sa[w][1], sfb, lane, second, acc[w]);
        }
      }
      if constexpr (!kEarlyRelease) release(st.stage, lane);
    }
  }

  template <class Second>
  __device__ void consume_single(PipelineState<kStages>& st, const Tile& t, Second second, int math_wg, int warp_in_wg,
                                 int lane, float (&acc)[kBlockN / 2]) const {
    float part[kBlockN / 2];
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.0f;
    const int r0 = math_wg * 64 + warp_in_wg * 16 + lane / 4;
    const int num_kb = kRangedK ? t.num_k_blocks : kNumKBlocks;
#pragma unroll 1
    for (int kb = 0; kb < num_kb; ++kb, st.advance()) {
      wait_barrier(full(st.stage), st.phase);
      const float* sfa = sfa_stage(st.stage);
      const float sa0 = sfa[r0], sa1 = sfa[r0 + 8];
      const float* sfb = sfb_stage(st.stage);
      issue_kblock(st.stage, math_wg, part);
      // (Reading the sfb scales here, under the wgmmas, and releasing the stage right after the wait was measured 6-9%
      // slower at BLOCK_N = 160: the loads landed between the QGMMAs.)
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int i = 0; i < kBlockN / 2; ++i) cute::warpgroup_fence_operand(part[i]);

      promote(part, sa0, sa1, sfb, lane, second, acc);
      // Release the stage only after its scales were read (wgmma reads of A/B finished at the wait above).
      release(st.stage, lane);
    }
  }

  // This lane is done with stage s. Every lane arrives on its own CTA's empty[s] after its own reads of the stage (its
  // scale loads), so each read is ordered before the producer's cp.async refill by the barrier itself, not by warp
  // convergence (ptxas drops a __syncwarp before a lane-0 arrive, and compute-sanitizer's racecheck then reports the
  // other lanes' reads as racing with the refill). In a cluster, lane 0 also arrives on the peer's empty[s] for the
  // warp: the peer multicasts into this CTA's stage.
  __device__ void release(int s, int lane) const {
    Barrier::arrive(empty(s));
    if constexpr (kCluster > 1) {
      if (lane == 0) arrive_cluster(peer_empty + static_cast<uint32_t>(s) * 8);
    }
  }
};

}  // namespace deepgemm_ops::kernels
