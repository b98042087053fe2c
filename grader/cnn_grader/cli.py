"""The instructor's command line over the course folder, on top of nbgrader's own CLI.

    python -m cnn_grader release [ASSIGNMENT ...]   # nbgrader generate_assignment into release/
    python -m cnn_grader summary                    # what is released, with points per notebook
    python -m cnn_grader demo [--jobs N]            # grade the example submissions in build/demo/
    python -m cnn_grader grade [--jobs N | --scheduler tcp://HOST:8786 | --scheduler-file FILE]
                               [--zip FILE --assignment A]   # autograde on Dask, feedback, grades.csv
    python -m cnn_grader hub [--port 8000] [--state build/hub]  # the course server (JupyterHub), until Ctrl-C
    python -m cnn_grader hub-cycle [--state DIR]    # release, fetch, submit, grade, feedback through a fresh hub

Run from the repository root, where ``nbgrader_config.py`` lives (the Makefile does).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .course import (RELEASE_IGNORE, CourseError, assignments, missing_datasets, notebook_points, release)
from . import hub, hub_cycle
from .cluster import grade
from .grading import GradingLimits

__all__ = ["demo", "main"]


def demo(root: Path, *, jobs: int = 2) -> int:
    """Grade the example submissions: for each assignment the instructor's solution, the blank release and
    the hand-written submissions in ``examples/<assignment>/<student>/``, in the course copy ``build/demo/``.

    Assignments whose data set is missing are reported and skipped. Returns the exit status.
    """
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
    parser = argparse.ArgumentParser(prog="python -m cnn_grader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the course root (default: the current folder)")
    commands = parser.add_subparsers(dest="command", required=True)
    release_parser = commands.add_parser("release", help="nbgrader generate_assignment for assignments in source/")
    release_parser.add_argument("names", nargs="*", help="assignments (default: all)")
    commands.add_parser("summary", help="what is released, with points per notebook")
    demo_parser = commands.add_parser("demo", help="grade the example submissions in build/demo/")
    demo_parser.add_argument("--jobs", type=int, default=2, help="workers of the local Dask cluster (default 2)")
    grade_parser = commands.add_parser("grade", help="autograde new or changed submissions, write feedback and grades.csv")
    where = grade_parser.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=None,
                       help="workers of the local Dask cluster (default: one per core, as memory allows)")
    where.add_argument("--scheduler", help="grade on the Dask scheduler at this address (tcp://host:8786)")
    where.add_argument("--scheduler-file", type=Path, help="grade on the Dask scheduler described in this file")
    grade_parser.add_argument("--zip", type=Path, action="append", default=[], help="an LMS download to collect first")
    grade_parser.add_argument("--assignment", action="append", default=[],
                              help="assignments to grade (default: all); with --zip, the archive's assignment")
    grade_parser.add_argument("--submission-seconds", type=int, default=1800, help="wall-clock limit per submission")
    grade_parser.add_argument("--cell-seconds", type=int, default=120, help="time limit per cell")
    grade_parser.add_argument("--notebook-seconds", type=int, default=600, help="wall-clock limit per notebook")
    grade_parser.add_argument("--memory-mb", type=int, default=6144, help="memory limit per kernel, MiB")
    grade_parser.add_argument("--no-sandbox", action="store_true",
                              help="run student kernels without the bubblewrap sandbox (the feedback says so)")
    hub_parser = commands.add_parser("hub", help="run the course server (JupyterHub with nbgrader) until Ctrl-C")
    hub_parser.add_argument("--port", type=int, default=8000, help="the hub's port on 127.0.0.1 (default 8000)")
    hub_parser.add_argument("--state", type=Path, default=None, help="the server's state folder (default build/hub)")
    cycle_parser = commands.add_parser("hub-cycle", help="the whole course cycle through a fresh course server")
    cycle_parser.add_argument("--state", type=Path, default=None,
                              help="the server's state folder (default build/hub-cycle, emptied first)")
    cycle_parser.add_argument("--assignment", default="cnn_mnist", help="the assignment (default cnn_mnist)")
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
        elif args.command == "hub":
            return hub.serve(root, args.state or root / "build" / "hub", port=args.port)
        elif args.command == "hub-cycle":
            state = args.state or root / "build" / "hub-cycle"
            shutil.rmtree(state, ignore_errors=True)
            hub_cycle.run(root, state, args.assignment)
        elif args.command == "grade":
            limits = GradingLimits(submission_seconds=args.submission_seconds, cell_seconds=args.cell_seconds,
                                   notebook_seconds=args.notebook_seconds, memory_mb=args.memory_mb,
                                   isolate=not args.no_sandbox)
            grade(root, assignments=args.assignment or None, jobs=args.jobs, scheduler=args.scheduler,
                  scheduler_file=args.scheduler_file, zip_files=args.zip,
                  zip_assignment=args.assignment[0] if args.zip and args.assignment else None, limits=limits)
        else:
            _print_summary(root)
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
