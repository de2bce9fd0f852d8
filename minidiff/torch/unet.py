"""A small U-Net for images: the eps-model of DDPM and, wrapped by ``minidiff.edm.precondition``,
the raw network F of an EDM denoiser.

The architecture of DDPM (Ho et al. 2020, Appendix B) as refined by "Diffusion Models Beat GANs"
(Dhariwal & Nichol 2021): residual blocks with GroupNorm and SiLU, the time embedding injected as
a per-channel scale and shift, multi-head self-attention at chosen resolutions, an optional class
embedding added to the time embedding (with a null class for classifier-free guidance).  With
``context_dim`` set, the attention resolutions get LDM's transformer block instead (self-attention,
cross-attention on a context sequence tau(y) such as a caption's token embeddings, feed-forward;
Rombach et al. 2022, section 3.3): ``net(x, t, context=c, context_mask=m)``.

    cfg = UNetConfig(in_channels=1, image_size=28, channel_mults=(1, 2, 2), attention_resolutions=(7,))
    net = UNet(cfg); print(net.summary())
    eps = net(x, t)                       # x: (B, 1, 28, 28), t: (B,) -> (B, 1, 28, 28)
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.mlp import sinusoidal_embedding
from ._init import _near_zero_
from .attention import Attention, TransformerBlock, attention  # noqa: F401  (attention: lesson 11 and older imports)


UNET_LIMITS = {"in_channels": 64, "out_channels": 64, "image_size": 2048, "base_channels": 1024,
               "num_res_blocks": 16, "num_heads": 64, "groups": 1024, "channel_mults": (8, 16),
               "attention_resolutions": (8, 128)}


@dataclasses.dataclass
class UNetConfig:
    in_channels: int = 1
    out_channels: int | None = None            # None: the same as in_channels
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple = (1, 2, 2)           # one entry per resolution: 28 -> 14 -> 7
    num_res_blocks: int = 2                    # residual blocks per resolution on the way down
    attention_resolutions: tuple = (7,)        # the resolutions (in pixels) that get self-attention
    num_heads: int = 4
    dropout: float = 0.1
    num_classes: int | None = None             # None: unconditional
    context_dim: int | None = None             # cross-attention on a (B, S, context_dim) context (None: none)
    pooled_context: bool = False               # also add the context's masked mean to the time embedding
                                               # (Imagen's pooled text embedding; needs context_dim)
    position_embedding: bool = False           # a fixed 2-D sin-cos position code on the transformer blocks'
                                               # tokens (layouts; needs context_dim, channels divisible by 4)
    time_embedding: str = "sinusoidal"         # 'sinusoidal' (DDPM) or 'fourier' (random features, NCSN++)
    fourier_scale: float = 16.0                # std of the random Fourier frequencies
    groups: int = 8                            # GroupNorm groups
    augment_dim: int = 0                       # EDM's augment labels (B, augment_dim) as conditioning (0: none)

    # fields added since checkpoints were saved without them (their defaults: what those runs did)
    LATER_FIELDS: ClassVar[tuple] = ("pooled_context", "position_embedding")

    def __post_init__(self):
        if self.out_channels is None:
            self.out_channels = self.in_channels
        self.channel_mults = tuple(self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        for name in ("in_channels", "out_channels", "image_size", "base_channels", "num_res_blocks",
                     "num_heads", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not self.channel_mults or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of integers >= 1, got {self.channel_mults!r}")
        # Sanity limits, far above anything minidiff trains: a config (say, a checkpoint's) cannot
        # ask for terabytes before a single weight is read.
        for name, limit in UNET_LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, tuple) and (len(v) > limit[0] or any(m > limit[1] for m in v)):
                raise ValueError(f"{name} may hold at most {limit[0]} entries of at most {limit[1]}, got {v!r}")
            if isinstance(v, int) and v > limit:
                raise ValueError(f"{name} must be at most {limit}, got {v!r}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size must be divisible by 2^(len(channel_mults) - 1) = {factor} "
                             f"(one halving per extra level), got {self.image_size}")
        bad = sorted(set(self.attention_resolutions) - set(self.resolutions))
        if bad:
            raise ValueError(f"attention_resolutions {bad} are not among this U-Net's resolutions {self.resolutions}")
        for res, m in zip(self.resolutions, self.channel_mults):
            ch = self.base_channels * m
            if ch % self.groups:
                raise ValueError(f"groups={self.groups} must divide every channel count, not {ch}")
            if res in self.attention_resolutions and ch % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide the channels ({ch}) where attention runs")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise ValueError(f"num_classes must be None or an integer >= 1, got {self.num_classes!r}")
        if self.context_dim is not None:
            if isinstance(self.context_dim, bool) or not isinstance(self.context_dim, int) or not 1 <= self.context_dim <= 4096:
                raise ValueError(f"context_dim must be None or an integer in [1, 4096], got {self.context_dim!r}")
            if not self.attention_resolutions:
                raise ValueError("context_dim needs attention_resolutions: cross-attention runs where attention does")
        if not isinstance(self.pooled_context, bool):
            raise ValueError(f"pooled_context must be True or False, got {self.pooled_context!r}")
        if self.pooled_context and self.context_dim is None:
            raise ValueError("pooled_context needs context_dim: it pools the cross-attention's context")
        if not isinstance(self.position_embedding, bool):
            raise ValueError(f"position_embedding must be True or False, got {self.position_embedding!r}")
        if self.position_embedding:
            if self.context_dim is None:
                raise ValueError("position_embedding needs context_dim: it codes the transformer blocks' tokens")
            bad = [self.base_channels * m for r, m in zip(self.resolutions, self.channel_mults)
                   if r in self.attention_resolutions and (self.base_channels * m) % 4]
            if bad:
                raise ValueError(f"position_embedding needs the channels where attention runs divisible by 4, "
                                 f"got {bad}")
        if self.time_embedding not in ("sinusoidal", "fourier"):
            raise ValueError(f"time_embedding must be 'sinusoidal' or 'fourier', got {self.time_embedding!r}")
        a = self.augment_dim
        if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a <= 64:
            raise ValueError(f"augment_dim must be an integer in [0, 64] (0: no augment labels), got {a!r}")
        if self.base_channels % 2:
            raise ValueError(f"base_channels must be even (it is the time embedding's size), got {self.base_channels}")

    @property
    def resolutions(self) -> tuple:
        return tuple(self.image_size // 2 ** i for i in range(len(self.channel_mults)))


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2 pi t w), sin(2 pi t w)], w ~ N(0, scale^2), fixed (NCSN++)."""

    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, t):  # (B,) -> (B, dim)
        angles = 2 * math.pi * t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def modulate(h, emb_out):
    """AdaGN (Dhariwal & Nichol 2021, section 3): the time embedding's projection ``emb_out``
    (B, 2C) is split into a per-channel scale and shift of the normalised activations ``h``
    (B, C, H, W): h * (1 + scale) + shift.  Returns (B, C, H, W)."""
    if emb_out.ndim != 2 or emb_out.shape != (h.shape[0], 2 * h.shape[1]):
        raise ValueError(f"emb_out must have shape (B, 2C) = ({h.shape[0]}, {2 * h.shape[1]}), "
                         f"got {tuple(emb_out.shape)}")
    # BEGIN SOLUTION
    # hint: split emb_out[:, :, None, None] into scale and shift along dim 1 (chunk(2, dim=1));
    # hint: return h * (1 + scale) + shift
    scale, shift = emb_out[:, :, None, None].chunk(2, dim=1)           # (B, C, 1, 1) each
    return h * (1 + scale) + shift
    # END SOLUTION


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, then the embedding as scale and shift of the second GroupNorm
    (Dhariwal & Nichol 2021, "AdaGN"), SiLU -> dropout -> conv, plus the (1x1-projected) input."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _near_zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):  # x: (B, in_ch, H, W), emb: (B, emb_dim) -> (B, out_ch, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = modulate(self.norm2(h), self.emb(F.silu(emb)))              # (B, out_ch, H, W)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Stage(nn.Module):
    """One residual block, followed at the chosen resolutions by self-attention, or (context_dim
    set) by a transformer block with cross-attention on the context."""

    def __init__(self, in_ch, out_ch, cfg: UNetConfig, emb_dim: int, attention: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, cfg.dropout, cfg.groups)
        self.attn = None
        if attention:
            self.attn = (Attention(out_ch, cfg.num_heads, cfg.groups) if cfg.context_dim is None
                         else TransformerBlock(out_ch, cfg.context_dim, cfg.num_heads, cfg.groups,
                                               cfg.position_embedding))

    def forward(self, x, emb, context=None, context_mask=None):
        h = self.res(x, emb)
        if isinstance(self.attn, TransformerBlock):
            return self.attn(h, context, context_mask)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def pooled_context(context, mask=None):
    """The mean of the real tokens of a context: (B, S, D), mask (B, S) bool or None -> (B, D).
    A row without a real token pools to zeros."""
    if mask is None:
        return context.mean(1)
    m = mask.to(context.dtype)[..., None]                                  # (B, S, 1)
    return (context * m).sum(1) / m.sum(1).clamp(min=1.0)


