// CUDA launch entry of the FP8 GEMM ops: tensors -> Fp8GemmArgs -> the JIT kernel for `key` on the inputs' device,
// on that device's current stream. Python has already validated the arguments (deepgemm_ops/_validate.py) and made
// the layouts the kernel reads (MN-major TMA-aligned sfa, contiguous sfb); the launcher re-checks what could touch
// memory out of bounds. (gemm_fast_path.cpp short-cuts repeated fp8_gemm_nt calls.)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>
#include <type_traits>
#include <vector>

#include "gemm_launch.hpp"
#include "python_bindings.hpp"

namespace deepgemm_ops {

// Fp8GemmKernelConfig is a flat list of ints in GemmConfig.as_ints() order (fp8_gemm_launch.hpp).
static_assert(std::is_standard_layout_v<Fp8GemmKernelConfig> && sizeof(Fp8GemmKernelConfig) % sizeof(int) == 0);

Fp8GemmKernelConfig config_from_ints(const std::vector<int>& v) {
  constexpr size_t kFields = sizeof(Fp8GemmKernelConfig) / sizeof(int);
  require(v.size() == kFields, "a kernel config has ", kFields, " fields, got ", v.size());
  Fp8GemmKernelConfig cfg{};
  std::copy(v.begin(), v.end(), reinterpret_cast<int*>(&cfg));
  return cfg;
}

void launch_loaded(const LoadedKernel& kernel, const Fp8GemmKernelConfig& cfg, const at::Tensor& a,
                   const at::Tensor& sfa, int64_t ld_sfa, const at::Tensor& b, const at::Tensor& sfb,
                   const std::optional<at::Tensor>& c, const at::Tensor& d,
                   const std::optional<at::Tensor>& grouped_layout, int64_t m, int64_t n, int64_t k,
                   int64_t num_groups) {
  c10::cuda::CUDAGuard guard(a.device());
  Fp8GemmArgs args{};
  args.a = a.data_ptr();
  args.sfa = sfa.data_ptr<float>();
  args.b = b.data_ptr();
  args.sfb = sfb.data_ptr<float>();
  args.c = c ? c->data_ptr<float>() : nullptr;
  args.d = d.data_ptr();
  args.grouped_layout = grouped_layout ? grouped_layout->data_ptr<int32_t>() : nullptr;
  args.m = static_cast<int>(m);
  args.n = static_cast<int>(n);
  args.k = static_cast<int>(k);
  args.num_groups = static_cast<int>(num_groups);
  args.lda = a.stride(0);
  args.ldb = b.stride(0);
  args.ld_sfa = ld_sfa;
  args.ldc = c ? c->stride(0) : 0;
  args.ldd = d.stride(0);
  launch_fp8_gemm(kernel.function, cfg, args, c10::cuda::getCurrentCUDAStream(a.get_device()).stream());
}

namespace {

void launch(const std::string& key, const std::vector<int>& cfg_ints, const at::Tensor& a, const at::Tensor& sfa,
            int64_t ld_sfa, const at::Tensor& b, const at::Tensor& sfb, const std::optional<at::Tensor>& c,
            const at::Tensor& d, const std::optional<at::Tensor>& grouped_layout, int64_t m, int64_t n, int64_t k,
            int64_t num_groups) {
  const auto device = a.get_device();
  const LoadedKernel* kernel = KernelRegistry::instance().find(key, device);
  if (kernel == nullptr) {
    throw std::runtime_error("deepgemm_ops: kernel '" + key + "' is not loaded on cuda:" + std::to_string(device) +
                             " (deepgemm_ops._cuda loads kernels before launching them)");
  }
  launch_loaded(*kernel, config_from_ints(cfg_ints), a, sfa, ld_sfa, b, sfb, c, d, grouped_layout, m, n, k,
                num_groups);
}

// Returns "" or the error text (deepgemm_ops._runtime.check raises it): see no_throw.
std::string fp8_gemm(const std::string& key, const std::vector<int>& cfg_ints, const at::Tensor& a,
                     const at::Tensor& sfa, int64_t ld_sfa, const at::Tensor& b, const at::Tensor& sfb,
                     const std::optional<at::Tensor>& c, const at::Tensor& d,
                     const std::optional<at::Tensor>& grouped_layout, int64_t m, int64_t n, int64_t k,
                     int64_t num_groups) {
  return no_throw([&] { launch(key, cfg_ints, a, sfa, ld_sfa, b, sfb, c, d, grouped_layout, m, n, k, num_groups); });
}

void bind_gemm_ops(pybind11::module_& m) {
  m.def("fp8_gemm", &fp8_gemm, "Launch the JIT FP8 GEMM kernel `key` (see deepgemm_ops/_cuda.py); returns \"\" or "
        "the error.");
}

const PythonBindings kGemmOpsBindings(bind_gemm_ops);

}  // namespace
}  // namespace deepgemm_ops
