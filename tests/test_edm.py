"""EDM (Karras et al. 2022): Table 1 in code, the preconditioned denoiser on both backends, the
eps-model <-> denoiser converters, the EDM samplers on an exact mixture denoiser, diffusers
cross-checks of the deterministic parts, and the errors for bad arguments.

The lesson checks (tests/lessons/test_06_edm.py) already compare karras_sigmas and the EDM
preconditioning with diffusers; they are not repeated here."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import solve_ivp

from minidiff import edm, samplers
from minidiff.backend import generator, namespace
from minidiff.data.toy2d import eight_gaussians_mixture
from minidiff.metrics import mmd2_unbiased

GMM = eight_gaussians_mixture()


def exact_D(x, sigma):
    """The exact denoiser E[x0 | x0 + sigma n] of the eight-Gaussians mixture, on either backend."""
    return GMM.denoise(x, 1.0, sigma)


def counting(D):
    """D that records the sigmas it is called with (one entry per call)."""
    calls = []

    def wrapped(x, sigma, **kw):
        calls.append(float(namespace(x).to_numpy(sigma).reshape(-1)[0]))
        return D(x, sigma, **kw)

    return wrapped, calls


def raw_net(x_in, c_noise):
    """A fixed nonlinear 'network' F(c_in x, c_noise) that works on both backends and any x.ndim."""
    xp = namespace(x_in)
    c = xp.reshape(xp.asarray(c_noise, like=x_in), (-1,) + (1,) * (x_in.ndim - 1))
    return xp.sin(1.3 * x_in) + 0.1 * c * xp.tanh(x_in) + 0.01 * c


# ----------------------------------------------------------------------------------------------
# Table 1 in code: time steps.

def test_vp_sigma_and_its_inverse_are_inverses():
    t = np.linspace(1e-5, 1.0, 101)
    np.testing.assert_allclose(edm.vp_sigma_inv(edm.vp_sigma(t)), t, rtol=1e-9)
    s = np.geomspace(1e-3, 150.0, 57)
    np.testing.assert_allclose(edm.vp_sigma(edm.vp_sigma_inv(s)), s, rtol=1e-9)
    # other beta_d / beta_min pass through both
    np.testing.assert_allclose(edm.vp_sigma_inv(edm.vp_sigma(t, 10.0, 0.5), 10.0, 0.5), t, rtol=1e-9)
    # Table 1 formula, written out: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)
    assert edm.vp_sigma(1.0) == pytest.approx(math.sqrt(math.exp(19.9 / 2 + 0.1) - 1), rel=1e-12)


def test_vp_scale_is_one_over_sqrt_one_plus_sigma_squared():
    t = np.linspace(1e-5, 1.0, 33)
    np.testing.assert_allclose(edm.vp_s(t), 1 / np.sqrt(1 + edm.vp_sigma(t) ** 2), rtol=1e-12)
    # and it is the sqrt(alpha_bar) of the DDPM reading
    np.testing.assert_allclose(edm.vp_s(t) ** 2, edm.vp_sigma_to_alpha(edm.vp_sigma(t)), rtol=1e-12)


def test_vp_time_steps_run_linearly_from_one_to_eps_s():
    for eps_s in (1e-3, 1e-2):
        s = edm.vp_sigmas(18, eps_s=eps_s)
        assert s.shape == (18,) and np.all(np.diff(s) < 0)
        assert s[0] == pytest.approx(edm.vp_sigma(1.0), rel=1e-12)
        assert s[-1] == pytest.approx(edm.vp_sigma(eps_s), rel=1e-12)
        np.testing.assert_allclose(edm.vp_sigma_inv(s), np.linspace(1.0, eps_s, 18), rtol=1e-9)


def test_ve_time_steps_are_geometric_from_100_to_0_02():
    s = edm.ve_sigmas(12)
    assert s[0] == pytest.approx(100.0, rel=1e-12) and s[-1] == pytest.approx(0.02, rel=1e-12)
    np.testing.assert_allclose(s[1:] / s[:-1], (0.02 / 100.0) ** (1 / 11), rtol=1e-12)
    np.testing.assert_allclose(edm.ve_sigmas(3, 1.0, 4.0), [4.0, 2.0, 1.0], rtol=1e-12)


def _cos_alpha_bar(j, M=1000, C2=0.008):
    return np.sin(0.5 * np.pi * np.asarray(j, dtype=np.float64) / (M * (C2 + 1))) ** 2


def test_iddpm_u_is_decreasing_and_ends_at_zero():
    u = edm.iddpm_u()
    assert u.shape == (1001,) and u[1000] == 0.0
    assert np.all(np.diff(u) < 0)
    # u_0 comes from the clipped ratio (abar(0) = 0): u_0^2 + 1 = (u_1^2 + 1) / C1
    assert u[0] ** 2 + 1 == pytest.approx((u[1] ** 2 + 1) / 0.001, rel=1e-12)


def test_iddpm_u_is_a_cosine_ddpm_with_clipped_ratios():
    M, C1 = 1000, 0.001
    u = edm.iddpm_u(M, C1)
    j = np.arange(M + 1)
    # An independent reading: 1 / (u_j^2 + 1) = prod_{i > j} max(abar(i-1) / abar(i), C1)
    with np.errstate(divide="ignore"):
        ratios = np.maximum(_cos_alpha_bar(j[:-1]) / _cos_alpha_bar(j[1:]), C1)   # entry i-1 for i = 1..M
    abar_clipped = np.append(np.cumprod(ratios[::-1])[::-1], 1.0)
    np.testing.assert_allclose(u ** 2 + 1, 1 / abar_clipped, rtol=1e-10)
    # Where no ratio is clipped (every j >= 1) the product telescopes: u_j = sqrt(abar(M) / abar(j) - 1),
    # i.e. sqrt((1 - abar) / abar) of the DDPM whose alpha_bar is abar(j) / abar(M).  A few directly:
    for jj in (1, 2, 10, 500, 990, 999):
        a = _cos_alpha_bar(jj) / _cos_alpha_bar(M)
        assert u[jj] == pytest.approx(math.sqrt((1 - a) / a), rel=1e-10)
    # Other C1 / C2 reach the formula too
    u2 = edm.iddpm_u(50, C1=0.01, C2=0.02)
    a = _cos_alpha_bar(20, 50, 0.02) / _cos_alpha_bar(50, 50, 0.02)
    assert u2[20] == pytest.approx(math.sqrt((1 - a) / a), rel=1e-10)


def test_iddpm_u_matches_diffusers_squaredcos_cap_v2():
    # diffusers' cosine DDPM clips beta at 0.999 (= ratio C1 = 0.001); its step t is our j = M - 1 - t.
    from diffusers import DDPMScheduler
    ac = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double().numpy()
    u = edm.iddpm_u(1000)
    np.testing.assert_allclose(u[:1000] ** 2 + 1, (1 / ac)[::-1], rtol=1e-4)   # diffusers keeps float32


def test_iddpm_time_steps_are_u_values_within_range():
    u = edm.iddpm_u()
    s = edm.iddpm_sigmas(18)
    assert s.shape == (18,) and np.all(np.diff(s) < 0)
    assert np.all((s >= 0.002) & (s <= 81.0))
    assert np.all(np.isin(s, u))
    inside = u[(u >= 0.002) & (u <= 81.0)]
    assert s[0] == inside[0] and s[-1] == inside[-1]


def _table1_iddpm_u(M=1000, C1=0.001, C2=0.008):
    """u_j of EDM Table 1, written out here with math only (independent of the library)."""
    abar = [math.sin(math.pi / 2 * j / (M * (C2 + 1))) ** 2 for j in range(M + 1)]
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(abar[j - 1] / abar[j], C1) - 1)
    return u


@pytest.mark.parametrize("N", [2, 10, 18, 50, 256])
def test_iddpm_time_steps_are_table_1_from_j0_8(N):
    # Table 1: t_i = u_floor(j0 + (M - 1 - j0) i / (N - 1) + 1/2) with j0 = 8, u_8 = 80.2037
    # (NVlabs/edm keeps u_8 by filtering with sigma_max = 81)
    u, M, j0 = _table1_iddpm_u(), 1000, 8
    assert abs(u[j0] - 80.2037) < 1e-4 and u[j0 - 1] > 81 and abs(u[j0 + 1] - 71.29) < 1e-2
    expected = [u[math.floor(j0 + (M - 1 - j0) / (N - 1) * i + 0.5)] for i in range(N)]
    np.testing.assert_allclose(edm.iddpm_sigmas(N), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["vp", "ve", "iddpm", "edm"])
def test_every_scheme_gives_decreasing_positive_time_steps(name):
    s = edm.get_scheme(name).sigmas(10)
    assert s.shape == (10,) and np.all(s > 0) and np.all(np.diff(s) < 0)


# ----------------------------------------------------------------------------------------------
# Table 1: preconditioning, written out here independently of the library.

def _table1(name, s):
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for noise levels s (default parameters)."""
    if name == "vp":
        t = (np.sqrt(0.1 ** 2 + 2 * 19.9 * np.log(s ** 2 + 1)) - 0.1) / 19.9
        return np.ones_like(s), -s, 1 / np.sqrt(s ** 2 + 1), 999 * t
    if name == "ve":
        return np.ones_like(s), s, np.ones_like(s), np.log(s / 2)
    if name == "iddpm":
        u = edm.iddpm_u()
        return np.ones_like(s), -s, 1 / np.sqrt(s ** 2 + 1), 999.0 - np.abs(s[:, None] - u[None]).argmin(axis=1)
    sd = 0.5
    return sd ** 2 / (s ** 2 + sd ** 2), s * sd / np.sqrt(s ** 2 + sd ** 2), 1 / np.sqrt(s ** 2 + sd ** 2), np.log(s) / 4


