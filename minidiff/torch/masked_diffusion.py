"""Masked diffusion (MDLM, Sahoo et al. 2024) on torch: binarised Fashion-MNIST with the U-Net,
and the Fashion-MNIST captions with a small transformer, through the one training loop.

The formulas are the core's (``minidiff.discrete``), run on torch tensors: the forward process
q(z_t | x) = Cat(alpha_t x + (1 - alpha_t) m) (``absorbing_cumulative``, ``q_xt_given_x0``,
``sample_categorical``), the loss (``masked_diffusion_loss``: MDLM eq. 10/11, a cross-entropy on
the masked tokens weighted 1/t for the linear schedule alpha_t = 1 - t) and the sampler
(``unmasking_sample``).  This file holds the two denoisers, the data, the ``Task`` and the reports.

- data 'fashion-mnist': x0 = (image > 127), 784 tokens in {0, 1} and [MASK] = 2.  The U-Net sees
  the one-hot of the 3 states (in_channels 3) and t * 1000 as its time (the scale its sinusoidal
  embedding was made for), and gives 2 logits per pixel (out_channels 2).
- data 'captions': ``caption_tokenizer`` ids, context 24, [MASK] = the vocabulary size.  [PAD] is
  a real token of the sequence: the model generates the caption's length as it unmasks (an
  all-[MASK] start needs no length drawn beforehand), at the price of spending part of the loss
  on easy [PAD] tokens.  The denoiser is ``TextEncoder``'s embeddings and blocks, a time
  embedding added to every position, attention over all positions, and a head over the vocabulary.

    cfg = MaskedDiffusionConfig.from_preset("cpu", data="captions")
    result = train_masked(cfg, "runs/captions_mdlm")
    net, cfg = model_from_checkpoint("runs/captions_mdlm")
    ids = sample_tokens(net, cfg, 64, seed=0)            # (64, 24) int64, no [MASK] left

    python -m minidiff.torch.masked_diffusion --data fashion-mnist --preset cpu --out runs/binary_mdlm

Same seed, same numbers: the batch, the times and the masks of step k come from generators
seeded by (seed, k), drawn for the global batch and sliced per rank.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import _checks
from ..backend import generator
from ..data.images import load_images
from ..discrete import (absorbing_cumulative, linear_schedule, masked_diffusion_loss, q_xt_given_x0,
                        sample_categorical, unmasking_sample)
from ..methods import config_from_dict
from ..nn.mlp import sinusoidal_embedding
from .loop import LoopConfig, Task, batch_indices, load_run, step_seed, train_loop
from .text import TextConfig, TextEncoder
from .unet import UNet, UNetConfig

DATA = ("fashion-mnist", "captions")
IMAGE_STATES = 2                   # binarised pixels: 0 (dark), 1 (light); [MASK] = 2
TIME_SCALE = 1000.0                # the U-Net's (and the text denoiser's) time input is t * 1000
CONTEXT = 24                       # caption tokens: [BOS] words [EOS] [PAD]...

# Presets: 'tiny' for tests (seconds), 'cpu' minutes on a laptop CPU, 'gpu' a real run on one GPU.
PRESETS = {
    "tiny": dict(steps=20, batch_size=8, lr=2e-3, warmup=5, ckpt_every=10, sample_every=0, n_grid=16,
                 sample_steps=8,
                 unet=dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(),
                           dropout=0.0, groups=4),
                 text=dict(width=32, layers=1, heads=2)),
    "cpu": dict(steps=3000, batch_size=32, lr=1e-3, warmup=100, ckpt_every=500, sample_every=0, sample_steps=100,
                unet=dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(7,),
                          dropout=0.0),
                text=dict(width=64, layers=2, heads=4)),
    "gpu": dict(steps=40000, batch_size=256, lr=5e-4, warmup=1000, ckpt_every=2000, sample_every=5000,
                sample_steps=784, ema_decay=0.9995,
                unet=dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,),
                          dropout=0.1),
                text=dict(width=256, layers=6, heads=8)),
}


@dataclasses.dataclass
class MaskedDiffusionConfig(LoopConfig):
    """A masked-diffusion run (saved in the checkpoint).  The loss the loop sees is MDLM's bound
    (``masked_diffusion_loss``) in nats, averaged over the batch and divided by the tokens per
    example: a per-token bound on -log p(x).  Times are drawn t = t_min + (1 - t_min) u with the
    low-discrepancy u_i = (i + U) / B that MDLM takes from VDM (Kingma et al. 2021: one uniform
    shift per batch, a lower-variance estimate); t_min > 0 keeps the weight 1/t finite (the
    bound leaves out t < t_min).
    ``unet`` is used for 'fashion-mnist', ``text`` for 'captions'."""
    data: str = "fashion-mnist"
    data_root: str = ""
    limit: int = 0                     # the first ``limit`` training examples (0: all)
    t_min: float = 1e-3
    sample_steps: int = 100            # unmasking steps of the sample hook and of sample_tokens
    tokenizer_sha256: str = ""         # 'captions': the caption tokenizer the run used
    unet: UNetConfig = dataclasses.field(default_factory=lambda: UNetConfig(in_channels=IMAGE_STATES + 1,
                                                                            out_channels=IMAGE_STATES))
    text: TextConfig = dataclasses.field(default_factory=TextConfig)

    def __post_init__(self):
        self.unet = config_from_dict(UNetConfig, self.unet, "unet", allow_missing=True)
        self.text = config_from_dict(TextConfig, self.text, "text", allow_missing=True)

    def validate(self):
        self.validate_loop()
        _checks.choice("data", self.data, DATA)
        _checks.int_at_least("limit", self.limit, 0)
        _checks.int_at_least("sample_steps", self.sample_steps, 1)
        _checks.finite_number("t_min", self.t_min, lambda v: 0 < v < 1, "in (0, 1)")
        u = self.unet
        if self.data == "fashion-mnist" and (u.in_channels, u.out_channels, u.image_size) != (IMAGE_STATES + 1,
                                                                                             IMAGE_STATES, 28):
            raise ValueError(f"unet must take in_channels={IMAGE_STATES + 1} (one-hot of 0, 1, [MASK]), give "
                             f"out_channels={IMAGE_STATES} logits and have image_size=28; got {u.in_channels}, "
                             f"{u.out_channels}, {u.image_size}")
        if self.data == "captions":
            V = caption_vocabulary_size()
            if self.text.vocab_size != V + 1 or self.text.context_length != CONTEXT:
                raise ValueError(f"text must have vocab_size={V + 1} (the caption vocabulary and [MASK]) and "
                                 f"context_length={CONTEXT}; got {self.text.vocab_size}, {self.text.context_length}")
        return self

    @property
    def states(self) -> int:
        """V, the data states of a token ([MASK] is V)."""
        return IMAGE_STATES if self.data == "fashion-mnist" else self.text.vocab_size - 1

    @property
    def token_shape(self) -> tuple:
        return (28, 28) if self.data == "fashion-mnist" else (self.text.context_length,)

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """A preset (``PRESETS``: 'tiny', 'cpu', 'gpu') for ``overrides['data']`` (default
        fashion-mnist), the U-Net's channels and the text vocabulary filled in; any field
        overridden (``unet``'s and ``text``'s fields by a dict)."""
        _checks.choice("preset", name, tuple(PRESETS))
        preset = dict(PRESETS[name])
        for key in ("unet", "text"):
            over = overrides.get(key) or {}
            if not isinstance(over, dict):
                raise TypeError(f"{key} overrides must be a dict of fields, got {type(over).__name__}")
            preset[key] = {**preset[key], **over}
        fields = {**preset, **{k: v for k, v in overrides.items() if k not in ("unet", "text")}}
        fields["unet"] = {"in_channels": IMAGE_STATES + 1, "out_channels": IMAGE_STATES, "image_size": 28,
                          **fields["unet"]}
        if fields.get("data", cls.data) == "captions":
            fields["text"] = {"vocab_size": caption_vocabulary_size() + 1, "context_length": CONTEXT,
                              **fields["text"]}
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict, what: str = "config"):
        """A checkpoint's config, strictly: an unknown or missing field is named."""
        if isinstance(d, dict):
            d = dict(d)
            for key, sub in (("unet", UNetConfig), ("text", TextConfig)):
                if isinstance(d.get(key), dict):
                    d[key] = config_from_dict(sub, d[key], f"{what}[{key!r}]")
        return config_from_dict(cls, d, what)


