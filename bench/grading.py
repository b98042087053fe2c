"""Grading throughput: seconds per submission in grading mode, the share of kernel start-up and the
TensorFlow import, and the speedup of two workers over one, on the same submissions.

    python bench/grading.py [--students 2]

Each available assignment is graded with its instructor solution submitted by ``--students`` students,
first with one job, then, in a fresh course folder, with two. Writes bench/results/grading.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

from cnn_grader.course import RELEASE_IGNORE, assignments, missing_datasets
from cnn_grader.cluster import grade


def kernel_startup_seconds(repeats: int = 3) -> dict:
    """Median seconds to start a Python kernel, and to import TensorFlow and Keras in it."""
    from jupyter_client.manager import start_new_kernel

    starts, imports = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        manager, client = start_new_kernel(kernel_name="python3")
        started = time.perf_counter()
        client.execute_interactive("import tensorflow, keras, cnn_course.checks", timeout=120)
        imported = time.perf_counter()
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        starts.append(started - began)
        imports.append(imported - started)
    return {"kernel start (s)": sorted(starts)[len(starts) // 2],
            "TensorFlow + Keras import (s)": sorted(imports)[len(imports) // 2]}


def grade_course(names: list[str], students: int, jobs: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory(prefix="cnn-course-bench-") as scratch:
        course = Path(scratch)
        shutil.copy(ROOT / "nbgrader_config.py", course)
        for name in names:
            shutil.copytree(ROOT / "source" / name, course / "source" / name, ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
            for index in range(students):
                shutil.copytree(ROOT / "source" / name, course / "submitted" / f"student{index}" / name,
                                ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
        began = time.perf_counter()
        results = grade(course, jobs=jobs, log=lambda line: None)
        return time.perf_counter() - began, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=2)
    args = parser.parse_args()
    names = [name for name in assignments(ROOT) if not missing_datasets(ROOT, name)]
    measurements = {"assignments": ", ".join(names), "students per assignment": args.students}
    measurements.update(kernel_startup_seconds())
    walls = {}
    for jobs in (1, 2):
        wall, results = grade_course(names, args.students, jobs)
        walls[jobs] = wall
        for name in names:
            seconds = sorted(r.seconds for r in results if r.assignment == name)
            measurements[f"{name}: seconds per submission, jobs={jobs} (median)"] = seconds[len(seconds) // 2]
        measurements[f"wall seconds, jobs={jobs} (autograde, feedback, export)"] = wall
        print(f"jobs={jobs}: {wall:.1f} s", flush=True)
    measurements["speedup of jobs=2 over jobs=1"] = walls[1] / walls[2]
    print(write_result("grading", measurements, description=__doc__.split("\n\n")[0], command="make bench (bench/grading.py)").read_text())


if __name__ == "__main__":
    sys.exit(main())
