"""Checks for lessons/03_ddpm.py."""
import autograd
import numpy as np
import pytest
import torch

from minidiff.backend import generator
from minidiff.data.toy2d import eight_gaussians_mixture
from minidiff.metrics import mmd2_unbiased

LESSON = "03"
exercise = pytest.mark.exercise

BETAS = np.linspace(1e-4, 0.02, 1000)
ALPHA_BAR = np.cumprod(1 - BETAS)


def _batch(seed, n=64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)), rng.integers(0, 1000, n), rng.standard_normal((n, 2))


@exercise("ddpm_loss")
def test_ddpm_loss_is_zero_for_a_model_that_knows_the_noise(ex):
    x0, t, noise = _batch(0)
    assert ex.ddpm_loss(lambda x, tt: noise, x0, t, noise, ALPHA_BAR) == pytest.approx(0.0, abs=1e-20)


@exercise("ddpm_loss")
def test_ddpm_loss_is_the_mean_squared_error(ex):
    x0, t, noise = _batch(1)
    assert ex.ddpm_loss(lambda x, tt: 0 * x, x0, t, noise, ALPHA_BAR) == pytest.approx(np.mean(noise ** 2), rel=1e-12)


@exercise("ddpm_loss")
def test_ddpm_loss_x0_target_and_model_input(ex):
    x0, t, noise = _batch(2)
    seen = {}

    def model(x, tt):
        seen["x"], seen["t"] = x, tt
        return 0 * x

    loss = ex.ddpm_loss(model, x0, t, noise, ALPHA_BAR, target="x0")
    assert loss == pytest.approx(np.mean(x0 ** 2), rel=1e-12)
    a = ALPHA_BAR[t][:, None]
    np.testing.assert_allclose(seen["x"], np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, rtol=1e-12)
    np.testing.assert_array_equal(seen["t"], t)


@exercise("ddpm_loss")
def test_ddpm_loss_is_differentiable(ex):
    x0, t, noise = _batch(3)
    g = autograd.grad(lambda w: ex.ddpm_loss(lambda x, tt: w * x, x0, t, noise, ALPHA_BAR))(0.3)
    h = 1e-6
    fd = (ex.ddpm_loss(lambda x, tt: (0.3 + h) * x, x0, t, noise, ALPHA_BAR)
          - ex.ddpm_loss(lambda x, tt: (0.3 - h) * x, x0, t, noise, ALPHA_BAR)) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-5)


@exercise("eps_to_x0")
def test_eps_to_x0_inverts_the_forward_process(ex):
    x0, t, noise = _batch(4)
    a = ALPHA_BAR[t][:, None]
    xt = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    np.testing.assert_allclose(ex.eps_to_x0(xt, t, noise, ALPHA_BAR), x0, rtol=1e-8, atol=1e-9)


@exercise("eps_to_x0")
def test_eps_to_x0_on_torch(ex):
    x0, t, noise = _batch(5)
    a = ALPHA_BAR[t][:, None]
    xt = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    out = ex.eps_to_x0(torch.from_numpy(xt), torch.from_numpy(t), torch.from_numpy(noise), ALPHA_BAR)
    np.testing.assert_allclose(out.numpy(), x0, rtol=1e-8, atol=1e-9)


@exercise("eps_to_score")
def test_eps_to_score_gives_the_exact_mixture_score(ex):
    gmm = eight_gaussians_mixture()
    x, t, _ = _batch(6, n=32)
    eps = gmm.eps_model(ALPHA_BAR)(x, t)
    a = ALPHA_BAR[t]
    np.testing.assert_allclose(ex.eps_to_score(eps, t, ALPHA_BAR), gmm.score(x, np.sqrt(a), np.sqrt(1 - a)), rtol=1e-9)


@exercise("eps_to_score")
def test_eps_to_score_of_gaussian_data(ex):
    # x0 ~ N(0, I) makes every x_t ~ N(0, I): score = -x_t and E[eps | x_t] = sqrt(1 - a) x_t.
    x, t, _ = _batch(7)
    eps = np.sqrt(1 - ALPHA_BAR[t])[:, None] * x
    np.testing.assert_allclose(ex.eps_to_score(eps, t, ALPHA_BAR), -x, rtol=1e-10)


