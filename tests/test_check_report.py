"""`minidiff check`: one line per exercise, a reason and a hint per failure, timeouts caught."""
import io
import re

import diffusers  # noqa: F401  (imported here so that its slow first import does not count against the short timeouts below)
import pytest

from minidiff import exercises
from minidiff.check import run_check

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


def test_report_on_the_blank_stub_passes_nothing(learner_dir):
    exercises.write_stubs(learner_dir)
    code, text = _report("02")
    assert code == 1
    assert "0/6 exercises pass" in text
    assert text.count("not written yet") == 6 and text.count("hint:") == 6
    assert "Traceback" not in text


def test_report_on_the_reference_passes_everything(learner_dir):
    code, text = _report("01", impl="reference", timeout=60)
    assert code == 0 and "5/5 exercises pass" in text and "FAIL" not in text


def test_report_names_each_failure_of_a_learner_file(learner_dir):
    (learner_dir / f"{exercises.LESSONS['03'].stem}.py").write_text(LEARNER_03)
    code, text = _report("03", timeout=3)
    lines = {m.group(2): m.group(1) for m in re.finditer(r"^\s+(PASS|FAIL)\s+(\w+)", text, re.M)}
    assert lines == {"ddpm_loss": "FAIL", "eps_to_x0": "FAIL", "eps_to_score": "PASS",
                     "ddpm_step": "FAIL", "gaussian_kl": "FAIL"}
    assert "timed out after 3 s" in text
    assert "my own bug" in text
    assert code == 1 and "1/5 exercises pass" in text
    assert "Traceback" not in text


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
