"""BF16 GPU kernels against the reference (skipped without an SM90 device).

Outputs are poisoned with NaN before every run and every element is checked. The reference is the fp32 product of
the bf16 inputs: the ops' CPU implementation for small problems (checked against float64 in test_reference), the same
code (``_ops.reference_bf16_gemm``) or a per-group fp32 matmul on the GPU for large ones.
"""

import pytest
import torch
from conftest import requires_sm90

import deepgemm_ops
from deepgemm_ops import _ops
from samples import contiguous_layout

pytestmark = requires_sm90

ops = torch.ops.deepgemm
LAYOUTS = ("nt", "nn", "tn", "tt")
SEED_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def randn(*shape, seed=0, padded=False):
    """bf16 on the GPU; padded: a [.., :cols] slice of a buffer whose rows are cols rounded up to a multiple of 8,
    plus 8 (a TMA-readable row stride for any cols)."""
    gen = torch.Generator().manual_seed(seed)
    width = (shape[-1] + 7) // 8 * 8 + 8 if padded else shape[-1]
    full = torch.randn(*shape[:-1], width, generator=gen).to("cuda", torch.bfloat16)
    return full[..., :shape[-1]]


def stored(layout, m, n, k, seed=0, padded=False):
    """(a, b) stored as `layout` says: a [M, K] or [K, M], b [N, K] or [K, N]."""
    a = randn(m, k, seed=seed, padded=padded) if layout[0] == "n" else randn(k, m, seed=seed, padded=padded)
    b = randn(n, k, seed=seed + 1, padded=padded) if layout[1] == "t" else randn(k, n, seed=seed + 1, padded=padded)
    return a, b


def reference(layout, a, b, c=None):
    """fp32 D = C + A·B: the CPU op for small problems, the same reference code on the GPU for large ones."""
    n = b.shape[0] if layout[1] == "t" else b.shape[1]
    if n * a.numel() < 2**30:
        return getattr(ops, f"bf16_gemm_{layout}")(a.cpu(), b.cpu(), None if c is None else c.cpu(),
                                                   torch.float32).to("cuda")
    return _ops.reference_bf16_gemm(layout, a, b, c)


def grouped_reference(a, b, rows_of_group):
    """fp32 rows_of_group(g) of D for every group g: A[rows] · B[g]ᵀ (on the GPU)."""
    out = torch.zeros(*a.shape[:-1], b.shape[1], device="cuda")
    for g in range(b.shape[0]):
        rows = rows_of_group(g)
        out[rows] = a[rows].float() @ b[g].float().t()
    return out


def check(layout, m, n, k, *, out_dtype=torch.bfloat16, with_c=False, padded=False, seed=0):
    a, b = stored(layout, m, n, k, seed, padded)
    c = torch.randn(m, n, generator=torch.Generator().manual_seed(seed + 2)).cuda() if with_c else None
    out_dtype = torch.float32 if with_c else out_dtype
    out = torch.full((m, n), float("nan"), dtype=out_dtype, device="cuda")
    getattr(ops, f"bf16_gemm_{layout}_out")(a, b, out, c)
    assert not out.isnan().any(), "unwritten output elements"
    ref = reference(layout, a, b, c)
    assert rel_err(out, ref) < (4e-3 if out_dtype == torch.bfloat16 else 1e-5)
    got = getattr(ops, f"bf16_gemm_{layout}")(a, b, c, None if with_c else out_dtype)  # functional: same numbers
    assert got.dtype == out_dtype and torch.equal(got, out)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,k", SEED_NK)
def test_layouts_at_m4096(layout, n, k):
    check(layout, 4096, n, k)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m,n,k", [(1, 576, 576), (65, 2112, 576), (64, 256, 64), (300, 256, 7168)])
def test_small_and_tail_shapes(layout, m, n, k):
    # The M-major a of tn / tt needs M % 8 == 0 unless padded; a padded buffer covers M = 1, 65, 300 there.
    check(layout, m, n, k, padded=layout[0] == "t")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_odd_m_n_k_from_padded_buffers(layout):
    # Rows of every stored operand padded to a multiple of 8 elements: M, N, K all odd.
    for m, n, k in [(33, 97, 121), (1, 1, 1), (129, 255, 1003)]:
        check(layout, m, n, k, padded=True, seed=m)


