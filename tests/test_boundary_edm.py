"""Issue 11, section 1, the EDM side of the public API's boundary (edm, consistency, guidance,
metrics, nn, toy2d, the backend's generators).

Part 1: one test per defect the issue names in these modules (each failed before its fix).
Part 2: a hypothesis suite over every public function: bad parameters (NaN, inf, negatives, zero,
bools, strings, floats for ints, huge ints, lists/None for arrays, wrong shapes, mixed NumPy/torch)
raise ValueError/TypeError whose message names the parameter; valid parameters give finite values
of the documented shape, on both backends where cheap.
"""
import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minidiff import backend, consistency as cm, edm, guidance, metrics
from minidiff.data import toy2d
nn_mlp = importlib.import_module("minidiff.nn.mlp")     # minidiff.nn.mlp is also the function's name
optim = importlib.import_module("minidiff.nn.optim")

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAN, INF = float("nan"), float("inf")


def raises_naming(param, call, /, *args, **kwargs):
    """call(*args, **kwargs) raises ValueError or TypeError and the message names ``param``."""
    with pytest.raises((ValueError, TypeError)) as info:
        call(*args, **kwargs)
    assert param in str(info.value), f"{param!r} not named in: {info.value}"
    return info.value


def identity_D(x, sigma, **kw):
    return 0.5 * x


def raw_net(x, c_noise, **kw):
    return 0.1 * x


GEN = backend.generator(0, backend="numpy")


# ==============================================================================================
# Part 1: the defects named in the issue.

def test_karras_sigmas_with_an_infinite_sigma_max_is_refused():
    raises_naming("sigma_max", edm.karras_sigmas, 5, 0.002, INF)
    raises_naming("sigma_min", edm.karras_sigmas, 5, NAN, 80.0)
    raises_naming("rho", edm.karras_sigmas, 5, 0.002, 80.0, NAN)


def test_vp_sigmas_with_a_negative_beta_d_is_refused():
    raises_naming("beta_d", edm.vp_sigmas, 5, beta_d=-1)
    raises_naming("beta_min", edm.vp_sigmas, 5, beta_min=-1)


def test_ct_schedule_mu0_above_one_is_refused():
    raises_naming("mu0", cm.ct_schedule, 3, 10, mu0=2)


def test_ict_schedule_s0_zero_is_refused():
    raises_naming("s0", cm.ict_schedule, 3, 10, s0=0)


def test_cm_boundaries_with_a_float_count_is_refused():
    err = raises_naming("N", cm.cm_boundaries, 2.7)
    assert isinstance(err, TypeError)


def test_denoiser_loss_with_a_negative_weight_is_refused():
    x0 = np.ones((4, 2))
    raises_naming("weight", edm.denoiser_loss, identity_D, x0, np.ones(4), np.zeros((4, 2)), -np.ones(4))


@pytest.mark.parametrize("sigma", [0.0, -1.0, np.array([1.0, 0.0]), torch.tensor([-0.5, 1.0])])
def test_every_preconditioning_refuses_sigma_at_or_below_zero(sigma):
    for name, scheme in edm.SCHEMES.items():
        raises_naming("sigma", scheme.preconditioning, sigma)
        raises_naming("sigma", scheme.loss_weight, sigma)
    D = edm.precondition(raw_net, "edm")
    x = torch.ones(2, 2) if torch.is_tensor(sigma) else np.ones((2, 2))
    raises_naming("sigma", D, x, sigma if np.ndim(sigma) else np.full(2, sigma))


@pytest.mark.parametrize("kw", [dict(lr=NAN), dict(lr=INF), dict(b1=NAN), dict(b2=INF), dict(eps=NAN),
                                dict(weight_decay=NAN), dict(weight_decay=INF), dict(eps=0.0)])
def test_adam_update_refuses_non_finite_hyperparameters(kw):
    params = [[np.ones((2, 2)), np.zeros(2)]]
    raises_naming(next(iter(kw)), optim.adam_update, params, params, optim.adam_init(params), **kw)


def test_sliced_wasserstein_with_no_projections_is_refused():
    x = np.random.default_rng(0).standard_normal((10, 2))
    raises_naming("n_projections", metrics.sliced_wasserstein, x, x + 1, n_projections=0)


def test_mmd_without_bandwidths_is_refused_not_zero():
    x = np.random.default_rng(0).standard_normal((10, 2))
    raises_naming("bandwidths", metrics.mmd2_unbiased, x, x + 5, bandwidths=())


def test_frechet_distance_refuses_a_covariance_that_is_not_psd():
    bad = np.diag([1.0, -1.0])          # symmetric, not PSD: the distance used to come out as 0
    raises_naming("sigma1", metrics.frechet_distance, np.zeros(2), bad, np.zeros(2), bad)
    raises_naming("sigma2", metrics.trace_sqrt_product, np.eye(2), np.array([[1.0, 2.0], [0.0, 1.0]]))
    # round-off in a rank-deficient float64 covariance (more dims than samples) is within tolerance
    f = np.random.default_rng(0).standard_normal((5, 40))
    mu, S = metrics.feature_statistics(f)
    assert np.linalg.eigvalsh(S).min() < 0 or True   # whatever round-off gave, it must be accepted:
    assert abs(metrics.frechet_distance(mu, S, mu, S)) < 1e-6 * np.trace(S)


def test_drop_labels_refuses_a_null_label_that_is_a_real_class():
    labels = np.array([0, 1, 2, 1])
    raises_naming("null_label", guidance.drop_labels, labels, 0.5, 2, np.random.default_rng(0))
    raises_naming("null_label", guidance.drop_labels, np.array([0, 1]), 0.5, 2, np.random.default_rng(0),
                  num_classes=3)
    out = guidance.drop_labels(labels, 0.5, 3, np.random.default_rng(0), num_classes=3)
    assert set(np.unique(out)) <= {0, 1, 2, 3}


def _bad_shape_model(x, t, **kw):
    return x[:, :1]


def _nan_model(x, t, **kw):
    return x * np.nan


@pytest.mark.parametrize("bad", [_bad_shape_model, _nan_model])
def test_model_outputs_are_checked_in_the_losses_and_consistency_sample(bad):
    x0, z = np.ones((4, 2)), np.zeros((4, 2))
    b, n = cm.cm_boundaries(5), np.array([0, 1, 2, 3])
    good = lambda x, t, **kw: 0.5 * x
    raises_naming("D", edm.denoiser_loss, bad, x0, np.ones(4), z, np.ones(4))
    raises_naming("f", cm.ct_loss, bad, good, x0, n, z, b)
    raises_naming("f_target", cm.ct_loss, good, bad, x0, n, z, b)
    raises_naming("teacher_D", cm.cd_loss, good, good, bad, x0, n, z, b)
    raises_naming("f", cm.consistency_sample, bad, 80 * np.ones((4, 2)), [], np.zeros_like)


