"""Lesson 00: Toy data and two-sample metrics.

Write the functions below; the notebook notebooks/00_toy_data_metrics.ipynb explains the maths.
Check your work with:   minidiff check 00
(or: python -m pytest tests/lessons/test_00_toy_data_metrics.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import numpy as np

from minidiff.backend import namespace
from minidiff.data.toy2d import _mixture_terms
from minidiff.metrics import _check_pair, _pairwise_sq_dists, _quantiles


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0, p: int = 2) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011): the 1-D W_p along random unit
    directions, averaged as (mean_theta W_p^p)^(1/p).  Unequal sizes are compared by quantiles."""
    _check_pair(x, y)
    raise NotImplementedError("EXERCISE sliced_wasserstein: write this function (see its docstring)")


def mmd2_unbiased(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, eq. 3) with a sum of Gaussian kernels
    k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)).  Can be slightly negative when p = q."""
    _check_pair(x, y)
    raise NotImplementedError("EXERCISE mmd2_unbiased: write this function (see its docstring)")


def energy_distance(x, y) -> float:
    """Energy distance (Szekely & Rizzo 2013): 2 E|X - Y| - E|X - X'| - E|Y - Y'|, the
    within-sample means taken over distinct pairs."""
    _check_pair(x, y)
    raise NotImplementedError("EXERCISE energy_distance: write this function (see its docstring)")


def mixture_score(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """Exact score of the noised mixture: grad log p(x) = sum_k r_k(x) (-(x - alpha mu_k) / C_k),
    C_k = alpha^2 v_k + sigma^2, with responsibilities r_k(x) = softmax_k log(pi_k N(x; alpha mu_k, C_k)).
    x: (B, d); means, variances: (K, d); weights: (K,); alpha, sigma: scalars or (B,).  -> (B, d)."""
    xp = namespace(x)
    raise NotImplementedError("EXERCISE mixture_score: write this function (see its docstring)")