# ----------------------------------------------------------------------------------------------
# Data

def binarise(images) -> np.ndarray:
    """Fashion-MNIST as binary tokens: uint8 images (N, 1, 28, 28) -> (N, 28, 28) int64, 1 where
    the pixel is > 127."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[1:] != (1, 28, 28) or a.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape (N, 1, 28, 28), got {a.dtype} {a.shape}")
    return (a[:, 0] > 127).astype(np.int64)


def tokens_to_images(x) -> torch.Tensor:
    """Binary tokens (N, 28, 28) in {0, 1} -> images (N, 1, 28, 28) float32 in the model range {-1, 1}."""
    x = torch.as_tensor(x)
    if x.ndim != 3 or x.is_floating_point() or (x.numel() and (int(x.min()) < 0 or int(x.max()) > 1)):
        raise ValueError(f"x must be binary tokens (N, H, W) in {{0, 1}}, got {x.dtype} {tuple(x.shape)}")
    return (2.0 * x.float() - 1.0)[:, None]


def caption_vocabulary_size() -> int:
    from ..data.tokenizer import caption_tokenizer

    return caption_tokenizer().get_vocab_size()


def caption_tokens(captions) -> np.ndarray:
    """Caption strings (list of N) -> token ids (N, 24) int64 of ``caption_tokenizer``; a caption
    that does not fit, or has a word the tokenizer lacks, is a ValueError."""
    from ..data.tokenizer import caption_tokenizer, encode

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = encode(caption_tokenizer(), list(captions), CONTEXT)
    if caught:
        raise ValueError(f"captions: {len(caught)} do not tokenise cleanly, e.g. {caught[0].message}")
    return ids


def training_tokens(cfg: MaskedDiffusionConfig, split: str = "train") -> np.ndarray:
    """The data of a run as tokens: (N, 28, 28) binary pixels or (N, 24) caption ids, int64."""
    limit = cfg.limit or None
    if cfg.data == "fashion-mnist":
        return binarise(load_images("fashion-mnist", split, root=cfg.data_root or None, limit=limit)[0])
    from ..data.captions import caption_dataset

    return caption_tokens(caption_dataset(split, root=cfg.data_root or None, limit=limit)[2])


# ----------------------------------------------------------------------------------------------
# The denoisers: z_t (B, ...) in [0, V] and t (B,) in [0, 1] -> logits of p(x0 | z_t), (B, ..., V)

def _check_tokens(name: str, x, shape: tuple, V: int, masked: bool = True) -> torch.Tensor:
    """x as an integer tensor (B, *shape) of states in [0, V] (V = [MASK]; ``masked=False``: [0, V))."""
    x = torch.as_tensor(x)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.is_floating_point():
        raise ValueError(f"{name} must be integer tokens of shape (B, {', '.join(map(str, shape))}), got "
                         f"{x.dtype} {tuple(x.shape)}")
    hi = V if masked else V - 1
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > hi):
        allowed = f"[0, {V}] ({V} = [MASK])" if masked else f"[0, {V}) (data states, no [MASK])"
        raise ValueError(f"{name} must hold states in {allowed}, got values in [{int(x.min())}, {int(x.max())}]")
    return x


def _check_times(t, B: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.shape != (B,) or not t.is_floating_point():
        raise ValueError(f"t must be float times of shape (B,) = ({B},), got {t.dtype} {tuple(t.shape)}")
    return t


class BinaryUNetDenoiser(nn.Module):
    """x_theta(z_t, t) for binary images: the U-Net on the one-hot of the 3 states (B, 3, H, W),
    time t * 1000, its 2 output channels the logits of each pixel.  (B, H, W), (B,) -> (B, H, W, 2)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config)

    def forward(self, zt, t):
        c = self.config
        V = c.out_channels
        zt = _check_tokens("zt", zt, (c.image_size, c.image_size), V)
        t = _check_times(t, zt.shape[0], zt.device)
        x = nn.functional.one_hot(zt.long(), V + 1).permute(0, 3, 1, 2).float()      # (B, V + 1, H, W)
        return self.unet(x, t.float() * TIME_SCALE).permute(0, 2, 3, 1)              # (B, H, W, V)


