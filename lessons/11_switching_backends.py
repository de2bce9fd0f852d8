"""Lesson 11: Switching backends: a U-Net on Fashion-MNIST.

Write the functions below; the notebook notebooks/11_switching_backends.ipynb explains the maths.
Check your work with:   minidiff check 11
(or: python -m pytest tests/lessons/test_11_switching_backends.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff.backend import namespace, to_numpy
from minidiff.data.images import from_model_range
from minidiff.nn.attention import key_padding_bias


def modulate(h, emb_out):
    """AdaGN (Dhariwal & Nichol 2021, section 3): the time embedding's projection ``emb_out``
    (B, 2C) is split into a per-channel scale and shift of the normalised activations ``h``
    (B, C, H, W): h * (1 + scale) + shift.  Returns (B, C, H, W)."""
    if emb_out.ndim != 2 or emb_out.shape != (h.shape[0], 2 * h.shape[1]):
        raise ValueError(f"emb_out must have shape (B, 2C) = ({h.shape[0]}, {2 * h.shape[1]}), "
                         f"got {tuple(emb_out.shape)}")
    raise NotImplementedError("EXERCISE modulate: write this function (see its docstring)")


def attention(q, k, v, mask=None):
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1): softmax(q k^T / sqrt(d)) v,
    the softmax over the keys.  q: (..., L, d), k: (..., S, d), v: (..., S, d_v) -> (..., L, d_v).
    mask (optional): bool, True for the keys that take part, broadcastable to (..., L, S): a key
    padding mask (B, S) becomes (B, 1, 1, S) with ``key_padding_bias``."""
    xp = namespace(q, k, v)
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q (..., L, d), k (..., S, d) and v (..., S, d_v) do not fit: {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    bias = 0.0 if mask is None else key_padding_bias(mask, xp.dtype_of(q))   # 0 or -inf per key
    k_t = xp.transpose(k, tuple(range(len(k.shape) - 2)) + (len(k.shape) - 1, len(k.shape) - 2))   # (..., d, S)
    raise NotImplementedError("EXERCISE attention: write this function (see its docstring)")


def image_grid(images, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) - uint8, or floats in the model range [-1, 1] - into one uint8
    picture, ``nrow`` images per row (default ceil(sqrt(N))) in reading order, with ``pad`` white
    (255) pixels around and between them: (pad + rows (H + pad), pad + nrow (W + pad)) for C = 1,
    with a trailing axis of 3 for C = 3."""
    a = to_numpy(images)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got {a.shape}")
    if a.dtype != np.uint8:
        a = from_model_range(a)
    N, C, H, W = a.shape
    nrow = nrow or int(np.ceil(np.sqrt(N)))
    raise NotImplementedError("EXERCISE image_grid: write this function (see its docstring)")
    return grid[0] if C == 1 else grid.transpose(1, 2, 0)


def batch_indices(n_images: int, global_batch: int, seed: int, k: int) -> np.ndarray:
    """The images of step k's global batch: epoch e = k // (n_images // global_batch) walks the
    permutation ``np.random.default_rng([seed, 0, e]).permutation(n_images)`` in consecutive
    slices (the last incomplete one is dropped), so every image is seen once per epoch and a
    resumed run draws the same batches.  Returns (global_batch,) int indices."""
    per_epoch = n_images // global_batch
    if per_epoch < 1:
        raise ValueError(f"the dataset has {n_images} images, fewer than one global batch ({global_batch}); "
                         "lower batch_size")
    raise NotImplementedError("EXERCISE batch_indices: write this function (see its docstring)")


def lr_at(cfg, k: int) -> float:
    """The learning rate of step k (0-based): a linear warm-up reaching ``cfg.lr`` at step
    ``cfg.warmup - 1``, then constant (EDM Appendix F.3); ``cfg.warmup = 0`` means no warm-up."""
    raise NotImplementedError("EXERCISE lr_at: write this function (see its docstring)")
