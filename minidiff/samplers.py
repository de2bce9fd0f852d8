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


def _check_ddpm_step(x_t, t, eps, betas, noise):
    """ddpm_step's boundary: x_t, eps (and noise, needed for t > 0) (B, ...) of one backend and
    shape, betas a (T,) table, t one step in [0, T).  Returns betas as a float64 table."""
    betas = _checks.betas(_checks.table("betas", betas))
    t = _checks.timestep("t", t, len(betas))
    if t > 0 and noise is None:
        raise ValueError(f"noise is needed for a step at t = {t} > 0 (only the last step, t = 0, adds none)")
    _checks.batches(("noise",), x_t=x_t, eps=eps, noise=noise)
    return betas


def ddpm_step(x_t, t: int, eps, betas, noise, variance: str = "beta"):
    """DDPM Algorithm 2, line 4: one ancestral step x_t -> x_{t-1},
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
    with z = ``noise`` for t > 0 and no noise at the last step (t = 0).  (B, ...) -> (B, ...)."""
    betas = _check_ddpm_step(x_t, t, eps, betas, noise)
    xp = namespace(x_t, eps)
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
    _check_sampler(eps_model, "eps_model", x_T, "x_T", randn_like, callback)
    betas = _checks.betas(_checks.table("betas", betas))
    _checks.choice("variance", variance, VARIANCES)
    x = x_T
    for i in progress_bar(range(len(betas) - 1, -1, -1), progress, "ddpm sampling"):
        eps = _checked_model_output(eps_model, x, namespace(x).int_array(np.full(x.shape[0], i), like=x), i, **model_kwargs)
        noise = randn_like(x) if i > 0 else None
        x = ddpm_step(x, i, eps, betas, noise, variance)
        if callback is not None:
            callback({"x": x, "i": i, "eps": eps})
    return x


def _check_sampler(model, model_name: str, x, x_name: str, randn_like=None, callback=None):
    """A sampler's head: a callable model, a finite batch x (B, ...) (so that a NaN start is blamed
    on x, not on the model), callable randn_like and callback where given."""
    _checks.function(model_name, model)
    _checks.finite_input(x_name, _checks.batch(x_name, x))
    if randn_like is not None:
        _checks.function("randn_like", randn_like)
    if callback is not None:
        _checks.function("callback", callback)


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
    T = _checks.steps("T", T)
    n_steps = _checks.steps("n_steps", n_steps)
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


def _check_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """ddim_sigma's boundary: 0 < a_t <= a_prev <= 1 (real numbers or arrays) and a finite eta >= 0."""
    _checks.real("eta", eta, 0)
    for name, a, hi_open in (("alpha_bar_t", alpha_bar_t, True), ("alpha_bar_prev", alpha_bar_prev, False)):
        if _checks.is_array(a):
            v = _checks.to_numpy(a)
            if v.dtype.kind not in "iuf" or not np.all((v > 0) & ((v < 1) if hi_open else (v <= 1))):
                raise ValueError(f"{name} must lie in (0, {'1)' if hi_open else '1]'}")
        else:
            _checks.real(name, a, 0, 1, lo_open=True, hi_open=hi_open)
    if np.any(_checks.to_numpy(alpha_bar_prev) < _checks.to_numpy(alpha_bar_t)):
        raise ValueError("alpha_bar_prev must be >= alpha_bar_t (the previous step is less noisy)")


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta: float):
    """DDIM eq. (16): sigma_t(eta) = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev).
    eta = 0: the deterministic DDIM; eta = 1: DDPM's posterior standard deviation."""
    _check_ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    # BEGIN SOLUTION
    # hint: eq. 16: eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)
    return eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * np.sqrt(1 - alpha_bar_t / alpha_bar_prev)
    # END SOLUTION


def _check_ddim_step(x_t, t, t_prev, eps, alpha_bar, eta, noise):
    """ddim_step's boundary: x_t, eps (and noise) (B, ...) of one backend and shape; alpha_bar a
    (T,) table; t in [0, T) and t_prev < t (the chain runs towards the data; a negative t_prev
    is its end); eta finite, >= 0, with noise when eta > 0."""
    _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
    t = _checks.timestep("t", t, len(alpha_bar))
    if _checks.count("t_prev", t_prev, -_checks.MAX_STEPS, len(alpha_bar) - 1) >= t:
        raise ValueError(f"t_prev must be < t = {t} (a step goes towards the data; a negative t_prev ends the "
                         f"chain), got {t_prev}")
    if _checks.real("eta", eta, 0) > 0 and noise is None:
        raise ValueError("ddim_step with eta > 0 needs noise")
    _checks.batches(("noise",), x_t=x_t, eps=eps, noise=noise)


