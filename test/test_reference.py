"""CPU reference kernels against an independent float64 computation."""

import itertools

import pytest
import torch

import deepgemm_ops
from deepgemm_ops import get_tma_aligned_size
from samples import ceil_div, contiguous_inputs, float64_gemm, gemm_inputs, masked_inputs, op_samples, ops


def rel_err(x, ref):
    return ((x.double() - ref).norm() / ref.norm().clamp(min=1e-30)).item()


# bf16 rounding of the output bounds the error at about 2^-9 per element.
BF16_TOL, FP32_TOL = 4e-3, 1e-5


@pytest.mark.parametrize("m,n,k", itertools.product([1, 65, 300], [576, 2112], [576, 7168]))
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_fp8_gemm_nt_matches_float64(m, n, k, recipe):
    a, sfa, b, sfb, _ = gemm_inputs(m, n, k, recipe, seed=m * n + k)
    ref = float64_gemm(a, sfa, b, sfb)
    d = ops.fp8_gemm_nt(a, sfa, b, sfb)
    assert d.dtype == torch.bfloat16 and d.shape == (m, n) and d.device.type == "cpu"
    assert rel_err(d, ref) < BF16_TOL
    d32 = ops.fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32)
    assert d32.dtype == torch.float32 and rel_err(d32, ref) < FP32_TOL


@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_fp8_gemm_nt_accumulates_c(recipe):
    a, sfa, b, sfb, c = gemm_inputs(65, 576, 576, recipe, with_c=True)
    d = ops.fp8_gemm_nt(a, sfa, b, sfb, c)
    assert d.dtype == torch.float32
    assert rel_err(d, float64_gemm(a, sfa, b, sfb, c)) < FP32_TOL


def test_fp8_gemm_nt_out_writes_a_slice_in_place():
    a, sfa, b, sfb, c = gemm_inputs(65, 576, 576, with_c=True)
    buf = torch.full((65, 1000), float("nan"))
    out = buf[:, 100:676]
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out, c)
    assert rel_err(out, float64_gemm(a, sfa, b, sfb, c)) < FP32_TOL
    assert buf[:, :100].isnan().all() and buf[:, 676:].isnan().all()
    # out may be c itself: D += A @ B
    acc = c.clone()
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, acc, acc)
    assert rel_err(acc, float64_gemm(a, sfa, b, sfb, c)) < FP32_TOL


@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_fp8_gemm_nt_adds_a_bias_before_rounding(recipe):
    a, sfa, b, sfb, c = gemm_inputs(65, 576, 576, recipe, with_c=True)
    gen = torch.Generator().manual_seed(7)
    bias = torch.randn(576, generator=gen) * 4
    want = float64_gemm(a, sfa, b, sfb) + bias.double()
    d = ops.fp8_gemm_nt(a, sfa, b, sfb, bias=bias.bfloat16())
    assert d.dtype == torch.bfloat16
    assert rel_err(d, float64_gemm(a, sfa, b, sfb) + bias.bfloat16().double()) < BF16_TOL
    assert rel_err(ops.fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32, bias=bias), want) < FP32_TOL
    assert rel_err(ops.fp8_gemm_nt(a, sfa, b, sfb, c, bias=bias), want + c.double()) < FP32_TOL
    # _out form, a bias with a stride (a view of every other element)
    strided = torch.stack([bias, torch.full_like(bias, float("nan"))], 1).flatten()[::2]
    out = torch.empty(65, 576)
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out, c, bias=strided)
    assert rel_err(out, want + c.double()) < FP32_TOL


def test_fp8_gemm_nt_accepts_any_scale_strides():
    a, sfa, b, sfb, _ = gemm_inputs(65, 576, 576)
    mn_major = ops.get_mn_major_tma_aligned_tensor(sfa)
    assert mn_major.stride() == (1, 68)
    torch.testing.assert_close(ops.fp8_gemm_nt(a, mn_major, b, sfb), ops.fp8_gemm_nt(a, sfa, b, sfb), rtol=0, atol=0)


def test_zero_sizes():
    a, sfa, b, sfb, c = gemm_inputs(0, 576, 576, with_c=True)
    assert ops.fp8_gemm_nt(a, sfa, b, sfb).shape == (0, 576)
    # K = 0: the sum over K is empty, so D = C (or zeros).
    a, sfa, b, sfb, c = gemm_inputs(5, 7, 0, with_c=True)
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb, c), c)
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb), torch.zeros(5, 7, dtype=torch.bfloat16))


@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_grouped_contiguous_matches_float64(recipe):
    rows = [200, 0, 37, 128]
    a, sfa, b, sfb, m_indices = contiguous_inputs(rows, 576, 576, recipe)
    d = ops.m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices)
    assert d.shape == (a.shape[0], 576) and d.dtype == torch.bfloat16
    for g in range(len(rows)):
        sel = (m_indices == g).nonzero().flatten()
        if sel.numel():
            assert rel_err(d[sel], float64_gemm(a[sel], sfa[sel], b[g], sfb[g])) < BF16_TOL
    out = torch.full_like(d, float("nan"))
    ops.m_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, m_indices, out)
    assert torch.equal(out, d)


