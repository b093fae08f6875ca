"""deepgemm_ops.compat, DeepGEMM's API on our ops (CPU: the reference path; DeepGEMM's own test scripts run against it
on the GPU, see the README)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import requires_sm90

import deepgemm_ops.compat as deep_gemm
from samples import contiguous_inputs, gemm_inputs, masked_inputs, ops


def test_fp8_gemm_nt_writes_d_and_accumulates_into_c():
    a, sfa, b, sfb, c = gemm_inputs(65, 256, 384, with_c=True)
    d = torch.empty(65, 256, dtype=torch.bfloat16)
    assert deep_gemm.fp8_gemm_nt((a, sfa), (b, sfb), d) is None
    assert torch.equal(d, ops.fp8_gemm_nt(a, sfa, b, sfb))
    acc = c.clone()
    deep_gemm.fp8_gemm_nt((a, sfa), (b, sfb), acc, c=acc, recipe=(1, 128, 128), compiled_dims="nk")
    assert torch.equal(acc, ops.fp8_gemm_nt(a, sfa, b, sfb, c))


def test_grouped_entry_points():
    a, sfa, b, sfb, m_indices = contiguous_inputs([128, 0, 256], 256, 384)
    d = torch.empty(a.shape[0], 256, dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous((a, sfa), (b, sfb), d, m_indices)
    assert torch.equal(d, ops.m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices))
    a, sfa, b, sfb, masked_m = masked_inputs([5, 64], 64, 256, 384)
    d = torch.zeros(2, 64, 256, dtype=torch.bfloat16)
    deep_gemm.fp8_m_grouped_gemm_nt_masked((a, sfa), (b, sfb), d, masked_m, 32)  # the legacy alias
    assert torch.equal(d, ops.m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m, 32))


def test_what_sm90_rejects_and_what_is_not_here_yet():
    a, sfa, b, sfb, _ = gemm_inputs(64, 256, 256)
    d = torch.empty(64, 256, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="K-major"):
        deep_gemm.fp8_gemm_nn((a, sfa), (b.t(), sfb), d)
    with pytest.raises(RuntimeError, match="UE8M0"):
        deep_gemm.fp8_gemm_nt((a, sfa), (b, sfb.view(torch.int32)), d)
    with pytest.raises(ValueError, match=r"recipe \(1, 1, 128\) needs sfb with 256 rows"):
        deep_gemm.fp8_gemm_nt((a, sfa), (b, sfb), d, recipe=(1, 1, 128))
    with pytest.raises(ValueError, match="must be a \\(tensor, scale factors\\) pair"):
        deep_gemm.fp8_gemm_nt(a, (b, sfb), d)


def test_bf16_calls_route_to_the_bf16_ops():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(64, 128, generator=gen).bfloat16(), torch.randn(96, 128, generator=gen).bfloat16()
    d = torch.empty(64, 96, dtype=torch.bfloat16)
    deep_gemm.bf16_gemm_nt(a, b, d)
    assert torch.equal(d, ops.bf16_gemm_nt(a, b))
    d32, c = torch.empty(64, 96), torch.randn(64, 96, generator=gen)
    deep_gemm.bf16_gemm_nn(a, b.t().contiguous(), d32, c=c)
    assert torch.equal(d32, ops.bf16_gemm_nn(a, b.t().contiguous(), c))
    with pytest.raises(ValueError, match="compiled_dims"):
        deep_gemm.bf16_gemm_tt(a.t().contiguous(), b, d, compiled_dims="x")


def test_k_grouped_takes_deep_gemm_s_transposed_operands():
    gen = torch.Generator().manual_seed(8)
    ks = [256, 0, 128]
    a_t, b_t = torch.randn(384, 64, generator=gen), torch.randn(384, 96, generator=gen)  # [ΣK, M], [ΣK, N]
    a = deep_gemm.per_channel_cast_to_fp8(a_t, use_ue8m0=False)
    b = deep_gemm.per_channel_cast_to_fp8(b_t, use_ue8m0=False)
    c = torch.randn(3, 64, 96, generator=gen)
    d = c.clone()
    deep_gemm.k_grouped_fp8_gemm_tn_contiguous(a, b, d, ks, torch.tensor(ks, dtype=torch.int32), c=d)
    start = 0
    for g, size in enumerate(ks):
        want = c[g] + a_t[start:start + size].t() @ b_t[start:start + size]
        assert deep_gemm.testing.calc_diff(d[g], want) < 1e-3 if size else torch.equal(d[g], c[g])
        start += size
    with pytest.raises(ValueError, match="recipe must be"):
        deep_gemm.k_grouped_fp8_gemm_tn_contiguous(a, b, d, ks, torch.tensor(ks, dtype=torch.int32),
                                                   recipe=(1, 128, 128))


def test_utils_casts():
    x = torch.randn(256, 384, dtype=torch.bfloat16)
    q, sf = deep_gemm.per_token_cast_to_fp8(x, use_ue8m0=False)
    want = ops.per_token_cast_to_fp8(x)
    assert torch.equal(q.view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(sf, want[1])
    q, sf = deep_gemm.per_token_cast_to_fp8(x, use_ue8m0=True)
    assert torch.equal(sf, torch.exp2(torch.log2(sf).round()))  # powers of two
    assert (sf >= want[1]).all() and ((q.float() * sf.repeat_interleave(128, 1) - x.float()).abs()
                                      <= x.float().abs().amax() / 8).all()
    q, sf = deep_gemm.per_channel_cast_to_fp8(x, use_ue8m0=False)
    assert q.shape == (256, 384) and sf.shape == (2, 384) and q.is_contiguous()
    want = ops.per_token_cast_to_fp8(x.t().contiguous())
    assert torch.equal(q.t().contiguous().view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(sf.t(), want[1])
    q, sf = deep_gemm.per_block_cast_to_fp8(x, use_ue8m0=False)
    assert torch.equal(sf, ops.per_block_cast_to_fp8(x)[1])
    q, sf = deep_gemm.per_custom_dims_cast_to_fp8(x, (0,), use_ue8m0=False)
    assert sf.shape == (256,) and torch.allclose(sf, x.float().abs().amax(1) / 448)
    with pytest.raises(ValueError, match="multiple of 128"):
        deep_gemm.per_token_cast_to_fp8(torch.randn(4, 100), use_ue8m0=False)


def test_layout_helpers():
    sf = torch.exp2(torch.randint(-20, 5, (3, 130, 7)).float())
    packed = deep_gemm.get_mn_major_tma_aligned_packed_ue8m0_tensor(sf)
    assert packed.dtype == torch.int32 and packed.shape == (3, 130, 2) and packed.stride() == (2 * 132, 1, 132)
    exponents = (torch.log2(sf).round() + 127).to(torch.int64)  # the biased exponent of each power of two
    for kk in range(7):
        byte = (packed[..., kk // 4].to(torch.int64) >> (8 * (kk % 4))) & 0xFF
        assert torch.equal(byte, exponents[..., kk])
    sfa = torch.rand(96, 5)
    t = deep_gemm.transform_sf_into_required_layout(sfa, 96, 640, (1, 128, 128), is_sfa=True)
    assert torch.equal(t, sfa) and t.stride() == (1, 96)
    sfb = torch.rand(2, 5)
    assert deep_gemm.transform_sf_into_required_layout(sfb, 256, 640, (1, 128, 128)) is not None
    with pytest.raises(ValueError, match="sf must be float32"):
        deep_gemm.transform_sf_into_required_layout(sfb, 512, 640, (1, 128, 128))
    assert deep_gemm.get_tma_aligned_size(130, 4) == 132
    assert deep_gemm.get_m_alignment_for_contiguous_layout() == 128


def test_k_grouped_packed_ue8m0_layout():
    # Per-channel scales of a k-grouped operand: each group's k-blocks packed four per int32 (byte j of word r is
    # k-block 4r + j of the group), ceil(k / 512) rows per group, an empty group contributing none.
    ks = [384, 0, 1152, 512]
    sf = torch.exp2(torch.randint(-20, 5, (sum(ks) // 128, 70)).float())
    packed = deep_gemm.get_k_grouped_mn_major_tma_aligned_packed_ue8m0_tensor(sf, torch.tensor(ks), ks)
    assert packed.dtype == torch.int32 and packed.shape == (1 + 0 + 3 + 1, 70)
    exponents = (torch.log2(sf).round() + 127).to(torch.int64)
    row, kb0 = 0, 0
    for k in ks:
        for kb in range(k // 128):
            byte = (packed[row + kb // 4].to(torch.int64) >> (8 * (kb % 4))) & 0xFF
            assert torch.equal(byte, exponents[kb0 + kb])
        if k % 512:  # the last word's unused bytes are zero
            assert torch.equal(packed[row + k // 512] >> (8 * (k // 128 % 4)), torch.zeros(70, dtype=torch.int32))
        row, kb0 = row + (k + 511) // 512, kb0 + k // 128
    with pytest.raises(ValueError, match="ks must be non-negative multiples of 128"):
        deep_gemm.get_k_grouped_mn_major_tma_aligned_packed_ue8m0_tensor(sf, torch.tensor(ks), [384, 0, 1152, 500])


def test_testing_helpers():
    x = torch.randn(100)
    assert deep_gemm.testing.calc_diff(x, x).abs() < 1e-12 and deep_gemm.testing.calc_diff(x, -x) == 2
    assert deep_gemm.testing.count_bytes(x, (x.half(), None), [x]) == 400 + 200 + 400


def test_tc_util_and_num_sms():
    deep_gemm.set_tc_util(70)
    assert deep_gemm.get_tc_util() == 70
    with pytest.raises(ValueError, match="tc_util"):
        deep_gemm.set_tc_util(0)
    deep_gemm.set_tc_util(100)


def test_install_as_deep_gemm():
    code = ("import deepgemm_ops.compat as c; c.install_as_deep_gemm(); import deep_gemm; "
            "from deep_gemm.utils import per_token_cast_to_fp8; from deep_gemm.testing import calc_diff; "
            "assert deep_gemm is c and per_token_cast_to_fp8 is c.utils.per_token_cast_to_fp8; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


@requires_sm90
def test_bench_kineto_times_the_whole_call_when_no_kernel_has_deepgemms_name():
    sf = torch.rand(256, 56, device="cuda")
    with pytest.warns(UserWarning, match="no kernel of this library is named like DeepGEMM's 'transpose'"):
        t = deep_gemm.testing.bench_kineto(lambda: deep_gemm.get_mn_major_tma_aligned_tensor(sf), "transpose",
                                           num_tests=3)
    assert 0 < t < 1
