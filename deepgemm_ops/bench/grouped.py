"""``python -m deepgemm_ops bench --grouped``: the MoE grouped GEMMs on the cases of DESIGN §6.

Contiguous: G groups of exactly M rows each (M a multiple of the layout alignment). Masked: for G <= 4 every group
holds exactly the expected M rows and Mmax = expected M; for G = 32 the counts are drawn uniformly in 0.7-1.3x the
expected M and Mmax = 1.3x expected rounded up to 64 (at least 128). TFLOPS and GB/s count valid rows only; bytes =
valid rows of A (+ their scales) + every group's B (+ scales) + valid rows of D. Timing as the dense bench.
``--against MODULE`` (DeepGEMM's API) times its ``m_grouped_fp8_gemm_nt_{contiguous,masked}`` on the same operands,
interleaved with ours, with both kernel-only times; without it the DeepGEMM column is DESIGN §6's figure.
"""

from __future__ import annotations

import torch

from .._constants import SCALE_BLOCK, ceil_div
from .dense import _dequantize
from .measure import BF16_BYTES, FP8_BYTES, FP32_BYTES, Timer, gbps, max_rel_error, tflops

# (layout, groups, expected M, N, K, DeepGEMM TFLOPS on the H200 of DESIGN §6)
CASES = (
    ("contiguous", 4, 8192, 4096, 7168, 1445),
    ("contiguous", 4, 8192, 7168, 2048, 1365),
    ("contiguous", 8, 4096, 4096, 7168, 1428),
    ("contiguous", 8, 4096, 7168, 2048, 1363),
    ("masked", 1, 1024, 4096, 7168, 1238),
    ("masked", 1, 1024, 7168, 2048, 890),
    ("masked", 2, 512, 4096, 7168, 1210),
    ("masked", 2, 512, 7168, 2048, 844),
    ("masked", 4, 256, 4096, 7168, 1014),
    ("masked", 4, 256, 7168, 2048, 785),
    ("masked", 32, 192, 6144, 7168, 1003),
    ("masked", 32, 20, 6144, 7168, 153),
)


def _masked_counts(groups: int, expected: int, gen: torch.Generator) -> tuple[list[int], int]:
    if groups <= 4:
        return [expected] * groups, expected
    lo, hi = int(0.7 * expected), int(1.3 * expected)
    counts = torch.randint(lo, hi + 1, (groups,), generator=gen).tolist()
    return counts, max(128, ceil_div(hi, 64) * 64)


