"""Error against NFE for the samplers: DDPM, DDIM (eta = 0 and 1), PC and the probability-flow ODE.

Two problems, the same tables for each:

1. ``8gaussians`` with the **exact** score (``eight_gaussians_mixture``): no model error at all,
   so what is left is the sampler's own error.
2. ``swiss_roll`` with a **trained** eps-model (``train_toy(ToyConfig(dataset='swiss_roll',
   max_seconds=...))``, EMA weights, trained once per run and kept in memory only).

DDPM's discrete chain and the VP SDE are linked as in Song et al. (2021): T = 1000 linear betas
1e-4..0.02 are the discretisation of beta(t) = T beta_t, i.e. ``VPSDE(beta_min=0.1, beta_max=20)``.
The discrete samplers (DDPM, DDIM) call the eps-model at integer steps; the SDE samplers (PC,
ODE) call the score ``score(x, t) = -eps(x, t (T - 1)) / sigma(t)`` with sigma(t) from
``VPSDE.marginal`` and the *continuous* label t (T - 1) (Song et al.'s code for DDPM checkpoints;
the sinusoidal embedding accepts any real t).  For the exact mixture the score is the exact
score of the VP marginal and the eps-model is ``gmm.eps_model(alpha_bar)``.

Deterministic samplers -- mean trajectory error ``mean_i |x_i - x_ref,i|`` (2-norm per point) from
the same x_T against

* **ref(VP)**: the probability-flow ODE solved by ``ode_sample_rk45`` with rtol = atol = 1e-8
  from t = 1 to t = 1e-3 (checked against ``ode_sample(method='rk4')`` with many steps);
* for DDIM also **ref(DDIM-ODE)**: DDIM with eta = 0 is exactly Euler's method on
  dx_bar/dsigma_bar = eps(x, t), x_bar = x / sqrt(alpha_bar), sigma_bar = sqrt((1 - alpha_bar) /
  alpha_bar) (DDIM eq. 14), from sigma_bar of step T - 1 down to 0; that ODE solved with scipy's
  DOP853 at rtol = atol = 1e-10 is the limit DDIM converges to.  It differs from ref(VP) only in
  its end points (DDIM starts at alpha_bar_{T-1}, not alpha(1)^2, and ends at sigma = 0 rather
  than at t = 1e-3, sigma = 0.0105), so DDIM-1000 vs ref(VP) is a floor, not an error;
* and, as the issue asks, **DDIM-1000** (DDIM eta = 0 with all 1000 steps).

Stochastic samplers -- two-sample distances between ``--n-sample`` samples and as many fresh data
points: sliced Wasserstein (``metrics.sliced_wasserstein``, 256 projections, projection seed 0)
and the unbiased MMD^2 (``metrics.mmd2_unbiased``, Gaussian kernels 0.1..2), with the
data-vs-data floor (mean of ``--floor-pairs`` pairs of fresh data sets).

DDIM Table-1 check (Song, Meng & Ermon 2021, Table 1, in miniature): sliced Wasserstein to fresh
data averaged over ``--seeds`` seeds (x_T, sampler noise and fresh data all change with the
seed; common random numbers across samplers) for DDIM eta = 0 vs eta = 1 at 10 and 20 steps
(target: eta = 0 lower), and DDIM-50 (eta = 0) vs DDPM-1000 (target: ratio <= 1.1), for two
step spacings ('trailing', which starts at step T - 1, and 'leading', the DDIM paper's uniform
choice c, 2c, ...).

    python benchmarks/nfe_table.py            # the full run (about 10 minutes on a busy 2-core CPU)
    python benchmarks/nfe_table.py --fast     # a smoke run (about a minute): fewer points, steps, seeds

Writes benchmarks/results/nfe_table.json (raw numbers) and nfe_table.md (the tables), or --out.
"""
from __future__ import annotations

import os

# A benchmark on a shared 2-core machine: one BLAS thread per process unless told otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from minidiff.backend import generator  # noqa: E402
from minidiff.data.toy2d import eight_gaussians_mixture, sample_toy  # noqa: E402
from minidiff.metrics import mmd2_unbiased, sliced_wasserstein, sliced_wasserstein_report  # noqa: E402
from minidiff.nn.mlp import mlp  # noqa: E402
from minidiff.samplers import ddim_sample, ddim_timesteps, ddpm_sample  # noqa: E402
from minidiff.schedules import alpha_bars, linear_betas  # noqa: E402
from minidiff.sde import VPSDE, ode_sample, ode_sample_rk45, pc_sample  # noqa: E402
from minidiff.train import ToyConfig, train_toy  # noqa: E402

