"""The one training loop of the PyTorch backend.  Every model minidiff trains (the diffusion
U-Nets of ``minidiff.torch.train``, and the autoencoders, text encoder and CLIP-style model
to come) is a ``Task`` handed to ``train_loop``, never a copy of it.

The loop owns what every model needs around its loss: the device (cuda, then mps, then cpu),
one or several processes (torchrun: DistributedDataParallel, every rank stopping at the same
step), generators seeded by (seed, stream, step), AdamW with a linear warm-up, gradient
clipping, bf16 autocast on CUDA, optional ``torch.compile``, an EMA of the weights, periodic
checkpoints that resume exactly (safetensors, ``minidiff.checkpoint``), a progress bar, and a
hook for sample grids.  Same seed, same numbers: nothing random is carried between steps.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .. import _checks, checkpoint
from ..methods import later_fields_filled
from ..nn import ema_update
from ..nn.optim import ema_warmup, inverse_sqrt_decay, power_ema_decay, power_ema_exponent


@dataclasses.dataclass
class LoopConfig:
    """The fields the loop reads (a trainer's config inherits them)."""
    steps: int = 3000
    batch_size: int = 64               # per process; torchrun with P processes trains on P * batch_size
    lr: float = 1e-3
    warmup: int = 200                  # linear learning-rate warm-up (steps), then constant (as EDM)
    lr_decay: int = 0                  # EDM2's 1 / sqrt(k / lr_decay) decay after step lr_decay (0: none)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_std: float = 0.0               # EDM2's power-function EMA of this relative width (0: the fixed ema_decay)
    clip: float = 1.0                  # gradient-norm clipping (0: off)
    seed: int = 0
    max_seconds: float = 0.0           # stop (and save) after this much training time (0: no limit)
    bf16: bool = True                  # autocast to bfloat16 (CUDA only)
    compile: bool = False              # torch.compile the model
    ckpt_every: int = 500
    sample_every: int = 1000           # call the task's sample hook every this many steps (0: never)
    n_grid: int = 64

    # Fields that may change between a run and its --resume (everything else must match).
    RESUMABLE_CHANGES = ("steps", "max_seconds", "ckpt_every", "sample_every", "n_grid", "compile")
    # Fields added after runs were saved without them; their defaults are what those runs did.
    LATER_FIELDS: ClassVar[tuple] = ("lr_decay", "ema_std")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate_loop(self):
        for name in ("steps", "batch_size"):
            _checks.int_at_least(name, getattr(self, name), 1)
        for name in ("warmup", "ckpt_every", "sample_every", "seed", "n_grid"):
            _checks.int_at_least(name, getattr(self, name), 0)
        for name, ok, allowed in (("lr", lambda v: v > 0, "> 0"), ("weight_decay", lambda v: v >= 0, ">= 0"),
                                  ("clip", lambda v: v >= 0, ">= 0 (0: off)"),
                                  ("max_seconds", lambda v: v >= 0, ">= 0 (0: no limit)"),
                                  ("ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
                                  ("ema_std", lambda v: 0 <= v < 12 ** -0.5, "in [0, 0.2887) (0: off)")):
            _checks.finite_number(name, getattr(self, name), ok, allowed)
        _checks.int_at_least("lr_decay", self.lr_decay, 0)
        return self


class Task:
    """What the loop trains.  ``build`` makes the model (after ``torch.manual_seed(cfg.seed)``,
    so every rank starts from the same weights), ``loss`` is this rank's loss at step k; the
    rest are optional hooks."""

    def build(self, device, dist: "Dist") -> nn.Module:
        raise NotImplementedError

    def extra_modules(self) -> dict:
        """More modules saved and restored with the model (e.g. a consistency target network)."""
        return {}

    def extra_optimizers(self) -> dict:
        """More optimisers (name -> torch.optim.Optimizer) that the task steps itself, e.g. a GAN
        discriminator's in ``after_step``; their state is saved and restored with the run."""
        return {}

    def start(self, model: nn.Module, ema: nn.Module):
        """Called once on a fresh (not resumed) run, e.g. to copy a teacher's weights."""

    def loss(self, net, k: int) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: nn.Module, k: int):
        """Called after each optimiser step (e.g. the consistency target's EMA)."""

    def sample(self, ema: nn.Module, path: Path):
        """Write samples of the EMA model to ``path`` (every ``cfg.sample_every`` steps)."""


def pick_device(name: str | None = None) -> torch.device:
    """The device to train on: ``name`` if given, else cuda, then mps, then cpu.  A name that is
    not a device, or one this machine lacks, is a ValueError naming it and what is available."""
    if name:
        return _available_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available_devices() -> list:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def _available_device(name) -> torch.device:
    """``torch.device(name)`` if this machine has it, else a ValueError listing what it has."""
    available = _available_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {name!r} is not a device name; this machine has: {', '.join(available)}") from None
    if device.type != "cpu" and str(device) not in available:
        raise ValueError(f"device {name!r} is not available on this machine; it has: {', '.join(available)}")
    return device


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one step's generator (stream 0: data order, 1: noise, 2: dropout, 3: sampling)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def lr_at(cfg, k: int) -> float:
    """The learning rate of step k (0-based): a linear warm-up reaching ``cfg.lr`` at step
    ``cfg.warmup - 1``, then constant (EDM Appendix F.3); ``cfg.warmup = 0`` means no warm-up."""
    # BEGIN SOLUTION
    # hint: cfg.lr * min(1, (k + 1) / max(cfg.warmup, 1))
    return cfg.lr * min(1.0, (k + 1) / max(cfg.warmup, 1))
    # END SOLUTION


_power_ema_exponent = functools.lru_cache(maxsize=8)(power_ema_exponent)   # one root-finding per run, not per step


def ema_decay_at(cfg, k: int) -> float:
    """The EMA's decay after step k: EDM2's power-function EMA of relative width ``cfg.ema_std``
    (the average covers the same fraction of the run however long it turns out), or, with
    ``ema_std = 0``, the fixed ``cfg.ema_decay`` after its warm-up."""
    if cfg.ema_std:
        return power_ema_decay(_power_ema_exponent(cfg.ema_std), k)
    return ema_warmup(cfg.ema_decay, k)


def batch_indices(n_images: int, global_batch: int, seed: int, k: int) -> np.ndarray:
    """The images of step k's global batch: epoch e = k // (n_images // global_batch) walks the
    permutation ``np.random.default_rng([seed, 0, e]).permutation(n_images)`` in consecutive
    slices (the last incomplete one is dropped), so every image is seen once per epoch and a
    resumed run draws the same batches.  Returns (global_batch,) int indices."""
    per_epoch = n_images // global_batch
    if per_epoch < 1:
        raise ValueError(f"the dataset has {n_images} images, fewer than one global batch ({global_batch}); "
                         "lower batch_size")
    # BEGIN SOLUTION
    # hint: epoch, j = divmod(k, n_images // global_batch); the epoch's permutation from
    # hint: np.random.default_rng([seed, 0, epoch]); return its slice j
    epoch, j = divmod(k, per_epoch)
    order = np.random.default_rng([seed, 0, epoch]).permutation(n_images)
    return order[j * global_batch:(j + 1) * global_batch]
    # END SOLUTION


def load_run(path, config_cls, model_field: str):
    """(tensors, config) of a checkpoint the loop wrote: the state's config loaded strictly into
    ``config_cls`` (whose ``model_field`` holds the model's own config) and validated; a state
    without them, another version's config or an invalid value is a ValueError naming it."""
    tensors, state = checkpoint.load_image_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ValueError(f"checkpoint {path} holds no 'config' dict in its state")
    what = f"the config of checkpoint {path}"
    if not isinstance(state["config"].get(model_field), dict):
        raise ValueError(f"{what} holds no {model_field!r} dict")
    cfg = config_cls.from_dict(state["config"], what)
    try:
        cfg.validate()
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    return tensors, cfg


@torch.no_grad()
def ema_into(avg: nn.Module, model: nn.Module, decay: float):
    """avg <- decay avg + (1 - decay) model, in place (``minidiff.nn.ema_update`` on the weights)."""
    params = list(avg.parameters())
    torch._foreach_copy_(params, ema_update(params, [p.detach() for p in model.parameters()], decay))


def frozen(net):
    """Evaluate ``net`` without building a graph (a teacher, an EMA target)."""
    def run(*args, **kwargs):
        with torch.no_grad():
            return net(*args, **kwargs)
    return run


# ----------------------------------------------------------------------------------------------
# Processes: one, or several under torchrun (DistributedDataParallel).

@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, global_batch: int) -> slice:
        """This rank's part of a global batch drawn identically on every rank."""
        B = global_batch // self.world
        return slice(self.rank * B, (self.rank + 1) * B)

    def setup(self, device=None) -> torch.device:
        """Join the process group (nccl on CUDA, gloo otherwise) and pick this rank's device."""
        if self.world > 1:
            import torch.distributed as torch_dist

            if torch.cuda.is_available() and device is None:
                device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(device)
            if not torch_dist.is_initialized():
                torch_dist.init_process_group("nccl" if torch.device(device or "cpu").type == "cuda" else "gloo")
        device = pick_device(str(device) if device is not None else None)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return device

    def agree(self, flag: bool, device) -> bool:
        """Every rank stops at the same step: the clock of any one rank decides."""
        if self.world == 1:
            return flag
        import torch.distributed as torch_dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self):
        if self.world > 1:
            import torch.distributed as torch_dist
            torch_dist.barrier()


