"""`minidiff check NN`: run lesson NN's checks on the learner's file and print one line per
exercise - PASS, not written yet, or FAIL with the property that broke - never a traceback.
The formula-level hint comes only on request (`minidiff check NN --hint NAME`).

The learner's code runs in a child process (``run_isolated``) that reports each check as it
goes; the parent enforces a hard time limit from outside (killing the child's process group) and
always prints the report, so no learner code can end, hang or silence it: a check that ends the
process (``os._exit``) or ignores its time limit is reported as such and the remaining checks run
in a fresh child.  A lesson file that does not import is reported once, with its error and line.

``Collector`` is the one pytest plugin that reads per-check outcomes; the child and
tests/test_exercises.py (in-process) both go through ``run_checks``."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .exercises import STUB_MARK, get_lesson, repo_root

PER_TEST_TIMEOUT_S = 30
KILL_MARGIN_S = 5          # the parent kills a check this long after its own time limit has passed
STARTUP_S = 180            # the child's start-up (importing numpy, torch, pytest; collecting the checks)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One lesson check's result."""
    nodeid: str
    exercise: str | None    # from the check's @pytest.mark.exercise, None when untagged
    status: str             # "passed", "failed" (an assertion), "raised", "stub", "timeout", "skipped";
                            # set by the parent: "killed" (ignored its time limit), "ended" (ended the
                            # process), "not run" (after an earlier check of its exercise did either)
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


def run_checks(paths, impl: str = "lesson", timeout: float | None = PER_TEST_TIMEOUT_S, collector=None) -> tuple:
    """Run the lesson checks in ``paths`` (files or folders) on ``impl`` in this process, quietly.
    Returns (pytest exit code, [Outcome, ...])."""
    import pytest

    root = repo_root()
    collector = collector or Collector()
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
           "killed": f"timed out after {timeout:g} s and ignored the stop (an endless loop that swallows "
                     "the timeout?): the check process was killed",
           "ended": f"ended the check process without reporting ({first.message})",
           "not run": f"not run: {first.message}",
           "skipped": f"skipped: {first.message}"}[first.status]
    return False, [f"  FAIL  {head}: {first.prop}", f"        {why}"]


def run_check(number, impl: str = "lesson", stream=None, timeout: float = PER_TEST_TIMEOUT_S) -> int:
    """Run the checks of lesson ``number`` on ``impl`` in a child process and print the
    per-exercise report.  Returns 0 when every exercise passes, else 1 (2 when the checks could
    not run)."""
    stream = stream or sys.stdout
    lesson = get_lesson(number)
    test_file = repo_root() / lesson.test_path
    if not test_file.exists():
        print(f"cannot find {test_file}: run `minidiff check` from the minidiff clone", file=stream)
        return 2
    result = run_isolated(lesson.number, test_file, impl, timeout)
    print(f"Lesson {lesson.number}: {lesson.title}  ({lesson.stub_path})", file=stream)
    if result.import_error:
        print(f"  ERROR {result.import_error}", file=stream)
        for ex in lesson.exercises:
            print(f"  ----  {ex.name:22s} not checked: {lesson.stub_path} must import first", file=stream)
        print(f"0/{len(lesson.exercises)} exercises pass.", file=stream)
        return 1
    if not result.outcomes:
        print(f"  the checks could not run ({result.problem or f'pytest exit code {result.code}'}). "
              f"Try: python -m pytest {lesson.test_path} --impl={impl}", file=stream)
        return 2
    n_ok = 0
    for ex in lesson.exercises:
        ok, lines = exercise_line(ex.name, [o for o in result.outcomes if o.exercise == ex.name], timeout)
        n_ok += ok
        print("\n".join(lines), file=stream)
    print(f"{n_ok}/{len(lesson.exercises)} exercises pass.", file=stream)
    if n_ok < len(lesson.exercises):
        print(f"A formula-level hint: minidiff check {lesson.number} --hint NAME.  Full output: "
              f"python -m pytest {lesson.test_path} --impl={impl}", file=stream)
    return 0 if n_ok == len(lesson.exercises) else 1


# ----------------------------------------------------------------------------------------------
# The child process and its parent.  The child writes one JSON object a line into a report file:
# {"event": "importing"}, {"event": "imported"} or {"event": "import_error", "text"}, then
# {"event": "collected", "checks": [[nodeid, exercise, prop], ...]}, {"event": "start", "nodeid"}
# and {"event": "outcome", **Outcome} per check, and {"event": "done", "code"} at the end.

