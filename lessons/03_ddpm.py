"""Lesson 03: DDPM: training, ancestral sampling, three targets and the bound.

Write the functions below; the notebook notebooks/03_ddpm.ipynb explains the maths.
Check your work with:   minidiff check 03
(or: python -m pytest tests/lessons/test_03_ddpm.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace
from minidiff.diffusion import _check, _coef, ddpm_sigma2, q_sample, target_of
from minidiff.elbo import _check_gaussians
from minidiff.losses import TARGETS
from minidiff.samplers import _check_ddpm_step


def ddpm_loss(model, x0, t, noise, alpha_bar, target: str = "eps", **model_kwargs):
    """DDPM Algorithm 1, line 5 (L_simple): mean || target - model(x_t, t) ||^2 with
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

    ``target`` picks what the network predicts: 'eps' (DDPM), 'x0', 'score' or 'v'.
    x0, noise: (B, ...); t: (B,) integers in [0, T).  Returns a scalar.
    """
    _checks.choice("target", target, TARGETS)
    model = _checks.checked("model", model)  # its output: x_t's shape, finite
    xp = namespace(x0, noise)
    raise NotImplementedError("EXERCISE ddpm_loss: write this function (see its docstring)")


def eps_to_x0(x_t, t, eps, alpha_bar):
    """Invert eq. (4): x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    _check(t, alpha_bar, x_t=x_t, eps=eps)
    xp = namespace(x_t, eps)
    raise NotImplementedError("EXERCISE eps_to_x0: write this function (see its docstring)")


def eps_to_score(eps, t, alpha_bar):
    """Tweedie's formula (Luo 2022, "Three Equivalent Interpretations"): grad log q(x_t) = -eps / sqrt(1 - alpha_bar_t)."""
    _check(t, alpha_bar, eps=eps)
    xp = namespace(eps)
    raise NotImplementedError("EXERCISE eps_to_score: write this function (see its docstring)")


def ddpm_step(x_t, t: int, eps, betas, noise, variance: str = "beta"):
    """DDPM Algorithm 2, line 4: one ancestral step x_t -> x_{t-1},
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
    with z = ``noise`` for t > 0 and no noise at the last step (t = 0).  (B, ...) -> (B, ...)."""
    betas = _check_ddpm_step(x_t, t, eps, betas, noise)
    xp = namespace(x_t, eps)
    sigma2 = ddpm_sigma2(betas, variance)
    raise NotImplementedError("EXERCISE ddpm_step: write this function (see its docstring)")


def gaussian_kl(mean1, var1, mean2, var2):
    """KL( N(mean1, var1) || N(mean2, var2) ) elementwise, in nats (arrays broadcast)."""
    _check_gaussians(mean1=mean1, var1=var1, mean2=mean2, var2=var2)
    xp = namespace(mean1, mean2)
    like = mean1 if xp.is_array(mean1) else mean2
    var1, var2 = xp.asarray(var1, like=like), xp.asarray(var2, like=like)  # python-float variances on torch
    raise NotImplementedError("EXERCISE gaussian_kl: write this function (see its docstring)")
