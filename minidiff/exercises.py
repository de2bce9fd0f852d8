"""The lessons' exercises: which reference functions each lesson asks for, the stub generator,
and the switch between the reference and the learner's file.

The reference solution of an exercise is the function in ``minidiff`` itself; its body marks
the part a learner writes with ``# BEGIN SOLUTION`` / ``# END SOLUTION`` (as nbgrader does).
``lessons/NN_topic.py`` is generated from those functions with the marked part replaced by
``raise NotImplementedError(...)``; ``python -m minidiff.exercises --check`` fails when a
committed stub is out of date.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
import types
from pathlib import Path

STUB_MARK = "EXERCISE"  # every stub's NotImplementedError message starts with this word


@dataclasses.dataclass(frozen=True)
class Exercise:
    name: str        # the function's name, in the lesson file and in ``module``
    module: str      # where the reference lives, e.g. "minidiff.diffusion"
    hint: str        # one line shown by `minidiff check` when the exercise fails

    def reference(self):
        return getattr(importlib.import_module(self.module), self.name)


@dataclasses.dataclass(frozen=True)
class Lesson:
    number: str
    stem: str
    title: str
    imports: tuple
    exercises: tuple

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.stem}.ipynb"

    @property
    def stub_path(self) -> str:
        return f"lessons/{self.stem}.py"

    @property
    def test_path(self) -> str:
        return f"tests/lessons/test_{self.stem}.py"


_COMMON_IMPORTS = (
    "import math",
    "",
    "import numpy as np",
    "",
    "from minidiff import _checks",
    "from minidiff.backend import namespace",
)

LESSONS = {
    lesson.number: lesson
    for lesson in (
        Lesson("00", "00_toy_data_metrics", "Toy data and two-sample metrics",
               _COMMON_IMPORTS + ("from minidiff.data.toy2d import _mixture_terms",
                                  "from minidiff.metrics import _check_pair, _pairwise_sq_dists, _quantiles"),
               (Exercise("sliced_wasserstein", "minidiff.metrics",
                         "project both clouds on random unit directions, sort each projection, "
                         "average |difference|^p over points and directions, then take the 1/p power"),
                Exercise("mmd2_unbiased", "minidiff.metrics",
                         "Gretton et al. eq. 3: mean k(x,x') over i != j, plus the same for y, minus 2 mean k(x,y); "
                         "k is a sum of Gaussian kernels over the bandwidths"),
                Exercise("energy_distance", "minidiff.metrics",
                         "2 E|X-Y| - E|X-X'| - E|Y-Y'|, the within-sample means over distinct pairs (divide by n(n-1))"),
                Exercise("mixture_score", "minidiff.data.toy2d",
                         "score = sum_k r_k(x) * (-(x - alpha mu_k) / C_k), r = softmax of the per-component "
                         "log-densities (use _mixture_terms and a logsumexp)"))),
        Lesson("01", "01_autograd_mlp_adam", "Autograd, an MLP with a time embedding, Adam and EMA",
               _COMMON_IMPORTS + ("from minidiff.nn.mlp import sinusoidal_embedding",
                                  "from minidiff.nn.optim import _map, global_norm"),
               (Exercise("sinusoidal_embedding", "minidiff.nn.mlp",
                         "angles = t[:, None] * freqs[None, :] with freqs = max_period^(-i/half); "
                         "return concatenate([cos, sin], axis=1), shape (B, dim)"),
                Exercise("mlp", "minidiff.nn.mlp",
                         "h = concat(x, emb(t)); for each [W, b]: h = xp.linear(h, W, b), then xp.silu except "
                         "after the last layer"),
                Exercise("clip_grad_norm", "minidiff.nn.optim",
                         "if global_norm(grads) > max_norm, multiply every leaf by max_norm / norm; else return as is"),
                Exercise("adam_update", "minidiff.nn.optim",
                         "Kingma & Ba Algorithm 1 with bias correction 1 - b^k (k counts from 1), plus "
                         "lr * weight_decay * p (decoupled); return new params and the new state dict"),
                Exercise("ema_update", "minidiff.nn.optim",
                         "ema = decay * ema + (1 - decay) * params, leaf by leaf (use _map)"))),
        Lesson("02", "02_forward_process", "The forward process and noise schedules",
               _COMMON_IMPORTS + ("from minidiff.diffusion import _coef",),
               (Exercise("linear_betas", "minidiff.schedules",
                         "T equally spaced values from beta_1 to beta_T inclusive (float64)"),
                Exercise("cosine_betas", "minidiff.schedules",
                         "iDDPM eq. 17: f(t) = cos^2(((t/T + s)/(1+s)) pi/2) for t = 0..T, "
                         "alpha_bar = f/f(0), beta = 1 - alpha_bar[1:]/alpha_bar[:-1], clipped to max_beta"),
                Exercise("alpha_bars", "minidiff.schedules", "cumulative product of 1 - beta"),
                Exercise("snr", "minidiff.schedules", "alpha_bar / (1 - alpha_bar)"),
                Exercise("q_sample", "minidiff.diffusion",
                         "DDPM eq. 4 with a = alpha_bar[t] shaped (B, 1): sqrt(a) x0 + sqrt(1 - a) noise "
                         "(use _coef(alpha_bar, t, x0))"),
                Exercise("q_posterior", "minidiff.diffusion",
                         "DDPM eq. 7: build the two mean coefficients and the variance as (T,) tables "
                         "(alpha_bar_prev starts at 1), then index them with _coef"))),
        Lesson("03", "03_ddpm", "DDPM: training, ancestral sampling, three targets and the bound",
               _COMMON_IMPORTS + ("from minidiff.diffusion import TARGETS, _coef, q_posterior, q_sample, target_of",
                                  "from minidiff.samplers import ddpm_sigma2"),
               (Exercise("ddpm_loss", "minidiff.losses",
                         "x_t = q_sample(x0, t, alpha_bar, noise); compare model(x_t, t) with "
                         "target_of(target, x0, noise, t, alpha_bar) by a mean squared error"),
                Exercise("eps_to_x0", "minidiff.diffusion",
                         "solve eq. 4 for x0: (x_t - sqrt(1 - a) eps) / sqrt(a), a = _coef(alpha_bar, t, x_t)"),
                Exercise("eps_to_score", "minidiff.diffusion", "score = -eps / sqrt(1 - alpha_bar_t)"),
                Exercise("ddpm_step", "minidiff.samplers",
                         "Algorithm 2 line 4: (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t), plus "
                         "sqrt(sigma2[t]) * noise unless t == 0"),
                Exercise("gaussian_kl", "minidiff.elbo",
                         "0.5 (log(var2/var1) + (var1 + (mean1 - mean2)^2) / var2 - 1)"))),
        Lesson("04", "04_score_sde", "Score matching, SDEs, predictor-corrector and the probability-flow ODE",
               _COMMON_IMPORTS + ("from minidiff.sde import _t_like, perturb, probability_flow_drift, reverse_drift",
                                  "from minidiff.backend import vjp"),
               (Exercise("vp_sde", "minidiff.sde",
                         "Song et al. eq. 11: beta = beta_min + t (beta_max - beta_min) as a (B,) array "
                         "(_t_like(t, x)); f = -0.5 beta x (broadcast with xp.append_dims), g = sqrt(beta)"),
                Exercise("dsm_loss", "minidiff.sde",
                         "eq. 7 with lambda = sigma^2: sigma(t) s(x_t, t) + z, squared, summed over data dims, "
                         "averaged over the batch; x_t = perturb(sde, x0, t, noise), sigma from sde.marginal"),
                Exercise("reverse_drift", "minidiff.sde", "eq. 6: f - g^2 score, with f, g = sde.sde(x, t)"),
                Exercise("probability_flow_drift", "minidiff.sde", "eq. 13: f - g^2 score / 2"),
                Exercise("euler_maruyama_step", "minidiff.sde",
                         "x + reverse_drift * dt + g sqrt(-dt) z, with dt < 0 and t as a (B,) array"),
                Exercise("langevin_step", "minidiff.sde",
                         "Algorithm 4: eps = 2 alpha (snr * mean ||z|| / mean ||s||)^2 (norms per example, "
                         "then averaged), x + eps s + sqrt(2 eps) z"),
                Exercise("divergence_hutchinson", "minidiff.sde",
                         "z^T J z: vjp(fun, x, probe) gives z^T J; multiply by the probe and sum over data dims"))),
        Lesson("05", "05_ddim", "DDIM: the non-Markovian family, sub-sequences, inversion, interpolation",
               _COMMON_IMPORTS + ("from minidiff.samplers import SPACINGS, _check_timesteps, _checked_model_output, ddim_sigma",),
               (Exercise("ddim_timesteps", "minidiff.samplers",
                         "n_steps DISTINCT integers in [0, T), returned in decreasing order; 'trailing' starts "
                         "at T-1, 'leading' at 0 with stride T // n_steps"),
                Exercise("ddim_sigma", "minidiff.samplers",
                         "eq. 16: eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)"),
                Exercise("ddim_step", "minidiff.samplers",
                         "eq. 12: sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z; a_prev = 1 "
                         "when t_prev = -1"),
                Exercise("ddim_invert", "minidiff.samplers",
                         "walk tau upwards; at each step predict eps at the current (less noisy) step, form "
                         "x0_hat and re-noise deterministically to the next step: sqrt(a) x0_hat + sqrt(1 - a) eps"),
                Exercise("slerp", "minidiff.samplers",
                         "theta = arccos(<z0, z1> / (|z0| |z1|)); (sin((1-a) theta) z0 + sin(a theta) z1) / sin(theta)"))),
        Lesson("06", "06_edm", "EDM: one framework, preconditioning, Karras steps, Heun and stochastic churn",
               _COMMON_IMPORTS + ("from minidiff.samplers import _checked_denoiser, to_d",),
               (Exercise("karras_sigmas", "minidiff.edm",
                         "eq. 5: interpolate linearly between sigma_max^(1/rho) and sigma_min^(1/rho) over N points "
                         "(i/(N-1)), then raise to the power rho"),
                Exercise("edm_preconditioning", "minidiff.edm",
                         "Table 1, EDM column: c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), "
                         "c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4"),
                Exercise("denoiser_loss", "minidiff.edm",
                         "eq. 2: x = x0 + sigma n; squared error of D(x, sigma) - x0 summed per example, times "
                         "lambda(sigma), averaged over the batch"),
                Exercise("to_d", "minidiff.samplers", "dx/dsigma = (x - D(x; sigma)) / sigma"),
                Exercise("heun_step", "minidiff.samplers",
                         "Algorithm 1 lines 4-8: Euler step with d = to_d(x, sigma, D(x, sigma)); if sigma_next > 0, "
                         "average d with the slope at the Euler point (use _checked_denoiser to call D)"),
                Exercise("churn_gamma", "minidiff.samplers",
                         "Algorithm 2 line 4: min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0"))),
        Lesson("07", "07_consistency", "Consistency models: distillation, training, one- and few-step sampling",
               _COMMON_IMPORTS + ("from minidiff.consistency import _gather, _stop_gradient, distance",),
               (Exercise("consistency_coefficients", "minidiff.consistency",
                         "c_skip = sd^2/((t-eps)^2 + sd^2), c_out = sd (t-eps)/sqrt(sd^2 + t^2): c_skip(eps) = 1, "
                         "c_out(eps) = 0; c_in, c_noise as in EDM"),
                Exercise("ct_schedule", "minidiff.consistency",
                         "N = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1 and mu = exp(s0 ln(mu0) / N)"),
                Exercise("distance", "minidiff.consistency",
                         "per example over the flattened data dims: 'l2' sum of squares, 'l1' sum of |.|, "
                         "'pseudo_huber' sqrt(|x-y|^2 + c^2) - c with c = 0.00054 sqrt(d) by default"),
                Exercise("cd_loss", "minidiff.consistency",
                         "x_next = x0 + t_{n+1} z; one Heun step of the teacher from t_{n+1} to t_n gives x_hat; "
                         "mean of w * distance(f(x_next, t_{n+1}), stop_gradient(f_target(x_hat, t_n)))"),
                Exercise("ct_loss", "minidiff.consistency",
                         "the same z at both levels: distance(f(x0 + t_{n+1} z, t_{n+1}), "
                         "stop_gradient(f_target(x0 + t_n z, t_n))), weighted and averaged"),
                Exercise("consistency_sample", "minidiff.consistency",
                         "x = f(x_T, T); for each tau: x = f(x + sqrt(tau^2 - eps^2) z, tau)"))),
        Lesson("08", "08_guidance", "Conditioning and classifier-free guidance",
               _COMMON_IMPORTS + ("from minidiff.data.toy2d import _mixture_terms",
                                  "from minidiff.guidance import _check_w"),
               (Exercise("mixture_class_posterior", "minidiff.data.toy2d",
                         "log_w from _mixture_terms holds log pi_k N(x; alpha mu_k, C_k), (B, K); "
                         "return exp(log_w - logsumexp(log_w, axis=1, keepdims=True))"),
                Exercise("drop_labels", "minidiff.guidance",
                         "d = xp.int_array(rng.random(B) < p_uncond, like=labels) (1 where dropped); "
                         "return labels * (1 - d) + null_label * d"),
                Exercise("guided", "minidiff.guidance", "eq. 6: (1 + w) * cond - w * uncond"),
                Exercise("classifier_free_guidance", "minidiff.guidance",
                         "inside guided_model: one model call on xp.concatenate([x, x]), the same for t, and "
                         "labels [class_labels; null_label repeated B times]; split the output at B and "
                         "return guided(first half, second half, w)"))),
        Lesson("10", "10_evaluation", "Evaluation: the Frechet distance from scratch, KID, small-sample bias, CLIP-style scores",
               _COMMON_IMPORTS + ("from minidiff.metrics import _covariance, _features, _gaussian",),
               (Exercise("feature_statistics", "minidiff.metrics",
                         "mu = mean over rows; Sigma = (f - mu)^T (f - mu) / (N - 1), the unbiased covariance (D, D)"),
                Exercise("trace_sqrt_product", "minidiff.metrics",
                         "eigh(Sigma1) -> Sigma1^(1/2) = V diag(sqrt(clip(lam, 0))) V^T; M = Sigma1^(1/2) Sigma2 "
                         "Sigma1^(1/2); return the sum of sqrt(clip(eigvalsh(M), 0))"),
                Exercise("frechet_distance", "minidiff.metrics",
                         "|mu1 - mu2|^2 + tr(Sigma1) + tr(Sigma2) - 2 trace_sqrt_product(Sigma1, Sigma2)"),
                Exercise("polynomial_mmd2", "minidiff.metrics",
                         "k = (x y^T / D + coef)^degree; the within-set means skip the diagonal (divide the "
                         "off-diagonal sum by m(m-1)); minus 2 times the mean of k(x, y)"),
                Exercise("kid", "minidiff.metrics",
                         "for each subset: ix = rng.choice(N, subset_size, replace=False), then iy likewise; "
                         "polynomial_mmd2(x[ix], y[iy]); return the mean and the std (ddof=0)"))),
        Lesson("11", "11_switching_backends", "Switching backends: a U-Net on Fashion-MNIST",
               ("import math", "", "import numpy as np", "import torch", "",
                "from minidiff.data.images import from_model_range"),
               (Exercise("modulate", "minidiff.torch.unet",
                         "split emb_out[:, :, None, None] into scale and shift along dim 1 (chunk(2, dim=1)); "
                         "return h * (1 + scale) + shift"),
                Exercise("attention", "minidiff.torch.attention",
                         "weights = softmax(q @ k^T / sqrt(d), over the last axis); return weights @ v"),
                Exercise("image_grid", "minidiff.plot",
                         "rows = ceil(N / nrow); a grid full of 255 of shape (C, pad + rows (H + pad), "
                         "pad + nrow (W + pad)); image i goes to row i // nrow, column i % nrow"),
                Exercise("batch_indices", "minidiff.torch.train",
                         "epoch, j = divmod(k, n_images // global_batch); the epoch's permutation from "
                         "np.random.default_rng([seed, 0, epoch]); return its slice j"),
                Exercise("lr_at", "minidiff.torch.train",
                         "cfg.lr * min(1, (k + 1) / max(cfg.warmup, 1))"))),
    )
}


def get_lesson(number) -> Lesson:
    key = f"{int(number):02d}" if str(number).isdigit() else str(number)
    if key not in LESSONS:
        raise ValueError(f"unknown lesson {number!r}; lessons are {', '.join(sorted(LESSONS))}")
    return LESSONS[key]


# ----------------------------------------------------------------------------------------------
# Stub generation.

_BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")


def stub_source(exercise: Exercise) -> str:
    """The reference function's source with its solution replaced by a NotImplementedError."""
    lines = textwrap.dedent(inspect.getsource(exercise.reference())).splitlines()
    out, inside, found = [], False, False
    for line in lines:
        begin = _BEGIN.match(line)
        if begin:
            inside, found = True, True
            out.append(f'{begin.group(1)}raise NotImplementedError("{STUB_MARK} {exercise.name}: '
                       f'write this function (see its docstring)")')
        elif _END.match(line):
            inside = False
        elif not inside:
            out.append(line)
    if not found or inside:
        raise ValueError(f"{exercise.module}.{exercise.name} has no complete BEGIN/END SOLUTION block")
    return "\n".join(out) + "\n"