T = 1000
BETAS = linear_betas(T)                 # 1e-4 .. 0.02
ALPHA_BAR = alpha_bars(BETAS)
SDE = VPSDE(beta_min=0.1, beta_max=20.0)  # beta(t) = T beta_t
REF_TOL = 1e-8                          # ode_sample_rk45 reference
DDIM_REF_TOL = 1e-10                    # DOP853 on DDIM's own ODE
# Seeds: x_T / sampler noise / fresh data, far from the training stream (ToyConfig.seed + 1, + 2).
XT_SEED, NOISE_SEED, FRESH_SEED, FLOOR_SEED = 50_000, 60_000, 70_000, 80_000

FULL = dict(n_traj=500, n_sample=2000, floor_pairs=10, seeds=10, max_seconds=120.0,
            ddim_steps=(10, 20, 50, 100, 1000), ode_nfe=(10, 20, 50, 100, 200, 1000),
            rk45_tols=(1e-3, 1e-5), rk4_check_steps=500, eta1_steps=(10, 20, 50, 100, 1000),
            pc=((25, 1), (100, 1), (500, 1), (100, 0), (1000, 0)))
FAST = dict(n_traj=200, n_sample=500, floor_pairs=3, seeds=2, max_seconds=10.0,
            ddim_steps=(10, 50, 1000), ode_nfe=(10, 50), rk45_tols=(1e-3,),
            rk4_check_steps=100, eta1_steps=(10,), pc=((25, 1),))


# ----------------------------------------------------------------------------------------------
# The two problems: an eps-model on integer steps, a score on t in [eps, 1], eps at any alpha_bar.

class Problem:
    def __init__(self, name, eps_model, score, eps_at_alpha_bar, data, info, quality=None):
        self.name, self.eps_model, self.score, self.eps_at_alpha_bar = name, eps_model, score, eps_at_alpha_bar
        self.data, self.info = data, info
        self.quality = quality or self   # the same problem, possibly with a cheaper model, for sample quality


def exact_mixture() -> Problem:
    gmm = eight_gaussians_mixture()

    def score(x, t):
        alpha, sigma = SDE.marginal(t, x)
        return gmm.score(x, alpha, sigma)

    def eps_at(x, ab):
        return -math.sqrt(1 - ab) * gmm.score(x, math.sqrt(ab), math.sqrt(1 - ab))

    return Problem("8gaussians, exact score", gmm.eps_model(ALPHA_BAR), score, eps_at,
                   lambda n, seed: gmm.sample(n, seed), {"dataset": "8gaussians", "model": "exact"})


def trained_swiss_roll(max_seconds: float) -> Problem:
    cfg = ToyConfig(dataset="swiss_roll", max_seconds=max_seconds)
    t0 = time.perf_counter()
    res = train_toy(cfg, progress=False)
    train_wall = time.perf_counter() - t0
    if res["config"].get("method", "ddpm") != "ddpm" or res["config"].get("target", "eps") != "eps":
        raise ValueError(f"need a DDPM eps-model; ToyConfig gave method={res['config'].get('method')!r}, "
                         f"target={res['config'].get('target')!r}")
    params = [[np.asarray(W, np.float64), np.asarray(b, np.float64)] for W, b in res["ema"]]
    net = partial(mlp, params)   # eps(x, t) for real t in [0, T - 1]; float64 for the tight references

    params32 = [[W.astype(np.float32), b.astype(np.float32)] for W, b in params]

    def net32(x, t):  # the network in float32 (as trained), the sampler state stays float64
        return mlp(params32, x.astype(np.float32), t).astype(x.dtype)

    def eps_model(x, t, **_):
        return net(x, t)

    def score(x, t):
        _, sigma = SDE.marginal(t, x)
        return -net(x, np.asarray(t, np.float64) * (T - 1)) / sigma[:, None]

    def eps_model32(x, t, **_):
        return net32(x, t)

    def score32(x, t):
        _, sigma = SDE.marginal(t, x)
        return -net32(x, np.asarray(t, np.float64) * (T - 1)) / sigma[:, None]

    losses = res["losses"]
    info = {"dataset": "swiss_roll", "model": "trained mlp, EMA weights (float64 for trajectories, float32 for sample quality)",
            "config": res["config"], "train_steps_done": int(res["steps"]),
            "train_seconds": round(float(res["seconds"]), 1), "train_wall_seconds": round(train_wall, 1),
            "final_loss_mean_last_200": float(np.mean(losses[-200:]))}
    data = partial(sample_toy, "swiss_roll")
    quality = Problem("swiss_roll, trained eps-model (float32 network)", eps_model32, score32, None, data, info)
    return Problem("swiss_roll, trained eps-model", eps_model, score, None, data, info, quality)


