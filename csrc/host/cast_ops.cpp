// CUDA entry of the FP8 casts: allocates (q, sf), fills Fp8CastParams and launches the loaded JIT kernel on the
// current stream of x's device. Python (deepgemm_ops/_cuda.py) has validated the arguments and loaded the kernel for
// (kind, dtype); this file re-checks what could touch memory out of bounds and refuses instead.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <string>

#include "../kernels/params.h"
#include "kernel_loader.hpp"
#include "python_bindings.hpp"

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
  check_cu(driver().LaunchKernelEx(&launch, kernel.function, args, nullptr), "cuLaunchKernelEx(fp8 cast)");
}

// kind 0: per-token (1 x 128 groups), 1: per-block (128 x 128). mn_major_sf (per-token only): scales MN-major with
// the M stride padded to 4 (16 bytes), the layout the GEMM kernels read. Returns (q, sf) or an error text.
pybind11::object fp8_cast(const std::string& key, int64_t kind, int64_t dtype_code, const at::Tensor& x,
                          bool mn_major_sf) {
  at::Tensor q, sf;
  const std::string error = no_throw([&] {
    require(kind == 0 || kind == 1, "fp8_cast: kind must be 0 (per-token) or 1 (per-block), got ", kind);
    require(dtype_code >= 0 && dtype_code <= 2, "fp8_cast: dtype code must be 0, 1 or 2, got ", dtype_code);
    const auto dtype = static_cast<CastDtype>(dtype_code);
    const int64_t vec = cast_vector_elems(dtype);
    require(x.is_cuda() && x.dim() == 2 && x.scalar_type() == cast_input_type(dtype),
            "fp8_cast: kernel '", key, "' needs a 2-D CUDA tensor of ", c10::toString(cast_input_type(dtype)));
    const int64_t rows = x.size(0), cols = x.size(1);
    const int64_t groups = ceil_div(cols, kScaleBlock);
    require(cols == 0 || (x.stride(1) == 1 && cols % vec == 0 && (rows == 1 || x.stride(0) % vec == 0) &&
                          reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && groups <= kMaxCastColumnGroups),
            "fp8_cast: x [", rows, ", ", cols, "] with strides (", x.stride(0), ", ", x.stride(1),
            ") is not a layout the fused cast kernel reads");
    c10::cuda::CUDAGuard guard(x.device());
    const auto options = x.options();
    q = at::empty({rows, cols}, options.dtype(at::kFloat8_e4m3fn));
    const int64_t sf_rows = kind == 0 ? rows : ceil_div(rows, kScaleBlock);
    if (kind == 0 && mn_major_sf) {
      sf = at::empty_strided({sf_rows, groups}, {1, tma_aligned_scale_rows(sf_rows)}, options.dtype(at::kFloat));
    } else {
      sf = at::empty({sf_rows, groups}, options.dtype(at::kFloat));
    }
    if (rows == 0 || cols == 0) return;
    const LoadedKernel* kernel = KernelRegistry::instance().find(key, x.get_device());
    require(kernel != nullptr, "fp8_cast: kernel '", key, "' is not loaded on cuda:", x.get_device(),
            " (deepgemm_ops._cuda loads kernels before launching them)");
    Fp8CastParams params{};
    params.x = x.data_ptr();
    params.q = q.data_ptr();
    params.sf = sf.data_ptr<float>();
    params.rows = rows;
    params.cols = cols;
    params.ld_x = rows == 1 ? cols : x.stride(0);
    params.ld_q = cols;
    params.sf_stride_row = sf.stride(0);
    params.sf_stride_col = sf.stride(1);
    const int64_t rows_per_cta = kind == 0 ? per_token_rows_per_cta(dtype) : kScaleBlock;
    const int64_t grid_x = ceil_div(rows, rows_per_cta);
    require(grid_x <= 0x7fffffff, "fp8_cast: ", rows, " rows exceed the grid");
    launch_cast(*kernel, params, static_cast<unsigned>(grid_x), static_cast<unsigned>(groups), x.device());
  });
  if (!error.empty()) return pybind11::str(error);
  return pybind11::make_tuple(q, sf);
}

void bind_cast_ops(pybind11::module_& m) {
  m.def("fp8_cast", &fp8_cast, "Launch the JIT FP8 cast kernel `key` (see deepgemm_ops/_cuda.py): (q, sf) or the "
        "error text.");
}

const PythonBindings kCastOpsBindings(bind_cast_ops);

}  // namespace
}  // namespace deepgemm_ops
