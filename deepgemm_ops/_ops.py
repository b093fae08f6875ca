"""The ``torch.ops.deepgemm`` operators: one schema table, then a fake and a CPU reference per op.

The CPU kernels are the reference the GPU kernels are tested against: dequantize with the given scales, accumulate
in fp32, cast to the output dtype. The CUDA kernels are registered by ``_cuda.py``.
"""

from __future__ import annotations

import torch

from . import _layout
from . import _validate as V
from ._heuristics import get_mk_alignment_for_contiguous_layout

NAMESPACE = "deepgemm"
_GEMM_TAGS = (torch.Tag.needs_fixed_stride_order,)

# name -> (schema, tags). The only place the op signatures are written.
SCHEMAS = {
    "fp8_gemm_nt": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor? c=None, ScalarType? out_dtype=None, Tensor? bias=None) "
        "-> Tensor",
        _GEMM_TAGS,
    ),
    "fp8_gemm_nt_out": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor(a!) out, Tensor? c=None, Tensor? bias=None) -> ()",
        _GEMM_TAGS,
    ),
    "m_grouped_fp8_gemm_nt_contiguous": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor m_indices) -> Tensor",
        _GEMM_TAGS,
    ),
    "m_grouped_fp8_gemm_nt_contiguous_out": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor m_indices, Tensor(a!) out) -> ()",
        _GEMM_TAGS,
    ),
    "m_grouped_fp8_gemm_nt_masked": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor masked_m, SymInt expected_m) -> Tensor",
        _GEMM_TAGS,
    ),
    "m_grouped_fp8_gemm_nt_masked_out": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor masked_m, SymInt expected_m, Tensor(a!) out) -> ()",
        _GEMM_TAGS,
    ),
    "bf16_gemm_nt": ("(Tensor a, Tensor b, Tensor? c=None, ScalarType? out_dtype=None) -> Tensor", _GEMM_TAGS),
    "bf16_gemm_nt_out": ("(Tensor a, Tensor b, Tensor(a!) out, Tensor? c=None) -> ()", _GEMM_TAGS),
    "bf16_gemm_nn": ("(Tensor a, Tensor b, Tensor? c=None, ScalarType? out_dtype=None) -> Tensor", _GEMM_TAGS),
    "bf16_gemm_nn_out": ("(Tensor a, Tensor b, Tensor(a!) out, Tensor? c=None) -> ()", _GEMM_TAGS),
    "bf16_gemm_tn": ("(Tensor a, Tensor b, Tensor? c=None, ScalarType? out_dtype=None) -> Tensor", _GEMM_TAGS),
    "bf16_gemm_tn_out": ("(Tensor a, Tensor b, Tensor(a!) out, Tensor? c=None) -> ()", _GEMM_TAGS),
    "bf16_gemm_tt": ("(Tensor a, Tensor b, Tensor? c=None, ScalarType? out_dtype=None) -> Tensor", _GEMM_TAGS),
    "bf16_gemm_tt_out": ("(Tensor a, Tensor b, Tensor(a!) out, Tensor? c=None) -> ()", _GEMM_TAGS),
    "m_grouped_bf16_gemm_nt_contiguous": ("(Tensor a, Tensor b, Tensor m_indices) -> Tensor", _GEMM_TAGS),
    "m_grouped_bf16_gemm_nt_contiguous_out": (
        "(Tensor a, Tensor b, Tensor m_indices, Tensor(a!) out) -> ()", _GEMM_TAGS),
    "m_grouped_bf16_gemm_nt_masked": (
        "(Tensor a, Tensor b, Tensor masked_m, SymInt expected_m) -> Tensor", _GEMM_TAGS),
    "m_grouped_bf16_gemm_nt_masked_out": (
        "(Tensor a, Tensor b, Tensor masked_m, SymInt expected_m, Tensor(a!) out) -> ()", _GEMM_TAGS),
    "k_grouped_fp8_gemm_nt_contiguous": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor ks, Tensor? c=None) -> Tensor", _GEMM_TAGS),
    "k_grouped_fp8_gemm_nt_contiguous_out": (
        "(Tensor a, Tensor sfa, Tensor b, Tensor sfb, Tensor ks, Tensor(a!) out, Tensor? c=None) -> ()", _GEMM_TAGS),
    "per_token_cast_to_fp8": (
        "(Tensor x, SymInt group_size=128, bool mn_major_scales=False) -> (Tensor, Tensor)", ()),
    "per_block_cast_to_fp8": ("(Tensor x, SymInt block_size=128) -> (Tensor, Tensor)", ()),
    "per_block_cast_to_fp8_and_transpose": ("(Tensor x) -> (Tensor, Tensor, Tensor, Tensor)", ()),
    "per_token_cast_to_fp8_and_transpose": (
        "(Tensor x, bool mn_major_scales=False, bool mn_major_scales_t=False) -> (Tensor, Tensor, Tensor, Tensor)", ()),
    "per_token_cast_to_fp8_transpose_and_sum": (
        "(Tensor x, bool mn_major_scales=False, bool mn_major_scales_t=False) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)", ()),
    "get_mn_major_tma_aligned_tensor": ("(Tensor sf) -> Tensor", ()),
}

