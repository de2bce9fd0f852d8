"""Checks for lessons/05_ddim.py."""
import numpy as np
import pytest
import torch

from minidiff import samplers
from minidiff.data.toy2d import eight_gaussians_mixture

LESSON = "05"
exercise = pytest.mark.exercise

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)
ALPHA_BAR = np.cumprod(1 - BETAS)


@exercise("ddim_timesteps")
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "quadratic"])
def test_every_spacing_gives_n_distinct_decreasing_steps(ex, spacing):
    for T_, n in [(1000, 1), (1000, 7), (1000, 10), (1000, 333), (1000, 999), (1000, 1000), (10, 3), (7, 7)]:
        tau = ex.ddim_timesteps(T_, n, spacing)
        assert len(tau) == n, (T_, n)
        assert np.all(np.diff(tau) < 0), (T_, n, tau)
        assert tau.min() >= 0 and tau.max() <= T_ - 1


@exercise("ddim_timesteps")
def test_spacing_conventions(ex):
    np.testing.assert_array_equal(ex.ddim_timesteps(1000, 10, "leading"), np.arange(0, 1000, 100)[::-1])
    np.testing.assert_array_equal(ex.ddim_timesteps(1000, 10, "trailing"), np.arange(999, 0, -100))
    lin = ex.ddim_timesteps(1000, 7, "linspace")
    assert lin[0] == 999 and lin[-1] == 0
    assert ex.ddim_timesteps(1000, 7, "trailing")[0] == 999


@exercise("ddim_timesteps")
def test_leading_steps_when_n_does_not_divide_T(ex):
    # stride T // n from 0: for T = 1000, n = 7 the stride is 142 and the top step 852, not 999
    np.testing.assert_array_equal(ex.ddim_timesteps(1000, 7, "leading"), [852, 710, 568, 426, 284, 142, 0])
    np.testing.assert_array_equal(ex.ddim_timesteps(10, 3, "leading"), [6, 3, 0])


@exercise("ddim_timesteps")
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers_set_timesteps(ex, spacing):
    from diffusers import DDIMScheduler
    for T_, n in [(1000, 7), (1000, 10), (1000, 333), (1000, 999), (10, 3), (7, 7), (50, 49)]:
        sched = DDIMScheduler(num_train_timesteps=T_, timestep_spacing=spacing)
        sched.set_timesteps(n)
        np.testing.assert_array_equal(ex.ddim_timesteps(T_, n, spacing), sched.timesteps.numpy(),
                                      err_msg=f"T={T_}, n_steps={n}")


@exercise("ddim_sigma")
def test_ddim_sigma_limits(ex):
    a_t, a_prev = ALPHA_BAR[500], ALPHA_BAR[499]
    assert ex.ddim_sigma(a_t, a_prev, 0.0) == 0.0
    beta_tilde = (1 - a_prev) / (1 - a_t) * BETAS[500]
    assert ex.ddim_sigma(a_t, a_prev, 1.0) ** 2 == pytest.approx(beta_tilde, rel=1e-10)
    assert ex.ddim_sigma(a_t, ALPHA_BAR[300], 0.5) == pytest.approx(
        0.5 * np.sqrt((1 - ALPHA_BAR[300]) / (1 - a_t) * (1 - a_t / ALPHA_BAR[300])), rel=1e-12)


def _diffusers_ddim():
    from diffusers import DDIMScheduler
    sched = DDIMScheduler(num_train_timesteps=T, trained_betas=BETAS, clip_sample=False, set_alpha_to_one=True)
    sched.alphas_cumprod = torch.from_numpy(ALPHA_BAR)      # float64 tables for an exact comparison
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(20)
    return sched


@exercise("ddim_step")
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(ex, eta):
    sched = _diffusers_ddim()
    rng = np.random.default_rng(1)
    for t in (950, 500, 50, 0):
        x, eps, z = (rng.standard_normal((8, 2)) for _ in range(3))
        theirs = sched.step(torch.from_numpy(eps), t, torch.from_numpy(x), eta=eta,
                            variance_noise=torch.from_numpy(z)).prev_sample.numpy()
        ours = ex.ddim_step(x, t, t - 50, eps, ALPHA_BAR, eta, z)
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@exercise("ddim_step")
def test_ddim_with_eta_one_on_consecutive_steps_is_the_ddpm_posterior_step(ex):
    rng = np.random.default_rng(2)
    x, eps, z = (rng.standard_normal((8, 2)) for _ in range(3))
    for t in (900, 10, 1):
        ours = ex.ddim_step(x, t, t - 1, eps, ALPHA_BAR, 1.0, z)
        ddpm = samplers.ddpm_step(x, t, eps, BETAS, z, variance="posterior")
        np.testing.assert_allclose(ours, ddpm, rtol=1e-8, atol=1e-10)


@exercise("ddim_step")
def test_ddim_step_to_the_end_returns_x0_hat(ex):
    x, eps = np.ones((3, 2)), 0.5 * np.ones((3, 2))
    a = ALPHA_BAR[20]
    np.testing.assert_allclose(ex.ddim_step(x, 20, -1, eps, ALPHA_BAR, 0.0),
                               (x - np.sqrt(1 - a) * eps) / np.sqrt(a), rtol=1e-12)


