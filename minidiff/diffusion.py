"""The discrete forward process q(x_t | x_0), its posterior, and the four prediction targets.

All functions take arrays of either backend (NumPy/autograd or torch) and integer timesteps
``t`` of shape (B,) in [0, T).  Shapes: x0, x_t, eps are (B, ...) and coefficients broadcast.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from .backend import namespace


def _coef(table, t, like):
    """table[t] as an array of ``like``'s backend, shaped (B, 1, ..., 1), in ``like``'s dtype but
    at least float32 (a float16 table rounds 1 - alpha_bar_0 = 1e-4 to 0)."""
    xp = namespace(like)
    c = xp.gather(xp.asarray(table, like=like, dtype=_checks.table_dtype(like)), t)
    return xp.append_dims(c, like.ndim)


def _check(t, alpha_bar, **arrays):
    """The boundary of a function that reads ``alpha_bar[t]`` for the batches ``arrays`` (B, ...):
    one backend, one shape; alpha_bar a (T,) table in (0, 1); t integer timesteps into it, a
    scalar or one per example.  Returns the namespace."""
    xp = _checks.batches(**arrays)
    _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
    name, x = next(iter(arrays.items()))
    _checks.timestep_batch("t", t, len(alpha_bar), x, name)
    return xp


def q_sample(x0, t, alpha_bar, noise):
    """DDPM eq. (4): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.  (B, ...) -> (B, ...)."""
    _check(t, alpha_bar, x0=x0, noise=noise)
    xp = namespace(x0, noise)
    # BEGIN SOLUTION
    # hint: DDPM eq. 4 with a = alpha_bar[t] shaped (B, 1): sqrt(a) x0 + sqrt(1 - a) noise (use
    # hint: _coef(alpha_bar, t, x0))
    a = _coef(alpha_bar, t, x0)
    return xp.sqrt(a) * x0 + xp.sqrt(1 - a) * noise
    # END SOLUTION


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
    # BEGIN SOLUTION
    # hint: DDPM eq. 7: build the two mean coefficients and the variance as (T,) tables
    # hint: (alpha_bar_prev starts at 1), then index them with _coef
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    coef_x0 = np.sqrt(alpha_bar_prev) * betas / (1 - alpha_bar)
    coef_xt = np.sqrt(1 - betas) * (1 - alpha_bar_prev) / (1 - alpha_bar)
    var = (1 - alpha_bar_prev) / (1 - alpha_bar) * betas
    mean = _coef(coef_x0, t, x0) * x0 + _coef(coef_xt, t, x_t) * x_t
    return mean, _coef(var, t, x0)
    # END SOLUTION


VARIANCES = ("beta", "posterior")


def ddpm_sigma2(betas, variance: str = "beta") -> np.ndarray:
    """DDPM section 3.2: the reverse-step variance sigma_t^2, either beta_t ('beta') or the
    posterior variance beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t ('posterior',
    the variance of q_posterior above)."""
    _checks.choice("variance", variance, VARIANCES)
    betas = _checks.betas(_checks.table("betas", betas))
    if variance == "beta":
        return betas
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    return (1 - alpha_bar_prev) / (1 - alpha_bar) * betas


def eps_to_x0(x_t, t, eps, alpha_bar):
    """Invert eq. (4): x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    _check(t, alpha_bar, x_t=x_t, eps=eps)
    xp = namespace(x_t, eps)
    # BEGIN SOLUTION
    # hint: solve eq. 4 for x0: (x_t - sqrt(1 - a) eps) / sqrt(a), a = _coef(alpha_bar, t, x_t)
    a = _coef(alpha_bar, t, x_t)
    return (x_t - xp.sqrt(1 - a) * eps) / xp.sqrt(a)
    # END SOLUTION


def x0_to_eps(x_t, t, x0, alpha_bar):
    """Invert eq. (4) for the noise: eps_hat = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t)."""
    _check(t, alpha_bar, x_t=x_t, x0=x0)
    return _x0_to_eps(x_t, t, x0, alpha_bar)


