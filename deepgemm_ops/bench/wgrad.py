"""``python -m deepgemm_ops bench --wgrad``: the weight-gradient GEMMs.

- MoE (k-grouped): ``k_grouped_fp8_gemm_nt_contiguous`` on the expert-parallel cases DeepGEMM's tests use (4 / 8 / 16
  groups, M x N = 4096 x 7168 or 7168 x 2048, each group's K drawn around its expected value, a multiple of 128), fp32
  into C in place (gradient accumulation), against cuBLAS on the same FLOPs: one bf16 ``torch.mm`` per group (bf16
  out, no accumulation) — what a user without a grouped kernel runs.
- Dense: ``fp8_gemm_nt`` with the 1x128 recipe on both operands (dY^T and X^T cast along the tokens) and bf16 output,
  the FP8Linear weight gradient at 8192 tokens, against ``torch.mm`` in bf16; beside it the same GEMM accumulating
  into an fp32 gradient in place and the forward GEMM of the same FLOPs, the speed a weight gradient should reach.

Method as for the dense FP8 table (dense.py): L2 flushed before every rep, candidates interleaved, median.
``--against MODULE`` (DeepGEMM's API) adds its k-grouped GEMM to the MoE cases, on the same quantized values laid out
as its release takes them on SM90 (copies made outside the timed region, _deep_gemm_k_grouped), into its own C.
Accuracy: max |D - D_ref| / max |D_ref| against the fp32 product of the dequantized operands.
"""

from __future__ import annotations

import functools
import itertools
import random

import torch

from .._constants import SCALE_BLOCK, ceil_div
from .._layout import dequantize_rows
from .measure import Timer, max_rel_error, tflops

# (groups, M, N, expected K per group)
K_GROUPED_CASES = ((4, 4096, 7168, 8192), (4, 7168, 2048, 8192), (8, 4096, 7168, 4096), (8, 7168, 2048, 4096),
                   (16, 4096, 7168, 2048), (16, 7168, 2048, 2048))
# (tokens, out_features, in_features): dW [out, in] = dY^T X, K = tokens
DENSE_CASES = ((8192, 7168, 7168), (8192, 7168, 4096), (8192, 4096, 7168))


def _group_ks(groups: int, expected_k: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [ceil_div(int(expected_k * rng.uniform(0.7, 1.3)), SCALE_BLOCK) * SCALE_BLOCK for _ in range(groups)]


def _deep_gemm_k_grouped(against, a, sfa, b, sfb, ks, ks_t, bounds, c):
    """DeepGEMM's k-grouped weight gradient on our quantized values, accumulating into c, laid out (outside the timed
    call) as its release takes them on SM90: later releases' ``k_grouped_fp8_gemm_nt_contiguous`` reads each group's
    [M, K_g] and [N, K_g] blocks K-major one after the other (flat) with MN-major scales; the 2025-08 release's
    ``k_grouped_fp8_gemm_tn_contiguous`` reads [ΣK, M] and [ΣK, N] (later releases keep that name for SM100 only)."""
    if hasattr(against, "k_grouped_fp8_gemm_nt_contiguous"):
        def flat(x):
            return torch.cat([x[:, lo:hi].contiguous().flatten() for lo, hi in bounds])

        dg_a, dg_b = (flat(a), sfa.t().contiguous().t()), (flat(b), sfb.t().contiguous().t())
        return functools.partial(against.k_grouped_fp8_gemm_nt_contiguous, dg_a, dg_b, c, ks, ks_t, c)
    dg_a, dg_b = (a.t().contiguous(), sfa.t().contiguous()), (b.t().contiguous(), sfb.t().contiguous())
    return functools.partial(against.k_grouped_fp8_gemm_tn_contiguous, dg_a, dg_b, c, ks, ks_t, c=c)


def bench_k_grouped(timer: Timer, reps: int, against=None) -> list[dict]:
    ops = torch.ops.deepgemm
    rows = []
    for groups, m, n, expected_k in K_GROUPED_CASES:
        ks = _group_ks(groups, expected_k, seed=groups * m)
        total = sum(ks)
        x = torch.randn(m, total, device=timer.device, dtype=torch.bfloat16)
        y = torch.randn(n, total, device=timer.device, dtype=torch.bfloat16)
        a, sfa = ops.per_token_cast_to_fp8(x)
        b, sfb = ops.per_token_cast_to_fp8(y)
        ks_t = torch.tensor(ks, dtype=torch.int32, device=timer.device)
        c = torch.zeros(groups, m, n, device=timer.device)
        ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, c, c)
        ends = list(itertools.accumulate(ks))
        bounds = list(zip([0] + ends[:-1], ends))
        ref = torch.zeros_like(c)
        da, db = dequantize_rows(a, sfa), dequantize_rows(b, sfb)
        for g, (lo, hi) in enumerate(bounds):
            ref[g] = da[:, lo:hi] @ db[:, lo:hi].t()
        rel_err = max_rel_error(c, ref)

        outs = torch.empty(groups, m, n, device=timer.device, dtype=torch.bfloat16)

        def bf16_loop(x=x, y=y, outs=outs, bounds=bounds):
            for g, (lo, hi) in enumerate(bounds):
                torch.mm(x[:, lo:hi], y[:, lo:hi].t(), out=outs[g])

        fns = {"ours": functools.partial(ops.k_grouped_fp8_gemm_nt_contiguous_out, a, sfa, b, sfb, ks_t, c, c),
               "bf16": bf16_loop}
        if against is not None:
            dg_c = torch.zeros_like(c)
            fns["deep_gemm"] = _deep_gemm_k_grouped(against, a, sfa, b, sfb, ks, ks_t, bounds, dg_c)
            fns["deep_gemm"]()
            dg_rel_err = max_rel_error(dg_c, ref)
        us = timer.time_interleaved(fns, reps=reps)
        flops = 2 * m * n * total
        row = {"groups": groups, "m": m, "n": n, "ks": ks, "us": us["ours"], "tflops": tflops(flops, us["ours"]),
               "bf16_us": us["bf16"], "bf16_tflops": tflops(flops, us["bf16"]), "rel_err": rel_err}
        if against is not None:
            row.update(deep_gemm_us=us["deep_gemm"], deep_gemm_tflops=tflops(flops, us["deep_gemm"]),
                       deep_gemm_rel_err=dg_rel_err)
        rows.append(row)
    return rows