def render_stub(lesson: Lesson) -> str:
    """The text of ``lessons/NN_topic.py``."""
    header = (f'"""Lesson {lesson.number}: {lesson.title}.\n\n'
              f"Write the functions below; the notebook {lesson.notebook} explains the maths.\n"
              f"Check your work with:   minidiff check {lesson.number}\n"
              f"(or: python -m pytest {lesson.test_path} --impl=lesson)\n\n"
              "Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;\n"
              "the lines that are not NotImplementedError are given to you.\n"
              '"""\n')
    body = "\n\n".join(stub_source(ex) for ex in lesson.exercises)
    return header + "from __future__ import annotations\n\n" + "\n".join(lesson.imports) + "\n\n\n" + body


def repo_root() -> Path:
    """The folder holding lessons/ and tests/: the clone minidiff was installed from, else the cwd."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "lessons").is_dir() else Path.cwd()


def lessons_dir() -> Path:
    """Where the learner's lesson files are: $MINIDIFF_LESSONS_DIR, else <repo>/lessons."""
    import os

    return Path(os.environ.get("MINIDIFF_LESSONS_DIR") or repo_root() / "lessons")


def write_stubs(folder=None) -> list:
    folder = Path(folder) if folder else repo_root() / "lessons"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for lesson in LESSONS.values():
        path = folder / f"{lesson.stem}.py"
        path.write_text(render_stub(lesson))
        paths.append(path)
    return paths


