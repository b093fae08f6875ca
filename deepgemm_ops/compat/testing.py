"""``deep_gemm.testing``: the timing and comparison helpers DeepGEMM's test scripts import (our implementations)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import torch

_FLUSH_BYTES = 256 << 20


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - 2<x, y> / (|x|² + |y|²): 0 for equal tensors, scale-aware, symmetric."""
    x, y = x.double(), y.double()
    return 1 - 2 * (x * y).sum() / (x * x + y * y).sum()


def count_bytes(*tensors) -> int:
    """Bytes of every tensor given (nested tuples / lists walked, None skipped)."""
    total = 0
    for t in tensors:
        if isinstance(t, (tuple, list)):
            total += count_bytes(*t)
        elif t is not None:
            total += t.numel() * t.element_size()
    return total


def bench(fn, num_warmups: int = 5, num_tests: int = 10, high_precision: bool = False) -> float:
    """Mean seconds per call of ``fn`` over ``num_tests`` back-to-back calls (CUDA events), L2 flushed first.
    ``high_precision``: a large matmul is queued first so that host launch time cannot show up as GPU idle time."""
    torch.cuda.synchronize()
    torch.empty(_FLUSH_BYTES, dtype=torch.uint8, device="cuda").zero_()
    for _ in range(num_warmups):
        fn()
    if high_precision:
        big = torch.randn(8192, 8192, device="cuda")
        big @ big
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(num_tests):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / num_tests


@contextlib.contextmanager
def _quiet(enabled: bool):
    if not enabled:
        yield
        return
    with open(os.devnull, "w") as devnull:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _call_seconds(fn, num_tests: int, flush: torch.Tensor | None) -> float:
    """Mean seconds per call of fn between CUDA events (L2 flushed before each call when flush is given)."""
    total = 0.0
    for _ in range(num_tests):
        if flush is not None:
            flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        total += start.elapsed_time(end) / 1e3
    return total / num_tests


def bench_kineto(fn, kernel_names, num_tests: int = 30, suppress_kineto_output: bool = False,
                 trace_path: str | None = None, flush_l2: bool = True, with_multiple_kernels: bool = False):
    """Mean GPU seconds per call of the kernels whose names contain ``kernel_names`` (a string, or a tuple for one
    result each), measured with the torch profiler over ``num_tests`` calls, L2 flushed before each. Unless
    ``with_multiple_kernels``, each name must match exactly one kernel.

    The names are DeepGEMM's kernel names. Where ours differ (e.g. its ``transpose`` kernel of the scale-layout
    change, which is a copy here), a name that matches no kernel times the whole call instead, between CUDA events,
    with a warning saying so."""
    if not isinstance(kernel_names, (str, tuple)):
        raise ValueError(f"kernel_names must be a str or a tuple of str, got {type(kernel_names).__name__}")
    names = (kernel_names,) if isinstance(kernel_names, str) else kernel_names
    fn()
    flush = torch.empty(_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    with _quiet(suppress_kineto_output):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(num_tests):
                if flush_l2:
                    flush.zero_()
                fn()
            torch.cuda.synchronize()
    if trace_path is not None:
        prof.export_chrome_trace(trace_path)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    times = []
    for name in names:
        matched = [e for e in events if name in e.name]
        kinds = {e.name for e in matched}
        if not matched:
            warnings.warn(f"bench_kineto: no kernel of this library is named like DeepGEMM's {name!r}; timing the "
                          "whole call instead", stacklevel=2)
            times.append(_call_seconds(fn, num_tests, flush if flush_l2 else None))
            continue
        if len(kinds) != 1 and not with_multiple_kernels:
            raise RuntimeError(f"bench_kineto: kernel name {name!r} matched {sorted(kinds)} (expected one kernel)")
        times.append(sum(e.device_time for e in matched) / 1e6 / num_tests)
    return times[0] if isinstance(kernel_names, str) else tuple(times)


__all__ = ["bench", "bench_kineto", "calc_diff", "count_bytes"]
