"""Scaled dot-product attention with a key padding mask, written once for both backends
(NumPy/autograd arrays and torch tensors; lessons 11 and 12).

- ``attention``: softmax(q k^T / sqrt(d) + bias) v (Vaswani et al. 2017, eq. 1), the softmax over
  the keys; the self- and cross-attention of ``minidiff.torch.attention`` are this formula.
- ``key_padding_bias``: a key padding mask (True: a real token) as the additive bias, 0 or -inf,
  that gives a caption's padding exactly zero weight (LDM's public code passes no mask).
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import namespace


def key_padding_bias(mask, dtype=None):
    """The additive form of a key padding mask: 0 where ``mask`` is True (a real token), -inf
    where it is False (padding), so that softmax gives padding exactly zero weight.  A (B, S)
    mask becomes (B, 1, 1, S), broadcast over heads and queries; other shapes are kept.  A row
    with no real key would be all -inf (NaN after softmax): refused.  ``dtype``: the result's
    (default float32 of the mask's backend); the result lives where the mask does."""
    xp = namespace(mask)
    host = xp.to_numpy(mask)
    if host.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array (True: a key that takes part), got {host.dtype}")
    if host.ndim == 2:
        mask = xp.reshape(mask, (host.shape[0], 1, 1, host.shape[1]))   # (B, S) -> (B, 1, 1, S)
    if host.shape[-1] == 0 or not host.any(axis=-1).all():
        raise ValueError("mask leaves a query with no key to attend to (every key masked); "
                         "an empty caption still has its [BOS] and [EOS] tokens")
    dtype = xp.float32 if dtype is None else dtype
    # BEGIN SOLUTION
    # hint: an array of dtype, 0 where mask is True and -inf where it is False: xp.where on the mask,
    # hint: with zeros made from the mask itself (0 * xp.asarray(mask, dtype=dtype)) so they share its device
    zero = 0 * xp.asarray(mask, dtype=dtype)
    return xp.where(mask, zero, zero - math.inf)
    # END SOLUTION


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
    # BEGIN SOLUTION
    # hint: scores = q @ k^T / sqrt(d) + bias (xp.matmul, k_t); softmax over the last axis as
    # hint: exp(scores - logsumexp(scores)) (xp.logsumexp, keepdims=True); return weights @ v
    scores = xp.matmul(q, k_t) / math.sqrt(q.shape[-1]) + bias                # (..., L, S)
    weights = xp.exp(scores - xp.logsumexp(scores, axis=-1, keepdims=True))
    return xp.matmul(weights, v)
    # END SOLUTION
