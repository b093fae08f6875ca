"""Sample inputs shared by the reference, opcheck, fake-tensor and GPU tests."""

from __future__ import annotations

import torch

import deepgemm_ops  # noqa: F401

ops = torch.ops.deepgemm


def ceil_div(x, y):
    return (x + y - 1) // y


def quantized_a(m, k, *, device="cpu", gen=None, lead=()):
    """Activations [*lead, M, K] with 1x128 scales, through the library's own cast."""
    x = torch.randn(*lead, m, k, generator=gen, device="cpu").to(device)
    q, sf = ops.per_token_cast_to_fp8(x.reshape(-1, k) if lead else x)
    return q.view(*lead, m, k), sf.view(*lead, m, ceil_div(k, 128))


def quantized_b(n, k, recipe="128x128", *, device="cpu", gen=None, groups=None):
    """Weights [N, K] (or [G, N, K]) with 128x128 block scales or 1x128 row scales."""
    g = 1 if groups is None else groups
    x = torch.randn(g, n, k, generator=gen, device="cpu").to(device)
    cast = ops.per_block_cast_to_fp8 if recipe == "128x128" else ops.per_token_cast_to_fp8
    pairs = [cast(x[i]) for i in range(g)]
    q, sf = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    return (q[0], sf[0]) if groups is None else (q, sf)


