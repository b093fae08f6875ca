// FP8 casts with fine-grained scales in one pass over x: per-token (1 x 128 groups along a row) and per-block
// (128 x 128 blocks). Each 128-wide group of a row is held by 128 / kVec threads, kVec elements (16 bytes of x) each.
//
// The numbers are the reference's (deepgemm_ops/_layout.py) bit for bit: amax of |x| over the group (a NaN wins,
// found by an integer max over the sign-cleared bits, where every NaN is larger than Inf), floored at 1e-4,
// scale = amax / 448 and q = e4m3(x / scale), both IEEE divisions, round to nearest even. A group holding Inf gets an
// Inf scale (finite values become 0, the Inf becomes NaN); a group holding NaN gets a NaN scale and NaN values.
#pragma once
#include "grid_dependency.cuh"
#include "params.h"

namespace deepgemm_ops::kernels {

constexpr int kCastGroup = kScaleBlock;
constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr float kE4m3Max = 448.0f;
constexpr float kAmaxFloor = 1e-4f;

template <CastDtype kDtype>
struct CastVector {
  static constexpr int kElems = cast_vector_elems(kDtype);

  __device__ __forceinline__ static void unpack(const uint4& raw, float (&v)[kElems]) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (kDtype == CastDtype::Float32) {
        v[i] = __uint_as_float(w[i]);
      } else if constexpr (kDtype == CastDtype::BFloat16) {  // bf16 is the top half of an fp32
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      } else {
        asm("{\n .reg .b16 lo, hi;\n mov.b32 {lo, hi}, %2;\n cvt.f32.f16 %0, lo;\n cvt.f32.f16 %1, hi;\n}"
            : "=f"(v[2 * i]), "=f"(v[2 * i + 1])
            : "r"(w[i]));
      }
    }
  }
};

// Two floats -> two e4m3 bytes (lo in the low byte).
__device__ __forceinline__ uint32_t to_e4m3x2(float lo, float hi) {
  uint16_t packed;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(packed) : "f"(hi), "f"(lo));
  return packed;
}

// 16 bytes of x at (row, col); col is a multiple of kVec and the host checked 16-byte row alignment.
template <int kVec>
__device__ __forceinline__ uint4 load_vector(const Fp8CastParams& p, int64_t row, int64_t col) {
  return *reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.x) + (row * p.ld_x + col) * (16 / kVec));
}

__device__ __forceinline__ uint32_t abs_max_bits(const float* v, int n, uint32_t acc) {
  for (int i = 0; i < n; ++i) acc = max(acc, __float_as_uint(v[i]) & kAbsMask);
  return acc;
}

__device__ __forceinline__ float scale_of(uint32_t amax_bits) {
  // Integer compare keeps a NaN amax (its bits exceed the floor's) instead of flooring it.
  const float amax = amax_bits < __float_as_uint(kAmaxFloor) ? kAmaxFloor : __uint_as_float(amax_bits);
  return __fdiv_rn(amax, kE4m3Max);
}

// x / scale rounded to nearest, the way the compiler's IEEE division computes it (reciprocal estimate, one Newton step,
// quotient, one residual correction: bit-identical to __fdiv_rn wherever its operand range check passes), with the
// reciprocal formed once per group instead of once per element: 3 instructions per value instead of ~11. The check
// only fails for operands outside what a finite scale admits here (a quotient below 2^-10 rounds to a signed e4m3
// zero either way).
struct DivideByFinite {
  float divisor, reciprocal;

  __device__ __forceinline__ DivideByFinite(float d, float r) : divisor(d), reciprocal(r) {}

  __device__ __forceinline__ static float reciprocal_of(float d) {
    float estimate;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(estimate) : "f"(d));
    return __fmaf_rn(estimate, __fmaf_rn(-d, estimate, 1.0f), estimate);
  }

  // copysignf: the correction step turns -0 / d into +0; the quotient's sign is always x's.
  __device__ __forceinline__ float operator()(float x) const {
    const float q = __fmul_rn(x, reciprocal);
    return copysignf(__fmaf_rn(reciprocal, __fmaf_rn(-divisor, q, x), q), x);
  }
};

// A non-finite scale (the group holds Inf or NaN): the full division, whose special cases the reference shares.
struct DivideByAny {
  float divisor;
  __device__ __forceinline__ float operator()(float x) const { return __fdiv_rn(x, divisor); }
};

