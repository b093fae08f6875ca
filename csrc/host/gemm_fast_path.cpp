// Per-call fast path of fp8_gemm_nt: a problem that went once through the Python path (validation, heuristic, JIT,
// load; deepgemm_ops/_cuda.py) is remembered here with its loaded kernel, and later calls with the same shape are
// checked and launched without Python in between. The check is an exact "is this the plain well-formed case" test:
// anything else (another shape, a layout the kernel cannot read, a bad argument) returns None and the caller takes
// the Python path, which raises the library's error messages. Saves ~2/3 of the host time per call.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gemm_launch.hpp"
#include "python_bindings.hpp"

namespace deepgemm_ops {
namespace {

// What selects the kernel: the problem plus the SM budget the config was chosen for.
struct ProblemKey {
  int device;
  int64_t m, n, k;
  int sfb_recipe;  // 0 128x128, 1 1x128 (_heuristics.SFB_RECIPES)
  int out_dtype;   // 0 bf16, 1 fp32 (_heuristics.OUT_DTYPES)
  bool has_c;
  int num_sms;
  bool operator==(const ProblemKey& o) const {
    return device == o.device && m == o.m && n == o.n && k == o.k && sfb_recipe == o.sfb_recipe &&
           out_dtype == o.out_dtype && has_c == o.has_c && num_sms == o.num_sms;
  }
};

struct ProblemKeyHash {
  size_t operator()(const ProblemKey& p) const {
    size_t h = std::hash<int64_t>()(p.m);
    for (int64_t v : {p.n, p.k, static_cast<int64_t>(p.device), static_cast<int64_t>(p.sfb_recipe),
                      static_cast<int64_t>(p.out_dtype), static_cast<int64_t>(p.has_c), static_cast<int64_t>(p.num_sms)}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

struct Entry {
  const LoadedKernel* kernel;  // registry entries live as long as the process
  Fp8GemmKernelConfig cfg;
};

class FastTable {
 public:
  static FastTable& instance() {
    static FastTable* table = new FastTable();  // never destroyed, like the kernel registry
    return *table;
  }
  std::optional<Entry> find(const ProblemKey& key) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
  }
  void insert(const ProblemKey& key, const Entry& entry) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    entries_[key] = entry;
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<ProblemKey, Entry, ProblemKeyHash> entries_;
};

bool k_major_tma_operand(const at::Tensor& t, const at::Device& device) {
  return t.device() == device && t.scalar_type() == at::kFloat8_e4m3fn && t.dim() == 2 && t.stride(1) == 1 &&
         t.stride(0) % 16 == 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// out_code: -1 = out_dtype None, 0 = bfloat16, 1 = float32, anything else = not for the fast path. num_sms: the
// set_num_sms value, 0 when unset (then the SM count of the inputs' device, as deepgemm_ops.get_num_sms(device)).
// Returns the output tensor, None (take the Python path) or an error text (deepgemm_ops._runtime.check raises it).
pybind11::object fp8_gemm_nt_fast(const at::Tensor& a, const at::Tensor& sfa, const at::Tensor& b,
                                  const at::Tensor& sfb, const std::optional<at::Tensor>& c, int64_t out_code,
                                  int64_t num_sms) {
  if (!a.is_cuda()) return pybind11::none();
  const at::Device device = a.device();
  if (!k_major_tma_operand(a, device) || !k_major_tma_operand(b, device)) return pybind11::none();
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  if (m < 1 || n < 1 || k < 16 || k % 16 != 0 || b.size(1) != k) return pybind11::none();
  const int64_t kb = ceil_div(k, kScaleBlock);
  if (sfa.device() != device || sfa.scalar_type() != at::kFloat || sfa.dim() != 2 || sfa.size(0) != m ||
      sfa.size(1) != kb) {
    return pybind11::none();
  }
  if (sfb.device() != device || sfb.scalar_type() != at::kFloat || sfb.dim() != 2 || sfb.size(1) != kb) {
    return pybind11::none();
  }
  // The same order as _validate._check_sfb: the 128x128 shape wins when both match (N = 1).
  int recipe;
  if (sfb.size(0) == ceil_div(n, kScaleBlock)) {
    recipe = 0;
  } else if (sfb.size(0) == n) {
    recipe = 1;
  } else {
    return pybind11::none();
  }
  const bool has_c = c.has_value();
  if (has_c && (c->device() != device || c->scalar_type() != at::kFloat || c->dim() != 2 || c->size(0) != m ||
                c->size(1) != n || c->stride(1) != 1)) {
    return pybind11::none();
  }
  int out_dtype;
  if (out_code == -1) {
    out_dtype = has_c ? 1 : 0;
  } else if (out_code == 1 || (out_code == 0 && !has_c)) {
    out_dtype = static_cast<int>(out_code);
  } else {
    return pybind11::none();
  }
  if (num_sms == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device.index()) != cudaSuccess) {
      (void)cudaGetLastError();
      return pybind11::none();
    }
    num_sms = sms;
  }
  const std::optional<Entry> entry = FastTable::instance().find(
      ProblemKey{device.index(), m, n, k, recipe, out_dtype, has_c, static_cast<int>(num_sms)});
  if (!entry) return pybind11::none();

  at::Tensor d;
  const std::string error = no_throw([&] {
    c10::cuda::CUDAGuard guard(device);
    // The layouts the kernel reads, made the way the Python path makes them (_layout.to_mn_major_tma_aligned,
    // sfb.contiguous()): sfa MN-major with the TMA-aligned M stride (size-1 dims may carry any stride).
    const int64_t ld_sfa = tma_aligned_scale_rows(m);
    at::Tensor sfa_mn = sfa;
    if ((m > 1 && sfa.stride(0) != 1) || (kb > 1 && sfa.stride(1) != ld_sfa)) {
      sfa_mn = at::empty_strided({m, kb}, {1, ld_sfa}, sfa.options());
      sfa_mn.copy_(sfa);
    }
    const at::Tensor sfb_c = sfb.contiguous();
    d = at::empty({m, n}, a.options().dtype(out_dtype == 1 ? at::kFloat : at::kBFloat16));
    launch_loaded(*entry->kernel, entry->cfg, a, sfa_mn, ld_sfa, b, sfb_c, c, d, std::nullopt, m, n, k, 1);
  });
  if (!error.empty()) return pybind11::str(error);
  return pybind11::cast(d);
}

// Called by the Python path after it launched kernel `key` for this problem (deepgemm_ops/_cuda.py).
std::string register_fp8_gemm_nt(int64_t device, int64_t m, int64_t n, int64_t k, int64_t sfb_recipe,
                                 int64_t out_dtype, bool has_c, int64_t num_sms, const std::string& key,
                                 const std::vector<int>& cfg_ints) {
  return no_throw([&] {
    const LoadedKernel* kernel = KernelRegistry::instance().find(key, static_cast<int>(device));
    require(kernel != nullptr, "register_fp8_gemm_nt: kernel '", key, "' is not loaded on cuda:", device);
    const ProblemKey problem{static_cast<int>(device), m, n, k, static_cast<int>(sfb_recipe),
                             static_cast<int>(out_dtype), has_c, static_cast<int>(num_sms)};
    FastTable::instance().insert(problem, Entry{kernel, config_from_ints(cfg_ints)});
  });
}

void bind_fast_path(pybind11::module_& m) {
  m.def("fp8_gemm_nt_fast", &fp8_gemm_nt_fast,
        "fp8_gemm_nt for a problem registered before: the output, None (take the Python path) or an error text.");
  m.def("register_fp8_gemm_nt", &register_fp8_gemm_nt,
        "Remember the loaded kernel of an fp8_gemm_nt problem for fp8_gemm_nt_fast; returns \"\" or the error.");
}

const PythonBindings kFastPathBindings(bind_fast_path);

}  // namespace
}  // namespace deepgemm_ops
