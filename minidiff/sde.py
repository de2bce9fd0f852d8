"""Score-based generative modelling with SDEs (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations"; equation numbers refer to that paper).

Forward SDE (eq. 5):     dx = f(x, t) dt + g(t) dw,                t in [0, 1]
Reverse SDE (eq. 6):     dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar
Probability flow (eq. 13): dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)

A score model is a callable ``score(x, t)`` with t of shape (B,) in [eps, 1].  Everything here
works on arrays of either backend.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks
from ._progress import progress_bar
from .backend import namespace


def _t_like(t, x):
    """t (scalar or (B,)) as an array of x's backend and dtype, shaped (B,)."""
    xp = namespace(x)
    return xp.asarray(t, like=x) * xp.ones((x.shape[0],), like=x)


def _check_betas(beta_min, beta_max):
    """The VP (and sub-VP) SDE's beta(t) range: 0 < beta_min < beta_max, both finite."""
    beta_min = _checks.real("beta_min", beta_min, 0, lo_open=True)
    beta_max = _checks.real("beta_max", beta_max, 0, lo_open=True)
    if not beta_min < beta_max:
        raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
    return beta_min, beta_max


def vp_sde(x, t, beta_min: float = 0.1, beta_max: float = 20.0):
    """The VP SDE's coefficients (eq. 11): drift f(x, t) = -1/2 beta(t) x and diffusion
    g(t) = sqrt(beta(t)), with beta(t) = beta_min + t (beta_max - beta_min).
    x: (B, ...), t: scalar or (B,) -> (f (B, ...), g (B,))."""
    _checks.times("t", t, _checks.batch("x", x))
    _check_betas(beta_min, beta_max)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: Song et al. eq. 11: beta = beta_min + t (beta_max - beta_min) as a (B,) array
    # hint: (_t_like(t, x)); f = -0.5 beta x (broadcast with xp.append_dims), g = sqrt(beta)
    beta = beta_min + _t_like(t, x) * (beta_max - beta_min)
    return -0.5 * xp.append_dims(beta, x.ndim) * x, xp.sqrt(beta)
    # END SOLUTION


