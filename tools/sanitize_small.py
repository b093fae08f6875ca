"""Small-shape run of every GPU GEMM path, for compute-sanitizer on the device (developer use):

    compute-sanitizer --tool memcheck python3 tools/sanitize_small.py

    (tools/sanitize.sh runs it under memcheck, racecheck and synccheck)

Covers M/N/K tails (65 x 576 x 2112, K not a multiple of 128), fp32 output with C, a bias, the 1x128 recipe, the
contiguous layout with padding rows, the masked layout with counts 0 and Mmax and the k-grouped GEMM with an empty group
and C, each GEMM twice (the planning path, then the C++ door) and as its _out form (k-grouped: in place into C); 256-row
tiles in an A-sharing and 128-row tiles in a B-sharing 2-CTA cluster, contiguous (128- and 256-row tiles) and masked
GEMMs in A-sharing clusters, fp32 256-row tiles in place, a k-grouped 256-row tile, split-K (forced); the BF16 GEMMs
(four layouts, fp32 + C, grouped contiguous and masked); the fused casts (per-token with both scale layouts, of a
transposed view, per-block, per-block and per-token with the transpose; partial groups and blocks; a shape of more 128 x
128 blocks than one wave of CTAs). Prints the max relative error per GEMM case and whether each cast matched the CPU.
"""
import sys

import torch

sys.path.insert(0, "test")
from deepgemm_ops import _cuda  # noqa: E402
from deepgemm_ops import _heuristics as H  # noqa: E402
from samples import contiguous_inputs, contiguous_layout, gemm_inputs, k_grouped_inputs, masked_inputs, ops  # noqa: E402

# 17 k-blocks (a partial last one): more than any small problem's pipeline stages (8), so every stage is refilled and
# the sanitizers see the empty/full barrier hand-over, not only a first fill.
K = 2112


def err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def cpu(t):
    return None if t is None else t.cpu()


for recipe, with_c in (("128x128", False), ("1x128", True)):
    a, sfa, b, sfb, c = gemm_inputs(65, 576, K, recipe, device="cuda", with_c=with_c)
    ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb, c)), torch.float32)
    for _ in range(2):
        d = ops.fp8_gemm_nt(a, sfa, b, sfb, c)
        print(f"dense {recipe} c={with_c}: {err(d.cpu(), ref):.1e}")
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, d, c)
    print(f"dense_out {recipe} c={with_c}: {err(d.cpu(), ref):.1e}")
    bias = torch.randn(576, device="cuda").to(d.dtype)  # the bias in each epilogue (bf16 TMA store, fp32 + C)
    d = ops.fp8_gemm_nt(a, sfa, b, sfb, c, d.dtype, bias)
    print(f"dense bias {recipe} c={with_c}: {err(d.cpu(), ref + bias.cpu().float()):.1e}")
    if with_c:  # C is D: the TMA reduce-add epilogue; then fp32 without C: the fp32 TMA store
        ops.fp8_gemm_nt_out(a, sfa, b, sfb, c, c)
        print(f"dense_out in place {recipe}: {err(c.cpu(), ref):.1e}")
        d = ops.fp8_gemm_nt(a, sfa, b, sfb, None, torch.float32)
        ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb)), None, torch.float32)
        print(f"dense fp32 {recipe}: {err(d.cpu(), ref):.1e}")


def contiguous_case(label, calls):
    """The contiguous GEMM with padding rows and an empty group, `calls` times; its inputs and last result."""
    a, sfa, b, sfb, m_indices = contiguous_inputs([70, 0, 130], 576, K, device="cuda")
    ref = ops.m_grouped_fp8_gemm_nt_contiguous(*map(cpu, (a, sfa, b, sfb, m_indices)))
    keep = m_indices.cpu() >= 0

    def error(d):
        return err(d.cpu()[keep], ref[keep])

    for _ in range(calls):
        d = ops.m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices)
        print(f"{label}: {error(d):.1e}")
    return (a, sfa, b, sfb, m_indices), d, error


def masked_case(label, counts, m_max, expected_m, calls):
    """The masked GEMM with these counts (the valid rows checked), `calls` times; its inputs and last result."""
    a, sfa, b, sfb, masked_m = masked_inputs(counts, m_max, 576, K, device="cuda")
    ref = ops.m_grouped_fp8_gemm_nt_masked(*map(cpu, (a, sfa, b, sfb, masked_m)), expected_m)

    def error(d):
        return max(err(d.cpu()[g, :r], ref[g, :r]) for g, r in enumerate(counts) if r)

    for _ in range(calls):
        d = ops.m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m, expected_m)
        print(f"{label}: {error(d):.1e}")
    return (a, sfa, b, sfb, masked_m), d, error