SIGMAS = np.array([0.002, 0.05, 0.7, 3.0, 25.0, 80.0])


@pytest.mark.parametrize("name", ["vp", "ve", "iddpm", "edm"])
def test_preconditioning_coefficients_are_table_1(name):
    got = edm.get_scheme(name).preconditioning(SIGMAS)
    for g, e in zip(got, _table1(name, SIGMAS)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["vp", "ve", "iddpm", "edm"])
def test_precondition_wraps_the_raw_net_as_table_1_says(name):
    seen = {}

    def recording_net(x_in, c_noise):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return np.cos(x_in) + 0.5

    x = np.random.default_rng(0).standard_normal((6, 2))
    D = edm.precondition(recording_net, name)
    out = D(x, SIGMAS)
    c_skip, c_out, c_in, c_noise = _table1(name, SIGMAS)
    np.testing.assert_allclose(seen["x_in"], c_in[:, None] * x, rtol=1e-12)
    np.testing.assert_allclose(seen["c_noise"], c_noise, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out, c_skip[:, None] * x + c_out[:, None] * (np.cos(c_in[:, None] * x) + 0.5),
                               rtol=1e-12)
    if name in ("vp", "iddpm"):   # c_skip = 1, c_out = -sigma: the net predicts the noise
        np.testing.assert_allclose(out, x - SIGMAS[:, None] * (np.cos(seen["x_in"]) + 0.5), rtol=1e-12)