def test_any_k_where_no_operand_is_k_major():
    # tn: a [K, M] and b [K, N]; K only counts rows, so K need not be a multiple of 8.
    check("tn", 128, 256, 577)
    check("tn", 64, 64, 3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fp32_out_and_c(layout):
    check(layout, 65, 2112, 576, out_dtype=torch.float32, padded=layout[0] == "t")
    check(layout, 128, 4096, 7168, with_c=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fp32_accumulates_into_c_in_place(layout):
    # C is D: the TMA reduce-add epilogue (N a multiple of 4), and the direct one where TMA cannot take D (N = 577).
    for m, n, k in [(300, 2112, 576), (65, 577, 576)]:
        a, b = stored(layout, m, n, k, m + n, padded=True)
        c = torch.randn(m, n, generator=torch.Generator().manual_seed(n)).cuda()
        expected = reference(layout, a, b, c)
        for _ in range(2):  # the second call runs through the installed plan
            getattr(ops, f"bf16_gemm_{layout}_out")(a, b, c, c)
            assert rel_err(c, expected) < 1e-5
            expected = reference(layout, a, b, c)


def test_out_into_a_slice_of_a_larger_buffer():
    a, b = stored("nt", 65, 576, 576)
    buf = torch.full((65, 1024), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.bf16_gemm_nt_out(a, b, buf[:, 128:704])
    assert rel_err(buf[:, 128:704], reference("nt", a, b)) < 4e-3
    assert buf[:, :128].isnan().all() and buf[:, 704:].isnan().all()


def test_zero_sizes():
    a, b = stored("nn", 0, 576, 64)
    assert ops.bf16_gemm_nn(a, b).shape == (0, 576)
    a, b = stored("nt", 5, 64, 0)
    c = torch.randn(5, 64, device="cuda")
    assert torch.equal(ops.bf16_gemm_nt(a, b, c), c)


def test_unaligned_rows_are_a_clear_error():
    a, b = stored("nt", 64, 256, 100)  # K = 100: rows of 200 bytes
    with pytest.raises(ValueError, match=r"a \(stored \[M, K\] for layout 'nt'\) must have a row stride that is a "
                                         r"multiple of 8 elements"):
        ops.bf16_gemm_nt(a, b)
    a, b = stored("tn", 65, 256, 64)  # M = 65 in a [K, M]
    with pytest.raises(ValueError, match=r"a \(stored \[K, M\] for layout 'tn'\) .* got row stride 65"):
        ops.bf16_gemm_tn(a, b)


@pytest.mark.parametrize("group_rows,n,k", [([128, 0, 300, 5], 576, 576), ([4096, 4096, 4096, 4096], 4096, 7168),
                                            ([0, 0, 1], 256, 64)])
def test_grouped_contiguous(group_rows, n, k):
    align = deepgemm_ops.get_mk_alignment_for_contiguous_layout()
    m_indices = contiguous_layout(group_rows, align, device="cuda")
    a, b = randn(m_indices.numel(), k, seed=1), randn(len(group_rows), n, k, seed=2)
    out = torch.full((m_indices.numel(), n), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.m_grouped_bf16_gemm_nt_contiguous_out(a, b, m_indices, out)
    ref = grouped_reference(a, b, lambda g: m_indices == g)
    valid = m_indices >= 0  # padding rows are unspecified
    assert not out[valid].isnan().any(), "unwritten rows"
    assert rel_err(out[valid], ref[valid]) < 4e-3
    got = ops.m_grouped_bf16_gemm_nt_contiguous(a, b, m_indices)
    assert torch.equal(got[valid], out[valid])


@pytest.mark.parametrize("counts,m_max,n,k", [([0, 256, 17, 0], 256, 576, 576), ([1024], 1024, 4096, 7168),
                                               ([20] * 32, 64, 7168, 2048)])
def test_grouped_masked(counts, m_max, n, k):
    a, b = randn(len(counts), m_max, k, seed=3), randn(len(counts), n, k, seed=4)
    masked_m = torch.tensor(counts, dtype=torch.int32, device="cuda")
    out = torch.full((len(counts), m_max, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.m_grouped_bf16_gemm_nt_masked_out(a, b, masked_m, max(1, sum(counts) // len(counts)), out)
    ref = grouped_reference(a, b, lambda g: (g, slice(0, counts[g])))
    for g, rows in enumerate(counts):  # rows >= masked_m[g] are unspecified
        assert not out[g, :rows].isnan().any(), f"unwritten rows in group {g}"
        if rows:
            assert rel_err(out[g, :rows], ref[g, :rows]) < 4e-3
    got = ops.m_grouped_bf16_gemm_nt_masked(a, b, masked_m, 1)
    for g, rows in enumerate(counts):
        assert torch.equal(got[g, :rows], out[g, :rows])


@pytest.mark.parametrize("layout", ["nt", "tn"])
def test_cuda_graph_replay_with_new_inputs(layout):
    m, n, k = 128, 2112, 7168
    a, b = stored(layout, m, n, k)
    out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
    op = getattr(ops, f"bf16_gemm_{layout}_out")
    op(a, b, out)  # one eager call compiles and loads the kernel (none may load during capture)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        op(a, b, out)
    for seed in range(3):
        a2, b2 = stored(layout, m, n, k, seed=100 + 2 * seed)
        a.copy_(a2), b.copy_(b2)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(out, reference(layout, a2, b2)) < 4e-3


def test_masked_counts_change_between_graph_replays():
    a, b = randn(4, 128, 512, seed=5), randn(4, 256, 512, seed=6)
    masked_m = torch.tensor([128, 0, 7, 64], dtype=torch.int32, device="cuda")
    out = torch.empty(4, 128, 256, dtype=torch.bfloat16, device="cuda")
    ops.m_grouped_bf16_gemm_nt_masked_out(a, b, masked_m, 64, out)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.m_grouped_bf16_gemm_nt_masked_out(a, b, masked_m, 64, out)
    ref = grouped_reference(a, b, lambda g: (g, slice(None)))
    for counts in ([0, 128, 1, 0], [128, 128, 128, 128]):
        masked_m.copy_(torch.tensor(counts, dtype=torch.int32))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        for g, rows in enumerate(counts):
            assert not out[g, :rows].isnan().any()
            if rows:
                assert rel_err(out[g, :rows], ref[g, :rows]) < 4e-3
