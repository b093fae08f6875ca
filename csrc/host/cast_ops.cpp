// CUDA entry of the FP8 casts: allocates (q, sf), fills Fp8CastParams and launches the loaded JIT kernel on the
// current stream of x's device. Python (deepgemm_ops/_cuda.py) has validated the arguments and loaded the kernel for
// (kind, dtype); this file re-checks what could touch memory out of bounds and refuses instead.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>
#include <string>

#include "../kernels/params.h"
#include "kernel_loader.hpp"
#include "python_bindings.hpp"
#include "shared_table.hpp"

namespace deepgemm_ops {
namespace {

// The same order as CastDtype (params.h) and deepgemm_ops._codegen.CAST_DTYPES.
at::ScalarType cast_input_type(CastDtype dtype) {
  switch (dtype) {
    case CastDtype::BFloat16: return at::kBFloat16;
    case CastDtype::Float16: return at::kHalf;
    default: return at::kFloat;
  }
}

void launch_cast(const LoadedKernel& kernel, const Fp8CastParams& params, unsigned grid_x, unsigned grid_y,
            const at::Device& device) {
  CUlaunchConfig launch{};
  launch.gridDimX = grid_x;
  launch.gridDimY = grid_y;
  launch.gridDimZ = 1;
  launch.blockDimX = kCastThreads;
  launch.blockDimY = 1;
  launch.blockDimZ = 1;
  launch.hStream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  void* args[] = {const_cast<Fp8CastParams*>(&params)};
  launch_kernel(launch, kernel.function, args, "cuLaunchKernelEx(fp8 cast)");
}

// The same order as deepgemm_ops._codegen.CAST_KINDS.
enum CastKind : int64_t {
  kPerToken = 0,
  kPerBlock = 1,
  kPerTokenTransposed = 2,
  kPerBlockTransposing = 3,
  kPerTokenTransposing = 4,
  kPerTokenTransposingSumming = 5
};
constexpr int64_t kNumCastKinds = 6;

// Whether the kernel of `kind` reads x in place: 16-byte vectors along the contiguous dimension (K for the direct
// casts, the rows of the stored tensor for the transposed one), 16-byte aligned lines, the grid's y limit.
bool fused_cast_reads(int64_t kind, const at::Tensor& x, int64_t vec) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 != 0 || ceil_div(cols, kScaleBlock) > kMaxCastColumnGroups) {
    return false;
  }
  if (kind == kPerTokenTransposed) {  // x is the transpose of a [cols, rows] row-major tensor
    return (rows == 1 || x.stride(0) == 1) && rows % vec == 0 && (cols == 1 || x.stride(1) % vec == 0);
  }
  if ((kind == kPerBlockTransposing || kind == kPerTokenTransposing || kind == kPerTokenTransposingSumming) &&
      rows % 16 != 0) {
    return false;  // q_t's rows are 16-byte vectors of x's rows
  }
  return (cols <= 1 || x.stride(1) == 1) && cols % vec == 0 && (rows <= 1 || x.stride(0) % vec == 0);
}

// The loaded kernel of each (device, kind, dtype), installed by the Python side after it compiled and loaded it.
// Never destroyed, like the kernel registry.
SharedTable<int64_t, const LoadedKernel*>& cast_kernels() {
  static auto* table = new SharedTable<int64_t, const LoadedKernel*>();
  return *table;
}

int64_t cast_slot(int device, int64_t kind, int64_t dtype) {
  return (int64_t{device} * kNumCastKinds + kind) * 3 + dtype;
}

// Per-token scales [rows, groups], MN-major (the M stride padded to 4, 16 bytes: the layout the GEMM kernels read)
// or row-major.
at::Tensor per_token_scales(int64_t rows, int64_t groups, bool mn_major, const at::TensorOptions& options) {
  if (mn_major) return at::empty_strided({rows, groups}, {1, tma_aligned_scale_rows(rows)}, options.dtype(at::kFloat));
  return at::empty({rows, groups}, options.dtype(at::kFloat));
}

