"""Latent diffusion (Rombach et al. 2022, section 3): the diffusion model learns z = s E(x),
the latent of a trained first-stage autoencoder E scaled by the scale factor s, and its samples
are decoded by D(z / s).  The objectives and samplers are the unchanged ones of the method
layer; this file is the first stage around them:

- ``load_first_stage``: the autoencoder of a latent model, identified by its checkpoint's sha256
  (a latent model is refused another autoencoder: its latents would decode to garbage);
- ``encoded_dataset``: the training set encoded once, cached on disk under that sha256;
- ``latent_of`` and ``latent_scale_factor``: the latent of an encoding (KL: a posterior sample;
  VQ: the pre-quantisation z_e, as LDM) and s = 1 / std (LDM's 0.18215 for its autoencoder).

    minidiff train --backend torch --model autoencoder --dataset fashion-mnist --out runs/ae
    minidiff train --backend torch --dataset fashion-mnist --method edm --autoencoder runs/ae --out runs/latent
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import autoencoding
from ..backend import generator
from ..checkpoint import MAX_IMAGE_BYTES, _atomic_write, image_checkpoint_sha256, regular_file
from ..data.images import cache_dir, load_images, to_model_range
from .autoencoder import MIN_CODE_USAGE
from .loop import step_seed
from .train_autoencoder import autoencoder_from_checkpoint

CACHE_FORMAT = "minidiff-latents-v1"
SCALE_STREAM = 4               # the generator stream of the KL noise the scale factor is measured with
LATENT_STREAM = 4              # ... and of each training step's KL noise (seeded by (seed, step))


def load_first_stage(path, sha256: str | None = None, device="cpu"):
    """(autoencoder in eval mode, its ``AutoencoderTrainConfig``, its checkpoint's sha256).
    With ``sha256`` given (the one a latent model recorded), a checkpoint with another digest is
    refused: it is another autoencoder, or this one trained further."""
    try:
        digest = image_checkpoint_sha256(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"autoencoder {path}: no checkpoint there (train one with `minidiff train "
                                "--backend torch --model autoencoder --out DIR`; a latent model moved to "
                                "another machine needs its autoencoder: pass its path with --autoencoder)") from None
    if sha256 and digest != sha256:
        raise ValueError(f"autoencoder {path} has sha256 {digest[:12]}..., but this latent model was trained on "
                         f"the latents of autoencoder {sha256[:12]}...: another autoencoder's latents decode to "
                         "garbage; pass the autoencoder it was trained with")
    try:
        ae, ae_cfg = autoencoder_from_checkpoint(path, device=device)
    except ValueError as e:
        raise ValueError(f"autoencoder {path}: {e}") from None
    return ae, ae_cfg, digest


@torch.no_grad()
def encode_images(ae, images, batch_size: int = 500) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> their encodings (N, 2c, h, w) (KL: the posterior's moments)
    or (N, c, h, w) (VQ: z_e), float32 on the autoencoder's device, in eval mode."""
    device = next(ae.parameters()).device
    was_training = ae.training
    ae.eval()
    try:
        out = [ae.encode(to_model_range(torch.as_tensor(images[i:i + batch_size]).to(device))).float()
               for i in range(0, len(images), batch_size)]
    finally:
        ae.train(was_training)
    return torch.cat(out)


def latent_of(ae_config, encoded, noise=None):
    """The latent z (B, c, h, w) of encodings ``encoded`` (``encode_images``): KL: the
    posterior sample mu + sigma noise (``kl_sample``; the mode mu without noise), as LDM trains
    on; VQ: z_e itself (LDM diffuses the pre-quantisation latent; decode quantises)."""
    if ae_config.reg == "vq":
        return encoded
    mean, logvar = autoencoding.kl_posterior(encoded)
    return autoencoding.kl_mode(mean, logvar) if noise is None else autoencoding.kl_sample(mean, logvar, noise)


def latent_scale_factor(ae_config, encoded, seed: int = 0) -> float:
    # ae_config: the network's AutoencoderConfig; encoded: (N, 2c or c, h, w) from encode_images
    """s = 1 / std of the training latents (``scale_factor``; KL: one posterior sample each,
    drawn with generator (seed, 0, SCALE_STREAM)), so that s z has unit variance as the noise
    schedules assume.  A latent of zero or non-finite spread is a ValueError."""
    noise = None
    if ae_config.reg == "kl":
        shape = (encoded.shape[0], encoded.shape[1] // 2, *encoded.shape[2:])
        noise = generator(step_seed(seed, 0, SCALE_STREAM), backend="torch", device=encoded.device).randn(
            shape, dtype=torch.float32)
    try:
        return autoencoding.scale_factor(latent_of(ae_config, encoded, noise).double())
    except ValueError as e:
        raise ValueError(f"the autoencoder's latents cannot be scaled to unit variance ({e}): an untrained or "
                         "collapsed autoencoder?") from None


@torch.no_grad()
def code_usage(ae, encoded, batch_size: int = 4096) -> float:
    """The fraction of a VQ autoencoder's codes that the nearest-code step picks for the
    encodings ``encoded`` (N, c, h, w) (``codebook_usage`` of the summed ``code_histogram``)."""
    hist = 0
    for i in range(0, len(encoded), batch_size):
        _, k = ae.quantize(encoded[i:i + batch_size])
        hist = hist + autoencoding.code_histogram(k.reshape(-1), ae.config.codebook_size)
    return float(autoencoding.codebook_usage(hist))


def warn_if_collapsed(ae, encoded, threshold: float = MIN_CODE_USAGE):
    """A VQ first stage whose codebook collapsed (usage below ``threshold`` on ``encoded``) is
    warned about, with the number: its latent model can only reach what those few codes decode to."""
    if ae.config.reg != "vq":
        return None
    usage = code_usage(ae, encoded)
    if usage < threshold:
        warnings.warn(f"the VQ autoencoder uses {usage:.3f} of its {ae.config.codebook_size} codes on the training set "
                      f"(below {threshold}): its codebook collapsed; retrain it with restart_every", stacklevel=2)
    return usage


def first_stage_for(config, path=None, device="cpu"):
    """The autoencoder of a latent model's run ``config`` (an ``ImageConfig`` with
    ``autoencoder`` set): loaded from ``path`` (default: the path the run recorded), refused
    unless its sha256 is the recorded one and its latent is the U-Net's input.  A config that
    records no sha256 or scale factor (training fills both in) is refused: nothing could check it."""
    if not config.autoencoder_sha256 or not config.scale_factor:
        raise ValueError("this latent model's config records no autoencoder_sha256 or scale_factor (a trained "
                         "run records both): it cannot be checked against an autoencoder or decoded")
    ae, ae_cfg, _ = load_first_stage(path or config.autoencoder, config.autoencoder_sha256, device)
    u, c = config.unet, ae_cfg.autoencoder.latent_shape
    if (u.in_channels, u.image_size, u.image_size) != c:
        raise ValueError(f"autoencoder {path or config.autoencoder} has {c[0]}x{c[1]}x{c[2]} latents but the U-Net "
                         f"takes {u.in_channels}x{u.image_size}x{u.image_size}")
    return ae


# ----------------------------------------------------------------------------------------------
# The encoded training set, cached under the autoencoder's sha256.

def latent_cache_path(sha256: str, dataset: str, split: str, limit: int) -> Path:
    """$MINIDIFF_DATA/latents/<sha256[:16]>-<dataset>-<split>[-<limit>].safetensors"""
    return cache_dir() / "latents" / f"{sha256[:16]}-{dataset}-{split}{f'-{limit}' if limit else ''}.safetensors"


def encoded_dataset(ae, sha256: str, dataset: str, split: str = "train", root=None, limit: int = 0,
                    device="cpu", log=None):
    """(encodings (N, 2c or c, h, w) float32, labels (N,) int64) of a dataset, both on ``device``:
    read from the cache when a file for this autoencoder (sha256), dataset, split and limit is
    there and its key matches, else encoded once and written there atomically."""
    from safetensors import safe_open
    from safetensors.torch import save

    key = {"format": CACHE_FORMAT, "autoencoder_sha256": sha256, "dataset": dataset, "split": split,
           "limit": int(limit), "root": str(root or "")}
    path = latent_cache_path(sha256, dataset, split, limit)
    if path.exists():
        try:
            regular_file(path, MAX_IMAGE_BYTES, "latent cache")
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = json.loads((f.metadata() or {}).get("minidiff", "{}"))
                if meta == key:
                    return f.get_tensor("encoded").to(device), f.get_tensor("labels").to(device)
        except Exception:  # an unreadable or foreign file: encode again and replace it
            pass
    a = ae.config
    images, labels = load_images(dataset, split, root=root or None, limit=limit or None,
                                 image_size=a.image_size if dataset == "folder" else None, channels=a.in_channels)
    _, C, H, W = images.shape
    if (C, H, W) != (a.in_channels, a.image_size, a.image_size):
        raise ValueError(f"dataset {dataset!r} has {C}x{H}x{W} images but the autoencoder takes "
                         f"{a.in_channels}x{a.image_size}x{a.image_size}: it was trained on other images")
    if log:
        log(f"encoding {len(images)} images of {dataset} with autoencoder {sha256[:12]} (cached in {path})")
    encoded = encode_images(ae, images).cpu().contiguous()
    labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    blob = save({"encoded": encoded, "labels": labels}, metadata={"minidiff": json.dumps(key)})
    try:
        _atomic_write(path, lambda f: f.write(blob))
    except OSError as e:  # a read-only cache: train anyway, encoding again next time
        if log:
            log(f"could not cache the latents in {path}: {e}")
    return encoded.to(device), labels.to(device)
