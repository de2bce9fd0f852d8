"""The `minidiff` command: demo, train, sample, eval, check, data."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------------------------
# Argument types: each refuses a bad value with one line naming what is allowed (argparse adds
# the option's name), before any work starts.

def int_at_least(lo: int):
    """An argparse type: an integer >= ``lo``."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def float_in(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, allow_inf: bool = False):
    """An argparse type: a number in [lo, hi] (or (lo, hi] with ``lo_open``), finite unless
    ``allow_inf`` (never NaN)."""
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        ok = not math.isnan(v) and (allow_inf or math.isfinite(v)) and (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            bounds = [f"> {lo:g}" if lo_open else f">= {lo:g}"] if lo > -math.inf else []
            bounds += [f"<= {hi:g}"] if hi < math.inf else []
            kind = "a number (inf allowed)" if allow_inf else "a finite number"
            raise argparse.ArgumentTypeError(f"must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, "
                                             f"got {text!r}")
        return v
    parse.__name__ = "number"
    return parse


def url(text):
    """An argparse type: an http(s):// or file:// address."""
    if not text.startswith(("http://", "https://", "file://")):
        raise argparse.ArgumentTypeError(f"must start with http://, https:// or file://, got {text!r}")
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, with every error one line on stderr ('minidiff train: error: --n must be ...')
    and exit code 2."""

    def error(self, message):
        message = re.sub(r"^argument (\S+?)(/\S+)?: (must)", r"\1 \3", message)
        message = re.sub(r"^argument (\S+?)(/\S+)?: ", r"\1: ", message)
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text) -> str:
    return " ".join(str(text).split())


class UsageError(ValueError):
    """A bad combination of command-line options."""


def _writable_target(option: str, path, is_file: bool = False):
    """Refuse before any work an --out that cannot be written: a file where a folder is wanted
    (or the reverse), below a file, or in a folder we may not write to."""
    path = Path(path)
    if path.exists() and (path.is_dir() if is_file else not path.is_dir()):
        raise UsageError(f"{option} {path} is a {'folder' if path.is_dir() else 'file'}, "
                         f"not a {'file' if is_file else 'folder'}")
    parent = path if path.is_dir() else path.parent                # an existing file is rewritten in place
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or _read_only_fs(parent):
        raise UsageError(f"{option} {path}: cannot write into {parent} (permission denied or read-only)")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _add_train_args(p, defaults):
    from .data.images import DATASETS as IMAGE_DATASETS
    from .data.toy2d import DATASETS
    from .diffusion import TARGETS
    from .methods import METHODS, METRICS, SCHEDULES, SCHEMES

    p.add_argument("--dataset", default=defaults.dataset, choices=sorted(DATASETS) + list(IMAGE_DATASETS),
                   help="a 2-D dataset, or an image dataset (needs --backend torch)")
    p.add_argument("--method", default=None, choices=METHODS, help="training method (default: ddpm for 2-D "
                   "data, edm for images)")
    p.add_argument("--target", default=defaults.target, choices=TARGETS,
                   help="method ddpm: what the network predicts")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="optimiser steps (default: 8000 for 2-D "
                   "data, the preset's for images)")
    p.add_argument("--batch-size", type=int_at_least(1), default=None, help="(images: per process)")
    p.add_argument("--lr", type=float_in(0, lo_open=True), default=None)
    p.add_argument("--T", type=int_at_least(1), default=defaults.T, help="diffusion steps")
    p.add_argument("--schedule", default=defaults.schedule, choices=SCHEDULES)
    p.add_argument("--max-seconds", type=float_in(0), default=None,
                   help="stop training after this many seconds (0: no limit)")
    p.add_argument("--seed", type=int_at_least(0), default=defaults.seed)
    p.add_argument("--backend", default=defaults.backend, choices=("numpy", "torch"))
    p.add_argument("--scheme", default=defaults.scheme, choices=SCHEMES,
                   help="method edm: which column of EDM's Table 1 (preconditioning, noise levels, weighting)")
    p.add_argument("--P-mean", type=float_in(), default=None,
                   help="method edm, scheme edm: training noise levels ln(sigma) ~ N(P_mean, P_std^2) (default "
                        "EDM's -1.2; latent models -1.2 + ln 2)")
    p.add_argument("--P-std", type=float_in(0, lo_open=True), default=None,
                   help="(default EDM's 1.2; latent models 1.0)")
    p.add_argument("--teacher", default="", help="method cd: checkpoint folder of an edm model")
    p.add_argument("--cm-N", type=int_at_least(2), default=defaults.cm_N, help="method cd: number of noise levels")
    p.add_argument("--metric", default=defaults.metric, choices=METRICS,
                   help="methods cd, ct: the consistency distance")
    p.add_argument("--out", default=None, help="output folder (checkpoint and plots; default runs/toy or "
                   "runs/<dataset>-<method>)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue from the checkpoint in --out, exactly where it stopped")
    p.add_argument("--ckpt-every", type=int_at_least(0), default=None,
                   help="steps between checkpoints (0: only at the end; default 1000 for 2-D data, the preset's "
                        "for images)")
    # image-only options default to None, so that one given on a 2-D run is noticed (IMAGE_ONLY)
    g = p.add_argument_group("image models (--backend torch with an image dataset)")
    g.add_argument("--preset", default=None, choices=("tiny", "cpu", "gpu"),
                   help="model size and schedule: cpu (minutes on a laptop; the default), gpu (one GPU), "
                        "tiny (tests)")
    g.add_argument("--data-root", default=None, help="folder with the dataset's files (default: its usual place)")
    g.add_argument("--limit", type=int_at_least(1), default=None, help="train on the first LIMIT images only")
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
    g.add_argument("--sample-every", type=int_at_least(0), default=None,
                   help="steps between sample grids (0: never)")
    g.add_argument("--warmup", type=int_at_least(0), default=None, help="learning-rate warm-up steps")
    g.add_argument("--lr-decay", type=int_at_least(0), default=None, metavar="K",
                   help="EDM2's learning-rate decay: lr / sqrt(step / K) after step K (0: constant, the default)")
    g.add_argument("--ema-std", type=float_in(0, 0.288), default=None, metavar="S",
                   help="EDM2's power-function EMA whose average spans a fraction S of the run, however long "
                        "(0 < S < 0.289, e.g. 0.1; default: the preset's fixed EMA decay)")
    g.add_argument("--flip", action="store_true", default=None, help="random left-right flips")
    g.add_argument("--augment", type=float_in(0, 1), default=None, metavar="P",
                   help="EDM's non-leaking augmentation: flips, shifts and scalings, each with probability P "
                        "(0 <= P < 1), told to the U-Net as augment labels (zero when sampling); not with --flip")
    g.add_argument("--class-conditional", action="store_true", default=None,
                   help="give the U-Net the labels (10%% dropped to a null class, for classifier-free guidance)")
    g.add_argument("--condition", default=None, choices=("text", "layout", "class"),
                   help="text: train a text-to-image model on Fashion-MNIST captions (cross-attention on a text "
                        "encoder trained jointly; captions dropped to \"\" with probability p_uncond); layout: "
                        "a layout-to-image model on 56x56 canvases of 2-3 garments (their boxes dropped to the "
                        "empty layout with probability p_uncond); class: a class-conditional model whose label "
                        "reaches the U-Net as one cross-attention token (LDM's tau for classes) instead of "
                        "--class-conditional's embedding added to the time embedding")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the U-Net")
    g.add_argument("--image-size", type=int_at_least(1), default=None, help="dataset folder: resize to this size")
    g.add_argument("--channels", type=int, default=None, choices=(1, 3), help="dataset folder: 1 grey, 3 RGB")
    g.add_argument("--no-bf16", action="store_true", default=None, help="train in float32 on CUDA too")
    g.add_argument("--model", default=None, choices=("unet", "autoencoder"),
                   help="unet: a diffusion model (the default); autoencoder: the first stage of a latent model")
    g.add_argument("--reg", default=None, choices=("kl", "vq"),
                   help="--model autoencoder: KL towards N(0, I) (the default) or a VQ codebook")
    g.add_argument("--factor", type=int, default=None, choices=(1, 2, 4, 8),
                   help="--model autoencoder: the downsampling factor f (default: the preset's, 4; 28x28 images are "
                        "padded with background to 32x32 where f = 4 or 8 needs it)")
    g.add_argument("--latent-channels", type=int_at_least(1), default=None,
                   help="--model autoencoder: the latent's channels c (default: the preset's)")
    g.add_argument("--disc-weight", type=float_in(0), default=None, metavar="W",
                   help="--model autoencoder: the PatchGAN term's weight (LDM's adaptive weight times W; 0: no "
                        "discriminator, the default)")
    g.add_argument("--disc-start", type=int_at_least(0), default=None, metavar="K",
                   help="--model autoencoder: the step from which the discriminator trains and its term counts")
    g.add_argument("--autoencoder", default=None, metavar="DIR",
                   help="train a latent model on the latents of this autoencoder checkpoint")
    p.set_defaults(image_only={a.option_strings[0]: a.dest for a in g._group_actions})


def _given(args, *names) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _config_from(args):
    from .train import ToyConfig

    return ToyConfig(dataset=args.dataset, method=args.method or "ddpm", target=args.target,
                     **_given(args, "steps", "batch_size", "lr", "max_seconds", "ckpt_every", "P_mean", "P_std"),
                     T=args.T, schedule=args.schedule, seed=args.seed, backend=args.backend, scheme=args.scheme,
                     teacher=args.teacher, cm_N=args.cm_N, metric=args.metric)


def _image_config_from(args):
    from .torch.train import ImageConfig

    return ImageConfig.from_preset(
        args.preset or "cpu", dataset=args.dataset, method=args.method or "edm", target=args.target, T=args.T,
        schedule=args.schedule, seed=args.seed, scheme=args.scheme, teacher=args.teacher, cm_N=args.cm_N,
        metric=args.metric, data_root=args.data_root or "", limit=args.limit or 0, flip=bool(args.flip),
        augment=args.augment or 0.0,
        compile=bool(args.compile), class_conditional=bool(args.class_conditional), condition=args.condition or "",
        bf16=not args.no_bf16, autoencoder=args.autoencoder or "", unet={k: v for k, v in (("image_size", args.image_size), ("in_channels", args.channels))
                                        if v is not None},
        **_given(args, "steps", "batch_size", "lr", "max_seconds", "ckpt_every", "sample_every", "warmup",
                 "lr_decay", "ema_std", "P_mean", "P_std"))


def _train_and_save(cfg, out: Path, resume: bool = False):
    from .train import train_toy

    _toy_backend(cfg.backend)
    result = train_toy(cfg, progress=True, out=out, resume=resume)
    print(f"trained {result['steps']} steps in {result['seconds']:.1f} s "
          f"(final loss {np.mean(result['losses'][-100:]):.4f}); checkpoint in {out}/")
    return result


def _toy_backend(name: str):
    """The torch backend of the 2-D trainer comes with the torch package (it registers itself)."""
    if name == "torch":
        import minidiff.torch  # noqa: F401


def _sample_and_report(params, config, out: Path, n: int, seed: int, backend: str, gif: bool,
                       sampler=None, steps=None, eta=0.0, sampler_kwargs=None):
    from . import plot

    _toy_backend(backend)
    from .data.toy2d import sample_toy
    from .metrics import sliced_wasserstein_report
    from .train import ToyConfig, sample_from_params

    config = ToyConfig.from_dict(config)
    sampler = sampler or config.default_sampler()[0]
    frames, labels = [], []

    def keep(info):
        if sampler != "ddpm" or info["i"] % 50 == 0:
            frames.append(np.asarray(info["x"]))
            labels.append(f"step {len(frames)}")

    t0 = time.perf_counter()
    samples = sample_from_params(params, config, n, seed=seed, backend=backend, sampler=sampler, steps=steps,
                                 eta=eta, callback=keep if gif else None, progress=True, **(sampler_kwargs or {}))
    seconds = time.perf_counter() - t0
    # like with like: the model's distance to 5 fresh data sets against 5 data-vs-data pairs
    data = [sample_toy(config.dataset, n, 10_000 + seed + i) for i in range(5)]
    fresh = [sample_toy(config.dataset, n, 20_000 + seed + i) for i in range(5)]
    sw = sliced_wasserstein_report(samples, data, list(zip(fresh, data)))
    swd, floor = sw["sliced_wasserstein"], sw["data_floor"]
    data = data[0]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "samples.npy", samples)
    plot.compare(samples, data, out / "samples.png", titles=(f"{config.dataset} (data)", f"{sampler} samples"))
    report = {"n": n, "sampler": sampler, "steps": steps, "sliced_wasserstein": swd, "data_floor": floor,
              "ratio": swd / floor, "sampling_seconds": seconds}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(f"{n} samples in {seconds:.1f} s: sliced Wasserstein {swd:.4f} vs data-vs-data floor {floor:.4f} (means of 5) "
          f"(ratio {swd / floor:.2f}); plot in {out / 'samples.png'}")
    if gif:
        plot.save_gif(frames, out / "reverse.gif", labels=labels)
        print(f"reverse-trajectory animation in {out / 'reverse.gif'}")
    return report


def _load_toy(path, option: str = "--ckpt"):
    """A 2-D checkpoint, checked whole before use (``train.load_toy_run``): (params, ema, ToyConfig),
    its errors prefixed with the option that named it."""
    from .train import load_toy_run

    try:
        return load_toy_run(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{option}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


def _refuse_given(args, options: dict, why: str):
    """A UsageError naming those of ``options`` (option -> dest) given on the command line."""
    given = [opt for opt, dest in options.items() if getattr(args, dest, None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} {why}")


def cmd_demo(args):
    from .train import ToyConfig

    cfg = ToyConfig(dataset=args.dataset, max_seconds=args.max_seconds, seed=args.seed).validate()
    out = Path(args.out)
    _writable_target("--out", out)
    print(f"minidiff demo: DDPM on {cfg.dataset} (NumPy + autograd, at most {cfg.max_seconds:.0f} s of training)")
    result = _train_and_save(cfg, out)
    _sample_and_report(result["ema"], result["config"], out, args.n, args.seed, "numpy", gif=True)
    return 0


def cmd_train(args):
    from .data.images import DATASETS as IMAGE_DATASETS

    images = args.dataset in IMAGE_DATASETS
    method = args.method or ("edm" if images else "ddpm")
    if args.teacher and method != "cd":
        raise UsageError(f"--teacher is for --method cd (this run's method is {method})")
    if images:
        return _train_images(args)
    _refuse_given(args, args.image_only, f"for image models (an image --dataset with --backend torch); "
                  f"--dataset {args.dataset} is 2-D")
    cfg = _config_from(args).validate()
    out = Path(args.out or "runs/toy")
    _writable_target("--out", out)
    if cfg.method == "cd":
        _load_toy(cfg.teacher, "--teacher")
    result = _train_and_save(cfg, out, resume=bool(args.resume))
    if args.n:
        _sample_and_report(result["ema"], result["config"], out, args.n, args.seed, cfg.backend, gif=False)
    return 0


def _check_image_data(args):
    """--backend torch and --data-root for an image run (either model)."""
    if args.backend != "torch":
        raise UsageError(f"--dataset {args.dataset} is an image dataset: image models train on the PyTorch "
                         "backend, pass --backend torch")
    _refuse_given(args, {"--n": "n"}, "for 2-D runs (sample an image model with `minidiff sample`)")
    if args.data_root is not None:
        if args.dataset not in ("fashion-mnist", "folder"):
            raise UsageError(f"--data-root is for --dataset fashion-mnist or folder; {args.dataset} ships with "
                             "its Python package")
        if not Path(args.data_root).is_dir():
            raise UsageError(f"--data-root {args.data_root} is not a folder")
    elif args.dataset == "folder":
        raise UsageError("--dataset folder needs --data-root (the folder of images)")
    if args.device:
        _device(args)


def _train_images(args):
    _check_image_data(args)
    if args.model == "autoencoder":
        return _train_autoencoder(args)
    _refuse_given(args, {"--reg": "reg", "--factor": "factor", "--latent-channels": "latent_channels",
                         "--disc-weight": "disc_weight", "--disc-start": "disc_start"},
                  "for --model autoencoder")
    from .torch.train import build_network, train_images

    if args.autoencoder is not None and not Path(args.autoencoder).exists():
        raise UsageError(f"--autoencoder {args.autoencoder}: no such checkpoint folder (train one with "
                         "`minidiff train --backend torch --model autoencoder --out DIR`)")
    cfg = _image_config_from(args).validate()
    out = Path(args.out or f"runs/{args.dataset}-{cfg.method}{'-latent' if cfg.autoencoder else ''}")
    _writable_target("--out", out)
    if cfg.method == "cd":                                       # a bad teacher: refused before training
        from .torch.train import model_from_checkpoint
        try:
            model_from_checkpoint(cfg.teacher)
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"--teacher: {e}") from None
    main_process = int(os.environ.get("RANK", 0)) == 0           # under torchrun only rank 0 prints
    if main_process:
        on = f" on the latents of {cfg.autoencoder}" if cfg.autoencoder else ""
        print(f"minidiff train: {cfg.method} on {cfg.dataset}{on}, preset {args.preset or 'cpu'}: {cfg.steps} steps "
              f"of {cfg.batch_size} images | {build_network(cfg).summary()}")
    result = train_images(cfg, out, resume=bool(args.resume), device=args.device,
                          log=print if main_process else (lambda *_: None))
    if main_process:
        scale = f", scale factor {result['config'].scale_factor:.5f}" if cfg.autoencoder else ""
        print(f"trained to step {result['steps']} ({result['images_per_second']:.0f} images/s, "
              f"final loss {np.mean(result['losses'][-50:]) if result['losses'] else float('nan'):.4f}{scale}); "
              f"checkpoint in {out}/")
    return 0


def _train_autoencoder(args):
    from .torch.autoencoder import Autoencoder
    from .torch.train_autoencoder import AutoencoderTrainConfig, train_autoencoder

    _refuse_given(args, {"--method": "method", "--class-conditional": "class_conditional",
                         "--autoencoder": "autoencoder", "--flip": "flip", "--augment": "augment",
                         "--P-mean": "P_mean", "--P-std": "P_std"},
                  "for diffusion models; --model autoencoder trains the first stage")
    from .torch.train_autoencoder import factor_mults

    reg = args.reg or "kl"
    shape = {k: v for k, v in (("image_size", args.image_size), ("in_channels", args.channels),
                               ("latent_channels", args.latent_channels)) if v is not None}
    if args.factor is not None:
        shape["channel_mults"] = factor_mults(args.preset or "cpu", args.factor)
    cfg = AutoencoderTrainConfig.from_preset(
        args.preset or "cpu", dataset=args.dataset, seed=args.seed, data_root=args.data_root or "",
        limit=args.limit or 0, compile=bool(args.compile), bf16=not args.no_bf16,
        autoencoder={"reg": reg, **shape},
        **_given(args, "steps", "batch_size", "lr", "max_seconds", "ckpt_every", "sample_every", "warmup",
                 "lr_decay", "ema_std",
                 "disc_weight", "disc_start")).validate()
    out = Path(args.out or f"runs/{args.dataset}-ae-{reg}")
    _writable_target("--out", out)
    main_process = int(os.environ.get("RANK", 0)) == 0
    a = cfg.autoencoder
    if main_process:
        n = sum(p.numel() for p in Autoencoder(a).parameters())
        print(f"minidiff train: {reg} autoencoder on {cfg.dataset}, preset {args.preset or 'cpu'}: {cfg.steps} steps "
              f"of {cfg.batch_size} images | f = {a.factor}, latent {'x'.join(map(str, a.latent_shape))}, "
              f"{n / 1e6:.2f} M parameters")
    result = train_autoencoder(cfg, out, resume=bool(args.resume), device=args.device,
                               log=print if main_process else (lambda *_: None))
    if main_process:
        print(f"trained to step {result['steps']} ({result['examples_per_second']:.0f} images/s, "
              f"final loss {np.mean(result['losses'][-50:]) if result['losses'] else float('nan'):.4f}); "
              f"checkpoint in {out}/ (evaluate it with `minidiff eval --ckpt {out}`)")
    return 0


# The sampler options and the samplers that read them (None: not given on the command line).
SAMPLER_OPTIONS = {"--eta": ("eta", ("ddim",)), "--churn": ("churn", ("stochastic",)),
                   "--s-tmin": ("s_tmin", ("stochastic",)), "--s-tmax": ("s_tmax", ("stochastic",)),
                   "--s-noise": ("s_noise", ("stochastic",)), "--tau": ("tau", ("consistency",))}


def _check_sampler(args, config):
    """(sampler, steps) for ``config``'s model; an option the sampler would ignore is refused."""
    from .methods import resolve_sampler

    sampler, steps = resolve_sampler(config, args.sampler, args.steps)
    if sampler == "ddpm" and args.steps is not None and args.steps != config.T:
        raise UsageError(f"--steps {args.steps}: the ancestral ddpm sampler runs all T = {config.T} steps "
                         "(for fewer, --sampler ddim)")
    for option, (dest, readers) in SAMPLER_OPTIONS.items():
        if getattr(args, dest) is not None and sampler not in readers:
            raise UsageError(f"{option} is for --sampler {' or '.join(readers)}; this run samples with {sampler}")
    if sampler == "stochastic" and _stochastic(args)["S_tmin"] > _stochastic(args)["S_tmax"]:
        raise UsageError(f"--s-tmin {args.s_tmin} must not exceed --s-tmax {args.s_tmax}")
    return sampler, steps


def _stochastic(args) -> dict:
    given = {"S_churn": args.churn, "S_tmin": args.s_tmin, "S_tmax": args.s_tmax, "S_noise": args.s_noise}
    defaults = {"S_churn": 0.0, "S_tmin": 0.0, "S_tmax": float("inf"), "S_noise": 1.0}
    return {k: defaults[k] if v is None else v for k, v in given.items()}


def _sampler_kwargs(args, sampler) -> dict:
    if sampler == "stochastic":
        return _stochastic(args)
    return {"taus": args.tau} if args.tau else {}


def _image_out(args, default_name: str) -> Path:
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / default_name
    return out


def _sample_images(args):
    from .plot import save_image_grid
    from .torch.sampling import sample_images

    _refuse_given(args, {"--backend": "backend", "--gif": "gif"}, "for 2-D models; this is an image checkpoint")
    out = _image_out(args, "grid.png")
    if out.suffix.lower() != ".png":
        out = out / "grid.png"
    _writable_target("--out", out, is_file=True)
    device = _device(args)
    if _is_autoencoder(args.ckpt):
        return _reconstruct(args, out, device)
    net, config, ae = _load_image_model(args, device)
    sampler, _ = _check_sampler(args, config)
    t0 = time.perf_counter()
    n = args.n or 64
    x = sample_images(net, config, n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                      batch_size=args.batch_size or 256, eta=args.eta or 0.0, progress=True,
                      class_labels=_class_labels(args, n), guidance=args.guidance, autoencoder=ae,
                      **_prompt_tokens(args, config, n), **_layout_arg(args, config, n),
                      **_sampler_kwargs(args, sampler))
    save_image_grid(x, out)
    print(f"{n} samples in {time.perf_counter() - t0:.1f} s; grid in {out}")
    return 0


def _load_image_model(args, device):
    """(U-Net, its ImageConfig, the autoencoder of a latent model or None) of --ckpt."""
    from .torch.train import model_from_checkpoint

    net, config = model_from_checkpoint(args.ckpt, device=device, use_ema=not args.no_ema)
    if not config.autoencoder:
        _refuse_given(args, {"--autoencoder": "autoencoder"}, f"for latent models; {args.ckpt} is a pixel model")
        return net, config, None
    from .torch.latent import first_stage_for

    return net, config, first_stage_for(config, args.autoencoder, device)


def _is_autoencoder(path) -> bool:
    """Whether the image checkpoint at ``path`` holds an autoencoder (its config has one)."""
    from .checkpoint import load_image_checkpoint

    _, state = load_image_checkpoint(path)
    config = state.get("config") if isinstance(state, dict) else None
    return isinstance(config, dict) and isinstance(config.get("autoencoder"), dict) and "unet" not in config


_AE_REFUSED = {"--sampler": "sampler", "--steps": "steps", "--guidance": "guidance", "--class": "class_label",
               "--autoencoder": "autoencoder", "--inception-weights": "inception_weights",
               **{option: dest for option, (dest, _) in SAMPLER_OPTIONS.items()}}


def _test_images(config, n: int, seed: int):
    """n test images of the autoencoder's dataset in [-1, 1] (a random subset drawn with seed)."""
    from .torch.evaluate import reference_images

    return reference_images(config.dataset, "test", None if n is None else n, seed, root=config.data_root or None)


def _reconstruct(args, out: Path, device):
    """`minidiff sample --ckpt AE`: a grid of test images, each beside its reconstruction."""
    import torch

    from .plot import save_image_grid
    from .torch.train_autoencoder import autoencoder_from_checkpoint

    _refuse_given(args, _AE_REFUSED, "for diffusion models; this is an autoencoder checkpoint")
    ae, config = autoencoder_from_checkpoint(args.ckpt, device=device)
    n = min(args.n or 32, 10000)
    x = _test_images(config, n, args.seed)
    with torch.no_grad():
        x_hat = ae(x.to(device))["reconstruction"].float().cpu().clamp(-1, 1)
    pairs = torch.stack([x, x_hat], 1).reshape(-1, *x.shape[1:])       # image i, then its reconstruction
    save_image_grid(pairs, out, nrow=2 * int(np.ceil(np.sqrt(n / 2))))
    print(f"{n} test images beside their reconstructions in {out}")
    return 0


def _evaluate_autoencoder(args, out: Path, device):
    """`minidiff eval --ckpt AE`: reconstruction metrics on the test set."""
    import torch

    from .torch.evaluate import evaluate_autoencoder
    from .torch.train_autoencoder import autoencoder_from_checkpoint

    _refuse_given(args, _AE_REFUSED, "for diffusion models; this is an autoencoder checkpoint")
    ae, config = autoencoder_from_checkpoint(args.ckpt, device=device)
    x = _test_images(config, args.n, args.seed)
    t0 = time.perf_counter()
    report = evaluate_autoencoder(ae, x)
    report.update({"checkpoint": str(args.ckpt), "dataset": config.dataset, "split": "test",
                   "seconds": time.perf_counter() - t0, "device": str(device), "torch": torch.__version__})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    shown = ", ".join(f"{k} {report[k]:.4g}" for k in ("mse", "psnr", "ssim", "fd", "codebook_usage", "perplexity")
                      if isinstance(report.get(k), (int, float)))
    print(f"reconstruction of {len(x)} test images: {shown}; report in {out}")
    return 0


def _device(args):
    from .torch.loop import pick_device

    try:
        return pick_device(args.device)
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None


def _prompts(args) -> list | None:
    """--prompt TEXT or --prompt-file FILE (one prompt per line): the prompts, or None."""
    if args.prompt is not None and args.prompt_file is not None:
        raise UsageError("--prompt and --prompt-file exclude each other")
    if args.prompt_file is None:
        return None if args.prompt is None else [args.prompt]
    try:
        lines = Path(args.prompt_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompt-file {args.prompt_file}: cannot read it ({e.__class__.__name__})") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError(f"--prompt-file {args.prompt_file}: no prompts in it (one per line; # starts a comment)")
    return prompts


def _prompt_tokens(args, config, n: int) -> dict:
    """{'tokens': (n, L)} for a text-conditioned model: prompt i mod the number of prompts for
    image i, encoded with the run's tokenizer; the tokenizer's warnings (unknown words,
    truncation) printed as one line each."""
    import warnings

    prompts = _prompts(args)
    if getattr(config, "condition", "") != "text":
        _refuse_given(args, {"--prompt": "prompt", "--prompt-file": "prompt_file"}, "for text-conditioned models")
        return {}
    if args.class_label is not None:
        raise UsageError("--class is for class-conditional models; this one is text-conditioned: use --prompt")
    if prompts is None:
        raise UsageError('this model is text-conditioned: pass --prompt "a dark ankle boot facing left" (--prompt "" '
                         "samples the unconditional model) or --prompt-file FILE")
    from .data.tokenizer import encode
    from .torch.train import load_run_tokenizer

    tok = load_run_tokenizer(args.ckpt, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = encode(tok, prompts, config.text.context_length)            # (P, L)
    for w in caught:
        print(f"warning: {_one_line(str(w.message))}", file=sys.stderr)
    return {"tokens": ids[np.arange(n) % len(prompts)]}


LAYOUT_CLASS_NAMES = {"t-shirt/top": 0, "t-shirt": 0, "tshirt": 0, "top": 0, "trouser": 1, "trousers": 1,
                      "pullover": 2, "dress": 3, "coat": 4, "sandal": 5, "shirt": 6, "sneaker": 7, "bag": 8,
                      "ankle boot": 9, "boot": 9}


def parse_layout(text: str, canvas: int, max_objects: int) -> np.ndarray:
    """--layout "sneaker 2,2,26,26; bag 30,28,54,54": boxes 'CLASS x0,y0,x1,y1' in canvas pixels
    (x1, y1 exclusive) separated by ';', layouts separated by '|' (image i gets layout i mod
    their number; "" is the empty layout, the unconditional model); CLASS a Fashion-MNIST class
    name or its number.  -> (P, max_objects, 5) int64, padded with class -1."""
    from .data.images import NUM_CLASSES
    from .data.layout import check_layout, empty_layout

    layouts = []
    for k, part in enumerate(text.split("|")):
        rows = []
        for item in (x.strip() for x in part.split(";")):
            if not item:
                continue
            name, _, box = item.rpartition(" ")
            name = " ".join(name.lower().split())
            cls = int(name) if name.isdigit() else LAYOUT_CLASS_NAMES.get(name)
            coords = box.split(",")
            if cls is None or len(coords) != 4 or not all(c.strip().lstrip("-").isdigit() for c in coords):
                raise UsageError(f"--layout: {item!r} is not 'CLASS x0,y0,x1,y1' (CLASS one of "
                                 f"{', '.join(sorted(LAYOUT_CLASS_NAMES))} or 0..9; integer pixels)")
            rows.append([cls, *(int(c) for c in coords)])
        if len(rows) > max_objects:
            raise UsageError(f"--layout: layout {k} has {len(rows)} boxes; this model takes at most {max_objects}")
        lay = empty_layout(max_objects)
        lay[:len(rows)] = np.asarray(rows, np.int64).reshape(-1, 5)
        layouts.append(lay)
    try:
        return check_layout(np.stack(layouts), canvas, NUM_CLASSES["fashion-mnist"], max_objects)
    except ValueError as e:
        raise UsageError(f"--layout: {e}") from None


def _layout_arg(args, config, n: int) -> dict:
    """{'layout': (n, O, 5)} for a layout-conditioned model (--layout, layout i mod their number)."""
    if getattr(config, "condition", "") != "layout":
        _refuse_given(args, {"--layout": "layout"}, "for layout-conditioned models")
        return {}
    if args.class_label is not None:
        raise UsageError("--class is for class-conditional models; this one is layout-conditioned: use --layout")
    if args.layout is None:
        raise UsageError('this model is layout-conditioned: pass --layout "sneaker 2,2,26,26; bag 30,28,54,54" '
                         f"(boxes in pixels of the {config.layout.canvas}x{config.layout.canvas} canvas; "
                         '--layout "" samples the unconditional model)')
    layouts = parse_layout(args.layout, config.layout.canvas, config.layout.max_objects)
    return {"layout": layouts[np.arange(n) % len(layouts)]}


def _class_labels(args, n: int):
    """--class K: every image of class K; else None (sample_images then asks for class i mod K)."""
    return None if args.class_label is None else np.full(n, args.class_label)


def cmd_eval(args):
    import torch

    from .checkpoint import is_image_checkpoint
    from .torch.evaluate import evaluate_images
    from .torch.sampling import sample_images

    if args.inception_weights and not Path(args.inception_weights).is_file():
        raise UsageError(f"--inception-weights {args.inception_weights} is not a file")
    if not is_image_checkpoint(args.ckpt):
        raise FileNotFoundError(f"--ckpt {args.ckpt}: no image checkpoint there (eval is for image models; "
                                "`minidiff sample` reports 2-D models' distances)")
    out = _image_out(args, "eval.json")
    _writable_target("--out", out, is_file=True)
    device = _device(args)
    if _is_autoencoder(args.ckpt):
        return _evaluate_autoencoder(args, out, device)
    net, config, ae = _load_image_model(args, device)
    sampler, steps = _check_sampler(args, config)
    if getattr(config, "condition", "") == "layout":
        return _evaluate_layout(args, net, config, sampler, steps, out)
    _refuse_given(args, {"--layout": "layout"}, "for layout-conditioned models")
    t0 = time.perf_counter()
    labels = _class_labels(args, args.n)
    text = _prompt_tokens(args, config, args.n)
    prompts = _prompts(args) if text else None
    scored = bool(prompts) and any(prompts)                             # --prompt "": unconditional, FD only
    if scored:                                                          # checked before any sampling
        from .data.captions import parse_caption
        try:
            [parse_caption(p) for p in prompts]
        except ValueError as e:                                        # a prompt that names no garment
            raise UsageError(f"{'--prompt-file' if args.prompt_file is not None else '--prompt'}: {e}") from None
    x = sample_images(net, config, args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                      batch_size=args.batch_size or 256, eta=args.eta or 0.0, progress=True, class_labels=labels,
                      guidance=args.guidance, autoencoder=ae, **text, **_sampler_kwargs(args, sampler))
    seconds = time.perf_counter() - t0
    accuracy = {}
    if scored:                                                          # text-to-image: what the prompts asked for
        from .torch.evaluate import prompt_report
        accuracy = {"prompts": prompt_report(x, [prompts[i % len(prompts)] for i in range(args.n)])}
    if config.class_conditional and config.dataset == "fashion-mnist":   # image i: class i mod 10 or --class
        from .torch.evaluate import classifier_accuracy
        asked = torch.arange(args.n) % config.unet.num_classes if labels is None else torch.as_tensor(labels)
        accuracy = {"class_accuracy": classifier_accuracy(x, asked)}
    extra = {"inception_weights": args.inception_weights} if args.inception_weights else {}
    report = evaluate_images(x, reference=config.dataset, n_reference=args.n_reference, seed=args.seed,
                             root=config.data_root or None, **extra)
    report.update({"checkpoint": str(args.ckpt), "sampler": sampler, "steps": steps,
                   "sampling_seconds": seconds, "device": str(next(net.parameters()).device),
                   "torch": torch.__version__, "guidance": args.guidance, "class": args.class_label, **accuracy,
                   **({"autoencoder_sha256": config.autoencoder_sha256} if config.autoencoder else {})})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{report.get('fd_label', 'FD')}: {report['fd']:.3f}, KID {report['kid_mean']:.5f} +- {report['kid_std']:.5f} "
          f"({report['n_samples']} samples vs {report['n_reference']} test images)"
          + (f"; the classifier finds the asked-for class in {100 * report['class_accuracy']:.1f} %"
             if "class_accuracy" in report else "") + _prompt_summary(report.get("prompts")) + f"; report in {out}")
    return 0


def _prompt_summary(r) -> str:
    """The prompt report in a few words: class and attribute accuracy, and on the held-out combinations."""
    if not r:
        return ""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
    text = f"; prompts: class {pct(r['class_accuracy'])}, attributes {pct(r['attribute_accuracy'])}"
    if r["held_out"]["n"]:
        h = r["held_out"]
        text += f" (held-out combinations, {h['n']} images: class {pct(h['class_accuracy'])}, " \
                f"attributes {pct(h['attribute_accuracy'])})"
    if r.get("clip_style_score") is not None:
        text += f"; CLIP-style score (minidiff caption model) {r['clip_style_score']:.2f}"
    return text


def _evaluate_layout(args, net, config, sampler, steps, out: Path):
    """eval of a layout model: samples for --layout (default: the layouts of the first --n test
    canvases), the fraction of asked garments found with IoU >= 0.5 and their class accuracy
    (shipped classifier), beside the real test canvases (ceiling) and shuffled layouts (floor)."""
    import torch

    from .data.layout import canvas_dataset, layout_report
    from .torch.evaluate import class_probabilities
    from .torch.sampling import sample_images

    real, test_layouts = canvas_dataset("test", n=args.n, config=config.layout)
    layouts = _layout_arg(args, config, args.n)["layout"] if args.layout is not None else test_layouts
    t0 = time.perf_counter()
    x = sample_images(net, config, args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                      batch_size=args.batch_size or 256, eta=args.eta or 0.0, progress=True, layout=layouts,
                      guidance=args.guidance, **_sampler_kwargs(args, sampler))
    seconds = time.perf_counter() - t0
    report = {"layout": layout_report(x.numpy(), layouts, class_probabilities)}
    if args.layout is None:                                        # the same numbers on real canvases, and a floor
        report["real_canvases"] = layout_report(real / 127.5 - 1, test_layouts, class_probabilities)
        report["shuffled_layouts"] = layout_report(x.numpy(), np.roll(layouts, 1, axis=0), class_probabilities)
    report.update({"checkpoint": str(args.ckpt), "sampler": sampler, "steps": steps, "sampling_seconds": seconds,
                   "device": str(next(net.parameters()).device), "torch": torch.__version__,
                   "guidance": args.guidance, "layout_arg": args.layout})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    r = report["layout"]
    print(f"{r['n_garments']} asked garments on {r['n_canvases']} canvases: {100 * r['iou_at_least_0.5']:.1f} % "
          f"found with IoU >= 0.5 (mean IoU {r['mean_iou']:.3f}), class accuracy {100 * r['class_accuracy']:.1f} %"
          + (f" (real canvases: {100 * report['real_canvases']['iou_at_least_0.5']:.1f} %, "
             f"{100 * report['real_canvases']['class_accuracy']:.1f} %; shuffled layouts: "
             f"{100 * report['shuffled_layouts']['iou_at_least_0.5']:.1f} %, "
             f"{100 * report['shuffled_layouts']['class_accuracy']:.1f} %)" if "real_canvases" in report else "")
          + f"; report in {out}")
    return 0


def cmd_sample(args):
    from .checkpoint import is_image_checkpoint

    if is_image_checkpoint(args.ckpt):
        return _sample_images(args)
    _refuse_given(args, {"--guidance": "guidance", "--class": "class_label", "--prompt": "prompt",
                         "--prompt-file": "prompt_file", "--layout": "layout"},
                  "for conditional image models; this is a 2-D checkpoint")
    _refuse_given(args, {"--batch-size": "batch_size", "--device": "device", "--autoencoder": "autoencoder"},
                  "for image models; this is a 2-D checkpoint")
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent)
    _writable_target("--out", out)
    params, ema, cfg = _load_toy(args.ckpt)
    sampler, _ = _check_sampler(args, cfg)
    _sample_and_report(params if args.no_ema else ema, cfg.to_dict(), out, args.n or 2000, args.seed,
                       args.backend or "numpy", gif=bool(args.gif), sampler=args.sampler, steps=args.steps,
                       eta=args.eta or 0.0, sampler_kwargs=_sampler_kwargs(args, sampler))
    return 0


def cmd_check(args):
    from .check import run_check, show_hint
    from .exercises import get_lesson

    lesson = get_lesson(args.lesson)        # an unknown lesson: a ValueError naming the lessons
    if args.hint:
        names = [ex.name for ex in lesson.exercises]
        if args.hint not in names:
            raise UsageError(f"--hint {args.hint}: lesson {lesson.number} has no such exercise; its exercises "
                             f"are: {', '.join(names)}")
        return show_hint(args.lesson, args.hint)
    return run_check(args.lesson, impl=args.impl, timeout=args.timeout)


def cmd_data(args):
    from .data.fetch import ensure_fashion_mnist

    if args.dest:
        _writable_target("--dest", Path(args.dest))
    folder = ensure_fashion_mnist(dest=args.dest or None, base_url=args.url or None, apt=not args.no_apt)
    print(f"Fashion-MNIST is in {folder}")
    return 0


def _add_sample_args(p, n_default):
    from .methods import ALL_SAMPLERS

    p.add_argument("--ckpt", required=True, help="checkpoint folder (or its model.npz / checkpoint.safetensors)")
    p.add_argument("--n", type=int_at_least(1), default=n_default, help="number of samples (default: 2000 for "
                   "2-D, 64 for images)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--backend", default=None, choices=("numpy", "torch"), help="2-D models: the backend "
                   "(default numpy)")
    p.add_argument("--sampler", default=None,
                   choices=ALL_SAMPLERS,
                   help="default: heun for edm models, consistency for cd/ct/ict, ddpm (2-D) or ddim (images) "
                        "for ddpm models")
    p.add_argument("--steps", type=int_at_least(1), default=None,
                   help="sampling steps (ddim, euler, heun, stochastic: N; consistency: evaluations; ddpm: "
                        "always T)")
    p.add_argument("--eta", type=float_in(0, 1), default=None, help="ddim: 0 deterministic (default), 1 DDPM-like")
    p.add_argument("--churn", type=float_in(0), default=None, help="stochastic: S_churn (default 0)")
    p.add_argument("--s-tmin", type=float_in(0), default=None, help="stochastic: S_tmin (default 0)")
    p.add_argument("--s-tmax", type=float_in(0, allow_inf=True), default=None, help="stochastic: S_tmax "
                   "(default inf)")
    p.add_argument("--s-noise", type=float_in(0, lo_open=True), default=None, help="stochastic: S_noise "
                   "(default 1)")
    p.add_argument("--tau", type=float_in(0, lo_open=True), nargs="+", default=None,
                   help="consistency: the steps - 1 intermediate noise levels (default: Karras steps)")
    p.add_argument("--guidance", type=float_in(), default=None, metavar="W",
                   help="class-conditional images: classifier-free guidance of strength w (Ho & Salimans eq. 6; "
                        "0: conditional only; diffusers' guidance_scale is 1 + w)")
    p.add_argument("--prompt", default=None, metavar="TEXT", help="text-conditioned models: the caption of every "
                   "image (\"\": the unconditional model)")
    p.add_argument("--prompt-file", "--prompts", default=None, metavar="FILE", help="text-conditioned models: one "
                   "prompt per line, image i gets prompt i mod their number (eval: scored against them)")
    p.add_argument("--layout", default=None, metavar="BOXES", help="layout-conditioned models: 'CLASS x0,y0,x1,y1' "
                   "boxes in canvas pixels (x1, y1 exclusive) separated by ';', e.g. \"sneaker 2,2,26,26; bag "
                   "30,28,54,54\"; several layouts separated by '|' (image i gets layout i mod their number); "
                   "\"\": the unconditional model")
    p.add_argument("--class", dest="class_label", type=int_at_least(0), default=None, metavar="K",
                   help="class-conditional images: draw class K only (default: image i gets class i mod K; "
                        "the number of classes itself means 'no class')")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--batch-size", type=int_at_least(1), default=None, help="images: samples per batch "
                   "(default 256)")
    p.add_argument("--device", default=None, help="images: cuda, mps or cpu (default: the first available)")
    p.add_argument("--autoencoder", default=None, metavar="DIR", help="latent models: the autoencoder checkpoint "
                   "(default: the path recorded at training; its sha256 must be the recorded one)")


def build_parser():
    from .check import PER_TEST_TIMEOUT_S
    from .data.toy2d import DATASETS as TOY_DATASETS
    from .train import ToyConfig

    defaults = ToyConfig()
    parser = _Parser(prog="minidiff", description="Diffusion models from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a 2-D DDPM, plot samples and animate the reverse process",
                       description="Train a DDPM on a 2-D dataset with NumPy + autograd for at most "
                                   "--max-seconds, then draw --n samples, report the sliced Wasserstein "
                                   "distance and write samples.png and reverse.gif into --out.")
    p.add_argument("--dataset", default="swiss_roll", choices=sorted(TOY_DATASETS))
    p.add_argument("--max-seconds", type=float_in(0), default=60.0, help="(0: no limit)")
    p.add_argument("--n", type=int_at_least(1), default=5000, help="number of samples")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a 2-D diffusion model", description="Train a 2-D diffusion model "
                       "and save a checkpoint (model.npz + state.json) into --out.")
    _add_train_args(p, defaults)
    p.add_argument("--n", type=int_at_least(1), default=None, help="2-D: also draw this many samples and report "
                   "metrics")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample from a trained model (2-D or image)",
                       description="Draw samples from a checkpoint written by `minidiff train`: for a 2-D "
                                   "model a plot and its distance to the data; for an image model a PNG grid.")
    _add_sample_args(p, n_default=None)
    p.add_argument("--gif", action="store_true", default=None, help="2-D: also write reverse.gif")
    p.add_argument("--out", default=None, help="2-D: output folder (default: the checkpoint's); images: the PNG "
                   "(default: grid.png beside the checkpoint)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="FD and KID of an image model's samples against the test set",
                       description="Sample --n images from an image checkpoint and report the Frechet distance "
                                   "and KID on the features of minidiff's Fashion-MNIST classifier (not "
                                   "Inception; pass --inception-weights to use yours). Writes eval.json.")
    _add_sample_args(p, n_default=10000)
    p.add_argument("--n-reference", type=int_at_least(2), default=10000, help="test images to compare with")
    p.add_argument("--inception-weights", default=None,
                   help="a local FID Inception weights file: report Inception FID as well (needs torch-fidelity)")
    p.add_argument("--out", default=None, help="the JSON report (default: eval.json beside the checkpoint)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("check", help="check your exercises for lesson NN",
                       description="Run lesson NN's checks on lessons/NN_*.py and print one line per exercise: "
                       "PASS, not written yet, or FAIL with the property that broke.")
    p.add_argument("lesson", help="lesson number, e.g. 03")
    p.add_argument("--impl", default="lesson", choices=("lesson", "reference", "stub"),
                   help="what to check: your file (default), the reference, or a blank stub")
    p.add_argument("--hint", default=None, metavar="NAME",
                   help="print the formula-level hint of exercise NAME (e.g. ddpm_step) instead of checking")
    p.add_argument("--timeout", type=float_in(0, lo_open=True), default=PER_TEST_TIMEOUT_S, metavar="S",
                   help="seconds each check may take before it is stopped (default %(default)g)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("data", help="install or download a dataset (fashion-mnist)",
                       description="Make Fashion-MNIST available and print its folder: an existing one "
                                   "($MINIDIFF_FASHION_MNIST, /usr/share/datasets/fashion-mnist, the cache), else "
                                   "Debian's dataset-fashion-mnist via apt-get (as root), else the four official "
                                   "files downloaded into $MINIDIFF_DATA/fashion-mnist (default "
                                   "~/.cache/minidiff), each checked against its published MD5 and SHA-256.")
    p.add_argument("dataset", choices=("fashion-mnist",))
    p.add_argument("--url", type=url, default=None, metavar="BASE",
                   help="download from BASE/<file name> instead of the official locations")
    p.add_argument("--no-apt", action="store_true", help="never run apt-get")
    p.add_argument("--dest", default="", metavar="DIR",
                   help="download into DIR (then only DIR is looked in and apt-get is not used)")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv=None) -> int:
    """Run one subcommand.  A bad option, a bad file (unreadable, of another version, not
    writable) or a missing dependency is one line on stderr and exit code 2; any other exception
    is a bug in minidiff and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, FloatingPointError) as e:   # OSError: FileNotFoundError too
        print(f"minidiff {args.command}: error: {_one_line(e) or type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
