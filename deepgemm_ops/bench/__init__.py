"""``python -m deepgemm_ops bench``: our kernels against cuBLASLt blockwise FP8, bf16 and torchao, on the GPU.

Modules: ``measure`` (the L2-flushing interleaved timer, copy bandwidth, host time per call: shared by every family),
``dense`` (the seed shapes, host time per op, first call), ``grouped`` (MoE contiguous / masked), ``casts`` (the FP8
casts and an FP8 linear forward), ``cli`` (the command line). Benchmarks report; they assert nothing about speed.
"""

from . import casts, cli, dense, grouped, measure
from .cli import add_arguments, run
from .dense import *  # noqa: F403  (bench.GemmShape, bench.bench_gemm, ...: dense.__all__)
from .measure import *  # noqa: F403  (bench.Timer, bench.host_us_per_call, ...: measure.__all__)

__all__ = ["add_arguments", "casts", "cli", "dense", "grouped", "measure", "run", *dense.__all__, *measure.__all__]
