"""Training and sampling the 2-D models, on either backend.

Methods: 'ddpm' (L_simple, DDPM), 'edm' (a preconditioned denoiser, EDM; ``scheme`` picks the
Table 1 column), 'cd' (consistency distillation from an 'edm' teacher checkpoint), 'ct'
(consistency training, CM Appendix C schedules) and 'ict' (improved consistency training).
The losses and samplers are shared with every other model in minidiff; what differs per
backend is only the model (autograd MLP vs ``TorchMLP``), how the gradient is taken
(``autograd`` vs ``loss.backward()``) and the optimiser (ours vs ``torch.optim.AdamW``).
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial

import numpy as np

from . import _checks
from . import consistency as cm
from . import edm
from . import samplers
from .backend import generator, value_and_grad
from .data.toy2d import DATASETS, sample_toy
from .diffusion import TARGETS, as_eps_model
from .losses import ddpm_loss
from .nn import adam_init, adam_update, clip_grad_norm, ema_update, init_mlp, mlp
from .schedules import alpha_bars, make_betas

METHODS = ("ddpm", "edm", "cd", "ct", "ict")
# The raw MLP embeds its time input with sinusoids of periods up to 10^4 (made for DDPM's
# integer steps); each scheme's c_noise is scaled to that range.
NOISE_SCALE = {"vp": 1.0, "iddpm": 1.0, "ve": 250.0, "edm": 1000.0}
CM_NOISE_SCALE = 1000.0


@dataclasses.dataclass
class ToyConfig:
    """Everything that defines a 2-D run (saved in the checkpoint's state.json)."""
    dataset: str = "swiss_roll"
    method: str = "ddpm"
    target: str = "eps"
    steps: int = 8000
    batch_size: int = 512
    lr: float = 2e-3
    T: int = 1000
    schedule: str = "linear"
    hidden: int = 128
    depth: int = 3
    t_dim: int = 32
    ema_decay: float = 0.995
    clip: float = 1.0
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"
    max_seconds: float = 0.0   # stop early after this many seconds (0: no limit)
    scheme: str = "edm"        # 'edm': the EDM Table 1 column (vp, ve, iddpm, edm)
    sigma_data: float = 0.5    # 'edm', 'cd', 'ct', 'ict'
    teacher: str = ""          # 'cd': checkpoint folder of an 'edm' model
    cm_N: int = 18             # 'cd': number of noise levels of the discretisation
    cm_mu: float = 0.95        # 'cd': EMA decay of the target network
    metric: str = "l2"         # 'cd', 'ct': distance (l2, l1, pseudo_huber); 'ict' uses pseudo_huber

    def validate(self):
        _checks.choice("dataset", self.dataset, sorted(DATASETS))
        _checks.choice("method", self.method, METHODS)
        _checks.choice("target", self.target, TARGETS)
        _checks.choice("backend", self.backend, ("numpy", "torch"))
        _checks.choice("dtype", self.dtype, ("float32", "float64"))
        _checks.choice("schedule", self.schedule, ("linear", "cosine"))
        _checks.choice("scheme", self.scheme, tuple(edm.SCHEMES))
        _checks.choice("metric", self.metric, ("l2", "l1", "pseudo_huber"))
        if self.method == "cd" and not self.teacher:
            raise ValueError("method 'cd' needs teacher: the checkpoint folder of an 'edm' model")
        if self.cm_N < 2:
            raise ValueError(f"cm_N must be >= 2 (a consistency schedule needs two noise levels), got {self.cm_N}")
        for name in ("steps", "batch_size", "T", "hidden", "depth", "t_dim"):
            _checks.positive_int(name, getattr(self, name))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        return self


def lr_at(cfg: ToyConfig, k: int, elapsed: float = 0.0) -> float:
    """Linear warm-up over 100 steps, then cosine decay to 2 % of ``lr`` over whichever budget
    runs out first: ``cfg.steps`` steps or ``cfg.max_seconds`` of training (so that a run cut
    short by the clock still ends with a small learning rate)."""
    warm = min(1.0, (k + 1) / 100)
    progress = min(k, cfg.steps) / cfg.steps
    if cfg.max_seconds:
        progress = max(progress, min(1.0, elapsed / cfg.max_seconds))
    # a python float: a NumPy float64 scalar lr would promote float32 parameters to float64 in adam_update
    return float(cfg.lr * warm * (0.51 + 0.49 * np.cos(np.pi * progress)))


def raw_to_model(net, config: dict):
    """The sampler-facing model of a trained raw network ``net(x, c)``: an eps-model for
    'ddpm', a denoiser D(x, sigma) for 'edm', a consistency function f(x, t) otherwise."""
    method = config.get("method", "ddpm")
    if method == "ddpm":
        return net
    if method == "edm":
        scheme = config.get("scheme", "edm")
        extra = {"sigma_data": config.get("sigma_data", 0.5)} if scheme == "edm" else {}
        return edm.precondition(lambda x, c, **kw: net(x, NOISE_SCALE[scheme] * c, **kw), scheme, **extra)
    return cm.consistency_function(lambda x, c, **kw: net(x, CM_NOISE_SCALE * c, **kw),
                                   config.get("sigma_data", 0.5))


class Objective:
    """One method's randomness and loss, written once for both backends and for every model
    (the 2-D MLPs here, the image U-Nets in ``minidiff.torch.train``).  ``cfg`` is any config
    with this module's field names (method, target, T, schedule, scheme, sigma_data, cm_N, ...)."""

    def __init__(self, cfg: ToyConfig, teacher=None):
        self.cfg = cfg
        self.config = dataclasses.asdict(cfg)
        self.alpha_bar = alpha_bars(make_betas(cfg.schedule, cfg.T))
        self.teacher = teacher          # (params, config) of the CD teacher
        self.uses_target = cfg.method in ("cd", "ct")

    def draw(self, rng, shape, k: int, dtype=np.float64, z=None) -> dict:
        """This step's randomness for a batch of ``shape`` (B, ...): NumPy arrays from ``rng``
        (a NumPy ``generator``), except the noise ``z`` when it is passed in (e.g. drawn on a GPU)."""
        cfg, B = self.cfg, shape[0]
        z = rng.randn(shape).astype(dtype) if z is None else z
        if cfg.method == "ddpm":
            return {"t": rng.randint(0, cfg.T, (B,)), "noise": z}
        if cfg.method == "edm":
            scheme = edm.get_scheme(cfg.scheme)
            sigma = scheme.training_sigma(rng, B)
            weight = scheme.loss_weight(sigma, cfg.sigma_data) if cfg.scheme == "edm" else scheme.loss_weight(sigma)
            return {"sigma": sigma.astype(dtype), "noise": z, "weight": weight.astype(dtype)}
        N, _ = self.levels(k)
        b = cm.cm_boundaries(N)
        if cfg.method == "ict":
            n = rng.rng.choice(N - 1, size=B, p=cm.ict_level_probabilities(b))
            weight = cm.ict_weight(b, n)
        else:
            n, weight = rng.randint(0, N - 1, (B,)), np.ones(B)
        return {"n": n, "z": z, "boundaries": b.astype(dtype), "weight": weight.astype(dtype)}

    def levels(self, k: int):
        """(N, mu) at step k: fixed for CD, CM Appendix C for CT, iCT's doubling for iCT."""
        cfg = self.cfg
        if cfg.method == "cd":
            return cfg.cm_N, cfg.cm_mu
        if cfg.method == "ct":
            return cm.ct_schedule(min(k, cfg.steps), cfg.steps)
        return cm.ict_schedule(min(k, cfg.steps), cfg.steps), 0.0

    def loss(self, net, x0, d: dict, target_net=None, teacher_D=None, **model_kwargs):
        """The method's loss; ``model_kwargs`` (e.g. ``class_labels``) go to every network call."""
        cfg, kw = self.cfg, model_kwargs
        if cfg.method == "ddpm":
            return ddpm_loss(net, x0, d["t"], d["noise"], self.alpha_bar, cfg.target, **kw)
        model = raw_to_model(net, self.config)
        if cfg.method == "edm":
            return edm.denoiser_loss(model, x0, d["sigma"], d["noise"], d["weight"], **kw)
        target = raw_to_model(target_net, self.config) if target_net is not None else model
        if cfg.method == "cd":
            return cm.cd_loss(model, target, teacher_D, x0, d["n"], d["z"], d["boundaries"], cfg.metric, d["weight"],
                              **kw)
        metric = "pseudo_huber" if cfg.method == "ict" else cfg.metric
        return cm.ct_loss(model, target, x0, d["n"], d["z"], d["boundaries"], metric, d["weight"], **kw)


def train_toy(cfg: ToyConfig, progress: bool = True, callback=None) -> dict:
    """Train a 2-D model with ``cfg.method``.  Returns {'params', 'ema', 'losses', 'steps',
    'seconds', 'config'}; params are NumPy ``init_mlp`` lists whatever the backend."""
    cfg.validate()
    dtype = np.dtype(cfg.dtype)
    teacher = None
    init = init_mlp(np.random.default_rng(cfg.seed), 2, cfg.hidden, cfg.depth, cfg.t_dim, dtype=dtype)
    if cfg.method == "cd":
        from .checkpoint import load_toy_checkpoint

        _, t_params, t_state = load_toy_checkpoint(cfg.teacher)
        if t_state["config"].get("method") != "edm":
            raise ValueError(f"the teacher must be an 'edm' model, {cfg.teacher} holds "
                             f"{t_state['config'].get('method')!r}")
        teacher = (t_params, t_state["config"])
        init = [[np.asarray(W, dtype), np.asarray(b, dtype)] for W, b in t_params]  # CM: start from the teacher
    objective = Objective(cfg, teacher)
    stepper = (_NumpyStepper if cfg.backend == "numpy" else _TorchStepper)(cfg, init, objective)
    data_rng = np.random.default_rng(cfg.seed + 1)
    noise_rng = generator(cfg.seed + 2, backend="numpy")
    ema = init
    losses = []
    steps = range(cfg.steps)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=f"train {cfg.method} on {cfg.dataset} ({cfg.backend})", mininterval=1.0)
    start = time.perf_counter()
    k = 0
    for k in steps:
        x0 = sample_toy(cfg.dataset, cfg.batch_size, data_rng).astype(dtype)        # (B, 2)
        draws = objective.draw(noise_rng, x0.shape, k, x0.dtype)
        lr = lr_at(cfg, k, time.perf_counter() - start)
        losses.append(stepper.step(x0, draws, lr, objective.levels(k)[1] if objective.uses_target else None))
        # EMA warm-up (as in the lessons): early on, do not average in the random initial weights
        ema = ema_update(ema, stepper.params(), min(cfg.ema_decay, (1 + k) / (10 + k)))
        if callback is not None:
            callback(k, losses[-1])
        if cfg.max_seconds and time.perf_counter() - start > cfg.max_seconds:
            break
    return {"params": stepper.params(), "ema": ema, "losses": np.asarray(losses), "steps": k + 1,
            "seconds": time.perf_counter() - start, "config": dataclasses.asdict(cfg)}