def test_nan_in_x_T_is_blamed_on_x_T():
    x_T = np.ones((2, 2))
    x_T[0, 0] = np.nan
    err = raises_naming("x_T", cm.consistency_sample, lambda x, t: x, x_T, [1.0], np.zeros_like)
    assert "f " not in str(err)


def test_shape_mismatches_name_both_arguments():
    err = raises_naming("noise", edm.denoiser_loss, identity_D, np.ones((4, 2)), np.ones(4), np.zeros((4, 3)),
                        np.ones(4))
    assert "x0" in str(err) and "(4, 3)" in str(err)
    err = raises_naming("y", cm.distance, np.ones((4, 2)), np.ones((3, 2)))
    assert "x" in str(err)
    raises_naming("uncond", guidance.guided, np.ones((2, 2)), np.ones((2, 3)), 1.0)


def test_lists_and_none_where_arrays_are_expected_are_type_errors():
    for call, name in [(lambda: cm.distance([[0.0]], np.ones((1, 1))), "x"),
                       (lambda: metrics.sliced_wasserstein(None, np.ones((3, 2))), "x"),
                       (lambda: guidance.guided(np.ones(2), None, 0.0), "uncond"),
                       (lambda: nn_mlp.mlp(None, np.ones((2, 2)), np.zeros(2)), "params"),
                       (lambda: edm.denoiser_loss(identity_D, [[1.0]], np.ones(1), np.zeros((1, 1)), np.ones(1)), "x0")]:
        assert isinstance(raises_naming(name, call), TypeError)


def test_mixed_numpy_and_torch_in_one_call_is_a_type_error():
    err = raises_naming("y", cm.distance, np.ones((2, 2)), torch.ones(2, 2))
    assert isinstance(err, TypeError) and "torch" in str(err)
    assert isinstance(raises_naming("noise", edm.denoiser_loss, identity_D, np.ones((2, 2)), np.ones(2),
                                    torch.zeros(2, 2), np.ones(2)), TypeError)
    assert isinstance(raises_naming("y", metrics.energy_distance, np.ones((3, 2)), torch.ones(3, 2)), TypeError)


@pytest.mark.parametrize("bad", [True, "3", 2.7, 1e12, 10 ** 12])
def test_integer_counts_refuse_bools_strings_floats_and_huge_ints(bad):
    x = np.random.default_rng(0).standard_normal((6, 2))
    raises_naming("n", edm.karras_sigmas, bad)
    raises_naming("N", cm.cm_boundaries, bad)
    raises_naming("n_projections", metrics.sliced_wasserstein, x, x, n_projections=bad)
    raises_naming("n", toy2d.sample_toy, "two_moons", bad)
    if not isinstance(bad, int) or isinstance(bad, bool):       # 10**12 is a valid seed
        raises_naming("seed", metrics.sliced_wasserstein, x, x, seed=bad)
        raises_naming("seed", backend.generator, bad)


def test_float16_point_clouds_are_measured_in_float32():
    rng = np.random.default_rng(0)
    x, y = 300 * rng.standard_normal((50, 2)), 300 * rng.standard_normal((60, 2)) + 30
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    x32, y32 = x16.astype(np.float32), y16.astype(np.float32)
    for f in (metrics.sliced_wasserstein, metrics.energy_distance):
        v16 = f(x16, y16)
        assert math.isfinite(v16) and v16 == f(x32, y32)
    d = cm.distance(x16, y16[:50])
    assert np.all(np.isfinite(d)) and np.array_equal(d, cm.distance(x32, y32[:50]))


# ==============================================================================================
# Part 2: the hypothesis suite.  Each entry: (function, its valid keyword arguments, the
# parameter to spoil, the bad values for it).

BAD_REAL = [NAN, INF, -INF, True, "3", None]
BAD_COUNT = [True, "3", 2.7, 1e12, 10 ** 12, None, -1]
BAD_POS_COUNT = BAD_COUNT + [0]
BAD_POSITIVE = BAD_REAL + [0.0, -1.0]
BAD_SIGMA = [0.0, -1.0, NAN, INF, None, "1", True, np.array([1.0, 0.0]), np.array([NAN]), torch.tensor([-1.0])]
BAD_ARRAY = [None, [[0.0, 1.0]], "x"]
BAD_RNG_SRC = [None, 3, "x"]


def x42():
    return np.random.default_rng(0).standard_normal((4, 2))


