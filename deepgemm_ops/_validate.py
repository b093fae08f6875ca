"""Argument checks shared by the fake, CPU and CUDA implementations of every op.

Each check names the argument, what was expected and what was given, e.g.
``sfa must be float32 [M, ceil(K/128)] = [64, 56], got bfloat16 [64, 57]``.
Checks that need tensor *values* (m_indices, masked_m contents) cannot run on fake tensors; they live in the CPU
reference and are the caller's duty on the GPU (documented in the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from ._bf16_heuristics import BF16_LAYOUTS  # noqa: F401  (re-exported: the validation vocabulary)
from ._constants import SCALE_BLOCK, ceil_div  # noqa: F401  (re-exported: the validation vocabulary)

FP8 = torch.float8_e4m3fn
OUT_DTYPES = (torch.bfloat16, torch.float32)

Dim = int | torch.SymInt | None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe(t: torch.Tensor) -> str:
    return f"{dtype_name(t.dtype)} [{', '.join(str(s) for s in t.shape)}]"


def _layout(names: Sequence[str], values: Sequence[Dim]) -> str:
    text = f"[{', '.join(names)}]"
    if any(v is not None for v in values):
        text += " = [" + ", ".join(n if v is None else str(v) for n, v in zip(names, values)) + "]"
    return text


def _fits(t: torch.Tensor, dtype: torch.dtype, values: Sequence[Dim]) -> bool:
    # A plain loop: this runs several times on every op call (host overhead), generators cost more.
    if t.dtype != dtype:
        return False
    shape = t.shape
    if len(shape) != len(values):
        return False
    for s, v in zip(shape, values):
        if v is not None and s != v:
            return False
    return True


def check_tensor(name: str, t, dtype: torch.dtype, names: Sequence[str], values: Sequence[Dim]) -> None:
    """``t`` must have ``dtype`` and one dim per name; a dim whose value is None is free."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
    if not _fits(t, dtype, values):
        raise ValueError(f"{name} must be {dtype_name(dtype)} {_layout(names, values)}, got {describe(t)}")


def check_k_major(name: str, t: torch.Tensor) -> None:
    # "NT": both operands are K-major; rows may be padded (a slice of a wider buffer) but K must be contiguous.
    if t.numel() > 0 and t.stride(-1) != 1:
        raise ValueError(
            f"{name} must be K-major (stride 1 along K), got strides {tuple(t.stride())} for shape {list(t.shape)}"
        )


def check_no_broadcast(name: str, t: torch.Tensor) -> None:
    """No dim of more than one element may have stride 0: the GPU kernels (and the CPU path's copies into an output)
    would read or write one element for all of them."""
    if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride())):
        raise ValueError(f"{name} must not repeat elements through a zero stride (a broadcast/expanded view), got "
                         f"strides {tuple(t.stride())} for shape {list(t.shape)}")


def check_groups_back_to_back(name: str, t: torch.Tensor) -> None:
    """A [G, Mmax, N] output whose groups follow each other: the GPU kernel sees it as [G*Mmax, N] rows."""
    if t.shape[0] > 1 and t.stride(0) != t.shape[1] * t.stride(1):
        raise ValueError(f"{name} must hold its groups back to back (stride(0) == Mmax * stride(1) = "
                         f"{t.shape[1] * t.stride(1)}), got strides {tuple(t.stride())}")


def check_device(name: str, t: torch.Tensor | None, device: torch.device) -> None:
    if t is not None and t.device != device:
        raise ValueError(f"{name} must be on the device of a ({device}), got {t.device}")


class GemmProblem(NamedTuple):  # a NamedTuple: built on every call, 3x cheaper than a frozen dataclass
    m: Dim  # rows per group (dense: M; contiguous: sum of M; masked: Mmax)
    n: Dim
    k: Dim
    num_groups: int
    sfb_recipe: str  # "128x128" or "1x128"
    out_dtype: torch.dtype


def _check_sfb(sfb, n, k, groups: tuple) -> str:
    kb = ceil_div(k, SCALE_BLOCK)
    g_names = ("G",) if groups else ()
    block = (*groups, ceil_div(n, SCALE_BLOCK), kb)
    row = (*groups, n, kb)
    if isinstance(sfb, torch.Tensor) and _fits(sfb, torch.float32, block):
        return "128x128"
    if isinstance(sfb, torch.Tensor) and _fits(sfb, torch.float32, row):
        return "1x128"
    got = describe(sfb) if isinstance(sfb, torch.Tensor) else type(sfb).__name__
    raise ValueError(
        f"sfb must be float32 {_layout((*g_names, 'ceil(N/128)', 'ceil(K/128)'), block)} (128x128 blocks) "
        f"or {_layout((*g_names, 'N', 'ceil(K/128)'), row)} (1x128 rows), got {got}"
    )


