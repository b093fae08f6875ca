"""Shape propagation on fake CUDA tensors: works on a CPU-only build, never touches a GPU."""

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from samples import op_samples, ops


def test_fake_cuda_outputs():
    samples = op_samples()
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        # Move every sample input to a fake "cuda" tensor of the same shape, dtype and strides.
        def to_cuda(x):
            if not isinstance(x, torch.Tensor):
                return x
            return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="cuda")

        got = {}
        for name, args in samples:
            out = getattr(ops, name)(*[to_cuda(mode.from_tensor(x)) if isinstance(x, torch.Tensor) else x
                                       for x in args])
            got.setdefault(name, out)
    expect = {
        "fp8_gemm_nt": ((65, 256), torch.bfloat16),
        "m_grouped_fp8_gemm_nt_contiguous": ((256, 128), torch.bfloat16),
        "m_grouped_fp8_gemm_nt_masked": ((3, 64, 128), torch.bfloat16),
        "get_mn_major_tma_aligned_tensor": ((65, 3), torch.float32),
    }
    for name, (shape, dtype) in expect.items():
        out = got[name]
        assert (tuple(out.shape), out.dtype, out.device.type) == (shape, dtype, "cuda"), name
    assert got["get_mn_major_tma_aligned_tensor"].stride() == (1, 68)
    q, sf = got["per_token_cast_to_fp8"]
    assert (q.dtype, tuple(sf.shape), sf.device.type) == (torch.float8_e4m3fn, (65, 3), "cuda")
    assert got["fp8_gemm_nt_out"] is None


def test_fake_c_makes_fp32():
    with FakeTensorMode():
        a = torch.empty(64, 256, dtype=torch.float8_e4m3fn, device="cuda")
        sfa = torch.empty(64, 2, device="cuda")
        b = torch.empty(512, 256, dtype=torch.float8_e4m3fn, device="cuda")
        sfb = torch.empty(512, 2, device="cuda")
        d = ops.fp8_gemm_nt(a, sfa, b, sfb, torch.empty(64, 512, device="cuda"))
        assert (tuple(d.shape), d.dtype, d.device.type) == ((64, 512), torch.float32, "cuda")
