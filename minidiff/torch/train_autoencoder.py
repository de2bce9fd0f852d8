"""Training the KL and VQ autoencoders of ``minidiff.torch.autoencoder`` through the one
training loop (``minidiff.torch.loop``): this file is their ``Task`` (data, loss) and config.

    python -m minidiff.torch.train_autoencoder --out DIR --steps 60 [--reg vq] [--resume]
    AutoencoderTrainConfig.from_preset("cpu", dataset="fashion-mnist", autoencoder={"reg": "vq"})

Same seed, same numbers: the batch and the KL noise of step k come from generators seeded by
(seed, k), drawn for the global batch and sliced per rank; the candidates of the VQ dead-code
restarts from one seeded by (seed, k, RESTART_STREAM).  Under torchrun the VQ codebook's EMA
update and its code histogram see the z_e and indices of every rank (all-gathered), so 'kl'
and 'vq' alike match one process on the doubled batch (up to float summation order).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch

from .. import _checks
from ..backend import generator
from ..checkpoint import load_modules, prefixed
from ..data.images import DATASET_SHAPES
from ..data.images import DATASETS as IMAGE_DATASETS
from ..data.images import load_images, to_model_range
from ..methods import config_from_dict
from .autoencoder import (Autoencoder, AutoencoderConfig, PatchDiscriminator, adaptive_gan_weight, all_mean,
                          hinge_d_loss, largest_ssim_sigma, ssim_per_image, ssim_window)
from .loop import LoopConfig, Task, batch_indices, load_run, step_seed, train_loop

VQ_BUFFERS = ("codebook", "code_counts", "code_sums")
FACTORS = (1, 2, 4, 8)            # the downsampling factors f a preset can be asked for (--factor)
RESTART_STREAM = 4                 # step_seed stream of the dead-code restarts (0-3: data, noise, dropout, sampling)

# Presets: 'tiny' for tests (seconds), 'cpu' good Fashion-MNIST reconstructions in about three
# minutes on a 2-core laptop, 'gpu' a few minutes on one H100.  The first stage is f = 4 with
# latent_channels 4; from_preset pads the images so that the latent side is even (28x28 -> 32x32
# -> a 4x8x8 latent).  Any field can be overridden, the autoencoder's by a dict.
PRESETS = {
    "tiny": dict(steps=20, batch_size=16, lr=2e-3, warmup=5, ckpt_every=10, sample_every=0, n_grid=16,
                 restart_every=10,
                 autoencoder=dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4,
                                  latent_channels=2, codebook_size=16)),
    "cpu": dict(steps=2000, batch_size=32, lr=1e-3, warmup=100, ckpt_every=250, sample_every=0, restart_every=100,
                autoencoder=dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, latent_channels=4,
                                 codebook_size=256)),
    "gpu": dict(steps=10000, batch_size=128, lr=5e-4, warmup=500, ckpt_every=2000, sample_every=0,
                restart_every=200,
                autoencoder=dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, latent_channels=4,
                                 codebook_size=512)),
}


def factor_mults(preset: str, factor: int) -> tuple:
    """The channel_mults of preset ``preset``'s autoencoder for the downsampling factor f
    (1, 2, 4 or 8): one resolution level per halving, the preset's deepest multiplier repeated."""
    _checks.choice("preset", preset, tuple(PRESETS))
    _checks.choice("factor", factor, FACTORS)
    mults, levels = PRESETS[preset]["autoencoder"]["channel_mults"], factor.bit_length()
    return tuple(mults[:levels]) + (mults[-1],) * max(0, levels - len(mults))


def even_latent_padding(image_size: int, factor: int) -> int:
    """The least padding p >= 0 with (image_size + 2p) divisible by 2f, so the latent side
    (image_size + 2p) / f is even and a latent U-Net can halve it (28, f = 4: p = 2, latent 8x8;
    28, f = 8: p = 2, 4x4; 28, f = 2: p = 0, 14x14; 8, f = 4: p = 0, 2x2); when none exists (an
    odd image_size), the least p making the side divisible by f, else 0 (and AutoencoderConfig
    names the mismatch)."""
    for modulus in (2 * factor, factor):
        for p in range(modulus):
            if (image_size + 2 * p) % modulus == 0:
                return p
    return 0


