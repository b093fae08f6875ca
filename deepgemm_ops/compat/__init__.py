"""DeepGEMM's public Python API (its 2025-08 release) on top of ``torch.ops.deepgemm``.

Code written against DeepGEMM switches with one line — ``import deepgemm_ops.compat as deep_gemm`` — or, for code
that imports ``deep_gemm`` itself, :func:`install_as_deep_gemm`. Same names, argument names, defaults and results;
every GEMM routes through the registered ops, so calls become traceable by ``torch.compile`` and capturable in CUDA
graphs, and run on the CPU reference too. What DeepGEMM rejects on SM90 is rejected here as well (FP8 layouts other
than NT, UE8M0-packed scales for the GEMMs): the same exception type, our message. The BF16 GEMMs and the k-grouped
weight-gradient GEMM run this library's ops of the same name.
"""

from __future__ import annotations

import sys

import torch

from .. import _sms
from .._heuristics import get_mk_alignment_for_contiguous_layout
from .._layout import get_tma_aligned_size
from .._pdl import get_pdl, set_pdl  # DeepGEMM's later releases have them (there off by default)
from . import testing, utils  # noqa: F401  (deep_gemm.testing, deep_gemm.utils)
from .utils import *  # noqa: F403  (DeepGEMM re-exports its utils at the top level)

_ops = torch.ops.deepgemm

# --- configuration -------------------------------------------------------------------------------------------------

_tc_util = 100


def set_num_sms(num_sms: int) -> None:
    """Limit the persistent GEMM kernels to ``num_sms`` SMs (``deepgemm_ops.set_num_sms``)."""
    _sms.set_num_sms(num_sms)


def get_num_sms() -> int:
    """The SM budget of the GEMM kernels: the set value, else the current device's SM count."""
    return _sms.get_num_sms()


def set_tc_util(tc_util: int) -> None:
    """DeepGEMM's tensor-core utilisation hint (percent, 1–100). Kept for API compatibility and returned by
    :func:`get_tc_util`; this library's heuristics model the kernels' pipelines directly and do not read it."""
    if not isinstance(tc_util, int) or isinstance(tc_util, bool) or not 1 <= tc_util <= 100:
        raise ValueError(f"tc_util must be an int in [1, 100], got {tc_util!r}")
    global _tc_util
    _tc_util = tc_util


def get_tc_util() -> int:
    return _tc_util


# --- argument adapters ---------------------------------------------------------------------------------------------

# DeepGEMM's recipe tuples (rows of A per scale, rows of B per scale, K per scale) that SM90 runs: 1D2D (128x128 weight
# blocks) and 1D1D (per-row weight scales).
_RECIPES = {(1, 128, 128): "128x128", (1, 1, 128): "1x128"}


def _pair(name: str, value) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a (tensor, scale factors) pair, got {type(value).__name__}")
    return value[0], value[1]


def _check_compiled_dims(compiled_dims) -> None:
    if not isinstance(compiled_dims, str) or set(compiled_dims) - set("mnk"):
        raise ValueError(f"compiled_dims must be a string of 'm', 'n', 'k', got {compiled_dims!r}")