def cloud(n=8, d=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def nan_at(a):
    a = np.array(a, dtype=np.float64)
    a.flat[0] = np.nan
    return a


def models(**kw):
    base = dict(f=lambda x, t: 0.5 * x, f_target=lambda x, t: 0.5 * x)
    base.update(kw)
    return base


CT = dict(f=lambda x, t: 0.5 * x, f_target=lambda x, t: 0.4 * x, x0=np.ones((4, 2)), n=np.array([0, 1, 2, 3]),
          z=np.ones((4, 2)), boundaries=cm.cm_boundaries(5), metric="l2", weight=np.ones(4))
CD = dict(CT, teacher_D=lambda x, s: 0.3 * x)
BAD_N = [None, [0, 1, 2, 3], np.array([0, 1, 2, 4]), np.array([-1, 0, 0, 0]), np.array([0.0, 1, 2, 3]),
         np.array([0, 1, 2]), torch.tensor([0, 1, 2, 3])]
BAD_BOUNDARIES = [None, "x", np.array([1.0]), np.array([2.0, 1.0, 3.0, 4.0, 5.0]), np.array([0.0, 1, 2, 3, 4]),
                  np.array([[1.0, 2.0]]), nan_at(np.arange(1.0, 6.0))]
BAD_X0 = [None, [[1.0, 1.0]] * 4, nan_at(np.ones((4, 2))), torch.ones(4, 2), np.ones((4, 3))]
BAD_MODEL = [None, 3, _bad_shape_model, _nan_model]
PARAMS = nn_mlp.init_mlp(0, hidden=8, depth=1, t_dim=4)
ADAM = dict(params=PARAMS, grads=PARAMS, state=optim.adam_init(PARAMS), lr=1e-3, b1=0.9, b2=0.999, eps=1e-8,
            weight_decay=0.0)
GMM = toy2d.eight_gaussians_mixture()
MIX = dict(x=x42(), means=GMM.means, variances=GMM.vars, weights=GMM.weights, alpha=1.0, sigma=0.5)
BAD_MIX_X = BAD_ARRAY + [np.ones((4, 3)), nan_at(np.ones((4, 2))), np.ones(4)]
NOT_PSD = np.diag([1.0, -1.0])
ASYMMETRIC = np.array([[1.0, 0.5], [0.0, 1.0]])
FEATS = dict(features_x=cloud(10, 3), features_y=cloud(10, 3, 1))

SPOILS = [
    # edm: time steps
    (edm.karras_sigmas, dict(n=5, sigma_min=0.002, sigma_max=80.0, rho=7.0), "n", BAD_POS_COUNT),
    (edm.karras_sigmas, dict(n=5, sigma_min=0.002, sigma_max=80.0, rho=7.0), "sigma_min", BAD_POSITIVE + [100.0]),
    (edm.karras_sigmas, dict(n=5, sigma_min=0.002, sigma_max=80.0, rho=7.0), "sigma_max", BAD_POSITIVE + [0.001]),
    (edm.karras_sigmas, dict(n=5, sigma_min=0.002, sigma_max=80.0, rho=7.0), "rho", BAD_POSITIVE),
    (edm.vp_sigmas, dict(n=5), "n", BAD_POS_COUNT),
    (edm.vp_sigmas, dict(n=5), "eps_s", BAD_REAL + [0.0, 1.0, 2.0]),
    (edm.vp_sigmas, dict(n=5), "beta_d", BAD_POSITIVE),
    (edm.vp_sigmas, dict(n=5), "beta_min", BAD_REAL + [-1.0]),
    (edm.ve_sigmas, dict(n=5), "n", BAD_POS_COUNT),
    (edm.ve_sigmas, dict(n=5), "sigma_min", BAD_POSITIVE + [200.0]),
    (edm.ve_sigmas, dict(n=5), "sigma_max", BAD_POSITIVE),
    (edm.iddpm_sigmas, dict(n=5), "n", BAD_POS_COUNT),
    (edm.iddpm_sigmas, dict(n=5), "sigma_min", BAD_POSITIVE + [500.0]),
    (edm.iddpm_sigmas, dict(n=5), "sigma_max", BAD_POSITIVE + [0.001]),
    (edm.iddpm_sigmas, dict(n=5), "M", BAD_POS_COUNT),
    (edm.iddpm_u, dict(M=100), "M", BAD_POS_COUNT),
    (edm.iddpm_u, dict(M=100), "C1", BAD_POSITIVE + [2.0]),
    (edm.iddpm_u, dict(M=100), "C2", BAD_REAL + [-1.0]),
    (edm.vp_sigma, dict(t=np.array([0.1, 1.0])), "t", [-1.0, NAN, None, "a", True, np.array([0.5, -0.1])]),
    (edm.vp_sigma, dict(t=np.array([0.1, 1.0])), "beta_d", BAD_POSITIVE),
    (edm.vp_s, dict(t=np.array([0.1, 1.0])), "t", [-1.0, NAN, None, "a", True]),
    (edm.vp_s, dict(t=np.array([0.1, 1.0])), "beta_min", BAD_REAL + [-1.0]),
    (edm.vp_sigma_inv, dict(sigma=np.array([0.1, 1.0])), "sigma", [-1.0, NAN, None, "a", True]),
    (edm.vp_sigma_inv, dict(sigma=np.array([0.1, 1.0])), "beta_d", BAD_POSITIVE),
    (edm.vp_sigma_to_alpha, dict(sigma=np.array([0.1, 1.0])), "sigma", [-1.0, NAN, None, "a"]),
    # edm: preconditioning, weights, training noise
    (edm.edm_preconditioning, dict(sigma=np.array([0.1, 1.0])), "sigma", BAD_SIGMA),
    (edm.edm_preconditioning, dict(sigma=np.array([0.1, 1.0])), "sigma_data", BAD_POSITIVE),
    (edm.vp_preconditioning, dict(sigma=np.array([0.1, 1.0])), "sigma", BAD_SIGMA),
    (edm.vp_preconditioning, dict(sigma=np.array([0.1, 1.0])), "M", BAD_POS_COUNT),
    (edm.vp_preconditioning, dict(sigma=np.array([0.1, 1.0])), "beta_d", BAD_POSITIVE),
    (edm.ve_preconditioning, dict(sigma=np.array([0.1, 1.0])), "sigma", BAD_SIGMA),
    (edm.iddpm_preconditioning, dict(sigma=np.array([0.1, 1.0])), "sigma", BAD_SIGMA),
    (edm.iddpm_preconditioning, dict(sigma=np.array([0.1, 1.0])), "M", BAD_POS_COUNT),
    (edm.iddpm_preconditioning, dict(sigma=np.array([0.1, 1.0])), "C1", BAD_POSITIVE),
    (edm.edm_loss_weight, dict(sigma=np.array([0.1, 1.0])), "sigma", BAD_SIGMA),
    (edm.edm_loss_weight, dict(sigma=np.array([0.1, 1.0])), "sigma_data", BAD_POSITIVE),
    (edm.inverse_square_weight, dict(sigma=np.array([0.1, 1.0])), "sigma", BAD_SIGMA),
    (edm.edm_training_sigma, dict(rng=GEN, n=4), "rng", BAD_RNG_SRC),
    (edm.edm_training_sigma, dict(rng=GEN, n=4), "n", BAD_POS_COUNT),
    (edm.edm_training_sigma, dict(rng=GEN, n=4), "P_mean", BAD_REAL),
    (edm.edm_training_sigma, dict(rng=GEN, n=4), "P_std", BAD_POSITIVE),
    (edm.edm_P_mean, dict(sigma_data=1.0), "sigma_data", BAD_POSITIVE),
    (edm.edm_P_mean, dict(sigma_data=1.0), "P_mean", BAD_REAL),
    (edm.edm_P_mean, dict(sigma_data=1.0), "at", BAD_POSITIVE),
    (edm.vp_training_sigma, dict(rng=GEN, n=4), "rng", BAD_RNG_SRC),
    (edm.vp_training_sigma, dict(rng=GEN, n=4), "n", BAD_POS_COUNT),
    (edm.vp_training_sigma, dict(rng=GEN, n=4), "eps_t", BAD_POSITIVE + [1.0]),
    (edm.vp_training_sigma, dict(rng=GEN, n=4), "beta_d", BAD_POSITIVE),
    (edm.ve_training_sigma, dict(rng=GEN, n=4), "n", BAD_POS_COUNT),
    (edm.ve_training_sigma, dict(rng=GEN, n=4), "sigma_max", BAD_POSITIVE),
    (edm.iddpm_training_sigma, dict(rng=GEN, n=4), "rng", BAD_RNG_SRC),
    (edm.iddpm_training_sigma, dict(rng=GEN, n=4), "M", BAD_POS_COUNT),
    (edm.get_scheme, dict(name="edm"), "scheme", ["karras", None, 3]),
    (edm.precondition, dict(raw_net=raw_net), "raw_net", [None, 3]),
    (edm.precondition, dict(raw_net=raw_net), "scheme", ["karras", None]),
    (edm.precondition, dict(raw_net=raw_net, scheme="edm"), "sigma_data", BAD_POSITIVE),
    (edm.precondition, dict(raw_net=raw_net, scheme="edm"), "bogus", [1.0]),
    (edm.denoiser_loss, dict(D=identity_D, x0=np.ones((4, 2)), sigma=np.ones(4), noise=np.zeros((4, 2)),
                             weight=np.ones(4)), "D", BAD_MODEL),
    (edm.denoiser_loss, dict(D=identity_D, x0=np.ones((4, 2)), sigma=np.ones(4), noise=np.zeros((4, 2)),
                             weight=np.ones(4)), "x0", BAD_X0),
    (edm.denoiser_loss, dict(D=identity_D, x0=np.ones((4, 2)), sigma=np.ones(4), noise=np.zeros((4, 2)),
                             weight=np.ones(4)), "sigma", BAD_SIGMA + [np.ones(3), np.ones((4, 1))]),
    (edm.denoiser_loss, dict(D=identity_D, x0=np.ones((4, 2)), sigma=np.ones(4), noise=np.zeros((4, 2)),
                             weight=np.ones(4)), "noise", BAD_ARRAY + [np.zeros((4, 3)), nan_at(np.zeros((4, 2)))]),
    (edm.denoiser_loss, dict(D=identity_D, x0=np.ones((4, 2)), sigma=np.ones(4), noise=np.zeros((4, 2)),
                             weight=np.ones(4)), "weight", [-np.ones(4), nan_at(np.ones(4)), np.ones(3), None, "1"]),
    (edm.eps_model_to_denoiser, dict(eps_model=identity_D, alpha_bar=np.array([0.9, 0.5])), "eps_model", [None, 1]),
    (edm.eps_model_to_denoiser, dict(eps_model=identity_D, alpha_bar=np.array([0.9, 0.5])), "alpha_bar",
     [None, "x", np.array([0.0, 0.5]), np.array([1.0]), np.array([NAN])]),
    (edm.denoiser_to_eps_model, dict(D=identity_D, alpha_bar=np.array([0.9, 0.5])), "D", [None]),
    (edm.denoiser_to_eps_model, dict(D=identity_D, alpha_bar=np.array([0.9, 0.5])), "alpha_bar",
     [None, np.array([1.5])]),
    # consistency
    (cm.consistency_coefficients, dict(t=np.array([0.1, 1.0])), "t", BAD_SIGMA),
    (cm.consistency_coefficients, dict(t=np.array([0.1, 1.0])), "sigma_data", BAD_POSITIVE),
    (cm.consistency_coefficients, dict(t=np.array([0.1, 1.0])), "eps", BAD_POSITIVE),
    (cm.consistency_function, dict(raw_net=raw_net), "raw_net", [None, 2]),
    (cm.consistency_function, dict(raw_net=raw_net), "sigma_data", BAD_POSITIVE),
    (cm.consistency_function, dict(raw_net=raw_net), "eps", BAD_POSITIVE),
    (cm.cm_boundaries, dict(N=5), "N", BAD_COUNT + [0, 1]),
    (cm.cm_boundaries, dict(N=5), "eps", BAD_POSITIVE + [80.0]),
    (cm.cm_boundaries, dict(N=5), "T", BAD_POSITIVE),
    (cm.cm_boundaries, dict(N=5), "rho", BAD_POSITIVE),
    (cm.ct_schedule, dict(k=3, K=10), "k", [True, "3", 2.7, 1e12, None, -1, 11]),
    (cm.ct_schedule, dict(k=3, K=10), "K", [True, "3", 2.7, 1e12, None, 0, 2]),
    (cm.ct_schedule, dict(k=3, K=10), "s0", BAD_POS_COUNT + [200]),
    (cm.ct_schedule, dict(k=3, K=10), "s1", BAD_POS_COUNT + [1]),
    (cm.ct_schedule, dict(k=3, K=10), "mu0", BAD_REAL + [0.0, 2.0, -0.5]),
    (cm.ict_schedule, dict(k=3, K=10), "k", [True, "3", 2.7, None, -1, 11]),
    (cm.ict_schedule, dict(k=3, K=10), "K", [True, 1e12, 0]),
    (cm.ict_schedule, dict(k=3, K=10), "s0", BAD_POS_COUNT + [2000]),
    (cm.ict_schedule, dict(k=3, K=10), "s1", BAD_POS_COUNT + [5]),
    (cm.ict_level_probabilities, dict(boundaries=cm.cm_boundaries(5)), "boundaries", BAD_BOUNDARIES),
    (cm.ict_level_probabilities, dict(boundaries=cm.cm_boundaries(5)), "P_mean", BAD_REAL),
    (cm.ict_level_probabilities, dict(boundaries=cm.cm_boundaries(5)), "P_std", BAD_POSITIVE),
    (cm.distance, dict(x=x42(), y=x42()), "x", BAD_ARRAY + [np.ones((3, 2))]),
    (cm.distance, dict(x=x42(), y=x42()), "y", BAD_ARRAY + [np.ones((4, 3)), torch.ones(4, 2)]),
    (cm.distance, dict(x=x42(), y=x42()), "metric", ["lpips", None]),
    (cm.distance, dict(x=x42(), y=x42(), metric="pseudo_huber"), "c", [NAN, INF, True, "3", -1.0]),
    *[(loss, args, name, bad) for loss, args in ((cm.ct_loss, CT), (cm.cd_loss, CD)) for name, bad in (
        ("f", BAD_MODEL), ("f_target", BAD_MODEL), ("x0", BAD_X0), ("n", BAD_N), ("boundaries", BAD_BOUNDARIES),
        ("z", BAD_ARRAY + [np.ones((4, 3)), nan_at(np.ones((4, 2)))]), ("metric", ["lpips"]),
        ("weight", [-np.ones(4), nan_at(np.ones(4)), np.ones(3), "w"]))],
    (cm.cd_loss, CD, "teacher_D", BAD_MODEL),
    (cm.ict_weight, dict(boundaries=cm.cm_boundaries(5), n=np.array([0, 3])), "boundaries", BAD_BOUNDARIES),
    (cm.ict_weight, dict(boundaries=cm.cm_boundaries(5), n=np.array([0, 3])), "n",
     [None, np.array([0, 4]), np.array([-1]), np.array([0.5])]),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "f", BAD_MODEL),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "x_T",
     BAD_ARRAY + [nan_at(x42())]),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "taus",
     [None, "ab", [NAN], [100.0], [[1.0]], [1.0, 2.0]]),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "randn_like",
     [None, 3]),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "T",
     BAD_POSITIVE),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "eps",
     BAD_POSITIVE + [100.0]),
    (cm.consistency_sample, dict(f=lambda x, t: x, x_T=x42(), taus=[1.0], randn_like=np.zeros_like), "callback",
     [3, "x"]),
    # guidance
    (guidance.drop_labels, dict(labels=np.array([0, 1, 2]), p_uncond=0.5, null_label=3, rng=np.random.default_rng(0)),
     "labels", BAD_ARRAY),
    (guidance.drop_labels, dict(labels=np.array([0, 1, 2]), p_uncond=0.5, null_label=3, rng=np.random.default_rng(0)),
     "p_uncond", BAD_REAL + [1.0, -0.1]),
    (guidance.drop_labels, dict(labels=np.array([0, 1, 2]), p_uncond=0.5, null_label=3, rng=np.random.default_rng(0)),
     "null_label", [2, 0, -1, None, True, np.zeros(2)]),
    (guidance.drop_labels, dict(labels=np.array([0, 1, 2]), p_uncond=0.5, null_label=3, rng=np.random.default_rng(0)),
     "rng", [None, 3]),
    (guidance.drop_labels, dict(labels=np.array([0, 1, 2]), p_uncond=0.5, null_label=3, rng=np.random.default_rng(0)),
     "num_classes", [True, 2.7, "3", 0, 5]),
    (guidance.guided, dict(cond=np.ones(3), uncond=np.ones(3), w=1.0), "cond", BAD_ARRAY),
    (guidance.guided, dict(cond=np.ones(3), uncond=np.ones(3), w=1.0), "uncond", BAD_ARRAY + [np.ones(4), torch.ones(3)]),
    (guidance.guided, dict(cond=np.ones(3), uncond=np.ones(3), w=1.0), "w", BAD_REAL),
    (guidance.classifier_free_guidance, dict(model=identity_D, w=1.0, null=3), "model", [None, 3]),
    (guidance.classifier_free_guidance, dict(model=identity_D, w=1.0, null=3), "w", BAD_REAL),
    (guidance.classifier_free_guidance, dict(model=identity_D, w=1.0, null=3), "null", [True, "x"]),
    (guidance.classifier_free_guidance, dict(model=identity_D, w=1.0, null=3), "key", [3, None, "not a name"]),
    # metrics
    *[(f, dict(x=cloud(), y=cloud(seed=1)), name, BAD_ARRAY + [np.ones(8), np.ones((8, 3)), np.ones((1, 2)),
                                                              nan_at(cloud())] + ([torch.ones(8, 2)] if name == "y" else []))
      for f in (metrics.sliced_wasserstein, metrics.mmd2_unbiased, metrics.energy_distance) for name in ("x", "y")],
    (metrics.sliced_wasserstein, dict(x=cloud(), y=cloud(seed=1)), "n_projections", BAD_POS_COUNT),
    (metrics.sliced_wasserstein, dict(x=cloud(), y=cloud(seed=1)), "seed", [True, "3", 2.7, 1e12, None, -1]),
    (metrics.sliced_wasserstein, dict(x=cloud(), y=cloud(seed=1)), "p", BAD_REAL + [0.5, 0.0]),
    (metrics.mmd2_unbiased, dict(x=cloud(), y=cloud(seed=1)), "bandwidths",
     [(), [], (0.0,), (-1.0,), (NAN,), (INF,), None, "ab", (True,), 1.0]),
    (metrics.sliced_wasserstein_report, dict(samples=cloud(), data=[cloud(seed=1)]), "data", [None, 3]),
    (metrics.sliced_wasserstein_report, dict(samples=cloud(), data=[cloud(seed=1)]), "floor_pairs",
     [None, [(cloud(),)], [3]]),
    (metrics.sliced_wasserstein_report, dict(samples=cloud(), data=[cloud(seed=1)]), "samples",
     [[cloud(), cloud()]]),
    (metrics.exact_nll, dict(log_prob=GMM.log_prob, x=x42()), "log_prob",
     [None, lambda x: np.zeros((4, 1)), lambda x: np.full(4, -np.inf), lambda x: 0.0]),
    (metrics.exact_nll, dict(log_prob=GMM.log_prob, x=x42()), "x", [None, [[0.0, 0.0]], nan_at(x42())]),
    (metrics.feature_statistics, dict(features=cloud(5, 3)), "features",
     [None, "x", np.ones(3), np.ones((1, 3)), nan_at(cloud(5, 3))]),
    (metrics.trace_sqrt_product, dict(sigma1=np.eye(2), sigma2=np.eye(2)), "sigma1",
     [None, NOT_PSD, ASYMMETRIC, nan_at(np.eye(2)), np.ones((2, 3))]),
    (metrics.trace_sqrt_product, dict(sigma1=np.eye(2), sigma2=np.eye(2)), "sigma2", [None, NOT_PSD, np.eye(3)]),
    (metrics.frechet_distance, dict(mu1=np.zeros(2), sigma1=np.eye(2), mu2=np.zeros(2), sigma2=np.eye(2)), "mu1",
     [None, "x", np.zeros(3), nan_at(np.zeros(2))]),
    (metrics.frechet_distance, dict(mu1=np.zeros(2), sigma1=np.eye(2), mu2=np.zeros(2), sigma2=np.eye(2)), "sigma1",
     [None, NOT_PSD, ASYMMETRIC, -np.eye(2)]),
    (metrics.frechet_distance, dict(mu1=np.zeros(2), sigma1=np.eye(2), mu2=np.zeros(2), sigma2=np.eye(2)), "sigma2",
     [NOT_PSD, np.eye(3)]),
    (metrics.polynomial_mmd2, FEATS, "features_x", [None, np.ones((1, 3)), np.ones((10, 4))]),
    (metrics.polynomial_mmd2, FEATS, "degree", BAD_POS_COUNT),
    (metrics.polynomial_mmd2, FEATS, "coef", BAD_REAL),
    (metrics.kid, dict(FEATS, subset_size=5), "features_y", [None, nan_at(cloud(10, 3))]),
    (metrics.kid, dict(FEATS, subset_size=5), "subsets", BAD_POS_COUNT),
    (metrics.kid, dict(FEATS, subset_size=5), "subset_size", [True, 2.7, "3", None, 1, 11]),
    (metrics.kid, dict(FEATS, subset_size=5), "seed", [True, "3", 2.7, -1]),
    # nn
    (nn_mlp.sinusoidal_embedding, dict(t=np.arange(3.0), dim=8), "t", BAD_ARRAY + [nan_at(np.ones(3)), np.ones((3, 1))]),
    (nn_mlp.sinusoidal_embedding, dict(t=np.arange(3.0), dim=8), "dim", BAD_POS_COUNT + [3]),
    (nn_mlp.sinusoidal_embedding, dict(t=np.arange(3.0), dim=8), "max_period", BAD_POSITIVE + [1.0]),
    *[(nn_mlp.init_mlp, dict(rng=0), name, BAD_POS_COUNT) for name in ("in_dim", "hidden", "depth", "t_dim")],
    (nn_mlp.init_mlp, dict(rng=0), "t_dim", [3]),
    (nn_mlp.init_mlp, dict(rng=0), "out_dim", [0, True, 2.7, "2"]),
    (nn_mlp.init_mlp, dict(rng=0), "rng", [-1, "x", 2.7, True]),
    (nn_mlp.init_mlp, dict(rng=0), "dtype", [np.int64, "banana"]),
    (nn_mlp.mlp, dict(params=PARAMS, x=x42(), t=np.arange(4.0)), "params", [None, [], [[PARAMS[0][0]]], "x"]),
    (nn_mlp.mlp, dict(params=PARAMS, x=x42(), t=np.arange(4.0)), "x", BAD_ARRAY + [np.ones(4), np.ones((4, 3))]),
    (nn_mlp.mlp, dict(params=PARAMS, x=x42(), t=np.arange(4.0)), "t", [None, np.ones(3), torch.ones(4)]),
    (optim.global_norm, dict(grads=PARAMS), "grads", [None, "x", [None]]),
    (optim.clip_grad_norm, dict(grads=PARAMS, max_norm=1.0), "max_norm", BAD_POSITIVE),
    (optim.clip_grad_norm, dict(grads=PARAMS, max_norm=1.0), "grads", [None]),
    (optim.adam_init, dict(params=PARAMS), "params", [None, "x"]),
    *[(optim.adam_update, ADAM, name, bad) for name, bad in (
        ("lr", BAD_POSITIVE), ("b1", BAD_REAL + [1.0, -0.1]), ("b2", BAD_REAL + [1.0, -0.1]), ("eps", BAD_POSITIVE),
        ("weight_decay", BAD_REAL + [-1.0]), ("state", [None, {}, {"m": 0, "v": 0, "step": -1}]),
        ("params", [None]), ("grads", [None, PARAMS[:0] + [[PARAMS[0][0]]]]))],
    (optim.ema_warmup, dict(decay=0.99, k=3), "decay", BAD_REAL + [2.0, -1.0]),
    (optim.ema_warmup, dict(decay=0.99, k=3), "k", [True, "3", 2.7, None, -1]),
    (optim.power_ema_exponent, dict(sigma_rel=0.1), "sigma_rel", BAD_REAL + [0.0, -0.1, 0.29, 1.0]),
    (optim.power_ema_decay, dict(gamma=6.94, k=3), "gamma", BAD_REAL + [-0.5]),
    (optim.power_ema_decay, dict(gamma=6.94, k=3), "k", [True, "3", 2.7, None, -1]),
    (optim.inverse_sqrt_decay, dict(t_ref=10, k=3), "t_ref", [True, "3", 2.7, None, -1]),
    (optim.inverse_sqrt_decay, dict(t_ref=10, k=3), "k", [True, "3", 2.7, None, -1]),
    (optim.ema_update, dict(ema_params=PARAMS, params=PARAMS, decay=0.9), "decay", BAD_REAL + [2.0, -1.0]),
    (optim.ema_update, dict(ema_params=PARAMS, params=PARAMS, decay=0.9), "ema_params", [None, "x"]),
    # toy2d
    (toy2d.sample_toy, dict(name="two_moons", n=4), "name", [None, 3, "swissroll"]),
    (toy2d.sample_toy, dict(name="two_moons", n=4), "n", BAD_POS_COUNT),
    (toy2d.sample_toy, dict(name="two_moons", n=4), "rng", [-1, "x", 2.7, True, None]),
    (toy2d.exact_density, dict(name="8gaussians"), "name", [None, 3, "nope"]),
    *[(f, dict(n=4, rng=0), name, bad) for f in (toy2d.swiss_roll, toy2d.two_moons, toy2d.checkerboard, toy2d.rings,
                                                    toy2d.spiral)
      for name, bad in (("n", BAD_POS_COUNT), ("rng", [-1, "x", 2.7, None]))],
    (toy2d.GaussianMixture, dict(means=[[0.0, 0.0]], stds=1.0), "means", [None, "x", [[NAN, 0.0]], [0.0, 1.0]]),
    (toy2d.GaussianMixture, dict(means=[[0.0, 0.0]], stds=1.0), "stds", [None, 0.0, -1.0, NAN, [1.0, 2.0, 3.0]]),
    (toy2d.GaussianMixture, dict(means=[[0.0, 0.0]], stds=1.0), "weights", [[0.5], [1.0, 0.0], "x"]),
    (GMM.sample, dict(n=4), "n", BAD_POS_COUNT),
    (GMM.sample, dict(n=4), "rng", [-1, "x", 2.7]),
    *[(f, dict(x=x42()), name, bad) for f in (GMM.log_prob, GMM.score, GMM.denoise, GMM.class_posterior)
      for name, bad in (("x", BAD_MIX_X), ("alpha", [0.0, -1.0, NAN, None, "a", np.ones(3)]),
                        ("sigma", [-1.0, NAN, INF, np.ones(3), torch.ones(4)]))],
    (GMM.score, dict(x=x42()), "class_labels", [[0, 1, 2, 3], np.array([0, 1]), np.array([0, 1, 2, 9])]),
    (GMM.eps_model, dict(alpha_bar=np.array([0.9, 0.5])), "alpha_bar", [None, np.array([0.0, 0.5])]),
    *[(f, MIX, name, bad) for f in (toy2d.mixture_log_prob, toy2d.mixture_score, toy2d.mixture_class_posterior)
      for name, bad in (("x", BAD_MIX_X), ("means", [None, np.zeros((8, 3)), nan_at(GMM.means)]),
                        ("variances", [None, np.zeros((8, 2)), -GMM.vars]), ("weights", [None, np.ones(8)]),
                        ("alpha", [0.0, NAN]), ("sigma", [-1.0, INF]))],
    (toy2d.eight_gaussians_mixture, dict(), "radius", BAD_POSITIVE),
    (toy2d.eight_gaussians_mixture, dict(), "std", BAD_POSITIVE),
    # backend: the generators
    (backend.generator, dict(seed=0), "seed", [True, -1, 2.7, "3", None, 2 ** 64]),
    (backend.generator, dict(seed=0), "backend", ["jax"]),
    *[(getattr(cls(0), m), dict(shape=(2, 3)), "shape", [-1, 2.7, "3", None, (2, True), (10 ** 6, 10 ** 6)])
      for cls in (backend.NumpyGenerator, backend.TorchGenerator) for m in ("randn", "rand")],
    *[(cls(0).randint, dict(low=0, high=3, shape=(4,)), name, bad) for cls in (backend.NumpyGenerator,
                                                                              backend.TorchGenerator)
      for name, bad in (("low", [5, 0.5, True]), ("high", [0, "3"]), ("shape", [-2, None]))],
    *[(getattr(cls(0), m), dict(x=like), "x", [None, [1.0, 2.0]]) for cls, like in
      ((backend.NumpyGenerator, np.ones(2)), (backend.TorchGenerator, torch.ones(2)))
      for m in ("randn_like", "rademacher_like")],
    *[(cls, dict(seed=0), "seed", [True, -1, 2.7, "3"]) for cls in (backend.NumpyGenerator, backend.TorchGenerator)],
]


