"""A second model for the training loop's tests: a small denoising MLP on scikit-learn's 8x8
digits, trained through ``minidiff.torch.loop.train_loop`` exactly as the U-Net is.  The
kill -9 and two-process tests run it as a script:

    python tests/loop_models.py --out DIR --steps 60 --ckpt-every 5 [--resume] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch
from torch import nn

from minidiff.backend import generator
from minidiff.torch.loop import LoopConfig, Task, batch_indices, step_seed, train_loop


@dataclasses.dataclass
class DenoiserConfig(LoopConfig):
    hidden: int = 32
    noise: float = 0.5
    dropout: float = 0.1


class DenoiserTask(Task):
    """x + noise -> x on the 64 pixels of a digit, with dropout (its RNG must resume too; every
    rank draws its own masks, so the two-process test turns it off)."""

    def __init__(self, cfg: DenoiserConfig):
        self.cfg = cfg

    def build(self, device, dist):
        from sklearn.datasets import load_digits

        self.device, self.dist = device, dist
        self.data = torch.from_numpy(load_digits().data.astype(np.float32) / 16.0).to(device)   # (1797, 64)
        h = self.cfg.hidden
        return nn.Sequential(nn.Linear(64, h), nn.SiLU(), nn.Dropout(self.cfg.dropout), nn.Linear(h, 64))

    def loss(self, net, k: int):
        cfg, dist = self.cfg, self.dist
        GB = cfg.batch_size * dist.world
        idx = torch.from_numpy(batch_indices(len(self.data), GB, cfg.seed, k)).to(self.device)
        x = self.data[idx]                                                      # (GB, 64)
        z = generator(step_seed(cfg.seed, k, 1), backend="torch", device=self.device).randn(x.shape)
        mine = dist.mine(GB)
        return ((net(x[mine] + cfg.noise * z[mine]) - x[mine]) ** 2).mean()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ckpt-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    cfg = DenoiserConfig(steps=args.steps, batch_size=args.batch_size, ckpt_every=args.ckpt_every, seed=args.seed,
                         dropout=args.dropout, lr=args.lr, warmup=args.warmup, sample_every=0).validate_loop()
    train_loop(DenoiserTask(cfg), cfg, args.out, resume=args.resume, device="cpu", progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
