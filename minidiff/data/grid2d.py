"""2-D toy data on a G x G grid: two tokens of G states each, with an exact joint distribution.

A Gaussian mixture (``toy2d.GaussianMixture``) binned on G equal cells per axis over [lo, hi]
(the outer cells reaching to -inf and +inf, so nothing is lost): the probability of cell (i, j)
is, per component, a product of normal CDF differences, exactly.  This is the oracle of the
discrete-diffusion lesson, as the mixture's exact score is for the continuous ones.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .. import _checks
from .toy2d import GaussianMixture, eight_gaussians_mixture


def bin_edges(G: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    """G + 1 edges of G equal cells over [lo, hi], the outer two at -inf and +inf.  -> (G + 1,)."""
    G = _checks.integer("G", G, 2)
    lo, hi = _checks.real("lo", lo), _checks.real("hi", hi)
    if not lo < hi:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    e = np.linspace(lo, hi, G + 1)
    e[0], e[-1] = -np.inf, np.inf
    return e


def grid_probabilities(gmm: GaussianMixture, G: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    """p(x0 = (i, j)) = sum_k pi_k [Phi((e_{i+1} - mu_k1) / s_k1) - Phi((e_i - mu_k1) / s_k1)] x (the same
    for j on the second axis), exact (float64).  -> (G, G), summing to one."""
    if not isinstance(gmm, GaussianMixture) or gmm.dim != 2:
        raise ValueError("gmm must be a 2-D GaussianMixture")
    e = bin_edges(G, lo, hi)
    s = np.sqrt(gmm.vars)                                                      # (C, 2)
    cells = np.diff(ndtr((e[None, None, :] - gmm.means[:, :, None]) / s[:, :, None]), axis=2)  # (C, 2, G)
    return np.einsum("c,ci,cj->ij", gmm.weights, cells[:, 0], cells[:, 1])


def eight_gaussians_grid(G: int = 12) -> np.ndarray:
    """The 8-Gaussians mixture (radius 2, std 0.3) on a G x G grid over [-3, 3]^2.  -> (G, G)."""
    return grid_probabilities(eight_gaussians_mixture(std=0.3), G)


def sample_grid(p0: np.ndarray, n: int, rng=0) -> np.ndarray:
    """n draws of x0 = (i, j) from the joint p0 (G, G).  -> (n, 2) int64."""
    p0 = np.asarray(p0, dtype=np.float64)
    n = _checks.integer("n", n, 1, 10 ** 8)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    k = rng.choice(p0.size, size=n, p=p0.ravel() / p0.sum())
    return np.stack(np.unravel_index(k, p0.shape), axis=1).astype(np.int64)


def histogram(x, G: int) -> np.ndarray:
    """The empirical joint of samples x (n, 2) in [0, G)^2.  -> (G, G) frequencies."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2 or x.min() < 0 or x.max() >= G:
        raise ValueError(f"x must be (n, 2) states in [0, {G}), got shape {x.shape}")
    return np.bincount(x[:, 0] * G + x[:, 1], minlength=G * G).reshape(G, G) / len(x)


def total_variation(p, q) -> float:
    """TV(p, q) = 1/2 sum |p - q| of two distributions on the same states."""
    return 0.5 * float(np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def tv_floor(p0, n: int, repeats: int = 20, rng=0, against: str = "truth") -> tuple:
    """The floor of the TV of n samples: what n exact draws from p0 reach, over ``repeats`` draws.
    ``against="truth"``: TV(histogram of n draws, p0), the floor of a sampler's TV to the truth;
    ``against="sample"``: TV between the histograms of two independent samples of size n (the
    data-vs-data floor of a sample-vs-sample comparison).  -> (mean, std)."""
    _checks.choice("against", against, ("truth", "sample"))
    rng = np.random.default_rng(rng)
    G = p0.shape[0]

    def other():
        return p0 if against == "truth" else histogram(sample_grid(p0, n, rng), G)

    tv = [total_variation(histogram(sample_grid(p0, n, rng), G), other()) for _ in range(repeats)]
    return float(np.mean(tv)), float(np.std(tv))
