// Plain kernel parameters shared by the host launcher and the device kernel (no CUDA types, so the host
// side can include it without device headers). Tensor maps travel as separate __grid_constant__ arguments.
#pragma once
#ifdef __CUDACC_RTC__
#include <cuda/std/cstdint>  // NVRTC has no C library headers; libcu++ has the fixed-width integer types
#else
#include <stdint.h>
#endif

namespace deepgemm_ops {

// Integer values are part of the Python -> C++ contract (_heuristics.GEMM_TYPES / SFB_RECIPES use the same order).
enum class GemmType : int { Normal = 0, Contiguous = 1, Masked = 2 };
enum class SfbRecipe : int { Block128x128 = 0, Row1x128 = 1 };

// bf16 TMA-store epilogue: D leaves shared memory in boxes of [64 rows][W columns], W = 64, 32 or 16 (the widest that
// divides BLOCK_N), with the matching 128/64/32-byte swizzle in the staging tile. The host encodes the D tensor map
// with the same box, so both sides use this one rule.
constexpr int d_store_box_cols(int block_n) { return block_n % 64 == 0 ? 64 : block_n % 32 == 0 ? 32 : 16; }

struct Fp8GemmParams {
  void* d;                    // bf16 or fp32 output, row stride ldd elements
  const float* c;             // optional fp32 addend, row stride ldc elements (nullptr when the kernel has no C)
  const float* sfb;           // B scales, row-major: [G, ceil(N/128), ceil(K/128)] or [G, N, ceil(K/128)]
  const int* grouped_layout;  // contiguous: m_indices [m]; masked: masked_m [num_groups]; normal: unused
  int m;                      // rows of A/D (normal, contiguous: all rows; masked: Mmax, rows per group)
  int num_groups;             // 1 for normal
  int store_d_by_tma;         // bf16 output only: 1 = stage D in smem and TMA-store it (needs N % 8 == 0,
                              // ldd % 8 == 0 and a 16-byte-aligned d), 0 = direct bounds-checked stores
  int64_t ldd;
  int64_t ldc;
};

}  // namespace deepgemm_ops
