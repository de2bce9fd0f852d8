"""Schedules and the forward process: closed forms, brute-force Gaussian conditioning, round trips."""
import math

import numpy as np
import pytest
import torch

from minidiff import diffusion, schedules
from minidiff.diffusion import TARGETS


def test_linear_betas_endpoints_and_spacing():
    b = schedules.linear_betas(1000)
    assert b.shape == (1000,) and b.dtype == np.float64
    assert b[0] == pytest.approx(1e-4, rel=1e-14) and b[-1] == pytest.approx(0.02, rel=1e-14)
    np.testing.assert_allclose(np.diff(b), (0.02 - 1e-4) / 999, rtol=1e-9)
    b = schedules.linear_betas(7, beta_1=0.01, beta_T=0.3)
    assert (b[0], b[-1]) == pytest.approx((0.01, 0.3))


@pytest.mark.parametrize("T", [1, 10, 1000])
def test_cosine_betas_reproduce_the_iddpm_alpha_bar(T):
    s = 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    closed = np.array([f(t) / f(0) for t in range(1, T + 1)])  # alpha_bar at paper steps 1..T
    ab = schedules.alpha_bars(schedules.cosine_betas(T))
    # the clip to max_beta only changes the final step(s); everywhere else the product is exact
    unclipped = schedules.cosine_betas(T) < 0.999
    k = np.argmin(unclipped) if not unclipped.all() else T
    np.testing.assert_allclose(ab[:k], closed[:k], rtol=1e-10)
    assert np.all(schedules.cosine_betas(T) <= 0.999) and np.all(schedules.cosine_betas(T) > 0)


def test_alpha_bars_is_the_cumulative_product_and_snr_decreases():
    for betas in (schedules.linear_betas(200), schedules.cosine_betas(200)):
        ab = schedules.alpha_bars(betas)
        expected = np.array([np.prod(1 - betas[: i + 1]) for i in range(len(betas))])
        np.testing.assert_allclose(ab, expected, rtol=1e-12)
        snr = schedules.snr(ab)
        np.testing.assert_allclose(snr, ab / (1 - ab), rtol=1e-12)
        assert np.all(np.diff(snr) < 0)
    with pytest.raises(ValueError, match="schedule"):
        schedules.make_betas("quadratic", 10)


# ---------------------------------------------------------------------------------------------

def _sched(T=20):
    betas = schedules.linear_betas(T, 1e-3, 0.2)
    return betas, schedules.alpha_bars(betas)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_q_sample_moments(backend):
    betas, ab = _sched()
    rng = np.random.default_rng(0)
    n = 200_000
    x0 = np.tile(np.array([[1.5, -0.5]]), (n, 1))
    t = np.full(n, 11)
    noise = rng.standard_normal((n, 2))
    if backend == "torch":
        x_t = diffusion.q_sample(torch.from_numpy(x0), torch.from_numpy(t), ab, torch.from_numpy(noise)).numpy()
    else:
        x_t = diffusion.q_sample(x0, t, ab, noise)
    se = math.sqrt((1 - ab[11]) / n)
    np.testing.assert_allclose(x_t.mean(axis=0), math.sqrt(ab[11]) * x0[0], atol=5 * se)
    np.testing.assert_allclose(x_t.var(axis=0), 1 - ab[11], rtol=0.02)


def test_q_sample_uses_each_examples_own_timestep():
    betas, ab = _sched()
    x0, noise, t = np.ones((3, 2)), np.full((3, 2), 2.0), np.array([0, 5, 19])
    x_t = diffusion.q_sample(x0, t, ab, noise)
    for i in range(3):
        np.testing.assert_allclose(x_t[i], math.sqrt(ab[t[i]]) + 2 * math.sqrt(1 - ab[t[i]]), rtol=1e-14)


def _brute_force_posterior(x0, x_t, t, betas):
    """Condition the joint Gaussian q(x_{t-1} | x0) q(x_t | x_{t-1}) on x_t by completing the
    square (0-based t >= 1)."""
    ab = np.cumprod(1 - betas)
    m_prev, v_prev = math.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]   # q(x_{t-1} | x0)
    a, v_step = math.sqrt(1 - betas[t]), betas[t]              # q(x_t | x_{t-1}) = N(a x_{t-1}, v_step)
    prec = 1 / v_prev + a * a / v_step
    return (m_prev / v_prev + a * x_t / v_step) / prec, 1 / prec


def _grid_posterior(x0, x_t, t, betas):
    """The same in 1-D by quadrature: normalise the product of the two densities on a fine grid."""
    ab = np.cumprod(1 - betas)
    m_prev, v_prev = math.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]
    s = math.sqrt(v_prev)
    grid = np.linspace(m_prev - 12 * s, m_prev + 12 * s, 400_001)
    logp = -0.5 * (grid - m_prev) ** 2 / v_prev - 0.5 * (x_t - math.sqrt(1 - betas[t]) * grid) ** 2 / betas[t]
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = np.sum(w * grid)
    return mean, np.sum(w * (grid - mean) ** 2)