def test_iddpm_c_noise_is_the_index_of_the_nearest_u():
    u = edm.iddpm_u()
    j = np.array([5, 100, 400, 700, 950])
    c_noise = edm.iddpm_preconditioning(u[j])[3]
    np.testing.assert_array_equal(c_noise, 999 - j)
    # halfway (in sigma) between two levels, but a hair nearer the lower one
    mid = 0.5 * (u[400] + u[401]) - 1e-9
    assert edm.iddpm_preconditioning(np.array([mid]))[3][0] == 999 - 401


def test_edm_skip_connection_limits():
    c_skip, c_out, _, _ = edm.edm_preconditioning(np.array([1e-8, 1e-4, 1e4]))
    assert c_skip[0] == pytest.approx(1.0, abs=1e-14) and c_skip[1] == pytest.approx(1.0, abs=1e-7)
    assert c_out[0] == pytest.approx(0.0, abs=2e-8)
    assert c_skip[2] < 1e-8 and c_out[2] == pytest.approx(0.5, rel=1e-8)   # large sigma: D = sigma_data F
    # hence D(x; sigma -> 0) -> x for any bounded raw net
    x = np.random.default_rng(1).standard_normal((4, 2))
    np.testing.assert_allclose(edm.precondition(raw_net, "edm")(x, 1e-9), x, atol=1e-8)


def test_loss_weights():
    s = np.geomspace(0.002, 80, 11)
    for sd in (0.5, 1.0):
        _, c_out, _, _ = edm.edm_preconditioning(s, sd)
        np.testing.assert_allclose(edm.edm_loss_weight(s, sd), 1 / c_out ** 2, rtol=1e-12)
    np.testing.assert_allclose(edm.inverse_square_weight(s), s ** -2.0, rtol=1e-12)
    for name in ("vp", "ve", "iddpm"):
        assert edm.get_scheme(name).loss_weight is edm.inverse_square_weight
    assert edm.get_scheme("edm").loss_weight is edm.edm_loss_weight


# ----------------------------------------------------------------------------------------------
# Table 1: training noise distributions.

def test_edm_training_sigma_is_log_normal():
    s = edm.edm_training_sigma(generator(0), 200_000)
    assert s.shape == (200_000,) and np.all(s > 0)
    # standard errors: 0.0027 for the mean, 0.0019 for the std
    assert np.log(s).mean() == pytest.approx(-1.2, abs=0.015)
    assert np.log(s).std() == pytest.approx(1.2, abs=0.01)
    other = np.log(edm.edm_training_sigma(generator(1), 200_000, P_mean=0.4, P_std=0.3))
    assert other.mean() == pytest.approx(0.4, abs=0.005) and other.std() == pytest.approx(0.3, abs=0.005)
    np.testing.assert_array_equal(s[:100], edm.edm_training_sigma(generator(0), 100))   # same seed, same numbers


def test_ve_training_sigma_is_log_uniform_in_range():
    s = edm.ve_training_sigma(generator(2), 20_000)
    assert s.min() >= 0.02 and s.max() <= 100.0
    u = (np.log(s) - np.log(0.02)) / (np.log(100.0) - np.log(0.02))
    # KS statistic; the 0.1% critical value for n = 20000 is 0.0138 (uniform in sigma would give ~0.5)
    assert stats.kstest(u, "uniform").statistic < 0.0138


def test_vp_training_sigma_is_sigma_of_a_uniform_time():
    eps_t = 1e-5
    s = edm.vp_training_sigma(generator(3), 20_000, eps_t=eps_t)
    assert s.min() >= edm.vp_sigma(eps_t) and s.max() <= edm.vp_sigma(1.0)
    t = edm.vp_sigma_inv(s)
    assert stats.kstest((t - eps_t) / (1 - eps_t), "uniform").statistic < 0.0138


