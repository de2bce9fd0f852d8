"""Checks for lessons/10_evaluation.py."""
import numpy as np
import pytest
import scipy.linalg

LESSON = "10"
exercise = pytest.mark.exercise


def _random_psd(rng, d, rank=None):
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / d


@exercise("feature_statistics")
def test_statistics_are_the_mean_and_the_unbiased_covariance(ex):
    f = np.random.default_rng(0).standard_normal((40, 3)) * [1.0, 2.0, 0.5] + [1.0, -2.0, 3.0]
    mu, sigma = ex.feature_statistics(f)
    assert np.shape(mu) == (3,) and np.shape(sigma) == (3, 3)
    np.testing.assert_allclose(mu, f.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-12)


@exercise("feature_statistics")
def test_covariance_divides_by_n_minus_1(ex):
    mu, sigma = ex.feature_statistics(np.array([[0.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, [[2.0, 0.0], [0.0, 0.0]], atol=1e-15)   # not 1: unbiased


@exercise("trace_sqrt_product")
def test_trace_sqrt_of_diagonal_matrices(ex):
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    assert ex.trace_sqrt_product(np.diag(a), np.diag(b)) == pytest.approx(np.sum(np.sqrt(a * b)), rel=1e-12)
    assert ex.trace_sqrt_product(np.eye(5), np.eye(5)) == pytest.approx(5.0, rel=1e-12)


@exercise("trace_sqrt_product")
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")   # sqrtm of a singular matrix
def test_trace_sqrt_matches_scipy_sqrtm_even_for_singular_covariances(ex):
    rng = np.random.default_rng(1)
    for rank in (None, 2):               # rank 2 of 10: eigh returns tiny negative eigenvalues
        S1, S2 = _random_psd(rng, 10, rank), _random_psd(rng, 10)
        expected = np.trace(scipy.linalg.sqrtm(S1 @ S2)).real
        got = ex.trace_sqrt_product(S1, S2)
        assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-7, abs=1e-9)
        assert ex.trace_sqrt_product(S2, S1) == pytest.approx(expected, rel=1e-7, abs=1e-9)


@exercise("frechet_distance")
def test_frechet_distance_closed_forms(ex):
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert ex.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[9.0]])) \
        == pytest.approx(5.0, rel=1e-12)
    # commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a, b = rng.uniform(0.2, 2, 5), rng.uniform(0.2, 2, 5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    got = ex.frechet_distance(mu1, Q @ np.diag(a) @ Q.T, mu2, Q @ np.diag(b) @ Q.T)
    assert got == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-10)


@exercise("frechet_distance")
def test_frechet_distance_is_zero_for_one_gaussian_and_matches_sqrtm(ex):
    rng = np.random.default_rng(3)
    S1, S2 = _random_psd(rng, 8), _random_psd(rng, 8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    assert ex.frechet_distance(mu1, S1, mu1, S1) == pytest.approx(0.0, abs=1e-9)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(S1 + S2) - 2 * np.trace(scipy.linalg.sqrtm(S1 @ S2)).real
    assert ex.frechet_distance(mu1, S1, mu2, S2) == pytest.approx(expected, rel=1e-8)
    assert ex.frechet_distance(mu2, S2, mu1, S1) == pytest.approx(expected, rel=1e-8)


def _mmd2_by_loops(x, y, degree=3, coef=1.0):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + coef) ** degree
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@exercise("polynomial_mmd2")
def test_polynomial_mmd2_matches_the_double_sum(ex):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((9, 4)), rng.standard_normal((6, 4)) + 0.5
    assert ex.polynomial_mmd2(x, y) == pytest.approx(_mmd2_by_loops(x, y), rel=1e-12)
    assert ex.polynomial_mmd2(x, y, degree=2, coef=0.5) == pytest.approx(_mmd2_by_loops(x, y, 2, 0.5), rel=1e-12)


@exercise("polynomial_mmd2")
def test_polynomial_mmd2_is_unbiased(ex):
    # Two sets from ONE distribution: the estimate averages to 0 (some values negative); a shift is seen.
    rng = np.random.default_rng(5)
    same = [ex.polynomial_mmd2(rng.standard_normal((20, 3)), rng.standard_normal((20, 3))) for _ in range(300)]
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 4 * np.std(same) / np.sqrt(len(same))
    shifted = ex.polynomial_mmd2(rng.standard_normal((200, 3)), rng.standard_normal((200, 3)) + 1.0)
    assert shifted > 20 * np.std(same) / np.sqrt(len(same))


@exercise("kid")
def test_kid_on_the_whole_sets_is_one_mmd(ex):
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 4)) * 1.5
    mean, std = ex.kid(x, y, subsets=3, subset_size=30)
    assert mean == pytest.approx(_mmd2_by_loops(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


@exercise("kid")
def test_kid_averages_over_the_drawn_subsets(ex):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal((40, 3)) + 0.3
    draws = np.random.default_rng(11)
    values = []
    for _ in range(5):
        ix, iy = draws.choice(50, 12, replace=False), draws.choice(40, 12, replace=False)
        values.append(_mmd2_by_loops(x[ix], y[iy]))
    mean, std = ex.kid(x, y, subsets=5, subset_size=12, seed=11)
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-10)