template <int kElems, class Divide>
__device__ __forceinline__ void store_e4m3(uint8_t* q, const float (&v)[kElems], const Divide& div) {
  static_assert(kElems == 4 || kElems == 8 || kElems == 16, "one 4-, 8- or 16-byte store");
  uint32_t words[kElems / 4];
#pragma unroll
  for (int i = 0; i < kElems / 4; ++i) {
    words[i] = to_e4m3x2(div(v[4 * i]), div(v[4 * i + 1])) | to_e4m3x2(div(v[4 * i + 2]), div(v[4 * i + 3])) << 16;
  }
  if constexpr (kElems == 16) {
    *reinterpret_cast<uint4*>(q) = make_uint4(words[0], words[1], words[2], words[3]);
  } else if constexpr (kElems == 8) {
    *reinterpret_cast<uint2*>(q) = make_uint2(words[0], words[1]);
  } else {
    *reinterpret_cast<uint32_t*>(q) = words[0];
  }
}

// (scale, its reciprocal when finite): what with_divider takes, formed once and shared by the stores that use it.
__device__ __forceinline__ float2 with_reciprocal(float scale) {
  return make_float2(scale, DivideByFinite::reciprocal_of(isfinite(scale) ? scale : 1.0f));
}

// The scale of a group with amax bits `amax_bits`, with its reciprocal.
__device__ __forceinline__ float2 scale_and_reciprocal(uint32_t amax_bits) {
  return with_reciprocal(scale_of(amax_bits));
}

// Calls body(divide) with the division by scale.x: the fast one with the reciprocal scale.y (scale_and_reciprocal) when
// the scale is finite, else the full one.
template <class Body>
__device__ __forceinline__ void with_divider(float2 scale, Body&& body) {
  if (isfinite(scale.x)) {
    body(DivideByFinite(scale.x, scale.y));
  } else {
    body(DivideByAny{scale.x});
  }
}

template <class Body>
__device__ __forceinline__ void with_divider(float scale, Body&& body) {
  with_divider(with_reciprocal(scale), body);
}

// Quantizes kElems values with `scale` (a float, or (scale, reciprocal) from scale_and_reciprocal when several stores
// share it) and stores their bytes at q (kElems-byte aligned).
template <int kElems, class Scale>
__device__ __forceinline__ void store_quantized(uint8_t* q, const float (&v)[kElems], Scale scale) {
  with_divider(scale, [&](const auto& div) { store_e4m3(q, v, div); });
}

// One row's kVec values of a 1 x 128 group that kLanes consecutive lanes hold: the group's amax over the lanes, its
// scale, the e4m3 values into q and (the first lane) the scale into sf. Every lane calls it (the shuffles), also for
// rows past x.
template <int kLanes, int kVec>
__device__ __forceinline__ void cast_row_group(const Fp8CastParams& p, int64_t row, int64_t col, bool col_valid,
                                               int64_t group, const float (&v)[kVec]) {
  uint32_t amax = abs_max_bits(v, kVec, 0);
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  if (row >= p.rows) return;
  const float scale = scale_of(amax);
  if (col_valid) store_quantized(static_cast<uint8_t*>(p.q) + row * p.ld_q + col, v, scale);
  if (threadIdx.x % kLanes == 0) p.sf[row * p.sf_stride_row + group * p.sf_stride_col] = scale;
}

// One (row, 128-column group) per 128 / kVec threads; each thread takes kUnroll rows of one column group, all loads
// issued first. Grid: x over chunks of per_token_rows_per_cta rows, y over the column groups; consecutive threads take
// consecutive rows, so MN-major scales are written contiguously.
template <CastDtype kDtype>
__device__ __forceinline__ void per_token_cast(const Fp8CastParams& p) {
  using Vec = CastVector<kDtype>;
  constexpr int kVec = Vec::kElems;
  constexpr int kLanes = kCastGroup / kVec;
  constexpr int kRowsPerPass = kCastThreads / kLanes;
  static_assert(kRowsPerPass * kPerTokenUnroll == per_token_rows_per_cta(kDtype));
  const int lane = threadIdx.x % kLanes;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kCastGroup + lane * kVec;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * per_token_rows_per_cta(kDtype) + threadIdx.x / kLanes;
  const bool col_valid = col < p.cols;

  uint4 raw[kPerTokenUnroll];
#pragma unroll
  for (int u = 0; u < kPerTokenUnroll; ++u) {
    const int64_t row = row0 + u * kRowsPerPass;
    raw[u] = col_valid && row < p.rows ? load_vector<kVec>(p, row, col) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int u = 0; u < kPerTokenUnroll; ++u) {
    float v[kVec];
    Vec::unpack(raw[u], v);
    cast_row_group<kLanes>(p, row0 + u * kRowsPerPass, col, col_valid, blockIdx.y, v);
  }
}