def test_q_posterior_matches_brute_force_conditioning():
    betas, _ = _sched(20)
    rng = np.random.default_rng(1)
    B = 40
    x0, x_t = rng.standard_normal((B, 3)), rng.standard_normal((B, 3))
    t = rng.integers(1, 20, B)
    mean, var = diffusion.q_posterior(x0, x_t, t, betas)
    assert mean.shape == (B, 3) and var.shape == (B, 1)
    for i in range(B):
        m, v = _brute_force_posterior(x0[i], x_t[i], t[i], betas)
        np.testing.assert_allclose(mean[i], m, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(var[i, 0], v, rtol=1e-10)
    for i in range(3):  # an independent check by numerical integration
        m, v = _grid_posterior(x0[i, 0], x_t[i, 0], t[i], betas)
        np.testing.assert_allclose(mean[i, 0], m, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(var[i, 0], v, rtol=1e-6)


def test_q_posterior_at_the_first_step_is_the_data():
    betas, _ = _sched(20)
    x0, x_t = np.array([[0.3, -1.2]]), np.array([[2.0, 5.0]])
    mean, var = diffusion.q_posterior(x0, x_t, np.array([0]), betas)
    np.testing.assert_allclose(mean, x0, rtol=1e-12)
    assert var[0, 0] == 0.0


def test_q_posterior_torch_equals_numpy():
    betas, _ = _sched(20)
    rng = np.random.default_rng(2)
    x0, x_t, t = rng.standard_normal((6, 2)), rng.standard_normal((6, 2)), rng.integers(0, 20, 6)
    m, v = diffusion.q_posterior(x0, x_t, t, betas)
    mt, vt = diffusion.q_posterior(torch.from_numpy(x0), torch.from_numpy(x_t), torch.from_numpy(t), betas)
    assert mt.dtype == torch.float64
    np.testing.assert_allclose(mt.numpy(), m, rtol=1e-13)
    np.testing.assert_allclose(vt.numpy(), v, rtol=1e-13)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_conversions_round_trip(backend):
    _, ab = _sched(20)
    rng = np.random.default_rng(3)
    x0, eps, t = rng.standard_normal((8, 2)), rng.standard_normal((8, 2)), rng.integers(0, 20, 8)
    if backend == "torch":
        x0, eps, t = torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(t)
    to_np = lambda a: a.numpy() if isinstance(a, torch.Tensor) else a
    x_t = diffusion.q_sample(x0, t, ab, eps)
    close = lambda a, b: np.testing.assert_allclose(to_np(a), to_np(b), rtol=1e-10, atol=1e-12)
    close(diffusion.eps_to_x0(x_t, t, eps, ab), x0)
    close(diffusion.x0_to_eps(x_t, t, x0, ab), eps)
    score = diffusion.eps_to_score(eps, t, ab)
    sd = np.sqrt(1 - ab[to_np(t)])[:, None]
    close(score, -to_np(eps) / sd)
    close(diffusion.score_to_eps(score, t, ab), eps)
    v = diffusion.v_target(x0, eps, t, ab)
    close(v, np.sqrt(ab[to_np(t)])[:, None] * to_np(eps) - sd * to_np(x0))
    close(diffusion.v_to_eps(x_t, t, v, ab), eps)
    # every target, read back as eps, gives the noise that made x_t
    for target in TARGETS:
        out = diffusion.target_of(target, x0, eps, t, ab)
        close(diffusion.to_eps(out, target, x_t, t, ab), eps)


def test_as_eps_model_wraps_every_target():
    _, ab = _sched(20)
    rng = np.random.default_rng(4)
    x0, eps, t = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), rng.integers(0, 20, 5)
    x_t = diffusion.q_sample(x0, t, ab, eps)
    for target in TARGETS:
        # an oracle that knows (x0, eps) and answers in ``target``'s parametrisation
        oracle = lambda x, tt, scale=1.0, target=target: scale * diffusion.target_of(target, x0, eps, tt, ab)
        wrapped = diffusion.as_eps_model(oracle, target, ab)
        np.testing.assert_allclose(wrapped(x_t, t), eps, rtol=1e-10, atol=1e-12)
        if target != "eps":  # keyword arguments (conditioning) reach the model
            assert not np.allclose(wrapped(x_t, t, scale=2.0), eps)
    plain = lambda x, tt: x
    assert diffusion.as_eps_model(plain, "eps", ab) is plain
    with pytest.raises(ValueError, match="target"):
        diffusion.as_eps_model(plain, "noise", ab)
