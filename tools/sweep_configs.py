"""A/B kernel configs for a few shapes under the bench's own conditions (device tool; developer use only).

    python3 tools/sweep_configs.py "MxNxK:bm,bn,cl;bm,bn,cl,stages|MxNxK:..."

Every variant of a shape runs on the same inputs, compiled in parallel first, timed with bench.Timer (L2 flushed,
median); the heuristic's own choice is timed first and last, so the spread between those two is the noise.
"""
import concurrent.futures
import functools
import os
import sys

import torch

import deepgemm_ops  # noqa: F401
from deepgemm_ops import _codegen, _cuda, _jit, _runtime, bench
from deepgemm_ops import _heuristics as H

chosen = H.choose_fp8_gemm_config


def forced(cfg, bm, bn, cl, stages=None):
    """stages: pipeline depth (default: the most that fit, up to the heuristic's MAX_STAGES)."""
    return H.with_tile(cfg, block_m=bm, block_n=bn, cluster_size=cl, num_stages=stages)


def main(spec: str) -> None:
    timer = bench.Timer(torch.device("cuda"))
    jobs = []
    for item in spec.split("|"):
        shape, variants = item.split(":")
        m, n, k = map(int, shape.split("x"))
        base = chosen(m, n, k, num_sms=deepgemm_ops.get_num_sms(), out_dtype="bf16", sfb_recipe="128x128",
                      has_c=False, gemm_type="normal")
        cfgs = [base] + [forced(base, *map(int, v.split(","))) for v in variants.split(";")] + [base]
        jobs.append(((m, n, k), cfgs))
    sources = {_codegen.fp8_gemm_source(c, s[1], s[2]) for s, cfgs in jobs for c in cfgs}
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda src: _jit.compile_cubin(*src), sources))
    for (m, n, k), cfgs in jobs:
        a, sfa, b, sfb = bench.quantized_inputs(bench.GemmShape(m, n, k), timer.device)
        sfa = torch.ops.deepgemm.get_mn_major_tma_aligned_tensor(sfa)
        ref = None
        for cfg in cfgs:
            H.choose_fp8_gemm_config = lambda *args, _c=cfg, **kw: _c
            # clear_plans forgets both memos of "which kernel", the config lookup and the C++ door's installed plan
            # (without it every variant after the first would time the first one).
            _cuda.clear_plans()
            torch.ops.deepgemm.fp8_gemm_nt(a, sfa, b, sfb)  # plans this variant
            key = _codegen.fp8_gemm_kernel_name(cfg, n, k)
            assert any(name == key for name, _ in _runtime.host_module().loaded_kernels()), key
            out = torch.ops.deepgemm.fp8_gemm_nt(a, sfa, b, sfb)
            ref = out if ref is None else ref  # the heuristic's own kernel is the first variant
            diff = bench.max_rel_error(out, ref)
            us = timer.time_us(functools.partial(torch.ops.deepgemm.fp8_gemm_nt, a, sfa, b, sfb), reps=30)
            print(f"{m}x{n}x{k} bm{cfg.block_m} bn{cfg.block_n} cl{cfg.cluster_size} st{cfg.num_stages}: "
                  f"{us:8.1f} us {2 * m * n * k / us / 1e6:7.1f} TFLOPS, max rel diff to the first {diff:.1e}",
                  flush=True)
        H.choose_fp8_gemm_config = chosen
        _cuda.clear_plans()


if __name__ == "__main__":
    main(sys.argv[1])
