"""Training the image models: DDPM, EDM, consistency distillation and consistency training of a
U-Net on Fashion-MNIST (or any dataset of ``minidiff.data.images``), on one device or on several
with ``torchrun``.

The losses, each method's randomness and the samplers are the core's (``minidiff.train.Objective``,
``minidiff.samplers``), the very functions the 2-D lessons build; this file adds what real models
need around them: AdamW with warm-up, EMA, gradient clipping, bf16 autocast on CUDA, optional
``torch.compile``, DistributedDataParallel, sample grids, and checkpoints that resume exactly.

    minidiff train --backend torch --dataset fashion-mnist --method edm --preset cpu --out runs/fmnist
    torchrun --nproc_per_node 2 -m minidiff.cli train --backend torch --dataset fashion-mnist ...

Same seed, same numbers: every step's batch, noise and dropout come from generators seeded by
(seed, step), so a resumed run draws exactly what an uninterrupted one would have drawn.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import _checks
from ..backend import generator
from ..checkpoint import is_image_checkpoint, load_image_checkpoint, save_image_checkpoint
from ..data.images import DATASETS as IMAGE_DATASETS
from ..data.images import load_images, random_flip, to_model_range
from ..guidance import classifier_free_guidance, drop_labels
from ..train import Objective, raw_to_model, run_sampler
from .unet import UNet, UNetConfig

METHODS = ("ddpm", "edm", "cd", "ct", "ict")

# Presets: 'cpu' shows recognisable Fashion-MNIST samples after minutes on a laptop CPU, 'gpu' is
# a real run for one GPU, 'tiny' is for tests.  Any field can be overridden on the command line.
# 'attention_levels' index the U-Net's resolutions (-1: the lowest), whatever the image size.
PRESETS = {
    "tiny": dict(steps=20, batch_size=16, lr=1e-3, warmup=5, ckpt_every=10, sample_every=0, n_grid=16,
                 unet=dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, dropout=0.0, groups=4),
                attention_levels=()),
    "cpu": dict(steps=2000, batch_size=32, lr=1e-3, warmup=100, ckpt_every=250, sample_every=500,
                unet=dict(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, dropout=0.0),
                attention_levels=(-1,)),
    "gpu": dict(steps=40000, batch_size=256, lr=1e-3, warmup=1000, ckpt_every=2000, sample_every=5000,
                ema_decay=0.9995,
                unet=dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, dropout=0.1),
                attention_levels=(-2, -1)),
}
# The image size and channels of each built-in dataset ('folder': whatever the user asks for).
DATASET_SHAPES = {"fashion-mnist": (1, 28), "mnist-subset": (1, 28), "digits": (1, 8)}
NUM_CLASSES = {"fashion-mnist": 10, "mnist-subset": 10, "digits": 10}
# Fields that may change between a run and its --resume (everything else must match).
RESUMABLE_CHANGES = ("steps", "max_seconds", "ckpt_every", "sample_every", "n_grid", "compile")


@dataclasses.dataclass
class ImageConfig:
    """Everything that defines an image run (saved in the checkpoint).  Field names follow
    ``minidiff.train.ToyConfig`` so that ``Objective`` serves both."""
    dataset: str = "fashion-mnist"
    data_root: str = ""                # a folder with the dataset's files ('' : the default place)
    limit: int = 0                     # train on the first `limit` images only (0: all)
    method: str = "edm"
    target: str = "eps"                # 'ddpm': what the network predicts
    T: int = 1000                      # 'ddpm': diffusion steps
    schedule: str = "linear"           # 'ddpm'
    scheme: str = "edm"                # 'edm': the column of EDM's Table 1
    sigma_data: float = 0.5
    teacher: str = ""                  # 'cd': checkpoint of an 'edm' model
    cm_N: int = 18                     # 'cd'
    cm_mu: float = 0.95                # 'cd'
    metric: str = "l2"                 # 'cd', 'ct'
    steps: int = 3000
    batch_size: int = 64               # per process; torchrun with P processes trains on P * batch_size
    lr: float = 1e-3
    warmup: int = 200                  # linear learning-rate warm-up (steps), then constant (as EDM)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    clip: float = 1.0                  # gradient-norm clipping (0: off)
    flip: bool = False                 # random left-right flips
    class_conditional: bool = False    # feed the labels to the U-Net (unet.num_classes = the number of classes)
    p_uncond: float = 0.1              # class_conditional: drop a label to the null class with this probability
                                       # (trains the unconditional model classifier-free guidance needs)
    seed: int = 0
    max_seconds: float = 0.0           # stop (and save) after this much training time (0: no limit)
    bf16: bool = True                  # autocast to bfloat16 (CUDA only)
    compile: bool = False              # torch.compile the U-Net
    ckpt_every: int = 500
    sample_every: int = 1000           # write samples/step_XXXXXXX.png (0: never)
    n_grid: int = 64
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)

    def __post_init__(self):
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)

    def validate(self):
        _checks.choice("dataset", self.dataset, IMAGE_DATASETS)
        _checks.choice("method", self.method, METHODS)
        _checks.choice("schedule", self.schedule, ("linear", "cosine"))
        _checks.choice("metric", self.metric, ("l2", "l1", "pseudo_huber"))
        for name in ("steps", "batch_size", "T", "cm_N"):
            _checks.positive_int(name, getattr(self, name))
        for name in ("warmup", "ckpt_every", "sample_every", "limit", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        if self.class_conditional and self.unet.num_classes is None:
            raise ValueError("class_conditional needs unet.num_classes (from_preset sets it for the built-in datasets)")
        if self.method == "cd" and not self.teacher:
            raise ValueError("method 'cd' needs teacher: the checkpoint of an image 'edm' model")
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """A preset, with the U-Net sized for ``overrides['dataset']`` and any field overridden
        (``unet`` fields by a dict)."""
        _checks.choice("preset", name, tuple(PRESETS))
        preset = dict(PRESETS[name])
        levels = preset.pop("attention_levels")
        fields = {**preset, **{k: v for k, v in overrides.items() if k != "unet"}}
        C, size = DATASET_SHAPES.get(fields.get("dataset", "fashion-mnist"), (1, 28))
        unet = {"in_channels": C, "image_size": size, **preset["unet"], **overrides.get("unet", {})}
        if fields.get("class_conditional") and "num_classes" not in overrides.get("unet", {}):
            unet["num_classes"] = NUM_CLASSES.get(fields.get("dataset", "fashion-mnist"))
        if "attention_resolutions" not in overrides.get("unet", {}):
            res = [unet["image_size"] // 2 ** i for i in range(len(unet["channel_mults"]))]
            unet["attention_resolutions"] = tuple(sorted({res[i] for i in levels}))
        fields["unet"] = unet
        return cls(**fields)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pick_device(name: str | None = None) -> torch.device:
    """The device to train on: ``name`` if given, else cuda, then mps, then cpu."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one step's generator (stream 0: data order, 1: noise, 2: dropout)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def lr_at(cfg: ImageConfig, k: int) -> float:
    """The learning rate of step k (0-based): a linear warm-up reaching ``cfg.lr`` at step
    ``cfg.warmup - 1``, then constant (EDM Appendix F.3); ``cfg.warmup = 0`` means no warm-up."""
    # BEGIN SOLUTION
    # hint: cfg.lr * min(1, (k + 1) / max(cfg.warmup, 1))
    return cfg.lr * min(1.0, (k + 1) / max(cfg.warmup, 1))
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# Data: the whole training set lives on the device as uint8 (Fashion-MNIST: 47 MB).

