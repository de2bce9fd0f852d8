"""The method layer, shared by every trainer (the 2-D MLPs of ``minidiff.train`` and the image
U-Nets of ``minidiff.torch.train``): which methods exist, their config fields, each method's
randomness and loss (``Objective``), how a trained raw network becomes the model a sampler
takes (``raw_to_model``), and which sampler runs it (``SAMPLERS``, ``DEFAULT_SAMPLERS``,
``run_sampler``).

Methods: 'ddpm' (L_simple, DDPM), 'edm' (a preconditioned denoiser, EDM; ``scheme`` picks the
Table 1 column), 'cd' (consistency distillation from an 'edm' teacher), 'ct' (consistency
training, CM Appendix C schedules) and 'ict' (improved consistency training).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from . import _checks
from . import consistency as cm
from . import edm
from . import samplers
from .diffusion import TARGETS, as_eps_model
from .losses import ddpm_loss
from .schedules import alpha_bars, make_betas

METHODS = ("ddpm", "edm", "cd", "ct", "ict")
SCHEDULES = ("linear", "cosine")
SCHEMES = tuple(edm.SCHEMES)
METRICS = ("l2", "l1", "pseudo_huber")
# The samplers each method's model can run.
SAMPLERS = {"ddpm": ("ddpm", "ddim", "euler", "heun"), "edm": ("heun", "euler", "stochastic"),
            "cd": ("consistency",), "ct": ("consistency",), "ict": ("consistency",)}
ALL_SAMPLERS = tuple(dict.fromkeys(s for names in SAMPLERS.values() for s in names))
# (sampler, steps) when none is asked for, by method and kind of data.  steps None: the model's T.
# 2-D DDPM models run the full ancestral chain (cheap on points); image DDPM models DDIM-50, which
# DDIM's Table 1 puts close to 1000 ancestral steps; EDM Heun-18 (35 NFE); consistency one step.
DEFAULT_SAMPLERS = {
    "ddpm": {"points": ("ddpm", None), "images": ("ddim", 50)},
    "edm": {"points": ("heun", 18), "images": ("heun", 18)},
    **{m: {"points": ("consistency", 1), "images": ("consistency", 1)} for m in ("cd", "ct", "ict")},
}
# A raw network embeds its noise input with sinusoids of periods up to 10^4 (made for DDPM's
# integer steps); each scheme's c_noise is scaled to that range.
NOISE_SCALE = {"vp": 1.0, "iddpm": 1.0, "ve": 250.0, "edm": 1000.0}
CM_NOISE_SCALE = 1000.0


@dataclasses.dataclass
class MethodConfig:
    """The fields that define a method, shared by ``ToyConfig`` and ``ImageConfig`` (which
    inherit them) and validated here once.  ``kind`` ('points' or 'images') picks the default
    sampler."""
    kind: ClassVar[str] = "points"

    method: str = "ddpm"
    target: str = "eps"                # 'ddpm': what the network predicts
    T: int = 1000                      # 'ddpm': diffusion steps
    schedule: str = "linear"           # 'ddpm'
    scheme: str = "edm"                # 'edm': the column of EDM's Table 1 (vp, ve, iddpm, edm)
    sigma_data: float = 0.5            # 'edm', 'cd', 'ct', 'ict'
    teacher: str = ""                  # 'cd': checkpoint of an 'edm' model
    cm_N: int = 18                     # 'cd': number of noise levels of the discretisation
    cm_mu: float = 0.95                # 'cd': EMA decay of the target network
    metric: str = "l2"                 # 'cd', 'ct': distance; 'ict' uses pseudo_huber
    ema_decay: float = 0.999           # EMA of the weights (the model that is sampled)
    P_mean: float = edm.P_MEAN         # 'edm' with scheme 'edm': training noise ln(sigma) ~ N(P_mean, P_std^2)
    P_std: float = edm.P_STD

    LATER_FIELDS: ClassVar[tuple] = ("P_mean", "P_std")   # added since checkpoints were saved without them

    def validate(self):
        _checks.choice("method", self.method, METHODS)
        _checks.choice("target", self.target, TARGETS)
        _checks.choice("schedule", self.schedule, SCHEDULES)
        _checks.choice("scheme", self.scheme, SCHEMES)
        _checks.choice("metric", self.metric, METRICS)
        _checks.positive_int("T", self.T)
        if isinstance(self.cm_N, bool) or not isinstance(self.cm_N, int) or self.cm_N < 2:
            raise ValueError(f"cm_N must be an integer >= 2 (a consistency schedule needs two noise levels), "
                             f"got {self.cm_N!r}")
        _checks.finite_number("sigma_data", self.sigma_data, lambda v: v > 0, "in (0, inf)")
        _checks.finite_number("cm_mu", self.cm_mu, lambda v: 0 <= v < 1, "in [0, 1)")
        _checks.finite_number("ema_decay", self.ema_decay, lambda v: 0 <= v < 1, "in [0, 1)")
        _checks.finite_number("P_mean", self.P_mean, lambda v: True, "a real number")
        _checks.finite_number("P_std", self.P_std, lambda v: v > 0, "in (0, inf)")
        if self.method == "cd" and not self.teacher:
            raise ValueError("method 'cd' needs teacher: the checkpoint of an 'edm' model")
        return self

    def default_sampler(self):
        """(sampler, steps) when none is asked for (``DEFAULT_SAMPLERS``)."""
        sampler, steps = DEFAULT_SAMPLERS[self.method][self.kind]
        return sampler, self.T if steps is None else steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, what: str = "config"):
        """The config a checkpoint's JSON holds, as this dataclass; an unknown or a missing field
        is a ValueError that names it (nothing falls back to a silent default)."""
        return config_from_dict(cls, d, what)


def later_fields(cls) -> tuple:
    """The fields of a config class (and of its bases) that were added after checkpoints had been
    saved without them: each class's ``LATER_FIELDS``.  Their defaults are what those runs did."""
    return tuple(n for c in cls.__mro__ for n in vars(c).get("LATER_FIELDS", ()))


