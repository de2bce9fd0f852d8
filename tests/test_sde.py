"""Score SDEs: marginals, samplers and the exact likelihood, against the Gaussian mixture's
closed forms, diffusers' ScoreSdeVeScheduler and the torch backend."""
import numpy as np
import pytest
import torch

from minidiff import sde as S
from minidiff.backend import generator
from minidiff.data.toy2d import eight_gaussians_mixture
from minidiff.metrics import mmd2_unbiased

GMM = eight_gaussians_mixture()
SDES = [S.VPSDE(), S.SubVPSDE(), S.VESDE(0.01, 10.0)]


def exact_score(sde):
    def score(x, t):
        alpha, sigma = sde.marginal(t, x)
        return GMM.score(x, alpha, sigma)
    return score


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_perturb_matches_the_marginal_moments(sde):
    rng = np.random.default_rng(0)
    x0 = np.full((40000, 1), 0.7)
    t = np.full(40000, 0.4)
    xt = S.perturb(sde, x0, t, rng.standard_normal(x0.shape))
    alpha, sigma = sde.marginal(0.4, x0[:1])
    assert xt.mean() == pytest.approx(float(alpha[0]) * 0.7, abs=0.02 * max(1, float(sigma[0])))
    assert xt.std() == pytest.approx(float(sigma[0]), rel=0.02)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_marginal_variance_solves_the_forward_sde(sde):
    # d Var/dt = 2 f'(t) Var + g^2 for the linear drift f = f'(t) x (Sarkka & Solin eq. 6.2).
    x = np.ones((3, 1))
    t, h = np.array([0.2, 0.5, 0.8]), 1e-6
    _, s0 = sde.marginal(t, x)
    _, s1 = sde.marginal(t + h, x)
    f, g = sde.sde(x, t)
    np.testing.assert_allclose((s1 ** 2 - s0 ** 2) / h, 2 * f[:, 0] * s0 ** 2 + g ** 2, rtol=1e-4)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_exact_likelihood_matches_the_mixture_density(sde):
    x0 = GMM.sample(100, 1)
    logp, nfe = S.ode_log_likelihood(sde, exact_score(sde), x0, rtol=1e-6, atol=1e-6)
    alpha, sigma = sde.marginal(1e-3, x0)
    exact = GMM.log_prob(x0, alpha, sigma)
    # measured: max |error| 0.002 (VP), 0.003 (sub-VP) nats; VE's prior N(0, 10^2) is not its
    # exact marginal at t = 1, which costs ~0.05 nats
    tol = 0.1 if sde.name == "ve" else 0.02
    assert np.max(np.abs(logp - exact)) < tol
    assert nfe > 10


def test_hutchinson_likelihood_is_unbiased():
    sde = S.VPSDE()
    x0 = np.repeat(GMM.sample(2, 2), 300, axis=0)
    exact = GMM.log_prob(x0[[0, 300]], *sde.marginal(1e-3, x0[[0, 300]]))
    for probe in ("rademacher", "gaussian"):
        logp, _ = S.ode_log_likelihood(sde, exact_score(sde), x0, rng=generator(3), divergence="hutchinson",
                                       probe=probe, rtol=1e-4, atol=1e-4)
        means = logp.reshape(2, 300).mean(axis=1)
        sem = logp.reshape(2, 300).std(axis=1) / np.sqrt(300)
        assert np.all(np.abs(means - exact) < 4 * sem + 0.02)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama"])
@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_pc_sampler_reproduces_the_mixture(sde, predictor):
    rng = generator(4)
    x = S.pc_sample(exact_score(sde), S.prior_sample(sde, (800, 2), rng), sde, 300, rng.randn_like,
                    predictor=predictor, n_corrector=1, snr=0.16)
    # measured MMD^2 to fresh data: 0.009-0.010 with 300 steps (0.002-0.004 with 1000, and
    # 0.86 for Langevin alone at 300 steps); two fresh data sets differ by about +-0.004
    assert mmd2_unbiased(x, GMM.sample(800, 5)) < 0.015


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_fixed_step_ode_converges_to_the_adaptive_solution(method):
    sde = S.VPSDE()
    x_T = generator(7).randn((200, 2))
    ref, _ = S.ode_sample_rk45(exact_score(sde), x_T, sde, rtol=1e-7, atol=1e-7)
    errs = [np.abs(S.ode_sample(exact_score(sde), x_T, sde, n, method=method) - ref).mean() for n in (25, 100)]
    assert errs[1] < errs[0]
    assert errs[1] < {"euler": 0.05, "heun": 0.01, "rk4": 0.01}[method]