def _x0_to_eps(x_t, t, x0, alpha_bar):
    xp = namespace(x_t, x0)
    a = _coef(alpha_bar, t, x_t)
    return (x_t - xp.sqrt(a) * x0) / xp.sqrt(1 - a)


def eps_to_score(eps, t, alpha_bar):
    """Tweedie's formula (Luo 2022, "Three Equivalent Interpretations"): grad log q(x_t) = -eps / sqrt(1 - alpha_bar_t)."""
    _check(t, alpha_bar, eps=eps)
    xp = namespace(eps)
    # BEGIN SOLUTION
    # hint: score = -eps / sqrt(1 - alpha_bar_t)
    return -eps / xp.sqrt(1 - _coef(alpha_bar, t, eps))
    # END SOLUTION


def score_to_eps(score, t, alpha_bar):
    """The inverse of ``eps_to_score``: eps = -sqrt(1 - alpha_bar_t) score."""
    _check(t, alpha_bar, score=score)
    return _score_to_eps(score, t, alpha_bar)


def _score_to_eps(score, t, alpha_bar):
    xp = namespace(score)
    return -xp.sqrt(1 - _coef(alpha_bar, t, score)) * score


def v_target(x0, eps, t, alpha_bar):
    """Salimans & Ho 2022, eq. (9) in their notation: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0."""
    _check(t, alpha_bar, x0=x0, eps=eps)
    return _v_target(x0, eps, t, alpha_bar)


def _v_target(x0, eps, t, alpha_bar):
    xp = namespace(x0, eps)
    a = _coef(alpha_bar, t, x0)
    return xp.sqrt(a) * eps - xp.sqrt(1 - a) * x0


def v_to_eps(x_t, t, v, alpha_bar):
    """eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t (follows from eq. (4) and the v definition)."""
    _check(t, alpha_bar, x_t=x_t, v=v)
    return _v_to_eps(x_t, t, v, alpha_bar)


def _v_to_eps(x_t, t, v, alpha_bar):
    xp = namespace(x_t, v)
    a = _coef(alpha_bar, t, x_t)
    return xp.sqrt(a) * v + xp.sqrt(1 - a) * x_t


TARGETS = ("eps", "x0", "score", "v")


def to_eps(output, target: str, x_t, t, alpha_bar):
    """Read a network's output for ``target`` ('eps', 'x0', 'score' or 'v') as an eps prediction."""
    _checks.choice("target", target, TARGETS)
    _check(t, alpha_bar, x_t=x_t, output=output)
    return _to_eps(output, target, x_t, t, alpha_bar)


def _to_eps(output, target, x_t, t, alpha_bar):
    if target == "eps":
        return output
    if target == "x0":
        return _x0_to_eps(x_t, t, output, alpha_bar)
    if target == "score":
        return _score_to_eps(output, t, alpha_bar)
    return _v_to_eps(x_t, t, output, alpha_bar)


def target_of(target: str, x0, eps, t, alpha_bar):
    """The regression target for ``target`` given the clean data and the noise that made x_t."""
    _checks.choice("target", target, TARGETS)
    _check(t, alpha_bar, x0=x0, eps=eps)
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    if target == "score":
        return eps_to_score(eps, t, alpha_bar)
    return _v_target(x0, eps, t, alpha_bar)


def as_eps_model(model, target: str, alpha_bar):
    """Wrap a model trained for ``target`` as an eps-model ``eps(x_t, t)`` for the samplers."""
    _checks.function("model", model)
    _checks.choice("target", target, TARGETS)
    _checks.alpha_bar(_checks.table("alpha_bar", alpha_bar))
    if target == "eps":
        return model

    def eps_model(x_t, t, **kw):  # the samplers check t and the eps; the raw output's shape is checked here
        out = model(x_t, t, **kw)
        if not _checks.is_array(out) or tuple(out.shape) != tuple(x_t.shape):
            raise ValueError(f"model returned {tuple(getattr(out, 'shape', ())) or type(out).__name__}, "
                             f"expected an array of x_t's shape {tuple(x_t.shape)}")
        return _to_eps(out, target, x_t, t, alpha_bar)

    return eps_model
