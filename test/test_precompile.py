"""deepgemm_ops precompile: problem parsing, planning (one kernel per distinct config), the command line, and real
compiles into a temporary cache (in-process and with worker processes). CPU only; compiling needs CUTLASS + NVRTC."""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import unittest
from unittest import mock

import expecttest

from deepgemm_ops import _precompile as P
from deepgemm_ops import _toolchain
from deepgemm_ops.__main__ import build_parser


def _can_compile() -> bool:
    try:
        _toolchain.cutlass_include_dir()
        _toolchain.nvrtc_setup()
        return True
    except RuntimeError:
        return False


requires_compiler = unittest.skipUnless(_can_compile(), "needs the CUTLASS headers and NVRTC")


class TestParsing(expecttest.TestCase):
    def test_problems(self):
        self.assertEqual(
            P.parse_problems("128x7168x2048, contiguous:4:8192x4096x7168,MASKED:32:192x7168x2048"),
            [P.GemmCall(128, 7168, 2048), P.GemmCall(8192, 4096, 7168, "contiguous", 4),
             P.GemmCall(192, 7168, 2048, "masked", 32, 192)])

    def test_bad_problems(self):
        for text in ("128x7168", "0x1x16", "normal:1:1x2x16", "masked:0:1x2x16", "masked:1x2x16", "dense:2:1x2x16"):
            with self.subTest(text=text), self.assertRaises(argparse.ArgumentTypeError) as ctx:
                P.parse_problems(text)
            self.assertIn(repr(text), str(ctx.exception))
        self.assertExpectedInline(str(ctx.exception), """expected MxNxK, contiguous:G:MxNxK or masked:G:MxNxK with positive integers, got 'dense:2:1x2x16'""")

    def test_m_values(self):
        self.assertEqual(P.parse_m_values("4096,1-3,2"), [1, 2, 3, 4096])
        for text in ("0", "5-3", "a", "1-"):
            with self.subTest(text=text), self.assertRaises(argparse.ArgumentTypeError):
                P.parse_m_values(text)
        with self.assertRaises(argparse.ArgumentTypeError) as ctx:
            P.parse_m_values("64,8-2")
        self.assertExpectedInline(str(ctx.exception), """expected M values like '64,128' or a range '1-8192' of positive integers, got '8-2'""")


class TestPlan(expecttest.TestCase):
    def test_one_kernel_per_config_in_first_use_order(self):
        calls = [P.GemmCall(m, 7168, 2048) for m in (4096, 4000, 64, 4096)]
        kernels = P.plan(calls, num_sms=132)
        self.assertExpectedInline("\n".join(k.name for k in kernels), """\
dg_fp8_gemm_normal_n7168_k2048_bm256_bn128_s3_cl2_g8_sfb128x128_bf16
dg_fp8_gemm_normal_n7168_k2048_bm64_bn64_s13_cl1_g8_sfb128x128_bf16""")
        self.assertEqual({k.family for k in kernels}, {"normal N=7168 K=2048 (bf16, sfb 128x128)"})

    def test_deepseek_v3(self):
        calls = P.model_problems("deepseek-v3", P.parse_m_values("1-8192"))
        kernels = P.plan(calls, num_sms=132)
        families = {k.family.split(" (")[0] for k in kernels}
        for n, k in P.MODELS["deepseek-v3"]["dense"]:
            self.assertIn(f"normal N={n} K={k}", families)
        self.assertTrue(any(f.startswith("contiguous x4 N=4096 K=7168") for f in families))
        self.assertTrue(any(f.startswith("masked x1 N=7168 K=2048") for f in families))
        self.assertEqual(len({k.name for k in kernels}), len(kernels))
        self.assertTrue(all(c.m <= P.MAX_MASKED_M for c in calls if c.gemm_type == "masked"))
        self.assertTrue(all(c.m % 128 == 0 for c in calls if c.gemm_type == "contiguous"))
        with self.assertRaises(ValueError) as ctx:
            P.model_problems("llama", [1])
        self.assertExpectedInline(str(ctx.exception), """unknown model 'llama'; known: deepseek-v3""")

    def test_workers_checked(self):
        with self.assertRaises(ValueError) as ctx:
            P.precompile([P.GemmCall(64, 256, 128)], num_sms=132, workers=0)
        self.assertExpectedInline(str(ctx.exception), """workers must be >= 1, got 0""")


