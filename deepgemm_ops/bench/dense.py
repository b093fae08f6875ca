"""``python -m deepgemm_ops bench`` (dense): our FP8 GEMM against cuBLASLt blockwise FP8 (``torch._scaled_mm``).

Method (DESIGN §5): fresh random bf16 inputs per shape, quantized with our cast ops; each rep writes a 256 MB buffer
first (flushes L2, so every rep reads its operands from HBM), then is timed with CUDA events; ours and cuBLASLt
alternate rep by rep (the clocks drift with the power draw); the median is reported. Bytes moved = A + B + both scale
tensors + D; the memory-bound yardstick is a device-to-device copy of a large buffer measured once per run (bytes read
+ written per second). Accuracy: max |D - D_ref| / max |D_ref|, with
D_ref computed in float64 from the same quantized operands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from .._constants import SCALE_BLOCK, ceil_div
from .measure import (
    BF16_BYTES,
    FP8_BYTES,
    FP32_BYTES,
    Timer,
    device_copy,
    gbps,
    host_us_per_call,
    max_rel_error,
    tflops,
)

SEED_MS = (64, 128, 4096)
SEED_NKS = ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048))
OVERHEAD_GROUPS = 4
OVERHEAD_SHAPE = (64, 256, 128)
FIRST_CALL_SHAPE = (4096, 7168, 2048)


@dataclass(frozen=True)
class GemmShape:
    m: int
    n: int
    k: int

    def __str__(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"


def seed_shapes() -> list[GemmShape]:
    return [GemmShape(m, n, k) for m in SEED_MS for n, k in SEED_NKS]


def parse_shapes(spec: str) -> list[GemmShape]:
    """``seed`` or a comma-separated list of ``MxNxK``."""
    if spec == "seed":
        return seed_shapes()
    shapes = []
    for item in spec.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"expected 'seed' or a comma-separated list of MxNxK with positive integers, got {item!r}"
            )
        shapes.append(GemmShape(*(int(p) for p in parts)))
    return shapes


def gemm_flops(s: GemmShape) -> int:
    return 2 * s.m * s.n * s.k


def gemm_bytes(s: GemmShape, out_bytes: int = BF16_BYTES) -> int:
    """A + B (fp8) + sfa [M, K/128] + sfb [N/128, K/128] (fp32) + D."""
    kb = ceil_div(s.k, SCALE_BLOCK)
    return (
        (s.m + s.n) * s.k * FP8_BYTES
        + (s.m * kb + ceil_div(s.n, SCALE_BLOCK) * kb) * FP32_BYTES
        + s.m * s.n * out_bytes
    )


# --- the dense GEMM benchmark -------------------------------------------------------------------------------------


def _dequantize(x: torch.Tensor, sf: torch.Tensor, rows_per_scale: int) -> torch.Tensor:
    scales = sf.double().repeat_interleave(rows_per_scale, 0)[: x.shape[0]]
    return x.double() * scales.repeat_interleave(SCALE_BLOCK, 1)[:, : x.shape[1]]


def quantized_inputs(s: GemmShape, device: torch.device):
    a, sfa = torch.ops.deepgemm.per_token_cast_to_fp8(torch.randn(s.m, s.k, device=device, dtype=torch.bfloat16))
    b, sfb = torch.ops.deepgemm.per_block_cast_to_fp8(torch.randn(s.n, s.k, device=device, dtype=torch.bfloat16))
    return a, sfa, b, sfb


def bench_gemm(s: GemmShape, timer: Timer, copy_gbps: float, reps: int, against=None) -> dict:
    """One row of the dense table: ours and cuBLASLt, each with time, TFLOPS, GB/s and error, and the time of a plain
    device copy of the same byte count (what this harness allows a memory-bound kernel of this size: the flush leaves
    L2 dirty and launch costs are fixed, so small copies stay far below the 1 GB copy bandwidth). ``against``: a
    module with DeepGEMM's API (``deep_gemm``) timed beside them on the same inputs, interleaved, with each
    candidate's kernel-only time as well."""
    a, sfa, b, sfb = quantized_inputs(s, timer.device)
    row: dict = {"shape": str(s), "m": s.m, "n": s.n, "k": s.k}
    nbytes = gemm_bytes(s)
    # Both libraries read sfa M-major; lay it out once, outside the timed region (as a model keeps its activations'
    # scales), so that neither timing includes a transpose kernel.
    sfa_ours = torch.ops.deepgemm.get_mn_major_tma_aligned_tensor(sfa)
    sfa_outer = sfa.t().contiguous().t()
    candidates = {
        "ours": lambda: torch.ops.deepgemm.fp8_gemm_nt(a, sfa_ours, b, sfb),
        # DeepSeek-style blockwise scaling through cuBLASLt (DESIGN §7 for the scale layouts).
        "cublaslt": lambda: torch._scaled_mm(a, b.t(), scale_a=sfa_outer, scale_b=sfb.t(), out_dtype=torch.bfloat16),
    }
    if against is not None:
        d = torch.empty(s.m, s.n, device=timer.device, dtype=torch.bfloat16)

        def deep_gemm():
            against.fp8_gemm_nt((a, sfa_ours), (b, sfb), d)
            return d

        candidates["deep_gemm"] = deep_gemm
    outputs = {}
    for label, fn in list(candidates.items()):
        try:
            outputs[label] = fn()
        except NotImplementedError as e:
            row[label] = {"error": f"NotImplementedError: {e}"}
            del candidates[label]
    times = timer.time_interleaved({**candidates, "copy": device_copy(nbytes, timer.device)}, reps=reps)
    row["same_bytes_copy_us"] = times.pop("copy")
    for label, us in times.items():
        row[label] = {
            "us": us,
            "tflops": tflops(gemm_flops(s), us),
            "gbps": gbps(nbytes, us),
            "copy_fraction": gbps(nbytes, us) / copy_gbps,
        }
    if against is not None:
        for label, us in timer.kernel_us(candidates, reps=10).items():
            row[label]["kernel_us"] = us
    # The float64 reference runs after the timings: its power draw lowers the clocks of whatever is timed next
    # (seen here: up to 2x on the following kernel).
    ref = _dequantize(a, sfa, 1) @ _dequantize(b, sfb, SCALE_BLOCK).t()
    for label, out in outputs.items():
        row[label]["rel_err"] = max_rel_error(out, ref)
    if "us" in row["ours"] and "us" in row["cublaslt"]:
        row["speedup_vs_cublaslt"] = row["cublaslt"]["us"] / row["ours"]["us"]
    if "us" in row["ours"] and "us" in row.get("deep_gemm", {}):
        row["speedup_vs_deep_gemm"] = row["deep_gemm"]["us"] / row["ours"]["us"]
        row["kernel_speedup_vs_deep_gemm"] = row["deep_gemm"]["kernel_us"] / row["ours"]["kernel_us"]
    return row


