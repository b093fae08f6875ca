"""The fused GPU casts against the CPU reference, bit for bit (skipped without an SM90 device).

NaN bytes are compared as NaN (their sign bit is not part of the contract); every other byte and every scale must be
identical. The composite path (layouts the fused kernels do not read) is checked the same way.
"""

import pytest
import torch
from conftest import requires_sm90

from deepgemm_ops import _layout
from samples import ops

pytestmark = requires_sm90

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def assert_same_cast(got, want):
    (q, sf), (q_ref, sf_ref) = got, want
    assert q.dtype == torch.float8_e4m3fn and q.shape == q_ref.shape and sf.shape == sf_ref.shape
    q, q_ref = q.cpu().view(torch.uint8), q_ref.cpu().view(torch.uint8)
    nan, nan_ref = (q & 0x7F) == 0x7F, (q_ref & 0x7F) == 0x7F
    assert torch.equal(nan, nan_ref), "NaN positions differ"
    mismatch = (q != q_ref) & ~nan
    assert not mismatch.any(), f"{int(mismatch.sum())} bytes differ, first at {mismatch.nonzero()[0].tolist()}"
    torch.testing.assert_close(sf.cpu(), sf_ref.cpu(), rtol=0, atol=0, equal_nan=True)


def random_x(rows, cols, dtype, seed=0, scale_rows=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen)
    if scale_rows:  # magnitudes over many binades, so that scales and subnormal e4m3 values are exercised
        x = x * torch.exp2(torch.randint(-20, 20, (rows, 1), generator=gen).float())
    return x.to(dtype)


def check_per_token(x, **kw):
    got = ops.per_token_cast_to_fp8(x, **kw)
    assert_same_cast(got, ops.per_token_cast_to_fp8(x.cpu(), **kw))
    return got


def check_per_block(x, **kw):
    got = ops.per_block_cast_to_fp8(x, **kw)
    assert_same_cast(got, ops.per_block_cast_to_fp8(x.cpu(), **kw))
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(4096, 7168), (1, 128), (65, 200), (300, 8), (129, 1000), (2, 16384)])
def test_per_token_cast(rows, cols, dtype):
    check_per_token(random_x(rows, cols, dtype, seed=rows + cols).cuda())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(7168, 16384), (1, 8), (130, 200), (257, 1000), (128, 128)])
def test_per_block_cast(rows, cols, dtype):
    check_per_block(random_x(rows, cols, dtype, seed=rows * cols).cuda())


# rows % 16 == 0 runs the fused kernel (q_t rows are 16-byte vectors of x's rows), the others the composite.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(7168, 4096), (272, 400), (16, 8), (128, 128), (130, 200), (1, 8)])
def test_per_block_cast_and_transpose(rows, cols, dtype):
    x = random_x(rows, cols, dtype, seed=rows + cols).cuda()
    q, sf, q_t, sf_t = ops.per_block_cast_to_fp8_and_transpose(x)
    q_ref, sf_ref, q_t_ref, sf_t_ref = ops.per_block_cast_to_fp8_and_transpose(x.cpu())
    assert_same_cast((q, sf), (q_ref, sf_ref))
    assert_same_cast((q_t, sf_t), (q_t_ref, sf_t_ref))
    assert q_t.is_contiguous() and sf_t.is_contiguous()


# rows % 16 == 0 runs the fused kernel, the others the two composite casts; both scale layouts of each output.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(8192, 7168), (272, 400), (16, 8), (128, 128), (130, 200), (1, 8)])
@pytest.mark.parametrize("mn_major", [(False, False), (True, False), (True, True)])
def test_per_token_cast_and_transpose(rows, cols, dtype, mn_major):
    x = random_x(rows, cols, dtype, seed=3 * rows + cols).cuda()
    q, sf, q_t, sf_t = ops.per_token_cast_to_fp8_and_transpose(x, *mn_major)
    q_ref, sf_ref, q_t_ref, sf_t_ref = ops.per_token_cast_to_fp8_and_transpose(x.cpu(), *mn_major)
    assert_same_cast((q, sf), (q_ref, sf_ref))
    assert_same_cast((q_t, sf_t), (q_t_ref, sf_t_ref))
    assert q_t.is_contiguous() and sf.stride() == sf_ref.stride() and sf_t.stride() == sf_t_ref.stride()