class _NumpyStepper:
    """Autograd gradients and our AdamW (minidiff.nn.optim)."""

    def __init__(self, cfg, params, objective):
        self.cfg, self.objective = cfg, objective
        self._params, self.opt = params, adam_init(params)
        self.target = params if objective.uses_target else None
        self.teacher_D = None
        if objective.teacher is not None:
            t_params, t_config = objective.teacher
            self.teacher_D = raw_to_model(partial(mlp, t_params), t_config)

        def loss_fn(p, x0, draws, target):
            target_net = partial(mlp, target) if target is not None else None
            return objective.loss(partial(mlp, p), x0, draws, target_net, self.teacher_D)

        self.grad_fn = value_and_grad(loss_fn)

    def step(self, x0, draws, lr, mu=None):
        loss, grads = self.grad_fn(self._params, x0, draws, self.target)
        grads = clip_grad_norm(grads, self.cfg.clip)
        self._params, self.opt = adam_update(self._params, grads, self.opt, lr=lr)
        if self.target is not None:
            self.target = ema_update(self.target, self._params, mu)
        return float(loss)

    def params(self):
        return self._params


class _TorchStepper:
    """A TorchMLP with the same initial weights, loss.backward() and torch.optim.AdamW."""

    def __init__(self, cfg, params, objective):
        import torch

        from .torch.mlp import TorchMLP

        self.torch, self.cfg, self.objective = torch, cfg, objective
        self.model = TorchMLP.from_params(params)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.target = TorchMLP.from_params(params).requires_grad_(False) if objective.uses_target else None
        self.teacher_D = None
        if objective.teacher is not None:
            t_params, t_config = objective.teacher
            self.teacher_D = raw_to_model(TorchMLP.from_params(t_params).requires_grad_(False), t_config)

    def step(self, x0, draws, lr, mu=None):
        torch = self.torch
        for group in self.opt.param_groups:
            group["lr"] = lr
        draws = {k: torch.from_numpy(np.asarray(v)) for k, v in draws.items()}
        loss = self.objective.loss(self.model, torch.from_numpy(x0), draws, self.target, self.teacher_D)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        if self.target is not None:
            with torch.no_grad():
                for p_target, p in zip(self.target.parameters(), self.model.parameters()):
                    p_target.lerp_(p, 1 - mu)
        return float(loss.detach())

    def params(self):
        return self.model.to_params()