def _check_options(sfb: torch.Tensor, b: torch.Tensor, recipe, compiled_dims, disable_ue8m0_cast) -> None:
    """recipe / compiled_dims / disable_ue8m0_cast as DeepGEMM takes them. Our kernels always compile N and K in,
    read fp32 scales and take the weight recipe from sfb's shape; a recipe that disagrees with it is an error."""
    _check_compiled_dims(compiled_dims)
    if not isinstance(disable_ue8m0_cast, bool):
        raise ValueError(f"disable_ue8m0_cast must be a bool, got {disable_ue8m0_cast!r}")
    if sfb.dtype != torch.float32:
        raise RuntimeError(f"SM90 GEMMs take float32 scale factors (UE8M0-packed scales are an SM100 format), "
                           f"got sfb of {sfb.dtype}")
    if recipe is None:
        return
    recipe = tuple(recipe)
    if recipe not in _RECIPES:
        raise ValueError(f"recipe must be one of {sorted(_RECIPES)} on SM90, got {recipe}")
    n = b.shape[-2]
    rows = sfb.shape[-2]
    want_rows = -(-n // 128) if _RECIPES[recipe] == "128x128" else n
    if rows != want_rows:
        raise ValueError(f"recipe {recipe} needs sfb with {want_rows} rows for N = {n}, got {rows}")


def _sm90_nt_only(name: str):
    def reject(*args, **kwargs):
        raise RuntimeError(f"{name}: SM90 FP8 GEMMs take both operands K-major (the NT layout; DeepGEMM rejects the "
                           "others on SM90 as well). Transpose the operand and call the _nt function.")

    reject.__name__ = name
    reject.__doc__ = f"Rejected on SM90, as in DeepGEMM: use the ``_nt`` form ({name})."
    return reject


# --- FP8 GEMMs -----------------------------------------------------------------------------------------------------


def fp8_gemm_nt(a, b, d: torch.Tensor, c: torch.Tensor | None = None, recipe=None, compiled_dims: str = "nk",
                disable_ue8m0_cast: bool = False) -> None:
    """D = C + A·Bᵀ into ``d``: a = (e4m3 [M, K], sfa), b = (e4m3 [N, K], sfb); ``c`` may be ``d`` itself."""
    (a, sfa), (b, sfb) = _pair("a", a), _pair("b", b)
    _check_options(sfb, b, recipe, compiled_dims, disable_ue8m0_cast)
    _ops.fp8_gemm_nt_out(a, sfa, b, sfb, d, c)


def m_grouped_fp8_gemm_nt_contiguous(a, b, d: torch.Tensor, m_indices: torch.Tensor, recipe=None,
                                     compiled_dims: str = "nk", disable_ue8m0_cast: bool = False) -> None:
    """Row-concatenated groups: row r of a uses expert ``m_indices[r]`` of b [G, N, K] (-1: padding)."""
    (a, sfa), (b, sfb) = _pair("a", a), _pair("b", b)
    _check_options(sfb, b, recipe, compiled_dims, disable_ue8m0_cast)
    _ops.m_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, m_indices, d)


def m_grouped_fp8_gemm_nt_masked(a, b, d: torch.Tensor, masked_m: torch.Tensor, expected_m: int, recipe=None,
                                 compiled_dims: str = "nk", disable_ue8m0_cast: bool = False) -> None:
    """Per-group GEMMs on a [G, Mmax, K] with ``masked_m[g]`` valid rows (read on the device)."""
    (a, sfa), (b, sfb) = _pair("a", a), _pair("b", b)
    _check_options(sfb, b, recipe, compiled_dims, disable_ue8m0_cast)
    _ops.m_grouped_fp8_gemm_nt_masked_out(a, sfa, b, sfb, masked_m, expected_m, d)


fp8_gemm_nn = _sm90_nt_only("fp8_gemm_nn")
fp8_gemm_tn = _sm90_nt_only("fp8_gemm_tn")
fp8_gemm_tt = _sm90_nt_only("fp8_gemm_tt")
m_grouped_fp8_gemm_nn_contiguous = _sm90_nt_only("m_grouped_fp8_gemm_nn_contiguous")


def k_grouped_fp8_gemm_tn_contiguous(a, b, d: torch.Tensor, ks, ks_tensor: torch.Tensor, c: torch.Tensor | None = None,
                                     recipe=(1, 1, 128), compiled_dims: str = "mn") -> None:
    """MoE weight gradient: a = (e4m3 [ΣK, M], scales [ΣK/128, M]), b = (e4m3 [ΣK, N], scales [ΣK/128, N]), the
    groups' K ranges given by ``ks`` (host list) / ``ks_tensor``; D[g] = C[g] + A[range]ᵀ·B[range] into ``d`` [G, M, N]
    fp32 (``c`` may be ``d``). Runs :func:`deepgemm_ops.k_grouped_fp8_gemm_nt_contiguous` on the transposed operands
    (a copy of each e4m3 operand): the SM90 kernel on the GPU (ks_tensor read on the device), the CPU reference
    elsewhere."""
    (a, sfa), (b, sfb) = _pair("a", a), _pair("b", b)
    _check_compiled_dims(compiled_dims)
    if tuple(recipe) != (1, 1, 128):
        raise ValueError(f"recipe must be (1, 1, 128) for the k-grouped GEMM (1x128 scales on both operands), "
                         f"got {tuple(recipe)}")
    if len(ks) != ks_tensor.numel():
        raise ValueError(f"ks and ks_tensor must list the same groups, got {len(ks)} and {ks_tensor.numel()}")
    _ops.k_grouped_fp8_gemm_nt_contiguous_out(a.t().contiguous(), sfa.t(), b.t().contiguous(), sfb.t(), ks_tensor, d,
                                              c)

# --- BF16 GEMMs (this library's BF16 ops) ---------------------------------------------------------------------------


def _bf16(layout: str):
    op = getattr(_ops, f"bf16_gemm_{layout}_out")

    def gemm(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, c: torch.Tensor | None = None,
             compiled_dims: str = "nk") -> None:
        _check_compiled_dims(compiled_dims)
        op(a, b, d, c)

    gemm.__name__ = f"bf16_gemm_{layout}"
    gemm.__doc__ = f"D = C + A·B into ``d``, a and b bfloat16 stored as layout {layout!r} says."
    return gemm


