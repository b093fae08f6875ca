// What the GEMM doors (gemm_door.cpp: FP8; k_grouped_gemm_door.cpp: FP8 k-grouped; bf16_gemm_door.cpp: BF16) share:
// the plan key and plan, the parts of their acceptance predicate that do not depend on the operand type, the output's
// dtype and allocation, the layout of the A scales the FP8 kernels read, the SM budget and the config a plan is
// installed with. Every check only says "the door takes this call" or "it does not" (then the
// Python path validates and writes the message), so none of them throws.
#pragma once
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "../kernels/params.h"
#include "driver.hpp"
#include "kernel_loader.hpp"
#include "shared_table.hpp"

namespace deepgemm_ops::door {

constexpr int64_t kMaxExtent = 0x7fffffff;  // 32-bit TMA coordinates and kernel ints (_cuda._MAX_GPU_EXTENT)

inline bool on(const at::Tensor& t, const at::Device& device, at::ScalarType dtype, int64_t dim) {
  return t.device() == device && t.scalar_type() == dtype && t.dim() == dim;
}

inline bool no_zero_stride(const at::Tensor& t) {
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (t.stride(i) == 0 && t.size(i) > 1) return false;
  }
  return true;
}

// An operand as TMA reads it: [.., rows, cols] of `dtype` with unit column stride, a row stride that is a multiple of
// `row_align` elements and >= cols, a 16-byte aligned start, no zero strides, groups back to back (viewable as
// [G * rows, cols]), 32-bit row counts and columns, at least one column (zero-sized problems take the Python path).
inline bool tma_operand(const at::Tensor& t, const at::Device& device, at::ScalarType dtype, int64_t dim,
                        int64_t row_align) {
  if (!on(t, device, dtype, dim) || t.size(-1) < 1 || t.stride(-1) != 1 || t.stride(-2) % row_align != 0 ||
      t.stride(-2) < t.size(-1) ||
      reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0 || !no_zero_stride(t)) {
    return false;
  }
  if (dim == 3 && t.size(0) > 1 && t.stride(0) != t.size(1) * t.stride(1)) return false;
  return t.numel() / t.size(-1) <= kMaxExtent && t.size(-1) <= kMaxExtent;
}

// m_indices [m] (contiguous) or masked_m [groups] (masked), int32 on the device; grouped GEMMs take no C.
inline bool grouped_layout_ok(const std::optional<at::Tensor>& grouped_layout, const std::optional<at::Tensor>& c,
                              const at::Device& device, bool masked, int64_t groups, int64_t m) {
  return grouped_layout && on(*grouped_layout, device, at::kInt, 1) &&
         grouped_layout->size(0) == (masked ? groups : m) && !c;
}

// C: fp32 [m, n], unit column stride.
inline bool c_ok(const at::Tensor& c, const at::Device& device, int64_t m, int64_t n) {
  return on(c, device, at::kFloat, 2) && c.size(0) == m && c.size(1) == n && c.stride(1) == 1 && no_zero_stride(c);
}

// The output dtype code (0 bf16, 1 fp32) of a call, or -1 when the door does not take it: `out` given ([m, n], or
// [groups, m, n] when masked, unit column stride, groups back to back), else out_code (-1 = out_dtype None, 0 =
// bfloat16, 1 = float32, anything else = not for the door). Grouped GEMMs write bf16; C makes the output fp32.
inline int out_dtype_code(const std::optional<at::Tensor>& out, const at::Device& device, bool masked, bool grouped,
                          int64_t groups, int64_t m, int64_t n, bool has_c, int64_t out_code) {
  if (out) {
    const auto& o = *out;
    if (o.device() != device || o.dim() != (masked ? 3 : 2) || o.size(-2) != m || o.size(-1) != n ||
        (masked && o.size(0) != groups) || o.stride(-1) != 1 || !no_zero_stride(o) || o.numel() / n > kMaxExtent) {
      return -1;
    }
    if (masked && groups > 1 && o.stride(0) != m * o.stride(1)) return -1;
    if (o.scalar_type() == at::kFloat) return 1;
    return o.scalar_type() == at::kBFloat16 && !has_c ? 0 : -1;
  }
  if (grouped) return 0;
  if (out_code == -1) return has_c ? 1 : 0;
  return out_code == 1 || (out_code == 0 && !has_c) ? static_cast<int>(out_code) : -1;
}

// `out` itself, or a new output of the dtype code on a's device.
inline at::Tensor output_tensor(const std::optional<at::Tensor>& out, const at::Tensor& a, int out_dtype, bool masked,
                                int64_t groups, int64_t m, int64_t n) {
  if (out) return *out;
  const auto options = a.options().dtype(out_dtype == 1 ? at::kFloat : at::kBFloat16);
  return masked ? at::empty({groups, m, n}, options) : at::empty({m, n}, options);
}

