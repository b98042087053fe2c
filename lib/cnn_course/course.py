"""The instructor's commands over the course folder, on top of nbgrader's own CLI.

    python -m cnn_course.course release [ASSIGNMENT ...]   # nbgrader generate_assignment into release/
    python -m cnn_course.course summary                    # what is released, with points per notebook
    python -m cnn_course.course grade [--jobs N] [--zip FILE --assignment A]   # autograde, feedback, grades.csv

Run from the repository root, where ``nbgrader_config.py`` lives (the Makefile does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["assignments", "datasets_used", "demo", "missing_datasets", "notebook_points", "release", "nbgrader_command", "run_nbgrader", "release_differences", "NotebookPoints", "main"]


def nbgrader_command(*arguments: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``nbgrader ARGUMENTS`` with this interpreter's scripts.

    nbgrader starts helper programs by name (``alembic`` for the gradebook), so the folder of
    this Python's scripts (a virtual environment's ``bin/``) goes first on PATH, even when the
    environment is not activated.
    """
    scripts = Path(sys.executable).parent
    executable = scripts / "nbgrader"
    command = [str(executable) if executable.exists() else (shutil.which("nbgrader") or "nbgrader"), *arguments]
    return command, {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_nbgrader(root: Path, *arguments: str) -> None:
    """Run ``nbgrader ARGUMENTS`` in ``root`` (see :func:`nbgrader_command`); its log goes to the terminal.

    Raises:
        subprocess.CalledProcessError: nbgrader exited with an error (its log is printed).
    """
    command, environment = nbgrader_command(*arguments)
    subprocess.run(command, cwd=root, env=environment, check=True)


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
        FileNotFoundError: an assignment named is not in ``source/``.
        subprocess.CalledProcessError: nbgrader failed (its log is printed above).
    """
    available = assignments(root)
    names = available if names is None else names
    unknown = [name for name in names if name not in available]
    if unknown:
        raise FileNotFoundError(
            f"no assignment {', '.join(unknown)} in {root / 'source'}; found: {', '.join(available) or 'none'}"
        )
    for name in names:
        print(f"nbgrader generate_assignment {name}")
        run_nbgrader(root, "generate_assignment", name, "--force", "--log-level=WARN",
                     f"--CourseDirectory.ignore={RELEASE_IGNORE!r}")
    return names


def datasets_used(path: Path) -> list[str]:
    """The data sets a notebook loads by name (``"cifar10"``, ``"fashion_mnist"``, ``"mnist"``), from its code cells."""
    from .data import DATASET_NAMES

    code = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    return [name for name in DATASET_NAMES if f'"{name}"' in code]


def missing_datasets(root: Path, assignment: str) -> list[str]:
    """The data sets the notebooks of ``source/<assignment>`` need that are not available here."""
    from .data import is_available

    needed = {name for path in (root / "source" / assignment).glob("*.ipynb") for name in datasets_used(path)}
    return sorted(name for name in needed if not is_available(name))


def demo(root: Path, *, jobs: int = 2) -> int:
    """Grade the example submissions: for each assignment the instructor's solution, the blank release and
    the hand-written submissions in ``examples/<assignment>/<student>/``, in the course copy ``build/demo/``.

    Assignments whose data set is missing are reported and skipped. Returns the exit status.
    """
    from .grading import grade

    course = root / "build" / "demo"
    (course / "source").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "nbgrader_config.py", course)
    ready = []
    for name in assignments(root):
        missing = missing_datasets(root, name)
        if missing:
            print(f"{name}: skipped, {', '.join(missing)} not available here (see README, 'Where the data comes from')")
            continue
        ready.append(name)
        shutil.rmtree(course / "source" / name, ignore_errors=True)
        shutil.copytree(root / "source" / name, course / "source" / name,
                        ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
        submissions = {"instructor_solution": root / "source" / name, "blank_release": root / "release" / name}
        examples = root / "examples" / name
        if examples.is_dir():
            submissions.update({folder.name: folder for folder in sorted(examples.iterdir()) if folder.is_dir()})
        for student, folder in submissions.items():
            target = course / "submitted" / student / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
    if not ready:
        print("No assignment can be graded here.")
        return 0
    grade(course, assignments=ready, jobs=jobs)
    return 0


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


def _print_summary(root: Path) -> None:
    released = assignments(root, "release")
    if not released:
        print("No assignment released yet: write solution notebooks in source/<assignment>/ and run `make release`.")
        return
    print(f"{'assignment':<14} {'notebook':<28} {'autograded':>10} {'manual':>7} {'points':>7}")
    for name in released:
        for path in sorted((root / "release" / name).glob("*.ipynb")):
            points = notebook_points(path)
            print(f"{name:<14} {path.name:<28} {points.autograded_points:>10g} {points.manual_points:>7g} "
                  f"{points.total_points:>7g}")
    print(f"\nStudent versions are in {root / 'release'}/. Students open them in JupyterLab, fill in the cells "
          "marked '# here is your code coming',\nand check their work before submitting with "
          "`nbgrader validate NOTEBOOK.ipynb` or the Validate button.")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for an instructor's error)."""
    parser = argparse.ArgumentParser(prog="python -m cnn_course.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the course root (default: the current folder)")
    commands = parser.add_subparsers(dest="command", required=True)
    release_parser = commands.add_parser("release", help="nbgrader generate_assignment for assignments in source/")
    release_parser.add_argument("names", nargs="*", help="assignments (default: all)")
    commands.add_parser("summary", help="what is released, with points per notebook")
    demo_parser = commands.add_parser("demo", help="grade the example submissions in build/demo/")
    demo_parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    grade_parser = commands.add_parser("grade", help="autograde new or changed submissions, write feedback and grades.csv")
    grade_parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    grade_parser.add_argument("--zip", type=Path, action="append", default=[], help="an LMS download to collect first")
    grade_parser.add_argument("--assignment", action="append", default=[],
                              help="assignments to grade (default: all); with --zip, the archive's assignment")
    grade_parser.add_argument("--submission-seconds", type=int, default=1800, help="wall-clock limit per submission")
    grade_parser.add_argument("--cell-seconds", type=int, default=120, help="time limit per cell")
    grade_parser.add_argument("--notebook-seconds", type=int, default=600, help="wall-clock limit per notebook")
    grade_parser.add_argument("--memory-mb", type=int, default=6144, help="memory limit per kernel, MiB")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "nbgrader_config.py").is_file():
        print(f"error: {root} has no nbgrader_config.py; run from the course root", file=sys.stderr)
        return 2
    try:
        if args.command == "release":
            release(root, args.names or None)
        elif args.command == "demo":
            return demo(root, jobs=args.jobs)
        elif args.command == "grade":
            from .grading import GradingLimits, grade

            limits = GradingLimits(submission_seconds=args.submission_seconds, cell_seconds=args.cell_seconds,
                                   notebook_seconds=args.notebook_seconds, memory_mb=args.memory_mb)
            grade(root, assignments=args.assignment or None, jobs=args.jobs, zip_files=args.zip,
                  zip_assignment=args.assignment[0] if args.zip and args.assignment else None, limits=limits)
        else:
            _print_summary(root)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: nbgrader failed ({error})", file=sys.stderr)
        return 2
    except Exception as error:
        from .grading import CourseError

        if not isinstance(error, CourseError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
