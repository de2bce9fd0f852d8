"""`minidiff check`: one line per exercise, the property a failure breaks (never a traceback nor,
unasked, the formula), timeouts caught; `--hint NAME` gives the formula-level hint."""
import io
import re

import diffusers  # noqa: F401  (imported here so that its slow first import does not count against the short timeouts below)
import pytest

from minidiff import exercises
from minidiff.check import run_check, show_hint

LEARNER_03 = '''
import numpy as np
from minidiff.backend import namespace
from minidiff.diffusion import _coef


def ddpm_loss(model, x0, t, noise, alpha_bar, target="eps", **model_kwargs):
    return np.zeros(3)                     # wrong shape: not a scalar


def eps_to_x0(x_t, t, eps, alpha_bar):
    while True:                            # hangs
        pass


def eps_to_score(eps, t, alpha_bar):
    xp = namespace(eps)
    return -eps / xp.sqrt(1 - _coef(alpha_bar, t, eps))   # correct


def ddpm_step(x_t, t, eps, betas, noise, variance="beta"):
    raise RuntimeError("my own bug")


def gaussian_kl(mean1, var1, mean2, var2):
    return np.nan * mean1                  # NaN
'''


@pytest.fixture
def learner_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_LESSONS_DIR", str(tmp_path))
    return tmp_path


def _report(number, impl="lesson", timeout=2):
    out = io.StringIO()
    code = run_check(number, impl=impl, stream=out, timeout=timeout)
    return code, out.getvalue()


def test_report_on_the_blank_stub_passes_nothing_and_gives_no_formula(learner_dir):
    exercises.write_stubs(learner_dir)
    code, text = _report("02")
    assert code == 1
    assert "0/6 exercises pass" in text
    assert len(re.findall(r"^\s+TODO\s+\w+\s+not written yet$", text, re.M)) == 6
    assert "--hint NAME" in text
    for ex in exercises.LESSONS["02"].exercises:
        assert ex.hint not in text
    assert "Traceback" not in text


def test_report_on_the_reference_passes_everything(learner_dir):
    code, text = _report("01", impl="reference", timeout=60)
    assert code == 0 and "5/5 exercises pass" in text and "FAIL" not in text


def test_report_names_each_failure_of_a_learner_file(learner_dir):
    (learner_dir / f"{exercises.LESSONS['03'].stem}.py").write_text(LEARNER_03)
    code, text = _report("03", timeout=6)      # long enough for a correct check on a busy machine
    lines = {m.group(2): m.group(1) for m in re.finditer(r"^\s+(PASS|FAIL)\s+(\w+)", text, re.M)}
    assert lines == {"ddpm_loss": "FAIL", "eps_to_x0": "FAIL", "eps_to_score": "PASS",
                     "ddpm_step": "FAIL", "gaussian_kl": "FAIL"}
    assert "timed out after 6 s" in text
    assert "raised RuntimeError: my own bug" in text
    assert code == 1 and "1/5 exercises pass" in text
    assert "Traceback" not in text
    for ex in exercises.LESSONS["03"].exercises:
        assert ex.hint not in text


def _fail_lines(text):
    """exercise -> (property, reason) of each FAIL in a report."""
    found = re.finditer(r"^\s+FAIL\s+(\w+)\s+\d+/\d+ checks: (.*)\n\s+(.*)$", text, re.M)
    return {m.group(1): (m.group(2), m.group(3)) for m in found}


def test_report_names_the_property_a_wrong_answer_breaks(learner_dir):
    # A wrong sign in gaussian_kl and an IndexError in ddpm_step; the rest left as stubs.
    stub = exercises.render_stub(exercises.LESSONS["03"])
    wrong = stub.replace(
        'raise NotImplementedError("EXERCISE gaussian_kl: write this function (see its docstring)")',
        "return -0.5 * (xp.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)").replace(
        'raise NotImplementedError("EXERCISE ddpm_step: write this function (see its docstring)")',
        "return x_t[:, 5]")
    (learner_dir / f"{exercises.LESSONS['03'].stem}.py").write_text(wrong)
    code, text = _report("03", timeout=60)
    fails = _fail_lines(text)
    assert set(fails) == {"gaussian_kl", "ddpm_step"}
    prop, reason = fails["gaussian_kl"]
    assert prop and reason.startswith("assert")
    prop, reason = fails["ddpm_step"]
    assert prop and reason.startswith("raised IndexError: index 5 is out of bounds")
    assert len(re.findall(r"^\s+TODO\s+\w+", text, re.M)) == 3
    assert code == 1 and "Traceback" not in text


def test_an_exercise_that_calls_an_unwritten_one_says_so(learner_dir):
    # frechet_distance written, trace_sqrt_product (which it calls) still a stub.
    lesson = exercises.LESSONS["10"]
    stub = exercises.render_stub(lesson).replace(
        'raise NotImplementedError("EXERCISE frechet_distance: write this function (see its docstring)")',
        "return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)"
        " - 2 * trace_sqrt_product(sigma1, sigma2))")
    (learner_dir / f"{lesson.stem}.py").write_text(stub)
    code, text = _report("10", timeout=60)
    assert "calls trace_sqrt_product, which is not written yet" in _fail_lines(text)["frechet_distance"][1]


def test_hint_on_request(capsys):
    ex = exercises.LESSONS["03"].exercises[3]
    assert show_hint("03", ex.name) == 0
    out = capsys.readouterr().out
    assert ex.name in out and ex.hint in out


