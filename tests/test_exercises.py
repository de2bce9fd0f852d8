"""The lesson machinery: every exercise check fails on the untouched stub and passes on the
reference (DESIGN section 4), the stubs keep the reference's signatures, the learner report."""
import inspect
import re
from pathlib import Path

import pytest

from minidiff import exercises
from minidiff.check import run_checks
from minidiff.exercises import LESSONS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stub_cases():
    _, outcomes = run_checks([ROOT / "tests" / "lessons"], impl="stub", timeout=120)
    return outcomes


def test_every_exercise_check_fails_on_the_untouched_stub(stub_cases):
    assert len(stub_cases) >= 4 * len(LESSONS)
    not_failing = [o.nodeid for o in stub_cases if o.status in ("passed", "skipped")]
    assert not_failing == [], f"these checks do not fail on the blank stub: {not_failing}"


def test_the_stub_fails_cleanly_with_its_own_not_implemented_error(stub_cases):
    # not an ImportError, a NameError or a broken signature: the blank file reads "not written yet"
    unclean = [(o.nodeid, o.status, o.message) for o in stub_cases if o.status != "stub"]
    assert unclean == []


def test_every_exercise_has_checks_and_every_check_names_its_exercise(stub_cases):
    untagged = [o.nodeid for o in stub_cases if o.exercise is None]
    assert untagged == [], f"checks without @pytest.mark.exercise: {untagged}"
    tagged = {o.exercise for o in stub_cases}
    for lesson in LESSONS.values():
        assert len(lesson.exercises) >= 4, f"lesson {lesson.number} has fewer than four exercises"
        for ex in lesson.exercises:
            assert ex.name in tagged, f"exercise {ex.name} of lesson {lesson.number} has no check"


@pytest.mark.parametrize("number", sorted(LESSONS))
def test_stubs_keep_the_reference_signature_and_docstring(number):
    stub = exercises.implementation(number, "stub")
    for ex in LESSONS[number].exercises:
        fn, ref = getattr(stub, ex.name), ex.reference()
        assert inspect.signature(fn) == inspect.signature(ref)
        assert inspect.getdoc(fn) == inspect.getdoc(ref)
        assert exercises.is_stub(fn) and not exercises.is_stub(ref)


def test_generated_stubs_import_every_name_the_solutions_need(tmp_path):
    exercises.write_stubs(tmp_path)
    assert exercises.check_stubs(tmp_path) == []


def test_stub_drift_is_detected(tmp_path):
    exercises.write_stubs(tmp_path)
    path = tmp_path / f"{LESSONS['02'].stem}.py"
    path.write_text(path.read_text().replace("def q_sample(", "def q_sample_old("))
    problems = exercises.check_stubs(tmp_path)
    assert any("out of date" in p for p in problems)


def test_every_solution_carries_a_hint_that_the_stub_does_not(tmp_path):
    exercises.write_stubs(tmp_path)
    for lesson in LESSONS.values():
        stub = (tmp_path / f"{lesson.stem}.py").read_text()
        assert "# hint:" not in stub and "BEGIN SOLUTION" not in stub
        for ex in lesson.exercises:
            assert len(ex.hint) > 10, f"{ex.name} has no '# hint:' line in its solution block"


def test_stub_imports_are_derived_from_what_the_solutions_read():
    header = exercises.stub_imports(LESSONS["03"])
    assert "from minidiff.diffusion import" in header and "_coef" in header
    assert "import numpy as np" in header
    own = {ex.name for ex in LESSONS["06"].exercises}
    imported = set(re.findall(r"\w+", exercises.stub_imports(LESSONS["06"])))
    assert own & imported == set()          # heun_step calls the learner's to_d, not the reference's