_lib = torch.library.Library(NAMESPACE, "DEF")
for _name, (_schema, _tags) in SCHEMAS.items():
    _lib.define(_name + _schema, tags=_tags)


def qualname(name: str) -> str:
    return f"{NAMESPACE}::{name}"


def _fake(name):
    return torch.library.register_fake(qualname(name), lib=_lib)


def _impl(name, key):
    def register(fn):
        _lib.impl(name, fn, key)
        return fn

    return register


# --- output allocation, shared by the fakes and the real kernels --------------------------------------------------


def gemm_output(a, p: V.GemmProblem) -> torch.Tensor:
    return a.new_empty((p.m, p.n), dtype=p.out_dtype)


def masked_output(a, p: V.GemmProblem) -> torch.Tensor:
    return a.new_empty((p.num_groups, p.m, p.n), dtype=torch.bfloat16)


def rows_out(p: V.GemmProblem, a, out, has_c: bool = False) -> V.GemmProblem:
    """Checks the [M, N] output of a validated problem p (dense or contiguous); returns p."""
    V.check_out(out, ("M", "N"), (p.m, p.n), a.device, has_c)
    return p


def groups_out(p: V.GemmProblem, a, out) -> V.GemmProblem:
    """Checks the [G, Mmax, N] output of a validated masked problem p, groups back to back; returns p."""
    V.check_out(out, ("G", "Mmax", "N"), (p.num_groups, p.m, p.n), a.device, has_c=False)
    V.check_groups_back_to_back("out", out)
    return p


def check_gemm_out(a, sfa, b, sfb, out, c, bias=None):
    p = rows_out(V.check_gemm_nt(a, sfa, b, sfb, c), a, out, c is not None)
    V.check_bias(bias, p.n, out.dtype, a.device)
    return p


def check_contiguous_out(a, sfa, b, sfb, m_indices, out):
    return rows_out(V.check_grouped_contiguous(a, sfa, b, sfb, m_indices), a, out)


def check_masked_out(a, sfa, b, sfb, masked_m, expected_m, out):
    return groups_out(V.check_grouped_masked(a, sfa, b, sfb, masked_m, expected_m), a, out)


# --- fakes ---------------------------------------------------------------------------------------------------------


@_fake("fp8_gemm_nt")
def _fp8_gemm_nt_fake(a, sfa, b, sfb, c=None, out_dtype=None, bias=None):
    return gemm_output(a, V.check_gemm_nt(a, sfa, b, sfb, c, out_dtype, bias))


@_fake("fp8_gemm_nt_out")
def _fp8_gemm_nt_out_fake(a, sfa, b, sfb, out, c=None, bias=None):
    check_gemm_out(a, sfa, b, sfb, out, c, bias)


