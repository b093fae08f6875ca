// kernel_check: runs the generated FP8 GEMM kernels through csrc/host/sm90_fp8_gemm_launch.hpp, checks them against a
// host reference (FP32 per-128-K-block partial sums, FP64 across blocks) and times them.
//
//   check DIR   reads DIR/cases.txt (written by gen.py) and DIR/<kernel>.cubin
//
// "check" cases compare every output element; "bench" cases compare a sample of rows (all columns) and time the
// kernel: L2 flushed by writing a 256 MB buffer before each rep, median of 20 reps, cudaEvents.
// Every case poisons D (all bytes 0xFF = NaN) and verifies that the valid region was fully written and that nothing
// outside it (column padding up to ldd, guard rows past the output) was touched.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sm90_fp8_gemm_launch.hpp"

using namespace deepgemm_ops;

#define CUDA_CHECK(x)                                                                                    \
  do {                                                                                                   \
    cudaError_t e_ = (x);                                                                                \
    if (e_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d %s failed: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
      std::exit(1);                                                                                      \
    }                                                                                                    \
  } while (0)

// ---- deterministic device-side random fill ----
__device__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
__device__ float uniform(uint64_t seed, uint64_t i) { return (hash32(seed * 0x9E3779B97F4A7C15ULL + i) >> 8) * (1.0f / 16777216.0f); }

__global__ void fill_fp8(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = (uniform(seed, i) * 2.0f - 1.0f) * 8.0f;
    p[i] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  }
}
__global__ void fill_f32(float* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = lo + (hi - lo) * uniform(seed, i);
}

template <typename T>
T* dalloc(size_t n) {
  T* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return p;
}
template <typename T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

float fp8_to_float(uint8_t v) {
  __nv_fp8_e4m3 x;
  x.__x = v;
  return static_cast<float>(x);
}

struct Case {
  std::string kind;
  int gemm_type, m, n, k, groups;
  std::vector<int> group_spec;
  int ldd_pad;
  Fp8GemmKernelConfig cfg;
  std::string name;
};

std::vector<Case> read_cases(const std::string& path) {
  std::ifstream in(path);
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream s(line);
    Case c;
    std::string spec;
    s >> c.kind >> c.gemm_type >> c.m >> c.n >> c.k >> c.groups >> spec >> c.ldd_pad;
    constexpr int kFields = sizeof(Fp8GemmKernelConfig) / sizeof(int);  // GemmConfig.as_ints() order
    int* f = &c.cfg.block_m;
    for (int i = 0; i < kFields; ++i) s >> f[i];
    s >> c.name;
    if (spec != "-") {
      std::istringstream g(spec);
      std::string tok;
      while (std::getline(g, tok, ',')) c.group_spec.push_back(std::stoi(tok));
    }
    cases.push_back(c);
  }
  return cases;
}

struct Result {
  double max_rel = 0, norm_err = 0, norm_ref = 0;
  long long bad = 0, unwritten = 0, clobbered = 0, checked = 0;
};

