"""DESIGN section 8: bad input gets a clear ValueError naming the argument; same seed, same numbers."""
from functools import partial

import numpy as np
import pytest
import torch

from minidiff import backend, diffusion, losses, samplers, schedules, train
from minidiff.data.toy2d import sample_toy
from minidiff.nn import init_mlp, mlp



def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'swissroll'.*swiss_roll"):
        sample_toy("swissroll", 10)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sample_toy("two_moons", 0)
    with pytest.raises(ValueError, match="rng"):
        sample_toy("two_moons", 10, rng=-3)


@pytest.mark.parametrize("make", [schedules.linear_betas, schedules.cosine_betas])
@pytest.mark.parametrize("T", [0, -5, 2.5, True])
def test_T_below_one(make, T):
    with pytest.raises(ValueError if isinstance(T, int) and not isinstance(T, bool) else TypeError,
                       match=r"T must be an integer"):
        make(T)


def test_schedule_parameters():
    with pytest.raises(ValueError, match="beta_1"):
        schedules.linear_betas(10, beta_1=0.1, beta_T=0.01)
    with pytest.raises(ValueError, match="max_beta"):
        schedules.cosine_betas(10, max_beta=1.0)


@pytest.mark.parametrize("bad", [[0.1, 0.0, 0.2], [0.1, 1.0], [0.5, -0.1], [0.1, np.nan]])
def test_betas_outside_the_open_unit_interval(bad):
    with pytest.raises(ValueError, match=r"betas must lie in the open interval \(0, 1\)"):
        schedules.alpha_bars(bad)
    with pytest.raises(ValueError, match=r"betas must lie in the open interval \(0, 1\)"):
        samplers.ddpm_sample(lambda x, t: x, np.zeros((2, 2)), bad, np.random.default_rng(0).standard_normal)


def test_betas_wrong_shape():
    with pytest.raises(ValueError, match="betas must be a 1-D array"):
        schedules.alpha_bars(np.full((2, 2), 0.1))


@pytest.mark.parametrize("t", [np.array([0, 10]), np.array([-1, 3])])
def test_timestep_outside_range(t):
    ab = schedules.alpha_bars(schedules.linear_betas(10))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\) = \[0, 10\)"):
        diffusion.q_sample(np.zeros((2, 2)), t, ab, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\)"):
        diffusion.q_sample(torch.zeros(2, 2), torch.from_numpy(t), ab, torch.zeros(2, 2))


def test_non_integer_or_misshapen_timesteps():
    ab = schedules.alpha_bars(schedules.linear_betas(10))
    with pytest.raises(ValueError, match="t must hold integer timesteps"):
        diffusion.q_sample(np.zeros((2, 2)), np.array([0.5, 1.0]), ab, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(B,\)"):
        diffusion.q_sample(np.zeros((2, 2)), np.array([0, 1, 2]), ab, np.zeros((2, 2)))


def test_shape_mismatches():
    ab = schedules.alpha_bars(schedules.linear_betas(10))
    with pytest.raises(ValueError, match=r"shapes must match: x0 \(4, 2\), noise \(4, 3\)"):
        diffusion.q_sample(np.zeros((4, 2)), np.zeros(4, dtype=int), ab, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"model returned shape \(4, 1\), expected x's \(4, 2\)"):
        losses.ddpm_loss(lambda x, t: x[:, :1], np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros((4, 2)), ab)
    with pytest.raises(ValueError, match=r"model output at step 9 has shape \(3, 1\)"):
        samplers.ddpm_sample(lambda x, t: x[:, :1], np.zeros((3, 2)), schedules.linear_betas(10),
                             lambda x: np.zeros_like(x))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("which", ["numpy", "torch"])
def test_non_finite_model_output_names_the_step(bad, which):
    betas = schedules.linear_betas(10)

    def model(x, t):
        out = 0.1 * x
        if int(t[0]) == 4:
            out = out * bad
        return out

    x_T = np.ones((3, 2)) if which == "numpy" else torch.ones(3, 2, dtype=torch.float64)
    gen = backend.generator(0, backend=which)
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) at step t=4"):
        samplers.ddpm_sample(model, x_T, betas, gen.randn_like)


