"""Lesson 02: The forward process and noise schedules.

Write the functions below; the notebook notebooks/02_forward_process.ipynb explains the maths.
Check your work with:   minidiff check 02
(or: python -m pytest tests/lessons/test_02_forward_process.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace
from minidiff.diffusion import _check, _coef


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> np.ndarray:
    """DDPM section 4: beta_t rising linearly from beta_1 to beta_T.  Returns (T,) float64."""
    T = _checks.steps("T", T)
    beta_1 = _checks.real("beta_1", beta_1, 0, 1, lo_open=True, hi_open=True)
    beta_T = _checks.real("beta_T", beta_T, 0, 1, lo_open=True, hi_open=True)
    if not beta_1 <= beta_T:
        raise ValueError(f"need 0 < beta_1 <= beta_T < 1, got beta_1={beta_1!r}, beta_T={beta_T!r}")
    raise NotImplementedError("EXERCISE linear_betas: write this function (see its docstring)")


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """iDDPM eq. (17): alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2),
    and beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped to ``max_beta``.  Returns (T,)."""
    T = _checks.steps("T", T)
    max_beta = _checks.real("max_beta", max_beta, 0, 1, lo_open=True, hi_open=True)
    s = _checks.real("s", s, 0)
    raise NotImplementedError("EXERCISE cosine_betas: write this function (see its docstring)")


def alpha_bars(betas) -> np.ndarray:
    """DDPM eq. (4): alpha_t = 1 - beta_t and alpha_bar_t = prod_{s<=t} alpha_s.  (T,) -> (T,)."""
    betas = _checks.betas(_checks.table("betas", betas))
    raise NotImplementedError("EXERCISE alpha_bars: write this function (see its docstring)")


def snr(alpha_bar) -> np.ndarray:
    """Signal-to-noise ratio SNR_t = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, eq. 2)."""
    alpha_bar = _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
    raise NotImplementedError("EXERCISE snr: write this function (see its docstring)")


def q_sample(x0, t, alpha_bar, noise):
    """DDPM eq. (4): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.  (B, ...) -> (B, ...)."""
    _check(t, alpha_bar, x0=x0, noise=noise)
    xp = namespace(x0, noise)
    raise NotImplementedError("EXERCISE q_sample: write this function (see its docstring)")


def q_posterior(x0, x_t, t, betas):
    """DDPM eqs. (6)-(7): mean and variance of q(x_{t-1} | x_t, x_0).

    mean = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
         + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    var  = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t          (alpha_bar_{-1} = 1)
    Returns (mean (B, ...), var (B, 1, ..., 1)).
    """
    _checks.batches(x0=x0, x_t=x_t)
    betas = _checks.betas(_checks.table("betas", betas))
    _checks.timestep_batch("t", t, len(betas), x0, "x0")
    xp = namespace(x0, x_t)
    raise NotImplementedError("EXERCISE q_posterior: write this function (see its docstring)")
