"""Grading on a real Dask cluster: a scheduler and workers started as separate processes on 127.0.0.1, each
worker with its own local directory and, where bubblewrap works, no view of the course folder. Real
submissions of cnn_mnist must grade there as on a LocalCluster, cell by cell; so must the small assignment
of test_grading when a worker or the coordinator is killed in the middle of a run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from cnn_grader.cluster import STATE_FILE, CourseKit, _read_folder, _write_folder, connect, grade, grade_on_worker
from cnn_grader.course import RELEASE_IGNORE, CourseError, release
from cnn_grader.grading import GradingLimits, gradebook_rows
from cnn_grader.sandbox import bubblewrap_works
from conftest import ROOT, build_course
from test_grading import make_toy_course, submit, toy_source, with_answer

pytestmark = pytest.mark.notebooks

ASSIGNMENT = "cnn_mnist"
STUDENTS = ("alice", "bob", "carol")  # alice and bob hand in the solution, carol the blank release
LIMITS = GradingLimits(submission_seconds=600, cell_seconds=120, notebook_seconds=300, memory_mb=6144)
WAIT = 300  # seconds any wait of this module may take


def _until(condition, what: str, timeout: float = WAIT, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")


def new_course(root: Path, assignment: str = ASSIGNMENT) -> Path:
    """A course with ``assignment`` (cnn_mnist, or ``toy`` of test_grading), the solution handed in by alice and
    bob and the blank release by carol."""
    if assignment == "toy":
        source = make_toy_course(root) / "source" / "toy"
        release(root, ["toy"])
    else:
        root = build_course(root, assignment).root
        source = ROOT / "source" / assignment
    for student in STUDENTS:
        folder = root / "release" / assignment if student == "carol" else source
        shutil.copytree(folder, root / "submitted" / student / assignment, ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
    return root


def outcome(root: Path, assignment: str = ASSIGNMENT) -> dict:
    """What grading produced, in a form two runs can be compared by:

    * the gradebook, cell by cell (scores, needs-manual-grade marks, flags, automatic comments);
    * ``autograded/``: the same files; notebooks with the same cells and, per cell, the same rich outputs
      and errors, by kind (their content, such as training times, differs from run to run); stream outputs
      are left out, because how stdout and stderr interleave, and so how many stream outputs a cell gets,
      depends on timing; other files byte for byte;
    * ``feedback/``: the same files; the scores each HTML page shows, in order; text files byte for byte.
    """
    table = {student: gradebook_rows(root / "gradebook.db", assignment, student)["notebooks"] for student in STUDENTS}
    autograded, feedback = {}, {}
    for student in STUDENTS:
        for relative, content in _read_folder(root / "autograded" / student / assignment).items():
            if relative.endswith(".ipynb"):
                cells = nbformat.reads(content.decode(), as_version=4).cells
                content = [(cell.cell_type, cell.source, cell.metadata.get("nbgrader", {}).get("grade_id"),
                            [(o.output_type, o.get("ename")) for o in cell.get("outputs", [])
                             if o.output_type != "stream"]) for cell in cells]
            autograded[f"{student}/{relative}"] = content
        for relative, content in _read_folder(root / "feedback" / student / assignment).items():
            if relative.endswith(".html"):
                content = re.findall(r"Score: ([\d.]+) / ([\d.]+)", content.decode())
            feedback[f"{student}/{relative}"] = content
    return {"gradebook": table, "autograded": autograded, "feedback": feedback}


def clean_run(root: Path, assignment: str) -> dict:
    """The clean run: a LocalCluster of two workers started by the grade command itself."""
    root = new_course(root, assignment)
    results = grade(root, jobs=2, limits=LIMITS, log=lambda line: None)
    assert sorted(r.student for r in results if r.graded) == sorted(STUDENTS)
    return outcome(root, assignment)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return clean_run(tmp_path_factory.mktemp("local") / "course", ASSIGNMENT)


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory):
    return clean_run(tmp_path_factory.mktemp("local-toy") / "course", "toy")


class Cluster:
    """``python -m dask scheduler`` and ``python -m dask worker --nworkers 2 --nthreads 1`` on 127.0.0.1.

    The workers run in bubblewrap with ``hidden`` replaced by an empty folder, where bubblewrap works, so
    they cannot read any course folder under it; each has its own local directory.
    """

    def __init__(self, base: Path, hidden: Path):
        self.base, self.hidden = base, hidden
        self.scheduler_file = base / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        environment = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
        self._start([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(self.scheduler_file)],
                    environment, "scheduler")
        _until(lambda: self.scheduler_file.exists() and self.scheduler_file.stat().st_size, "the scheduler file")
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        mask = (["bwrap", "--dev-bind", "/", "/", "--tmpfs", str(hidden), "--die-with-parent", "--"]
                if bubblewrap_works() else [])
        local = base / "workers"  # each worker makes its own folder in it
        local.mkdir()
        self._start([*mask, sys.executable, "-m", "dask", "worker", self.address, "--nworkers", "2",
                     "--nthreads", "1", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                     "--local-directory", str(local)],
                    environment, "workers")
        from distributed import Client

        with Client(self.address, timeout=WAIT) as client:
            client.wait_for_workers(2, timeout=WAIT)

    def _start(self, command: list[str], environment: dict, name: str) -> None:
        log = open(self.base / f"{name}.log", "w")
        self.processes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                               cwd=self.base, start_new_session=True))

    def grading_worker(self, student: str | None = None) -> psutil.Process | None:
        """A worker process (the child of a nanny) that is running ``nbgrader autograde`` now (for ``student``)."""
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                command = process.info["cmdline"] or []
                if "autograde" in command and any("nbgrader" in part for part in command) and (
                        student is None or f"--student={student}" in command):
                    for parent in process.parents():
                        if "multiprocessing" in " ".join(parent.cmdline()) and any(
                                parent.pid in {p.pid for p in psutil.Process(top.pid).children(recursive=True)}
                                for top in self.processes):
                            return parent
        return None

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    courses = tmp_path_factory.mktemp("courses")
    running = Cluster(tmp_path_factory.mktemp("cluster"), hidden=courses)
    try:
        yield running, courses
    finally:
        running.stop()


def test_what_travels_cannot_leave_its_folder(tmp_path):
    for path in ("../outside.txt", "/etc/passwd", "a/../../outside.txt"):
        with pytest.raises(ValueError, match="not inside the folder"):
            _write_folder(tmp_path / "target", {path: b"x"})
    assert not (tmp_path / "outside.txt").exists()


def test_a_worker_with_another_grader_version_refuses_the_task():
    kit = CourseKit({"nbgrader_config.py": b""}, grader_version="0.0.0-other")
    with pytest.raises(RuntimeError, match="the coordinator 0.0.0-other"):
        grade_on_worker(kit, "alice", ASSIGNMENT, {}, LIMITS, {})


def test_an_unreachable_scheduler_is_an_instructors_error():
    with pytest.raises(CourseError, match="cannot reach the Dask scheduler tcp://127.0.0.1:9"):
        with connect(scheduler="tcp://127.0.0.1:9", timeout=3):
            pass


def test_a_scheduler_without_workers_is_an_instructors_error(tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _until(lambda: scheduler_file.exists() and scheduler_file.stat().st_size, "the scheduler file", timeout=60)
        with pytest.raises(CourseError, match="has no worker after 2 s: start workers with `dask worker --scheduler-file"):
            with connect(scheduler_file=scheduler_file, worker_timeout=2):
                pass
    finally:
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait(timeout=20)


def _listening(processes: list[psutil.Process]) -> set[str]:
    """The addresses on which ``processes`` and their descendants accept TCP connections."""
    found = set()
    for process in [*processes, *(child for top in processes for child in top.children(recursive=True))]:
        with contextlib.suppress(psutil.Error):
            found |= {connection.laddr.ip for connection in process.net_connections("tcp")
                      if connection.status == psutil.CONN_LISTEN}
    return found


def test_the_local_cluster_listens_on_127_0_0_1_only():
    with connect(workers=1):
        assert _listening([psutil.Process()]) == {"127.0.0.1"}


def test_the_cluster_listens_on_127_0_0_1_only(cluster):
    running, _ = cluster
    assert _listening([psutil.Process(process.pid) for process in running.processes]) == {"127.0.0.1"}


def test_workers_cannot_see_the_course_folder(cluster):
    if not bubblewrap_works():
        pytest.skip("bubblewrap cannot run here, so the workers are not kept from the course folder")
    running, courses = cluster
    from distributed import Client

    marker = courses / "course-marker.txt"
    marker.write_text("only the coordinator reads this")
    with Client(running.address, timeout=WAIT) as client:
        seen = client.run(os.path.exists, str(marker))
    assert len(seen) == 2 and not any(seen.values())


def test_grading_on_an_existing_scheduler_equals_the_local_cluster(cluster, reference):
    running, courses = cluster
    root = new_course(courses / "remote")
    lines = []
    results = grade(root, scheduler=running.address, limits=LIMITS, log=lines.append)
    assert {r.worker for r in results} <= set(_workers(running.address)) and all(r.graded for r in results)
    assert len({r.worker for r in results}) == 2, "both workers should have graded"
    assert outcome(root) == reference
    assert "on 2 Dask worker(s)" in lines[-1] and "s per submission" in lines[-1]


def _workers(address: str) -> list[str]:
    from distributed import Client

    with Client(address, timeout=WAIT) as client:
        return list(client.scheduler_info()["workers"])


def test_a_worker_killed_mid_task_loses_nothing(cluster, toy_reference):
    running, courses = cluster
    root = new_course(courses / "killed-worker", "toy")
    killed = []

    def kill_a_grading_worker():
        victim = _until(running.grading_worker, "a worker running nbgrader autograde")
        victim.kill()
        killed.append(victim.pid)

    killer = threading.Thread(target=kill_a_grading_worker, daemon=True)
    killer.start()
    results = grade(root, scheduler=running.address, limits=LIMITS, log=lambda line: None)
    killer.join(timeout=WAIT)
    assert killed, "no worker was killed"
    assert sorted(r.student for r in results) == sorted(STUDENTS)
    assert all(r.graded and not r.failed for r in results)
    state = json.loads((root / "autograded" / STATE_FILE).read_text())
    assert sorted(state) == [f"toy/{student}" for student in sorted(STUDENTS)]
    assert outcome(root, "toy") == toy_reference
    _until(lambda: len(_workers(running.address)) == 2, "the nanny to restart the killed worker")


def test_a_killed_coordinator_loses_nothing_and_the_next_run_grades_only_what_is_missing(cluster, toy_reference):
    running, courses = cluster
    root = new_course(courses / "killed-coordinator", "toy")
    state_file = root / "autograded" / STATE_FILE
    coordinator = subprocess.Popen([sys.executable, "-m", "cnn_grader", "--root", str(root), "grade",
                                    "--scheduler", running.address, "--cell-seconds", str(LIMITS.cell_seconds),
                                    "--notebook-seconds", str(LIMITS.notebook_seconds),
                                    "--submission-seconds", str(LIMITS.submission_seconds)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _until(lambda: state_file.exists() and json.loads(state_file.read_text()), "the first stored result")
    finally:
        os.killpg(coordinator.pid, signal.SIGKILL)
        coordinator.wait(timeout=20)
    done = json.loads(state_file.read_text())
    assert 1 <= len(done) < len(STUDENTS), f"the coordinator was killed too late to test anything: {done}"
    lines = []
    results = grade(root, scheduler=running.address, limits=LIMITS, log=lines.append)
    assert f"{len(STUDENTS) - len(done)} new or changed to grade" in lines[0]
    assert sorted(r.student for r in results if r.skipped_unchanged) == sorted(key.split("/")[1] for key in done)
    assert outcome(root, "toy") == toy_reference


def test_a_submission_that_kills_two_workers_fails_with_its_reason_and_the_others_are_graded(cluster):
    running, courses = cluster
    root = make_toy_course(courses / "kills-workers")
    source = toy_source()
    submit(root, "bystander", source)
    submit(root, "victim", {**source, "toy": with_answer(source["toy"], "import time\ntime.sleep(60)\nanswer = 42")})
    deaths = []

    def kill_the_victims_worker_twice():
        for _ in range(2):
            victim = _until(lambda: running.grading_worker("victim"), "a worker grading the victim")
            victim.kill()
            victim.wait(timeout=30)
            deaths.append(victim.pid)

    killer = threading.Thread(target=kill_the_victims_worker_twice, daemon=True)
    killer.start()
    lines = []
    results = {r.student: r for r in grade(root, scheduler=running.address, limits=LIMITS, log=lines.append)}
    killer.join(timeout=WAIT)
    assert len(deaths) == 2
    assert results["victim"].failed and "KilledWorker" in " ".join(results["victim"].problems)
    assert not results["bystander"].failed and results["bystander"].graded
    table = {student: gradebook_rows(root / "gradebook.db", "toy", student)["notebooks"]
             for student in ("bystander", "victim")}
    assert sum(score for notebook in table["bystander"].values() for score, _ in notebook["grades"].values()) == 3
    assert all(score == 0 for notebook in table["victim"].values() for score, _ in notebook["grades"].values())
    assert "KilledWorker" in (root / "feedback" / "victim" / "toy" / "grading-problems.txt").read_text()
    assert "1 failed" in lines[-1]
    state = json.loads((root / "autograded" / STATE_FILE).read_text())
    assert "toy/victim" not in state, "a failed submission is graded again by the next run"
    _until(lambda: len(_workers(running.address)) == 2, "the nanny to restart the killed workers")