def resolve_out_dtype(out_dtype: torch.dtype | None, has_c: bool) -> torch.dtype:
    if out_dtype is None:
        return torch.float32 if has_c else torch.bfloat16
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be torch.bfloat16 or torch.float32, got {out_dtype}")
    if has_c and out_dtype != torch.float32:
        raise ValueError(f"out_dtype must be torch.float32 when c is given (D = C + A*B accumulates in fp32), "
                         f"got {out_dtype}")
    return out_dtype


def check_out(out, shape_names: Sequence[str], shape: Sequence[Dim], device, has_c: bool) -> torch.dtype:
    """Validates a preallocated output; returns its dtype (bf16 or fp32; fp32 when c is given)."""
    dtypes = (torch.float32,) if has_c else OUT_DTYPES
    if not isinstance(out, torch.Tensor) or out.dtype not in dtypes or not _fits(out, out.dtype, shape):
        want = " or ".join(dtype_name(d) for d in dtypes)
        got = describe(out) if isinstance(out, torch.Tensor) else type(out).__name__
        why = " (c is given)" if has_c else ""
        raise ValueError(f"out must be {want}{why} {_layout(shape_names, shape)}, got {got}")
    if out.numel() > 0 and out.stride(-1) != 1:
        raise ValueError(f"out must have stride 1 along N, got strides {tuple(out.stride())}")
    check_no_broadcast("out", out)
    check_device("out", out, device)
    return out.dtype


def check_gemm_nt(a, sfa, b, sfb, c=None, out_dtype=None, bias=None) -> GemmProblem:
    """fp8_gemm_nt: a [M, K], sfa [M, ceil(K/128)], b [N, K], sfb (either recipe), c [M, N] fp32, bias [N] in the
    output's dtype (the _out form checks its bias against ``out``: check_bias)."""
    check_tensor("a", a, FP8, ("M", "K"), (None, None))
    m, k = a.shape
    check_tensor("b", b, FP8, ("N", "K"), (None, k))
    n = b.shape[0]
    check_tensor("sfa", sfa, torch.float32, ("M", "ceil(K/128)"), (m, ceil_div(k, SCALE_BLOCK)))
    recipe = _check_sfb(sfb, n, k, ())
    if c is not None:
        check_tensor("c", c, torch.float32, ("M", "N"), (m, n))
    _check_common(a, b, (("sfa", sfa), ("b", b), ("sfb", sfb), ("c", c)))
    resolved = resolve_out_dtype(out_dtype, c is not None)
    check_bias(bias, n, resolved, a.device)
    return GemmProblem(m, n, k, 1, recipe, resolved)


def check_bias(bias, n: int, out_dtype: torch.dtype, device) -> None:
    """The optional bias of a dense GEMM: [N] in the output's dtype (added to the fp32 accumulator before the one
    rounding to it), on the operands' device, no zero stride."""
    if bias is None:
        return
    if isinstance(bias, torch.Tensor) and bias.dtype != out_dtype:
        raise ValueError(f"bias must have the output's dtype, {dtype_name(out_dtype)}, got {describe(bias)}")
    check_tensor("bias", bias, out_dtype, ("N",), (n,))
    check_no_broadcast("bias", bias)
    check_device("bias", bias, device)


def check_grouped_contiguous(a, sfa, b, sfb, m_indices) -> GemmProblem:
    """a [sum(M), K]; b [G, N, K]; sfb [G, ...]; m_indices int32 [sum(M)]."""
    check_tensor("a", a, FP8, ("M", "K"), (None, None))
    m, k = a.shape
    check_tensor("b", b, FP8, ("G", "N", "K"), (None, None, k))
    g, n = b.shape[0], b.shape[1]
    check_tensor("sfa", sfa, torch.float32, ("M", "ceil(K/128)"), (m, ceil_div(k, SCALE_BLOCK)))
    recipe = _check_sfb(sfb, n, k, (g,))
    check_tensor("m_indices", m_indices, torch.int32, ("M",), (m,))
    _check_common(a, b, (("sfa", sfa), ("b", b), ("sfb", sfb), ("m_indices", m_indices)))
    return GemmProblem(m, n, k, g, recipe, torch.bfloat16)


# BF16 layouts (BF16_LAYOUTS), as DeepGEMM names them: the first letter says how a is stored (n: [M, K], t: [K, M]),
# the second how b is (t: [N, K], n: [K, N]); D = C + A·B of the mathematical operands.
BF16 = torch.bfloat16


def bf16_operand_shapes(layout: str) -> tuple:
    """Dim names of (a, b) for a BF16 layout."""
    return (("M", "K") if layout[0] == "n" else ("K", "M")), (("N", "K") if layout[1] == "t" else ("K", "N"))


