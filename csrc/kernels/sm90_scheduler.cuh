// Persistent tile scheduler: CTA b takes tiles b, b + gridDim.x, ... of the (group, m-block, n-block) space.
// K-grouped GEMMs: every group has the same M x N tiles (an empty group's tiles still store C or zeros); a group's
// k-blocks start where the previous groups' end, a prefix sum of ks that each scheduler copy accumulates as its
// (increasing) tile index passes the groups.
// Producer and math warpgroups each run their own copy; it is deterministic (it only reads device inputs that do not
// change during the launch), so both walk the same tile sequence without talking to each other.
#pragma once
#include "params.h"

namespace deepgemm_ops::kernels {

struct Tile {
  int m_block;    // block index inside the group
  int n_block;
  int group;      // 0 for normal GEMMs; contiguous: -1 for a tile of padding rows only, which every role skips
                  // (skipped inside next(), a loop back on a value read from memory, it cost the math warps their
                  // uniform registers: +6% main-loop instructions, docs/PERF.md). The roles test it under
                  // `if constexpr (kType == Contiguous)`: behind a function returning false for other types, the
                  // dense kernels' main loops still grew by 10-25 instructions.
  int a_row;      // first row of the tile in the flattened A / D ([G*Mmax] for masked, [M] otherwise; k-grouped:
                  // in A and inside the group's [M, N] of D)
  int row_end;    // rows >= row_end (flattened) are outside this group's valid rows: never stored
  int sfa_kb0;    // sfa row (k-block coordinate) of the tile's first k-block; k-grouped, split-K: also A's and B's
  int num_k_blocks;  // k-grouped: the k-blocks of the tile's group (0 for an empty group); split-K: of the split
  int split = 0;     // split-K: this CTA's split of the tile (its rank in the cluster); 0 otherwise
  int unit = 0;      // split-K: the tile's index (its partials' workspace slot)
  int second_group = -1;  // contiguous 256-row tiles whose 128-row halves hold two groups: the upper half's (group
                          // is the lower half's); the tile then runs its k-blocks once per half (Mainloop::kTwoPass)
};

// kCluster == 2 (not k-grouped): the two CTAs of a cluster take the two m-blocks of one m-block pair with the same
// n-block (they share the B tile, which the main loop multicasts) — or, for 256-row tiles and m-grouped GEMMs
// (cluster_multicasts_a), the two n-blocks of one n-block pair with the same m-block (they share A, and one group).
// The scheduler then walks (m-pair, n-block) or (m-block, n-pair) units; both CTAs of a cluster walk the same unit
// sequence (a contiguous unit of padding rows is skipped by both), so their pipelines stay in lock step.
// The second block of the last pair may lie past M (N): it is computed on zero-filled rows and never stored.
// kSplits > 1 (split-K, params.h): the kSplits CTAs of a cluster walk the same tiles, each with its share of K.
template <GemmType kType, int kN, int kNumKBlocks, int kBlockM, int kBlockN, int kSwizzleGroupN, int kCluster,
          int kSplits = 1>
struct TileScheduler {
  static_assert(kCluster == 1 || kType != GemmType::KGrouped, "2-CTA clusters are not implemented for k-grouped GEMMs");
  static_assert(kSplits == 1 || (kType == GemmType::Normal && kCluster == 1 && kSplits <= kNumKBlocks),
                "split-K is for normal GEMMs without a multicast cluster, at least one k-block per split");
  static constexpr int kCtasPerUnit = kCluster * kSplits;
  static constexpr bool kPairN = kCluster > 1 && cluster_multicasts_a(kBlockM, static_cast<int>(kType));
  static constexpr int kPairM = kCluster > 1 && !kPairN ? kCluster : 1;  // m-blocks per unit
  static constexpr int kNumNBlocks = (kN + kBlockN - 1) / kBlockN;
  static constexpr int kNumNUnits = kPairN ? (kNumNBlocks + kCluster - 1) / kCluster : kNumNBlocks;

  const Fp8GemmParams& p;
  int num_m_blocks;  // per group (normal/contiguous: of all rows; masked: recomputed per group); with a B-sharing
                     // cluster, of m-block pairs
  int next_index;
  // Masked, k-grouped: the group that next_index falls into and the first tile index of that group.
  int group = 0;
  int group_first_tile = 0;
  // K-grouped: the first k-block of that group and its number of k-blocks.
  int group_kb0 = 0;
  int group_k_blocks = 0;

  __device__ explicit TileScheduler(const Fp8GemmParams& params)
      : p(params),
        num_m_blocks(((params.m + kBlockM - 1) / kBlockM + kPairM - 1) / kPairM),
        next_index(blockIdx.x / kCtasPerUnit) {
    if constexpr (kType == GemmType::Masked) num_m_blocks = masked_m_blocks(0);
    if constexpr (kType == GemmType::KGrouped) group_k_blocks = k_group_blocks(0, 0);
  }

