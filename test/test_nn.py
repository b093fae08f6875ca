"""FP8Linear / fp8_linear on the CPU reference path: values and gradients against float64 autograd within FP8 error
bounds, shapes and dtypes, the inference cache, torch.compile without graph breaks. (GPU: test_gpu_nn.py.)"""

import pytest
import torch
import torch.nn.functional as F

from deepgemm_ops.nn import FP8Linear, fp8_linear


def rel_err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def linear_case(tokens=200, n_in=256, n_out=384, dtype=torch.bfloat16, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n_in, generator=gen).to(device, dtype)
    w = (torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5).to(device, dtype)
    b = torch.randn(n_out, generator=gen).to(device, dtype)
    dy = torch.randn(tokens, n_out, generator=gen).to(device, dtype)
    return x, w, b, dy


# e4m3 keeps 3 mantissa bits: one value's relative rounding error is up to 2^-4; a sum of many such products (with
# independent errors) lands a few percent off in relative norm.
FP8_TOL = 0.06


def check_against_float64(x, w, b, dy, fn=fp8_linear):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    y = fn(x, w, b)
    y.backward(dy)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = F.linear(x64, w64, b64)
    y64.backward(dy.double())
    assert y.dtype == x.dtype and y.shape == y64.shape
    assert rel_err(y, y64) < FP8_TOL
    for got, want in ((x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        assert rel_err(got, want) < FP8_TOL, (got.shape, rel_err(got, want))
    assert x.grad.dtype == x.dtype and w.grad.dtype == w.dtype


@pytest.mark.parametrize("tokens", [200, 128, 7])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_values_and_gradients(tokens, dtype):
    check_against_float64(*linear_case(tokens, dtype=dtype, seed=tokens))


@pytest.mark.parametrize("tokens,saves_x", [(128, False), (200, True)])
def test_saved_activation_is_fp8_x_transposed(tokens, saves_x):
    # With a token count that is a multiple of 16 the forward casts x and xᵀ together and keeps FP8 xᵀ (half the
    # bytes of bf16 x) for the weight gradient; otherwise it keeps x, which the backward pads and casts.
    x, w, b, dy = linear_case(tokens)
    x, w = x.requires_grad_(), w.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fp8_linear(x, w)
    assert any(t.dtype == torch.float8_e4m3fn and t.shape == (256, tokens) for t in saved) != saves_x
    assert any(t.dtype == torch.bfloat16 and t.shape == x.shape for t in saved) == saves_x
    y.backward(dy)
    assert x.grad is not None and w.grad is not None


def test_leading_dims_and_no_bias():
    x, w, _, dy = linear_case(120, 128, 256)
    y = fp8_linear(x.view(3, 40, 128), w)
    assert y.shape == (3, 40, 256)
    assert torch.equal(y.view(120, 256), fp8_linear(x, w))


def test_module_from_linear_shares_parameters_and_caches_the_weight_cast():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128, dtype=torch.bfloat16)
    layer = FP8Linear.from_linear(linear)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert layer.state_dict().keys() == linear.state_dict().keys()
    x = torch.randn(64, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        first = layer(x)
        cached = layer._cache
        assert torch.equal(layer(x), first) and layer._cache is cached  # cast once
        linear.weight.mul_(2)  # a new weight version: cast again
        assert not torch.equal(layer(x), first) and layer._cache is not cached
    assert rel_err(layer(x), linear(x)) < FP8_TOL
    check_against_float64(x, layer.weight, layer.bias, torch.randn(64, 128, dtype=torch.bfloat16),
                          fn=lambda x, w, b: fp8_linear(x, w, b))


def test_feature_and_shape_errors():
    with pytest.raises(ValueError, match="multiples of 16"):
        FP8Linear(100, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        FP8Linear.from_linear(torch.nn.Linear(64, 30))
    with pytest.raises(ValueError, match=r"x must have 128 features"):
        fp8_linear(torch.randn(4, 64), torch.randn(32, 128))


def test_compile_forward_and_backward_without_graph_breaks():
    torch._dynamo.reset()
    layer = FP8Linear(128, 256, dtype=torch.bfloat16)
    x, _, _, dy = linear_case(64, 128, 256)

    x.requires_grad_()
    eager_y = layer(x)
    eager_y.backward(dy)
    eager_grads = (x.grad.clone(), layer.weight.grad.clone())
    x.grad = layer.weight.grad = layer.bias.grad = None
    # fullgraph: the forward traces without a break; AOTAutograd compiles the backward graph from it.
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y.backward(dy)
    assert torch.equal(y, eager_y)
    assert torch.equal(x.grad, eager_grads[0]) and torch.equal(layer.weight.grad, eager_grads[1])


def test_transposed_weight_cast_is_the_forward_cast_transposed():
    from deepgemm_ops.nn import _quantize_weight

    w = torch.randn(272, 400, dtype=torch.bfloat16) * 3  # partial 128-blocks both ways
    wq, ws, wq_t, ws_t = _quantize_weight(w, with_transpose=True)
    assert all(torch.equal(a.view(torch.uint8), b.view(torch.uint8))
               for a, b in zip((wq, ws), torch.ops.deepgemm.per_block_cast_to_fp8(w)))
    assert torch.equal(wq_t.view(torch.uint8), wq.view(torch.uint8).t()) and torch.equal(ws_t, ws.t())
    assert wq_t.is_contiguous() and ws_t.is_contiguous()
    assert _quantize_weight(w, with_transpose=False)[2:] == (None, None)



def test_example_trains_saves_and_replots_its_curves(tmp_path):
    """examples/train_fp8_mlp.py on the CPU reference path: two short runs from the same start, curves saved with
    --json and drawn again from that file with --curves (the README's plot comes from such a file)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "train_fp8_mlp.py"
    spec = importlib.util.spec_from_file_location("train_fp8_mlp", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    saved = tmp_path / "losses.json"
    assert example.main(["--steps", "2", "--tokens", "32", "--device", "cpu", "--json", str(saved)]) == 0
    curves = json.loads(saved.read_text())
    assert sorted(curves) == ["bf16", "fp8"] and all(len(c) == 2 for c in curves.values())
    assert curves["bf16"][0] == pytest.approx(curves["fp8"][0], rel=0.01)  # same start, FP8 error only
    pytest.importorskip("matplotlib")
    plot = tmp_path / "losses.png"
    assert example.main(["--curves", str(saved), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
