"""Consistency models (Song et al. 2023; iCT, Song & Dhariwal 2023): the boundary condition on both
backends, the discretisation and the schedules, the distances, the stop-gradient on the target
in both losses, multistep sampling, and the errors for bad arguments.

The lesson checks (tests/lessons/test_07_consistency.py) already cover the scalings against
diffusers, the ct_schedule endpoints at k = 0, the loss formulas and a multistep run against
CMStochasticIterativeScheduler; they are not repeated here."""
import math

import autograd
import numpy as np
import pytest
import torch
from scipy import stats

from minidiff import consistency as cm
from minidiff.backend import generator, namespace
from minidiff.data.toy2d import eight_gaussians_mixture
from minidiff.edm import karras_sigmas

GMM = eight_gaussians_mixture()
EPS, T = 0.002, 80.0


def exact_D(x, sigma):
    return GMM.denoise(x, 1.0, sigma)


def linear_raw_net(W, b):
    """A tiny linear raw net F(x, c_noise) = x W + c_noise b, on either backend (and traced)."""
    def F(x, c_noise):
        return x @ W + c_noise[:, None] * b
    return F


def wild_raw_net(x, c_noise):
    xp = namespace(x)
    c = xp.reshape(c_noise, (-1,) + (1,) * (x.ndim - 1))
    return 1e6 * xp.sin(7 * x) + 50 * c - 3e3


# ----------------------------------------------------------------------------------------------
# The boundary condition f(x, eps) = x.

@pytest.mark.parametrize("raw", [wild_raw_net, lambda x, c: 0 * x + 12.5, lambda x, c: -x])
def test_boundary_condition_holds_exactly_for_any_raw_net(raw):
    rng = np.random.default_rng(0)
    for shape in ((7, 2), (3, 2, 4, 4)):
        x = 5 * rng.standard_normal(shape)
        for sigma_data, eps in ((0.5, 0.002), (1.0, 0.01)):
            f = cm.consistency_function(raw, sigma_data=sigma_data, eps=eps)
            np.testing.assert_array_equal(f(x, eps), x)
            np.testing.assert_array_equal(f(x, np.full(shape[0], eps)), x)
            xt = torch.from_numpy(x)
            out = f(xt, eps)
            assert isinstance(out, torch.Tensor)
            torch.testing.assert_close(out, xt, rtol=0, atol=0)
            torch.testing.assert_close(f(xt, torch.full((shape[0],), eps, dtype=torch.float64)), xt, rtol=0, atol=0)
    # and away from eps the raw net does matter
    assert np.abs(cm.consistency_function(raw)(x, 1.0) - x).max() > 1e-3