// A quantized 128 x 128 block staged in shared memory (row r of the block at staged + r * kStagedLine) written as its
// transpose into q_t [cols, rows]: q_t row c (x's column) takes 16 consecutive x rows per 16-byte store (rows % 16 ==
// 0, checked by the host); consecutive threads take consecutive c, so a warp's shared-memory reads of one staged row
// are conflict-free.
constexpr int kStagedLine = kCastGroup + 16;  // bytes per staged row: 16-byte aligned, rows 4 banks apart

__device__ __forceinline__ void write_transposed_block(const Fp8CastParams& p, const uint8_t* staged,
                                                       int64_t row_block, int64_t col_block) {
  const int c = threadIdx.x % kCastGroup;
  const int64_t q_t_row = col_block * kCastGroup + c;
#pragma unroll
  for (int chunk = threadIdx.x / kCastGroup; chunk < kCastGroup / 16; chunk += kCastThreads / kCastGroup) {
    const int64_t q_t_col = row_block * kCastGroup + chunk * 16;
    if (q_t_row >= p.cols || q_t_col >= p.rows) continue;
    uint32_t words[4];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      words[w] = 0;
#pragma unroll
      for (int b = 0; b < 4; ++b) words[w] |= uint32_t{staged[(chunk * 16 + w * 4 + b) * kStagedLine + c]} << (8 * b);
    }
    *reinterpret_cast<uint4*>(static_cast<uint8_t*>(p.q_t) + q_t_row * p.rows + q_t_col) =
        make_uint4(words[0], words[1], words[2], words[3]);
  }
}

// One 128 x 128 block per CTA: every thread loads its rows' vectors, the CTA reduces amax, then quantizes from
// registers. Grid: x over the 128-row blocks, y over the 128-column blocks. kTransposed: the CTA also writes the
// block's transpose (128 x 128 blocks transpose exactly: q_t = q transposed, sf_t = sf transposed) through shared
// memory (write_transposed_block).
template <CastDtype kDtype, bool kTransposed>
__device__ __forceinline__ void per_block_cast_impl(const Fp8CastParams& p) {
  using Vec = CastVector<kDtype>;
  constexpr int kVec = Vec::kElems;
  constexpr int kLanes = kCastGroup / kVec;
  constexpr int kRowsPerPass = kCastThreads / kLanes;
  constexpr int kPasses = kCastGroup / kRowsPerPass;
  constexpr int kWarps = kCastThreads / 32;
  __shared__ uint32_t warp_amax[kWarps];
  __shared__ __align__(16) uint8_t staged[kTransposed ? kCastGroup * kStagedLine : 16];

  const int64_t row_block = blockIdx.x, col_block = blockIdx.y;
  const int col_in_block = (threadIdx.x % kLanes) * kVec, row_in_block = threadIdx.x / kLanes;
  const int64_t col = col_block * kCastGroup + col_in_block;
  const int64_t row0 = row_block * kCastGroup + row_in_block;

  uint4 raw[kPasses];
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int64_t row = row0 + i * kRowsPerPass;
    raw[i] = row < p.rows && col < p.cols ? load_vector<kVec>(p, row, col) : make_uint4(0, 0, 0, 0);
  }
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    float v[kVec];
    Vec::unpack(raw[i], v);
    amax = abs_max_bits(v, kVec, amax);
  }
  amax = __reduce_max_sync(0xffffffffu, amax);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) amax = max(amax, warp_amax[w]);
  const float scale = scale_of(amax);
  if (threadIdx.x == 0) {
    p.sf[row_block * p.sf_stride_row + col_block * p.sf_stride_col] = scale;
    if constexpr (kTransposed) p.sf_t[col_block * gridDim.x + row_block] = scale;
  }
  with_divider(scale, [&](const auto& div) {
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int64_t row = row0 + i * kRowsPerPass;
      float v[kVec];
      Vec::unpack(raw[i], v);
      if (row < p.rows && col < p.cols) store_e4m3(static_cast<uint8_t*>(p.q) + row * p.ld_q + col, v, div);
      if constexpr (kTransposed) {
        store_e4m3(staged + (row_in_block + i * kRowsPerPass) * kStagedLine + col_in_block, v, div);
      }
    }
  });
  if constexpr (kTransposed) {
    __syncthreads();
    write_transposed_block(p, staged, row_block, col_block);
  }
}

