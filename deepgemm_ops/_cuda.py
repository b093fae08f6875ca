"""CUDA implementations of the GEMM ops: shared validation, the layouts the kernel reads, a memoized config, the JIT
kernel for it, one launch on the current stream of the inputs' device.

Registering a CUDA kernel initialises nothing: the host module is built and kernels are compiled on first use.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Optional

import torch

from . import _heuristics, _jit, _layout, _runtime, _sms
from ._codegen import fp8_gemm_kernel_name, fp8_gemm_source
from . import _validate as V
from ._ops import _impl, check_gemm_out, gemm_output

_OUT_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32"}
# TMA: every non-innermost global stride and every base address must be a multiple of 16 bytes.
_TMA_ALIGN = 16


def check_gpu_k(k: int) -> None:
    if k % 16:
        raise ValueError(f"K must be a multiple of 16 on the GPU (TMA row alignment), got K = {k}")


def check_gpu_gemm(a, b, k) -> None:
    """What the SM90 kernel needs beyond the op contract (TMA alignment); clear errors instead of bad launches."""
    check_gpu_k(k)
    for name, t in (("a", a), ("b", b)):
        if t.stride(-2) % _TMA_ALIGN or t.data_ptr() % _TMA_ALIGN:
            raise ValueError(f"{name} must start at a 16-byte aligned address with a row stride that is a multiple "
                             f"of 16 elements on the GPU, got row stride {t.stride(-2)} at offset "
                             f"{t.data_ptr() % _TMA_ALIGN} mod 16")


@functools.lru_cache(maxsize=None)
def _config(m, n, k, num_sms, out_dtype, sfb_recipe, has_c, gemm_type, num_groups, expected_m):
    cfg = _heuristics.choose_fp8_gemm_config(
        m, n, k, num_sms=num_sms, out_dtype=out_dtype, sfb_recipe=sfb_recipe, has_c=has_c, gemm_type=gemm_type,
        num_groups=num_groups, expected_m=expected_m)
    key = kernel_key(cfg, n, k)
    _kernels[key] = (cfg, n, k)
    if _jit.print_configs_enabled():
        print(f"[deepgemm_ops] {gemm_type} m={m} n={n} k={k}: {cfg}", file=sys.stderr)
    return key, list(cfg.as_ints())


def kernel_key(cfg, n, k) -> str:
    return fp8_gemm_kernel_name(cfg, n, k)


# key -> (config, n, k): what the provider compiles when the C++ registry misses a key.
_kernels: dict = {}
_module_lock = threading.Lock()
_module = None


def _provide(key: str):
    cfg, n, k = _kernels[key]
    source, symbol = fp8_gemm_source(cfg, n, k)
    return str(_jit.compile_cubin(source, symbol)), symbol, cfg.smem_bytes


def host():
    """The host module with this package's kernel provider installed (built on first use)."""
    global _module
    if _module is None:
        with _module_lock:
            if _module is None:
                module = _runtime.host_module()
                module.set_kernel_provider(_provide)
                _module = module
    return _module


def _launch_dense(a, sfa, b, sfb, c, out, p: V.GemmProblem) -> None:
    if p.m == 0 or p.n == 0:
        return
    if p.k == 0:  # empty sum over K: D = C (or zeros)
        out.copy_(c) if c is not None else out.zero_()
        return
    check_gpu_gemm(a, b, p.k)
    sfa = _layout.to_mn_major_tma_aligned(sfa)
    if c is not None and c.stride(-1) != 1:
        c = c.contiguous()
    key, cfg = _config(p.m, p.n, p.k, _sms.get_num_sms(), _OUT_DTYPE_NAMES[out.dtype], p.sfb_recipe, c is not None,
                       "normal", 1, None)
    # The M stride of the MN-major sfa; with one K block the tensor's own stride along K is arbitrary.
    ld_sfa = _layout.get_tma_aligned_size(p.m, 4)
    host().fp8_gemm(key, cfg, a, sfa, ld_sfa, b, sfb.contiguous(), c, out, None, p.m, p.n, p.k, 1)


@_impl("fp8_gemm_nt", "CUDA")
def _(a, sfa, b, sfb, c=None, out_dtype=None):
    p = V.check_gemm_nt(a, sfa, b, sfb, c, out_dtype)
    out = gemm_output(a, p)
    _launch_dense(a, sfa, b, sfb, c, out, p)
    return out


@_impl("fp8_gemm_nt_out", "CUDA")
def _(a, sfa, b, sfb, out, c=None):
    p = check_gemm_out(a, sfa, b, sfb, out, c)
    _launch_dense(a, sfa, b, sfb, c, out, p)


def _not_yet(name):
    def kernel(*args, **kwargs):
        raise NotImplementedError(f"deepgemm_ops: {name} has no GPU kernel yet; run it on CPU tensors (reference "
                                  f"kernel) meanwhile")

    _impl(name, "CUDA")(kernel)


for _name in ("m_grouped_fp8_gemm_nt_contiguous", "m_grouped_fp8_gemm_nt_contiguous_out",
              "m_grouped_fp8_gemm_nt_masked", "m_grouped_fp8_gemm_nt_masked_out"):
    _not_yet(_name)


def warmup(m: int, n: int, k: int, *, out_dtype: torch.dtype = torch.bfloat16, sfb_recipe: str = "128x128",
           with_c: bool = False, device: Optional[torch.device] = None) -> None:
    """Compile and load the ``fp8_gemm_nt`` kernel that an [m, k] x [n, k] call will use, so that a later call can be
    captured in a CUDA graph (kernels cannot be compiled or loaded during capture)."""
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    dtype = V.resolve_out_dtype(out_dtype, with_c)
    if m < 1 or n < 1 or k < 1:
        return  # these shapes launch no kernel
    check_gpu_k(k)
    with torch.cuda.device(device):
        key, _ = _config(m, n, k, _sms.get_num_sms(), _OUT_DTYPE_NAMES[dtype], sfb_recipe, with_c, "normal", 1, None)
        host().ensure_kernel(key, device.index)
