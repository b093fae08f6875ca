"""How many SMs the persistent GPU kernels may occupy (DeepGEMM's set_num_sms / get_num_sms)."""

from __future__ import annotations

import torch

_num_sms: int | None = None


def set_num_sms(num_sms: int) -> None:
    """Limit the GPU kernels to ``num_sms`` SMs (e.g. to leave SMs to a concurrent communication kernel)."""
    global _num_sms
    if not isinstance(num_sms, int) or isinstance(num_sms, bool) or num_sms < 1:
        raise ValueError(f"num_sms must be an int >= 1, got {num_sms!r}")
    if torch.cuda.is_available():
        available = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        if num_sms > available:
            raise ValueError(f"num_sms must be <= the {available} SMs of the current device, got {num_sms}")
    _num_sms = num_sms


def get_num_sms(device: int | None = None) -> int:
    """The value given to ``set_num_sms``, else the SM count of CUDA device ``device`` (default: the current one; the
    ops pass their inputs' device, which need not be the current one)."""
    if _num_sms is not None:
        return _num_sms
    if not torch.cuda.is_available():
        raise RuntimeError("get_num_sms: no CUDA device is available and set_num_sms(n) was not called")
    index = torch.cuda.current_device() if device is None else device
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms_setting() -> int:
    """The set_num_sms value, 0 when unset (the C++ GEMM door then reads the SM count of the inputs' device itself)."""
    return _num_sms or 0
