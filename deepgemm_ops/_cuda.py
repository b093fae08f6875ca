"""CUDA implementations of the ops. GEMMs: shared validation, the layouts the kernel reads, a memoized config, the
JIT kernel for it, one launch on the current stream of the inputs' device. Casts: one fused JIT kernel per (kind,
input dtype) for the layouts it reads, the torch composite (``_layout``) for the rest.

Registering a CUDA kernel initialises nothing: the host module is built and kernels are compiled on first use.
"""

from __future__ import annotations

import functools
import sys
import threading

import torch

from . import _bf16_heuristics, _heuristics, _jit, _layout, _ops, _runtime, _sms
from . import _validate as V
from ._codegen import (
    CAST_KINDS,
    bf16_gemm_kernel_name,
    bf16_gemm_source,
    fp8_cast_source,
    fp8_gemm_kernel_name,
    fp8_gemm_source,
)
from ._constants import TMA_ALIGNMENT_BYTES
from ._ops import _impl, check_contiguous_out, check_gemm_out, check_masked_out, gemm_output, masked_output

_OUT_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32"}


def check_gpu_k(k: int) -> None:
    if k % 16:
        raise ValueError(f"K must be a multiple of 16 on the GPU (TMA row alignment), got K = {k}")


def check_gpu_gemm(a, b, k, out) -> None:
    """What the SM90 kernel needs beyond the op contract (TMA alignment, 32-bit extents); clear errors instead of bad
    launches. a / b / out as the op received them: a leading group dim counts into the rows the kernel sees."""
    check_gpu_k(k)
    for name, t in (("a", a), ("b", b), ("out", out)):
        V.check_gpu_extent(name, t)
    for name, t in (("a", a), ("b", b)):
        if t.stride(-2) % TMA_ALIGNMENT_BYTES or t.data_ptr() % TMA_ALIGNMENT_BYTES:
            raise ValueError(f"{name} must start at a 16-byte aligned address with a row stride that is a multiple "
                             f"of 16 elements on the GPU, got row stride {t.stride(-2)} at offset "
                             f"{t.data_ptr() % TMA_ALIGNMENT_BYTES} mod 16")


# Bounded: the contiguous layout's total M changes from call to call.
@functools.lru_cache(maxsize=4096)
def _config(m, n, k, num_sms, out_dtype, sfb_recipe, has_c, gemm_type, num_groups, expected_m):
    """k_grouped: k is the typical group's K, which only weighs the tile choice (the kernel takes K at run time)."""
    cfg = _heuristics.choose_fp8_gemm_config(
        m, n, k, num_sms=num_sms, out_dtype=out_dtype, sfb_recipe=sfb_recipe, has_c=has_c, gemm_type=gemm_type,
        num_groups=num_groups, expected_m=expected_m)
    kernel_k = 0 if gemm_type == "k_grouped" else k
    key = fp8_gemm_kernel_name(cfg, n, kernel_k)  # readable: it names the kernel in error messages
    _kernels[key] = (functools.partial(fp8_gemm_source, cfg, n, kernel_k), cfg.smem_bytes)
    if _jit.print_configs_enabled():
        print(f"[deepgemm_ops] {gemm_type} m={m} n={n} k={k}: {cfg}", file=sys.stderr)
    return key, list(cfg.as_ints())


# key -> (source thunk -> (source, symbol), dynamic smem bytes) of every kernel planned so far. Which kernels are
# loaded on which device only the host module's registry knows.
_kernels: dict = {}
_lock = threading.Lock()


def ensure_loaded(key: str, device: int) -> None:
    """Compile (JIT, disk-cached) and load kernel ``key`` on ``device`` unless that happened already.

    Loading is not allowed while a stream captures a CUDA graph: refuse with the fix instead of breaking the capture.
    """
    module = _runtime.host_module()
    if module.has_kernel(key, device):
        return
    with _lock:
        if module.has_kernel(key, device):
            return
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"deepgemm_ops: kernel '{key}' is not loaded on cuda:{device} and the current stream is "
                               "capturing a CUDA graph, where kernels cannot be compiled or loaded. Call "
                               "deepgemm_ops.warmup(...) with this shape (or run the op once) before capturing.")
        make_source, smem = _kernels[key]
        source, symbol = make_source()
        cubin = _jit.compile_cubin(source, symbol)
        _runtime.check(module.load_kernel(key, device, str(cubin), symbol, smem))


