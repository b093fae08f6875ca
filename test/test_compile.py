"""torch.compile(fullgraph=True, dynamic=True) of a small FP8 MLP built on the ops."""

import torch
import torch._dynamo.testing

from samples import quantized_b, ops


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