  // ks[g] / 128, clamped to the k-blocks left after kb0: a corrupt ks never makes the kernel read past A, B or the
  // scales (the values are the caller's duty; a wrong one gives wrong sums, never a bad access).
  __device__ int k_group_blocks(int g, int kb0) const {
    return min(max(__ldg(p.grouped_layout + g), 0) / kScaleBlock, p.k_blocks - kb0);
  }

  // Contiguous: the group of the rows [row0, row0 + rows), rows <= 128. Groups start at multiples of 128 rows, so
  // they hold one group's rows and/or padding (-1) rows; -1 when they hold padding only, start past M, or name no
  // group (never computed).
  __device__ int block_group(int row0, int rows) const {
    if (row0 >= p.m) return -1;
    int g = __ldg(p.grouped_layout + row0);
    if (g < 0) g = __ldg(p.grouped_layout + min(row0 + rows, p.m) - 1);
    return g >= 0 && g < p.num_groups ? g : -1;
  }

  __device__ int masked_m_blocks(int g) const {
    // Clamped to Mmax so that a corrupt masked_m can never make the kernel read or write past the group.
    const int rows = min(max(__ldg(p.grouped_layout + g), 0), p.m);
    return (rows + kBlockM - 1) / kBlockM;
  }

  // L2-friendly order inside one group: swaths of kSwizzleGroupN n-units (n-blocks, or n-block pairs), n varies
  // fastest inside a swath, so the CTAs of one wave share a run of A tiles and a few B tiles.
  __device__ void rasterize(int local, int m_blocks, int& m_block, int& n_block) const {
    const int swath = local / (m_blocks * kSwizzleGroupN);
    const int first_n = swath * kSwizzleGroupN;
    const int width = min(kSwizzleGroupN, kNumNUnits - first_n);
    const int in_swath = local - swath * m_blocks * kSwizzleGroupN;
    m_block = in_swath / width;
    n_block = first_n + in_swath % width;
  }

  // A unit's block for this CTA of the cluster: its n-block of an n-block pair, or its m-block of an m-block pair.
  __device__ static void take_block_of_unit(Tile& t) {
    if constexpr (kPairN) t.n_block = t.n_block * kCluster + static_cast<int>(blockIdx.x % kCluster);
    if constexpr (kPairM > 1) t.m_block = t.m_block * kPairM + static_cast<int>(blockIdx.x % kPairM);
  }

  __device__ bool next(Tile& t) {
    while (true) {
      const int index = next_index;
      next_index += gridDim.x / kCtasPerUnit;
      if constexpr (kType == GemmType::Masked) {
        while (index >= group_first_tile + num_m_blocks * kNumNUnits) {
          group_first_tile += num_m_blocks * kNumNUnits;
          if (++group >= p.num_groups) return false;
          num_m_blocks = masked_m_blocks(group);
        }
        rasterize(index - group_first_tile, num_m_blocks, t.m_block, t.n_block);
        take_block_of_unit(t);
        t.group = group;
        t.a_row = group * p.m + t.m_block * kBlockM;
        t.row_end = group * p.m + min(max(__ldg(p.grouped_layout + group), 0), p.m);
        t.sfa_kb0 = group * kNumKBlocks;
        return true;
      } else if constexpr (kType == GemmType::KGrouped) {
        while (index >= group_first_tile + num_m_blocks * kNumNUnits) {
          group_first_tile += num_m_blocks * kNumNUnits;
          group_kb0 += group_k_blocks;
          if (++group >= p.num_groups) return false;
          group_k_blocks = k_group_blocks(group, group_kb0);
        }
        rasterize(index - group_first_tile, num_m_blocks, t.m_block, t.n_block);
        t.group = group;
        t.a_row = t.m_block * kBlockM;
        t.row_end = p.m;
        t.sfa_kb0 = group_kb0;
        t.num_k_blocks = group_k_blocks;
        return true;
      } else {
        if (index >= num_m_blocks * kNumNUnits) return false;
        rasterize(index, num_m_blocks, t.m_block, t.n_block);
        take_block_of_unit(t);
        t.a_row = t.m_block * kBlockM;
        t.row_end = p.m;
        t.sfa_kb0 = 0;
        t.group = 0;
        if constexpr (kSplits > 1) {
          t.split = static_cast<int>(blockIdx.x % kSplits);
          t.unit = index;
          t.sfa_kb0 = t.split * kNumKBlocks / kSplits;
          t.num_k_blocks = (t.split + 1) * kNumKBlocks / kSplits - t.sfa_kb0;
        }
        if constexpr (kType == GemmType::Contiguous) {
          if constexpr (kBlockM == 256) {
            // Two 128-row halves: one group (or one group and padding) in the common case; two groups at a boundary
            // that falls between them, each half then computed in its own pass over K.
            const int lo = block_group(t.a_row, 128), hi = block_group(t.a_row + 128, 128);
            t.group = lo >= 0 ? lo : hi;
            t.second_group = lo >= 0 && hi >= 0 && hi != lo ? hi : -1;
          } else {
            t.group = block_group(t.a_row, kBlockM);
          }
        }
        return true;
      }
    }
  }
};

}  // namespace deepgemm_ops::kernels