def test_consistency_function_same_numbers_on_both_backends():
    rng = np.random.default_rng(1)
    x = 3 * rng.standard_normal((6, 2))
    t = np.array([0.002, 0.01, 0.5, 3.0, 40.0, 80.0])
    W, b = rng.standard_normal((2, 2)), rng.standard_normal(2)
    f = cm.consistency_function(linear_raw_net(W, b))
    ft = cm.consistency_function(linear_raw_net(torch.from_numpy(W), torch.from_numpy(b)))
    ref = f(x, t)
    np.testing.assert_allclose(ft(torch.from_numpy(x), torch.from_numpy(t)).numpy(), ref, rtol=1e-10, atol=1e-12)
    # CM eq. 5 written out
    c_skip = 0.25 / ((t - EPS) ** 2 + 0.25)
    c_out = 0.5 * (t - EPS) / np.sqrt(0.25 + t ** 2)
    c_in = 1 / np.sqrt(t ** 2 + 0.25)
    expected = c_skip[:, None] * x + c_out[:, None] * ((c_in[:, None] * x) @ W + 0.25 * np.log(t)[:, None] * b)
    np.testing.assert_allclose(ref, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Discretisation and schedules.

def test_cm_boundaries_increase_from_eps_to_T():
    for N in (2, 3, 18, 1281):
        b = cm.cm_boundaries(N)
        assert b.shape == (N,) and np.all(np.diff(b) > 0)
        assert b[0] == pytest.approx(EPS, rel=1e-12) and b[-1] == pytest.approx(T, rel=1e-12)
        # the Karras steps, read upwards; and CM Appendix C's formula, counted from eps, to a few ulps
        np.testing.assert_array_equal(b, karras_sigmas(N, EPS, T)[::-1])
        i = np.arange(1, N + 1)
        cm_formula = (EPS ** (1 / 7) + (i - 1) / (N - 1) * (T ** (1 / 7) - EPS ** (1 / 7))) ** 7
        # (the power rho = 7 multiplies the base's relative rounding error, a few ulps, by 7)
        np.testing.assert_allclose(b, cm_formula, rtol=4 * 7 * np.finfo(np.float64).eps, atol=0)
    np.testing.assert_allclose(np.diff(cm.cm_boundaries(9, 1.0, 5.0, rho=1.0)), 0.5, rtol=1e-12)


@pytest.mark.parametrize("N", [1, 0, -3])
def test_cm_boundaries_need_two_levels(N):
    with pytest.raises(ValueError, match=rf"N >= 2.*N={N}"):
        cm.cm_boundaries(N)


def test_cm_boundaries_bad_parameters():
    with pytest.raises(ValueError, match="rho must be > 0"):
        cm.cm_boundaries(10, rho=0.0)
    with pytest.raises(ValueError, match="eps < T"):
        cm.cm_boundaries(10, eps=80.0, T=80.0)
    with pytest.raises(ValueError, match="eps < T"):
        cm.cm_boundaries(10, eps=0.0)


def test_ct_schedule_at_the_end():
    N, mu = cm.ct_schedule(1000, 1000, s0=2, s1=150, mu0=0.9)
    assert N == 151 and mu == pytest.approx(math.exp(2 * math.log(0.9) / 151), rel=1e-12)
    N, mu = cm.ct_schedule(0, 7, s0=5, s1=40, mu0=0.95)
    assert N == 5 and mu == pytest.approx(0.95, rel=1e-12)       # mu(0) = mu0 when N(0) = s0
    for k, K in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(ValueError, match="0 <= k <= K"):
            cm.ct_schedule(k, K)


def test_ict_schedule_doubles_in_stages():
    K = 800          # K' = floor(800 / (log2(1280 / 10) + 1)) = 100
    assert cm.ict_schedule(0, K) == 11 and cm.ict_schedule(K, K) == 1281
    Ns = [cm.ict_schedule(k, K) for k in range(K + 1)]
    assert sorted(set(Ns)) == [10 * 2 ** i + 1 for i in range(8)]
    for i in range(7):                       # each of the first seven stages lasts K' = 100 iterations
        assert Ns[100 * i: 100 * (i + 1)] == [10 * 2 ** i + 1] * 100
    assert set(Ns[700:]) == {1281}           # then it stays at s1 + 1
    # K not a multiple: K' = floor(1000 / 8) = 125
    assert cm.ict_schedule(124, 1000) == 11 and cm.ict_schedule(125, 1000) == 21
    assert cm.ict_schedule(1000, 1000) == 1281
    assert cm.ict_schedule(0, 100, s0=4, s1=16) == 5 and cm.ict_schedule(100, 100, s0=4, s1=16) == 17
    with pytest.raises(ValueError, match="0 <= k <= K"):
        cm.ict_schedule(5, 4)


def test_ict_level_probabilities_are_a_discretised_log_normal():
    for N, P_mean, P_std in ((11, -1.1, 2.0), (1281, -1.1, 2.0), (641, 0.5, 0.5)):
        b = cm.cm_boundaries(N)
        p = cm.ict_level_probabilities(b, P_mean, P_std)
        assert p.shape == (N - 1,) and np.all(p >= 0)
        assert np.all(p > 0) or P_std < 1     # far tails of a narrow log-normal underflow to 0
        assert p.sum() == pytest.approx(1.0, rel=1e-12)
        cdf = stats.norm.cdf(np.log(b), P_mean, P_std)
        np.testing.assert_allclose(p, np.diff(cdf) / (cdf[-1] - cdf[0]), rtol=1e-9, atol=1e-14)
    # The log-normal density of ln t peaks at P_mean; per index, the Karras intervals (narrower in
    # ln t as t grows) shift the peak to ln t = P_mean - P_std^2 / rho: measured t = 0.187 for iCT's
    # P_mean = -1.1, P_std = 2, rho = 7, against exp(P_mean) = 0.333.
    for P_mean, P_std in ((-1.1, 2.0), (0.5, 0.5)):
        b = cm.cm_boundaries(1281)
        p = cm.ict_level_probabilities(b, P_mean, P_std)
        i = int(p.argmax())
        peak = math.exp(P_mean - P_std ** 2 / 7)
        assert b[i - 1] <= peak <= b[i + 2]
        assert math.exp(P_mean) / 2 < b[i] < math.exp(P_mean)
        # the chosen noise levels have mean ln t close to P_mean (truncation to [eps, T] aside)
        mid = np.log(np.sqrt(b[1:] * b[:-1]))
        assert float(np.sum(p * mid)) == pytest.approx(P_mean, abs=0.05)


def test_ict_weight():
    b = cm.cm_boundaries(12)
    n = np.array([0, 3, 10, 10])
    np.testing.assert_allclose(cm.ict_weight(b, n), 1 / (b[n + 1] - b[n]), rtol=1e-12)
    assert np.all(np.diff(cm.ict_weight(b, np.arange(11))) < 0)       # bigger gaps, smaller weights


# ----------------------------------------------------------------------------------------------
# Distances.

def test_pseudo_huber_is_l2_over_2c_for_tiny_differences_and_l1_like_for_large():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 4, 4))
    y = x + 1e-7 * rng.standard_normal(x.shape)
    c = 0.00054 * math.sqrt(48)
    l2 = cm.distance(x, y, "l2")
    assert l2.shape == (5,)
    np.testing.assert_allclose(cm.distance(x, y, "pseudo_huber"), l2 / (2 * c), rtol=1e-4)
    # (sqrt(l2 + c^2) - c cancels: with c = 0.3, differences of 1e-5 keep it accurate to 1e-8)
    y5 = x + 1e-5 * rng.standard_normal(x.shape)
    np.testing.assert_allclose(cm.distance(x, y5, "pseudo_huber", c=0.3), cm.distance(x, y5, "l2") / 0.6, rtol=1e-6)
    far = x + 100.0
    np.testing.assert_allclose(cm.distance(x, far, "pseudo_huber"), np.sqrt(cm.distance(x, far, "l2")) - c, rtol=1e-9)
    np.testing.assert_allclose(cm.distance(x, far, "l1"), 4800.0, rtol=1e-12)


