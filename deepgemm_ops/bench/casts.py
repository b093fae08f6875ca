"""``python -m deepgemm_ops bench --casts``: the FP8 casts against the copy bandwidth, and an FP8 linear forward as a
user writes it (cast the activations, GEMM with a pre-quantized weight) against bf16 ``torch.mm``.

A cast moves rows x cols x (input bytes + 1) bytes plus 4 per scale. Two yardsticks: the device copy bandwidth of a
1 GiB copy (read + write), and a device copy of the cast's own bytes timed beside it (which pays the same launch and
ramp-up: an 89 MB copy reaches ~80% of the 1 GiB copy's bandwidth on the H200). torchao's blockwise FP8 casts
(Triton) are timed beside ours when torchao is importable. Timing as the dense bench (L2 flushed, median, candidates
interleaved).
"""

from __future__ import annotations

import functools

import torch

from .._constants import SCALE_BLOCK, ceil_div
from .measure import FP32_BYTES, Timer, device_copy, gbps, tflops

# (kind, rows, cols) of a bf16 input; per_token_transposed casts x.t() of a row-major [rows, cols] x (the
# weight-gradient operand layout: q is [cols, rows], scales per 128 of the rows)
CAST_CASES = (("per_token", 4096, 7168), ("per_token", 128, 7168), ("per_block", 7168, 16384),
              ("per_token_transposed", 4096, 7168), ("per_block_and_transpose", 7168, 4096),
              ("per_token_and_transpose", 8192, 7168))
# (tokens, N, K): x [tokens, K] bf16, W [N, K]
LINEAR_CASES = ((4096, 4096, 7168), (8192, 7168, 2048), (128, 4096, 7168))
# (tokens, in, out) of a training step (forward + backward) of one layer
TRAIN_CASES = ((8192, 7168, 7168), (8192, 4096, 7168), (8192, 7168, 4096))


def _torchao_casts():
    """torchao's 1x128 activation and 128x128 weight casts, or None (named differently across its releases)."""
    try:
        from torchao.prototype.blockwise_fp8_training import kernels
    except Exception:  # not installed, or a build that does not import on this machine
        return None
    for prefix in ("triton_fp8_blockwise_", "fp8_blockwise_"):
        names = {"per_token": "act_quant_lhs", "per_block": "weight_quant_rhs",
                 "per_token_transposed": "act_quant_transposed_lhs"}
        if all(hasattr(kernels, prefix + name) for name in names.values()):
            return {kind: getattr(kernels, prefix + name) for kind, name in names.items()}
    return None


def cast_bytes(kind: str, rows: int, cols: int, in_bytes: int = 2) -> int:
    scales = {"per_token": rows * ceil_div(cols, SCALE_BLOCK),
              "per_token_transposed": cols * ceil_div(rows, SCALE_BLOCK),
              "per_block": ceil_div(rows, SCALE_BLOCK) * ceil_div(cols, SCALE_BLOCK),
              "per_block_and_transpose": 2 * ceil_div(rows, SCALE_BLOCK) * ceil_div(cols, SCALE_BLOCK),
              "per_token_and_transpose": rows * ceil_div(cols, SCALE_BLOCK) + cols * ceil_div(rows, SCALE_BLOCK)}[kind]
    out_bytes = 2 if kind.endswith("_and_transpose") else 1  # q, and q_t
    return rows * cols * (in_bytes + out_bytes) + scales * FP32_BYTES


def _cast_candidates(kind: str, x: torch.Tensor, torchao) -> dict:
    ops = torch.ops.deepgemm
    if kind == "per_block":
        fns = {"ours": lambda: ops.per_block_cast_to_fp8(x)}
    elif kind == "per_block_and_transpose":  # against the cast followed by a transposing copy of its bytes

        def two_steps():
            q, sf = ops.per_block_cast_to_fp8(x)
            return q.view(torch.uint8).t().contiguous(), sf.t().contiguous()

        return {"ours": lambda: ops.per_block_cast_to_fp8_and_transpose(x), "ours_two_steps": two_steps}
    elif kind == "per_token_and_transpose":  # against the two per-token casts it fuses (one of x, one of x.t())
        return {"ours": lambda: ops.per_token_cast_to_fp8_and_transpose(x, True, True),
                "ours_two_steps": lambda: (ops.per_token_cast_to_fp8(x, mn_major_scales=True),
                                           ops.per_token_cast_to_fp8(x.t(), mn_major_scales=True))}
    elif kind == "per_token_transposed":  # torchao takes the row-major tensor and transposes inside
        fns = {"ours": lambda: ops.per_token_cast_to_fp8(x.t()),
               "ours_mn_major": lambda: ops.per_token_cast_to_fp8(x.t(), mn_major_scales=True)}
    else:
        fns = {"ours": lambda: ops.per_token_cast_to_fp8(x),
               "ours_mn_major": lambda: ops.per_token_cast_to_fp8(x, mn_major_scales=True)}
    if torchao is not None:
        fns["torchao"] = lambda: torchao[kind](x, SCALE_BLOCK)
    return fns


def _linear_candidates(x: torch.Tensor, w: torch.Tensor) -> dict:
    """bf16 mm and the FP8 forward (cast x, GEMM with the pre-quantized w), with either scale layout."""
    ops = torch.ops.deepgemm
    wq, wsf = ops.per_block_cast_to_fp8(w)

    def fp8(mn_major):
        q, sf = ops.per_token_cast_to_fp8(x, mn_major_scales=mn_major)
        return ops.fp8_gemm_nt(q, sf, wq, wsf)

    return {"bf16_mm": lambda: torch.mm(x, w.t()), "fp8": lambda: fp8(False), "fp8_mn_major": lambda: fp8(True)}


