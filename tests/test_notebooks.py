"""Every lesson notebook runs top to bottom in a clean kernel, in fast mode (DESIGN section 4).

Each notebook is executed from a temporary copy (the committed file is never rewritten), with the
notebooks folder as the working directory and MINIDIFF_FAST=1 in the kernel's environment, so
iteration counts and sample sizes shrink.  Any error in any cell fails the test.
"""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 300


def _notebooks():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, tmp_path, monkeypatch):
    # The kernel inherits this process's environment.
    monkeypatch.setenv("MINIDIFF_FAST", "1")
    # The models are tiny: BLAS / OpenMP threads only add overhead, and on a busy 2-core CI
    # machine their spin-waiting makes small matrix products many times slower.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    nb = nbformat.read(copy, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name} needs a python3 kernelspec"

    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},   # cwd of the kernel: the notebooks folder
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed in fast mode:\n{e}", pytrace=False)
    finally:
        nbformat.write(nb, copy)   # the executed copy, for a look after a failure (pytest keeps tmp_path)


def test_every_lesson_has_its_notebook():
    from minidiff.exercises import LESSONS

    missing = [lesson.notebook for lesson in LESSONS.values() if not (ROOT / lesson.notebook).exists()]
    assert not missing, f"lessons without a notebook: {missing}"


def test_notebooks_use_the_learners_functions():
    """Each lesson notebook loads its exercises with load_lesson("NN") and tells the learner how to check."""
    from minidiff.exercises import LESSONS

    for lesson in LESSONS.values():
        path = ROOT / lesson.notebook
        if not path.exists():
            continue  # reported by test_every_lesson_has_its_notebook
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in nb.cells)
        assert f'load_lesson("{lesson.number}")' in text, f"{path.name} does not call load_lesson(\"{lesson.number}\")"
        assert f"minidiff check {lesson.number}" in text, f"{path.name} does not mention `minidiff check {lesson.number}`"
        assert 'os.environ.get("MINIDIFF_FAST")' in text, f"{path.name} has no fast mode"


def test_committed_notebooks_are_small():
    """Committed outputs stay small (DESIGN section 4): figures are fine, megabytes of logs are not."""
    big = {p.name: p.stat().st_size for p in _notebooks() if p.stat().st_size > 1_500_000}
    assert not big, f"notebooks over 1.5 MB (strip outputs or lower the figure dpi): {big}"