@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_grouped_masked_matches_float64(recipe):
    counts = [0, 1, 64, 37]
    a, sfa, b, sfb, masked_m = masked_inputs(counts, 64, 576, 576, recipe)
    d = ops.m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m, 32)
    assert d.shape == (4, 64, 576) and d.dtype == torch.bfloat16
    for g, rows in enumerate(counts):
        if rows:
            assert rel_err(d[g, :rows], float64_gemm(a[g, :rows], sfa[g, :rows], b[g], sfb[g])) < BF16_TOL
    out = torch.full_like(d, float("nan"))
    ops.m_grouped_fp8_gemm_nt_masked_out(a, sfa, b, sfb, masked_m, 32, out)
    assert torch.equal(out, d)


@pytest.mark.parametrize("shape,group", [((65, 576), 128), ((3, 300), 128), ((4, 100), 32)])
def test_per_token_cast(shape, group):
    x = torch.randn(shape) * 10
    q, sf = ops.per_token_cast_to_fp8(x, group)
    assert q.dtype == torch.float8_e4m3fn and sf.shape == (shape[0], ceil_div(shape[1], group))
    for i in range(shape[0]):
        for j in range(sf.shape[1]):
            block = x[i, j * group:(j + 1) * group]
            assert sf[i, j].item() == pytest.approx(block.abs().max().item() / 448, rel=1e-6)
            deq = q[i, j * group:(j + 1) * group].double() * sf[i, j].item()
            assert (deq - block.double()).abs().max() <= block.abs().max() * 2 ** -4


def test_per_block_cast():
    x = torch.randn(300, 200, dtype=torch.bfloat16)
    q, sf = ops.per_block_cast_to_fp8(x)
    assert sf.shape == (3, 2)
    for i, j in itertools.product(range(3), range(2)):
        block = x[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].double()
        assert sf[i, j].item() == pytest.approx(block.abs().max().item() / 448, rel=1e-6)
        assert q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].float().abs().max().item() == 448


@pytest.mark.parametrize("rows", [1, 65, 96])
def test_per_token_cast_mn_major_scales(rows):
    x = torch.randn(rows, 300, dtype=torch.bfloat16)
    q, sf = ops.per_token_cast_to_fp8(x)
    q_mn, sf_mn = ops.per_token_cast_to_fp8(x, mn_major_scales=True)
    assert torch.equal(q_mn.view(torch.uint8), q.view(torch.uint8)) and torch.equal(sf_mn, sf)
    assert sf_mn.stride() == (1, get_tma_aligned_size(rows, 4))
    assert torch.ops.deepgemm.get_mn_major_tma_aligned_tensor(sf_mn).stride() == sf_mn.stride()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cast_transpose_and_sum(dtype):
    x = (torch.randn(272, 300) * 10).to(dtype)
    *casts, sums = ops.per_token_cast_to_fp8_transpose_and_sum(x, True, False)
    for got, want in zip(casts, ops.per_token_cast_to_fp8_and_transpose(x, True, False)):
        assert torch.equal(got.view(torch.uint8) if got.dtype == torch.float8_e4m3fn else got,
                           want.view(torch.uint8) if want.dtype == torch.float8_e4m3fn else want)
        assert got.stride() == want.stride()
    exact = x.double().sum(0)
    assert sums.dtype == torch.float32 and sums.shape == (300,)
    assert (sums.double() - exact).abs().max() <= 1e-5 * x.double().abs().sum(0).max()


def test_cast_of_zeros_is_finite():
    q, sf = ops.per_token_cast_to_fp8(torch.zeros(2, 256))
    assert torch.equal(q.float(), torch.zeros(2, 256)) and (sf > 0).all()


@pytest.mark.parametrize("shape", [(65, 5), (4, 64, 2), (128, 3)])
def test_mn_major_tma_aligned_tensor(shape):
    sf = torch.randn(shape)
    out = ops.get_mn_major_tma_aligned_tensor(sf)
    assert torch.equal(out, sf)
    aligned = deepgemm_ops.get_tma_aligned_size(shape[-2], 4)
    assert out.stride()[-2:] == (1, aligned)
    assert out.untyped_storage().data_ptr() != sf.untyped_storage().data_ptr()


def test_helpers():
    assert [deepgemm_ops.get_tma_aligned_size(m, 4) for m in (1, 4, 5, 65, 4096)] == [4, 4, 8, 68, 4096]
    assert deepgemm_ops.get_tma_aligned_size(17, 1) == 32
    assert deepgemm_ops.get_mk_alignment_for_contiguous_layout() == 128
    deepgemm_ops.set_num_sms(100)
    assert deepgemm_ops.get_num_sms() == 100