@dataclasses.dataclass
class AutoencoderTrainConfig(LoopConfig):
    """An autoencoder run (saved in the checkpoint).  The loss per example is

        L = rec + kl_weight * KL   ('kl')      or      L = rec + commitment   ('vq'),
        plus ssim_weight * P * (1 - SSIM) when ssim_weight > 0,

    with rec the l1 / l2 reconstruction error SUMMED over the P pixels and KL SUMMED over the
    latent (``kl_divergence``), as LDM (whose kl_weight 1e-6 is against these sums); the loop
    sees the batch mean of L divided by the pixels per image, so lr and clipping see per-pixel
    sizes (the weight's meaning does not change).  The commitment is per latent element
    (``vq_loss_terms``), scaled by the pixels per image to stand against the summed rec.  SSIM
    is a mean over the image's SSIM map (``ssim_per_image``, images in [0, 1]), so it too is
    scaled by P: per pixel the loss is mean |x_hat - x| + ssim_weight (1 - SSIM), where the l1
    error is on the [-1, 1] model range (1 - SSIM lies in [0, 2], typically below 0.3).

    With ``disc_weight`` > 0, from step ``disc_start`` on (LDM's LPIPSWithDiscriminator without
    LPIPS, whose VGG backbone is a download; nor does any term use the evaluation classifier,
    since a metric must not be trained against): L += disc_weight * lambda * L_G with
    L_G = -mean D(x_hat) of a ``PatchDiscriminator`` and lambda the adaptive weight (``adaptive_gan_weight``) against the per-pixel rec (+ SSIM)
    term, and after each step D takes one Adam step (lr, betas (0.5, 0.9)) on the hinge loss.

    'vq' only: every ``restart_every`` steps (0: never) the codebook usage and perplexity of
    the codes picked over those steps are logged, and the codes picked fewer than
    ``restart_threshold`` times are restarted (``Autoencoder.restart_dead_codes``)."""
    dataset: str = "fashion-mnist"
    data_root: str = ""
    limit: int = 0
    rec_loss: str = "l1"               # 'l1' or 'l2'
    kl_weight: float = 1e-6
    ssim_weight: float = 0.0           # weight of P (1 - SSIM) (0: off)
    ssim_sigma: float = 1.5            # the Gaussian SSIM window's sigma (1.5: 11x11, Wang et al. 2004)
    restart_every: int = 0             # 'vq': log code usage and restart dead codes every this many steps (0: off)
    restart_threshold: float = 1.0     # 'vq': restart the codes picked fewer times than this over the window
    disc_weight: float = 0.0           # the adversarial term's weight (0: no discriminator)
    disc_start: int = 0                # the step from which the discriminator trains and its term counts
    disc_layers: int = 2               # stride-2 layers of the PatchGAN discriminator
    disc_channels: int = 32            # its first layer's channels (a multiple of 4: GroupNorm of 8 groups)
    autoencoder: AutoencoderConfig = dataclasses.field(default_factory=AutoencoderConfig)

    def __post_init__(self):
        self.autoencoder = config_from_dict(AutoencoderConfig, self.autoencoder, "autoencoder", allow_missing=True)

    def validate(self):
        self.validate_loop()
        _checks.choice("dataset", self.dataset, IMAGE_DATASETS)
        _checks.choice("rec_loss", self.rec_loss, ("l1", "l2"))
        _checks.int_at_least("limit", self.limit, 0)
        _checks.finite_number("kl_weight", self.kl_weight, lambda v: v >= 0, ">= 0")
        _checks.finite_number("ssim_weight", self.ssim_weight, lambda v: v >= 0, ">= 0 (0: off)")
        _checks.finite_number("ssim_sigma", self.ssim_sigma, lambda v: v > 0, "> 0")
        _checks.int_at_least("restart_every", self.restart_every, 0)
        _checks.finite_number("restart_threshold", self.restart_threshold, lambda v: v >= 0, ">= 0")
        _checks.finite_number("disc_weight", self.disc_weight, lambda v: v >= 0, ">= 0 (0: off)")
        _checks.int_at_least("disc_start", self.disc_start, 0)
        _checks.int_at_least("disc_layers", self.disc_layers, 1)
        _checks.int_at_least("disc_channels", self.disc_channels, 4)
        if self.disc_channels % 4 or self.disc_channels > 256:
            raise ValueError(f"disc_channels must be a multiple of 4 in [4, 256], got {self.disc_channels}")
        size = self.autoencoder.image_size
        if self.disc_weight and patch_grid(size, self.disc_layers) < 1:
            raise ValueError(f"disc_layers={self.disc_layers} leaves no patch of {size}x{size} images: "
                             f"use fewer (at most {max_disc_layers(size)})")
        if self.ssim_weight and ssim_window(self.ssim_sigma) > size:
            raise ValueError(f"ssim_sigma={self.ssim_sigma} gives a {ssim_window(self.ssim_sigma)}-pixel Gaussian "
                             f"SSIM window, larger than the {size}x{size} images: use ssim_sigma < "
                             f"{largest_ssim_sigma(size):.3g}")
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """A preset (``PRESETS``: 'tiny', 'cpu', 'gpu') with the autoencoder sized for
        ``overrides['dataset']`` (default fashion-mnist): its channels and image size, and unless
        given, the padding of ``even_latent_padding``; any field overridden (``autoencoder``'s
        fields by a dict, e.g. ``autoencoder={"reg": "vq"}``)."""
        _checks.choice("preset", name, tuple(PRESETS))
        preset = dict(PRESETS[name])
        over = overrides.get("autoencoder") or {}
        if not isinstance(over, dict):
            raise TypeError(f"autoencoder overrides must be a dict of AutoencoderConfig fields, got "
                            f"{type(over).__name__}")
        fields = {**preset, **{k: v for k, v in overrides.items() if k != "autoencoder"}}
        C, size = DATASET_SHAPES.get(fields.get("dataset", cls.dataset), (1, 28))
        a = {"in_channels": C, "image_size": size, **preset["autoencoder"], **over}
        if "padding" not in over and isinstance(a["channel_mults"], (tuple, list)) and a["channel_mults"] \
                and isinstance(a["image_size"], int):
            a["padding"] = even_latent_padding(a["image_size"], 2 ** (len(a["channel_mults"]) - 1))
        fields["autoencoder"] = a
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict, what: str = "config"):
        """A checkpoint's config, strictly: an unknown or missing field (the autoencoder's too) is named."""
        if isinstance(d, dict) and isinstance(d.get("autoencoder"), dict):
            d = {**d, "autoencoder": config_from_dict(AutoencoderConfig, d["autoencoder"], f"{what}['autoencoder']")}
        return config_from_dict(cls, d, what)