// sfa in the layout the FP8 kernels read: MN-major, M stride ld (TMA-aligned), groups of kb columns back to back; the
// tensor itself when it is laid out so already (size-1 dims may carry any stride), else a copy.
inline at::Tensor mn_major_sfa(const at::Tensor& sfa, int64_t ld) {
  const int64_t rows = sfa.size(-2), kb = sfa.size(-1);
  const bool grouped = sfa.dim() == 3;
  const bool ok = (rows == 1 || sfa.stride(-2) == 1) && (kb == 1 || sfa.stride(-1) == ld) &&
                  (!grouped || sfa.size(0) == 1 || sfa.stride(0) == kb * ld);
  if (ok) return sfa;
  at::Tensor copy = grouped ? at::empty_strided({sfa.size(0), rows, kb}, {kb * ld, 1, ld}, sfa.options())
                            : at::empty_strided({rows, kb}, {1, ld}, sfa.options());
  copy.copy_(sfa);
  return copy;
}

// The set_num_sms value, or (0 = unset) the SM count of the device; 0 when the runtime cannot say.
inline int sm_budget(int64_t num_sms, const at::Device& device) {
  if (num_sms != 0) return static_cast<int>(num_sms);
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device.index()) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return sms;
}

// What selects a kernel: the problem plus the SM budget its config was chosen for. variant: the family's own
// dimension (FP8: the SfbRecipe; BF16: the layout index).
struct PlanKey {
  int device;
  int gemm_type;  // GemmType
  int variant;
  int64_t m, n, k;
  int64_t num_groups;
  int64_t expected_m;  // masked only (0 otherwise): the heuristic's hint
  int out_dtype;       // 0 bf16, 1 fp32 (_heuristics.OUT_DTYPES)
  bool has_c;
  int num_sms;
  bool operator==(const PlanKey& o) const {
    return device == o.device && gemm_type == o.gemm_type && variant == o.variant && m == o.m && n == o.n &&
           k == o.k && num_groups == o.num_groups && expected_m == o.expected_m && out_dtype == o.out_dtype &&
           has_c == o.has_c && num_sms == o.num_sms;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& p) const {
    size_t h = 0;
    for (int64_t v : {p.m, p.n, p.k, p.num_groups, p.expected_m, int64_t{p.device}, int64_t{p.gemm_type},
                      int64_t{p.variant}, int64_t{p.out_dtype}, int64_t{p.has_c}, int64_t{p.num_sms}}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

// The key of a problem, as the door looks it up and the planning path installs it: expected_m (the heuristic's hint)
// selects the kernel of masked GEMMs only.
inline PlanKey plan_key(int64_t device, int64_t gemm_type, int64_t variant, int64_t m, int64_t n, int64_t k,
                        int64_t num_groups, int64_t expected_m, int64_t out_dtype, bool has_c, int64_t num_sms) {
  const bool masked = gemm_type == static_cast<int64_t>(GemmType::Masked);
  return PlanKey{static_cast<int>(device), static_cast<int>(gemm_type), static_cast<int>(variant), m, n, k,
                 num_groups, masked ? expected_m : 0, static_cast<int>(out_dtype), has_c, static_cast<int>(num_sms)};
}

template <class Config>
struct Plan {
  const LoadedKernel* kernel;  // registry entries live as long as the process
  Config cfg;
};

// A door's plans: never destroyed, like the kernel registry (safe from static destructors and any thread).
template <class Config>
SharedTable<PlanKey, Plan<Config>, PlanKeyHash>& plans() {
  static auto* table = new SharedTable<PlanKey, Plan<Config>, PlanKeyHash>();
  return *table;
}

// Installs the loaded kernel `key` with its (checked) config as the plan of `problem`; caller names the binding in the
// error.
template <class Config>
void install_plan(const PlanKey& problem, const std::string& key, const Config& cfg, const char* caller) {
  const LoadedKernel* kernel = KernelRegistry::instance().find(key, problem.device);
  require(kernel != nullptr, caller, ": kernel '", key, "' is not loaded on cuda:", problem.device);
  plans<Config>().insert(problem, Plan<Config>{kernel, cfg});
}

// A kernel config struct (a flat list of ints, its Python dataclass's as_ints() order) from those ints.
template <class Config>
Config config_from_ints(const std::vector<int>& ints, const char* caller) {
  static_assert(std::is_standard_layout_v<Config> && sizeof(Config) % sizeof(int) == 0);
  constexpr size_t kFields = sizeof(Config) / sizeof(int);
  require(ints.size() == kFields, caller, ": a kernel config has ", kFields, " fields, got ", ints.size());
  Config cfg{};
  std::copy(ints.begin(), ints.end(), reinterpret_cast<int*>(&cfg));
  return cfg;
}

}  // namespace deepgemm_ops::door
