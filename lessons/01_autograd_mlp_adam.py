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

from minidiff import _checks
from minidiff.backend import namespace, tree_leaves
from minidiff.nn.mlp import _check_params
from minidiff.nn.optim import _check_tree, _map, global_norm


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
    raise NotImplementedError("EXERCISE sinusoidal_embedding: write this function (see its docstring)")


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
    raise NotImplementedError("EXERCISE mlp: write this function (see its docstring)")


def clip_grad_norm(grads, max_norm: float):
    """Rescale ``grads`` so that their global norm is at most ``max_norm`` (Pascanu et al. 2013)."""
    max_norm = _checks.real("max_norm", max_norm)
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    raise NotImplementedError("EXERCISE clip_grad_norm: write this function (see its docstring)")


def adam_update(params, grads, state, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                eps: float = 1e-8, weight_decay: float = 0.0):
    """One AdamW step (Kingma & Ba 2015, Algorithm 1; decoupled weight decay of Loshchilov &
    Hutter 2019):  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr (m_hat / (sqrt(v_hat) + eps) + weight_decay p), with m_hat = m / (1 - b1^k), v_hat = v / (1 - b2^k).
    Returns (new params, new state); nothing is modified in place."""
    lr, b1, b2 = _checks.real("lr", lr), _checks.real("b1", b1), _checks.real("b2", b2)
    eps, weight_decay = _checks.real("eps", eps, 0.0, lo_open=True), _checks.real("weight_decay", weight_decay)
    _check_tree("params", params)
    _check_tree("grads", grads)
    if len(tree_leaves(params)) != len(tree_leaves(grads)):
        raise ValueError(f"params and grads must have the same structure, got {len(tree_leaves(params))} and "
                         f"{len(tree_leaves(grads))} leaves")
    if not isinstance(state, dict) or not {"m", "v", "step"} <= set(state):
        raise TypeError("state must be the dict of adam_init(params) (keys m, v, step)")
    _checks.integer("state['step']", state["step"], 0)
    if lr <= 0 or not (0 <= b1 < 1) or not (0 <= b2 < 1) or weight_decay < 0:
        raise ValueError(f"need lr > 0, 0 <= b1, b2 < 1 and weight_decay >= 0; got lr={lr}, b1={b1}, b2={b2}, "
                         f"weight_decay={weight_decay}")
    raise NotImplementedError("EXERCISE adam_update: write this function (see its docstring)")


def ema_update(ema_params, params, decay: float = 0.999):
    """Exponential moving average of the weights: ema = decay ema + (1 - decay) params."""
    decay = _checks.real("decay", decay)
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
    _check_tree("ema_params", ema_params)
    _check_tree("params", params)
    raise NotImplementedError("EXERCISE ema_update: write this function (see its docstring)")