// x validated by the caller (2-D bfloat16 / float16 / float32, group 128). per_block: the 128 x 128 recipe, else
// per-token (x contiguous along K, or the transpose of a row-major tensor). mn_major_sf (per-token): scales MN-major.
// with_transpose: also the cast of x's transpose, (q_t, sf_t) — per-block: q_t and sf_t are q and sf transposed;
// per-token: 1 x 128 groups along x's columns, sf_t [cols, ceil(rows/128)] MN-major when mn_major_sf_t. with_sums
// (per-token with_transpose only): also x's column sums, fp32 [cols]. Returns (q, sf), (q, sf, q_t, sf_t) or (q, sf,
// q_t, sf_t, sums); None when no fused kernel reads x in place (the caller runs the torch composite); the kind (an
// int) whose kernel is not installed on x's device yet (the caller loads it, installs it and calls again); or an
// error text.
pybind11::object fp8_cast(const at::Tensor& x, bool per_block, bool mn_major_sf, bool with_transpose,
                          bool mn_major_sf_t, bool with_sums, int64_t dtype_code) {
  if (!x.is_cuda() || x.dim() != 2 || dtype_code < 0 || dtype_code > 2) return pybind11::none();
  if (with_sums && (per_block || !with_transpose)) return pybind11::str("ValueError: fp8_cast: with_sums needs the "
                                                                        "per-token transposing cast");
  const auto dtype = static_cast<CastDtype>(dtype_code);
  if (x.scalar_type() != cast_input_type(dtype)) return pybind11::none();
  const int64_t vec = cast_vector_elems(dtype);
  int64_t kind = with_transpose ? (per_block ? kPerBlockTransposing
                                             : with_sums ? kPerTokenTransposingSumming : kPerTokenTransposing)
                                : per_block ? kPerBlock : kPerToken;
  if (!fused_cast_reads(kind, x, vec)) {
    if (kind != kPerToken || !fused_cast_reads(kPerTokenTransposed, x, vec)) return pybind11::none();
    kind = kPerTokenTransposed;
  }
  const bool block_scales = kind == kPerBlock || kind == kPerBlockTransposing;
  const int64_t rows = x.size(0), cols = x.size(1);
  const LoadedKernel* kernel = nullptr;
  if (rows > 0 && cols > 0) {
    const std::optional<const LoadedKernel*> installed = cast_kernels().find(cast_slot(x.get_device(), kind,
                                                                                       dtype_code));
    if (!installed) return pybind11::int_(kind);
    kernel = *installed;
  }
  at::Tensor q, sf, q_t, sf_t, sums;
  const std::string error = no_throw([&] {
    const int64_t groups = ceil_div(cols, kScaleBlock);
    c10::cuda::CUDAGuard guard(x.device());
    const auto options = x.options();
    q = at::empty({rows, cols}, options.dtype(at::kFloat8_e4m3fn));
    const int64_t sf_rows = block_scales ? ceil_div(rows, kScaleBlock) : rows;
    sf = per_token_scales(sf_rows, groups, !block_scales && mn_major_sf, options);
    if (with_transpose) {
      q_t = at::empty({cols, rows}, options.dtype(at::kFloat8_e4m3fn));
      sf_t = block_scales ? at::empty({groups, sf_rows}, options.dtype(at::kFloat))
                          : per_token_scales(cols, ceil_div(rows, kScaleBlock), mn_major_sf_t, options);
    }
    at::Tensor block_sums;  // per 128-row block, summed below in a fixed order (deterministic, unlike atomics)
    if (with_sums) {
      if (kernel == nullptr) sums = at::zeros({cols}, options.dtype(at::kFloat));
      else block_sums = at::empty({ceil_div(rows, kScaleBlock), cols}, options.dtype(at::kFloat));
    }
    if (kernel == nullptr) return;  // nothing to cast
    Fp8CastParams params{};
    params.x = x.data_ptr();
    params.q = q.data_ptr();
    params.sf = sf.data_ptr<float>();
    params.rows = rows;
    params.cols = cols;
    if (kind == kPerTokenTransposed) {
      params.ld_x = cols == 1 ? rows : x.stride(1);
    } else {
      params.ld_x = rows == 1 ? cols : x.stride(0);
    }
    params.ld_q = cols;
    params.sf_stride_row = sf.stride(0);
    params.sf_stride_col = sf.stride(1);
    if (with_transpose) {
      params.q_t = q_t.data_ptr();
      params.sf_t = sf_t.data_ptr<float>();
      params.sf_t_stride_row = sf_t.stride(0);
      params.sf_t_stride_col = sf_t.stride(1);
    }
    params.col_sums = with_sums ? block_sums.data_ptr<float>() : nullptr;
    const int64_t rows_per_cta = kind == kPerToken             ? per_token_rows_per_cta(dtype)
                                 : kind == kPerTokenTransposed ? kTransposeTileRows
                                                               : kScaleBlock;
    const int64_t grid_x = ceil_div(rows, rows_per_cta);
    require(grid_x <= 0x7fffffff, "fp8_cast: ", rows, " rows exceed the grid");
    launch_cast(*kernel, params, static_cast<unsigned>(grid_x), static_cast<unsigned>(groups), x.device());
    if (with_sums) sums = block_sums.sum(0);
  });
  if (!error.empty()) return pybind11::str(error);
  if (with_sums) return pybind11::make_tuple(q, sf, q_t, sf_t, sums);
  if (with_transpose) return pybind11::make_tuple(q, sf, q_t, sf_t);
  return pybind11::make_tuple(q, sf);
}

std::string install_cast_kernel(int64_t device, int64_t kind, int64_t dtype_code, const std::string& key) {
  return no_throw([&] {
    require(kind >= 0 && kind < kNumCastKinds, "install_cast_kernel: kind must be in [0, ", kNumCastKinds, "), got ",
            kind);
    require(dtype_code >= 0 && dtype_code <= 2, "install_cast_kernel: dtype code must be 0, 1 or 2, got ", dtype_code);
    const LoadedKernel* kernel = KernelRegistry::instance().find(key, static_cast<int>(device));
    require(kernel != nullptr, "install_cast_kernel: kernel '", key, "' is not loaded on cuda:", device);
    cast_kernels().insert(cast_slot(static_cast<int>(device), kind, dtype_code), kernel);
  });
}

void bind_cast_ops(pybind11::module_& m) {
  m.def("fp8_cast", &fp8_cast,
        "A fused FP8 cast (see deepgemm_ops/_cuda.py): (q, sf); None (no fused kernel reads x: the composite); the "
        "kind whose kernel is not installed yet; or the error text.");
  m.def("install_cast_kernel", &install_cast_kernel,
        "Install the loaded kernel `key` as the cast kernel of (device, kind, dtype); returns \"\" or the error.");
}

const PythonBindings kCastOpsBindings(bind_cast_ops);

}  // namespace
}  // namespace deepgemm_ops