# ----------------------------------------------------------------------------------------------
# The loop.

class _Run:
    """The state of one run: model, EMA, the task's extra modules, optimiser, losses."""

    def __init__(self, task: Task, cfg: LoopConfig, out: Path, device, dist: Dist):
        self.task, self.cfg, self.out, self.device, self.dist = task, cfg, out, device, dist
        torch.manual_seed(cfg.seed)                                    # the same initial weights on every rank
        self.model = task.build(device, dist).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                     weight_decay=cfg.weight_decay)
        self.losses, self.pending = [], []

    def modules(self) -> dict:
        return {"model": self.model, "ema": self.ema, **self.task.extra_modules()}

    def save(self, step: int):
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.opt.state_dict()["param_groups"]]
        tensors = checkpoint.module_tensors(self.modules(), self.opt)
        extra = {}
        for name, opt in self.task.extra_optimizers().items():      # under 'optim_<name>.', as 'optim.' above
            extra[name] = [{k: v for k, v in g.items() if k != "params"} for g in opt.state_dict()["param_groups"]]
            tensors.update({f"optim_{name}.{k[len('optim.'):]}": v
                            for k, v in checkpoint.module_tensors({}, opt).items()})
        state = {"step": step, "config": self.cfg.to_dict(), "optimizer": {"type": "AdamW", "param_groups": groups},
                 "rng": {"scheme": "per-step generators seeded by (seed, stream, step): nothing else to restore",
                         "seed": self.cfg.seed},
                 "recent_loss": float(np.mean(self.losses[-50:])) if self.losses else None,
                 "torch": torch.__version__}
        if extra:
            state["extra_optimizers"] = extra
        checkpoint.save_image_checkpoint(self.out, tensors, state)

    def resume(self, log) -> int:
        tensors, state = checkpoint.load_image_checkpoint(self.out)
        saved, now = later_fields_filled(type(self.cfg), state["config"]), self.cfg.to_dict()
        diff = sorted(k for k in now if k not in self.cfg.RESUMABLE_CHANGES
                      and checkpoint.json_norm(now[k]) != checkpoint.json_norm(saved.get(k)))
        if diff:
            raise ValueError(f"cannot resume from {self.out}: its run differs in {diff} "
                             f"(saved {[saved.get(k) for k in diff]}, asked {[now[k] for k in diff]})")
        checkpoint.load_modules(self.modules(), tensors, self.out)
        checkpoint.load_optimizer(self.opt, tensors, state["optimizer"]["param_groups"])
        for name, opt in self.task.extra_optimizers().items():
            if name not in state.get("extra_optimizers", {}):
                raise ValueError(f"cannot resume from {self.out}: it holds no state of the optimiser {name!r}")
            checkpoint.load_optimizer(opt, {f"optim.{k}": v for k, v in
                                            checkpoint.prefixed(tensors, f"optim_{name}").items()},
                                      state["extra_optimizers"][name])
        if log:
            log(f"resuming from {self.out} at step {state['step']}")
        return int(state["step"])

    def collect(self, k: int):
        """Move the pending loss tensors into ``losses``; a non-finite loss stops the run."""
        if not self.pending:
            return
        values = torch.stack(self.pending).float().tolist()
        self.pending.clear()
        self.losses.extend(values)
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"the loss became {bad[0]} by step {k}: lower lr (now {self.cfg.lr}) "
                                     "or turn on clip")

    def step(self, net, k: int):
        """One optimiser step: lr, this rank's loss under autocast, backward, clip, AdamW, EMA."""
        cfg = self.cfg
        torch.manual_seed(step_seed(cfg.seed, k, 2) + self.dist.rank)  # dropout
        for group in self.opt.param_groups:
            group["lr"] = lr_at(cfg, k) * inverse_sqrt_decay(cfg.lr_decay, k)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and cfg.bf16):
            loss = self.task.loss(net, k)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.opt.step()
        ema_into(self.ema, self.model, ema_decay_at(cfg, k))
        self.task.after_step(self.model, k)
        self.pending.append(loss.detach())                             # read back in groups: no GPU sync per step
        if len(self.pending) == 50:
            self.collect(k)

    def wrapped(self):
        """The model as the loss sees it: under DistributedDataParallel and/or torch.compile."""
        net = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                          else None)
        return torch.compile(net) if self.cfg.compile else net


