"""Lesson 07: Consistency models: distillation, training, one- and few-step sampling.

Write the functions below; the notebook notebooks/07_consistency.ipynb explains the maths.
Check your work with:   minidiff check 07
(or: python -m pytest tests/lessons/test_07_consistency.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace
from minidiff.consistency import _coefficient_parameters, _gather, _iteration, _loss_inputs, _stage_sizes, _stop_gradient
from minidiff.samplers import to_d


def consistency_coefficients(t, sigma_data: float = 0.5, eps: float = 0.002):
    """CM Appendix C: c_skip(t) = sigma_data^2 / ((t - eps)^2 + sigma_data^2),
    c_out(t) = sigma_data (t - eps) / sqrt(sigma_data^2 + t^2), so that c_skip(eps) = 1 and
    c_out(eps) = 0 (the boundary condition); c_in = 1 / sqrt(t^2 + sigma_data^2) and
    c_noise = ln(t) / 4 as in EDM.  t: (B,) -> four (B,) arrays, t > 0."""
    t = _checks.levels("t", t)
    sigma_data, eps = _coefficient_parameters(sigma_data, eps)
    xp = namespace(t)
    raise NotImplementedError("EXERCISE consistency_coefficients: write this function (see its docstring)")


def ct_schedule(k: int, K: int, s0: int = 2, s1: int = 150, mu0: float = 0.9):
    """CM Appendix C, consistency training: N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1
    and the EMA decay of the target mu(k) = exp(s0 log(mu0) / N(k)).  Returns (N, mu).
    1 <= s0 <= s1 (integers), mu0 in (0, 1]."""
    k, K = _iteration(k, K)
    s0, s1 = _stage_sizes(s0, s1)
    mu0 = _checks.real("mu0", mu0, 0.0, 1.0, lo_open=True)
    raise NotImplementedError("EXERCISE ct_schedule: write this function (see its docstring)")


def distance(x, y, metric: str = "l2", c=None):
    """'l2': ||x - y||^2; 'l1': ||x - y||_1; 'pseudo_huber': sqrt(||x - y||^2 + c^2) - c with
    c = 0.00054 sqrt(d) by default (iCT); c >= 0."""
    _checks.choice("metric", metric, ("l2", "l1", "pseudo_huber"))
    _checks.array("x", x, min_ndim=1)
    _checks.array("y", y, min_ndim=1)
    xp = _checks.same_backend(x=x, y=y)
    _checks.shapes_equal(x=x, y=y)
    x, y = _checks.at_least_float32(xp, x), _checks.at_least_float32(xp, y)   # float16 sums overflow
    if c is not None:
        c = _checks.real("c", c, 0.0)
    raise NotImplementedError("EXERCISE distance: write this function (see its docstring)")


def cd_loss(f, f_target, teacher_D, x0, n, z, boundaries, metric: str = "l2", weight=None, **kwargs):
    """Consistency distillation (CM Algorithm 2, eq. 7): x_{t_{n+1}} = x0 + t_{n+1} z; one Heun
    step of the teacher's probability-flow ODE (EDM Algorithm 1) gives x_hat_{t_n}; the loss is
    lambda(t_n) d(f(x_{t_{n+1}}, t_{n+1}), f_target(x_hat_{t_n}, t_n)), f_target the EMA network
    (its output is treated as a constant).  x0, z: (B, ...); n: (B,) integers."""
    boundaries, (f, f_target, teacher_D) = _loss_inputs(x0, n, z, boundaries, weight, metric, f=f,
                                                        f_target=f_target, teacher_D=teacher_D)
    xp = namespace(x0, z)
    raise NotImplementedError("EXERCISE cd_loss: write this function (see its docstring)")


def ct_loss(f, f_target, x0, n, z, boundaries, metric: str = "l2", weight=None, **kwargs):
    """Consistency training (CM Algorithm 3, eq. 10): the same noise z at two adjacent levels,
    lambda(t_n) d(f(x0 + t_{n+1} z, t_{n+1}), f_target(x0 + t_n z, t_n)); no teacher.
    For iCT pass f_target = f (no EMA), metric='pseudo_huber' and weight = 1 / (t_{n+1} - t_n)."""
    boundaries, (f, f_target) = _loss_inputs(x0, n, z, boundaries, weight, metric, f=f, f_target=f_target)
    xp = namespace(x0, z)
    raise NotImplementedError("EXERCISE ct_loss: write this function (see its docstring)")


def consistency_sample(f, x_T, taus, randn_like, T: float = 80.0, eps: float = 0.002, callback=None,
                       progress=False, **kwargs):
    """CM Algorithm 1, multistep consistency sampling: x = f(x_T, T); then for each tau in the
    decreasing ``taus``: x_tau = x + sqrt(tau^2 - eps^2) z and x = f(x_tau, tau).
    x_T = T z (B, ...).  One step when ``taus`` is empty; NFE = 1 + len(taus).  ``progress`` is
    accepted for the samplers' common head and ignored: a few steps need no progress bar."""
    _checks.array("x_T", x_T, min_ndim=1)
    _checks.finite_input("x_T", x_T)
    f = _checks.checked_model("f", f)
    _checks.callable_arg("randn_like", randn_like)
    if callback is not None:
        _checks.callable_arg("callback", callback)
    T, eps = _checks.real("T", T, 0.0, lo_open=True), _checks.real("eps", eps, 0.0, lo_open=True)
    if not eps < T:
        raise ValueError(f"need 0 < eps < T, got eps={eps!r}, T={T!r}")
    if taus is None or isinstance(taus, str) or not (np.ndim(taus) <= 1):
        raise TypeError(f"taus must be a 1-D sequence of noise levels (or empty), got {taus!r}")
    try:
        np.asarray(taus, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"taus must be a 1-D sequence of numbers, got {taus!r}") from None
    if not np.all(np.isfinite(np.asarray(taus, dtype=np.float64))):
        raise ValueError(f"taus must be finite, got {taus!r}")
    taus = [float(t) for t in np.atleast_1d(np.asarray(taus, dtype=np.float64))] if len(np.atleast_1d(taus)) else []
    if any(not eps < t < T for t in taus):
        raise ValueError(f"taus: every tau must lie in (eps, T) = ({eps}, {T}), got {taus}")
    if any(b >= a for a, b in zip(taus, taus[1:])):
        raise ValueError("taus must be strictly decreasing")
    raise NotImplementedError("EXERCISE consistency_sample: write this function (see its docstring)")