def load_training_images(cfg: ImageConfig, device):
    """(images (N, C, H, W) uint8, labels (N,) int64), both on ``device``, checked against the U-Net."""
    images, labels = load_images(cfg.dataset, "train", root=cfg.data_root or None, limit=cfg.limit or None,
                            image_size=cfg.unet.image_size if cfg.dataset == "folder" else None,
                            channels=cfg.unet.in_channels)
    _, C, H, W = images.shape
    u = cfg.unet
    if C != u.in_channels or (H, W) != (u.image_size, u.image_size):
        raise ValueError(f"dataset {cfg.dataset!r} has {C}x{H}x{W} images but the U-Net takes "
                         f"in_channels={u.in_channels}, image_size={u.image_size}: set unet in_channels/image_size "
                         f"to {C} and {H}")
    if cfg.class_conditional and labels.max() >= u.num_classes:
        raise ValueError(f"dataset {cfg.dataset!r} has labels up to {labels.max()} but unet.num_classes is "
                         f"{u.num_classes}")
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)


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


# ----------------------------------------------------------------------------------------------
# Processes: one, or several under torchrun (DistributedDataParallel).

@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "_Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _frozen(net):
    """Evaluate ``net`` without building a graph (a teacher, an EMA target)."""
    def run(*args, **kwargs):
        with torch.no_grad():
            return net(*args, **kwargs)
    return run