args, d, error = contiguous_case("contiguous", 2)
ops.m_grouped_fp8_gemm_nt_contiguous_out(*args, d)
print(f"contiguous_out: {error(d):.1e}")
args, d, error = masked_case("masked", [0, 64, 17], 64, 32, 2)
ops.m_grouped_fp8_gemm_nt_masked_out(*args, 32, d)
print(f"masked_out: {error(d):.1e}")
a, sfa, b, sfb, ks = k_grouped_inputs([1280, 0, 1152], 65, 96, device="cuda")
c = torch.randn(3, 65, 96, device="cuda")
ref = ops.k_grouped_fp8_gemm_nt_contiguous(*map(cpu, (a, sfa, b, sfb, ks, c)))
for _ in range(2):
    d = ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, ks, c)
    print(f"k_grouped: {err(d.cpu(), ref):.1e}")
ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks, c, c)
print(f"k_grouped_out in place: {err(c.cpu(), ref):.1e}")

# Forced 2-CTA clusters on a small problem, bf16 and fp32 + C outputs: 256-row tiles (two 64-row waves per math
# warpgroup) sharing A — 300 rows (a partial second m-block), 5 n-blocks (the last pair's second block lies past N) —
# and 128-row tiles sharing B (3 m-blocks: the last pair's second lies past M).
chosen = H.choose_fp8_gemm_config
for block_m in (256, 128):
    H.choose_fp8_gemm_config = lambda *args, bm=block_m, **kw: H.with_tile(chosen(*args, **kw), block_m=bm,
                                                                           block_n=128, cluster_size=2)
    _cuda.clear_plans()
    for recipe, with_c in (("128x128", False), ("1x128", True)):
        a, sfa, b, sfb, c = gemm_inputs(300, 576, K, recipe, device="cuda", with_c=with_c)
        ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb, c)), torch.float32)
        d = ops.fp8_gemm_nt(a, sfa, b, sfb, c)
        print(f"dense {block_m}x128 cluster 2 {recipe} c={with_c}: {err(d.cpu(), ref):.1e}")
        if with_c:  # fp32 through the TMA epilogue: reduce-add in place (C is D), then a plain store
            ops.fp8_gemm_nt_out(a, sfa, b, sfb, c, c)
            print(f"dense_out in place {block_m}x128 cluster 2 {recipe}: {err(c.cpu(), ref):.1e}")
            ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb)), None, torch.float32)
            d = ops.fp8_gemm_nt(a, sfa, b, sfb, None, torch.float32)
            print(f"dense fp32 {block_m}x128 cluster 2 {recipe}: {err(d.cpu(), ref):.1e}")
# Split-K (forced): 3 splits of 17 k-blocks (6/5/6) over 3 m-blocks of 128-row tiles, bf16 out (TMA store) and fp32 +
# C in place (TMA reduce-add), split 0 reading the others' partials from the workspace.
H.choose_fp8_gemm_config = lambda *args, **kw: H.with_tile(chosen(*args, **kw), block_m=128, block_n=64, num_splits=3)
_cuda.clear_plans()
for recipe in ("128x128", "1x128"):
    a, sfa, b, sfb, c = gemm_inputs(300, 576, K, recipe, device="cuda", with_c=True)
    ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb)), None, torch.float32)
    print(f"dense 128x64 split 3 {recipe}: {err(ops.fp8_gemm_nt(a, sfa, b, sfb).cpu(), ref):.1e}")
    ref = ops.fp8_gemm_nt(*map(cpu, (a, sfa, b, sfb, c)), torch.float32)
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, c, c)
    print(f"dense_out in place 128x64 split 3 {recipe}: {err(c.cpu(), ref):.1e}")
# m-grouped GEMMs in A-sharing clusters (n-block pairs, 5 n-blocks: the last pair's second lies past N): contiguous
# with padding rows and an empty group, masked with counts 0 and one inside the first 64-row half.
H.choose_fp8_gemm_config = lambda *args, **kw: H.with_tile(chosen(*args, **kw), block_m=128, block_n=128,
                                                           cluster_size=2)
_cuda.clear_plans()
contiguous_case("contiguous 128x128 cluster 2", 1)
masked_case("masked 128x128 cluster 2", [0, 128, 17], 128, 64, 1)
# 256-row m-grouped tiles sharing A. Contiguous: the first tile's halves hold groups 0 and 2 (two passes over K), the
# second's lower half group 2 and its upper half lies past M.
H.choose_fp8_gemm_config = lambda *args, **kw: H.with_tile(chosen(*args, **kw), block_m=256, block_n=128,
                                                           cluster_size=2)
_cuda.clear_plans()
contiguous_case("contiguous 256x128 cluster 2", 1)
# Masked 256-row tiles sharing A: counts 0, 300 (the second tile: one live wave in warpgroup 0, none in 1) and 17.
masked_case("masked 256x128 cluster 2", [0, 300, 17], 512, 64, 1)
# k-grouped 256x112 tiles (no cluster): 300 rows (a partial second m-block), an empty group, in place.
H.choose_fp8_gemm_config = lambda *args, **kw: H.with_tile(chosen(*args, **kw), block_m=256, block_n=112)
_cuda.clear_plans()
a, sfa, b, sfb, ks = k_grouped_inputs([1280, 0, 1152], 300, 240, device="cuda")
c = torch.randn(3, 300, 240, device="cuda")
ref = ops.k_grouped_fp8_gemm_nt_contiguous(*map(cpu, (a, sfa, b, sfb, ks, c)))
ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks, c, c)
print(f"k_grouped_out in place 256x112: {err(c.cpu(), ref):.1e}")
H.choose_fp8_gemm_config = chosen
_cuda.clear_plans()

