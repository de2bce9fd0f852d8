"""Checks for lessons/09_latent_diffusion.py.

Every formula here is backend-neutral, so most checks run it on NumPy / autograd AND on torch,
in float64, on inputs of unequal sizes (N != K != D) and with vectors far from unit length.
The gradient checks take each derivative both with autograd and with torch's backward."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from two_backends import BACKENDS, grads, host, on, rng

LESSON = "09"
exercise = pytest.mark.exercise
EPS32 = float(np.finfo(np.float32).eps)






# ----------------------------------------------------------------------------------------------
# KL regularisation

@exercise("kl_sample")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_sample_is_mu_plus_sigma_times_the_noise(ex, backend):
    r = rng(0)
    mean, logvar, noise = 3 * r.standard_normal((2, 3, 4)), 2 * r.standard_normal((2, 3, 4)), r.standard_normal((2, 3, 4))
    z = host(ex.kl_sample(on(backend, mean), on(backend, logvar), on(backend, noise)))
    assert z.shape == (2, 3, 4)
    # sigma = exp(logvar / 2), the standard deviation: (z - mu) / sigma gives back the noise
    np.testing.assert_allclose((z - mean) / np.exp(0.5 * logvar), noise, rtol=1e-12, atol=1e-12)


@exercise("kl_sample")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_sample_gradients_are_the_reparameterisation(ex, backend):
    # dz/dmu = 1 and dz/dlogvar = sigma eps / 2: the noise is a constant, mu and logvar get gradients
    r = rng(1)
    mean, logvar, noise = r.standard_normal((3, 5)), r.standard_normal((3, 5)), r.standard_normal((3, 5))
    g_mean, g_logvar = grads(backend, ex.kl_sample, (mean, logvar, noise), (0, 1))
    np.testing.assert_allclose(g_mean, np.ones_like(mean), rtol=1e-12)
    np.testing.assert_allclose(g_logvar, 0.5 * np.exp(0.5 * logvar) * noise, rtol=1e-12, atol=1e-14)


@exercise("kl_sample")
def test_kl_sample_draws_from_the_posterior_monte_carlo(ex):
    # The reparameterised draws are N(mu, sigma^2): the Monte Carlo mean of log q(z) - log p(z)
    # over them estimates KL(q || p) in closed form, within 5 standard errors of the estimate.
    mu, sigma, n = 0.8, 0.35, 200_000
    eps = rng(2).standard_normal((n, 1))
    z = ex.kl_sample(np.full((n, 1), mu), np.full((n, 1), np.log(sigma ** 2)), eps)[:, 0]
    integrand = stats.norm.logpdf(z, mu, sigma) - stats.norm.logpdf(z)
    exact = 0.5 * (mu ** 2 + sigma ** 2 - 1 - np.log(sigma ** 2))
    assert abs(integrand.mean() - exact) < 5 * integrand.std() / math.sqrt(n)
    assert abs(z.std() - sigma) < 5 * sigma / math.sqrt(2 * n)      # the std of a sample std


@exercise("kl_divergence")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_divergence_matches_numerical_integrals_summed_over_unequal_axes(ex, backend):
    r = rng(3)
    mean, logvar = 1.5 * r.standard_normal((2, 3, 2, 5)), r.uniform(-2.5, 1.5, (2, 3, 2, 5))
    got = host(ex.kl_divergence(on(backend, mean), on(backend, logvar)))
    assert got.shape == (2,)
    expected = np.zeros(2)
    for idx in np.ndindex(mean.shape):        # KL(q || p) = int q log(q / p), one latent entry at a time
        m, s = mean[idx], math.exp(0.5 * logvar[idx])
        q = stats.norm(m, s)
        expected[idx[0]] += integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z)),
                                           m - 20 * s, m + 20 * s, epsabs=1e-12, epsrel=1e-10)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-7)


@exercise("kl_divergence")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_divergence_is_zero_at_the_prior_and_its_gradient(ex, backend):
    zeros = np.zeros((3, 2, 4))
    np.testing.assert_array_equal(host(ex.kl_divergence(on(backend, zeros), on(backend, zeros))), np.zeros(3))
    r = rng(4)
    mean, logvar = r.standard_normal((3, 2, 4)), r.standard_normal((3, 2, 4))
    # dKL/dmu = mu, dKL/dlogvar = (sigma^2 - 1) / 2
    g_mean, g_logvar = grads(backend, ex.kl_divergence, (mean, logvar), (0, 1))
    np.testing.assert_allclose(g_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(g_logvar, 0.5 * (np.exp(logvar) - 1), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# VQ: distances, straight-through, the two loss terms

def _vq_case(seed, N=7, K=5, D=3):
    r = rng(seed)
    z = 3.0 * r.standard_normal((N, D)) + 1.0                 # far from unit length
    codebook = 0.7 * r.standard_normal((K, D)) - 0.5
    return z, codebook


@exercise("vq_distances")
@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_distances_are_squared_euclidean_distances(ex, backend):
    z, codebook = _vq_case(5)
    d = host(ex.vq_distances(on(backend, z), on(backend, codebook)))
    assert d.shape == (7, 5), "one row per z_n, one column per code e_k: (N, K)"
    brute = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)            # (N, K, D) -> (N, K)
    scale = (z ** 2).sum(1).max() + (codebook ** 2).sum(1).max()            # the size of what cancels
    np.testing.assert_allclose(d, brute, rtol=0, atol=64 * np.finfo(np.float64).eps * scale)


@exercise("vq_distances")
def test_vq_distances_in_float32_and_the_nearest_code(ex):
    z, codebook = _vq_case(6, N=40, K=9, D=4)
    d = ex.vq_distances(torch.from_numpy(z).float(), torch.from_numpy(codebook).float())
    assert d.dtype == torch.float32
    brute = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    scale = (z ** 2).sum(1).max() + (codebook ** 2).sum(1).max()
    # float32: each of the ~3D rounded terms errs by eps times the size of what cancels
    np.testing.assert_allclose(d.double().numpy(), brute, rtol=0, atol=8 * 4 * EPS32 * scale)
    # a code's distance to itself is (about) zero, and it is its own nearest code
    self_d = host(ex.vq_distances(codebook, codebook))
    np.testing.assert_allclose(np.diag(self_d), 0.0, atol=64 * np.finfo(np.float64).eps * scale)
    np.testing.assert_array_equal(self_d.argmin(1), np.arange(len(codebook)))


@exercise("straight_through")
@pytest.mark.parametrize("backend", BACKENDS)
def test_straight_through_has_the_value_of_z_q(ex, backend):
    z, codebook = _vq_case(7)
    z_q = codebook[np.arange(7) % 5]
    out = host(ex.straight_through(on(backend, z), on(backend, z_q)))
    np.testing.assert_allclose(out, z_q, rtol=0, atol=4 * np.finfo(np.float64).eps * np.abs(z).max())


@exercise("straight_through")
@pytest.mark.parametrize("backend", BACKENDS)
def test_straight_through_gradient_is_the_identity_in_z_and_none_in_z_q(ex, backend):
    z, codebook = _vq_case(8)
    z_q = codebook[np.arange(7) % 5]
    w = rng(9).standard_normal(z.shape)                        # L = sum(w * out): dL/dz must be w
    g_z, g_zq = grads(backend, lambda a, b: w * ex.straight_through(a, b) if backend == "numpy"
                      else torch.from_numpy(w) * ex.straight_through(a, b), (z, z_q), (0, 1))
    np.testing.assert_allclose(g_z, w, rtol=1e-12)
    np.testing.assert_array_equal(g_zq, np.zeros_like(z_q))


def _loss_grads(backend, loss, z_e, codebook, k):
    """Gradients of sum(loss(z_e, codebook[k])) with respect to z_e (the encoder) and the codebook."""
    return grads(backend, lambda z, E: loss(z, E[k] if backend == "numpy" else E[torch.from_numpy(k)]),
                 (z_e, codebook), (0, 1))


def _expected_codebook_grad(z_e, codebook, k, weight):
    """d/de of weight * sum_n mean_D (z_n - e_{k_n})^2: -2 weight / D * sum_{n: k_n = i} (z_n - e_i)."""
    g = np.zeros_like(codebook)
    for n, i in enumerate(k):
        g[i] -= 2 * weight * (z_e[n] - codebook[i]) / z_e.shape[1]
    return g


@exercise("vq_loss_terms")
@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_loss_terms_are_per_example_means(ex, backend):
    r = rng(10)
    z_e, z_q = 2 * r.standard_normal((3, 2, 4, 5)), r.standard_normal((3, 2, 4, 5))
    codebook, commitment = (host(t) for t in ex.vq_loss_terms(on(backend, z_e), on(backend, z_q)))
    expected = ((z_e - z_q) ** 2).reshape(3, -1).mean(1)
    assert codebook.shape == commitment.shape == (3,)
    np.testing.assert_allclose(codebook, expected, rtol=1e-12)
    np.testing.assert_allclose(commitment, expected, rtol=1e-12)


@exercise("vq_loss_terms")
@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_loss_terms_gradients_reach_one_side_each(ex, backend):
    z_e, codebook = _vq_case(11, N=9, K=4, D=3)
    k = ((z_e[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    # the codebook term moves only the codebook ...
    g_z, g_E = _loss_grads(backend, lambda z, e: ex.vq_loss_terms(z, e)[0], z_e, codebook, k)
    np.testing.assert_array_equal(g_z, np.zeros_like(z_e), err_msg="the codebook term must not reach the encoder")
    np.testing.assert_allclose(g_E, _expected_codebook_grad(z_e, codebook, k, 1.0), rtol=1e-12, atol=1e-14)
    # ... the commitment term only the encoder
    g_z, g_E = _loss_grads(backend, lambda z, e: ex.vq_loss_terms(z, e)[1], z_e, codebook, k)
    np.testing.assert_array_equal(g_E, np.zeros_like(codebook), err_msg="the commitment term must not reach the codebook")
    np.testing.assert_allclose(g_z, 2 * (z_e - codebook[k]) / 3, rtol=1e-12)


@exercise("vq_loss")
@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_loss_puts_beta_on_the_commitment_term(ex, backend):
    # The two terms have the same VALUE ||z_e - e||^2, so only the gradients tell where beta is:
    # VQ-VAE eq. 3 scales the encoder's gradient by beta and leaves the codebook's alone.
    z_e, codebook = _vq_case(12, N=8, K=3, D=5)
    k = ((z_e[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    for beta in (0.25, 2.0):
        value = host(ex.vq_loss(on(backend, z_e), on(backend, codebook[k]), beta))
        np.testing.assert_allclose(value, (1 + beta) * ((z_e - codebook[k]) ** 2).mean(1), rtol=1e-12)
        g_z, g_E = _loss_grads(backend, lambda z, e: ex.vq_loss(z, e, beta), z_e, codebook, k)
        np.testing.assert_allclose(g_z, beta * 2 * (z_e - codebook[k]) / 5, rtol=1e-12,
                                   err_msg="the encoder's gradient is beta times the commitment term's")
        np.testing.assert_allclose(g_E, _expected_codebook_grad(z_e, codebook, k, 1.0), rtol=1e-12, atol=1e-14,
                                   err_msg="the codebook's gradient does not depend on beta")


@exercise("vq_loss")
def test_vq_loss_default_beta_is_the_papers(ex):
    z_e, codebook = _vq_case(13, N=6, K=4, D=2)
    k = ((z_e[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    (g_z,) = grads("torch", lambda z: ex.vq_loss(z, torch.from_numpy(codebook[k])), (z_e,), (0,))
    np.testing.assert_allclose(g_z, 0.25 * 2 * (z_e - codebook[k]) / 2, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# The EMA codebook

@exercise("laplace_smoothing")
@pytest.mark.parametrize("backend", BACKENDS)
def test_laplace_smoothing_formula_keeps_the_total(ex, backend):
    counts = np.array([0.0, 3.5, 0.0, 10.0, 1.25, 0.5])          # K = 6, two unused codes
    for eps in (0.5, 1e-5):
        got = host(ex.laplace_smoothing(on(backend, counts), eps))
        n = counts.sum()
        np.testing.assert_allclose(got, (counts + eps) / (n + 6 * eps) * n, rtol=1e-12)
        assert np.all(got > 0), "every code must get a count > 0"
        np.testing.assert_allclose(got.sum(), n, rtol=1e-12)
        np.testing.assert_array_equal(np.argsort(got, kind="stable"), np.argsort(counts, kind="stable"))


@exercise("laplace_smoothing")
def test_laplace_smoothing_with_a_tiny_eps_is_nearly_the_identity(ex):
    counts = torch.tensor([2.0, 7.0, 1.0, 4.0, 9.0], dtype=torch.float64)
    np.testing.assert_allclose(host(ex.laplace_smoothing(counts, 1e-9)), counts.numpy(), rtol=1e-8)


def _ema_reference(counts, sums, z, k, decay, eps):
    """VQ-VAE Appendix A.1 written out code by code, with Sonnet's Laplace smoothing."""
    K = len(counts)
    N = np.array([decay * counts[i] + (1 - decay) * np.sum(k == i) for i in range(K)])
    m = np.stack([decay * sums[i] + (1 - decay) * z[k == i].sum(0) for i in range(K)])
    smoothed = (N + eps) / (N.sum() + K * eps) * N.sum()
    return N, m, m / smoothed[:, None]