def test_unknown_target_variance_backend():
    ab = schedules.alpha_bars(schedules.linear_betas(10))
    with pytest.raises(ValueError, match="target must be one of .*'noise'"):
        losses.ddpm_loss(lambda x, t: x, np.zeros((2, 2)), np.zeros(2, dtype=int), np.zeros((2, 2)), ab, target="noise")
    with pytest.raises(ValueError, match="variance must be one of .*'learned'"):
        samplers.ddpm_sample(lambda x, t: x, np.zeros((2, 2)), schedules.linear_betas(10), np.zeros_like,
                             variance="learned")
    with pytest.raises(ValueError, match="variance must be one of"):
        samplers.ddpm_sigma2(schedules.linear_betas(10), "large")
    with pytest.raises(ValueError, match="backend must be one of .*'jax'"):
        backend.get_namespace("jax")
    with pytest.raises(ValueError, match="backend must be one of .*'jax'"):
        train.ToyConfig(backend="jax").validate()
    with pytest.raises(ValueError, match="dataset must be one of"):
        train.ToyConfig(dataset="mnist").validate()
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        train.ToyConfig(lr=0.0).validate()


@pytest.mark.parametrize("which", ["numpy", "torch"])
def test_ddpm_sample_same_seed_same_samples(which):
    params = init_mlp(0, 2, hidden=16, depth=2, t_dim=8)
    betas = schedules.linear_betas(30, 1e-3, 0.2)
    if which == "numpy":
        model = partial(mlp, params)
    else:
        from minidiff.torch import TorchMLP
        model = TorchMLP.from_params(params)

    def run(seed):
        g = backend.generator(seed, backend=which)
        x_T = g.randn((50, 2), dtype=np.float64 if which == "numpy" else torch.float64)
        with torch.no_grad():
            out = samplers.ddpm_sample(model, x_T, betas, g.randn_like)
        return backend.get_namespace(which).to_numpy(out)

    a, b, c = run(11), run(11), run(12)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and not np.allclose(a, c)


@pytest.mark.parametrize("which", ["numpy", "torch"])
def test_sample_from_params_same_seed_same_samples(which):
    params = init_mlp(0, 2, hidden=16, depth=2, t_dim=8)
    config = {"T": 30, "schedule": "linear", "target": "eps"}
    a = train.sample_from_params(params, config, 40, seed=5, backend=which)
    b = train.sample_from_params(params, config, 40, seed=5, backend=which)
    c = train.sample_from_params(params, config, 40, seed=6, backend=which)
    assert isinstance(a, np.ndarray) and a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        train.sample_from_params(params, config, 0)


def test_sample_from_params_torch_is_the_same_model():
    """With the same x_T and noise (a numpy generator driving both), the torch path of
    sample_from_params is the numpy path: from_params must keep float64 weights exactly."""
    params = init_mlp(1, 2, hidden=16, depth=2, t_dim=8)
    params[-1][0] = params[-1][0] * 10
    betas = schedules.linear_betas(30)
    from minidiff.torch import TorchMLP
    module = TorchMLP.from_params(params, dtype=torch.float64)
    for (W, b), lin in zip(params, module.linears):
        np.testing.assert_array_equal(lin.weight.detach().numpy().T, W)
    g1, g2 = backend.generator(3, backend="numpy"), backend.generator(3, backend="numpy")
    x_T = np.random.default_rng(0).standard_normal((20, 2))
    ref = samplers.ddpm_sample(partial(mlp, params), x_T, betas, g1.randn_like)
    with torch.no_grad():
        out = samplers.ddpm_sample(module, torch.from_numpy(x_T), betas,
                                   lambda x: torch.from_numpy(g2.randn_like(x.numpy())))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)
