"""Samplers.  Every ``*_sample`` function has one head,
``(model, x, schedule, ..., randn_like, callback=None, progress=False, **model_kwargs)``: a model,
the starting noise and the schedule; randomness passed in as ``randn_like`` (as in EDM's
sampler; the deterministic samplers accept and ignore it); an optional per-step ``callback``
(as in k-diffusion) that receives a dict with the current ``x`` and step ``i``; ``progress`` for
a tqdm bar; and ``model_kwargs`` (e.g. ``class_labels``) passed to every model call.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks
from ._progress import progress_bar
from .backend import namespace
from .diffusion import VARIANCES, ddpm_sigma2  # noqa: F401  (ddpm_sigma2 is imported from here by lesson 03)

# The argument and model-output checks live in _checks; the lesson stubs import them under these names.
_checked_model_output = _checks.model_output
_check_timesteps = _checks.decreasing_timesteps
_check_sigmas = _checks.sigmas
_checked_denoiser = _checks.denoiser_output


def ddpm_step(x_t, t: int, eps, betas, noise, variance: str = "beta"):
    """DDPM Algorithm 2, line 4: one ancestral step x_t -> x_{t-1},
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
    with z = ``noise`` for t > 0 and no noise at the last step (t = 0).  (B, ...) -> (B, ...)."""
    _checks.same_shape("x_t", x_t, "eps", eps)
    xp = namespace(x_t, eps)
    betas = _checks.betas(betas)
    sigma2 = ddpm_sigma2(betas, variance)
    # BEGIN SOLUTION
    # hint: Algorithm 2 line 4: (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t), plus
    # hint: sqrt(sigma2[t]) * noise unless t == 0
    alpha_bar = np.cumprod(1 - betas)
    mean = (x_t - float(betas[t] / np.sqrt(1 - alpha_bar[t])) * eps) / float(np.sqrt(1 - betas[t]))
    if t == 0:
        return mean
    return mean + float(np.sqrt(sigma2[t])) * noise
    # END SOLUTION


def ddpm_sample(eps_model, x_T, betas, randn_like, variance: str = "beta", callback=None, progress=False,
                **model_kwargs):
    """DDPM Algorithm 2: ancestral sampling from x_T ~ N(0, I) down to x_0 in T steps.

    eps_model(x, t) -> eps with t of shape (B,); x_T: (B, ...); randn_like(x) draws z.
    Returns x_0 (B, ...).  ``callback({'x', 'i', 'eps'})`` is called after each step.
    """
    betas = _checks.betas(betas)
    _checks.choice("variance", variance, VARIANCES)
    x = x_T
    for i in progress_bar(range(len(betas) - 1, -1, -1), progress, "ddpm sampling"):
        eps = _checked_model_output(eps_model, x, namespace(x).int_array(np.full(x.shape[0], i), like=x), i, **model_kwargs)
        noise = randn_like(x) if i > 0 else None
        x = ddpm_step(x, i, eps, betas, noise, variance)
        if callback is not None:
            callback({"x": x, "i": i, "eps": eps})
    return x


# ----------------------------------------------------------------------------------------------
# DDIM (Song, Meng & Ermon 2021).  Timesteps are 0-based indices into alpha_bar; "t_prev = -1"
# stands for the end of the chain, where alpha_bar = 1 (x_0 itself).

SPACINGS = ("leading", "trailing", "linspace", "quadratic")


def ddim_timesteps(T: int, n_steps: int, spacing: str = "leading") -> np.ndarray:
    """A decreasing sub-sequence tau of n_steps distinct steps of [0, T) (DDIM section 4.2).

    'leading' (DDIM's uniform): 0, c, 2c, ... with c = T // n_steps;  'trailing': T-1, T-1-T/n, ...
    rounded, always starting at T-1;  'linspace': n_steps points of [0, T-1] rounded;
    'quadratic' (DDIM Appendix D.2): (linspace(0, sqrt(0.8 T), n))^2, made strictly increasing.
    Every spacing returns exactly n_steps distinct integers, whatever T and n_steps."""
    T = _checks.positive_int("T", T)
    n_steps = _checks.positive_int("n_steps", n_steps)
    _checks.choice("spacing", spacing, SPACINGS)
    if n_steps > T:
        raise ValueError(f"n_steps must be <= T = {T} (the number of training steps), got {n_steps}")
    # BEGIN SOLUTION
    # hint: n_steps DISTINCT integers in [0, T), returned in decreasing order; 'trailing' starts at
    # hint: T-1, 'leading' at 0 with stride T // n_steps
    if spacing == "leading":
        tau = np.arange(n_steps) * (T // n_steps)
    elif spacing == "trailing":
        tau = np.round(T - np.arange(n_steps) * (T / n_steps)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        tau = np.round(np.linspace(0, T - 1, n_steps)).astype(np.int64)
    else:
        tau = np.floor(np.linspace(0, np.sqrt(0.8 * T), n_steps) ** 2).astype(np.int64)
        for i in range(1, n_steps):          # squares crowd together near 0: keep them distinct
            tau[i] = max(tau[i], tau[i - 1] + 1)
        tau = np.minimum(tau, T - 1 - np.arange(n_steps)[::-1])
    return tau[::-1].astype(np.int64)
    # END SOLUTION


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta: float):
    """DDIM eq. (16): sigma_t(eta) = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev).
    eta = 0: the deterministic DDIM; eta = 1: DDPM's posterior standard deviation."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    # BEGIN SOLUTION
    # hint: eq. 16: eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)
    return eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * np.sqrt(1 - alpha_bar_t / alpha_bar_prev)
    # END SOLUTION


