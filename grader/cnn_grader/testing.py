"""The course's pytest plugin (loaded by the root conftest.py): notebooks run in smoke mode, and
notebooks or tests that need a data set that is not available are skipped with a reason."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from cnn_course.data import DATASETS

from .course import datasets_used

def how_to_get(name: str) -> str:
    """How to get a data set, for skip reasons (from :data:`cnn_course.data.DATASETS`)."""
    return DATASETS[name].how_to_get


@functools.lru_cache(maxsize=None)
def dataset_available(name: str) -> bool:
    """Whether ``name`` loads here (checked once per test session)."""
    from cnn_course.data import is_available

    return is_available(name)


def pytest_configure(config):
    # Every kernel the tests start (nbval, nbgrader) inherits this: notebooks train in smoke mode.
    # nbgrader's own NBGRADER_EXECUTION still switches autograding to the grading budget.
    os.environ.setdefault("CNN_COURSE_SMOKE", "1")


def pytest_collection_modifyitems(config, items):
    """Skip nbval's notebook cells when the notebook loads a data set that is not available."""
    needs: dict[Path, list[str]] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix != ".ipynb":
            continue
        if path not in needs:
            needs[path] = datasets_used(path)
        missing = [name for name in needs[path] if not dataset_available(name)]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"{', '.join(missing)} not available here: " + "; ".join(how_to_get(m) for m in missing)))
