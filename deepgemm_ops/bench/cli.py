"""``python -m deepgemm_ops bench`` command line: the dense table by default, ``--grouped``, ``--casts``, ``--bf16``,
``--wgrad``, ``--overhead``, ``--first-call``; every number to ``--json``."""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from .dense import (
    FIRST_CALL_SHAPE,
    OVERHEAD_SHAPE,
    GemmShape,
    bench_first_call,
    bench_gemm,
    bench_overhead,
    format_against,
    format_first_call,
    format_overhead,
    format_table,
    parse_shapes,
    plot,
    seed_shapes,
)
from .measure import Timer, copy_bandwidth_gbps


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("deepgemm_ops bench: --plot needs matplotlib, which is not installed (pip install matplotlib)")


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None




# --- command line -------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", type=parse_shapes, default=seed_shapes(), metavar="seed|MxNxK,...",
                        help="shapes to run: 'seed' (the 18 DESIGN shapes, default) or a list of MxNxK")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per shape (median reported)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number to FILE")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="bar chart of TFLOPS per shape")
    parser.add_argument("--grouped", action="store_true",
                        help="run the MoE grouped cases of DESIGN §6 (contiguous and masked) instead of --shapes")
    parser.add_argument("--against", metavar="MODULE",
                        help="also time MODULE (DeepGEMM's API, e.g. deep_gemm) on the same inputs: the dense "
                             "shapes and --grouped cases (with every candidate's kernel-only time), --bf16 and "
                             "--wgrad's k-grouped cases")
    parser.add_argument("--casts", action="store_true",
                        help="run the FP8 casts (share of the copy bandwidth), an FP8 linear forward and an FP8Linear "
                             "training step against bf16 instead of --shapes")
    parser.add_argument("--bf16", action="store_true",
                        help="run the BF16 GEMMs (nt, nn, tn, tt) at M=4096 on the seed (N, K) against cuBLAS "
                             "(torch.mm) instead of --shapes")
    parser.add_argument("--wgrad", action="store_true",
                        help="run the weight-gradient GEMMs (k-grouped MoE cases, the dense 1x128 x 1x128 FP8Linear "
                             "ones) against bf16 cuBLAS instead of --shapes")
    parser.add_argument("--overhead", action="store_true",
                        help=f"also measure host time per eager call on {'x'.join(map(str, OVERHEAD_SHAPE))}")
    parser.add_argument("--first-call", action="store_true",
                        help=f"also time the first call of a new shape ({'x'.join(map(str, FIRST_CALL_SHAPE))}) in a "
                             "new process, with the kernel cache cold and warm")


def run(args: argparse.Namespace) -> int:
    if args.reps < 1:
        raise SystemExit(f"deepgemm_ops bench: --reps must be >= 1, got {args.reps}")
    if args.plot is not None:
        _require_matplotlib()
    if not torch.cuda.is_available():
        raise SystemExit("deepgemm_ops bench: needs a CUDA GPU (torch.cuda.is_available() is False on this machine)")
    import deepgemm_ops  # noqa: F401  (registers torch.ops.deepgemm)

    device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    timer = Timer(device)
    copy_gbps = copy_bandwidth_gbps(timer)
    props = torch.cuda.get_device_properties(device)
    print(f"{props.name}, torch {torch.__version__}, device-to-device copy {copy_gbps:.0f} GB/s (read + write)")

    against = None
    if args.against:
        try:
            against = importlib.import_module(args.against)
        except ImportError as e:
            raise SystemExit(f"deepgemm_ops bench: --against {args.against}: cannot import it ({e})") from e
    rows = []
    for shape in [] if args.grouped or args.casts or args.bf16 or args.wgrad else args.shapes:
        row = bench_gemm(shape, timer, copy_gbps, args.reps, against)
        if "error" in row["ours"]:
            print(f"{shape}: ours: {row['ours']['error']}", file=sys.stderr)
        rows.append(row)
    if rows:
        print(format_table(rows))
        if against is not None:
            print(format_against(rows))

    report = {
        "device": props.name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "commit": _git_commit(),
        "copy_gbps": copy_gbps,
        "reps": args.reps,
        "gemm": rows,
    }
    if args.grouped:
        from .grouped import run_grouped

        report["grouped"] = run_grouped(timer, copy_gbps, args.reps, against)
    if args.casts:
        from .casts import (
            bench_casts,
            bench_linear,
            bench_linear_train,
            format_casts,
            format_linear,
            format_linear_train,
        )

        report["casts"] = bench_casts(timer, copy_gbps, args.reps)
        print(format_casts(report["casts"]))
        report["linear"] = bench_linear(timer, args.reps)
        print(format_linear(report["linear"]))
        report["linear_train"] = bench_linear_train(timer, args.reps)
        print(format_linear_train(report["linear_train"]))
    if args.bf16:
        from .bf16 import bench_bf16, format_bf16

        report["bf16"] = bench_bf16(timer, args.reps, against)
        print(format_bf16(report["bf16"]))
    if args.wgrad:
        from .wgrad import bench_dense_wgrad, bench_k_grouped, format_wgrad

        report["wgrad_k_grouped"] = bench_k_grouped(timer, args.reps, against)
        report["wgrad_dense"] = bench_dense_wgrad(timer, args.reps)
        print(format_wgrad(report["wgrad_k_grouped"], report["wgrad_dense"]))
    if args.overhead:
        report["overhead"] = bench_overhead(device)
        print(format_overhead(report["overhead"]))
    if args.first_call:
        report["first_call"] = bench_first_call(GemmShape(*FIRST_CALL_SHAPE))
        print(format_first_call(report["first_call"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot is not None and rows:
        plot(rows, args.plot)
    return 0
