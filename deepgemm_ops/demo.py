"""A small FP8 linear layer through torch.ops.deepgemm.fp8_gemm_nt, eager and compiled.

    python -m deepgemm_ops.demo [--m 96] [--n 2112] [--k 7168] [--device cpu|cuda]

On a Hopper GPU it runs the GPU kernel; elsewhere the CPU reference kernel. Prints the error against bf16.
"""

from __future__ import annotations

import argparse

import torch

import deepgemm_ops  # noqa: F401

ops = torch.ops.deepgemm


def fp8_linear(x: torch.Tensor, w: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    q, sx = ops.per_token_cast_to_fp8(x)
    return ops.fp8_gemm_nt(q, sx, w, sw)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0) else "cpu"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=96)
    parser.add_argument("--n", type=int, default=2112)
    parser.add_argument("--k", type=int, default=7168)
    parser.add_argument("--device", default=default_device())
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x = torch.randn(args.m, args.k, dtype=torch.bfloat16, device=args.device)
    weight = torch.randn(args.n, args.k, dtype=torch.bfloat16, device=args.device) / args.k ** 0.5
    w, sw = ops.per_block_cast_to_fp8(weight)  # 128x128 block scales, as DeepSeek-V3 stores its weights
    ref = (x.float() @ weight.float().t())

    backend = "GPU kernel (sm_90a)" if args.device != "cpu" else "CPU reference kernel"
    print(f"FP8 linear  M={args.m} N={args.n} K={args.k}  on {args.device}: {backend}")
    compiled = torch.compile(fp8_linear, fullgraph=True, dynamic=True)
    for name, fn in (("eager", fp8_linear), ("torch.compile", compiled)):
        y = fn(x, w, sw)
        err = ((y.float() - ref).norm() / ref.norm()).item()
        print(f"  {name:14s} out {str(y.dtype).removeprefix('torch.')} {list(y.shape)}  "
              f"relative error vs bf16 matmul: {err:.4f}")
    bf16 = x @ weight.t()
    print(f"  (bf16 matmul itself vs fp32: {((bf16.float() - ref).norm() / ref.norm()).item():.4f}; "
          f"FP8 e4m3 keeps 3 mantissa bits, so ~0.03 is expected)")


if __name__ == "__main__":
    main()
