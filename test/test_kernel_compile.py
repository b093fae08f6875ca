"""Compile representative FP8 and BF16 GEMM kernel configs for sm_90a with NVRTC (the default) and nvcc, with SASS checks
(CPU machine, no GPU needed).

Checks per kernel and compiler: ptxas reports no stack frame and no spills (TILE_SPILL_BYTES: a bounded spill, never in
the main loop) and does not serialise the wgmmas
(C7510-C7519: an injected wait or a serialised pipeline), the SASS has FP8 wgmma (QGMMA) and no local-memory traffic
(LDL/STL), the main loop (the innermost loop around the QGMMAs) has no more instructions than MAIN_LOOP_BOUND
allows, and in ping-pong loops at least PROMOTION_UNDER_NEXT_BATCH of a k-block's promotion FFMAs run while the next
k-block's wgmmas are in flight. Skips a compiler that is not installed, and everything without cuobjdump.
"""

import concurrent.futures
import dataclasses
import os
import re
import subprocess
import tempfile
import unittest
from pathlib import Path

from conftest import CUOBJDUMP, HAVE_CUTLASS, requires_cuobjdump, requires_nvcc, requires_nvrtc
from expecttest import TestCase

from deepgemm_ops import _bf16_heuristics as BH
from deepgemm_ops import _codegen, _jit, _toolchain
from deepgemm_ops import _heuristics as H


def _cfg(m, n, k, *, out="bf16", recipe="128x128", has_c=False, gemm_type="normal", groups=1, force=None):
    cfg = H.choose_fp8_gemm_config(m, n, k, num_sms=132, out_dtype=out, sfb_recipe=recipe, has_c=has_c,
                                   gemm_type=gemm_type, num_groups=groups)
    if force:  # (block_m, block_n[, cluster_size[, num_splits]])
        cfg = H.with_tile(cfg, block_m=force[0], block_n=force[1], cluster_size=force[2] if len(force) > 2 else 1,
                          num_splits=force[3] if len(force) > 3 else 1)
    return cfg, n, 0 if gemm_type == "k_grouped" else k  # k-grouped kernels take K at run time


# (config, N, K): bf16/fp32 out, with C, both sfb recipes, K = 576 (not a multiple of 128), N = 576 / 2112 tails,
# every BLOCK_M (256: two waves, A multicast), a non-power-of-two BLOCK_N, normal + both grouped types.
CASES = {
    "dense_bf16_large": _cfg(4096, 7168, 16384),
    "dense_fp32_c_1x128_k576": _cfg(4097, 576, 576, out="fp32", recipe="1x128", has_c=True, force=(64, 48)),
    "dense_fp32_bn144": _cfg(300, 2112, 576, out="fp32", force=(128, 144)),
    "dense_bm64_bn112_pingpong": _cfg(128, 7168, 16384, force=(64, 112)),  # the tightest register budget of the
    # ping-pong loop
    "contiguous_1x128": _cfg(8192, 2112, 7168, recipe="1x128", gemm_type="contiguous", groups=4),
    "masked_k576": _cfg(256, 576, 576, gemm_type="masked", groups=8),
    # m-grouped 2-CTA clusters: n-block pairs share (multicast) A
    "contiguous_cl2": _cfg(32768, 4096, 7168, gemm_type="contiguous", groups=4, force=(128, 128, 2)),
    # 256-row contiguous tiles: a tile whose 128-row halves hold two groups runs its k-blocks once per half
    "contiguous_bm256_cl2": _cfg(32768, 7168, 2048, gemm_type="contiguous", groups=4),
    # masked 256-row tiles: a 64-row wave past masked_m skips its wgmmas and promotion
    "masked_bm256_cl2": _cfg(1024, 4096, 7168, gemm_type="masked", groups=1, force=(256, 128, 2)),
    "masked_bn192_cl2": _cfg(256, 6144, 7168, gemm_type="masked", groups=32, force=(128, 192, 2)),
    "dense_bm256_cl2": _cfg(4096, 7168, 2048, force=(256, 128, 2)),  # two waves per warpgroup, A multicast
    "dense_bn192_n2112": _cfg(4096, 2112, 7168),  # single-buffer loop, one per start offset in the scale block
    # the dense weight gradient (1x128 on both, bf16 out): 256-row tiles, the k-block's B scales held in registers;
    # 256x112 where its extra waves cost less than 256x128's spills, 256x128 at N = 4096
    "dense_wgrad_bn112_1x128": _cfg(7168, 7168, 8192, recipe="1x128"),
    "dense_wgrad_bm256_1x128": _cfg(7168, 4096, 8192, recipe="1x128"),
    # fp32 += C in place with 256-row tiles: the TMA epilogue stages each warpgroup's two waves one after the other
    "dense_wgrad_bn112_fp32_c": _cfg(7168, 7168, 8192, out="fp32", recipe="1x128", has_c=True, force=(256, 112, 2)),
    # the weight gradient: run-time K per group (ks on the device), fp32 (+ C) into [G, M, N]; 256-, 128- and 64-row
    # tiles
    "k_grouped_bm256": _cfg(4096, 7168, 8192, out="fp32", recipe="1x128", has_c=True, gemm_type="k_grouped", groups=4),
    "k_grouped_c": _cfg(4096, 7168, 8192, out="fp32", recipe="1x128", has_c=True, gemm_type="k_grouped", groups=4,
                        force=(128, 128)),
    "k_grouped_bm64": _cfg(256, 576, 2048, out="fp32", recipe="1x128", gemm_type="k_grouped", groups=8,
                           force=(64, 112)),
    # split-K: the heuristic's two splits of 64x32 tiles; three of 128x64 ones with the 1x128 recipe and fp32 + C
    "dense_split2": _cfg(64, 2112, 7168),
    "dense_split3_fp32_c_1x128": _cfg(300, 576, 2112, out="fp32", recipe="1x128", has_c=True, force=(128, 64, 1, 3)),
}


