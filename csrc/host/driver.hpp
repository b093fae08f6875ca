// CUDA driver API reached through cudaGetDriverEntryPoint, so the host module links and imports on machines
// without a driver (libcuda is resolved on the first GPU call, not at load time).
#pragma once
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

namespace deepgemm_ops {

inline std::string to_text(const std::string& s) { return s; }
inline std::string to_text(const char* s) { return s; }
template <typename T>
inline std::string to_text(const T& v) {
  return std::to_string(v);
}

struct DriverApi {
  decltype(&cuGetErrorString) GetErrorString;
  decltype(&cuTensorMapEncodeTiled) TensorMapEncodeTiled;
  decltype(&cuLaunchKernelEx) LaunchKernelEx;
  decltype(&cuFuncSetAttribute) FuncSetAttribute;
  decltype(&cuModuleLoadData) ModuleLoadData;
  decltype(&cuModuleGetFunction) ModuleGetFunction;
  decltype(&cuModuleUnload) ModuleUnload;
  decltype(&cuFuncLoad) FuncLoad;
  decltype(&cuCtxGetCurrent) CtxGetCurrent;
};

namespace detail {
template <typename Fn>
inline void load_symbol(Fn& fn, const char* name) {
  cudaDriverEntryPointQueryResult status{};
  void* ptr = nullptr;
  // CUDA_VERSION: the ABI version of each symbol is the one declared by the cuda.h we compile against.
  cudaError_t err = cudaGetDriverEntryPointByVersion(name, &ptr, CUDA_VERSION, cudaEnableDefault, &status);
  if (err != cudaSuccess || status != cudaDriverEntryPointSuccess || ptr == nullptr) {
    throw std::runtime_error(std::string("deepgemm_ops: CUDA driver symbol ") + name +
                             " is unavailable (is an NVIDIA driver installed?)");
  }
  fn = reinterpret_cast<Fn>(ptr);
}
}  // namespace detail

// Resolved once, on first use (thread-safe static initialisation).
inline const DriverApi& driver() {
  static const DriverApi api = [] {
    DriverApi a{};
    detail::load_symbol(a.GetErrorString, "cuGetErrorString");
    detail::load_symbol(a.TensorMapEncodeTiled, "cuTensorMapEncodeTiled");
    detail::load_symbol(a.LaunchKernelEx, "cuLaunchKernelEx");
    detail::load_symbol(a.FuncSetAttribute, "cuFuncSetAttribute");
    detail::load_symbol(a.ModuleLoadData, "cuModuleLoadData");
    detail::load_symbol(a.ModuleGetFunction, "cuModuleGetFunction");
    detail::load_symbol(a.ModuleUnload, "cuModuleUnload");
    detail::load_symbol(a.FuncLoad, "cuFuncLoad");
    detail::load_symbol(a.CtxGetCurrent, "cuCtxGetCurrent");
    return a;
  }();
  return api;
}

// Host-module errors are plain std::runtime_error (never c10::Error: see no_throw in python_bindings.hpp).
template <typename... Parts>
inline void require(bool ok, const Parts&... parts) {
  if (ok) return;
  std::string msg = "deepgemm_ops: ";
  ((msg += to_text(parts)), ...);
  throw std::runtime_error(msg);
}

inline void check_cuda(cudaError_t err, const char* what) {
  require(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

inline void check_cu(CUresult res, const char* what) {
  if (res == CUDA_SUCCESS) return;
  const char* msg = nullptr;
  driver().GetErrorString(res, &msg);
  throw std::runtime_error(std::string("deepgemm_ops: ") + what + " failed: " + (msg ? msg : "unknown CUDA error") +
                           " (CUresult " + std::to_string(static_cast<int>(res)) + ")");
}

// Makes the primary context of the runtime's current device (the caller's CUDAGuard) current on this thread. The
// driver API needs a current context, and torch does not always leave one: CUDAGuard skips cudaSetDevice when the
// device already matches, so a thread whose first CUDA work is ours (autograd's backward thread) has none.
inline void bind_current_context() {
  CUcontext context = nullptr;
  check_cu(driver().CtxGetCurrent(&context), "cuCtxGetCurrent");
  if (context == nullptr) check_cuda(cudaFree(nullptr), "cudaFree(nullptr) (context initialisation)");
}

// Programmatic dependent launch for every kernel (deepgemm_ops.set_pdl; on unless turned off): each kernel waits for
// the previous grid before touching global memory (csrc/kernels/grid_dependency.cuh), so it may be launched early.
inline std::atomic<bool>& pdl_enabled() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

// Every kernel launch goes through here: the context first, then the launch (with the PDL attribute added to the
// caller's), its failure named by `what`.
inline void launch_kernel(const CUlaunchConfig& config, CUfunction function, void** args, const char* what) {
  constexpr unsigned kMaxAttrs = 4;
  require(config.numAttrs < kMaxAttrs, what, ": ", config.numAttrs, " launch attributes, at most ", kMaxAttrs - 1);
  CUlaunchAttribute attrs[kMaxAttrs];
  CUlaunchConfig launch = config;
  if (pdl_enabled().load(std::memory_order_relaxed)) {
    std::copy(config.attrs, config.attrs + config.numAttrs, attrs);
    attrs[config.numAttrs].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attrs[config.numAttrs].value.programmaticStreamSerializationAllowed = 1;
    launch.attrs = attrs;
    launch.numAttrs = config.numAttrs + 1;
  }
  bind_current_context();
  check_cu(driver().LaunchKernelEx(&launch, function, args, nullptr), what);
}

}  // namespace deepgemm_ops
