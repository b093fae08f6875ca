"""nvcc compile of representative FP8 GEMM kernel configs for sm_90a, with SASS checks (CPU machine, no GPU needed).

Checks per kernel: ptxas reports no stack frame and no spills and does not serialise the wgmmas (C7510-C7519: an
injected wait or a serialised pipeline), the SASS has FP8 wgmma (QGMMA) and no local-memory traffic (LDL/STL). Skips
when nvcc or cuobjdump is missing.
"""

import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from expecttest import TestCase

from deepgemm_ops import _codegen, _heuristics as H, _jit


def _find_cuobjdump():
    try:
        import nvidia.cu13  # noqa: F401  (the nvidia-cuda-cuobjdump wheel)

        path = os.path.join(list(nvidia.cu13.__path__)[0], "bin", "cuobjdump")
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    return shutil.which("cuobjdump")


def _nvcc_or_none():
    try:
        return _jit.nvcc_path()
    except RuntimeError:
        return None


NVCC = _nvcc_or_none()
CUOBJDUMP = _find_cuobjdump()


def _cfg(m, n, k, *, out="bf16", recipe="128x128", has_c=False, gemm_type="normal", groups=1, force=None):
    cfg = H.choose_fp8_gemm_config(m, n, k, num_sms=132, out_dtype=out, sfb_recipe=recipe, has_c=has_c,
                                   gemm_type=gemm_type, num_groups=groups)
    if force:  # (block_m, block_n)
        cfg = H.with_tile(cfg, block_m=force[0], block_n=force[1])
    return cfg, n, k


# (config, N, K): bf16/fp32 out, with C, both sfb recipes, K = 576 (not a multiple of 128), N = 576 / 2112 tails,
# both BLOCK_M, a non-power-of-two BLOCK_N, normal + both grouped types.
CASES = {
    "dense_bf16_large": _cfg(4096, 7168, 16384),
    "dense_fp32_c_1x128_k576": _cfg(4097, 576, 576, out="fp32", recipe="1x128", has_c=True, force=(64, 48)),
    "dense_fp32_bn144": _cfg(300, 2112, 576, out="fp32", force=(128, 144)),
    "dense_bm64_bn112_pingpong": _cfg(128, 7168, 16384),  # the tightest register budget of the ping-pong loop
    "contiguous_1x128": _cfg(8192, 2112, 7168, recipe="1x128", gemm_type="contiguous", groups=4),
    "masked_k576": _cfg(256, 576, 576, gemm_type="masked", groups=8),
}


