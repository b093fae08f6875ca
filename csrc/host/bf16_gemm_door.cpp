// The door of the BF16 GEMM ops (dense in the four layouts, m-grouped contiguous and masked NT; functional and _out),
// built like the FP8 door (gemm_door.cpp): a table from problem key to an installed plan. A call whose problem has a
// plan and whose tensors pass the acceptance predicate below launches from here; anything else returns None and
// deepgemm_ops/_cuda.py takes the planning path (validation and its messages, heuristics, codegen, JIT, install).
//
// The predicate is a subset of what the Python validation accepts: dtypes, shapes, devices, the TMA rule of every
// operand (unit stride along its rows, a row stride that is a multiple of 8 elements and at least the row length, a
// 16-byte aligned start), 32-bit extents, no zero strides, groups back to back; zero-sized problems take the Python path.
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

#include "kernel_loader.hpp"
#include "python_bindings.hpp"
#include "shared_table.hpp"
#include "sm90_bf16_gemm_launch.hpp"

// A named namespace: load_inline compiles every host source as one translation unit, where the FP8 door's
// anonymous-namespace helpers live too.
namespace deepgemm_ops::bf16_door {

static_assert(std::is_standard_layout_v<Bf16GemmKernelConfig> && sizeof(Bf16GemmKernelConfig) % sizeof(int) == 0);

constexpr int64_t kMaxExtent = 0x7fffffff;  // 32-bit TMA coordinates and kernel ints

struct PlanKey {
  int device;
  int layout;
  int gemm_type;
  int64_t m, n, k;
  int64_t num_groups;
  int64_t expected_m;  // masked only (0 otherwise)
  int out_dtype;       // 0 bf16, 1 fp32
  bool has_c;
  int num_sms;
  bool operator==(const PlanKey& o) const {
    return device == o.device && layout == o.layout && gemm_type == o.gemm_type && m == o.m && n == o.n && k == o.k &&
           num_groups == o.num_groups && expected_m == o.expected_m && out_dtype == o.out_dtype && has_c == o.has_c &&
           num_sms == o.num_sms;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& p) const {
    size_t h = std::hash<int64_t>()(p.m);
    for (int64_t v : {p.n, p.k, p.num_groups, p.expected_m, int64_t{p.device}, int64_t{p.layout},
                      int64_t{p.gemm_type}, int64_t{p.out_dtype}, static_cast<int64_t>(p.has_c), int64_t{p.num_sms}}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

struct Plan {
  const LoadedKernel* kernel;  // registry entries live as long as the process
  Bf16GemmKernelConfig cfg;
};

SharedTable<PlanKey, Plan, PlanKeyHash>& plans() {
  static auto* table = new SharedTable<PlanKey, Plan, PlanKeyHash>();  // never destroyed, like the kernel registry
  return *table;
}

// --- the acceptance predicate ----------------------------------------------------------------------------------

bool on(const at::Tensor& t, const at::Device& device, at::ScalarType dtype, int64_t dim) {
  return t.device() == device && t.scalar_type() == dtype && t.dim() == dim;
}

bool no_zero_stride(const at::Tensor& t) {
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (t.stride(i) == 0 && t.size(i) > 1) return false;
  }
  return true;
}

// A bf16 operand as TMA reads it (_validate.check_bf16_gpu_operand): [.., rows, cols] with unit column stride, a row
// stride that is a multiple of 8 and >= cols, a 16-byte aligned start, groups back to back.
bool tma_operand(const at::Tensor& t, const at::Device& device, int64_t dim) {
  if (!on(t, device, at::kBFloat16, dim) || t.stride(-1) != 1 || t.stride(-2) % 8 != 0 ||
      t.stride(-2) < t.size(-1) || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0 || !no_zero_stride(t)) {
    return false;
  }
  if (dim == 3 && t.size(0) > 1 && t.stride(0) != t.size(1) * t.stride(1)) return false;
  return t.numel() / t.size(-1) <= kMaxExtent && t.size(-1) <= kMaxExtent;
}

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
  if (!tma_operand(a, device, masked ? 3 : 2) || !tma_operand(b, device, grouped ? 3 : 2)) return none;
  const bool a_mn = bf16_a_mn_major(static_cast<int>(layout)), b_mn = bf16_b_mn_major(static_cast<int>(layout));
  const int64_t groups = grouped ? b.size(0) : 1;
  const int64_t m = a_mn ? a.size(1) : a.size(-2), k = a_mn ? a.size(0) : a.size(-1);
  const int64_t n = b_mn ? b.size(1) : b.size(-2), b_k = b_mn ? b.size(0) : b.size(-1);
  if (m < 1 || n < 1 || k < 1 || groups < 1 || b_k != k) return none;
  if (masked && (a.size(0) != groups || expected_m < 1)) return none;
  if (grouped && (!grouped_layout || !on(*grouped_layout, device, at::kInt, 1) ||
                  grouped_layout->size(0) != (masked ? groups : m) || c)) {
    return none;
  }
  const bool has_c = c.has_value();
  if (has_c && (!on(*c, device, at::kFloat, 2) || c->size(0) != m || c->size(1) != n || c->stride(1) != 1 ||
                !no_zero_stride(*c))) {
    return none;
  }
  int out_dtype;
  if (out) {
    const auto& o = *out;
    if (o.device() != device || o.dim() != (masked ? 3 : 2) || o.size(-2) != m || o.size(-1) != n ||
        (masked && o.size(0) != groups) || o.stride(-1) != 1 || !no_zero_stride(o) || o.numel() / n > kMaxExtent) {
      return none;
    }
    if (masked && groups > 1 && o.stride(0) != m * o.stride(1)) return none;
    if (o.scalar_type() == at::kFloat) {
      out_dtype = 1;
    } else if (o.scalar_type() == at::kBFloat16 && !has_c) {
      out_dtype = 0;
    } else {
      return none;
    }
  } else if (grouped) {
    out_dtype = 0;
  } else if (out_code == -1) {
    out_dtype = has_c ? 1 : 0;
  } else if (out_code == 1 || (out_code == 0 && !has_c)) {
    out_dtype = static_cast<int>(out_code);
  } else {
    return none;
  }
  if (num_sms == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device.index()) != cudaSuccess) {
      (void)cudaGetLastError();
      return none;
    }
    num_sms = sms;
  }
  const std::optional<Plan> plan =
      plans().find(PlanKey{device.index(), static_cast<int>(layout), static_cast<int>(gemm_type), m, n, k, groups,
                           masked ? expected_m : 0, out_dtype, has_c, static_cast<int>(num_sms)});
  if (!plan) return none;