def _spoil_id(entry):
    f, _, name, _ = entry
    return f"{getattr(f, '__qualname__', f)}-{name}"


@pytest.mark.parametrize("f, valid, name, bad_values", SPOILS, ids=[_spoil_id(e) for e in SPOILS])
def test_a_spoiled_parameter_is_refused_by_name(f, valid, name, bad_values):
    f(**valid)                                                     # the valid call runs
    for bad in bad_values:
        raises_naming(name, f, **{**valid, name: bad})


# Calls that only go wrong once the returned function is used.

def test_the_preconditioned_denoiser_checks_its_call():
    D = edm.precondition(raw_net, "edm")
    x = x42()
    raises_naming("x", D, None, np.ones(4))
    raises_naming("sigma", D, x, np.ones(3))
    raises_naming("sigma", D, x, torch.ones(4))
    raises_naming("raw_net", edm.precondition(lambda x, c: x[:, :1]), x, np.ones(4))
    f = cm.consistency_function(raw_net)
    raises_naming("t", f, x, np.ones(3))
    raises_naming("raw_net", cm.consistency_function(lambda x, c: x[:1]), x, np.ones(4))


def test_the_guided_model_checks_its_call():
    g = guidance.classifier_free_guidance(lambda x, t, class_labels: x, 1.0, null=3)
    x, t = x42(), np.zeros(4, dtype=int)
    raises_naming("class_labels", g, x, t, class_labels=np.array([0, 1]))
    raises_naming("x", g, None, t, class_labels=np.array([0, 1, 2, 0]))
    raises_naming("t", g, x, torch.zeros(4), class_labels=np.array([0, 1, 2, 0]))
    raises_naming("model", guidance.classifier_free_guidance(lambda x, t, class_labels: x[:-1], 1.0, null=3),
                  x, t, class_labels=np.array([0, 1, 2, 0]))


