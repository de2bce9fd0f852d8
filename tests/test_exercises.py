"""The lesson machinery: every exercise check fails on the untouched stub and passes on the
reference (DESIGN section 4), the stubs keep the reference's signatures, the learner report."""
import inspect
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from minidiff import exercises
from minidiff.exercises import LESSONS

ROOT = Path(__file__).resolve().parent.parent


def _run_lesson_checks(impl, junit, *extra):
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "lessons"), f"--impl={impl}", "-q",
           "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit1", *extra]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        cases.append((case.get("classname") + "::" + case.get("name"), props.get("exercise"), outcome))
    return cases


@pytest.fixture(scope="module")
def stub_cases(tmp_path_factory):
    return _run_lesson_checks("stub", tmp_path_factory.mktemp("junit") / "stub.xml")


def test_every_exercise_check_fails_on_the_untouched_stub(stub_cases):
    assert len(stub_cases) >= 4 * len(LESSONS)
    not_failing = [name for name, _, outcome in stub_cases if outcome not in ("failure", "error")]
    assert not_failing == [], f"these checks do not fail on the blank stub: {not_failing}"


def test_every_exercise_has_checks_and_every_check_names_its_exercise(stub_cases):
    untagged = [name for name, ex, _ in stub_cases if ex is None]
    assert untagged == [], f"checks without @pytest.mark.exercise: {untagged}"
    tagged = {ex for _, ex, _ in stub_cases}
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
