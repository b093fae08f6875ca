// The door of the k-grouped FP8 GEMM ops (k_grouped_fp8_gemm_nt_contiguous, functional and _out): the FP8 kernel
// family's GemmType::KGrouped, so its plans live in the FP8 door's table (installed by install_gemm_plan with
// gemm_type 3) and launch through launch_fp8_gemm; only the operands differ from the m-grouped ops, hence this
// predicate. A call whose problem has a plan and whose tensors pass it launches from here; anything else returns None
// and deepgemm_ops/_cuda.py takes the planning path (validation and its messages, heuristics, codegen, JIT, install).
//
// The predicate is a subset of what the Python validation accepts: a [M, sum K] and b [N, sum K] e4m3 as TMA reads
// them (K-major, 16-byte aligned rows and start), sum K a positive multiple of 128, sfa [M, sum K / 128] and sfb
// [N, sum K / 128] fp32, ks int32 [G] with G >= 1, C and out fp32 [G, M, N] whose groups are rows of one
// [G * M, N] matrix, 32-bit extents; zero-sized problems take the Python path. The values of ks are read by the kernel
// only (CUDA-graph safe); it clamps them to the k-blocks of A and B.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <cstdint>
#include <optional>
#include <string>

#include "door_predicates.hpp"
#include "kernel_loader.hpp"
#include "python_bindings.hpp"
#include "shared_table.hpp"
#include "sm90_fp8_gemm_launch.hpp"

// A named namespace: load_inline compiles every host source as one translation unit.
namespace deepgemm_ops::k_grouped_door {

using door::kMaxExtent;
using door::on;

// Row stride of an fp32 [groups, m, n] tensor read as the rows of one [groups * m, n] matrix (unit column stride,
// groups back to back, rows at least n apart; a size-1 dim may carry any stride), or -1 when it cannot be.
int64_t flat_row_stride(const at::Tensor& t, const at::Device& device, int64_t groups, int64_t m, int64_t n) {
  if (!on(t, device, at::kFloat, 3) || t.size(0) != groups || t.size(1) != m || t.size(2) != n ||
      t.stride(2) != 1 || !door::no_zero_stride(t)) {
    return -1;
  }
  const int64_t ld = m > 1 ? t.stride(1) : groups > 1 ? t.stride(0) : n;
  return ld >= n && (m == 1 || groups == 1 || t.stride(0) == m * ld) ? ld : -1;
}

// num_sms: the set_num_sms value, 0 when unset (then the SM count of the inputs' device).
pybind11::object k_grouped_gemm_door(const at::Tensor& a, const at::Tensor& sfa, const at::Tensor& b,
                                     const at::Tensor& sfb, const at::Tensor& ks, const std::optional<at::Tensor>& c,
                                     const std::optional<at::Tensor>& out, int64_t num_sms) {
  const auto none = pybind11::none();
  if (!a.is_cuda()) return none;
  const at::Device device = a.device();
  if (!door::tma_operand(a, device, at::kFloat8_e4m3fn, 2, 16) ||
      !door::tma_operand(b, device, at::kFloat8_e4m3fn, 2, 16)) {
    return none;
  }
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  if (m < 1 || n < 1 || k < kScaleBlock || k % kScaleBlock != 0 || b.size(1) != k) return none;
  const int64_t kb = k / kScaleBlock;
  if (!on(sfa, device, at::kFloat, 2) || sfa.size(0) != m || sfa.size(1) != kb || !on(sfb, device, at::kFloat, 2) ||
      sfb.size(0) != n || sfb.size(1) != kb || !on(ks, device, at::kInt, 1)) {
    return none;
  }
  const int64_t groups = ks.size(0);
  if (groups < 1 || groups * m > kMaxExtent) return none;
  const bool has_c = c.has_value();
  const int64_t ldc = has_c ? flat_row_stride(*c, device, groups, m, n) : 0;
  const int64_t ldd = out ? flat_row_stride(*out, device, groups, m, n) : n;
  const int sms = door::sm_budget(num_sms, device);
  if (ldc < 0 || ldd < 0 || sms == 0) return none;
  const std::optional<door::Plan<Fp8GemmKernelConfig>> plan = door::plans<Fp8GemmKernelConfig>().find(
      door::plan_key(device.index(), static_cast<int>(GemmType::KGrouped), static_cast<int>(SfbRecipe::Row1x128), m,
                     n, k, groups, 0, 1, has_c, sms));
  if (!plan) return none;

  at::Tensor d;
  const std::string error = no_throw([&] {
    c10::cuda::CUDAGuard guard(device);
    const int64_t ld_sfa = tma_aligned_scale_rows(m);
    const at::Tensor sfa_mn = door::mn_major_sfa(sfa, ld_sfa);
    const at::Tensor sfb_c = sfb.contiguous();
    const at::Tensor ks_c = ks.contiguous();
    d = out ? *out : at::empty({groups, m, n}, a.options().dtype(at::kFloat));
    Fp8GemmArgs args{};
    args.a = a.data_ptr();
    args.sfa = sfa_mn.data_ptr<float>();
    args.b = b.data_ptr();
    args.sfb = sfb_c.data_ptr<float>();
    args.c = has_c ? c->data_ptr<float>() : nullptr;  // may be d itself: the kernel reads each element before it writes it
    args.d = d.data_ptr();
    args.grouped_layout = ks_c.data_ptr<int32_t>();
    args.m = static_cast<int>(m);
    args.n = static_cast<int>(n);
    args.k = static_cast<int>(k);
    args.num_groups = static_cast<int>(groups);
    args.lda = a.stride(0);
    args.ldb = b.stride(0);
    args.ld_sfa = ld_sfa;
    args.ldc = ldc;
    args.ldd = ldd;
    launch_fp8_gemm(plan->kernel->function, plan->cfg, args, c10::cuda::getCurrentCUDAStream(device.index()).stream());
  });
  if (!error.empty()) return pybind11::str(error);
  return out ? pybind11::object(pybind11::bool_(true)) : pybind11::cast(d);
}

void bind_k_grouped_gemm_door(pybind11::module_& m) {
  m.def("k_grouped_gemm_door", &k_grouped_gemm_door,
        "A k-grouped FP8 GEMM op call with an installed plan: the output (functional) or True (launched into `out`); "
        "None: take the planning path; or an error text. See deepgemm_ops/_cuda.py.");
}

const PythonBindings kKGroupedGemmDoorBindings(bind_k_grouped_gemm_door);

}  // namespace deepgemm_ops::k_grouped_door
