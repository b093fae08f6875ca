"""Programmatic dependent launch (PDL) of the GPU kernels: DeepGEMM's set_pdl / get_pdl.

With PDL a kernel of this library may be launched while the kernel before it in the stream is still finishing; it
waits for that kernel before it reads or writes global memory, so results do not change, and its launch latency and
prologue hide under the other kernel's tail (docs/PERF.md has the measured gain). On by default; CUDA graphs capture
it as programmatic edges.
"""

from __future__ import annotations

_enabled = True


def set_pdl(enabled: bool) -> None:
    """Launch the library's later kernels with programmatic dependent launch (True, the default) or without."""
    global _enabled
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool, got {type(enabled).__name__}")
    _enabled = enabled
    from . import _runtime  # here: _runtime imports this module

    _runtime.apply_pdl_setting()


def get_pdl() -> bool:
    """Whether the library's kernels are launched with programmatic dependent launch."""
    return _enabled
