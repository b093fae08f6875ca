"""Writes the kernel_check cases: one generated .cu per distinct kernel plus cases.txt for the check binary.

Usage: python3 tools/kernel_check/gen.py OUT_DIR [--num-sms N] [--only check|bench]
Loads deepgemm_ops._heuristics/_codegen by path, so neither torch nor the package __init__ is needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_package():
    pkg = types.ModuleType("deepgemm_ops")
    pkg.__path__ = [os.path.join(ROOT, "deepgemm_ops")]
    sys.modules.setdefault("deepgemm_ops", pkg)
    mods = []
    for name in ("_constants", "_heuristics", "_codegen"):  # in import order; the last two are used
        path = os.path.join(ROOT, "deepgemm_ops", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"deepgemm_ops.{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


_, heuristics, codegen = _load_package()
GEMM_TYPES = heuristics.GEMM_TYPES


@dataclasses.dataclass
class Case:
    kind: str  # check: every element vs the host reference; bench: timed, sampled rows checked
    gemm_type: str
    m: int  # normal: M; contiguous: unused (from groups); masked: Mmax
    n: int
    k: int
    recipe: str = "128x128"
    out: str = "bf16"
    has_c: bool = False
    groups: tuple = ()  # contiguous: rows per group; masked: masked_m per group
    expected_m: int | None = None
    ldd_pad: int = 0
    force: dict | None = None  # GemmConfig overrides (block_m, block_n)


def _cases(only):
    c = [
        Case("check", "normal", 1, 576, 576),
        Case("check", "normal", 65, 2112, 7168, recipe="1x128"),
        Case("check", "normal", 4097, 576, 576, out="fp32", has_c=True, ldd_pad=8),
        Case("check", "normal", 128, 7168, 2048, recipe="1x128", force=dict(block_m=128, block_n=144)),
        Case("check", "normal", 300, 4096, 7168, out="fp32"),
        Case("check", "normal", 257, 2112, 576, force=dict(block_m=128, block_n=160)),
        Case("check", "normal", 129, 2112, 576, recipe="1x128", force=dict(block_m=64, block_n=48)),
        Case("check", "normal", 33, 200, 576, ldd_pad=3, force=dict(block_m=64, block_n=112)),
        Case("check", "normal", 77, 96, 1024, recipe="1x128", out="fp32", has_c=True, ldd_pad=1),
        Case("check", "normal", 1000, 100, 576, ldd_pad=4, force=dict(block_m=128, block_n=32)),
        Case("check", "normal", 4097, 576, 576, ldd_pad=16),
        # 2-CTA clusters (B multicast): odd m-block count (the last pair's second tile lies past M), N tails, fp32 + C.
        Case("check", "normal", 4097, 2112, 576, force=dict(block_m=128, block_n=160, cluster=2)),
        Case("check", "normal", 300, 576, 7168, force=dict(block_m=128, block_n=144, cluster=2)),
        Case("check", "normal", 129, 200, 1024, recipe="1x128", out="fp32", has_c=True, ldd_pad=1,
             force=dict(block_m=64, block_n=112, cluster=2)),
        Case("check", "normal", 520, 2000, 1024, force=dict(block_m=128, block_n=192, cluster=2)),
        Case("check", "normal", 300, 576, 2048, recipe="1x128", force=dict(block_m=128, block_n=192)),
        Case("check", "contiguous", 0, 4096, 7168, groups=(200, 0, 385, 128)),
        Case("check", "contiguous", 0, 576, 576, recipe="1x128", groups=(1, 300, 64),
             force=dict(block_m=64, block_n=64)),
        Case("check", "masked", 256, 2112, 576, groups=(0, 1, 200, 256), expected_m=128),
        Case("check", "masked", 200, 576, 7168, recipe="1x128", groups=(200, 7, 130),
             force=dict(block_m=128, block_n=96)),
    ]
    for m in (4096, 128, 64):
        for n, k in ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)):
            c.append(Case("bench", "normal", m, n, k))
    for g, m in ((4, 8192), (8, 4096)):
        for n, k in ((4096, 7168), (7168, 2048)):
            c.append(Case("bench", "contiguous", 0, n, k, groups=(m,) * g))
    for g, m in ((1, 1024), (2, 512), (4, 256)):
        for n, k in ((4096, 7168), (7168, 2048)):
            c.append(Case("bench", "masked", m, n, k, groups=(m,) * g, expected_m=m))
    return [x for x in c if only in (None, x.kind)]


def _rows(case):
    if case.gemm_type == "contiguous":
        align = heuristics.get_mk_alignment_for_contiguous_layout()
        return sum((g + align - 1) // align * align for g in case.groups)
    return case.m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--num-sms", type=int, default=132)
    ap.add_argument("--only", choices=("check", "bench"))
    ap.add_argument("--perf", help="bench only these normal bf16 cases instead: "
                    "'M,N,K[,BM,BN[,CLUSTER[,STAGES]]];...' (forced; stages default to the most that fit)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    lines, written = [], set()
    cases = _cases(args.only)
    if args.perf:
        cases = []
        for spec in filter(None, args.perf.split(";")):
            v = [int(x) for x in spec.split(",")]
            force = (dict(block_m=v[3], block_n=v[4], cluster=v[5] if len(v) >= 6 else 1,
                          stages=v[6] if len(v) >= 7 else None) if len(v) >= 5 else None)
            cases.append(Case("bench", "normal", v[0], v[1], v[2], force=force))
    for case in cases:
        groups = max(1, len(case.groups))
        cfg = heuristics.choose_fp8_gemm_config(
            _rows(case), case.n, case.k, num_sms=args.num_sms, out_dtype=case.out, sfb_recipe=case.recipe,
            has_c=case.has_c, gemm_type=case.gemm_type, num_groups=groups, expected_m=case.expected_m)
        if case.force:
            f = case.force
            cfg = heuristics.with_tile(cfg, block_m=f["block_m"], block_n=f["block_n"], num_stages=f.get("stages"),
                                       cluster_size=f.get("cluster", 1))
        src, name = codegen.fp8_gemm_source(cfg, case.n, case.k)
        if name not in written:
            with open(os.path.join(args.out_dir, name + ".cu"), "w") as f:
                f.write(src)
            written.add(name)
        group_spec = ",".join(map(str, case.groups)) if case.groups else "-"
        fields = [case.kind, GEMM_TYPES.index(case.gemm_type), _rows(case), case.n, case.k, groups, group_spec,
                  case.ldd_pad, *cfg.as_ints(), name]
        lines.append(" ".join(map(str, fields)))
    with open(os.path.join(args.out_dir, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} cases, {len(written)} kernels -> {args.out_dir}")


if __name__ == "__main__":
    main()