@_fake("m_grouped_fp8_gemm_nt_contiguous")
def _m_grouped_fp8_gemm_nt_contiguous_fake(a, sfa, b, sfb, m_indices):
    return gemm_output(a, V.check_grouped_contiguous(a, sfa, b, sfb, m_indices))


@_fake("m_grouped_fp8_gemm_nt_contiguous_out")
def _m_grouped_fp8_gemm_nt_contiguous_out_fake(a, sfa, b, sfb, m_indices, out):
    check_contiguous_out(a, sfa, b, sfb, m_indices, out)


@_fake("m_grouped_fp8_gemm_nt_masked")
def _m_grouped_fp8_gemm_nt_masked_fake(a, sfa, b, sfb, masked_m, expected_m):
    return masked_output(a, V.check_grouped_masked(a, sfa, b, sfb, masked_m, expected_m))


@_fake("m_grouped_fp8_gemm_nt_masked_out")
def _m_grouped_fp8_gemm_nt_masked_out_fake(a, sfa, b, sfb, masked_m, expected_m, out):
    check_masked_out(a, sfa, b, sfb, masked_m, expected_m, out)


def _cast_outputs(x, sf_shape, mn_major_scales=False):
    sf = _layout.empty_mn_major(sf_shape, x.device) if mn_major_scales else x.new_empty(sf_shape, dtype=torch.float32)
    return x.new_empty(x.shape, dtype=V.FP8), sf


@_fake("per_token_cast_to_fp8")
def _per_token_cast_to_fp8_fake(x, group_size=128, mn_major_scales=False):
    V.check_cast_input("x", x, "group_size", group_size)
    return _cast_outputs(x, (x.shape[0], V.ceil_div(x.shape[1], group_size)), mn_major_scales)


@_fake("per_block_cast_to_fp8")
def _per_block_cast_to_fp8_fake(x, block_size=128):
    V.check_cast_input("x", x, "block_size", block_size)
    return _cast_outputs(x, (V.ceil_div(x.shape[0], block_size), V.ceil_div(x.shape[1], block_size)))


@_fake("per_block_cast_to_fp8_and_transpose")
def _per_block_cast_to_fp8_and_transpose_fake(x):
    V.check_cast_input("x", x, "block_size", V.SCALE_BLOCK)
    q, sf = _cast_outputs(x, (V.ceil_div(x.shape[0], V.SCALE_BLOCK), V.ceil_div(x.shape[1], V.SCALE_BLOCK)))
    return q, sf, x.new_empty((x.shape[1], x.shape[0]), dtype=V.FP8), sf.new_empty((sf.shape[1], sf.shape[0]))


@_fake("per_token_cast_to_fp8_and_transpose")
def _per_token_cast_to_fp8_and_transpose_fake(x, mn_major_scales=False, mn_major_scales_t=False):
    V.check_cast_input("x", x, "group_size", V.SCALE_BLOCK)
    q, sf = _cast_outputs(x, (x.shape[0], V.ceil_div(x.shape[1], V.SCALE_BLOCK)), mn_major_scales)
    x_t = x.new_empty((x.shape[1], x.shape[0]))
    q_t, sf_t = _cast_outputs(x_t, (x.shape[1], V.ceil_div(x.shape[0], V.SCALE_BLOCK)), mn_major_scales_t)
    return q, sf, q_t, sf_t


@_fake("per_token_cast_to_fp8_transpose_and_sum")
def _per_token_cast_to_fp8_transpose_and_sum_fake(x, mn_major_scales=False, mn_major_scales_t=False):
    casts = _per_token_cast_to_fp8_and_transpose_fake(x, mn_major_scales, mn_major_scales_t)
    return *casts, x.new_empty((x.shape[1],), dtype=torch.float32)


@_fake("get_mn_major_tma_aligned_tensor")
def _get_mn_major_tma_aligned_tensor_fake(sf):
    V.check_scale_factor(sf)
    return _layout.empty_mn_major(sf.shape, sf.device)


