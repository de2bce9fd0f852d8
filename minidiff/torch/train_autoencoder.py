"""Training the KL and VQ autoencoders of ``minidiff.torch.autoencoder`` through the one
training loop (``minidiff.torch.loop``): this file is their ``Task`` (data, loss) and config.

    python -m minidiff.torch.train_autoencoder --out DIR --steps 60 [--reg vq] [--resume]

Same seed, same numbers: the batch and the KL noise of step k come from generators seeded by
(seed, k), drawn for the global batch and sliced per rank.  (Under torchrun the VQ codebook's
EMA is updated from each rank's own batch, and DistributedDataParallel broadcasts rank 0's
buffers: only 'kl' matches one process on the doubled batch exactly.)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from .. import _checks
from ..backend import generator
from ..checkpoint import load_modules, prefixed
from ..data.images import DATASETS as IMAGE_DATASETS
from ..data.images import load_images, to_model_range
from ..methods import config_from_dict
from .autoencoder import Autoencoder, AutoencoderConfig
from .loop import LoopConfig, Task, batch_indices, load_run, step_seed, train_loop

VQ_BUFFERS = ("codebook", "code_counts", "code_sums")


@dataclasses.dataclass
class AutoencoderTrainConfig(LoopConfig):
    """An autoencoder run (saved in the checkpoint).  The loss per example is

        L = rec + kl_weight * KL   ('kl')      or      L = rec + commitment   ('vq'),

    with rec the l1 / l2 reconstruction error SUMMED over the pixels and KL SUMMED over the
    latent (``kl_divergence``), as LDM (whose kl_weight 1e-6 is against these sums); the loop
    sees the batch mean of L divided by the pixels per image, so lr and clipping see per-pixel
    sizes (the weight's meaning does not change).  The commitment is per latent element
    (``vq_loss_terms``), scaled by the pixels per image to stand against the summed rec."""
    dataset: str = "digits"
    data_root: str = ""
    limit: int = 0
    rec_loss: str = "l1"               # 'l1' or 'l2'
    kl_weight: float = 1e-6
    autoencoder: AutoencoderConfig = dataclasses.field(default_factory=AutoencoderConfig)

    def __post_init__(self):
        self.autoencoder = config_from_dict(AutoencoderConfig, self.autoencoder, "autoencoder", allow_missing=True)

    def validate(self):
        self.validate_loop()
        _checks.choice("dataset", self.dataset, IMAGE_DATASETS)
        _checks.choice("rec_loss", self.rec_loss, ("l1", "l2"))
        _checks.int_at_least("limit", self.limit, 0)
        _checks.finite_number("kl_weight", self.kl_weight, lambda v: v >= 0, ">= 0")
        return self

    @classmethod
    def from_dict(cls, d: dict, what: str = "config"):
        """A checkpoint's config, strictly: an unknown or missing field (the autoencoder's too) is named."""
        if isinstance(d, dict) and isinstance(d.get("autoencoder"), dict):
            d = {**d, "autoencoder": config_from_dict(AutoencoderConfig, d["autoencoder"], f"{what}['autoencoder']")}
        return config_from_dict(cls, d, what)


def load_autoencoder_images(cfg: AutoencoderTrainConfig, device) -> torch.Tensor:
    """The training images (N, C, H, W) uint8 on ``device``, checked against the autoencoder."""
    a = cfg.autoencoder
    images, _ = load_images(cfg.dataset, "train", root=cfg.data_root or None, limit=cfg.limit or None,
                            image_size=a.image_size if cfg.dataset == "folder" else None, channels=a.in_channels)
    _, C, H, W = images.shape
    if C != a.in_channels or (H, W) != (a.image_size, a.image_size):
        raise ValueError(f"dataset {cfg.dataset!r} has {C}x{H}x{W} images but the autoencoder takes "
                         f"in_channels={a.in_channels}, image_size={a.image_size}: set autoencoder "
                         f"in_channels/image_size to {C} and {H}")
    return torch.from_numpy(images).to(device)


class AutoencoderTask(Task):
    """An ``Autoencoder`` trained on reconstruction plus its regulariser."""

    def __init__(self, cfg: AutoencoderTrainConfig):
        self.cfg = cfg

    def build(self, device, dist):
        self.device, self.dist = device, dist
        self.data = load_autoencoder_images(self.cfg, device)          # (N, C, H, W) uint8
        return Autoencoder(self.cfg.autoencoder)

    def loss(self, net, k: int):
        cfg, dist = self.cfg, self.dist
        GB = cfg.batch_size * dist.world
        mine = dist.mine(GB)
        idx = torch.from_numpy(batch_indices(len(self.data), GB, cfg.seed, k)).to(self.device)
        x = to_model_range(self.data[idx])[mine]                       # (B, C, H, W) in [-1, 1]
        a = cfg.autoencoder
        noise = None
        if a.reg == "kl":                                              # eps for the global batch, sliced
            shape = (GB, *a.latent_shape)
            noise = generator(step_seed(cfg.seed, k, 1), backend="torch", device=self.device).randn(
                shape, dtype=torch.float32)[mine]
        out = net(x, noise)
        diff = out["reconstruction"].float() - x
        rec = (diff.abs() if cfg.rec_loss == "l1" else diff ** 2).flatten(1).sum(1)   # (B,) summed over pixels
        pixels = float(x[0].numel())
        reg = cfg.kl_weight * out["kl"] if a.reg == "kl" else pixels * out["commitment"]
        return (rec + reg).mean() / pixels


def train_autoencoder(cfg: AutoencoderTrainConfig, out, resume: bool = False, device=None, progress: bool = True,
                      log=print) -> dict:
    """Train ``cfg.autoencoder`` on ``cfg.dataset``, writing checkpoints into ``out`` (with
    ``resume``, continue from them).  Returns ``train_loop``'s result."""
    cfg.validate()
    return train_loop(AutoencoderTask(cfg), cfg, out, resume=resume, device=device, progress=progress, log=log,
                      desc=f"{cfg.autoencoder.reg} autoencoder on {cfg.dataset}")


def autoencoder_from_checkpoint(path, device="cpu"):
    """(the EMA autoencoder in eval mode, the run's ``AutoencoderTrainConfig``).  The loop's EMA
    averages parameters only; a VQ codebook is itself an EMA, so its buffers are the model's."""
    tensors, cfg = load_run(path, AutoencoderTrainConfig, "autoencoder")
    net = Autoencoder(cfg.autoencoder)
    load_modules({"ema": net}, tensors, path)
    if cfg.autoencoder.reg == "vq":
        model = prefixed(tensors, "model")
        with torch.no_grad():
            for name in VQ_BUFFERS:
                getattr(net, name).copy_(model[name])
    return net.to(device).eval(), cfg


def main(argv=None) -> int:
    """A small digits run, for the loop's kill -9 and two-process tests (flags as tests/loop_models.py)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ckpt-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dropout", type=float, default=0.0, help="accepted for the loop tests; the autoencoder has none")
    p.add_argument("--reg", default="kl", choices=("kl", "vq"))
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    cfg = AutoencoderTrainConfig(steps=args.steps, batch_size=args.batch_size, ckpt_every=args.ckpt_every,
                                 seed=args.seed, lr=args.lr, warmup=args.warmup, sample_every=0, dataset="digits",
                                 autoencoder=dict(image_size=8, base_channels=8, channel_mults=(1, 2), groups=4,
                                                  latent_channels=2, reg=args.reg, codebook_size=16))
    train_autoencoder(cfg, args.out, resume=args.resume, device="cpu", progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
