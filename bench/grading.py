"""Grading throughput on Dask: the same submissions graded by nbgrader alone, by one Dask worker and by two,
with the engine's overhead, the speedup, and an extrapolation to a course of 300 students.

    python bench/grading.py [--students 8]

Each available assignment is handed in as its instructor solution by ``--students`` students. The
baseline runs ``nbgrader autograde ASSIGNMENT --student S`` and ``nbgrader generate_feedback`` for one
submission after another in the course folder, with the course's grading kernels (checker and sandbox),
which is what each Dask task runs. Then ``cnn_grader.cluster.grade`` grades fresh copies on a local
cluster of one worker and of two. Writes bench/results/grading.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

from cnn_grader.cluster import grade
from cnn_grader.course import RELEASE_IGNORE, assignments, missing_datasets, register_assignment, run_nbgrader

#: The course the extrapolation is for: 300 students, each handing in every assignment, on 10 machines of 8 cores.
COURSE_STUDENTS, MACHINES, CORES_PER_MACHINE = 300, 10, 8


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
    return {"kernel start (s)": statistics.median(starts),
            "TensorFlow + Keras import (s)": statistics.median(imports)}


def new_course(folder: Path, names: list[str], students: int) -> Path:
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    for name in names:
        shutil.copytree(ROOT / "source" / name, folder / "source" / name, ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
        for index in range(students):
            shutil.copytree(ROOT / "source" / name, folder / "submitted" / f"student{index}" / name,
                            ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
    return folder


def nbgrader_alone(names: list[str], students: int) -> tuple[float, dict[str, list[float]]]:
    """Wall seconds of autograde + feedback for every submission, one after another, and seconds per submission."""
    per_submission: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="cnn-course-bench-") as scratch:
        course = new_course(Path(scratch), names, students)
        began = time.perf_counter()
        for name in names:
            register_assignment(course, name)
        for name in names:
            for index in range(students):
                started = time.perf_counter()
                for step in ("autograde", "generate_feedback"):
                    run = run_nbgrader(course, step, name, f"--student=student{index}", "--force")
                    if run.returncode != 0:
                        raise RuntimeError(f"nbgrader {step} {name} failed:\n{run.stdout[-2000:]}")
                per_submission[name].append(time.perf_counter() - started)
        return time.perf_counter() - began, per_submission


def on_dask(names: list[str], students: int, workers: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory(prefix="cnn-course-bench-") as scratch:
        course = new_course(Path(scratch), names, students)
        began = time.perf_counter()
        results = grade(course, jobs=workers, log=lambda line: None)
        return time.perf_counter() - began, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=8, help="submissions of each assignment (default 8)")
    args = parser.parse_args()
    names = [name for name in assignments(ROOT) if not missing_datasets(ROOT, name)]
    submissions = len(names) * args.students
    results = {"assignments": ", ".join(names), "submissions per assignment": args.students}
    results.update(kernel_startup_seconds())

    alone, per_submission = nbgrader_alone(names, args.students)
    print(f"nbgrader alone: {alone:.1f} s", flush=True)
    results["nbgrader alone: wall seconds (autograde + feedback, one after another)"] = alone
    for name in names:
        results[f"{name}: seconds per submission, nbgrader alone (median)"] = statistics.median(per_submission[name])

    walls = {}
    for workers in (1, 2):
        wall, graded = on_dask(names, args.students, workers)
        walls[workers] = wall
        print(f"Dask, {workers} worker(s): {wall:.1f} s", flush=True)
        results[f"Dask, {workers} worker(s): wall seconds (autograde, feedback, export)"] = wall
        for name in names:
            results[f"{name}: seconds per submission on a worker, {workers} worker(s) (median)"] = statistics.median(
                r.seconds for r in graded if r.assignment == name)
        results[f"Dask, {workers} worker(s): fixed seconds (kit, cluster start, export, summary)"] = (
            wall - sum(r.seconds for r in graded) / workers)
        results[f"Dask, {workers} worker(s): coordinator seconds to store one result (median)"] = statistics.median(
            r.store_seconds for r in graded)
    results["overhead of Dask with 1 worker over nbgrader alone (%)"] = 100 * (walls[1] / alone - 1)
    results["speedup of 2 workers over 1"] = walls[1] / walls[2]

    # Extrapolation: every worker of the course's cluster grades as fast as one of the two workers here
    # (one core each), plus the fixed part measured with two workers.
    per_core = (walls[2] - results["Dask, 2 worker(s): fixed seconds (kit, cluster start, export, summary)"]) \
        * 2 / submissions
    course_submissions = COURSE_STUDENTS * len(names)
    cores = MACHINES * CORES_PER_MACHINE
    store = results["Dask, 2 worker(s): coordinator seconds to store one result (median)"]
    # The coordinator stores results one at a time: it bounds the rate at which the cluster can finish them.
    grading = max(course_submissions * per_core / cores, course_submissions * store)
    fixed = results["Dask, 2 worker(s): fixed seconds (kit, cluster start, export, summary)"]
    results[f"extrapolated: {COURSE_STUDENTS} students × {len(names)} assignments on {MACHINES} machines of "
            f"{CORES_PER_MACHINE} cores"] = {
        "submissions": course_submissions,
        "core-seconds per submission (measured with 2 workers)": per_core,
        "grading (s)": grading,
        "coordinator storing results, if it were the bottleneck (s)": course_submissions * store,
        "fixed part, measured (s)": fixed,
        "total (min)": (grading + fixed) / 60,
        "the same on this machine (h)": (course_submissions * per_core / 2 + fixed) / 3600,
    }
    print(write_result("grading", results, description=__doc__.split("\n\n")[0],
                       command=f"make bench BENCHES=grading (bench/grading.py --students {args.students})").read_text())


if __name__ == "__main__":
    sys.exit(main())
