"""Checks for lessons/06_edm.py."""
import math

import numpy as np
import pytest
import torch

from minidiff.data.toy2d import GaussianMixture, eight_gaussians_mixture

LESSON = "06"
exercise = pytest.mark.exercise


@exercise("karras_sigmas")
def test_karras_sigmas_endpoints_and_rho_spacing(ex):
    s = ex.karras_sigmas(18, 0.002, 80.0, 7.0)
    assert s.shape == (18,)
    assert s[0] == pytest.approx(80.0) and s[-1] == pytest.approx(0.002)
    np.testing.assert_allclose(np.diff(s ** (1 / 7)), (0.002 ** (1 / 7) - 80 ** (1 / 7)) / 17, rtol=1e-9)


@exercise("karras_sigmas")
def test_karras_sigmas_with_rho_one_are_linear(ex):
    np.testing.assert_allclose(ex.karras_sigmas(5, 1.0, 5.0, 1.0), [5, 4, 3, 2, 1], rtol=1e-12)


@exercise("karras_sigmas")
def test_karras_sigmas_match_diffusers(ex):
    from diffusers import EDMEulerScheduler
    sched = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sched.set_timesteps(25)
    np.testing.assert_allclose(ex.karras_sigmas(25), sched.sigmas[:-1].double().numpy(), rtol=1e-5)


