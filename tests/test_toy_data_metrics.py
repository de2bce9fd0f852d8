"""2-D toy data, the exact Gaussian-mixture oracle, and the two-sample metrics."""
import math

import autograd
import numpy as np
import pytest
import scipy.stats
import torch

from minidiff import diffusion, metrics, schedules
from minidiff.data import toy2d
from minidiff.data.toy2d import DATASETS, GaussianMixture, eight_gaussians_mixture, sample_toy



@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_shape_seed_and_scale(name):
    x = sample_toy(name, 4000, 0)
    assert x.shape == (4000, 2) and x.dtype == np.float64 and np.isfinite(x).all()
    np.testing.assert_array_equal(x, sample_toy(name, 4000, 0))
    np.testing.assert_array_equal(x, sample_toy(name, 4000, np.random.default_rng(0)))
    assert not np.allclose(x, sample_toy(name, 4000, 1))
    std = x.std(axis=0)
    assert np.all((std > 0.5) & (std < 1.5)), std          # roughly unit scale
    assert np.all(np.abs(x.mean(axis=0)) < 0.75)
    assert np.abs(x).max() < 10


def test_checkerboard_is_a_checkerboard():
    """FFJORD's checkerboard: the 8 'black' unit squares of [-2, 2]^2, equally filled."""
    x = sample_toy("checkerboard", 8000, 0) * 1.15            # undo the standardisation
    cells = np.floor(x).astype(int)
    assert np.all(np.abs(x) <= 2)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert len(counts) == 8 and counts.min() > 0.8 * 1000


def test_exact_density_only_where_known():
    assert isinstance(toy2d.exact_density("8gaussians"), GaussianMixture)
    assert toy2d.exact_density("swiss_roll") is None


# ---------------------------------------------------------------------------------------------
# Gaussian mixtures: exact log-density, score, denoiser, eps-model.

def _gmm():
    return GaussianMixture(means=[[1.0, -0.5], [-1.2, 0.3], [0.0, 1.5]], stds=[[0.3, 0.5], [0.4, 0.4], [0.2, 0.6]],
                           weights=[0.5, 0.3, 0.2])


def test_log_prob_matches_scipy():
    gm = _gmm()
    x = np.random.default_rng(0).standard_normal((20, 2))
    for alpha, sigma in ((1.0, 0.0), (0.8, 0.6)):
        ref = np.log(sum(w * scipy.stats.multivariate_normal(alpha * m, np.diag(alpha ** 2 * v + sigma ** 2)).pdf(x)
                         for w, m, v in zip(gm.weights, gm.means, gm.vars)))
        np.testing.assert_allclose(gm.log_prob(x, alpha, sigma), ref, rtol=1e-10)


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.9, 0.3), (0.2, 0.98)])
def test_score_is_the_gradient_of_log_prob(alpha, sigma):
    gm = _gmm()
    x = 2 * np.random.default_rng(1).standard_normal((30, 2))
    grad = autograd.grad(lambda z: autograd.numpy.sum(gm.log_prob(z, alpha, sigma)))(x)
    np.testing.assert_allclose(gm.score(x, alpha, sigma), grad, rtol=1e-9, atol=1e-12)


def test_score_and_denoiser_accept_per_example_noise_levels():
    gm = _gmm()
    rng = np.random.default_rng(2)
    for B in (2, 5):  # B = 2 = d is where a wrong broadcast would go unnoticed
        x, alpha = rng.standard_normal((B, 2)), rng.uniform(0.3, 1.0, B)
        sigma = np.sqrt(1 - alpha ** 2)
        score, den = gm.score(x, alpha, sigma), gm.denoise(x, alpha, sigma)
        for i in range(B):
            np.testing.assert_allclose(score[i], gm.score(x[i:i + 1], alpha[i], sigma[i])[0], rtol=1e-12)
            np.testing.assert_allclose(den[i], gm.denoise(x[i:i + 1], alpha[i], sigma[i])[0], rtol=1e-12)


def test_denoiser_one_component_closed_form():
    """x0 ~ N(mu, diag(s^2)), x = alpha x0 + sigma eps:  E[x0 | x] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x - alpha mu)."""
    mu, s = np.array([0.7, -1.1]), np.array([0.5, 1.3])
    gm = GaussianMixture([mu], [s])
    x = np.random.default_rng(3).standard_normal((10, 2))
    for alpha, sigma in ((1.0, 0.5), (0.6, 0.8), (1.0, 3.0)):
        closed = mu + alpha * s ** 2 / (alpha ** 2 * s ** 2 + sigma ** 2) * (x - alpha * mu)
        np.testing.assert_allclose(gm.denoise(x, alpha, sigma), closed, rtol=1e-12)


