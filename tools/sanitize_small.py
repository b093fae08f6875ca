"""Small-shape run of every GPU GEMM path, for compute-sanitizer on the device (developer use):

    compute-sanitizer --tool memcheck python3 tools/sanitize_small.py

Covers M/N/K tails (65 x 576 x 576, K not a multiple of 128), fp32 output with C, the 1x128 recipe, the contiguous
layout with padding rows and the masked layout with counts 0 and Mmax. Prints the max relative error per case.
"""
import sys

import torch

sys.path.insert(0, "test")
from samples import contiguous_inputs, gemm_inputs, masked_inputs, ops  # noqa: E402


def err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def cpu(t):
    return None if t is None else t.cpu()


for recipe, with_c in (("128x128", False), ("1x128", True)):
    a, sfa, b, sfb, c = gemm_inputs(65, 576, 576, recipe, device="cuda", with_c=with_c)
    d = ops.fp8_gemm_nt(a, sfa, b, sfb, c)
    ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb, c)), torch.float32)
    print(f"dense {recipe} c={with_c}: {err(d.cpu(), ref):.1e}")
a, sfa, b, sfb, m_indices = contiguous_inputs([70, 0, 130], 576, 576, device="cuda")
d = ops.m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices)
ref = ops.m_grouped_fp8_gemm_nt_contiguous(*map(cpu, (a, sfa, b, sfb, m_indices)))
keep = m_indices.cpu() >= 0
print(f"contiguous: {err(d.cpu()[keep], ref[keep]):.1e}")
a, sfa, b, sfb, masked_m = masked_inputs([0, 64, 17], 64, 576, 576, device="cuda")
d = ops.m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m, 32)
ref = ops.m_grouped_fp8_gemm_nt_masked(*map(cpu, (a, sfa, b, sfb, masked_m)), 32)
print(f"masked: {max(err(d.cpu()[g, :r], ref[g, :r]) for g, r in ((1, 64), (2, 17))):.1e}")
torch.cuda.synchronize()