def test_iddpm_training_sigma_draws_the_first_m_levels():
    u = edm.iddpm_u(1000)
    s = edm.iddpm_training_sigma(generator(4), 20_000)
    idx = np.searchsorted(-u, -s)           # u is decreasing
    np.testing.assert_array_equal(u[idx], s)
    assert idx.min() >= 0 and idx.max() <= 999 and np.all(s > 0)   # u_M = 0 is never drawn
    counts = np.bincount(idx // 100, minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300            # 2000 expected per tenth


def test_get_scheme_and_the_registry():
    assert set(edm.SCHEMES) == {"vp", "ve", "iddpm", "edm"}
    for name, scheme in edm.SCHEMES.items():
        assert edm.get_scheme(name) is scheme and scheme.name == name
    with pytest.raises(ValueError, match=r"scheme must be one of .*'edm'.*got 'karras'"):
        edm.get_scheme("karras")
    with pytest.raises(ValueError, match="scheme"):
        edm.precondition(raw_net, "EDM")


# ----------------------------------------------------------------------------------------------
# precondition() on both backends.

@pytest.mark.parametrize("name", ["vp", "ve", "iddpm", "edm"])
def test_precondition_same_numbers_on_numpy_and_torch(name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 2)) * 3
    img = rng.standard_normal((6, 2, 3, 3))
    D = edm.precondition(raw_net, name)
    for xx in (x, img):
        ref = D(xx, SIGMAS)
        assert ref.shape == xx.shape and ref.dtype == np.float64
        got = D(torch.from_numpy(xx), torch.from_numpy(SIGMAS))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
        # a scalar sigma is the same as (B,) copies of it, on both backends
        for s in (0.7, np.float64(0.7)):
            np.testing.assert_allclose(D(xx, s), D(xx, np.full(6, 0.7)), rtol=1e-12)
            np.testing.assert_allclose(D(torch.from_numpy(xx), s).numpy(), D(xx, np.full(6, 0.7)),
                                       rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(D(torch.from_numpy(xx), torch.tensor(0.7, dtype=torch.float64)).numpy(),
                                   D(xx, 0.7), rtol=1e-10, atol=1e-12)
    # float32 stays float32
    assert D(x.astype(np.float32), SIGMAS.astype(np.float32)).dtype == np.float32
    assert D(torch.from_numpy(x).float(), torch.from_numpy(SIGMAS).float()).dtype == torch.float32


def test_denoiser_loss_same_on_both_backends():
    rng = np.random.default_rng(3)
    x0, n = rng.standard_normal((8, 2)), rng.standard_normal((8, 2))
    sigma = np.exp(-1.2 + 1.2 * rng.standard_normal(8))
    w = edm.edm_loss_weight(sigma)
    D = edm.precondition(raw_net, "edm")
    ref = edm.denoiser_loss(D, x0, sigma, n, w)
    got = edm.denoiser_loss(D, torch.from_numpy(x0), torch.from_numpy(sigma), torch.from_numpy(n), torch.from_numpy(w))
    assert float(got) == pytest.approx(float(ref), rel=1e-10)
    # EDM's weighting makes the loss of a preconditioned net the plain ||F - F_target||^2:
    c_skip, c_out, c_in, c_noise = edm.edm_preconditioning(sigma)
    x = x0 + sigma[:, None] * n
    F_target = (x0 - c_skip[:, None] * x) / c_out[:, None]
    expected = np.mean(np.sum((raw_net(c_in[:, None] * x, c_noise) - F_target) ** 2, axis=1))
    assert float(ref) == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Converters between the eps-model and the denoiser (DESIGN section 3).

BETAS = np.linspace(1e-4, 0.02, 1000)
ALPHA_BAR = np.cumprod(1 - BETAS)
GRID_SIGMAS = np.sqrt((1 - ALPHA_BAR) / ALPHA_BAR)


def test_eps_model_read_as_denoiser_is_the_exact_denoiser_on_the_grid():
    D = edm.eps_model_to_denoiser(GMM.eps_model(ALPHA_BAR), ALPHA_BAR)
    rng = np.random.default_rng(4)
    t = np.array([0, 3, 50, 250, 500, 750, 999, 999])
    s = GRID_SIGMAS[t]
    x = GMM.sample(8, 5) + s[:, None] * rng.standard_normal((8, 2))
    np.testing.assert_allclose(D(x, s), exact_D(x, s), rtol=0, atol=1e-8)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(D(xt, torch.from_numpy(s)).numpy(), exact_D(x, s), rtol=0, atol=1e-8)
    # a scalar sigma
    np.testing.assert_allclose(D(x, float(GRID_SIGMAS[300])), exact_D(x, GRID_SIGMAS[300]), rtol=0, atol=1e-8)


def test_denoiser_read_as_eps_model_and_the_round_trips():
    eps = GMM.eps_model(ALPHA_BAR)
    rng = np.random.default_rng(6)
    t = np.array([0, 10, 123, 456, 789, 999])
    a = ALPHA_BAR[t][:, None]
    x_t = np.sqrt(a) * GMM.sample(6, 7) + np.sqrt(1 - a) * rng.standard_normal((6, 2))
    # the exact denoiser read as an eps-model is the exact eps-model
    eps_from_D = edm.denoiser_to_eps_model(exact_D, ALPHA_BAR)
    np.testing.assert_allclose(eps_from_D(x_t, t), eps(x_t, t), rtol=0, atol=1e-8)
    # eps -> D -> eps
    back = edm.denoiser_to_eps_model(edm.eps_model_to_denoiser(eps, ALPHA_BAR), ALPHA_BAR)
    np.testing.assert_allclose(back(x_t, t), eps(x_t, t), rtol=0, atol=1e-8)
    got = back(torch.from_numpy(x_t), torch.from_numpy(t))
    np.testing.assert_allclose(got.numpy(), eps(x_t, t), rtol=0, atol=1e-8)
    # D -> eps -> D at the grid's sigmas
    again = edm.eps_model_to_denoiser(eps_from_D, ALPHA_BAR)
    s = GRID_SIGMAS[t]
    x = x_t / np.sqrt(a)
    np.testing.assert_allclose(again(x, s), exact_D(x, s), rtol=0, atol=1e-8)


def test_eps_model_to_denoiser_uses_the_nearest_step_in_log_sigma():
    seen = []

    def eps(x, t):
        seen.append(np.asarray(t))
        return np.zeros_like(x)

    D = edm.eps_model_to_denoiser(eps, ALPHA_BAR)
    geo_mid = np.sqrt(GRID_SIGMAS[400] * GRID_SIGMAS[401])
    # sigma_0 = 0.0100, sigma_1 = 0.0148: 0.0123 lies above their geometric mean (0.01217) but below
    # their arithmetic mean (0.0124), so it is nearer step 1 in log sigma (as k-diffusion's sigma_to_t)
    D(np.zeros((5, 2)), np.array([geo_mid * 0.999, geo_mid * 1.001, GRID_SIGMAS[7], 0.0123, 0.0121]))
    np.testing.assert_array_equal(seen[-1], [400, 401, 7, 1, 0])
    assert np.issubdtype(seen[-1].dtype, np.integer)


def test_churn_adds_noise_of_variance_t_hat_squared_minus_t_squared():
    # With D(x; sigma) = x the ODE does not move x, so the output is x plus the churn alone:
    # sum_i sqrt(t_hat_i^2 - t_i^2) S_noise n_i  (EDM Algorithm 2, lines 5-6).
    sig = edm.karras_sigmas(8)
    S_churn, S_tmin, S_tmax, S_noise = 4.0, 0.05, 50.0, 1.25
    noise = np.random.default_rng(13).standard_normal((8, 3, 2))
    it = iter(noise)
    x = np.ones((3, 2))
    out = samplers.stochastic_sample(lambda y, s: y, x, sig, lambda y: next(it), S_churn=S_churn, S_tmin=S_tmin,
                                     S_tmax=S_tmax, S_noise=S_noise)
    expected, k = x.copy(), 0
    for t in sig:
        gamma = min(S_churn / 8, math.sqrt(2) - 1) if S_tmin <= t <= S_tmax else 0.0
        if gamma > 0:
            expected = expected + math.sqrt(((1 + gamma) * t) ** 2 - t ** 2) * S_noise * noise[k]
            k += 1
    assert 0 < k < 8
    np.testing.assert_allclose(out, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Samplers, with the exact mixture denoiser.

X_T = 80.0 * np.random.default_rng(8).standard_normal((64, 2))


@pytest.fixture(scope="module")
def ode_reference():
    """The probability-flow ODE dx/dsigma = (x - D) / sigma solved from 80 to sigma_min = 0.002 by
    scipy (in u = ln sigma: dx/du = x - D), then the same final Euler step to sigma = 0 that every
    sampler takes (x = D(x; sigma_min)).  Measured: agrees with Heun on 4000 steps to 2e-6."""
    def rhs(u, y):
        x = y.reshape(-1, 2)
        return (x - exact_D(x, np.full(len(x), math.exp(u)))).ravel()

    sol = solve_ivp(rhs, (math.log(80.0), math.log(0.002)), X_T.ravel(), method="DOP853", rtol=1e-11, atol=1e-11)
    assert sol.success
    x_min = sol.y[:, -1].reshape(-1, 2)
    return exact_D(x_min, np.full(len(x_min), 0.002))


def _rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_heun_converges_at_second_order(ode_reference):
    # RMS errors over the 64 paths (the max is dominated by a path near a split between modes):
    # measured N=32 4.0e-3, 64 8.9e-4, 128 2.2e-4 (ratios 4.5, 4.1; then 4.0 at N=256)
    errs = [_rms(samplers.heun_sample(exact_D, X_T, edm.karras_sigmas(n)), ode_reference) for n in (32, 64, 128)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(3.5 < r < 5.0 for r in ratios), (errs, ratios)
    assert errs[-1] < 5e-4


def test_euler_converges_at_first_order(ode_reference):
    # measured RMS errors: N=16 0.056, 32 0.025, 64 0.012 (ratios 2.2, 2.1)
    errs = [_rms(samplers.euler_sample(exact_D, X_T, edm.karras_sigmas(n)), ode_reference) for n in (16, 32, 64)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(1.7 < r < 2.6 for r in ratios), (errs, ratios)


def test_number_of_denoiser_evaluations():
    sig = edm.karras_sigmas(7)
    x = X_T[:4]
    D, calls = counting(exact_D)
    samplers.heun_sample(D, x, sig)
    assert len(calls) == 2 * 7 - 1
    # Heun: each step evaluates at t_i and at t_{i+1}, except the last Euler step to 0
    expected = [c for i in range(6) for c in (sig[i], sig[i + 1])] + [sig[6]]
    np.testing.assert_allclose(calls, expected, rtol=1e-12)
    D, calls = counting(exact_D)
    samplers.euler_sample(D, x, sig)
    np.testing.assert_allclose(calls, sig, rtol=1e-12)
    D, calls = counting(exact_D)
    samplers.stochastic_sample(D, x, sig, generator(0).randn_like, S_churn=10.0)
    assert len(calls) == 2 * 7 - 1
    # with churn, each step starts at t_hat = (1 + gamma) t_i (gamma = min(10 / 7, sqrt 2 - 1))
    np.testing.assert_allclose(calls[0], sig[0] * math.sqrt(2), rtol=1e-12)


def test_a_trailing_zero_in_sigmas_changes_nothing():
    sig = edm.karras_sigmas(6)
    x = X_T[:8]
    np.testing.assert_array_equal(samplers.heun_sample(exact_D, x, sig),
                                  samplers.heun_sample(exact_D, x, np.append(sig, 0.0)))
    np.testing.assert_array_equal(samplers.euler_sample(exact_D, x, sig),
                                  samplers.euler_sample(exact_D, x, np.append(sig, 0.0)))


def test_stochastic_sampler_without_churn_is_heun():
    sig = edm.karras_sigmas(12)

    def no_noise(x):
        raise AssertionError("S_churn = 0 must draw no noise")

    np.testing.assert_array_equal(samplers.stochastic_sample(exact_D, X_T, sig, no_noise),
                                  samplers.heun_sample(exact_D, X_T, sig))
    # nor when the churn window [S_tmin, S_tmax] holds no step
    np.testing.assert_array_equal(
        samplers.stochastic_sample(exact_D, X_T, sig, no_noise, S_churn=40.0, S_tmin=100.0, S_tmax=200.0),
        samplers.heun_sample(exact_D, X_T, sig))


def test_stochastic_sampler_is_reproducible_and_uses_its_noise():
    sig = edm.karras_sigmas(10)
    x = X_T[:16]
    kw = dict(S_churn=20.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.003)
    a = samplers.stochastic_sample(exact_D, x, sig, generator(11).randn_like, **kw)
    b = samplers.stochastic_sample(exact_D, x, sig, generator(11).randn_like, **kw)
    c = samplers.stochastic_sample(exact_D, x, sig, generator(12).randn_like, **kw)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert np.abs(a - samplers.heun_sample(exact_D, x, sig)).max() > 1e-3
    # noise is drawn exactly once per step inside the window (sig[0] = 80 > S_tmax: none there)
    draws = []
    g = generator(11)
    samplers.stochastic_sample(exact_D, x, sig, lambda y: (draws.append(1), g.randn_like(y))[1], **kw)
    assert len(draws) == int(np.sum((sig >= 0.05) & (sig <= 50.0)))


def test_stochastic_sampler_with_churn_reproduces_the_mixture():
    g = generator(0)
    x = 80.0 * g.randn((800, 2))
    out = samplers.stochastic_sample(exact_D, x, edm.karras_sigmas(24), g.randn_like,
                                     S_churn=40.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.003)
    data = GMM.sample(800, 100)
    # measured: 0.007 here (seeds 1, 2: -0.003, 0.002); fresh data vs data -0.003..0.001;
    # the data widened by 1.2 gives 0.18
    assert mmd2_unbiased(out, data) < 0.02
    assert mmd2_unbiased(1.2 * GMM.sample(800, 101), data) > 0.1


def test_callback_sees_every_step():
    sig = edm.karras_sigmas(5)
    full = np.append(sig, 0.0)
    x = X_T[:4]
    for run in (lambda cb: samplers.heun_sample(exact_D, x, sig, callback=cb),
                lambda cb: samplers.euler_sample(exact_D, x, sig, callback=cb),
                lambda cb: samplers.stochastic_sample(exact_D, x, sig, generator(0).randn_like,
                                                      S_churn=2.0, callback=cb)):
        seen = []
        out = run(seen.append)
        assert [d["i"] for d in seen] == list(range(5))
        np.testing.assert_allclose([d["sigma"] for d in seen], sig, rtol=1e-12)
        np.testing.assert_allclose([d["sigma_next"] for d in seen], full[1:], rtol=1e-12)
        np.testing.assert_array_equal(seen[-1]["x"], out)
        if "sigma_hat" in seen[0]:
            np.testing.assert_allclose([d["sigma_hat"] for d in seen], sig * (1 + 2.0 / 5), rtol=1e-12)


def _samplers_on(x, noise_table):
    """heun, euler and stochastic (with churn) on x; the noise replays ``noise_table`` on x's backend."""
    sig = edm.karras_sigmas(6)
    it = iter(noise_table)
    xp = namespace(x)
    replay = lambda y: xp.asarray(next(it), like=y)
    return (samplers.heun_sample(exact_D, x, sig), samplers.euler_sample(exact_D, x, sig),
            samplers.stochastic_sample(exact_D, x, sig, replay, S_churn=3.0, S_noise=1.01))


def test_samplers_same_numbers_on_numpy_and_torch():
    x = X_T[:16]
    noise = np.random.default_rng(9).standard_normal((6, 16, 2))
    ref = _samplers_on(x, noise)
    got = _samplers_on(torch.from_numpy(x), noise)
    for r, g in zip(ref, got):
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_samplers_keep_the_dtype(backend):
    noise = np.random.default_rng(10).standard_normal((6, 8, 2))
    x64 = X_T[:8]
    results = {}
    for dtype in ("float32", "float64"):
        x = x64.astype(dtype) if backend == "numpy" else torch.from_numpy(x64).to(getattr(torch, dtype))
        results[dtype] = _samplers_on(x, noise)
        for out in results[dtype]:
            assert str(out.dtype).endswith(dtype)
    for a, b in zip(results["float32"], results["float64"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=2e-3)


# ----------------------------------------------------------------------------------------------
# diffusers cross-checks of the deterministic parts.

def test_edm_euler_scheduler_is_our_euler_on_the_preconditioned_net():
    from diffusers import EDMEulerScheduler
    N = 12
    sched = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0, prediction_type="epsilon")
    sched.set_timesteps(N)
    assert sched.sigmas[-1] == 0 and len(sched.sigmas) == N + 1
    np.testing.assert_allclose(sched.sigmas[:-1].double().numpy(), edm.karras_sigmas(N), rtol=1e-6)
    x_T = X_T[:16]
    sample = torch.from_numpy(x_T).float()
    for t in sched.timesteps:
        model_output = raw_net(sched.scale_model_input(sample, t), t)   # F(c_in x, c_noise)
        sample = sched.step(model_output, t, sample).prev_sample
    # our Euler on D = c_skip x + c_out F(c_in x, c_noise), on diffusers' (float32) noise levels
    D = edm.precondition(raw_net, "edm")
    ours = samplers.euler_sample(D, x_T, sched.sigmas[:-1].double().numpy())
    np.testing.assert_allclose(sample.double().numpy(), ours, rtol=1e-4, atol=1e-4)   # diffusers steps in float32
    # and one step, from the same point, exactly as our to_d
    sched.set_timesteps(N)
    x = torch.from_numpy(x_T).float()
    F = raw_net(sched.scale_model_input(x, sched.timesteps[0]), sched.timesteps[0])
    step = sched.step(F, sched.timesteps[0], x).prev_sample
    s0, s1 = float(sched.sigmas[0]), float(sched.sigmas[1])
    ours = x_T + (s1 - s0) * samplers.to_d(x_T, s0, D(x_T, s0))
    np.testing.assert_allclose(step.double().numpy(), ours, rtol=1e-5, atol=1e-4)


def _eps_net_for(sched):
    """An eps-prediction net in diffusers' scaled-input convention: it receives
    x / sqrt(sigma^2 + 1) (the VP sample) and returns (x - D(x; sigma)) / sigma for the exact mixture
    denoiser, at the scheduler's current sigma."""
    def eps_net(scaled, t):
        sigma = float(sched.sigmas[sched.step_index])
        x = scaled.double() * math.sqrt(sigma ** 2 + 1)
        return ((x - exact_D(x, torch.full((x.shape[0],), sigma, dtype=torch.float64))) / sigma).to(scaled.dtype)
    return eps_net


@pytest.mark.parametrize("S_churn, S_tmin, S_tmax", [(2.0, 0.0, float("inf")), (3.0, 0.5, 30.0), (40.0, 0.0, float("inf"))])
def test_euler_discrete_scheduler_churn_step_is_ours(S_churn, S_tmin, S_tmax):
    from diffusers import EulerDiscreteScheduler
    sched = EulerDiscreteScheduler(use_karras_sigmas=True)
    sched.set_timesteps(10)
    N = len(sched.sigmas) - 1
    sig_train = np.sqrt((1 - sched.alphas_cumprod.double().numpy()) / sched.alphas_cumprod.double().numpy())
    np.testing.assert_allclose(sched.sigmas[:-1].double().numpy(),
                               edm.karras_sigmas(N, float(sig_train[0]), float(sig_train[-1])), rtol=1e-6)
    assert sched.sigmas[-1] == 0
    eps_net = _eps_net_for(sched)
    gen, ours_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sample = (float(sched.sigmas[0]) * torch.from_numpy(X_T[:16] / 80.0)).float()
    n_churned = 0
    for i, t in enumerate(sched.timesteps):
        x = sample.double()
        model_output = eps_net(sched.scale_model_input(sample, t), t)     # evaluated before the churn
        sample = sched.step(model_output, t, sample, s_churn=S_churn, s_tmin=S_tmin, s_tmax=S_tmax,
                            s_noise=1.0, generator=gen).prev_sample
        # ours: churn, then an Euler step with D(x_hat; sigma_hat) = x_hat - sigma_hat eps
        sigma, sigma_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
        gamma = samplers.churn_gamma(sigma, N, S_churn, S_tmin, S_tmax)
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            n_churned += 1
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * torch.randn(x.shape, generator=ours_gen).double()
        D = x - sigma_hat * model_output.double()
        ours = x + (sigma_next - sigma_hat) * samplers.to_d(x, sigma_hat, D)
        np.testing.assert_allclose(sample.double().numpy(), ours.numpy(), rtol=1e-5, atol=1e-4 * max(sigma, 1))
        sample = ours.float()   # carry on from our point, so each step is compared on its own
    assert n_churned == sum(S_tmin <= float(s) <= S_tmax for s in sched.sigmas[:-1])
    assert n_churned > 0


def test_euler_discrete_scheduler_full_run_without_churn_is_our_euler_sample():
    from diffusers import EulerDiscreteScheduler
    sched = EulerDiscreteScheduler(use_karras_sigmas=True)
    sched.set_timesteps(15)
    eps_net = _eps_net_for(sched)
    x_T = float(sched.sigmas[0]) * X_T[:16] / 80.0
    sample = torch.from_numpy(x_T).float()
    for t in sched.timesteps:
        sample = sched.step(eps_net(sched.scale_model_input(sample, t), t), t, sample).prev_sample
    ours = samplers.euler_sample(exact_D, x_T, sched.sigmas[:-1].double().numpy())
    np.testing.assert_allclose(sample.double().numpy(), ours, rtol=1e-4, atol=1e-3)


def test_heun_discrete_scheduler_two_stage_step_is_our_heun_step():
    from diffusers import HeunDiscreteScheduler
    sched = HeunDiscreteScheduler(use_karras_sigmas=True, prediction_type="epsilon")
    N = 8
    sched.set_timesteps(N)
    sched.sigmas = sched.sigmas.double()    # diffusers' Heun steps in the sample's dtype: run it in float64
    levels = torch.cat([sched.sigmas[::2], sched.sigmas[-1:]]).numpy()     # t_0 .. t_{N-1}, 0
    assert len(levels) == N + 1 and len(sched.timesteps) == 2 * N - 1
    eps_net = _eps_net_for(sched)
    x_T = levels[0] * X_T[:16] / 80.0
    sample = torch.from_numpy(x_T)
    x = x_T
    stage = 0
    for t in sched.timesteps:
        sample = sched.step(eps_net(sched.scale_model_input(sample, t), t), t, sample).prev_sample
        if sched.state_in_first_order:       # both stages of a step are done
            x = samplers.heun_step(exact_D, x, float(levels[stage]), float(levels[stage + 1]))
            np.testing.assert_allclose(sample.numpy(), x, rtol=1e-10, atol=1e-10)
            stage += 1
    assert stage == N - 1                    # ... and the last, to sigma = 0, is one Euler step in both
    x = samplers.heun_step(exact_D, x, float(levels[N - 1]), 0.0)
    np.testing.assert_allclose(sample.numpy(), x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sample.numpy(), samplers.heun_sample(exact_D, x_T, levels[:-1]), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Bad input (DESIGN section 8).

@pytest.mark.parametrize("rho", [0.0, -7.0])
def test_karras_sigmas_bad_rho(rho):
    with pytest.raises(ValueError, match="rho must be > 0"):
        edm.karras_sigmas(10, rho=rho)


@pytest.mark.parametrize("smin, smax", [(80.0, 0.002), (1.0, 1.0), (0.0, 80.0), (-1.0, 80.0)])
def test_karras_and_ve_sigmas_bad_range(smin, smax):
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        edm.karras_sigmas(10, sigma_min=smin, sigma_max=smax)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        edm.ve_sigmas(10, sigma_min=smin, sigma_max=smax)


@pytest.mark.parametrize("make", [edm.karras_sigmas, edm.vp_sigmas, edm.ve_sigmas, edm.iddpm_sigmas])
def test_time_steps_need_a_positive_count(make):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        make(0)


def test_stochastic_sampler_bad_churn_and_noise():
    sig, x, rl = edm.karras_sigmas(5), X_T[:2], generator(0).randn_like
    with pytest.raises(ValueError, match="S_churn must be >= 0"):
        samplers.stochastic_sample(exact_D, x, sig, rl, S_churn=-1.0)
    with pytest.raises(ValueError, match="S_churn must be >= 0"):
        samplers.churn_gamma(1.0, 10, -0.5)
    for S_noise in (0.0, -1.0):
        with pytest.raises(ValueError, match="S_noise must be > 0"):
            samplers.stochastic_sample(exact_D, x, sig, rl, S_churn=1.0, S_noise=S_noise)


@pytest.mark.parametrize("bad", [[1.0, 2.0, 0.5], [5.0, 5.0, 1.0], [3.0, -1.0], [np.nan, 1.0], [], [[2.0, 1.0]]])
@pytest.mark.parametrize("sampler", ["heun", "euler", "stochastic"])
def test_bad_sigmas(bad, sampler):
    run = {"heun": lambda s: samplers.heun_sample(exact_D, X_T[:2], s),
           "euler": lambda s: samplers.euler_sample(exact_D, X_T[:2], s),
           "stochastic": lambda s: samplers.stochastic_sample(exact_D, X_T[:2], s, generator(0).randn_like,
                                                              S_churn=1.0)}[sampler]
    with pytest.raises(ValueError, match="sigmas must"):
        run(bad)


@pytest.mark.parametrize("sampler", ["heun", "euler", "stochastic"])
def test_bad_denoiser_output_names_the_step(sampler):
    sig = edm.karras_sigmas(6)

    def run(D):
        if sampler == "heun":
            return samplers.heun_sample(D, X_T[:4], sig)
        if sampler == "euler":
            return samplers.euler_sample(D, X_T[:4], sig)
        return samplers.stochastic_sample(D, X_T[:4], sig, generator(0).randn_like, S_churn=1.0)

    calls = []

    def nan_at_step_3(x, s):
        calls.append(1)
        first_call_of_step_3 = 3 if sampler == "euler" else 6    # Heun: two calls per step
        return exact_D(x, s) * (np.nan if len(calls) == first_call_of_step_3 + 1 else 1.0)

    with pytest.raises(ValueError, match=r"non-finite.*at step 3"):
        run(nan_at_step_3)
    with pytest.raises(ValueError, match=r"output at step 0 has shape \(4, 1\), expected \(4, 2\)"):
        run(lambda x, s: exact_D(x, s)[:, :1])
    # torch tensors too
    with pytest.raises(ValueError, match=r"non-finite.*at step 0"):
        samplers.heun_sample(lambda x, s: x * torch.inf, torch.from_numpy(X_T[:4]), sig)


def test_vp_sigma_inv_is_one_formula_on_both_backends():
    s = np.array([0.002, 0.5, 3.0, 80.0])
    a = edm.vp_sigma_inv(s)
    b = edm.vp_sigma_inv(torch.as_tensor(s))
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-14)
    np.testing.assert_allclose(edm.vp_preconditioning(torch.as_tensor(s))[3].numpy(), 999 * a, rtol=1e-14)
    assert edm.vp_sigma_inv(3.0) == pytest.approx(a[2], rel=1e-15)
