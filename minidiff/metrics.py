"""Two-sample distances for point clouds: sliced Wasserstein, MMD, energy distance; exact NLL.

All take x: (N, d) and y: (M, d) arrays of either backend and return a float.
"""
from __future__ import annotations

import numpy as np

from .backend import namespace


def _check_pair(x, y):
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have shapes (N, d) and (M, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x and y need at least 2 points each")


def _pairwise_sq_dists(xp, a, b):
    d2 = xp.sum(a * a, axis=1)[:, None] + xp.sum(b * b, axis=1)[None, :] - 2 * xp.matmul(a, xp.transpose(b))
    return xp.clip(d2, 0.0, None)


def _quantiles(xp, sorted_cols, n: int):
    """n evenly spaced quantiles ((i + 0.5) / n) of each column of an already sorted (N, P) array."""
    N = sorted_cols.shape[0]
    pos = np.clip((np.arange(n) + 0.5) / n * N - 0.5, 0, N - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, N - 1)
    w = xp.asarray((pos - lo)[:, None], like=sorted_cols)
    return sorted_cols[lo] * (1 - w) + sorted_cols[hi] * w


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0, p: int = 2) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011): the 1-D W_p along random unit
    directions, averaged as (mean_theta W_p^p)^(1/p).  Unequal sizes are compared by quantiles."""
    _check_pair(x, y)
    # BEGIN SOLUTION
    xp = namespace(x, y)
    theta = np.random.default_rng(seed).standard_normal((x.shape[1], n_projections))
    theta = xp.asarray(theta / np.linalg.norm(theta, axis=0, keepdims=True), like=x)
    px = xp.sort(xp.matmul(x, theta), axis=0)                   # (N, P)
    py = xp.sort(xp.matmul(xp.asarray(y, like=x), theta), axis=0)  # (M, P)
    if px.shape[0] != py.shape[0]:  # compare quantiles at n common levels, linearly interpolated
        n = max(px.shape[0], py.shape[0])
        px, py = _quantiles(xp, px, n), _quantiles(xp, py, n)
    return float(xp.mean(xp.abs(px - py) ** p) ** (1.0 / p))
    # END SOLUTION


def mmd2_unbiased(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, eq. 3) with a sum of Gaussian kernels
    k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)).  Can be slightly negative when p = q."""
    _check_pair(x, y)
    # BEGIN SOLUTION
    xp = namespace(x, y)
    y = xp.asarray(y, like=x)
    n, m = x.shape[0], y.shape[0]

    def k(a, b):
        d2 = _pairwise_sq_dists(xp, a, b)
        return sum(xp.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    diag = float(len(bandwidths))  # k(a, a) = number of kernels
    return float((xp.sum(kxx) - n * diag) / (n * (n - 1)) + (xp.sum(kyy) - m * diag) / (m * (m - 1))
                 - 2 * xp.mean(kxy))
    # END SOLUTION


def energy_distance(x, y) -> float:
    """Energy distance (Szekely & Rizzo 2013): 2 E|X - Y| - E|X - X'| - E|Y - Y'|, the
    within-sample means taken over distinct pairs."""
    _check_pair(x, y)
    # BEGIN SOLUTION
    xp = namespace(x, y)
    y = xp.asarray(y, like=x)
    n, m = x.shape[0], y.shape[0]
    dxy = xp.mean(xp.sqrt(_pairwise_sq_dists(xp, x, y)))
    dxx = xp.sum(xp.sqrt(_pairwise_sq_dists(xp, x, x))) / (n * (n - 1))
    dyy = xp.sum(xp.sqrt(_pairwise_sq_dists(xp, y, y))) / (m * (m - 1))
    return float(2 * dxy - dxx - dyy)
    # END SOLUTION


def exact_nll(log_prob, x) -> float:
    """Mean negative log-likelihood in nats of points x under a known density ``log_prob(x) -> (N,)``."""
    xp = namespace(x)
    return float(-xp.mean(log_prob(x)))
