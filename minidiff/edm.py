"""EDM's unified framework (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models"; tables and equations refer to that paper).

Every model here is a denoiser D(x; sigma) returning the x0 estimate, with x = x0 + sigma n.
Table 1 in code: ``SCHEMES`` maps 'vp', 've', 'iddpm' and 'edm' to their sigma(t), s(t), time
steps, network preconditioning, training-noise distribution and loss weighting.
"""
from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np

from . import _checks
from .backend import namespace


# ----------------------------------------------------------------------------------------------
# Time steps (Table 1, "Time steps").  Each returns N decreasing noise levels; samplers append 0.

def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """EDM eq. (5): sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..N-1.  Returns (N,) float64, decreasing from sigma_max to sigma_min."""
    n = _checks.integer("n", n)
    rho = _check_rho(rho)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    # BEGIN SOLUTION
    # hint: eq. 5: interpolate linearly between sigma_max^(1/rho) and sigma_min^(1/rho) over N
    # hint: points (i/(N-1)), then raise to the power rho
    ramp = np.linspace(0, 1, n) if n > 1 else np.zeros(1)
    inv_rho = 1.0 / rho
    return (sigma_max ** inv_rho + ramp * (sigma_min ** inv_rho - sigma_max ** inv_rho)) ** rho
    # END SOLUTION


def _check_rho(rho) -> float:
    rho = _checks.real("rho", rho)
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    return rho


def _sigma_range(sigma_min, sigma_max, low="sigma_min", high="sigma_max"):
    """Two finite noise levels with 0 < low < high (the message names both)."""
    sigma_min, sigma_max = _checks.real(low, sigma_min), _checks.real(high, sigma_max)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < {low} < {high}, got {low}={sigma_min!r}, {high}={sigma_max!r}")
    return sigma_min, sigma_max


def _vp_parameters(beta_d, beta_min):
    """VP's linear beta(t) = beta_min + beta_d t: beta_d > 0, beta_min >= 0 (else sigma(t) is NaN)."""
    return (_checks.real("beta_d", beta_d, 0.0, lo_open=True), _checks.real("beta_min", beta_min, 0.0))


def vp_sigma(t, beta_d: float = 19.9, beta_min: float = 0.1):
    """Table 1, VP: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1).  t >= 0: a number or
    an array."""
    beta_d, beta_min = _vp_parameters(beta_d, beta_min)
    t = _checks.levels("t", t, 0.0, lo_open=False)
    return np.sqrt(np.exp(0.5 * beta_d * np.asarray(t) ** 2 + beta_min * np.asarray(t)) - 1)


def vp_sigma_inv(sigma, beta_d: float = 19.9, beta_min: float = 0.1):
    """Table 1, VP: sigma^-1(sigma) = (sqrt(beta_min^2 + 2 beta_d log(sigma^2 + 1)) - beta_min) / beta_d.
    sigma: an array of either backend (or a number / list, read as NumPy), >= 0."""
    beta_d, beta_min = _vp_parameters(beta_d, beta_min)
    sigma = _checks.levels("sigma", sigma, 0.0, lo_open=False, allow_list=True)
    xp = namespace(sigma)
    if not xp.is_array(sigma):
        sigma = np.asarray(sigma, dtype=np.float64)
    return (xp.sqrt(beta_min ** 2 + 2 * beta_d * xp.log(sigma ** 2 + 1)) - beta_min) / beta_d


def vp_s(t, beta_d: float = 19.9, beta_min: float = 0.1):
    """Table 1, VP: s(t) = 1 / sqrt(exp(beta_d t^2 / 2 + beta_min t)).  t >= 0."""
    beta_d, beta_min = _vp_parameters(beta_d, beta_min)
    t = _checks.levels("t", t, 0.0, lo_open=False)
    return 1 / np.sqrt(np.exp(0.5 * beta_d * np.asarray(t) ** 2 + beta_min * np.asarray(t)))


