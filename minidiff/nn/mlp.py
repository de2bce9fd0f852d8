"""An MLP eps(x, t) with a sinusoidal time embedding, as plain functions over nested lists.

Parameters are a plain list ``[[W, b], ...]`` (HIPS/autograd style); ``mlp`` uses only the
common backend names, so the same function runs on NumPy/autograd arrays and torch tensors.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks
from ..backend import namespace


def sinusoidal_embedding(t, dim: int, max_period: float = 10000.0):
    """Transformer / DDPM time embedding: [cos(t w_i), sin(t w_i)] with w_i = max_period^(-i/half).
    t: (B,) -> (B, dim).  ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    xp = namespace(t)
    half = dim // 2
    # BEGIN SOLUTION
    # hint: angles = t[:, None] * freqs[None, :] with freqs = max_period^(-i/half); return
    # hint: concatenate([cos, sin], axis=1), shape (B, dim)
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half)       # (half,)
    t = xp.asarray(t, dtype=xp.float64)  # float64: cos(t w) for t ~ 1000 needs the digits
    angles = xp.reshape(t, (-1, 1)) * xp.asarray(freqs, like=t)[None, :]  # (B, half)
    return xp.concatenate([xp.cos(angles), xp.sin(angles)], axis=1)
    # END SOLUTION


def init_mlp(rng, in_dim: int = 2, hidden: int = 128, depth: int = 3, t_dim: int = 32, out_dim=None,
             dtype=np.float64):
    """He-style init: W ~ N(0, 2 / fan_in), b = 0; the last layer is scaled by 0.1 so the
    untrained model predicts small outputs.  ``rng`` is a numpy Generator or a seed."""
    for name, v in (("in_dim", in_dim), ("hidden", hidden), ("depth", depth), ("t_dim", t_dim)):
        _checks.positive_int(name, v)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    sizes = [in_dim + t_dim] + [hidden] * depth + [out_dim or in_dim]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        if i == len(sizes) - 2:
            W = 0.1 * W
        layers.append([W.astype(dtype), np.zeros(fan_out, dtype=dtype)])
    return layers


def mlp(params, x, t):
    """eps_theta(x, t): concat(x, emb(t)) -> [Linear -> SiLU] * depth -> Linear.
    x: (B, d), t: (B,) -> (B, d_out)."""
    xp = namespace(x, *params[0])
    t_dim = params[0][0].shape[0] - x.shape[1]  # the first layer sees concat(x, emb(t))
    # BEGIN SOLUTION
    # hint: h = concat(x, emb(t)); for each [W, b]: h = xp.linear(h, W, b), then xp.silu except
    # hint: after the last layer
    h = xp.concatenate([x, xp.asarray(sinusoidal_embedding(t, t_dim), like=x)], axis=1)  # (B, d + t_dim)
    for i, (W, b) in enumerate(params):
        h = xp.linear(h, W, b)          # h @ W + b
        if i < len(params) - 1:
            h = xp.silu(h)              # x sigmoid(x)
    return h
    # END SOLUTION