def later_fields_filled(cls, saved: dict) -> dict:
    """A saved config (a dict) with ``later_fields`` it lacks filled in at their defaults, nested
    configs (such as the U-Net's) too."""
    if not isinstance(saved, dict):
        return saved
    out, later = dict(saved), later_fields(cls)
    for f in dataclasses.fields(cls):
        if f.name in later and f.name not in out:
            out[f.name] = f.default
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub) and isinstance(out.get(f.name), dict):
            out[f.name] = later_fields_filled(sub, out[f.name])
    return out


def config_from_dict(cls, d, what: str = "config", allow_missing: bool = False):
    """``cls(**d)`` for a dataclass ``cls``, refusing with a ValueError that names them any
    unknown field and (unless ``allow_missing``) any missing one, except those in the class's
    ``LATER_FIELDS`` (added later, their defaults being what older runs did).  An instance
    passes as it is."""
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise TypeError(f"{what} must be a {cls.__name__} or a dict of its fields, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    later = later_fields(cls)                       # added since older checkpoints: their defaults fill in
    missing = [] if allow_missing else [n for n in names if n not in d and n not in later]
    if unknown or missing:
        raise ValueError(f"{what} does not match {cls.__name__}: "
                         + "; ".join(([f"unknown field(s) {unknown}"] if unknown else [])
                                     + ([f"missing field(s) {missing}"] if missing else [])))
    return cls(**d)


def method_config(config) -> MethodConfig:
    """The method fields of ``config``: a ``MethodConfig`` (or subclass) as it is, or a dict of
    which only the method fields are read (a missing one takes ``MethodConfig``'s default)."""
    if isinstance(config, MethodConfig):
        return config
    if not isinstance(config, dict):
        raise TypeError(f"config must be a MethodConfig or a dict, got {type(config).__name__}")
    names = [f.name for f in dataclasses.fields(MethodConfig)]
    return config_from_dict(MethodConfig, {n: config[n] for n in names if n in config}, "config", allow_missing=True)


def raw_to_model(net, config):
    """The sampler-facing model of a trained raw network ``net(x, c, **kw)``: an eps-model for
    'ddpm', a denoiser D(x, sigma) for 'edm', a consistency function f(x, t) otherwise."""
    cfg = method_config(config)
    if cfg.method == "ddpm":
        return net
    if cfg.method == "edm":
        extra = {"sigma_data": cfg.sigma_data} if cfg.scheme == "edm" else {}
        scale = NOISE_SCALE[cfg.scheme]
        return edm.precondition(lambda x, c, **kw: net(x, scale * c, **kw), cfg.scheme, **extra)
    return cm.consistency_function(lambda x, c, **kw: net(x, CM_NOISE_SCALE * c, **kw), cfg.sigma_data)


class Objective:
    """One method's randomness and loss, written once for both backends and every model.
    ``cfg``: a ``MethodConfig`` of a trainer, with its ``steps`` (``ToyConfig``, ``ImageConfig``)."""

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.alpha_bar = alpha_bars(make_betas(cfg.schedule, cfg.T))
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
            sigma = (edm.edm_training_sigma(rng, B, cfg.P_mean, cfg.P_std) if cfg.scheme == "edm"
                     else scheme.training_sigma(rng, B))
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
        """(N, mu) at step k of the run's ``cfg.steps``: fixed for CD, CM Appendix C for CT,
        iCT's doubling for iCT (mu 0: the target is the student itself, under a stop-gradient)."""
        cfg, steps = self.cfg, self.cfg.steps
        if cfg.method == "cd":
            return cfg.cm_N, cfg.cm_mu
        if cfg.method == "ct":
            return cm.ct_schedule(min(k, steps), steps)
        return cm.ict_schedule(min(k, steps), steps), 0.0

    def loss(self, net, x0, d: dict, target_net=None, teacher_D=None, **model_kwargs):
        """The method's loss; ``model_kwargs`` (e.g. ``class_labels``) go to every network call.
        ``target_net``: the CM target network (None: the student itself); ``teacher_D``: the CD
        teacher's denoiser."""
        cfg, kw = self.cfg, model_kwargs
        if cfg.method == "ddpm":
            return ddpm_loss(net, x0, d["t"], d["noise"], self.alpha_bar, cfg.target, **kw)
        model = raw_to_model(net, cfg)
        if cfg.method == "edm":
            return edm.denoiser_loss(model, x0, d["sigma"], d["noise"], d["weight"], **kw)
        target = raw_to_model(target_net, cfg) if target_net is not None else model
        if cfg.method == "cd":
            return cm.cd_loss(model, target, teacher_D, x0, d["n"], d["z"], d["boundaries"], cfg.metric, d["weight"],
                              **kw)
        metric = "pseudo_huber" if cfg.method == "ict" else cfg.metric
        return cm.ct_loss(model, target, x0, d["n"], d["z"], d["boundaries"], metric, d["weight"], **kw)


def resolve_sampler(config, sampler=None, steps=None):
    """(sampler, steps): the asked-for ones, else the method's default; checked against the
    samplers the method's model can run."""
    cfg = config if isinstance(config, MethodConfig) else method_config(config)
    d_sampler, d_steps = cfg.default_sampler()
    sampler = sampler or d_sampler
    _checks.choice(f"sampler (for a '{cfg.method}' model)", sampler, SAMPLERS[cfg.method])
    steps = _checks.positive_int("steps", steps if steps is not None else d_steps)
    return sampler, steps


def run_sampler(model, config, sampler, steps, eta, z, rng, callback=None, progress=False, kwargs=None,
                model_kwargs=None):
    """Run ``sampler`` from the standard normal ``z`` (any shape) with the sampler-facing
    ``model`` of a trained network (``raw_to_model``); shared by the 2-D and the image models.
    ``kwargs``: the sampler's options; ``model_kwargs`` (e.g. ``class_labels``): the network's."""
    cfg = method_config(config)
    kwargs, mk = kwargs or {}, model_kwargs or {}
    if cfg.method == "ddpm":
        betas = make_betas(cfg.schedule, cfg.T)
        alpha_bar = alpha_bars(betas)
        eps_model = as_eps_model(model, cfg.target, alpha_bar)
        if sampler == "ddpm":
            return samplers.ddpm_sample(eps_model, z, betas, rng.randn_like, callback=callback, progress=progress, **mk)
        if sampler == "ddim":
            tau = samplers.ddim_timesteps(cfg.T, steps, kwargs.get("spacing", "trailing"))
            return samplers.ddim_sample(eps_model, z, alpha_bar, tau, eta, rng.randn_like, callback=callback, **mk)
        grid = np.sqrt((1 - alpha_bar) / alpha_bar)
        sigmas = edm.karras_sigmas(steps, max(0.002, float(grid[0])), min(80.0, float(grid[-1])))
        D = edm.eps_model_to_denoiser(eps_model, alpha_bar)
    elif cfg.method == "edm":
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