# The door's GEMM type codes (GemmType in csrc/kernels/params.h).
_GEMM_TYPES = {"normal": 0, "contiguous": 1, "masked": 2, "k_grouped": 3}
# out_dtype -> the door's code (-1: None); any other value misses the door, and the planning path raises.
_OUT_CODES = {None: -1, torch.bfloat16: 0, torch.float32: 1}


def _door(gemm_type: str, a, sfa, b, sfb, c=None, out=None, grouped_layout=None, expected_m=0, out_dtype=None,
          bias=None):
    """One pass through the C++ door (csrc/host/gemm_door.cpp): the output / True when an installed plan launched,
    None when the call must be planned first."""
    result = _runtime.host_module().gemm_door(_GEMM_TYPES[gemm_type], a, sfa, b, sfb, c, bias, out, grouped_layout,
                                              expected_m, _OUT_CODES.get(out_dtype, 2), _sms.num_sms_setting())
    if isinstance(result, str):
        _runtime.check(result)
    return result


def _plan_and_launch(gemm_type, a, sfa, b, sfb, c, out, p: V.GemmProblem, grouped_layout=None, expected_m=None,
                     bias=None):
    """The planning path, for a call the door did not take: the problem is validated (p); zero-sized problems are
    finished here; otherwise choose the config, compile and load its kernel, install the plan and launch through
    the door. Operands the door does not read in place (grouped B whose groups are not back to back, C with a
    column stride) are made so first."""
    if p.m == 0 or p.n == 0 or p.num_groups == 0:
        return
    if p.k == 0:  # empty sum over K: D = C (or zeros), + bias
        out.copy_(c) if c is not None else out.zero_()
        if bias is not None:
            out.add_(bias)
        return
    check_gpu_gemm(a, b, p.k, out)
    if c is not None and c.stride(-1) != 1:
        c = c.contiguous()
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()
    # Grouped operands as one buffer of rows (a copy only when the groups are apart).
    if a.dim() == 3:
        a = a.reshape(-1, p.k).view(a.shape)
    if b.dim() == 3:
        b = b.reshape(-1, p.k).view(b.shape)
    if grouped_layout is not None:
        grouped_layout = grouped_layout.contiguous()
    device = a.device.index
    num_sms = _sms.get_num_sms(device)
    out_dtype = _OUT_DTYPE_NAMES[out.dtype]
    key, cfg = _config(p.m, p.n, p.k, num_sms, out_dtype, p.sfb_recipe, c is not None, gemm_type, p.num_groups,
                       expected_m)
    ensure_loaded(key, device)
    module = _runtime.host_module()
    _runtime.check(module.install_gemm_plan(
        device, _GEMM_TYPES[gemm_type], p.m, p.n, p.k, p.num_groups, expected_m or 0,
        _heuristics.SFB_RECIPES.index(p.sfb_recipe), _heuristics.OUT_DTYPES.index(out_dtype), c is not None,
        num_sms, key, cfg))
    if _door(gemm_type, a, sfa, b, sfb, c, out, grouped_layout, expected_m or 0, bias=bias) is not True:
        raise RuntimeError(f"deepgemm_ops internal error: the GEMM door refused a validated {gemm_type} call after "
                           f"its plan ({key}) was installed")


def clear_plans() -> int:
    """Forget every installed GEMM plan and the memoized config choices (the next call of each problem plans again
    from the heuristic, e.g. a patched one; compiled kernels stay loaded). For tools and tests. Returns how many plans
    there were."""
    _config.cache_clear()
    return _runtime.host_module().clear_gemm_plans()