SAMPLERS = {"ddpm": ("ddpm", "ddim", "euler", "heun"), "edm": ("heun", "euler", "stochastic"),
            "cd": ("consistency",), "ct": ("consistency",), "ict": ("consistency",)}


def default_sampler(config: dict):
    """(sampler, steps) used when none is asked for."""
    method = config.get("method", "ddpm")
    return {"ddpm": ("ddpm", config.get("T", 1000)), "edm": ("heun", 18)}.get(method, ("consistency", 1))


def sample_from_params(params, config: dict, n: int, seed: int = 0, backend: str = "numpy", sampler=None,
                       steps=None, eta: float = 0.0, callback=None, progress: bool = False, **sampler_kwargs):
    """Draw ``n`` points from a trained 2-D model in float64.  Returns (n, 2) NumPy.

    Samplers: for 'ddpm' models 'ddpm' (ancestral, T steps), 'ddim' (``steps``, ``eta``) and the
    EDM samplers 'euler' / 'heun' through the eps-to-denoiser converter; for 'edm' models
    'heun', 'euler' and 'stochastic' (``sampler_kwargs``: S_churn, S_tmin, S_tmax, S_noise) on
    Karras steps; for consistency models 'consistency' with ``steps`` evaluations (CM Algorithm 1;
    ``taus`` sets its steps - 1 intermediate noise levels)."""
    n = _checks.positive_int("n", n)
    method = config.get("method", "ddpm")
    d_sampler, d_steps = default_sampler(config)
    sampler = sampler or d_sampler
    steps = _checks.positive_int("steps", steps if steps is not None else d_steps)
    _checks.choice(f"sampler (for a '{method}' model)", sampler, SAMPLERS[method])
    rng = generator(seed, backend=backend)
    if backend == "numpy":
        net = partial(mlp, [[np.asarray(W, np.float64), np.asarray(b, np.float64)] for W, b in params])
        z = rng.randn((n, 2))
    else:
        import torch

        from .torch.mlp import TorchMLP
        net = TorchMLP.from_params(params, dtype=torch.float64)
        z = rng.randn((n, 2), dtype=torch.float64)
    model = raw_to_model(net, config)
    with _no_grad(backend):
        x0 = run_sampler(model, config, sampler, steps, eta, z, rng, callback, progress, sampler_kwargs)
    return x0 if backend == "numpy" else x0.detach().cpu().numpy()


