"""`minidiff check NN`: run lesson NN's checks on the learner's file and print one line per
exercise - PASS, not written yet, or FAIL with the property that broke - never a traceback.
The formula-level hint comes only on request (`minidiff check NN --hint NAME`).

``Collector`` is the one pytest plugin that reads per-check outcomes; `minidiff check` and
tests/test_exercises.py both go through ``run_checks``."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys

from .exercises import STUB_MARK, get_lesson, repo_root

PER_TEST_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One lesson check's result."""
    nodeid: str
    exercise: str | None    # from the check's @pytest.mark.exercise, None when untagged
    status: str             # "passed", "failed" (an assertion), "raised", "stub", "timeout", "skipped"
    prop: str               # the property the check states: its docstring's first line, else its name
    message: str = ""       # one line: the assertion message, or "IndexError: ..." for "raised"


class Collector:
    """A pytest plugin keeping one ``Outcome`` per check (a failing setup counts as the check's)."""

    def __init__(self):
        self.outcomes: list[Outcome] = []

    def pytest_runtest_makereport(self, item, call):
        if call.when == "teardown" or (call.when == "setup" and call.excinfo is None):
            return None
        marker = item.get_closest_marker("exercise")
        exercise = marker.args[0] if marker else None
        status, message = _classify(call.excinfo)
        self.outcomes.append(Outcome(item.nodeid, exercise, status, _property(item), message))
        return None                     # leave the report itself to pytest


def _property(item) -> str:
    fn = getattr(item, "function", None)
    doc = (getattr(fn, "__doc__", None) or "").strip()
    prop = doc.splitlines()[0] if doc else re.sub(r"^test_", "", getattr(item, "originalname", item.name))
    prop = prop.replace("_", " ") if not doc else prop
    params = getattr(getattr(item, "callspec", None), "id", None)
    return f"{prop} [{params}]" if params else prop


def _classify(excinfo):
    """(status, one-line message) of a check from its exception, None when it passed."""
    if excinfo is None:
        return "passed", ""
    import pytest

    e = excinfo.value
    text = str(e)
    if excinfo.errisinstance(pytest.skip.Exception):
        return "skipped", _first_line(text)
    if isinstance(e, NotImplementedError) and text.startswith(STUB_MARK):
        return "stub", text.split(":")[0][len(STUB_MARK):].strip()     # the exercise not written
    if excinfo.errisinstance(pytest.fail.Exception) and text.startswith("Timeout"):
        return "timeout", text
    if isinstance(e, AssertionError) or excinfo.errisinstance(pytest.fail.Exception):
        return "failed", _assertion_line(text)
    return "raised", _first_line(f"{type(e).__name__}: {text}")


def _first_line(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _assertion_line(text: str) -> str:
    """The assertion's first line; for numpy's assert_allclose, also its largest difference."""
    first = _first_line(text)
    worst = next((line.strip() for line in text.splitlines() if line.startswith("Max absolute")), "")
    return f"{first} ({worst})" if worst else first


def run_checks(paths, impl: str = "lesson", timeout: float | None = PER_TEST_TIMEOUT_S) -> tuple:
    """Run the lesson checks in ``paths`` (files or folders) on ``impl`` in this process, quietly.
    Returns (pytest exit code, [Outcome, ...])."""
    import pytest

    root = repo_root()
    collector = Collector()
    args = [*map(str, paths), f"--impl={impl}", "-q", "--tb=no", "--no-header", "-p", "no:cacheprovider",
            f"--rootdir={root}", "-c", str(root / "pyproject.toml")]
    if timeout is not None:
        args.append(f"--timeout={timeout}")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = pytest.main(args, plugins=[collector])
    return int(code), collector.outcomes


def exercise_line(name: str, outcomes: list, timeout: float) -> tuple:
    """(passed, the report lines of one exercise) from its checks' outcomes."""
    n_ok = sum(o.status == "passed" for o in outcomes)
    head = f"{name:22s} {n_ok}/{len(outcomes)} checks"
    if outcomes and n_ok == len(outcomes):
        return True, [f"  PASS  {head}"]
    if not outcomes:
        return False, [f"  FAIL  {name:22s} has no checks"]
    if any(o.status == "stub" and o.message == name for o in outcomes):
        return False, [f"  TODO  {name:22s} not written yet"]
    first = next(o for o in outcomes if o.status != "passed")
    why = {"failed": first.message,
           "raised": f"raised {first.message}",
           "stub": f"calls {first.message}, which is not written yet",
           "timeout": f"timed out after {timeout:g} s (an endless loop?)",
           "skipped": f"skipped: {first.message}"}[first.status]
    return False, [f"  FAIL  {head}: {first.prop}", f"        {why}"]


def run_check(number, impl: str = "lesson", stream=None, timeout: float = PER_TEST_TIMEOUT_S) -> int:
    """Run the checks of lesson ``number`` on ``impl`` and print the per-exercise report.
    Returns 0 when every exercise passes, else 1 (2 when the checks could not run)."""
    stream = stream or sys.stdout
    lesson = get_lesson(number)
    test_file = repo_root() / lesson.test_path
    if not test_file.exists():
        print(f"cannot find {test_file}: run `minidiff check` from the minidiff clone", file=stream)
        return 2
    code, outcomes = run_checks([test_file], impl, timeout)
    if not outcomes:
        print(f"lesson {lesson.number}: the checks could not run (pytest exit code {code}). "
              f"Try: python -m pytest {lesson.test_path} --impl={impl}", file=stream)
        return 2
    print(f"Lesson {lesson.number}: {lesson.title}  ({lesson.stub_path})", file=stream)
    n_ok = 0
    for ex in lesson.exercises:
        ok, lines = exercise_line(ex.name, [o for o in outcomes if o.exercise == ex.name], timeout)
        n_ok += ok
        print("\n".join(lines), file=stream)
    print(f"{n_ok}/{len(lesson.exercises)} exercises pass.", file=stream)
    if n_ok < len(lesson.exercises):
        print(f"A formula-level hint: minidiff check {lesson.number} --hint NAME.  Full output: "
              f"python -m pytest {lesson.test_path} --impl={impl}", file=stream)
    return 0 if n_ok == len(lesson.exercises) else 1


def show_hint(number, name: str, stream=None, err=None) -> int:
    """Print the formula-level hint of exercise ``name`` of lesson ``number``; 2 when unknown."""
    stream, err = stream or sys.stdout, err or sys.stderr
    lesson = get_lesson(number)
    ex = next((e for e in lesson.exercises if e.name == name), None)
    if ex is None:
        print(f"lesson {lesson.number} has no exercise {name!r}; its exercises are: "
              f"{', '.join(e.name for e in lesson.exercises)}", file=err)
        return 2
    print(f"hint for {ex.name} (lesson {lesson.number}): {ex.hint}", file=stream)
    return 0
