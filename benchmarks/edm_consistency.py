"""EDM samplers and consistency models on 2-D data: the numbers of the EDM / consistency issue.

Part 1 (exact): with the Gaussian mixture's exact denoiser, error against NFE for Euler, Heun,
the stochastic sampler, DDIM and DDPM ancestral.  Deterministic samplers get a trajectory error
against a 2000-step Heun solution from the same x_T; every sampler gets the sliced Wasserstein
distance of its samples to fresh data (mean over seeds), next to the data-vs-data floor.

Part 2 (trained): an EDM teacher, consistency distillation from it, consistency training and
improved consistency training, all on the same dataset; 1-, 2- and 4-step consistency samples
against the teacher's Heun-18 (35 NFE).

    python benchmarks/edm_consistency.py [--part exact|trained|all] [--fast]

Writes benchmarks/results/edm_consistency.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minidiff import edm, samplers
from minidiff.backend import generator
from minidiff.checkpoint import save_toy_checkpoint
from minidiff.data.toy2d import eight_gaussians_mixture, sample_toy
from minidiff.metrics import sliced_wasserstein, sliced_wasserstein_report
from minidiff.schedules import alpha_bars, linear_betas
from minidiff.train import ToyConfig, sample_from_params, train_toy

RESULTS = Path(__file__).resolve().parent / "results"
TAU_GRID = (0.1, 0.2, 0.4, 0.8, 1.6)


def swd(x, data):
    return sliced_wasserstein(x, data)


def exact_part(n: int, seeds: int):
    gmm = eight_gaussians_mixture()
    D = lambda x, s: gmm.denoise(x, 1.0, s)
    T = 1000
    betas = linear_betas(T)
    alpha_bar = alpha_bars(betas)
    eps_model = gmm.eps_model(alpha_bar)
    rows = []
    data = [gmm.sample(n, 1000 + s) for s in range(seeds)]
    floors = sliced_wasserstein_report(floor_pairs=[(data[s], gmm.sample(n, 2000 + s)) for s in range(seeds)])
    floors = floors["floor_per_pair"]

    def run(name, nfe, fn, deterministic_ref=None):
        xs, traj = [], []
        for s in range(seeds):
            z = generator(s).randn((n, 2))
            xs.append(fn(z, s))
            if deterministic_ref is not None and s == 0:
                traj.append(float(np.abs(xs[-1] - deterministic_ref).mean()))
        dists = sliced_wasserstein_report(xs, data)["per_set"]
        rows.append({"sampler": name, "nfe": nfe, "swd": float(np.mean(dists)), "swd_sem": float(np.std(dists) / np.sqrt(seeds)),
                     "trajectory_error": traj[0] if traj else None})
        print(f"  {name:28s} NFE {nfe:5d}  SWD {rows[-1]['swd']:.4f}  traj {rows[-1]['trajectory_error']}")

    ref_sig = edm.karras_sigmas(2000)
    z0 = generator(0).randn((n, 2))
    ref = samplers.heun_sample(D, 80.0 * z0, ref_sig)
    for N in (5, 10, 18, 35, 64):
        sig = edm.karras_sigmas(N)
        run(f"euler (Karras, N={N})", N, lambda z, s, sig=sig: samplers.euler_sample(D, 80.0 * z, sig), ref)
        run(f"heun (Karras, N={N})", 2 * N - 1, lambda z, s, sig=sig: samplers.heun_sample(D, 80.0 * z, sig), ref)
    for N in (18, 35):
        sig = edm.karras_sigmas(N)
        run(f"stochastic (N={N}, churn 10)", 2 * N - 1,
            lambda z, s, sig=sig: samplers.stochastic_sample(D, 80.0 * z, sig, generator(100 + s).randn_like,
                                                             S_churn=10, S_tmin=0.05, S_tmax=50, S_noise=1.003))
    # DDIM / DDPM start from x_T ~ N(0, I) at the DDPM grid's sigma_max ~ 157: a different x_T law, so
    # their trajectory error is measured against DDIM's own 1000-step solution
    ddim_ref = samplers.ddim_sample(eps_model, z0, alpha_bar, np.arange(T)[::-1])
    for N in (10, 18, 35, 100):
        tau = samplers.ddim_timesteps(T, N, "trailing")
        run(f"ddim eta=0 (N={N})", N, lambda z, s, tau=tau: samplers.ddim_sample(eps_model, z, alpha_bar, tau), ddim_ref)
    run("ddpm ancestral (T=1000)", 1000,
        lambda z, s: samplers.ddpm_sample(eps_model, z, betas, generator(200 + s).randn_like))
    return {"n": n, "seeds": seeds, "floor": float(np.mean(floors)), "floor_sem": float(np.std(floors) / np.sqrt(seeds)),
            "rows": rows}


def trained_part(dataset: str, n: int, seeds: int, teacher_s: float, student_s: float):
    folder = Path(tempfile.mkdtemp(prefix="minidiff-bench-"))
    data = [sample_toy(dataset, n, 5000 + s) for s in range(seeds)]
    floor = sliced_wasserstein_report(floor_pairs=[(sample_toy(dataset, n, 6000 + s), data[s])
                                                   for s in range(seeds)])["data_floor"]
    out = {"dataset": dataset, "n": n, "seeds": seeds, "floor": floor, "rows": []}

    def evaluate(name, params, config, sampler, steps, nfe, seconds, train_steps, label="", **kw):
        d = sliced_wasserstein_report([sample_from_params(params, config, n, seed=s, sampler=sampler, steps=steps, **kw)
                                       for s in range(seeds)], data)["per_set"]
        out["rows"].append({"model": name, "sampler": f"{sampler} {label}".strip(), "steps": steps, "nfe": nfe,
                            "swd": float(np.mean(d)), "train_seconds": seconds, "train_steps": train_steps})
        print(f"  {name:10s} {sampler:12s} steps {steps:3d} NFE {nfe:3d}  SWD {np.mean(d):.4f} (floor {floor:.4f})")

    t = train_toy(ToyConfig(dataset=dataset, method="edm", steps=20000, max_seconds=teacher_s), progress=False)
    save_toy_checkpoint(folder / "teacher", t["params"], t["ema"], t["config"], t["steps"])
    evaluate("edm", t["ema"], t["config"], "heun", 18, 35, t["seconds"], t["steps"])
    evaluate("edm", t["ema"], t["config"], "euler", 35, 35, t["seconds"], t["steps"])
    for method in ("cd", "ct", "ict"):
        cfg = ToyConfig(dataset=dataset, method=method, steps=20000, max_seconds=student_s, teacher=str(folder / "teacher"),
                        lr=5e-4 if method == "cd" else 2e-3)
        r = train_toy(cfg, progress=False)
        for k in (1, 2, 4):
            evaluate(method, r["ema"], r["config"], "consistency", k, k, r["seconds"], r["steps"])
        # CM section 6 picks the 2-step noise level by search; ours searches on a held-out seed
        held_out = sample_toy(dataset, n, 7000)
        scores = {tau: swd(sample_from_params(r["ema"], r["config"], n, seed=99, sampler="consistency", steps=2,
                                              taus=[tau]), held_out) for tau in TAU_GRID}
        best = min(scores, key=scores.get)
        out.setdefault("tau_search", {})[method] = {"grid": scores, "best": best}
        evaluate(method, r["ema"], r["config"], "consistency", 2, 2, r["seconds"], r["steps"], taus=[best],
                 label=f"tau={best}")
    teacher = next(r["swd"] for r in out["rows"] if r["model"] == "edm" and r["sampler"] == "heun")
    for r in out["rows"]:
        r["ratio_to_teacher"] = r["swd"] / teacher
    return out


def markdown(results) -> str:
    lines = [f"# EDM samplers and consistency models on 2-D data", "",
             f"Command: `python benchmarks/edm_consistency.py {results['args']}`  ",
             f"Machine: {results['machine']}; date {results['date']}; runtime {results['runtime_s']:.0f} s.", ""]
    if "exact" in results:
        e = results["exact"]
        lines += ["## With the exact Gaussian-mixture denoiser (8 Gaussians)", "",
                  f"{e['n']} samples, {e['seeds']} seeds; data-vs-data floor SWD {e['floor']:.4f} +- {e['floor_sem']:.4f}.", "",
                  "| sampler | NFE | sliced W2 to data | trajectory error |", "|---|---|---|---|"]
        for r in e["rows"]:
            tr = "" if r["trajectory_error"] is None else f"{r['trajectory_error']:.2e}"
            lines.append(f"| {r['sampler']} | {r['nfe']} | {r['swd']:.4f} +- {r['swd_sem']:.4f} | {tr} |")
        lines.append("")
    if "trained" in results:
        t = results["trained"]
        lines += [f"## Trained models on {t['dataset']}", "",
                  f"{t['n']} samples, {t['seeds']} seeds; data-vs-data floor SWD {t['floor']:.4f}.", "",
                  "| model | sampler | NFE | sliced W2 | ratio to the teacher (Heun, 35 NFE) | training |", "|---|---|---|---|---|---|"]
        for r in t["rows"]:
            lines.append(f"| {r['model']} | {r['sampler']} | {r['nfe']} | {r['swd']:.4f} | {r['ratio_to_teacher']:.2f} | "
                         f"{r['train_steps']} steps, {r['train_seconds']:.0f} s |")
        lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--part", default="all", choices=("exact", "trained", "all"))
    p.add_argument("--fast", action="store_true")
    p.add_argument("--dataset", default="8gaussians")
    p.add_argument("--teacher-seconds", type=float, default=90.0)
    p.add_argument("--student-seconds", type=float, default=90.0)
    a = p.parse_args()
    n, seeds = (1000, 2) if a.fast else (5000, 3)
    start = time.perf_counter()
    results = {"args": " ".join(sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
    if a.part in ("exact", "all"):
        print("exact mixture denoiser")
        results["exact"] = exact_part(n, seeds)
    if a.part in ("trained", "all"):
        print(f"trained models on {a.dataset}")
        ts, ss = (10.0, 10.0) if a.fast else (a.teacher_seconds, a.student_seconds)
        results["trained"] = trained_part(a.dataset, n, seeds, ts, ss)
    results["runtime_s"] = time.perf_counter() - start
    RESULTS.mkdir(exist_ok=True)
    suffix = ("_fast" if a.fast else "") + ("" if a.part == "all" else f"_{a.part}")
    (RESULTS / f"edm_consistency{suffix}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"edm_consistency{suffix}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