# ---------------------------------------------------------------------------------------------
# Valid parameters: finite values of the documented shape.

def finite(a):
    return bool(np.all(np.isfinite(backend.to_numpy(a))))


positive = st.floats(1e-3, 50.0)
counts = st.integers(1, 40)
backends = st.sampled_from(["numpy", "torch"])


def as_backend(a, which):
    return torch.from_numpy(np.asarray(a, dtype=np.float64)) if which == "torch" else np.asarray(a, dtype=np.float64)


@FEW
@given(n=counts, sigma_min=st.floats(1e-3, 1.0), ratio=st.floats(1.5, 1e4), rho=st.floats(0.5, 10.0))
def test_time_steps_are_finite_decreasing_of_length_n(n, sigma_min, ratio, rho):
    for s in (edm.karras_sigmas(n, sigma_min, sigma_min * ratio, rho), edm.ve_sigmas(n, sigma_min, sigma_min * ratio),
              edm.vp_sigmas(n), edm.iddpm_sigmas(n)):
        assert s.shape == (n,) and finite(s) and np.all(s > 0) and np.all(np.diff(s) <= 0)
    b = cm.cm_boundaries(n + 1, sigma_min, sigma_min * ratio, rho)
    assert b.shape == (n + 1,) and finite(b) and np.all(np.diff(b) > 0)
    p = cm.ict_level_probabilities(b)
    assert p.shape == (n,) and finite(p) and abs(p.sum() - 1) < 1e-12