def ddim_step(x_t, t: int, t_prev: int, eps, alpha_bar, eta: float = 0.0, noise=None):
    """DDIM eq. (12): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z,
    with x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) and sigma = ddim_sigma(eta).
    ``t_prev = -1`` means a_prev = 1.  (B, ...) -> (B, ...)."""
    _checks.same_shape("x_t", x_t, "eps", eps)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if eta > 0 and noise is None:
        raise ValueError("ddim_step with eta > 0 needs noise")
    # BEGIN SOLUTION
    # hint: eq. 12: sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z; a_prev = 1 when
    # hint: t_prev = -1
    a_t = float(alpha_bar[t])
    a_prev = float(alpha_bar[t_prev]) if t_prev >= 0 else 1.0
    sigma = float(ddim_sigma(a_t, a_prev, eta))
    x0_hat = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    x_prev = math.sqrt(a_prev) * x0_hat + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
    return x_prev + sigma * noise if sigma > 0 else x_prev
    # END SOLUTION


def ddim_sample(eps_model, x_T, alpha_bar, timesteps, eta: float = 0.0, randn_like=None, callback=None,
                progress=False, **model_kwargs):
    """DDIM sampling (Algorithm of section 4.1 on the sub-sequence tau): from x_T at tau[0]
    down to x_0, one eq. (12) step per entry of ``timesteps`` (decreasing).  NFE = len(tau)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if eta > 0 and randn_like is None:
        raise ValueError("ddim_sample with eta > 0 needs randn_like")
    alpha_bar = _checks.alpha_bar(alpha_bar)
    tau = _check_timesteps(timesteps, len(alpha_bar))
    xp = namespace(x_T)
    x = x_T
    for i, t in progress_bar(enumerate(tau), progress, "ddim sampling", total=len(tau)):
        t_prev = int(tau[i + 1]) if i + 1 < len(tau) else -1
        eps = _checked_model_output(eps_model, x, xp.int_array(np.full(x.shape[0], t), like=x), int(t),
                                    **model_kwargs)
        noise = randn_like(x) if eta > 0 and t_prev >= 0 else None
        x = ddim_step(x, int(t), t_prev, eps, alpha_bar, eta if t_prev >= 0 else 0.0, noise)
        if callback is not None:
            callback({"x": x, "i": i, "t": int(t), "eps": eps})
    return x


def ddim_invert(eps_model, x0, alpha_bar, timesteps, callback=None, **model_kwargs):
    """Deterministic DDIM encoding x_0 -> x_T (DDIM section 5.4): run eq. (12) with eta = 0
    forwards along the increasing reverse of ``timesteps``, predicting eps at the current point."""
    alpha_bar = _checks.alpha_bar(alpha_bar)
    tau = _check_timesteps(timesteps, len(alpha_bar))[::-1]
    xp = namespace(x0)
    x = x0
    prev = -1
    # BEGIN SOLUTION
    # hint: walk tau upwards; at each step predict eps at the current (less noisy) step, form x0_hat
    # hint: and re-noise deterministically to the next step: sqrt(a) x0_hat + sqrt(1 - a) eps
    for i, t in enumerate(tau):
        # the model is evaluated at the previous (less noisy) step; at the start, at tau's first entry
        t_eval = int(prev) if prev >= 0 else int(t)
        eps = _checked_model_output(eps_model, x, xp.int_array(np.full(x.shape[0], t_eval), like=x), t_eval,
                                    **model_kwargs)
        a_prev = float(alpha_bar[prev]) if prev >= 0 else 1.0
        a_t = float(alpha_bar[t])
        x0_hat = (x - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
        x = math.sqrt(a_t) * x0_hat + math.sqrt(1 - a_t) * eps
        prev = t
        if callback is not None:
            callback({"x": x, "i": i, "t": int(t), "eps": eps})
    return x
    # END SOLUTION


def slerp(z0, z1, alpha: float):
    """Spherical interpolation between two noise tensors (Shoemake 1985), as in DDIM section 5.3:
    sin((1-a) theta)/sin(theta) z0 + sin(a theta)/sin(theta) z1, theta the angle between them."""
    xp = namespace(z0, z1)
    # BEGIN SOLUTION
    # hint: theta = arccos(<z0, z1> / (|z0| |z1|)); (sin((1-a) theta) z0 + sin(a theta) z1) /
    # hint: sin(theta)
    flat0, flat1 = xp.reshape(z0, (-1,)), xp.reshape(z1, (-1,))
    cos = xp.sum(flat0 * flat1) / xp.sqrt(xp.sum(flat0 * flat0) * xp.sum(flat1 * flat1))
    theta = float(np.arccos(np.clip(float(cos), -1.0, 1.0)))
    if theta < 1e-6:
        return (1 - alpha) * z0 + alpha * z1
    return (math.sin((1 - alpha) * theta) * z0 + math.sin(alpha * theta) * z1) / math.sin(theta)
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# EDM samplers (Karras et al. 2022) on a denoiser D(x; sigma), with sigma(t) = t and s(t) = 1.
# ``sigmas`` is the decreasing sequence t_0 > ... > t_{N-1} > 0; the samplers append t_N = 0.

def to_d(x, sigma: float, denoised):
    """The probability-flow ODE's slope in EDM's form (eq. 3 with sigma(t) = t, s(t) = 1):
    dx/dsigma = (x - D(x; sigma)) / sigma."""
    # BEGIN SOLUTION
    # hint: dx/dsigma = (x - D(x; sigma)) / sigma
    return (x - denoised) / sigma
    # END SOLUTION


def heun_step(D, x, sigma: float, sigma_next: float, step: int = 0, **model_kwargs):
    """EDM Algorithm 1, lines 4-8: an Euler step from sigma to sigma_next, then (unless
    sigma_next = 0) Heun's 2nd-order correction with the slope at the new point."""
    # BEGIN SOLUTION
    # hint: Algorithm 1 lines 4-8: Euler step with d = to_d(x, sigma, D(x, sigma)); if sigma_next >
    # hint: 0, average d with the slope at the Euler point (use _checked_denoiser to call D)
    d = to_d(x, sigma, _checked_denoiser(D, x, sigma, step, **model_kwargs))
    x_next = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_next
    d_next = to_d(x_next, sigma_next, _checked_denoiser(D, x_next, sigma_next, step, **model_kwargs))
    return x + (sigma_next - sigma) * 0.5 * (d + d_next)
    # END SOLUTION