def bench_overhead(device: torch.device) -> dict:
    """Host µs per eager call on a tiny shape: ours, cuBLASLt blockwise and an aten bf16 mm of the same shape."""
    from .. import compat

    s = GemmShape(*OVERHEAD_SHAPE)
    ops = torch.ops.deepgemm
    a, sfa, b, sfb = quantized_inputs(s, device)
    a16 = torch.randn(s.m, s.k, device=device, dtype=torch.bfloat16)
    b16 = torch.randn(s.n, s.k, device=device, dtype=torch.bfloat16).t()
    sfa_outer = sfa.t().contiguous().t()
    out = torch.empty(s.m, s.n, device=device, dtype=torch.bfloat16)
    # Grouped: OVERHEAD_GROUPS groups of `rows` rows (one aligned m-block each), against an aten bf16 bmm.
    g, rows = OVERHEAD_GROUPS, SCALE_BLOCK
    ga, gsfa = ops.per_token_cast_to_fp8(torch.randn(g * rows, s.k, device=device, dtype=torch.bfloat16))
    weights = [ops.per_block_cast_to_fp8(torch.randn(s.n, s.k, device=device, dtype=torch.bfloat16)) for _ in range(g)]
    gb, gsfb = torch.stack([w for w, _ in weights]), torch.stack([sf for _, sf in weights])
    m_indices = torch.arange(g, device=device, dtype=torch.int32).repeat_interleave(rows)
    masked_m = torch.full((g,), rows, device=device, dtype=torch.int32)
    ma, msfa = ga.view(g, rows, s.k), gsfa.view(g, rows, -1)
    gout = torch.empty(g * rows, s.n, device=device, dtype=torch.bfloat16)
    a16g = torch.randn(g, rows, s.k, device=device, dtype=torch.bfloat16)
    b16g = torch.randn(g, s.k, s.n, device=device, dtype=torch.bfloat16)
    calls = {
        "aten_mm": lambda: torch.mm(a16, b16),
        "aten_bmm": lambda: torch.bmm(a16g, b16g),
        "cublaslt": lambda: torch._scaled_mm(a, b.t(), scale_a=sfa_outer, scale_b=sfb.t(), out_dtype=torch.bfloat16),
        "fp8_gemm_nt": lambda: ops.fp8_gemm_nt(a, sfa, b, sfb),
        "fp8_gemm_nt_out": lambda: ops.fp8_gemm_nt_out(a, sfa, b, sfb, out),
        "contiguous": lambda: ops.m_grouped_fp8_gemm_nt_contiguous(ga, gsfa, gb, gsfb, m_indices),
        "contiguous_out": lambda: ops.m_grouped_fp8_gemm_nt_contiguous_out(ga, gsfa, gb, gsfb, m_indices, gout),
        "masked": lambda: ops.m_grouped_fp8_gemm_nt_masked(ma, msfa, gb, gsfb, masked_m, rows),
        "masked_out": lambda: ops.m_grouped_fp8_gemm_nt_masked_out(ma, msfa, gb, gsfb, masked_m, rows,
                                                                   gout.view(g, rows, s.n)),
        "per_token_cast": lambda: ops.per_token_cast_to_fp8(a16),
        # DeepGEMM's API (deepgemm_ops.compat) over fp8_gemm_nt_out / masked_out: the facade's own cost
        "compat_fp8_gemm_nt": lambda: compat.fp8_gemm_nt((a, sfa), (b, sfb), out),
        "compat_masked": lambda: compat.m_grouped_fp8_gemm_nt_masked((ma, msfa), (gb, gsfb), gout.view(g, rows, s.n),
                                                                     masked_m, rows),
    }
    return {"shape": str(s), "groups": f"{g} groups x {rows} rows",
            "us": {name: host_us_per_call(fn) for name, fn in calls.items()}}


