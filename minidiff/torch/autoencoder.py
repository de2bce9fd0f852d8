"""The first stage of latent diffusion (Rombach et al. 2022, section 3): a convolutional
autoencoder x (B, C, H, W) -> z (B, c, H/f, W/f) -> x_hat whose latent a diffusion model then
learns, regularised either towards N(0, I) by a small KL term ('kl') or by vector quantisation
with an EMA codebook ('vq').  The formulas are ``minidiff.autoencoding``'s; this file is the
network around them.  It is trained by ``minidiff.torch.train_autoencoder`` through the one loop.
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import autoencoding as ae

# Sanity limits, far above anything minidiff trains (as UNET_LIMITS): a checkpoint's config
# cannot ask for terabytes before a single weight is read.
AUTOENCODER_LIMITS = {"in_channels": 64, "image_size": 1024, "base_channels": 1024, "channel_mults": (4, 16),
                      "num_res_blocks": 8, "latent_channels": 256, "codebook_size": 65536, "groups": 256}
MIN_CODE_USAGE = 0.25   # a VQ codebook using fewer of its codes is warned about (latent training, minidiff eval)


@dataclasses.dataclass
class AutoencoderConfig:
    in_channels: int = 1
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple = (1, 2)      # one entry per resolution: downsampling factor f = 2^(len - 1), f in 1, 2, 4, 8
    num_res_blocks: int = 1            # residual blocks per resolution
    latent_channels: int = 4           # c: the latent is (c, H/f, W/f)
    reg: str = "kl"                    # 'kl' (KL towards N(0, I)) or 'vq' (EMA codebook)
    codebook_size: int = 256           # K ('vq')
    beta: float = 0.25                 # the commitment weight ('vq', VQ-VAE eq. 3)
    codebook_decay: float = 0.99       # gamma of the EMA codebook ('vq', VQ-VAE Appendix A.1)
    groups: int = 8                    # GroupNorm groups
    padding: int = 0                   # background pixels (-1) added on each side before encoding and cropped
                                       # after decoding: 28x28 with padding 2 and f = 4 gives 8x8 latents

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        for name in ("in_channels", "image_size", "base_channels", "num_res_blocks", "latent_channels",
                     "codebook_size", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or not 0 <= self.padding <= 64:
            raise ValueError(f"padding must be an integer in [0, 64], got {self.padding!r}")
        if not self.channel_mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1
                                         for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of integers >= 1, got {self.channel_mults!r}")
        for name, limit in AUTOENCODER_LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, tuple) and (len(v) > limit[0] or any(m > limit[1] for m in v)):
                raise ValueError(f"{name} may hold at most {limit[0]} entries (f = 1, 2, 4 or 8) of at most "
                                 f"{limit[1]}, got {v!r}")
            if isinstance(v, int) and v > limit:
                raise ValueError(f"{name} must be at most {limit}, got {v!r}")
        if self.padded_size % self.factor:
            raise ValueError(f"image_size + 2 padding must be divisible by the downsampling factor f = "
                             f"{self.factor}, got image_size {self.image_size} and padding {self.padding}")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"groups={self.groups} must divide every channel count, not {self.base_channels * m}")
        if self.reg not in ("kl", "vq"):
            raise ValueError(f"reg must be 'kl' or 'vq', got {self.reg!r}")
        for name, lo, hi in (("beta", 0.0, float("inf")), ("codebook_decay", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}), got {v!r}")

    @property
    def factor(self) -> int:
        """f: the latent is f times smaller than the image on each side."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def padded_size(self) -> int:
        """The side the encoder sees: image_size + 2 padding."""
        return self.image_size + 2 * self.padding

    @property
    def latent_shape(self) -> tuple:
        """(c, h, w) = (c, (H + 2 padding) / f, (W + 2 padding) / f): the shape of one image's latent."""
        side = self.padded_size // self.factor
        return (self.latent_channels, side, side)


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus the (1x1-projected) input: the U-Net's block
    without the time embedding (an autoencoder has none)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x):  # (B, in_ch, H, W) -> (B, out_ch, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def _tower(cfg: AutoencoderConfig, chans: list, resample) -> nn.Sequential:
    """Residual blocks through the channel counts ``chans`` (one level each), ``resample``
    (a halving or a doubling) between levels."""
    layers, ch = [], chans[0]
    for i, out in enumerate(chans):
        for _ in range(cfg.num_res_blocks):
            layers.append(ResnetBlock(ch, out, cfg.groups))
            ch = out
        if i < len(chans) - 1:
            layers.append(resample(ch))
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Encoder E and decoder D of LDM's first stage (section 3), convolutional and residual.

    'kl': ``encode`` gives the posterior's moments (B, 2c, h, w); the latent is a sample
    z = mu + sigma eps (``kl_sample``, eps passed in) or the mode mu.
    'vq': ``encode`` gives the continuous z_e (B, c, h, w); as LDM, the latent a diffusion model
    learns is this PRE-quantisation z_e, and quantisation happens inside the decoder: the
    diffusion model's samples are continuous, and quantising them in ``decode`` snaps them to
    the nearest codebook vectors the decoder was trained on.  The codebook is an EMA
    (VQ-VAE Appendix A.1) kept in buffers, updated in training mode only; under torchrun the
    batch's z_e and indices are all-gathered first, so every rank applies the same update (that
    of one process on the whole global batch).  The buffer ``code_window`` (K,) counts the codes
    picked in training since it was last cleared (``code_statistics``, ``restart_dead_codes``)."""

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        cfg = self.config = config or AutoencoderConfig()
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        c, moments = cfg.latent_channels, 2 * cfg.latent_channels if cfg.reg == "kl" else cfg.latent_channels
        self.enc_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        self.encoder = _tower(cfg, chans, lambda ch: nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.enc_out = nn.Sequential(nn.GroupNorm(cfg.groups, chans[-1]), nn.SiLU(),
                                     nn.Conv2d(chans[-1], moments, 3, padding=1))
        self.dec_in = nn.Conv2d(c, chans[-1], 3, padding=1)
        self.decoder = _tower(cfg, chans[::-1], lambda ch: nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                                                        nn.Conv2d(ch, ch, 3, padding=1)))
        self.dec_out = nn.Sequential(nn.GroupNorm(cfg.groups, chans[0]), nn.SiLU(),
                                     nn.Conv2d(chans[0], cfg.in_channels, 3, padding=1))
        if cfg.reg == "vq":
            codebook = torch.randn(cfg.codebook_size, c)
            self.register_buffer("codebook", codebook)                      # (K, c)
            self.register_buffer("code_counts", torch.ones(cfg.codebook_size))   # N_i
            self.register_buffer("code_sums", codebook.clone())            # m_i = N_i e_i
            self.register_buffer("code_window", torch.zeros(cfg.codebook_size, dtype=torch.int64))  # picks
        self.last_z_e = None               # 'vq', training: the last global batch's z_e (N, c), restart candidates

    def encode(self, x):
        """x (B, C, H, W) -> moments (B, 2c, h, w) ('kl') or z_e (B, c, h, w) ('vq')."""
        p = self.config.padding
        if p:
            x = F.pad(x, (p, p, p, p), value=-1.0)                          # (B, C, H + 2p, W + 2p)
        return self.enc_out(self.encoder(self.enc_in(x)))

    def quantize(self, z_e):
        """VQ-VAE eq. 2 per latent pixel: z_e (B, c, h, w) -> z_q (B, c, h, w), indices (B, h, w)."""
        B, c, h, w = z_e.shape
        z = z_e.permute(0, 2, 3, 1).reshape(-1, c)                          # (B h w, c)
        z_q, k = ae.vq_quantize(z, self.codebook.to(z.dtype))
        return z_q.reshape(B, h, w, c).permute(0, 3, 1, 2), k.reshape(B, h, w)

    def decode(self, z):
        """z (B, c, h, w) -> x_hat (B, C, H, W); 'vq': z is quantised first (see the class)."""
        if self.config.reg == "vq":
            z = self.quantize(z)[0]
        return self._decode(z)

    def _decode(self, z):
        x = self.dec_out(self.decoder(self.dec_in(z)))                     # (B, C, H + 2p, W + 2p)
        p = self.config.padding
        return x[..., p:x.shape[-2] - p, p:x.shape[-1] - p] if p else x

    @torch.no_grad()
    def _update_codebook(self, z_e, indices):
        """The EMA codebook step (``ema_codebook_update``) on the global batch (all ranks' z_e
        and indices, gathered), copied into the buffers; the picks are added to ``code_window``."""
        c = z_e.shape[1]
        z = _all_gather(z_e.detach().float().permute(0, 2, 3, 1).reshape(-1, c))    # (N, c), N = GB h w
        k = _all_gather(indices.reshape(-1))                                          # (N,)
        counts, sums, codebook = ae.ema_codebook_update(self.code_counts, self.code_sums, z, k,
                                                        self.config.codebook_decay)
        self.code_counts.copy_(counts)
        self.code_sums.copy_(sums)
        self.codebook.copy_(codebook)
        self.code_window += ae.code_histogram(k, self.config.codebook_size)
        self.last_z_e = z

    def code_statistics(self) -> dict:
        """{'usage', 'perplexity', 'picks'} of the codes picked since ``code_window`` was last
        cleared (``codebook_usage``, ``perplexity``); None values while it holds no pick."""
        h = self.code_window
        picks = int(h.sum())
        if not picks:
            return {"usage": None, "perplexity": None, "picks": 0}
        return {"usage": ae.codebook_usage(h), "perplexity": ae.perplexity(h), "picks": picks}

    @torch.no_grad()
    def restart_dead_codes(self, threshold: float, rng: np.random.Generator) -> int:
        """Jukebox's random restarts (``restart_dead_codes``) of the codes picked fewer than
        ``threshold`` times in ``code_window``: each is replaced by a z_e of the last training
        batch drawn by ``rng`` (the same on every rank: the batch is the gathered one), and its
        EMA state restarts as the initial state does, N_i = 1 and m_i = e_i, so that the next
        ``ema_codebook_update`` moves it from there (e_i = m_i / N_i up to the Laplace smoothing).
        Then ``code_window`` is cleared.  Returns the number of codes restarted."""
        if self.last_z_e is None:
            raise RuntimeError("restart_dead_codes needs a training forward pass first (its candidates are "
                               "the last batch's encoder outputs)")
        z = self.last_z_e                                                  # (N, c)
        pick = torch.from_numpy(rng.integers(len(z), size=self.config.codebook_size)).to(z.device)
        candidates = z[pick].to(self.codebook.dtype)                       # (K, c)
        codebook, dead = ae.restart_dead_codes(self.codebook, self.code_window.to(self.codebook.dtype),
                                               candidates, threshold)
        self.codebook.copy_(codebook)
        self.code_sums.copy_(torch.where(dead[:, None], candidates, self.code_sums))
        self.code_counts.copy_(torch.where(dead, torch.ones_like(self.code_counts), self.code_counts))
        self.code_window.zero_()
        return int(dead.sum())

    def forward(self, x, noise=None) -> dict:
        """x (B, C, H, W) -> {'reconstruction' (B, C, H, W), 'latent' (B, c, h, w), and per
        example (B,): 'kl' (KL divergence summed over the latent) or 'commitment' (beta times
        the commitment term, VQ-VAE eq. 3; the EMA replaces the codebook term), plus 'indices'
        (B, h, w) for 'vq'}.  'kl': the latent is ``kl_sample`` with ``noise`` (B, c, h, w),
        or the mode when ``noise`` is None."""
        h = self.encode(x)
        if self.config.reg == "kl":
            mean, logvar = ae.kl_posterior(h)
            z = ae.kl_mode(mean, logvar) if noise is None else ae.kl_sample(mean, logvar, noise)
            return {"reconstruction": self._decode(z), "latent": z, "kl": ae.kl_divergence(mean, logvar)}
        z_q, indices = self.quantize(h)
        if self.training:
            self._update_codebook(h, indices)
        _, commitment = ae.vq_loss_terms(h, z_q)
        return {"reconstruction": self._decode(ae.straight_through(h, z_q)), "latent": h,
                "commitment": self.config.beta * commitment, "indices": indices}


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    """Under torchrun (an initialised process group of P > 1 ranks), the ranks' ``t`` concatenated
    in rank order along axis 0, which is the order of their slices of the global batch
    (``Dist.mine``); else ``t``.  (N, ...) -> (P N, ...), no gradient."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------