bf16_gemm_nt, bf16_gemm_nn, bf16_gemm_tn, bf16_gemm_tt = (_bf16(layout) for layout in ("nt", "nn", "tn", "tt"))


def m_grouped_bf16_gemm_nt_contiguous(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, m_indices: torch.Tensor,
                                      compiled_dims: str = "nk") -> None:
    _check_compiled_dims(compiled_dims)
    _ops.m_grouped_bf16_gemm_nt_contiguous_out(a, b, m_indices, d)


def m_grouped_bf16_gemm_nt_masked(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, masked_m: torch.Tensor,
                                  expected_m: int, compiled_dims: str = "nk") -> None:
    _check_compiled_dims(compiled_dims)
    _ops.m_grouped_bf16_gemm_nt_masked_out(a, b, masked_m, expected_m, d)

# --- layout ----------------------------------------------------------------------------------------------------------


def transform_sf_into_required_layout(sf: torch.Tensor, mn: int, k: int, recipe, num_groups: int | None = None,
                                      is_sfa: bool = False, disable_ue8m0_cast: bool = False) -> torch.Tensor:
    """fp32 scales in the layout the SM90 kernels read: A's (``is_sfa``) MN-major with the TMA-aligned MN stride, B's
    as they are (128x128 blocks or 1x128 rows, contiguous)."""
    recipe = tuple(recipe)
    if recipe not in _RECIPES:
        raise ValueError(f"recipe must be one of {sorted(_RECIPES)} on SM90, got {recipe}")
    if sf.dtype != torch.float32:
        raise RuntimeError(f"SM90 kernels read float32 scale factors, got {sf.dtype}")
    groups = () if num_groups is None else (num_groups,)
    rows = mn if is_sfa or recipe[1] == 1 else -(-mn // 128)
    want = (*groups, rows, -(-k // 128))
    if tuple(sf.shape) != want:
        raise ValueError(f"sf must be float32 {list(want)} for mn={mn}, k={k}, recipe={recipe}, "
                         f"num_groups={num_groups}, is_sfa={is_sfa}, got {list(sf.shape)}")
    return _ops.get_mn_major_tma_aligned_tensor(sf) if is_sfa else sf.contiguous()


# DeepGEMM's legacy aliases
fp8_m_grouped_gemm_nt_masked = m_grouped_fp8_gemm_nt_masked
bf16_m_grouped_gemm_nt_masked = m_grouped_bf16_gemm_nt_masked
get_m_alignment_for_contiguous_layout = get_mk_alignment_for_contiguous_layout
get_k_alignment_for_contiguous_layout = get_mk_alignment_for_contiguous_layout


def install_as_deep_gemm() -> None:
    """Make ``import deep_gemm`` (and ``deep_gemm.utils`` / ``deep_gemm.testing``) load this facade, for code that
    imports DeepGEMM by name. Refuses when a real ``deep_gemm`` is already imported."""
    current = sys.modules.get("deep_gemm")
    if current is not None and current is not sys.modules[__name__]:
        raise RuntimeError("deep_gemm is already imported (a real DeepGEMM?); call install_as_deep_gemm() first")
    sys.modules["deep_gemm"] = sys.modules[__name__]
    sys.modules["deep_gemm.utils"] = utils
    sys.modules["deep_gemm.testing"] = testing


__all__ = [
    "bf16_gemm_nn", "bf16_gemm_nt", "bf16_gemm_tn", "bf16_gemm_tt", "bf16_m_grouped_gemm_nt_masked",
    "fp8_gemm_nn", "fp8_gemm_nt", "fp8_gemm_tn", "fp8_gemm_tt", "fp8_m_grouped_gemm_nt_masked",
    "get_k_alignment_for_contiguous_layout", "get_m_alignment_for_contiguous_layout",
    "get_mk_alignment_for_contiguous_layout", "get_num_sms", "get_pdl", "get_tc_util", "get_tma_aligned_size",
    "install_as_deep_gemm", "k_grouped_fp8_gemm_tn_contiguous", "m_grouped_bf16_gemm_nt_contiguous",
    "m_grouped_bf16_gemm_nt_masked", "m_grouped_fp8_gemm_nn_contiguous", "m_grouped_fp8_gemm_nt_contiguous",
    "m_grouped_fp8_gemm_nt_masked", "set_num_sms", "set_pdl", "set_tc_util", "testing",
    "transform_sf_into_required_layout", "utils", *utils.__all__,
]