# The ops' CUDA kernels are these Python functions, each a trampoline into the C++ door: a miss must run the planning
# path (validation messages, heuristics, codegen, JIT), which lives in Python, so a kernel registered in C++ with
# TORCH_LIBRARY_IMPL would have to call back into Python under the GIL on every miss. The trampoline costs about a
# microsecond per call (fp8_gemm_nt 10 µs per eager call against aten mm's 11 on the H200, docs/PERF.md).
@_impl("fp8_gemm_nt", "CUDA")
def _fp8_gemm_nt_cuda(a, sfa, b, sfb, c=None, out_dtype=None, bias=None):
    out = _door("normal", a, sfa, b, sfb, c, out_dtype=out_dtype, bias=bias)
    if out is not None:
        return out
    p = V.check_gemm_nt(a, sfa, b, sfb, c, out_dtype, bias)
    out = gemm_output(a, p)
    _plan_and_launch("normal", a, sfa, b, sfb, c, out, p, bias=bias)
    return out


@_impl("fp8_gemm_nt_out", "CUDA")
def _fp8_gemm_nt_out_cuda(a, sfa, b, sfb, out, c=None, bias=None):
    if _door("normal", a, sfa, b, sfb, c, out, bias=bias) is None:
        _plan_and_launch("normal", a, sfa, b, sfb, c, out, check_gemm_out(a, sfa, b, sfb, out, c, bias), bias=bias)


# Grouped layouts: m_indices / masked_m are read by the kernel on the device (no host sync, CUDA-graph safe).
@_impl("m_grouped_fp8_gemm_nt_contiguous", "CUDA")
def _m_grouped_fp8_gemm_nt_contiguous_cuda(a, sfa, b, sfb, m_indices):
    out = _door("contiguous", a, sfa, b, sfb, grouped_layout=m_indices)
    if out is not None:
        return out
    p = V.check_grouped_contiguous(a, sfa, b, sfb, m_indices)
    out = gemm_output(a, p)
    _plan_and_launch("contiguous", a, sfa, b, sfb, None, out, p, m_indices)
    return out


@_impl("m_grouped_fp8_gemm_nt_contiguous_out", "CUDA")
def _m_grouped_fp8_gemm_nt_contiguous_out_cuda(a, sfa, b, sfb, m_indices, out):
    if _door("contiguous", a, sfa, b, sfb, out=out, grouped_layout=m_indices) is None:
        p = check_contiguous_out(a, sfa, b, sfb, m_indices, out)
        _plan_and_launch("contiguous", a, sfa, b, sfb, None, out, p, m_indices)


@_impl("m_grouped_fp8_gemm_nt_masked", "CUDA")
def _m_grouped_fp8_gemm_nt_masked_cuda(a, sfa, b, sfb, masked_m, expected_m):
    out = _door("masked", a, sfa, b, sfb, grouped_layout=masked_m, expected_m=_door_int(expected_m))
    if out is not None:
        return out
    p = V.check_grouped_masked(a, sfa, b, sfb, masked_m, expected_m)
    out = masked_output(a, p)
    _plan_and_launch("masked", a, sfa, b, sfb, None, out, p, masked_m, expected_m)
    return out


@_impl("m_grouped_fp8_gemm_nt_masked_out", "CUDA")
def _m_grouped_fp8_gemm_nt_masked_out_cuda(a, sfa, b, sfb, masked_m, expected_m, out):
    if _door("masked", a, sfa, b, sfb, out=out, grouped_layout=masked_m, expected_m=_door_int(expected_m)) is None:
        p = check_masked_out(a, sfa, b, sfb, masked_m, expected_m, out)
        _plan_and_launch("masked", a, sfa, b, sfb, None, out, p, masked_m, expected_m)


def _door_int(value) -> int:
    """expected_m as the door takes it: a plain int, 0 (a miss) for anything the validation must look at."""
    return value if type(value) is int else 0


# --- BF16 GEMMs: the same trampolines into their own C++ door (csrc/host/bf16_gemm_door.cpp) ------------------------

_BF16_LAYOUT_CODES = {layout: i for i, layout in enumerate(_bf16_heuristics.BF16_LAYOUTS)}