def gemm_inputs(m, n, k, recipe="128x128", *, device="cpu", with_c=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a, sfa = quantized_a(m, k, device=device, gen=gen)
    b, sfb = quantized_b(n, k, recipe, device=device, gen=gen)
    c = torch.randn(m, n, generator=gen).to(device) if with_c else None
    return a, sfa, b, sfb, c


def contiguous_layout(group_rows, align, *, device="cpu"):
    """m_indices for groups of the given row counts, each padded with -1 rows up to ``align``."""
    ids = []
    for g, rows in enumerate(group_rows):
        ids += [g] * rows + [-1] * (ceil_div(rows, align) * align - rows)
    return torch.tensor(ids, dtype=torch.int32, device=device)


def contiguous_inputs(group_rows, n, k, recipe="128x128", *, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    m_indices = contiguous_layout(group_rows, deepgemm_ops.get_mk_alignment_for_contiguous_layout(), device=device)
    a, sfa = quantized_a(m_indices.numel(), k, device=device, gen=gen)
    b, sfb = quantized_b(n, k, recipe, device=device, gen=gen, groups=len(group_rows))
    return a, sfa, b, sfb, m_indices


def masked_inputs(counts, m_max, n, k, recipe="128x128", *, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    a, sfa = quantized_a(m_max, k, device=device, gen=gen, lead=(len(counts),))
    b, sfb = quantized_b(n, k, recipe, device=device, gen=gen, groups=len(counts))
    masked_m = torch.tensor(counts, dtype=torch.int32, device=device)
    return a, sfa, b, sfb, masked_m


def float64_gemm(a, sfa, b, sfb, c=None):
    """Independent oracle: Σ over K blocks of (Σ_k a·b) · sfa · sfb in float64, block by block."""
    m, k = a.shape
    n = b.shape[0]
    a64, b64 = a.double(), b.double()
    d = torch.zeros(m, n, dtype=torch.float64)
    row_recipe = sfb.shape[0] == n and n != ceil_div(n, 128)
    for kb in range(ceil_div(k, 128)):
        ks = slice(kb * 128, min(k, kb * 128 + 128))
        partial = a64[:, ks] @ b64[:, ks].t()
        sb = sfb[:, kb].double() if row_recipe else sfb[torch.arange(n) // 128, kb].double()
        d += partial * sfa[:, kb].double()[:, None] * sb[None, :]
    return d if c is None else d + c.double()


def op_samples(device="cpu"):
    """(op name, args) pairs covering every op; small shapes with unaligned M and a partial K block."""
    a, sfa, b, sfb, c = gemm_inputs(65, 256, 320, device=device, with_c=True)
    _, _, b1, sfb1, _ = gemm_inputs(65, 256, 320, "1x128", device=device)
    ga, gsfa, gb, gsfb, m_indices = contiguous_inputs([100, 0, 28], 128, 256, device=device)
    ma, msfa, mb, msfb, masked_m = masked_inputs([3, 0, 64], 64, 128, 256, device=device)
    x = torch.randn(65, 320, dtype=torch.bfloat16, device=device)
    return [
        ("fp8_gemm_nt", (a, sfa, b, sfb)),
        ("fp8_gemm_nt", (a, sfa, b1, sfb1, None, torch.float32)),
        ("fp8_gemm_nt", (a, sfa, b, sfb, c)),
        ("fp8_gemm_nt", (a, sfa, b, sfb, None, None, torch.randn(256, dtype=torch.bfloat16, device=device))),
        ("fp8_gemm_nt", (a, sfa, b1, sfb1, c, None, torch.randn(256, device=device))),
        ("fp8_gemm_nt_out", (a, sfa, b, sfb, torch.empty(65, 256, dtype=torch.bfloat16, device=device))),
        ("fp8_gemm_nt_out", (a, sfa, b, sfb, torch.empty(65, 256, device=device), c)),
        ("fp8_gemm_nt_out", (a, sfa, b, sfb, torch.empty(65, 256, device=device), c, torch.randn(256, device=device))),
        ("m_grouped_fp8_gemm_nt_contiguous", (ga, gsfa, gb, gsfb, m_indices)),
        ("m_grouped_fp8_gemm_nt_contiguous_out",
         (ga, gsfa, gb, gsfb, m_indices, torch.empty(ga.shape[0], 128, dtype=torch.bfloat16, device=device))),
        ("m_grouped_fp8_gemm_nt_masked", (ma, msfa, mb, msfb, masked_m, 32)),
        ("m_grouped_fp8_gemm_nt_masked_out",
         (ma, msfa, mb, msfb, masked_m, 32, torch.empty(3, 64, 128, dtype=torch.bfloat16, device=device))),
        ("per_token_cast_to_fp8", (x,)),
        ("per_token_cast_to_fp8", (x.float(), 64)),
        ("per_token_cast_to_fp8", (x, 128, True)),
        ("per_token_cast_to_fp8", (x.t().contiguous().t(),)),  # a transposed view: q is still row-major
        ("per_block_cast_to_fp8", (x,)),
        ("per_block_cast_to_fp8_and_transpose", (x,)),
        ("per_token_cast_to_fp8_and_transpose", (x,)),
        ("per_token_cast_to_fp8_and_transpose", (x, True, True)),
        ("per_token_cast_to_fp8_transpose_and_sum", (x, True, True)),
        ("get_mn_major_tma_aligned_tensor", (sfa,)),
        *bf16_samples(device),
        *k_grouped_samples(device),
        ("get_mn_major_tma_aligned_tensor", (msfa,)),
    ]


def bad_inputs(device="cpu"):
    """name -> (op, args): the bad-input matrix every path must reject with the same message (CPU kernels, fakes,
    the CUDA path after the call's plan exists). Inputs are small and valid except for the one named defect."""
    a, sfa, b, sfb, c = gemm_inputs(64, 256, 640, device=device, with_c=True)
    ga, gsfa, gb, gsfb, m_indices = contiguous_inputs([128, 0, 128], 256, 640, device=device)
    ma, msfa, mb, msfb, masked_m = masked_inputs([5, 64], 64, 256, 640, device=device)
    bf16 = dict(dtype=torch.bfloat16, device=device)
    wide = torch.empty(2, 128, 256, **bf16)[:, :64]  # groups 128 rows apart: not back to back
    return {
        "a float32": (ops.fp8_gemm_nt, (a.float(), sfa, b, sfb)),
        "a rows broadcast": (ops.fp8_gemm_nt, (a[:1].expand(64, -1), sfa, b, sfb)),
        "a not K-major": (ops.fp8_gemm_nt, (a.t().contiguous().t(), sfa, b, sfb)),
        "b rows broadcast": (ops.fp8_gemm_nt, (a, sfa, b[:1].expand(256, -1), sfb)),
        "b K mismatch": (ops.fp8_gemm_nt, (a, sfa, b[:, :512], sfb)),
        "sfa short": (ops.fp8_gemm_nt, (a, sfa[:, :-1], b, sfb)),
        "sfb neither recipe": (ops.fp8_gemm_nt, (a, sfa, b, sfb[:1])),
        "c bfloat16": (ops.fp8_gemm_nt, (a, sfa, b, sfb, c.bfloat16())),
        "out_dtype float16": (ops.fp8_gemm_nt, (a, sfa, b, sfb, None, torch.float16)),
        "out_dtype bf16 with c": (ops.fp8_gemm_nt, (a, sfa, b, sfb, c, torch.bfloat16)),
        "out float16": (ops.fp8_gemm_nt_out, (a, sfa, b, sfb, torch.empty(64, 256, dtype=torch.float16, device=device))),
        "out rows broadcast": (ops.fp8_gemm_nt_out, (a, sfa, b, sfb, torch.empty(1, 256, **bf16).expand(64, -1))),
        "out bf16 with c": (ops.fp8_gemm_nt_out, (a, sfa, b, sfb, torch.empty(64, 256, **bf16), c)),
        "bias float32, bf16 out": (ops.fp8_gemm_nt, (a, sfa, b, sfb, None, None, torch.zeros(256, device=device))),
        "bias short": (ops.fp8_gemm_nt, (a, sfa, b, sfb, None, None, torch.zeros(255, **bf16))),
        "bias broadcast": (ops.fp8_gemm_nt, (a, sfa, b, sfb, None, None, torch.zeros(1, **bf16).expand(256))),
        "out_ bias bf16, fp32 out": (ops.fp8_gemm_nt_out,
                                     (a, sfa, b, sfb, torch.empty(64, 256, device=device), c, torch.zeros(256, **bf16))),
        "m_indices int64": (ops.m_grouped_fp8_gemm_nt_contiguous, (ga, gsfa, gb, gsfb, m_indices.long())),
        "contiguous sfb groups": (ops.m_grouped_fp8_gemm_nt_contiguous, (ga, gsfa, gb, gsfb[:2], m_indices)),
        "contiguous out short": (ops.m_grouped_fp8_gemm_nt_contiguous_out,
                                 (ga, gsfa, gb, gsfb, m_indices, torch.empty(ga.shape[0] - 1, 256, **bf16))),
        "masked expected_m 0": (ops.m_grouped_fp8_gemm_nt_masked, (ma, msfa, mb, msfb, masked_m, 0)),
        "masked expected_m -3": (ops.m_grouped_fp8_gemm_nt_masked, (ma, msfa, mb, msfb, masked_m, -3)),
        "masked_m wrong length": (ops.m_grouped_fp8_gemm_nt_masked, (ma, msfa, mb, msfb, masked_m[:1], 4)),
        "masked out split": (ops.m_grouped_fp8_gemm_nt_masked_out, (ma, msfa, mb, msfb, masked_m, 4, wide)),
        "bf16 nn b K mismatch": (ops.bf16_gemm_nn, (torch.empty(64, 640, **bf16), torch.empty(512, 256, **bf16))),
        "bf16 tn a last dim strided": (ops.bf16_gemm_tn, (torch.empty(64, 640, **bf16).t().contiguous().t(),
                                                          torch.empty(64, 256, **bf16))),
        "bf16 nt a float8": (ops.bf16_gemm_nt, (a, torch.empty(256, 640, **bf16))),
        "bf16 masked expected_m 0": (ops.m_grouped_bf16_gemm_nt_masked, (torch.empty(2, 64, 640, **bf16),
                                                                         torch.empty(2, 256, 640, **bf16), masked_m, 0)),
        "k-grouped sfb block shape": (ops.k_grouped_fp8_gemm_nt_contiguous,
                                      (a, sfa, b, sfb, torch.tensor([640], dtype=torch.int32, device=device))),
        "cast float64": (ops.per_token_cast_to_fp8, (torch.randn(4, 256, dtype=torch.float64, device=device),)),
        "cast group 0": (ops.per_token_cast_to_fp8, (torch.randn(4, 256, device=device), 0)),
        "block cast 3-D": (ops.per_block_cast_to_fp8, (torch.randn(1, 4, 256, device=device),)),
        "block cast and transpose, int": (ops.per_block_cast_to_fp8_and_transpose,
                                          (torch.ones(4, 256, dtype=torch.int32, device=device),)),
        "token cast and transpose, 1-D": (ops.per_token_cast_to_fp8_and_transpose,
                                          (torch.ones(256, device=device),)),
        "token cast, transpose and sum, fp64": (ops.per_token_cast_to_fp8_transpose_and_sum,
                                                (torch.ones(4, 256, dtype=torch.float64, device=device),)),
    }


def bf16_samples(device="cpu"):
    """(op name, args) for the BF16 ops: every layout, fp32 with C, _out, both grouped layouts."""
    gen = torch.Generator().manual_seed(5)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device, torch.bfloat16)

    m, n, k = 65, 96, 200
    stored = {"n": randn(m, k), "t": randn(k, m)}, {"t": randn(n, k), "n": randn(k, n)}
    c = torch.randn(m, n, generator=gen).to(device)
    samples = []
    for layout in ("nt", "nn", "tn", "tt"):
        a, b = stored[0][layout[0]], stored[1][layout[1]]
        samples += [(f"bf16_gemm_{layout}", (a, b)), (f"bf16_gemm_{layout}", (a, b, c)),
                    (f"bf16_gemm_{layout}_out", (a, b, torch.empty(m, n, dtype=torch.bfloat16, device=device)))]
    ga, gb = randn(256, 128), randn(3, 96, 128)
    m_indices = torch.tensor([0] * 100 + [-1] * 28 + [2] * 128, dtype=torch.int32, device=device)
    ma, mb = randn(3, 64, 128), randn(3, 96, 128)
    masked_m = torch.tensor([3, 0, 64], dtype=torch.int32, device=device)
    return samples + [
        ("m_grouped_bf16_gemm_nt_contiguous", (ga, gb, m_indices)),
        ("m_grouped_bf16_gemm_nt_contiguous_out",
         (ga, gb, m_indices, torch.empty(256, 96, dtype=torch.bfloat16, device=device))),
        ("m_grouped_bf16_gemm_nt_masked", (ma, mb, masked_m, 32)),
        ("m_grouped_bf16_gemm_nt_masked_out",
         (ma, mb, masked_m, 32, torch.empty(3, 64, 96, dtype=torch.bfloat16, device=device))),
    ]


def k_grouped_inputs(ks, m, n, device="cpu", seed=0):
    """a [M, ΣK], sfa, b [N, ΣK], sfb (1x128 along K on both), ks int32 [G]: a weight-gradient problem."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(ks)
    a, sfa = ops.per_token_cast_to_fp8(torch.randn(m, total, generator=gen))
    b, sfb = ops.per_token_cast_to_fp8(torch.randn(n, total, generator=gen))
    return (a.to(device), sfa.to(device), b.to(device), sfb.to(device),
            torch.tensor(ks, dtype=torch.int32, device=device))


def k_grouped_samples(device="cpu"):
    a, sfa, b, sfb, ks = k_grouped_inputs([256, 0, 128], 65, 96, device=device)
    c = torch.randn(3, 65, 96, generator=torch.Generator().manual_seed(1)).to(device)
    return [
        ("k_grouped_fp8_gemm_nt_contiguous", (a, sfa, b, sfb, ks)),
        ("k_grouped_fp8_gemm_nt_contiguous", (a, sfa, b, sfb, ks, c)),
        ("k_grouped_fp8_gemm_nt_contiguous_out", (a, sfa, b, sfb, ks, torch.empty(3, 65, 96, device=device), c)),
    ]
