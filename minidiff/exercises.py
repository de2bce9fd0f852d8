"""The lessons' exercises: which reference functions each lesson asks for, the stub generator,
and the switch between the reference and the learner's file.

The reference solution of an exercise is the function in ``minidiff`` itself; its body marks
the part a learner writes with ``# BEGIN SOLUTION`` / ``# END SOLUTION`` (as nbgrader does).
``lessons/NN_topic.py`` is generated from those functions with the marked part replaced by
``raise NotImplementedError(...)``, its import header derived from the names the solutions read;
``python -m minidiff.exercises --check`` fails when a committed stub is out of date. A solution
block starts with ``# hint:`` lines, the formula-level hint `minidiff check NN --hint NAME` prints;
being inside the block, they never reach the stub.
"""
from __future__ import annotations

import argparse
import collections
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

    def reference(self):
        return getattr(importlib.import_module(self.module), self.name)

    @property
    def hint(self) -> str:
        """The formula-level hint: the ``# hint:`` lines of the solution block, joined."""
        return " ".join(m.group(1).strip() for m in _HINT.finditer(_solution(self)))


@dataclasses.dataclass(frozen=True)
class Lesson:
    number: str
    stem: str
    title: str
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


def _exercises(*groups) -> tuple:
    """``"module: name name ..."`` groups -> the lesson's Exercise tuple, in order."""
    return tuple(Exercise(name, module.strip()) for module, names in (g.split(":") for g in groups)
                 for name in names.split())