@pytest.mark.parametrize("metric", ["l2", "l1", "pseudo_huber"])
def test_distance_same_numbers_on_both_backends(metric):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3))
    ref = cm.distance(x, y, metric)
    got = cm.distance(torch.from_numpy(x), torch.from_numpy(y), metric)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_unknown_metric():
    with pytest.raises(ValueError, match=r"metric must be one of .*'pseudo_huber'.*got 'lpips'"):
        cm.distance(np.zeros((2, 2)), np.ones((2, 2)), "lpips")


# ----------------------------------------------------------------------------------------------
# The target is a constant of both losses.

B = cm.cm_boundaries(20)
_rng = np.random.default_rng(4)
X0 = GMM.sample(16, 5)
Z = _rng.standard_normal((16, 2))
N_IDX = _rng.integers(0, 19, 16)
W0, B0 = 0.5 * _rng.standard_normal((2, 2)), 0.3 * _rng.standard_normal(2)


def _loss(kind, f, f_target, metric, arrays):
    x0, z, n, b, w = arrays
    if kind == "ct":
        return cm.ct_loss(f, f_target, x0, n, z, b, metric=metric, weight=w)
    return cm.cd_loss(f, f_target, exact_D, x0, n, z, b, metric=metric, weight=w)


def _no_stop_gradient_loss(kind, f, metric, arrays):
    """The same loss with the gradient allowed through the target (what the library must not do)."""
    x0, z, n, b, w = arrays
    xp = namespace(x0)
    t1 = xp.asarray(b, like=x0)[n + 1][:, None]
    t0 = xp.asarray(b, like=x0)[n][:, None]
    x1 = x0 + t1 * z
    if kind == "ct":
        x_hat = x0 + t0 * z
    else:
        d = (x1 - exact_D(x1, t1[:, 0])) / t1
        xe = x1 + (t0 - t1) * d
        x_hat = x1 + (t0 - t1) * 0.5 * (d + (xe - exact_D(xe, t0[:, 0])) / t0)
    return xp.mean(w * cm.distance(f(x1, t1[:, 0]), f(x_hat, t0[:, 0]), metric))