def patch_grid(size: int, n_layers: int) -> int:
    """The side of ``PatchDiscriminator``'s logit grid on size x size images (4x4 convs, padding
    1: stride 2 halves (floor), stride 1 takes one off)."""
    for _ in range(n_layers):
        size = (size - 2) // 2 + 1 if size >= 2 else 0
    return size - 2 if size >= 3 else 0      # the stride-1 conv, then the logit conv


def max_disc_layers(size: int) -> int:
    """The most ``disc_layers`` (up to 8) that leave a logit grid on size x size images."""
    n = 1
    while patch_grid(size, n + 1) >= 1 and n < 8:
        n += 1
    return n


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

    def __init__(self, cfg: AutoencoderTrainConfig, log=None):
        self.cfg, self.log = cfg, log
        self.code_log = []                 # 'vq': {'step', 'usage', 'perplexity', 'picks', 'restarted'} per window
        self.disc = self.d_opt = self.d_batch = None

    def build(self, device, dist):
        cfg = self.cfg
        self.device, self.dist = device, dist
        self.data = load_autoencoder_images(cfg, device)               # (N, C, H, W) uint8
        self.model = Autoencoder(cfg.autoencoder)                      # first: the same weights with or without D
        if cfg.disc_weight:
            self.disc = PatchDiscriminator(cfg.autoencoder.in_channels, cfg.disc_channels, cfg.disc_layers).to(device)
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
        return self.model

    def extra_modules(self) -> dict:
        return {"disc": self.disc} if self.disc is not None else {}

    def extra_optimizers(self) -> dict:
        return {"disc": self.d_opt} if self.d_opt is not None else {}

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
        if cfg.ssim_weight:
            rec = rec + cfg.ssim_weight * pixels * (1.0 - ssim_per_image(out["reconstruction"], x, cfg.ssim_sigma))
        loss = (rec + reg).mean() / pixels
        if self.disc is not None and k >= cfg.disc_start:
            x_hat = out["reconstruction"].float()
            self.disc.requires_grad_(False)                            # L_G trains the autoencoder only
            g_loss = -self.disc(x_hat).mean()
            self.disc.requires_grad_(True)
            lam = adaptive_gan_weight(rec.mean() / pixels, g_loss, self.model.dec_out[-1].weight, reduce=all_mean)
            loss = loss + cfg.disc_weight * lam * g_loss
            self.d_batch = (x.detach(), x_hat.detach())                # D's step follows the optimiser's
        return loss

    def after_step(self, model, k: int):
        """The discriminator's step on this step's batch (if any); then, 'vq', every
        ``restart_every`` steps: the window's code usage and perplexity and the dead-code restarts,
        their candidates drawn with (seed, k, RESTART_STREAM)."""
        if self.d_batch is not None:
            self.discriminator_step(*self.d_batch)
            self.d_batch = None
        self.restart_codes(model, k)

    def discriminator_step(self, x, x_hat):
        """One Adam step of D on the hinge loss (``hinge_d_loss``), its gradient averaged over ranks."""
        d_loss = hinge_d_loss(self.disc(x), self.disc(x_hat))
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        for p in self.disc.parameters():
            p.grad = all_mean(p.grad)
        self.d_opt.step()

    def restart_codes(self, model, k: int):
        cfg = self.cfg
        if cfg.autoencoder.reg != "vq" or not cfg.restart_every or (k + 1) % cfg.restart_every:
            return
        stats = model.code_statistics()
        rng = np.random.default_rng(step_seed(cfg.seed, k, RESTART_STREAM))
        record = {"step": k + 1, **stats, "restarted": model.restart_dead_codes(cfg.restart_threshold, rng)}
        self.code_log.append(record)
        if self.log is not None and self.dist.main:
            self.log(f"step {k + 1}: codebook usage {record['usage']:.3f}, perplexity {record['perplexity']:.1f} "
                     f"of {cfg.autoencoder.codebook_size} codes over the last {cfg.restart_every} steps; "
                     f"restarted {record['restarted']} codes picked fewer than {cfg.restart_threshold} times")