# Instructions in the innermost loop around the QGMMAs (one k-block, or a ping-pong pair) per warp: the larger of
# NVRTC's (through nvJitLink) and nvcc's count when the kernels moved onto CuTe's primitives with 32-bit, warp-uniform
# descriptor advances (the hand-written PTX layer before: 286, 254, 214, 354, 300, 311); +1-2 since every math lane
# arrives on empty[s] (206, 206, 156 with a lane-0 arrive); +1 in the two bf16 TMA-store kernels since the epilogue
# can add a bias (register allocation; 207 before). A change that lengthens the
# main loop fails here; lower a bound when the loop gets shorter.
MAIN_LOOP_BOUND = {
    "dense_bf16_large": 398,  # the 256-row loops: two k-blocks per iteration with 128x128 B scales (203 per k-block
    # with one)
    "dense_fp32_c_1x128_k576": 241,  # 223 before the TMA fp32 epilogue: at the 240-register cap the stage
    # addresses left the uniform registers
    "dense_fp32_bn144": 187,
    "dense_bm64_bn112_pingpong": 305,
    "contiguous_1x128": 261,  # 276 while a padding-only tile was skipped inside the scheduler (grouped loops lost
    # their uniform registers: docs/PERF.md)
    "masked_k576": 282,
    "contiguous_cl2": 236,
    "contiguous_bm256_cl2": 398,  # as the dense 256-row loop (DeepGEMM's: 191.75 per k-block, unrolled x8)
    "masked_bm256_cl2": 262,  # the 1-live-wave loop (the smallest); its 2-wave loop is 460 per two k-blocks
    "masked_bn192_cl2": 168,
    "dense_bm256_cl2": 398,
    "dense_bn192_n2112": 152,  # 236 with the B-scale block choice made at run time (DeepGEMM: 140)
    "dense_wgrad_bm256_1x128": 351,  # two waves of 64 FMUL + 64 FFMA each
    "dense_wgrad_bn112_1x128": 306,  # two waves of 56 FMUL + 56 FFMA each
    "dense_wgrad_bn112_fp32_c": 306,
    "k_grouped_bm256": 390,  # 256x128: two waves of 64 FMUL + 64 FFMA each, B scales read per wave
    "k_grouped_c": 421,  # a 128x128 tile since C left the registers (128x112: 392)
    "k_grouped_bm64": 392,
    "dense_split2": 149,  # a split's k-blocks counted at run time, as k-grouped kernels do (142 before the bias
    # moved under a branch in the epilogue: ptxas placed the split index in other registers)
    "dense_split3_fp32_c_1x128": 275,
}

# Ping-pong loops (two k-blocks per iteration, sm90_mainloop.cuh consume_pingpong): at least this many of the first
# k-block's promotion FFMAs must sit between the wait for its wgmmas (wait_group 1) and the wait for the second
# k-block's (wait_group 0), i.e. run while the second batch is on the tensor cores. ptxas places the rest after the
# second wait; these are the counts it reaches (NVRTC / nvcc, ptxas 13.0, of BLOCK_N / 2 per thread). At 64x32 it
# drains both batches before promoting (0 of 16).
PROMOTION_UNDER_NEXT_BATCH = {
    "dense_fp32_c_1x128_k576": 4,  # of 24
    "dense_bm64_bn112_pingpong": 25,  # of 56
    "masked_k576": 13,  # of 40
    "contiguous_cl2": 56,  # of 64
    "k_grouped_c": 46,  # of 64
    "k_grouped_bm64": 39,  # of 56
    "dense_split2": 0,  # of 16
    "dense_split3_fp32_c_1x128": 18,  # of 32
}

# Kernels allowed to spill this many bytes, never inside the main loop: the 256x128 weight-gradient kernel's math
# warpgroups keep a few tile coordinates in local memory across each tile's main loop (one store and one load each per
# tile of 64 k-blocks) to hold the k-block's B scales in registers. The heuristic takes the spill-free 256x112 tile
# unless its extra waves cost more (N = 4096: 9 waves against 7; docs/PERF.md, session 17).
TILE_SPILL_BYTES = {"dense_wgrad_bm256_1x128": 64}

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+((?:@!?U?P\w+\s+)?[A-Z][A-Z0-9_.]*[^;]*);")
_BACK_BRANCH = re.compile(r"\bBRA(?:\.\S+)?\s+(?:!?U?P\w+,\s*)?(0x[0-9a-f]+)")