# ----------------------------------------------------------------------------------------------
# Samplers: each returns (x, NFE).

def run_ddpm(p, x_T, seed, variance="beta"):
    return ddpm_sample(p.eps_model, x_T, BETAS, generator(seed).randn_like, variance=variance), T


def run_ddim(p, x_T, n, eta, seed=None, spacing="trailing"):
    tau = ddim_timesteps(T, n, spacing)
    rl = generator(seed).randn_like if eta > 0 else None
    return ddim_sample(p.eps_model, x_T, ALPHA_BAR, tau, eta=eta, randn_like=rl), n


def run_pc(p, x_T, n, n_corrector, seed):
    x = pc_sample(p.score, x_T, SDE, n, generator(seed).randn_like, predictor="reverse_diffusion",
                  n_corrector=n_corrector, snr=0.16)
    return x, n * (1 + n_corrector)


def run_ode(p, x_T, nfe, method):
    per_step = {"euler": 1, "heun": 2, "rk4": 4}[method]
    n = max(1, int(round(nfe / per_step)))
    return ode_sample(p.score, x_T, SDE, n, method=method), n * per_step


def run_rk45(p, x_T, tol):
    return ode_sample_rk45(p.score, x_T, SDE, rtol=tol, atol=tol)


def ddim_ode_reference(p, x_T, tol=DDIM_REF_TOL):
    """DDIM's continuous limit: dx_bar/dsigma_bar = eps(x, alpha_bar(sigma_bar)) from step T - 1 to
    sigma_bar = 0, x = x_bar sqrt(alpha_bar), alpha_bar = 1 / (1 + sigma_bar^2).  (x_0, NFE)."""
    ab0 = float(ALPHA_BAR[-1])
    shape = x_T.shape
    nfe = [0]

    def rhs(s, y):
        nfe[0] += 1
        ab = 1.0 / (1.0 + s * s)
        return p.eps_at_alpha_bar(y.reshape(shape) * math.sqrt(ab), ab).reshape(-1)

    sol = solve_ivp(rhs, (math.sqrt((1 - ab0) / ab0), 0.0), (x_T / math.sqrt(ab0)).reshape(-1),
                    method="DOP853", rtol=tol, atol=tol)
    return sol.y[:, -1].reshape(shape), nfe[0]


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    x, nfe = fn(*a, **k)
    return np.asarray(x), int(nfe), time.perf_counter() - t0


def traj_err(x, ref):
    d = np.linalg.norm(x - ref, axis=1)
    return float(d.mean()), float(d.max())


# ----------------------------------------------------------------------------------------------