# SSIM, for the loss and the evaluation.

def ssim_window(sigma: float) -> int:
    """The side of torchmetrics' Gaussian SSIM window for ``sigma``: 2 int(3.5 sigma + 0.5) + 1
    (its ``kernel_size`` argument is ignored for a Gaussian window): 11 for Wang et al.'s 1.5."""
    return 2 * int(3.5 * sigma + 0.5) + 1


def ssim_per_image(x_hat, x, sigma: float = 1.5):
    """SSIM (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13, averaged over the map) of each image,
    differentiable, by torchmetrics on the images mapped from [-1, 1] to [0, 1] (data range 1,
    a fixed number: not the batch's range), in float32 outside autocast.  The Gaussian window
    (``ssim_window(sigma)``) must fit in the image: torchmetrics reflect-pads by half the window.
    Single-scale: MS-SSIM halves the image four times, which needs a side above 160 pixels for
    its 11-pixel window (pytorch-msssim refuses 28x28).  x_hat, x: (B, C, H, W) -> (B,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(x.shape[-2:])
    if ssim_window(sigma) > side:
        raise ValueError(f"ssim_sigma={sigma} gives a {ssim_window(sigma)}x{ssim_window(sigma)} Gaussian SSIM "
                         f"window, larger than the {x.shape[-2]}x{x.shape[-1]} images; use ssim_sigma < "
                         f"{largest_ssim_sigma(side):.3g} (e.g. 0.7: a 5x5 window)")
    autocast = torch.autocast(x.device.type, enabled=False) if x.device.type in ("cuda", "cpu") \
        else contextlib.nullcontext()
    with autocast:
        return structural_similarity_index_measure((x_hat.float() + 1) / 2, (x.float() + 1) / 2, sigma=sigma,
                                                   data_range=1.0, reduction="none")


def largest_ssim_sigma(side: int) -> float:
    """The sigma above which ``ssim_window`` exceeds ``side`` pixels (exclusive bound)."""
    half = (side - 1) // 2                      # int(3.5 sigma + 0.5) <= half
    return (half + 1 - 0.5) / 3.5


# ----------------------------------------------------------------------------------------------
# The optional adversarial term of LDM's first stage (its LPIPSWithDiscriminator, from taming).

class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, "pix2pix", section 3.2.2) in the shape of taming's
    NLayerDiscriminator: a 4x4 stride-2 conv and LeakyReLU(0.2), ``n_layers - 1`` more stride-2
    convs doubling the channels (at most 8x), one stride-1 conv, then a stride-1 conv to one logit
    per patch.  GroupNorm replaces its BatchNorm, so a rank's statistics do not depend on how the
    global batch is split (two processes = one on the doubled batch).
    x (B, C, H, W) -> logits (B, 1, h, w), one per overlapping patch."""

    def __init__(self, in_channels: int = 1, channels: int = 32, n_layers: int = 2, groups: int = 8):
        super().__init__()
        layers, ch = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)], channels
        for i in range(1, n_layers + 1):
            out = channels * min(2 ** i, 8)
            layers += [nn.Conv2d(ch, out, 4, stride=2 if i < n_layers else 1, padding=1, bias=False),
                       nn.GroupNorm(groups, out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


def hinge_d_loss(logits_real, logits_fake):
    """The discriminator's hinge loss (Lim & Ye 2017; taming's hinge_d_loss):
    1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))).  Logits of any shape -> scalar."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(rec_loss, gan_loss, last_layer, eps: float = 1e-4, max_weight: float = 1e4,
                        reduce=None):
    """LDM / taming's adaptive weight (Esser et al. 2021, "Taming Transformers", eq. 7):
    lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + eps) at the decoder's last layer G_L,
    clamped to [0, max_weight] and detached, so the GAN gradient there is as large as the
    reconstruction's.  ``reduce`` (e.g. the mean over ranks) is applied to both gradients first."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    if reduce is not None:
        g_rec, g_gan = reduce(g_rec), reduce(g_gan)
    return (g_rec.norm() / (g_gan.norm() + eps)).clamp(0.0, max_weight).detach()


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks under torchrun (P > 1), else ``t``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()