@functools.lru_cache(maxsize=4096)
def _bf16_config(m, n, k, num_sms, layout, out_dtype, has_c, gemm_type, num_groups, expected_m):
    cfg = _bf16_heuristics.choose_bf16_gemm_config(
        m, n, k, num_sms=num_sms, layout=layout, out_dtype=out_dtype, has_c=has_c, gemm_type=gemm_type,
        num_groups=num_groups, expected_m=expected_m)
    key = bf16_gemm_kernel_name(cfg, n, k)
    _kernels[key] = (functools.partial(bf16_gemm_source, cfg, n, k), cfg.smem_bytes)
    if _jit.print_configs_enabled():
        print(f"[deepgemm_ops] bf16 {gemm_type} {layout} m={m} n={n} k={k}: {cfg}", file=sys.stderr)
    return key, list(cfg.as_ints())


def _bf16_door(layout, gemm_type, a, b, c=None, out=None, grouped_layout=None, expected_m=0, out_dtype=None):
    result = _runtime.host_module().bf16_gemm_door(
        _BF16_LAYOUT_CODES[layout], _GEMM_TYPES[gemm_type], a, b, c, out, grouped_layout, expected_m,
        _OUT_CODES.get(out_dtype, 2), _sms.num_sms_setting())
    if isinstance(result, str):
        _runtime.check(result)
    return result


def _bf16_plan_and_launch(layout, gemm_type, a, b, c, out, p: V.GemmProblem, grouped_layout=None, expected_m=None):
    """The BF16 planning path (as _plan_and_launch): zero-sized problems end here; otherwise the GPU rule, then
    config, JIT, plan install and the launch through the door."""
    if p.m == 0 or p.n == 0 or p.num_groups == 0:
        return
    if p.k == 0:  # empty sum over K: D = C (or zeros)
        out.copy_(c) if c is not None else out.zero_()
        return
    # Grouped operands as one buffer of rows (a copy only when the groups are apart); C with rows TMA-free reads take.
    if a.dim() == 3:
        a = a.reshape(-1, p.k).view(a.shape)
    if b.dim() == 3:
        b = b.reshape(-1, p.k).view(b.shape)
    V.check_bf16_gpu(layout, a, b, out)
    if c is not None and (c.stride(-1) != 1 or (p.m > 1 and c.stride(0) < p.n)):
        c = c.contiguous()
    if grouped_layout is not None:
        grouped_layout = grouped_layout.contiguous()
    device = a.device.index
    num_sms = _sms.get_num_sms(device)
    out_dtype = _OUT_DTYPE_NAMES[out.dtype]
    key, cfg = _bf16_config(p.m, p.n, p.k, num_sms, layout, out_dtype, c is not None, gemm_type, p.num_groups,
                            expected_m)
    ensure_loaded(key, device)
    module = _runtime.host_module()
    _runtime.check(module.install_bf16_gemm_plan(
        device, _BF16_LAYOUT_CODES[layout], _GEMM_TYPES[gemm_type], p.m, p.n, p.k, p.num_groups, expected_m or 0,
        _heuristics.OUT_DTYPES.index(out_dtype), c is not None, num_sms, key, cfg))
    if _bf16_door(layout, gemm_type, a, b, c, out, grouped_layout, expected_m or 0) is not True:
        raise RuntimeError(f"deepgemm_ops internal error: the BF16 GEMM door refused a validated {gemm_type} "
                           f"{layout} call after its plan ({key}) was installed")


def _register_bf16_layout(layout: str) -> None:
    name = f"bf16_gemm_{layout}"

    def functional(a, b, c=None, out_dtype=None):
        out = _bf16_door(layout, "normal", a, b, c, out_dtype=out_dtype)
        if out is not None:
            return out
        p = V.check_bf16_gemm(layout, a, b, c, out_dtype)
        out = gemm_output(a, p)
        _bf16_plan_and_launch(layout, "normal", a, b, c, out, p)
        return out

    def out_form(a, b, out, c=None):
        if _bf16_door(layout, "normal", a, b, c, out) is None:
            _bf16_plan_and_launch(layout, "normal", a, b, c, out, _ops.check_bf16_out(layout, a, b, out, c))

    for suffix, f in (("", functional), ("_out", out_form)):
        f.__name__ = f"_{name}{suffix}_cuda"
        _impl(name + suffix, "CUDA")(f)