template <CastDtype kDtype>
__device__ __forceinline__ void per_block_cast(const Fp8CastParams& p) {
  per_block_cast_impl<kDtype, false>(p);
}

// The per-block cast that also writes q_t [cols, rows] and sf_t (ceil(cols/128), ceil(rows/128)), row-major.
template <CastDtype kDtype>
__device__ __forceinline__ void per_block_transposing_cast(const Fp8CastParams& p) {
  per_block_cast_impl<kDtype, true>(p);
}

// The per-token cast of x (1 x 128 groups along its rows) and of its transpose (1 x 128 groups along its columns,
// written as q_t [cols, rows]) from one read of x: what a linear layer's activations need for the forward GEMM (K =
// features) and the weight gradient (K = tokens). One 128 x 128 block per CTA; each thread holds kRows consecutive
// rows of kVec columns (16 bytes of x per row), so a column's kRows quantized values leave as one store of q_t and
// nothing is transposed through shared memory. Row amaxes: a reduce-scatter over the kLanes threads of a row (each
// step halves the values a lane keeps; the lane pair (2j, 2j + 1) ends with row j); column amaxes: in registers over
// the thread's rows, then over the row groups through shared memory. Each row's and column's scale is formed once
// and shared through shared memory. kSums: also x's fp32 column sums over the block into p.col_sums (a bias gradient),
// a compile-time choice so that the cast without them keeps its registers.
template <CastDtype kDtype, bool kSums>
__device__ __forceinline__ void per_token_transposing_cast_impl(const Fp8CastParams& p) {
  using Vec = CastVector<kDtype>;
  constexpr int kVec = Vec::kElems;                  // columns per thread
  constexpr int kLanes = kCastGroup / kVec;          // threads across a row: 16 (16-bit x) or 32 (fp32)
  constexpr int kRowGroups = kCastThreads / kLanes;  // 16 or 8
  constexpr int kRows = kCastGroup / kRowGroups;     // consecutive rows per thread: 8 or 16
  static_assert(kLanes <= 32 && kRows == kLanes / 2, "a row's lanes lie in one warp and end as lane pairs");
  static_assert(kCastThreads >= kCastGroup, "one thread per column forms the column scales");
  __shared__ uint32_t column_amax[kRowGroups][kCastGroup];
  constexpr int kWarps = kCastThreads / 32;
  __shared__ float column_sum[kSums ? kWarps : 1][kCastGroup];  // per warp, its row groups combined
  __shared__ __align__(16) float2 row_scale[kCastGroup];  // (scale, reciprocal) per row of the block
  __shared__ __align__(16) float2 col_scale[kCastGroup];

  const int64_t row_block = blockIdx.x, col_block = blockIdx.y;
  const int lane = threadIdx.x % kLanes, group = threadIdx.x / kLanes;
  const int col_in_block = lane * kVec, row_in_block = group * kRows;
  const int64_t col = col_block * kCastGroup + col_in_block, row0 = row_block * kCastGroup + row_in_block;
  const bool col_valid = col < p.cols;
  uint4 raw[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    raw[r] = row0 + r < p.rows && col_valid ? load_vector<kVec>(p, row0 + r, col) : make_uint4(0, 0, 0, 0);
  }

  uint32_t row_bits[kRows], col_bits[kVec] = {};
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float v[kVec];
    Vec::unpack(raw[r], v);
    row_bits[r] = abs_max_bits(v, kVec, 0);
#pragma unroll
    for (int e = 0; e < kVec; ++e) col_bits[e] = max(col_bits[e], __float_as_uint(v[e]) & kAbsMask);
  }