def euler_sample(D, x, sigmas, randn_like=None, callback=None, progress=False, **model_kwargs):
    """Euler's method on the probability-flow ODE (EDM Algorithm 1 without the correction).
    x: (B, ...) starting at sigmas[0] (x = sigma_0 n).  NFE = N.  Deterministic: ``randn_like``
    is not used."""
    s = _check_sigmas(sigmas)
    for i in progress_bar(range(len(s) - 1), progress, "euler sampling"):
        d = to_d(x, float(s[i]), _checked_denoiser(D, x, float(s[i]), i, **model_kwargs))
        x = x + float(s[i + 1] - s[i]) * d
        if callback is not None:
            callback({"x": x, "i": i, "sigma": float(s[i]), "sigma_next": float(s[i + 1])})
    return x


def heun_sample(D, x, sigmas, randn_like=None, callback=None, progress=False, **model_kwargs):
    """EDM Algorithm 1: Heun's 2nd-order method on the probability-flow ODE.
    NFE = 2N - 1 (the last step, to sigma = 0, is a plain Euler step).  Deterministic:
    ``randn_like`` is not used."""
    s = _check_sigmas(sigmas)
    for i in progress_bar(range(len(s) - 1), progress, "heun sampling"):
        x = heun_step(D, x, float(s[i]), float(s[i + 1]), i, **model_kwargs)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": float(s[i]), "sigma_next": float(s[i + 1])})
    return x


