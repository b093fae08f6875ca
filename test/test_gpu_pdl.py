"""Programmatic dependent launch on the GPU (skipped without an SM90 device): a chain of kernels that each read the
previous one's output gives the same bits with PDL as without, eagerly and replayed from a CUDA graph."""

import pytest
import torch
from conftest import requires_sm90

import deepgemm_ops
from deepgemm_ops.nn import FP8Linear

pytestmark = requires_sm90
ops = torch.ops.deepgemm


@pytest.fixture
def restore_pdl():
    before = deepgemm_ops.get_pdl()
    yield
    deepgemm_ops.set_pdl(before)


def _chain(x: torch.Tensor, w: torch.Tensor, steps: int) -> torch.Tensor:
    """Cast, GEMM, cast of the GEMM's output, GEMM, ...: every kernel reads what the one before it wrote."""
    wq, wsf = ops.per_block_cast_to_fp8(w)
    for _ in range(steps):
        q, sf = ops.per_token_cast_to_fp8(x)
        x = ops.fp8_gemm_nt(q, sf, wq, wsf) / 32  # a torch kernel in between, as in a model; keeps |x| ~ 1
    return x


def test_dependent_chain_same_bits_with_and_without_pdl(restore_pdl):
    gen = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(1024, 1024, device="cuda", generator=gen)
    results = {}
    for pdl in (False, True, False, True):
        deepgemm_ops.set_pdl(pdl)
        x = torch.randn(2048, 1024, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
        results.setdefault(pdl, []).append(_chain(x.bfloat16(), w, steps=20))
    for a, b in zip(results[False], results[True]):
        assert torch.isfinite(a).all() and torch.equal(a, b)


def test_training_step_same_bits_with_and_without_pdl(restore_pdl):
    torch.manual_seed(2)
    layer = FP8Linear(1024, 2048, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(512, 2048, device="cuda", dtype=torch.bfloat16)
    got = {}
    for pdl in (False, True):
        deepgemm_ops.set_pdl(pdl)
        x.grad, layer.weight.grad, layer.bias.grad = None, None, None
        y = layer(x)
        y.backward(dy)
        got[pdl] = (y.detach(), x.grad, layer.weight.grad, layer.bias.grad)
    for a, b in zip(got[False], got[True]):
        assert torch.equal(a, b)


def test_chain_replayed_from_a_cuda_graph_with_pdl(restore_pdl):
    deepgemm_ops.set_pdl(True)
    gen = torch.Generator(device="cuda").manual_seed(3)
    w = torch.randn(1024, 1024, device="cuda", generator=gen)
    x = torch.zeros(2048, 1024, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _chain(x, w, steps=1)  # kernels compiled and loaded outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            y = _chain(x, w, steps=8)
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):
        x.copy_(torch.randn(2048, 1024, device="cuda", generator=gen))
        graph.replay()
        torch.cuda.synchronize()
        deepgemm_ops.set_pdl(False)
        expected = _chain(x, w, steps=8)
        deepgemm_ops.set_pdl(True)
        assert torch.isfinite(y).all() and torch.equal(y, expected)
