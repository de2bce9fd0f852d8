"""FD of one trained image checkpoint under several samplers (Karras et al. 2022, section 4 and
Fig. 4: the deterministic Heun sampler against the stochastic one at several S_churn and N), so
that a sampler is chosen on one set of samples and confirmed on another:

    python benchmarks/sampler_sweep.py RUN --n 2000 --seed 0 --out sweep_seed0.json
    python benchmarks/sampler_sweep.py RUN --n 2000 --seed 1 --only heun18 sto40c40 --out sweep_seed1.json

Each setting is one `minidiff eval` call (the sampler code users run), the same checkpoint and
the same --seed, scored against the same --n-reference test images; NFE is the number of network
evaluations per sample (Heun: 2N - 1; the stochastic sampler: 2N - 1 as well, its churn adds noise,
not evaluations); gamma is the churn per step, min(S_churn / N, sqrt 2 - 1), so S_churn beyond
0.414 N changes nothing.  Prints a Markdown table and writes the reports to --out.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> the eval options of that sampler (EDM's defaults S_tmin 0, S_tmax inf, S_noise 1 unless named)
SETTINGS = {
    "heun18": ["--sampler", "heun", "--steps", "18"],
    "heun40": ["--sampler", "heun", "--steps", "40"],
    "sto18c10": ["--sampler", "stochastic", "--steps", "18", "--churn", "10"],
    "sto18c40": ["--sampler", "stochastic", "--steps", "18", "--churn", "40"],
    "sto40c10": ["--sampler", "stochastic", "--steps", "40", "--churn", "10"],
    "sto40c16": ["--sampler", "stochastic", "--steps", "40", "--churn", "16"],
    "sto40c40": ["--sampler", "stochastic", "--steps", "40", "--churn", "40"],
    "sto64c40": ["--sampler", "stochastic", "--steps", "64", "--churn", "40"],
    "sto40c40n": ["--sampler", "stochastic", "--steps", "40", "--churn", "40", "--s-tmin", "0.05",
                  "--s-tmax", "50", "--s-noise", "1.003"],
}


def _opt(opts: list, name: str, default: float) -> float:
    return float(opts[opts.index(name) + 1]) if name in opts else default


def nfe(opts: list) -> int:
    return 2 * int(_opt(opts, "--steps", 0)) - 1


def gamma(opts: list) -> float:
    """EDM Algorithm 2 line 4 (inside [S_tmin, S_tmax]): min(S_churn / N, sqrt 2 - 1)."""
    return min(_opt(opts, "--churn", 0.0) / _opt(opts, "--steps", 1), math.sqrt(2) - 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="an image checkpoint folder (pixel or latent, EDM)")
    p.add_argument("--n", type=int, default=2000, help="samples per setting")
    p.add_argument("--n-reference", type=int, default=10000, help="test images")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed (the same for every setting)")
    p.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="these settings only (default: all)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--out", default="", help="JSON of every report (default: print only)")
    args = p.parse_args(argv)
    rows = []
    for name in args.only or SETTINGS:
        opts = SETTINGS[name]
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "eval.json"
            t0 = time.time()
            run = subprocess.run([sys.executable, "-m", "minidiff.cli", "eval", "--ckpt", args.ckpt, "--n", str(args.n),
                                  "--seed", str(args.seed), "--n-reference", str(args.n_reference), "--batch-size",
                                  str(args.batch_size), "--device", "cpu", *opts, "--out", str(report)],
                                 capture_output=True, text=True)
            if run.returncode:
                print(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"eval failed: {name}")
                return 1
            r = json.loads(report.read_text())
        rows.append({"setting": name, "options": " ".join(opts), "nfe": nfe(opts), "gamma": gamma(opts),
                     "fd": r["fd"], "kid": r.get("kid_mean"), "seconds": round(time.time() - t0, 1)})
        print(f"{name}: FD {r['fd']:.2f} ({rows[-1]['seconds']} s)", flush=True)
    print(f"\n{args.ckpt}, {args.n} samples (seed {args.seed}) vs {args.n_reference} test images\n")
    print("| setting | eval options | NFE | gamma | FD |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | `{r['options']}` | {r['nfe']} | {r['gamma']:.3f} | {r['fd']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"ckpt": args.ckpt, "n": args.n, "n_reference": args.n_reference,
                                              "seed": args.seed, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
