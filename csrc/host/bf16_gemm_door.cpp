// The door of the BF16 GEMM ops (dense in the four layouts, m-grouped contiguous and masked NT; functional and _out),
// built like the FP8 door (gemm_door.cpp): a table from problem key to an installed plan. A call whose problem has a
// plan and whose tensors pass the acceptance predicate below launches from here; anything else returns None and
// deepgemm_ops/_cuda.py takes the planning path (validation and its messages, heuristics, codegen, JIT, install).
//
// The predicate is a subset of what the Python validation accepts: dtypes, shapes, devices, the TMA rule of every
// operand (unit stride along its rows, a row stride that is a multiple of 8 elements and at least the row length, a
// 16-byte aligned start), 32-bit extents, no zero strides, groups back to back; zero-sized problems take the Python
// path.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "door_predicates.hpp"
#include "kernel_loader.hpp"
#include "python_bindings.hpp"
#include "shared_table.hpp"
#include "sm90_bf16_gemm_launch.hpp"

// A named namespace: load_inline compiles every host source as one translation unit, where the FP8 door's
// anonymous-namespace helpers live too.
namespace deepgemm_ops::bf16_door {

using door::on;

using Plan = door::Plan<Bf16GemmKernelConfig>;
using door::PlanKey;

SharedTable<PlanKey, Plan, door::PlanKeyHash>& plans() { return door::plans<Bf16GemmKernelConfig>(); }

// --- the acceptance predicate ----------------------------------------------------------------------------------

// Row stride of an [m, n] output or addend as the kernel takes it (the one row of a 1-row matrix may carry any
// stride); [G, Mmax, N] outputs keep theirs, which also steps over the groups.
int64_t row_stride(const at::Tensor& t) { return t.dim() == 2 && t.size(0) == 1 ? t.size(1) : t.stride(-2); }

// layout: index into BF16_LAYOUTS (0 nt, 1 nn, 2 tn, 3 tt; grouped: 0). out_code: -1 = out_dtype None, 0 = bf16,
// 1 = fp32, anything else = not for the door. num_sms: the set_num_sms value, 0 when unset.
pybind11::object bf16_gemm_door(int64_t layout, int64_t gemm_type, const at::Tensor& a, const at::Tensor& b,
                                const std::optional<at::Tensor>& c, const std::optional<at::Tensor>& out,
                                const std::optional<at::Tensor>& grouped_layout, int64_t expected_m, int64_t out_code,
                                int64_t num_sms) {
  const auto none = pybind11::none();
  if (!a.is_cuda() || layout < 0 || layout > 3 || gemm_type < 0 || gemm_type > 2) return none;
  const at::Device device = a.device();
  const auto type = static_cast<GemmType>(gemm_type);
  const bool masked = type == GemmType::Masked, grouped = type != GemmType::Normal;
  if (grouped && layout != 0) return none;
  // A bf16 operand as TMA reads it (_validate.check_bf16_gpu_operand): a row stride that is a multiple of 8 elements.
  if (!door::tma_operand(a, device, at::kBFloat16, masked ? 3 : 2, 8) ||
      !door::tma_operand(b, device, at::kBFloat16, grouped ? 3 : 2, 8)) {
    return none;
  }
  const bool a_mn = bf16_a_mn_major(static_cast<int>(layout)), b_mn = bf16_b_mn_major(static_cast<int>(layout));
  const int64_t groups = grouped ? b.size(0) : 1;
  const int64_t m = a_mn ? a.size(1) : a.size(-2), k = a_mn ? a.size(0) : a.size(-1);
  const int64_t n = b_mn ? b.size(1) : b.size(-2), b_k = b_mn ? b.size(0) : b.size(-1);
  if (m < 1 || n < 1 || k < 1 || groups < 1 || b_k != k) return none;
  if (masked && (a.size(0) != groups || expected_m < 1)) return none;
  if (grouped && !door::grouped_layout_ok(grouped_layout, c, device, masked, groups, m)) return none;
  const bool has_c = c.has_value();
  if (has_c && !door::c_ok(*c, device, m, n)) return none;
  const int out_dtype = door::out_dtype_code(out, device, masked, grouped, groups, m, n, has_c, out_code);
  const int sms = door::sm_budget(num_sms, device);
  if (out_dtype < 0 || sms == 0) return none;
  const std::optional<Plan> plan =
      plans().find(door::plan_key(device.index(), gemm_type, layout, m, n, k, groups, expected_m, out_dtype, has_c,
                                  sms));
  if (!plan) return none;

  at::Tensor d;
  const std::string error = no_throw([&] {
    c10::cuda::CUDAGuard guard(device);
    const at::Tensor layout_t = grouped ? grouped_layout->contiguous() : at::Tensor();
    d = door::output_tensor(out, a, out_dtype, masked, groups, m, n);
    Bf16GemmArgs args{};
    args.a = a.data_ptr();
    args.b = b.data_ptr();
    args.c = has_c ? c->data_ptr<float>() : nullptr;
    args.d = d.data_ptr();
    args.grouped_layout = grouped ? layout_t.data_ptr<int32_t>() : nullptr;
    args.m = static_cast<int>(m);
    args.n = static_cast<int>(n);
    args.k = static_cast<int>(k);
    args.num_groups = static_cast<int>(groups);
    args.lda = a.stride(-2);
    args.ldb = b.stride(-2);
    args.ldc = has_c ? row_stride(*c) : 0;
    args.ldd = row_stride(d);
    launch_bf16_gemm(plan->kernel->function, plan->cfg, args, c10::cuda::getCurrentCUDAStream(device.index()).stream());
  });
  if (!error.empty()) return pybind11::str(error);
  return out ? pybind11::object(pybind11::bool_(true)) : pybind11::cast(d);
}

// Called by the planning path after it loaded kernel `key` for this problem; the config is checked here, once.
std::string install_bf16_gemm_plan(int64_t device, int64_t layout, int64_t gemm_type, int64_t m, int64_t n, int64_t k,
                                   int64_t num_groups, int64_t expected_m, int64_t out_dtype, bool has_c,
                                   int64_t num_sms, const std::string& key, const std::vector<int>& cfg_ints) {
  return no_throw([&] {
    const auto cfg = door::config_from_ints<Bf16GemmKernelConfig>(cfg_ints, "install_bf16_gemm_plan");
    check_bf16_gemm_config(cfg);
    require(cfg.layout == layout && cfg.gemm_type == gemm_type && cfg.out_dtype == out_dtype &&
                cfg.has_c == static_cast<int>(has_c),
            "install_bf16_gemm_plan: kernel '", key, "' (layout ", cfg.layout, ", gemm_type ", cfg.gemm_type,
            ", out_dtype ", cfg.out_dtype, ", has_c ", cfg.has_c, ") does not fit the problem (", layout, ", ",
            gemm_type, ", ", out_dtype, ", ", has_c, ")");
    door::install_plan(door::plan_key(device, gemm_type, layout, m, n, k, num_groups, expected_m, out_dtype, has_c,
                                      num_sms),
                       key, cfg, "install_bf16_gemm_plan");
  });
}

void bind_bf16_gemm_door(pybind11::module_& m) {
  m.def("bf16_gemm_door", &bf16_gemm_door,
        "A BF16 GEMM op call with an installed plan: the output (functional) or True (launched into `out`); None: "
        "take the planning path; or an error text. See deepgemm_ops/_cuda.py.");
  m.def("install_bf16_gemm_plan", &install_bf16_gemm_plan,
        "Install the loaded kernel `key` with its config as the plan of a BF16 GEMM problem; returns \"\" or the "
        "error.");
  m.def("clear_bf16_gemm_plans", [] { return plans().clear(); },
        "Forget every installed BF16 plan (loaded kernels stay loaded); returns how many there were.");
}

const PythonBindings kBf16GemmDoorBindings(bind_bf16_gemm_door);

}  // namespace deepgemm_ops::bf16_door
