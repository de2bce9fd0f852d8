"""Sampling a trained image model with the core's samplers (``minidiff.methods.run_sampler``),
in batches seeded by (seed, batch number), with class labels or captions' token ids and
classifier-free guidance."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import _checks
from ..backend import generator
from ..guidance import classifier_free_guidance
from ..methods import MethodConfig, raw_to_model, resolve_sampler, run_sampler
from .loop import step_seed


def _class_labels(cfg, n: int, class_labels):
    """(n,) labels for a class-conditional model (default: image i gets class i mod K), else None."""
    K = cfg.unet.num_classes
    if not cfg.class_conditional:
        if class_labels is not None:
            raise ValueError("class_labels were given but this model is unconditional")
        return None
    labels = (torch.arange(n) % K) if class_labels is None else torch.as_tensor(class_labels)
    if labels.shape != (n,) or labels.min() < 0 or labels.max() > K:
        raise ValueError(f"class_labels must be {n} integers in [0, {K}], got shape {tuple(labels.shape)}")
    return labels


def _layout_condition(cfg, n: int, layout):
    """A layout-conditioned model's condition: layouts (n, O, 5) or one (O, 5) for every image,
    checked (``check_layout``) and padded to max_objects rows; the null is the empty layout."""
    from ..data.images import NUM_CLASSES
    from ..data.layout import check_layout, empty_layout

    lay = cfg.layout
    if layout is None:
        raise ValueError('this model is layout-conditioned: pass layout (n, O, 5) or (O, 5) = rows (class, x0, y0, '
                         'x1, y1) in canvas pixels (an empty layout samples the unconditional model)')
    a = check_layout(layout.cpu().numpy() if torch.is_tensor(layout) else layout, lay.canvas,
                     NUM_CLASSES["fashion-mnist"], lay.max_objects)
    a = torch.from_numpy(a)
    if a.ndim == 2:
        a = a.expand(n, -1, -1)                                        # one layout for every image
    if a.shape[0] != n:
        raise ValueError(f"layout must hold one layout per image ({n}) or one for all, got {a.shape[0]}")
    null = torch.from_numpy(empty_layout(lay.max_objects))
    a = torch.cat([a, null.expand(n, -1, -1)[:, a.shape[1]:]], dim=1)  # (n, max_objects, 5)
    return {"layout": a}, "layout", null


def _condition(cfg, n: int, class_labels, tokens, layout=None):
    """The per-image condition of a model: ({keyword: (n, ...) tensor} or {}, and for guidance the
    keyword and its null: the null class, the empty caption's ids, or the empty layout)."""
    if getattr(cfg, "condition", "") == "layout":
        if class_labels is not None or tokens is not None:
            raise ValueError("class_labels and tokens were given but this model is layout-conditioned: pass layout")
        return _layout_condition(cfg, n, layout)
    if layout is not None:
        raise ValueError("layout was given but this model is not layout-conditioned")
    if getattr(cfg, "condition", "") != "text":
        if tokens is not None:
            raise ValueError("tokens (a caption's ids) were given but this model is not text-conditioned")
        labels = _class_labels(cfg, n, class_labels)
        if labels is None:
            return {}, None, None
        return {"class_labels": labels}, "class_labels", cfg.unet.num_classes
    from ..data.tokenizer import empty_caption_ids

    L = cfg.text.context_length
    if class_labels is not None:
        raise ValueError("class_labels were given but this model is text-conditioned: pass tokens (its prompts' ids)")
    if tokens is None:
        raise ValueError("this model is text-conditioned: pass tokens (n, L) = the prompts' ids "
                         "(minidiff.data.tokenizer.encode; the empty prompt \"\" samples the unconditional model)")
    tokens = torch.as_tensor(tokens)
    if tokens.ndim == 1:
        tokens = tokens.expand(n, -1)                                  # one prompt for every image
    if tokens.shape != (n, L) or tokens.is_floating_point():
        raise ValueError(f"tokens must be integer token ids of shape (n, context_length) = ({n}, {L}) or ({L},), "
                         f"got {tokens.dtype} {tuple(tokens.shape)}")
    return {"tokens": tokens.long()}, "tokens", torch.as_tensor(empty_caption_ids(L))


@torch.no_grad()
def sample_images(net, config, n: int, sampler=None, steps=None, seed: int = 0, batch_size: int = 256,
                  eta: float = 0.0, device=None, progress: bool = False, class_labels=None,
                  guidance: float | None = None, autoencoder=None, tokens=None, layout=None,
                  **sampler_kwargs) -> torch.Tensor:
    """``n`` images from the trained U-Net ``net`` with one of the core's samplers, in the model
    range [-1, 1]: (n, C, H, W) float32 on the CPU.  ``config``: the run's ``ImageConfig`` (as
    ``model_from_checkpoint`` returns it).  A class-conditional model draws class
    ``class_labels[i]`` for image i (default: i mod the number of classes; the null class
    num_classes gives the unconditional model), with classifier-free guidance of strength
    ``guidance`` (Ho & Salimans' w; None: no guidance).  A text-conditioned model draws image i
    for the caption ``tokens[i]`` ((n, L) token ids, or one (L,) row for all), guided against
    the empty caption.  A layout-conditioned model draws image i for ``layout[i]`` ((n, O, 5) rows
    (class, x0, y0, x1, y1) in canvas pixels, or one (O, 5) for all), guided against the empty
    layout.  A latent model (``config.autoencoder``
    set) samples z and returns the decoded D(z / scale_factor): pass its ``autoencoder`` (the
    module; ``minidiff.torch.latent.first_stage_for(config)`` loads the recorded one)."""
    if not isinstance(config, MethodConfig) or not hasattr(config, "unet"):
        raise TypeError(f"config must be the run's ImageConfig (model_from_checkpoint returns it), "
                        f"got {type(config).__name__}")
    n = _checks.positive_int("n", n)
    batch_size = _checks.positive_int("batch_size", batch_size)
    sampler, steps = resolve_sampler(config, sampler, steps)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    model = raw_to_model(net, config)
    cond, key, null = _condition(config, n, class_labels, tokens, layout)
    if guidance is not None:
        if key is None:
            raise ValueError("guidance needs a conditional model (train with --class-conditional or --condition "
                             "text / layout)")
        if guidance != 0:   # w = 0 is the conditional model itself, (1 + 0) cond - 0 uncond: no doubled batch
            model = classifier_free_guidance(model, guidance, key=key,
                                             null=null.to(device) if torch.is_tensor(null) else null)
    latent = bool(getattr(config, "autoencoder", ""))
    if latent:
        _first_stage_fits(autoencoder, config)
    elif autoencoder is not None:
        raise ValueError("autoencoder was given but this is a pixel model (its config has no autoencoder)")
    u, chunks, starts = config.unet, [], range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"sampling {n} ({sampler}, {steps} steps)")
    for i, s in enumerate(starts):
        b = min(batch_size, n - s)
        rng = generator(step_seed(seed, i, 3), backend="torch", device=device)
        z = rng.randn((b, u.in_channels, u.image_size, u.image_size), dtype=torch.float32)   # (b, C, H, W)
        mk = {k: v[s:s + b].to(device) for k, v in cond.items()}
        x = run_sampler(model, config, sampler, steps, eta, z, rng, kwargs=sampler_kwargs, model_kwargs=mk)
        if latent:                                                     # (b, c, h, w) -> (b, C, H, W)
            x = decode_latents(autoencoder, x, config.scale_factor)
        chunks.append(x.float().cpu())
    return torch.cat(chunks)