@pytest.mark.parametrize("name,args", op_samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_op_runs_on_cpu(name, args):
    getattr(ops, name)(*args)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_value_poisons_only_its_128_group(bad):
    # Documented in the README (Edge cases): the group's scale becomes non-finite, the rest of the tensor is exact.
    x = torch.randn(3, 384)
    x[1, 130] = bad
    q, sf = ops.per_token_cast_to_fp8(x)
    dequant = (q.float().view(3, 3, 128) * sf.view(3, 3, 1)).view(3, 384)
    assert dequant[1, 128:256].isnan().all()
    finite = torch.ones(3, 384, dtype=torch.bool)
    finite[1, 128:256] = False
    assert dequant[finite].isfinite().all()


def test_a_block_longer_than_the_tensor_covers_it_without_padding():
    x = torch.randn(5, 300)
    for huge in (300, 301, 2**40):
        q, sf = ops.per_token_cast_to_fp8(x, huge)
        assert sf.shape == (5, 1)
        torch.testing.assert_close(sf, x.abs().amax(dim=1, keepdim=True) / 448)
        q, sf = ops.per_block_cast_to_fp8(x, huge)
        assert sf.shape == (1, 1)
        torch.testing.assert_close(sf, x.abs().amax().view(1, 1) / 448)
        assert torch.equal(q.float(), (x / sf).to(torch.float8_e4m3fn).float())


@pytest.mark.parametrize("layout", ["nt", "nn", "tn", "tt"])
def test_bf16_gemm_layouts_match_float64(layout):
    gen = torch.Generator().manual_seed(len(layout) + ord(layout[0]) + 2 * ord(layout[1]))
    m, n, k = 65, 96, 200
    a_math = torch.randn(m, k, generator=gen).bfloat16()
    b_math = torch.randn(k, n, generator=gen).bfloat16()
    a = a_math if layout[0] == "n" else a_math.t().contiguous()   # stored [M, K] or [K, M]
    b = b_math.t().contiguous() if layout[1] == "t" else b_math   # stored [N, K] or [K, N]
    c = torch.randn(m, n, generator=gen)
    want = a_math.double() @ b_math.double()
    got = getattr(ops, f"bf16_gemm_{layout}")(a, b, out_dtype=torch.float32)
    assert (got.double() - want).abs().max() < 1e-3 * want.abs().max()
    got_c = getattr(ops, f"bf16_gemm_{layout}")(a, b, c)
    assert got_c.dtype == torch.float32 and (got_c.double() - want - c.double()).abs().max() < 1e-3 * want.abs().max()
    assert getattr(ops, f"bf16_gemm_{layout}")(a, b).dtype == torch.bfloat16


def test_grouped_bf16_match_float64():
    gen = torch.Generator().manual_seed(9)
    b = torch.randn(3, 96, 128, generator=gen).bfloat16()
    a = torch.randn(256, 128, generator=gen).bfloat16()
    m_indices = torch.tensor([0] * 128 + [2] * 128, dtype=torch.int32)
    out = ops.m_grouped_bf16_gemm_nt_contiguous(a, b, m_indices)
    for g, rows in ((0, slice(0, 128)), (2, slice(128, 256))):
        want = a[rows].double() @ b[g].double().t()
        assert (out[rows].double() - want).abs().max() < 1e-2 * want.abs().max()
    ma = torch.randn(3, 64, 128, generator=gen).bfloat16()
    masked_m = torch.tensor([3, 0, 64], dtype=torch.int32)
    out = ops.m_grouped_bf16_gemm_nt_masked(ma, b, masked_m, 32)
    for g, rows in enumerate(masked_m.tolist()):
        if rows:
            want = ma[g, :rows].double() @ b[g].double().t()
            assert (out[g, :rows].double() - want).abs().max() < 1e-2 * want.abs().max()


def test_k_grouped_matches_float64_and_accumulates_in_place():
    from samples import k_grouped_inputs

    ks = [256, 0, 384, 128]
    a, sfa, b, sfb, ks_t = k_grouped_inputs(ks, 65, 96, seed=4)
    a64 = a.double() * sfa.double().repeat_interleave(128, 1)
    b64 = b.double() * sfb.double().repeat_interleave(128, 1)
    c = torch.randn(4, 65, 96)
    got = ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, ks_t, c)
    start = 0
    for g, size in enumerate(ks):
        want = a64[:, start:start + size] @ b64[:, start:start + size].t() + c[g].double()
        assert (got[g].double() - want).abs().max() < 1e-4 * want.abs().max(), g
        start += size
    acc = c.clone()
    ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, acc, acc)  # out is c: the gradient accumulates
    assert torch.equal(acc, got)
    with pytest.raises(ValueError, match="ks\\[1\\] must be a non-negative multiple of 128, got 64"):
        ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.tensor([256, 64, 320, 128], dtype=torch.int32))
    with pytest.raises(ValueError, match="ks must sum to the K extent of a and b \\(768\\), got 640"):
        ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.tensor([256, 0, 256, 128], dtype=torch.int32))
