"""Lesson 05: DDIM: the non-Markovian family, sub-sequences, inversion, interpolation.

Write the functions below; the notebook notebooks/05_ddim.ipynb explains the maths.
Check your work with:   minidiff check 05
(or: python -m pytest tests/lessons/test_05_ddim.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace
from minidiff.samplers import SPACINGS, _check_ddim_sigma, _check_ddim_step, _check_sampler, _check_slerp, _check_timesteps, _checked_model_output


def ddim_timesteps(T: int, n_steps: int, spacing: str = "leading") -> np.ndarray:
    """A decreasing sub-sequence tau of n_steps distinct steps of [0, T) (DDIM section 4.2).

    'leading' (DDIM's uniform): 0, c, 2c, ... with c = T // n_steps;  'trailing': T-1, T-1-T/n, ...
    rounded, always starting at T-1;  'linspace': n_steps points of [0, T-1] rounded;
    'quadratic' (DDIM Appendix D.2): (linspace(0, sqrt(0.8 T), n))^2, made strictly increasing.
    Every spacing returns exactly n_steps distinct integers, whatever T and n_steps."""
    T = _checks.steps("T", T)
    n_steps = _checks.steps("n_steps", n_steps)
    _checks.choice("spacing", spacing, SPACINGS)
    if n_steps > T:
        raise ValueError(f"n_steps must be <= T = {T} (the number of training steps), got {n_steps}")
    raise NotImplementedError("EXERCISE ddim_timesteps: write this function (see its docstring)")


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta: float):
    """DDIM eq. (16): sigma_t(eta) = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev).
    eta = 0: the deterministic DDIM; eta = 1: DDPM's posterior standard deviation."""
    _check_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    raise NotImplementedError("EXERCISE ddim_sigma: write this function (see its docstring)")


def ddim_step(x_t, t: int, t_prev: int, eps, alpha_bar, eta: float = 0.0, noise=None):
    """DDIM eq. (12): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z,
    with x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) and sigma = ddim_sigma(eta).
    ``t_prev = -1`` (any negative t_prev) means a_prev = 1.  (B, ...) -> (B, ...)."""
    _check_ddim_step(x_t, t, t_prev, eps, alpha_bar, eta, noise)
    raise NotImplementedError("EXERCISE ddim_step: write this function (see its docstring)")


def ddim_invert(eps_model, x0, alpha_bar, timesteps, callback=None, **model_kwargs):
    """Deterministic DDIM encoding x_0 -> x_T (DDIM section 5.4): run eq. (12) with eta = 0
    forwards along the increasing reverse of ``timesteps``, predicting eps at the current point."""
    _check_sampler(eps_model, "eps_model", x0, "x0", None, callback)
    alpha_bar = _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
    tau = _check_timesteps(timesteps, len(alpha_bar))[::-1]
    xp = namespace(x0)
    x = x0
    prev = -1
    raise NotImplementedError("EXERCISE ddim_invert: write this function (see its docstring)")


def slerp(z0, z1, alpha: float):
    """Spherical interpolation between two noise tensors (Shoemake 1985), as in DDIM section 5.3:
    sin((1-a) theta)/sin(theta) z0 + sin(a theta)/sin(theta) z1, theta the angle between them."""
    _check_slerp(z0, z1, alpha)
    xp = namespace(z0, z1)
    raise NotImplementedError("EXERCISE slerp: write this function (see its docstring)")