def check_bf16_gemm(layout: str, a, b, c=None, out_dtype=None) -> GemmProblem:
    """bf16_gemm_<layout>: a, b bfloat16 stored as the layout says; c fp32 [M, N]."""
    a_names, b_names = bf16_operand_shapes(layout)
    check_tensor("a", a, BF16, a_names, (None, None))
    dims = dict(zip(a_names, a.shape))
    check_tensor("b", b, BF16, b_names, tuple(dims.get(n) for n in b_names))
    dims.update(zip(b_names, b.shape))
    m, n, k = dims["M"], dims["N"], dims["K"]
    if c is not None:
        check_tensor("c", c, torch.float32, ("M", "N"), (m, n))
    for name, t, names in (("a", a, a_names), ("b", b, b_names)):
        if t.numel() > 0 and t.stride(-1) != 1:
            raise ValueError(f"{name} must have stride 1 along {names[1]} (stored [{names[0]}, {names[1]}] for layout "
                             f"{layout!r}), got strides {tuple(t.stride())} for shape {list(t.shape)}")
        check_no_broadcast(name, t)
    for name, t in (("b", b), ("c", c)):
        check_device(name, t, a.device)
    return GemmProblem(m, n, k, 1, "none", resolve_out_dtype(out_dtype, c is not None))


# The SM90 BF16 kernels read every operand with TMA, rows of 16-byte units: 8 bf16 elements.
_TMA_ROW_ELEMENTS = 8
MAX_GPU_EXTENT = 2**31 - 1  # 32-bit TMA coordinates and kernel ints


def check_gpu_extent(name: str, t: torch.Tensor) -> None:
    rows, cols = t.numel() // max(t.shape[-1], 1), t.shape[-1]
    if max(rows, cols) > MAX_GPU_EXTENT:
        raise ValueError(f"{name} is too large for the GPU kernels: {rows} rows (over all groups) x {cols} columns, at "
                         f"most {MAX_GPU_EXTENT} (2^31 - 1) each (32-bit TMA coordinates)")