def register_split_problem(symbol: str, ptxas: str, sass: str, math_warpgroups: int) -> str | None:
    """Why the kernel's setmaxnreg split can never complete, or None. The math warpgroups' setmaxnreg.inc takes
    registers only from those the producer warpgroup released with setmaxnreg.dec (not from the SM's unallocated
    ones): with the launch allocation R per thread, (R - producer) * 128 must cover (math - R) * 128 per math
    warpgroup, else the math warps wait forever (a 48-register producer hung every 2-warpgroup kernel, docs/PERF.md)."""
    used = re.search(rf"Function properties for {symbol}\n(?:.*\n)*?.*Used (\d+) registers", ptxas)
    math = re.search(r"USETMAXREG\.TRY_ALLOC\.CTAPOOL \w+, (0x[0-9a-f]+)", sass)
    producer = re.search(r"USETMAXREG\.DEALLOC\.CTAPOOL (0x[0-9a-f]+)", sass)
    if not (used and math and producer):
        return "no setmaxnreg pair or register count found"
    launch = -(-int(used.group(1)) // 8) * 8  # allocated per warp in units of 8 registers per thread
    released = (launch - int(producer.group(1), 16)) * 128
    needed = (int(math.group(1), 16) - launch) * 128 * math_warpgroups
    return None if released >= needed else f"producer releases {released} registers, math warpgroups need {needed}"


_GLOBAL_ACCESS = re.compile(r"\b(LDG|STG|LDGSTS|ATOMG|REDG?|UTMALDG|UTMASTG|UTMAREDG|UBLKCP)\b")


def pdl_problem(sass: str) -> str | None:
    """Why the kernel is unsafe under programmatic dependent launch, or None: it must wait for the previous grid
    (ACQBULK) ahead of its first global-memory access, in code order (the wait sits in the entry block,
    csrc/kernels/grid_dependency.cuh)."""
    code = [text for _, text in _INSTRUCTION.findall(sass)]
    wait = next((i for i, t in enumerate(code) if t.startswith("ACQBULK")), None)
    access = next((i for i, t in enumerate(code) if _GLOBAL_ACCESS.search(t)), len(code))
    if wait is None:
        return "no ACQBULK (griddepcontrol.wait) in the SASS"
    if wait > access:
        return f"global-memory access before the wait: {code[access]!r}"
    return None


def tma_loads_in_elect_loops(sass: str) -> int:
    """TMA loads (UTMALDG) that ptxas wrapped in an elect-and-retry loop (BRA.U.ANY right after): their operands were
    in per-thread registers, moved to uniform ones (R2UR) one active lane at a time. With the producer thread chosen
    by elect.sync they stay uniform (the 64x32 producer loop 82 -> 49 instructions per k-block; 64x4096x7168 +4%,
    docs/PERF.md)."""
    code = [text for _, text in _INSTRUCTION.findall(sass)]
    return sum(1 for i, t in enumerate(code) if "UTMALDG" in t and any("BRA.U.ANY" in n for n in code[i + 1:i + 4]))


def main_loop(sass: str) -> list[str]:
    """The instructions of the smallest loop (a backward branch and its target) whose body issues a QGMMA."""
    code = [(int(addr, 16), text) for addr, text in _INSTRUCTION.findall(sass)]
    loops = []
    for addr, text in code:
        m = _BACK_BRANCH.search(text)
        if m and int(m.group(1), 16) < addr:
            body = [t for a, t in code if int(m.group(1), 16) <= a <= addr]
            if any("QGMMA" in t for t in body):
                loops.append(body)
    if not loops:
        raise AssertionError("no loop with a QGMMA in the SASS")
    return min(loops, key=len)


def main_loop_instructions(sass: str) -> int:
    return len(main_loop(sass))


def main_loop_sass(sass: str) -> str:
    return "\n".join(main_loop(sass))


def promotion_ffmas_under_next_batch(sass: str) -> int | None:
    """FFMAs of the main loop between its `wgmma.wait_group 1` and the next `wait_group 0` (None: no such wait, the
    loop is not a ping-pong one)."""
    body = main_loop(sass)
    first = next((i for i, t in enumerate(body) if "DEPBAR.LE gsb0, 0x1" in t), None)
    if first is None:
        return None
    end = next((i for i in range(first + 1, len(body)) if "DEPBAR.LE gsb0, 0x0" in body[i]), len(body))
    return sum("FFMA" in t for t in body[first:end])


def _compile(compiler, name, cfg, n, k, out_dir):
    src, symbol = _codegen.fp8_gemm_source(cfg, n, k)
    cu = Path(out_dir) / f"{name}.cu"
    cubin = Path(out_dir) / f"{name}.cubin"
    cu.write_text(src)
    log = compiler.compile(src, cu, cubin, name=name, pch=True)
    sass = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    return symbol, log, sass


class _TmaIssueCheck:
    """The TMA-issue check of both GEMM families' compile tests (self.results: name -> (symbol, ptxas log, SASS))."""

    def test_tma_loads_issue_from_uniform_registers(self):
        for name, (_, _, sass) in self.results.items():
            with self.subTest(kernel=name):
                self.assertIn("UTMALDG", sass)
                self.assertEqual(tma_loads_in_elect_loops(sass), 0)


class _KernelCompile(_TmaIssueCheck):
    """The checks, for one compiler (the subclasses below)."""

    NVRTC: bool

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        compiler = _jit.Compiler(nvrtc=cls.NVRTC, ptxas_verbose=True)
        # NVRTC compiles in this process (one at a time, with PCH); nvcc runs as parallel subprocesses.
        workers = 1 if cls.NVRTC else max(2, os.cpu_count() or 2)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {name: pool.submit(_compile, compiler, name, *case, cls.tmp.name) for name, case in CASES.items()}
            cls.results = {name: f.result() for name, f in futures.items()}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_resources_and_sass(self):
        for name, (symbol, ptxas, sass) in self.results.items():
            with self.subTest(kernel=name):
                self.assertIn(symbol, ptxas)
                spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", ptxas)
                self.assertLessEqual(max(int(g) for g in spill.groups()), TILE_SPILL_BYTES.get(name, 0))
                self.assertNotIn("C7508", ptxas)  # setmaxnreg ignored
                self.assertIsNone(re.search(r"\(C751\d\)", ptxas), "ptxas serialised or waited on wgmma")
                self.assertRegex(sass, r"QGMMA\.64x\d+x32\.F32\.E4M3\.E4M3")
                if name not in TILE_SPILL_BYTES:
                    self.assertIsNone(re.search(r"\b(LDL|STL)\b", sass), "local-memory traffic in SASS")
                self.assertNotRegex(main_loop_sass(sass), r"\b(LDL|STL)\b", "local-memory traffic in the main loop")
                self.assertIsNone(pdl_problem(sass))

    def test_register_split_completes(self):
        for name, (symbol, ptxas, sass) in self.results.items():
            with self.subTest(kernel=name):
                self.assertIsNone(register_split_problem(symbol, ptxas, sass, CASES[name][0].num_math_warpgroups))

    def test_main_loop_length(self):
        for name, (_, _, sass) in self.results.items():
            with self.subTest(kernel=name):
                self.assertLessEqual(main_loop_instructions(sass), MAIN_LOOP_BOUND[name])

    def test_promotion_runs_under_the_next_wgmma_batch(self):
        for name, (_, _, sass) in self.results.items():
            with self.subTest(kernel=name):
                under = promotion_ffmas_under_next_batch(sass)
                self.assertEqual(under is not None, name in PROMOTION_UNDER_NEXT_BATCH)
                if under is not None:
                    self.assertGreaterEqual(under, PROMOTION_UNDER_NEXT_BATCH[name])

    def test_bf16_epilogue_uses_stmatrix_and_tma_store(self):
        _, _, sass = self.results["dense_bf16_large"]
        self.assertIn("STSM", sass)
        self.assertIn("UTMASTG", sass)


@requires_nvrtc
@requires_cuobjdump
class TestKernelCompileNvrtc(_KernelCompile, TestCase):
    NVRTC = True


@requires_nvcc
@requires_cuobjdump
class TestKernelCompileNvcc(_KernelCompile, TestCase):
    NVRTC = False


class TestCastKindOrder(TestCase):
    def test_codegen_kinds_follow_the_host_enum(self):
        # The host module names a missing cast kernel by its CastKind; Python indexes _codegen.CAST_KINDS with it.
        text = (Path(__file__).resolve().parents[1] / "csrc" / "host" / "cast_ops.cpp").read_text()
        body = re.search(r"enum CastKind : int64_t \{([^}]*)\}", text).group(1)
        entries = dict(re.findall(r"k(\w+) = (\d+)", body))
        by_value = [name for name, _ in sorted(entries.items(), key=lambda e: int(e[1]))]
        snake = [re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower() for name in by_value]
        self.assertEqual(tuple(snake), _codegen.CAST_KINDS)
        self.assertIn(f"kNumCastKinds = {len(_codegen.CAST_KINDS)};", text)


@requires_nvrtc
@requires_cuobjdump
class TestCastKernelCompile(TestCase):
    """The fused casts: every (kind, dtype) compiles without spills; SASS shows 16-byte loads of x, all of a thread's
    loads issued before the first reduction (the memory-level parallelism the bandwidth target needs), FP8 packing by
    the hardware convert, and IEEE divisions (a reciprocal approximation would break bit-equality with the
    reference)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        compiler = _jit.Compiler(nvrtc=True, ptxas_verbose=True)
        cls.results = {}
        for kind in _codegen.CAST_KINDS:
            for dtype in _codegen.CAST_DTYPES:
                src, symbol = _codegen.fp8_cast_source(kind, dtype)
                cu, cubin = Path(cls.tmp.name) / f"{symbol}.cu", Path(cls.tmp.name) / f"{symbol}.cubin"
                cu.write_text(src)
                log = compiler.compile(src, cu, cubin, name=symbol)
                sass = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True,
                                      check=True).stdout
                cls.results[(kind, dtype)] = (symbol, log, sass)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_resources_and_sass(self):
        for (kind, dtype), (symbol, ptxas, sass) in self.results.items():
            with self.subTest(kind=kind, dtype=dtype):
                self.assertIn(symbol, ptxas)
                min_ctas = _codegen.fp8_cast_min_ctas_per_sm(kind, dtype)
                if min_ctas == 1:
                    self.assertRegex(ptxas, r"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")
                    self.assertIsNone(re.search(r"\b(LDL|STL)\b", sass), "local-memory traffic in SASS")
                else:  # capped to fit min_ctas CTAs per SM; a few spilled words are the measured-faster trade
                    registers = int(re.search(r"Used (\d+) registers", ptxas).group(1))
                    cast_threads, sm_registers = 256, 64 * 1024  # kCastThreads (params.h); SM90's register file
                    self.assertLessEqual(registers * cast_threads * min_ctas, sm_registers)
                    self.assertLessEqual(int(re.search(r"(\d+) bytes stack frame", ptxas).group(1)), 64)
                self.assertIn("F2FP.SATFINITE.E4M3.F32.PACK_AB", sass)
                self.assertIn("FCHK", sass)  # the IEEE division's range check
                self.assertIsNone(pdl_problem(sass))
                loads = [i for i, line in enumerate(sass.splitlines()) if "LDG.E.128" in line]
                first_reduction = next(i for i, line in enumerate(sass.splitlines()) if re.search(r"SHFL|REDUX", line))
                per_block = 16 if dtype == "float32" else 8
                per_thread = {"per_token": 4, "per_block": per_block, "per_block_transposing": per_block,
                              "per_token_transposing": per_block, "per_token_transposing_summing": per_block,
                              "per_token_transposed": 8 if dtype == "float32" else 4}[kind]
                self.assertEqual(len(loads), per_thread)
                self.assertLess(max(loads), first_reduction)
                if kind.startswith("per_token_transposing"):  # a thread's rows of a column leave as one q_t store
                    self.assertIn("STG.E.128" if dtype == "float32" else "STG.E.64", sass)
                    self.assertNotIn("LDS.U8", sass)  # no byte-wise transpose through shared memory
                elif kind.endswith("transposed") or kind.endswith("transposing"):  # q / q_t leave in 16-byte stores
                    self.assertIn("STG.E.128", sass)

    def test_source(self):
        src, symbol = _codegen.fp8_cast_source("per_token", "bfloat16")
        self.assertExpectedInline(symbol, """dg_fp8_per_token_cast_bfloat16""")
        self.assertExpectedInline(src, """\
#include "fp8_cast.cuh"
// Generated by deepgemm_ops._codegen: FP8 per_token cast of bfloat16 input.

extern "C" __global__ void __launch_bounds__(deepgemm_ops::kCastThreads, 1)
dg_fp8_per_token_cast_bfloat16(const __grid_constant__ deepgemm_ops::Fp8CastParams params) {
  deepgemm_ops::kernels::enter_dependent_grid();
  deepgemm_ops::kernels::per_token_cast<deepgemm_ops::CastDtype::BFloat16>(params);
}
""")
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_cast_source("per_row", "float64")
        self.assertExpectedInline(str(e.exception), """no FP8 cast kernel for kind='per_row', dtype='float64': kinds ('per_token', 'per_block', 'per_token_transposed', 'per_block_transposing', 'per_token_transposing', 'per_token_transposing_summing'), dtypes ('bfloat16', 'float16', 'float32')""")


class TestGeneratedSource(TestCase):
    def test_wgmma_atom(self):
        self.assertEqual(_codegen.wgmma_atom(128), ("cute::SM90::GMMA::MMA_64x128x32_F32E4M3E4M3_SS_TN<>", None))
        self.assertEqual(_codegen.wgmma_atom(80),
                         ("cute::SM90::GMMA::MMA_64x80x32_F32E4M3E4M3_SS_TN<>", "cute/arch/mma_sm90_gmma_ext.hpp"))
        if HAVE_CUTLASS:  # every N names an atom that the header it picks defines
            root = _toolchain.cutlass_include_dir()
            for n in range(8, 257, 8):
                atom, header = _codegen.wgmma_atom(n)
                text = (root / (header or "cute/arch/mma_sm90_gmma.hpp")).read_text()
                self.assertIn(f"struct {atom.split('::')[-1][:-2]}\n", text)
        for n in (0, 12, 264):
            with self.assertRaisesRegex(ValueError, f"wgmma N must be a multiple of 8 in \\[8, 256\\], got {n}"):
                _codegen.wgmma_atom(n)

    def test_source(self):
        cfg, n, k = CASES["masked_k576"]
        src, symbol = _codegen.fp8_gemm_source(cfg, n, k)
        self.assertExpectedInline(symbol, """dg_fp8_gemm_masked_n576_k576_bm128_bn80_s7_cl1_g8_sfb128x128_bf16""")
        self.assertExpectedInline(src, """\
#include "sm90_fp8_gemm.cuh"
#include <cute/arch/mma_sm90_gmma_ext.hpp>
// Generated by deepgemm_ops._codegen: FP8 NT GEMM (masked), N=576, K=576.

static_assert(deepgemm_ops::kernels::smem_bytes<128, 80, 7, false, 1>() == 212784,
              "GemmConfig.smem_bytes disagrees with the kernel's shared-memory layout");
static_assert(deepgemm_ops::kernels::num_threads(128) == 384,
              "GemmConfig.num_threads disagrees with the kernel's warpgroup layout");

extern "C" __global__ void __launch_bounds__(384, 1)
dg_fp8_gemm_masked_n576_k576_bm128_bn80_s7_cl1_g8_sfb128x128_bf16(const __grid_constant__ deepgemm_ops::Fp8GemmParams params,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_a,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_b,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_sfa,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_d) {
  deepgemm_ops::kernels::fp8_gemm_kernel<576, 576, 128, 80, 7, 8, deepgemm_ops::GemmType::Masked, deepgemm_ops::SfbRecipe::Block128x128, false, false, 1, 1, cute::SM90::GMMA::MMA_64x80x32_F32E4M3E4M3_SS_TN<>>(params, tma_a, tma_b, tma_sfa, tma_d);
}
""")

    def test_k_grouped_source(self):
        cfg, n, k = CASES["k_grouped_bm64"]
        src, symbol = _codegen.fp8_gemm_source(cfg, n, k)
        self.assertExpectedInline(symbol, """dg_fp8_gemm_k_grouped_n576_bm64_bn112_s8_cl1_g8_sfb1x128_fp32""")
        self.assertExpectedInline(src, """\
#include "sm90_fp8_gemm.cuh"
#include <cute/arch/mma_sm90_gmma_ext.hpp>
// Generated by deepgemm_ops._codegen: FP8 NT GEMM (k_grouped), N=576, K=at run time.

static_assert(deepgemm_ops::kernels::smem_bytes<64, 112, 8, true, 1>() == 214656,
              "GemmConfig.smem_bytes disagrees with the kernel's shared-memory layout");
static_assert(deepgemm_ops::kernels::num_threads(64) == 256,
              "GemmConfig.num_threads disagrees with the kernel's warpgroup layout");

extern "C" __global__ void __launch_bounds__(256, 1)
dg_fp8_gemm_k_grouped_n576_bm64_bn112_s8_cl1_g8_sfb1x128_fp32(const __grid_constant__ deepgemm_ops::Fp8GemmParams params,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_a,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_b,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_sfa,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_d) {
  deepgemm_ops::kernels::fp8_gemm_kernel<576, 0, 64, 112, 8, 8, deepgemm_ops::GemmType::KGrouped, deepgemm_ops::SfbRecipe::Row1x128, true, false, 1, 1, cute::SM90::GMMA::MMA_64x112x32_F32E4M3E4M3_SS_TN<>>(params, tma_a, tma_b, tma_sfa, tma_d);
}
""")
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(dataclasses.replace(cfg, sfb_recipe="128x128"), n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: a k_grouped kernel needs sfb_recipe '1x128' and out_dtype 'fp32', got '128x128' and 'fp32'""")
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(cfg, n, 2048)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: a k_grouped kernel takes K at run time: need n >= 1 and k == 0, got n=576, k=2048""")

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
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: block_m must be 64, 128 or 256, got 96; smem_bytes must be 113328, got 1""")
        # a hand-built config whose stages overflow shared memory: caught before compiling (not at load time)
        deep = dataclasses.replace(cfg, num_stages=4, smem_bytes=H.smem_bytes(256, 128, 4, "bf16"))
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(deep, n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: num_stages=4 with a 256x128 tile needs 268352 bytes of shared memory; an SM90 block has at most 232448""")
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(dataclasses.replace(cfg, num_math_warpgroups=1), n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: num_math_warpgroups/num_threads must be 2/384 for block_m=256, got 1/384""")

    def test_split_k_rules(self):
        cfg, n, k = CASES["dense_split2"]
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(H.with_tile(cfg, block_m=256, block_n=128, num_splits=2), n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: num_splits 2 needs a normal GEMM, cluster_size 1, block_m <= 128 and at least one 128-deep k-block per split; got 'normal', cluster_size=1, block_m=256, k=7168""")
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(H.with_tile(cfg, block_m=64, block_n=32, num_splits=9), n, 768)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: num_splits must be in [1, 8], got 9""")
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(H.with_tile(cfg, block_m=64, block_n=32, num_splits=7), n, 768)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: num_splits 7 needs a normal GEMM, cluster_size 1, block_m <= 128 and at least one 128-deep k-block per split; got 'normal', cluster_size=1, block_m=64, k=768""")
        contiguous, n, k = CASES["contiguous_1x128"]
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(H.with_tile(contiguous, block_m=128, block_n=128, num_splits=2), n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: num_splits 2 needs a normal GEMM, cluster_size 1, block_m <= 128 and at least one 128-deep k-block per split; got 'contiguous', cluster_size=1, block_m=128, k=7168""")
        self.assertIn("_sk2_", _codegen.fp8_gemm_kernel_name(cfg, n, k))

    def test_cluster_rules(self):
        """2-CTA clusters: m-grouped GEMMs pair n-blocks (A shared), normal 64/128-row tiles pair m-blocks (B shared,
        halves of whole swizzle atoms: BLOCK_N % 16 == 0), k-grouped GEMMs have none."""
        for gemm_type in ("contiguous", "masked"):
            cfg, n, k = _cfg(256, 576, 576, gemm_type=gemm_type, groups=8, force=(64, 48, 2))
            _codegen.fp8_gemm_source(cfg, n, k)
        dense, n, k = _cfg(300, 2112, 576, out="fp32", force=(128, 40, 2))
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(dense, n, k)
        self.assertExpectedInline(str(e.exception), """invalid FP8 GEMM kernel config: cluster_size 2 needs a GEMM that is not k-grouped and, multicasting B (normal, block_m < 256), block_n % 16 == 0; got 'normal', block_m=128, block_n=40""")
        kg, n, k = CASES["k_grouped_bm64"]
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(dataclasses.replace(kg, cluster_size=2), n, k)
        self.assertIn("not k-grouped", str(e.exception))

    def test_rejects_256_row_tiles_that_cannot_run(self):
        wide, n, k = _cfg(4096, 7168, 2048, force=(256, 128))
        _codegen.fp8_gemm_source(wide, n, k)
        _codegen.fp8_gemm_source(dataclasses.replace(wide, gemm_type="contiguous"), n, k)  # halves of two groups: two passes
        with self.assertRaises(ValueError) as e:
            _codegen.fp8_gemm_source(H.with_tile(wide, block_m=256, block_n=144), n, k)
        self.assertIn("block_m 256", str(e.exception))