def vp_sigmas(n: int, eps_s: float = 1e-3, beta_d: float = 19.9, beta_min: float = 0.1) -> np.ndarray:
    """Table 1, VP time steps: t_i = 1 + i/(N-1) (eps_s - 1), as noise levels sigma(t_i); eps_s in (0, 1)."""
    n = _checks.integer("n", n)
    eps_s = _checks.real("eps_s", eps_s, 0.0, 1.0, lo_open=True, hi_open=True)
    t = 1 + np.linspace(0, 1, n) * (eps_s - 1)
    return vp_sigma(t, beta_d, beta_min)


def ve_sigmas(n: int, sigma_min: float = 0.02, sigma_max: float = 100.0) -> np.ndarray:
    """Table 1, VE time steps: t_i = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i/(N-1)), sigma(t) = sqrt(t)."""
    n = _checks.integer("n", n)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    t = sigma_max ** 2 * (sigma_min ** 2 / sigma_max ** 2) ** np.linspace(0, 1, n)
    return np.sqrt(t)


def iddpm_u(M: int = 1000, C1: float = 0.001, C2: float = 0.008) -> np.ndarray:
    """Table 1, iDDPM: the M + 1 noise levels u_j of a cosine-schedule DDPM, from u_M = 0 via
    u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j-1) / abar(j), C1) - 1), abar(j) = sin^2(pi/2 j / (M (C2 + 1))).
    M in [1, 10^6], C1 in (0, 1], C2 >= 0."""
    M, C1, C2 = _iddpm_parameters(M, C1, C2)

    def alpha_bar(j):
        return np.sin(0.5 * np.pi * j / (M * (C2 + 1))) ** 2

    u = np.zeros(M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = np.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C1) - 1)
    return u


def _iddpm_parameters(M, C1, C2):
    return (_checks.integer("M", M, 1, 10 ** 6), _checks.real("C1", C1, 0.0, 1.0, lo_open=True),
            _checks.real("C2", C2, 0.0))


def iddpm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 81.0, M: int = 1000,
                 C1: float = 0.001, C2: float = 0.008) -> np.ndarray:
    """Table 1, iDDPM time steps: t_i = u_floor(j0 + (M - 1 - j0) i/(N-1) + 1/2), N of the u_j
    that lie in [sigma_min, sigma_max], evenly spaced in j from j0 (the largest u_j in range).
    The default sigma_max = 81 is NVlabs/edm's (generate.py): it keeps u_8 = 80.2037, so j0 = 8
    as in Table 1 (sigma_max = 80 would drop u_8 and start at u_9 = 71.29).  Decreasing."""
    n = _checks.integer("n", n)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    u = iddpm_u(M, C1, C2)
    u_in_range = u[(u >= sigma_min) & (u <= sigma_max)]           # decreasing: u_j0 is the largest
    if u_in_range.size == 0:
        raise ValueError(f"no iDDPM level u_j lies in [sigma_min, sigma_max] = [{sigma_min:g}, {sigma_max:g}] "
                         f"(M={M}: u ranges over [{u[u > 0].min():.4g}, {u.max():.4g}])")
    return u_in_range[np.round(np.linspace(0, len(u_in_range) - 1, n)).astype(np.int64)]


# ----------------------------------------------------------------------------------------------
# Preconditioning (Table 1, "Network and preconditioning"): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

def edm_preconditioning(sigma, sigma_data: float = 0.5):
    """EDM (eq. 7 and Appendix B.6): c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2), c_in = 1 / sqrt(sigma^2 + sigma_data^2),
    c_noise = ln(sigma) / 4.  sigma: (B,) -> four (B,) arrays."""
    sigma = _checks.levels("sigma", sigma)
    sigma_data = _checks.real("sigma_data", sigma_data, 0.0, lo_open=True)
    xp = namespace(sigma)
    # BEGIN SOLUTION
    # hint: Table 1, EDM column: c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in =
    # hint: 1/sqrt(s^2+sd^2), c_noise = ln(s)/4
    total = sigma ** 2 + sigma_data ** 2
    c_skip = sigma_data ** 2 / total
    c_out = sigma * sigma_data / xp.sqrt(total)
    c_in = 1 / xp.sqrt(total)
    c_noise = 0.25 * xp.log(sigma)
    return c_skip, c_out, c_in, c_noise
    # END SOLUTION