def _state_tensors(model, ema, opt, target=None) -> dict:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    if target is not None:
        tensors.update({f"target.{k}": v for k, v in target.state_dict().items()})
    for i, s in opt.state_dict()["state"].items():
        for name, v in s.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(v)
    return tensors


def _prefixed(tensors: dict, prefix: str) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _load_module(module: nn.Module, tensors: dict, what: str, file):
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"checkpoint {file} holds a different architecture than the one asked for ({what}): "
                         f"{first[0] if first else e}") from None


def model_from_checkpoint(path, device="cpu", use_ema: bool = True):
    """(U-Net with the checkpoint's weights, in eval mode; the run's config dict)."""
    tensors, state = load_image_checkpoint(path)
    cfg = ImageConfig(**state["config"])
    net = UNet(cfg.unet)
    _load_module(net, _prefixed(tensors, "ema" if use_ema else "model"), "ema" if use_ema else "model", path)
    return net.to(device).eval(), state["config"]


# ----------------------------------------------------------------------------------------------
# The training loop.

def train_images(cfg: ImageConfig, out, resume: bool = False, device=None, progress: bool = True,
                 log=print) -> dict:
    """Train ``cfg.method`` on ``cfg.dataset``; write checkpoints and sample grids into ``out``.
    With ``resume`` continue from ``out``'s checkpoint.  Under torchrun every process calls this
    (RANK / WORLD_SIZE / LOCAL_RANK from the environment); rank 0 writes.
    Returns {'steps', 'losses', 'seconds', 'images_per_second', 'checkpoint'}."""
    cfg.validate()
    out = Path(out)
    dist = _Dist.from_env()
    if dist.world > 1:
        import torch.distributed as torch_dist

        if torch.cuda.is_available() and device is None:
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if torch.device(device or "cpu").type == "cuda" else "gloo")
    device = pick_device(str(device) if device is not None else None)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data, labels = load_training_images(cfg, device)                   # (N, C, H, W) uint8, (N,) int64
    torch.manual_seed(cfg.seed)                                        # the same initial weights on every rank
    model = UNet(cfg.unet).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    target = copy.deepcopy(model).requires_grad_(False).eval() if cfg.method in ("cd", "ct") else None
    teacher_D = None
    if cfg.method == "cd":
        teacher, t_config = model_from_checkpoint(cfg.teacher, device)
        if t_config["method"] != "edm":
            raise ValueError(f"the teacher must be an 'edm' model, {cfg.teacher} holds {t_config['method']!r}")
        if json_norm(dataclasses.asdict(cfg.unet)) != json_norm(t_config["unet"]):
            raise ValueError("method 'cd' starts from the teacher's weights: its unet config must equal the teacher's")
        teacher.requires_grad_(False)
        teacher_D = raw_to_model(_frozen(teacher), t_config)
        for m in (model, ema, target):                                 # CM: initialise from the teacher
            m.load_state_dict(teacher.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    start = 0
    if resume and is_image_checkpoint(out):
        start = _resume(out, cfg, model, ema, target, opt, log if dist.main else None)
    elif resume and dist.main:
        log(f"no checkpoint in {out} to resume from: starting at step 0")

    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if cfg.compile:
        net = torch.compile(net)

    objective = Objective(cfg)
    B, GB = cfg.batch_size, cfg.batch_size * dist.world
    shape = (GB,) + tuple(data.shape[1:])
    mine = slice(dist.rank * B, (dist.rank + 1) * B)                   # this rank's part of the global batch
    # losses that sum over pixels are divided by their number, so clipping and the lr see per-pixel sizes
    per_pixel = 1.0 if cfg.method == "ddpm" else 1.0 / float(np.prod(data.shape[1:]))
    config = cfg.to_dict()
    losses, pending, t0, k = [], [], time.perf_counter(), start
    steps = range(start, cfg.steps)
    if progress and dist.main:
        from tqdm.auto import tqdm
        steps = tqdm(steps, initial=start, total=cfg.steps, desc=f"{cfg.method} on {cfg.dataset} ({device})",
                     mininterval=2.0)
    model.train()
    stop = False
    for k in steps:
        # this step's batch and randomness: seeded by (seed, step), drawn for the global batch, sliced
        idx = torch.from_numpy(batch_indices(len(data), GB, cfg.seed, k)).to(device)
        x0 = to_model_range(data[idx])                                 # (GB, C, H, W) in [-1, 1]
        model_kwargs = {}
        if cfg.class_conditional:                                      # CFG Algorithm 1: some labels -> null
            y = drop_labels(labels[idx], cfg.p_uncond, cfg.unet.num_classes, np.random.default_rng([cfg.seed, 5, k]))
            model_kwargs = {"class_labels": y[mine]}
        noise_rng = generator(step_seed(cfg.seed, k, 1), backend="torch", device=device)
        if cfg.flip:
            x0 = random_flip(x0, noise_rng)
        z = noise_rng.randn(shape, dtype=torch.float32)                # (GB, C, H, W)
        draws = objective.draw(generator(step_seed(cfg.seed, k, 1), backend="numpy"), shape, k, np.float32, z=z)
        draws = {name: (v[mine] if name != "boundaries" else v) for name, v in draws.items()}
        draws = {name: torch.as_tensor(v, device=device) for name, v in draws.items()}
        torch.manual_seed(step_seed(cfg.seed, k, 2) + dist.rank)       # dropout
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, k)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16):
            target_net = {"cd": target, "ct": target, "ict": model}.get(cfg.method)
            loss = per_pixel * objective.loss(net, x0[mine], draws, _frozen(target_net) if target_net else None,
                                              teacher_D, **model_kwargs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + k) / (10 + k))             # EMA warm-up, as in the lessons
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
            if target is not None:
                mu = objective.levels(k)[1]
                torch._foreach_lerp_(list(target.parameters()), list(model.parameters()), 1 - mu)
        pending.append(loss.detach())                                  # read back in groups: no GPU sync per step
        if len(pending) == 50 or k + 1 == cfg.steps:
            _collect(pending, losses, k, cfg)
        if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
            stop = _agree(True, dist, device)
        elif cfg.max_seconds:
            stop = _agree(False, dist, device)
        done = stop or k + 1 == cfg.steps
        if done or (cfg.ckpt_every and (k + 1) % cfg.ckpt_every == 0):
            _collect(pending, losses, k, cfg)
        if dist.main and (done or (cfg.ckpt_every and (k + 1) % cfg.ckpt_every == 0)):
            _save(out, cfg, model, ema, target, opt, k + 1, losses)
        if dist.main and cfg.sample_every and ((k + 1) % cfg.sample_every == 0 or done):
            save_grid(ema, config, out / "samples" / f"step_{k + 1:07d}.png", cfg.n_grid, device=device)
        if stop:
            break
    seconds = time.perf_counter() - t0
    n_steps = (k + 1 - start) if cfg.steps > start else 0
    if dist.world > 1:
        import torch.distributed as torch_dist

        torch_dist.barrier()
    return {"steps": k + 1 if cfg.steps > start else start, "losses": losses, "seconds": seconds,
            "images_per_second": n_steps * GB / max(seconds, 1e-9), "checkpoint": out}


