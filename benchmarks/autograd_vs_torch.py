"""One training step of the 2-D DDPM: our autograd MLP vs the same step in torch (CPU).

Both sides are the steppers that ``minidiff.train.train_toy`` uses, built from the same initial
weights and fed the same batches:

* autograd: ``train._NumpyStepper`` -- ``mlp`` traced by HIPS/autograd (primitives ``_np_linear``
  and ``_np_silu`` with hand-written VJPs), ``clip_grad_norm`` and our ``adam_update``;
* torch:    ``torch.toy.TorchStepper``   -- ``TorchMLP``, ``loss.backward()``,
  ``torch.nn.utils.clip_grad_norm_`` and ``torch.optim.AdamW`` (library defaults, i.e. foreach).

One "step" is forward + backward + clipping + optimizer update on one batch, in float32.  The
two are timed side by side in one process, interleaved (the order alternates every round),
after a warm-up; we report medians over many rounds and the ratio autograd / torch.

    python benchmarks/autograd_vs_torch.py                 # library thread defaults
    python benchmarks/autograd_vs_torch.py --threads 1     # both sides on one thread
    python benchmarks/autograd_vs_torch.py --profile       # cProfile of the autograd step

Writes benchmarks/results/autograd_vs_torch[_threadsN].json (or ``--out``).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import platform
import pstats
import sys
import time
import warnings

import numpy as np
import torch

from minidiff.data.toy2d import sample_toy
from minidiff.nn import init_mlp
from minidiff.methods import Objective
from minidiff.torch.toy import TorchStepper as _TorchStepper
from minidiff.train import ToyConfig, _NumpyStepper

# ``float(loss)`` in _TorchStepper reads a tensor that requires grad; harmless here.
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")

LR = 1e-3
N_BATCHES = 8  # pre-drawn batches, cycled, so data generation is not timed


def _configs():
    d = ToyConfig()
    demo = {"name": "demo (ToyConfig defaults)", "batch_size": d.batch_size, "hidden": d.hidden,
            "depth": d.depth, "t_dim": d.t_dim}
    return [demo,
            {**demo, "name": "small batch", "batch_size": 128},
            {**demo, "name": "large batch", "batch_size": 2048},
            {**demo, "name": "narrow", "hidden": 64},
            {**demo, "name": "wide", "hidden": 256}]


def _steppers(c):
    cfg = ToyConfig(batch_size=c["batch_size"], hidden=c["hidden"], depth=c["depth"], t_dim=c["t_dim"],
                    dtype="float32")
    init = init_mlp(np.random.default_rng(0), 2, cfg.hidden, cfg.depth, cfg.t_dim, dtype=np.float32)
    objective = Objective(cfg)
    np_stepper, th_stepper = _NumpyStepper(cfg, init, objective), _TorchStepper(cfg, init, objective)

    def np_step(x0, t, noise, lr):
        return np_stepper.step(x0, {"t": t, "noise": noise}, lr)

    def th_step(x0, t, noise, lr):
        return th_stepper.step(x0, {"t": t, "noise": noise}, lr)

    np_params, th_params = np_stepper.params, th_stepper.params
    rng = np.random.default_rng(1)
    batches = []
    for i in range(N_BATCHES):
        x0 = sample_toy(cfg.dataset, cfg.batch_size, rng).astype(np.float32)
        t = rng.integers(0, cfg.T, cfg.batch_size)
        noise = rng.standard_normal((cfg.batch_size, 2)).astype(np.float32)
        batches.append((x0, t, noise))
    return np_step, np_params, th_step, th_params, batches


def measure(c, warmup: int, rounds: int) -> dict:
    np_step, np_params, th_step, th_params, batches = _steppers(c)
    # Same work on both sides: the first losses agree and so do the weights after a few steps.
    first = [(np_step(*b, LR), th_step(*b, LR)) for b in batches[:3]]
    w_diff = max(float(np.max(np.abs(a - b))) for la, lb in zip(np_params(), th_params()) for a, b in zip(la, lb))
    for i in range(warmup):
        b = batches[i % N_BATCHES]
        np_step(*b, LR)
        th_step(*b, LR)
    t_np, t_th = [], []
    timer = time.perf_counter
    for r in range(rounds):
        b = batches[r % N_BATCHES]
        order = ((np_step, t_np), (th_step, t_th)) if r % 2 == 0 else ((th_step, t_th), (np_step, t_np))
        for step, out in order:
            t0 = timer()
            step(*b, LR)
            out.append(timer() - t0)
    t_np, t_th = np.asarray(t_np), np.asarray(t_th)
    med_np, med_th = float(np.median(t_np)), float(np.median(t_th))
    return {**c, "rounds": rounds, "warmup": warmup,
            "autograd_ms_median": round(1e3 * med_np, 3), "torch_ms_median": round(1e3 * med_th, 3),
            "autograd_ms_iqr": [round(1e3 * q, 3) for q in np.percentile(t_np, [25, 75])],
            "torch_ms_iqr": [round(1e3 * q, 3) for q in np.percentile(t_th, [25, 75])],
            "ratio_of_medians": round(med_np / med_th, 3),
            "median_of_paired_ratios": round(float(np.median(t_np / t_th)), 3),
            "first_losses_autograd_torch": [[round(a, 6), round(b, 6)] for a, b in first],
            "max_weight_diff_after_3_steps": w_diff}


def profile(c, n: int = 300, top: int = 25):
    np_step, _, _, _, batches = _steppers(c)
    for i in range(20):
        np_step(*batches[i % N_BATCHES], LR)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        np_step(*batches[i % N_BATCHES], LR)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def _thread_info():
    info = {"torch_num_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "prefix", "num_threads", "version")}
                               for p in threadpool_info()]
    except ImportError:
        pass
    env = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
    info["env"] = {k: os.environ.get(k) for k in env}
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400, help="timed steps per side and config")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0,
                    help="if > 0: torch.set_num_threads(N) and the BLAS pool limited to N (threadpoolctl); "
                         "0 (default): leave both libraries at their defaults")
    ap.add_argument("--only-demo", action="store_true", help="time only the demo config")
    ap.add_argument("--profile", action="store_true", help="cProfile the autograd step (demo config) and exit")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    limiter = None
    if args.threads > 0:
        from threadpoolctl import threadpool_limits
        torch.set_num_threads(args.threads)
        limiter = threadpool_limits(limits=args.threads, user_api="blas")
    configs = _configs()[:1] if args.only_demo else _configs()
    if args.profile:
        profile(configs[0])
        return 0

    threads = _thread_info()
    print(f"torch {torch.__version__} ({threads['torch_num_threads']} threads), numpy {np.__version__}; "
          f"{args.rounds} rounds after {args.warmup} warm-up steps, interleaved")
    header = f"{'config':<28} {'batch':>5} {'hidden':>6} {'autograd ms':>11} {'torch ms':>9} {'ratio':>6} {'paired':>6}"
    print(header)
    print("-" * len(header))
    rows = []
    load_before = os.getloadavg()
    for c in configs:
        r = measure(c, args.warmup, args.rounds)
        rows.append(r)
        print(f"{r['name']:<28} {r['batch_size']:>5} {r['hidden']:>6} {r['autograd_ms_median']:>11.2f} "
              f"{r['torch_ms_median']:>9.2f} {r['ratio_of_medians']:>6.2f} {r['median_of_paired_ratios']:>6.2f}",
              flush=True)
    print(f"load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()} -- other processes on the "
          "machine make the numbers noisy")
    print("ratio = median autograd step / median torch step; paired = median over rounds of the per-round ratio")
    print(f"demo config: ratio {rows[0]['ratio_of_medians']:.2f} (target <= 1.5)")

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   "autograd_vs_torch" + (f"_threads{args.threads}" if args.threads else "") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                   "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                               "python": platform.python_version(), "numpy": np.__version__,
                               "torch": torch.__version__,
                               "loadavg_before_after": [load_before, os.getloadavg()]},
                   "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                   "threads": threads, "dtype": "float32", "lr": LR, "results": rows}, f, indent=1)
    print(f"wrote {out}")
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