def run_sampler(model, config, sampler, steps, eta, z, rng, callback=None, progress=False, kwargs=None,
                model_kwargs=None):
    """Run ``sampler`` from the standard normal ``z`` (any shape) with the sampler-facing
    ``model`` of a trained network (``raw_to_model``); shared by the 2-D and the image models.
    ``kwargs``: the sampler's options; ``model_kwargs`` (e.g. ``class_labels``): the network's."""
    kwargs, mk = kwargs or {}, model_kwargs or {}
    method = config.get("method", "ddpm")
    if method == "ddpm":
        betas = make_betas(config.get("schedule", "linear"), config["T"])
        alpha_bar = alpha_bars(betas)
        eps_model = as_eps_model(model, config.get("target", "eps"), alpha_bar)
        if sampler == "ddpm":
            return samplers.ddpm_sample(eps_model, z, betas, rng.randn_like, callback=callback, progress=progress, **mk)
        if sampler == "ddim":
            tau = samplers.ddim_timesteps(config["T"], steps, kwargs.get("spacing", "trailing"))
            return samplers.ddim_sample(eps_model, z, alpha_bar, tau, eta, rng.randn_like, callback=callback, **mk)
        grid = np.sqrt((1 - alpha_bar) / alpha_bar)
        sigmas = edm.karras_sigmas(steps, max(0.002, float(grid[0])), min(80.0, float(grid[-1])))
        D = edm.eps_model_to_denoiser(eps_model, alpha_bar)
    elif method == "edm":
        sigmas = edm.karras_sigmas(steps)
        D = model
    else:  # CM Algorithm 1; the intermediate noise levels default to Karras steps (CM tunes them by search)
        taus = kwargs.get("taus")
        if taus is None:
            taus = edm.karras_sigmas(steps + 1)[1:-1] if steps > 1 else []
        elif len(taus) != steps - 1:
            raise ValueError(f"taus must hold steps - 1 = {steps - 1} noise levels, got {len(taus)}")
        return cm.consistency_sample(model, 80.0 * z, taus, rng.randn_like, callback=callback, **mk)
    x = float(sigmas[0]) * z
    if sampler == "euler":
        return samplers.euler_sample(D, x, sigmas, callback=callback, **mk)
    if sampler == "heun":
        return samplers.heun_sample(D, x, sigmas, callback=callback, **mk)
    return samplers.stochastic_sample(D, x, sigmas, rng.randn_like, callback=callback, **kwargs, **mk)


def _no_grad(backend):
    import contextlib
    if backend == "torch":
        import torch
        return torch.no_grad()
    return contextlib.nullcontext()
