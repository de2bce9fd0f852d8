"""Non-leaking augmentation (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models" (EDM), section 5 and Appendix F.2; its pipe is a geometric subset of Karras
et al. 2020, "Training Generative Adversarial Networks with Limited Data" (ADA), Appendix B).

Plain augmentation leaks: a model trained on flipped images generates flipped images.  EDM's
remedy: apply each augmentation with probability p and give its parameters to the network as
conditioning, the *augment labels*.  Labels of zero mean "not augmented", which is what a sampler
passes, so the model learns the augmented images as separate conditions and the clean
distribution stays clean.

The transforms here, each drawn for each image with probability p (ADA's "geometric" group, no
rotation or anisotropy, no colour):

- x-flip (label 1 if flipped);
- integer translation by (tx, ty) pixels, |tx|, |ty| <= max_shift * size (labels tx / W, ty / H;
  positive tx moves the content right, positive ty down);
- isotropic scaling by s = 2^(scale_std n), n ~ N(0, 1) about the image centre (label log2 s).

All three are one resampling, x'(q) = x(u(q)) with u the source position of output pixel q,
written as bilinear interpolation matrices: x' = R_y x R_x^T (separable, because the map is
axis-aligned).  Pixels that come from outside the image get the background value (-1, black in
the model range).  Flips and integer shifts are exact permutations; unaugmented images are
returned untouched, bit for bit.

    x_aug, labels = augment(x0, p=0.12, rng=generator(seed, like=x0))   # (B, C, H, W), (B, 4)
    D(x_aug, sigma, augment_labels=labels)                              # training; sampling: None
"""
from __future__ import annotations

import math

from . import _checks
from .backend import namespace

AUGMENT_DIM = 4            # labels: [x-flip, tx / W, ty / H, log2 s]
MAX_SHIFT = 0.125          # EDM / ADA translate_int_max: at most 1/8 of the image (3 pixels at 28)
SCALE_STD = 0.2            # EDM / ADA scale_std: log2 s ~ N(0, 0.2^2)


def draw_augmentations(n: int, p: float, rng, image_size: int, max_shift: float = MAX_SHIFT,
                       scale_std: float = SCALE_STD) -> dict:
    """The parameters of ``n`` images' augmentations, each transform applied with probability p
    (ADA Appendix B: every transform its own coin): {'flip' (n,) 0/1, 'tx', 'ty' (n,) integer
    pixels in [-m, m] with m = floor(max_shift * image_size), 'log2_scale' (n,)}, zero where a
    transform is not applied.  The same numbers are drawn whatever p, so p changes only the coins.
    rng: a ``minidiff.backend.generator``; the arrays are on its backend (and device)."""
    _checks.count("n", n)
    p = _checks.real("p", p, 0.0, 1.0)
    size = _checks.count("image_size", image_size)
    max_shift = _checks.real("max_shift", max_shift, 0.0, 0.5)
    scale_std = _checks.real("scale_std", scale_std, 0.0, 2.0)
    m = int(math.floor(max_shift * size))
    applied = rng.rand((3, n)) < p                                  # (3, n): flip, translate, scale
    shift = rng.randint(-m, m + 1, (2, n))                          # (2, n) integer pixels
    z = rng.randn((n,))                                             # (n,)
    xp = namespace(z)
    zero = xp.zeros_like(z)
    return {"flip": xp.where(applied[0], xp.ones_like(z), zero),
            "tx": xp.where(applied[1], xp.asarray(shift[0], like=z), zero),
            "ty": xp.where(applied[1], xp.asarray(shift[1], like=z), zero),
            "log2_scale": xp.where(applied[2], scale_std * z, zero)}


def augment_labels(params: dict, image_size: int):
    """EDM's augment labels, the conditioning the network sees: (n, AUGMENT_DIM) =
    [flip, tx / W, ty / H, log2 s]; all zero for an unaugmented image."""
    xp = namespace(params["flip"])
    # BEGIN SOLUTION
    # hint: stack the four (n,) parameters as columns, in the order [flip, tx / W, ty / H, log2 s]:
    # hint: the shifts as fractions of the image size, so that the labels do not depend on the resolution
    return xp.stack([params["flip"], params["tx"] / image_size, params["ty"] / image_size,
                     params["log2_scale"]], axis=1)
    # END SOLUTION


