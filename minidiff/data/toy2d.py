"""2-D toy datasets, and Gaussian mixtures whose score and denoiser are known exactly.

Every dataset is scaled to roughly unit standard deviation per coordinate, the usual data
scale for diffusion.  ``rng`` is an int seed, a ``numpy.random.Generator`` or a minidiff
generator; the same seed gives the same points.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks
from ..backend import namespace, to_numpy


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if hasattr(rng, "rng") and isinstance(rng.rng, np.random.Generator):
        return rng.rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    message = f"rng must be a non-negative int seed or a numpy Generator, got {rng!r}"
    raise (ValueError if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else TypeError)(message)


_MAX_POINTS = 10 ** 8     # a sample of n points is (n, 2) float64: 1.6 GB at this bound


def _numbers(name: str, a) -> np.ndarray:
    """An array-like of numbers as float64 NumPy; None or a string is a TypeError naming ``name``."""
    if a is None or isinstance(a, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}")
    try:
        return np.asarray(to_numpy(a), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}") from None


def _points(name: str, x, dim: int):
    """x: an (B, dim) array of either backend, finite (a list or None is a TypeError)."""
    _checks.array(name, x, ndim=2)
    if x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, d) = (B, {dim}), got {tuple(x.shape)}")
    _checks.finite_input(name, x)
    return x


def _noise_parameters(x, alpha, sigma):
    """alpha > 0 and sigma >= 0: finite scalars or (B,) arrays on x's backend."""
    for name, v, lo_open in (("alpha", alpha, True), ("sigma", sigma, False)):
        _checks.levels(name, v, 0.0, lo_open=lo_open)
        _checks.per_example(name, v, x)
        if _checks.is_array(v):
            _checks.same_backend(x=x, **{name: v})


def _mixture_parameters(means, variances, weights):
    """means (K, d), variances (K, d) > 0, weights (K,) >= 0 summing to 1; finite."""
    means, variances, weights = (_numbers(k, a) for k, a in
                                 (("means", means), ("variances", variances), ("weights", weights)))
    if means.ndim != 2 or variances.shape != means.shape or weights.shape != means.shape[:1]:
        raise ValueError(f"means, variances and weights must have shapes (K, d), (K, d) and (K,), got "
                         f"{means.shape}, {variances.shape} and {weights.shape}")
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(variances)) and np.all(variances > 0)):
        raise ValueError("means must be finite and variances finite and > 0")
    if np.any(weights < 0) or not math.isclose(weights.sum(), 1.0, rel_tol=1e-9):
        raise ValueError("weights must be non-negative numbers summing to 1")