@exercise("ema_codebook_update")
@pytest.mark.parametrize("backend", BACKENDS)
def test_ema_codebook_update_matches_appendix_a1(ex, backend):
    r = rng(14)
    N, K, D = 11, 4, 3
    counts = np.array([2.0, 0.0, 5.0, 1.5])                  # code 1: never used, before or now
    sums = 2 * r.standard_normal((K, D)) * (counts[:, None] > 0)
    z = 3 * r.standard_normal((N, D)) + 1
    k = np.array([0, 2, 3, 0, 2, 2, 3, 0, 0, 2, 3])
    out = ex.ema_codebook_update(on(backend, counts), on(backend, sums), on(backend, z), on(backend, k), 0.9, 1e-3)
    for got, expected, name in zip(out, _ema_reference(counts, sums, z, k, 0.9, 1e-3), ("counts", "sums", "codebook")):
        got = host(got)
        assert np.all(np.isfinite(got)), f"{name}: an unused code must not divide by zero (Laplace smoothing)"
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=name)


@exercise("ema_codebook_update")
@pytest.mark.parametrize("backend", BACKENDS)
def test_ema_codebook_update_with_no_memory_is_a_k_means_step(ex, backend):
    # decay 0: the codebook becomes the mean of the z assigned to each code (eps tiny)
    r = rng(15)
    z = 2 * r.standard_normal((10, 2)) - 1
    k = np.array([1, 0, 2, 1, 1, 0, 2, 2, 0, 1])
    out = ex.ema_codebook_update(on(backend, np.ones(3)), on(backend, np.ones((3, 2))), on(backend, z),
                                 on(backend, k), 0.0, 1e-12)
    counts, codebook = host(out[0]), host(out[2])
    np.testing.assert_allclose(counts, [3, 4, 3], rtol=1e-12)
    np.testing.assert_allclose(codebook, np.stack([z[k == i].mean(0) for i in range(3)]), rtol=1e-9)