def interpolation_matrix(u, n: int):
    """Bilinear interpolation as a matrix: R[b, q, k] = max(0, 1 - |u[b, q] - k|), the tent
    weights of source pixel k for output pixel q at source position u (n pixels along the axis).
    A row sums to less than 1 where u leaves the image: the missing weight is the background's.
    u: (B, n) -> (B, n, n)."""
    xp = namespace(u)
    k = xp.arange(n, dtype=xp.dtype_of(u), like=u)
    return xp.clip(1 - xp.abs(u[:, :, None] - k[None, None, :]), 0, None)


def source_positions(params: dict, n: int):
    """Where each output pixel reads from: the inverse of x-flip, then scaling by s about the
    centre c = (n - 1) / 2, then the shift t:  u_x = c + f (q - c - tx) / s  (f = -1 if flipped),
    u_y = c + (q - c - ty) / s.  Returns (u_x, u_y), each (B, n)."""
    xp = namespace(params["flip"])
    q = xp.arange(n, dtype=xp.dtype_of(params["flip"]), like=params["flip"])[None, :]  # (1, n)
    c = (n - 1) / 2
    # BEGIN SOLUTION
    # hint: undo the transforms in reverse order: subtract the shift (q - c - t), divide by s = 2^(log2 s),
    # hint: then mirror x about the centre with f = 1 - 2 flip (+1 or -1), and add c back
    # hint: the parameters are (B,): use [:, None] against q (1, n); u_y is the same without the mirror
    s = xp.exp(params["log2_scale"] * math.log(2.0))[:, None]        # (B, 1); exactly 1 where unscaled
    f = (1 - 2 * params["flip"])[:, None]                            # (B, 1): +1 or -1
    u_x = c + f * ((q - c - params["tx"][:, None]) / s)
    u_y = c + (q - c - params["ty"][:, None]) / s
    return u_x, u_y
    # END SOLUTION


def apply_augmentations(x, params: dict, background: float = -1.0):
    """The augmented images x' = R_y x R_x^T + background (1 - w_y w_x^T), with R the bilinear
    interpolation matrices of ``source_positions`` and w their row sums (the part of each output
    pixel that lies inside the image); images with no transform applied are returned as they are.
    x: (B, C, H, W) -> (B, C, H, W)."""
    _checks.array("x", x, ndim=4)
    xp = namespace(x)
    B, _, H, W = x.shape
    if H != W:
        raise ValueError(f"x must hold square images (B, C, H, H) for isotropic scaling, got {tuple(x.shape)}")
    params = {k: xp.asarray(v, like=x) for k, v in params.items()}
    u_x, u_y = source_positions(params, W)
    R_x, R_y = interpolation_matrix(u_x, W), interpolation_matrix(u_y, H)       # (B, n, n) each
    moved = xp.matmul(xp.matmul(R_y[:, None], x), xp.transpose(R_x, (0, 2, 1))[:, None])  # (B, C, H, W)
    inside = xp.sum(R_y, axis=2)[:, :, None] * xp.sum(R_x, axis=2)[:, None, :]  # (B, H, W)
    out = moved + background * (1 - inside[:, None])
    touched = (params["flip"] != 0) | (params["tx"] != 0) | (params["ty"] != 0) | (params["log2_scale"] != 0)
    return xp.where(touched[:, None, None, None], out, x)


def augment(x, p: float, rng, background: float = -1.0, max_shift: float = MAX_SHIFT,
            scale_std: float = SCALE_STD):
    """EDM's augmentation pipe: each image of ``x`` (B, C, H, W) flipped, shifted and scaled,
    each with probability p.  Returns (x_aug (B, C, H, W), augment_labels (B, AUGMENT_DIM)), the
    labels to pass to the network (``augment_labels=``) along with x_aug."""
    _checks.array("x", x, ndim=4)
    params = draw_augmentations(x.shape[0], p, rng, x.shape[-1], max_shift, scale_std)
    xp = namespace(x)
    params = {k: xp.asarray(v, like=x) for k, v in params.items()}
    return apply_augmentations(x, params, background), augment_labels(params, x.shape[-1])