class GaussianMixture:
    """p(x_0) = sum_k pi_k N(x_0; mu_k, diag(s_k^2)).

    Under the forward process x = alpha x_0 + sigma eps (VP: alpha = sqrt(alpha_bar),
    sigma = sqrt(1 - alpha_bar); EDM/VE: alpha = 1), the marginal of x is again a mixture,
    sum_k pi_k N(alpha mu_k, alpha^2 s_k^2 + sigma^2), so its log-density, score and the
    denoiser E[x_0 | x] are exact.  Works on arrays of either backend.
    """

    def __init__(self, means, stds, weights=None):
        self.means = _numbers("means", means)                     # (K, d)
        if self.means.ndim != 2 or self.means.shape[0] < 1 or self.means.shape[1] < 1:
            raise ValueError(f"means must have shape (K, d), got {self.means.shape}")
        if not np.all(np.isfinite(self.means)):
            raise ValueError("means must be finite")
        K, d = self.means.shape
        stds = _numbers("stds", stds)
        if stds.ndim and stds.size not in (K, K * d):
            raise ValueError(f"stds must be a number, K={K} numbers or (K, d) = ({K}, {d}), got shape {stds.shape}")
        self.vars = np.broadcast_to((stds.reshape(K, -1) if stds.ndim else stds) ** 2, (K, d)).copy()  # (K, d)
        if not np.all((stds > 0) & (self.vars > 0) & np.isfinite(self.vars)):
            raise ValueError("stds must be positive and finite")
        w = np.full(K, 1.0 / K) if weights is None else _numbers("weights", weights)
        if w.shape != (K,) or np.any(w < 0) or not math.isclose(w.sum(), 1.0, rel_tol=1e-9):
            raise ValueError(f"weights must be K={K} non-negative numbers summing to 1")
        self.weights = w
        self.dim = d

    def sample(self, n: int, rng=0) -> np.ndarray:
        n = _checks.integer("n", n, 1, _MAX_POINTS)
        rng = _as_rng(rng)
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + np.sqrt(self.vars[k]) * rng.standard_normal((n, self.dim))

    def log_prob(self, x, alpha=1.0, sigma=0.0):
        """log p(x) of the noised marginal (alpha=1, sigma=0: the data density).  (B, d) -> (B,)."""
        _points("x", x, self.dim)
        _noise_parameters(x, alpha, sigma)
        return mixture_log_prob(x, self.means, self.vars, self.weights, alpha, sigma)

    @property
    def null_class(self) -> int:
        """The label K that means "no class" in ``class_labels`` (the whole mixture)."""
        return len(self.weights)

    def score(self, x, alpha=1.0, sigma=0.0, class_labels=None):
        """grad_x log p(x) of the noised marginal, exact.  (B, d) -> (B, d).  With
        ``class_labels`` (B,) ints, grad_x log p(x | c): the score of component c alone, and of
        the whole mixture where c is ``null_class`` (the classes are the components)."""
        _points("x", x, self.dim)
        _noise_parameters(x, alpha, sigma)
        if class_labels is not None:
            _checks.array("class_labels", class_labels)
        if class_labels is None:
            return mixture_score(x, self.means, self.vars, self.weights, alpha, sigma)
        xp = namespace(x)
        K = len(self.weights)
        c = np.asarray(xp.to_numpy(class_labels))
        if c.shape != (x.shape[0],) or not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() > K:
            raise ValueError(f"class_labels must be {x.shape[0]} integers in [0, {K}] ({K}: no class), "
                             f"got {c.dtype} of shape {c.shape}")
        _, diff, C = _mixture_terms(x, self.means, self.vars, self.weights, alpha, sigma)
        r = mixture_class_posterior(x, self.means, self.vars, self.weights, alpha, sigma)   # (B, K) p(k | x)
        one_hot = np.eye(K + 1)[c][:, :K]                                       # (B, K); null rows all 0
        given = np.sum(one_hot, axis=1, keepdims=True)                          # (B, 1)
        r = xp.asarray(given, like=x) * xp.asarray(one_hot, like=x) + xp.asarray(1 - given, like=x) * r
        return xp.sum(xp.expand_dims(r, 2) * (-diff / C), axis=1)

    def class_posterior(self, x, alpha=1.0, sigma=0.0):
        """p(c | x) of the noised marginal, the components as classes.  (B, d) -> (B, K)."""
        _points("x", x, self.dim)
        _noise_parameters(x, alpha, sigma)
        return mixture_class_posterior(x, self.means, self.vars, self.weights, alpha, sigma)

    def denoise(self, x, alpha=1.0, sigma=0.0, class_labels=None):
        """The exact denoiser E[x_0 | x] (Tweedie's formula: (x + sigma^2 score) / alpha), or
        E[x_0 | x, c] with ``class_labels``.  alpha, sigma: scalars or (B,), as for ``score``."""
        _points("x", x, self.dim)
        _noise_parameters(x, alpha, sigma)
        xp = namespace(x)
        if not np.all(np.asarray(xp.to_numpy(xp.asarray(alpha, like=x))) > 0):
            raise ValueError("alpha must be > 0 (the denoiser divides by it)")
        B = x.shape[0]
        a = xp.reshape(xp.asarray(alpha, like=x) * xp.ones((B,), like=x), (B, 1))  # (B,) broadcasts per example
        s = xp.reshape(xp.asarray(sigma, like=x) * xp.ones((B,), like=x), (B, 1))
        return (x + s ** 2 * self.score(x, alpha, sigma, class_labels)) / a

    def eps_model(self, alpha_bar):
        """The exact DDPM noise predictor E[eps | x_t] = -sqrt(1 - alpha_bar_t) score, as
        eps(x, t, class_labels=None).  alpha_bar: (T,) in (0, 1)."""
        _checks.alpha_bar(to_numpy(alpha_bar) if _checks.is_array(alpha_bar) else alpha_bar)

        def eps(x, t, class_labels=None):
            xp = namespace(x)
            a = xp.gather(xp.asarray(alpha_bar, like=x), t)
            return -xp.expand_dims(xp.sqrt(1 - a), 1) * self.score(x, xp.sqrt(a), xp.sqrt(1 - a), class_labels)
        return eps