# The fused kernel (rows % 16 == 0) and the composite: the casts as without the sums, the sums against float64.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(8192, 4096), (272, 400), (130, 200), (0, 256)])
def test_per_token_cast_transpose_and_sum(rows, cols, dtype):
    x = random_x(rows, cols, dtype, seed=5 * rows + cols, scale_rows=False).cuda()  # finite column sums in fp16
    *casts, sums = ops.per_token_cast_to_fp8_transpose_and_sum(x, True, True)
    want = ops.per_token_cast_to_fp8_and_transpose(x, True, True)
    assert_same_cast(casts[:2], want[:2])
    assert_same_cast(casts[2:], want[2:])
    exact = x.double().sum(0)
    assert sums.dtype == torch.float32 and sums.shape == (cols,)
    assert (sums.double() - exact).abs().max().item() <= 1e-5 * max(x.double().abs().sum(0).max().item(), 1.0)
    # Deterministic: a fixed summation order, no atomics.
    assert torch.equal(ops.per_token_cast_to_fp8_transpose_and_sum(x, True, True)[4], sums)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,cols", [(4096, 7168), (200, 72), (128, 8), (1, 4096), (333, 1000)])
def test_per_token_cast_of_a_transpose(tokens, cols, dtype):
    """x.t() of a row-major [tokens, cols] tensor: the transposing kernel (the weight-gradient operand layout)."""
    x = random_x(tokens, cols, dtype, seed=tokens + 3 * cols).cuda()
    q, sf = check_per_token(x.t())
    assert q.is_contiguous() and q.shape == (cols, tokens)
    q_mn, sf_mn = check_per_token(x.t(), mn_major_scales=True)
    assert torch.equal(q_mn.view(torch.uint8), q.view(torch.uint8)) and _layout.is_mn_major_tma_aligned(sf_mn)


def test_per_token_cast_and_transpose_with_inf_nan():
    # An Inf and a NaN: their row and column groups get non-finite scales (per-column dividers in the kernel), the
    # rest of the block is cast as usual.
    x = random_x(256, 256, torch.bfloat16, seed=11, scale_rows=False)
    x[3, 5] = float("inf")
    x[130, 6] = float("nan")
    got = ops.per_token_cast_to_fp8_and_transpose(x.cuda())
    want = ops.per_token_cast_to_fp8_and_transpose(x)
    assert_same_cast(got[:2], want[:2])
    assert_same_cast(got[2:], want[2:])
    assert got[3][5, 0].isinf() and got[3][6, 1].isnan() and got[1][3, 0].isinf() and got[1][130, 0].isnan()


