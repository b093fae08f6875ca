"""An FP8 linear layer with fine-grained scaling whose forward and backward run on this library's ops.

Forward: the activations are cast 1x128 (one scale per token and 128 input features, scales written in the layout the
GEMM reads), the weight 128x128, and ``fp8_gemm_nt`` computes ``y = x Wᵀ``. Backward: dgrad ``dx = dy W`` is
``fp8_gemm_nt`` of dy (cast 1x128 along the output features) with the transposed weight — 128x128 blocks transpose
exactly, so the FP8 weight cast from Wᵀ is the forward's transposed, bit for bit; wgrad ``dW = dyᵀ x`` is
``fp8_gemm_nt`` of dyᵀ and xᵀ, each cast 1x128 along the tokens, accumulated in fp32: on the GPU x and xᵀ come from
one read of x in the forward (``per_token_cast_to_fp8_and_transpose``), which saves FP8 xᵀ for the backward instead
of x, and dy and dyᵀ likewise in the backward, where the same read of dy also gives the bias gradient
(``per_token_cast_to_fp8_transpose_and_sum``); the bias itself is added in the forward GEMM's epilogue.
Every GEMM and cast is a ``torch.ops.deepgemm`` op, so the layer runs on the CPU (the reference path), traces under
``torch.compile`` and captures in CUDA graphs (inference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _layout
from ._constants import SCALE_BLOCK

_ops = torch.ops.deepgemm
# The GPU kernels read K in multiples of 16 (TMA rows): the features must be, and the tokens are padded to it for the
# weight gradient, whose reduction runs over them.
_FEATURE_MULTIPLE = 16


def _gemm_out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float32 else torch.bfloat16


def _gemm(a, sfa, b, sfb, dtype: torch.dtype, bias: Tensor | None = None) -> Tensor:
    """``fp8_gemm_nt`` (+ bias) with the result in ``dtype`` (bf16 or fp32 from the kernel, converted only when it
    differs). The kernel adds a bias of its output dtype in its epilogue (one rounding, no extra pass over D); a bias
    of another dtype (fp16 layers) is added afterwards.

    No ``.to`` when the dtype already matches: under torch.compile in torch 2.11, an autograd.Function whose forward
    returns ``t.to(t.dtype)`` (t itself) gets zeros as its output gradient (fixed in later releases; test_nn.py)."""
    out_dtype = _gemm_out_dtype(dtype)
    fused = bias if bias is not None and bias.dtype == out_dtype else None
    out = _ops.fp8_gemm_nt(a, sfa, b, sfb, None, out_dtype, fused)
    out = out if out.dtype == dtype else out.to(dtype)
    return out if bias is None or fused is not None else out + bias


def _quantize_weight(weight: Tensor, with_transpose: bool) -> tuple:
    """(W, its 128x128 scales, Wᵀ, Wᵀ's scales); the last two only ``with_transpose`` (dgrad needs them).

    128x128 blocks transpose exactly, so Wᵀ's cast is W's cast transposed; on the GPU one kernel writes both."""
    if with_transpose:
        return _ops.per_block_cast_to_fp8_and_transpose(weight)
    wq, ws = _ops.per_block_cast_to_fp8(weight)
    return wq, ws, None, None


def _pad_tokens(t: Tensor) -> Tensor:
    rows = t.shape[0]
    padded = -(-rows // _FEATURE_MULTIPLE) * _FEATURE_MULTIPLE
    return t if padded == rows else F.pad(t, (0, 0, 0, padded - rows))


def _activation_casts(t: Tensor, with_transpose: bool, transpose_is_a: bool, with_sums: bool = False) -> tuple:
    """(q, sf, q_t, sf_t, sums): q, sf = t cast 1x128 along its features, scales MN-major (the GEMM's A operand);
    with_transpose also q_t, sf_t = t's transpose cast 1x128 along the tokens for the weight gradient (its A operand,
    MN-major scales, when transpose_is_a; else its B operand) from the same read of t on the GPU, else None, None (also
    when the token count is not a multiple of 16: the weight gradient then pads and casts t itself); with_sums also
    t's fp32 column sums (a bias gradient), from that same read when the transpose is cast, else None."""
    if with_transpose and t.shape[0] % _FEATURE_MULTIPLE == 0:
        if with_sums:
            return _ops.per_token_cast_to_fp8_transpose_and_sum(t, True, transpose_is_a)
        return *_ops.per_token_cast_to_fp8_and_transpose(t, True, transpose_is_a), None
    q, sf = _ops.per_token_cast_to_fp8(t, SCALE_BLOCK, True)
    return q, sf, None, None, None


class _FP8LinearFunction(torch.autograd.Function):
    """x2, weight and bias (or None) are the differentiable inputs; the casts of x (xq, xs and, for the weight
    gradient, xq_t, xs_t) and of the weight come in precomputed, so that the saved activation is FP8 xᵀ instead of x.
    The bias is added in the forward GEMM's epilogue."""

    @staticmethod
    def forward(x2: Tensor, weight: Tensor, bias, xq: Tensor, xs: Tensor, xq_t, xs_t, wq: Tensor, ws: Tensor, wq_t,
                ws_t) -> Tensor:
        return _gemm(xq, xs, wq, ws, x2.dtype, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x2, weight, bias, _, _, xq_t, xs_t, _, _, wq_t, ws_t = inputs
        ctx.save_for_backward(x2 if xq_t is None else None, xq_t, xs_t, wq_t, ws_t)
        ctx.x_dtype = x2.dtype
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype

    @staticmethod
    def backward(ctx, dy: Tensor):
        x2, xq_t, xs_t, wq_t, ws_t = ctx.saved_tensors
        dx = dw = db = None
        dy = dy.contiguous()
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        dyq, dys, dy_t, dy_ts, dy_sums = (_activation_casts(dy, need_dw, True, need_db) if need_dx
                                          else (None, None, None, None, None))
        if need_dx:
            dx = _gemm(dyq, dys, wq_t, ws_t, ctx.x_dtype)
        if need_dw:
            if dy_t is None:
                dy_t, dy_ts = _ops.per_token_cast_to_fp8(_pad_tokens(dy).t(), SCALE_BLOCK, True)
            if xq_t is None:
                xq_t, xs_t = _ops.per_token_cast_to_fp8(_pad_tokens(x2).t(), SCALE_BLOCK, False)
            # The kernel accumulates in fp32 either way; a bf16 weight gets its gradient written as bf16 directly.
            dw = _gemm(dy_t, dy_ts, xq_t, xs_t, ctx.weight_dtype)
        if need_db:  # from the dy cast's read of dy when it casts dyᵀ too
            db = (dy_sums if dy_sums is not None else _layout.column_sums(dy)).to(ctx.bias_dtype)
        return dx, dw, db, None, None, None, None, None, None, None, None


def _check_features(weight: Tensor) -> None:
    out_features, in_features = weight.shape
    if in_features % _FEATURE_MULTIPLE or out_features % _FEATURE_MULTIPLE:
        raise ValueError(f"FP8 linear layers need in_features and out_features that are multiples of "
                         f"{_FEATURE_MULTIPLE} (the GPU kernels' K alignment), got weight [{out_features}, "
                         f"{in_features}]")


def fp8_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
               quantized_weight: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` with FP8 GEMMs (1x128 activations, 128x128 weights) forward and backward.

    x: [..., in_features] bf16 / fp16 / fp32; weight [out_features, in_features]; the result has x's dtype.
    ``quantized_weight``: the weight's quantization when the caller keeps one (``FP8Linear`` does, for inference).
    """
    _check_features(weight)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must have {weight.shape[1]} features (weight [{weight.shape[0]}, {weight.shape[1]}]), "
                         f"got x {list(x.shape)}")
    if quantized_weight is None:
        quantized_weight = _quantize_weight(weight.detach(), torch.is_grad_enabled() and x.requires_grad)
    wq, ws, wq_t, ws_t = quantized_weight
    x2 = x.reshape(-1, x.shape[-1])
    xq, xs, xq_t, xs_t, _ = _activation_casts(x2.detach(), torch.is_grad_enabled() and weight.requires_grad, False)
    y = _FP8LinearFunction.apply(x2, weight, bias, xq, xs, xq_t, xs_t, wq, ws, wq_t, ws_t)
    return y.reshape(*x.shape[:-1], weight.shape[0])


class FP8Linear(nn.Linear):
    """``nn.Linear`` whose matmuls run in FP8 with fine-grained scaling (see :func:`fp8_linear`); same parameters,
    same state dict. In inference (no grad) the weight's quantization is cached per weight version, so a frozen
    weight is cast once; in training it is cast every step (the weight changes)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        _check_features(self.weight)
        self._cache: tuple | None = None  # (weight version, data pointer, device, quantized weight)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8Linear:
        """An FP8Linear sharing ``linear``'s parameters."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        _check_features(layer.weight)
        layer._cache = None
        return layer

    def _quantized_weight(self):
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return None  # training: the weight changes every step; compiled: the graph holds the cast
        w = self.weight
        key = (w._version, w.data_ptr(), w.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, _quantize_weight(w.detach(), with_transpose=False))
        return self._cache[1]

    def forward(self, x: Tensor) -> Tensor:
        return fp8_linear(x, self.weight, self.bias, quantized_weight=self._quantized_weight())


__all__ = ["FP8Linear", "fp8_linear"]