def vp_preconditioning(sigma, M: int = 1000, beta_d: float = 19.9, beta_min: float = 0.1):
    """Table 1, VP: c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1), c_noise = (M - 1) sigma^-1(sigma)."""
    sigma = _checks.levels("sigma", sigma)
    M = _checks.integer("M", M)
    xp = namespace(sigma)
    return xp.ones_like(sigma), -sigma, 1 / xp.sqrt(sigma ** 2 + 1), (M - 1) * vp_sigma_inv(sigma, beta_d, beta_min)


def ve_preconditioning(sigma):
    """Table 1, VE: c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2)."""
    sigma = _checks.levels("sigma", sigma)
    xp = namespace(sigma)
    return xp.ones_like(sigma), sigma, xp.ones_like(sigma), xp.log(0.5 * sigma)


def iddpm_preconditioning(sigma, M: int = 1000, C1: float = 0.001, C2: float = 0.008):
    """Table 1, iDDPM: c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1),
    c_noise = M - 1 - argmin_j |u_j - sigma|."""
    sigma = _checks.levels("sigma", sigma)
    xp = namespace(sigma)
    u = xp.asarray(iddpm_u(M, C1, C2), like=sigma)
    j = xp.argsort(xp.abs(xp.reshape(sigma, (-1, 1)) - u[None, :]), axis=1)[:, 0]
    c_noise = (M - 1) - xp.asarray(j, like=sigma)
    return xp.ones_like(sigma), -sigma, 1 / xp.sqrt(sigma ** 2 + 1), c_noise


# ----------------------------------------------------------------------------------------------
# Training (Table 1, "Training"): the noise-level distribution and the loss weighting lambda(sigma).

def edm_loss_weight(sigma, sigma_data: float = 0.5):
    """EDM: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (= 1 / c_out^2)."""
    sigma = _checks.levels("sigma", sigma)
    sigma_data = _checks.real("sigma_data", sigma_data, 0.0, lo_open=True)
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def inverse_square_weight(sigma):
    """VP, VE, iDDPM: lambda(sigma) = 1 / sigma^2."""
    sigma = _checks.levels("sigma", sigma)
    return 1 / sigma ** 2


def _noise_source(rng, method: str):
    """``rng`` must be a minidiff generator (``backend.generator``): it has ``method``."""
    if not callable(getattr(rng, method, None)):
        raise TypeError(f"rng must be a minidiff generator (minidiff.generator(seed)) with .{method}, "
                        f"got {type(rng).__name__}")
    return rng


P_MEAN, P_STD = -1.2, 1.2   # EDM's training noise ln(sigma) ~ N(P_mean, P_std^2) (section 5, Table 1)


def edm_P_mean(sigma_data: float, P_mean: float = P_MEAN, at: float = 0.5) -> float:
    """EDM's P_mean = -1.2 was chosen for data of std ``at`` = 0.5 (images in [-1, 1]); for data of
    std sigma_data the same noise-to-data ratios sigma / sigma_data are drawn with
    P_mean + ln(sigma_data / 0.5) (sigma_data = 1, unit-std latents: -0.51)."""
    sigma_data = _checks.real("sigma_data", sigma_data, 0.0, lo_open=True)
    return _checks.real("P_mean", P_mean) + math.log(sigma_data / _checks.real("at", at, 0.0, lo_open=True))


def edm_training_sigma(rng, n: int, P_mean: float = P_MEAN, P_std: float = P_STD):
    """EDM: ln(sigma) ~ N(P_mean, P_std^2).  Returns (n,) NumPy."""
    rng, n = _noise_source(rng, "randn"), _checks.integer("n", n)
    P_mean, P_std = _checks.real("P_mean", P_mean), _checks.real("P_std", P_std, 0.0, lo_open=True)
    return np.exp(P_mean + P_std * np.asarray(rng.randn((n,)), dtype=np.float64))


def vp_training_sigma(rng, n: int, eps_t: float = 1e-5, beta_d: float = 19.9, beta_min: float = 0.1):
    """VP: sigma(t) with t ~ U(eps_t, 1)."""
    rng, n = _noise_source(rng, "rand"), _checks.integer("n", n)
    eps_t = _checks.real("eps_t", eps_t, 0.0, 1.0, lo_open=True, hi_open=True)
    return vp_sigma(eps_t + (1 - eps_t) * np.asarray(rng.rand((n,)), dtype=np.float64), beta_d, beta_min)


