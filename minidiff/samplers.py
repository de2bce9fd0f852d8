"""Samplers.  Each takes a model, the starting noise and the schedule, with its randomness
passed in as ``randn_like`` (as in EDM's sampler), and an optional per-step ``callback``
(as in k-diffusion) that receives a dict with the current ``x`` and step ``i``.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from .backend import namespace
from .diffusion import _coef

VARIANCES = ("beta", "posterior")


def ddpm_sigma2(betas, variance: str = "beta") -> np.ndarray:
    """DDPM section 3.2: the reverse-step variance sigma_t^2, either beta_t ('beta') or the
    posterior variance beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t ('posterior')."""
    _checks.choice("variance", variance, VARIANCES)
    betas = _checks.betas(betas)
    if variance == "beta":
        return betas
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    return (1 - alpha_bar_prev) / (1 - alpha_bar) * betas


def ddpm_step(x_t, t: int, eps, betas, noise, variance: str = "beta"):
    """DDPM Algorithm 2, line 4: one ancestral step x_t -> x_{t-1},
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
    with z = ``noise`` for t > 0 and no noise at the last step (t = 0).  (B, ...) -> (B, ...)."""
    _checks.same_shape("x_t", x_t, "eps", eps)
    xp = namespace(x_t, eps)
    betas = _checks.betas(betas)
    sigma2 = ddpm_sigma2(betas, variance)
    # BEGIN SOLUTION
    alpha_bar = np.cumprod(1 - betas)
    mean = (x_t - float(betas[t] / np.sqrt(1 - alpha_bar[t])) * eps) / float(np.sqrt(1 - betas[t]))
    if t == 0:
        return mean
    return mean + float(np.sqrt(sigma2[t])) * noise
    # END SOLUTION


def _checked_model_output(model, x, t_batch, step: int, **model_kwargs):
    out = model(x, t_batch, **model_kwargs)
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"model output at step {step} has shape {tuple(out.shape)}, expected {tuple(x.shape)}")
    if not namespace(out).all_finite(out):
        raise ValueError(f"model returned non-finite values (NaN or inf) at step t={step}")
    return out


def ddpm_sample(eps_model, x_T, betas, randn_like, variance: str = "beta", callback=None, progress=False,
                **model_kwargs):
    """DDPM Algorithm 2: ancestral sampling from x_T ~ N(0, I) down to x_0 in T steps.

    eps_model(x, t) -> eps with t of shape (B,); x_T: (B, ...); randn_like(x) draws z.
    Returns x_0 (B, ...).  ``callback({'x', 'i', 'eps'})`` is called after each step.
    """
    betas = _checks.betas(betas)
    _checks.choice("variance", variance, VARIANCES)
    x = x_T
    steps = range(len(betas) - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="ddpm sampling", leave=False)
    for i in steps:
        eps = _checked_model_output(eps_model, x, namespace(x).int_array(np.full(x.shape[0], i), like=x), i, **model_kwargs)
        noise = randn_like(x) if i > 0 else None
        x = ddpm_step(x, i, eps, betas, noise, variance)
        if callback is not None:
            callback({"x": x, "i": i, "eps": eps})
    return x