def deterministic_table(p, cfg, log):
    n = cfg["n_traj"]
    x_T = generator(XT_SEED).randn((n, 2))
    ref, ref_nfe, ref_s = timed(run_rk45, p, x_T, REF_TOL)
    log(f"  ref(VP) rk45 tol {REF_TOL:g}: NFE {ref_nfe}, {ref_s:.1f} s")
    dref = None
    chk, chk_nfe, chk_s = timed(run_ode, p, x_T, 4 * cfg["rk4_check_steps"], "rk4")
    check = {"rk4_steps": cfg["rk4_check_steps"], "rk4_nfe": chk_nfe,
             "mean_abs_diff_vs_ref": traj_err(chk, ref)[0], "max_abs_diff_vs_ref": traj_err(chk, ref)[1],
             "ref_nfe": ref_nfe, "ref_seconds": round(ref_s, 1)}
    if p.eps_at_alpha_bar is not None:   # DDIM's own ODE needs eps at any noise level: the exact model only
        dref, dref_nfe, dref_s = timed(ddim_ode_reference, p, x_T)
        log(f"  ref(DDIM-ODE) dop853 tol {DDIM_REF_TOL:g}: NFE {dref_nfe}, {dref_s:.1f} s")
        check.update(ddim_ode_ref_nfe=dref_nfe, ddim_ode_ref_vs_vp_ref_mean=traj_err(dref, ref)[0])
    log(f"  check: rk4 x{cfg['rk4_check_steps']} vs ref(VP): mean {check['mean_abs_diff_vs_ref']:.2e}, "
        f"max {check['max_abs_diff_vs_ref']:.2e}")
    rows = []
    ddim = {}
    for k in sorted(cfg["ddim_steps"], reverse=True):      # 1000 first: it is a reference below
        x, nfe, s = timed(run_ddim, p, x_T, k, 0.0)
        ddim[k] = (x, nfe, s)
    for k in sorted(ddim):
        x, nfe, s = ddim[k]
        rows.append({"sampler": "DDIM eta=0 (trailing)", "nfe": nfe, "err_vs_ref_vp": traj_err(x, ref)[0],
                     "err_vs_ref_ddim_ode": traj_err(x, dref)[0] if dref is not None else None,
                     "err_vs_ddim1000": traj_err(x, ddim[T][0])[0] if T in ddim else None,
                     "max_err_vs_ref_vp": traj_err(x, ref)[1], "seconds": round(s, 2)})
        log(f"  DDIM-{k}: {rows[-1]['err_vs_ref_vp']:.2e}")
    for k in sorted(cfg["ddim_steps"]):
        if k == T:
            continue   # the same steps as 'trailing'
        x, nfe, s = timed(run_ddim, p, x_T, k, 0.0, None, "linspace")
        rows.append({"sampler": "DDIM eta=0 (linspace)", "nfe": nfe, "err_vs_ref_vp": traj_err(x, ref)[0],
                     "err_vs_ref_ddim_ode": traj_err(x, dref)[0] if dref is not None else None,
                     "err_vs_ddim1000": traj_err(x, ddim[T][0])[0] if T in ddim else None,
                     "max_err_vs_ref_vp": traj_err(x, ref)[1], "seconds": round(s, 2)})
    for method in ("euler", "heun", "rk4"):
        for budget in cfg["ode_nfe"]:
            x, nfe, s = timed(run_ode, p, x_T, budget, method)
            e, m = traj_err(x, ref)
            rows.append({"sampler": f"PF-ODE {method}", "nfe": nfe, "err_vs_ref_vp": e, "max_err_vs_ref_vp": m,
                         "seconds": round(s, 2)})
        log(f"  PF-ODE {method}: done")
    for tol in cfg["rk45_tols"]:
        x, nfe, s = timed(run_rk45, p, x_T, tol)
        e, m = traj_err(x, ref)
        rows.append({"sampler": f"PF-ODE RK45 tol {tol:g}", "nfe": nfe, "err_vs_ref_vp": e, "max_err_vs_ref_vp": m,
                     "seconds": round(s, 2)})
    rows.append({"sampler": f"PF-ODE RK45 tol {REF_TOL:g} (= ref)", "nfe": ref_nfe, "err_vs_ref_vp": 0.0,
                 "seconds": round(ref_s, 2)})
    return {"n_points": n, "check": check, "rows": rows}


def floor_distances(p, n, pairs):
    sets = [(p.data(n, FLOOR_SEED + 2 * i), p.data(n, FLOOR_SEED + 2 * i + 1)) for i in range(pairs)]
    sw = sliced_wasserstein_report(floor_pairs=sets)["floor_per_pair"]
    mm = [mmd2_unbiased(a, b) for a, b in sets]
    return {"swd_mean": float(np.mean(sw)), "swd_std": float(np.std(sw)), "mmd2_mean": float(np.mean(mm)),
            "mmd2_std": float(np.std(mm)), "pairs": pairs}