class UNet(nn.Module):
    """eps_theta(x, t) (or F(c_in x, c_noise) inside an EDM denoiser), optionally class-conditional.

    forward(x (B, C, H, W), t (B,) int or float, class_labels (B,) int64 or None,
            context (B, S, context_dim) or None, context_mask (B, S) bool or None) -> (B, out_channels, H, W).
    With num_classes set, label ``num_classes`` (``self.null_class``) means "no class", for
    classifier-free guidance.  With context_dim set, ``context`` is required (the conditioning
    sequence tau(y)); ``context_mask`` marks its real tokens (None: all real).  With augment_dim
    set, ``augment_labels`` (B, augment_dim) float tell the network how its input was augmented
    (EDM section 5); None means zeros ("not augmented"), what the samplers pass."""

    def __init__(self, config: UNetConfig | None = None, verbose: bool = False):
        super().__init__()
        cfg = self.config = config if config is not None else UNetConfig()
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.fourier = FourierEmbedding(ch, cfg.fourier_scale) if cfg.time_embedding == "fourier" else None
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.null_class = cfg.num_classes
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes is not None else None
        # EDM (section 5): the augmentation's parameters, a conditioning added like the class's
        self.augment_emb = nn.Linear(cfg.augment_dim, emb_dim, bias=False) if cfg.augment_dim else None
        # Imagen (Saharia et al. 2022, the U-Net's conditioning): the pooled context, added like a class
        self.context_emb = nn.Linear(cfg.context_dim, emb_dim) if cfg.pooled_context else None
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        # The way down: every layer's output is kept for a skip connection on the way up.
        self.down, skip_chs, res = nn.ModuleList(), [ch], cfg.image_size
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(Stage(ch, cfg.base_channels * mult, cfg, emb_dim, res in cfg.attention_resolutions))
                ch = cfg.base_channels * mult
                skip_chs.append(ch)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(Downsample(ch))
                res //= 2
                skip_chs.append(ch)
        self.mid = nn.ModuleList([Stage(ch, ch, cfg, emb_dim, res in cfg.attention_resolutions),
                                  Stage(ch, ch, cfg, emb_dim, False)])
        # The way up: one more block per level than on the way down, each fed a skip connection.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(Stage(ch + skip_chs.pop(), cfg.base_channels * mult, cfg, emb_dim,
                                     res in cfg.attention_resolutions))
                ch = cfg.base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
                res *= 2
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, ch), nn.SiLU(),
                                 _near_zero_(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))
        if verbose:
            print(self.summary())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> str:
        c = self.config
        chans = "/".join(str(c.base_channels * m) for m in c.channel_mults)
        attn = ",".join(map(str, c.attention_resolutions)) or "none"
        cond = f"{c.num_classes} classes (+ null)" if c.num_classes is not None else "unconditional"
        if c.context_dim is not None:
            cond = (cond + " + " if c.num_classes is not None else "") + f"cross-attention on a {c.context_dim}-d context"
            cond += " (and its pooled mean in the time embedding)" if c.pooled_context else ""
            cond += ", 2-D position code on its tokens" if c.position_embedding else ""
        return (f"UNet {c.in_channels}x{c.image_size}x{c.image_size} -> {c.out_channels} channels | "
                f"channels {chans} | {c.num_res_blocks} res blocks/level | attention at {attn} | "
                f"{c.time_embedding} time embedding | {cond} | {self.num_parameters():,} parameters")

    def _embedding(self, t, class_labels, B: int, device, dtype, augment_labels=None):
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must have shape (B,) = ({B},) or be a scalar, got {tuple(t.shape)}")
        ch = self.config.base_channels
        e = self.fourier(t) if self.fourier is not None else sinusoidal_embedding(t, ch)
        emb = self.time_mlp(e.to(dtype))                                   # (B, 4 ch)
        if augment_labels is not None:                                     # None: zeros, "not augmented"
            emb = emb + self._augment_embedding(augment_labels, B, device, dtype)
        if self.class_emb is None:
            if class_labels is not None:
                raise ValueError("class_labels were given but this U-Net is unconditional (num_classes=None)")
            return emb
        if class_labels is None:
            raise ValueError(f"class_labels are required: this U-Net has num_classes={self.config.num_classes}; "
                             f"pass label {self.null_class} (self.null_class) for 'no class'")
        y = torch.as_tensor(class_labels, device=device)
        if y.shape != (B,) or y.is_floating_point() or y.min() < 0 or y.max() > self.null_class:
            raise ValueError(f"class_labels must be integers in [0, {self.null_class}] of shape ({B},), "
                             f"got shape {tuple(y.shape)}")
        return emb + self.class_emb(y.long())                              # (B, 4 ch)

    def _context(self, context, context_mask, B: int, dtype) -> dict:
        """The cross-attention keywords, checked: {} for a U-Net without cross-attention."""
        D = self.config.context_dim
        if D is None:
            if context is not None or context_mask is not None:
                raise ValueError("context was given but this U-Net has no cross-attention (context_dim=None)")
            return {}
        if context is None:
            raise ValueError(f"context (B, S, {D}) is required: this U-Net has cross-attention (context_dim={D})")
        if context.ndim != 3 or context.shape[0] != B or context.shape[2] != D:
            raise ValueError(f"context must have shape (B, S, context_dim) = ({B}, S, {D}), got {tuple(context.shape)}")
        if context_mask is not None and (context_mask.dtype != torch.bool or context_mask.shape != context.shape[:2]):
            raise ValueError(f"context_mask must be a bool tensor of shape (B, S) = {tuple(context.shape[:2])}, "
                             f"got {context_mask.dtype} {tuple(context_mask.shape)}")
        return {"context": context.to(dtype), "context_mask": context_mask}

    def _augment_embedding(self, augment_labels, B: int, device, dtype):
        """EDM's augment labels (B, augment_dim) mapped linearly into the embedding: (B, 4 ch)."""
        if self.augment_emb is None:
            raise ValueError("augment_labels were given but this U-Net takes none (augment_dim=0)")
        a = torch.as_tensor(augment_labels, device=device)
        if a.shape != (B, self.config.augment_dim) or not a.is_floating_point():
            raise ValueError(f"augment_labels must be floats of shape (B, augment_dim) = ({B}, "
                             f"{self.config.augment_dim}), got {a.dtype} of shape {tuple(a.shape)}")
        return self.augment_emb(a.to(dtype))

    def forward(self, x, t, class_labels=None, context=None, context_mask=None, augment_labels=None):
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W) (in_channels={cfg.in_channels}), "
                             f"got {tuple(x.shape)}")
        if tuple(x.shape[2:]) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"x must be {cfg.image_size}x{cfg.image_size} (image_size), got "
                             f"{x.shape[2]}x{x.shape[3]}")
        emb = self._embedding(t, class_labels, x.shape[0], x.device, x.dtype, augment_labels)  # (B, 4 ch)
        ctx = self._context(context, context_mask, x.shape[0], x.dtype)         # {} or context, context_mask
        if self.context_emb is not None:
            emb = emb + self.context_emb(pooled_context(ctx["context"], ctx["context_mask"]))
        h = self.stem(x)                                                       # (B, ch, H, W)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb, **ctx) if isinstance(layer, Stage) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb, **ctx)                                           # (B, ch * mults[-1], H / 2^L, ...)
        for layer in self.up:
            h = layer(h) if isinstance(layer, Upsample) else layer(torch.cat([h, skips.pop()], dim=1), emb, **ctx)
        return self.out(h)                                                     # (B, out_channels, H, W)