def _bf16_cfg(m, n, k, layout, *, out="bf16", has_c=False, gemm_type="normal", groups=1, force=None):
    cfg = BH.choose_bf16_gemm_config(m, n, k, num_sms=132, layout=layout, out_dtype=out, has_c=has_c,
                                     gemm_type=gemm_type, num_groups=groups)
    if force:  # (block_m, block_n)
        cfg = BH.with_bf16_tile(cfg, block_m=force[0], block_n=force[1])
    return cfg, n, k


# (config, N, K): every layout (K-major and MN-major A and B), the widest tile (BLOCK_N = 256, 128 accumulator
# registers), 176 columns, BLOCK_M = 64, a BLOCK_N from the extension header, fp32 out with C, odd N / K tails, both grouped types.
BF16_CASES = {
    "nt_bf16_bn256": _bf16_cfg(4096, 7168, 16384, "nt"),
    "nn_bf16": _bf16_cfg(4096, 2112, 7168, "nn"),
    "nt_bf16_bn176": _bf16_cfg(4096, 2112, 7168, "nt"),  # the heuristic's 176 columns: 11 D boxes of 32 bytes a row
    "tn_fp32_c_bm64": _bf16_cfg(65, 576, 577, "tn", out="fp32", has_c=True, force=(64, 64)),
    "tt_bf16_bn80": _bf16_cfg(300, 2111, 576, "tt", force=(128, 80)),
    "contiguous": _bf16_cfg(8192, 4096, 7168, "nt", gemm_type="contiguous", groups=4),
    "masked": _bf16_cfg(256, 576, 576, "nt", gemm_type="masked", groups=8),
}
# HGMMA's transpose flags: A / B read MN-major from shared memory.
_BF16_TRANSPOSE = {"nt": "", "nn": ".tnspB", "tn": ".tnspA.tnspB", "tt": ".tnspA"}


