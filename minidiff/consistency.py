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
from .backend import namespace, stop_gradient, to_numpy
from .edm import karras_sigmas
from .samplers import to_d


# ----------------------------------------------------------------------------------------------
# The parameterisation (CM eq. 5 and Appendix C): f(x, t) = c_skip(t) x + c_out(t) F(c_in x, c_noise).

def consistency_coefficients(t, sigma_data: float = 0.5, eps: float = 0.002):
    """CM Appendix C: c_skip(t) = sigma_data^2 / ((t - eps)^2 + sigma_data^2),
    c_out(t) = sigma_data (t - eps) / sqrt(sigma_data^2 + t^2), so that c_skip(eps) = 1 and
    c_out(eps) = 0 (the boundary condition); c_in = 1 / sqrt(t^2 + sigma_data^2) and
    c_noise = ln(t) / 4 as in EDM.  t: (B,) -> four (B,) arrays, t > 0."""
    t = _checks.levels("t", t)
    sigma_data, eps = _coefficient_parameters(sigma_data, eps)
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


def _coefficient_parameters(sigma_data, eps):
    return (_checks.real("sigma_data", sigma_data, 0.0, lo_open=True),
            _checks.real("eps", eps, 0.0, lo_open=True))


def consistency_function(raw_net, sigma_data: float = 0.5, eps: float = 0.002):
    """f_theta(x, t) = c_skip(t) x + c_out(t) F_theta(c_in(t) x, c_noise(t))  (CM eq. 5)."""
    _checks.callable_arg("raw_net", raw_net)
    sigma_data, eps = _coefficient_parameters(sigma_data, eps)

    def f(x, t, **kwargs):
        _checks.array("x", x, min_ndim=1)
        xp = _checks.same_backend(x=x, t=t)
        _checks.per_example("t", t, x)
        t = xp.asarray(t, like=x) * xp.ones((x.shape[0],), like=x)
        c_skip, c_out, c_in, c_noise = consistency_coefficients(t, sigma_data, eps)
        nd = x.ndim
        F_x = raw_net(xp.append_dims(c_in, nd) * x, c_noise, **kwargs)
        if not _checks.is_array(F_x) or tuple(F_x.shape) != tuple(x.shape):
            got = f"shape {tuple(F_x.shape)}" if _checks.is_array(F_x) else f"a {type(F_x).__name__}"
            raise ValueError(f"raw_net returned {got}, expected x's shape {tuple(x.shape)}")
        return xp.append_dims(c_skip, nd) * x + xp.append_dims(c_out, nd) * F_x
    return f


# ----------------------------------------------------------------------------------------------
# Discretisation and schedules.