def train_autoencoder(cfg: AutoencoderTrainConfig, out, resume: bool = False, device=None, progress: bool = True,
                      log=print) -> dict:
    """Train ``cfg.autoencoder`` on ``cfg.dataset``, writing checkpoints into ``out`` (with
    ``resume``, continue from them).  Returns ``train_loop``'s result plus 'code_stats' ('vq'
    with ``restart_every``: the usage, perplexity and restarts of each window of this call)."""
    cfg.validate()
    task = AutoencoderTask(cfg, log=log)
    result = train_loop(task, cfg, out, resume=resume, device=device, progress=progress, log=log,
                        desc=f"{cfg.autoencoder.reg} autoencoder on {cfg.dataset}")
    result["code_stats"] = task.code_log
    return result


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
    p.add_argument("--restart-every", type=int, default=0, help="'vq': dead-code restarts every this many steps")
    p.add_argument("--disc-weight", type=float, default=0.0, help="the PatchGAN term's weight (0: none)")
    p.add_argument("--disc-start", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    cfg = AutoencoderTrainConfig(steps=args.steps, batch_size=args.batch_size, ckpt_every=args.ckpt_every,
                                 seed=args.seed, lr=args.lr, warmup=args.warmup, sample_every=0, dataset="digits",
                                 restart_every=args.restart_every, disc_weight=args.disc_weight,
                                 disc_start=args.disc_start, disc_layers=1, disc_channels=8,
                                 autoencoder=dict(image_size=8, base_channels=8, channel_mults=(1, 2), groups=4,
                                                  latent_channels=2, reg=args.reg, codebook_size=16))
    train_autoencoder(cfg, args.out, resume=args.resume, device="cpu", progress=False, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
