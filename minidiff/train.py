"""Training and sampling the 2-D models, on either backend.

The methods, their losses and samplers are the method layer's (``minidiff.methods``), shared with
every other model in minidiff; what differs per backend is only the model (autograd MLP vs
``TorchMLP``), how the gradient is taken (``autograd`` vs ``loss.backward()``) and the
optimiser (ours vs ``torch.optim.AdamW``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from . import _checks
from .backend import generator, to_numpy, value_and_grad
from .data.toy2d import DATASETS, sample_toy
from .methods import MethodConfig, Objective, config_from_dict, raw_to_model, resolve_sampler, run_sampler
from .nn import adam_init, adam_update, clip_grad_norm, ema_update, init_mlp, mlp
from .nn.optim import ema_warmup


@dataclasses.dataclass
class ToyConfig(MethodConfig):
    """Everything that defines a 2-D run (saved in the checkpoint's state.json); the method
    fields (method, target, T, schedule, scheme, sigma_data, teacher, cm_N, cm_mu, metric,
    ema_decay) are ``MethodConfig``'s."""
    ema_decay: float = 0.995
    dataset: str = "swiss_roll"
    steps: int = 8000
    batch_size: int = 512
    lr: float = 2e-3
    hidden: int = 128
    depth: int = 3
    t_dim: int = 32
    clip: float = 1.0
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"
    max_seconds: float = 0.0   # stop early after this many seconds (0: no limit)
    ckpt_every: int = 1000     # with an output folder: a checkpoint every this many steps (0: at the end only)

    # Fields that may change between a run and its resume (everything else must match).
    RESUMABLE_CHANGES = ("steps", "max_seconds", "ckpt_every")

    def validate(self):
        super().validate()
        _checks.choice("dataset", self.dataset, sorted(DATASETS))
        _checks.choice("backend", self.backend, ("numpy", "torch"))
        _checks.choice("dtype", self.dtype, ("float32", "float64"))
        for name in ("steps", "batch_size", "hidden", "depth", "t_dim"):
            _checks.positive_int(name, getattr(self, name))
        _checks.int_at_least("ckpt_every", self.ckpt_every, 0)
        for name, ok, allowed in (("lr", lambda v: v > 0, "> 0"), ("clip", lambda v: v >= 0, ">= 0"),
                                  ("max_seconds", lambda v: v >= 0, ">= 0 (0: no limit)")):
            _checks.finite_number(name, getattr(self, name), ok, allowed)
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


def load_toy_run(path):
    """(params, ema, ToyConfig) of a 2-D checkpoint, checked whole before use: another version's
    config (a missing or unknown field), an invalid value, or weights whose layers or shapes the
    config does not give are a ValueError naming them."""
    from .checkpoint import load_toy_checkpoint

    params, ema, state = load_toy_checkpoint(path)
    cfg = ToyConfig.from_dict(state["config"], f"the config of {path}").validate()
    expected = init_mlp(0, 2, cfg.hidden, cfg.depth, cfg.t_dim)
    for name, layers in (("params", params), ("ema", ema)):
        if len(layers) != len(expected):
            raise ValueError(f"{path}: '{name}' has {len(layers)} layers, its config (depth {cfg.depth}) needs "
                             f"{len(expected)}")
        for i, ((W, b), (W0, b0)) in enumerate(zip(layers, expected)):
            if W.shape != W0.shape or b.shape != b0.shape or not np.issubdtype(W.dtype, np.floating) \
                    or not np.issubdtype(b.dtype, np.floating):
                raise ValueError(f"{path}: '{name}.{i}' is W {W.shape} {W.dtype}, b {b.shape} {b.dtype}; its config "
                                 f"(hidden {cfg.hidden}, depth {cfg.depth}, t_dim {cfg.t_dim}) needs float W {W0.shape}, "
                                 f"b {b0.shape}")
    return params, ema, cfg


def _teacher(cfg: ToyConfig):
    """(EMA params, config) of the CD teacher checkpoint, which must hold an 'edm' model."""
    _, t_params, t_config = load_toy_run(cfg.teacher)
    if t_config.method != "edm":
        raise ValueError(f"the teacher must be an 'edm' model, {cfg.teacher} holds {t_config.method!r}")
    return t_params, t_config


# ----------------------------------------------------------------------------------------------
# The trainer's backends.  What differs per backend is only the model, how the gradient is taken
# and the optimiser (DESIGN section 3): NumPy/autograd is defined here; the torch package adds
# 'torch' (``minidiff.torch.toy``) when it is imported, so that this core module never imports it.

class ToyBackend(NamedTuple):
    name: str
    stepper: type                  # (cfg, params, objective, teacher) -> step / params / state / load_state
    sampling_net: Callable         # init_mlp params -> the float64 network net(x, t) of this backend
    float64: object                # the backend's float64 dtype (the sampler's starting noise)
    no_grad: Callable              # a context manager for sampling


TOY_BACKENDS: dict = {}


def register_toy_backend(backend: ToyBackend):
    TOY_BACKENDS[backend.name] = backend


def toy_backend(name: str) -> ToyBackend:
    """The registered backend ``name``; 'torch' is there once ``minidiff.torch`` is imported."""
    if name == "torch" and name not in TOY_BACKENDS:
        raise ValueError("backend 'torch' for 2-D models comes with the torch package: `import minidiff.torch` "
                         "first (it needs the torch extra: pip install 'minidiff[torch]')")
    return TOY_BACKENDS[_checks.choice("backend", name, tuple(TOY_BACKENDS) + ("torch",))]


class _ToyRun:
    """Everything a 2-D run carries from one step to the next, so that a checkpoint holds it
    all and a resumed run continues exactly: the stepper (weights, optimiser, target), the EMA,
    the two random streams, the losses and the time spent."""

    def __init__(self, cfg: ToyConfig):
        self.cfg, dtype = cfg, np.dtype(cfg.dtype)
        teacher = _teacher(cfg) if cfg.method == "cd" else None
        init = init_mlp(np.random.default_rng(cfg.seed), 2, cfg.hidden, cfg.depth, cfg.t_dim, dtype=dtype)
        if teacher is not None:                                       # CM: start from the teacher
            init = [[np.asarray(W, dtype), np.asarray(b, dtype)] for W, b in teacher[0]]
        self.objective = Objective(cfg)
        self.stepper = toy_backend(cfg.backend).stepper(cfg, init, self.objective, teacher)
        self.data_rng = np.random.default_rng(cfg.seed + 1)
        self.noise_rng = generator(cfg.seed + 2, backend="numpy")
        self.ema, self.losses, self.step, self.seconds = init, [], 0, 0.0

    def train_step(self, k: int, elapsed: float) -> float:
        cfg = self.cfg
        x0 = sample_toy(cfg.dataset, cfg.batch_size, self.data_rng).astype(cfg.dtype)    # (B, 2)
        draws = self.objective.draw(self.noise_rng, x0.shape, k, x0.dtype)
        mu = self.objective.levels(k)[1] if self.objective.uses_target else None
        self.losses.append(self.stepper.step(x0, draws, lr_at(cfg, k, elapsed), mu))
        self.ema = ema_update(self.ema, self.stepper.params(), ema_warmup(cfg.ema_decay, k))
        self.step = k + 1
        return self.losses[-1]

    def save(self, out):
        from .checkpoint import save_toy_checkpoint

        arrays, state = self.stepper.state()
        arrays["losses"] = np.asarray(self.losses, np.float64)
        state = {**state, "rng": {"data": self.data_rng.bit_generator.state,
                                  "noise": self.noise_rng.rng.bit_generator.state}}
        if self.cfg.max_seconds:     # the time spent, which a clock-budgeted run resumes with (else: same bytes)
            state["seconds"] = self.seconds
        save_toy_checkpoint(out, self.stepper.params(), self.ema, self.cfg.to_dict(), self.step, arrays, state)

    def resume(self, out, log):
        from .checkpoint import read_toy_checkpoint, unflatten_params

        arrays, state = read_toy_checkpoint(out)
        saved = ToyConfig.from_dict(state["config"], f"the config of checkpoint {out}")
        diff = sorted(k for k, v in self.cfg.to_dict().items()
                      if k not in ToyConfig.RESUMABLE_CHANGES and getattr(saved, k) != v)
        if diff:
            raise ValueError(f"cannot resume from {out}: its run differs in {diff} "
                             f"(saved {[getattr(saved, k) for k in diff]}, asked {[getattr(self.cfg, k) for k in diff]})")
        if "rng" not in state:
            raise ValueError(f"checkpoint {out} holds no training state to resume from")
        self.stepper.load_state(arrays, state)
        self.ema = unflatten_params("ema", arrays)
        self.data_rng.bit_generator.state = state["rng"]["data"]
        self.noise_rng.rng.bit_generator.state = state["rng"]["noise"]
        self.losses, self.step = arrays["train.losses"].tolist(), int(state["step"])
        self.seconds = float(state.get("seconds", 0.0))
        log(f"resuming from {out} at step {self.step}")


def train_toy(cfg: ToyConfig, progress: bool = True, callback=None, out=None, resume: bool = False,
              log=print) -> dict:
    """Train a 2-D model with ``cfg.method``.  With ``out``, write a checkpoint there every
    ``cfg.ckpt_every`` steps and at the end; with ``resume``, continue from ``out``'s checkpoint
    exactly (the same weights as an uninterrupted run, on the same backend).  Returns {'params',
    'ema', 'losses', 'steps', 'seconds', 'config'}; params are NumPy ``init_mlp`` lists whatever
    the backend."""
    cfg.validate()
    if resume and out is None:
        raise ValueError("resume needs out: the run folder to resume from")
    from .checkpoint import RunLock, is_toy_checkpoint

    with RunLock(out) if out is not None else contextlib.nullcontext():
        run = _ToyRun(cfg)
        if resume and is_toy_checkpoint(out):
            run.resume(out, log)
        elif resume:
            log(f"no checkpoint in {out} to resume from: starting at step 0")
        steps = range(run.step, cfg.steps)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, initial=run.step, total=cfg.steps, mininterval=1.0,
                         desc=f"train {cfg.method} on {cfg.dataset} ({cfg.backend})")
        start = time.perf_counter() - run.seconds
        for k in steps:
            loss = run.train_step(k, time.perf_counter() - start)
            if callback is not None:
                callback(k, loss)
            run.seconds = time.perf_counter() - start
            stop = bool(cfg.max_seconds) and run.seconds > cfg.max_seconds
            if out is not None and cfg.ckpt_every and run.step % cfg.ckpt_every == 0 and not stop:
                run.save(out)
            if stop:
                break
        if out is not None:
            run.save(out)
    return {"params": run.stepper.params(), "ema": run.ema, "losses": np.asarray(run.losses), "steps": run.step,
            "seconds": run.seconds, "config": cfg.to_dict()}


