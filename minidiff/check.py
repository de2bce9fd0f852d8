"""`minidiff check NN`: run lesson NN's checks on the learner's file and print one line per
exercise, with a hint for each that fails, never a wall of tracebacks."""
from __future__ import annotations

import collections
import io
import contextlib
import sys

from .exercises import get_lesson, repo_root

PER_TEST_TIMEOUT_S = 30


class _Collector:
    """A pytest plugin that keeps each check's exercise, outcome and one-line reason."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.results = collections.defaultdict(list)   # exercise -> [(test name, passed, reason)]

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            marker = next((m for m in report.user_properties if m[0] == "exercise"), None)
            exercise = marker[1] if marker else "?"
            reason = ""
            if not report.passed:
                crash = getattr(report.longrepr, "reprcrash", None)
                reason = _short(crash.message if crash is not None else str(report.longrepr))
                if "Timeout" in str(report.longrepr):
                    reason = f"timed out after {self.timeout:g} s (an endless loop?)"
            self.results[exercise].append((report.nodeid.split("::")[-1], report.passed, reason))


def _short(reason: str) -> str:
    lines = [l for l in reason.strip().splitlines() if l.strip()]
    line = lines[0] if lines else "failed"
    if "NotImplementedError" in line and "EXERCISE" in line:
        return "not written yet"
    return line if len(line) <= 160 else line[:157] + "..."


def run_check(number, impl: str = "lesson", stream=None, timeout: float = PER_TEST_TIMEOUT_S) -> int:
    """Run the checks of lesson ``number`` on ``impl`` and print the per-exercise report.
    Returns 0 when every exercise passes, else 1."""
    import pytest

    stream = stream or sys.stdout
    lesson = get_lesson(number)
    root = repo_root()
    test_file = root / lesson.test_path
    if not test_file.exists():
        print(f"cannot find {test_file}: run `minidiff check` from the minidiff clone", file=stream)
        return 2
    collector = _Collector(timeout)
    args = [str(test_file), f"--impl={impl}", "-q", "--tb=no", "--no-header", "-p", "no:cacheprovider",
            f"--timeout={timeout}", f"--rootdir={root}", "-c", str(root / "pyproject.toml")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = pytest.main(args, plugins=[collector])
    if not collector.results:
        print(f"lesson {lesson.number}: the checks could not run (pytest exit code {int(code)}). "
              f"Try: python -m pytest {lesson.test_path} --impl={impl}", file=stream)
        return 2
    print(f"Lesson {lesson.number}: {lesson.title}  ({lesson.stub_path})", file=stream)
    n_ok = 0
    for ex in lesson.exercises:
        results = collector.results.get(ex.name, [])
        passed = sum(ok for _, ok, _ in results)
        ok = bool(results) and passed == len(results)
        n_ok += ok
        mark = "PASS" if ok else "FAIL"
        print(f"  {mark}  {ex.name:22s} {passed}/{len(results)} checks", file=stream)
        if not ok:
            first = next((r for r in results if not r[1]), None)
            if first is not None:
                print(f"        {first[0]}: {first[2]}", file=stream)
            print(f"        hint: {ex.hint}", file=stream)
    print(f"{n_ok}/{len(lesson.exercises)} exercises pass.  Full output: "
          f"python -m pytest {lesson.test_path} --impl={impl}", file=stream)
    return 0 if n_ok == len(lesson.exercises) else 1
