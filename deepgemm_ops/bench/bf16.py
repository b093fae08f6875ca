"""``python -m deepgemm_ops bench --bf16``: our BF16 GEMMs in the four layouts against cuBLAS (``torch.mm`` of the
same stored operands, transposed views where the layout says so) at M = 4096 on DeepGEMM's (N, K) seed shapes.

Method as for the dense FP8 table (dense.py): L2 flushed before every rep, ours and cuBLAS interleaved, median.
``--against MODULE`` (DeepGEMM's API) adds its ``bf16_gemm_{layout}`` on the same stored operands to the interleave.
Accuracy: max |D - D_ref| / max |D_ref| against the fp32 product of the same bf16 operands.
"""

from __future__ import annotations

import functools

import torch

from .dense import SEED_NKS
from .measure import BF16_BYTES, Timer, max_rel_error, tflops

LAYOUTS = ("nt", "nn", "tn", "tt")
M = 4096


def _operands(layout: str, m: int, n: int, k: int, device):
    """(a, b) stored as the layout says and the mathematical A [M, K], B [K, N] as views of them."""
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
    a_stored = a if layout[0] == "n" else a.t().contiguous()
    b_stored = b.t().contiguous() if layout[1] == "t" else b
    a_math = a_stored if layout[0] == "n" else a_stored.t()
    b_math = b_stored.t() if layout[1] == "t" else b_stored
    return a_stored, b_stored, a_math, b_math


def bench_bf16(timer: Timer, reps: int, against=None) -> list[dict]:
    rows = []
    for layout in LAYOUTS:
        op = getattr(torch.ops.deepgemm, f"bf16_gemm_{layout}")
        for n, k in SEED_NKS:
            a, b, a_math, b_math = _operands(layout, M, n, k, timer.device)
            row = {"layout": layout, "m": M, "n": n, "k": k}
            out = op(a, b)
            ref = a_math.float() @ b_math.float()
            fns = {"ours": lambda op=op, a=a, b=b: op(a, b),
                   "cublas": lambda a=a_math, b=b_math: torch.mm(a, b)}
            if against is not None:
                d = torch.empty(M, n, device=timer.device, dtype=torch.bfloat16)
                fns["deep_gemm"] = functools.partial(getattr(against, f"bf16_gemm_{layout}"), a, b, d)
            us = timer.time_interleaved(fns, reps=reps)
            flops = 2 * M * n * k
            row.update(us=us["ours"], tflops=tflops(flops, us["ours"]), cublas_us=us["cublas"],
                       cublas_tflops=tflops(flops, us["cublas"]), rel_err=max_rel_error(out, ref),
                       bytes=(M * k + k * n + M * n) * BF16_BYTES)
            row["vs_cublas"] = row["tflops"] / row["cublas_tflops"]
            if against is not None:
                row.update(deep_gemm_us=us["deep_gemm"], deep_gemm_tflops=tflops(flops, us["deep_gemm"]),
                           deep_gemm_rel_err=max_rel_error(d, ref))
                row["vs_deep_gemm"] = row["tflops"] / row["deep_gemm_tflops"]
            rows.append(row)
    return rows


def format_bf16(rows: list[dict]) -> str:
    dg = any("vs_deep_gemm" in r for r in rows)
    header = f"{'layout':>6} {'M x N x K':>18} | {'us':>8} {'TFLOPS':>7} {'rel err':>8} | {'cuBLAS':>7} {'ratio':>6}"
    header += f" | {'DeepGEMM':>8} {'ratio':>6}" if dg else ""
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = f"{r['m']}x{r['n']}x{r['k']}"
        line = (f"{r['layout']:>6} {shape:>18} | {r['us']:8.1f} {r['tflops']:7.1f} {r['rel_err']:8.1e} | "
                f"{r['cublas_tflops']:7.1f} {r['vs_cublas']:5.2f}x")
        lines.append(line + (f" | {r['deep_gemm_tflops']:8.1f} {r['vs_deep_gemm']:5.2f}x" if dg else ""))
    return "\n".join(lines)