# Run in a new process: loads the (already built) host module, then times the first and second fp8_gemm_nt call.
_FIRST_CALL_CHILD = """
import json, time, torch
import deepgemm_ops
from deepgemm_ops import _runtime
m, n, k = {m}, {n}, {k}
a, sfa = torch.ops.deepgemm.per_token_cast_to_fp8(torch.randn(m, k, device="cuda", dtype=torch.bfloat16))
b, sfb = torch.ops.deepgemm.per_block_cast_to_fp8(torch.randn(n, k, device="cuda", dtype=torch.bfloat16))
torch.cuda.synchronize()
times = {{}}
start = time.perf_counter()
_runtime.host_module()
times["host_module_s"] = time.perf_counter() - start
for name in ("first_call_s", "second_call_s"):
    start = time.perf_counter()
    torch.ops.deepgemm.fp8_gemm_nt(a, sfa, b, sfb)
    torch.cuda.synchronize()
    times[name] = time.perf_counter() - start
print(json.dumps(times))
"""


def bench_first_call(s: GemmShape) -> dict:
    """First fp8_gemm_nt call of a shape in a new process (CUDA context and inputs ready): once with an empty kernel
    cache (config, codegen, nvcc, load, launch) and once more with that disk cache warm. The host module is built
    beforehand; loading it is reported apart."""
    from . import _runtime

    _runtime.host_module()
    code = textwrap.dedent(_FIRST_CALL_CHILD.format(m=s.m, n=s.n, k=s.k))
    runs = {}
    with tempfile.TemporaryDirectory(prefix="dg_first_call_") as cache:
        env = {**os.environ, "DG_JIT_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"bench --first-call: the {label} child process failed:\n{done.stderr[-3000:]}")
            runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "shape": str(s),
        "host_module_load_ms": runs["warm"]["host_module_s"] * 1e3,
        "cold_first_call_s": runs["cold"]["first_call_s"],
        "warm_first_call_ms": runs["warm"]["first_call_s"] * 1e3,
        "second_call_ms": runs["warm"]["second_call_s"] * 1e3,
    }