def test_rk45_counts_function_evaluations():
    sde = S.VPSDE()
    calls = [0]

    def score(x, t):
        calls[0] += 1
        return exact_score(sde)(x, t)

    _, nfe = S.ode_sample_rk45(score, generator(8).randn((50, 2)), sde)
    assert nfe == calls[0] > 0


def test_ve_predictor_and_corrector_match_diffusers():
    from diffusers import ScoreSdeVeScheduler
    sde = S.VESDE(0.01, 50.0)
    n = 100
    sched = ScoreSdeVeScheduler(num_train_timesteps=n, snr=0.16, sigma_min=0.01, sigma_max=50.0, sampling_eps=1e-5)
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.standard_normal((4, 2)) * 10)
    score_np = lambda y, t: -y / (1 + sde.sigma(t)[:, None] ** 2)
    for i in (0, 40, 98):
        t = float(sched.timesteps[i])
        model_output = torch.from_numpy(score_np(x.numpy(), np.full(4, t)))
        # predictor: diffusers draws z from its generator; replay the same draw
        out = sched.step_pred(model_output, sched.timesteps[i], x, generator=torch.Generator().manual_seed(i))
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=x.dtype).numpy()
        dt = float(sched.timesteps[i + 1] - sched.timesteps[i])
        ours = S.reverse_diffusion_step(sde, score_np, x.numpy(), t, dt, z)
        np.testing.assert_allclose(ours, out.prev_sample.numpy(), rtol=1e-4, atol=1e-4)
        # corrector
        corr = sched.step_correct(model_output, x, generator=torch.Generator().manual_seed(100 + i)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + i), dtype=x.dtype).numpy()
        ours = S.langevin_step(lambda y, tt: model_output.numpy(), x.numpy(), t, 0.16, z)
        np.testing.assert_allclose(ours, corr.numpy(), rtol=1e-6)  # diffusers keeps the step size in float32


def test_samplers_agree_across_backends():
    sde = S.VPSDE()
    x_np = generator(10).randn((64, 2))
    x_t = torch.from_numpy(x_np)
    noise = [generator(11).randn((64, 2)) for _ in range(1)][0]
    out_np = S.ode_sample(exact_score(sde), x_np, sde, 20)
    out_t = S.ode_sample(exact_score(sde), x_t, sde, 20)
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-10, atol=1e-12)
    draws = iter([generator(12).randn((64, 2)) for _ in range(60)])
    draws_np = [next(draws) for _ in range(60)]
    it_np, it_t = iter(draws_np), iter(draws_np)
    a = S.pc_sample(exact_score(sde), x_np, sde, 20, lambda x: next(it_np))
    b = S.pc_sample(exact_score(sde), x_t, sde, 20, lambda x: torch.from_numpy(next(it_t)))
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-9, atol=1e-10)
    lp_np, _ = S.ode_log_likelihood(sde, exact_score(sde), x_np[:8] * 0.5)
    lp_t, _ = S.ode_log_likelihood(sde, exact_score(sde), x_t[:8] * 0.5)
    np.testing.assert_allclose(lp_t, lp_np, rtol=1e-8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma_min=1.0, sigma_max=1.0), "sigma_min"),
    (dict(sigma_min=5.0, sigma_max=1.0), "sigma_min"),
])
def test_ve_sde_rejects_bad_sigmas(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.VESDE(**kwargs)


def test_bad_sampler_arguments_are_named():
    sde = S.VPSDE()
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="snr"):
        S.pc_sample(exact_score(sde), x, sde, 10, np.zeros_like, snr=0.0)
    with pytest.raises(ValueError, match="snr"):
        S.langevin_step(exact_score(sde), x, 0.5, -1.0, x)
    with pytest.raises(ValueError, match="n_steps"):
        S.ode_sample(exact_score(sde), x, sde, 0)
    with pytest.raises(ValueError, match="predictor"):
        S.pc_sample(exact_score(sde), x, sde, 10, np.zeros_like, predictor="rk")
    with pytest.raises(ValueError, match="non-finite"):
        S.ode_sample(lambda y, t: y * np.nan, x, sde, 5)
    with pytest.raises(ValueError, match="non-finite"):
        S.ode_sample_rk45(lambda y, t: y * np.inf, x, sde)
    with pytest.raises(ValueError, match="shape"):
        S.pc_sample(lambda y, t: y[:, :1], x, sde, 25, np.zeros_like)  # n_steps > beta_max for the VP corrector