def check_bf16_gpu(layout: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """What the SM90 BF16 kernels need beyond the op contract: each operand (as stored for ``layout``; grouped: its
    last two dims) with a row stride that is a multiple of 8 elements (16 bytes) and at least the row length and a
    16-byte aligned start (TMA), and 32-bit extents. So K % 8 == 0 where a or b is K-major (nt, nn, tt and the
    grouped ops), M % 8 == 0 where a is M-major (tn, tt), N % 8 == 0 where b is N-major (nn, tn), unless the operand
    is a slice of a padded buffer."""
    for name, t, names in zip(("a", "b"), (a, b), bf16_operand_shapes(layout)):
        cols, stride = t.shape[-1], t.stride(-2)
        offset = t.data_ptr() % (2 * _TMA_ROW_ELEMENTS)
        if stride % _TMA_ROW_ELEMENTS or stride < cols or offset:
            raise ValueError(
                f"{name} (stored [{names[0]}, {names[1]}] for layout {layout!r}) must have a row stride that is a "
                f"multiple of {_TMA_ROW_ELEMENTS} elements and at least {names[1]} = {cols}, and a 16-byte aligned "
                f"start, on the GPU (TMA), got row stride {stride} at offset {offset} mod 16: pad {names[1]} to a "
                f"multiple of {_TMA_ROW_ELEMENTS} (a slice of a padded buffer works)")
        check_gpu_extent(name, t)
    check_gpu_extent("out", out)


def check_grouped_bf16_contiguous(a, b, m_indices) -> GemmProblem:
    """a [sum(M), K]; b [G, N, K]; m_indices int32 [sum(M)] (bfloat16, no scales)."""
    check_tensor("a", a, BF16, ("M", "K"), (None, None))
    m, k = a.shape
    check_tensor("b", b, BF16, ("G", "N", "K"), (None, None, k))
    check_tensor("m_indices", m_indices, torch.int32, ("M",), (m,))
    _check_common(a, b, (("b", b), ("m_indices", m_indices)))
    return GemmProblem(m, b.shape[1], k, b.shape[0], "none", torch.bfloat16)


def check_grouped_bf16_masked(a, b, masked_m, expected_m) -> GemmProblem:
    """a [G, Mmax, K]; b [G, N, K]; masked_m int32 [G]; expected_m >= 1 (bfloat16, no scales)."""
    check_tensor("a", a, BF16, ("G", "Mmax", "K"), (None, None, None))
    g, m, k = a.shape
    check_tensor("b", b, BF16, ("G", "N", "K"), (g, None, k))
    check_tensor("masked_m", masked_m, torch.int32, ("G",), (g,))
    check_expected_m(expected_m)
    _check_common(a, b, (("b", b), ("masked_m", masked_m)))
    return GemmProblem(m, b.shape[1], k, g, "none", torch.bfloat16)


def check_k_grouped(a, sfa, b, sfb, ks, c=None) -> GemmProblem:
    """k_grouped_fp8_gemm_nt_contiguous: a [M, sum(K)], b [N, sum(K)] e4m3, K-major; sfa [M, ceil(sum(K)/128)] and
    sfb [N, ceil(sum(K)/128)] fp32 (1x128 on both); ks int32 [G]; c fp32 [G, M, N]. (The values of ks are the
    caller's duty on the GPU; the CPU reference checks them.)"""
    check_tensor("a", a, FP8, ("M", "sum(K)"), (None, None))
    m, k = a.shape
    check_tensor("b", b, FP8, ("N", "sum(K)"), (None, k))
    n = b.shape[0]
    kb = ceil_div(k, SCALE_BLOCK)
    check_tensor("sfa", sfa, torch.float32, ("M", "ceil(sum(K)/128)"), (m, kb))
    check_tensor("sfb", sfb, torch.float32, ("N", "ceil(sum(K)/128)"), (n, kb))
    check_tensor("ks", ks, torch.int32, ("G",), (None,))
    g = ks.shape[0]
    if c is not None:
        check_tensor("c", c, torch.float32, ("G", "M", "N"), (g, m, n))
    _check_common(a, b, (("sfa", sfa), ("b", b), ("sfb", sfb), ("ks", ks), ("c", c)))
    return GemmProblem(m, n, k, g, "1x128", torch.float32)


def check_k_grouped_gpu(k) -> None:
    """What the SM90 k-grouped kernel needs beyond the op contract: it takes its groups' K ranges from ks on the device
    and cannot check their values there, so the total must at least be whole 128-wide k-blocks."""
    if k % SCALE_BLOCK:
        raise ValueError(f"sum(K) (the K extent of a and b) must be a multiple of {SCALE_BLOCK} on the GPU (every "
                         f"group's K is), got sum(K) = {k}")


def is_int(value) -> bool:
    """A Python int, or a symbolic one: the schemas take the size-like ints as SymInt, so that torch.compile traces a
    changing expected_m or group size without specialising on its value. bool is not an int here."""
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def check_grouped_masked(a, sfa, b, sfb, masked_m, expected_m) -> GemmProblem:
    """a [G, Mmax, K]; sfa [G, Mmax, ceil(K/128)]; b [G, N, K]; masked_m int32 [G]; expected_m >= 1."""
    check_tensor("a", a, FP8, ("G", "Mmax", "K"), (None, None, None))
    g, m, k = a.shape
    check_tensor("b", b, FP8, ("G", "N", "K"), (g, None, k))
    n = b.shape[1]
    check_tensor("sfa", sfa, torch.float32, ("G", "Mmax", "ceil(K/128)"), (g, m, ceil_div(k, SCALE_BLOCK)))
    recipe = _check_sfb(sfb, n, k, (g,))
    check_tensor("masked_m", masked_m, torch.int32, ("G",), (g,))
    check_expected_m(expected_m)
    _check_common(a, b, (("sfa", sfa), ("b", b), ("sfb", sfb), ("masked_m", masked_m)))
    return GemmProblem(m, n, k, g, recipe, torch.bfloat16)


def _check_common(a, b, others) -> None:
    check_k_major("a", a)
    check_k_major("b", b)
    check_no_broadcast("a", a)
    check_no_broadcast("b", b)
    for name, t in others:
        check_device(name, t, a.device)


def check_cast_input(name: str, x, size_name: str, size) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        got = describe(x) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D bfloat16, float16 or float32 tensor, got {got}")
    check_size_arg(size_name, size)


def check_size_arg(name: str, size) -> None:
    """A group / block size: an int >= 1 (bool is not an int here)."""
    if not is_int(size) or size < 1:
        raise ValueError(f"{name} must be an int >= 1, got {size!r}")


def check_expected_m(expected_m) -> None:
    if not is_int(expected_m) or expected_m < 1:
        raise ValueError(f"expected_m must be an int >= 1 (the typical rows per group), got {expected_m!r}")


def check_scale_factor(sf) -> None:
    if not isinstance(sf, torch.Tensor) or sf.dtype != torch.float32 or sf.dim() not in (2, 3):
        got = describe(sf) if isinstance(sf, torch.Tensor) else type(sf).__name__
        raise ValueError(f"sf must be float32 [MN, ceil(K/128)] or [G, MN, ceil(K/128)], got {got}")