def _compile_bf16(compiler, name, cfg, n, k, out_dir):
    src, symbol = _codegen.bf16_gemm_source(cfg, n, k)
    cu, cubin = Path(out_dir) / f"{name}.cu", Path(out_dir) / f"{name}.cubin"
    cu.write_text(src)
    log = compiler.compile(src, cu, cubin, name=name, pch=True)
    sass = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    return symbol, log, sass


@requires_nvrtc
@requires_cuobjdump
class TestBf16KernelCompile(_TmaIssueCheck, TestCase):
    """Every BF16 kernel variant compiles for sm_90a (NVRTC) without stack, spills or serialised wgmmas; the SASS has
    bf16 HGMMA with the layout's transpose flags and no local-memory traffic."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        compiler = _jit.Compiler(nvrtc=True, ptxas_verbose=True)
        cls.results = {name: _compile_bf16(compiler, name, *case, cls.tmp.name) for name, case in BF16_CASES.items()}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_resources_and_sass(self):
        for name, (symbol, ptxas, sass) in self.results.items():
            with self.subTest(kernel=name):
                cfg = BF16_CASES[name][0]
                self.assertIn(symbol, ptxas)
                self.assertRegex(ptxas, r"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")
                self.assertNotIn("C7508", ptxas)  # setmaxnreg ignored
                self.assertIsNone(re.search(r"\(C751\d\)", ptxas), "ptxas serialised or waited on wgmma")
                hgmma = set(re.findall(r"HGMMA\.64x(\d+)x16\.F32\.BF16 R\d+, gdesc\[UR\d+\]([.\w]*)", sass))
                self.assertEqual(hgmma, {(str(cfg.block_n), _BF16_TRANSPOSE[cfg.layout])})
                self.assertIsNone(re.search(r"\b(LDL|STL)\b", sass), "local-memory traffic in SASS")
                self.assertIsNone(pdl_problem(sass))

    def test_register_split_completes(self):
        for name, (symbol, ptxas, sass) in self.results.items():
            with self.subTest(kernel=name):
                cfg = BF16_CASES[name][0]
                self.assertIsNone(register_split_problem(symbol, ptxas, sass, cfg.num_math_warpgroups))

    def test_bf16_epilogue_uses_stmatrix_and_tma_store(self):
        _, _, sass = self.results["nt_bf16_bn256"]
        self.assertIn("STSM", sass)
        self.assertIn("UTMASTG", sass)


class TestBf16GeneratedSource(TestCase):
    def test_wgmma_atom(self):
        self.assertEqual(_codegen.bf16_wgmma_atom(128, "nt"), (
            "cute::SM90::GMMA::MMA_64x128x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>",
            None))
        self.assertEqual(_codegen.bf16_wgmma_atom(80, "tn"), (
            "cute::SM90::GMMA::MMA_64x80x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::MN, cute::SM90::GMMA::Major::MN>",
            "cute/arch/mma_sm90_gmma_ext.hpp"))
        if HAVE_CUTLASS:  # every N names an atom that the header it picks defines
            root = _toolchain.cutlass_include_dir()
            for n in range(8, 257, 8):
                atom, header = _codegen.bf16_wgmma_atom(n, "nn")
                text = (root / (header or "cute/arch/mma_sm90_gmma.hpp")).read_text()
                self.assertIn(f"struct {atom.split('::')[3].split('<')[0]}\n", text)

    def test_source(self):
        cfg, n, k = BF16_CASES["tn_fp32_c_bm64"]
        src, symbol = _codegen.bf16_gemm_source(cfg, n, k)
        self.assertExpectedInline(symbol, """dg_bf16_gemm_normal_tn_n576_k577_bm64_bn64_s8_g8_fp32_c""")
        self.assertExpectedInline(src, """\