def _mixture_terms(x, means, variances, weights, alpha, sigma):
    """log(pi_k N(x; alpha mu_k, C_k)) (B, K), the residuals x - alpha mu_k and C_k (B, K, d)."""
    xp = namespace(x)
    B = x.shape[0]
    alpha = xp.reshape(xp.asarray(alpha, like=x) * xp.ones((B,), like=x), (B, 1, 1))
    sigma = xp.reshape(xp.asarray(sigma, like=x) * xp.ones((B,), like=x), (B, 1, 1))
    C = alpha ** 2 * xp.asarray(variances, like=x)[None] + sigma ** 2     # (B, K, d)
    diff = xp.expand_dims(x, 1) - alpha * xp.asarray(means, like=x)[None]  # (B, K, d)
    log_n = -0.5 * xp.sum(diff ** 2 / C + xp.log(2 * math.pi * C), axis=2)  # (B, K)
    return log_n + xp.asarray(np.log(np.maximum(weights, 1e-300)), like=x), diff, C


def mixture_log_prob(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """log p(x) for x = alpha x_0 + sigma eps, x_0 ~ sum_k pi_k N(mu_k, diag(v_k)).  (B, d) -> (B,)."""
    _mixture_parameters(means, variances, weights)
    _points("x", x, np.shape(to_numpy(means))[1])
    _noise_parameters(x, alpha, sigma)
    log_w, _, _ = _mixture_terms(x, means, variances, weights, alpha, sigma)
    return namespace(x).logsumexp(log_w, axis=1)


def mixture_score(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """Exact score of the noised mixture: grad log p(x) = sum_k r_k(x) (-(x - alpha mu_k) / C_k),
    C_k = alpha^2 v_k + sigma^2, with responsibilities r_k(x) = softmax_k log(pi_k N(x; alpha mu_k, C_k)).
    x: (B, d); means, variances: (K, d); weights: (K,); alpha, sigma: scalars or (B,).  -> (B, d)."""
    _mixture_parameters(means, variances, weights)
    _points("x", x, np.shape(to_numpy(means))[1])
    _noise_parameters(x, alpha, sigma)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: score = sum_k r_k(x) * (-(x - alpha mu_k) / C_k), r = softmax of the per-component log-
    # hint: densities (use _mixture_terms and a logsumexp)
    log_w, diff, C = _mixture_terms(x, means, variances, weights, alpha, sigma)
    r = xp.exp(log_w - xp.logsumexp(log_w, axis=1, keepdims=True))   # (B, K)
    return xp.sum(xp.expand_dims(r, 2) * (-diff / C), axis=1)
    # END SOLUTION


def mixture_class_posterior(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """Bayes' rule with the components as classes: p(c = k | x) = pi_k N(x; alpha mu_k, C_k) / p(x),
    C_k = alpha^2 v_k + sigma^2, computed in log space (softmax over k).
    x: (B, d); means, variances: (K, d); weights: (K,); alpha, sigma: scalars or (B,).  -> (B, K)."""
    _mixture_parameters(means, variances, weights)
    _points("x", x, np.shape(to_numpy(means))[1])
    _noise_parameters(x, alpha, sigma)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: log_w from _mixture_terms holds log pi_k N(x; alpha mu_k, C_k), (B, K); return exp(log_w
    # hint: - logsumexp(log_w, axis=1, keepdims=True))
    log_w, _, _ = _mixture_terms(x, means, variances, weights, alpha, sigma)   # (B, K) log pi_k N(x; ...)
    return xp.exp(log_w - xp.logsumexp(log_w, axis=1, keepdims=True))
    # END SOLUTION


def eight_gaussians_mixture(radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """Eight equal Gaussians on a circle (scaled so the data has roughly unit variance)."""
    radius = _checks.real("radius", radius, 0.0, lo_open=True)
    std = _checks.real("std", std, 0.0, lo_open=True)
    angles = 2 * np.pi * np.arange(8) / 8
    scale = 1.0 / math.sqrt((radius ** 2 + 2 * std ** 2) / 2)
    means = scale * radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(means, scale * std)


def _sample_args(n, rng):
    return _checks.integer("n", n, 1, _MAX_POINTS), _as_rng(rng)


def _standardise(x, scale):
    return (x / scale).astype(np.float64)


def swiss_roll(n, rng):
    """(n, 2) float64 points; rng an int seed or a numpy Generator."""
    n, rng = _sample_args(n, rng)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + 0.25 * rng.standard_normal((n, 2))
    return _standardise(x, 7.0)


def two_moons(n, rng):
    """(n, 2) float64 points; rng an int seed or a numpy Generator."""
    n, rng = _sample_args(n, rng)
    n1 = n // 2
    a = np.pi * rng.random(n1)
    b = np.pi * rng.random(n - n1)
    upper = np.stack([np.cos(a), np.sin(a)], axis=1)
    lower = np.stack([1 - np.cos(b), 0.5 - np.sin(b)], axis=1)
    x = np.concatenate([upper, lower])[rng.permutation(n)] + 0.05 * rng.standard_normal((n, 2))
    return _standardise(x - np.array([0.5, 0.25]), 0.75)


def checkerboard(n, rng):
    """(n, 2) float64 points; rng an int seed or a numpy Generator."""
    n, rng = _sample_args(n, rng)
    x1 = 4 * rng.random(n) - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2   # [0, 1) or [-2, -1), then shifted by the column parity
    x2 = x2 + np.floor(x1) % 2
    return _standardise(np.stack([x1, x2], axis=1), 1.15)


def rings(n, rng):
    """(n, 2) float64 points; rng an int seed or a numpy Generator."""
    n, rng = _sample_args(n, rng)
    radii = np.array([0.5, 1.0, 1.5, 2.0])
    r = radii[rng.integers(0, 4, n)] + 0.04 * rng.standard_normal(n)
    a = 2 * np.pi * rng.random(n)
    return _standardise(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), 1.0)


def spiral(n, rng):
    """(n, 2) float64 points; rng an int seed or a numpy Generator."""
    n, rng = _sample_args(n, rng)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi) * 2
    return _standardise(x + 0.05 * rng.standard_normal((n, 2)), 0.9)


def _gmm_sampler(gmm):
    return lambda n, rng: gmm.sample(n, rng)


DATASETS = {
    "swiss_roll": swiss_roll,
    "two_moons": two_moons,
    "8gaussians": _gmm_sampler(eight_gaussians_mixture()),
    "checkerboard": checkerboard,
    "rings": rings,
    "spiral": spiral,
}


def sample_toy(name: str, n: int, rng=0) -> np.ndarray:
    """``n`` points of the 2-D dataset ``name`` (one of ``DATASETS``) as a (n, 2) float64 array."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str), one of {sorted(DATASETS)}; got {type(name).__name__}")
    if name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    n = _checks.integer("n", n, 1, _MAX_POINTS)
    return DATASETS[name](n, _as_rng(rng))


def exact_density(name: str):
    """The dataset's density as a ``GaussianMixture`` where it is known exactly, else None."""
    if not isinstance(name, str) or name not in DATASETS:
        raise (ValueError if isinstance(name, str) else TypeError)(
            f"name must be one of {sorted(DATASETS)}, got {name!r}")
    return eight_gaussians_mixture() if name == "8gaussians" else None