def train_loop(task: Task, cfg: LoopConfig, out, resume: bool = False, device=None, progress: bool = True,
               log=print, desc: str = "train") -> dict:
    """Train ``task`` for ``cfg.steps`` steps, writing checkpoints (and the task's samples) into
    ``out``; with ``resume`` continue from ``out``'s checkpoint.  Under torchrun every process
    calls this (RANK / WORLD_SIZE / LOCAL_RANK from the environment); rank 0 writes.
    Returns {'steps', 'losses', 'seconds', 'examples_per_second', 'checkpoint'}."""
    out, dist = Path(out), Dist.from_env()
    with checkpoint.RunLock(out) if dist.main else contextlib.nullcontext():   # one writer per folder
        return _train(task, cfg, out, dist, dist.setup(device), resume, progress, log, desc)


def _train(task, cfg, out: Path, dist: Dist, device, resume, progress, log, desc) -> dict:
    run = _Run(task, cfg, out, device, dist)
    start = 0
    if resume and checkpoint.is_image_checkpoint(out):
        start = run.resume(log if dist.main else None)
    else:
        if resume and dist.main:
            log(f"no checkpoint in {out} to resume from: starting at step 0")
        task.start(run.model, run.ema)
    net, steps = run.wrapped(), range(start, cfg.steps)
    if progress and dist.main:
        from tqdm.auto import tqdm
        steps = tqdm(steps, initial=start, total=cfg.steps, desc=f"{desc} ({device})", mininterval=2.0)
    run.model.train()
    t0, k = time.perf_counter(), start
    for k in steps:
        run.step(net, k)
        stop = dist.agree(bool(cfg.max_seconds) and time.perf_counter() - t0 > cfg.max_seconds, device) \
            if cfg.max_seconds else False
        done = stop or k + 1 == cfg.steps
        if done or (cfg.ckpt_every and (k + 1) % cfg.ckpt_every == 0):
            run.collect(k)
            if dist.main:
                run.save(k + 1)
        if dist.main and cfg.sample_every and ((k + 1) % cfg.sample_every == 0 or done):
            task.sample(run.ema, out / "samples" / f"step_{k + 1:07d}.png")
        if stop:
            break
    seconds = time.perf_counter() - t0
    n_steps = (k + 1 - start) if cfg.steps > start else 0
    dist.barrier()
    return {"steps": k + 1 if cfg.steps > start else start, "losses": run.losses, "seconds": seconds,
            "examples_per_second": n_steps * cfg.batch_size * dist.world / max(seconds, 1e-9), "checkpoint": out}