int run_case(const Case& c, const std::string& dir) {
  const Fp8GemmKernelConfig& cfg = c.cfg;
  const bool out_fp32 = cfg.out_dtype == 1, has_c = cfg.has_c != 0, row_recipe = cfg.sfb_recipe == 1;
  const int G = c.groups, N = c.n, K = c.k, M = c.m, nkb = (K + 127) / 128;
  const auto type = static_cast<GemmType>(cfg.gemm_type);
  const int a_rows = type == GemmType::Masked ? G * M : M;
  const int b_groups = type == GemmType::Normal ? 1 : G;
  const int sfb_rows = row_recipe ? N : (N + 127) / 128;
  const int ld_sfa = (M + 3) / 4 * 4;
  const int64_t ldd = N + c.ldd_pad, ldc = N + 5;
  const int d_rows = a_rows + 3;  // 3 guard rows after the output
  const size_t out_elem = out_fp32 ? 4 : 2;
  const uint64_t seed = std::hash<std::string>{}(c.name) ^ (uint64_t(M) << 20);

  // Host-side row -> group map (-1: row not computed: padding, or >= masked_m[g]).
  std::vector<int> row_group(a_rows, 0);
  if (type == GemmType::Contiguous) {
    std::fill(row_group.begin(), row_group.end(), -1);
    int r = 0;
    for (int g = 0; g < G; ++g) {
      for (int i = 0; i < c.group_spec[g]; ++i) row_group[r + i] = g;
      r += (c.group_spec[g] + 127) / 128 * 128;
    }
  } else if (type == GemmType::Masked) {
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < M; ++i) row_group[g * M + i] = i < c.group_spec[g] ? g : -1;
  }

  uint8_t* a = dalloc<uint8_t>(size_t(a_rows) * K);
  uint8_t* b = dalloc<uint8_t>(size_t(b_groups) * N * K);
  float* sfa = dalloc<float>(size_t(ld_sfa) * nkb * (type == GemmType::Masked ? G : 1));
  float* sfb = dalloc<float>(size_t(b_groups) * sfb_rows * nkb);
  float* cmat = has_c ? dalloc<float>(size_t(a_rows) * ldc) : nullptr;
  void* d = dalloc<uint8_t>(size_t(d_rows) * ldd * out_elem);
  int32_t* layout = nullptr;
  fill_fp8<<<1024, 256>>>(a, size_t(a_rows) * K, seed + 1);
  fill_fp8<<<1024, 256>>>(b, size_t(b_groups) * N * K, seed + 2);
  fill_f32<<<256, 256>>>(sfa, size_t(ld_sfa) * nkb * (type == GemmType::Masked ? G : 1), seed + 3, 0.01f, 1.0f);
  fill_f32<<<256, 256>>>(sfb, size_t(b_groups) * sfb_rows * nkb, seed + 4, 0.01f, 1.0f);
  if (has_c) fill_f32<<<256, 256>>>(cmat, size_t(a_rows) * ldc, seed + 5, -50.0f, 50.0f);
  CUDA_CHECK(cudaGetLastError());
  if (type == GemmType::Contiguous) {
    layout = dalloc<int32_t>(a_rows);
    CUDA_CHECK(cudaMemcpy(layout, row_group.data(), a_rows * 4, cudaMemcpyHostToDevice));
  } else if (type == GemmType::Masked) {
    layout = dalloc<int32_t>(G);
    CUDA_CHECK(cudaMemcpy(layout, c.group_spec.data(), G * 4, cudaMemcpyHostToDevice));
  }

  // Load the kernel exactly as the host module does.
  std::ifstream f(dir + "/" + c.name + ".cubin", std::ios::binary);
  std::string cubin((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CUmodule mod;
  CUfunction fn;
  check_cu(driver().ModuleLoadData(&mod, cubin.data()), "cuModuleLoadData");
  check_cu(driver().ModuleGetFunction(&fn, mod, c.name.c_str()), "cuModuleGetFunction");
  prepare_fp8_gemm_function(fn, cfg);
  int max_clusters = 0;
  if (cfg.cluster_size > 1) {  // how many clusters can be resident at once (a persistent grid must not exceed it)
    static decltype(&cuOccupancyMaxActiveClusters) occ = nullptr;
    if (!occ) {
      cudaDriverEntryPointQueryResult q{};
      void* ptr = nullptr;
      CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuOccupancyMaxActiveClusters", &ptr, CUDA_VERSION, cudaEnableDefault, &q));
      occ = reinterpret_cast<decltype(&cuOccupancyMaxActiveClusters)>(ptr);
    }
    CUlaunchAttribute attr{};
    attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr.value.clusterDim.x = cfg.cluster_size;
    attr.value.clusterDim.y = attr.value.clusterDim.z = 1;
    CUlaunchConfig lc{};
    lc.gridDimX = cfg.num_sms / cfg.cluster_size * cfg.cluster_size;
    lc.gridDimY = lc.gridDimZ = 1;
    lc.blockDimX = cfg.num_threads;
    lc.blockDimY = lc.blockDimZ = 1;
    lc.sharedMemBytes = cfg.smem_bytes;
    lc.attrs = &attr;
    lc.numAttrs = 1;
    check_cu(occ(&max_clusters, fn, &lc), "cuOccupancyMaxActiveClusters");
  }

  Fp8GemmArgs args{a, sfa, b, sfb, cmat, d, layout, M, N, K, G, K, K, ld_sfa, ldc, ldd};
  CUDA_CHECK(cudaMemset(d, 0xFF, size_t(d_rows) * ldd * out_elem));
  launch_fp8_gemm(fn, cfg, args, nullptr);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());

  // ---- reference on sampled (bench) or all (check) rows ----
  std::vector<int> rows;
  if (c.kind == "check") {
    for (int r = 0; r < a_rows; ++r) rows.push_back(r);
  } else {
    for (int i = 0; i < 48; ++i) rows.push_back(int((int64_t(a_rows - 1) * i) / 47));
  }
  const auto ha = to_host(a, size_t(a_rows) * K);
  const auto hb = to_host(b, size_t(b_groups) * N * K);
  const auto hsfa = to_host(sfa, size_t(ld_sfa) * nkb * (type == GemmType::Masked ? G : 1));
  const auto hsfb = to_host(sfb, size_t(b_groups) * sfb_rows * nkb);
  const auto hc = has_c ? to_host(cmat, size_t(a_rows) * ldc) : std::vector<float>();
  const auto hd = to_host(static_cast<uint8_t*>(d), size_t(d_rows) * ldd * out_elem);
  std::vector<float> lut(256);
  for (int i = 0; i < 256; ++i) lut[i] = fp8_to_float(uint8_t(i));
  std::vector<float> bf(hb.size());
  for (size_t i = 0; i < hb.size(); ++i) bf[i] = lut[hb[i]];

  auto out_at = [&](int64_t r, int64_t col) -> float {
    const size_t idx = size_t(r) * ldd + col;
    if (out_fp32) {
      float v;
      std::memcpy(&v, hd.data() + idx * 4, 4);
      return v;
    }
    uint16_t bits;
    std::memcpy(&bits, hd.data() + idx * 2, 2);
    uint32_t w = uint32_t(bits) << 16;
    float v;
    std::memcpy(&v, &w, 4);
    return v;
  };
  auto poisoned = [&](int64_t r, int64_t col) {
    const size_t idx = (size_t(r) * ldd + col) * out_elem;
    for (size_t i = 0; i < out_elem; ++i)
      if (hd[idx + i] != 0xFF) return false;
    return true;
  };

  const int num_threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<Result> partial(num_threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < num_threads; ++t) {
    pool.emplace_back([&, t] {
      Result& res = partial[t];
      std::vector<float> arow(K);
      for (size_t ri = t; ri < rows.size(); ri += num_threads) {
        const int r = rows[ri];
        const int g = row_group[r];
        if (g < 0) continue;  // padding (contiguous) and masked rows >= masked_m[g] are unspecified
        const int local_row = type == GemmType::Masked ? r - g * M : r;
        for (int kk = 0; kk < K; ++kk) arow[kk] = lut[ha[size_t(r) * K + kk]];
        for (int col = 0; col < N; ++col) {
          const float* brow = bf.data() + (size_t(type == GemmType::Normal ? 0 : g) * N + col) * K;
          double acc = has_c ? hc[size_t(r) * ldc + col] : 0.0;
          for (int kb = 0; kb < nkb; ++kb) {
            float s = 0.0f;
            for (int kk = kb * 128; kk < std::min(K, kb * 128 + 128); ++kk) s += arow[kk] * brow[kk];
            const float sa = hsfa[(size_t(type == GemmType::Masked ? g * nkb : 0) + kb) * ld_sfa + local_row];
            const float sb = hsfb[(size_t(type == GemmType::Normal ? 0 : g) * sfb_rows +
                                   (row_recipe ? col : col / 128)) * nkb + kb];
            acc += double(s) * sa * sb;
          }
          const float got = out_at(r, col);
          res.checked++;
          if (std::isnan(got)) {
            res.unwritten++;
            continue;
          }
          const double err = std::fabs(got - acc);
          res.norm_err += err * err;
          res.norm_ref += acc * acc;
          res.max_rel = std::max(res.max_rel, err / (std::fabs(acc) + 1e-6));
          // bf16 rounding is 2^-9 relative; allow 1% relative plus 0.1% of the row-typical magnitude.
          if (err > 1e-2 * std::fabs(acc) + 1e-3 * std::sqrt(double(K)) * 16.0) res.bad++;
        }
        for (int col = N; col < ldd; ++col) res.clobbered += !poisoned(r, col);
      }
    });
  }
  for (auto& th : pool) th.join();
  Result res;
  for (const auto& p : partial) {
    res.max_rel = std::max(res.max_rel, p.max_rel);
    res.norm_err += p.norm_err;
    res.norm_ref += p.norm_ref;
    res.bad += p.bad;
    res.unwritten += p.unwritten;
    res.clobbered += p.clobbered;
    res.checked += p.checked;
  }
  // Every valid element written (NaN scan over all rows, also for bench cases); guard rows untouched.
  for (int r = 0; r < a_rows; ++r) {
    if (row_group[r] < 0) continue;
    if (c.kind == "bench")
      for (int col = 0; col < N; ++col) res.unwritten += std::isnan(out_at(r, col));
  }
  for (int r = a_rows; r < d_rows; ++r)
    for (int col = 0; col < ldd; ++col) res.clobbered += !poisoned(r, col);
  const double rel = std::sqrt(res.norm_err / std::max(res.norm_ref, 1e-30));
  const bool ok = res.bad == 0 && res.unwritten == 0 && res.clobbered == 0 && rel < 5e-3;

  // ---- timing ----
  double tflops = 0, ms = 0;
  if (c.kind == "bench") {
    uint8_t* flush = dalloc<uint8_t>(256u << 20);
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    std::vector<float> times;
    for (int rep = 0; rep < 23; ++rep) {
      CUDA_CHECK(cudaMemsetAsync(flush, rep & 0xFF, 256u << 20));
      CUDA_CHECK(cudaEventRecord(e0));
      launch_fp8_gemm(fn, cfg, args, nullptr);
      CUDA_CHECK(cudaEventRecord(e1));
      CUDA_CHECK(cudaEventSynchronize(e1));
      float t;
      CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
      if (rep >= 3) times.push_back(t);
    }
    CUDA_CHECK(cudaGetLastError());
    std::sort(times.begin(), times.end());
    ms = times[times.size() / 2];
    long long valid_rows = 0;
    for (int r = 0; r < a_rows; ++r) valid_rows += row_group[r] >= 0;
    tflops = 2.0 * valid_rows * N * K / (ms * 1e-3) / 1e12;
    CUDA_CHECK(cudaFree(flush));
  }
  static const char* kTypes[] = {"normal", "contig", "masked"};
  std::printf("%-5s %-6s m=%-6d n=%-6d k=%-6d g=%-2d %-7s %s%s bm=%-3d bn=%-3d st=%d cl=%d(%d) | rel=%.2e maxrel=%.1e bad=%lld "
              "nan=%lld clob=%lld %s",
              c.kind.c_str(), kTypes[cfg.gemm_type], M, N, K, G, row_recipe ? "1x128" : "128x128",
              out_fp32 ? "fp32" : "bf16", has_c ? "+C" : "", cfg.block_m, cfg.block_n, cfg.num_stages,
              cfg.cluster_size, max_clusters, rel,
              res.max_rel, res.bad, res.unwritten, res.clobbered, ok ? "PASS" : "FAIL");
  if (c.kind == "bench") std::printf(" | %.4f ms %.0f TFLOPS", ms, tflops);
  std::printf("\n");
  std::fflush(stdout);
  check_cu(driver().ModuleUnload(mod), "cuModuleUnload");
  for (void* p : {(void*)a, (void*)b, (void*)sfa, (void*)sfb, (void*)cmat, d, (void*)layout})
    if (p) CUDA_CHECK(cudaFree(p));
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR (with DIR/cases.txt and the cubins)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaFree(nullptr));
  int failures = 0;
  for (const Case& c : read_cases(dir + "/cases.txt")) {
    try {
      failures += run_case(c, dir);
    } catch (const std::exception& e) {
      std::printf("%s: EXCEPTION %s\n", c.name.c_str(), e.what());
      failures++;
    }
  }
  std::printf("%d case(s) failed\n", failures);
  return failures == 0 ? 0 : 1;
}