def stochastic_table(p, cfg, log, cache):
    p = p.quality
    n = cfg["n_sample"]
    fresh = p.data(n, FRESH_SEED)
    rows = []

    def add(name, key, fn, *a):
        x, nfe, s = cache_get(cache, (key, 0), lambda: timed(fn, p, generator(XT_SEED).randn((n, 2)), *a))
        rows.append({"sampler": name, "nfe": nfe, "swd": sliced_wasserstein(x, fresh), "mmd2": mmd2_unbiased(x, fresh),
                     "seconds": round(s, 2)})
        log(f"  {name} NFE {nfe}: SWD {rows[-1]['swd']:.4f}  ({s:.1f} s)")

    add("DDPM ancestral (sigma^2 = beta)", ("ddpm",), run_ddpm, NOISE_SEED)
    for k in cfg["eta1_steps"]:
        add("DDIM eta=1 (trailing)" + (" = DDPM, posterior var." if k == T else ""), ("ddim", k, 1.0, "trailing"),
            run_ddim, k, 1.0, NOISE_SEED, "trailing")
    for k, c in cfg["pc"]:
        name = "PC: reverse diffusion + Langevin (snr 0.16)" if c else "PC: reverse diffusion only"
        add(name, ("pc", k, c), run_pc, k, c, NOISE_SEED)
    for k in (10, 20, 50, T):
        add("DDIM eta=0 (trailing)", ("ddim", k, 0.0, "trailing"), run_ddim, k, 0.0, None, "trailing")
    return {"n_points": n, "floor": floor_distances(p, n, cfg["floor_pairs"]), "rows": rows}


def _se(v):
    v = np.asarray(v, dtype=np.float64)
    return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def cache_get(cache, key, make):
    if key not in cache:
        cache[key] = make()
    return cache[key]


def table1_check(p, cfg, log, cache):
    """DDIM Table 1 in miniature: SWD to fresh data, averaged over seeds."""
    p = p.quality
    n, seeds = cfg["n_sample"], cfg["seeds"]
    configs = []
    for spacing in ("trailing", "leading"):
        for k in (10, 20):
            for eta in (0.0, 1.0):
                configs.append((f"DDIM-{k} eta={eta:g} ({spacing})", ("ddim", k, eta, spacing),
                                (run_ddim, k, eta, "NOISE", spacing)))
        configs.append((f"DDIM-50 eta=0 ({spacing})", ("ddim", 50, 0.0, spacing), (run_ddim, 50, 0.0, None, spacing)))
    configs.append(("DDPM-1000 (sigma^2 = beta)", ("ddpm",), (run_ddpm, "NOISE")))
    # DDIM's Table 1 has both DDPM rows: eta = 1 at S = 1000 (the posterior variance) and sigma-hat (beta)
    configs.append(("DDPM-1000 (sigma^2 = posterior)", ("ddpm", "posterior"), (run_ddpm, "NOISE", "posterior")))
    swd = {name: [] for name, _, _ in configs}
    for s in range(seeds):
        x_T = generator(XT_SEED + s).randn((n, 2))
        fresh = p.data(n, FRESH_SEED + s)
        for name, key, (fn, *args) in configs:
            args = [NOISE_SEED + s if a == "NOISE" else a for a in args]
            x, _, _ = cache_get(cache, (key, s), lambda: timed(fn, p, x_T, *args))
            swd[name].append(sliced_wasserstein(x, fresh))
        log(f"  seed {s} done")
    floor = floor_distances(p, n, cfg["floor_pairs"])
    mean = {k: float(np.mean(v)) for k, v in swd.items()}
    se = {k: _se(v) for k, v in swd.items()}
    verdicts = []
    for spacing in ("trailing", "leading"):
        for k in (10, 20):
            a, b = f"DDIM-{k} eta=0 ({spacing})", f"DDIM-{k} eta=1 ({spacing})"
            diffs = np.array(swd[b]) - np.array(swd[a])
            verdicts.append({"claim": f"{k} steps ({spacing}): eta=0 beats eta=1", "eta0": mean[a], "eta1": mean[b],
                             "ratio": mean[b] / mean[a], "eta0_wins_in_seeds": int(np.sum(diffs > 0)),
                             "diff_mean": float(diffs.mean()), "diff_se": _se(diffs),
                             "holds": bool(mean[a] < mean[b]),
                             "resolved": bool(abs(diffs.mean()) > 2 * _se(diffs))})
        for variance in ("beta", "posterior"):
            a, b = f"DDIM-50 eta=0 ({spacing})", f"DDPM-1000 (sigma^2 = {variance})"
            r = mean[a] / mean[b]
            diffs = np.array(swd[a]) - np.array(swd[b])
            verdicts.append({"claim": f"DDIM-50 ({spacing}) within 1.1x of DDPM-1000 (sigma^2 = {variance})",
                             "ddim50": mean[a], "ddpm1000": mean[b],
                             "ratio": r, "diff_mean": float(diffs.mean()), "diff_se": _se(diffs),
                             # the ratio with the paired difference moved by -+ 2 standard errors
                             "ratio_lo": 1 + (float(diffs.mean()) - 2 * _se(diffs)) / mean[b],
                             "ratio_hi": 1 + (float(diffs.mean()) + 2 * _se(diffs)) / mean[b],
                             "holds": bool(r <= 1.1)})
            verdicts[-1]["resolved"] = bool(verdicts[-1]["ratio_hi"] <= 1.1 or verdicts[-1]["ratio_lo"] > 1.1)
    return {"n_points": n, "seeds": seeds, "floor": floor, "swd": swd, "swd_mean": mean, "swd_se": se,
            "verdicts": verdicts}