#pragma unroll
  for (int e = 0; e < kVec; ++e) column_amax[group][col_in_block + e] = col_bits[e];

  // Reduce-scatter of the kRows row amaxes over the row's lanes: at offset o a lane keeps the upper half of its values
  // if (lane & o), the lower half otherwise, and takes the partner's copy of that half.
#pragma unroll
  for (int step = 0; (kLanes / 4 >> step) >= 1; ++step) {
    const int offset = kLanes / 2 >> step, half = kRows / 2 >> step;
    const bool upper = lane & offset;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const uint32_t send = upper ? row_bits[i] : row_bits[i + half];
      const uint32_t keep = upper ? row_bits[i + half] : row_bits[i];
      row_bits[i] = max(keep, __shfl_xor_sync(0xffffffffu, send, offset));
    }
  }
  row_bits[0] = max(row_bits[0], __shfl_xor_sync(0xffffffffu, row_bits[0], 1));
  if (lane % 2 == 0) {
    const int row = row_in_block + lane / 2;
    const float2 scale = scale_and_reciprocal(row_bits[0]);
    row_scale[row] = scale;
    if (row_block * kCastGroup + row < p.rows) {
      p.sf[(row_block * kCastGroup + row) * p.sf_stride_row + col_block * p.sf_stride_col] = scale.x;
    }
  }
  __syncthreads();
  if (threadIdx.x < kCastGroup) {  // column threadIdx.x of the block
    uint32_t amax = 0;
#pragma unroll
    for (int g = 0; g < kRowGroups; ++g) amax = max(amax, column_amax[g][threadIdx.x]);
    const float2 scale = scale_and_reciprocal(amax);
    col_scale[threadIdx.x] = scale;
    const int64_t c = col_block * kCastGroup + threadIdx.x;
    if (c < p.cols) p.sf_t[c * p.sf_t_stride_row + row_block * p.sf_t_stride_col] = scale.x;
  }
  __syncthreads();

  // Along the rows: row r's kVec values into q.
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float v[kVec];
    Vec::unpack(raw[r], v);
    if (row0 + r < p.rows && col_valid) {
      store_quantized(static_cast<uint8_t*>(p.q) + (row0 + r) * p.ld_q + col, v, row_scale[row_in_block + r]);
    }
  }
  // Along the columns: column e's kRows values into q_t row col + e (rows % 16 == 0, checked by the host, so the
  // thread's rows are all inside x or all outside; rows outside were loaded as zeros). kSums: also their fp32 sum,
  // here where the column's values are in registers anyway (beside the amaxes, the sums would hold registers through
  // the scale exchange).
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    float v[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float row_values[kVec];
      Vec::unpack(raw[r], row_values);
      v[r] = row_values[e];
    }
    if (row0 < p.rows && col + e < p.cols) {
      store_quantized(static_cast<uint8_t*>(p.q_t) + (col + e) * p.rows + row0, v, col_scale[col_in_block + e]);
    }
    if constexpr (kSums) {  // the warp's row groups combined by shuffles
      float sum = 0.0f;
#pragma unroll
      for (int r = 0; r < kRows; ++r) sum += v[r];
#pragma unroll
      for (int offset = kLanes; offset < 32; offset *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (threadIdx.x % 32 < kLanes) column_sum[warp][col_in_block + e] = sum;
    }
  }
  if constexpr (kSums) {  // the warps' partial sums in a fixed order: deterministic, unlike atomics
    __syncthreads();
    const int64_t c = col_block * kCastGroup + threadIdx.x;
    if (threadIdx.x < kCastGroup && c < p.cols) {
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += column_sum[w][threadIdx.x];
      p.col_sums[row_block * p.cols + c] = sum;
    }
  }
}

template <CastDtype kDtype>
__device__ __forceinline__ void per_token_transposing_cast(const Fp8CastParams& p) {
  per_token_transposing_cast_impl<kDtype, false>(p);
}

// The per-token transposing cast that also writes x's column sums over each 128-row block.
template <CastDtype kDtype>
__device__ __forceinline__ void per_token_transposing_summing_cast(const Fp8CastParams& p) {
  per_token_transposing_cast_impl<kDtype, true>(p);
}