# --- output ---------------------------------------------------------------------------------------------------------


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'shape':>18} | {'ours us':>9} {'TFLOPS':>7} {'GB/s':>6} {'%copy':>6} {'rel err':>8} | "
        f"{'cuBLASLt us':>11} {'TFLOPS':>7} {'rel err':>8} | {'speedup':>7} | {'copy us':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ours, cub = row["ours"], row["cublaslt"]
        left = (
            f"{ours['us']:9.1f} {ours['tflops']:7.1f} {ours['gbps']:6.0f} {ours['copy_fraction']:6.1%} "
            f"{ours['rel_err']:8.1e}"
            if "us" in ours
            else f"{'not implemented':>40}"
        )
        right = f"{cub['us']:11.1f} {cub['tflops']:7.1f} {cub['rel_err']:8.1e}" if "us" in cub else f"{'-':>28}"
        speedup = f"{row['speedup_vs_cublaslt']:6.2f}x" if "speedup_vs_cublaslt" in row else f"{'-':>7}"
        copy = f"{row['same_bytes_copy_us']:7.1f}" if "same_bytes_copy_us" in row else f"{'-':>7}"
        lines.append(f"{row['shape']:>18} | {left} | {right} | {speedup} | {copy}")
    return "\n".join(lines)


def format_against(rows: list[dict]) -> str:
    """Ours against DeepGEMM's API on the same inputs: per-call time and kernel-only time side by side."""
    header = (f"{'shape':>18} | {'ours us':>8} {'kernel':>7} | {'DeepGEMM us':>11} {'kernel':>7} {'TFLOPS':>7} | "
              f"{'ours/DG':>7} {'kernels':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        if "speedup_vs_deep_gemm" not in row:
            lines.append(f"{row['shape']:>18} | {'-':>8}")
            continue
        ours, dg = row["ours"], row["deep_gemm"]
        lines.append(f"{row['shape']:>18} | {ours['us']:8.1f} {ours['kernel_us']:7.1f} | {dg['us']:11.1f} "
                     f"{dg['kernel_us']:7.1f} {dg['tflops']:7.1f} | {row['speedup_vs_deep_gemm']:6.2f}x "
                     f"{row['kernel_speedup_vs_deep_gemm']:6.2f}x")
    return "\n".join(lines)


def format_first_call(f: dict) -> str:
    return (f"first fp8_gemm_nt call of {f['shape']} in a new process: kernel cache cold "
            f"{f['cold_first_call_s']:.2f} s, warm {f['warm_first_call_ms']:.1f} ms "
            f"(second call {f['second_call_ms']:.2f} ms); host module load "
            f"{f['host_module_load_ms']:.1f} ms")


def format_overhead(o: dict) -> str:
    us = o["us"]
    lines = [f"host time per eager call, {o['shape']}, grouped ops {o['groups']} (best of 5 x 2000 calls):"]
    for name, t in us.items():
        aten = "aten_mm" if name in ("cublaslt", "fp8_gemm_nt", "fp8_gemm_nt_out", "per_token_cast",
                                     "compat_fp8_gemm_nt") else "aten_bmm"
        ratio = f"  ({t / us[aten]:.2f}x {aten})" if not name.startswith("aten") else ""
        lines.append(f"  {name:<16} {t:7.2f} us{ratio}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["shape"] for row in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.6), 5))
    for offset, (key, name) in zip((-0.2, 0.2), (("ours", "deepgemm_ops"), ("cublaslt", "cuBLASLt"))):
        ax.bar([i + offset for i in x], [row[key].get("tflops", 0.0) for row in rows], width=0.4, label=name)
    ax.set_xticks(list(x), labels, rotation=60, ha="right")
    ax.set_ylabel("TFLOPS")
    ax.set_title("FP8 GEMM (1x128 / 128x128 scaling), median, L2 flushed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "GemmShape",
    "bench_first_call",
    "bench_gemm",
    "bench_overhead",
    "format_against",
    "format_first_call",
    "format_overhead",
    "format_table",
    "gemm_bytes",
    "gemm_flops",
    "parse_shapes",
    "plot",
    "quantized_inputs",
    "seed_shapes",
]