def ve_training_sigma(rng, n: int, sigma_min: float = 0.02, sigma_max: float = 100.0):
    """VE: ln(sigma) ~ U(ln sigma_min, ln sigma_max)."""
    rng, n = _noise_source(rng, "rand"), _checks.integer("n", n)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    u = np.asarray(rng.rand((n,)), dtype=np.float64)
    return np.exp(np.log(sigma_min) + u * (np.log(sigma_max) - np.log(sigma_min)))


def iddpm_training_sigma(rng, n: int, M: int = 1000):
    """iDDPM: sigma = u_j with j ~ U{0, ..., M - 1}."""
    rng, n = _noise_source(rng, "randint"), _checks.integer("n", n)
    M = _checks.integer("M", M, 1, 10 ** 6)
    return iddpm_u(M)[np.asarray(rng.randint(0, M, (n,)))]


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One column of EDM's Table 1."""
    name: str
    sigmas: callable          # n -> (n,) decreasing noise levels for sampling
    preconditioning: callable  # sigma -> c_skip, c_out, c_in, c_noise
    training_sigma: callable   # (rng, n) -> (n,) noise levels for training
    loss_weight: callable      # sigma -> lambda(sigma)


SCHEMES = {
    "vp": Scheme("vp", vp_sigmas, vp_preconditioning, vp_training_sigma, inverse_square_weight),
    "ve": Scheme("ve", ve_sigmas, ve_preconditioning, ve_training_sigma, inverse_square_weight),
    "iddpm": Scheme("iddpm", iddpm_sigmas, iddpm_preconditioning, iddpm_training_sigma, inverse_square_weight),
    "edm": Scheme("edm", karras_sigmas, edm_preconditioning, edm_training_sigma, edm_loss_weight),
}


def get_scheme(name: str) -> Scheme:
    _checks.choice("scheme", name, tuple(SCHEMES))
    return SCHEMES[name]


def precondition(raw_net, scheme: str = "edm", **coefficient_kwargs):
    """The denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (EDM eq. 7) around a raw
    network F(x, c_noise); works on both backends.  x: (B, ...), sigma: (B,) -> (B, ...).
    ``coefficient_kwargs`` go to the scheme's preconditioning (e.g. sigma_data for 'edm')."""
    scheme_coefficients = get_scheme(scheme).preconditioning
    _checks.callable_arg("raw_net", raw_net)
    allowed = set(inspect.signature(scheme_coefficients).parameters) - {"sigma"}
    unknown = sorted(set(coefficient_kwargs) - allowed)
    if unknown:
        raise TypeError(f"coefficient_kwargs {unknown} are not parameters of the {scheme!r} preconditioning "
                        f"(it takes {sorted(allowed)})")
    scheme_coefficients(np.ones(1), **coefficient_kwargs)          # their values, checked once here

    def coefficients(sigma):
        return scheme_coefficients(sigma, **coefficient_kwargs)

    def D(x, sigma, **kwargs):
        _checks.array("x", x, min_ndim=1)
        xp = _checks.same_backend(x=x, sigma=sigma)
        _checks.per_example("sigma", sigma, x)
        sigma = xp.asarray(sigma, like=x) * xp.ones((x.shape[0],), like=x)
        c_skip, c_out, c_in, c_noise = (xp.append_dims(c, x.ndim) if i < 3 else c
                                        for i, c in enumerate(coefficients(sigma)))
        F_x = raw_net(c_in * x, c_noise, **kwargs)
        if not _checks.is_array(F_x) or tuple(F_x.shape) != tuple(x.shape):
            raise ValueError(f"raw_net returned {_shape_of(F_x)}, expected x's shape {tuple(x.shape)}")
        return c_skip * x + c_out * F_x

    return D


def _shape_of(a) -> str:
    return f"shape {tuple(a.shape)}" if _checks.is_array(a) else f"a {type(a).__name__}"


