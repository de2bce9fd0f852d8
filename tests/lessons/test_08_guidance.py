"""Checks for lessons/08_guidance.py."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from minidiff.data.toy2d import eight_gaussians_mixture
from minidiff.edm import karras_sigmas
from minidiff.samplers import heun_sample

LESSON = "08"
exercise = pytest.mark.exercise
GMM = eight_gaussians_mixture()
NULL = GMM.null_class     # 8


def exact_denoiser(x, sigma, class_labels=None):
    """E[x0 | x, c] of the 8-Gaussian mixture (EDM convention: x = x0 + sigma n)."""
    return GMM.denoise(x, 1.0, sigma, class_labels)


@exercise("mixture_class_posterior")
def test_class_posterior_is_bayes_rule_with_the_component_densities(ex):
    scipy_stats = pytest.importorskip("scipy.stats")
    means, stds, weights = np.array([[0.0, 0.0], [2.0, 1.0], [-1.0, 2.0]]), np.array([0.5, 0.3, 0.8]), np.array([0.2, 0.5, 0.3])
    x, alpha, sigma = np.random.default_rng(8).standard_normal((7, 2)) * 2, 0.8, 0.6
    var = np.broadcast_to(stds[:, None] ** 2, (3, 2))
    dens = np.stack([w * scipy_stats.multivariate_normal(alpha * m, np.diag(alpha ** 2 * v + sigma ** 2)).pdf(x)
                     for m, v, w in zip(means, var, weights)], axis=1)       # (B, K) pi_k N(x; alpha mu_k, C_k)
    got = ex.mixture_class_posterior(x, means, var, weights, alpha, sigma)
    assert np.shape(got) == (7, 3)
    np.testing.assert_allclose(got, dens / dens.sum(axis=1, keepdims=True), rtol=1e-10)


@exercise("mixture_class_posterior")
def test_class_posterior_is_stable_far_away_and_tends_to_the_prior_at_high_noise(ex):
    means, var, weights = GMM.means, GMM.vars, np.full(8, 1 / 8)
    far = ex.mixture_class_posterior(np.array([[40.0, 0.0]]), means, var, weights)   # densities underflow to 0
    assert np.all(np.isfinite(far)) and far[0].sum() == pytest.approx(1.0) and np.argmax(far[0]) == 0
    noisy = ex.mixture_class_posterior(np.random.default_rng(9).standard_normal((4, 2)), means, var, weights, 1.0, 1e3)
    np.testing.assert_allclose(noisy, 1 / 8, atol=1e-5)


@exercise("drop_labels")
def test_drop_labels_with_p_zero_keeps_every_label(ex):
    labels = np.arange(100) % 8
    np.testing.assert_array_equal(ex.drop_labels(labels, 0.0, NULL, np.random.default_rng(0)), labels)


@exercise("drop_labels")
def test_drop_labels_drops_a_fraction_p_to_the_null_label_and_keeps_the_rest(ex):
    labels = np.arange(20000) % 8
    out = np.asarray(ex.drop_labels(labels, 0.3, NULL, np.random.default_rng(1)))
    dropped = out == NULL
    assert out.shape == labels.shape
    assert abs(dropped.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / labels.size)
    np.testing.assert_array_equal(out[~dropped], labels[~dropped])
    # one uniform per example, in order: the same generator state gives the same drops
    np.testing.assert_array_equal(dropped, np.random.default_rng(1).random(labels.size) < 0.3)


@exercise("drop_labels")
def test_drop_labels_on_torch_tensors_matches_numpy(ex):
    torch = pytest.importorskip("torch")
    labels = np.arange(64) % 10
    a = ex.drop_labels(labels, 0.5, 10, np.random.default_rng(2))
    b = ex.drop_labels(torch.as_tensor(labels), 0.5, 10, np.random.default_rng(2))
    assert isinstance(b, torch.Tensor) and not b.is_floating_point()
    np.testing.assert_array_equal(b.numpy(), a)
    assert 0 < (b == 10).sum() < 64


@exercise("guided")
def test_guided_is_the_conditional_at_w0_and_the_unconditional_at_w_minus_1(ex):
    rng = np.random.default_rng(3)
    cond, uncond = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    np.testing.assert_allclose(ex.guided(cond, uncond, 0.0), cond, atol=1e-15)
    np.testing.assert_allclose(ex.guided(cond, uncond, -1.0), uncond, atol=1e-15)
    # eq. 6 extrapolates past the conditional prediction, away from the unconditional one
    np.testing.assert_allclose(ex.guided(cond, uncond, 2.5) - cond, 2.5 * (cond - uncond), atol=1e-14)


@exercise("guided")
def test_guided_scores_are_the_conditional_score_plus_w_times_the_implicit_classifier_gradient(ex):
    """(1 + w) grad log p(x|c) - w grad log p(x) = grad log p(x|c) + w grad log p(c|x) (Bayes)."""
    rng = np.random.default_rng(4)
    x, c, sigma, w = rng.standard_normal((6, 2)), np.array([0, 1, 2, 3, 4, 7]), 0.6, 3.0
    got = ex.guided(GMM.score(x, 1.0, sigma, c), GMM.score(x, 1.0, sigma), w)

    def log_posterior(xi, ci):
        return anp.log(GMM.class_posterior(anp.reshape(xi, (1, 2)), 1.0, sigma)[0, ci])

    classifier_grad = np.stack([autograd.grad(log_posterior)(x[i], int(c[i])) for i in range(6)])
    np.testing.assert_allclose(got, GMM.score(x, 1.0, sigma, c) + w * classifier_grad, atol=1e-10)


@exercise("classifier_free_guidance")
def test_guidance_makes_one_model_call_on_the_doubled_batch(ex):
    calls = []

    def model(x, t, class_labels=None):
        calls.append((x.shape, np.asarray(t).copy(), np.asarray(class_labels).copy()))
        return exact_denoiser(x, t, class_labels)

    rng = np.random.default_rng(5)
    x, sigma, c = rng.standard_normal((4, 2)), np.full(4, 0.8), np.array([0, 3, 5, NULL])
    out = ex.classifier_free_guidance(model, 1.5, NULL)(x, sigma, class_labels=c)
    assert len(calls) == 1
    shape, t, labels = calls[0]
    assert shape == (8, 2)
    np.testing.assert_array_equal(t, np.full(8, 0.8))
    np.testing.assert_array_equal(labels, [0, 3, 5, NULL] + [NULL] * 4)
    expected = 2.5 * exact_denoiser(x, sigma, c) - 1.5 * exact_denoiser(x, sigma)
    np.testing.assert_allclose(out, expected, atol=1e-12)


@exercise("classifier_free_guidance")
def test_guidance_runs_on_torch_tensors_like_on_numpy(ex):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x, sigma, c = rng.standard_normal((5, 2)), np.full(5, 0.4), np.array([1, 2, 3, 4, 5])
    model = ex.classifier_free_guidance(exact_denoiser, 2.0, NULL)
    a = model(x, sigma, class_labels=c)
    b = model(torch.as_tensor(x), torch.as_tensor(sigma), class_labels=torch.as_tensor(c))
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
    np.testing.assert_allclose(b.numpy(), a, atol=1e-12)


def _sample_class(ex, w, c, n=400, seed=7):
    """n Heun-18 samples of class c from the exact mixture denoiser, guided with strength w."""
    D = ex.classifier_free_guidance(exact_denoiser, w, NULL)
    sigmas = karras_sigmas(18, 0.002, 80.0)
    z = np.random.default_rng(seed).standard_normal((n, 2))
    return heun_sample(D, 80.0 * z, sigmas, class_labels=np.full(n, c))


@exercise("classifier_free_guidance")
def test_unguided_sampling_draws_the_asked_for_component(ex):
    x = _sample_class(ex, 0.0, 2)
    mu, std = GMM.means[2], np.sqrt(GMM.vars[2])
    se = std / np.sqrt(len(x))
    assert np.all(np.abs(x.mean(axis=0) - mu) < 5 * se)
    np.testing.assert_allclose(x.std(axis=0), std, rtol=0.2)


@exercise("classifier_free_guidance")
def test_strong_guidance_pushes_samples_away_from_the_other_classes(ex):
    """w > 0 samples p(x|c) p(c|x)^w roughly: more confidently class c, at the cost of spread."""
    plain, strong = _sample_class(ex, 0.0, 5), _sample_class(ex, 4.0, 5)
    doubt = [-np.log(GMM.class_posterior(x, 1.0, 0.3)[:, 5]).mean() for x in (plain, strong)]   # cross-entropy
    assert doubt[1] < 0.5 * doubt[0]
    # mass moves outward, away from the circle's other components
    radius = [np.linalg.norm(x, axis=1).mean() for x in (plain, strong)]
    assert radius[1] > radius[0]