for _layout_name in V.BF16_LAYOUTS:
    _register_bf16_layout(_layout_name)


@_impl("m_grouped_bf16_gemm_nt_contiguous", "CUDA")
def _m_grouped_bf16_gemm_nt_contiguous_cuda(a, b, m_indices):
    out = _bf16_door("nt", "contiguous", a, b, grouped_layout=m_indices)
    if out is not None:
        return out
    p = V.check_grouped_bf16_contiguous(a, b, m_indices)
    out = gemm_output(a, p)
    _bf16_plan_and_launch("nt", "contiguous", a, b, None, out, p, m_indices)
    return out


@_impl("m_grouped_bf16_gemm_nt_contiguous_out", "CUDA")
def _m_grouped_bf16_gemm_nt_contiguous_out_cuda(a, b, m_indices, out):
    if _bf16_door("nt", "contiguous", a, b, out=out, grouped_layout=m_indices) is None:
        p = _ops.check_grouped_bf16_contiguous_out(a, b, m_indices, out)
        _bf16_plan_and_launch("nt", "contiguous", a, b, None, out, p, m_indices)


@_impl("m_grouped_bf16_gemm_nt_masked", "CUDA")
def _m_grouped_bf16_gemm_nt_masked_cuda(a, b, masked_m, expected_m):
    out = _bf16_door("nt", "masked", a, b, grouped_layout=masked_m, expected_m=_door_int(expected_m))
    if out is not None:
        return out
    p = V.check_grouped_bf16_masked(a, b, masked_m, expected_m)
    out = masked_output(a, p)
    _bf16_plan_and_launch("nt", "masked", a, b, None, out, p, masked_m, expected_m)
    return out


@_impl("m_grouped_bf16_gemm_nt_masked_out", "CUDA")
def _m_grouped_bf16_gemm_nt_masked_out_cuda(a, b, masked_m, expected_m, out):
    if _bf16_door("nt", "masked", a, b, out=out, grouped_layout=masked_m, expected_m=_door_int(expected_m)) is None:
        p = _ops.check_grouped_bf16_masked_out(a, b, masked_m, expected_m, out)
        _bf16_plan_and_launch("nt", "masked", a, b, None, out, p, masked_m, expected_m)


def clear_bf16_plans() -> int:
    """Forget every installed BF16 GEMM plan and the memoized config choices (as clear_plans: without the latter a
    patched heuristic would never be asked again). For tools and tests."""
    _bf16_config.cache_clear()
    return _runtime.host_module().clear_bf16_gemm_plans()


# --- k-grouped FP8 GEMM (weight gradient): the FP8 kernel family's k_grouped type, its own door
# (csrc/host/k_grouped_gemm_door.cpp) and the FP8 door's plan table


def _k_grouped_door(a, sfa, b, sfb, ks, c=None, out=None):
    result = _runtime.host_module().k_grouped_gemm_door(a, sfa, b, sfb, ks, c, out, _sms.num_sms_setting())
    if isinstance(result, str):
        _runtime.check(result)
    return result


