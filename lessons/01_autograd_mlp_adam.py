"""Lesson 01: Autograd, an MLP with a time embedding, Adam and EMA.

Write the functions below; the notebook notebooks/01_autograd_mlp_adam.ipynb explains the maths.
Check your work with:   minidiff check 01
(or: python -m pytest tests/lessons/test_01_autograd_mlp_adam.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff.backend import namespace
from minidiff.nn.optim import _map, global_norm


def sinusoidal_embedding(t, dim: int, max_period: float = 10000.0):
    """Transformer / DDPM time embedding: [cos(t w_i), sin(t w_i)] with w_i = max_period^(-i/half).
    t: (B,) -> (B, dim).  ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    xp = namespace(t)
    half = dim // 2
    raise NotImplementedError("EXERCISE sinusoidal_embedding: write this function (see its docstring)")


def mlp(params, x, t):
    """eps_theta(x, t): concat(x, emb(t)) -> [Linear -> SiLU] * depth -> Linear.
    x: (B, d), t: (B,) -> (B, d_out)."""
    xp = namespace(x, *params[0])
    t_dim = params[0][0].shape[0] - x.shape[1]  # the first layer sees concat(x, emb(t))
    raise NotImplementedError("EXERCISE mlp: write this function (see its docstring)")


def clip_grad_norm(grads, max_norm: float):
    """Rescale ``grads`` so that their global norm is at most ``max_norm`` (Pascanu et al. 2013)."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    raise NotImplementedError("EXERCISE clip_grad_norm: write this function (see its docstring)")


def adam_update(params, grads, state, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                eps: float = 1e-8, weight_decay: float = 0.0):
    """One AdamW step (Kingma & Ba 2015, Algorithm 1; decoupled weight decay of Loshchilov &
    Hutter 2019):  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr (m_hat / (sqrt(v_hat) + eps) + weight_decay p), with m_hat = m / (1 - b1^k), v_hat = v / (1 - b2^k).
    Returns (new params, new state); nothing is modified in place."""
    if lr <= 0 or not (0 <= b1 < 1) or not (0 <= b2 < 1) or weight_decay < 0:
        raise ValueError(f"need lr > 0, 0 <= b1, b2 < 1 and weight_decay >= 0; got lr={lr}, b1={b1}, b2={b2}, "
                         f"weight_decay={weight_decay}")
    raise NotImplementedError("EXERCISE adam_update: write this function (see its docstring)")


def ema_update(ema_params, params, decay: float = 0.999):
    """Exponential moving average of the weights: ema = decay ema + (1 - decay) params."""
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
    raise NotImplementedError("EXERCISE ema_update: write this function (see its docstring)")