class VPSDE:
    """Variance preserving (eq. 11): dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,
    beta(t) = beta_min + t (beta_max - beta_min); the continuous limit of DDPM."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        _check_betas(beta_min, beta_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def sde(self, x, t):
        """Drift f(x, t) (B, ...) and diffusion g(t) (B,)."""
        return vp_sde(x, t, self.beta_min, self.beta_max)

    def log_mean_coeff(self, t):
        """log alpha(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min  (eq. 29)."""
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal(self, t, like):
        """alpha(t), sigma(t) of p_0t(x_t | x_0) = N(alpha x_0, sigma^2 I); (B,) each."""
        xp = namespace(like)
        log_a = self.log_mean_coeff(_t_like(t, like))
        return xp.exp(log_a), xp.sqrt(1 - xp.exp(2 * log_a))

    def prior_std(self):
        return 1.0


class SubVPSDE(VPSDE):
    """sub-VP (eq. 12): the VP drift with g(t)^2 = beta(t) (1 - exp(-2 int_0^t beta(s) ds)),
    whose variance is bounded by the VP one: sigma(t) = 1 - alpha(t)^2."""

    name = "subvp"

    def sde(self, x, t):
        xp = namespace(x)
        t = _t_like(t, x)
        beta = self.beta(t)
        discount = 1 - xp.exp(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t ** 2)
        return -0.5 * xp.append_dims(beta, x.ndim) * x, xp.sqrt(beta * discount)

    def marginal(self, t, like):
        xp = namespace(like)
        log_a = self.log_mean_coeff(_t_like(t, like))
        return xp.exp(log_a), 1 - xp.exp(2 * log_a)


class VESDE:
    """Variance exploding (eq. 9): dx = sqrt(d sigma^2(t)/dt) dw with
    sigma(t) = sigma_min (sigma_max / sigma_min)^t; the continuous limit of SMLD / NCSN."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        sigma_min = _checks.real("sigma_min", sigma_min, 0, lo_open=True)
        sigma_max = _checks.real("sigma_max", sigma_max, 0, lo_open=True)
        if not sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        xp = namespace(x)
        sigma = self.sigma(_t_like(t, x))
        return 0 * x, sigma * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal(self, t, like):
        xp = namespace(like)
        t = _t_like(t, like)
        return xp.ones_like(t), self.sigma(t)

    def prior_std(self):
        return self.sigma_max


SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def make_sde(name: str, **kwargs):
    """The SDE called ``name`` ('vp', 'subvp' or 've') with its constructor's keyword arguments."""
    _checks.choice("name (the sde)", name, tuple(SDES))
    return SDES[name](**kwargs)


def _check_sde(sde, name: str = "sde"):
    if not isinstance(sde, (VPSDE, SubVPSDE, VESDE)):
        raise TypeError(f"{name} must be a VPSDE, SubVPSDE or VESDE, got {type(sde).__name__}")
    return sde


def prior_sample(sde, shape, rng):
    """x_T ~ p_T = N(0, prior_std^2 I)."""
    _check_sde(sde)
    if not isinstance(shape, tuple) or not shape:
        raise TypeError(f"shape must be a non-empty tuple of sizes, got {shape!r}")
    for n in shape:
        _checks.count("shape", n, 1)
    if not callable(getattr(rng, "randn", None)):
        raise TypeError(f"rng must be a minidiff generator (with randn), got {type(rng).__name__}")
    return sde.prior_std() * rng.randn(shape)


def prior_log_prob(sde, x):
    """log N(x; 0, prior_std^2 I) per example: (B, ...) -> (B,)."""
    _check_sde(sde)
    _checks.batch("x", x)
    xp = namespace(x)
    s2 = sde.prior_std() ** 2
    d = int(np.prod(x.shape[1:]))
    return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * xp.sum(xp.reshape(x * x, (x.shape[0], -1)), axis=1) / s2


def perturb(sde, x0, t, noise):
    """Sample p_0t(x_t | x_0): x_t = alpha(t) x_0 + sigma(t) z  (eq. 29 for VP, eq. 31 for VE)."""
    _check_sde(sde)
    _checks.batches(x0=x0, noise=noise)
    _checks.times("t", t, x0, x_name="x0")
    xp = namespace(x0)
    alpha, sigma = sde.marginal(t, x0)
    return xp.append_dims(alpha, x0.ndim) * x0 + xp.append_dims(sigma, x0.ndim) * noise


def dsm_loss(score_model, sde, x0, t, noise, **model_kwargs):
    """Denoising score matching (eq. 7) with lambda(t) = sigma(t)^2, the weighting of Song et al.:
    mean over the batch of || sigma(t) s_theta(x_t, t) + z ||^2, summed over the data dimensions.
    x0, noise: (B, ...); t: (B,) in (0, 1]."""
    _check_sde(sde)
    _checks.batches(x0=x0, noise=noise)
    _checks.times("t", t, x0, lo_open=True, x_name="x0")
    score_model = _checks.checked("score_model", score_model)  # its output: x_t's shape, finite
    xp = namespace(x0, noise)
    # BEGIN SOLUTION
    # hint: eq. 7 with lambda = sigma^2: sigma(t) s(x_t, t) + z, squared, summed over data dims,
    # hint: averaged over the batch; x_t = perturb(sde, x0, t, noise), sigma from sde.marginal
    _, sigma = sde.marginal(t, x0)
    x_t = perturb(sde, x0, t, noise)
    residual = xp.append_dims(sigma, x0.ndim) * score_model(x_t, t, **model_kwargs) + noise
    return xp.mean(xp.sum(xp.reshape(residual * residual, (x0.shape[0], -1)), axis=1))
    # END SOLUTION


def _check_drift(sde, score, x, t):
    """A drift's boundary: score and x (B, ...) of one backend and shape, t in [0, 1]."""
    _check_sde(sde)
    _checks.batches(x=x, score=score)
    _checks.times("t", t, x)


def reverse_drift(sde, score, x, t):
    """The reverse-time SDE's drift (eq. 6): f(x, t) - g(t)^2 score(x, t)."""
    _check_drift(sde, score, x, t)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: eq. 6: f - g^2 score, with f, g = sde.sde(x, t)
    f, g = sde.sde(x, t)
    return f - xp.append_dims(g * g, x.ndim) * score
    # END SOLUTION


def probability_flow_drift(sde, score, x, t):
    """The probability-flow ODE's velocity (eq. 13): f(x, t) - 1/2 g(t)^2 score(x, t)."""
    _check_drift(sde, score, x, t)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: eq. 13: f - g^2 score / 2
    f, g = sde.sde(x, t)
    return f - 0.5 * xp.append_dims(g * g, x.ndim) * score
    # END SOLUTION


def _check_step(sde, score_model, x, t, dt, noise):
    """A reverse step's boundary: x and noise (B, ...) of one backend and shape, t in [0, 1],
    dt in [-1, 0).  Returns score_model with its output checked (shape of x, finite)."""
    _check_sde(sde)
    _checks.batches(x=x, noise=noise)
    _checks.real("t", t, 0, 1)
    _checks.real("dt", dt, -1, 0, hi_open=True)
    return _checks.checked("score_model", score_model)


def euler_maruyama_step(sde, score_model, x, t: float, dt: float, noise):
    """One Euler-Maruyama step of the reverse SDE from t to t + dt (dt < 0):
    x + [f - g^2 s] dt + g sqrt(|dt|) z."""
    score_model = _check_step(sde, score_model, x, t, dt, noise)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: x + reverse_drift * dt + g sqrt(-dt) z, with dt < 0 and t as a (B,) array
    t_b = _t_like(t, x)
    _, g = sde.sde(x, t_b)
    drift = reverse_drift(sde, score_model(x, t_b), x, t_b)
    return x + drift * dt + xp.append_dims(g, x.ndim) * math.sqrt(-dt) * noise
    # END SOLUTION


def reverse_diffusion_step(sde, score_model, x, t: float, dt: float, noise):
    """The reverse-diffusion predictor (Song et al., eq. 46 and Appendix E): discretise the
    forward SDE as x_{i+1} = x_i + f_i + G_i z and step back with
    x_i = x_{i+1} - f_{i+1} + G_{i+1}^2 s + G_{i+1} z.  dt < 0.  The discretisations are the
    paper's: VP (and sub-VP) as DDPM, f_i = (sqrt(1 - beta_i) - 1) x and G_i = sqrt(beta_i) with
    beta_i = beta(t) |dt|; VE as SMLD, f_i = 0 and G_i = sqrt(sigma(t)^2 - sigma(t + dt)^2)."""
    score_model = _check_step(sde, score_model, x, t, dt, noise)
    if not isinstance(sde, VESDE) and not float(sde.beta(t)) * -dt < 1:
        raise ValueError(f"dt is too large a step for the VP discretisation: beta(t) |dt| = "
                         f"{float(sde.beta(t)) * -dt:.4g} must be < 1 (beta_i = 1 - alpha_i)")
    xp = namespace(x)
    t_b = _t_like(t, x)
    if isinstance(sde, VESDE):
        f_i = 0 * x
        G = xp.sqrt(sde.sigma(t_b) ** 2 - sde.sigma(_t_like(t + dt, x)) ** 2)
    else:
        beta_i = sde.beta(t_b) * (-dt)
        f_i = xp.append_dims(xp.sqrt(1 - beta_i) - 1, x.ndim) * x
        G = xp.sqrt(beta_i)
        if isinstance(sde, SubVPSDE):  # sub-VP: the same drift, its own (smaller) diffusion
            G = sde.sde(x, t_b)[1] * math.sqrt(-dt)
    G = xp.append_dims(G, x.ndim)
    return x - f_i + G * G * score_model(x, t_b) + G * noise


def langevin_step(score_model, x, t: float, snr: float, noise, alpha: float = 1.0):
    """The Langevin corrector (Song et al., Algorithm 4 for VE, 5 for VP): step size
    eps = 2 alpha (snr ||z|| / ||s||)^2 with norms averaged over the batch, then
    x + eps s + sqrt(2 eps) z."""
    _checks.batches(x=x, noise=noise)
    _checks.real("t", t, 0, 1)
    _checks.real("snr", snr, 0, lo_open=True)
    _checks.real("alpha", alpha, 0, lo_open=True)
    score_model = _checks.checked("score_model", score_model)  # its output: x's shape, finite
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: Algorithm 4: eps = 2 alpha (snr * mean ||z|| / mean ||s||)^2 (norms per example, then
    # hint: averaged), x + eps s + sqrt(2 eps) z
    s = score_model(x, _t_like(t, x))
    B = x.shape[0]
    grad_norm = xp.mean(xp.sqrt(xp.sum(xp.reshape(s * s, (B, -1)), axis=1)))
    noise_norm = xp.mean(xp.sqrt(xp.sum(xp.reshape(noise * noise, (B, -1)), axis=1)))
    eps = 2 * alpha * (snr * noise_norm / grad_norm) ** 2
    return x + eps * s + xp.sqrt(2 * eps) * noise
    # END SOLUTION


def _check_steps(n_steps, eps):
    n_steps = _checks.steps("n_steps", n_steps)
    _checks.real("eps", eps, 0, 1, lo_open=True, hi_open=True)
    return n_steps


def _checked(score_model, step, model_kwargs):
    """score(x, t) = score_model(x, t, **model_kwargs) with its output checked (shape, finite
    values) at step ``step[0]``."""
    def score(x, t):
        return _checks.model_output(score_model, x, t, step[0], **model_kwargs)

    score._minidiff_checked = True  # the steps it is handed to need not check it again
    return score


# The SDE samplers have every sampler's head: (model, x, schedule, ..., randn_like, callback,
# progress, **model_kwargs), the schedule being the SDE.

def _check_head(score_model, sde, name: str, x_T=None, randn_like=None, callback=None):
    """A sampler's head (model, x, schedule, ..., randn_like, callback): a callable score model, an
    SDE, a finite batch x_T (so that a NaN start is blamed on x_T, not on the model)."""
    if isinstance(score_model, (VPSDE, SubVPSDE, VESDE)) or not isinstance(sde, (VPSDE, SubVPSDE, VESDE)):
        raise TypeError(f"{name} takes (score_model, x_T, sde, ...) like every sampler (model, x, schedule); "
                        f"got a {type(score_model).__name__} first and a {type(sde).__name__} third")
    _checks.function("score_model", score_model)
    _checks.finite_input("x_T", _checks.batch("x_T", x_T))
    for f_name, f in (("randn_like", randn_like), ("callback", callback)):
        if f is not None:
            _checks.function(f_name, f)


def pc_sample(score_model, x_T, sde, n_steps: int, randn_like, predictor: str = "reverse_diffusion",
              n_corrector: int = 1, snr: float = 0.16, eps: float = 1e-3, denoise: bool = True, callback=None,
              progress=False, **model_kwargs):
    """Predictor-corrector sampling (Song et al., Algorithm 1): ``n_steps`` uniform steps of the
    predictor ('reverse_diffusion', 'euler_maruyama' or 'none') from t = 1 to ``eps``, each
    followed by ``n_corrector`` Langevin steps.  ``denoise`` ends with the mean of the last step
    (no noise).  NFE = n_steps (1 + n_corrector).  ``model_kwargs`` go to every score call."""
    _check_head(score_model, sde, "pc_sample", x_T, randn_like, callback)
    _checks.function("randn_like", randn_like)
    n_steps = _check_steps(n_steps, eps)
    _checks.choice("predictor", predictor, ("reverse_diffusion", "euler_maruyama", "none"))
    n_corrector = _checks.steps("n_corrector", n_corrector, minimum=0)
    if n_corrector:
        _checks.real("snr", snr, 0, lo_open=True)
    uses_beta_i = n_corrector > 0 or predictor == "reverse_diffusion"
    if isinstance(sde, VPSDE) and uses_beta_i and not sde.beta_max * (1 - eps) / n_steps < 1:
        raise ValueError(f"n_steps must be > beta_max (1 - eps) = {sde.beta_max * (1 - eps):.4g} for the VP "
                         f"corrector and reverse-diffusion predictor, whose beta_i = beta(t) / n_steps must be < 1 "
                         f"(Algorithm 5: alpha_i = 1 - beta_i > 0); got {n_steps}")
    _checks.flag("denoise", denoise)
    step = [0]
    model = _checked(score_model, step, model_kwargs)
    ts = np.linspace(1.0, eps, n_steps)
    dt = -(1.0 - eps) / n_steps
    x = x_T
    for i, t in progress_bar(enumerate(ts), progress, "pc sampling", total=n_steps):
        step[0] = i
        for _ in range(n_corrector):
            alpha = 1.0
            if isinstance(sde, VPSDE):  # Algorithm 5 uses alpha_i = 1 - beta_i of the discretisation
                alpha = 1 - float(sde.beta(t)) * (1 - eps) / n_steps
            x = langevin_step(model, x, float(t), snr, randn_like(x), alpha)
        last = i == n_steps - 1 and denoise
        noise = 0 * x if last else randn_like(x)
        if predictor == "reverse_diffusion":
            x = reverse_diffusion_step(sde, model, x, float(t), dt, noise)
        elif predictor == "euler_maruyama":
            x = euler_maruyama_step(sde, model, x, float(t), dt, noise)
        if callback is not None:
            callback({"x": x, "i": i, "t": float(t)})
    return x


def ode_sample(score_model, x_T, sde, n_steps: int, method: str = "heun", eps: float = 1e-3, randn_like=None,
               callback=None, progress=False, **model_kwargs):
    """Integrate the probability-flow ODE (eq. 13) from t = 1 to ``eps`` with ``n_steps``
    fixed steps of Euler (NFE = n_steps), Heun (2 n_steps) or RK4 (4 n_steps).  Deterministic:
    ``randn_like`` is not used."""
    _check_head(score_model, sde, "ode_sample", x_T, randn_like, callback)
    n_steps = _check_steps(n_steps, eps)
    _checks.choice("method", method, ("euler", "heun", "rk4"))
    step = [0]
    model = _checked(score_model, step, model_kwargs)

    def v(x, t):
        t_b = _t_like(t, x)
        return probability_flow_drift(sde, model(x, t_b), x, t_b)

    ts = np.linspace(1.0, eps, n_steps + 1)
    x = x_T
    for i in progress_bar(range(n_steps), progress, "ode sampling"):
        step[0] = i
        t, h = float(ts[i]), float(ts[i + 1] - ts[i])
        k1 = v(x, t)
        if method == "euler":
            x = x + h * k1
        elif method == "heun":
            x = x + 0.5 * h * (k1 + v(x + h * k1, t + h))
        else:
            k2 = v(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = v(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = v(x + h * k3, t + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if callback is not None:
            callback({"x": x, "i": i, "t": float(ts[i + 1])})
    return x


def _scipy_solve_ivp():
    try:
        from scipy.integrate import solve_ivp
    except ImportError as e:  # pragma: no cover - scipy is in the test/dev extras
        raise ImportError("the adaptive RK45 solver needs scipy: pip install scipy") from e
    return solve_ivp


def _check_tolerances(rtol, atol, eps):
    _checks.real("rtol", rtol, 0, lo_open=True)
    _checks.real("atol", atol, 0, lo_open=True)
    _checks.real("eps", eps, 0, 1, lo_open=True, hi_open=True)


def ode_sample_rk45(score_model, x_T, sde, rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-3,
                    randn_like=None, callback=None, progress=False, **model_kwargs):
    """The probability-flow ODE with scipy's adaptive RK45 (as in Song et al.'s code), from
    t = 1 to ``eps``.  Returns (x_0, NFE).  The state is integrated in float64 NumPy and handed
    to the model in x_T's backend and dtype.  The solver picks its own steps, so ``callback``
    gets every evaluation point ({'x', 'i' = the evaluation's number, 't'}) and the progress bar
    counts evaluations.  Deterministic: ``randn_like`` is not used."""
    _check_head(score_model, sde, "ode_sample_rk45", x_T, randn_like, callback)
    _check_tolerances(rtol, atol, eps)
    solve_ivp = _scipy_solve_ivp()
    xp = namespace(x_T)
    shape = tuple(x_T.shape)
    nfe = [0]
    bar = progress_bar(None, progress, "rk45 evaluations") if progress else None

    def rhs(t, y):
        x = xp.asarray(y.reshape(shape), like=x_T)
        t_b = _t_like(float(t), x)
        score = _checks.model_call("score_model", score_model, x, t_b, **model_kwargs)  # (B, ...) like x
        out = xp.to_numpy(probability_flow_drift(sde, score, x, t_b))
        if not np.all(np.isfinite(out)):
            raise ValueError(f"score model returned non-finite values (NaN or inf) at t={t:.4g}")
        if callback is not None:
            callback({"x": x, "i": nfe[0], "t": float(t)})
        nfe[0] += 1
        if bar is not None:
            bar.update(1)
        return out.reshape(-1).astype(np.float64)

    try:
        sol = solve_ivp(rhs, (1.0, eps), xp.to_numpy(x_T).reshape(-1).astype(np.float64), rtol=rtol, atol=atol,
                        method="RK45")
    finally:
        if bar is not None:
            bar.close()
    return xp.asarray(sol.y[:, -1].reshape(shape), like=x_T), nfe[0]


# ----------------------------------------------------------------------------------------------
# Exact likelihood by the instantaneous change of variables (Song et al., eq. 39; Chen et al. 2018).

def divergence_exact(fun, x):
    """div fun(x) = sum_i d fun_i / d x_i, one VJP per data dimension (fine for 2-D data).
    x: (B, ...) -> (B,)."""
    from .backend import vjp

    _checks.function("fun", fun)
    _checks.batch("x", x)
    xp = namespace(x)
    B = x.shape[0]
    d = int(np.prod(x.shape[1:]))
    total = 0
    for i in range(d):
        e = np.zeros((B, d))
        e[:, i] = 1.0
        e = xp.reshape(xp.asarray(e, like=x), tuple(x.shape))
        total = total + xp.sum(xp.reshape(vjp(fun, x, e) * e, (B, -1)), axis=1)
    return total


def divergence_hutchinson(fun, x, probe):
    """Hutchinson's estimator (Hutchinson 1990; Grathwohl et al. 2019): div fun(x) ~ z^T J z with
    E[z z^T] = I (Rademacher or Gaussian ``probe``, shaped like x).  (B, ...) -> (B,)."""
    from .backend import vjp

    _checks.function("fun", fun)
    _checks.batches(x=x, probe=probe)
    xp = namespace(x)
    # BEGIN SOLUTION
    # hint: z^T J z: vjp(fun, x, probe) gives z^T J; multiply by the probe and sum over data dims
    return xp.sum(xp.reshape(vjp(fun, x, probe) * probe, (x.shape[0], -1)), axis=1)
    # END SOLUTION


def ode_log_likelihood(sde, score_model, x0, rng=None, divergence: str = "exact", probe: str = "rademacher",
                       rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-3):
    """log p_eps(x0) by integrating the probability-flow ODE from ``eps`` to 1 together with
    d log p / dt = -div v (eq. 39):  log p_eps(x(eps)) = log p_1(x(1)) + int_eps^1 div v dt.
    ``divergence`` is 'exact' or 'hutchinson' (with a fixed ``probe``: 'rademacher' or
    'gaussian', drawn from ``rng``).  Returns (log-likelihood (B,) NumPy, NFE)."""
    _check_sde(sde)
    score_model = _checks.checked("score_model", score_model)  # its output: x's shape, finite
    _checks.finite_input("x0", _checks.batch("x0", x0))
    _checks.choice("divergence", divergence, ("exact", "hutchinson"))
    _checks.choice("probe", probe, ("rademacher", "gaussian"))
    _check_tolerances(rtol, atol, eps)
    solve_ivp = _scipy_solve_ivp()
    xp = namespace(x0)
    shape, B = tuple(x0.shape), x0.shape[0]
    n = int(np.prod(shape))
    z = None
    if divergence == "hutchinson":
        if rng is None:
            raise ValueError("the Hutchinson estimator needs rng (a minidiff generator) for its probe")
        z = rng.rademacher_like(x0) if probe == "rademacher" else rng.randn_like(x0)
    nfe = [0]

    def rhs(t, y):
        nfe[0] += 1
        x = xp.asarray(y[:n].reshape(shape), like=x0)
        t_b = _t_like(float(t), x)

        def v(x_):
            return probability_flow_drift(sde, score_model(x_, t_b), x_, t_b)

        div = divergence_exact(v, x) if z is None else divergence_hutchinson(v, x, z)
        dx = xp.to_numpy(v(x)).reshape(-1)
        return np.concatenate([dx, xp.to_numpy(div)]).astype(np.float64)

    y0 = np.concatenate([xp.to_numpy(x0).reshape(-1).astype(np.float64), np.zeros(B)])
    sol = solve_ivp(rhs, (eps, 1.0), y0, rtol=rtol, atol=atol, method="RK45")
    x1 = sol.y[:n, -1].reshape(shape)
    delta = sol.y[n:, -1]
    prior = xp.to_numpy(prior_log_prob(sde, np.asarray(x1)))
    return prior + delta, nfe[0]