# --- CPU reference kernels -----------------------------------------------------------------------------------------


def reference_gemm(a, sfa, b, sfb, recipe: str, c=None, bias=None) -> torch.Tensor:
    """fp32 D = C + dequant(A) @ dequant(B)^T (+ bias, broadcast over the rows) for one group."""
    d = _layout.dequantize_rows(a, sfa) @ _layout.dequantize_b(b, sfb, recipe).t()
    d = d if c is None else d + c
    return d if bias is None else d + bias.float()


@_impl("fp8_gemm_nt", "CPU")
def _fp8_gemm_nt_cpu(a, sfa, b, sfb, c=None, out_dtype=None, bias=None):
    p = V.check_gemm_nt(a, sfa, b, sfb, c, out_dtype, bias)
    return reference_gemm(a, sfa, b, sfb, p.sfb_recipe, c, bias).to(p.out_dtype)


@_impl("fp8_gemm_nt_out", "CPU")
def _fp8_gemm_nt_out_cpu(a, sfa, b, sfb, out, c=None, bias=None):
    p = check_gemm_out(a, sfa, b, sfb, out, c, bias)
    out.copy_(reference_gemm(a, sfa, b, sfb, p.sfb_recipe, c, bias))


def _check_m_indices(m_indices, num_groups: int) -> None:
    bad = (m_indices < -1) | (m_indices >= num_groups)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"m_indices must hold group ids in [0, {num_groups}) or -1 (padding), "
                         f"got {int(m_indices[row])} at row {row}")
    align = get_mk_alignment_for_contiguous_layout()
    starts = (m_indices[1:] != m_indices[:-1]).nonzero().flatten() + 1
    for s in starts.tolist():
        if int(m_indices[s]) >= 0 and s % align:
            raise ValueError(f"m_indices: the rows of group {int(m_indices[s])} start at row {s}, which is not a "
                             f"multiple of get_mk_alignment_for_contiguous_layout() = {align}")


def grouped_contiguous_reference(m_indices, num_groups: int, out: torch.Tensor, group_gemm) -> None:
    """out[rows of group g] = group_gemm(g, rows) for every group (rows: an index tensor into the concatenated rows)."""
    _check_m_indices(m_indices, num_groups)
    out.zero_()  # padding rows (-1): unspecified by contract, zeros here
    for g in range(num_groups):
        rows = (m_indices == g).nonzero().flatten()
        if rows.numel():
            out[rows] = group_gemm(g, rows).to(out.dtype)


def _contiguous_reference(a, sfa, b, sfb, m_indices, p: V.GemmProblem, out: torch.Tensor) -> None:
    grouped_contiguous_reference(
        m_indices, p.num_groups, out, lambda g, rows: reference_gemm(a[rows], sfa[rows], b[g], sfb[g], p.sfb_recipe))


@_impl("m_grouped_fp8_gemm_nt_contiguous", "CPU")
def _m_grouped_fp8_gemm_nt_contiguous_cpu(a, sfa, b, sfb, m_indices):
    p = V.check_grouped_contiguous(a, sfa, b, sfb, m_indices)
    out = gemm_output(a, p)
    _contiguous_reference(a, sfa, b, sfb, m_indices, p, out)
    return out


@_impl("m_grouped_fp8_gemm_nt_contiguous_out", "CPU")
def _m_grouped_fp8_gemm_nt_contiguous_out_cpu(a, sfa, b, sfb, m_indices, out):
    _contiguous_reference(a, sfa, b, sfb, m_indices, check_contiguous_out(a, sfa, b, sfb, m_indices, out), out)


def _masked_counts(masked_m, p: V.GemmProblem) -> list:
    counts = masked_m.tolist()
    for g, rows in enumerate(counts):
        if not 0 <= rows <= p.m:
            raise ValueError(f"masked_m[{g}] must be in [0, Mmax = {p.m}], got {rows}")
    return counts


