"""Compile the kernels a set of GEMM problems will use, ahead of time: ``python -m deepgemm_ops precompile`` and
:func:`precompile` (which :func:`deepgemm_ops.warmup` uses to compile and load one problem's kernel).

A problem is one op call's shape (:class:`GemmCall`); the heuristics map it to a kernel configuration, problems that
map to the same kernel share it (M is a run-time argument of every kernel), and each kernel not yet in the disk cache
is compiled. Kernels compile in batches of BATCH per NVRTC program, with a precompiled header of the CUTLASS/CuTe
includes shared by every program of the process (``_jit.compile_cubins``, ``_nvrtc``); ``workers > 1`` compiles
batches in that many processes (each with its own precompiled header).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TextIO

from . import _codegen, _heuristics, _jit


@dataclass(frozen=True)
class GemmCall:
    """One op call's shape as the kernel choice sees it. ``m``: rows of A (``contiguous``: all groups' rows; ``masked``:
    Mmax, rows per group); ``expected_m``: masked only, the call's hint. ``k_grouped`` (fp32, 1x128): ``k`` is the
    typical group's K, sum(K) / G rounded up to 128, as the op weighs it (its kernel takes K at run time)."""

    m: int
    n: int
    k: int
    gemm_type: str = "normal"
    num_groups: int = 1
    expected_m: int | None = None
    out_dtype: str = "bf16"
    sfb_recipe: str = "128x128"
    with_c: bool = False

    def family(self) -> str:
        """The problems one kernel family row of the summary stands for (everything but M)."""
        groups = f" x{self.num_groups}" if self.gemm_type != "normal" else ""
        extras = [self.out_dtype, f"sfb {self.sfb_recipe}"] + (["+C"] if self.with_c else [])
        return f"{self.gemm_type}{groups} N={self.n} K={self.k} ({', '.join(extras)})"


@dataclass(frozen=True)
class Kernel:
    name: str  # the kernel's symbol: every config field and N, K
    config: _heuristics.GemmConfig
    n: int
    k: int
    family: str  # of the first problem that chose it

    def source(self) -> str:
        return _codegen.fp8_gemm_source(self.config, self.n, self.k)[0]


def plan(calls: Iterable[GemmCall], num_sms: int) -> list[Kernel]:
    """The distinct kernels of ``calls``, in first-use order."""
    kernels: dict[str, Kernel] = {}
    for p in calls:
        cfg = _heuristics.choose_fp8_gemm_config(
            p.m, p.n, p.k, num_sms=num_sms, out_dtype=p.out_dtype, sfb_recipe=p.sfb_recipe, has_c=p.with_c,
            gemm_type=p.gemm_type, num_groups=p.num_groups, expected_m=p.expected_m)
        kernel_k = 0 if p.gemm_type == "k_grouped" else p.k
        name = _codegen.fp8_gemm_kernel_name(cfg, p.n, kernel_k)
        kernels.setdefault(name, Kernel(name, cfg, p.n, kernel_k, p.family()))
    return list(kernels.values())


@dataclass
class Compiled:
    name: str
    family: str
    cached: bool  # found in the disk cache
    seconds: float


# Kernels per NVRTC program (``_jit.compile_cubins``): each link reads the whole program's LTO IR, so larger batches
# make every link slower (DeepSeek-V3's 59 kernels for M <= 512 on the CPU machine: 0.61 s per kernel one per program,
# 0.45 s in batches of 8, 0.50 s in batches of 16; docs/PERF.md).
BATCH = 8


def _compile_batch(kernels: Sequence[Kernel], progress: Callable[[Compiled], None] | None = None) -> list[Compiled]:
    results: list[Compiled] = []
    last = time.perf_counter()

    def on_done(i: int, compiled: bool) -> None:
        nonlocal last
        now = time.perf_counter()
        results.append(Compiled(kernels[i].name, kernels[i].family, not compiled, now - last))
        last = now
        if progress is not None:
            progress(results[-1])

    _jit.compile_cubins([(k.source(), k.name) for k in kernels], on_done)
    return results