def _collect(pending: list, losses: list, k: int, cfg):
    """Move the pending loss tensors into ``losses``; a non-finite loss stops the run."""
    if not pending:
        return
    values = torch.stack(pending).float().tolist()
    pending.clear()
    losses.extend(values)
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"the loss became {bad[0]} by step {k}: lower lr (now {cfg.lr}) or turn on clip")


def _agree(flag: bool, dist: _Dist, device) -> bool:
    """Every rank stops at the same step: the clock of any one rank decides."""
    if dist.world == 1:
        return flag
    import torch.distributed as torch_dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item())


def _save(out: Path, cfg, model, ema, target, opt, step: int, losses):
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.state_dict()["param_groups"]]
    state = {"step": step, "config": cfg.to_dict(), "optimizer": {"type": "AdamW", "param_groups": groups},
             "rng": {"scheme": "per-step generators seeded by (seed, stream, step): nothing else to restore",
                     "seed": cfg.seed},
             "recent_loss": float(np.mean(losses[-50:])) if losses else None,
             "torch": torch.__version__}
    save_image_checkpoint(out, _state_tensors(model, ema, opt, target), state)


def _resume(out: Path, cfg, model, ema, target, opt, log) -> int:
    tensors, state = load_image_checkpoint(out)
    saved = state["config"]
    now = cfg.to_dict()
    diff = sorted(k for k in now if k not in RESUMABLE_CHANGES and json_norm(now[k]) != json_norm(saved.get(k)))
    if diff:
        raise ValueError(f"cannot resume from {out}: its run differs in {diff} "
                         f"(saved {[saved.get(k) for k in diff]}, asked {[now[k] for k in diff]})")
    _load_module(model, _prefixed(tensors, "model"), "model", out)
    _load_module(ema, _prefixed(tensors, "ema"), "ema", out)
    if target is not None:
        _load_module(target, _prefixed(tensors, "target"), "target", out)
    opt_state = {"state": {}, "param_groups": []}
    for name, v in _prefixed(tensors, "optim").items():
        i, key = name.split(".", 1)
        opt_state["state"].setdefault(int(i), {})[key] = v
    ids = list(range(len(list(model.parameters()))))
    opt_state["param_groups"] = [{**g, "params": ids} for g in state["optimizer"]["param_groups"]]
    opt.load_state_dict(opt_state)
    if log:
        log(f"resuming from {out} at step {state['step']}")
    return int(state["step"])


