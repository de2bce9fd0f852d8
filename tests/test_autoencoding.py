"""The latent-space formulas of latent diffusion (minidiff.autoencoding): closed forms, gradients
on both backends, the EMA codebook, code usage over an epoch, the scale factor, bad input."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from scipy import integrate, stats

from minidiff import autoencoding as ae

torch = pytest.importorskip("torch")


def rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------
# KL regularisation

def test_kl_of_the_standard_normal_is_zero_and_grows_away_from_it():
    mean, logvar = np.zeros((3, 2, 4, 5)), np.zeros((3, 2, 4, 5))
    np.testing.assert_array_equal(ae.kl_divergence(mean, logvar), np.zeros(3))
    assert np.all(ae.kl_divergence(mean + 0.1, logvar) > 0)
    assert np.all(ae.kl_divergence(mean, logvar - 0.1) > 0)


@pytest.mark.parametrize("mu, sigma", [(0.7, 0.4), (-1.3, 2.5), (0.0, 1.0)])
def test_kl_1d_matches_a_numerical_integral(mu, sigma):
    q, p = stats.norm(mu, sigma), stats.norm(0, 1)
    integral, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), mu - 15 * sigma, mu + 15 * sigma)
    got = ae.kl_divergence(np.array([[mu]]), np.array([[np.log(sigma ** 2)]]))
    np.testing.assert_allclose(got, [integral], rtol=1e-7, atol=1e-10)


def test_kl_sums_over_every_non_batch_axis_of_unequal_sizes():
    r = rng(1)
    mean, logvar = r.standard_normal((2, 3, 4, 5)), r.standard_normal((2, 3, 4, 5))
    got = ae.kl_divergence(mean, logvar)
    assert got.shape == (2,)
    for b in range(2):  # the 1-D closed form, entry by entry
        want = sum(np.log(1 / np.exp(lv / 2)) + (np.exp(lv) + m ** 2) / 2 - 0.5
                   for m, lv in zip(mean[b].ravel(), logvar[b].ravel()))
        np.testing.assert_allclose(got[b], want, rtol=1e-12)


def test_posterior_splits_the_channel_axis_and_clamps_logvar_at_both_ends():
    r = rng(2)
    moments = r.standard_normal((2, 6, 3, 3))
    moments[:, 3:, 0, 0] = 50.0
    moments[:, 3:, 1, 1] = -50.0
    mean, logvar = ae.kl_posterior(moments)
    np.testing.assert_array_equal(mean, moments[:, :3])
    assert logvar.shape == (2, 3, 3, 3)
    assert np.all(logvar[:, :, 0, 0] == 20.0) and np.all(logvar[:, :, 1, 1] == -30.0)
    inside = np.ones((3, 3), bool)
    inside[0, 0] = inside[1, 1] = False
    np.testing.assert_array_equal(logvar[:, :, inside], moments[:, 3:][:, :, inside])
    _, lv = ae.kl_posterior(moments, logvar_range=(-1.0, 1.0))
    assert lv.min() >= -1.0 and lv.max() <= 1.0


def test_reparameterised_samples_have_the_posterior_mean_and_std():
    n = 200_000
    mean = np.full((n, 2), [1.5, -0.5])
    logvar = np.full((n, 2), np.log([0.3 ** 2, 2.0 ** 2]))
    z = ae.kl_sample(mean, logvar, rng(3).standard_normal((n, 2)))
    # 6 standard errors of the sample mean and of the sample std
    np.testing.assert_allclose(z.mean(0), [1.5, -0.5], atol=6 * 2.0 / np.sqrt(n))
    np.testing.assert_allclose(z.std(0), [0.3, 2.0], rtol=6 / np.sqrt(2 * n))
    np.testing.assert_array_equal(ae.kl_mode(mean, logvar), mean)


# ----------------------------------------------------------------------------------------------
# VQ: distances, nearest code, straight-through, losses

def test_expanded_distances_equal_direct_ones_and_nearest_is_their_argmin():
    r = rng(4)
    z, E = 3 * r.standard_normal((7, 5)) + 1, 2 * r.standard_normal((11, 5)) - 0.5
    direct = ((z[:, None, :] - E[None, :, :]) ** 2).sum(-1)
    d = ae.vq_distances(z, E)
    assert d.shape == (7, 11)
    np.testing.assert_allclose(d, direct, rtol=1e-12, atol=1e-12 * direct.max())
    np.testing.assert_array_equal(ae.vq_nearest(z, E), direct.argmin(1))
    z_q, k = ae.vq_quantize(z, E)
    np.testing.assert_array_equal(z_q, E[direct.argmin(1)])
    np.testing.assert_array_equal(k, direct.argmin(1))


def test_a_code_is_its_own_nearest_code():
    E = rng(5).standard_normal((9, 3))
    np.testing.assert_array_equal(ae.vq_nearest(E, E), np.arange(9))


def test_straight_through_value_is_z_q_and_its_gradient_the_identity_autograd():
    r = rng(6)
    z, E, w = r.standard_normal((6, 4)), r.standard_normal((5, 4)), r.standard_normal((6, 4))
    z_q, _ = ae.vq_quantize(z, E)
    np.testing.assert_allclose(ae.straight_through(z, z_q), z_q, rtol=0, atol=1e-15)

    def f(z):
        return anp.sum(w * ae.straight_through(z, ae.vq_quantize(z, E)[0]))
    np.testing.assert_array_equal(autograd.grad(f)(z), w)


def test_straight_through_gradient_is_the_identity_torch():
    r = rng(7)
    z = torch.tensor(r.standard_normal((6, 4)), requires_grad=True)
    E, w = torch.tensor(r.standard_normal((5, 4))), torch.tensor(r.standard_normal((6, 4)))
    z_q, _ = ae.vq_quantize(z, E)
    out = ae.straight_through(z, z_q)
    torch.testing.assert_close(out.detach(), z_q.detach(), rtol=0, atol=1e-15)
    (out * w).sum().backward()
    torch.testing.assert_close(z.grad, w, rtol=0, atol=0)


def _loss_grads(loss_of):
    """Gradients of loss_of(z_e, z_q) (summed) w.r.t. the encoder output and the codebook."""
    r = rng(8)
    z, E = r.standard_normal((4, 6, 3)), r.standard_normal((5, 3))

    def f(z, E):
        zf = anp.reshape(z, (-1, 3))
        z_q = anp.reshape(ae.vq_quantize(zf, E)[0], z.shape)
        return anp.sum(loss_of(z, z_q))
    return z, E, autograd.grad(f, 0)(z, E), autograd.grad(f, 1)(z, E)


@pytest.mark.filterwarnings("ignore:Output seems independent of input")  # the zero gradient we check
def test_codebook_term_moves_only_the_codebook_and_commitment_only_the_encoder():
    z, E, gz, gE = _loss_grads(lambda z, z_q: ae.vq_loss_terms(z, z_q)[0])
    assert np.all(gz == 0) and np.abs(gE).max() > 0
    z, E, gz, gE = _loss_grads(lambda z, z_q: ae.vq_loss_terms(z, z_q)[1])
    assert np.abs(gz).max() > 0 and np.all(gE == 0)


def test_beta_weighs_the_commitment_term():
    beta = 0.25
    z, E, gz, gE = _loss_grads(lambda z, z_q: ae.vq_loss(z, z_q, beta))
    z_q = E[ae.vq_nearest(z.reshape(-1, 3), E)].reshape(z.shape)
    M = z[0].size                               # the per-example mean
    np.testing.assert_allclose(gz, beta * 2 * (z - z_q) / M, rtol=1e-12)   # beta on ||z_e - sg[e]||^2
    # the codebook term, unweighted: d/de_k sum_{n: k_n = k} (e_k - z_n)^2 / M
    k = ae.vq_nearest(z.reshape(-1, 3), E)
    want = np.zeros_like(E)
    np.add.at(want, k, 2 * (z_q - z).reshape(-1, 3) / M)
    np.testing.assert_allclose(gE, want, rtol=1e-12, atol=1e-15)
    # taming/diffusers' legacy form puts beta on the codebook term: its encoder gradient differs
    _, _, gz_legacy, _ = _loss_grads(lambda z, z_q: ae.vq_loss_terms(z, z_q)[1] + beta * ae.vq_loss_terms(z, z_q)[0])
    assert not np.allclose(gz_legacy, gz)


def test_vq_loss_terms_are_per_example_means_of_squares():
    r = rng(9)
    z, z_q = r.standard_normal((3, 2, 5)), r.standard_normal((3, 2, 5))
    c, m = ae.vq_loss_terms(z, z_q)
    want = ((z - z_q) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(c, want, rtol=1e-13)
    np.testing.assert_allclose(m, want, rtol=1e-13)
    np.testing.assert_allclose(ae.vq_loss(z, z_q, 0.5), 1.5 * want, rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# EMA codebook, Laplace smoothing, dead-code restarts

def test_ema_with_decay_zero_gives_the_mean_of_the_assigned_vectors():
    r = rng(10)
    K, D = 4, 3
    z = r.standard_normal((40, D))
    k = np.concatenate([np.arange(K), r.integers(0, K, 36)])  # every code used
    counts, sums = r.random(K) * 5, r.standard_normal((K, D))
    N, m, E = ae.ema_codebook_update(counts, sums, z, k, decay=0.0, eps=1e-12)
    for i in range(K):
        np.testing.assert_allclose(E[i], z[k == i].mean(0), rtol=1e-9)
        assert N[i] == np.sum(k == i)


def test_ema_update_follows_the_moving_averages():
    r = rng(11)
    K, D, gamma = 5, 2, 0.9
    z, k = r.standard_normal((12, D)), r.integers(0, K, 12)
    counts, sums = r.random(K) + 1, r.standard_normal((K, D))
    N, m, E = ae.ema_codebook_update(counts, sums, z, k, decay=gamma, eps=1e-5)
    n_i = np.bincount(k, minlength=K)
    s_i = np.stack([z[k == i].sum(0) for i in range(K)])
    np.testing.assert_allclose(N, gamma * counts + (1 - gamma) * n_i, rtol=1e-13)
    np.testing.assert_allclose(m, gamma * sums + (1 - gamma) * s_i, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(E, m / ae.laplace_smoothing(N, 1e-5)[:, None], rtol=1e-13)


def test_laplace_smoothing_keeps_unused_codes_finite_and_the_total():
    counts = np.array([10.0, 0.0, 3.0, 0.0])
    s = ae.laplace_smoothing(counts, 1e-5)
    assert np.all(s > 0)
    np.testing.assert_allclose(s.sum(), counts.sum(), rtol=1e-14)
    z, k = np.ones((3, 2)), np.array([0, 0, 2])
    N, m, E = ae.ema_codebook_update(np.zeros(4), np.zeros((4, 2)), z, k, decay=0.0)
    assert np.all(np.isfinite(E)) and np.all(E[[1, 3]] == 0)


def test_restart_replaces_exactly_the_underused_codes():
    r = rng(12)
    E, cand = r.standard_normal((6, 3)), r.standard_normal((6, 3))
    usage = np.array([5, 0, 2, 1, 7, 0])
    new, dead = ae.restart_dead_codes(E, usage, cand, threshold=2)
    np.testing.assert_array_equal(dead, usage < 2)
    np.testing.assert_array_equal(new[dead], cand[dead])
    np.testing.assert_array_equal(new[~dead], E[~dead])


# ----------------------------------------------------------------------------------------------
# Code usage over an epoch

def test_perplexity_of_uniform_usage_is_K_and_of_one_code_is_1():
    K = 8
    h = ae.code_histogram(np.repeat(np.arange(K), 3), K)
    np.testing.assert_array_equal(h, np.full(K, 3))
    np.testing.assert_allclose(ae.perplexity(h), K, rtol=1e-13)
    assert ae.codebook_usage(h) == 1.0
    h1 = ae.code_histogram(np.full(10, 5), K)
    np.testing.assert_allclose(ae.perplexity(h1), 1.0, rtol=1e-13)
    assert ae.codebook_usage(h1) == 1 / K


def test_epoch_perplexity_differs_from_the_mean_of_batch_perplexities():
    K = 4
    batches = [np.array([0, 0, 1, 1]), np.array([2, 2, 3, 3])]   # each batch uses 2 codes, the epoch 4
    per_batch = np.mean([ae.perplexity(ae.code_histogram(b, K)) for b in batches])
    epoch = ae.perplexity(sum(ae.code_histogram(b, K) for b in batches))
    np.testing.assert_allclose(per_batch, 2.0, rtol=1e-13)
    np.testing.assert_allclose(epoch, 4.0, rtol=1e-13)
    assert ae.codebook_usage(sum(ae.code_histogram(b, K) for b in batches)) == 1.0


# ----------------------------------------------------------------------------------------------
# The scale factor

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scaled_latents_have_unit_std(dtype):
    z = (3.7 * rng(13).standard_normal((16, 4, 8, 8)) + 0.6).astype(dtype)
    s = ae.scale_factor(z)
    tol = 1e-12 if dtype == np.float64 else 1e3 * np.finfo(np.float32).eps
    np.testing.assert_allclose(np.std((z * s).astype(np.float64)), 1.0, rtol=tol)


# ----------------------------------------------------------------------------------------------
# numpy and torch agree

def test_numpy_and_torch_agree_in_float64():
    r = rng(14)
    moments, noise = r.standard_normal((3, 4, 5, 2)), r.standard_normal((3, 2, 5, 2))
    z, E = r.standard_normal((20, 3)), r.standard_normal((7, 3))
    counts, sums = r.random(7) + 0.5, r.standard_normal((7, 3))
    usage, cand = r.integers(0, 4, 7), r.standard_normal((7, 3))
    T = torch.as_tensor

    def run(a):
        mean, logvar = ae.kl_posterior(a(moments))
        z_q, k = ae.vq_quantize(a(z), a(E))
        out = [mean, logvar, ae.kl_sample(mean, logvar, a(noise)), ae.kl_divergence(mean, logvar),
               ae.vq_distances(a(z), a(E)), k, z_q, ae.straight_through(a(z), z_q), ae.vq_loss(a(z), z_q),
               *ae.ema_codebook_update(a(counts), a(sums), a(z), k, 0.8),
               *ae.restart_dead_codes(a(E), a(usage), a(cand), 2), ae.code_histogram(k, 7)]
        return [np.asarray(o.detach().numpy() if isinstance(o, torch.Tensor) else o) for o in out], \
            [ae.perplexity(ae.code_histogram(k, 7)), ae.codebook_usage(ae.code_histogram(k, 7)), ae.scale_factor(a(z))]
    (np_arrays, np_floats), (t_arrays, t_floats) = run(np.asarray), run(T)
    for a, b in zip(np_arrays, t_arrays):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_floats, t_floats, rtol=1e-10)


def test_torch_vq_loss_gradients_split_between_encoder_and_codebook():
    r = rng(15)
    z = torch.tensor(r.standard_normal((5, 3)), requires_grad=True)
    E = torch.tensor(r.standard_normal((4, 3)), requires_grad=True)
    z_q, _ = ae.vq_quantize(z, E)
    c, m = ae.vq_loss_terms(z, z_q)
    gz, gE = torch.autograd.grad(c.sum(), (z, E), allow_unused=True)
    assert (gz is None or torch.all(gz == 0)) and gE.abs().max() > 0
    gz, gE = torch.autograd.grad(m.sum(), (z, E), allow_unused=True)
    assert gz.abs().max() > 0 and (gE is None or torch.all(gE == 0))


# ----------------------------------------------------------------------------------------------
# Bad input is named

@pytest.mark.parametrize("call, error, match", [
    (lambda: ae.kl_posterior(np.zeros((2, 3, 4))), ValueError, "moments must have an even number"),
    (lambda: ae.kl_posterior([[0.0, 0.0]]), TypeError, "moments must be an array"),
    (lambda: ae.kl_posterior(np.zeros((2, 2)), logvar_range=(1, -1)), ValueError, "logvar_range"),
    (lambda: ae.kl_posterior(np.zeros((2, 2)), logvar_range=5), TypeError, "logvar_range"),
    (lambda: ae.kl_sample(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 3))), ValueError, "noise"),
    (lambda: ae.kl_divergence(np.zeros((2, 2)), np.zeros((2, 3))), ValueError, "logvar"),
    (lambda: ae.kl_divergence(np.zeros((2, 2)), torch.zeros(2, 2)), TypeError, "logvar is torch"),
    (lambda: ae.vq_distances(np.zeros((2, 3)), np.zeros((4, 2))), ValueError, "same D"),
    (lambda: ae.vq_distances(np.zeros(3), np.zeros((4, 3))), ValueError, "z must have 2 dimensions"),
    (lambda: ae.vq_loss(np.zeros((2, 3)), np.zeros((2, 3)), beta=-1), ValueError, "beta"),
    (lambda: ae.vq_loss(np.zeros((2, 3)), np.zeros((2, 3)), beta="0.25"), TypeError, "beta"),
    (lambda: ae.ema_codebook_update(np.zeros(3), np.zeros((3, 2)), np.zeros((4, 2)), np.array([0, 1, 2, 3])),
     ValueError, "indices must lie in \\[0, K\\)"),
    (lambda: ae.ema_codebook_update(np.zeros(3), np.zeros((3, 2)), np.zeros((4, 2)), np.zeros(4)),
     TypeError, "indices must hold integer"),
    (lambda: ae.ema_codebook_update(np.zeros(3), np.zeros((3, 2)), np.zeros((4, 2)), np.zeros(4, int), decay=1.0),
     ValueError, "decay"),
    (lambda: ae.ema_codebook_update(np.zeros(2), np.zeros((3, 2)), np.zeros((4, 2)), np.zeros(4, int)),
     ValueError, "counts"),
    (lambda: ae.laplace_smoothing(np.ones(3), eps=0.0), ValueError, "eps"),
    (lambda: ae.restart_dead_codes(np.zeros((3, 2)), np.zeros(4), np.zeros((3, 2))), ValueError, "usage"),
    (lambda: ae.restart_dead_codes(np.zeros((3, 2)), np.zeros(3), np.zeros((2, 2))), ValueError, "candidates"),
    (lambda: ae.code_histogram(np.array([0, 5]), 4), ValueError, "indices must lie"),
    (lambda: ae.code_histogram(np.array([0, 1]), 2.0), TypeError, "K must be an integer"),
    (lambda: ae.perplexity(np.zeros(4)), ValueError, "histogram"),
    (lambda: ae.perplexity(np.array([1.0, -1.0])), ValueError, "histogram"),
    (lambda: ae.scale_factor(np.ones((3, 2))), ValueError, "latents must not be constant"),
    (lambda: ae.scale_factor(np.array([[1.0, np.nan]])), ValueError, "latents holds non-finite"),
    (lambda: ae.scale_factor(None), TypeError, "latents must be an array"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
