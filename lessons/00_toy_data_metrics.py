"""Lesson 00: Toy data and two-sample metrics.

Write the functions below; the notebook notebooks/00_toy_data_metrics.ipynb explains the maths.
Check your work with:   minidiff check 00
(or: python -m pytest tests/lessons/test_00_toy_data_metrics.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace, to_numpy
from minidiff.data.toy2d import _mixture_parameters, _mixture_terms, _noise_parameters, _points
from minidiff.metrics import _check_pair, _pairwise_sq_dists, _quantiles


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0, p: int = 2) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011): the 1-D W_p along random unit
    directions, averaged as (mean_theta W_p^p)^(1/p).  Unequal sizes are compared by quantiles.
    n_projections in [1, 10^6], seed >= 0, p >= 1."""
    x, y = _check_pair(x, y)
    n_projections = _checks.integer("n_projections", n_projections, 1, 10 ** 6)
    seed = _checks.integer("seed", seed, 0)
    p = _checks.real("p", p, 1.0, 64.0)
    raise NotImplementedError("EXERCISE sliced_wasserstein: write this function (see its docstring)")


def mmd2_unbiased(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, eq. 3) with a sum of Gaussian kernels
    k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)).  Can be slightly negative when p = q.
    bandwidths: a non-empty sequence of finite h > 0 (no kernel: MMD 0 for any two clouds)."""
    x, y = _check_pair(x, y)
    if isinstance(bandwidths, (str, bytes)) or not hasattr(bandwidths, "__len__") or _checks.is_array(bandwidths):
        raise TypeError(f"bandwidths must be a non-empty sequence of numbers (e.g. a tuple), got {bandwidths!r}")
    if len(bandwidths) == 0:
        raise ValueError("bandwidths must hold at least one kernel bandwidth h > 0, got an empty sequence")
    bandwidths = tuple(_checks.real("bandwidths", h, 0.0, lo_open=True) for h in bandwidths)
    raise NotImplementedError("EXERCISE mmd2_unbiased: write this function (see its docstring)")


def energy_distance(x, y) -> float:
    """Energy distance (Szekely & Rizzo 2013): 2 E|X - Y| - E|X - X'| - E|Y - Y'|, the
    within-sample means taken over distinct pairs."""
    x, y = _check_pair(x, y)
    raise NotImplementedError("EXERCISE energy_distance: write this function (see its docstring)")


def mixture_score(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """Exact score of the noised mixture: grad log p(x) = sum_k r_k(x) (-(x - alpha mu_k) / C_k),
    C_k = alpha^2 v_k + sigma^2, with responsibilities r_k(x) = softmax_k log(pi_k N(x; alpha mu_k, C_k)).
    x: (B, d); means, variances: (K, d); weights: (K,); alpha, sigma: scalars or (B,).  -> (B, d)."""
    _mixture_parameters(means, variances, weights)
    _points("x", x, np.shape(to_numpy(means))[1])
    _noise_parameters(x, alpha, sigma)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE mixture_score: write this function (see its docstring)")