# BF16: the four layouts with M/N/K tails and fp32 + C, the grouped NT forms.
for layout in ("nt", "nn", "tn", "tt"):
    m, n, k = 72, 200, 136
    a = torch.randn((m, k) if layout[0] == "n" else (k, m), device="cuda", dtype=torch.bfloat16)
    b = torch.randn((n, k) if layout[1] == "t" else (k, n), device="cuda", dtype=torch.bfloat16)
    c = torch.randn(m, n, device="cuda")
    op = getattr(ops, f"bf16_gemm_{layout}")
    for cc in (None, c):
        ref = op(a.cpu(), b.cpu(), cpu(cc), torch.float32)
        print(f"bf16 {layout} c={cc is not None}: {err(op(a, b, cc).cpu(), ref):.1e}")
m_indices = contiguous_layout([70, 0, 130], 128, device="cuda")
a = torch.randn(m_indices.numel(), 136, device="cuda", dtype=torch.bfloat16)
b = torch.randn(3, 200, 136, device="cuda", dtype=torch.bfloat16)
keep = m_indices.cpu() >= 0
ref = ops.m_grouped_bf16_gemm_nt_contiguous(a.cpu(), b.cpu(), m_indices.cpu())
print(f"bf16 contiguous: {err(ops.m_grouped_bf16_gemm_nt_contiguous(a, b, m_indices).cpu()[keep], ref[keep]):.1e}")
a = torch.randn(3, 64, 136, device="cuda", dtype=torch.bfloat16)
masked_m = torch.tensor([0, 64, 17], device="cuda", dtype=torch.int32)
ref = ops.m_grouped_bf16_gemm_nt_masked(a.cpu(), b.cpu(), masked_m.cpu(), 32)
d = ops.m_grouped_bf16_gemm_nt_masked(a, b, masked_m, 32).cpu()
print(f"bf16 masked: {max(err(d[g, :r], ref[g, :r]) for g, r in ((1, 64), (2, 17))):.1e}")


def same_cast(got, want):
    # (q, sf) or (q, sf, q_t, sf_t): the FP8 values bit for bit, the scales exactly
    return all(torch.equal(g.cpu().view(torch.uint8), w.view(torch.uint8)) if w.dtype == torch.float8_e4m3fn
               else torch.equal(g.cpu(), w) for g, w in zip(got, want, strict=True))


for dtype in (torch.bfloat16, torch.float32):
    x = torch.randn(130, 264, dtype=dtype, device="cuda")
    x16 = torch.randn(144, 264, dtype=dtype, device="cuda")  # the fused transposing cast takes rows % 16 == 0
    for name, fn, arg in (("per_token", ops.per_token_cast_to_fp8, x),
                          ("per_token mn-major", lambda t: ops.per_token_cast_to_fp8(t, mn_major_scales=True), x),
                          ("per_token of x.t()", ops.per_token_cast_to_fp8, x.t()),
                          ("per_block", ops.per_block_cast_to_fp8, x),
                          ("per_block and transpose", ops.per_block_cast_to_fp8_and_transpose, x16),
                          ("per_token and transpose",
                           lambda t: ops.per_token_cast_to_fp8_and_transpose(t, True, False), x16)):
        print(f"{name} {dtype}: {'same as CPU' if same_cast(fn(arg), fn(arg.cpu())) else 'DIFFERS'}")
    *casts, sums = ops.per_token_cast_to_fp8_transpose_and_sum(x16, True, False)
    *want, want_sums = ops.per_token_cast_to_fp8_transpose_and_sum(x16.cpu(), True, False)
    print(f"per_token transpose and sum {dtype}: casts {'same as CPU' if same_cast(casts, want) else 'DIFFERS'}, "
          f"sums {err(sums.cpu(), want_sums):.1e}")
    # more 128 x 128 blocks (9 x 38) than one wave of CTAs (2-3 per SM)
    xb = torch.randn(1152, 4864, dtype=dtype, device="cuda")
    for name, fn in (("per_block", ops.per_block_cast_to_fp8),
                     ("per_block and transpose", ops.per_block_cast_to_fp8_and_transpose),
                     ("per_token and transpose", lambda t: ops.per_token_cast_to_fp8_and_transpose(t, True, False))):
        print(f"{name} {dtype} [1152, 4864]: {'same as CPU' if same_cast(fn(xb), fn(xb.cpu())) else 'DIFFERS'}")
torch.cuda.synchronize()