@exercise("ema_codebook_update")
def test_ema_codebook_update_takes_z_as_a_constant(ex):
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    out = ex.ema_codebook_update(torch.ones(3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64),
                                 z, torch.tensor([0, 1, 2, 0, 1, 2]), 0.5)
    assert not any(t.requires_grad for t in out), "the EMA codebook is not trained by backprop: sg[z]"


# ----------------------------------------------------------------------------------------------
# Code usage and the scale factor

@exercise("perplexity")
def test_perplexity_of_uniform_and_single_code_usage(ex):
    assert ex.perplexity(np.full(7, 13)) == pytest.approx(7.0, rel=1e-12)           # uniform: K
    assert ex.perplexity(np.array([0, 0, 40, 0, 0])) == pytest.approx(1.0, rel=1e-12)  # one code: 1
    assert ex.perplexity(np.array([0, 5, 0, 5, 5, 0, 0, 0])) == pytest.approx(3.0, rel=1e-12)  # 0 log 0 = 0
    got = ex.perplexity(torch.tensor([4, 4, 4, 4]))
    assert isinstance(got, float) and got == pytest.approx(4.0, rel=1e-12)


@exercise("perplexity")
def test_perplexity_is_the_exponential_of_the_entropy(ex):
    h = rng(16).integers(0, 50, size=23)
    h[[2, 9]] = 0
    expected = math.exp(stats.entropy(h / h.sum()))                    # natural log
    assert ex.perplexity(h) == pytest.approx(expected, rel=1e-12)
    assert ex.perplexity(7 * h) == pytest.approx(expected, rel=1e-12)  # counts, not their scale


