"""A/B kernel configs for a few problems under the bench's own conditions (device tool; developer use only).

    python3 tools/sweep_configs.py "MxNxK:bm,bn,cl;bm,bn,cl,stages,splits|MxNxK:..."  # dense FP8 (stages 0: the most
                                                                                 # that fit; --sfb 1x128: per-row
                                                                                 # B scales, as a weight gradient;
                                                                                 # --accumulate: fp32 D += into C,
                                                                                 # in place, as a gradient buffer)
    python3 tools/sweep_configs.py --contiguous "GxMxNxK:bm,bn,cl;...|..."       # m-grouped contiguous, G groups of M
    python3 tools/sweep_configs.py --masked "GxMxNxK:bm,bn,cl;...|..."           # m-grouped masked, G full groups
    python3 tools/sweep_configs.py --k-grouped "bm,bn,cl;..."                    # bench --wgrad's k-grouped cases
    python3 tools/sweep_configs.py --bf16 nt,tt "MxNxK:bm,bn;bm,bn,stages|..."   # BF16 GEMMs in those layouts

Every variant of a problem runs on the same inputs, timed with bench.Timer (L2 flushed, median), the variants' reps
interleaved; the heuristic's own choice is timed first and last, so the spread between those two is the noise. The
k-grouped cases accumulate into C in place, as a weight gradient does (compared from C = 0). Every variant's output
is compared with the first one's. Every mode compiles all its variants' kernels in parallel before the first timing.
"""
import argparse
import concurrent.futures
import functools
import os

import torch

import deepgemm_ops
from deepgemm_ops import _bf16_heuristics as BH
from deepgemm_ops import _codegen, _cuda, _jit, _runtime, bench
from deepgemm_ops import _heuristics as H
from deepgemm_ops.bench.bf16 import _operands
from deepgemm_ops.bench.wgrad import K_GROUPED_CASES, _group_ks

ops = torch.ops.deepgemm


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _sweep(label: str, cfgs: list, module, attr: str, clear, kernel_name, run, flops: int, fresh=None) -> None:
    """Times run() with the heuristic `module.attr` replaced by each config in turn, the variants' reps interleaved
    (under FP8 load the clocks drift by 10% within a minute, so one variant after another is not a comparison).
    clear() forgets the memoized choice and the C++ door's installed plan (without it every variant after the first
    would time the first one); kernel_name(cfg) names the kernel that must then be loaded. fresh(): the output of one
    call from a clean start (default: run's), compared with the first variant's."""
    chosen = getattr(module, attr)
    timer = bench.Timer(torch.device("cuda"))
    timer.launch_cover_cycles = 4_000_000  # ~2 ms: also covers the re-planning before each timed call

    def use(cfg) -> None:
        setattr(module, attr, lambda *args, **kw: cfg)
        clear()

    def forced(cfg):
        use(cfg)
        return run()

    try:
        ref = None
        for i, cfg in enumerate(cfgs):
            use(cfg)
            out = (fresh or run)().clone()
            loaded = {name for name, _ in _runtime.host_module().loaded_kernels()}
            assert kernel_name(cfg) in loaded, f"the forced kernel {kernel_name(cfg)} did not run"
            ref = out if ref is None else ref  # the heuristic's own kernel is the first variant
            print(f"{label} variant {i}: max rel diff to the first {bench.max_rel_error(out, ref):.1e}")
        times = timer.time_interleaved({i: functools.partial(forced, cfg) for i, cfg in enumerate(cfgs)}, reps=20)
        for i, cfg in enumerate(cfgs):
            tile = (f"bm{cfg.block_m} bn{cfg.block_n} cl{getattr(cfg, 'cluster_size', 1)} st{cfg.num_stages} "
                    f"sk{getattr(cfg, 'num_splits', 1)}")
            print(f"{label} {tile}: {times[i]:8.1f} us {flops / times[i] / 1e6:7.1f} TFLOPS", flush=True)
    finally:
        setattr(module, attr, chosen)
        clear()


def _variants(base, spec: str, force) -> list:
    return [base] + [force(base, *_ints(v)) for v in spec.split(";")] + [base]


def _fp8_force(cfg, bm, bn, cl=1, stages=0, splits=1):
    return H.with_tile(cfg, block_m=bm, block_n=bn, cluster_size=cl, num_stages=stages or None, num_splits=splits)


def _precompile(sources: set) -> None:
    """Compiles the variants' kernels in parallel before any timing (one at a time they take minutes)."""
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda src: _jit.compile_cubin(*src), sources))