@pytest.mark.parametrize("kind", ["ct", "cd"])
@pytest.mark.parametrize("metric", ["l2", "pseudo_huber"])
def test_no_gradient_through_the_target_autograd(kind, metric):
    arrays = (X0, Z, N_IDX, B, cm.ict_weight(B, N_IDX))
    f_of = lambda p: cm.consistency_function(linear_raw_net(*p))
    live = lambda p: _loss(kind, f_of(p), f_of(p), metric, arrays)                     # target = f(params)
    frozen = lambda p: _loss(kind, f_of(p), f_of((W0, B0)), metric, arrays)            # target a constant
    g_live, g_frozen = autograd.grad(live)((W0, B0)), autograd.grad(frozen)((W0, B0))
    assert live((W0, B0)) == pytest.approx(frozen((W0, B0)), rel=1e-12)
    for a, b in zip(g_live, g_frozen):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # the check has teeth: with the gradient through the target it differs
    g_through = autograd.grad(lambda p: _no_stop_gradient_loss(kind, f_of(p), metric, arrays))((W0, B0))
    assert _no_stop_gradient_loss(kind, f_of((W0, B0)), metric, arrays) == pytest.approx(live((W0, B0)), rel=1e-10)
    assert max(np.abs(a - b).max() for a, b in zip(g_through, g_live)) > 1e-3 * np.abs(g_live[0]).max()


