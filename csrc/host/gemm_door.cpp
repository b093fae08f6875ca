// The one door of every FP8 GEMM op (dense, m-grouped contiguous, m-grouped masked; functional and _out): a table
// from problem key to an installed plan (loaded kernel + config, checked once at install). A call whose problem has
// a plan and whose tensors pass the acceptance predicate below is launched from here, without Python in between.
// Anything else returns None and the caller (deepgemm_ops/_cuda.py) takes the planning path: it validates (the one
// place that writes error messages), plans (heuristics -> codegen -> JIT -> load), installs the plan and re-enters.
//
// The predicate is a subset of what the Python validation accepts, so a door hit never skips an error: it checks
// dtypes, shapes, devices, the K-major / TMA alignment / 32-bit extent rules of the kernels and the absence of
// zero strides (a bias: [N], unit stride, D's dtype); zero-sized problems always take the Python path. It makes the
// layouts the kernel reads the way the Python path does (sfa MN-major with the TMA-aligned M stride, sfb
// contiguous).
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
#include "sm90_fp8_gemm_launch.hpp"

namespace deepgemm_ops {
namespace {

using door::kMaxExtent;
using door::on;

using Plan = door::Plan<Fp8GemmKernelConfig>;
using door::PlanKey;

SharedTable<PlanKey, Plan, door::PlanKeyHash>& plans() { return door::plans<Fp8GemmKernelConfig>(); }

// --- the acceptance predicate ----------------------------------------------------------------------------------

// sfb's recipe from its shape, in _validate._check_sfb's order (the 128x128 shape wins when both match, N <= 128
// with N = ceil(N/128)); -1 when it is neither.
int sfb_recipe_of(const at::Tensor& sfb, const at::Device& device, int64_t groups, int64_t n, int64_t kb) {
  const int64_t lead = groups > 0 ? 1 : 0;
  if (!on(sfb, device, at::kFloat, 2 + lead) || sfb.size(-1) != kb || (lead && sfb.size(0) != groups)) return -1;
  if (sfb.size(-2) == ceil_div(n, kScaleBlock)) return static_cast<int>(SfbRecipe::Block128x128);
  if (sfb.size(-2) == n) return static_cast<int>(SfbRecipe::Row1x128);
  return -1;
}

// Op codes of the door (deepgemm_ops._cuda.DOOR_OPS): the GEMM type; `out` given or not tells _out from functional.
// out_code: -1 = out_dtype None, 0 = bfloat16, 1 = float32, anything else = not for the door (Python raises).
// num_sms: the set_num_sms value, 0 when unset (then the SM count of the inputs' device).
pybind11::object gemm_door(int64_t gemm_type, const at::Tensor& a, const at::Tensor& sfa, const at::Tensor& b,
                           const at::Tensor& sfb, const std::optional<at::Tensor>& c,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& out,
                           const std::optional<at::Tensor>& grouped_layout,
                           int64_t expected_m, int64_t out_code, int64_t num_sms) {
  const auto none = pybind11::none();
  if (!a.is_cuda()) return none;
  const at::Device device = a.device();
  const auto type = static_cast<GemmType>(gemm_type);
  const bool masked = type == GemmType::Masked, grouped = type != GemmType::Normal;
  if (gemm_type < 0 || gemm_type > 2) return none;
  // [.., rows, K] e4m3, K-major, 16-byte aligned rows (TMA), groups back to back.
  if (!door::tma_operand(a, device, at::kFloat8_e4m3fn, masked ? 3 : 2, 16) ||
      !door::tma_operand(b, device, at::kFloat8_e4m3fn, grouped ? 3 : 2, 16)) {
    return none;
  }
  const int64_t groups = grouped ? b.size(0) : 1;
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-2);
  if (m < 1 || n < 1 || groups < 1 || k < 16 || k % 16 != 0 || b.size(-1) != k || n > kMaxExtent) return none;
  if (masked && (a.size(0) != groups || expected_m < 1)) return none;
  const int64_t kb = ceil_div(k, kScaleBlock);
  if (!on(sfa, device, at::kFloat, masked ? 3 : 2) || sfa.size(-2) != m || sfa.size(-1) != kb ||
      (masked && sfa.size(0) != groups)) {
    return none;
  }
  const int recipe = sfb_recipe_of(sfb, device, grouped ? groups : 0, n, kb);
  if (recipe < 0) return none;
  if (grouped && !door::grouped_layout_ok(grouped_layout, c, device, masked, groups, m)) return none;
  const bool has_c = c.has_value();
  if (has_c && !door::c_ok(*c, device, m, n)) return none;
  const int out_dtype = door::out_dtype_code(out, device, masked, grouped, groups, m, n, has_c, out_code);
  const int sms = door::sm_budget(num_sms, device);
  if (out_dtype < 0 || sms == 0) return none;
  // bias: normal GEMMs, [N] contiguous in D's dtype.
  if (bias && (grouped || !on(*bias, device, out_dtype == 1 ? at::kFloat : at::kBFloat16, 1) || bias->size(0) != n ||
               bias->stride(0) != 1)) {
    return none;
  }
  const std::optional<Plan> plan =
      plans().find(door::plan_key(device.index(), gemm_type, recipe, m, n, k, groups, expected_m, out_dtype, has_c,
                                  sms));
  if (!plan) return none;