@dataclasses.dataclass
class ChildResult:
    outcomes: list
    import_error: str = ""      # the lesson file does not import: its error, where, and the line
    problem: str = ""           # the child ended or hung outside any check
    code: int = 0               # pytest's exit code


class _Reporter(Collector):
    """The child's plugin: every outcome (and each check's start) written to the report file at once,
    so that whatever happens next the parent knows how far the checks got."""

    def __init__(self, report, skip):
        super().__init__()
        self.report, self.skip = report, set(skip)

    def pytest_collection_modifyitems(self, session, config, items):
        items[:] = [item for item in items if item.nodeid not in self.skip]
        _emit(self.report, event="collected", checks=[[item.nodeid, _exercise(item), _property(item)]
                                                      for item in items])

    def pytest_runtest_setup(self, item):
        _emit(self.report, event="start", nodeid=item.nodeid)

    def pytest_runtest_makereport(self, item, call):
        n = len(self.outcomes)
        super().pytest_runtest_makereport(item, call)
        for o in self.outcomes[n:]:
            _emit(self.report, event="outcome", **dataclasses.asdict(o))


def _exercise(item):
    marker = item.get_closest_marker("exercise")
    return marker.args[0] if marker else None


def _emit(report, **event):
    with open(report, "a") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())


def import_error_text(e: BaseException, path) -> str:
    """One line: the learner file's import error, its line number and that line."""
    path = Path(path).resolve()
    if isinstance(e, SyntaxError) and e.filename and Path(e.filename).resolve() == path:
        where, text = e.lineno, (e.text or "").strip()
        message = e.msg
    else:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path]
        where, text = (frames[-1].lineno, (frames[-1].line or "").strip()) if frames else (None, "")
        message = _first_line(str(e))
    where = (f" (line {where}" + (f": {text}" if text else "") + ")") if where else ""
    return _first_line(f"{path.name} does not import: {type(e).__name__}: {message}{where}", limit=240)


def _child_main(number, impl, timeout, report, skip_file):
    """The child: import the lesson file, then run the checks, reporting to ``report``."""
    import numpy  # noqa: F401  (the start-up's imports, not the learner's, before "importing")

    from .exercises import implementation, lessons_dir

    lesson = get_lesson(number)
    for name in ("torch", "autograd"):
        with contextlib.suppress(ImportError):
            __import__(name)
    _emit(report, event="importing")
    try:
        implementation(number, impl)
    except BaseException as e:   # noqa: BLE001  (the learner's file: anything, SystemExit too)
        _emit(report, event="import_error", text=import_error_text(e, lessons_dir() / f"{lesson.stem}.py")
              if impl == "lesson" else _first_line(f"{type(e).__name__}: {e}"))
        return 0
    _emit(report, event="imported")
    skip = json.loads(Path(skip_file).read_text()) if skip_file else []
    code, _ = run_checks([repo_root() / lesson.test_path], impl, timeout, collector=_Reporter(report, skip))
    _emit(report, event="done", code=code)
    return 0


def _read_events(report, seen: int) -> list:
    """The complete lines of the report file after the first ``seen``."""
    try:
        lines = Path(report).read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    events = []
    for line in lines[seen:]:
        if not line.endswith("\n"):
            break
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"event": "garbled"})
    return events


def _kill(proc):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclasses.dataclass
class _Round:
    """What one child got through: how it finished ('done', 'killed' or 'exit code N'), the stage
    it was in (starting, importing, collecting, between checks, check) and the check it was running."""
    finished: str = ""
    stage: str = "starting"
    current: str | None = None
    import_error: str = ""
    code: int = 0


def _start_child(number, impl, timeout, report, skip_file):
    here = str(Path(__file__).resolve().parent.parent)           # the child imports this very minidiff
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    cmd = [sys.executable, "-m", "minidiff.check", "--child", str(number), "--impl", impl,
           "--timeout", str(timeout), "--report", str(report), "--skip", str(skip_file)]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)


