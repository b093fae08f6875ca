"""Measurement helpers shared by every benchmark family: the L2-flushing interleaved timer, copy bandwidth, host time
per call, error and rate arithmetic."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

FP8_BYTES, BF16_BYTES, FP32_BYTES = 1, 2, 4


def tflops(flops: int, us: float) -> float:
    return flops / us / 1e6


def gbps(nbytes: int, us: float) -> float:
    return nbytes / us / 1e3


# --- measurement --------------------------------------------------------------------------------------------------


class Timer:
    """Median device time of a callable, L2 flushed before each rep by writing a 256 MB buffer."""

    def __init__(self, device: torch.device, flush_bytes: int = 256 << 20) -> None:
        self.device = device
        self.flush_buffer = torch.empty(flush_bytes, dtype=torch.uint8, device=device)
        self.launch_cover_cycles = 200_000  # ~0.1 ms at Hopper clocks, above any eager call's host time

    def time_us(self, fn: Callable[[], object], reps: int = 30, warmup: int = 5) -> float:
        return self.time_interleaved({"fn": fn}, reps, warmup)["fn"]

    def time_interleaved(self, fns: dict[str, Callable[[], object]], reps: int = 30, warmup: int = 5) -> dict:
        """Median µs of each callable, their reps interleaved (A B A B ...): under FP8 load the clocks drift with
        the power draw (seen here: the same kernel 16% slower half a minute later), and interleaving makes every
        candidate see the same drift, so their ratio stays fair."""
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        events = {name: [] for name in fns}
        for _ in range(reps):
            for name, fn in fns.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                self.flush_buffer.zero_()
                # Keep the GPU busy while the host enqueues the timed call, so a slow host launch cannot show up
                # between the two events as idle GPU time.
                torch.cuda._sleep(self.launch_cover_cycles)
                start.record()
                fn()
                end.record()
                events[name].append((start, end))
        torch.cuda.synchronize(self.device)
        return {name: statistics.median(s.elapsed_time(e) * 1e3 for s, e in pairs) for name, pairs in events.items()}


    def kernel_us(self, fns: dict[str, Callable[[], object]], reps: int = 10) -> dict:
        """Mean GPU time per call of each callable's own kernels (torch profiler; L2 flushed before each call, the
        flush's kernels left out): kernel-only time, to set beside the per-call time, which includes host gaps."""
        for fn in fns.values():
            fn()
        torch.cuda.synchronize(self.device)
        out = {}
        for name, fn in fns.items():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    self.flush_buffer.zero_()
                    fn()
                torch.cuda.synchronize(self.device)
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                       and "FillFunctor" not in e.name and "memset" not in e.name.lower()]
            out[name] = sum(e.device_time for e in kernels) / reps
        return out


def device_copy(moved_bytes: int, device: torch.device) -> Callable[[], object]:
    """A device-to-device copy that moves moved_bytes in all: half read, half written."""
    src = torch.empty(moved_bytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def copy_bandwidth_gbps(timer: Timer, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth of an nbytes copy, counting bytes read + written."""
    us = timer.time_us(device_copy(2 * nbytes, timer.device), reps=10, warmup=2)
    return gbps(2 * nbytes, us)


def host_us_per_call(fn: Callable[[], object], calls: int = 2000, repeats: int = 5) -> float:
    """Host time per eager call: a tight loop timed on the CPU clock, best of `repeats` (the GPU drains between)."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return best


def max_rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (elementwise relative error is meaningless near zero outputs)."""
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


__all__ = [
    "BF16_BYTES",
    "FP32_BYTES",
    "FP8_BYTES",
    "Timer",
    "copy_bandwidth_gbps",
    "device_copy",
    "gbps",
    "host_us_per_call",
    "max_rel_error",
    "tflops",
]