@exercise("perplexity")
def test_epoch_perplexity_is_taken_on_the_summed_histograms(ex):
    # two batches on disjoint halves of K = 8 codes: each uses 4 codes, the epoch uses all 8
    h1, h2 = np.array([3, 3, 3, 3, 0, 0, 0, 0]), np.array([0, 0, 0, 0, 3, 3, 3, 3])
    assert ex.perplexity(h1) == pytest.approx(4.0, rel=1e-12)
    assert ex.perplexity(h1 + h2) == pytest.approx(8.0, rel=1e-12)
    assert ex.perplexity(h1 + h2) > np.mean([ex.perplexity(h1), ex.perplexity(h2)])


@exercise("scale_factor")
@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_factor_gives_unit_population_std_without_centring(ex, backend):
    z = 2.5 * rng(17).standard_normal((5, 4, 3, 2)) + 3.0          # mean 3: scaled, not centred
    s = ex.scale_factor(on(backend, z))
    assert isinstance(s, float)
    assert np.std(s * z) == pytest.approx(1.0, rel=1e-12)         # population std (ddof 0)
    assert s == pytest.approx(1 / np.std(z), rel=1e-12)


@exercise("scale_factor")
@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_factor_on_few_entries_and_its_scaling(ex, backend):
    z = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])              # 6 entries: ddof 1 would differ by sqrt(6/5)
    s = ex.scale_factor(on(backend, z))
    assert s == pytest.approx(1 / np.sqrt(np.mean((z - z.mean()) ** 2)), rel=1e-12)
    assert ex.scale_factor(on(backend, 4.0 * z)) == pytest.approx(s / 4.0, rel=1e-12)


@exercise("scale_factor")
def test_scale_factor_of_float32_latents(ex):
    z = torch.from_numpy(0.2 * rng(18).standard_normal((16, 4, 8, 8))).float()
    s = ex.scale_factor(z)
    # float32 sums over n = 4096 entries: relative error within a few n eps, far under 1e-3
    assert s * float(z.double().std(correction=0)) == pytest.approx(1.0, rel=4096 * EPS32)
