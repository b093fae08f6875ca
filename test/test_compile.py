"""torch.compile(fullgraph=True, dynamic=True) of a small FP8 MLP built on the ops."""

import os
import tempfile
from unittest import mock

import torch
import torch._dynamo.testing
from torch._dynamo.utils import counters

from samples import masked_inputs, ops, quantized_b


class Fp8Mlp(torch.nn.Module):
    def __init__(self, hidden=256, inner=384):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        w1, s1 = quantized_b(inner, hidden, gen=gen)
        w2, s2 = quantized_b(hidden, inner, "1x128", gen=gen)
        for name, t in dict(w1=w1, s1=s1, w2=w2, s2=s2).items():
            self.register_buffer(name, t)

    def forward(self, x):
        q, sf = ops.per_token_cast_to_fp8(x)
        h = torch.nn.functional.silu(ops.fp8_gemm_nt(q, sf, self.w1, self.s1))
        q, sf = ops.per_token_cast_to_fp8(h)
        return ops.fp8_gemm_nt(q, sf, self.w2, self.s2)


def test_compiled_mlp_matches_eager_without_recompiling():
    torch._dynamo.reset()
    model = Fp8Mlp()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for m in (3, 65, 300):
        x = torch.randn(m, 256, dtype=torch.bfloat16)
        got, want = compiled(x), model(x)
        assert got.shape == (m, 256) and got.dtype == torch.bfloat16
        # Inductor may fuse the casts differently; the FP8 rounding of the hidden layer allows rare 1-ulp flips.
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    assert counter.frame_count == 1


def test_decode_step_with_changing_expected_m_and_group_size_compiles_once():
    # expected_m, group_size and block_size are SymInt in the schemas: with Inductor, one graph serves every value
    # (as `int` each new value recompiled, and fullgraph failed at the 8th). A fresh Inductor cache directory: a stale
    # on-disk entry compiled while they were `int` carries a guard on the old value (that was the "Inductor still
    # guards" seen with SymInt).
    torch._dynamo.reset()
    counters.clear()

    def step(x, w, sw, masked_m, expected_m, group_size):
        q, sf = ops.per_token_cast_to_fp8(x.flatten(0, 1), group_size)
        a = q.view(x.shape)
        sfa = ops.per_token_cast_to_fp8(x.flatten(0, 1))[1].view(x.shape[0], x.shape[1], -1)
        return ops.m_grouped_fp8_gemm_nt_masked(a, sfa, w, sw, masked_m, expected_m), sf

    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}):
        compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=True)
        _, _, w, sw, _ = masked_inputs([1, 1], 64, 256, 128, seed=1)
        for i, expected_m in enumerate(range(1, 13)):
            m_max = 32 + 8 * i  # Mmax changes too
            x = torch.randn(2, m_max, 128)
            masked_m = torch.tensor([expected_m, m_max // 2], dtype=torch.int32)
            group_size = (16, 32, 64)[i % 3]  # K / group_size stays > 1: a size-1 dim would be specialised
            got, sf = compiled(x, w, sw, masked_m, expected_m, group_size)
            want, want_sf = step(x, w, sw, masked_m, expected_m, group_size)
            assert sf.shape == (2 * m_max, 128 // group_size)
            torch.testing.assert_close(sf, want_sf)
            for g, rows in enumerate(masked_m.tolist()):  # rows past masked_m are unspecified
                torch.testing.assert_close(got[g, :rows], want[g, :rows], rtol=2e-2, atol=2e-2)
    assert counter.frame_count == 1
    assert counters["stats"]["unique_graphs"] == 1