// The per-token cast of a transposed view: x is stored [cols, rows] row-major (ld_x between its rows) and the result
// is q [rows, cols] row-major with one scale per row and 128 columns, i.e. the cast of the stored tensor's transpose
// (the K-major operand a weight-gradient GEMM reads, e.g. dY^T). Each CTA stages a 128 (stored rows) x
// kTransposeTileRows (stored columns) tile in shared memory with coalesced 16-byte loads, then each warp reads
// columns of it, reduces their amax and writes q rows. Grid: x over the q row chunks, y over the 128-column groups.
template <CastDtype kDtype>
__device__ __forceinline__ void per_token_transposed_cast(const Fp8CastParams& p) {
  using Vec = CastVector<kDtype>;
  constexpr int kVec = Vec::kElems;
  constexpr int kTileRows = kTransposeTileRows;
  constexpr int kVecsPerLine = kTileRows / kVec;            // 16-byte vectors across one stored row of the tile
  constexpr int kLinesPerPass = kCastThreads / kVecsPerLine;
  constexpr int kPasses = kCastGroup / kLinesPerPass;
  constexpr int kWarps = kCastThreads / 32;
  constexpr int kPerLane = kCastGroup / 32;
  // +1 column: a warp reading one tile column walks 32 consecutive lines, each in its own bank.
  __shared__ float tile[kCastGroup][kTileRows + 1];

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kCastGroup;
  const int vec = threadIdx.x % kVecsPerLine;
  const int64_t row = row0 + vec * kVec;  // the first q row this thread loads
  uint4 raw[kPasses];
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int64_t col = col0 + i * kLinesPerPass + threadIdx.x / kVecsPerLine;
    raw[i] = row < p.rows && col < p.cols ? load_vector<kVec>(p, col, row) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    float v[kVec];
    Vec::unpack(raw[i], v);
    float* line = tile[i * kLinesPerPass + threadIdx.x / kVecsPerLine] + vec * kVec;
#pragma unroll
    for (int e = 0; e < kVec; ++e) line[e] = v[e];
  }
  __syncthreads();

  // Quantized rows are staged in shared memory, then leave in 16-byte stores (a byte store per value would issue four
  // times the store instructions of the read side).
  __shared__ alignas(16) uint8_t staged[kTileRows][kCastGroup];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll 1
  for (int r = warp; r < kTileRows; r += kWarps) {
    const int64_t q_row = row0 + r;
    if (q_row >= p.rows) break;  // warp-uniform
    float v[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) v[j] = tile[lane + 32 * j][r];
    const uint32_t amax = __reduce_max_sync(0xffffffffu, abs_max_bits(v, kPerLane, 0));
    const float scale = scale_of(amax);
    with_divider(scale, [&](const auto& div) {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) staged[r][lane + 32 * j] = static_cast<uint8_t>(to_e4m3x2(div(v[j]), 0.0f));
    });
    if (lane == 0) p.sf[q_row * p.sf_stride_row + blockIdx.y * p.sf_stride_col] = scale;
  }
  __syncthreads();
  // 16 bytes per thread and pass: a q row of the tile is kCastGroup / 16 = 8 threads.
  constexpr int kChunksPerRow = kCastGroup / 16;
#pragma unroll
  for (int i = threadIdx.x; i < kTileRows * kChunksPerRow; i += kCastThreads) {
    const int r = i / kChunksPerRow, chunk = i % kChunksPerRow;
    const int64_t q_row = row0 + r, col = col0 + chunk * 16;
    if (q_row >= p.rows || col >= p.cols) continue;
    uint8_t* q = static_cast<uint8_t*>(p.q) + q_row * p.ld_q + col;
    const uint4 bytes = *reinterpret_cast<const uint4*>(&staged[r][chunk * 16]);
    if (col + 16 <= p.cols && reinterpret_cast<uintptr_t>(q) % 16 == 0) {
      *reinterpret_cast<uint4*>(q) = bytes;
    } else {  // the last, partial chunk of a row, or rows not 16-byte aligned (cols % 16 != 0)
      const uint8_t* b = reinterpret_cast<const uint8_t*>(&bytes);
      for (int e = 0; e < 16 && col + e < p.cols; ++e) q[e] = b[e];
    }
  }
}

}  // namespace deepgemm_ops::kernels
