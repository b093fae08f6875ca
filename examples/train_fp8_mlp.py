"""Train a two-layer MLP with FP8Linear and with nn.Linear (bf16) from the same start on the same data; print both
loss curves and how far apart they end.

    python examples/train_fp8_mlp.py [--steps 300] [--device cuda] [--json losses.json] [--plot losses.png]
    python examples/train_fp8_mlp.py --curves losses.json --plot losses.png   # plot curves saved by --json

The task: regress a fixed random teacher MLP (1024 -> 4096 -> 1024, GELU) from Gaussian inputs, AdamW, 8192 tokens
per step. Both students start from the same weights; the FP8 one is the bf16 one with its linear layers converted by
FP8Linear.from_linear.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from torch import nn

from deepgemm_ops.nn import FP8Linear


def mlp(d_model: int, d_hidden: int, device, dtype) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_model)).to(device, dtype)


def to_fp8(model: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*(FP8Linear.from_linear(m) if isinstance(m, nn.Linear) else m for m in model))


def train(model: nn.Module, teacher: nn.Module, steps: int, tokens: int, d_model: int, device, seed: int) -> list:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randn(tokens, d_model, device=device, dtype=torch.bfloat16, generator=gen)
        with torch.no_grad():
            target = teacher(x)
        loss = torch.nn.functional.mse_loss(model(x).float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_both(steps: int, tokens: int, device) -> dict:
    """The loss curves of the bf16 student and of its FP8Linear copy, trained on the same data."""
    d_model, d_hidden = 1024, 4096
    torch.manual_seed(0)
    teacher = mlp(d_model, d_hidden, device, torch.bfloat16).requires_grad_(False)
    student = mlp(d_model, d_hidden, device, torch.bfloat16)
    return {name: train(model, teacher, steps, tokens, d_model, device, seed=1)
            for name, model in (("bf16", copy.deepcopy(student)), ("fp8", to_fp8(copy.deepcopy(student))))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write both loss curves to this file")
    parser.add_argument("--plot", help="plot both loss curves to this PNG (needs matplotlib)")
    parser.add_argument("--curves", help="load the loss curves from this file (written by --json) instead of training")
    args = parser.parse_args(argv)
    if args.curves:
        with open(args.curves) as f:
            curves = json.load(f)
    else:
        curves = train_both(args.steps, args.tokens, args.device)
    steps = len(curves["bf16"])
    for step in sorted({0, 9, 49, 99, 199, steps - 1} & set(range(steps))):
        print(f"step {step + 1:4d}: bf16 {curves['bf16'][step]:.5f}  fp8 {curves['fp8'][step]:.5f}")
    tail = slice(-10, None)  # the last 10 steps, averaged: one step's loss is noisy
    bf16_end = sum(curves["bf16"][tail]) / len(curves["bf16"][tail])
    fp8_end = sum(curves["fp8"][tail]) / len(curves["fp8"][tail])
    print(f"final loss (mean of the last 10 steps): bf16 {bf16_end:.5f}, fp8 {fp8_end:.5f}, "
          f"fp8 / bf16 = {fp8_end / bf16_end:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(curves, f)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, losses in curves.items():
            ax.plot(range(1, len(losses) + 1), losses, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("MSE loss")
        ax.set_title("2-layer MLP, FP8Linear vs bf16 nn.Linear")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