def bench_dense_wgrad(timer: Timer, reps: int) -> list[dict]:
    """The FP8Linear weight gradient (bf16 out), the same GEMM accumulating into an fp32 gradient in place (fp32 +=,
    C is D), and the forward GEMM of the same FLOPs (x [tokens, in] by W [out, in], 1x128 x 128x128 scales: the speed
    the weight gradient is measured against), with bf16 ``torch.mm`` for dW, all interleaved."""
    ops = torch.ops.deepgemm
    rows = []
    for tokens, n_out, n_in in DENSE_CASES:
        dy = torch.randn(tokens, n_out, device=timer.device, dtype=torch.bfloat16)
        x = torch.randn(tokens, n_in, device=timer.device, dtype=torch.bfloat16)
        dy_t, dy_ts = ops.per_token_cast_to_fp8(dy.t(), SCALE_BLOCK, True)
        x_t, x_ts = ops.per_token_cast_to_fp8(x.t())
        out = ops.fp8_gemm_nt(dy_t, dy_ts, x_t, x_ts)
        rel_err = max_rel_error(out, dequantize_rows(dy_t, dy_ts) @ dequantize_rows(x_t, x_ts).t())
        grad = torch.zeros(n_out, n_in, device=timer.device)
        xq, xs = ops.per_token_cast_to_fp8(x, SCALE_BLOCK, True)
        w, ws = ops.per_block_cast_to_fp8(torch.randn(n_out, n_in, device=timer.device, dtype=torch.bfloat16))
        fns = {"ours": functools.partial(ops.fp8_gemm_nt, dy_t, dy_ts, x_t, x_ts),
               "fp32_inplace": functools.partial(ops.fp8_gemm_nt_out, dy_t, dy_ts, x_t, x_ts, grad, grad),
               "forward": functools.partial(ops.fp8_gemm_nt, xq, xs, w, ws),
               "bf16": functools.partial(torch.mm, dy.t(), x)}
        us = timer.time_interleaved(fns, reps=reps)
        flops = 2 * tokens * n_out * n_in
        rows.append({"tokens": tokens, "m": n_out, "n": n_in, "us": us["ours"], "tflops": tflops(flops, us["ours"]),
                     "bf16_us": us["bf16"], "bf16_tflops": tflops(flops, us["bf16"]), "rel_err": rel_err,
                     "fp32_inplace_us": us["fp32_inplace"], "fp32_inplace_tflops": tflops(flops, us["fp32_inplace"]),
                     "forward_us": us["forward"], "forward_tflops": tflops(flops, us["forward"])})
    return rows


def format_wgrad(k_grouped: list[dict], dense: list[dict]) -> str:
    dg = any("deep_gemm_us" in r for r in k_grouped)
    header = (f"{'weight gradient':>34} | {'us':>8} {'TFLOPS':>7} {'rel err':>8} | {'bf16 us':>8} {'TFLOPS':>7} "
              f"{'ratio':>6}") + (f" | {'DeepGEMM us':>11} {'TFLOPS':>7} {'ratio':>6}" if dg else "")

    def line(what: str, r: dict) -> str:
        text = (f"{what:>34} | {r['us']:8.1f} {r['tflops']:7.1f} {r['rel_err']:8.1e} | {r['bf16_us']:8.1f} "
                f"{r['bf16_tflops']:7.1f} {r['bf16_us'] / r['us']:5.2f}x")
        if "deep_gemm_us" in r:
            text += f" | {r['deep_gemm_us']:11.1f} {r['deep_gemm_tflops']:7.1f} {r['deep_gemm_us'] / r['us']:5.2f}x"
        return text

    table = [header, "-" * len(header)]
    table += [line(f"{r['groups']} groups {r['m']}x{r['n']} sum K {sum(r['ks'])}", r) for r in k_grouped]
    table += [line(f"dense {r['m']}x{r['n']}, {r['tokens']} tokens", r) for r in dense]
    # The dense weight gradient against the forward GEMM of the same FLOPs (TFLOPS; ratio = weight gradient / forward).
    header = (f"{'dense weight gradient, TFLOPS':>34} | {'bf16 out':>8} {'ratio':>6} | {'fp32 +=':>8} {'ratio':>6} | "
              f"{'forward':>8}")
    table += ["", header, "-" * len(header)]
    for r in dense:
        what, fwd = f"{r['m']}x{r['n']}, {r['tokens']} tokens", r["forward_tflops"]
        table.append(f"{what:>34} | {r['tflops']:8.1f} {r['tflops'] / fwd:5.2f}x | {r['fp32_inplace_tflops']:8.1f} "
                     f"{r['fp32_inplace_tflops'] / fwd:5.2f}x | {fwd:8.1f}")
    return "\n".join(table)
