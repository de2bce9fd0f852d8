"""The `minidiff` command: demo, train, sample, eval, check, data."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


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
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: 8000 for 2-D data, the "
                   "preset's for images)")
    p.add_argument("--batch-size", type=int, default=None, help="(images: per process)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--T", type=int, default=defaults.T, help="diffusion steps")
    p.add_argument("--schedule", default=defaults.schedule, choices=SCHEDULES)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop training after this many seconds (0: no limit)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--backend", default=defaults.backend, choices=("numpy", "torch"))
    p.add_argument("--scheme", default=defaults.scheme, choices=SCHEMES,
                   help="method edm: which column of EDM's Table 1 (preconditioning, noise levels, weighting)")
    p.add_argument("--teacher", default="", help="method cd: checkpoint folder of an edm model")
    p.add_argument("--cm-N", type=int, default=defaults.cm_N, help="method cd: number of noise levels")
    p.add_argument("--metric", default=defaults.metric, choices=METRICS,
                   help="methods cd, ct: the consistency distance")
    p.add_argument("--out", default=None, help="output folder (checkpoint and plots; default runs/toy or "
                   "runs/<dataset>-<method>)")
    g = p.add_argument_group("image models (--backend torch with an image dataset)")
    g.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "gpu"),
                   help="model size and schedule: cpu (minutes on a laptop), gpu (one GPU), tiny (tests)")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    g.add_argument("--data-root", default="", help="folder with the dataset's files (default: its usual place)")
    g.add_argument("--limit", type=int, default=0, help="train on the first LIMIT images only")
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
    g.add_argument("--ckpt-every", type=int, default=None, help="steps between checkpoints")
    g.add_argument("--sample-every", type=int, default=None, help="steps between sample grids (0: never)")
    g.add_argument("--warmup", type=int, default=None, help="learning-rate warm-up steps")
    g.add_argument("--flip", action="store_true", help="random left-right flips")
    g.add_argument("--class-conditional", action="store_true",
                   help="give the U-Net the labels (10%% dropped to a null class, for classifier-free guidance)")
    g.add_argument("--compile", action="store_true", help="torch.compile the U-Net")
    g.add_argument("--image-size", type=int, default=None, help="dataset folder: resize to this size")
    g.add_argument("--channels", type=int, default=None, choices=(1, 3), help="dataset folder: 1 grey, 3 RGB")
    g.add_argument("--no-bf16", action="store_true", help="train in float32 on CUDA too")


def _given(args, *names) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _config_from(args):
    from .train import ToyConfig

    return ToyConfig(dataset=args.dataset, method=args.method or "ddpm", target=args.target,
                     **_given(args, "steps", "batch_size", "lr", "max_seconds", "ckpt_every"),
                     T=args.T, schedule=args.schedule, seed=args.seed, backend=args.backend, scheme=args.scheme,
                     teacher=args.teacher, cm_N=args.cm_N, metric=args.metric)


def _image_config_from(args):
    from .torch.train import ImageConfig

    return ImageConfig.from_preset(
        args.preset, dataset=args.dataset, method=args.method or "edm", target=args.target, T=args.T,
        schedule=args.schedule, seed=args.seed, scheme=args.scheme, teacher=args.teacher, cm_N=args.cm_N,
        metric=args.metric, data_root=args.data_root, limit=args.limit, flip=args.flip, compile=args.compile,
        class_conditional=args.class_conditional,
        bf16=not args.no_bf16, unet={k: v for k, v in (("image_size", args.image_size), ("in_channels", args.channels))
                                        if v is not None},
        **_given(args, "steps", "batch_size", "lr", "max_seconds", "ckpt_every", "sample_every", "warmup"))


def _train_and_save(cfg, out: Path, resume: bool = False):
    from .train import train_toy

    result = train_toy(cfg, progress=True, out=out, resume=resume)
    print(f"trained {result['steps']} steps in {result['seconds']:.1f} s "
          f"(final loss {np.mean(result['losses'][-100:]):.4f}); checkpoint in {out}/")
    return result


def _sample_and_report(params, config, out: Path, n: int, seed: int, backend: str, gif: bool,
                       sampler=None, steps=None, eta=0.0, sampler_kwargs=None):
    from . import plot
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


def cmd_demo(args):
    from .train import ToyConfig

    cfg = ToyConfig(dataset=args.dataset, max_seconds=args.max_seconds, seed=args.seed)
    out = Path(args.out)
    print(f"minidiff demo: DDPM on {cfg.dataset} (NumPy + autograd, at most {cfg.max_seconds:.0f} s of training)")
    result = _train_and_save(cfg, out)
    _sample_and_report(result["ema"], result["config"], out, args.n, args.seed, "numpy", gif=True)
    return 0


def cmd_train(args):
    from .data.images import DATASETS as IMAGE_DATASETS

    if args.dataset in IMAGE_DATASETS:
        return _train_images(args)
    cfg = _config_from(args)
    out = Path(args.out or "runs/toy")
    result = _train_and_save(cfg, out, resume=args.resume)
    if args.n:
        _sample_and_report(result["ema"], result["config"], out, args.n, args.seed, cfg.backend, gif=False)
    return 0


def _train_images(args):
    if args.backend != "torch":
        raise ValueError(f"dataset {args.dataset!r} is an image dataset: image models train on the PyTorch "
                         "backend, pass --backend torch")
    from .torch.train import train_images
    from .torch.unet import UNet

    cfg = _image_config_from(args)
    out = Path(args.out or f"runs/{args.dataset}-{cfg.method}")
    main_process = int(os.environ.get("RANK", 0)) == 0           # under torchrun only rank 0 prints
    if main_process:
        print(f"minidiff train: {cfg.method} on {cfg.dataset}, preset {args.preset}: {cfg.steps} steps of "
              f"{cfg.batch_size} images | {UNet(cfg.unet).summary()}")
    result = train_images(cfg, out, resume=args.resume, device=args.device)
    if main_process:
        print(f"trained to step {result['steps']} ({result['images_per_second']:.0f} images/s, "
              f"final loss {np.mean(result['losses'][-50:]) if result['losses'] else float('nan'):.4f}); "
              f"checkpoint in {out}/")
    return 0


def _sample_images(args):
    from .plot import save_image_grid
    from .torch.sampling import sample_images
    from .torch.train import model_from_checkpoint

    net, config = model_from_checkpoint(args.ckpt, device=_device(args), use_ema=not args.no_ema)
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "grid.png"
    if out.suffix.lower() != ".png":
        out = out / "grid.png"
    t0 = time.perf_counter()
    n = args.n or 64
    x = sample_images(net, config, n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                      batch_size=args.batch_size, eta=args.eta, progress=True, class_labels=_class_labels(args, n),
                      guidance=args.guidance, **_sampler_kwargs(args))
    save_image_grid(x, out)
    print(f"{n} samples in {time.perf_counter() - t0:.1f} s; grid in {out}")
    return 0


def _device(args):
    from .torch.loop import pick_device

    return pick_device(args.device)


def _class_labels(args, n: int):
    """--class K: every image of class K; else None (sample_images then asks for class i mod K)."""
    return None if args.class_label is None else np.full(n, args.class_label)


def _sampler_kwargs(args) -> dict:
    if args.sampler == "stochastic":
        return dict(S_churn=args.churn, S_tmin=args.s_tmin, S_tmax=args.s_tmax, S_noise=args.s_noise)
    return {"taus": args.tau} if args.tau else {}


def cmd_eval(args):
    import torch

    from .checkpoint import is_image_checkpoint
    from .torch.evaluate import evaluate_images
    from .torch.sampling import sample_images
    from .torch.train import model_from_checkpoint

    if not is_image_checkpoint(args.ckpt):
        raise FileNotFoundError(f"no image checkpoint at {args.ckpt} (eval is for image models; "
                                "`minidiff sample` reports 2-D models' distances)")
    net, config = model_from_checkpoint(args.ckpt, device=_device(args), use_ema=not args.no_ema)
    t0 = time.perf_counter()
    labels = _class_labels(args, args.n)
    x = sample_images(net, config, args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                      batch_size=args.batch_size, eta=args.eta, progress=True, class_labels=labels,
                      guidance=args.guidance, **_sampler_kwargs(args))
    seconds = time.perf_counter() - t0
    accuracy = {}
    if config.class_conditional and config.dataset == "fashion-mnist":   # image i: class i mod 10 or --class
        from .torch.evaluate import classifier_accuracy
        asked = torch.arange(args.n) % config.unet.num_classes if labels is None else torch.as_tensor(labels)
        accuracy = {"class_accuracy": classifier_accuracy(x, asked)}
    extra = {"inception_weights": args.inception_weights} if args.inception_weights else {}
    report = evaluate_images(x, reference=config.dataset, n_reference=args.n_reference, seed=args.seed,
                             root=config.data_root or None, **extra)
    d_sampler, d_steps = config.default_sampler()
    report.update({"checkpoint": str(args.ckpt), "sampler": args.sampler or d_sampler,
                   "steps": args.steps or (d_steps if not args.sampler or args.sampler == d_sampler else None),
                   "sampling_seconds": seconds, "device": str(next(net.parameters()).device),
                   "torch": torch.__version__, "guidance": args.guidance, "class": args.class_label, **accuracy})
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{report.get('fd_label', 'FD')}: {report['fd']:.3f}, KID {report['kid_mean']:.5f} +- {report['kid_std']:.5f} "
          f"({report['n_samples']} samples vs {report['n_reference']} test images)"
          + (f"; the classifier finds the asked-for class in {100 * report['class_accuracy']:.1f} %"
             if "class_accuracy" in report else "") + f"; report in {out}")
    return 0


def cmd_sample(args):
    from .checkpoint import is_image_checkpoint, load_toy_checkpoint

    if is_image_checkpoint(args.ckpt):
        return _sample_images(args)

    if args.guidance is not None or args.class_label is not None:
        raise ValueError("--guidance and --class are for class-conditional image models; this is a 2-D checkpoint")
    params, ema, state = load_toy_checkpoint(args.ckpt)
    out = Path(args.out) if args.out else Path(args.ckpt if Path(args.ckpt).is_dir() else Path(args.ckpt).parent)
    kwargs = _sampler_kwargs(args)
    _sample_and_report(params if args.no_ema else ema, state["config"], out, args.n or 2000, args.seed, args.backend,
                       gif=args.gif, sampler=args.sampler, steps=args.steps, eta=args.eta, sampler_kwargs=kwargs)
    return 0


def cmd_check(args):
    from .check import run_check, show_hint

    if args.hint:
        return show_hint(args.lesson, args.hint)
    return run_check(args.lesson, impl=args.impl)


def cmd_data(args):
    from .data.fetch import ensure_fashion_mnist

    try:
        folder = ensure_fashion_mnist(dest=args.dest or None, base_url=args.url or None, apt=not args.no_apt)
    except OSError as e:  # network and file-system errors: one line, no traceback
        print(f"minidiff data: error: {e}", file=sys.stderr)
        return 2
    print(f"Fashion-MNIST is in {folder}")
    return 0


def _add_sample_args(p, n_default):
    from .methods import ALL_SAMPLERS

    p.add_argument("--ckpt", required=True, help="checkpoint folder (or its model.npz / checkpoint.safetensors)")
    p.add_argument("--n", type=int, default=n_default, help="number of samples (default: 2000 for 2-D, "
                   "64 for images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numpy", choices=("numpy", "torch"), help="2-D models: the backend")
    p.add_argument("--sampler", default=None,
                   choices=ALL_SAMPLERS,
                   help="default: heun for edm models, consistency for cd/ct/ict, ddpm (2-D) or ddim (images) "
                        "for ddpm models")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (ddim, euler, heun, stochastic: N; consistency: evaluations)")
    p.add_argument("--eta", type=float, default=0.0, help="ddim: 0 deterministic, 1 DDPM-like")
    p.add_argument("--churn", type=float, default=0.0, help="stochastic: S_churn")
    p.add_argument("--s-tmin", type=float, default=0.0, help="stochastic: S_tmin")
    p.add_argument("--s-tmax", type=float, default=float("inf"), help="stochastic: S_tmax")
    p.add_argument("--s-noise", type=float, default=1.0, help="stochastic: S_noise")
    p.add_argument("--tau", type=float, nargs="+", default=None,
                   help="consistency: the steps - 1 intermediate noise levels (default: Karras steps)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="class-conditional images: classifier-free guidance of strength w (Ho & Salimans eq. 6; "
                        "0: conditional only; diffusers' guidance_scale is 1 + w)")
    p.add_argument("--class", dest="class_label", type=int, default=None, metavar="K",
                   help="class-conditional images: draw class K only (default: image i gets class i mod K; "
                        "the number of classes itself means 'no class')")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--batch-size", type=int, default=256, help="images: samples per batch")
    p.add_argument("--device", default=None, help="images: cuda, mps or cpu (default: the first available)")


def build_parser():
    from .train import ToyConfig

    defaults = ToyConfig()
    parser = argparse.ArgumentParser(prog="minidiff", description="Diffusion models from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a 2-D DDPM, plot samples and animate the reverse process",
                       description="Train a DDPM on a 2-D dataset with NumPy + autograd for at most "
                                   "--max-seconds, then draw --n samples, report the sliced Wasserstein "
                                   "distance and write samples.png and reverse.gif into --out.")
    p.add_argument("--dataset", default="swiss_roll")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--n", type=int, default=5000, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a 2-D diffusion model", description="Train a 2-D diffusion model "
                       "and save a checkpoint (model.npz + state.json) into --out.")
    _add_train_args(p, defaults)
    p.add_argument("--n", type=int, default=0, help="also draw this many samples and report metrics")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample from a trained model (2-D or image)",
                       description="Draw samples from a checkpoint written by `minidiff train`: for a 2-D "
                                   "model a plot and its distance to the data; for an image model a PNG grid.")
    _add_sample_args(p, n_default=None)
    p.add_argument("--gif", action="store_true", help="2-D: also write reverse.gif")
    p.add_argument("--out", default=None, help="2-D: output folder (default: the checkpoint's); images: the PNG "
                   "(default: grid.png beside the checkpoint)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="FD and KID of an image model's samples against the test set",
                       description="Sample --n images from an image checkpoint and report the Frechet distance "
                                   "and KID on the features of minidiff's Fashion-MNIST classifier (not "
                                   "Inception; pass --inception-weights to use yours). Writes eval.json.")
    _add_sample_args(p, n_default=10000)
    p.add_argument("--n-reference", type=int, default=10000, help="test images to compare with")
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
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("data", help="install or download a dataset (fashion-mnist)",
                       description="Make Fashion-MNIST available and print its folder: an existing one "
                                   "($MINIDIFF_FASHION_MNIST, /usr/share/datasets/fashion-mnist, the cache), else "
                                   "Debian's dataset-fashion-mnist via apt-get (as root), else the four official "
                                   "files downloaded into $MINIDIFF_DATA/fashion-mnist (default "
                                   "~/.cache/minidiff), each checked against its published MD5 and SHA-256.")
    p.add_argument("dataset", choices=("fashion-mnist",))
    p.add_argument("--url", default="", metavar="BASE",
                   help="download from BASE/<file name> instead of the official locations")
    p.add_argument("--no-apt", action="store_true", help="never run apt-get")
    p.add_argument("--dest", default="", metavar="DIR",
                   help="download into DIR (then only DIR is looked in and apt-get is not used)")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"minidiff {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