class _NumpyStepper:
    """Autograd gradients and our AdamW (minidiff.nn.optim)."""

    def __init__(self, cfg, params, objective, teacher=None):
        self.cfg, self.objective = cfg, objective
        self._params, self.opt = params, adam_init(params)
        self.target = params if objective.uses_target else None
        self.teacher_D = None
        if teacher is not None:
            t_params, t_config = teacher
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

    def state(self):
        """(arrays, JSON) of everything but the weights: Adam's moments and step, the target."""
        from .checkpoint import flatten_params

        arrays = {**flatten_params("adam_m", self.opt["m"]), **flatten_params("adam_v", self.opt["v"])}
        if self.target is not None:
            arrays.update(flatten_params("target", self.target))
        return arrays, {"optimizer": {"type": "minidiff.nn.adam", "step": int(self.opt["step"])}}

    def load_state(self, arrays, state):
        from .checkpoint import unflatten_params

        self._params = unflatten_params("params", arrays)
        self.opt = {"m": unflatten_params("train.adam_m", arrays), "v": unflatten_params("train.adam_v", arrays),
                    "step": int(state["optimizer"]["step"])}
        if self.target is not None:
            self.target = unflatten_params("train.target", arrays)


register_toy_backend(ToyBackend(
    "numpy", _NumpyStepper,
    lambda params: partial(mlp, [[np.asarray(W, np.float64), np.asarray(b, np.float64)] for W, b in params]),
    np.float64, contextlib.nullcontext))


