"""Checks for lessons/00_toy_data_metrics.py (run against the reference by default; --impl=lesson
runs them on the learner's file)."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from minidiff.data.toy2d import GaussianMixture, eight_gaussians_mixture, mixture_log_prob

LESSON = "00"
exercise = pytest.mark.exercise


def _cloud(n, seed, shift=0.0):
    return np.random.default_rng(seed).standard_normal((n, 2)) + shift


@exercise("sliced_wasserstein")
def test_sliced_wasserstein_is_zero_for_identical_clouds(ex):
    x = _cloud(300, 0)
    assert ex.sliced_wasserstein(x, x.copy()) == pytest.approx(0.0, abs=1e-12)


@exercise("sliced_wasserstein")
def test_sliced_wasserstein_of_a_translation(ex):
    # Shifting a cloud by delta moves every projection by <delta, theta>; in 2-D the mean of
    # cos^2 over random directions is 1/2, so SW_2 = |delta| / sqrt(2).
    x = _cloud(500, 1)
    delta = np.array([0.6, -0.8])
    sw = ex.sliced_wasserstein(x, x + delta, n_projections=4000)
    assert sw == pytest.approx(1.0 / np.sqrt(2), rel=0.03)


@exercise("sliced_wasserstein")
def test_sliced_wasserstein_separates_distributions(ex):
    same = ex.sliced_wasserstein(_cloud(2000, 2), _cloud(2000, 3))
    shifted = ex.sliced_wasserstein(_cloud(2000, 2), _cloud(2000, 3, shift=0.5))
    assert same < 0.1 < shifted


def _brute_mmd2(x, y, bandwidths):
    def k(a, b):
        return sum(np.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in bandwidths)
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


@exercise("mmd2_unbiased")
def test_mmd2_matches_the_double_sum(ex):
    x, y = _cloud(12, 4), _cloud(9, 5, shift=0.3)
    for bw in [(0.5,), (0.2, 1.0, 3.0)]:
        assert ex.mmd2_unbiased(x, y, bandwidths=bw) == pytest.approx(_brute_mmd2(x, y, bw), rel=1e-9, abs=1e-12)


@exercise("mmd2_unbiased")
def test_mmd2_is_near_zero_for_equal_laws_and_positive_otherwise(ex):
    same = ex.mmd2_unbiased(_cloud(800, 6), _cloud(800, 7))
    shifted = ex.mmd2_unbiased(_cloud(800, 6), _cloud(800, 7, shift=0.5))
    assert abs(same) < 0.01 and shifted > 0.05


def _brute_energy(x, y):
    d = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    n, m = len(x), len(y)
    return 2 * d(x, y).mean() - d(x, x).sum() / (n * (n - 1)) - d(y, y).sum() / (m * (m - 1))


@exercise("energy_distance")
def test_energy_distance_matches_the_definition(ex):
    x, y = _cloud(15, 8), _cloud(11, 9, shift=0.4)
    assert ex.energy_distance(x, y) == pytest.approx(_brute_energy(x, y), rel=1e-9)


@exercise("energy_distance")
def test_energy_distance_is_symmetric_and_grows_with_a_shift(ex):
    x, y = _cloud(400, 10), _cloud(400, 11)
    assert ex.energy_distance(x, y) == pytest.approx(ex.energy_distance(y, x), rel=1e-9)
    assert ex.energy_distance(x, y + 0.3) < ex.energy_distance(x, y + 1.0)


@exercise("mixture_score")
def test_mixture_score_of_one_gaussian_is_linear(ex):
    x = _cloud(7, 12)
    means, variances = np.array([[0.5, -1.0]]), np.array([[0.3, 2.0]])
    alpha, sigma = 0.8, 0.6
    expected = -(x - alpha * means[0]) / (alpha ** 2 * variances[0] + sigma ** 2)
    got = ex.mixture_score(x, means, variances, np.array([1.0]), alpha, sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@exercise("mixture_score")
def test_mixture_score_is_the_gradient_of_the_log_density(ex):
    gmm = eight_gaussians_mixture()
    x = _cloud(6, 13)
    alpha, sigma = 0.9, 0.4
    grad = autograd.elementwise_grad(
        lambda z: mixture_log_prob(z, gmm.means, gmm.vars, gmm.weights, alpha, sigma))(x)
    got = ex.mixture_score(x, gmm.means, gmm.vars, gmm.weights, alpha, sigma)
    np.testing.assert_allclose(got, grad, rtol=1e-8, atol=1e-10)


@exercise("mixture_score")
def test_mixture_score_takes_one_noise_level_per_example(ex):
    gmm = GaussianMixture([[1.0, 0.0], [-1.0, 0.5]], [0.2, 0.4], [0.3, 0.7])
    x = _cloud(5, 14)
    sigmas = np.linspace(0.1, 2.0, 5)
    batch = ex.mixture_score(x, gmm.means, gmm.vars, gmm.weights, 1.0, sigmas)
    for i, s in enumerate(sigmas):
        one = ex.mixture_score(x[i:i + 1], gmm.means, gmm.vars, gmm.weights, 1.0, s)
        np.testing.assert_allclose(batch[i], one[0], rtol=1e-10)


@exercise("sliced_wasserstein")
def test_sliced_wasserstein_compares_clouds_of_unequal_size(ex):
    # [x; x] has the same empirical law as x: its distance to x is ~0, and a translation of it
    # is again |delta| / sqrt(2) away, whichever cloud comes first.
    x = _cloud(400, 15)
    doubled = np.concatenate([x, x])
    assert ex.sliced_wasserstein(x, doubled) < 0.02
    delta = np.array([0.6, -0.8])
    there = ex.sliced_wasserstein(x, doubled + delta, n_projections=4000)
    back = ex.sliced_wasserstein(doubled + delta, x, n_projections=4000)
    assert there == pytest.approx(1.0 / np.sqrt(2), rel=0.03) and back == pytest.approx(there, rel=1e-9)


@exercise("sliced_wasserstein")
def test_sliced_wasserstein_uses_the_order_p(ex):
    # p = 1: each projection moves by |<delta, theta>|, whose mean over the circle is 2 |delta| / pi
    x = _cloud(500, 16)
    delta = np.array([0.6, -0.8])
    assert ex.sliced_wasserstein(x, x + delta, n_projections=4000, p=1) == pytest.approx(2 / np.pi, rel=0.03)


def _stable_log_density(x, means, variances, weights, alpha, sigma):
    """log sum_k pi_k N(x; alpha mu_k, diag(alpha^2 v_k + sigma^2)) by a log-sum-exp over k."""
    from autograd.scipy.special import logsumexp
    C = alpha ** 2 * variances + sigma ** 2                                     # (K, d)
    log_n = -0.5 * anp.sum((x[:, None, :] - alpha * means[None]) ** 2 / C + anp.log(2 * np.pi * C), axis=2)
    return logsumexp(log_n + anp.log(weights), axis=1)


@exercise("mixture_score")
def test_mixture_score_far_from_every_component_is_finite_and_exact(ex):
    # at (40, 0) every component density underflows to 0; the score is still the gradient of
    # the log density (unequal weights and variances, so no term cancels by symmetry)
    means = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, -1.0]])
    variances = np.array([[0.02, 0.05], [0.03, 0.03], [0.1, 0.01]])
    weights = np.array([0.5, 0.3, 0.2])
    x = np.array([[40.0, 0.0], [0.0, -35.0], [1.0, 1.0]])
    alpha, sigma = 1.0, 0.05
    got = ex.mixture_score(x, means, variances, weights, alpha, sigma)
    assert np.all(np.isfinite(got)), f"score at {x[:2].tolist()}: {got[:2].tolist()}"
    grad = autograd.elementwise_grad(lambda z: _stable_log_density(z, means, variances, weights, alpha, sigma))(x)
    np.testing.assert_allclose(got, grad, rtol=1e-9)