def test_hint_for_an_unknown_exercise_lists_the_lessons_exercises(capsys):
    assert show_hint("03", "ddpm_stepp") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ddpm_stepp" in err
    assert all(ex.name in err for ex in exercises.LESSONS["03"].exercises)


def test_cli_check_takes_a_hint_name(capsys):
    from minidiff.cli import main

    assert main(["check", "03", "--hint", "ddpm_step"]) == 0
    assert exercises.LESSONS["03"].exercises[3].hint in capsys.readouterr().out
    assert main(["check", "03", "--hint", "nope"]) == 2


def test_notebook_loader_mixes_learner_and_reference(learner_dir, capsys):
    (learner_dir / f"{exercises.LESSONS['03'].stem}.py").write_text(LEARNER_03)
    chosen = exercises.load_lesson("03")
    printed = capsys.readouterr().out
    assert "eps_to_score" in printed and "yours" in printed
    assert chosen.eps_to_score.__module__ != "minidiff.diffusion"
    exercises.write_stubs(learner_dir)
    chosen = exercises.load_lesson("03")
    assert chosen.eps_to_score is exercises.LESSONS["03"].exercises[2].reference()


def test_unknown_lesson_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown lesson"):
        exercises.get_lesson("42")


# ----------------------------------------------------------------------------------------------
# Hostile learner files: no learner code can end, hang or silence the report.

def _stub_with(number, name, body):
    """Lesson ``number``'s stub with exercise ``name``'s body replaced by ``body`` (indented lines)."""
    stub = exercises.render_stub(exercises.LESSONS[number])
    marker = f'raise NotImplementedError("EXERCISE {name}: write this function (see its docstring)")'
    assert marker in stub
    return stub.replace(marker, body.strip().replace("\n", "\n    "))


def _write(learner_dir, number, text):
    (learner_dir / f"{exercises.LESSONS[number].stem}.py").write_text(text)


def _lines(text):
    return {m.group(2): m.group(1) for m in re.finditer(r"^\s+(PASS|FAIL|TODO|----)\s+(\w+)", text, re.M)}


def test_an_exercise_that_ends_the_process_is_reported_and_the_rest_still_run(learner_dir):
    _write(learner_dir, "03", _stub_with("03", "eps_to_score", "import os\nos._exit(0)"))
    code, text = _report("03", timeout=30)
    assert code == 1
    assert _lines(text) == {"ddpm_loss": "TODO", "eps_to_x0": "TODO", "eps_to_score": "FAIL", "ddpm_step": "TODO",
                            "gaussian_kl": "TODO"}
    assert "ended the check process without reporting (exit code 0)" in _fail_lines(text)["eps_to_score"][1]
    assert "0/5 exercises pass" in text


@pytest.mark.parametrize("body", ["import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n"
                                  "    pass",
                                  "while True:\n    try:\n        while True:\n            pass\n"
                                  "    except BaseException:\n        pass"],
                         ids=["ignores SIGALRM", "swallows the timeout"])
def test_an_exercise_that_defeats_its_time_limit_is_killed_from_outside(body, learner_dir):
    _write(learner_dir, "03", _stub_with("03", "eps_to_x0", body))
    code, text = _report("03", timeout=3)
    assert code == 1 and set(_lines(text).values()) == {"TODO", "FAIL"}
    assert "ignored the stop" in _fail_lines(text)["eps_to_x0"][1]
    assert _lines(text)["gaussian_kl"] == "TODO"                 # the checks after it still ran


IMPORT_PROBLEMS = {
    "syntax error": ("def ddpm_loss(:\n    pass\n", r"SyntaxError: .*line 2: def ddpm_loss\(:"),
    "exception at import": ("import numpy as np\nx = 1\nraise RuntimeError('my import-time bug')\n",
                            r"RuntimeError: my import-time bug .*line 4: raise RuntimeError"),
    "os._exit at import": ("import os\nos._exit(0)\n", r"importing lessons/03_ddpm\.py ended the process "
                                                       r"\(exit code 0\)"),
    "hang at import": ("while True:\n    pass\n", r"importing lessons/03_ddpm\.py did not finish within 3 s"),
}


@pytest.mark.parametrize("case", sorted(IMPORT_PROBLEMS))
def test_a_lesson_file_that_does_not_import_shows_the_error_once(case, learner_dir):
    text_of_file, shown = IMPORT_PROBLEMS[case]
    _write(learner_dir, "03", "\n" + text_of_file)         # line numbers: the blank first line counts
    code, text = _report("03", timeout=3)
    assert code == 1
    (error,) = re.findall(r"^\s+ERROR (.*)$", text, re.M)
    assert re.search(shown, error), error
    assert set(_lines(text).values()) == {"----"} and len(_lines(text)) == 5
    assert "--hint" not in text and "Traceback" not in text
    for ex in exercises.LESSONS["03"].exercises:
        assert ex.hint not in text


def test_the_command_reports_a_silent_exit_and_exits_non_zero(learner_dir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    _write(learner_dir, "03", _stub_with("03", "ddpm_loss", "import os\nos._exit(0)"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "minidiff.cli", "check", "03", "--timeout", "30"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1
    assert "FAIL  ddpm_loss" in done.stdout and "exit code 0" in done.stdout