class TextDenoiser(nn.Module):
    """x_theta(z_t, t) for token sequences: ``TextEncoder``'s token and position embeddings plus a
    time embedding (sinusoidal of t * 1000, then an MLP, as the U-Net's), its pre-norm blocks with
    attention over every position ([PAD] is data here), its final LayerNorm, then a linear head
    over the V = vocab_size - 1 data tokens (no [MASK] output: MDLM's zero masking probability).
    (B, L), (B,) -> (B, L, V)."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.encoder = TextEncoder(config)
        w = config.width + config.width % 2
        self.time_mlp = nn.Sequential(nn.Linear(w, 4 * config.width), nn.SiLU(), nn.Linear(4 * config.width,
                                                                                             config.width))
        self.head = nn.Linear(config.width, config.vocab_size - 1)

    def forward(self, zt, t):
        c, enc = self.config, self.encoder
        zt = _check_tokens("zt", zt, (c.context_length,), c.vocab_size - 1)
        t = _check_times(t, zt.shape[0], zt.device)
        emb = sinusoidal_embedding(t.double() * TIME_SCALE, c.width + c.width % 2).to(enc.pos_emb.dtype)
        x = enc.token_emb(zt.long()) + enc.pos_emb + self.time_mlp(emb)[:, None]     # (B, L, D)
        everywhere = torch.ones(zt.shape, dtype=torch.bool, device=zt.device)
        for block in enc.blocks:
            x = block(x, everywhere)
        return self.head(enc.norm(x))                                                # (B, L, V)


def build_denoiser(cfg: MaskedDiffusionConfig) -> nn.Module:
    return BinaryUNetDenoiser(cfg.unet) if cfg.data == "fashion-mnist" else TextDenoiser(cfg.text)


# ----------------------------------------------------------------------------------------------
# The forward process and the loss

def mask_tokens(x0, t, rng, V: int):
    """z_t ~ q(z_t | x) = Cat(alpha_t x + (1 - alpha_t) m) (MDLM eq. 2) with alpha_t = 1 - t:
    each token masked with probability t.  x0: (B, ...) in [0, V); t: (B,) float; rng: a torch
    generator of ``backend.generator`` -> (B, ...) in [0, V]."""
    x0 = torch.as_tensor(x0)
    alpha_t = linear_schedule(t)[0]
    Qbar = absorbing_cumulative(alpha_t, V + 1)                                   # (B, V + 1, V + 1)
    Qbar = Qbar.reshape((Qbar.shape[0],) + (1,) * (x0.ndim - 1) + tuple(Qbar.shape[1:]))
    return sample_categorical(q_xt_given_x0(x0, Qbar), rng)


def draw_times(B: int, rng, t_min: float, dtype=torch.float32):
    """The low-discrepancy times (VDM, Kingma et al. 2021; used by MDLM): t_i = t_min + (1 - t_min) (i + U) / B, one U ~ U[0, 1). -> (B,)."""
    u = (torch.arange(B, device=rng.device, dtype=torch.float64) + rng.rand((1,), dtype=torch.float64)) / B
    return (t_min + (1 - t_min) * u).to(dtype)


def masked_bound(net, x0, zt, t):
    """MDLM's bound per example (nats, MDLM eq. 10/11): ``masked_diffusion_loss`` of the net's
    logits at z_t (B, ...) with the linear schedule at t (B,), against x0 (B, ...).  -> (B,)."""
    logits = net(zt, t)
    if logits.dtype in (torch.float16, torch.bfloat16):                # autocast: the sum in float32
        logits = logits.float()
    alpha_t, dalpha_t = linear_schedule(t.to(logits.dtype))
    return masked_diffusion_loss(logits, x0, zt, alpha_t, dalpha_t)


class MaskedDiffusionTask(Task):
    """A denoiser (``build_denoiser``) trained on MDLM's bound: what ``train_loop`` runs for
    ``train_masked``."""

    def __init__(self, cfg: MaskedDiffusionConfig, tokens=None):
        self.cfg = cfg
        self.tokens = tokens           # the training tokens (N, ...) int64, or None: ``training_tokens``

    def build(self, device, dist):
        cfg = self.cfg
        self.device, self.dist = device, dist
        data = training_tokens(cfg) if self.tokens is None else self.tokens
        self.data = _check_tokens("tokens", data, cfg.token_shape, cfg.states, masked=False).to(device)
        return build_denoiser(cfg)

    def loss(self, net, k: int):
        cfg, dist = self.cfg, self.dist
        GB = cfg.batch_size * dist.world
        mine = dist.mine(GB)
        idx = torch.from_numpy(batch_indices(len(self.data), GB, cfg.seed, k)).to(self.device)
        x0 = self.data[idx]                                                       # (GB, ...)
        rng = generator(step_seed(cfg.seed, k, 1), backend="torch", device=self.device)
        t = draw_times(GB, rng, cfg.t_min)                                        # (GB,)
        zt = mask_tokens(x0, t, rng, cfg.states)                                  # drawn for the global batch
        per_example = masked_bound(net, x0[mine], zt[mine], t[mine])             # (B,) nats
        return per_example.mean() / float(np.prod(cfg.token_shape))

    def sample(self, ema, path: Path):
        """``n_grid`` samples: a PNG grid at ``path`` for images, the decoded captions in
        ``path`` with the suffix .txt for captions."""
        x = sample_tokens(ema, self.cfg, self.cfg.n_grid, seed=self.cfg.seed, device=self.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.cfg.data == "fashion-mnist":
            from ..plot import save_image_grid

            save_image_grid(tokens_to_images(x).numpy(), path)
        else:
            from ..data.tokenizer import caption_tokenizer, decode

            path.with_suffix(".txt").write_text("\n".join(decode(caption_tokenizer(), x.numpy())) + "\n")


def train_masked(cfg: MaskedDiffusionConfig, out, resume: bool = False, device=None, progress: bool = True,
                 log=print, tokens=None) -> dict:
    """Train a masked-diffusion model on ``cfg.data`` into ``out`` (``train_loop``'s result).
    tokens: the training tokens (N, ...) int64 instead of ``training_tokens(cfg)``."""
    cfg = cfg.validate()
    if cfg.data == "captions":
        from ..data.tokenizer import caption_tokenizer, tokenizer_sha256

        sha = tokenizer_sha256(caption_tokenizer())
        if cfg.tokenizer_sha256 and cfg.tokenizer_sha256 != sha:
            raise ValueError(f"tokenizer_sha256 {cfg.tokenizer_sha256[:12]}... is not the caption tokenizer's "
                             f"({sha[:12]}...)")
        cfg = dataclasses.replace(cfg, tokenizer_sha256=sha)
    return train_loop(MaskedDiffusionTask(cfg, tokens), cfg, out, resume=resume, device=device, progress=progress,
                      log=log, desc=f"masked diffusion: {cfg.data}")


def model_from_checkpoint(path, device="cpu", use_ema: bool = True):
    """(the denoiser with the checkpoint's weights, in eval mode; the run's config)."""
    from ..checkpoint import load_modules

    tensors, cfg = load_run(path, MaskedDiffusionConfig, "unet")
    net = build_denoiser(cfg)
    load_modules({"ema" if use_ema else "model": net}, tensors, path)
    return net.to(device).eval(), cfg


# ----------------------------------------------------------------------------------------------
# Sampling and evaluation

@torch.no_grad()
def sample_tokens(net, cfg: MaskedDiffusionConfig, n: int, seed: int = 0, steps: int | None = None,
                  device=None) -> torch.Tensor:
    """n samples by unmasking (``unmasking_sample``) from all-[MASK] over ``steps`` equal time
    steps (default ``cfg.sample_steps``), float64 probabilities.  -> (n, ...) int64 on the CPU."""
    n = _checks.int_at_least("n", n, 1)
    steps = _checks.int_at_least("steps", cfg.sample_steps if steps is None else steps, 1)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    x_T = torch.full((n,) + cfg.token_shape, cfg.states, dtype=torch.int64, device=device)
    rng = generator(seed, backend="torch", device=device)
    try:
        x = unmasking_sample(lambda z, t: net(z, t.float()).double(), x_T, np.linspace(1.0, 0.0, steps + 1),
                             lambda t: linear_schedule(t)[0], rng)
    finally:
        net.train(was_training)
    return x.cpu()


@torch.no_grad()
def bound_per_token(net, cfg: MaskedDiffusionConfig, x0, n_times: int = 4, seed: int = 0,
                    batch_size: int = 250) -> float:
    """MDLM's bound on -log p(x) in nats per token, a Monte Carlo mean over ``n_times`` draws of
    (t, z_t) per example of ``x0`` (N, ...) (the low-discrepancy times of the loss)."""
    x0 = _check_tokens("x0", x0, cfg.token_shape, cfg.states, masked=False)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    total = 0.0
    try:
        for r in range(n_times):
            for i in range(0, len(x0), batch_size):
                xb = x0[i:i + batch_size].to(device)
                rng = generator(step_seed(seed, i, 10 + r), backend="torch", device=device)
                t = draw_times(len(xb), rng, cfg.t_min)
                total += float(masked_bound(net, xb, mask_tokens(xb, t, rng, cfg.states), t).sum())
    finally:
        net.train(was_training)
    return total / (n_times * len(x0) * float(np.prod(cfg.token_shape)))


def binary_image_report(samples, test_tokens, train_tokens) -> dict:
    """What binarised samples (N, 28, 28) are worth against binarised test images: the FD of the
    shipped classifier's features to the test images, beside the floor of N binarised training
    images against the same test images (the classifier was trained on grey levels, so these FDs
    are comparable to each other, not to a grey-level FD); and the fraction of light pixels."""
    from .evaluate import evaluate_images

    s = torch.as_tensor(samples)
    n = len(s)
    test, train = torch.as_tensor(test_tokens), torch.as_tensor(train_tokens)[:n]
    ref = tokens_to_images(test)
    fd = evaluate_images(tokens_to_images(s), reference=ref, kid_subsets=10)
    floor = evaluate_images(tokens_to_images(train), reference=ref, kid_subsets=10)
    return {"fd_vs_binarised_test": fd["fd"], "fd_floor_binarised_train_vs_test": floor["fd"],
            "fd_ratio_to_floor": fd["fd"] / floor["fd"], "n_samples": n, "n_reference": len(test),
            "light_fraction_samples": float(s.float().mean()), "light_fraction_test": float(test.float().mean()),
            "class_accuracy": "n/a (unconditional)"}


def caption_report(sample_ids, train_ids, test_ids) -> dict:
    """What generated captions (N, 24) ids are worth: the fraction that ``parse_caption`` parses
    (one class, no attribute said twice with two values), that are well formed ([BOS], words,
    one [EOS], then only [PAD]), their class distribution against the training corpus's (total
    variation), and the fraction that copy a training caption exactly, beside the same fraction
    for the held-out test captions (a corpus of templates repeats itself: that is the floor)."""
    from ..data.captions import parse_caption
    from ..data.tokenizer import BOS_ID, EOS_ID, PAD_ID, caption_tokenizer, decode

    tok = caption_tokenizer()
    s, train, test = (np.asarray(a) for a in (sample_ids, train_ids, test_ids))
    texts, train_texts, test_texts = decode(tok, s), decode(tok, train), decode(tok, test)

    def labels(ts):
        out = []
        for text in ts:
            try:
                out.append(parse_caption(text)[0])
            except ValueError:
                out.append(-1)
        return np.array(out)

    def well_formed(row):
        ends = np.flatnonzero(row == EOS_ID)
        return (row[0] == BOS_ID and len(ends) == 1 and np.all(row[ends[0] + 1:] == PAD_ID)
                and not np.isin(row[1:ends[0]], (BOS_ID, EOS_ID, PAD_ID)).any())

    y, y_train = labels(texts), labels(train_texts)
    parsed = y >= 0
    p = np.bincount(y[parsed], minlength=10) / max(parsed.sum(), 1)
    q = np.bincount(y_train[y_train >= 0], minlength=10) / max((y_train >= 0).sum(), 1)
    seen = set(train_texts)
    return {"n_samples": len(texts), "parsed_fraction": float(parsed.mean()),
            "well_formed_fraction": float(np.mean([well_formed(r) for r in s])),
            "class_tv_to_corpus": float(0.5 * np.abs(p - q).sum()),
            "class_distribution_samples": p.round(4).tolist(), "class_distribution_corpus": q.round(4).tolist(),
            "copy_fraction": float(np.mean([t in seen for t in texts])),
            "copy_fraction_test_captions": float(np.mean([t in seen for t in test_texts])),
            "unique_fraction": len(set(texts)) / len(texts), "examples": texts[:12]}


# ----------------------------------------------------------------------------------------------
# Command line

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minidiff.torch.masked_diffusion", description=__doc__.split("\n")[0])
    p.add_argument("--data", default="fashion-mnist", help=f"one of {', '.join(DATA)}")
    p.add_argument("--preset", default="cpu", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int)
    p.add_argument("--seconds", type=float, help="stop after this much training time")
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    try:
        over = {"data": a.data}
        if a.steps is not None:
            over["steps"] = a.steps
        if a.seconds is not None:
            over["max_seconds"] = a.seconds
        cfg = MaskedDiffusionConfig.from_preset(a.preset, **over)
        r = train_masked(cfg, a.out, resume=a.resume, device=a.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r['steps']} steps, last loss {np.mean(r['losses'][-50:]):.4f} nats/token, {r['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
