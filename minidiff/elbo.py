"""The variational bound of DDPM (eq. 5) for continuous data, in nats and bits per dimension.

L = L_T + sum_{t>1} L_{t-1} + L_0 with
  L_T     = KL(q(x_T | x_0) || N(0, I))
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))       (Gaussians, closed form)
  L_0     = -log N(x_0; mu_theta(x_1, 1), sigma_1^2 I)                  (a Gaussian decoder, since
                                                                          toy data is continuous)
Each KL term is estimated with one draw of x_t per example, as in DDPM.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks
from .backend import namespace
from .diffusion import VARIANCES, ddpm_sigma2, eps_to_x0, q_posterior, q_sample


def _check_gaussians(**named):
    """Means and variances: real numbers or arrays of one backend whose shapes broadcast, with
    finite values and variances > 0 (names starting with 'var')."""
    for name, v in named.items():
        if _checks.is_array(v):
            values = _checks.to_numpy(v)
            if values.dtype.kind not in "iuf":
                raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
            if not np.all(np.isfinite(values)) or (name.startswith("var") and not np.all(values > 0)):
                raise ValueError(f"{name} must be finite{' and > 0' if name.startswith('var') else ''}")
        else:
            _checks.real(name, v, 0 if name.startswith("var") else -np.inf, lo_open=name.startswith("var"))
    arrays = {k: v for k, v in named.items() if _checks.is_array(v)}
    if not arrays:
        raise TypeError(f"one of {', '.join(named)} must be an array")
    _checks.same_backend(**arrays)
    try:
        np.broadcast_shapes(*(tuple(v.shape) for v in arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
        raise ValueError(f"shapes must broadcast: {shapes}") from None


def gaussian_kl(mean1, var1, mean2, var2):
    """KL( N(mean1, var1) || N(mean2, var2) ) elementwise, in nats (arrays broadcast)."""
    _check_gaussians(mean1=mean1, var1=var1, mean2=mean2, var2=var2)
    xp = namespace(mean1, mean2)
    like = mean1 if xp.is_array(mean1) else mean2
    var1, var2 = xp.asarray(var1, like=like), xp.asarray(var2, like=like)  # python-float variances on torch
    # BEGIN SOLUTION
    # hint: 0.5 (log(var2/var1) + (var1 + (mean1 - mean2)^2) / var2 - 1)
    return 0.5 * (xp.log(var2 / var1) + (var1 + xp.square(mean1 - mean2)) / var2 - 1.0)
    # END SOLUTION


def gaussian_log_density(x, mean, var):
    """log N(x; mean, var) elementwise, in nats."""
    _check_gaussians(x=x, mean=mean, var=var)
    xp = namespace(x, mean)
    var = xp.asarray(var, like=x if xp.is_array(x) else mean)
    return -0.5 * (math.log(2 * math.pi) + xp.log(var) + xp.square(x - mean) / var)


def _sum_over_data_dims(xp, a):
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)


def ddpm_bound_terms(eps_model, x0, betas, randn_like, variance: str = "beta"):
    """DDPM eq. (5), term by term.  x0: (B, ...).

    Returns (prior (B,), terms (B, T)): ``terms[:, 0]`` is the decoder term L_0 and
    ``terms[:, t]`` is L_t = KL(q(x_t | x_{t+1}, x_0) || p_theta) for t >= 1 (0-based steps).
    """
    _checks.function("eps_model", eps_model)
    _checks.function("randn_like", randn_like)
    _checks.finite_input("x0", _checks.batch("x0", x0))
    _checks.choice("variance", variance, VARIANCES)
    betas = _checks.betas(_checks.table("betas", betas))
    xp = namespace(x0)
    T = len(betas)
    alpha_bar = np.cumprod(1 - betas)
    sigma2 = ddpm_sigma2(betas, variance)
    ones = np.ones(x0.shape[0], dtype=np.int64)
    # L_T: q(x_T | x_0) = N(sqrt(alpha_bar_T) x_0, (1 - alpha_bar_T) I)
    prior = _sum_over_data_dims(xp, gaussian_kl(float(np.sqrt(alpha_bar[-1])) * x0, float(1 - alpha_bar[-1]),
                                                0.0 * x0, 1.0))
    terms = []
    for step in range(T):
        t = xp.int_array(step * ones, like=x0)
        x_t = q_sample(x0, t, alpha_bar, randn_like(x0))
        eps = _checks.model_output(eps_model, x_t, t, step)
        mean_model, _ = q_posterior(eps_to_x0(x_t, t, eps, alpha_bar), x_t, t, betas)
        if step == 0:  # L_0: the Gaussian decoder with variance beta_1
            term = -gaussian_log_density(x0, mean_model, float(betas[0]))
        else:
            mean_q, var_q = q_posterior(x0, x_t, t, betas)
            term = gaussian_kl(mean_q, var_q, mean_model, float(sigma2[step]))
        terms.append(_sum_over_data_dims(xp, term))
    return prior, xp.stack(terms, axis=1)


def ddpm_nll_bound(eps_model, x0, betas, randn_like, variance: str = "beta"):
    """Upper bound on -log p_theta(x_0) in nats, per example: (B,)."""
    prior, terms = ddpm_bound_terms(eps_model, x0, betas, randn_like, variance)
    return prior + namespace(x0).sum(terms, axis=1)


def bits_per_dim(nats, dim: int):
    """Convert nats per example to bits per dimension: nats / (dim ln 2)."""
    dim = _checks.count("dim", dim)
    if not _checks.is_array(nats):
        _checks.real("nats", nats)
    return nats / (dim * math.log(2.0))
