"""Training and sampling the 2-D models, on either backend.

The loss (``losses.ddpm_loss``) and the sampler (``samplers.ddpm_sample``) are shared; what
differs per backend is only the model (autograd MLP vs ``TorchMLP``), how the gradient is
taken (``autograd`` vs ``loss.backward()``) and the optimiser (ours vs ``torch.optim.AdamW``).
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial

import numpy as np

from . import _checks
from .backend import generator, value_and_grad
from .data.toy2d import DATASETS, sample_toy
from .diffusion import TARGETS, as_eps_model
from .losses import ddpm_loss, draw_ddpm_inputs
from .nn import adam_init, adam_update, clip_grad_norm, ema_update, init_mlp, mlp
from .samplers import ddpm_sample
from .schedules import alpha_bars, make_betas

METHODS = ("ddpm",)


@dataclasses.dataclass
class ToyConfig:
    """Everything that defines a 2-D run (saved in the checkpoint's state.json)."""
    dataset: str = "swiss_roll"
    method: str = "ddpm"
    target: str = "eps"
    steps: int = 5000
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

    def validate(self):
        _checks.choice("dataset", self.dataset, sorted(DATASETS))
        _checks.choice("method", self.method, METHODS)
        _checks.choice("target", self.target, TARGETS)
        _checks.choice("backend", self.backend, ("numpy", "torch"))
        _checks.choice("dtype", self.dtype, ("float32", "float64"))
        _checks.choice("schedule", self.schedule, ("linear", "cosine"))
        for name in ("steps", "batch_size", "T", "hidden", "depth", "t_dim"):
            _checks.positive_int(name, getattr(self, name))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        return self


def lr_at(cfg: ToyConfig, k: int) -> float:
    """Linear warm-up over 100 steps, then cosine decay to 2 % of ``lr`` at step ``cfg.steps``."""
    warm = min(1.0, (k + 1) / 100)
    # a python float: a NumPy float64 scalar lr would promote float32 parameters to float64 in adam_update
    return float(cfg.lr * warm * (0.51 + 0.49 * np.cos(np.pi * min(k, cfg.steps) / cfg.steps)))


def train_toy(cfg: ToyConfig, progress: bool = True, callback=None) -> dict:
    """Train a DDPM on 2-D data.  Returns {'params', 'ema', 'losses', 'steps', 'seconds', 'config'}."""
    cfg.validate()
    dtype = np.dtype(cfg.dtype)
    alpha_bar = alpha_bars(make_betas(cfg.schedule, cfg.T))
    data_rng = np.random.default_rng(cfg.seed + 1)
    init = init_mlp(np.random.default_rng(cfg.seed), 2, cfg.hidden, cfg.depth, cfg.t_dim, dtype=dtype)
    step_fn, get_params = (_numpy_stepper if cfg.backend == "numpy" else _torch_stepper)(cfg, init, alpha_bar)
    noise_rng = generator(cfg.seed + 2, backend="numpy")
    ema = init
    losses = []
    steps = range(cfg.steps)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=f"train {cfg.dataset} ({cfg.backend})", mininterval=1.0)
    start = time.perf_counter()
    k = 0
    for k in steps:
        x0 = sample_toy(cfg.dataset, cfg.batch_size, data_rng).astype(dtype)        # (B, 2)
        t, noise = draw_ddpm_inputs(noise_rng, x0, cfg.T)
        losses.append(step_fn(x0, t, noise, lr_at(cfg, k)))
        ema = ema_update(ema, get_params(), cfg.ema_decay)
        if callback is not None:
            callback(k, losses[-1])
        if cfg.max_seconds and time.perf_counter() - start > cfg.max_seconds:
            break
    return {"params": get_params(), "ema": ema, "losses": np.asarray(losses), "steps": k + 1,
            "seconds": time.perf_counter() - start, "config": dataclasses.asdict(cfg)}


def _numpy_stepper(cfg, params, alpha_bar):
    """Autograd gradients and our AdamW (minidiff.nn.optim)."""
    def loss_fn(p, x0, t, noise):
        return ddpm_loss(partial(mlp, p), x0, t, noise, alpha_bar, cfg.target)

    grad_fn = value_and_grad(loss_fn)
    state = {"params": params, "opt": adam_init(params)}

    def step(x0, t, noise, lr):
        loss, grads = grad_fn(state["params"], x0, t, noise)
        grads = clip_grad_norm(grads, cfg.clip)
        state["params"], state["opt"] = adam_update(state["params"], grads, state["opt"], lr=lr)
        return float(loss)

    return step, lambda: state["params"]


def _torch_stepper(cfg, params, alpha_bar):
    """A TorchMLP with the same initial weights, loss.backward() and torch.optim.AdamW."""
    import torch

    from .torch.mlp import TorchMLP

    model = TorchMLP.from_params(params)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def step(x0, t, noise, lr):
        for group in opt.param_groups:
            group["lr"] = lr
        loss = ddpm_loss(model, torch.from_numpy(x0), torch.from_numpy(t), torch.from_numpy(noise),
                         alpha_bar, cfg.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        return float(loss.detach())

    return step, model.to_params


def sample_from_params(params, config: dict, n: int, seed: int = 0, backend: str = "numpy",
                       callback=None, progress: bool = False):
    """Draw ``n`` points with DDPM ancestral sampling from a trained 2-D model.  Returns (n, 2) numpy."""
    n = _checks.positive_int("n", n)
    betas = make_betas(config.get("schedule", "linear"), config["T"])
    alpha_bar = alpha_bars(betas)
    rng = generator(seed, backend=backend)
    if backend == "numpy":
        model = partial(mlp, [[np.asarray(W, np.float64), np.asarray(b, np.float64)] for W, b in params])
        x_T = rng.randn((n, 2))
    else:
        import torch

        from .torch.mlp import TorchMLP
        model = TorchMLP.from_params(params, dtype=torch.float64)
        x_T = rng.randn((n, 2), dtype=torch.float64)
    eps_model = as_eps_model(model, config.get("target", "eps"), alpha_bar)
    ctx = _no_grad(backend)
    with ctx:
        x0 = ddpm_sample(eps_model, x_T, betas, rng.randn_like, callback=callback, progress=progress)
    return x0 if backend == "numpy" else x0.detach().cpu().numpy()


def _no_grad(backend):
    import contextlib
    if backend == "torch":
        import torch
        return torch.no_grad()
    return contextlib.nullcontext()