  at::Tensor d;
  const std::string error = no_throw([&] {
    c10::cuda::CUDAGuard guard(device);
    const int64_t ld_sfa = tma_aligned_scale_rows(m);
    const at::Tensor sfa_mn = door::mn_major_sfa(sfa, ld_sfa);
    const at::Tensor sfb_c = sfb.contiguous();
    const at::Tensor layout = grouped ? grouped_layout->contiguous() : at::Tensor();
    d = door::output_tensor(out, a, out_dtype, masked, groups, m, n);
    const Fp8GemmKernelConfig& cfg = plan->cfg;
    // Split-K's partial tiles: stream-ordered scratch from the caching allocator (a graph capture keeps its own).
    const at::Tensor split_ws =
        cfg.num_splits > 1
            ? at::empty({split_workspace_floats(cfg.num_splits, cfg.block_m, cfg.block_n, m, n)}, a.options().dtype(at::kFloat))
            : at::Tensor();
    Fp8GemmArgs args{};
    args.a = a.data_ptr();
    args.sfa = sfa_mn.data_ptr<float>();
    args.b = b.data_ptr();
    args.sfb = sfb_c.data_ptr<float>();
    args.c = has_c ? c->data_ptr<float>() : nullptr;
    args.bias = bias ? bias->data_ptr() : nullptr;
    args.d = d.data_ptr();
    args.grouped_layout = grouped ? layout.data_ptr<int32_t>() : nullptr;
    args.split_ws = cfg.num_splits > 1 ? split_ws.data_ptr<float>() : nullptr;
    args.m = static_cast<int>(m);
    args.n = static_cast<int>(n);
    args.k = static_cast<int>(k);
    args.num_groups = static_cast<int>(groups);
    args.lda = a.stride(-2);
    args.ldb = b.stride(-2);
    args.ld_sfa = ld_sfa;
    args.ldc = has_c ? c->stride(0) : 0;
    args.ldd = d.stride(-2);
    launch_fp8_gemm(plan->kernel->function, cfg, args, c10::cuda::getCurrentCUDAStream(device.index()).stream());
  });
  if (!error.empty()) return pybind11::str(error);
  return out ? pybind11::object(pybind11::bool_(true)) : pybind11::cast(d);
}

// Called by the planning path after it loaded kernel `key` for this problem (deepgemm_ops/_cuda.py). The config is
// checked here, once, against what the kernels accept.
std::string install_gemm_plan(int64_t device, int64_t gemm_type, int64_t m, int64_t n, int64_t k, int64_t num_groups,
                              int64_t expected_m, int64_t sfb_recipe, int64_t out_dtype, bool has_c, int64_t num_sms,
                              const std::string& key, const std::vector<int>& cfg_ints) {
  return no_throw([&] {
    const auto cfg = door::config_from_ints<Fp8GemmKernelConfig>(cfg_ints, "install_gemm_plan");
    check_fp8_gemm_config(cfg);
    require(cfg.gemm_type == gemm_type && cfg.sfb_recipe == sfb_recipe && cfg.out_dtype == out_dtype &&
                cfg.has_c == static_cast<int>(has_c),
            "install_gemm_plan: kernel '", key, "' (gemm_type ", cfg.gemm_type, ", sfb_recipe ", cfg.sfb_recipe,
            ", out_dtype ", cfg.out_dtype, ", has_c ", cfg.has_c, ") does not fit the problem (", gemm_type, ", ",
            sfb_recipe, ", ", out_dtype, ", ", has_c, ")");
    door::install_plan(door::plan_key(device, gemm_type, sfb_recipe, m, n, k, num_groups, expected_m, out_dtype, has_c,
                                      num_sms),
                       key, cfg, "install_gemm_plan");
  });
}

void bind_gemm_door(pybind11::module_& m) {
  m.def("gemm_door", &gemm_door,
        "An FP8 GEMM op call with an installed plan: the output (functional) or True (launched into `out`); None: no "
        "plan or not the well-formed case, take the planning path; or an error text. See deepgemm_ops/_cuda.py.");
  m.def("install_gemm_plan", &install_gemm_plan,
        "Install the loaded kernel `key` with its config as the plan of a GEMM problem; returns \"\" or the error.");
  m.def("clear_gemm_plans", [] { return plans().clear(); },
        "Forget every installed plan (loaded kernels stay loaded); returns how many there were.");
  m.def("num_gemm_plans", [] { return plans().size(); });
}

const PythonBindings kGemmDoorBindings(bind_gemm_door);

}  // namespace
}  // namespace deepgemm_ops
