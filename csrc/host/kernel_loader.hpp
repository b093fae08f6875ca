// Loaded JIT kernels: cubin → CUmodule on one device → CUfunction, in a process-wide registry keyed by
// (kernel key, device) so the per-call host path is one hash lookup under a shared lock.
//
// A key names one compiled kernel (shape constants + config), e.g. "fp8_gemm_nt n=2112 k=7168 bm=64 bn=128 ...":
// it appears in error messages, so make it readable. Python compiles a missing kernel (codegen + nvcc live there) and
// loads it with load() before the first launch; the launch path only calls find(). Modules are never unloaded: they live as long as the
// process, and unloading at exit would race the driver's own teardown.
#pragma once

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "driver.hpp"

namespace deepgemm_ops {

// What the JIT produced for a key. cubin_bytes wins when non-empty, else the file at cubin_path is read.
struct KernelImage {
  std::string cubin_path;
  std::string cubin_bytes;
  std::string function_name;
  int dynamic_smem_bytes = 0;
};

struct LoadedKernel {
  CUfunction function = nullptr;
  CUmodule module = nullptr;
  int dynamic_smem_bytes = 0;
};

class KernelRegistry {
 public:
  // Never destroyed (see the file comment); safe to use from static destructors and any thread.
  static KernelRegistry& instance() {
    static KernelRegistry* registry = new KernelRegistry();
    return *registry;
  }

  // The per-call lookup: the loaded kernel or nullptr. The pointer stays valid for the life of the process.
  const LoadedKernel* find(const std::string& key, int device) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    if (device < 0 || static_cast<size_t>(device) >= per_device_.size()) return nullptr;
    const auto& kernels = *per_device_[device];
    auto it = kernels.find(key);
    return it == kernels.end() ? nullptr : &it->second;
  }

  // Loads image on device (the caller's current device is preserved) unless key is already loaded there.
  const LoadedKernel& load(const std::string& key, int device, const KernelImage& image) {
    require(device >= 0, "load of kernel '", key, "': device must be >= 0, got ", device);
    require(!image.function_name.empty(), "load of kernel '", key, "': empty function name");
    std::unique_lock<std::shared_mutex> lock(mutex_);
    while (per_device_.size() <= static_cast<size_t>(device)) per_device_.push_back(std::make_unique<KernelMap>());
    auto& kernels = *per_device_[device];
    if (auto it = kernels.find(key); it != kernels.end()) return it->second;
    check_not_capturing(key, device);
    const std::string bytes = image.cubin_bytes.empty() ? read_file(key, image.cubin_path) : image.cubin_bytes;

    // Torch's primary context of `device` must be current: the driver API loads into the current context.
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    bind_current_context();
    const DriverApi& cu = driver();
    LoadedKernel loaded;
    loaded.dynamic_smem_bytes = image.dynamic_smem_bytes;
    check_cu(cu.ModuleLoadData(&loaded.module, bytes.data()), "cuModuleLoadData");
    check_cu(cu.ModuleGetFunction(&loaded.function, loaded.module, image.function_name.c_str()),
             "cuModuleGetFunction");
    // Load eagerly (CUDA_MODULE_LOADING=LAZY would defer it to the first launch, which may be inside a capture).
    check_cu(cu.FuncLoad(loaded.function), "cuFuncLoad");
    check_cu(cu.FuncSetAttribute(loaded.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 image.dynamic_smem_bytes),
             "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
    return kernels.emplace(key, loaded).first->second;
  }

  // (key, device) of every loaded kernel, for diagnostics and tests.
  std::vector<std::pair<std::string, int>> loaded() const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    std::vector<std::pair<std::string, int>> out;
    for (size_t device = 0; device < per_device_.size(); ++device) {
      for (const auto& entry : *per_device_[device]) out.emplace_back(entry.first, static_cast<int>(device));
    }
    return out;
  }

 private:
  KernelRegistry() = default;

  // Module loading is not a capturable operation: refuse it during capture rather than invalidate the graph.
  static void check_not_capturing(const std::string& key, int device) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    const auto stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
    check_cuda(cudaStreamIsCapturing(stream.stream(), &status), "cudaStreamIsCapturing");
    require(status == cudaStreamCaptureStatusNone, "kernel '", key, "' is not loaded on cuda:", device,
            " and the current stream is capturing a CUDA graph, where kernels cannot be compiled or loaded. Call "
            "deepgemm_ops.warmup(...) with this shape before capturing.");
  }

  static std::string read_file(const std::string& key, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    require(in.good(), "load of kernel '", key, "': cannot open cubin '", path, "'");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    require(!bytes.empty(), "load of kernel '", key, "': cubin '", path, "' is empty");
    return bytes;
  }

  // unique_ptr: growing the vector must not move the maps, whose elements find() hands out by address.
  using KernelMap = std::unordered_map<std::string, LoadedKernel>;
  mutable std::shared_mutex mutex_;
  std::vector<std::unique_ptr<KernelMap>> per_device_;  // index = device
};

}  // namespace deepgemm_ops