def precompile(calls: Iterable[GemmCall], *, num_sms: int | None = None, workers: int = 1,
               progress: Callable[[Compiled, int, int], None] | None = None, device=None) -> list[Compiled]:
    """Compile (JIT, disk-cached) every kernel ``calls`` need; with ``device``, also load them there (the step a
    CUDA graph capture needs first). ``num_sms``: the SM count the kernels are planned for (default: ``set_num_sms``'s
    value or the current device's). ``workers``: compile in that many processes. ``progress(result, done, total)``
    is called after each kernel (with workers, after each batch of kernels)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if num_sms is None:
        from ._sms import get_num_sms

        num_sms = get_num_sms()
    kernels = plan(calls, num_sms)
    # Batches of kernels with the same leading includes: a batch compiles as one NVRTC program per include set.
    ordered = sorted(kernels, key=lambda k: _jit.leading_includes(k.source()))
    batches = [ordered[i:i + BATCH] for i in range(0, len(ordered), BATCH)]
    results: list[Compiled] = []

    def done(result: Compiled) -> None:
        results.append(result)
        if progress is not None:
            progress(result, len(results), len(kernels))

    if workers == 1 or len(batches) <= 1:
        for batch in batches:
            _compile_batch(batch, done)
    else:
        # spawn: a forked child would inherit CUDA or NVRTC state of the parent
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for future in concurrent.futures.as_completed([pool.submit(_compile_batch, b) for b in batches]):
                for result in future.result():
                    done(result)
    if device is not None:
        from . import _cuda

        for kernel in kernels:
            _cuda.load_kernel(kernel.name, kernel.config, kernel.n, kernel.k, device)
    return results


# ---------------------------------------------------------------------------------------------------------------
# GemmCall sets: explicit shapes and named models
# ---------------------------------------------------------------------------------------------------------------

# DeepSeek-V3's projections per GPU as DeepGEMM's tests run them, (N, K): dense — fused q/kv down-projection, q
# up-projection, kv up-projection, output projection, and a tensor-parallel slice pair of the MLP; MoE — one expert's
# gate+up and down projections, grouped over the experts of one GPU.
MODELS = {
    "deepseek-v3": {
        "dense": ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)),
        "moe": ((4096, 7168), (7168, 2048)),
        "contiguous_groups": (4, 8),
        "masked_groups": (1, 2, 4, 8, 16, 32),
    },
}
MAX_MASKED_M = 1024  # masked problems are decode steps: expected_m beyond this is not planned for


def model_problems(model: str, m_values: Sequence[int]) -> list[GemmCall]:
    """Every GEMM of ``model`` at each M in ``m_values``: dense with M rows, contiguous with M rows in all (rounded
    up to the group alignment), masked with M expected rows per group (up to MAX_MASKED_M)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
    spec = MODELS[model]
    align = _heuristics.get_mk_alignment_for_contiguous_layout()
    problems = [GemmCall(m, n, k) for n, k in spec["dense"] for m in m_values]
    for n, k in spec["moe"]:
        problems += [GemmCall(-(-m // align) * align, n, k, "contiguous", g)
                     for g in spec["contiguous_groups"] for m in m_values]
        problems += [GemmCall(m, n, k, "masked", g, m)
                     for g in spec["masked_groups"] for m in m_values if m <= MAX_MASKED_M]
    return problems


def parse_m_values(text: str) -> list[int]:
    """``"64,128,4096"``, ``"1-8192"`` (every M in the range) or a mix: ``"1-256,4096"``."""
    values: set[int] = set()
    for item in text.split(","):
        lo, sep, hi = item.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or int(lo) < 1 or (sep and int(hi) < int(lo)):
            raise argparse.ArgumentTypeError(
                f"expected M values like '64,128' or a range '1-8192' of positive integers, got {item.strip()!r}")
        values.update(range(int(lo), int(hi if sep else lo) + 1))
    return sorted(values)


def parse_problems(text: str) -> list[GemmCall]:
    """Comma-separated ``MxNxK`` (dense), ``contiguous:G:MxNxK`` (M = all groups' rows) or ``masked:G:MxNxK``
    (M = expected rows per group, also used as Mmax)."""
    problems = []
    for item in text.split(","):
        fields = item.strip().lower().split(":")
        gemm_type, groups = ("normal", "1") if len(fields) == 1 else (fields[0], fields[1] if len(fields) == 3 else "")
        dims = fields[-1].split("x")
        if (gemm_type not in ("normal", "contiguous", "masked") or not groups.isdigit() or int(groups) < 1
                or (gemm_type == "normal") != (len(fields) == 1) or len(dims) != 3
                or not all(d.isdigit() and int(d) > 0 for d in dims)):
            raise argparse.ArgumentTypeError(
                f"expected MxNxK, contiguous:G:MxNxK or masked:G:MxNxK with positive integers, got {item.strip()!r}")
        m, n, k = (int(d) for d in dims)
        problems.append(GemmCall(m, n, k, gemm_type, int(groups), m if gemm_type == "masked" else None))
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


class ProgressBar:
    """``done/total [####......] pct elapsed<ETA name`` on one rewritten line (a line per kernel when not a TTY)."""

    def __init__(self, stream: TextIO, width: int = 24):
        self.stream, self.width, self.start = stream, width, time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, result: Compiled, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (total - done)
        filled = self.width * done // total
        line = (f"{done}/{total} [{'#' * filled}{'.' * (self.width - filled)}] {100 * done // total:3d}% "
                f"{elapsed:.1f}s<{eta:.1f}s {result.name}{' (cached)' if result.cached else ''}")
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        if self.tty and done == total:
            self.stream.write("\n")
        self.stream.flush()


def summary_table(results: Sequence[Compiled], wall_s: float) -> str:
    rows: dict[str, list[Compiled]] = {}
    for r in results:
        rows.setdefault(r.family, []).append(r)
    width = max([len("kernel family")] + [len(f) for f in rows])
    lines = [f"{'kernel family':<{width}}  kernels  compiled  cached  compile s"]
    for family, items in rows.items():
        fresh = [r for r in items if not r.cached]
        lines.append(f"{family:<{width}}  {len(items):7d}  {len(fresh):8d}  {len(items) - len(fresh):6d}  "
                     f"{sum(r.seconds for r in fresh):9.1f}")
    fresh = [r for r in results if not r.cached]
    per_kernel = f", {sum(r.seconds for r in fresh) / len(fresh):.2f} s per compiled kernel" if fresh else ""
    lines.append(f"{'total':<{width}}  {len(results):7d}  {len(fresh):8d}  {len(results) - len(fresh):6d}  "
                 f"{sum(r.seconds for r in fresh):9.1f}   (wall {wall_s:.1f} s{per_kernel})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", type=parse_problems, default=[],
                        help="MxNxK (dense), contiguous:G:MxNxK (M = all rows), masked:G:MxNxK (M = expected rows "
                             "per group), comma-separated")
    parser.add_argument("--model", choices=sorted(MODELS), help="every GEMM of a model at each of --m")
    parser.add_argument("--m", type=parse_m_values, default=parse_m_values("1-8192"),
                        help="M values for --model: '64,128,4096', a range '1-8192' (default) or a mix")
    parser.add_argument("--out-dtype", choices=_heuristics.OUT_DTYPES, default="bf16")
    parser.add_argument("--sfb-recipe", choices=_heuristics.SFB_RECIPES, default="128x128")
    parser.add_argument("--with-c", action="store_true",
                        help="dense problems: D = C + A B (fp32 output); the m-grouped ops take no C (--out-dtype)")
    parser.add_argument("--num-sms", type=int, help="plan for this many SMs (default: the current GPU's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="compile in this many processes (default 1; each keeps ~0.4 GB of precompiled headers "
                             "in $TMPDIR while it runs)")
    parser.add_argument("--dry-run", action="store_true", help="list the kernels, compile nothing")
    parser.add_argument("--json", help="write the per-kernel results to this file")


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    problems = list(args.shapes) + (model_problems(args.model, args.m) if args.model else [])
    if not problems:
        err.write("precompile: nothing to do: give --shapes and/or --model\n")
        return 2
    def options(p: GemmCall) -> dict:  # a C (and so an fp32 output) only where the op takes one
        with_c = args.with_c and p.gemm_type == "normal"
        return {"out_dtype": "fp32" if with_c else args.out_dtype, "sfb_recipe": args.sfb_recipe, "with_c": with_c}

    problems = [GemmCall(**{**asdict(p), **options(p)}) for p in problems]
    num_sms = args.num_sms
    if num_sms is None:
        from ._sms import get_num_sms

        try:
            num_sms = get_num_sms()
        except RuntimeError:
            err.write("precompile: no CUDA device to plan for: pass --num-sms (132 on an H100/H200 SXM)\n")
            return 2
    if args.dry_run:
        for kernel in plan(problems, num_sms):
            out.write(f"{kernel.name}\t{kernel.family}\n")
        return 0
    start = time.perf_counter()
    results = precompile(problems, num_sms=num_sms, workers=args.workers, progress=ProgressBar(err))
    wall = time.perf_counter() - start
    out.write(summary_table(results, wall) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"num_sms": num_sms, "wall_s": wall, "kernels": [asdict(r) for r in results]}, f, indent=1)
    return 0
