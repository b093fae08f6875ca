"""deepgemm_ops.bench: argument parsing and the pure helpers (CPU; benchmarks never run in tests)."""

from __future__ import annotations

import argparse
import unittest
from unittest import mock

import expecttest
import torch
from conftest import requires_no_cuda

import deepgemm_ops  # noqa: F401  (registers torch.ops.deepgemm)
from deepgemm_ops import bench
from deepgemm_ops.__main__ import build_parser, main
from deepgemm_ops._constants import SCALE_BLOCK


class _OnceTimer:
    """A bench Timer stand-in for the CPU: calls each candidate once and reports `us` for each (`deep_gemm_us` for the
    DeepGEMM candidate, default the same) and `kernel_us` as its kernel-only time, so a suite's plumbing runs on the
    CPU ops without timing anything."""

    device = torch.device("cpu")

    def __init__(self, us: float = 1.0, deep_gemm_us: float | None = None, kernel_us: float = 5.0):
        self.us, self.deep_gemm_us, self.kernel = us, us if deep_gemm_us is None else deep_gemm_us, kernel_us

    def time_interleaved(self, fns, reps):
        for fn in fns.values():
            fn()
        return {name: self.deep_gemm_us if name == "deep_gemm" else self.us for name in fns}

    def kernel_us(self, fns, reps):
        for fn in fns.values():
            fn()
        return {name: self.kernel for name in fns}

class TestArguments(expecttest.TestCase):
    def test_defaults(self):
        args = build_parser().parse_args(["bench"])
        self.assertEqual(len(args.shapes), 18)
        self.assertEqual(str(args.shapes[0]), "64x2112x7168")
        self.assertEqual(str(args.shapes[-1]), "4096x7168x2048")
        self.assertEqual((args.reps, args.json, args.plot, args.overhead), (30, None, None, False))

    def test_explicit_shapes_and_outputs(self):
        args = build_parser().parse_args(
            ["bench", "--shapes", "1x2x3, 4X5X6", "--json", "r.json", "--plot", "r.png", "--overhead"]
        )
        self.assertEqual(args.shapes, [bench.GemmShape(1, 2, 3), bench.GemmShape(4, 5, 6)])
        self.assertEqual((str(args.json), str(args.plot), args.overhead), ("r.json", "r.png", True))

    def test_bad_shape(self):
        with self.assertRaises(argparse.ArgumentTypeError) as ctx:
            bench.parse_shapes("64x0x128")
        self.assertExpectedInline(
            str(ctx.exception),
            """expected 'seed' or a comma-separated list of MxNxK with positive integers, got '64x0x128'""",
        )

    @requires_no_cuda
    def test_cpu_only_machine_exits_with_message(self):
        with self.assertRaises(SystemExit) as ctx:
            main(["bench"])
        self.assertExpectedInline(
            str(ctx.exception.code),
            """deepgemm_ops bench: needs a CUDA GPU (torch.cuda.is_available() is False on this machine)""",
        )

    def test_plot_without_matplotlib(self):
        with mock.patch("importlib.util.find_spec", return_value=None):
            with self.assertRaises(SystemExit) as ctx:
                main(["bench", "--plot", "x.png"])
        self.assertExpectedInline(
            str(ctx.exception.code),
            """deepgemm_ops bench: --plot needs matplotlib, which is not installed (pip install matplotlib)""",
        )


