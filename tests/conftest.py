"""Shared pytest set-up: the --impl switch for the lesson checks (DESIGN section 4)."""
import os

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--impl", default=os.environ.get("MINIDIFF_IMPL", "reference"),
        choices=("reference", "lesson", "stub"),
        help="which implementation the lesson checks in tests/lessons run against: the reference in "
             "minidiff (default), the learner's lessons/NN_topic.py, or freshly generated stubs",
    )


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests use tiny tensors, for which torch's intra-op threads only spin against each
    other on a loaded 2-core machine (measured 3-4x slower); one thread is plenty."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ex(request):
    """The exercise functions of the test module's lesson (its LESSON constant), from --impl."""
    from minidiff.exercises import implementation

    return implementation(request.module.LESSON, request.config.getoption("--impl"))