def sample_from_params(params, config, n: int, seed: int = 0, backend: str = "numpy", sampler=None,
                       steps=None, eta: float = 0.0, callback=None, progress: bool = False, **sampler_kwargs):
    """Draw ``n`` points from a trained 2-D model in float64.  Returns (n, 2) NumPy.  ``config``:
    the run's ``ToyConfig``, or a dict of some of its fields (the others take their defaults).

    Samplers: for 'ddpm' models 'ddpm' (ancestral, T steps), 'ddim' (``steps``, ``eta``) and the
    EDM samplers 'euler' / 'heun' through the eps-to-denoiser converter; for 'edm' models
    'heun', 'euler' and 'stochastic' (``sampler_kwargs``: S_churn, S_tmin, S_tmax, S_noise) on
    Karras steps; for consistency models 'consistency' with ``steps`` evaluations (CM Algorithm 1;
    ``taus`` sets its steps - 1 intermediate noise levels)."""
    n = _checks.positive_int("n", n)
    config = config_from_dict(ToyConfig, config, allow_missing=True)   # a dict's missing fields: the defaults
    sampler, steps = resolve_sampler(config, sampler, steps)
    backend = toy_backend(backend)
    rng = generator(seed, backend=backend.name)
    net = backend.sampling_net(params)                                  # float64
    z = rng.randn((n, 2), dtype=backend.float64)                        # (n, 2)
    model = raw_to_model(net, config)
    with backend.no_grad():
        x0 = run_sampler(model, config, sampler, steps, eta, z, rng, callback, progress, sampler_kwargs)
    return to_numpy(x0)
