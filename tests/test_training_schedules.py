"""EDM2's schedules that need no end of training (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models"): the power-function EMA and the inverse-square-root
learning-rate decay, in the backend-neutral minidiff.nn.optim."""
import math

import numpy as np
import pytest

from minidiff.nn import optim


def profile_std(gamma: float) -> float:
    """The standard deviation of the density proportional to x^gamma on [0, 1], by quadrature."""
    x = (np.arange(200000) + 0.5) / 200000
    w = x ** gamma
    w /= w.sum()
    mean = (w * x).sum()
    return float(np.sqrt((w * (x - mean) ** 2).sum()))


@pytest.mark.parametrize("sigma_rel", [0.013, 0.05, 0.1, 0.173, 0.28])
def test_power_ema_exponent_gives_a_profile_of_that_width(sigma_rel):
    gamma = optim.power_ema_exponent(sigma_rel)
    assert gamma > 0
    assert math.isclose(profile_std(gamma), sigma_rel, rel_tol=1e-4)


def test_power_ema_exponent_matches_edm2s_two_named_values():
    # EDM2 section 3.1: sigma_rel = 0.05 and 0.10 are gamma = 16.97 and 6.94
    assert round(optim.power_ema_exponent(0.05), 2) == 16.97
    assert round(optim.power_ema_exponent(0.10), 2) == 6.94


@pytest.mark.parametrize("gamma,t", [(6.94, 3000), (16.97, 777), (0.5, 50)])
def test_power_ema_weights_sum_to_one_and_follow_the_power_profile(gamma, t):
    """Run the EMA on a basis: the weight of step tau's weights in the average after t steps is
    (1 - beta_tau) prod_{s > tau} beta_s = (1 - beta_tau) (tau / t)^(gamma + 1)."""
    betas = np.array([optim.power_ema_decay(gamma, k) for k in range(t)])
    w = np.zeros(t)
    for k, b in enumerate(betas):               # the EMA of the one-hot vectors e_k: w holds the weights
        w *= b
        w[k] += 1 - b
    assert betas[0] == 0.0                      # the first step copies the weights
    assert math.isclose(w.sum(), 1.0, rel_tol=1e-12)
    tau = np.arange(1, t + 1)
    assert np.allclose(w[1:], (1 - betas[1:]) * (tau[1:] / t) ** (gamma + 1), rtol=1e-9)
    # and the average's relative width is the profile's, up to the discretisation
    x = tau / t
    mean = (w * x).sum()
    assert math.isclose(np.sqrt((w * (x - mean) ** 2).sum()), profile_std(gamma), rel_tol=3e-2)


def test_power_ema_spans_the_same_fraction_of_a_short_and_a_long_run():
    gamma = optim.power_ema_exponent(0.1)

    def weighted_mean_fraction(t):
        acc = np.zeros(t)
        for k in range(t):
            b = optim.power_ema_decay(gamma, k)
            acc *= b
            acc[k] += 1 - b
        return float((acc * np.arange(1, t + 1)).sum() / t)

    assert abs(weighted_mean_fraction(400) - weighted_mean_fraction(4000)) < 5e-3


def test_inverse_sqrt_decay_is_flat_then_falls_as_one_over_root_k():
    assert [optim.inverse_sqrt_decay(100, k) for k in (0, 50, 100)] == [1.0, 1.0, 1.0]
    assert math.isclose(optim.inverse_sqrt_decay(100, 400), 0.5)
    assert math.isclose(optim.inverse_sqrt_decay(7, 70), 1 / math.sqrt(10))
    ks = np.arange(100, 5000, 37)
    f = np.array([optim.inverse_sqrt_decay(100, int(k)) for k in ks])
    assert np.all(np.diff(f) < 0) and np.allclose(f * np.sqrt(ks), 10.0)
    assert optim.inverse_sqrt_decay(0, 10 ** 6) == 1.0            # 0: no decay