# ----------------------------------------------------------------------------------------------
# Markdown

def fmt(v, spec=".2e"):
    return "--" if v is None else format(v, spec)


def md_problem(name, res):
    out = [f"### {name}", ""]
    info = res["info"]
    if "train_steps_done" in info:
        out += [f"Model: `train_toy(ToyConfig(dataset='swiss_roll', max_seconds={info['config']['max_seconds']:g}))`, "
                f"{info['train_steps_done']} steps in {info['train_seconds']} s, final loss (mean of the last 200) "
                f"{info['final_loss_mean_last_200']:.4f}; EMA weights; the network runs in float64 for the trajectory "
                f"table and in float32 (as trained) for the sample-quality tables.", ""]
    d = res["deterministic"]
    c = d["check"]
    out += [f"**Deterministic samplers**: mean |x - x_ref| over {d['n_points']} trajectories from the same x_T.  "
            f"ref(VP) = `ode_sample_rk45` rtol = atol = {REF_TOL:g} (NFE {c['ref_nfe']}); it agrees with "
            f"`ode_sample` rk4 x {c['rk4_steps']} steps to {c['mean_abs_diff_vs_ref']:.1e} (mean), "
            f"{c['max_abs_diff_vs_ref']:.1e} (max)." + (
                f"  ref(DDIM-ODE) = DDIM's own ODE in sigma_bar, DOP853 tol {DDIM_REF_TOL:g} "
                f"(NFE {c['ddim_ode_ref_nfe']}); it differs from ref(VP) by {c['ddim_ode_ref_vs_vp_ref_mean']:.1e} "
                f"(end points: sigma = 0 vs t = 1e-3)." if "ddim_ode_ref_nfe" in c else
                "  (No ref(DDIM-ODE) for a trained model: it needs eps at every noise level.)"), "",
            "| sampler | NFE | err vs ref(VP) | err vs ref(DDIM-ODE) | err vs DDIM-1000 | s |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        out.append(f"| {r['sampler']} | {r['nfe']} | {fmt(r['err_vs_ref_vp'])} | {fmt(r.get('err_vs_ref_ddim_ode'))} "
                   f"| {fmt(r.get('err_vs_ddim1000'))} | {r['seconds']:.1f} |")
    s = res["stochastic"]
    f = s["floor"]
    out += ["", f"**Stochastic samplers** (and DDIM eta = 0 for comparison): {s['n_points']} samples vs "
            f"{s['n_points']} fresh data points, one seed.  Data-vs-data floor ({f['pairs']} pairs): SWD "
            f"{f['swd_mean']:.4f} +- {f['swd_std']:.4f}, MMD^2 {f['mmd2_mean']:.1e} +- {f['mmd2_std']:.1e}.  "
            "All rows share x_T and the noise seed, so samplers with similar dynamics (DDPM, DDIM eta=1 and PC "
            "without corrector at 1000 steps) share one noise realisation and move together; the floor's "
            "+- is the size of seed-to-seed noise.  Quote the seed-averaged block below.", "",
            "| sampler | NFE | SWD | SWD / floor | MMD^2 | s |", "|---|---:|---:|---:|---:|---:|"]
    for r in s["rows"]:
        out.append(f"| {r['sampler']} | {r['nfe']} | {r['swd']:.4f} | {r['swd'] / f['swd_mean']:.2f} | "
                   f"{r['mmd2']:.1e} | {r['seconds']:.1f} |")
    t = res["table1"]
    f = t["floor"]
    out += ["", f"**DDIM Table 1 in miniature**: SWD to fresh data, mean +- s.e. over {t['seeds']} seeds "
            f"({t['n_points']} points each); floor {f['swd_mean']:.4f} +- {f['swd_std']:.4f}.", "",
            "| sampler | mean SWD | s.e. | SWD / floor |", "|---|---:|---:|---:|"]
    for k, v in t["swd_mean"].items():
        out.append(f"| {k} | {v:.4f} | {t['swd_se'][k]:.4f} | {v / f['swd_mean']:.2f} |")
    out += ["", "| claim | values | holds? |", "|---|---|---|"]
    for v in t["verdicts"]:
        if "eta0" in v:
            vals = (f"eta=0 {v['eta0']:.4f} vs eta=1 {v['eta1']:.4f}; paired diff {v['diff_mean']:+.4f} "
                    f"+- {v['diff_se']:.4f}; eta=0 lower in {v['eta0_wins_in_seeds']}/{t['seeds']} seeds")
        else:
            vals = (f"{v['ddim50']:.4f} / {v['ddpm1000']:.4f} = {v['ratio']:.3f} (+- 2 s.e. of the paired "
                    f"difference: {v['ratio_lo']:.2f} .. {v['ratio_hi']:.2f})")
        verdict = ("yes" if v["holds"] else "**no**") if v["resolved"] else \
            f"not resolved (point estimate: {'yes' if v['holds'] else 'no'})"
        out.append(f"| {v['claim']} | {vals} | {verdict} |")
    return out + [""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="a smoke run of about a minute")
    ap.add_argument("--max-seconds", type=float, default=None, help="training budget for the swiss-roll model")
    ap.add_argument("--seeds", type=int, default=None, help="seeds averaged in the Table-1 check")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "nfe_table"),
                    help="output path without extension (.json and .md are written)")
    args = ap.parse_args(argv)
    cfg = dict(FAST if args.fast else FULL)
    if args.max_seconds is not None:
        cfg["max_seconds"] = args.max_seconds
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    start = time.perf_counter()
    load0 = os.getloadavg()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    results = {}
    for make in (exact_mixture, lambda: trained_swiss_roll(cfg["max_seconds"])):
        t0 = time.perf_counter()
        p = make()
        log(f"{p.name}")
        cache = {}
        res = {"info": p.info}
        res["deterministic"] = deterministic_table(p, cfg, log)
        res["stochastic"] = stochastic_table(p, cfg, log, cache)
        res["table1"] = table1_check(p, cfg, log, cache)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[p.name] = res

    runtime = time.perf_counter() - start
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
               "loadavg_at_start": load0, "loadavg_at_end": os.getloadavg(),
               "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    date = datetime.datetime.now().isoformat(timespec="seconds")
    md = ["# Sampler error against NFE", "",
          f"Command: `{command}`  ", f"Date: {date}  ",
          f"Machine: {machine['cpu_count']}-core CPU ({machine['processor']}, {machine['platform']}), shared; "
          f"load average {load0[0]:.1f} at start, {machine['loadavg_at_end'][0]:.1f} at end; "
          f"OpenBLAS threads {machine['blas_threads']}  ",
          f"Runtime: {runtime:.0f} s" + (" (--fast: a smoke run, not the numbers to quote)" if args.fast else ""), "",
          "T = 1000 linear betas 1e-4..0.02 = VPSDE(beta_min=0.1, beta_max=20); score(x, t) = "
          "-eps(x, t (T-1)) / sigma(t).  Errors are mean 2-norms per point; SWD = sliced Wasserstein "
          "(256 projections, seed 0); MMD^2 unbiased, Gaussian kernels 0.1..2.  DDIM uses the 'trailing' "
          "spacing (first step T - 1) unless marked.  See the docstring of benchmarks/nfe_table.py.", ""]
    for name, res in results.items():
        md += md_problem(name, res)
    text = "\n".join(md)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"date": date, "command": command, "machine": machine, "runtime_seconds": round(runtime, 1),
                   "fast": args.fast, "settings": {k: v for k, v in cfg.items()}, "T": T,
                   "vp_sde": {"beta_min": SDE.beta_min, "beta_max": SDE.beta_max}, "ref_tol": REF_TOL,
                   "ddim_ode_ref_tol": DDIM_REF_TOL,
                   "seeds": {"x_T": XT_SEED, "noise": NOISE_SEED, "fresh": FRESH_SEED, "floor": FLOOR_SEED},
                   "results": results}, f, indent=1)
    log(f"wrote {args.out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