#include "sm90_bf16_gemm.cuh"
// Generated by deepgemm_ops._codegen: BF16 GEMM (normal, layout tn), N=576, K=577.

static_assert(deepgemm_ops::kernels::bf16_gemm_smem_bytes<64, 64, 8, true, true>() == 147584,
              "Bf16GemmConfig.smem_bytes disagrees with the kernel's shared-memory layout");
static_assert(deepgemm_ops::kernels::bf16_gemm_threads(64) == 256,
              "Bf16GemmConfig.num_threads disagrees with the kernel's warpgroup layout");

extern "C" __global__ void __launch_bounds__(256, 1)
dg_bf16_gemm_normal_tn_n576_k577_bm64_bn64_s8_g8_fp32_c(const __grid_constant__ deepgemm_ops::Fp8GemmParams params,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_a,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_b,
    const __grid_constant__ deepgemm_ops::kernels::TmaDescriptor tma_d) {
  deepgemm_ops::kernels::bf16_gemm_kernel<576, 577, 64, 64, 8, 8, deepgemm_ops::GemmType::Normal, cute::SM90::GMMA::Major::MN, cute::SM90::GMMA::Major::MN, true, true, cute::SM90::GMMA::MMA_64x64x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::MN, cute::SM90::GMMA::Major::MN>>(params, tma_a, tma_b, tma_d);
}
""")

    def test_rejects_bad_config(self):
        cfg, n, k = BF16_CASES["nn_bf16"]
        with self.assertRaises(ValueError) as e:
            _codegen.bf16_gemm_source(dataclasses.replace(cfg, block_n=80, gemm_type="masked", smem_bytes=1), n, k)
        self.assertExpectedInline(str(e.exception), """invalid BF16 GEMM kernel config: an N-major b (layout 'nn') needs block_n % 64 == 0, got 80; smem_bytes must be 127040, got 1; grouped BF16 GEMMs are NT only, got 'masked' with layout 'nn'""")
        deep = dataclasses.replace(cfg, num_stages=16, smem_bytes=BH.bf16_smem_bytes(cfg.block_m, cfg.block_n, 16,
                                                                                     cfg.out_dtype))
        with self.assertRaises(ValueError) as e:
            _codegen.bf16_gemm_source(deep, n, k)
        self.assertExpectedInline(str(e.exception), """invalid BF16 GEMM kernel config: num_stages=16 with a 128x192 tile needs 704768 bytes of shared memory; an SM90 block has at most 232448""")


if __name__ == "__main__":
    unittest.main()
