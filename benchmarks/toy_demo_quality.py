"""Does the 2-D demo learn the data?  Sliced Wasserstein distance of DDPM samples vs the floor.

For each dataset: train with the ``ToyConfig`` defaults plus ``max_seconds`` (60 s by default),
draw 5,000 points with DDPM ancestral sampling (T = 1000 steps) from the EMA weights, and compare
them with 5,000 fresh data points by ``metrics.sliced_wasserstein`` (default arguments: 256
projections, projection seed 0, p = 2).  The yardstick is the data-versus-data floor: the same
distance between two fresh 5,000-point data sets, averaged over ``--floor-seeds`` pairs.  A run
passes when model SWD <= 1.5 x floor.

    python benchmarks/toy_demo_quality.py                      # swiss_roll and 8gaussians, 60 s each
    python benchmarks/toy_demo_quality.py --datasets two_moons --max-seconds 30

Writes benchmarks/results/toy_demo_quality.json (or ``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

from minidiff.data.toy2d import sample_toy
from minidiff.metrics import sliced_wasserstein, sliced_wasserstein_report
from minidiff.train import ToyConfig, sample_from_params, train_toy

N = 5000
TOLERANCE = 1.5
# Seeds for the evaluation data: far away from the training stream (cfg.seed + 1 = 1).
FLOOR_SEED0 = 10_000
FRESH_SEED = 20_000


def run(name: str, max_seconds: float, n_pairs: int, sample_seed: int, backend: str) -> dict:
    if backend == "torch":
        import minidiff.torch  # noqa: F401  (registers the torch backend of the 2-D trainer)
    cfg = ToyConfig(dataset=name, max_seconds=max_seconds, backend=backend)
    # 2 n_pairs independent N-point data sets: the floor pairs them up (2i, 2i + 1)
    sets = [sample_toy(name, N, FLOOR_SEED0 + i) for i in range(2 * n_pairs)]
    t0 = time.perf_counter()
    res = train_toy(cfg, progress=False)
    t1 = time.perf_counter()
    x = sample_from_params(res["ema"], res["config"], N, seed=sample_seed, backend=backend)
    t2 = time.perf_counter()
    swd = sliced_wasserstein(x, sample_toy(name, N, FRESH_SEED))
    # The same samples against the floor's data sets too: how much of the number is the
    # particular fresh set.  The pass rule compares like with like: the floor is a mean over
    # data-vs-data pairs, so the model's distance is the mean over fresh sets too.
    report = sliced_wasserstein_report(x, sets, [(sets[2 * i], sets[2 * i + 1]) for i in range(n_pairs)])
    swd_spread, floors = report["per_set"], report["floor_per_pair"]
    floor_mean = float(np.mean(floors))
    return {
        "dataset": name,
        "config": res["config"],
        "train_steps_done": int(res["steps"]),
        "train_steps_configured": cfg.steps,
        "train_seconds": round(res["seconds"], 2),
        "train_wall_seconds": round(t1 - t0, 2),
        "sample_seconds": round(t2 - t1, 2),
        "final_loss_mean_last_200": float(np.mean(res["losses"][-200:])),
        "floor_swd": [round(f, 5) for f in floors],
        "floor_swd_mean": round(floor_mean, 5),
        "floor_swd_std": round(float(np.std(floors)), 5),
        "model_swd": round(swd, 5),
        "model_swd_vs_other_fresh_sets_mean": round(float(np.mean(swd_spread)), 5),
        "model_swd_vs_other_fresh_sets_max": round(float(np.max(swd_spread)), 5),
        "ratio_single_fresh_set": round(swd / floor_mean, 3),
        "ratio": round(float(np.mean(swd_spread)) / floor_mean, 3),
        "pass": bool(np.mean(swd_spread) <= TOLERANCE * floor_mean),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["swiss_roll", "8gaussians"])
    ap.add_argument("--max-seconds", type=float, default=60.0, help="training time budget per dataset")
    ap.add_argument("--floor-seeds", type=int, default=10, help="data-vs-data pairs averaged for the floor")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--backend", default="numpy", choices=("numpy", "torch"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "toy_demo_quality.json"))
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="if > 0: limit the BLAS pool to N threads (threadpoolctl); 0: library default")
    args = ap.parse_args(argv)
    if args.blas_threads > 0:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.blas_threads, user_api="blas")

    rows = []
    for name in args.datasets:
        row = run(name, args.max_seconds, args.floor_seeds, args.sample_seed, args.backend)
        rows.append(row)
        print(f"  {name}: {row['train_steps_done']} steps in {row['train_seconds']} s, "
              f"sampling {row['sample_seconds']} s", file=sys.stderr, flush=True)

    header = (f"{'dataset':<12} {'steps':>6} {'train s':>8} {'floor SWD':>18} {'model SWD (1 set / mean of 20)':>32} "
              f"{'ratio':>6} {'pass (<=1.5)':>12}")
    print(header)
    print("-" * len(header))
    for r in rows:
        fl = f"{r['floor_swd_mean']:.4f} +- {r['floor_swd_std']:.4f}"
        print(f"{r['dataset']:<12} {r['train_steps_done']:>6} {r['train_seconds']:>8.1f} {fl:>18} "
              f"{r['model_swd']:>14.4f} / {r['model_swd_vs_other_fresh_sets_mean']:.4f}      {r['ratio']:>6.2f} "
              f"{str(r['pass']):>12}")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    defaults = dataclasses.asdict(ToyConfig())
    with open(args.out, "w") as f:
        json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                   "machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "cpu_count": os.cpu_count(), "python": platform.python_version(),
                               "numpy": np.__version__, "loadavg_at_end": os.getloadavg()},
                   "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                   "blas_threads": args.blas_threads or "default", "n_points": N, "tolerance": TOLERANCE, "toy_config_defaults": defaults,
                   "results": rows, "all_pass": all(r["pass"] for r in rows)}, f, indent=1)
    print(f"wrote {args.out}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