def _weights(groups: int, n: int, k: int, device):
    x = torch.randn(groups, n, k, device=device, dtype=torch.bfloat16)
    pairs = [torch.ops.deepgemm.per_block_cast_to_fp8(x[g]) for g in range(groups)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _reference(a, sfa, b, sfb):
    return _dequantize(a, sfa, 1) @ _dequantize(b, sfb, SCALE_BLOCK).t()


def bench_case(case, timer: Timer, copy_gbps: float, reps: int, against=None) -> dict:
    layout, groups, expected, n, k, deepgemm = case
    device = timer.device
    gen = torch.Generator().manual_seed(groups * expected)
    b, sfb = _weights(groups, n, k, device)
    if layout == "contiguous":
        counts = [expected] * groups
        m_indices = torch.arange(groups, dtype=torch.int32, device=device).repeat_interleave(expected)
        a, sfa = torch.ops.deepgemm.per_token_cast_to_fp8(
            torch.randn(groups * expected, k, device=device, dtype=torch.bfloat16))
        sfa = torch.ops.deepgemm.get_mn_major_tma_aligned_tensor(sfa)  # laid out once, outside the timing
        fn = lambda: torch.ops.deepgemm.m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices)  # noqa: E731
        theirs = lambda d: against.m_grouped_fp8_gemm_nt_contiguous((a, sfa), (b, sfb), d, m_indices)  # noqa: E731
        rows = lambda out, g: (out[g * expected:(g + 1) * expected], a[g * expected:(g + 1) * expected],  # noqa: E731
                               sfa[g * expected:(g + 1) * expected])
        name = f"contiguous {groups}x{expected}"
    else:
        counts, m_max = _masked_counts(groups, expected, gen)
        masked_m = torch.tensor(counts, dtype=torch.int32, device=device)
        q, sf = torch.ops.deepgemm.per_token_cast_to_fp8(
            torch.randn(groups * m_max, k, device=device, dtype=torch.bfloat16))
        a = q.view(groups, m_max, k)
        sfa = torch.ops.deepgemm.get_mn_major_tma_aligned_tensor(sf.view(groups, m_max, -1))
        fn = lambda: torch.ops.deepgemm.m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m, expected)  # noqa: E731
        theirs = lambda d: against.m_grouped_fp8_gemm_nt_masked((a, sfa), (b, sfb), d, masked_m,  # noqa: E731
                                                                 expected)
        rows = lambda out, g: (out[g, :counts[g]], a[g, :counts[g]], sfa[g, :counts[g]])  # noqa: E731
        name = f"masked {groups}x{expected}"
    valid = sum(counts)
    kb = ceil_div(k, SCALE_BLOCK)
    nbytes = (valid * k * FP8_BYTES + valid * kb * FP32_BYTES + groups * n * k * FP8_BYTES
              + sfb.numel() * FP32_BYTES + valid * n * BF16_BYTES)
    row = {"case": f"{name} {n}x{k}", "layout": layout, "groups": groups, "expected_m": expected, "n": n, "k": k,
           "valid_rows": valid, "deepgemm_tflops": deepgemm}
    try:
        out = fn()
    except NotImplementedError as e:
        row["error"] = f"NotImplementedError: {e}"
        return row
    fns = {"ours": fn}
    if against is not None:
        d = torch.empty_like(out)
        fns["deep_gemm"] = lambda: theirs(d)
    us = timer.time_interleaved(fns, reps=reps)

    def max_error(result):  # on up to 4 groups (the float64 reference of 32 groups costs more than the benchmark)
        return max(max_rel_error(o, _reference(x, s, b[g], sfb[g])) for g in range(min(groups, 4))
                   for o, x, s in [rows(result, g)] if counts[g])

    flops = 2 * valid * n * k
    row.update(us=us["ours"], tflops=tflops(flops, us["ours"]), gbps=gbps(nbytes, us["ours"]),
               copy_fraction=gbps(nbytes, us["ours"]) / copy_gbps, rel_err=max_error(out))
    if against is None:
        row["vs_deepgemm"] = row["tflops"] / deepgemm
    else:  # the same run's DeepGEMM replaces DESIGN's figure
        kernel = timer.kernel_us(fns, reps=10)
        row.update(kernel_us=kernel["ours"], deep_gemm_us=us["deep_gemm"], deep_gemm_kernel_us=kernel["deep_gemm"],
                   deepgemm_tflops=tflops(flops, us["deep_gemm"]), deep_gemm_rel_err=max_error(d),
                   kernel_vs_deepgemm=kernel["deep_gemm"] / kernel["ours"])
        row["vs_deepgemm"] = us["deep_gemm"] / us["ours"]
    return row


def format_grouped(rows: list[dict]) -> str:
    """DeepGEMM's column: its TFLOPS in this run (with the kernel-only ratio) when it was timed, else DESIGN's."""
    same_run = any("deep_gemm_us" in r for r in rows)
    header = (f"{'case':>34} | {'us':>8} {'TFLOPS':>7} {'GB/s':>6} {'%copy':>6} {'rel err':>8} | "
              f"{'DeepGEMM':>8} {'ratio':>6}" + (f" {'kernels':>7}" if same_run else ""))
    lines = [header, "-" * len(header)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:>34} | {r['error']}")
            continue
        kernels = f" {r['kernel_vs_deepgemm']:6.2f}x" if same_run else ""
        lines.append(f"{r['case']:>34} | {r['us']:8.1f} {r['tflops']:7.1f} {r['gbps']:6.0f} {r['copy_fraction']:6.1%} "
                     f"{r['rel_err']:8.1e} | {r['deepgemm_tflops']:8.0f} {r['vs_deepgemm']:5.2f}x{kernels}")
    return "\n".join(lines)


def run_grouped(timer: Timer, copy_gbps: float, reps: int, against=None) -> list[dict]:
    rows = [bench_case(case, timer, copy_gbps, reps, against) for case in CASES]
    print(format_grouped(rows))
    return rows