def test_denoiser_of_a_mixture_matches_monte_carlo():
    """E[x0 | x] by self-normalised importance sampling from the prior."""
    gm = eight_gaussians_mixture()
    alpha, sigma = 0.8, 0.6
    x = np.array([[0.5, 0.5], [-1.0, 0.2], [0.0, 0.0]])
    x0 = gm.sample(400_000, 4)
    for xi, d in zip(x, gm.denoise(x, alpha, sigma)):
        logw = -0.5 * np.sum((xi - alpha * x0) ** 2, axis=1) / sigma ** 2
        w = np.exp(logw - logw.max())
        mc = (w[:, None] * x0).sum(0) / w.sum()
        np.testing.assert_allclose(d, mc, atol=0.01)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_eps_model_is_consistent_with_score_and_denoiser(backend):
    gm = eight_gaussians_mixture()
    ab = schedules.alpha_bars(schedules.linear_betas(100))
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((7, 2)), rng.integers(0, 100, 7)
    a, s = np.sqrt(ab[t]), np.sqrt(1 - ab[t])
    if backend == "torch":
        eps = gm.eps_model(ab)(torch.from_numpy(x), torch.from_numpy(t))
        assert isinstance(eps, torch.Tensor) and eps.dtype == torch.float64
        eps = eps.numpy()
    else:
        eps = gm.eps_model(ab)(x, t)
    np.testing.assert_allclose(eps, -s[:, None] * gm.score(x, a, s), rtol=1e-10)
    np.testing.assert_allclose(eps, diffusion.x0_to_eps(x, t, gm.denoise(x, a, s), ab), rtol=1e-9, atol=1e-12)
    # the eps-model is the posterior mean of the noise: unbiased on average over (x0, eps) pairs
    n = 100_000
    x0, noise, tt = gm.sample(n, 6), rng.standard_normal((n, 2)), np.full(n, 40)
    pred = gm.eps_model(ab)(diffusion.q_sample(x0, tt, ab, noise), tt)
    # E[(eps - E[eps|x]) E[eps|x]] = 0, i.e. the prediction is orthogonal to its error
    assert abs(np.mean(np.sum((noise - pred) * pred, axis=1))) < 0.02
    assert np.mean((noise - pred) ** 2) < np.mean(noise ** 2)


def test_gaussian_mixture_validates():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([[0.0, 0.0], [1.0, 1.0]], 0.1, weights=[0.9, 0.2])
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([[0.0, 0.0]], 0.0)
    with pytest.raises(ValueError, match="means"):
        GaussianMixture([0.0, 0.0], 0.1)


# ---------------------------------------------------------------------------------------------
# Metrics.

def test_metrics_near_zero_for_the_same_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(0)
    x, y = sample_toy("two_moons", 800, rng), sample_toy("two_moons", 800, rng)
    z = y + np.array([0.4, 0.0])
    same = (metrics.sliced_wasserstein(x, y), metrics.mmd2_unbiased(x, y), metrics.energy_distance(x, y))
    shifted = (metrics.sliced_wasserstein(x, z), metrics.mmd2_unbiased(x, z), metrics.energy_distance(x, z))
    assert same[0] < 0.08 and shifted[0] > 0.2
    assert abs(same[1]) < 2e-3 and shifted[1] > 0.05
    assert abs(same[2]) < 5e-3 and shifted[2] > 0.05
    # (sliced Wasserstein has a finite-sample bias ~ n^-1/2; the other two are unbiased or nearly so)
    assert shifted[0] > 4 * same[0] and shifted[1] > 10 * abs(same[1]) and shifted[2] > 10 * abs(same[2])


def test_sliced_wasserstein_of_a_translation():
    """Along direction theta a translation by delta is a 1-D shift by <delta, theta>, so
    SW_2 = |delta| sqrt(mean cos^2) -> |delta| / sqrt(2) in 2-D."""
    x = np.random.default_rng(1).standard_normal((300, 2))
    delta = np.array([0.6, -0.8])
    sw = metrics.sliced_wasserstein(x, x + delta, n_projections=4000, seed=3)
    assert sw == pytest.approx(1.0 / math.sqrt(2), rel=0.03)
    assert metrics.sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_p1_of_points_on_a_line_matches_scipy():
    """Points on the x-axis: the projection on theta scales every 1-D W_1 by |cos theta|, so
    SW_1 = W_1(u, v) mean|cos theta| -> W_1(u, v) 2 / pi."""
    rng = np.random.default_rng(2)
    u, v = rng.standard_normal(400), rng.exponential(1.0, 400) + 0.5
    on_line = lambda a: np.stack([a, np.zeros_like(a)], axis=1)
    sw1 = metrics.sliced_wasserstein(on_line(u), on_line(v), n_projections=2000, p=1)
    assert sw1 == pytest.approx(scipy.stats.wasserstein_distance(u, v) * 2 / math.pi, rel=0.03)
    # unequal sizes are compared through quantiles
    w = rng.exponential(1.0, 600) + 0.5
    sw1u = metrics.sliced_wasserstein(on_line(u), on_line(w), n_projections=2000, p=1)
    assert sw1u == pytest.approx(scipy.stats.wasserstein_distance(u, w) * 2 / math.pi, rel=0.05)