def grouped_masked_reference(masked_m, p: V.GemmProblem, out: torch.Tensor, group_gemm) -> None:
    """out[g, :rows] = group_gemm(g, rows) for every group with rows = masked_m[g] > 0."""
    counts = _masked_counts(masked_m, p)
    out.zero_()  # rows >= masked_m[g]: unspecified by contract, zeros here
    for g, rows in enumerate(counts):
        if rows:
            out[g, :rows] = group_gemm(g, rows).to(out.dtype)


def _masked_reference(a, sfa, b, sfb, masked_m, p: V.GemmProblem, out: torch.Tensor) -> None:
    grouped_masked_reference(
        masked_m, p, out, lambda g, n: reference_gemm(a[g, :n], sfa[g, :n], b[g], sfb[g], p.sfb_recipe))


@_impl("m_grouped_fp8_gemm_nt_masked", "CPU")
def _m_grouped_fp8_gemm_nt_masked_cpu(a, sfa, b, sfb, masked_m, expected_m):
    p = V.check_grouped_masked(a, sfa, b, sfb, masked_m, expected_m)
    out = masked_output(a, p)
    _masked_reference(a, sfa, b, sfb, masked_m, p, out)
    return out


@_impl("m_grouped_fp8_gemm_nt_masked_out", "CPU")
def _m_grouped_fp8_gemm_nt_masked_out_cpu(a, sfa, b, sfb, masked_m, expected_m, out):
    p = check_masked_out(a, sfa, b, sfb, masked_m, expected_m, out)
    _masked_reference(a, sfa, b, sfb, masked_m, p, out)


# The reference casts and the layout change are plain torch code for every device; CUDA has fused cast kernels
# (_cuda.py) for the layouts they read.
@_impl("per_token_cast_to_fp8", "CompositeExplicitAutograd")
def _per_token_cast_to_fp8_composite(x, group_size=128, mn_major_scales=False):
    V.check_cast_input("x", x, "group_size", group_size)
    return _layout.per_token_cast(x, group_size, mn_major_scales)


@_impl("per_block_cast_to_fp8", "CompositeExplicitAutograd")
def _per_block_cast_to_fp8_composite(x, block_size=128):
    V.check_cast_input("x", x, "block_size", block_size)
    return _layout.per_block_cast(x, block_size)


@_impl("per_block_cast_to_fp8_and_transpose", "CompositeExplicitAutograd")
def _per_block_cast_to_fp8_and_transpose_composite(x):
    V.check_cast_input("x", x, "block_size", V.SCALE_BLOCK)
    return _layout.per_block_cast_and_transpose(x)


@_impl("per_token_cast_to_fp8_and_transpose", "CompositeExplicitAutograd")
def _per_token_cast_to_fp8_and_transpose_composite(x, mn_major_scales=False, mn_major_scales_t=False):
    V.check_cast_input("x", x, "group_size", V.SCALE_BLOCK)
    return _layout.per_token_cast_and_transpose(x, mn_major_scales, mn_major_scales_t)


@_impl("per_token_cast_to_fp8_transpose_and_sum", "CompositeExplicitAutograd")
def _per_token_cast_to_fp8_transpose_and_sum_composite(x, mn_major_scales=False, mn_major_scales_t=False):
    V.check_cast_input("x", x, "group_size", V.SCALE_BLOCK)
    return _layout.per_token_cast_transpose_and_sum(x, mn_major_scales, mn_major_scales_t)


@_impl("get_mn_major_tma_aligned_tensor", "CompositeExplicitAutograd")
def _get_mn_major_tma_aligned_tensor_composite(sf):
    V.check_scale_factor(sf)
    # A functional op must not alias its input: always a fresh tensor.
    return _layout.empty_mn_major(sf.shape, sf.device).copy_(sf)


# --- BF16 GEMMs: the contract (fakes, CPU reference); the GPU kernels are not written yet (_cuda.py refuses) ----------


def bf16_operands(layout: str, a, b):
    """The mathematical A [M, K] and B [K, N] (views) of a layout's stored operands."""
    return (a if layout[0] == "n" else a.t()), (b.t() if layout[1] == "t" else b)


