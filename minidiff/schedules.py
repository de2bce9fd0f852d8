"""Noise schedules for the discrete-time forward process (DDPM, iDDPM).

Index convention: the T steps are numbered t = 0, ..., T-1 (the papers' t = 1, ..., T), so
``betas[0]`` is the paper's beta_1.  Schedules are float64 NumPy constants; algorithms move them
to the backend and dtype of their inputs.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> np.ndarray:
    """DDPM section 4: beta_t rising linearly from beta_1 to beta_T.  Returns (T,) float64."""
    T = _checks.steps("T", T)
    beta_1 = _checks.real("beta_1", beta_1, 0, 1, lo_open=True, hi_open=True)
    beta_T = _checks.real("beta_T", beta_T, 0, 1, lo_open=True, hi_open=True)
    if not beta_1 <= beta_T:
        raise ValueError(f"need 0 < beta_1 <= beta_T < 1, got beta_1={beta_1!r}, beta_T={beta_T!r}")
    # BEGIN SOLUTION
    # hint: T equally spaced values from beta_1 to beta_T inclusive (float64)
    return np.linspace(beta_1, beta_T, T, dtype=np.float64)
    # END SOLUTION


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """iDDPM eq. (17): alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2),
    and beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped to ``max_beta``.  Returns (T,)."""
    T = _checks.steps("T", T)
    max_beta = _checks.real("max_beta", max_beta, 0, 1, lo_open=True, hi_open=True)
    s = _checks.real("s", s, 0)
    # BEGIN SOLUTION
    # hint: iDDPM eq. 17: f(t) = cos^2(((t/T + s)/(1+s)) pi/2) for t = 0..T, alpha_bar = f/f(0),
    # hint: beta = 1 - alpha_bar[1:]/alpha_bar[:-1], clipped to max_beta
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, max_beta)
    # END SOLUTION


def alpha_bars(betas) -> np.ndarray:
    """DDPM eq. (4): alpha_t = 1 - beta_t and alpha_bar_t = prod_{s<=t} alpha_s.  (T,) -> (T,)."""
    betas = _checks.betas(_checks.table("betas", betas))
    # BEGIN SOLUTION
    # hint: cumulative product of 1 - beta
    return np.cumprod(1.0 - betas)
    # END SOLUTION


def snr(alpha_bar) -> np.ndarray:
    """Signal-to-noise ratio SNR_t = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, eq. 2)."""
    alpha_bar = _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
    # BEGIN SOLUTION
    # hint: alpha_bar / (1 - alpha_bar)
    return alpha_bar / (1.0 - alpha_bar)
    # END SOLUTION


def make_betas(kind: str, T: int) -> np.ndarray:
    """A named schedule: 'linear' (DDPM's, rescaled by 1000 / T as in iDDPM's code so that every T
    ends near alpha_bar = 0: beta from 0.1 / T to 20 / T) or 'cosine' (iDDPM)."""
    _checks.choice("kind (the schedule)", kind, ("linear", "cosine"))
    T = _checks.steps("T", T)
    return linear_betas(T, 0.1 / T, min(20.0 / T, 0.999)) if kind == "linear" else cosine_betas(T)