def bench_casts(timer: Timer, copy_gbps: float, reps: int) -> list[dict]:
    torchao = _torchao_casts()
    rows_out = []
    for kind, rows, cols in CAST_CASES:
        x = torch.randn(rows, cols, device=timer.device, dtype=torch.bfloat16)
        fns = _cast_candidates(kind, x, torchao)
        nbytes = cast_bytes(kind, rows, cols)
        fns["copy_same_bytes"] = device_copy(nbytes, timer.device)
        us = timer.time_interleaved(fns, reps)
        copy_us = us.pop("copy_same_bytes")
        rows_out.append({"kind": kind, "rows": rows, "cols": cols, "bytes": nbytes, "copy_same_bytes_us": copy_us,
                         **{name: {"us": t, "gbps": gbps(nbytes, t), "of_copy": gbps(nbytes, t) / copy_gbps,
                                   "of_same_bytes_copy": copy_us / t} for name, t in us.items()}})
    return rows_out


def bench_linear(timer: Timer, reps: int) -> list[dict]:
    out = []
    for tokens, n, k in LINEAR_CASES:
        x = torch.randn(tokens, k, device=timer.device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=timer.device, dtype=torch.bfloat16)
        us = timer.time_interleaved(_linear_candidates(x, w), reps)
        flops = 2 * tokens * n * k
        out.append({"tokens": tokens, "n": n, "k": k, "us": us,
                    "tflops": {name: tflops(flops, t) for name, t in us.items()},
                    "speedup_vs_bf16": {name: us["bf16_mm"] / t for name, t in us.items() if name != "bf16_mm"}})
    return out


def format_casts(rows: list[dict]) -> str:
    """µs, % of the 1 GiB copy's bandwidth / % of a same-bytes copy's, per candidate."""
    names = ("ours", "ours_mn_major", "ours_two_steps", "torchao")
    lines = [f"{'cast':<36} | bytes MB | copy same bytes | " + " | ".join(f"{n:>26}" for n in names)]
    for r in rows:
        cells = []
        for name in names:
            c = r.get(name)
            cells.append(f"{c['us']:7.1f} us {100 * c['of_copy']:4.0f}% / {100 * c['of_same_bytes_copy']:4.0f}%"
                         if c else f"{'-':>26}")
        lines.append(f"{r['kind']:>20} [{r['rows']:>5}, {r['cols']:>5}] | {r['bytes'] / 1e6:8.1f} | "
                     f"{r['copy_same_bytes_us']:12.1f} us | " + " | ".join(cells))
    return "\n".join(lines)


def format_linear(rows: list[dict]) -> str:
    lines = ["linear fwd tokens x N x K | bf16 mm us | fp8 (cast + gemm) us, x bf16 | fp8 mn-major scales us, x bf16"]
    for r in rows:
        us, sp = r["us"], r["speedup_vs_bf16"]
        lines.append(f"{r['tokens']:>6} x {r['n']:>5} x {r['k']:>5}    | {us['bf16_mm']:10.1f} | "
                     f"{us['fp8']:10.1f} {sp['fp8']:5.2f}x            | {us['fp8_mn_major']:10.1f} "
                     f"{sp['fp8_mn_major']:5.2f}x")
    return "\n".join(lines)


def _train_step(layer, x, dy) -> None:
    """One step as a training loop runs it: gradients cleared the way ``zero_grad()`` does by default (set to None,
    host only), then forward and backward. x stands for the previous layer's output, whose gradient is handed on, not
    accumulated: without the clearing both candidates would also time adding into x.grad and weight.grad (elementwise
    kernels, ~0.2 ms at 8192 x 7168)."""
    x.grad = None
    layer.zero_grad(set_to_none=True)
    layer(x).backward(dy)


def bench_linear_train(timer: Timer, reps: int) -> list[dict]:
    """Forward + backward of one layer, eager: FP8Linear against the same nn.Linear in bf16 (cuBLAS)."""
    from ..nn import FP8Linear

    out = []
    for tokens, n_in, n_out in TRAIN_CASES:
        linear = torch.nn.Linear(n_in, n_out, device=timer.device, dtype=torch.bfloat16)
        fp8 = FP8Linear.from_linear(linear)
        x = torch.randn(tokens, n_in, device=timer.device, dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(tokens, n_out, device=timer.device, dtype=torch.bfloat16)
        us = timer.time_interleaved({"bf16": functools.partial(_train_step, linear, x, dy),
                                     "fp8": functools.partial(_train_step, fp8, x, dy)}, reps)
        out.append({"tokens": tokens, "in": n_in, "out": n_out, "us": us, "speedup_vs_bf16": us["bf16"] / us["fp8"]})
    return out


def format_linear_train(rows: list[dict]) -> str:
    lines = ["training step (fwd + bwd), tokens x in -> out | bf16 nn.Linear us | FP8Linear us | x bf16"]
    for r in rows:
        lines.append(f"{r['tokens']:>6} x {r['in']:>5} -> {r['out']:>5}                   | {r['us']['bf16']:17.1f} | "
                     f"{r['us']['fp8']:12.1f} | {r['speedup_vs_bf16']:5.2f}x")
    return "\n".join(lines)