def churn_gamma(sigma: float, n_steps: int, S_churn: float, S_tmin: float = 0.0, S_tmax: float = float("inf")) -> float:
    """EDM Algorithm 2, line 4: gamma_i = min(S_churn / N, sqrt(2) - 1) if t_i in [S_tmin, S_tmax], else 0."""
    if S_churn < 0:
        raise ValueError(f"S_churn must be >= 0, got {S_churn!r}")
    # BEGIN SOLUTION
    # hint: Algorithm 2 line 4: min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0
    if S_tmin <= sigma <= S_tmax:
        return min(S_churn / n_steps, math.sqrt(2) - 1)
    return 0.0
    # END SOLUTION


def stochastic_sample(D, x, sigmas, randn_like, S_churn: float = 0.0, S_tmin: float = 0.0,
                      S_tmax: float = float("inf"), S_noise: float = 1.0, callback=None, progress=False,
                      **model_kwargs):
    """EDM Algorithm 2: before each Heun step, raise the noise level from t_i to
    t_hat = t_i + gamma_i t_i by adding fresh noise of variance t_hat^2 - t_i^2 (lines 5-6, the
    "churn"), then step from t_hat to t_{i+1} (lines 7-10).  S_churn = 0 gives Algorithm 1."""
    if S_churn < 0:
        raise ValueError(f"S_churn must be >= 0, got {S_churn!r}")
    if S_noise <= 0:
        raise ValueError(f"S_noise must be > 0, got {S_noise!r}")
    s = _check_sigmas(sigmas)
    n = len(s) - 1
    for i in progress_bar(range(n), progress, "stochastic sampling"):
        sigma = float(s[i])
        gamma = churn_gamma(sigma, n, S_churn, S_tmin, S_tmax)
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * S_noise * randn_like(x)
        x = heun_step(D, x, sigma_hat, float(s[i + 1]), i, **model_kwargs)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "sigma_next": float(s[i + 1])})
    return x