def _first_stage_fits(autoencoder, config):
    """A latent model's autoencoder: a module whose latent is the U-Net's input."""
    if autoencoder is None or not isinstance(autoencoder, torch.nn.Module) or not hasattr(autoencoder, "decode"):
        raise ValueError("this is a latent model: pass autoencoder= (its first stage; "
                         "minidiff.torch.latent.first_stage_for(config) loads the one it was trained with), got "
                         f"{type(autoencoder).__name__}")
    u, c = config.unet, autoencoder.config.latent_shape
    if (u.in_channels, u.image_size, u.image_size) != c:
        raise ValueError(f"autoencoder has {c[0]}x{c[1]}x{c[2]} latents but this latent model's U-Net takes "
                         f"{u.in_channels}x{u.image_size}x{u.image_size}")
    if not (config.scale_factor > 0 and math.isfinite(config.scale_factor)):
        raise ValueError(f"scale_factor must be a finite number > 0 for a latent model, got {config.scale_factor}")


@torch.no_grad()
def decode_latents(autoencoder, z, scale_factor: float):
    """x = D(z / s) (LDM section 3): the diffusion model's latents z (B, c, h, w), learnt at
    scale s, decoded into images (B, C, H, W) in the model range (VQ: quantised first)."""
    was_training = autoencoder.training
    autoencoder.eval()
    try:
        return autoencoder.decode(z.to(next(autoencoder.parameters()).device) / scale_factor)
    finally:
        autoencoder.train(was_training)


def save_grid(net, config, path, n: int = 64, seed: int = 0, device=None, **kwargs) -> Path:
    """Sample ``n`` images and save them as one PNG grid."""
    from ..plot import save_image_grid

    was_training = net.training
    net.eval()
    x = sample_images(net, config, n, seed=seed, device=device, **kwargs)
    net.train(was_training)
    return save_image_grid(x, path)