def cm_boundaries(N: int, eps: float = 0.002, T: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """CM section 3 / Appendix C: t_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho,
    i = 1..N: the Karras steps (EDM eq. 5), increasing from eps to T.  (N,) float64.
    Computed as ``edm.karras_sigmas(N, eps, T, rho)`` reversed: the same formula with i counted from
    the other end, so the two agree to a few ulps (both round (1/rho)-th powers; tested)."""
    if isinstance(N, (bool, np.bool_)) or not isinstance(N, (int, np.integer)):
        raise TypeError(f"N (the number of noise levels) must be an integer >= 2, got {type(N).__name__} {N!r}")
    if not 2 <= N <= 10 ** 7:
        raise ValueError(f"a consistency schedule needs N >= 2 noise levels (at most 10^7), got N={N}")
    rho = _checks.real("rho", rho)
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    eps, T = _checks.real("eps", eps), _checks.real("T", T)
    if not 0 < eps < T:
        raise ValueError(f"need 0 < eps < T, got eps={eps!r}, T={T!r}")
    return karras_sigmas(N, sigma_min=eps, sigma_max=T, rho=rho)[::-1].copy()


def _iteration(k, K):
    """The training iteration k of K: integers with 0 <= k <= K, K >= 1."""
    for name, v in (("k", k), ("K", K)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer (need 0 <= k <= K), got {type(v).__name__} {v!r}")
    if K < 1 or not 0 <= k <= K or K > 2 ** 62:
        raise ValueError(f"need 0 <= k <= K and K >= 1, got k={k}, K={K}")
    return int(k), int(K)


def _stage_sizes(s0, s1):
    s0, s1 = _checks.integer("s0", s0, 1, 10 ** 6), _checks.integer("s1", s1, 1, 10 ** 6)
    if s1 < s0:
        raise ValueError(f"need s0 <= s1 (the initial and final discretisation steps), got s0={s0}, s1={s1}")
    return s0, s1


def ct_schedule(k: int, K: int, s0: int = 2, s1: int = 150, mu0: float = 0.9):
    """CM Appendix C, consistency training: N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1
    and the EMA decay of the target mu(k) = exp(s0 log(mu0) / N(k)).  Returns (N, mu).
    1 <= s0 <= s1 (integers), mu0 in (0, 1]."""
    k, K = _iteration(k, K)
    s0, s1 = _stage_sizes(s0, s1)
    mu0 = _checks.real("mu0", mu0, 0.0, 1.0, lo_open=True)
    # BEGIN SOLUTION
    # hint: N = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1 and mu = exp(s0 ln(mu0) / N)
    N = math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1) + 1
    mu = math.exp(s0 * math.log(mu0) / N)
    return N, mu
    # END SOLUTION


def ict_schedule(k: int, K: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT section 3.4: N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2(s1/s0) + 1)).
    1 <= s0 <= s1 (integers)."""
    k, K = _iteration(k, K)
    s0, s1 = _stage_sizes(s0, s1)
    K_prime = max(1, math.floor(K / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (k // K_prime), s1) + 1


def ict_level_probabilities(boundaries, P_mean: float = -1.1, P_std: float = 2.0) -> np.ndarray:
    """iCT section 3.5: p(i) proportional to erf((ln t_{i+1} - P_mean) / (sqrt 2 P_std))
    - erf((ln t_i - P_mean) / (sqrt 2 P_std)), i = 1..N-1: a discretised log-normal.
    boundaries: (N,) increasing, > 0 -> (N - 1,)."""
    from math import erf

    boundaries = _boundaries(boundaries)
    P_mean, P_std = _checks.real("P_mean", P_mean), _checks.real("P_std", P_std, 0.0, lo_open=True)
    logs = np.log(np.asarray(boundaries, dtype=np.float64))
    cdf = np.array([erf((v - P_mean) / (math.sqrt(2) * P_std)) for v in logs])
    p = cdf[1:] - cdf[:-1]
    if not p.sum() > 0:
        raise ValueError(f"the log-normal N(P_mean={P_mean:g}, P_std={P_std:g}^2) puts no mass on the boundaries "
                         f"[{boundaries[0]:.4g}, {boundaries[-1]:.4g}]")
    return p / p.sum()


def _boundaries(boundaries):
    """The increasing noise levels t_1 < ... < t_N, N >= 2, all finite and > 0 (either backend).
    Tensors on an accelerator are checked for shape only (no device sync per step)."""
    if isinstance(boundaries, (list, tuple)):
        boundaries = np.asarray(boundaries, dtype=np.float64)
    _checks.array("boundaries", boundaries, ndim=1)
    if boundaries.shape[0] < 2:
        raise ValueError(f"boundaries must hold N >= 2 levels, got shape {tuple(boundaries.shape)}")
    xp = namespace(boundaries)
    if _checks._on_host(xp, boundaries):
        b = np.asarray(xp.to_numpy(boundaries), dtype=np.float64)
        if not np.all(np.isfinite(b)) or b[0] <= 0 or np.any(np.diff(b) <= 0):
            raise ValueError("boundaries must be finite, > 0 and strictly increasing (t_1 < ... < t_N)")
    return boundaries


# ----------------------------------------------------------------------------------------------
# Distances d(x, y) (CM section 3; iCT section 3.3), per example: (B, ...) -> (B,).

def distance(x, y, metric: str = "l2", c=None):
    """'l2': ||x - y||^2; 'l1': ||x - y||_1; 'pseudo_huber': sqrt(||x - y||^2 + c^2) - c with
    c = 0.00054 sqrt(d) by default (iCT); c >= 0."""
    _checks.choice("metric", metric, ("l2", "l1", "pseudo_huber"))
    _checks.array("x", x, min_ndim=1)
    _checks.array("y", y, min_ndim=1)
    xp = _checks.same_backend(x=x, y=y)
    _checks.shapes_equal(x=x, y=y)
    x, y = _checks.at_least_float32(xp, x), _checks.at_least_float32(xp, y)   # float16 sums overflow
    if c is not None:
        c = _checks.real("c", c, 0.0)
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


def _loss_inputs(x0, n, z, boundaries, weight, metric, **named_models):
    """The common head of ``cd_loss`` and ``ct_loss``: x0 and z arrays of one shape and backend,
    n (B,) integers in [0, N - 2], boundaries increasing, weight None or >= 0 per example, the
    models callable (wrapped so that a bad output names the model)."""
    _checks.choice("metric", metric, ("l2", "l1", "pseudo_huber"))
    _checks.array("x0", x0, min_ndim=1)
    _checks.array("z", z)
    _checks.array("n", n, ndim=1)
    boundaries = _boundaries(boundaries)
    xp = _checks.same_backend(x0=x0, z=z, n=n, weight=weight)     # boundaries: a table, NumPy or x0's
    _checks.shapes_equal(x0=x0, z=z)
    _checks.finite_input("x0", x0)
    _checks.finite_input("z", z)
    if n.shape[0] != x0.shape[0]:
        raise ValueError(f"n must have shape (B,) = ({x0.shape[0]},) like x0 {tuple(x0.shape)}, got {tuple(n.shape)}")
    n_np = np.asarray(xp.to_numpy(n))
    if not np.issubdtype(n_np.dtype, np.integer):
        raise TypeError(f"n must hold integer level indices, got dtype {n_np.dtype}")
    N = boundaries.shape[0]
    if n_np.size and (n_np.min() < 0 or n_np.max() > N - 2):
        raise ValueError(f"n must lie in [0, N - 2] = [0, {N - 2}] (pairs of the N = {N} boundaries), "
                         f"got [{n_np.min()}, {n_np.max()}]")
    if weight is not None:
        _checks.per_example("weight", _checks.levels("weight", weight, 0.0, lo_open=False), x0, "x0")
    return boundaries, [_checks.checked_model(k, m) for k, m in named_models.items()]


def cd_loss(f, f_target, teacher_D, x0, n, z, boundaries, metric: str = "l2", weight=None, **kwargs):
    """Consistency distillation (CM Algorithm 2, eq. 7): x_{t_{n+1}} = x0 + t_{n+1} z; one Heun
    step of the teacher's probability-flow ODE (EDM Algorithm 1) gives x_hat_{t_n}; the loss is
    lambda(t_n) d(f(x_{t_{n+1}}, t_{n+1}), f_target(x_hat_{t_n}, t_n)), f_target the EMA network
    (its output is treated as a constant).  x0, z: (B, ...); n: (B,) integers."""
    boundaries, (f, f_target, teacher_D) = _loss_inputs(x0, n, z, boundaries, weight, metric, f=f,
                                                        f_target=f_target, teacher_D=teacher_D)
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
    boundaries, (f, f_target) = _loss_inputs(x0, n, z, boundaries, weight, metric, f=f, f_target=f_target)
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
    """iCT section 3.1: lambda(t_n) = 1 / (t_{n+1} - t_n).  boundaries (N,) NumPy, n (B,) ints in [0, N - 2]."""
    b = np.asarray(_boundaries(boundaries), dtype=np.float64)
    if isinstance(n, (list, tuple)):
        n = np.asarray(n)
    _checks.array("n", n, ndim=(0, 1))
    n = np.asarray(to_numpy(n))
    if not np.issubdtype(n.dtype, np.integer):
        raise TypeError(f"n must hold integer level indices, got dtype {n.dtype}")
    if n.size and (n.min() < 0 or n.max() > b.shape[0] - 2):
        raise ValueError(f"n must lie in [0, N - 2] = [0, {b.shape[0] - 2}], got [{n.min()}, {n.max()}]")
    return 1.0 / (b[n + 1] - b[n])


# ----------------------------------------------------------------------------------------------
# Sampling (CM Algorithm 1).

def consistency_sample(f, x_T, taus, randn_like, T: float = 80.0, eps: float = 0.002, callback=None,
                       progress=False, **kwargs):
    """CM Algorithm 1, multistep consistency sampling: x = f(x_T, T); then for each tau in the
    decreasing ``taus``: x_tau = x + sqrt(tau^2 - eps^2) z and x = f(x_tau, tau).
    x_T = T z (B, ...).  One step when ``taus`` is empty; NFE = 1 + len(taus).  ``progress`` is
    accepted for the samplers' common head and ignored: a few steps need no progress bar."""
    _checks.array("x_T", x_T, min_ndim=1)
    _checks.finite_input("x_T", x_T)
    f = _checks.checked_model("f", f)
    _checks.callable_arg("randn_like", randn_like)
    if callback is not None:
        _checks.callable_arg("callback", callback)
    T, eps = _checks.real("T", T, 0.0, lo_open=True), _checks.real("eps", eps, 0.0, lo_open=True)
    if not eps < T:
        raise ValueError(f"need 0 < eps < T, got eps={eps!r}, T={T!r}")
    if taus is None or isinstance(taus, str) or not (np.ndim(taus) <= 1):
        raise TypeError(f"taus must be a 1-D sequence of noise levels (or empty), got {taus!r}")
    try:
        np.asarray(taus, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"taus must be a 1-D sequence of numbers, got {taus!r}") from None
    if not np.all(np.isfinite(np.asarray(taus, dtype=np.float64))):
        raise ValueError(f"taus must be finite, got {taus!r}")
    taus = [float(t) for t in np.atleast_1d(np.asarray(taus, dtype=np.float64))] if len(np.atleast_1d(taus)) else []
    if any(not eps < t < T for t in taus):
        raise ValueError(f"taus: every tau must lie in (eps, T) = ({eps}, {T}), got {taus}")
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
