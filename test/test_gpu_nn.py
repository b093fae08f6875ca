"""FP8Linear on the GPU (skipped without an SM90 device): values and gradients against float64 autograd, a compiled
training step (Inductor, fullgraph), a CUDA-graph-captured inference forward."""

import pytest
import torch
from conftest import requires_sm90
from test_nn import FP8_TOL, check_against_float64, linear_case, rel_err

from deepgemm_ops.nn import FP8Linear, fp8_linear

pytestmark = requires_sm90


@pytest.mark.parametrize("tokens,n_in,n_out", [(1000, 512, 1024), (7, 256, 128), (4096, 7168, 2048)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_values_and_gradients(tokens, n_in, n_out, dtype):
    check_against_float64(*linear_case(tokens, n_in, n_out, dtype=dtype, seed=tokens, device="cuda"))


def test_gpu_matches_the_cpu_reference_path():
    x, w, b, dy = linear_case(300, 256, 512, seed=4)
    outs = []
    for device in ("cpu", "cuda"):
        xs, ws, bs = (t.detach().to(device).requires_grad_() for t in (x, w, b))
        y = fp8_linear(xs, ws, bs)
        y.backward(dy.to(device))
        outs.append([t.detach().cpu().double() for t in (y, xs.grad, ws.grad, bs.grad)])
    for cpu, gpu in zip(*outs):
        assert rel_err(gpu, cpu) < 1e-2  # same FP8 operands; only the accumulation order differs


def test_compiled_training_step():
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = FP8Linear(512, 1024, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(layer, fullgraph=True)
    for step in range(3):
        x = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(256, 1024, device="cuda", dtype=torch.bfloat16)
        y = compiled(x)
        y.backward(dy)
        got = (y.detach(), x.grad, layer.weight.grad.clone())
        x.grad, layer.weight.grad, layer.bias.grad = None, None, None
        y_ref = layer(x)
        y_ref.backward(dy)
        for name, g, r in zip(("y", "dx", "dW"), got, (y_ref.detach(), x.grad, layer.weight.grad)):
            assert rel_err(g, r) < 1e-2, (step, name)
        layer.weight.grad = layer.bias.grad = None


def test_inference_forward_in_a_cuda_graph():
    torch.manual_seed(1)
    layer = FP8Linear(1024, 2048, device="cuda", dtype=torch.bfloat16).eval()
    x = torch.zeros(128, 1024, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        layer(x)  # kernels compiled and loaded, weight cast cached, outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            y = layer(x)
    torch.cuda.current_stream().wait_stream(stream)
    for seed in range(3):
        x.copy_(torch.randn(128, 1024, generator=torch.Generator().manual_seed(seed)).to("cuda", torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            assert torch.equal(y, layer(x))
            assert rel_err(y, torch.nn.functional.linear(x, layer.weight, layer.bias)) < FP8_TOL