def _k_grouped_plan_and_launch(a, sfa, b, sfb, ks, c, out, p: V.GemmProblem) -> None:
    """The planning path of the k-grouped op (as _plan_and_launch). The kernel reads ks on the device, so the plan
    (and its kernel) serves every split of sum(K) into groups. C and out are read and written as the rows of one
    [G * M, N] matrix; those laid out otherwise go through a contiguous copy."""
    if p.m == 0 or p.n == 0 or p.num_groups == 0:
        return
    if p.k == 0:  # every group is empty: D = C (or zeros)
        out.copy_(c) if c is not None else out.zero_()
        return
    V.check_k_grouped_gpu(p.k)
    check_gpu_gemm(a, b, p.k, out)
    device = a.device.index
    num_sms = _sms.get_num_sms(device)
    group_k = _heuristics.BLOCK_K * V.ceil_div(p.k, _heuristics.BLOCK_K * p.num_groups)
    key, cfg = _config(p.m, p.n, group_k, num_sms, "fp32", "1x128", c is not None, "k_grouped", p.num_groups, None)
    ensure_loaded(key, device)
    _runtime.check(_runtime.host_module().install_gemm_plan(
        device, _GEMM_TYPES["k_grouped"], p.m, p.n, p.k, p.num_groups, 0, _heuristics.SFB_RECIPES.index("1x128"),
        _heuristics.OUT_DTYPES.index("fp32"), c is not None, num_sms, key, cfg))
    if _k_grouped_door(a, sfa, b, sfb, ks, c, out) is True:
        return
    result = _k_grouped_door(a, sfa, b, sfb, ks, None if c is None else c.contiguous())
    if result is None:
        raise RuntimeError(f"deepgemm_ops internal error: the k-grouped GEMM door refused a validated call after its "
                           f"plan ({key}) was installed")
    out.copy_(result)


@_impl("k_grouped_fp8_gemm_nt_contiguous", "CUDA")
def _k_grouped_fp8_gemm_nt_contiguous_cuda(a, sfa, b, sfb, ks, c=None):
    out = _k_grouped_door(a, sfa, b, sfb, ks, c)
    if out is not None:
        return out
    p = V.check_k_grouped(a, sfa, b, sfb, ks, c)
    out = _ops.k_grouped_output(a, p)
    _k_grouped_plan_and_launch(a, sfa, b, sfb, ks, c, out, p)
    return out


@_impl("k_grouped_fp8_gemm_nt_contiguous_out", "CUDA")
def _k_grouped_fp8_gemm_nt_contiguous_out_cuda(a, sfa, b, sfb, ks, out, c=None):
    if _k_grouped_door(a, sfa, b, sfb, ks, c, out) is None:
        p = _ops.check_k_grouped_out(a, sfa, b, sfb, ks, out, c)
        _k_grouped_plan_and_launch(a, sfa, b, sfb, ks, c, out, p)


# --- casts -------------------------------------------------------------------------------------------------------

# x dtype -> its CastDtype code (csrc/kernels/params.h). The host module answers a missing kernel with its CastKind
# (csrc/host/cast_ops.cpp), an index into _codegen.CAST_KINDS.
_CAST_DTYPE_CODES = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}


def _fused_cast(x: torch.Tensor, per_block: bool, mn_major_scales: bool, with_transpose: bool = False,
                mn_major_scales_t: bool = False, with_sums: bool = False):
    """(q, sf) (with_transpose: (q, sf, q_t, sf_t); with_sums: and x's fp32 column sums) from the fused kernel that
    reads x in place, or None (then the torch composite runs). The layout rules live in C++
    (csrc/host/cast_ops.cpp, fused_cast_reads); the first cast of a kind on a device compiles, loads and installs its
    kernel."""
    module = _runtime.host_module()
    code = _CAST_DTYPE_CODES[x.dtype]
    args = (x, per_block, mn_major_scales, with_transpose, mn_major_scales_t, with_sums, code)
    out = module.fp8_cast(*args)
    if isinstance(out, int):  # the kernel of this kind is not installed on this device yet
        kind, dtype = CAST_KINDS[out], V.dtype_name(x.dtype)
        key = f"fp8_{kind}_cast {dtype}"
        _kernels.setdefault(key, (functools.partial(fp8_cast_source, kind, dtype), 0))
        ensure_loaded(key, x.device.index)
        _runtime.check(module.install_cast_kernel(x.device.index, out, code, key))
        out = module.fp8_cast(*args)
    if isinstance(out, str):
        _runtime.check(out)
    return out


