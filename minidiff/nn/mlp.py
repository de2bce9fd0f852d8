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
    dim = _checks.integer("dim", dim, 2, 2 ** 20)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    max_period = _checks.real("max_period", max_period, 1.0, lo_open=True)
    _checks.array("t", t, ndim=(0, 1))
    _checks.finite_input("t", t)
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
        _checks.integer(name, v, 1, 2 ** 16)
    if t_dim % 2:
        raise ValueError(f"t_dim must be even (the sinusoidal embedding's cos and sin halves), got {t_dim}")
    if out_dim is not None:
        _checks.integer("out_dim", out_dim, 1, 2 ** 16)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(_checks.integer("rng", rng, 0, 2 ** 63 - 1))
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy float dtype, got {dtype!r}") from None
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be a NumPy float dtype, got {dtype}")
    sizes = [in_dim + t_dim] + [hidden] * depth + [out_dim or in_dim]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        if i == len(sizes) - 2:
            W = 0.1 * W
        layers.append([W.astype(dtype), np.zeros(fan_out, dtype=dtype)])
    return layers


def _is_sequence(v) -> bool:
    """A list or tuple, or autograd's trace of one (a SequenceBox, under value_and_grad)."""
    return isinstance(v, (list, tuple)) or isinstance(getattr(v, "_value", None), (list, tuple))


def _check_params(params):
    """params: a non-empty list of [W (fan_in, fan_out), b (fan_out,)] whose sizes chain."""
    if not _is_sequence(params) or not len(params):
        raise TypeError(f"params must be a non-empty list of [W, b] layers, got {type(params).__name__}")
    for i, layer in enumerate(params):
        if not _is_sequence(layer) or len(layer) != 2:
            raise TypeError(f"params[{i}] must be a pair [W, b], got {type(layer).__name__}")
        W, b = (_checks.array(f"params[{i}][0] (W)", layer[0], ndim=2), _checks.array(f"params[{i}][1] (b)", layer[1], ndim=1))
        if b.shape[0] != W.shape[1] or (i and W.shape[0] != params[i - 1][0].shape[1]):
            raise ValueError(f"params[{i}]: W {tuple(W.shape)} and b {tuple(b.shape)} do not chain with the layer before")


def mlp(params, x, t):
    """eps_theta(x, t): concat(x, emb(t)) -> [Linear -> SiLU] * depth -> Linear.
    x: (B, d), t: (B,) -> (B, d_out)."""
    _check_params(params)
    _checks.array("x", x, ndim=2)
    _checks.array("t", t, ndim=(0, 1))
    xp = _checks.same_backend(x=x, t=t, W=params[0][0], b=params[0][1])
    _checks.per_example("t", t, x)
    t_dim = params[0][0].shape[0] - x.shape[1]  # the first layer sees concat(x, emb(t))
    if t_dim < 2 or t_dim % 2:
        raise ValueError(f"x has {x.shape[1]} features but the first layer takes {params[0][0].shape[0]} = d + t_dim "
                         f"inputs: t_dim = {t_dim} must be even and >= 2")
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
