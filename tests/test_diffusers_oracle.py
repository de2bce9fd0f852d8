"""diffusers' DDPMScheduler as an independent oracle for the forward process, the posterior and
the ancestral step.

diffusers keeps its schedule in float32 (``trained_betas`` become a float32 tensor), so each
comparison is made twice: against the scheduler as configured (float32 tolerance), and against the
same scheduler with its tables replaced by float64 copies of ours (float64 tolerance, which checks
the formulas rather than the rounding).
"""
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from minidiff import backend, diffusion, samplers, schedules


T = 100
STEPS = [0, 1, 2, 37, 98, 99]
VARIANCE = {"fixed_small": "posterior", "fixed_large": "beta"}


def _scheduler(variance_type, float64):
    betas = schedules.linear_betas(T, 1e-3, 0.05)
    sched = DDPMScheduler(num_train_timesteps=T, trained_betas=betas, clip_sample=False,
                          variance_type=variance_type, prediction_type="epsilon")
    if float64:
        sched.betas = torch.from_numpy(betas)
        sched.alphas = 1.0 - sched.betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
        sched.one = torch.tensor(1.0, dtype=torch.float64)
    return sched, betas


def _tol(float64):
    return dict(rtol=1e-10, atol=1e-12) if float64 else dict(rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("float64", [True, False])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_reverse_variance_matches_get_variance(variance_type, float64):
    sched, betas = _scheduler(variance_type, float64)
    ours = samplers.ddpm_sigma2(betas, VARIANCE[variance_type])
    for t in range(1, T):  # at t = 0 diffusers clamps the posterior variance 0 to 1e-20 and adds no noise
        np.testing.assert_allclose(ours[t], float(sched._get_variance(t)), **_tol(float64))
    if variance_type == "fixed_small":
        _, var = diffusion.q_posterior(np.zeros((T, 1)), np.zeros((T, 1)), np.arange(T), betas)
        np.testing.assert_allclose(var[:, 0], ours, rtol=1e-14)
        assert ours[0] == 0.0


@pytest.mark.parametrize("float64", [True, False])
def test_q_posterior_mean_matches_step_without_noise(float64):
    """With model output eps, diffusers' mean is the posterior mean at x0 = eps_to_x0(x_t, eps);
    at t = 0 ``step`` adds no noise, elsewhere subtract the (reproduced) noise."""
    sched, betas = _scheduler("fixed_small", float64)
    ab = schedules.alpha_bars(betas)
    rng = np.random.default_rng(0)
    dtype = torch.float64 if float64 else torch.float32
    for t in STEPS:
        x_t, eps = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
        tt = np.full(4, t)
        x0_hat = diffusion.eps_to_x0(x_t, tt, eps, ab)
        mean, var = diffusion.q_posterior(x0_hat, x_t, tt, betas)
        out = sched.step(torch.from_numpy(eps).to(dtype), t, torch.from_numpy(x_t).to(dtype),
                         generator=torch.Generator().manual_seed(t))
        np.testing.assert_allclose(out.pred_original_sample.double().numpy(), x0_hat, **_tol(float64))
        z = torch.randn((4, 3), generator=torch.Generator().manual_seed(t), dtype=dtype).double().numpy()
        noise_part = np.sqrt(var) * z if t > 0 else 0.0
        np.testing.assert_allclose(out.prev_sample.double().numpy() - noise_part, mean, **_tol(float64))


@pytest.mark.parametrize("float64", [True, False])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_step_matches_diffusers_step(variance_type, float64):
    """Full ``step`` outputs, noise included: diffusers draws it with randn_tensor from the passed
    torch.Generator; our TorchGenerator with the same seed must produce the same noise."""
    sched, betas = _scheduler(variance_type, float64)
    dtype = torch.float64 if float64 else torch.float32
    rng = np.random.default_rng(1)
    for t in STEPS:
        x_t = torch.from_numpy(rng.standard_normal((5, 2))).to(dtype)
        eps = torch.from_numpy(rng.standard_normal((5, 2))).to(dtype)
        ref = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(100 + t)).prev_sample
        noise = backend.generator(100 + t, backend="torch").randn_like(eps)
        ours = samplers.ddpm_step(x_t, t, eps, betas, noise, VARIANCE[variance_type])
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours.double().numpy(), ref.double().numpy(), **_tol(float64))
        # the same step on NumPy arrays gives the same numbers
        ours_np = samplers.ddpm_step(x_t.numpy(), t, eps.numpy(), betas, noise.numpy(), VARIANCE[variance_type])
        np.testing.assert_allclose(ours_np, ours.numpy(), rtol=1e-12 if float64 else 1e-6, atol=1e-12 if float64 else 1e-6)


@pytest.mark.parametrize("float64", [True, False])
def test_a_whole_chain_matches_diffusers(float64):
    """Twenty steps chained (the errors of a wrong coefficient would compound)."""
    sched, betas = _scheduler("fixed_large", float64)
    dtype = torch.float64 if float64 else torch.float32
    eps_model = lambda x, t: torch.sin(3 * x) * (1 + t[:, None].to(x.dtype) / T)
    x_ref = x_ours = torch.from_numpy(np.random.default_rng(2).standard_normal((6, 2))).to(dtype)
    g_ref, g_ours = torch.Generator().manual_seed(9), backend.generator(9, backend="torch")
    for t in range(19, -1, -1):
        tb = torch.full((6,), t)
        x_ref = sched.step(eps_model(x_ref, tb), t, x_ref, generator=g_ref).prev_sample
        x_ours = samplers.ddpm_step(x_ours, t, eps_model(x_ours, tb), betas,
                                    g_ours.randn_like(x_ours) if t > 0 else None, "beta")
    np.testing.assert_allclose(x_ours.double().numpy(), x_ref.double().numpy(),
                               **(_tol(True) if float64 else dict(rtol=1e-4, atol=1e-5)))


@pytest.mark.parametrize("float64", [True, False])
def test_add_noise_matches_q_sample(float64):
    sched, betas = _scheduler("fixed_small", float64)
    ab = schedules.alpha_bars(betas)
    dtype = torch.float64 if float64 else torch.float32
    rng = np.random.default_rng(3)
    x0 = torch.from_numpy(rng.standard_normal((8, 2, 3))).to(dtype)
    noise = torch.from_numpy(rng.standard_normal((8, 2, 3))).to(dtype)
    t = torch.from_numpy(np.array([0, 1, 5, 50, 97, 98, 99, 3]))
    ref = sched.add_noise(x0, noise, t)
    ours = diffusion.q_sample(x0, t, ab, noise)
    assert ours.dtype == dtype
    np.testing.assert_allclose(ours.double().numpy(), ref.double().numpy(), **_tol(float64))
