"""Consistency models (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", CM; and
Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models", iCT).

A consistency function f(x_t, t) maps every point of one probability-flow ODE trajectory to
the trajectory's origin, with the boundary condition f(x, eps) = x.  Noise levels t are EDM
sigmas (x_t = x_0 + t z).  Works on both backends.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks
from .backend import namespace, stop_gradient
from .edm import karras_sigmas
from .samplers import to_d


# ----------------------------------------------------------------------------------------------
# The parameterisation (CM eq. 5 and Appendix C): f(x, t) = c_skip(t) x + c_out(t) F(c_in x, c_noise).

def consistency_coefficients(t, sigma_data: float = 0.5, eps: float = 0.002):
    """CM Appendix C: c_skip(t) = sigma_data^2 / ((t - eps)^2 + sigma_data^2),
    c_out(t) = sigma_data (t - eps) / sqrt(sigma_data^2 + t^2), so that c_skip(eps) = 1 and
    c_out(eps) = 0 (the boundary condition); c_in = 1 / sqrt(t^2 + sigma_data^2) and
    c_noise = ln(t) / 4 as in EDM.  t: (B,) -> four (B,) arrays."""
    xp = namespace(t)
    # BEGIN SOLUTION
    # hint: c_skip = sd^2/((t-eps)^2 + sd^2), c_out = sd (t-eps)/sqrt(sd^2 + t^2): c_skip(eps) = 1,
    # hint: c_out(eps) = 0; c_in, c_noise as in EDM
    c_skip = sigma_data ** 2 / ((t - eps) ** 2 + sigma_data ** 2)
    c_out = sigma_data * (t - eps) / xp.sqrt(sigma_data ** 2 + t ** 2)
    c_in = 1 / xp.sqrt(t ** 2 + sigma_data ** 2)
    c_noise = 0.25 * xp.log(t)
    return c_skip, c_out, c_in, c_noise
    # END SOLUTION


def consistency_function(raw_net, sigma_data: float = 0.5, eps: float = 0.002):
    """f_theta(x, t) = c_skip(t) x + c_out(t) F_theta(c_in(t) x, c_noise(t))  (CM eq. 5)."""
    def f(x, t, **kwargs):
        xp = namespace(x)
        t = xp.asarray(t, like=x) * xp.ones((x.shape[0],), like=x)
        c_skip, c_out, c_in, c_noise = consistency_coefficients(t, sigma_data, eps)
        nd = x.ndim
        return (xp.append_dims(c_skip, nd) * x
                + xp.append_dims(c_out, nd) * raw_net(xp.append_dims(c_in, nd) * x, c_noise, **kwargs))
    return f


# ----------------------------------------------------------------------------------------------
# Discretisation and schedules.

def cm_boundaries(N: int, eps: float = 0.002, T: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """CM section 3 / Appendix C: t_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho,
    i = 1..N: the Karras steps (EDM eq. 5), increasing from eps to T.  (N,) float64.
    Computed as ``edm.karras_sigmas(N, eps, T, rho)`` reversed: the same formula with i counted from
    the other end, so the two agree to a few ulps (both round (1/rho)-th powers; tested)."""
    N = int(N)
    if N < 2:
        raise ValueError(f"a consistency schedule needs N >= 2 noise levels, got N={N}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    if not 0 < eps < T:
        raise ValueError(f"need 0 < eps < T, got eps={eps!r}, T={T!r}")
    return karras_sigmas(N, sigma_min=eps, sigma_max=T, rho=rho)[::-1].copy()


def ct_schedule(k: int, K: int, s0: int = 2, s1: int = 150, mu0: float = 0.9):
    """CM Appendix C, consistency training: N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1
    and the EMA decay of the target mu(k) = exp(s0 log(mu0) / N(k)).  Returns (N, mu)."""
    if K < 1 or not 0 <= k <= K:
        raise ValueError(f"need 0 <= k <= K and K >= 1, got k={k}, K={K}")
    # BEGIN SOLUTION
    # hint: N = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1 and mu = exp(s0 ln(mu0) / N)
    N = math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1) + 1
    mu = math.exp(s0 * math.log(mu0) / N)
    return N, mu
    # END SOLUTION


def ict_schedule(k: int, K: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT section 3.4: N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2(s1/s0) + 1))."""
    if K < 1 or not 0 <= k <= K:
        raise ValueError(f"need 0 <= k <= K and K >= 1, got k={k}, K={K}")
    K_prime = max(1, math.floor(K / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (k // K_prime), s1) + 1


def ict_level_probabilities(boundaries, P_mean: float = -1.1, P_std: float = 2.0) -> np.ndarray:
    """iCT section 3.5: p(i) proportional to erf((ln t_{i+1} - P_mean) / (sqrt 2 P_std))
    - erf((ln t_i - P_mean) / (sqrt 2 P_std)), i = 1..N-1: a discretised log-normal."""
    from math import erf

    logs = np.log(np.asarray(boundaries, dtype=np.float64))
    cdf = np.array([erf((v - P_mean) / (math.sqrt(2) * P_std)) for v in logs])
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


# ----------------------------------------------------------------------------------------------
# Distances d(x, y) (CM section 3; iCT section 3.3), per example: (B, ...) -> (B,).

def distance(x, y, metric: str = "l2", c=None):
    """'l2': ||x - y||^2; 'l1': ||x - y||_1; 'pseudo_huber': sqrt(||x - y||^2 + c^2) - c with
    c = 0.00054 sqrt(d) by default (iCT)."""
    _checks.choice("metric", metric, ("l2", "l1", "pseudo_huber"))
    xp = namespace(x, y)
    # BEGIN SOLUTION
    # hint: per example over the flattened data dims: 'l2' sum of squares, 'l1' sum of |.|,
    # hint: 'pseudo_huber' sqrt(|x-y|^2 + c^2) - c with c = 0.00054 sqrt(d) by default
    diff = xp.reshape(x - y, (x.shape[0], -1))
    if metric == "l2":
        return xp.sum(diff * diff, axis=1)
    if metric == "l1":
        return xp.sum(xp.abs(diff), axis=1)
    if c is None:
        c = 0.00054 * math.sqrt(diff.shape[1])
    l2 = xp.sum(diff * diff, axis=1)
    return l2 / (xp.sqrt(l2 + c * c) + c)      # = sqrt(l2 + c^2) - c, without the cancellation
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# The two losses.  ``n`` holds one index per example into the increasing ``boundaries`` t_1..t_N
# (0-based, n in [0, N-2]); the pair is (t_n, t_{n+1}).

def _gather(xp, table, n, like):
    return xp.gather(xp.asarray(table, like=like), n)


def cd_loss(f, f_target, teacher_D, x0, n, z, boundaries, metric: str = "l2", weight=None, **kwargs):
    """Consistency distillation (CM Algorithm 2, eq. 7): x_{t_{n+1}} = x0 + t_{n+1} z; one Heun
    step of the teacher's probability-flow ODE (EDM Algorithm 1) gives x_hat_{t_n}; the loss is
    lambda(t_n) d(f(x_{t_{n+1}}, t_{n+1}), f_target(x_hat_{t_n}, t_n)), f_target the EMA network
    (its output is treated as a constant).  x0, z: (B, ...); n: (B,) integers."""
    xp = namespace(x0, z)
    # BEGIN SOLUTION
    # hint: x_next = x0 + t_{n+1} z; one Heun step of the teacher from t_{n+1} to t_n gives x_hat;
    # hint: mean of w * distance(f(x_next, t_{n+1}), stop_gradient(f_target(x_hat, t_n)))
    t_next = _gather(xp, boundaries, n + 1, x0)
    t_cur = _gather(xp, boundaries, n, x0)
    nd = x0.ndim
    x_next = x0 + xp.append_dims(t_next, nd) * z
    # the teacher's Heun step from t_{n+1} down to t_n (EDM Algorithm 1, lines 5-8, with the
    # sampler's slope to_d; samplers.heun_step moves a whole batch at one sigma, here every
    # example has its own, hence the step written out with per-example sigmas)
    h = xp.append_dims(t_cur - t_next, nd)
    d = to_d(x_next, xp.append_dims(t_next, nd), teacher_D(x_next, t_next, **kwargs))
    x_euler = x_next + h * d
    d2 = to_d(x_euler, xp.append_dims(t_cur, nd), teacher_D(x_euler, t_cur, **kwargs))
    x_hat = x_next + h * 0.5 * (d + d2)
    target = f_target(x_hat, t_cur, **kwargs)
    w = 1.0 if weight is None else xp.asarray(weight, like=x0)
    return xp.mean(w * distance(f(x_next, t_next, **kwargs), _stop_gradient(target), metric))
    # END SOLUTION


def ct_loss(f, f_target, x0, n, z, boundaries, metric: str = "l2", weight=None, **kwargs):
    """Consistency training (CM Algorithm 3, eq. 10): the same noise z at two adjacent levels,
    lambda(t_n) d(f(x0 + t_{n+1} z, t_{n+1}), f_target(x0 + t_n z, t_n)); no teacher.
    For iCT pass f_target = f (no EMA), metric='pseudo_huber' and weight = 1 / (t_{n+1} - t_n)."""
    xp = namespace(x0, z)
    # BEGIN SOLUTION
    # hint: the same z at both levels: distance(f(x0 + t_{n+1} z, t_{n+1}),
    # hint: stop_gradient(f_target(x0 + t_n z, t_n))), weighted and averaged
    t_next = _gather(xp, boundaries, n + 1, x0)
    t_cur = _gather(xp, boundaries, n, x0)
    nd = x0.ndim
    student = f(x0 + xp.append_dims(t_next, nd) * z, t_next, **kwargs)
    target = f_target(x0 + xp.append_dims(t_cur, nd) * z, t_cur, **kwargs)
    w = 1.0 if weight is None else xp.asarray(weight, like=x0)
    return xp.mean(w * distance(student, _stop_gradient(target), metric))
    # END SOLUTION


def _stop_gradient(a):
    """The target network's output is a constant of the loss (autograd: drop the trace; torch: detach)."""
    return stop_gradient(a)


def ict_weight(boundaries, n):
    """iCT section 3.1: lambda(t_n) = 1 / (t_{n+1} - t_n)."""
    b = np.asarray(boundaries, dtype=np.float64)
    n = np.asarray(n)
    return 1.0 / (b[n + 1] - b[n])


# ----------------------------------------------------------------------------------------------
# Sampling (CM Algorithm 1).

def consistency_sample(f, x_T, taus, randn_like, T: float = 80.0, eps: float = 0.002, callback=None,
                       progress=False, **kwargs):
    """CM Algorithm 1, multistep consistency sampling: x = f(x_T, T); then for each tau in the
    decreasing ``taus``: x_tau = x + sqrt(tau^2 - eps^2) z and x = f(x_tau, tau).
    x_T = T z (B, ...).  One step when ``taus`` is empty; NFE = 1 + len(taus).  ``progress`` is
    accepted for the samplers' common head and ignored: a few steps need no progress bar."""
    taus = [float(t) for t in np.atleast_1d(np.asarray(taus, dtype=np.float64))] if len(np.atleast_1d(taus)) else []
    if any(not eps < t < T for t in taus):
        raise ValueError(f"every tau must lie in (eps, T) = ({eps}, {T}), got {taus}")
    if any(b >= a for a, b in zip(taus, taus[1:])):
        raise ValueError("taus must be strictly decreasing")
    # BEGIN SOLUTION
    # hint: x = f(x_T, T); for each tau: x = f(x + sqrt(tau^2 - eps^2) z, tau)
    x = f(x_T, T, **kwargs)
    if callback is not None:
        callback({"x": x, "i": 0, "t": T})
    for i, tau in enumerate(taus):
        x_tau = x + math.sqrt(tau ** 2 - eps ** 2) * randn_like(x)
        x = f(x_tau, tau, **kwargs)
        if callback is not None:
            callback({"x": x, "i": i + 1, "t": tau})
    return x
    # END SOLUTION
