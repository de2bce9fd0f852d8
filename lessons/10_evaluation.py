"""Lesson 10: Evaluation: the Frechet distance from scratch, KID, small-sample bias, CLIP-style scores.

Write the functions below; the notebook notebooks/10_evaluation.ipynb explains the maths.
Check your work with:   minidiff check 10
(or: python -m pytest tests/lessons/test_10_evaluation.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import numpy as np

from minidiff import _checks
from minidiff.metrics import _covariance, _features, _gaussian


def feature_statistics(features):
    """Mean and unbiased covariance of a set of feature vectors: the Gaussian that FID fits.

    features: (N, D), N >= 2.  Returns mu (D,) and Sigma (D, D), float64, with
    Sigma = sum_i (f_i - mu)(f_i - mu)^T / (N - 1)   (the unbiased estimate, as np.cov).
    """
    f = _features("features", features)
    raise NotImplementedError("EXERCISE feature_statistics: write this function (see its docstring)")


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((Sigma1 Sigma2)^(1/2)) for two covariance (symmetric PSD) matrices (D, D).

    Sigma1 Sigma2 is not symmetric, but it is similar to the symmetric PSD matrix
    M = Sigma1^(1/2) Sigma2 Sigma1^(1/2) (multiply by Sigma1^(-1/2) on the left and Sigma1^(1/2) on
    the right), so both have the same eigenvalues lambda_i >= 0 and the trace of the square root is
    sum_i sqrt(lambda_i).  Use np.linalg.eigh twice (for Sigma1^(1/2) and for M's eigenvalues) and
    clip the tiny negative eigenvalues that round-off produces to 0 before any square root.
    """
    sigma1, sigma2 = _covariance("sigma1", sigma1), _covariance("sigma2", sigma2)
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"sigma1 and sigma2 must have the same shape (D, D), got {sigma1.shape} and {sigma2.shape}")
    raise NotImplementedError("EXERCISE trace_sqrt_product: write this function (see its docstring)")


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Frechet (2-Wasserstein) distance between N(mu1, Sigma1) and N(mu2, Sigma2), squared:

        d^2 = ||mu1 - mu2||^2 + tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^(1/2))

    (Dowson & Landau 1982; FID is this between Gaussians fitted to Inception features, Heusel et al. 2017).
    mu: (D,), sigma: (D, D).  Use trace_sqrt_product for the last term.
    """
    mu1, sigma1 = _gaussian("1", mu1, sigma1)
    mu2, sigma2 = _gaussian("2", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two Gaussians must have the same dimension D, got mu1 {mu1.shape} and mu2 {mu2.shape}")
    raise NotImplementedError("EXERCISE frechet_distance: write this function (see its docstring)")


def polynomial_mmd2(features_x, features_y, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with KID's polynomial kernel
    k(a, b) = (a . b / D + coef)^degree  (Binkowski et al. 2018, "Demystifying MMD GANs").

    features_x: (m, D), features_y: (n, D), m, n >= 2:
    sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 sum_{i,j} k(x_i, y_j) / (m n).
    Unbiased, so it can be slightly negative when the two sets come from one distribution.
    """
    x, y = _features("features_x", features_x), _features("features_y", features_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features_x and features_y must have the same feature dimension D, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    degree = _checks.integer("degree", degree, 1, 64)
    coef = _checks.real("coef", coef)
    raise NotImplementedError("EXERCISE polynomial_mmd2: write this function (see its docstring)")


def kid(features_x, features_y, subsets: int = 100, subset_size: int = 1000, seed=0):
    """Kernel Inception Distance (Binkowski et al. 2018): polynomial_mmd2 on ``subsets`` random
    subsets of ``subset_size`` rows drawn without replacement from each set, averaged.

    features_x: (N, D), features_y: (M, D).  seed: an int or a np.random.Generator; draw each
    subset's rows with rng.choice(N, subset_size, replace=False), first from x, then from y.
    Returns (mean, std) over the subsets (std with ddof=0, as torchmetrics reports it).
    """
    x, y = _features("features_x", features_x), _features("features_y", features_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features_x and features_y must have the same feature dimension D, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    subsets = _checks.integer("subsets", subsets, 1, 10 ** 6)
    largest = min(x.shape[0], y.shape[0])
    message = f"subset_size must be an integer in [2, min(N, M)] = [2, {largest}], got {subset_size!r}"
    if isinstance(subset_size, (bool, np.bool_)) or not isinstance(subset_size, (int, np.integer)):
        raise TypeError(message)
    if not 2 <= subset_size <= largest:
        raise ValueError(message)
    if not isinstance(seed, np.random.Generator):
        seed = _checks.integer("seed", seed, 0, 2 ** 63 - 1)
    rng = np.random.default_rng(seed)
    raise NotImplementedError("EXERCISE kid: write this function (see its docstring)")