@_impl("per_token_cast_to_fp8", "CUDA")
def _per_token_cast_to_fp8_cuda(x, group_size=128, mn_major_scales=False):
    V.check_cast_input("x", x, "group_size", group_size)
    out = _fused_cast(x, False, mn_major_scales) if group_size == V.SCALE_BLOCK else None
    return out if out is not None else _layout.per_token_cast(x, group_size, mn_major_scales)


@_impl("per_block_cast_to_fp8", "CUDA")
def _per_block_cast_to_fp8_cuda(x, block_size=128):
    V.check_cast_input("x", x, "block_size", block_size)
    out = _fused_cast(x, True, False) if block_size == V.SCALE_BLOCK else None
    return out if out is not None else _layout.per_block_cast(x, block_size)


@_impl("per_block_cast_to_fp8_and_transpose", "CUDA")
def _per_block_cast_to_fp8_and_transpose_cuda(x):
    V.check_cast_input("x", x, "block_size", V.SCALE_BLOCK)
    out = _fused_cast(x, True, False, with_transpose=True)
    return out if out is not None else _layout.per_block_cast_and_transpose(x)


@_impl("per_token_cast_to_fp8_and_transpose", "CUDA")
def _per_token_cast_to_fp8_and_transpose_cuda(x, mn_major_scales=False, mn_major_scales_t=False):
    V.check_cast_input("x", x, "group_size", V.SCALE_BLOCK)
    out = _fused_cast(x, False, mn_major_scales, with_transpose=True, mn_major_scales_t=mn_major_scales_t)
    return out if out is not None else _layout.per_token_cast_and_transpose(x, mn_major_scales, mn_major_scales_t)


@_impl("per_token_cast_to_fp8_transpose_and_sum", "CUDA")
def _per_token_cast_to_fp8_transpose_and_sum_cuda(x, mn_major_scales=False, mn_major_scales_t=False):
    V.check_cast_input("x", x, "group_size", V.SCALE_BLOCK)
    out = _fused_cast(x, False, mn_major_scales, with_transpose=True, mn_major_scales_t=mn_major_scales_t,
                      with_sums=True)
    return out if out is not None else _layout.per_token_cast_transpose_and_sum(x, mn_major_scales, mn_major_scales_t)


def load_kernel(key: str, cfg, n: int, k: int, device: int) -> None:
    """Compile (disk-cached) and load a kernel planned outside the op path (``precompile``): the ops find it by the
    same key, which names every config field."""
    _kernels.setdefault(key, (functools.partial(fp8_gemm_source, cfg, n, k), cfg.smem_bytes))
    ensure_loaded(key, device)


def warmup(m: int, n: int, k: int, *, out_dtype: torch.dtype | None = None, sfb_recipe: str = "128x128",
           with_c: bool = False, gemm_type: str = "normal", num_groups: int = 1, expected_m: int | None = None,
           device=None) -> None:
    """Compile and load the kernel that a GEMM of this shape will use, so that the call can then be captured in a
    CUDA graph (kernels cannot be compiled or loaded during capture). For many shapes at once use
    :func:`deepgemm_ops.precompile` with ``device=``: one process compiles them faster together.

    m, n, k as the op sees them: ``fp8_gemm_nt``: A [m, k], B [n, k]; ``gemm_type="contiguous"``: m = rows of A
    (all groups); ``"masked"``: m = Mmax, with ``num_groups`` and the call's ``expected_m``; ``"k_grouped"``
    (``out_dtype=torch.float32, sfb_recipe="1x128"``): A [m, sum(K)], k = sum(K) / num_groups rounded up to 128.
    """
    from ._precompile import GemmCall, precompile

    device = torch.device("cuda" if device is None else device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    dtype = V.resolve_out_dtype(out_dtype, with_c)
    if min(m, n, k, num_groups) < 1:
        return  # these shapes launch no kernel
    check_gpu_k(k)
    with torch.cuda.device(device):
        call = GemmCall(m, n, k, gemm_type, num_groups, expected_m, _OUT_DTYPE_NAMES[dtype], sfb_recipe, with_c)
        precompile([call], num_sms=_sms.get_num_sms(device.index), device=device.index)