def _compile(name, cfg, n, k, out_dir):
    src, symbol = _codegen.fp8_gemm_source(cfg, n, k)
    cu = os.path.join(out_dir, name + ".cu")
    cubin = os.path.join(out_dir, name + ".cubin")
    with open(cu, "w") as f:
        f.write(src)
    cmd = [NVCC, *_jit.BASE_FLAGS, f"-I{_jit.kernel_dir()}", "-Xptxas", "-v", "-o", cubin, cu]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"nvcc failed for {name}:\n{res.stderr[-4000:]}")
    sass = subprocess.run([CUOBJDUMP, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    return symbol, res.stderr, sass


@unittest.skipIf(NVCC is None or CUOBJDUMP is None, "needs nvcc and cuobjdump")
class TestKernelCompile(TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            futures = {name: pool.submit(_compile, name, *case, cls.tmp.name) for name, case in CASES.items()}
            cls.results = {name: f.result() for name, f in futures.items()}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_resources_and_sass(self):
        for name, (symbol, ptxas, sass) in self.results.items():
            with self.subTest(kernel=name):
                self.assertIn(symbol, ptxas)
                self.assertRegex(ptxas, r"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")
                self.assertNotIn("C7508", ptxas)  # setmaxnreg ignored
                self.assertIsNone(re.search(r"\(C751\d\)", ptxas), "ptxas serialised or waited on wgmma")
                self.assertRegex(sass, r"QGMMA\.64x\d+x32\.F32\.E4M3\.E4M3")
                self.assertIsNone(re.search(r"\b(LDL|STL)\b", sass), "local-memory traffic in SASS")

    def test_bf16_epilogue_uses_stmatrix_and_tma_store(self):
        _, _, sass = self.results["dense_bf16_large"]
        self.assertIn("STSM", sass)
        self.assertIn("UTMASTG", sass)


class TestGeneratedSource(TestCase):
    def test_wgmma_source(self):
        # The full text of one specialisation is in test_source (N = 80); here: every N names its N / 2 accumulators
        # once, as operands %0 .. %(N/2 - 1), then the two descriptors and the scale-d flag.
        for n in (8, 24, 136, 256):
            src = _codegen.wgmma_source(n)
            regs = n // 2
            self.assertIn(f"struct Fp8Wgmma<{n}>", src)
            self.assertIn(f"wgmma.mma_async.sync.aligned.m64n{n}k32.f32.e4m3.e4m3", src)
            self.assertEqual(re.findall(r'"\+f"\(d\[(\d+)\]\)', src), [str(i) for i in range(regs)])
            operands = re.search(r"e4m3 \{(.*?)\}, %", src, re.S).group(1)
            self.assertEqual(re.findall(r"%(\d+)", operands), [str(i) for i in range(regs)])
            self.assertIn(f"}}, %{regs}, %{regs + 1}, p, 1, 1;", src)
            self.assertIn(f"setp.ne.b32 p, %{regs + 2}, 0;", src)
        for n in (0, 12, 264):
            with self.assertRaisesRegex(ValueError, f"wgmma N must be a multiple of 8 in \\[8, 256\\], got {n}"):
                _codegen.wgmma_source(n)

    def test_source(self):
        cfg, n, k = CASES["masked_k576"]
        src, symbol = _codegen.fp8_gemm_source(cfg, n, k)
        self.assertExpectedInline(symbol, """dg_fp8_gemm_masked_n576_k576_bm128_bn80_s7_cl1_g8_sfb128x128_bf16""")
        self.assertExpectedInline(src, """\
// Generated by deepgemm_ops._codegen: FP8 NT GEMM (masked), N=576, K=576.
#include "ptx.cuh"

namespace deepgemm_ops::kernels::ptx {
template <>
struct Fp8Wgmma<80> {
  __device__ __forceinline__ static void fma(uint64_t desc_a, uint64_t desc_b, float (&d)[40], bool accumulate) {
    asm volatile(
        "{\\n\\t.reg .pred p;\\n\\tsetp.ne.b32 p, %42, 0;\\n\\t"
        "wgmma.mma_async.sync.aligned.m64n80k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, "
        "%8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, "
        "%24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39}, %40, %41, p, 1, 1;\\n\\t}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
        : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)));
  }
};
}  // namespace deepgemm_ops::kernels::ptx

#include "fp8_gemm.cuh"

static_assert(deepgemm_ops::kernels::smem_bytes<128, 80, 7, false>() == 212784,
              "GemmConfig.smem_bytes disagrees with the kernel's shared-memory layout");
static_assert(deepgemm_ops::kernels::num_threads(128) == 384,
              "GemmConfig.num_threads disagrees with the kernel's warpgroup layout");

extern "C" __global__ void __launch_bounds__(384, 1)
dg_fp8_gemm_masked_n576_k576_bm128_bn80_s7_cl1_g8_sfb128x128_bf16(const __grid_constant__ deepgemm_ops::Fp8GemmParams params,
    const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
    const __grid_constant__ CUtensorMap tma_sfa, const __grid_constant__ CUtensorMap tma_d) {
  deepgemm_ops::kernels::fp8_gemm_kernel<576, 576, 128, 80, 7, 8, deepgemm_ops::GemmType::Masked, deepgemm_ops::SfbRecipe::Block128x128, false, false, 1>(params, tma_a, tma_b, tma_sfa, tma_d);
}
""")

    def test_rejects_tile_spanning_three_scale_blocks(self):
        cfg, n, k = _cfg(4096, 7168, 2048, force=(128, 176))
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(cfg, n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: with 128x128 B scales a tile must span at most two 128-column blocks, block_n <= 128 + gcd(block_n, 128); got 176""")
        _codegen.fp8_gemm_source(dataclasses.replace(cfg, sfb_recipe="1x128"), n, k)  # per-column scales: any width

    def test_rejects_bad_config(self):
        cfg, n, k = CASES["dense_bf16_large"]
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(dataclasses.replace(cfg, block_m=96, smem_bytes=1), n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: block_m must be 64 or 128, got 96; num_math_warpgroups/num_threads must be 1/256 for block_m=96, got 2/384; smem_bytes must be 172496, got 1""")


if __name__ == "__main__":
    unittest.main()