LESSONS = {
    lesson.number: lesson
    for lesson in (
        Lesson("00", "00_toy_data_metrics", "Toy data and two-sample metrics",
               _exercises("minidiff.metrics: sliced_wasserstein mmd2_unbiased energy_distance",
                          "minidiff.data.toy2d: mixture_score")),
        Lesson("01", "01_autograd_mlp_adam", "Autograd, an MLP with a time embedding, Adam and EMA",
               _exercises("minidiff.nn.mlp: sinusoidal_embedding mlp",
                          "minidiff.nn.optim: clip_grad_norm adam_update ema_update")),
        Lesson("02", "02_forward_process", "The forward process and noise schedules",
               _exercises("minidiff.schedules: linear_betas cosine_betas alpha_bars snr",
                          "minidiff.diffusion: q_sample q_posterior")),
        Lesson("03", "03_ddpm", "DDPM: training, ancestral sampling, three targets and the bound",
               _exercises("minidiff.losses: ddpm_loss",
                          "minidiff.diffusion: eps_to_x0 eps_to_score",
                          "minidiff.samplers: ddpm_step",
                          "minidiff.elbo: gaussian_kl")),
        Lesson("04", "04_score_sde", "Score matching, SDEs, predictor-corrector and the probability-flow ODE",
               _exercises("minidiff.sde: vp_sde dsm_loss reverse_drift probability_flow_drift",
                          "minidiff.sde: euler_maruyama_step langevin_step divergence_hutchinson")),
        Lesson("05", "05_ddim", "DDIM: the non-Markovian family, sub-sequences, inversion, interpolation",
               _exercises("minidiff.samplers: ddim_timesteps ddim_sigma ddim_step ddim_invert slerp")),
        Lesson("06", "06_edm",
               "EDM: one framework, preconditioning, Karras steps, Heun, stochastic churn and non-leaking augmentation",
               _exercises("minidiff.edm: karras_sigmas edm_preconditioning denoiser_loss",
                          "minidiff.samplers: to_d heun_step churn_gamma",
                          "minidiff.augment: augment_labels source_positions")),
        Lesson("07", "07_consistency", "Consistency models: distillation, training, one- and few-step sampling",
               _exercises("minidiff.consistency: consistency_coefficients ct_schedule distance",
                          "minidiff.consistency: cd_loss ct_loss consistency_sample")),
        Lesson("08", "08_guidance", "Conditioning and classifier-free guidance",
               _exercises("minidiff.data.toy2d: mixture_class_posterior",
                          "minidiff.guidance: drop_labels guided classifier_free_guidance")),
        Lesson("09", "09_latent_diffusion",
               "Latent diffusion: KL and VQ autoencoders, the scale factor, diffusion in the latent space",
               _exercises("minidiff.autoencoding: kl_sample kl_divergence",
                          "minidiff.autoencoding: vq_distances straight_through vq_loss_terms vq_loss",
                          "minidiff.autoencoding: laplace_smoothing ema_codebook_update perplexity scale_factor")),
        Lesson("10", "10_evaluation", "Evaluation: the Frechet distance from scratch, KID, small-sample bias, CLIP-style scores",
               _exercises("minidiff.metrics: feature_statistics trace_sqrt_product frechet_distance",
                          "minidiff.metrics: polynomial_mmd2 kid")),
        Lesson("11", "11_switching_backends", "Switching backends: a U-Net on Fashion-MNIST",
               _exercises("minidiff.torch.unet: modulate",
                          "minidiff.nn.attention: attention",
                          "minidiff.plot: image_grid",
                          "minidiff.torch.loop: batch_indices lr_at")),
        Lesson("12", "12_text_to_image",
               "Text-to-image: tokens, cross-attention, guidance with the empty caption, InfoNCE and the CLIP-style score",
               _exercises("minidiff.nn.attention: key_padding_bias",
                          "minidiff.contrastive: normalize similarity_logits info_nce clip_style_score")),
        Lesson("13", "13_discrete_diffusion", "Discrete diffusion: D3PM transition matrices and masked diffusion",
               _exercises("minidiff.discrete: uniform_transition cumulative_transitions q_posterior",
                          "minidiff.discrete: masked_diffusion_loss unmasking_step")),
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
_HINT = re.compile(r"^\s*# hint:(.*)$", re.M)


def _solution(exercise: Exercise) -> str:
    """The lines between the reference's BEGIN and END SOLUTION marks."""
    source = inspect.getsource(exercise.reference())
    match = re.search(r"# BEGIN SOLUTION[^\n]*\n(.*?)^\s*# END SOLUTION", source, re.S | re.M)
    if match is None:
        raise ValueError(f"{exercise.module}.{exercise.name} has no complete BEGIN/END SOLUTION block")
    return match.group(1)


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
            out.append(_absolute_import(line, exercise.module))
    if not found or inside:
        raise ValueError(f"{exercise.module}.{exercise.name} has no complete BEGIN/END SOLUTION block")
    return "\n".join(out) + "\n"


def _absolute_import(line: str, module: str) -> str:
    """``from .backend import vjp`` inside a reference -> ``from minidiff.backend import vjp``:
    the stub is a file of its own, where a relative import has no package to start from."""
    m = re.match(r"^(\s*from )(\.+[\w.]*)( import .*)$", line)
    if m is None:
        return line
    package = importlib.import_module(module).__package__
    return m.group(1) + importlib.util.resolve_name(m.group(2), package) + m.group(3)


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
    return header + "from __future__ import annotations\n\n" + stub_imports(lesson) + "\n\n\n" + body


def stub_imports(lesson: Lesson) -> str:
    """The stub's import header: every global name a reference reads (``_global_names``) that the
    stub does not define itself, imported from where the reference finds it; standard library,
    third party and minidiff in three blocks, as isort orders them."""
    own = {ex.name for ex in lesson.exercises}
    plain, names = set(), collections.defaultdict(set)       # "import x [as y]"; module -> names
    for ex in lesson.exercises:
        fn = ex.reference()
        for name in _global_names(fn) - own:
            module, imported = _import_of(name, fn.__globals__[name], fn.__module__)
            if module is None:
                plain.add(imported)
            else:
                names[module].add(imported)
    lines = sorted(f"import {p}" for p in plain) + [
        f"from {m} import {', '.join(sorted(names[m]))}" for m in sorted(names)]
    blocks = [[l for l in lines if _import_group(l) == g] for g in range(3)]
    return "\n\n".join("\n".join(b) for b in blocks if b)


def _import_of(name: str, value, home: str):
    """(module, name) for ``from module import name``, or (None, "numpy as np") for a plain import."""
    if isinstance(value, types.ModuleType):
        package, _, leaf = value.__name__.rpartition(".")
        if value.__name__ == name:
            return None, name
        if package and leaf == name:
            return package, name
        return None, f"{value.__name__} as {name}"
    origin = getattr(value, "__module__", None)
    if not (origin and getattr(sys.modules.get(origin), name, None) is value):
        origin = home                                       # a constant: where the reference reads it
    return origin, name


def _import_group(line: str) -> int:
    top = line.split()[1].split(".")[0]
    return 2 if top == "minidiff" else 0 if top in sys.stdlib_module_names else 1


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
            if not ex.hint:
                problems.append(f"{ex.module}.{ex.name}: its solution block has no '# hint:' line")
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
