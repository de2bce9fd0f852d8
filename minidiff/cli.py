"""The `minidiff` command: demo, train, sample, check."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np


def _add_train_args(p, defaults):
    from .data.toy2d import DATASETS
    from .train import METHODS

    p.add_argument("--dataset", default=defaults.dataset, choices=sorted(DATASETS), help="2-D dataset")
    p.add_argument("--method", default=defaults.method, choices=METHODS, help="training method")
    p.add_argument("--target", default=defaults.target, choices=("eps", "x0", "score", "v"),
                   help="what the network predicts")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--T", type=int, default=defaults.T, help="diffusion steps")
    p.add_argument("--schedule", default=defaults.schedule, choices=("linear", "cosine"))
    p.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                   help="stop training after this many seconds (0: no limit)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--backend", default=defaults.backend, choices=("numpy", "torch"))
    p.add_argument("--scheme", default=defaults.scheme, choices=("vp", "ve", "iddpm", "edm"),
                   help="method edm: which column of EDM's Table 1 (preconditioning, noise levels, weighting)")
    p.add_argument("--teacher", default="", help="method cd: checkpoint folder of an edm model")
    p.add_argument("--cm-N", type=int, default=defaults.cm_N, help="method cd: number of noise levels")
    p.add_argument("--metric", default=defaults.metric, choices=("l2", "l1", "pseudo_huber"),
                   help="methods cd, ct: the consistency distance")
    p.add_argument("--out", default="runs/toy", help="output folder (checkpoint and plots)")


def _config_from(args):
    from .train import ToyConfig

    return ToyConfig(dataset=args.dataset, method=args.method, target=args.target, steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, T=args.T, schedule=args.schedule,
                     max_seconds=args.max_seconds, seed=args.seed, backend=args.backend, scheme=args.scheme,
                     teacher=args.teacher, cm_N=args.cm_N, metric=args.metric)


def _train_and_save(cfg, out: Path):
    from .checkpoint import save_toy_checkpoint
    from .train import train_toy

    result = train_toy(cfg, progress=True)
    save_toy_checkpoint(out, result["params"], result["ema"], result["config"], result["steps"])
    print(f"trained {result['steps']} steps in {result['seconds']:.1f} s "
          f"(final loss {np.mean(result['losses'][-100:]):.4f}); checkpoint in {out}/")
    return result


def _sample_and_report(params, config, out: Path, n: int, seed: int, backend: str, gif: bool,
                       sampler=None, steps=None, eta=0.0, sampler_kwargs=None):
    from . import plot
    from .data.toy2d import sample_toy
    from .metrics import sliced_wasserstein
    from .train import sample_from_params

    from .train import default_sampler

    sampler = sampler or default_sampler(config)[0]
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
    data = [sample_toy(config["dataset"], n, 10_000 + seed + i) for i in range(5)]
    fresh = [sample_toy(config["dataset"], n, 20_000 + seed + i) for i in range(5)]
    swd = float(np.mean([sliced_wasserstein(samples, d) for d in data]))
    floor = float(np.mean([sliced_wasserstein(f, d) for f, d in zip(fresh, data)]))
    data = data[0]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "samples.npy", samples)
    plot.compare(samples, data, out / "samples.png", titles=(f"{config['dataset']} (data)", f"{sampler} samples"))
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
    cfg = _config_from(args)
    out = Path(args.out)
    result = _train_and_save(cfg, out)
    if args.n:
        _sample_and_report(result["ema"], result["config"], out, args.n, args.seed, cfg.backend, gif=False)
    return 0


def cmd_sample(args):
    from .checkpoint import load_toy_checkpoint

    params, ema, state = load_toy_checkpoint(args.ckpt)
    out = Path(args.out) if args.out else Path(args.ckpt if Path(args.ckpt).is_dir() else Path(args.ckpt).parent)
    kwargs = {"taus": args.tau} if args.tau else {}
    if args.sampler == "stochastic":
        kwargs = dict(S_churn=args.churn, S_tmin=args.s_tmin, S_tmax=args.s_tmax, S_noise=args.s_noise)
    _sample_and_report(params if args.no_ema else ema, state["config"], out, args.n, args.seed, args.backend,
                       gif=args.gif, sampler=args.sampler, steps=args.steps, eta=args.eta, sampler_kwargs=kwargs)
    return 0


def cmd_check(args):
    from .check import run_check

    return run_check(args.lesson, impl=args.impl)


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

    p = sub.add_parser("sample", help="sample from a trained 2-D model",
                       description="Draw samples from a checkpoint written by `minidiff train`.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder (or its model.npz)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numpy", choices=("numpy", "torch"))
    p.add_argument("--sampler", default=None,
                   choices=("ddpm", "ddim", "euler", "heun", "stochastic", "consistency"),
                   help="default: ddpm for ddpm models, heun for edm models, consistency otherwise")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (ddim, euler, heun, stochastic: N; consistency: evaluations)")
    p.add_argument("--eta", type=float, default=0.0, help="ddim: 0 deterministic, 1 DDPM-like")
    p.add_argument("--churn", type=float, default=0.0, help="stochastic: S_churn")
    p.add_argument("--s-tmin", type=float, default=0.0, help="stochastic: S_tmin")
    p.add_argument("--s-tmax", type=float, default=float("inf"), help="stochastic: S_tmax")
    p.add_argument("--s-noise", type=float, default=1.0, help="stochastic: S_noise")
    p.add_argument("--tau", type=float, nargs="+", default=None,
                   help="consistency: the steps - 1 intermediate noise levels (default: Karras steps)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--gif", action="store_true", help="also write reverse.gif")
    p.add_argument("--out", default=None, help="output folder (default: the checkpoint's)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("check", help="check your exercises for lesson NN",
                       description="Run lesson NN's checks on lessons/NN_*.py and print one line per exercise.")
    p.add_argument("lesson", help="lesson number, e.g. 03")
    p.add_argument("--impl", default="lesson", choices=("lesson", "reference", "stub"),
                   help="what to check: your file (default), the reference, or a blank stub")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"minidiff {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