def _fp8_jobs(spec: str, base_of) -> list:
    """(dims, configs) per "|"-separated problem "...xNxK:variant;variant" of spec: base_of(*dims) is the heuristic's
    config (the first and last variant). Every variant's kernel is compiled before any timing."""
    jobs = []
    for item in spec.split("|"):
        shape, variants = item.split(":")
        dims = tuple(map(int, shape.split("x")))
        jobs.append((dims, _variants(base_of(*dims), variants, _fp8_force)))
    _precompile({_codegen.fp8_gemm_source(c, dims[-2], dims[-1]) for dims, cfgs in jobs for c in cfgs})
    return jobs


def _sweep_fp8(label: str, cfgs: list, n: int, kernel_k: int, run, flops: int, fresh=None) -> None:
    """_sweep over FP8 GEMM configs (kernel_k: K, or 0 for k-grouped kernels)."""
    _sweep(label, cfgs, H, "choose_fp8_gemm_config", _cuda.clear_plans,
           lambda cfg: _codegen.fp8_gemm_kernel_name(cfg, n, kernel_k), run, flops, fresh)


def _from_zero(c: torch.Tensor, run):
    """The output of one accumulating call (C is D) from C = 0."""
    def fresh():
        c.zero_()
        run()
        return c

    return fresh


def _grouped_b(groups: int, n: int, k: int, gen: torch.Generator):
    """The m-grouped B [G, N, K] and its 128x128 scales."""
    b, sfb = ops.per_block_cast_to_fp8(torch.randn(groups * n, k, generator=gen).cuda())
    return b.view(groups, n, k), sfb.view(groups, -1, sfb.shape[-1])


def dense(spec: str, sfb_recipe: str, accumulate: bool) -> None:
    jobs = _fp8_jobs(spec, lambda m, n, k: H.choose_fp8_gemm_config(
        m, n, k, num_sms=deepgemm_ops.get_num_sms(), out_dtype="fp32" if accumulate else "bf16",
        sfb_recipe=sfb_recipe, has_c=accumulate, gemm_type="normal"))
    for (m, n, k), cfgs in jobs:
        if sfb_recipe == "1x128":  # both operands cast per row, as the weight gradient's are
            a, sfa = ops.per_token_cast_to_fp8(torch.randn(m, k, device="cuda", dtype=torch.bfloat16))
            b, sfb = ops.per_token_cast_to_fp8(torch.randn(n, k, device="cuda", dtype=torch.bfloat16))
        else:
            a, sfa, b, sfb = bench.quantized_inputs(bench.GemmShape(m, n, k), torch.device("cuda"))
        sfa = ops.get_mn_major_tma_aligned_tensor(sfa)
        run, fresh = functools.partial(ops.fp8_gemm_nt, a, sfa, b, sfb), None
        if accumulate:  # compared from C = 0, as the k-grouped cases
            c = torch.zeros(m, n, device="cuda")
            run = functools.partial(ops.fp8_gemm_nt_out, a, sfa, b, sfb, c, c)
            fresh = _from_zero(c, run)
        _sweep_fp8(f"{m}x{n}x{k}", cfgs, n, k, run, 2 * m * n * k, fresh)


def contiguous(spec: str) -> None:
    jobs = _fp8_jobs(spec, lambda groups, rows, n, k: H.choose_fp8_gemm_config(
        groups * rows, n, k, num_sms=deepgemm_ops.get_num_sms(), out_dtype="bf16", sfb_recipe="128x128",
        has_c=False, gemm_type="contiguous", num_groups=groups))
    for (groups, rows, n, k), cfgs in jobs:
        gen = torch.Generator().manual_seed(groups * rows)
        x = torch.randn(groups * rows, k, generator=gen).cuda()
        a, sfa = ops.per_token_cast_to_fp8(x, mn_major_scales=True)
        b, sfb = _grouped_b(groups, n, k, gen)
        m_indices = torch.arange(groups, device="cuda", dtype=torch.int32).repeat_interleave(rows)
        _sweep_fp8(f"contiguous {groups}x{rows} {n}x{k}", cfgs, n, k,
                   functools.partial(ops.m_grouped_fp8_gemm_nt_contiguous, a, sfa, b, sfb, m_indices),
                   2 * groups * rows * n * k)