class TestCommandLine(expecttest.TestCase):
    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = build_parser().parse_args(["precompile", *argv])
        return P.run(args, out, err), out.getvalue(), err.getvalue()

    def test_dry_run_lists_kernels(self):
        rc, out, _ = self.run_cli("--shapes", "4096x7168x2048,masked:4:256x4096x7168", "--with-c", "--num-sms", "132",
                                  "--dry-run")
        self.assertEqual(rc, 0)
        self.assertExpectedInline(out, """\
dg_fp8_gemm_normal_n7168_k2048_bm256_bn128_s3_cl2_g8_sfb128x128_fp32_c	normal N=7168 K=2048 (fp32, sfb 128x128, +C)
dg_fp8_gemm_masked_n4096_k7168_bm256_bn128_s3_cl2_g8_sfb128x128_bf16	masked x4 N=4096 K=7168 (bf16, sfb 128x128)
""")

    def test_nothing_to_do_and_no_gpu(self):
        rc, _, err = self.run_cli()
        self.assertEqual((rc, err), (2, "precompile: nothing to do: give --shapes and/or --model\n"))
        with mock.patch("torch.cuda.is_available", return_value=False):
            rc, _, err = self.run_cli("--model", "deepseek-v3")
        self.assertEqual(rc, 2)
        self.assertExpectedInline(err, """precompile: no CUDA device to plan for: pass --num-sms (132 on an H100/H200 SXM)\n""")


@requires_compiler
class TestCompile(expecttest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.cache = tempfile.TemporaryDirectory(prefix="dg_precompile_test_")
        self.addCleanup(self.cache.cleanup)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DG_")}
        env["DG_JIT_CACHE_DIR"] = self.cache.name
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_compiles_then_finds_them_cached_with_progress_and_summary(self):
        shapes = "64x256x128,4096x256x128"
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            rc, out, err = TestCommandLine.run_cli(self, "--shapes", shapes, "--num-sms", "132", "--json", report.name)
            self.assertEqual(rc, 0, err)
            data = json.load(open(report.name))
        self.assertEqual([k["cached"] for k in data["kernels"]], [False, False])
        progress = err.splitlines()
        self.assertEqual(len(progress), 2)  # one line per kernel when stderr is not a terminal
        self.assertRegex(progress[0], r"^1/2 \[#{12}\.{12}\]  50% \d+\.\ds<\d+\.\ds dg_fp8_gemm_normal_n256_k128_\w+$")
        self.assertRegex(progress[1], r"^2/2 \[#{24}\] 100% ")
        rows = out.splitlines()
        self.assertEqual(rows[0].split(), ["kernel", "family", "kernels", "compiled", "cached", "compile", "s"])
        self.assertEqual(rows[1].split()[-4:-1], ["2", "2", "0"])
        self.assertRegex(rows[-1], r"^total\s+2\s+2\s+0\s+[\d.]+\s+\(wall [\d.]+ s, [\d.]+ s per compiled kernel\)$")
        rc, out, err = TestCommandLine.run_cli(self, "--shapes", shapes, "--num-sms", "132")
        self.assertRegex(out.splitlines()[-1], r"^total\s+2\s+0\s+2\s+0\.0\s+\(wall [\d.]+ s\)$")
        self.assertTrue(err.splitlines()[0].endswith("(cached)"))

    def test_worker_processes(self):
        calls = [P.GemmCall(64, 256, 128), P.GemmCall(4096, 256, 128, with_c=True, out_dtype="fp32")]
        results = P.precompile(calls, num_sms=132, workers=2)
        self.assertEqual(sorted(r.name for r in results), sorted(k.name for k in P.plan(calls, 132)))
        self.assertFalse(any(r.cached for r in results))
        self.assertTrue(all(r.cached for r in P.precompile(calls, num_sms=132)))


if __name__ == "__main__":
    unittest.main()