def _watch(proc, report, timeout, outcomes, done, checks) -> _Round:
    """Follow one child's report until it is done, ends or overruns its stage's limit (then kill
    its process group); its outcomes go into ``outcomes`` / ``done``, its checks into ``checks``."""
    r, seen = _Round(), 0
    limit = {"starting": STARTUP_S, "importing": timeout + KILL_MARGIN_S, "collecting": STARTUP_S,
             "between checks": STARTUP_S, "check": timeout + KILL_MARGIN_S}
    deadline = time.monotonic() + limit[r.stage]
    while True:
        events = _read_events(report, seen)
        seen += len(events)
        for ev in events:
            kind, stage = ev.get("event"), None
            if kind == "import_error":
                r.import_error, r.finished = ev.get("text", "does not import"), "import error"
            elif kind == "done":
                r.finished, r.code = "done", int(ev.get("code", 0))
            elif kind == "collected":
                checks.update({c[0]: tuple(c) for c in ev["checks"]})
                stage = "between checks"
            elif kind == "start":
                r.current, stage = ev["nodeid"], "check"
            elif kind == "outcome":
                ev.pop("event")
                outcomes.append(Outcome(**ev))
                done.add(ev["nodeid"])
                stage = "check"                 # its teardown: still the check's time
            else:
                stage = {"importing": "importing", "imported": "collecting"}.get(kind)
            if stage:
                r.stage, deadline = stage, time.monotonic() + limit[stage]
        if r.finished:
            _kill(proc)
            return r
        rc = proc.poll()
        if rc is not None and not _read_events(report, seen):
            r.finished = f"exit code {rc}"
            return r
        if rc is None and time.monotonic() > deadline:
            _kill(proc)
            r.finished = "killed"
            return r
        time.sleep(0.05)


def run_isolated(number, test_file, impl: str = "lesson", timeout: float = PER_TEST_TIMEOUT_S) -> ChildResult:
    """Run a lesson's checks in child processes with a hard time limit, enforced here, per check
    (``timeout`` + KILL_MARGIN_S) and per import of the lesson file.  A check that ends its child or
    is killed is recorded, the other checks of its exercise are marked 'not run', and a fresh child
    runs the rest."""
    outcomes, done, checks = [], set(), {}
    stub_path = get_lesson(number).stub_path
    with tempfile.TemporaryDirectory(prefix="minidiff-check-") as tmp:
        for attempt in range(10_000):                       # each round settles at least one check
            report, skip_file = Path(tmp) / f"report{attempt}.jsonl", Path(tmp) / "skip.json"
            skip_file.write_text(json.dumps(sorted(done)))
            r = _watch(_start_child(number, impl, timeout, report, skip_file), report, timeout, outcomes, done, checks)
            if r.import_error:
                return ChildResult([], import_error=r.import_error)
            if r.finished == "done":
                return ChildResult(outcomes, code=r.code)
            if r.stage == "importing":
                what = f"did not finish within {timeout:g} s (an endless loop at import?)" \
                    if r.finished == "killed" else f"ended the process ({r.finished})"
                return ChildResult([], import_error=f"importing {stub_path} {what}")
            if r.stage != "check" or r.current in done:
                how = "hung" if r.finished == "killed" else "ended"
                return ChildResult(outcomes, problem=f"the check process {how} outside any check ({r.finished}, "
                                                     f"while {r.stage})")
            _settle(r, outcomes, done, checks)
            if all(c in done for c in checks):
                return ChildResult(outcomes)
    return ChildResult(outcomes, problem="too many restarts")


def _settle(r: _Round, outcomes, done, checks):
    """Record the check that ended or hung its child, and mark its exercise's other checks not run."""
    nodeid, exercise, prop = checks.get(r.current, (r.current, None, r.current))
    status = "killed" if r.finished == "killed" else "ended"
    outcomes.append(Outcome(nodeid, exercise, status, prop, r.finished))
    done.add(nodeid)
    why = f"an earlier check of this exercise {'was killed' if status == 'killed' else 'ended the process'}"
    for other, ex, p in checks.values():                    # its exercise's other checks would do the same
        if other not in done and exercise is not None and ex == exercise:
            outcomes.append(Outcome(other, ex, "not run", p, why))
            done.add(other)


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


def _main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m minidiff.check", description="the child process of `minidiff check`")
    p.add_argument("--child", required=True, metavar="NN")
    p.add_argument("--impl", default="lesson")
    p.add_argument("--timeout", type=float, default=PER_TEST_TIMEOUT_S)
    p.add_argument("--report", required=True)
    p.add_argument("--skip", default="")
    a = p.parse_args(argv)
    return _child_main(a.child, a.impl, a.timeout, a.report, a.skip)


if __name__ == "__main__":
    sys.exit(_main())