def masked(spec: str) -> None:
    jobs = _fp8_jobs(spec, lambda groups, rows, n, k: H.choose_fp8_gemm_config(
        rows, n, k, num_sms=deepgemm_ops.get_num_sms(), out_dtype="bf16", sfb_recipe="128x128", has_c=False,
        gemm_type="masked", num_groups=groups, expected_m=rows))
    for (groups, rows, n, k), cfgs in jobs:
        gen = torch.Generator().manual_seed(groups * rows)
        a, sfa = ops.per_token_cast_to_fp8(torch.randn(groups * rows, k, generator=gen).cuda())
        a, sfa = a.view(groups, rows, k), ops.get_mn_major_tma_aligned_tensor(sfa.view(groups, rows, -1))
        b, sfb = _grouped_b(groups, n, k, gen)
        masked_m = torch.full((groups,), rows, device="cuda", dtype=torch.int32)
        _sweep_fp8(f"masked {groups}x{rows} {n}x{k}", cfgs, n, k,
                   functools.partial(ops.m_grouped_fp8_gemm_nt_masked, a, sfa, b, sfb, masked_m, rows),
                   2 * groups * rows * n * k)


def k_grouped(spec: str) -> None:
    jobs = []
    for groups, m, n, expected_k in K_GROUPED_CASES:
        base = H.choose_fp8_gemm_config(m, n, expected_k, num_sms=deepgemm_ops.get_num_sms(), out_dtype="fp32",
                                        sfb_recipe="1x128", has_c=True, gemm_type="k_grouped", num_groups=groups)
        jobs.append(((groups, m, n, expected_k), _variants(base, spec, _fp8_force)))
    _precompile({_codegen.fp8_gemm_source(c, case[2], 0) for case, cfgs in jobs for c in cfgs})
    for (groups, m, n, expected_k), cfgs in jobs:
        ks = _group_ks(groups, expected_k, seed=groups * m)
        total = sum(ks)
        a, sfa = ops.per_token_cast_to_fp8(torch.randn(m, total, device="cuda", dtype=torch.bfloat16))
        b, sfb = ops.per_token_cast_to_fp8(torch.randn(n, total, device="cuda", dtype=torch.bfloat16))
        ks_t = torch.tensor(ks, dtype=torch.int32, device="cuda")
        c = torch.zeros(groups, m, n, device="cuda")
        run = functools.partial(ops.k_grouped_fp8_gemm_nt_contiguous_out, a, sfa, b, sfb, ks_t, c, c)
        _sweep_fp8(f"{groups} x ({m}, {n}), sum K {total}", cfgs, n, 0, run, 2 * m * n * total, _from_zero(c, run))


def _bf16_force(cfg, bm, bn, stages=None):
    return BH.with_bf16_tile(cfg, block_m=bm, block_n=bn, num_stages=stages)


def bf16(layouts: str, spec: str) -> None:
    jobs = []
    for layout in layouts.split(","):
        for item in spec.split("|"):
            shape, variants = item.split(":")
            m, n, k = map(int, shape.split("x"))
            base = BH.choose_bf16_gemm_config(m, n, k, num_sms=deepgemm_ops.get_num_sms(), layout=layout,
                                              out_dtype="bf16", has_c=False, gemm_type="normal")
            jobs.append((layout, (m, n, k), _variants(base, variants, _bf16_force)))
    _precompile({_codegen.bf16_gemm_source(c, shape[1], shape[2]) for _, shape, cfgs in jobs for c in cfgs})
    for layout, (m, n, k), cfgs in jobs:
        a, b, _, _ = _operands(layout, m, n, k, torch.device("cuda"))
        _sweep(f"{layout} {m}x{n}x{k}", cfgs, BH, "choose_bf16_gemm_config",
               _cuda.clear_bf16_plans, lambda cfg, n=n, k=k: _codegen.bf16_gemm_kernel_name(cfg, n, k),
               functools.partial(getattr(ops, f"bf16_gemm_{layout}"), a, b), 2 * m * n * k)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the variants (see above)")
    parser.add_argument("--contiguous", action="store_true", help="m-grouped contiguous problems")
    parser.add_argument("--masked", action="store_true", help="m-grouped masked problems (every group full)")
    parser.add_argument("--k-grouped", action="store_true", help="the k-grouped weight-gradient cases")
    parser.add_argument("--bf16", metavar="LAYOUTS", help="BF16 GEMMs in these layouts (comma-separated)")
    parser.add_argument("--sfb", choices=H.SFB_RECIPES, default="128x128",
                        help="dense mode: B's scale recipe (1x128: the weight gradient's per-row B scales)")
    parser.add_argument("--accumulate", action="store_true",
                        help="dense mode: fp32 output added into C in place (C is D), as a weight gradient's buffer")
    args = parser.parse_args()
    if args.contiguous:
        contiguous(args.spec)
    elif args.masked:
        masked(args.spec)
    elif args.k_grouped:
        k_grouped(args.spec)
    elif args.bf16:
        bf16(args.bf16, args.spec)
    else:
        dense(args.spec, args.sfb, args.accumulate)