@exercise("edm_preconditioning")
def test_edm_preconditioning_matches_diffusers(ex):
    from diffusers import EDMEulerScheduler
    sched = EDMEulerScheduler(sigma_data=0.5)
    sigma = np.array([0.002, 0.1, 1.0, 80.0])
    c_skip, c_out, c_in, c_noise = ex.edm_preconditioning(sigma, 0.5)
    x, F = np.ones(4), np.full(4, 2.0)
    s_t = torch.from_numpy(sigma)
    np.testing.assert_allclose(c_in * x, sched.precondition_inputs(torch.from_numpy(x), s_t).numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_skip * x + c_out * F,
                               sched.precondition_outputs(torch.from_numpy(x), torch.from_numpy(F), s_t).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(c_noise, sched.precondition_noise(s_t).numpy(), rtol=1e-12)


@exercise("edm_preconditioning")
def test_edm_preconditioning_keeps_unit_variance(ex):
    # EDM Appendix B.6: c_in normalises the input, and the training target of F,
    # (x0 - c_skip x) / c_out, has unit variance when x0 has variance sigma_data^2.
    sd = 0.5
    sigma = np.geomspace(0.002, 80, 9)
    c_skip, c_out, c_in, _ = ex.edm_preconditioning(sigma, sd)
    np.testing.assert_allclose(c_in ** 2 * (sigma ** 2 + sd ** 2), 1.0, rtol=1e-12)
    target_var = ((1 - c_skip) ** 2 * sd ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2
    np.testing.assert_allclose(target_var, 1.0, rtol=1e-10)


def _gaussian_denoiser(s2):
    """Exact D(x; sigma) for data N(0, s2 I): x s2 / (s2 + sigma^2)."""
    return lambda x, sigma: x * s2 / (s2 + np.asarray(sigma).reshape(-1, 1) ** 2)


@exercise("denoiser_loss")
def test_denoiser_loss_formula(ex):
    rng = np.random.default_rng(0)
    x0, n = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    sigma, w = np.linspace(0.1, 3.0, 8), np.linspace(1.0, 2.0, 8)
    D = lambda x, s: 0.5 * x
    expected = np.mean(w * np.sum((0.5 * (x0 + sigma[:, None] * n) - x0) ** 2, axis=1))
    assert ex.denoiser_loss(D, x0, sigma, n, w) == pytest.approx(expected, rel=1e-12)


@exercise("denoiser_loss")
def test_denoiser_loss_is_smallest_for_the_exact_denoiser(ex):
    gmm = eight_gaussians_mixture()
    rng = np.random.default_rng(1)
    x0, n = gmm.sample(4000, 2), rng.standard_normal((4000, 2))
    sigma = np.exp(-1.2 + 1.2 * rng.standard_normal(4000))
    exact = lambda x, s: gmm.denoise(x, 1.0, s)
    best = ex.denoiser_loss(exact, x0, sigma, n, np.ones(4000))
    for bad in (lambda x, s: 1.1 * exact(x, s), lambda x, s: exact(x, s) + 0.05):
        assert best < ex.denoiser_loss(bad, x0, sigma, n, np.ones(4000))


@exercise("to_d")
def test_to_d_for_gaussian_data(ex):
    x = np.random.default_rng(2).standard_normal((5, 2))
    D = _gaussian_denoiser(0.3)
    for sigma in (0.05, 1.0, 20.0):
        np.testing.assert_allclose(ex.to_d(x, sigma, D(x, np.full(5, sigma))), x * sigma / (0.3 + sigma ** 2),
                                   rtol=1e-12)


def _flow(x, s2, sigma, sigma_next):
    """The exact probability-flow map for N(0, s2 I) data: x scales by sqrt((s2 + sigma'^2) / (s2 + sigma^2))."""
    return x * math.sqrt((s2 + sigma_next ** 2) / (s2 + sigma ** 2))


@exercise("heun_step")
def test_heun_step_is_second_order(ex):
    x = np.random.default_rng(3).standard_normal((6, 2))
    D = _gaussian_denoiser(0.25)
    errs = []
    for h in (0.4, 0.2, 0.1):
        errs.append(np.abs(ex.heun_step(D, x, 1.0, 1.0 - h) - _flow(x, 0.25, 1.0, 1.0 - h)).max())
    # local error O(h^3): halving h divides it by about 8
    assert errs[0] / errs[1] > 6 and errs[1] / errs[2] > 6


@exercise("heun_step")
def test_heun_step_to_zero_is_one_euler_step(ex):
    x = np.random.default_rng(4).standard_normal((6, 2))
    D = _gaussian_denoiser(0.25)
    np.testing.assert_allclose(ex.heun_step(D, x, 0.5, 0.0), D(x, np.full(6, 0.5)), rtol=1e-12)


@exercise("heun_step")
def test_heun_sampling_with_exact_denoiser_reaches_the_data(ex):
    from minidiff.edm import karras_sigmas
    gmm = GaussianMixture([[1.0, 0.0], [-1.0, 0.0]], [0.1, 0.1])
    rng = np.random.default_rng(5)
    x = 80.0 * rng.standard_normal((2000, 2))
    sig = np.append(karras_sigmas(18), 0.0)
    D = lambda y, s: gmm.denoise(y, 1.0, s)
    for i in range(18):
        x = ex.heun_step(D, x, float(sig[i]), float(sig[i + 1]))
    assert np.abs(np.abs(x[:, 0]) - 1).mean() < 0.15 and abs(np.mean(x[:, 0] > 0) - 0.5) < 0.05


@exercise("churn_gamma")
def test_churn_gamma_values(ex):
    assert ex.churn_gamma(1.0, 18, 0.0) == 0.0
    assert ex.churn_gamma(1.0, 20, 4.0) == pytest.approx(0.2)
    assert ex.churn_gamma(1.0, 10, 80.0) == pytest.approx(math.sqrt(2) - 1)


@exercise("churn_gamma")
def test_churn_only_inside_the_window(ex):
    assert ex.churn_gamma(0.01, 10, 5.0, S_tmin=0.05, S_tmax=50.0) == 0.0
    assert ex.churn_gamma(60.0, 10, 5.0, S_tmin=0.05, S_tmax=50.0) == 0.0
    assert ex.churn_gamma(1.0, 10, 5.0, S_tmin=0.05, S_tmax=50.0) == pytest.approx(math.sqrt(2) - 1)  # 0.5, capped
    assert ex.churn_gamma(1.0, 100, 5.0, S_tmin=0.05, S_tmax=50.0) == pytest.approx(0.05)


@exercise("edm_preconditioning")
def test_edm_preconditioning_uses_the_given_sigma_data(ex):
    # the same unit-variance statements for data of std 1.3, and the boundary c_skip -> 1 as sigma -> 0
    sd = 1.3
    sigma = np.geomspace(0.002, 80, 9)
    c_skip, c_out, c_in, _ = ex.edm_preconditioning(sigma, sd)
    np.testing.assert_allclose(c_in ** 2 * (sigma ** 2 + sd ** 2), 1.0, rtol=1e-12)
    np.testing.assert_allclose(((1 - c_skip) ** 2 * sd ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2, 1.0, rtol=1e-10)
    assert c_skip[0] == pytest.approx(1.0, abs=1e-5) and c_skip[-1] < 1e-3


@exercise("denoiser_loss")
def test_denoiser_loss_calls_D_at_each_examples_own_sigma(ex):
    rng = np.random.default_rng(6)
    x0, n = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    sigma, w = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0]), np.array([3.0, 0.5, 1.0, 2.0, 0.1, 1.5])
    seen = {}

    def D(x, s):                        # a denoiser whose answer depends on the noise level it is told
        seen["x"], seen["sigma"] = np.array(x), np.array(s).reshape(-1)
        return x / (1 + np.asarray(s).reshape(-1, 1) ** 2)

    loss = ex.denoiser_loss(D, x0, sigma, n, w)
    np.testing.assert_allclose(seen["sigma"], sigma, rtol=1e-15)
    np.testing.assert_allclose(seen["x"], x0 + sigma[:, None] * n, rtol=1e-12)
    x = x0 + sigma[:, None] * n
    per_example = [np.sum((x[i] / (1 + sigma[i] ** 2) - x0[i]) ** 2) for i in range(6)]
    assert loss == pytest.approx(np.mean(w * np.array(per_example)), rel=1e-12)


@exercise("heun_step")
def test_heun_step_passes_the_conditioning_to_both_evaluations(ex):
    x = np.random.default_rng(7).standard_normal((4, 2))
    calls = []

    def D(y, s, class_labels=None):
        calls.append(np.asarray(class_labels).copy())
        return _gaussian_denoiser(0.25)(y, s) + 0.1 * np.asarray(class_labels)[:, None]

    labels = np.array([0, 1, 2, 3])
    out = ex.heun_step(D, x, 1.0, 0.5, class_labels=labels)
    assert len(calls) == 2 and all(np.array_equal(c, labels) for c in calls)
    plain = ex.heun_step(lambda y, s: D(y, s, class_labels=labels), x, 1.0, 0.5)
    np.testing.assert_allclose(out, plain, rtol=1e-12)


@exercise("churn_gamma")
def test_churn_window_is_closed_at_both_ends(ex):
    """EDM Algorithm 2 churns for t_i in [S_tmin, S_tmax], the ends included."""
    for sigma in (0.05, 50.0):
        assert ex.churn_gamma(sigma, 100, 5.0, S_tmin=0.05, S_tmax=50.0) == pytest.approx(0.05)
    for sigma in (0.05 * (1 - 1e-12), 50.0 * (1 + 1e-12)):
        assert ex.churn_gamma(sigma, 100, 5.0, S_tmin=0.05, S_tmax=50.0) == 0.0


# --- Non-leaking augmentation (EDM section 5, Appendix F.2): the labels and the resampling map ---

def _params(B, n, seed, backend="numpy"):
    """Generic augmentation parameters of B images of side n, every transform on, tx != ty."""
    r = np.random.default_rng(seed)
    m = n // 8
    p = {"flip": r.integers(0, 2, B).astype(np.float64), "tx": r.integers(-m, m + 1, B).astype(np.float64),
         "ty": r.integers(-m, m + 1, B).astype(np.float64), "log2_scale": 0.3 * r.standard_normal(B)}
    p["ty"] = np.where(p["ty"] == p["tx"], p["tx"] + 1, p["ty"])          # a swapped tx / ty shows
    return {k: torch.from_numpy(v) for k, v in p.items()} if backend == "torch" else p


def _host(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@exercise("augment_labels")
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_augment_labels_are_the_parameters_with_shifts_as_fractions(ex, backend):
    n, B = 20, 9
    p = _params(B, n, 8, backend)
    labels = ex.augment_labels(p, n)
    assert type(labels) is type(p["flip"]) and tuple(labels.shape) == (B, 4)
    h = {k: _host(v) for k, v in p.items()}
    expected = np.stack([h["flip"], h["tx"] / n, h["ty"] / n, h["log2_scale"]], axis=1)
    np.testing.assert_allclose(_host(labels), expected, rtol=1e-15, atol=0)


@exercise("augment_labels")
def test_augment_labels_are_zero_exactly_for_unaugmented_images(ex):
    from minidiff.augment import draw_augmentations
    from minidiff.backend import generator
    p = draw_augmentations(300, 0.3, generator(9, backend="numpy"), 16)
    labels = ex.augment_labels(p, 16)
    untouched = (p["flip"] == 0) & (p["tx"] == 0) & (p["ty"] == 0) & (p["log2_scale"] == 0)
    assert untouched.any() and (~untouched).any()
    np.testing.assert_array_equal(np.all(labels == 0, axis=1), untouched)


def _zero(B):
    return {k: np.zeros(B) for k in ("flip", "tx", "ty", "log2_scale")}


@exercise("source_positions")
@pytest.mark.parametrize("n", [7, 10])
def test_source_positions_of_single_transforms(ex, n):
    q, c = np.arange(n, dtype=np.float64), (n - 1) / 2
    cases = [({}, q, q),                                          # nothing: every pixel reads itself
             ({"flip": np.ones(1)}, n - 1 - q, q),                # x-flip mirrors the columns only
             ({"tx": np.full(1, 2.0)}, q - 2, q),                 # +tx moves the content right: q reads q - tx
             ({"ty": np.full(1, -1.0)}, q, q + 1),                # -ty moves it up
             ({"log2_scale": np.ones(1)}, c + (q - c) / 2, c + (q - c) / 2)]   # s = 2 about the centre
    for change, ux, uy in cases:
        u_x, u_y = ex.source_positions({**_zero(1), **change}, n)
        assert u_x.shape == (1, n) and u_y.shape == (1, n), change
        np.testing.assert_allclose(u_x[0], ux, rtol=0, atol=1e-12, err_msg=str(change))
        np.testing.assert_allclose(u_y[0], uy, rtol=0, atol=1e-12, err_msg=str(change))


@exercise("source_positions")
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_source_positions_invert_the_forward_map(ex, backend):
    """The forward map of a pixel at source position u is q = c + t + s f (u - c) (flip, then scale,
    then shift); applied to the source positions of all transforms at once it gives back q."""
    n, B = 12, 16
    p = _params(B, n, 10, backend)
    u_x, u_y = ex.source_positions(p, n)
    assert type(u_x) is type(p["flip"]) and tuple(u_x.shape) == tuple(u_y.shape) == (B, n)
    h = {k: _host(v)[:, None] for k, v in p.items()}
    c, s, f = (n - 1) / 2, 2.0 ** h["log2_scale"], 1 - 2 * h["flip"]
    q = np.broadcast_to(np.arange(n, dtype=np.float64), (B, n))
    np.testing.assert_allclose(c + h["tx"] + s * f * (_host(u_x) - c), q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c + h["ty"] + s * (_host(u_y) - c), q, rtol=0, atol=1e-12)


@exercise("source_positions")
def test_source_positions_move_a_pixel_where_the_labels_say(ex):
    """Resampled with bilinear weights (x' = R_y x R_x^T), a flipped and shifted image carries its
    one white pixel at (row + ty, n - 1 - col + tx)."""
    from minidiff.augment import interpolation_matrix
    n, B = 11, 6
    p = {**_zero(B), "flip": np.array([0, 1, 1, 0, 1, 0.0]), "tx": np.array([1, -2, 0, 2, 1, -1.0]),
         "ty": np.array([0, 1, -2, -1, 2, 1.0])}
    x = np.zeros((B, n, n))
    x[:, 4, 3] = 1.0
    u_x, u_y = ex.source_positions(p, n)
    y = interpolation_matrix(u_y, n) @ x @ np.transpose(interpolation_matrix(u_x, n), (0, 2, 1))
    for b in range(B):
        col = (n - 1 - 3 if p["flip"][b] else 3) + int(p["tx"][b])
        expected = np.zeros((n, n))
        expected[4 + int(p["ty"][b]), col] = 1.0
        np.testing.assert_allclose(y[b], expected, rtol=0, atol=1e-12)
