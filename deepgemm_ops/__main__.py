"""``python -m deepgemm_ops <command>``; commands: ``bench`` (see deepgemm_ops/bench.py)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import bench

    parser = argparse.ArgumentParser(prog="python -m deepgemm_ops")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    bench.add_arguments(commands.add_parser("bench", help="time our FP8 GEMMs against cuBLASLt blockwise FP8"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from . import bench

        return bench.run(args)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
