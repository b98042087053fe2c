"""The course folder: its assignments, their grade cells and points, releases, and one way to run nbgrader.

This layer knows the folder layout (``nbgrader_config.py``, ``source/``, ``release/``) and nothing of
grading or of the command line, which sit above it (:mod:`cnn_grader.grading`, :mod:`cnn_grader.cli`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["CourseError", "RELEASE_IGNORE", "assignments", "collect_zip", "datasets_used", "missing_datasets",
           "notebook_points", "register_assignment", "release", "run_nbgrader", "release_differences", "NotebookPoints"]


class CourseError(Exception):
    """An instructor's error: a missing configuration, source or assignment, or a failing nbgrader step
    that is the instructor's. The command line exits with status 2."""


def run_nbgrader(root: Path, *arguments: str, timeout: float | None = None, db: Path | None = None,
                 capture: bool = True, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGUMENTS`` in the course folder ``root`` with this interpreter's scripts.

    nbgrader starts helper programs by name (``alembic`` for the gradebook), so the folder of this
    Python's scripts (a virtual environment's ``bin/``) goes first on PATH, even when the environment
    is not activated. nbgrader runs in its own process group, which is killed whole on a timeout.
    Where util-linux's ``setpriv`` is installed, nbgrader is also killed when the thread that started
    it dies (a Dask worker killed mid-task); its kernels end with it.

    Args:
        root: the course folder (where ``nbgrader_config.py`` is).
        arguments: nbgrader's sub-command and options.
        timeout: seconds before nbgrader and every process it started are killed; ``None`` waits.
        db: another SQLite gradebook file to use instead of the course's.
        capture: return the log (stdout and stderr together) instead of printing it.
        environment: variables to set for nbgrader and the kernels it starts.

    Returns:
        The finished process; ``stdout`` holds the log when ``capture``.

    Raises:
        subprocess.TimeoutExpired: ``timeout`` passed; its ``output`` holds the log so far.
    """
    scripts = Path(sys.executable).parent
    executable = scripts / "nbgrader"
    database = [f"--CourseDirectory.db_url=sqlite:///{db}"] if db is not None else []
    command = [str(executable) if executable.exists() else (shutil.which("nbgrader") or "nbgrader"), *arguments,
               *database]
    die_with_parent = shutil.which("setpriv")
    if die_with_parent:
        command = [die_with_parent, "--pdeathsig", "KILL", "--", *command]
    environment = {**os.environ, **(environment or {}), "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    output = subprocess.PIPE if capture else None
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=output,
                               stderr=subprocess.STDOUT if capture else None, text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=log) from None
    except BaseException:  # Ctrl-C: nbgrader's kernels go with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(command, process.returncode, log, None)


def register_assignment(root: Path, assignment: str, db: Path | None = None) -> None:
    """Record an assignment and its grade cells in a gradebook (``nbgrader generate_assignment`` into a scratch
    folder, so that ``release/`` is not touched).

    Args:
        root: the course folder.
        assignment: a folder of ``root/source``.
        db: the SQLite gradebook file; default the course's.

    Raises:
        CourseError: nbgrader cannot generate the assignment; the message holds the end of its log.
    """
    with tempfile.TemporaryDirectory(prefix="cnn-course-release-") as scratch:
        run = run_nbgrader(root, "generate_assignment", assignment, "--force",
                           f"--CourseDirectory.release_directory={scratch}", db=db)
    if run.returncode != 0:
        raise CourseError(f"nbgrader generate_assignment {assignment} failed:\n{run.stdout[-2000:]}")


def collect_zip(root: Path, assignment: str, archive: Path) -> None:
    """Unpack an LMS download with ``nbgrader zip_collect`` into ``submitted/<student>/<assignment>/``.

    Files in the archive are named ``<student id>_<notebook>.ipynb``
    (``FileNameCollector.named_regexp`` in ``nbgrader_config.py``).

    Raises:
        CourseError: the archive does not exist or nbgrader cannot collect it.
    """
    if not archive.is_file():
        raise CourseError(f"no such archive: {archive}")
    folder = root / "downloaded" / assignment / "archive"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(archive, folder / archive.name)
    run = run_nbgrader(root, "zip_collect", assignment, "--force")
    if run.returncode != 0:
        raise CourseError(f"nbgrader zip_collect {assignment} failed:\n{run.stdout[-2000:]}")


#: Left out of a release on top of nbgrader_config.py's ignore list: models and checkpoints that
#: running a solution notebook wrote into source/.
RELEASE_IGNORE = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.keras", "*.h5", "*.weights.h5"]


def assignments(root: Path, folder: str = "source") -> list[str]:
    """Names of the assignments under ``root/folder``: sub-folders that hold at least one notebook, sorted."""
    base = root / folder
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


@dataclass(frozen=True)
class NotebookPoints:
    """The grade cells of one notebook: how many are autograded or manual, and the points of each kind."""

    path: Path
    autograded_cells: int
    autograded_points: float
    manual_cells: int
    manual_points: float

    @property
    def total_points(self) -> float:
        return self.autograded_points + self.manual_points


def notebook_points(path: Path) -> NotebookPoints:
    """Count the grade cells and points in a notebook's nbgrader metadata.

    An autograded test cell or autograded answer is ``grade`` without ``solution`` (or a
    code cell with both); a manually graded answer is a markdown/code cell with
    ``grade`` and ``solution`` that has no test to run it (markdown), or a ``task`` cell.

    Raises:
        nbformat.reader.NotJSONError, nbformat.ValidationError: the notebook is not valid.
    """
    notebook = nbformat.read(path, as_version=4)
    auto_cells = manual_cells = 0
    auto_points = manual_points = 0.0
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not (meta.get("grade") or meta.get("task")):
            continue
        points = float(meta.get("points", 0) or 0)
        if meta.get("task") or cell.cell_type == "markdown":
            manual_cells += 1
            manual_points += points
        else:
            auto_cells += 1
            auto_points += points
    return NotebookPoints(path, auto_cells, auto_points, manual_cells, manual_points)


def release(root: Path, names: list[str] | None = None) -> list[str]:
    """Generate the student version of each assignment with ``nbgrader generate_assignment --force``.

    Args:
        root: the course root (where ``nbgrader_config.py`` and ``source/`` are).
        names: assignments to release; ``None`` releases every one in ``source/``.

    Returns:
        The names released.

    Raises:
        CourseError: an assignment named is not in ``source/``, or nbgrader failed (its log is printed above).
    """
    available = assignments(root)
    names = available if names is None else names
    unknown = [name for name in names if name not in available]
    if unknown:
        raise CourseError(
            f"no assignment {', '.join(unknown)} in {root / 'source'}; found: {', '.join(available) or 'none'}"
        )
    for name in names:
        print(f"nbgrader generate_assignment {name}")
        run = run_nbgrader(root, "generate_assignment", name, "--force", "--log-level=WARN",
                           f"--CourseDirectory.ignore={RELEASE_IGNORE!r}", capture=False)
        if run.returncode != 0:
            raise CourseError(f"nbgrader generate_assignment {name} failed (its log is above)")
    return names


def datasets_used(path: Path) -> list[str]:
    """The data sets a notebook loads by name (``"cifar10"``, ``"fashion_mnist"``, ``"mnist"``), from its code cells."""
    from cnn_course.data import DATASET_NAMES

    code = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    return [name for name in DATASET_NAMES if f'"{name}"' in code]


def missing_datasets(root: Path, assignment: str) -> list[str]:
    """The data sets the notebooks of ``source/<assignment>`` need that are not available here."""
    from cnn_course.data import is_available

    needed = {name for path in (root / "source" / assignment).glob("*.ipynb") for name in datasets_used(path)}
    return sorted(name for name in needed if not is_available(name))


def _comparable_cells(path: Path) -> list[tuple]:
    """What a student sees and what grading relies on: cell type, source, nbgrader metadata, outputs."""
    notebook = nbformat.read(path, as_version=4)
    return [
        (cell.cell_type, cell.source, cell.get("metadata", {}).get("nbgrader", {}), cell.get("outputs", []))
        for cell in notebook.cells
    ]


def release_differences(committed: Path, generated: Path) -> list[str]:
    """Differences between two release folders, ignoring volatile metadata (cell ids, kernel info, timestamps).

    Args:
        committed: e.g. ``release/`` of the repository.
        generated: a fresh ``nbgrader generate_assignment`` output of the same ``source/``.

    Returns:
        One line per difference (a file only on one side, or a notebook whose cells differ); empty when in sync.
    """
    def files(base: Path) -> set[Path]:
        return {p.relative_to(base) for p in base.rglob("*")
                if p.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                           for part in p.relative_to(base).parts)}

    ours, fresh = files(committed), files(generated)
    differences = [f"{p}: in {committed} but not generated from source/" for p in sorted(ours - fresh)]
    differences += [f"{p}: generated from source/ but missing in {committed}" for p in sorted(fresh - ours)]
    for relative in sorted(ours & fresh):
        if relative.suffix == ".ipynb":
            old, new = _comparable_cells(committed / relative), _comparable_cells(generated / relative)
            if old != new:
                first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
                differences.append(f"{relative}: differs from a fresh release, first at cell {first + 1}")
        elif (committed / relative).read_bytes() != (generated / relative).read_bytes():
            differences.append(f"{relative}: differs from a fresh release")
    return differences