def json_norm(v):
    """Compare configs the way JSON stores them (tuples become lists)."""
    import json
    return json.loads(json.dumps(v, default=lambda o: dataclasses.asdict(o)))


# ----------------------------------------------------------------------------------------------
# Sampling.

def default_sampler(config: dict):
    """(sampler, steps) when none is asked for: Heun-18 (35 NFE) for EDM, DDIM-50 for DDPM,
    one step for consistency models."""
    return {"ddpm": ("ddim", 50), "edm": ("heun", 18)}.get(config["method"], ("consistency", 1))


@torch.no_grad()
def sample_images(net, config: dict, n: int, sampler=None, steps=None, seed: int = 0, batch_size: int = 256,
                  eta: float = 0.0, device=None, progress: bool = False, class_labels=None,
                  guidance: float | None = None, **sampler_kwargs) -> torch.Tensor:
    """``n`` images from the trained U-Net ``net`` with one of the core's samplers, in the model
    range [-1, 1]: (n, C, H, W) float32 on the CPU.  Batches are seeded by (seed, batch number).
    A class-conditional model draws class ``class_labels[i]`` for image i (default: i mod the
    number of classes; the null class num_classes gives the unconditional model), with
    classifier-free guidance of strength ``guidance`` (Ho & Salimans' w; None: no guidance)."""
    from ..train import SAMPLERS

    n = _checks.positive_int("n", n)
    d_sampler, d_steps = default_sampler(config)
    sampler = sampler or d_sampler
    steps = _checks.positive_int("steps", steps if steps is not None else d_steps)
    _checks.choice(f"sampler (for a '{config['method']}' model)", sampler, SAMPLERS[config["method"]])
    device = torch.device(device) if device is not None else next(net.parameters()).device
    model = raw_to_model(net, config)
    u = config["unet"]
    labels = None
    if config.get("class_conditional"):
        labels = (torch.arange(n) % u["num_classes"]) if class_labels is None else torch.as_tensor(class_labels)
        if labels.shape != (n,) or labels.min() < 0 or labels.max() > u["num_classes"]:
            raise ValueError(f"class_labels must be {n} integers in [0, {u['num_classes']}], got shape "
                             f"{tuple(labels.shape)}")
    elif class_labels is not None:
        raise ValueError("class_labels were given but this model is unconditional")
    if guidance is not None:
        if not config.get("class_conditional"):
            raise ValueError("guidance needs a class-conditional model (train with --class-conditional)")
        model = classifier_free_guidance(model, guidance, null_label=u["num_classes"])
    chunks = []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"sampling {n} ({sampler}, {steps} steps)")
    for i, s in enumerate(starts):
        b = min(batch_size, n - s)
        rng = generator(step_seed(seed, i, 3), backend="torch", device=device)
        z = rng.randn((b, u["in_channels"], u["image_size"], u["image_size"]), dtype=torch.float32)
        mk = {"class_labels": labels[s:s + b].to(device)} if labels is not None else {}
        x = run_sampler(model, config, sampler, steps, eta, z, rng, kwargs=sampler_kwargs, model_kwargs=mk)
        chunks.append(x.float().cpu())
    return torch.cat(chunks)


def save_grid(net, config: dict, path, n: int = 64, seed: int = 0, device=None, **kwargs) -> Path:
    """Sample ``n`` images and save them as one PNG grid."""
    from ..plot import save_image_grid

    was_training = net.training
    net.eval()
    x = sample_images(net, config, n, seed=seed, device=device, **kwargs)
    net.train(was_training)
    return save_image_grid(x, path)
