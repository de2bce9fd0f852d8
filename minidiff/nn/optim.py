"""Adam(W), gradient clipping and EMA over parameter pytrees, written once for both backends."""
from __future__ import annotations

import math

import numpy as np

from .. import _checks
from ..backend import namespace, tree_leaves, tree_map


def _check_tree(name: str, tree):
    """A parameter pytree: nested lists / tuples / dicts whose leaves are arrays (numbers pass
    through untouched); None or a string is a TypeError naming the argument."""
    if tree is None or isinstance(tree, (str, bytes)):
        raise TypeError(f"{name} must be a pytree of arrays (nested lists of [W, b]), got {type(tree).__name__}")
    for leaf in tree_leaves(tree):
        if leaf is None or isinstance(leaf, (str, bytes)):
            raise TypeError(f"{name} holds a {type(leaf).__name__} leaf; its leaves must be arrays")
    return tree


def _is_param(p):
    return not isinstance(p, (int, float, str))


def _map(f, tree, *rest):
    return tree_map(lambda p, *r: f(p, *r) if _is_param(p) else p, tree, *rest)


def global_norm(grads) -> float:
    """sqrt(sum of squared entries over every leaf)."""
    _check_tree("grads", grads)
    total = 0.0
    for g in tree_leaves(grads):
        if _is_param(g):
            xp = namespace(g)
            total += float(xp.sum(g * g))
    return math.sqrt(total)


def clip_grad_norm(grads, max_norm: float):
    """Rescale ``grads`` so that their global norm is at most ``max_norm`` (Pascanu et al. 2013)."""
    max_norm = _checks.real("max_norm", max_norm)
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    # BEGIN SOLUTION
    # hint: if global_norm(grads) > max_norm, multiply every leaf by max_norm / norm; else return as
    # hint: is
    norm = global_norm(grads)
    if norm <= max_norm:
        return grads
    scale = max_norm / (norm + 1e-12)
    return _map(lambda g: g * scale, grads)
    # END SOLUTION


def adam_init(params) -> dict:
    """Adam state: first and second moments m, v (zeros like params) and the step count."""
    _check_tree("params", params)
    zeros = _map(lambda p: p * 0, params)
    return {"m": zeros, "v": _map(lambda p: p * 0, params), "step": 0}


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
    # BEGIN SOLUTION
    # hint: Kingma & Ba Algorithm 1 with bias correction 1 - b^k (k counts from 1), plus lr *
    # hint: weight_decay * p (decoupled); return new params and the new state dict
    k = state["step"] + 1
    m = _map(lambda m_, g: b1 * m_ + (1 - b1) * g, state["m"], grads)
    v = _map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, state["v"], grads)
    c1, c2 = 1 - b1 ** k, 1 - b2 ** k

    def step(p, m_, v_):
        xp = namespace(p)
        return p - lr * ((m_ / c1) / (xp.sqrt(v_ / c2) + eps) + weight_decay * p)

    return _map(step, params, m, v), {"m": m, "v": v, "step": k}
    # END SOLUTION


def ema_warmup(decay: float, k: int) -> float:
    """The EMA decay used at step k (0-based): min(decay, (1 + k) / (10 + k)), so that early on the
    average does not hold on to the random initial weights."""
    decay = _checks.real("decay", decay, 0.0, 1.0)
    k = _checks.integer("k", k, 0, 2 ** 62)
    return min(decay, (1 + k) / (10 + k))


def power_ema_exponent(sigma_rel: float) -> float:
    """EDM2 (Karras et al. 2024, eq. 3 and Appendix C.2): the exponent gamma of the power-function
    EMA whose averaging profile, relative to the training length, has standard deviation
    sigma_rel.  The profile t^gamma on [0, 1] has sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2
    (gamma + 3)), i.e. gamma^3 + 7 gamma^2 + (16 - 1/sigma_rel^2) gamma + 12 - 1/sigma_rel^2 = 0:
    its one positive root (sigma_rel = 0.10: gamma = 6.94; 0.05: 16.97).  sigma_rel < 0.2887
    (gamma > 0: the profile of a plain average, gamma = 0, is the widest)."""
    sigma_rel = _checks.real("sigma_rel", sigma_rel, 0.0, 12 ** -0.5, lo_open=True, hi_open=True)
    a = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - a, 12.0 - a])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def power_ema_decay(gamma: float, k: int) -> float:
    """The power-function EMA's decay after step k (0-based, t = k + 1 updates so far), EDM2
    eq. 4: beta = (1 - 1/t)^(gamma + 1).  Step 0 copies the weights (beta = 0); the average then
    always covers a fixed fraction of the run, however long it turns out to be."""
    gamma = _checks.real("gamma", gamma, 0.0)
    k = _checks.integer("k", k, 0, 2 ** 62)
    return (1.0 - 1.0 / (k + 1)) ** (gamma + 1)


def inverse_sqrt_decay(t_ref: int, k: int) -> float:
    """EDM2's learning-rate decay (eq. 15) as a factor: 1 / sqrt(max(k / t_ref, 1)): constant up
    to step t_ref, then falling as 1 / sqrt(k), with no end of training to know in advance;
    t_ref = 0 means no decay."""
    t_ref = _checks.integer("t_ref", t_ref, 0, 2 ** 62)
    k = _checks.integer("k", k, 0, 2 ** 62)
    return 1.0 if t_ref == 0 else 1.0 / math.sqrt(max(k / t_ref, 1.0))


def ema_update(ema_params, params, decay: float = 0.999):
    """Exponential moving average of the weights: ema = decay ema + (1 - decay) params."""
    decay = _checks.real("decay", decay)
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
    _check_tree("ema_params", ema_params)
    _check_tree("params", params)
    # BEGIN SOLUTION
    # hint: ema = decay * ema + (1 - decay) * params, leaf by leaf (use _map)
    return _map(lambda e, p: decay * e + (1 - decay) * p, ema_params, params)
    # END SOLUTION