  at::Tensor d;
  const std::string error = no_throw([&] {
    c10::cuda::CUDAGuard guard(device);
    const at::Tensor layout_t = grouped ? grouped_layout->contiguous() : at::Tensor();
    if (out) {
      d = *out;
    } else {
      const auto dtype = out_dtype == 1 ? at::kFloat : at::kBFloat16;
      d = masked ? at::empty({groups, m, n}, a.options().dtype(dtype)) : at::empty({m, n}, a.options().dtype(dtype));
    }
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
    constexpr size_t kFields = sizeof(Bf16GemmKernelConfig) / sizeof(int);
    require(cfg_ints.size() == kFields, "install_bf16_gemm_plan: a kernel config has ", kFields, " fields, got ",
            cfg_ints.size());
    Bf16GemmKernelConfig cfg{};
    std::copy(cfg_ints.begin(), cfg_ints.end(), reinterpret_cast<int*>(&cfg));
    check_bf16_gemm_config(cfg);
    require(cfg.layout == layout && cfg.gemm_type == gemm_type && cfg.out_dtype == out_dtype &&
                cfg.has_c == static_cast<int>(has_c),
            "install_bf16_gemm_plan: kernel '", key, "' (layout ", cfg.layout, ", gemm_type ", cfg.gemm_type,
            ", out_dtype ", cfg.out_dtype, ", has_c ", cfg.has_c, ") does not fit the problem (", layout, ", ",
            gemm_type, ", ", out_dtype, ", ", has_c, ")");
    const LoadedKernel* kernel = KernelRegistry::instance().find(key, static_cast<int>(device));
    require(kernel != nullptr, "install_bf16_gemm_plan: kernel '", key, "' is not loaded on cuda:", device);
    const PlanKey problem{static_cast<int>(device), static_cast<int>(layout), static_cast<int>(gemm_type), m, n, k,
                          num_groups, gemm_type == static_cast<int64_t>(GemmType::Masked) ? expected_m : 0,
                          static_cast<int>(out_dtype), has_c, static_cast<int>(num_sms)};
    plans().insert(problem, Plan{kernel, cfg});
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