@FEW
@given(sigma=st.lists(positive, min_size=1, max_size=6), which=backends, sigma_data=st.floats(0.1, 2.0))
def test_preconditionings_and_weights_are_finite_per_example(sigma, which, sigma_data):
    s = as_backend(sigma, which)
    for name, scheme in edm.SCHEMES.items():
        coefficients = scheme.preconditioning(s, sigma_data) if name == "edm" else scheme.preconditioning(s)
        assert all(tuple(c.shape) == (len(sigma),) and finite(c) for c in coefficients)
        assert finite(scheme.loss_weight(s)) and tuple(scheme.loss_weight(s).shape) == (len(sigma),)
        w = scheme.training_sigma(backend.generator(0, backend="numpy"), len(sigma))
        assert w.shape == (len(sigma),) and finite(w) and np.all(w > 0)
    c = cm.consistency_coefficients(s, sigma_data)
    assert all(tuple(a.shape) == (len(sigma),) and finite(a) for a in c)
    t = as_backend(np.array(sigma) / 60.0, which)
    for v in (edm.vp_sigma(np.asarray(sigma) / 60.0), edm.vp_s(np.asarray(sigma) / 60.0), edm.vp_sigma_inv(t)):
        assert tuple(v.shape) == (len(sigma),) and finite(v)