@exercise("ddpm_step")
@pytest.mark.parametrize("variance,variance_type", [("beta", "fixed_large"), ("posterior", "fixed_small")])
def test_ddpm_step_matches_diffusers(ex, variance, variance_type):
    from diffusers import DDPMScheduler
    sched = DDPMScheduler(num_train_timesteps=1000, trained_betas=BETAS, clip_sample=False,
                          variance_type=variance_type)
    # diffusers keeps its tables in float32; give it float64 ones so the comparison is exact
    sched.betas = torch.from_numpy(BETAS)
    sched.alphas = 1 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    rng = np.random.default_rng(8)
    for t in (999, 500, 10, 1, 0):
        x, eps = rng.standard_normal((16, 2)), rng.standard_normal((16, 2))
        g = torch.Generator().manual_seed(t)
        theirs = sched.step(torch.from_numpy(eps), t, torch.from_numpy(x), generator=g).prev_sample.numpy()
        noise = torch.randn((16, 2), generator=torch.Generator().manual_seed(t), dtype=torch.float64).numpy()
        ours = ex.ddpm_step(x, t, eps, BETAS, noise, variance)
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@exercise("ddpm_step")
def test_ddpm_steps_with_the_exact_eps_reproduce_the_mixture(ex):
    gmm = eight_gaussians_mixture()
    eps_model = gmm.eps_model(ALPHA_BAR)
    rng = generator(9)
    x = rng.randn((600, 2))
    for t in range(999, -1, -1):
        x = ex.ddpm_step(x, t, eps_model(x, np.full(600, t)), BETAS, rng.randn_like(x))
    data, fresh = gmm.sample(600, 10), gmm.sample(600, 11)
    floor = abs(mmd2_unbiased(data, fresh))
    assert mmd2_unbiased(x, data) < 5 * floor + 2e-3


@exercise("gaussian_kl")
def test_gaussian_kl_closed_form(ex):
    assert ex.gaussian_kl(np.array(0.0), np.array(1.0), np.array(0.0), np.array(1.0)) == pytest.approx(0.0, abs=1e-15)
    # KL(N(1, 2) || N(0, 1)) = 0.5 (log(1/2) + 2 + 1 - 1)
    assert ex.gaussian_kl(np.array(1.0), np.array(2.0), np.array(0.0), np.array(1.0)) == pytest.approx(
        0.5 * (np.log(0.5) + 2.0), rel=1e-12)


@exercise("gaussian_kl")
def test_gaussian_kl_matches_monte_carlo(ex):
    rng = np.random.default_rng(12)
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 1.7
    x = m1 + np.sqrt(v1) * rng.standard_normal(400000)
    logp = -0.5 * (np.log(2 * np.pi * v1) + (x - m1) ** 2 / v1)
    logq = -0.5 * (np.log(2 * np.pi * v2) + (x - m2) ** 2 / v2)
    assert ex.gaussian_kl(np.array(m1), np.array(v1), np.array(m2), np.array(v2)) == pytest.approx(
        np.mean(logp - logq), abs=0.01)


@exercise("ddpm_loss")
def test_ddpm_loss_passes_the_conditioning_to_the_model(ex):
    x0, t, noise = _batch(13, n=8)
    labels = np.arange(8) % 3
    seen = {}

    def model(x, tt, class_labels=None):
        seen["labels"] = class_labels
        return noise + 0.1 * np.asarray(class_labels)[:, None]

    loss = ex.ddpm_loss(model, x0, t, noise, ALPHA_BAR, class_labels=labels)
    np.testing.assert_array_equal(seen["labels"], labels)
    assert loss == pytest.approx(np.mean((0.1 * labels[:, None] * np.ones((8, 2))) ** 2), rel=1e-12)


@exercise("ddpm_loss")
def test_ddpm_loss_v_target(ex):
    # v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022): a model predicting it exactly scores 0
    x0, t, noise = _batch(14)
    a = ALPHA_BAR[t][:, None]
    v = np.sqrt(a) * noise - np.sqrt(1 - a) * x0
    assert ex.ddpm_loss(lambda x, tt: v, x0, t, noise, ALPHA_BAR, target="v") == pytest.approx(0.0, abs=1e-20)
    assert ex.ddpm_loss(lambda x, tt: 0 * x, x0, t, noise, ALPHA_BAR, target="v") == pytest.approx(
        np.mean(v ** 2), rel=1e-12)
