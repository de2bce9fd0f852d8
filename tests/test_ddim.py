"""DDIM: the sampler on both backends, its relation to DDPM and to the probability-flow ODE,
and its errors for bad arguments."""
import math

import numpy as np
import pytest
import torch

from minidiff import samplers
from minidiff.backend import generator
from minidiff.data.toy2d import eight_gaussians_mixture
from minidiff.metrics import mmd2_unbiased

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)
ALPHA_BAR = np.cumprod(1 - BETAS)
GMM = eight_gaussians_mixture()
EPS = GMM.eps_model(ALPHA_BAR)


def test_eta_one_on_every_step_is_ancestral_sampling_in_law():
    rng = generator(0)
    x_T = rng.randn((600, 2))
    ddim = samplers.ddim_sample(EPS, x_T, ALPHA_BAR, np.arange(T)[::-1], eta=1.0, randn_like=rng.randn_like)
    ddpm = samplers.ddpm_sample(EPS, x_T, BETAS, generator(1).randn_like, variance="posterior")
    data = GMM.sample(600, 2)
    # measured: both ~0.003 or less; fresh data sets differ by about +-0.004
    assert mmd2_unbiased(ddim, data) < 0.01 and mmd2_unbiased(ddpm, data) < 0.01
    assert abs(mmd2_unbiased(ddim, ddpm)) < 0.01


def test_same_noise_gives_the_same_path_as_ddpm_with_posterior_variance():
    draws = [generator(3).randn((16, 2)) for _ in range(1)][0]
    rng_a, rng_b = generator(4), generator(4)
    a = samplers.ddim_sample(EPS, draws, ALPHA_BAR, np.arange(T)[::-1], eta=1.0, randn_like=rng_a.randn_like)
    b = samplers.ddpm_sample(EPS, draws, BETAS, rng_b.randn_like, variance="posterior")
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_ddim_is_euler_on_the_probability_flow_ode_in_the_sigma_parameterisation():
    # DDIM eq. (14): with xbar = x / sqrt(a) and sigma = sqrt((1 - a) / a), one DDIM step is
    # exactly the Euler step  xbar' = xbar + (sigma' - sigma) eps(xbar / sqrt(sigma^2 + 1)).
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 2))
    for t, t_prev in [(999, 900), (500, 250), (40, 0)]:
        eps = EPS(x, np.full(32, t))
        a_t, a_prev = ALPHA_BAR[t], ALPHA_BAR[t_prev]
        s_t, s_prev = math.sqrt((1 - a_t) / a_t), math.sqrt((1 - a_prev) / a_prev)
        euler = (x / math.sqrt(a_t) + (s_prev - s_t) * eps) * math.sqrt(a_prev)
        np.testing.assert_allclose(samplers.ddim_step(x, t, t_prev, eps, ALPHA_BAR), euler, rtol=1e-10)


def test_more_steps_bring_ddim_closer_to_the_ode_solution():
    x_T = generator(6).randn((200, 2))
    ref = samplers.ddim_sample(EPS, x_T, ALPHA_BAR, np.arange(T)[::-1])
    errs = [np.abs(samplers.ddim_sample(EPS, x_T, ALPHA_BAR, samplers.ddim_timesteps(T, n, "trailing")) - ref).mean()
            for n in (10, 50, 200)]
    assert errs[0] > errs[1] > errs[2]


def test_ddim_on_both_backends():
    x_T = generator(7).randn((64, 2))
    tau = samplers.ddim_timesteps(T, 20, "linspace")
    noise = [generator(8 + i).randn((64, 2)) for i in range(20)]
    it_np, it_t = iter(noise), iter(noise)
    a = samplers.ddim_sample(EPS, x_T, ALPHA_BAR, tau, eta=0.5, randn_like=lambda x: next(it_np))
    b = samplers.ddim_sample(EPS, torch.from_numpy(x_T), ALPHA_BAR, tau, eta=0.5,
                             randn_like=lambda x: torch.from_numpy(next(it_t)))
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-10, atol=1e-12)
    za = samplers.ddim_invert(EPS, a, ALPHA_BAR, tau)
    zb = samplers.ddim_invert(EPS, b, ALPHA_BAR, tau)
    np.testing.assert_allclose(zb.numpy(), za, rtol=1e-10, atol=1e-12)
    x32 = torch.from_numpy(x_T).float()
    c = samplers.ddim_sample(EPS, x32, ALPHA_BAR, tau)
    assert c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), samplers.ddim_sample(EPS, x_T, ALPHA_BAR, tau), rtol=1e-4, atol=1e-4)


def test_interpolation_between_two_latents_decodes_to_data():
    rng = generator(9)
    z0, z1 = rng.randn((1, 2)), rng.randn((1, 2))
    tau = samplers.ddim_timesteps(T, 50, "linspace")
    path = np.concatenate([samplers.ddim_sample(EPS, samplers.slerp(z0, z1, a), ALPHA_BAR, tau)
                           for a in np.linspace(0, 1, 9)])
    # every decoded point lies near one of the eight modes
    dists = np.linalg.norm(path[:, None, :] - GMM.means[None], axis=2).min(axis=1)
    assert np.all(dists < 0.5)


@pytest.mark.parametrize("call,match", [
    (lambda: samplers.ddim_timesteps(100, 101), "n_steps must be <= T"),
    (lambda: samplers.ddim_timesteps(100, 0), "n_steps"),
    (lambda: samplers.ddim_timesteps(100, 10, "cubic"), "spacing"),
    (lambda: samplers.ddim_sigma(0.5, 0.6, -0.1), "eta"),
    (lambda: samplers.ddim_sample(EPS, np.zeros((2, 2)), ALPHA_BAR, [10, 20]), "strictly decreasing"),
    (lambda: samplers.ddim_sample(EPS, np.zeros((2, 2)), ALPHA_BAR, [20, 20, 10]), "strictly decreasing"),
    (lambda: samplers.ddim_sample(EPS, np.zeros((2, 2)), ALPHA_BAR, [2000, 10]), r"\[0, T\)"),
    (lambda: samplers.ddim_sample(EPS, np.zeros((2, 2)), ALPHA_BAR, [20, 10], eta=-1.0), "eta"),
    (lambda: samplers.ddim_sample(EPS, np.zeros((2, 2)), ALPHA_BAR, [20, 10], eta=0.5), "randn_like"),
    (lambda: samplers.ddim_sample(lambda x, t: x * np.nan, np.zeros((2, 2)), ALPHA_BAR, [20, 10]), "non-finite"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