@FEW
@given(B=st.integers(1, 6), which=backends, scheme=st.sampled_from(sorted(edm.SCHEMES)), seed=st.integers(0, 2 ** 20))
def test_denoiser_loss_and_consistency_losses_are_finite_scalars(B, which, scheme, seed):
    rng = np.random.default_rng(seed)
    x0, noise = as_backend(rng.standard_normal((B, 2)), which), as_backend(rng.standard_normal((B, 2)), which)
    D = edm.precondition(raw_net, scheme)
    sigma = as_backend(rng.uniform(0.01, 50, B), which)
    loss = edm.denoiser_loss(D, x0, sigma, noise, as_backend(np.ones(B), which))
    assert tuple(np.shape(loss)) == () and finite(loss)
    assert tuple(D(x0, sigma).shape) == (B, 2)
    f = cm.consistency_function(raw_net)
    b = as_backend(cm.cm_boundaries(6), which)
    n = rng.integers(0, 5, B)
    n = torch.from_numpy(n) if which == "torch" else n
    for loss in (cm.ct_loss(f, f, x0, n, noise, b), cm.cd_loss(f, f, D, x0, n, noise, b, "pseudo_huber")):
        assert tuple(np.shape(loss)) == () and finite(loss)
    d = cm.distance(x0, noise, "l1")
    assert tuple(d.shape) == (B,) and finite(d)
    out = cm.consistency_sample(f, 80 * x0, [10.0, 1.0], lambda x: x * 0)
    assert tuple(out.shape) == (B, 2) and finite(out)
    assert cm.ict_weight(cm.cm_boundaries(6), np.asarray(backend.to_numpy(n))).shape == (B,)


@FEW
@given(k=st.integers(0, 1000), extra=st.integers(0, 1000), s0=st.integers(1, 20), grow=st.integers(0, 200),
       mu0=st.floats(0.01, 1.0))
