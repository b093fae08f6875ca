// Tensors -> Fp8GemmArgs -> one launch of a loaded JIT kernel on the current stream of the inputs' device. Shared by
// the generic launch entry (gemm_ops.cpp) and the per-call fast path (gemm_fast_path.cpp).
#pragma once
#include <torch/extension.h>

#include <optional>

#include "fp8_gemm_launch.hpp"
#include "kernel_loader.hpp"

namespace deepgemm_ops {

// a, b: [rows, K] views (grouped operands flattened to 2-D by the caller); d: [rows, N]; sfa MN-major with M stride
// ld_sfa; strides in elements. Throws std::invalid_argument / std::runtime_error (launch_fp8_gemm validates every
// argument against cfg before launching).
void launch_loaded(const LoadedKernel& kernel, const Fp8GemmKernelConfig& cfg, const at::Tensor& a,
                   const at::Tensor& sfa, int64_t ld_sfa, const at::Tensor& b, const at::Tensor& sfb,
                   const std::optional<at::Tensor>& c, const at::Tensor& d,
                   const std::optional<at::Tensor>& grouped_layout, int64_t m, int64_t n, int64_t k,
                   int64_t num_groups);

// Fp8GemmKernelConfig from GemmConfig.as_ints().
Fp8GemmKernelConfig config_from_ints(const std::vector<int>& v);

}  // namespace deepgemm_ops