@pytest.mark.parametrize("kind", ["ct", "cd"])
@pytest.mark.parametrize("metric", ["l2", "pseudo_huber"])
def test_no_gradient_through_the_target_torch(kind, metric):
    tt = torch.from_numpy
    arrays = (tt(X0), tt(Z), tt(N_IDX), B, tt(cm.ict_weight(B, N_IDX)))

    def grads(target_params, use_library=True):
        W, b = tt(W0.copy()).requires_grad_(True), tt(B0.copy()).requires_grad_(True)
        f = cm.consistency_function(linear_raw_net(W, b))
        if use_library:
            tgt = f if target_params is None else cm.consistency_function(linear_raw_net(*target_params))
            loss = _loss(kind, f, tgt, metric, arrays)
        else:
            loss = _no_stop_gradient_loss(kind, f, metric, arrays)
        loss.backward()
        return float(loss.detach()), W.grad.numpy(), b.grad.numpy()

    live = grads(None)
    frozen = grads((tt(W0), tt(B0)))
    through = grads(None, use_library=False)
    assert live[0] == pytest.approx(frozen[0], rel=1e-12)
    for a, b in zip(live[1:], frozen[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert max(np.abs(a - b).max() for a, b in zip(live[1:], through[1:])) > 1e-3 * np.abs(live[1]).max()
    # and the same gradient as autograd's
    g_np = autograd.grad(lambda p: _loss(kind, cm.consistency_function(linear_raw_net(*p)),
                                         cm.consistency_function(linear_raw_net(*p)), metric,
                                         (X0, Z, N_IDX, B, cm.ict_weight(B, N_IDX))))((W0, B0))
    np.testing.assert_allclose(live[1], g_np[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(live[2], g_np[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["ct", "cd"])
def test_losses_same_numbers_on_both_backends(kind):
    f = cm.consistency_function(linear_raw_net(W0, B0))
    ft = cm.consistency_function(linear_raw_net(torch.from_numpy(W0), torch.from_numpy(B0)))
    w = cm.ict_weight(B, N_IDX)
    for metric in ("l2", "l1", "pseudo_huber"):
        ref = _loss(kind, f, f, metric, (X0, Z, N_IDX, B, w))
        got = _loss(kind, ft, ft, metric, tuple(torch.from_numpy(a) for a in (X0, Z, N_IDX)) + (B, torch.from_numpy(w)))
        assert float(got) == pytest.approx(float(ref), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Multistep sampling (CM Algorithm 1).

def test_sampling_evaluates_once_per_level():
    calls, draws = [], []
    f = lambda x, t: (calls.append(float(np.asarray(t).reshape(-1)[0])), 0.9 * x)[1]
    g = generator(0)
    rl = lambda x: (draws.append(1), g.randn_like(x))[1]
    x_T = T * generator(1).randn((5, 2))
    for taus in ([], [40.0], [20.0, 2.0, 0.5], np.array([79.0, 1.0, 0.01, 0.0021])):
        calls.clear(), draws.clear()
        cm.consistency_sample(f, x_T, taus, rl, T=T, eps=EPS)
        assert calls == [T] + [float(t) for t in taus]
        assert len(calls) == 1 + len(taus) and len(draws) == len(taus)


def test_sampling_callback_reproducibility_and_backends():
    f = cm.consistency_function(linear_raw_net(W0, B0))
    ft = cm.consistency_function(linear_raw_net(torch.from_numpy(W0), torch.from_numpy(B0)))
    x_T = T * generator(2).randn((8, 2))
    taus = [10.0, 1.0, 0.1]
    seen = []
    a = cm.consistency_sample(f, x_T, taus, generator(3).randn_like, callback=seen.append)
    assert [d["i"] for d in seen] == [0, 1, 2, 3] and [d["t"] for d in seen] == [T] + taus
    np.testing.assert_array_equal(seen[-1]["x"], a)
    np.testing.assert_array_equal(a, cm.consistency_sample(f, x_T, taus, generator(3).randn_like))
    assert np.abs(a - cm.consistency_sample(f, x_T, taus, generator(4).randn_like)).max() > 1e-3
    noise = iter(generator(3).randn((3, 8, 2)))
    b = cm.consistency_sample(ft, torch.from_numpy(x_T), taus, lambda x: torch.from_numpy(next(noise)))
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-10, atol=1e-12)
    # the noise added at tau has variance tau^2 - eps^2 (CM Algorithm 1, line 4)
    ident = lambda x, t: x
    out = cm.consistency_sample(ident, np.zeros((1, 1)), [3.0], lambda x: np.ones_like(x), T=T, eps=EPS)
    assert out[0, 0] == pytest.approx(math.sqrt(9.0 - EPS ** 2), rel=1e-12)


def test_multistep_sampling_with_the_exact_consistency_function_keeps_the_law():
    # Gaussian data N(0, s2): the flow from t to eps scales x by sqrt((s2 + eps^2) / (s2 + t^2)), so
    # f*(x, t) = x sqrt((s2 + eps^2) / (s2 + t^2)).  Each re-noise + f* step maps N(0, s2 + eps^2)
    # (the law at eps) to itself; one step from T z gives variance T^2 (s2 + eps^2) / (s2 + T^2).
    s2 = 0.3
    f_star = lambda x, t: x * np.sqrt((s2 + EPS ** 2) / (s2 + np.asarray(t).reshape(-1, 1) ** 2))
    g = generator(5)
    x_T = T * g.randn((40_000, 1))
    one = cm.consistency_sample(f_star, x_T, [], g.randn_like)
    many = cm.consistency_sample(f_star, x_T, [5.0, 0.8, 0.05], g.randn_like)
    # standard error of a variance estimate from 40000 draws: sqrt(2 / 40000) = 0.7%
    assert one.var() == pytest.approx(T ** 2 * (s2 + EPS ** 2) / (s2 + T ** 2), rel=0.03)
    assert many.var() == pytest.approx(s2 + EPS ** 2, rel=0.03)
    assert abs(float(many.mean())) < 0.02


@pytest.mark.parametrize("taus, match", [
    ([1.0, 2.0], "strictly decreasing"),
    ([2.0, 2.0], "strictly decreasing"),
    ([90.0], r"tau must lie in \(eps, T\)"),
    ([80.0], r"tau must lie in \(eps, T\)"),
    ([10.0, 0.002], r"tau must lie in \(eps, T\)"),
    ([10.0, -1.0], r"tau must lie in \(eps, T\)"),
    ([0.001], r"tau must lie in \(eps, T\)"),
])
def test_bad_taus(taus, match):
    calls = []
    f = lambda x, t: (calls.append(1), x)[1]
    with pytest.raises(ValueError, match=match):
        cm.consistency_sample(f, np.zeros((2, 2)), taus, np.zeros_like, T=T, eps=EPS)
    assert calls == []         # checked before any model evaluation


def test_consistency_sampling_takes_chosen_noise_levels():
    from minidiff.train import ToyConfig, sample_from_params, train_toy

    run = train_toy(ToyConfig(dataset="8gaussians", method="ict", steps=3, batch_size=16), progress=False)
    a = sample_from_params(run["ema"], run["config"], 8, seed=1, sampler="consistency", steps=2, taus=[0.5])
    b = sample_from_params(run["ema"], run["config"], 8, seed=1, sampler="consistency", steps=2, taus=[0.5])
    c = sample_from_params(run["ema"], run["config"], 8, seed=1, sampler="consistency", steps=2, taus=[2.0])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="taus"):
        sample_from_params(run["ema"], run["config"], 8, sampler="consistency", steps=3, taus=[0.5])
