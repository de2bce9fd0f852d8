"""Checks for lessons/02_forward_process.py."""
import numpy as np
import pytest
import torch

LESSON = "02"
exercise = pytest.mark.exercise


@exercise("linear_betas")
def test_linear_betas_endpoints_and_spacing(ex):
    b = ex.linear_betas(1000)
    assert b.shape == (1000,)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(b), (0.02 - 1e-4) / 999, rtol=1e-8)


@exercise("linear_betas")
def test_linear_betas_custom_range(ex):
    b = ex.linear_betas(5, beta_1=0.1, beta_T=0.5)
    np.testing.assert_allclose(b, [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-12)


@exercise("cosine_betas")
def test_cosine_betas_match_diffusers_squaredcos(ex):
    from diffusers import DDPMScheduler
    oracle = DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2").betas.double().numpy()
    np.testing.assert_allclose(ex.cosine_betas(200), oracle, rtol=1e-5, atol=1e-7)


@exercise("cosine_betas")
def test_cosine_alpha_bar_follows_the_cosine(ex):
    T, s = 100, 0.008
    b = ex.cosine_betas(T, s=s)
    alpha_bar = np.cumprod(1 - b)
    f = np.cos((np.arange(1, T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(alpha_bar[:-5], f[:-5], rtol=1e-9)  # the last betas are clipped
    assert np.all(b > 0) and np.all(b <= 0.999)


@exercise("alpha_bars")
def test_alpha_bars_is_the_running_product(ex):
    b = np.array([0.1, 0.2, 0.5])
    np.testing.assert_allclose(ex.alpha_bars(b), [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.5], rtol=1e-12)


@exercise("alpha_bars")
def test_alpha_bars_decrease_from_near_one(ex):
    a = ex.alpha_bars(np.linspace(1e-4, 0.02, 1000))
    assert a[0] == pytest.approx(1 - 1e-4) and np.all(np.diff(a) < 0) and a[-1] < 1e-4


@exercise("snr")
def test_snr_formula_and_monotonicity(ex):
    a = np.array([0.99, 0.5, 0.01])
    np.testing.assert_allclose(ex.snr(a), [99.0, 1.0, 1 / 99], rtol=1e-12)


@exercise("snr")
def test_snr_of_a_linear_schedule_decreases(ex):
    a = np.cumprod(1 - np.linspace(1e-4, 0.02, 100))
    assert np.all(np.diff(ex.snr(a)) < 0)


@exercise("q_sample")
def test_q_sample_formula(ex):
    a = np.array([0.9, 0.5, 0.1])
    x0 = np.array([[1.0, 2.0], [3.0, -1.0]])
    noise = np.array([[0.5, -0.5], [1.0, 2.0]])
    t = np.array([0, 2])
    expected = np.sqrt(a[t])[:, None] * x0 + np.sqrt(1 - a[t])[:, None] * noise
    np.testing.assert_allclose(ex.q_sample(x0, t, a, noise), expected, rtol=1e-12)


@exercise("q_sample")
def test_q_sample_statistics(ex):
    rng = np.random.default_rng(0)
    a = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x0 = np.full((20000, 1), 1.5)
    t = np.full(20000, 300)
    xt = ex.q_sample(x0, t, a, rng.standard_normal((20000, 1)))
    assert xt.mean() == pytest.approx(np.sqrt(a[300]) * 1.5, abs=0.02)
    assert xt.var() == pytest.approx(1 - a[300], rel=0.03)


@exercise("q_sample")
def test_q_sample_runs_on_torch_tensors(ex):
    a = np.array([0.9, 0.5])
    x0, noise = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 1])
    out = ex.q_sample(x0, t, a, noise)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 4, 5)
    expected = ex.q_sample(x0.numpy(), t.numpy(), a, noise.numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


def _bayes_posterior(x0, xt, t, betas):
    """Condition the Gaussian chain directly: q(x_{t-1}|x0) q(x_t|x_{t-1}), normalised."""
    alpha_bar = np.cumprod(1 - betas)
    a_prev = alpha_bar[t - 1]
    precision = 1 / (1 - a_prev) + (1 - betas[t]) / betas[t]
    var = 1 / precision
    mean = var * (np.sqrt(a_prev) * x0 / (1 - a_prev) + np.sqrt(1 - betas[t]) * xt / betas[t])
    return mean, var


@exercise("q_posterior")
def test_q_posterior_matches_bayes_rule(ex):
    rng = np.random.default_rng(1)
    betas = np.linspace(1e-4, 0.02, 100)
    x0, xt = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    t = np.array([1, 10, 50, 99])
    mean, var = ex.q_posterior(x0, xt, t, betas)
    for i in range(4):
        m, v = _bayes_posterior(x0[i], xt[i], t[i], betas)
        np.testing.assert_allclose(mean[i], m, rtol=1e-9)
        assert float(np.ravel(var[i])[0]) == pytest.approx(v, rel=1e-9)


@exercise("q_posterior")
def test_q_posterior_at_the_first_step_returns_x0(ex):
    betas = np.linspace(1e-4, 0.02, 10)
    x0, xt = np.ones((2, 3)), np.zeros((2, 3))
    mean, var = ex.q_posterior(x0, xt, np.array([0, 0]), betas)
    np.testing.assert_allclose(mean, x0, rtol=1e-12)
    np.testing.assert_allclose(np.ravel(var), 0.0, atol=1e-15)


@exercise("cosine_betas")
def test_cosine_betas_clip_at_the_given_max_beta(ex):
    T, s = 50, 0.008
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    unclipped = 1 - f[1:] / f[:-1]
    b = ex.cosine_betas(T, s=s, max_beta=0.2)
    assert np.any(unclipped > 0.2)                          # the case under test: some betas are clipped
    np.testing.assert_allclose(b, np.minimum(unclipped, 0.2), rtol=1e-9)


@exercise("cosine_betas")
def test_cosine_betas_use_the_given_offset_s(ex):
    T, s = 100, 0.1
    alpha_bar = np.cumprod(1 - ex.cosine_betas(T, s=s))
    f = np.cos((np.arange(1, T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(alpha_bar[:-5], f[:-5], rtol=1e-9)
