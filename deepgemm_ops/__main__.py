"""``python -m deepgemm_ops <command>``; commands: ``bench`` (deepgemm_ops/bench.py), ``precompile``
(deepgemm_ops/_precompile.py)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import _precompile, bench

    parser = argparse.ArgumentParser(prog="python -m deepgemm_ops")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    bench.add_arguments(commands.add_parser("bench", help="time our FP8 GEMMs against cuBLASLt blockwise FP8"))
    _precompile.add_arguments(commands.add_parser(
        "precompile", help="compile the kernels of given shapes or of a model's GEMMs into the disk cache"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from . import bench

        return bench.run(args)
    if args.command == "precompile":
        from . import _precompile

        return _precompile.run(args)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
