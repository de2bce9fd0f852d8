"""Lesson 04: Score matching, SDEs, predictor-corrector and the probability-flow ODE.

Write the functions below; the notebook notebooks/04_score_sde.ipynb explains the maths.
Check your work with:   minidiff check 04
(or: python -m pytest tests/lessons/test_04_score_sde.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

from minidiff import _checks
from minidiff.backend import namespace
from minidiff.sde import _check_betas, _check_drift, _check_sde, _check_step, _t_like, perturb


def vp_sde(x, t, beta_min: float = 0.1, beta_max: float = 20.0):
    """The VP SDE's coefficients (eq. 11): drift f(x, t) = -1/2 beta(t) x and diffusion
    g(t) = sqrt(beta(t)), with beta(t) = beta_min + t (beta_max - beta_min).
    x: (B, ...), t: scalar or (B,) -> (f (B, ...), g (B,))."""
    _checks.times("t", t, _checks.batch("x", x))
    _check_betas(beta_min, beta_max)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE vp_sde: write this function (see its docstring)")


def dsm_loss(score_model, sde, x0, t, noise, **model_kwargs):
    """Denoising score matching (eq. 7) with lambda(t) = sigma(t)^2, the weighting of Song et al.:
    mean over the batch of || sigma(t) s_theta(x_t, t) + z ||^2, summed over the data dimensions.
    x0, noise: (B, ...); t: (B,) in (0, 1]."""
    _check_sde(sde)
    _checks.batches(x0=x0, noise=noise)
    _checks.times("t", t, x0, lo_open=True, x_name="x0")
    score_model = _checks.checked("score_model", score_model)  # its output: x_t's shape, finite
    xp = namespace(x0, noise)
    raise NotImplementedError("EXERCISE dsm_loss: write this function (see its docstring)")


def reverse_drift(sde, score, x, t):
    """The reverse-time SDE's drift (eq. 6): f(x, t) - g(t)^2 score(x, t)."""
    _check_drift(sde, score, x, t)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE reverse_drift: write this function (see its docstring)")


def probability_flow_drift(sde, score, x, t):
    """The probability-flow ODE's velocity (eq. 13): f(x, t) - 1/2 g(t)^2 score(x, t)."""
    _check_drift(sde, score, x, t)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE probability_flow_drift: write this function (see its docstring)")


def euler_maruyama_step(sde, score_model, x, t: float, dt: float, noise):
    """One Euler-Maruyama step of the reverse SDE from t to t + dt (dt < 0):
    x + [f - g^2 s] dt + g sqrt(|dt|) z."""
    score_model = _check_step(sde, score_model, x, t, dt, noise)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE euler_maruyama_step: write this function (see its docstring)")


def langevin_step(score_model, x, t: float, snr: float, noise, alpha: float = 1.0):
    """The Langevin corrector (Song et al., Algorithm 4 for VE, 5 for VP): step size
    eps = 2 alpha (snr ||z|| / ||s||)^2 with norms averaged over the batch, then
    x + eps s + sqrt(2 eps) z."""
    _checks.batches(x=x, noise=noise)
    _checks.real("t", t, 0, 1)
    _checks.real("snr", snr, 0, lo_open=True)
    _checks.real("alpha", alpha, 0, lo_open=True)
    score_model = _checks.checked("score_model", score_model)  # its output: x's shape, finite
    xp = namespace(x)
    raise NotImplementedError("EXERCISE langevin_step: write this function (see its docstring)")


def divergence_hutchinson(fun, x, probe):
    """Hutchinson's estimator (Hutchinson 1990; Grathwohl et al. 2019): div fun(x) ~ z^T J z with
    E[z z^T] = I (Rademacher or Gaussian ``probe``, shaped like x).  (B, ...) -> (B,)."""
    from minidiff.backend import vjp

    _checks.function("fun", fun)
    _checks.batches(x=x, probe=probe)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE divergence_hutchinson: write this function (see its docstring)")