def reference_bf16_gemm(layout: str, a, b, c=None) -> torch.Tensor:
    """fp32 D = C + A·B."""
    a_math, b_math = bf16_operands(layout, a, b)
    d = a_math.float() @ b_math.float()
    return d if c is None else d + c


def check_bf16_out(layout, a, b, out, c):
    return rows_out(V.check_bf16_gemm(layout, a, b, c), a, out, c is not None)


def _register_bf16_layout(layout: str) -> None:
    name = f"bf16_gemm_{layout}"

    def fake(a, b, c=None, out_dtype=None):
        return gemm_output(a, V.check_bf16_gemm(layout, a, b, c, out_dtype))

    def fake_out(a, b, out, c=None):
        check_bf16_out(layout, a, b, out, c)

    def cpu(a, b, c=None, out_dtype=None):
        p = V.check_bf16_gemm(layout, a, b, c, out_dtype)
        return reference_bf16_gemm(layout, a, b, c).to(p.out_dtype)

    def cpu_out(a, b, out, c=None):
        check_bf16_out(layout, a, b, out, c)
        out.copy_(reference_bf16_gemm(layout, a, b, c))

    for suffix, f, c_impl in (("", fake, cpu), ("_out", fake_out, cpu_out)):
        f.__name__ = f"_{name}{suffix}_fake"
        c_impl.__name__ = f"_{name}{suffix}_cpu"
        _fake(name + suffix)(f)
        _impl(name + suffix, "CPU")(c_impl)


for _layout_name in V.BF16_LAYOUTS:
    _register_bf16_layout(_layout_name)


def check_grouped_bf16_contiguous_out(a, b, m_indices, out):
    return rows_out(V.check_grouped_bf16_contiguous(a, b, m_indices), a, out)


def check_grouped_bf16_masked_out(a, b, masked_m, expected_m, out):
    return groups_out(V.check_grouped_bf16_masked(a, b, masked_m, expected_m), a, out)


@_fake("m_grouped_bf16_gemm_nt_contiguous")
def _m_grouped_bf16_gemm_nt_contiguous_fake(a, b, m_indices):
    return gemm_output(a, V.check_grouped_bf16_contiguous(a, b, m_indices))


@_fake("m_grouped_bf16_gemm_nt_contiguous_out")
def _m_grouped_bf16_gemm_nt_contiguous_out_fake(a, b, m_indices, out):
    check_grouped_bf16_contiguous_out(a, b, m_indices, out)


@_fake("m_grouped_bf16_gemm_nt_masked")
def _m_grouped_bf16_gemm_nt_masked_fake(a, b, masked_m, expected_m):
    return masked_output(a, V.check_grouped_bf16_masked(a, b, masked_m, expected_m))


@_fake("m_grouped_bf16_gemm_nt_masked_out")
def _m_grouped_bf16_gemm_nt_masked_out_fake(a, b, masked_m, expected_m, out):
    check_grouped_bf16_masked_out(a, b, masked_m, expected_m, out)


def _bf16_contiguous_reference(a, b, m_indices, p: V.GemmProblem, out) -> None:
    grouped_contiguous_reference(m_indices, p.num_groups, out, lambda g, rows: a[rows].float() @ b[g].float().t())


def _bf16_masked_reference(a, b, masked_m, p: V.GemmProblem, out) -> None:
    grouped_masked_reference(masked_m, p, out, lambda g, n: a[g, :n].float() @ b[g].float().t())


@_impl("m_grouped_bf16_gemm_nt_contiguous", "CPU")
def _m_grouped_bf16_gemm_nt_contiguous_cpu(a, b, m_indices):
    p = V.check_grouped_bf16_contiguous(a, b, m_indices)
    out = gemm_output(a, p)
    _bf16_contiguous_reference(a, b, m_indices, p, out)
    return out