def ddim_step(x_t, t: int, t_prev: int, eps, alpha_bar, eta: float = 0.0, noise=None):
    """DDIM eq. (12): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z,
    with x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) and sigma = ddim_sigma(eta).
    ``t_prev = -1`` (any negative t_prev) means a_prev = 1.  (B, ...) -> (B, ...)."""
    _check_ddim_step(x_t, t, t_prev, eps, alpha_bar, eta, noise)
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
    _check_sampler(eps_model, "eps_model", x_T, "x_T", randn_like, callback)
    if _checks.real("eta", eta, 0) > 0 and randn_like is None:
        raise ValueError("ddim_sample with eta > 0 needs randn_like")
    alpha_bar = _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
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
    _check_sampler(eps_model, "eps_model", x0, "x0", None, callback)
    alpha_bar = _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
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


def _check_slerp(z0, z1, alpha):
    """slerp's boundary: z0, z1 finite, nonzero arrays of one backend and shape; alpha finite."""
    _checks.real("alpha", alpha)
    _checks.same_backend(z0=_checks.array("z0", z0), z1=_checks.array("z1", z1))
    _checks.shapes_equal(z0=z0, z1=z1)
    for name, z in (("z0", z0), ("z1", z1)):
        _checks.finite_input(name, z)
        if not np.any(_checks.to_numpy(z)):
            raise ValueError(f"{name} must not be all zeros (the angle to it is undefined)")


def slerp(z0, z1, alpha: float):
    """Spherical interpolation between two noise tensors (Shoemake 1985), as in DDIM section 5.3:
    sin((1-a) theta)/sin(theta) z0 + sin(a theta)/sin(theta) z1, theta the angle between them."""
    _check_slerp(z0, z1, alpha)
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
    _checks.batches(x=x, denoised=denoised)
    if _checks.is_array(sigma):  # per example, e.g. (B, 1, ..., 1); its values are not read back
        _checks.same_backend(x=x, sigma=sigma)
        try:
            fits = np.broadcast_shapes(tuple(sigma.shape), tuple(x.shape)) == tuple(x.shape)
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"sigma's shape {tuple(sigma.shape)} does not broadcast to x's {tuple(x.shape)}")
    else:
        _checks.real("sigma", sigma, 0, lo_open=True)
    # BEGIN SOLUTION
    # hint: dx/dsigma = (x - D(x; sigma)) / sigma
    return (x - denoised) / sigma
    # END SOLUTION


def heun_step(D, x, sigma: float, sigma_next: float, step: int = 0, **model_kwargs):
    """EDM Algorithm 1, lines 4-8: an Euler step from sigma to sigma_next, then (unless
    sigma_next = 0) Heun's 2nd-order correction with the slope at the new point."""
    _checks.function("D", D)
    _checks.batch("x", x)
    _checks.real("sigma", sigma, 0, lo_open=True)
    _checks.real("sigma_next", sigma_next, 0)
    _checks.count("step", step, 0)
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
    _check_sampler(D, "D", x, "x", None, callback)
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
    _check_sampler(D, "D", x, "x", None, callback)
    s = _check_sigmas(sigmas)
    for i in progress_bar(range(len(s) - 1), progress, "heun sampling"):
        x = heun_step(D, x, float(s[i]), float(s[i + 1]), i, **model_kwargs)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": float(s[i]), "sigma_next": float(s[i + 1])})
    return x


def _check_churn(sigma, n_steps, S_churn, S_tmin, S_tmax, S_noise=1.0):
    """The churn's parameters: sigma, S_churn, S_tmin >= 0 finite, S_tmax >= S_tmin (inf allowed),
    S_noise > 0, n_steps a number of steps."""
    _checks.real("sigma", sigma, 0)
    _checks.steps("n_steps", n_steps)
    if _checks.real("S_churn", S_churn) < 0:
        raise ValueError(f"S_churn must be >= 0, got {S_churn!r}")
    if _checks.real("S_noise", S_noise) <= 0:
        raise ValueError(f"S_noise must be > 0, got {S_noise!r}")
    S_tmin = _checks.real("S_tmin", S_tmin, 0)
    if not (isinstance(S_tmax, float) and S_tmax == math.inf):
        _checks.real("S_tmax", S_tmax, S_tmin)


def churn_gamma(sigma: float, n_steps: int, S_churn: float, S_tmin: float = 0.0, S_tmax: float = float("inf")) -> float:
    """EDM Algorithm 2, line 4: gamma_i = min(S_churn / N, sqrt(2) - 1) if t_i in [S_tmin, S_tmax], else 0."""
    _check_churn(sigma, n_steps, S_churn, S_tmin, S_tmax)
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
    _check_sampler(D, "D", x, "x", randn_like, callback)
    s = _check_sigmas(sigmas)
    _check_churn(float(s[0]), len(s) - 1, S_churn, S_tmin, S_tmax, S_noise)
    if S_churn > 0 and randn_like is None:
        raise ValueError("stochastic_sample with S_churn > 0 needs randn_like")
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