def denoiser_loss(D, x0, sigma, noise, weight, **kwargs):
    """EDM eq. (2) / (8): mean over the batch of lambda(sigma) || D(x0 + sigma n; sigma) - x0 ||^2,
    summed over data dimensions.  sigma: (B,), noise like x0, weight = lambda(sigma) (B,)."""
    _checks.array("x0", x0, min_ndim=1)
    _checks.array("noise", noise)
    xp = _checks.same_backend(x0=x0, noise=noise, sigma=sigma, weight=weight)
    _checks.shapes_equal(x0=x0, noise=noise)
    _checks.finite_input("x0", x0)
    _checks.finite_input("noise", noise)
    _checks.per_example("sigma", _checks.levels("sigma", sigma), x0, "x0")
    _checks.per_example("weight", _checks.levels("weight", weight, 0.0, lo_open=False), x0, "x0")
    D = _checks.checked_model("D", D)
    # BEGIN SOLUTION
    # hint: eq. 2: x = x0 + sigma n; squared error of D(x, sigma) - x0 summed per example, times
    # hint: lambda(sigma), averaged over the batch
    s = xp.asarray(sigma, like=x0)
    x = x0 + xp.append_dims(s, x0.ndim) * noise
    err = xp.sum(xp.reshape(xp.square(D(x, s, **kwargs) - x0), (x0.shape[0], -1)), axis=1)
    return xp.mean(xp.asarray(weight, like=x0) * err)
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# Converters between the two model forms (DESIGN section 3).

def _alpha_bar_table(alpha_bar) -> np.ndarray:
    """A (T,) table of alpha_bar in (0, 1), as float64 NumPy (a list, None or a string: TypeError)."""
    if alpha_bar is None or isinstance(alpha_bar, (str, bytes)):
        raise TypeError(f"alpha_bar must be a (T,) array in (0, 1), got {type(alpha_bar).__name__}")
    return _checks.alpha_bar(_checks.to_numpy(alpha_bar) if _checks.is_array(alpha_bar) else alpha_bar)


def eps_model_to_denoiser(eps_model, alpha_bar):
    """Read a discrete DDPM eps-model as a denoiser (DDIM eq. 14 / EDM Appendix C.3.4):
    x = x_t / sqrt(abar_t) with sigma_t = sqrt((1 - abar_t) / abar_t); D(x; sigma) =
    x - sigma eps(sqrt(abar_t) x, t), at the step t whose sigma_t is nearest to sigma."""
    _checks.callable_arg("eps_model", eps_model)
    alpha_bar = _alpha_bar_table(alpha_bar)
    sigmas = np.sqrt((1 - alpha_bar) / alpha_bar)

    def D(x, sigma, **kwargs):
        xp = namespace(x)
        s = xp.to_numpy(xp.asarray(sigma, like=x) * xp.ones((x.shape[0],), like=x)).astype(np.float64)
        t = np.abs(np.log(s)[:, None] - np.log(sigmas)[None, :]).argmin(axis=1)
        a = xp.append_dims(xp.asarray(alpha_bar[t], like=x), x.ndim)
        eps = eps_model(xp.sqrt(a) * x, xp.int_array(t, like=x), **kwargs)
        return x - xp.append_dims(xp.asarray(s, like=x), x.ndim) * eps

    return D


def denoiser_to_eps_model(D, alpha_bar):
    """The inverse reading: eps(x_t, t) = (x - D(x; sigma_t)) / sigma_t with x = x_t / sqrt(abar_t)."""
    _checks.callable_arg("D", D)
    alpha_bar = _alpha_bar_table(alpha_bar)

    def eps(x_t, t, **kwargs):
        xp = namespace(x_t)
        a = xp.gather(xp.asarray(alpha_bar, like=x_t), t)
        sigma = xp.sqrt((1 - a) / a)
        x = x_t / xp.append_dims(xp.sqrt(a), x_t.ndim)
        return (x - D(x, sigma, **kwargs)) / xp.append_dims(sigma, x_t.ndim)

    return eps


def vp_sigma_to_alpha(sigma):
    """For a VP model: alpha_bar = 1 / (1 + sigma^2) (EDM Table 1, s(t) = 1 / sqrt(sigma^2 + 1)).  sigma >= 0."""
    sigma = _checks.levels("sigma", sigma, 0.0, lo_open=False, allow_list=True)
    return 1 / (1 + np.asarray(sigma) ** 2)