@_impl("m_grouped_bf16_gemm_nt_contiguous_out", "CPU")
def _m_grouped_bf16_gemm_nt_contiguous_out_cpu(a, b, m_indices, out):
    _bf16_contiguous_reference(a, b, m_indices, check_grouped_bf16_contiguous_out(a, b, m_indices, out), out)


@_impl("m_grouped_bf16_gemm_nt_masked", "CPU")
def _m_grouped_bf16_gemm_nt_masked_cpu(a, b, masked_m, expected_m):
    p = V.check_grouped_bf16_masked(a, b, masked_m, expected_m)
    out = masked_output(a, p)
    _bf16_masked_reference(a, b, masked_m, p, out)
    return out


@_impl("m_grouped_bf16_gemm_nt_masked_out", "CPU")
def _m_grouped_bf16_gemm_nt_masked_out_cpu(a, b, masked_m, expected_m, out):
    p = check_grouped_bf16_masked_out(a, b, masked_m, expected_m, out)
    _bf16_masked_reference(a, b, masked_m, p, out)


# --- k-grouped FP8 weight-gradient GEMM: contract, fakes, CPU reference (the SM90 kernel: _cuda.py) -------------


def k_grouped_output(a, p: V.GemmProblem) -> torch.Tensor:
    return a.new_empty((p.num_groups, p.m, p.n), dtype=torch.float32)


def check_k_grouped_out(a, sfa, b, sfb, ks, out, c):
    p = V.check_k_grouped(a, sfa, b, sfb, ks, c)
    V.check_out(out, ("G", "M", "N"), (p.num_groups, p.m, p.n), a.device, has_c=True)
    return p


def _k_grouped_reference(a, sfa, b, sfb, ks, c, p: V.GemmProblem, out) -> None:
    sizes = ks.tolist()
    for g, size in enumerate(sizes):
        if size < 0 or size % V.SCALE_BLOCK:
            raise ValueError(f"ks[{g}] must be a non-negative multiple of {V.SCALE_BLOCK}, got {size}")
    if sum(sizes) != p.k:
        raise ValueError(f"ks must sum to the K extent of a and b ({p.k}), got {sum(sizes)}")
    start = 0
    for g, size in enumerate(sizes):
        cols, blocks = slice(start, start + size), slice(start // V.SCALE_BLOCK, (start + size) // V.SCALE_BLOCK)
        d = _layout.dequantize_rows(a[:, cols], sfa[:, blocks]) @ _layout.dequantize_rows(b[:, cols],
                                                                                           sfb[:, blocks]).t()
        out[g] = d if c is None else d + c[g]
        start += size


@_fake("k_grouped_fp8_gemm_nt_contiguous")
def _k_grouped_fp8_gemm_nt_contiguous_fake(a, sfa, b, sfb, ks, c=None):
    return k_grouped_output(a, V.check_k_grouped(a, sfa, b, sfb, ks, c))


@_fake("k_grouped_fp8_gemm_nt_contiguous_out")
def _k_grouped_fp8_gemm_nt_contiguous_out_fake(a, sfa, b, sfb, ks, out, c=None):
    check_k_grouped_out(a, sfa, b, sfb, ks, out, c)


@_impl("k_grouped_fp8_gemm_nt_contiguous", "CPU")
def _k_grouped_fp8_gemm_nt_contiguous_cpu(a, sfa, b, sfb, ks, c=None):
    p = V.check_k_grouped(a, sfa, b, sfb, ks, c)
    out = k_grouped_output(a, p)
    _k_grouped_reference(a, sfa, b, sfb, ks, c, p, out)
    return out


@_impl("k_grouped_fp8_gemm_nt_contiguous_out", "CPU")
def _k_grouped_fp8_gemm_nt_contiguous_out_cpu(a, sfa, b, sfb, ks, out, c=None):
    p = check_k_grouped_out(a, sfa, b, sfb, ks, out, c)
    # out may be c itself (in-place accumulation of a gradient): the reference reads c group by group before writing
    _k_grouped_reference(a, sfa, b, sfb, ks, None if c is None else c.clone(), p, out)