class TestHelpers(expecttest.TestCase):
    def test_counts(self):
        s = bench.GemmShape(64, 2112, 7168)
        self.assertEqual(bench.gemm_flops(s), 2 * 64 * 2112 * 7168)
        # A + B fp8, sfa 64x56 + sfb 17x56 fp32, D bf16
        self.assertEqual(bench.gemm_bytes(s), (64 + 2112) * 7168 + (64 * 56 + 17 * 56) * 4 + 64 * 2112 * 2)
        self.assertAlmostEqual(bench.tflops(2_000_000, 1.0), 2.0)
        self.assertAlmostEqual(bench.gbps(3000, 1.0), 3.0)

    def test_max_rel_error(self):
        ref = torch.tensor([[1.0, -4.0], [0.0, 2.0]], dtype=torch.float64)
        out = torch.tensor([[1.0, -4.0], [0.5, 2.0]], dtype=torch.bfloat16)
        self.assertAlmostEqual(bench.max_rel_error(out, ref), 0.125)

    def test_reference_matches_the_op_reference(self):
        s = bench.GemmShape(3, 200, 300)  # partial scale blocks in N and K
        a, sfa, b, sfb = bench.quantized_inputs(s, torch.device("cpu"))
        ref = bench.dense._dequantize(a, sfa, 1) @ bench.dense._dequantize(b, sfb, SCALE_BLOCK).t()
        ours = torch.ops.deepgemm.fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32)
        self.assertLess(bench.max_rel_error(ours, ref), 1e-5)

    def test_rows_plumbing_on_cpu(self):
        """bench_gemm / bench_overhead end to end with a stand-in timer and cuBLASLt (no timing checked)."""

        def scaled_mm(a, bt, scale_a, scale_b, out_dtype):  # the blockwise cuBLASLt call, on the CPU
            return torch.ops.deepgemm.fp8_gemm_nt(a, scale_a, bt.t(), scale_b.t(), out_dtype=out_dtype)

        def call_once(fn):
            fn()
            return 2.0

        with mock.patch.object(torch, "_scaled_mm", scaled_mm), mock.patch.object(bench.dense, "host_us_per_call", call_once):
            row = bench.bench_gemm(bench.GemmShape(64, 256, 384), _OnceTimer(us=10.0), copy_gbps=1000.0, reps=1)
            overhead = bench.bench_overhead(torch.device("cpu"))
        self.assertEqual(sorted(row), ["cublaslt", "k", "m", "n", "ours", "same_bytes_copy_us", "shape",
                                       "speedup_vs_cublaslt"])
        self.assertEqual(row["ours"]["us"], 10.0)
        self.assertAlmostEqual(row["ours"]["copy_fraction"], bench.gemm_bytes(bench.GemmShape(64, 256, 384)) / 1e4 / 1e3)
        self.assertLess(row["ours"]["rel_err"], 1e-2)
        self.assertLess(row["cublaslt"]["rel_err"], 1e-2)
        self.assertEqual(sorted(overhead), ["groups", "shape", "us"])
        self.assertEqual(sorted(overhead["us"]), ["aten_bmm", "aten_mm", "compat_fp8_gemm_nt", "compat_masked",
                                                  "contiguous", "contiguous_out", "cublaslt", "fp8_gemm_nt",
                                                  "fp8_gemm_nt_out", "masked", "masked_out", "per_token_cast"])
        self.assertEqual(set(overhead["us"].values()), {2.0})

    def test_against_a_deep_gemm_api_module_on_cpu(self):
        """--against: the module is called with DeepGEMM's API on the same inputs (the facade stands in here) and
        every candidate gets a kernel-only time (stand-in timer: no timing checked)."""
        import deepgemm_ops.compat as facade

        def scaled_mm(a, bt, scale_a, scale_b, out_dtype):
            return torch.ops.deepgemm.fp8_gemm_nt(a, scale_a, bt.t(), scale_b.t(), out_dtype=out_dtype)

        with mock.patch.object(torch, "_scaled_mm", scaled_mm):
            row = bench.bench_gemm(bench.GemmShape(64, 256, 384), _OnceTimer(us=10.0), 1000.0, 1, against=facade)
        self.assertLess(row["deep_gemm"]["rel_err"], 1e-2)
        self.assertEqual((row["speedup_vs_deep_gemm"], row["kernel_speedup_vs_deep_gemm"]), (1.0, 1.0))
        self.assertEqual(row["ours"]["kernel_us"], 5.0)
        self.assertExpectedInline(bench.format_against([row]), """\
             shape |  ours us  kernel | DeepGEMM us  kernel  TFLOPS | ours/DG kernels
-------------------------------------------------------------------------------------
        64x256x384 |     10.0     5.0 |        10.0     5.0     1.3 |   1.00x   1.00x""")

    def test_table(self):
        row = {
            "shape": "64x2112x7168",
            "ours": {"us": 20.0, "tflops": 97.0, "gbps": 840.0, "copy_fraction": 0.2, "rel_err": 1e-3},
            "cublaslt": {"us": 30.0, "tflops": 65.0, "gbps": 560.0, "copy_fraction": 0.13, "rel_err": 2e-3},
            "speedup_vs_cublaslt": 1.5,
            "same_bytes_copy_us": 11.5,
        }
        missing = {"shape": "4096x7168x2048", "ours": {"error": "NotImplementedError: x"}, "cublaslt": row["cublaslt"]}
        self.assertExpectedInline(
            bench.format_table([row, missing]),
            """\
             shape |   ours us  TFLOPS   GB/s  %copy  rel err | cuBLASLt us  TFLOPS  rel err | speedup | copy us
----------------------------------------------------------------------------------------------------------------
      64x2112x7168 |      20.0    97.0    840  20.0%  1.0e-03 |        30.0    65.0  2.0e-03 |   1.50x |    11.5
    4096x7168x2048 |                          not implemented |        30.0    65.0  2.0e-03 |       - |       -""",
        )

    def test_bf16_table_and_flag(self):
        from deepgemm_ops.bench.bf16 import format_bf16

        self.assertTrue(build_parser().parse_args(["bench", "--bf16"]).bf16)
        row = {"layout": "tn", "m": 4096, "n": 2112, "k": 7168, "us": 200.0, "tflops": 620.0, "rel_err": 2e-3,
               "cublas_tflops": 600.0, "vs_cublas": 620.0 / 600.0}
        self.assertExpectedInline(format_bf16([row]), """\
layout          M x N x K |       us  TFLOPS  rel err |  cuBLAS  ratio
----------------------------------------------------------------------
    tn     4096x2112x7168 |    200.0   620.0  2.0e-03 |   600.0  1.03x""")

    def test_wgrad_table_and_flag(self):
        from deepgemm_ops.bench.wgrad import K_GROUPED_CASES, _group_ks, format_wgrad

        self.assertTrue(build_parser().parse_args(["bench", "--wgrad"]).wgrad)
        ks = _group_ks(4, 8192, seed=1)
        self.assertEqual(ks, _group_ks(4, 8192, seed=1))  # the same problem in every run
        self.assertTrue(all(k % 128 == 0 and 0.7 * 8192 - 128 <= k <= 1.3 * 8192 + 128 for k in ks))
        self.assertEqual(len(K_GROUPED_CASES), 6)
        kg = {"groups": 4, "m": 4096, "n": 7168, "ks": [8192] * 4, "us": 500.0, "tflops": 1000.0, "rel_err": 1e-3,
              "bf16_us": 700.0, "bf16_tflops": 700.0}
        dense = {"tokens": 8192, "m": 7168, "n": 4096, "us": 400.0, "tflops": 1200.0, "rel_err": 2e-3,
                 "bf16_us": 600.0, "bf16_tflops": 800.0, "fp32_inplace_us": 480.0, "fp32_inplace_tflops": 1000.0,
                 "forward_us": 300.0, "forward_tflops": 1600.0}
        self.assertExpectedInline(format_wgrad([kg], [dense]), """\
                   weight gradient |       us  TFLOPS  rel err |  bf16 us  TFLOPS  ratio
----------------------------------------------------------------------------------------
    4 groups 4096x7168 sum K 32768 |    500.0  1000.0  1.0e-03 |    700.0   700.0  1.40x
      dense 7168x4096, 8192 tokens |    400.0  1200.0  2.0e-03 |    600.0   800.0  1.50x

     dense weight gradient, TFLOPS | bf16 out  ratio |  fp32 +=  ratio |  forward
---------------------------------------------------------------------------------
            7168x4096, 8192 tokens |   1200.0  0.75x |   1000.0  0.62x |   1600.0""")

    def test_wgrad_cases_run_on_the_cpu_reference(self):
        """The benchmark's own plumbing (inputs, in-place accumulation, references, rows) on tiny cases and the CPU
        ops, with a timer that calls each candidate once."""
        from deepgemm_ops.bench import wgrad

        with mock.patch.object(wgrad, "K_GROUPED_CASES", ((3, 64, 96, 256),)), \
                mock.patch.object(wgrad, "DENSE_CASES", ((256, 96, 64),)):
            kg, dense = wgrad.bench_k_grouped(_OnceTimer(), 1), wgrad.bench_dense_wgrad(_OnceTimer(), 1)
        self.assertEqual(len(kg[0]["ks"]), 3)
        self.assertLess(kg[0]["rel_err"], 1e-5)  # the CPU op and the reference are the same dequantized product
        self.assertLess(dense[0]["rel_err"], 1e-2)  # bf16 output
        self.assertIn("3 groups 64x96", wgrad.format_wgrad(kg, dense))

    def test_against_deep_gemm_api_in_the_bf16_and_wgrad_suites(self):
        """--against with a module of DeepGEMM's API (our compat facade, on the CPU reference): the k-grouped and BF16
        rows gain its time and its error against the same reference, and the tables a DeepGEMM column."""
        from deepgemm_ops import compat
        from deepgemm_ops.bench import bf16, wgrad

        with mock.patch.object(wgrad, "K_GROUPED_CASES", ((3, 64, 96, 256),)):
            kg = wgrad.bench_k_grouped(_OnceTimer(deep_gemm_us=2.0), 1, against=compat)
        self.assertLess(kg[0]["deep_gemm_rel_err"], 1e-5)
        self.assertEqual(kg[0]["deep_gemm_us"], 2.0)
        self.assertIn("DeepGEMM us", wgrad.format_wgrad(kg, []))
        with mock.patch.object(bf16, "SEED_NKS", ((48, 64),)), mock.patch.object(bf16, "M", 32):
            rows = bf16.bench_bf16(_OnceTimer(deep_gemm_us=2.0), 1, against=compat)
        self.assertEqual([r["layout"] for r in rows], list(bf16.LAYOUTS))
        self.assertTrue(all(r["deep_gemm_rel_err"] < 1e-2 and r["vs_deep_gemm"] == 2.0 for r in rows))
        self.assertIn("DeepGEMM", bf16.format_bf16(rows).splitlines()[0])

    def test_k_grouped_against_later_deep_gemm_layout(self):
        """Later DeepGEMM releases take the SM90 k-grouped GEMM as k_grouped_fp8_gemm_nt_contiguous on each group's
        K-major block, one after the other, with MN-major scales: a stand-in that rebuilds [M, ΣK] from that layout
        (and checks the scale layout) must reproduce our result."""
        from types import SimpleNamespace

        from deepgemm_ops.bench import wgrad

        def nt(a, b, d, ks, ks_tensor, c):
            (fa, sfa), (fb, sfb) = a, b
            self.assertEqual((sfa.stride(0), sfb.stride(0)), (1, 1))  # MN-major scales
            m, n = sfa.shape[0], sfb.shape[0]
            blocks_a, blocks_b, at = [], [], 0
            for k in ks:
                blocks_a.append(fa[at * m:(at + k) * m].view(m, k))
                blocks_b.append(fb[at * n:(at + k) * n].view(n, k))
                at += k
            torch.ops.deepgemm.k_grouped_fp8_gemm_nt_contiguous_out(
                torch.cat(blocks_a, 1), sfa.contiguous(), torch.cat(blocks_b, 1), sfb.contiguous(), ks_tensor, d, c)

        with mock.patch.object(wgrad, "K_GROUPED_CASES", ((3, 64, 96, 256),)):
            kg = wgrad.bench_k_grouped(_OnceTimer(), 1, against=SimpleNamespace(k_grouped_fp8_gemm_nt_contiguous=nt))
        self.assertLess(kg[0]["deep_gemm_rel_err"], 1e-5)

    def test_grouped_cases_against_deep_gemm_api(self):
        """--grouped --against: DeepGEMM's grouped calls (our compat facade here, on the CPU reference) run on the same
        operands as ours; their rows carry the same run's ratio and kernel-only ratio instead of DESIGN's figure."""
        from deepgemm_ops import compat
        from deepgemm_ops.bench import grouped

        cases = (("contiguous", 2, 128, 64, 256, 1000), ("masked", 2, 64, 64, 256, 500))
        with mock.patch.object(grouped, "CASES", cases):
            alone = grouped.run_grouped(_OnceTimer(), 4000.0, 1)
            rows = grouped.run_grouped(_OnceTimer(deep_gemm_us=2.0, kernel_us=5.0), 4000.0, 1, against=compat)
        self.assertEqual([r["vs_deepgemm"] for r in alone], [r["tflops"] / c[-1] for r, c in zip(alone, cases)])
        self.assertTrue(all("deep_gemm_us" not in r for r in alone))
        for r in rows:
            self.assertEqual((r["vs_deepgemm"], r["kernel_vs_deepgemm"]), (2.0, 1.0))
            self.assertLess(r["deep_gemm_rel_err"], 1e-2)
            self.assertLess(r["rel_err"], 1e-2)
        self.assertIn("kernels", grouped.format_grouped(rows).splitlines()[0])
        self.assertNotIn("kernels", grouped.format_grouped(alone).splitlines()[0])

    def test_overhead_text(self):
        o = {"shape": "64x256x128", "groups": "4 groups x 128 rows",
             "us": {"aten_mm": 10.0, "aten_bmm": 20.0, "fp8_gemm_nt": 12.0, "masked_out": 15.0}}
        self.assertExpectedInline(
            bench.format_overhead(o),
            """\
host time per eager call, 64x256x128, grouped ops 4 groups x 128 rows (best of 5 x 2000 calls):
  aten_mm            10.00 us
  aten_bmm           20.00 us
  fp8_gemm_nt        12.00 us  (1.20x aten_mm)
  masked_out         15.00 us  (0.75x aten_bmm)""",
        )

    def test_first_call_text(self):
        f = {"shape": "4096x7168x2048", "host_module_load_ms": 12.5, "cold_first_call_s": 1.234,
             "warm_first_call_ms": 3.21, "second_call_ms": 0.15}
        self.assertExpectedInline(bench.format_first_call(f), """first fp8_gemm_nt call of 4096x7168x2048 in a new process: kernel cache cold 1.23 s, warm 3.2 ms (second call 0.15 ms); host module load 12.5 ms""")


if __name__ == "__main__":
    unittest.main()