@exercise("ddim_invert")
def test_inversion_then_sampling_reconstructs_the_data(ex):
    gmm = eight_gaussians_mixture()
    eps_model = gmm.eps_model(ALPHA_BAR)
    x0 = gmm.sample(200, 3)
    errors = []
    for n in (10, 50, 200):
        tau = samplers.ddim_timesteps(T, n, "linspace")
        z = ex.ddim_invert(eps_model, x0, ALPHA_BAR, tau)
        assert z.shape == x0.shape
        errors.append(np.abs(samplers.ddim_sample(eps_model, z, ALPHA_BAR, tau) - x0).mean())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02


@exercise("ddim_invert")
def test_inversion_maps_data_to_gaussian_noise(ex):
    # The exact probability-flow map sends the data law to N(0, I); DDIM's Euler steps get
    # there as the step count grows (measured: std 0.89 at 50 steps, 0.97 at 200, 0.99 at 1000).
    gmm = eight_gaussians_mixture()
    x0 = gmm.sample(2000, 4)
    gaps = []
    for n in (50, 1000):
        z = ex.ddim_invert(gmm.eps_model(ALPHA_BAR), x0, ALPHA_BAR, samplers.ddim_timesteps(T, n, "linspace"))
        assert np.abs(z.mean(0)).max() < 0.1
        gaps.append(np.abs(z.std(0) - 1).max())
    assert gaps[1] < gaps[0] and gaps[1] < 0.04


@exercise("slerp")
def test_slerp_endpoints_and_norm(ex):
    rng = np.random.default_rng(5)
    z0, z1 = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    np.testing.assert_allclose(ex.slerp(z0, z1, 0.0), z0, atol=1e-12)
    np.testing.assert_allclose(ex.slerp(z0, z1, 1.0), z1, atol=1e-12)
    e0, e1 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    mid = ex.slerp(e0, e1, 0.5)
    np.testing.assert_allclose(mid, [[np.sqrt(0.5), np.sqrt(0.5)]], rtol=1e-12)


@exercise("slerp")
def test_slerp_moves_at_constant_angular_speed(ex):
    e0, e1 = np.array([[1.0, 0.0]]), np.array([[-0.5, np.sqrt(3) / 2]])   # 120 degrees apart
    for a in (0.25, 0.5, 0.75):
        p = ex.slerp(e0, e1, a)
        assert np.arctan2(p[0, 1], p[0, 0]) == pytest.approx(a * 2 * np.pi / 3, rel=1e-10)
        assert np.linalg.norm(p) == pytest.approx(1.0, rel=1e-12)


def _in_plane(z0, z1, alpha):
    """Slerp written in the orthonormal basis e1 = z0/|z0|, e2 (z1's part orthogonal to z0):
    z1 = r1 (cos theta e1 + sin theta e2), and the path's coordinates follow from the sine rule."""
    a, b = z0.ravel(), z1.ravel()
    r0, r1 = np.linalg.norm(a), np.linalg.norm(b)
    e1 = a / r0
    perp = b - (b @ e1) * e1
    e2 = perp / np.linalg.norm(perp)
    theta = np.arctan2(b @ e2, b @ e1)
    c1 = (r0 * np.sin((1 - alpha) * theta) + r1 * np.sin(alpha * theta) * np.cos(theta)) / np.sin(theta)
    c2 = r1 * np.sin(alpha * theta)
    return (c1 * e1 + c2 * e2).reshape(z0.shape)


@exercise("slerp")
def test_slerp_of_non_unit_non_orthogonal_tensors(ex):
    rng = np.random.default_rng(6)
    z0 = 3.0 * rng.standard_normal((4, 3))
    z1 = 0.5 * z0 + 1.7 * rng.standard_normal((4, 3))     # about 40 degrees from z0, another norm
    for a in (0.2, 0.5, 0.9):
        np.testing.assert_allclose(ex.slerp(z0, z1, a), _in_plane(z0, z1, a), rtol=1e-10, atol=1e-12)


@exercise("slerp")
def test_slerp_between_equal_norms_keeps_the_norm_and_turns_evenly(ex):
    rng = np.random.default_rng(7)
    z0, w = rng.standard_normal((8, 2)), rng.standard_normal((8, 2))
    z1 = (z0 + 2 * w) * np.linalg.norm(z0) / np.linalg.norm(z0 + 2 * w)     # |z1| = |z0| = r, not 1
    cos = lambda u, v: np.sum(u * v) / (np.linalg.norm(u) * np.linalg.norm(v))
    theta = np.arccos(cos(z0, z1))
    for a in (0.3, 0.6):
        p = ex.slerp(z0, z1, a)
        assert np.linalg.norm(p) == pytest.approx(np.linalg.norm(z0), rel=1e-10)
        assert np.arccos(cos(z0, p)) == pytest.approx(a * theta, rel=1e-8)
