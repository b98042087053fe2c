"""Wall time of the test suite (`make test`) and of its notebook parts.

    python bench/test_suite.py                          # runs pytest here, as make test does
    python bench/test_suite.py --junit FILE --wall S    # reads a run made elsewhere, e.g. CI

A run is timed from outside, and pytest's own JUnit XML report (``--junitxml``) gives the seconds
of every test. They are summed in three parts:

* solution notebooks, nbval: every cell of every notebook in source/, run in smoke mode;
* notebook round trips: the tests marked ``notebooks`` (release → submit → autograde with real
  kernels and a real gradebook, nbgrader validate);
* everything else (unit tests of ``cnn_course``).

To measure a CI run, give it ``PYTEST_ADDOPTS=--junitxml=FILE`` and time ``make test``.
Writes bench/results/test_suite.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from common import ROOT, write_result

PARTS = ("solution notebooks (nbval, smoke mode)", "notebook round trips (marker: notebooks)", "other tests")


def _junit_id(nodeid: str) -> tuple[str, str]:
    """pytest's node id as the (classname, name) pair its JUnit report uses."""
    path, *rest = nodeid.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *rest[:-1]]), rest[-1] if rest else ""


def notebook_tests() -> set[tuple[str, str]]:
    """(classname, name) of the tests marked ``notebooks``, collected without running them."""
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "notebooks",
                                "-p", "no:cacheprovider", "tests"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {_junit_id(line.strip()) for line in collected.splitlines() if "::" in line}


def summarize(junit: Path, wall_seconds: float, marked: set[tuple[str, str]]) -> dict:
    """Seconds per part, outcome counts and the slowest tests from a JUnit XML report."""
    seconds, counts, slowest = Counter(), Counter(), []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        classname, name, spent = case.get("classname", ""), case.get("name", ""), float(case.get("time", 0))
        if ".ipynb" in classname:  # nbval's items are named after the notebook file
            part = PARTS[0]
        elif (classname, name) in marked:
            part = PARTS[1]
        else:
            part = PARTS[2]
        seconds[part] += spent
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        counts[outcome] += 1
        slowest.append((spent, f"{classname}::{name}"))
    result = {"wall seconds of the run": round(wall_seconds),
              "tests": ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))}
    for part in PARTS:
        result[f"{part}: seconds"] = round(seconds[part])
    result["notebook parts together: seconds"] = round(seconds[PARTS[0]] + seconds[PARTS[1]])
    for rank, (spent, test) in enumerate(sorted(slowest, reverse=True)[:5], start=1):
        result[f"slowest {rank}"] = f"{test} ({spent:.0f} s)"
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--junit", type=Path, help="a JUnit XML report of a finished run (default: run pytest now)")
    parser.add_argument("--wall", type=float, help="wall seconds of that run (with --junit)")
    args = parser.parse_args(argv)
    if bool(args.junit) != (args.wall is not None):
        parser.error("--junit and --wall go together")
    marked = notebook_tests()
    if args.junit:
        junit, wall = args.junit, args.wall
    else:
        junit = Path(tempfile.mkdtemp(prefix="test-suite-")) / "junit.xml"
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", "pytest", f"--junitxml={junit}"], cwd=ROOT,
                                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        wall = time.perf_counter() - started
        if completed.returncode not in (0, 1):
            sys.exit(f"pytest stopped with exit status {completed.returncode}; no timing written")
    print(write_result("test_suite", summarize(junit, wall, marked), description=__doc__.split("\n\n")[0], command="make bench-tests (bench/test_suite.py)"))


if __name__ == "__main__":
    main()