def _energy_brute(x, y):
    d = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    n, m = len(x), len(y)
    return 2 * d(x, y).mean() - d(x, x).sum() / (n * (n - 1)) - d(y, y).sum() / (m * (m - 1))


def test_energy_distance_brute_force_and_scipy():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 2)), rng.standard_normal((45, 2)) + 0.3
    assert metrics.energy_distance(x, y) == pytest.approx(_energy_brute(x, y), rel=1e-6)
    # scipy's (1-D) is sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) with the within-sample means over all
    # n^2 pairs (diagonal included); ours averages over distinct pairs.  Convert and compare.
    u, v = rng.standard_normal(70), rng.standard_normal(50) * 1.5 + 0.2
    sxx, syy = np.abs(u[:, None] - u[None]).sum(), np.abs(v[:, None] - v[None]).sum()
    n, m = len(u), len(v)
    ours_from_scipy = (scipy.stats.energy_distance(u, v) ** 2 + sxx / n ** 2 + syy / m ** 2
                       - sxx / (n * (n - 1)) - syy / (m * (m - 1)))
    assert metrics.energy_distance(u[:, None], v[:, None]) == pytest.approx(ours_from_scipy, rel=1e-6)


def test_mmd_brute_force():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 2)), rng.standard_normal((25, 2)) * 1.3
    hs = (0.5, 1.0)
    k = lambda a, b: sum(math.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in hs)
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(a, b) for a in x for b in y) / (n * m)
    assert metrics.mmd2_unbiased(x, y, bandwidths=hs) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)


def test_metrics_on_torch_tensors_give_the_same_numbers():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((200, 2)), rng.standard_normal((150, 2)) + 0.2
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for f in (metrics.sliced_wasserstein, metrics.mmd2_unbiased, metrics.energy_distance):
        assert f(tx, ty) == pytest.approx(f(x, y), rel=1e-9), f.__name__
        assert f(tx.float(), ty.float()) == pytest.approx(f(x, y), rel=1e-4), f.__name__
    gm = eight_gaussians_mixture()
    pts = gm.sample(100, 0)
    assert metrics.exact_nll(gm.log_prob, pts) == pytest.approx(-gm.log_prob(pts).mean(), rel=1e-12)
    assert metrics.exact_nll(gm.log_prob, torch.from_numpy(pts)) == pytest.approx(-gm.log_prob(pts).mean(), rel=1e-12)


def test_metrics_check_shapes():
    with pytest.raises(ValueError, match="shapes"):
        metrics.energy_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mmd2_unbiased(np.zeros((1, 2)), np.zeros((5, 2)))


def test_sliced_wasserstein_report_is_the_hand_computation():
    data = [sample_toy("two_moons", 400, 100 + i) for i in range(3)]
    fresh = [sample_toy("two_moons", 400, 200 + i) for i in range(3)]
    x = sample_toy("two_moons", 400, 7) + 0.3                       # a shifted "model"
    r = metrics.sliced_wasserstein_report(x, data, list(zip(fresh, data)))
    per_set = [metrics.sliced_wasserstein(x, d) for d in data]
    floor = [metrics.sliced_wasserstein(f, d) for f, d in zip(fresh, data)]
    assert r["per_set"] == per_set and r["floor_per_pair"] == floor
    assert r["sliced_wasserstein"] == np.mean(per_set) and r["data_floor"] == np.mean(floor)
    assert r["ratio"] == pytest.approx(np.mean(per_set) / np.mean(floor), rel=1e-15) and r["ratio"] > 3
    # one sample set per data set (e.g. one per seed), and the floor alone
    xs = [sample_toy("two_moons", 400, 300 + i) for i in range(3)]
    r2 = metrics.sliced_wasserstein_report(xs, data)
    assert r2["per_set"] == [metrics.sliced_wasserstein(a, d) for a, d in zip(xs, data)] and r2["data_floor"] is None
    assert metrics.sliced_wasserstein_report(floor_pairs=list(zip(fresh, data)))["floor_per_pair"] == floor
    with pytest.raises(ValueError, match="one per data set"):
        metrics.sliced_wasserstein_report(xs[:2], data)


def test_data_against_data_is_at_the_floor():
    data = [sample_toy("swiss_roll", 1000, 10 + i) for i in range(5)]
    fresh = [sample_toy("swiss_roll", 1000, 20 + i) for i in range(5)]
    other = [sample_toy("swiss_roll", 1000, 30 + i) for i in range(5)]
    r = metrics.sliced_wasserstein_report(other, data, list(zip(fresh, data)))
    assert 0.6 < r["ratio"] < 1.6