def test_consistency_schedules_give_counts_and_decays(k, extra, s0, grow, mu0):
    K = max(k + extra, 1)
    N, mu = cm.ct_schedule(k, K, s0, s0 + grow, mu0)
    assert isinstance(N, int) and s0 <= N <= s0 + grow + 1 and 0 < mu <= 1
    M = cm.ict_schedule(k, K, s0, s0 + grow)
    assert isinstance(M, int) and s0 + 1 <= M <= s0 + grow + 1


@FEW
@given(B=st.integers(1, 8), K=st.integers(1, 10), p=st.floats(0.0, 0.99), w=st.floats(-1.0, 8.0), which=backends)
def test_guidance_valid_calls(B, K, p, w, which):
    rng = np.random.default_rng(B)
    labels = rng.integers(0, K, B)
    labels = torch.from_numpy(labels) if which == "torch" else labels
    out = guidance.drop_labels(labels, p, K, np.random.default_rng(0), num_classes=K)
    assert tuple(out.shape) == (B,) and set(np.unique(backend.to_numpy(out))) <= set(range(K + 1))
    x = as_backend(rng.standard_normal((B, 2)), which)
    assert tuple(guidance.guided(x, 2 * x, w).shape) == (B, 2)
    g = guidance.classifier_free_guidance(lambda x, t, class_labels: x, w, null=K)
    t = torch.zeros(B, dtype=torch.long) if which == "torch" else np.zeros(B, dtype=int)
    out = g(x, t, class_labels=labels)
    assert tuple(out.shape) == (B, 2) and finite(out)


@FEW
@given(n=st.integers(2, 30), m=st.integers(2, 30), d=st.integers(1, 4), which=backends,
       half=st.booleans(), seed=st.integers(0, 100))
def test_point_cloud_metrics_are_finite_floats(n, m, d, which, half, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d)) + 1
    if half:
        x, y = x.astype(np.float16), y.astype(np.float16)
    if which == "torch":
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    for v in (metrics.sliced_wasserstein(x, y, n_projections=8, seed=seed, p=1.5), metrics.mmd2_unbiased(x, y),
              metrics.energy_distance(x, y)):
        assert isinstance(v, float) and math.isfinite(v)


@FEW
@given(n=st.integers(2, 12), D=st.integers(1, 16), seed=st.integers(0, 100), float32=st.booleans())
def test_feature_metrics_accept_round_off_in_real_covariances(n, D, seed, float32):
    f = np.random.default_rng(seed).standard_normal((n, D)) * 10 ** np.random.default_rng(seed).uniform(-3, 3)
    mu, S = metrics.feature_statistics(f)
    assert mu.shape == (D,) and S.shape == (D, D)
    if float32:
        mu, S = mu.astype(np.float32), S.astype(np.float32)
    v = metrics.frechet_distance(mu, S, mu + 1, S)
    assert math.isfinite(v) and v > 0
    assert math.isfinite(metrics.trace_sqrt_product(S, S))
    g = np.random.default_rng(seed + 1).standard_normal((n, D))
    assert math.isfinite(metrics.polynomial_mmd2(f, g, degree=2))
    mean, std = metrics.kid(f, g, subsets=3, subset_size=2)
    assert math.isfinite(mean) and math.isfinite(std)


@FEW
@given(B=st.integers(1, 6), in_dim=st.integers(1, 3), hidden=st.integers(1, 8), depth=st.integers(1, 3),
       half_t=st.integers(1, 4), which=backends)
def test_mlp_and_optimiser_valid_calls(B, in_dim, hidden, depth, half_t, which):
    params = nn_mlp.init_mlp(np.random.default_rng(0), in_dim, hidden, depth, 2 * half_t)
    x, t = np.ones((B, in_dim)), np.arange(B, dtype=np.float64)
    if which == "torch":
        x, t = torch.from_numpy(x), torch.from_numpy(t)
        params = backend.tree_map(torch.from_numpy, params)
    out = nn_mlp.mlp(params, x, t)
    assert tuple(out.shape) == (B, in_dim) and finite(out)
    emb = nn_mlp.sinusoidal_embedding(t, 2 * half_t)
    assert tuple(emb.shape) == (B, 2 * half_t) and finite(emb)
    grads = optim.clip_grad_norm(params, 1.0)
    new, state = optim.adam_update(params, grads, optim.adam_init(params), lr=1e-2, weight_decay=0.1)
    assert state["step"] == 1 and all(finite(p) for p in backend.tree_leaves(new))
    assert all(finite(p) for p in backend.tree_leaves(optim.ema_update(params, new, optim.ema_warmup(0.99, 3))))
    assert math.isfinite(optim.global_norm(new))


@FEW
@given(n=st.integers(1, 50), name=st.sampled_from(sorted(toy2d.DATASETS)), seed=st.integers(0, 2 ** 31),
       sigma=st.floats(0.0, 10.0), alpha=st.floats(0.1, 1.0), which=backends)
def test_toy_data_and_exact_mixture_valid_calls(n, name, seed, sigma, alpha, which):
    x = toy2d.sample_toy(name, n, seed)
    assert x.shape == (n, 2) and finite(x)
    xb = as_backend(x, which)
    assert tuple(GMM.log_prob(xb, alpha, sigma).shape) == (n,) and finite(GMM.log_prob(xb, alpha, sigma))
    for out, shape in ((GMM.score(xb, alpha, sigma), (n, 2)), (GMM.denoise(xb, alpha, sigma), (n, 2)),
                       (GMM.class_posterior(xb, alpha, sigma), (n, 8))):
        assert tuple(out.shape) == shape and finite(out)
    assert toy2d.DATASETS[name](n, seed).shape == (n, 2)


@FEW
@given(seed=st.integers(0, 2 ** 40), dims=st.lists(st.integers(0, 4), max_size=3), which=backends)
def test_generators_valid_calls(seed, dims, which):
    g = backend.generator(seed, backend=which)
    shape = tuple(dims)
    for a in (g.randn(shape), g.rand(shape), g.randint(0, 3, shape)):
        assert tuple(a.shape) == shape and finite(a)
    like = g.randn((2, 3))
    assert tuple(g.randn_like(like).shape) == (2, 3) and tuple(g.rademacher_like(like).shape) == (2, 3)


@FEW
@given(name=st.sampled_from([e for e in range(len(SPOILS))]), data=st.data())
def test_random_bad_values_of_a_random_parameter_are_refused(name, data):
    """Hypothesis picks one spoilt parameter and one of its bad values at a time (the table above
    runs them all; this finds interactions with shrinking when something regresses)."""
    f, valid, param, bad_values = SPOILS[name]
    bad = data.draw(st.sampled_from(bad_values))
    raises_naming(param, f, **{**valid, param: bad})