def check_stubs(folder=None) -> list:
    """Problems with the committed stubs: out of date, or missing a name a solution needs."""
    folder = Path(folder) if folder else repo_root() / "lessons"
    problems = []
    for lesson in LESSONS.values():
        path = folder / f"{lesson.stem}.py"
        if not path.exists() or path.read_text() != render_stub(lesson):
            problems.append(f"{path} is out of date: run `python -m minidiff.exercises --write`")
            continue
        module = load_module(path, f"_minidiff_stub_{lesson.number}")
        for ex in lesson.exercises:
            for name in _global_names(ex.reference()):
                if not hasattr(module, name):
                    problems.append(f"{path}: {ex.name} needs {name!r}, which the stub does not import")
    return problems


def _global_names(fn) -> set:
    """Global names a function (and its nested functions) reads."""
    names, stack = set(), [fn.__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return {n for n in names if n in fn.__globals__}


# ----------------------------------------------------------------------------------------------
# The switch between the reference and the learner's functions.

def load_module(path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_stub(fn) -> bool:
    """True when ``fn`` still raises the generated NotImplementedError."""
    try:
        return f'NotImplementedError("{STUB_MARK} ' in inspect.getsource(fn)
    except (OSError, TypeError):
        return False


def implementation(number, impl: str = "reference", folder=None) -> types.SimpleNamespace:
    """The lesson's exercise functions from ``impl``: 'reference' (minidiff), 'lesson' (the
    learner's lessons/NN_topic.py) or 'stub' (freshly generated, untouched stubs)."""
    lesson = get_lesson(number)
    if impl == "reference":
        return types.SimpleNamespace(**{ex.name: ex.reference() for ex in lesson.exercises})
    if impl == "stub":
        import tempfile
        folder = Path(tempfile.mkdtemp(prefix="minidiff-stubs-"))
        (folder / f"{lesson.stem}.py").write_text(render_stub(lesson))
    elif impl != "lesson":
        raise ValueError(f"impl must be 'reference', 'lesson' or 'stub', got {impl!r}")
    folder = Path(folder) if folder else lessons_dir()
    module = load_module(folder / f"{lesson.stem}.py", f"lesson_{lesson.stem}_{impl}")
    return types.SimpleNamespace(**{ex.name: getattr(module, ex.name) for ex in lesson.exercises})


def load_lesson(number, verbose: bool = True) -> types.SimpleNamespace:
    """For the notebooks: the learner's function where it is written, the reference elsewhere."""
    lesson = get_lesson(number)
    path = lessons_dir() / f"{lesson.stem}.py"
    try:
        learner = implementation(number, "lesson")
    except Exception as e:  # a syntax error in the learner's file must not stop the notebook
        if verbose:
            print(f"Could not import {path} ({type(e).__name__}: {e}); using the reference for every exercise.")
        learner = None
    chosen = {}
    for ex in lesson.exercises:
        fn = getattr(learner, ex.name, None)
        if fn is None or is_stub(fn):
            chosen[ex.name] = ex.reference()
            if verbose:
                print(f"  {ex.name:22s} reference (not yet written in {lesson.stub_path})")
        else:
            chosen[ex.name] = fn
            if verbose:
                print(f"  {ex.name:22s} yours, from {lesson.stub_path}")
    return types.SimpleNamespace(**chosen)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.exercises",
                                     description="Generate or check the lesson stubs in lessons/.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate lessons/*.py from the reference")
    group.add_argument("--check", action="store_true", help="fail if a committed stub is out of date")
    args = parser.parse_args(argv)
    if args.write:
        for p in write_stubs():
            print(f"wrote {p}")
        return 0
    problems = check_stubs()
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"all {len(LESSONS)} lesson stubs are up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
