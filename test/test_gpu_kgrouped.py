"""The k-grouped FP8 GEMM (weight gradient) on the GPU against the CPU reference (skipped without an SM90 device).

Outputs are poisoned with NaN before every run and every element is checked; ks lives on the device and is read by
the kernel, so a CUDA graph replays with new group sizes.
"""

import pytest
import torch
from conftest import requires_sm90

from samples import k_grouped_inputs, ops

pytestmark = requires_sm90


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def reference(a, sfa, b, sfb, ks, c=None):
    cpu = [t.cpu() for t in (a, sfa, b, sfb, ks)]
    return ops.k_grouped_fp8_gemm_nt_contiguous(*cpu, None if c is None else c.cpu()).cuda()


def random_c(groups, m, n, seed=1):
    return torch.randn(groups, m, n, generator=torch.Generator().manual_seed(seed)).cuda()


def assert_matches(out, ref):
    assert not out.isnan().any(), "unwritten output elements"
    assert rel_err(out, ref) < 1e-3
    for g in range(out.shape[0]):  # every group on its own: an empty group's D[g] is C[g] (or zeros) exactly
        assert rel_err(out[g], ref[g]) < 1e-3 or torch.equal(out[g], ref[g]), g


# Uneven ks with empty groups (first, middle, last), odd M and N, single-group and many-group cases.
CASES = [
    ([256, 0, 384, 128], 65, 96),
    ([0, 128, 0], 1, 8),
    ([1024, 0, 2048, 512, 128], 300, 2112),
    ([4096, 2048, 3072, 1024], 257, 576),
    ([128] * 16, 128, 4096),
    ([8192], 4096, 7168),
]


@pytest.mark.parametrize("ks,m,n", CASES)
@pytest.mark.parametrize("with_c", [False, True])
def test_matches_reference(ks, m, n, with_c):
    a, sfa, b, sfb, ks_t = k_grouped_inputs(ks, m, n, device="cuda", seed=m + n)
    c = random_c(len(ks), m, n) if with_c else None
    out = torch.full((len(ks), m, n), float("nan"), device="cuda")
    ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, out, c)
    ref = reference(a, sfa, b, sfb, ks_t, c)
    assert_matches(out, ref)
    assert torch.equal(ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, ks_t, c), out)  # the functional op


# 256-row tiles (two 64-row waves per math warpgroup), forced: a partial m-block, N tails, empty groups (first, middle,
# last), C distinct from D and in place.
@pytest.mark.parametrize("ks,m,n,tile", [([1024, 0, 2048, 512, 128], 300, 2112, (256, 112)),
                                         ([0, 4096, 2048, 1024, 0], 513, 576, (256, 128)),
                                         ([256, 0, 384, 128], 65, 96, (256, 96))])
def test_256_row_tiles(force_tile, ks, m, n, tile):
    force_tile(*tile, 1)
    a, sfa, b, sfb, ks_t = k_grouped_inputs(ks, m, n, device="cuda", seed=m + n)
    c = random_c(len(ks), m, n)
    out = torch.full((len(ks), m, n), float("nan"), device="cuda")
    ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, out, c)
    ref = reference(a, sfa, b, sfb, ks_t, c)
    assert_matches(out, ref)
    ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, c, c)  # in place: the TMA reduce-add
    assert_matches(c, ref)


def test_accumulates_into_c_in_place():
    ks = [512, 0, 1024, 256]
    a, sfa, b, sfb, ks_t = k_grouped_inputs(ks, 200, 160, device="cuda", seed=3)
    grad = random_c(len(ks), 200, 160)
    expected = reference(a, sfa, b, sfb, ks_t, grad)
    for _ in range(2):  # the second call runs through the installed plan
        before = grad.clone()
        ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, grad, grad)
        assert rel_err(grad, expected) < 1e-3
        expected = reference(a, sfa, b, sfb, ks_t, grad)
        assert torch.equal(grad[1], before[1])  # the empty group keeps its gradient


def test_outputs_and_addends_in_other_layouts():
    ks = [256, 384]
    a, sfa, b, sfb, ks_t = k_grouped_inputs(ks, 96, 80, device="cuda", seed=5)
    c = random_c(2, 96, 80)
    ref = reference(a, sfa, b, sfb, ks_t, c)
    out = torch.full((96, 2, 80), float("nan"), device="cuda").permute(1, 0, 2)  # groups not back to back
    ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, out, c.permute(1, 0, 2).contiguous().permute(1, 0, 2))
    assert_matches(out, ref)
    sfa_mn = sfa.t().contiguous().t()  # scales already MN-major: read in place
    assert torch.equal(ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa_mn, b, sfb, ks_t, c), out.contiguous())


def test_cuda_graph_replay_with_new_group_sizes():
    ks_list = [[512, 256, 0, 256], [0, 1024, 0, 0], [256, 256, 256, 256], [128, 0, 640, 256]]
    a, sfa, b, sfb, ks_t = k_grouped_inputs(ks_list[0], 130, 200, device="cuda", seed=7)
    c = random_c(4, 130, 200)
    out = torch.empty(4, 130, 200, device="cuda")
    ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, out, c)  # plans and loads before the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.k_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, ks_t, out, c)
    for ks in ks_list:
        ks_t.copy_(torch.tensor(ks, dtype=torch.int32))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert_matches(out, reference(a, sfa, b, sfb, ks_t, c))


def test_every_group_empty():
    a, sfa, b, sfb, ks_t = k_grouped_inputs([0, 0, 0], 33, 48, device="cuda")
    c = random_c(3, 33, 48)
    assert torch.equal(ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, ks_t, c), c)
    assert torch.equal(ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, ks_t), torch.zeros_like(c))


def test_corrupt_ks_stays_in_bounds():
    # ks values are the caller's duty on the GPU; wrong ones give wrong sums but never a bad access or a hang: the
    # kernel clamps every group to the k-blocks that are left.
    a, sfa, b, sfb, ks_t = k_grouped_inputs([256, 256], 64, 64, device="cuda")
    c = random_c(3, 64, 64)
    bad = torch.tensor([2**30, -128, 384], dtype=torch.int32, device="cuda")
    out = ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, bad, c)
    torch.cuda.synchronize()
    assert not out.isnan().any()
    full = reference(a, sfa, b, sfb, torch.tensor([512, 0, 0], dtype=torch.int32), c)
    assert rel_err(out, full) < 1e-3  # group 0 took every k-block, the others none


def test_gpu_rules():
    a, sfa, b, sfb, ks_t = k_grouped_inputs([128, 128], 64, 64, device="cuda")
    with pytest.raises(ValueError, match=r"sum\(K\) \(the K extent of a and b\) must be a multiple of 128"):
        ops.k_grouped_fp8_gemm_nt_contiguous(a[:, :240], sfa, b[:, :240], sfb, ks_t)
    with pytest.raises(ValueError, match="ks must be int32"):
        ops.k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, ks_t.long())