def test_transposed_cast_with_inf_nan():
    x = random_x(256, 64, torch.bfloat16, seed=9, scale_rows=False)
    x[3, 5] = float("inf")
    x[130, 6] = float("nan")
    x[:, 7] = 0
    x[::2, 8] = -0.0
    q, sf = check_per_token(x.cuda().t())
    assert sf[5, 0].isinf() and sf[6, 1].isnan() and sf[7].eq(sf[7, 0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_mn_major_scales(dtype):
    x = random_x(97, 7168, dtype).cuda()
    q, sf = check_per_token(x, mn_major_scales=True)
    assert _layout.is_mn_major_tma_aligned(sf) and sf.stride() == (1, 100)
    assert torch.equal(q.view(torch.uint8), ops.per_token_cast_to_fp8(x)[0].view(torch.uint8))


def test_strided_and_offset_inputs():
    buf = random_x(70, 1024, torch.bfloat16, seed=3).cuda()
    check_per_token(buf[:, 64:64 + 512])  # fused: 16-byte aligned rows
    check_per_block(buf[3:, 8:8 + 768])
    check_per_token(buf[:, 1:1 + 512])    # composite: rows not 16-byte aligned
    check_per_token(buf.t())              # composite: K not contiguous
    check_per_token(random_x(5, 100, torch.bfloat16).cuda())  # composite: K % 8 != 0
    check_per_token(buf[:1].expand(6, -1))  # broadcast rows are read, not written


def test_other_group_sizes_take_the_composite():
    x = random_x(33, 1024, torch.bfloat16).cuda()
    check_per_token(x, group_size=64)
    check_per_block(x, block_size=32)


def test_inf_nan_and_zeros():
    x = random_x(256, 512, torch.bfloat16, seed=5, scale_rows=False)
    x[0, 3] = float("inf")
    x[1, 130] = float("-inf")
    x[2, 260] = float("nan")
    x[3] = 0
    x[4, ::2] = -0.0  # keeps its sign: e4m3 0x80
    x[200:, :] = 0
    x[100, 5] = torch.finfo(torch.bfloat16).tiny
    x = x.cuda()
    q, sf = check_per_token(x)
    floor_scale = torch.tensor(1e-4, device="cuda") / 448
    assert sf[0, 0].isinf() and sf[2, 2].isnan() and sf[3].eq(floor_scale).all()
    assert q[0, :128].float().isnan().sum() == 1 and q[0, :128].float().nan_to_num().eq(0).all()
    q, sf = check_per_block(x)
    assert sf[0, 0].isinf() and sf[0, 2].isnan() and sf[1].isfinite().all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_magnitudes(dtype):
    """Largest and smallest finite values of each input type, subnormals, mixed in one group: the division's
    operand ranges at both ends."""
    info = torch.finfo(dtype)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(64, 1024, generator=gen, dtype=torch.float64)
    exponents = torch.randint(-160, 130, (64, 1024), generator=gen).double()
    x = (x * torch.exp2(exponents)).clamp(-info.max, info.max)
    x[:, 0] = info.max
    x[:, 1] = -info.tiny
    x[:, 2] = info.smallest_normal / 8  # subnormal (flushed to zero when the type has none at that size)
    x = x.to(dtype)
    check_per_token(x.cuda())
    check_per_block(x.cuda())
    big = torch.full((4, 256), info.max, dtype=dtype)
    big[:, 1::3] = -info.max / 3
    check_per_token(big.cuda())


def test_zero_sizes():
    for shape in [(0, 256), (5, 0)]:
        x = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
        for kw in ({}, {"mn_major_scales": True}):
            assert_same_cast(ops.per_token_cast_to_fp8(x, **kw), ops.per_token_cast_to_fp8(x.cpu(), **kw))
        assert_same_cast(ops.per_block_cast_to_fp8(x), ops.per_block_cast_to_fp8(x.cpu()))


def test_non_default_stream_and_graph_replay():
    x = torch.zeros(256, 7168, dtype=torch.bfloat16, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.per_token_cast_to_fp8(x, mn_major_scales=True)  # loads the kernel outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            q, sf = ops.per_token_cast_to_fp8(x, mn_major_scales=True)
    torch.cuda.current_stream().wait_stream(stream)
    for seed in range(3):
        x.copy_(random_x(256, 7168, torch.bfloat16, seed=seed))
        graph.replay()
        torch.cuda.synchronize()
        assert_same_cast((q, sf), ops.per_token_cast_to_fp8(x.cpu(), mn_major_scales=True))


def test_gemm_of_kernel_ready_scales_launches_one_kernel():
    x = random_x(256, 1024, torch.bfloat16).cuda()
    b, sfb = ops.per_block_cast_to_fp8(random_x(512, 1024, torch.bfloat16, seed=1).cuda())
    q, sf = ops.per_token_cast_to_fp8(x, mn_major_scales=True)
    ops.fp8_gemm_nt(q, sf, b, sfb)  # compile + load
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        ops.fp8_gemm_nt(q, sf, b, sfb)
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 1 and kernels[0].startswith("dg_fp8_gemm"), kernels
