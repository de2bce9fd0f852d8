"""Issue 11, section 1, the DDPM / score-SDE side: every public function of schedules, diffusion,
losses, samplers, elbo and sde refuses bad arguments with a ValueError / TypeError that names the
argument, and returns finite values of its documented shape on valid ones.

Part 1 pins each defect named in the issue (each test failed before its fix); part 2 is a
property-based suite (hypothesis) over every public function of these modules."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minidiff import backend, diffusion, elbo, losses, samplers, schedules
from minidiff import sde as S

T = 12
BETAS = schedules.linear_betas(T, 1e-3, 0.3)
AB = schedules.alpha_bars(BETAS)
BAD = (ValueError, TypeError)


def eps_model(x, t, **kw):
    return 0.1 * x


def score_model(x, t, **kw):
    return -x


def D(x, sigma, **kw):
    """The exact denoiser for data N(0, I): x / (1 + sigma^2), so (x - D) / sigma stays bounded."""
    return x / (1 + backend.namespace(x).append_dims(sigma, x.ndim) ** 2)


def zeros_like(x):
    return 0 * x


def raises_naming(name, fn, *args, **kwargs):
    with pytest.raises(BAD) as info:
        fn(*args, **kwargs)
    assert name in str(info.value), f"{name!r} not in {str(info.value)!r}"
    return info.value


# ----------------------------------------------------------------------------------------------
# Part 1: the defects named in the issue.

def _x(B=3, d=2, seed=0):
    return np.random.default_rng(seed).standard_normal((B, d))


@pytest.mark.parametrize("eta", [np.nan, np.inf, -0.5])
def test_ddim_step_refuses_a_non_finite_or_negative_eta(eta):
    x = _x()
    raises_naming("eta", samplers.ddim_step, x, 5, 3, x, AB, eta, x)
    raises_naming("eta", samplers.ddim_sample, eps_model, x, AB, np.array([6, 3, 0]), eta, zeros_like)
    raises_naming("eta", samplers.ddim_sigma, 0.5, 0.7, eta)


@pytest.mark.parametrize("t_prev", [6, 5, 11])
def test_ddim_step_refuses_t_prev_after_t(t_prev):
    x = _x()
    raises_naming("t_prev", samplers.ddim_step, x, 5, t_prev, x, AB, 0.0)


def test_ddim_step_still_takes_any_negative_t_prev_as_the_end_of_the_chain():
    x = _x()
    np.testing.assert_array_equal(samplers.ddim_step(x, 5, -1, x, AB), samplers.ddim_step(x, 5, -7, x, AB))


def _table_calls(t):
    """Every public function of these modules that reads a table at the timesteps t."""
    x, n = _x(), _x(seed=1)
    return {
        "q_sample": lambda: diffusion.q_sample(x, t, AB, n),
        "q_posterior": lambda: diffusion.q_posterior(x, n, t, BETAS),
        "eps_to_x0": lambda: diffusion.eps_to_x0(x, t, n, AB),
        "x0_to_eps": lambda: diffusion.x0_to_eps(x, t, n, AB),
        "eps_to_score": lambda: diffusion.eps_to_score(x, t, AB),
        "score_to_eps": lambda: diffusion.score_to_eps(x, t, AB),
        "v_target": lambda: diffusion.v_target(x, n, t, AB),
        "v_to_eps": lambda: diffusion.v_to_eps(x, t, n, AB),
        "to_eps": lambda: diffusion.to_eps(x, "v", n, t, AB),
        "target_of": lambda: diffusion.target_of("score", x, n, t, AB),
        "ddpm_loss": lambda: losses.ddpm_loss(eps_model, x, t, n, AB),
    }


@pytest.mark.parametrize("t", [np.array([-1, 0, 2]), np.array([0, T, 1]), np.array([0.0, 2.7, 1.0]), -1, T, 2.7,
                               [0, 1, 2], None, True], ids=repr)
@pytest.mark.parametrize("name", sorted(_table_calls(0)))
def test_timesteps_outside_the_table_are_refused(name, t):
    raises_naming("t", _table_calls(t)[name])


@pytest.mark.parametrize("t", [-1, T, 2.7, True, "3", None], ids=repr)
def test_the_steps_refuse_a_timestep_outside_the_table(t):
    x = _x()
    raises_naming("t", samplers.ddpm_step, x, t, x, BETAS, x)
    raises_naming("t", samplers.ddim_step, x, t, -1, x, AB, 0.0)


def test_ddpm_step_needs_noise_before_the_last_step():
    x = _x()
    raises_naming("noise", samplers.ddpm_step, x, 3, x, BETAS, None)
    assert samplers.ddpm_step(x, 0, x, BETAS, None).shape == x.shape


@pytest.mark.parametrize("make", [lambda v: S.VPSDE(0.1, v), lambda v: S.VPSDE(v, 20.0), lambda v: S.SubVPSDE(0.1, v),
                                  lambda v: S.VESDE(0.01, v), lambda v: S.VESDE(v, 50.0),
                                  lambda v: S.vp_sde(_x(), 0.5, 0.1, v)])
@pytest.mark.parametrize("value", [np.inf, np.nan, "3", True, None], ids=repr)
def test_sde_constructors_refuse_non_finite_parameters(make, value):
    with pytest.raises(BAD, match="beta_m|sigma_m"):
        make(value)


@pytest.mark.parametrize("which", ["numpy", "torch"])
def test_eps_to_score_on_float16_is_finite_at_t0(which):
    ab = schedules.alpha_bars(schedules.linear_betas(1000))     # 1 - alpha_bar_0 = 1e-4: 0 in float16
    eps = np.ones((2, 2), dtype=np.float16)
    t = np.zeros(2, dtype=np.int64)
    if which == "torch":
        eps, t = torch.from_numpy(eps), torch.from_numpy(t)
    score = diffusion.eps_to_score(eps, t, ab)
    expected = -1 / math.sqrt(1 - ab[0])                     # float64 reference
    # a float32 table: 1 - alpha_bar_0 carries float32's rounding of alpha_bar_0, relative to 1e-4
    rtol = 4 * np.finfo(np.float32).eps / (1 - ab[0])
    np.testing.assert_allclose(backend.to_numpy(score).astype(np.float64), expected, rtol=rtol)
    x_t = diffusion.q_sample(eps, t, ab, eps)
    assert np.all(np.isfinite(backend.to_numpy(x_t)))


def test_float32_and_float64_tables_are_unchanged():
    for dt in (np.float32, np.float64):
        x = _x().astype(dt)
        out = diffusion.eps_to_score(x, np.array([0, 3, 7]), AB)
        assert out.dtype == dt
        np.testing.assert_array_equal(out, -x / np.sqrt(1 - AB[[0, 3, 7]].astype(dt))[:, None])


def test_ode_sample_rk45_refuses_a_score_of_the_wrong_shape():
    sde = S.VPSDE()
    raises_naming("score_model", S.ode_sample_rk45, lambda x, t: -x[:, :1], _x(), sde)


@pytest.mark.parametrize("bad_model", [lambda x, t: -x[:, :1], lambda x, t: np.nan * x, lambda x, t: [0.0]])
@pytest.mark.parametrize("sde", [S.VPSDE(), S.VESDE()], ids=lambda s: s.name)
def test_dsm_loss_checks_the_model_output(bad_model, sde):
    x = _x()
    raises_naming("score_model", S.dsm_loss, bad_model, sde, x, np.full(3, 0.5), _x(seed=1))


def test_ddpm_loss_and_as_eps_model_check_the_model_output():
    x, t = _x(), np.array([0, 4, 9])
    raises_naming("model", losses.ddpm_loss, lambda x, t: np.nan * x, x, t, x, AB)
    raises_naming("model", losses.ddpm_loss, lambda x, t: x[:, :1], x, t, x, AB, target="v")
    wrapped = diffusion.as_eps_model(lambda x, t: x[:, :1], "x0", AB)   # (B, 1) would broadcast to (B, 2)
    raises_naming("model", wrapped, x, t)


def _samplers(x_T):
    sde = S.VPSDE()
    sig = np.array([2.0, 1.0, 0.5])
    return {
        "ddpm_sample": ("x_T", lambda: samplers.ddpm_sample(eps_model, x_T, BETAS, zeros_like)),
        "ddim_sample": ("x_T", lambda: samplers.ddim_sample(eps_model, x_T, AB, np.array([9, 5, 1]))),
        "ddim_invert": ("x0", lambda: samplers.ddim_invert(eps_model, x_T, AB, np.array([9, 5, 1]))),
        "euler_sample": ("x", lambda: samplers.euler_sample(D, x_T, sig)),
        "heun_sample": ("x", lambda: samplers.heun_sample(D, x_T, sig)),
        "stochastic_sample": ("x", lambda: samplers.stochastic_sample(D, x_T, sig, zeros_like, S_churn=1.0)),
        "pc_sample": ("x_T", lambda: S.pc_sample(score_model, x_T, sde, 25, zeros_like)),
        "ode_sample": ("x_T", lambda: S.ode_sample(score_model, x_T, sde, 3)),
        "ode_sample_rk45": ("x_T", lambda: S.ode_sample_rk45(score_model, x_T, sde)),
        "ode_log_likelihood": ("x0", lambda: S.ode_log_likelihood(sde, score_model, x_T)),
        "ddpm_bound_terms": ("x0", lambda: elbo.ddpm_bound_terms(eps_model, x_T, BETAS, zeros_like)),
    }


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", sorted(_samplers(None)))
def test_a_non_finite_start_is_blamed_on_x_T_not_on_the_model(name, bad):
    x_T = _x()
    x_T[1, 0] = bad
    arg, call = _samplers(x_T)[name]
    err = raises_naming(arg, call)
    assert "model" not in str(err)


def test_shape_mismatches_name_both_arrays():
    x = _x()
    err = raises_naming("noise", diffusion.q_sample, x, np.array([0, 1, 2]), AB, _x(3, 3))
    assert "x0 (3, 2)" in str(err) and "noise (3, 3)" in str(err)
    raises_naming("t", diffusion.q_sample, x, np.array([0, 1]), AB, x)
    raises_naming("x_t", diffusion.q_posterior, x, _x(2, 2), np.array([0, 1, 2]), BETAS)
    raises_naming("eps", samplers.ddim_step, x, 4, 2, _x(3, 1), AB)
    raises_naming("noise", S.perturb, S.VPSDE(), x, 0.5, _x(3, 3))
    raises_naming("score", S.reverse_drift, S.VPSDE(), _x(3, 1), x, 0.5)
    raises_naming("z1", samplers.slerp, x, _x(3, 3), 0.5)


@pytest.mark.parametrize("bad", [None, [[0.0, 1.0]], 3.0, "x"], ids=repr)
def test_a_list_or_none_for_an_array_is_a_type_error_naming_it(bad):
    x = _x()
    for name, call in [("x0", lambda: diffusion.q_sample(bad, np.array([0, 1, 2]), AB, x)),
                       ("noise", lambda: diffusion.q_sample(x, np.array([0, 1, 2]), AB, bad)),
                       ("eps", lambda: diffusion.eps_to_score(bad, 0, AB)),
                       ("x_T", lambda: samplers.ddpm_sample(eps_model, bad, BETAS, zeros_like)),
                       ("x_T", lambda: S.ode_sample(score_model, bad, S.VPSDE(), 2)),
                       ("x", lambda: S.prior_log_prob(S.VPSDE(), bad)),
                       ("alpha_bar", lambda: diffusion.eps_to_score(x, 0, bad if bad is not None else None))]:
        if name == "alpha_bar" and isinstance(bad, list):
            continue                       # a list of numbers is a valid table
        with pytest.raises(TypeError, match=name):
            call()


def test_mixing_numpy_and_torch_is_a_type_error():
    x, xt = _x(), torch.from_numpy(_x())
    t, tt = np.array([0, 1, 2]), torch.tensor([0, 1, 2])
    for call in [lambda: diffusion.q_sample(x, t, AB, xt), lambda: diffusion.q_sample(xt, tt, AB, x),
                 lambda: diffusion.q_sample(xt, t, AB, xt), lambda: diffusion.eps_to_x0(x, t, xt, AB),
                 lambda: samplers.ddim_step(x, 4, 2, xt, AB), lambda: samplers.ddpm_step(xt, 3, x, BETAS, xt),
                 lambda: samplers.slerp(x, xt, 0.3), lambda: S.perturb(S.VPSDE(), x, 0.5, xt),
                 lambda: S.dsm_loss(score_model, S.VPSDE(), xt, np.full(3, 0.5), xt),
                 lambda: elbo.gaussian_kl(x, 1.0, xt, 1.0)]:
        with pytest.raises(TypeError, match="both backends"):
            call()


COUNT_BAD = [True, "3", 2.7, 1e12, 10 ** 12, None]


@pytest.mark.parametrize("value", COUNT_BAD, ids=repr)
def test_integer_counts_refuse_bools_strings_floats_and_huge_ints(value):
    raises_naming("T", schedules.linear_betas, value)
    raises_naming("T", schedules.cosine_betas, value)
    raises_naming("T", schedules.make_betas, "linear", value)
    raises_naming("T", samplers.ddim_timesteps, value, 3)
    raises_naming("n_steps", samplers.ddim_timesteps, 10, value)
    raises_naming("n_steps", S.ode_sample, score_model, _x(), S.VPSDE(), value)
    raises_naming("n_steps", S.pc_sample, score_model, _x(), S.VPSDE(), value, zeros_like)
    raises_naming("n_corrector", S.pc_sample, score_model, _x(), S.VPSDE(), 30, zeros_like, n_corrector=value)
    raises_naming("n_steps", samplers.churn_gamma, 1.0, value, 1.0)
    raises_naming("dim", elbo.bits_per_dim, 1.0, value)


def test_pc_sample_refuses_too_few_steps_for_the_vp_corrector_and_predictor():
    """With n_steps < beta_max the corrector's alpha_i = 1 - beta_i is negative and the
    reverse-diffusion predictor takes sqrt(1 - beta_i): NaN before."""
    x = _x()
    raises_naming("n_steps", S.pc_sample, score_model, x, S.VPSDE(), 5, zeros_like)
    raises_naming("n_steps", S.pc_sample, score_model, x, S.VPSDE(), 5, zeros_like, n_corrector=0)
    raises_naming("dt", S.reverse_diffusion_step, S.VPSDE(), score_model, x, 1.0, -0.2, x)
    em = S.pc_sample(score_model, x, S.VPSDE(), 5, zeros_like, predictor="euler_maruyama", n_corrector=0)
    assert np.all(np.isfinite(em))


def test_slerp_refuses_a_zero_endpoint():
    raises_naming("z0", samplers.slerp, np.zeros((3, 2)), _x(), 0.5)


def test_ddim_sigma_refuses_a_previous_level_noisier_than_the_current():
    raises_naming("alpha_bar_prev", samplers.ddim_sigma, 0.7, 0.5, 1.0)


@pytest.mark.parametrize("var", [0.0, -1.0, np.array([1.0, -1.0]), np.nan])
def test_gaussians_need_positive_variances(var):
    raises_naming("var2", elbo.gaussian_kl, _x(2, 2), 1.0, _x(2, 2), var)
    raises_naming("var", elbo.gaussian_log_density, _x(2, 2), _x(2, 2), var)


# ----------------------------------------------------------------------------------------------
# Part 2: the property-based suite.  SPECS maps every public function to (valid arguments, the
# documented output, its parameters with the bad values each must refuse).

class Draw:
    """Valid argument values: drawn by hypothesis (``draw``) or, without it, fixed ones."""

    def __init__(self, draw=None):
        self.draw = draw

    def int(self, lo, hi):
        return self.draw(st.integers(lo, hi)) if self.draw else lo

    def real(self, lo, hi):
        return self.draw(st.floats(lo, hi, allow_nan=False)) if self.draw else lo

    def pick(self, options):
        return self.draw(st.sampled_from(options)) if self.draw else options[0]

    def batch(self, n=1):
        """n arrays (B, d) of one shape ((3, 2) without hypothesis, so that shapes cannot broadcast)."""
        B, d, seed = (self.int(1, 4), self.int(1, 3), self.int(0, 2 ** 16)) if self.draw else (3, 2, 0)
        rng = np.random.default_rng(seed)
        return [rng.standard_normal((B, d)) for _ in range(n)]

    def steps(self, B):
        return np.array([self.int(0, T - 1) for _ in range(B)], dtype=np.int64)


NOT_ARRAYS = {"betas", "alpha_bar", "timesteps", "sigmas"}    # tables stay NumPy constants


def to_backend(kw, which):
    if which == "numpy":
        return kw
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) and k not in NOT_ARRAYS else v for k, v in kw.items()}


def leaves(out):
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in leaves(o)]
    return [out]


def shape(a):
    return tuple(np.shape(backend.to_numpy(a))) if not isinstance(a, (int, float)) else ()


# bad-value makers: each takes the valid kwargs and the parameter name and returns a bad value
REAL = [np.nan, np.inf, -np.inf, True, "3", None]
COUNT = [True, "3", 2.7, 1e12, 10 ** 12, None]
CHOICE = ["bogus", None]
FUNC = ["not callable", 3]
SDE_BAD = [None, "vp", 3.0]


def as_list(kw, k):
    return backend.to_numpy(kw[k]).tolist()


def wider(kw, k):
    a = backend.to_numpy(kw[k])
    return np.concatenate([a, a[..., :1]], axis=-1)


def scalar(kw, k):
    return np.float64(1.0).reshape(())


def other_backend(kw, k):
    v = kw[k]
    return backend.to_numpy(v) if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))


BATCH = [None, as_list, scalar, 2.5]
BATCH_OF_MANY = BATCH + [wider, other_backend]
TSTEPS = [-1, T, 2.7, True, None, lambda kw, k: [0], lambda kw, k: np.full(7, 1),
          lambda kw, k: np.full(shape(kw[k])[0] if shape(kw[k]) else 1, T),
          lambda kw, k: np.full(shape(kw[k])[0] if shape(kw[k]) else 1, 0.5)]
TABLE = [None, "abc", 3.0, np.array([0.5, 0.0]), np.array([0.5, 1.5]), np.array([0.5, np.nan]), np.full((2, 2), 0.5)]
BAD_MODEL = [lambda x, *a, **k: x[..., :1] * 0 if x.shape[-1] > 1 else x[:1, :0], lambda x, *a, **k: np.nan * x,
             "not callable"]


def out_of(*values):
    return list(values)


def spec(valid, out, **bad):
    return {"valid": valid, "out": out, "bad": bad}


def ddpm_like(g):
    x0, n = g.batch(2)
    return {"x0": x0, "noise": n, "t": g.steps(len(x0)), "alpha_bar": AB}


SPECS = {
    # schedules
    "linear_betas": spec(lambda g: {"T": g.int(1, 50), "beta_1": g.real(1e-5, 1e-3), "beta_T": g.real(1e-3, 0.5)},
                         lambda kw, o: [(kw["T"],)],
                         T=COUNT + [0, -3], beta_1=REAL + [0.0, 1.0, 0.9], beta_T=REAL + [1.0, -0.1]),
    "cosine_betas": spec(lambda g: {"T": g.int(1, 50), "s": g.real(0, 0.1), "max_beta": g.real(0.5, 0.999)},
                         lambda kw, o: [(kw["T"],)], T=COUNT + [0], s=REAL + [-0.1], max_beta=REAL + [0.0, 1.0]),
    "alpha_bars": spec(lambda g: {"betas": BETAS[: g.int(1, T)]}, lambda kw, o: [(len(kw["betas"]),)], betas=TABLE),
    "snr": spec(lambda g: {"alpha_bar": AB[: g.int(1, T)]}, lambda kw, o: [(len(kw["alpha_bar"]),)], alpha_bar=TABLE),
    "make_betas": spec(lambda g: {"kind": g.pick(["linear", "cosine"]), "T": g.int(1, 50)},
                       lambda kw, o: [(kw["T"],)], kind=CHOICE, T=COUNT + [0]),
    # diffusion
    "q_sample": spec(ddpm_like, lambda kw, o: [shape(kw["x0"])],
                     x0=BATCH_OF_MANY, noise=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE),
    "q_posterior": spec(lambda g: dict(zip(("x0", "x_t"), g.batch(2)), betas=BETAS) | {"t": None},
                        lambda kw, o: [shape(kw["x0"]), (shape(kw["x0"])[0] if shape(kw["t"]) else 1, 1)],
                        x0=BATCH_OF_MANY, x_t=BATCH_OF_MANY, t=TSTEPS, betas=TABLE),
    "ddpm_sigma2": spec(lambda g: {"betas": BETAS, "variance": g.pick(["beta", "posterior"])},
                        lambda kw, o: [(T,)], betas=TABLE, variance=CHOICE),
    "eps_to_x0": spec(lambda g: dict(zip(("x_t", "eps"), g.batch(2)), alpha_bar=AB) | {"t": None},
                      lambda kw, o: [shape(kw["x_t"])], x_t=BATCH_OF_MANY, eps=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE),
    "x0_to_eps": spec(lambda g: dict(zip(("x_t", "x0"), g.batch(2)), alpha_bar=AB) | {"t": None},
                      lambda kw, o: [shape(kw["x_t"])], x_t=BATCH_OF_MANY, x0=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE),
    "eps_to_score": spec(lambda g: {"eps": g.batch()[0], "alpha_bar": AB, "t": None},
                         lambda kw, o: [shape(kw["eps"])], eps=BATCH, t=TSTEPS, alpha_bar=TABLE),
    "score_to_eps": spec(lambda g: {"score": g.batch()[0], "alpha_bar": AB, "t": None},
                         lambda kw, o: [shape(kw["score"])], score=BATCH, t=TSTEPS, alpha_bar=TABLE),
    "v_target": spec(lambda g: dict(zip(("x0", "eps"), g.batch(2)), alpha_bar=AB) | {"t": None},
                     lambda kw, o: [shape(kw["x0"])], x0=BATCH_OF_MANY, eps=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE),
    "v_to_eps": spec(lambda g: dict(zip(("x_t", "v"), g.batch(2)), alpha_bar=AB) | {"t": None},
                     lambda kw, o: [shape(kw["x_t"])], x_t=BATCH_OF_MANY, v=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE),
    "to_eps": spec(lambda g: dict(zip(("output", "x_t"), g.batch(2)), alpha_bar=AB, target=g.pick(list(diffusion.TARGETS)))
                   | {"t": None}, lambda kw, o: [shape(kw["x_t"])],
                   output=BATCH_OF_MANY, x_t=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE, target=CHOICE),
    "target_of": spec(lambda g: dict(zip(("x0", "eps"), g.batch(2)), alpha_bar=AB, target=g.pick(list(diffusion.TARGETS)))
                      | {"t": None}, lambda kw, o: [shape(kw["x0"])],
                      x0=BATCH_OF_MANY, eps=BATCH_OF_MANY, t=TSTEPS, alpha_bar=TABLE, target=CHOICE),
    "as_eps_model": spec(lambda g: {"model": eps_model, "target": g.pick(list(diffusion.TARGETS)), "alpha_bar": AB},
                         None, model=FUNC, target=CHOICE, alpha_bar=TABLE),
    # losses
    "ddpm_loss": spec(lambda g: ddpm_like(g) | {"model": eps_model, "target": g.pick(list(diffusion.TARGETS))},
                      lambda kw, o: [()], model=BAD_MODEL, x0=BATCH_OF_MANY, noise=BATCH_OF_MANY, t=TSTEPS,
                      alpha_bar=TABLE, target=CHOICE),
    # samplers: DDPM and DDIM
    "ddpm_step": spec(lambda g: dict(zip(("x_t", "eps", "noise"), g.batch(3)), betas=BETAS, t=g.int(0, T - 1),
                                     variance=g.pick(["beta", "posterior"])),
                      lambda kw, o: [shape(kw["x_t"])], x_t=BATCH_OF_MANY, eps=BATCH_OF_MANY, t=COUNT + [-1, T],
                      betas=TABLE, variance=CHOICE, noise=[wider, other_backend, as_list]),
    "ddpm_sample": spec(lambda g: {"eps_model": eps_model, "x_T": g.batch()[0], "betas": BETAS[: g.int(1, T)],
                                   "randn_like": zeros_like, "variance": g.pick(["beta", "posterior"])},
                        lambda kw, o: [shape(kw["x_T"])], eps_model=BAD_MODEL, x_T=BATCH + [lambda kw, k: np.nan * kw[k]],
                        betas=TABLE, randn_like=FUNC, variance=CHOICE, callback=FUNC),
    "ddim_timesteps": spec(lambda g: {"T": g.int(8, 60), "n_steps": g.int(1, 8),
                                      "spacing": g.pick(list(samplers.SPACINGS))},
                           lambda kw, o: [(kw["n_steps"],)], T=COUNT + [0], n_steps=COUNT + [0, 61],
                           spacing=CHOICE),
    "ddim_sigma": spec(lambda g: {"alpha_bar_t": g.real(0.05, 0.5), "alpha_bar_prev": g.real(0.5, 1.0),
                                  "eta": g.real(0, 2)}, lambda kw, o: [()],
                       alpha_bar_t=REAL + [0.0, 1.0], alpha_bar_prev=REAL + [0.0, 1.5, 0.01], eta=REAL + [-0.1]),
    "ddim_step": spec(lambda g: dict(zip(("x_t", "eps", "noise"), g.batch(3)), alpha_bar=AB, t=g.int(1, T - 1),
                                     eta=g.real(0, 1)) | {"t_prev": None},
                      lambda kw, o: [shape(kw["x_t"])], x_t=BATCH_OF_MANY, eps=BATCH_OF_MANY, t=COUNT + [-1, T],
                      t_prev=COUNT + [T, lambda kw, k: kw["t"]], alpha_bar=TABLE, eta=REAL + [-0.5],
                      noise=[wider, other_backend, as_list]),
    "ddim_sample": spec(lambda g: {"eps_model": eps_model, "x_T": g.batch()[0], "alpha_bar": AB,
                                   "timesteps": samplers.ddim_timesteps(T, g.int(1, 4)), "eta": g.real(0, 1),
                                   "randn_like": zeros_like},
                        lambda kw, o: [shape(kw["x_T"])], eps_model=BAD_MODEL, x_T=BATCH, alpha_bar=TABLE,
                        timesteps=[None, np.array([1, 5]), np.array([T, 1]), np.array([4.0, 1.0])],
                        eta=REAL + [-1.0], randn_like=FUNC, callback=FUNC),
    "ddim_invert": spec(lambda g: {"eps_model": eps_model, "x0": g.batch()[0], "alpha_bar": AB,
                                   "timesteps": samplers.ddim_timesteps(T, g.int(1, 4))},
                        lambda kw, o: [shape(kw["x0"])], eps_model=BAD_MODEL, x0=BATCH, alpha_bar=TABLE,
                        timesteps=[None, np.array([1, 5]), np.array([-1])], callback=FUNC),
    "slerp": spec(lambda g: dict(zip(("z0", "z1"), g.batch(2)), alpha=g.real(0, 1)), lambda kw, o: [shape(kw["z0"])],
                  z0=BATCH_OF_MANY + [lambda kw, k: 0 * kw[k]], z1=BATCH_OF_MANY, alpha=REAL),
    # samplers: EDM
    "to_d": spec(lambda g: dict(zip(("x", "denoised"), g.batch(2)), sigma=g.real(0.01, 80)),
                 lambda kw, o: [shape(kw["x"])], x=BATCH_OF_MANY, denoised=BATCH_OF_MANY, sigma=REAL + [0.0, -1.0]),
    "heun_step": spec(lambda g: {"D": D, "x": g.batch()[0], "sigma": g.real(0.5, 80), "sigma_next": g.real(0, 0.5),
                                 "step": g.int(0, 10)}, lambda kw, o: [shape(kw["x"])],
                      D=BAD_MODEL, x=BATCH, sigma=REAL + [0.0], sigma_next=REAL + [-0.1], step=COUNT + [-1]),
    "euler_sample": spec(lambda g: {"D": D, "x": g.batch()[0], "sigmas": np.array([g.real(2, 80), 1.0, 0.1])},
                         lambda kw, o: [shape(kw["x"])], D=BAD_MODEL, x=BATCH,
                         sigmas=[None, np.array([1.0, 2.0]), np.array([np.nan, 1.0])], callback=FUNC),
    "heun_sample": spec(lambda g: {"D": D, "x": g.batch()[0], "sigmas": np.array([g.real(2, 80), 1.0, 0.1])},
                        lambda kw, o: [shape(kw["x"])], D=BAD_MODEL, x=BATCH,
                        sigmas=[None, np.array([1.0, 2.0]), np.array([np.inf, 1.0])], callback=FUNC),
    "churn_gamma": spec(lambda g: {"sigma": g.real(0, 80), "n_steps": g.int(1, 100), "S_churn": g.real(0, 80),
                                   "S_tmin": g.real(0, 1), "S_tmax": g.pick([math.inf, 50.0])},
                        lambda kw, o: [()], sigma=REAL + [-1.0], n_steps=COUNT + [0], S_churn=REAL + [-1.0],
                        S_tmin=REAL + [-1.0], S_tmax=[np.nan, -np.inf, "3", None, -0.5]),
    "stochastic_sample": spec(lambda g: {"D": D, "x": g.batch()[0], "sigmas": np.array([g.real(2, 80), 1.0, 0.1]),
                                         "randn_like": zeros_like, "S_churn": g.real(0, 40), "S_noise": g.real(0.5, 1.5)},
                              lambda kw, o: [shape(kw["x"])], D=BAD_MODEL, x=BATCH, randn_like=FUNC,
                              S_churn=REAL + [-1.0], S_noise=REAL + [0.0], S_tmin=REAL + [-1.0],
                              S_tmax=[np.nan, "3", None], callback=FUNC),
    # elbo
    "gaussian_kl": spec(lambda g: dict(zip(("mean1", "mean2"), g.batch(2)), var1=g.real(0.1, 2), var2=g.real(0.1, 2)),
                        lambda kw, o: [shape(kw["mean1"])], mean1=[None, "x", np.nan, wider, other_backend],
                        var1=REAL + [0.0, -1.0], mean2=[wider, other_backend, "x"], var2=REAL + [0.0]),
    "gaussian_log_density": spec(lambda g: dict(zip(("x", "mean"), g.batch(2)), var=g.real(0.1, 2)),
                                 lambda kw, o: [shape(kw["x"])], x=[None, wider, other_backend],
                                 mean=[wider, other_backend, "x"], var=REAL + [0.0]),
    "ddpm_bound_terms": spec(lambda g: {"eps_model": eps_model, "x0": g.batch()[0], "betas": BETAS,
                                        "randn_like": zeros_like, "variance": g.pick(["beta", "posterior"])},
                             lambda kw, o: [(shape(kw["x0"])[0],), (shape(kw["x0"])[0], T)],
                             eps_model=BAD_MODEL, x0=BATCH, betas=TABLE, randn_like=FUNC, variance=CHOICE),
    "ddpm_nll_bound": spec(lambda g: {"eps_model": eps_model, "x0": g.batch()[0], "betas": BETAS,
                                      "randn_like": zeros_like}, lambda kw, o: [(shape(kw["x0"])[0],)],
                           eps_model=BAD_MODEL, x0=BATCH, betas=TABLE, randn_like=FUNC, variance=CHOICE),
    "bits_per_dim": spec(lambda g: {"nats": g.batch()[0][:, 0], "dim": g.int(1, 1000)},
                         lambda kw, o: [shape(kw["nats"])], nats=REAL, dim=COUNT + [0]),
}


def sde_of(g):
    return g.pick([S.VPSDE(), S.SubVPSDE(), S.VESDE()])


def gaussian_score(sde):
    """The exact score of p_t for data N(0, I): -x / (alpha^2 + sigma^2); the samplers' ODEs stay
    bounded with it (a plain -x makes the VE probability flow blow up)."""
    def score(x, t, **kw):
        a, s = sde.marginal(t, x)
        return -x / backend.namespace(x).append_dims(a * a + s * s, x.ndim)
    return score


def with_sde(make):
    """A builder whose score_model is the exact score of the SDE it drew."""
    def build(g):
        kw = make(g)
        kw["score_model"] = gaussian_score(kw["sde"])
        return kw
    return build


def sde_step(g):
    x, n = g.batch(2)
    sde = sde_of(g)
    return {"sde": sde, "score_model": gaussian_score(sde), "x": x, "t": g.real(0.1, 1.0), "dt": -g.real(1e-3, 0.05),
            "noise": n}


STEP_BAD = dict(sde=SDE_BAD, score_model=BAD_MODEL, x=BATCH_OF_MANY, t=REAL + [-0.1, 1.5], dt=REAL + [0.0, 0.1],
                noise=BATCH_OF_MANY)
SAMPLER_BAD = dict(score_model=BAD_MODEL, x_T=BATCH + [lambda kw, k: np.inf * kw[k]], sde=SDE_BAD, callback=FUNC,
                   eps=REAL + [0.0, 1.0])

SPECS |= {
    "vp_sde": spec(lambda g: {"x": g.batch()[0], "t": g.real(0, 1), "beta_min": g.real(0.01, 1), "beta_max": g.real(2, 30)},
                   lambda kw, o: [shape(kw["x"]), (shape(kw["x"])[0],)], x=BATCH, t=REAL + [-0.5, 2.0, lambda kw, k: [0.5]],
                   beta_min=REAL + [0.0, 50.0], beta_max=REAL + [0.0]),
    "VPSDE": spec(lambda g: {"beta_min": g.real(0.01, 1), "beta_max": g.real(2, 30)}, None,
                  beta_min=REAL + [0.0, 50.0], beta_max=REAL + [0.0]),
    "SubVPSDE": spec(lambda g: {"beta_min": g.real(0.01, 1), "beta_max": g.real(2, 30)}, None,
                     beta_min=REAL + [0.0, 50.0], beta_max=REAL + [0.0]),
    "VESDE": spec(lambda g: {"sigma_min": g.real(0.001, 0.5), "sigma_max": g.real(1, 100)}, None,
                  sigma_min=REAL + [0.0, 500.0], sigma_max=REAL + [0.0]),
    "make_sde": spec(lambda g: {"name": g.pick(["vp", "subvp", "ve"])}, None, name=CHOICE),
    "prior_sample": spec(lambda g: {"sde": sde_of(g), "shape": (g.int(1, 4), g.int(1, 3)), "rng": backend.generator(0)},
                         lambda kw, o: [kw["shape"]], sde=SDE_BAD, shape=[None, [2, 2], (0, 2), (2.5,), (True,)],
                         rng=[None, 3]),
    "prior_log_prob": spec(lambda g: {"sde": sde_of(g), "x": g.batch()[0]}, lambda kw, o: [(shape(kw["x"])[0],)],
                           sde=SDE_BAD, x=BATCH),
    "perturb": spec(lambda g: dict(zip(("x0", "noise"), g.batch(2)), sde=sde_of(g), t=g.real(0, 1)),
                    lambda kw, o: [shape(kw["x0"])], sde=SDE_BAD, x0=BATCH_OF_MANY, noise=BATCH_OF_MANY,
                    t=REAL + [-0.1, 1.1, lambda kw, k: np.full(shape(kw["x0"])[0], np.nan), lambda kw, k: np.ones(9)]),
    "dsm_loss": spec(lambda g: dict(zip(("x0", "noise"), g.batch(2)), sde=sde_of(g), score_model=score_model,
                                    t=g.real(0.01, 1)), lambda kw, o: [()],
                     score_model=BAD_MODEL, sde=SDE_BAD, x0=BATCH_OF_MANY, noise=BATCH_OF_MANY,
                     t=REAL + [0.0, 1.5, lambda kw, k: np.zeros(shape(kw["x0"])[0])]),
    "reverse_drift": spec(lambda g: dict(zip(("score", "x"), g.batch(2)), sde=sde_of(g), t=g.real(0, 1)),
                          lambda kw, o: [shape(kw["x"])], sde=SDE_BAD, score=BATCH_OF_MANY, x=BATCH_OF_MANY,
                          t=REAL + [-0.1, 1.1]),
    "probability_flow_drift": spec(lambda g: dict(zip(("score", "x"), g.batch(2)), sde=sde_of(g), t=g.real(0, 1)),
                                   lambda kw, o: [shape(kw["x"])], sde=SDE_BAD, score=BATCH_OF_MANY, x=BATCH_OF_MANY,
                                   t=REAL + [-0.1, 1.1]),
    "euler_maruyama_step": spec(sde_step, lambda kw, o: [shape(kw["x"])], **STEP_BAD),
    "reverse_diffusion_step": spec(sde_step, lambda kw, o: [shape(kw["x"])], **STEP_BAD),
    "langevin_step": spec(lambda g: dict(zip(("x", "noise"), g.batch(2)), score_model=score_model, t=g.real(0, 1),
                                         snr=g.real(0.01, 0.5), alpha=g.real(0.1, 1)),
                          lambda kw, o: [shape(kw["x"])], score_model=BAD_MODEL, x=BATCH_OF_MANY, noise=BATCH_OF_MANY,
                          t=REAL + [1.5], snr=REAL + [0.0], alpha=REAL + [0.0, -1.0]),
    "pc_sample": spec(with_sde(lambda g: {"x_T": g.batch()[0], "sde": sde_of(g), "n_steps": g.int(25, 30),
                                          "randn_like": zeros_like,
                                          "predictor": g.pick(["reverse_diffusion", "euler_maruyama", "none"]),
                                          "n_corrector": g.int(0, 2), "snr": g.real(0.01, 0.3)}),
                      lambda kw, o: [shape(kw["x_T"])], n_steps=COUNT + [0], randn_like=FUNC, predictor=CHOICE,
                      n_corrector=COUNT + [-1], denoise=[None, 1, "yes"], **SAMPLER_BAD),
    "ode_sample": spec(with_sde(lambda g: {"x_T": g.batch()[0], "sde": sde_of(g), "n_steps": g.int(1, 5),
                                           "method": g.pick(["euler", "heun", "rk4"])}),
                       lambda kw, o: [shape(kw["x_T"])], n_steps=COUNT + [0], method=CHOICE, **SAMPLER_BAD),
    "ode_sample_rk45": spec(with_sde(lambda g: {"x_T": g.batch()[0], "sde": sde_of(g), "rtol": 1e-3, "atol": 1e-3}),
                            lambda kw, o: [shape(kw["x_T"]), ()], rtol=REAL + [0.0], atol=REAL + [-1.0], **SAMPLER_BAD),
    "divergence_exact": spec(lambda g: {"fun": lambda y: -y, "x": g.batch()[0]}, lambda kw, o: [(shape(kw["x"])[0],)],
                             fun=FUNC, x=BATCH),
    "divergence_hutchinson": spec(lambda g: dict(zip(("x", "probe"), g.batch(2)), fun=lambda y: -y),
                                  lambda kw, o: [(shape(kw["x"])[0],)], fun=FUNC, x=BATCH_OF_MANY, probe=BATCH_OF_MANY),
    "ode_log_likelihood": spec(with_sde(lambda g: {"sde": sde_of(g), "x0": g.batch()[0], "rtol": 1e-3, "atol": 1e-3}),
                               lambda kw, o: [(shape(kw["x0"])[0],), ()], sde=SDE_BAD, score_model=BAD_MODEL,
                               x0=BATCH, divergence=CHOICE, probe=CHOICE, rtol=REAL + [0.0], atol=REAL,
                               eps=REAL + [0.0, 1.0]),
}

MODULES = (schedules, diffusion, losses, samplers, elbo, S)
SLOW = {"ode_sample_rk45", "ode_log_likelihood", "ddpm_bound_terms", "ddpm_nll_bound", "divergence_exact"}


def function_named(name):
    return next(getattr(m, name) for m in MODULES if hasattr(m, name))


def valid_kwargs(name, g, which="numpy"):
    kw = SPECS[name]["valid"](g)
    if kw.get("t", 0) is None:                         # t drawn for the batch
        B = next(v for v in kw.values() if isinstance(v, np.ndarray) and v.ndim == 2).shape[0]
        kw["t"] = g.steps(B) if g.pick([True, False]) else g.int(0, T - 1)
    if kw.get("t_prev", 0) is None:
        kw["t_prev"] = g.int(-1, kw["t"] - 1)
    return to_backend(kw, which)


def test_every_public_function_of_these_modules_has_a_spec():
    public = {n for m in MODULES for n, v in vars(m).items()
              if callable(v) and not n.startswith("_") and getattr(v, "__module__", "") == m.__name__}
    assert public == set(SPECS), (sorted(public - set(SPECS)), sorted(set(SPECS) - public))


def _check_valid_output(name, kw, out):
    if SPECS[name]["out"] is None:                      # a constructor or a wrapper: call what it made
        if name == "as_eps_model":
            x = np.ones((2, 2))
            out = out(x, np.array([0, T - 1]))
            assert shape(out) == (2, 2)
        else:
            x = np.ones((2, 2))
            sde = out if not isinstance(out, str) else None
            out = [sde.marginal(np.array([0.0, 1.0]), x), sde.sde(x, 0.5)]
    for a, want in zip(leaves(out), SPECS[name]["out"](kw, out) if SPECS[name]["out"] else [None] * 9):
        if want is not None:
            assert shape(a) == tuple(want), (name, shape(a), want)
    for a in leaves(out):
        assert np.all(np.isfinite(backend.to_numpy(a).astype(np.float64))), name


@pytest.mark.parametrize("which", ["numpy", "torch"])
@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_arguments_give_finite_values_of_the_documented_shape(name, which, data):
    if which == "torch" and name in SLOW:
        return                                           # numpy only: scipy / per-dimension VJPs
    kw = valid_kwargs(name, Draw(data.draw), which)
    out = function_named(name)(**kw)
    _check_valid_output(name, kw, out)


def _bad_cases():
    for name in sorted(SPECS):
        for param, values in SPECS[name]["bad"].items():
            yield pytest.param(name, param, values, id=f"{name}-{param}")


def _resolve(value, kw, param):
    if callable(value) and getattr(value, "__name__", "") in ("<lambda>", "as_list", "wider", "scalar", "other_backend") \
            and value not in BAD_MODEL:
        return value(kw, param)
    return value


@pytest.mark.parametrize("name, param, values", list(_bad_cases()))
def test_each_bad_argument_is_refused_with_its_name(name, param, values):
    fn = function_named(name)
    for value in values:
        kw = valid_kwargs(name, Draw())
        kw[param] = _resolve(value, kw, param)
        with pytest.raises(BAD) as info:
            fn(**kw)
        msg = str(info.value)
        expected = "model" if param in ("eps_model", "score_model", "D") and callable(value) else param
        if param == "D" and callable(value):
            expected = "denoiser"
        assert expected in msg, (name, param, value, msg)


NUMERIC = [(n, p) for n in sorted(SPECS) for p, vals in SPECS[n]["bad"].items() if vals[:len(REAL)] == REAL]


@pytest.mark.parametrize("name, param", NUMERIC, ids=[f"{n}-{p}" for n, p in NUMERIC])
@settings(max_examples=8, deadline=None)
@given(value=st.one_of(st.sampled_from([np.nan, np.inf, -np.inf]), st.floats(-1e300, -1e-300),
                       st.floats(1e3, 1e8), st.booleans(), st.text(max_size=3), st.none()))
def test_random_bad_numbers_are_refused_with_their_name(name, param, value):
    """Negative, large, non-finite, bool, string or None values of a real parameter: each is
    refused naming the parameter, or it is valid (a negative alpha for slerp, a large sigma) and
    the output is finite."""
    kw = valid_kwargs(name, Draw())
    kw[param] = value
    try:
        out = function_named(name)(**kw)
    except BAD as e:
        assert param in str(e), (name, param, value, str(e))
    else:                                   # accepted: then it is a valid value and the output is finite
        assert isinstance(value, float) and math.isfinite(value), (name, param, value)
        _check_valid_output(name, kw, out)


COUNTS = [(n, p) for n in sorted(SPECS) for p, vals in SPECS[n]["bad"].items()
          if vals[:len(COUNT)] == COUNT and p not in ("t", "t_prev")]


@pytest.mark.parametrize("name, param", COUNTS, ids=[f"{n}-{p}" for n, p in COUNTS])
@settings(max_examples=8, deadline=None)
@given(value=st.one_of(st.integers(2 ** 31, 10 ** 15), st.integers(-10 ** 6, -1), st.floats(0.5, 1e13),
                       st.booleans(), st.text(max_size=3)))
def test_random_bad_counts_are_refused_with_their_name(name, param, value):
    kw = valid_kwargs(name, Draw())
    kw[param] = value
    with pytest.raises(BAD) as info:
        function_named(name)(**kw)
    assert param in str(info.value)
