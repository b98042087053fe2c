"""Where the seconds of autograding one submission go: nbgrader and kernel start-up, imports, data
loading, grading-mode training, saved-model evaluation and the tests in the checker, per notebook.

    python bench/grading_breakdown.py [--repeats 2] [--checker-per-notebook]

Each available assignment is handed in as its instructor solution and autograded with
``nbgrader autograde`` in a course folder, with the course's grading kernels (checker and sandbox),
as one Dask task does, ``--repeats`` times. The seconds of each cell come from the execution
timestamps that nbclient writes into the autograded notebook (``metadata.execution``); what is
left of the wall time is start-up: the nbgrader process, the student's and the checker's kernels,
and writing the results. The machine's busy core-seconds during each grading (``/proc/stat``) show
the CPU it costs, which bounds how many submissions a grading machine's cores take at once.
Writes bench/results/grading_breakdown.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import nbformat
from common import ROOT, write_result
from grading import kernel_startup_seconds, new_course

from cnn_grader.course import assignments, missing_datasets, register_assignment, run_nbgrader

#: What a code cell does, by the first pattern its source contains (checked in this order).
KINDS = (
    ("data loading", ("load_dataset", "load_mnist", "load_fashion", "load_cifar")),
    ("data preparation", ("Standardizer", "standardize", "one_hot", "add_channel_axis")),
    ("saved-model evaluation", ("load_model", ".evaluate(", "evaluate_saved")),
    ("training", (".fit(", "train(", "fit_", "train_")),
    ("plots", ("plot", "show_")),
)
TESTS = "tests in the checker"
IMPORTS = "imports (TensorFlow, Keras, the course package)"
STARTUP = "start-up (nbgrader, kernels, writing)"


def kind_of(cell, first: bool) -> str:
    """The kind of a code cell: a grade cell with points is a test, the ``first`` code cell with imports
    is the imports (and set-up), otherwise by :data:`KINDS`."""
    if cell.metadata.get("nbgrader", {}).get("points"):
        return TESTS
    if first and any(line.startswith(("import ", "from ")) for line in cell.source.splitlines()):
        return IMPORTS
    for kind, patterns in KINDS:
        if any(pattern in cell.source for pattern in patterns):
            return kind
    return "other cells"


def cell_seconds(cell) -> float | None:
    """Seconds from the kernel's execute_input to its reply for one cell, or None when not run."""
    execution = cell.metadata.get("execution", {})
    try:
        began = datetime.fromisoformat(execution["iopub.execute_input"].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(execution["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (ended - began).total_seconds()


def breakdown(notebook_path: Path) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """Seconds per kind of cell in one autograded notebook, and ``(seconds, first line)`` of each cell."""
    notebook = nbformat.read(notebook_path, as_version=4)
    kinds: dict[str, float] = defaultdict(float)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        seconds = cell_seconds(cell)
        if seconds is None:
            continue
        kinds[kind_of(cell, first=not cells)] += seconds
        first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
        cells.append((seconds, f"{notebook_path.stem}: {first[:60]}"))
    return dict(kinds), cells


def busy_core_seconds() -> float:
    """CPU seconds this machine has spent busy since boot, over all cores (``/proc/stat``; 0.0 where absent)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:8]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def grade_once(name: str, keep_checker: bool = True) -> tuple[float, float, dict[str, dict[str, float]],
                                                                  list[tuple[float, str]]]:
    """Autograde the solution of ``name`` once: wall seconds, busy core-seconds of the machine, seconds per
    notebook and kind, every cell. ``keep_checker=False`` starts a checker kernel per notebook."""
    with tempfile.TemporaryDirectory(prefix="cnn-course-breakdown-") as scratch:
        course = new_course(Path(scratch), [name], 1)
        register_assignment(course, name)
        began, busy = time.perf_counter(), busy_core_seconds()
        run = run_nbgrader(course, "autograde", name, "--student=student0", "--force",
                           f"--CheckedExecute.keep_checker={keep_checker}")
        wall, busy = time.perf_counter() - began, busy_core_seconds() - busy
        if run.returncode != 0:
            raise RuntimeError(f"nbgrader autograde {name} failed:\n{run.stdout[-2000:]}")
        per_notebook, cells = {}, []
        for path in sorted((course / "autograded" / "student0" / name).glob("*.ipynb")):
            per_notebook[path.stem], notebook_cells = breakdown(path)
            cells += notebook_cells
        return wall, busy, per_notebook, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="gradings of each assignment (default 2)")
    parser.add_argument("--checker-per-notebook", action="store_true",
                        help="start a checker kernel per notebook, as before it was kept for the whole submission")
    args = parser.parse_args()
    names = [name for name in assignments(ROOT) if not missing_datasets(ROOT, name)]
    results: dict = {"repeats (medians over them)": args.repeats}
    results.update(kernel_startup_seconds())
    for name in names:
        runs = [grade_once(name, keep_checker=not args.checker_per_notebook) for _ in range(args.repeats)]
        walls = [wall for wall, _, _, _ in runs]
        median_run = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        wall, _, per_notebook, cells = median_run
        kinds: dict[str, float] = defaultdict(float)
        for notebook_kinds in per_notebook.values():
            for kind, seconds in notebook_kinds.items():
                kinds[kind] += seconds
        kinds[STARTUP] = wall - sum(kinds.values())
        results[name] = {
            "seconds per submission (median)": statistics.median(walls),
            "busy core-seconds per submission (median)": statistics.median(busy for _, busy, _, _ in runs),
            **{f"{kind} (s)": seconds for kind, seconds in sorted(kinds.items(), key=lambda item: -item[1])},
            **{f"{notebook}: cells (s)": sum(notebook_kinds.values())
               for notebook, notebook_kinds in per_notebook.items()},
            **{f"slowest cell {rank}": f"{text} ({seconds:.1f} s)"
               for rank, (seconds, text) in enumerate(sorted(cells, reverse=True)[:3], start=1)},
        }
        print(name, results[name], flush=True)
    print(write_result("grading_breakdown", results, description=__doc__.split("\n\n")[0],
                       command=f"make bench BENCHES=grading_breakdown (bench/grading_breakdown.py --repeats "
                               f"{args.repeats}{' --checker-per-notebook' if args.checker_per_notebook else ''})"
                       ).read_text())


if __name__ == "__main__":
    main()
