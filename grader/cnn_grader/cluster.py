"""Grading a course on a Dask cluster: one task per submission, one writer of the gradebook.

The same code path runs on every scale. :func:`grade` connects to a Dask scheduler (an existing one
given by address or scheduler file, or a :class:`distributed.LocalCluster` of processes on 127.0.0.1
that it starts), and submits one task per new or changed submission:

1. The coordinator records the assignments in the course's gradebook and builds a :class:`CourseKit`:
   ``nbgrader_config.py``, ``source/<assignment>/`` without saved models, and a gradebook snapshot
   that holds the assignments and no student. It is scattered once to every worker (``broadcast=True``).
2. A task (:func:`grade_on_worker`) carries the submission's files as bytes. It unpacks the kit and
   the files into a fresh folder in its worker's local directory, runs ``nbgrader autograde`` and
   ``nbgrader generate_feedback`` there (:func:`cnn_grader.grading.autograde_submission`, with the
   kernel limits, sandbox and checker), and returns ``autograded/`` and ``feedback/`` as bytes and the
   grades as plain data. Workers share no file system with the coordinator.
3. The coordinator is the only writer of ``gradebook.db``. It stores each result as it arrives
   (``as_completed``) and records it in ``autograded/.grading-state.json``, so a crash of the
   coordinator loses nothing already graded and the next run grades only what is missing.

A worker that dies mid-task loses nothing: the scheduler runs the task again on another worker. A
submission that kills two workers (the scheduler's ``allowed-failures`` is 1 for the local cluster;
set ``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1`` for your own scheduler) is marked as failed,
scores 0 with the reason in its feedback, and everything else is graded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import fnmatch
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from tqdm import tqdm

from . import __version__
from .course import (RELEASE_IGNORE, CourseError, assignments as course_assignments, collect_zip, register_assignment,
                     run_nbgrader)
from .grading import (NO_ISOLATION_NOTE, GradingLimits, SubmissionResult, autograde_submission, gradebook_rows,
                      store_gradebook_rows, submission_digest, zero_ungraded)

__all__ = ["CourseKit", "STATE_FILE", "WORKER_MEMORY_LIMIT", "connect", "course_kit", "default_workers", "grade",
           "grade_on_worker", "submission_files"]

#: Where the coordinator records what it has graded: ``{"<assignment>/<student>": {"digest", "flags"}}``.
STATE_FILE = ".grading-state.json"

#: Memory limit of a local worker process (Dask's nanny restarts a worker above it). It measures the
#: worker only, not the nbgrader process and the two kernels it starts, which have their own
#: address-space limit (``GradingLimits.memory_mb`` each).
WORKER_MEMORY_LIMIT = "2GiB"

#: Bytes of memory planned per local worker: the worker, nbgrader, and a student and a checker kernel
#: in grading mode (2–3 GiB measured for the course's notebooks).
PLANNED_BYTES_PER_WORKER = 4 * 2**30

#: Variables that size a kernel's thread pools: TensorFlow's intra- and inter-op pools and OpenMP (oneDNN).
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


# --------------------------------------------------------------------------------------------
# What travels: the course kit, a submission, a result
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CourseKit:
    """Everything a worker needs of the course, sent once to every worker.

    Attributes:
        files: relative POSIX path → bytes: ``nbgrader_config.py``, ``source/<assignment>/...`` and
            ``gradebook.db`` (the assignments' grade cells, no student).
        grader_version: the coordinator's ``cnn_grader.__version__``; a worker with another version refuses.
    """

    files: dict[str, bytes]
    grader_version: str

    @property
    def size(self) -> int:
        """Bytes of file content in the kit."""
        return sum(len(content) for content in self.files.values())


def _safe_path(base: Path, relative: str) -> Path:
    """``base / relative`` for a relative POSIX path that stays inside ``base``.

    Raises:
        ValueError: the path is absolute or climbs out with ``..``.
    """
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"refusing path {relative!r}: not inside the folder")
    return base.joinpath(*parts)


def _read_folder(folder: Path, ignore: list[str] = ()) -> dict[str, bytes]:
    """Regular files under ``folder`` (links left out) as ``{relative POSIX path: bytes}``."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in ignore):
            continue
        if path.is_file() and not path.is_symlink():  # rglob does not descend into linked folders
            found[relative.as_posix()] = path.read_bytes()
    return found


def _write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Replace ``folder`` with exactly ``files`` (relative POSIX path → bytes).

    Raises:
        ValueError: a path leaves the folder.
    """
    targets = [(_safe_path(folder, relative), content) for relative, content in files.items()]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for target, content in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def submission_files(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """A submission's files as bytes, and the problems found: symbolic links are left out.

    A link could point the grader at another student's files or at the course's; its target is never read.

    Returns:
        ``({relative POSIX path: bytes}, [problem, ...])``.
    """
    problems = [f"{path.relative_to(folder)} is a symbolic link; it was not graded, hand in files"
                for path in sorted(folder.rglob("*")) if path.is_symlink()]
    return _read_folder(folder, [".ipynb_checkpoints"]), problems


def course_kit(root: Path, assignments: list[str]) -> CourseKit:
    """Build the kit of ``assignments``: their sources without saved models, the nbgrader configuration, and a
    fresh gradebook holding the assignments' grade cells and no student.

    Raises:
        CourseError: nbgrader cannot record an assignment.
    """
    files = {"nbgrader_config.py": (root / "nbgrader_config.py").read_bytes()}
    for assignment in assignments:
        for relative, content in _read_folder(root / "source" / assignment, RELEASE_IGNORE).items():
            files[f"source/{assignment}/{relative}"] = content
    with tempfile.TemporaryDirectory(prefix="cnn-grader-kit-") as scratch:
        snapshot = Path(scratch) / "gradebook.db"
        for assignment in assignments:
            register_assignment(root, assignment, db=snapshot)
        files["gradebook.db"] = snapshot.read_bytes()
    return CourseKit(files, __version__)


# --------------------------------------------------------------------------------------------
# The worker's side
# --------------------------------------------------------------------------------------------

def _worker_folder() -> tuple[str, str]:
    """The Dask worker running this task: ``(address, local directory)``; outside a worker, ``("", TMPDIR)``."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker.address, worker.local_directory
    except ValueError:
        return "", tempfile.gettempdir()


def _host(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


def grade_on_worker(kit: CourseKit, student: str, assignment: str, files: dict[str, bytes], limits: GradingLimits,
                    workers_per_host: dict[str, int]) -> dict:
    """The Dask task: autograde one submission in a fresh course folder on this worker, and return everything
    the coordinator stores.

    Args:
        kit: the course kit (:func:`course_kit`).
        student, assignment: whose submission.
        files: the submission's files, relative POSIX path → bytes (:func:`submission_files`).
        limits: the kernels' time and memory limits.
        workers_per_host: how many workers share each host; each kernel gets ``cores // workers`` threads.

    Returns:
        ``{"result": SubmissionResult, "rows": gradebook_rows(...), "autograded": {path: bytes},
        "feedback": {path: bytes}}``.

    Raises:
        RuntimeError: this worker's grader package is not the coordinator's version.
        ValueError: a path in ``kit`` or ``files`` leaves its folder.
    """
    if kit.grader_version != __version__:
        raise RuntimeError(f"this worker has cnn-grader {__version__}, the coordinator {kit.grader_version}: "
                           "install the same grader package on every worker")
    address, local_directory = _worker_folder()
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // max(1, workers_per_host.get(_host(address), 1)))
    environment = {name: str(threads) for name in THREAD_VARIABLES}
    result = SubmissionResult(student, assignment, worker=address)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"grade-{assignment}-", dir=local_directory) as scratch:
        root = Path(scratch)
        for relative, content in kit.files.items():
            target = _safe_path(root, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        _write_folder(_safe_path(root / "submitted", student) / assignment, files)
        database = root / "gradebook.db"
        autograde_submission(root, result, database, limits, environment=environment)
        run = run_nbgrader(root, "generate_feedback", assignment, f"--student={student}", "--force",
                           environment=environment)
        if run.returncode != 0:
            result.problems.append("feedback could not be generated: "
                                   + (run.stdout.strip().splitlines() or ["no log"])[-1][:300])
        result.seconds = time.monotonic() - started  # autograde and feedback
        return {"result": result, "rows": gradebook_rows(database, assignment, student),
                "autograded": _read_folder(root / "autograded" / student / assignment),
                "feedback": _read_folder(root / "feedback" / student / assignment)}


# --------------------------------------------------------------------------------------------
# The coordinator's side
# --------------------------------------------------------------------------------------------

def default_workers() -> int:
    """Local workers for this machine: one per core, fewer if memory allows fewer than
    :data:`PLANNED_BYTES_PER_WORKER` each; at least 1."""
    import psutil

    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, psutil.virtual_memory().total // PLANNED_BYTES_PER_WORKER))


@contextlib.contextmanager
def connect(*, scheduler=None, scheduler_file: str | Path | None = None,
            workers: int | None = None, timeout: float = 30, worker_timeout: float = 900) -> Iterator:
    """A Dask client: of the scheduler at ``scheduler`` or in ``scheduler_file``, else of a new local cluster.

    The local cluster runs ``workers`` worker processes (:func:`default_workers` if None) of one thread
    each; it and its HTTP endpoints listen on 127.0.0.1 only, on free ports. It is closed on exit.

    Args:
        scheduler: a scheduler address (``tcp://host:8786``), or a Dask cluster object (``SLURMCluster``,
            the Kubernetes operator's ``KubeCluster``).
        scheduler_file: a scheduler's JSON file (``dask scheduler --scheduler-file``).
        workers: processes of the local cluster.
        timeout: seconds to wait for the scheduler.
        worker_timeout: seconds to wait for a scheduler's first worker (a batch system may queue the workers).

    Raises:
        CourseError: the scheduler cannot be reached, or both a scheduler and a scheduler file are given.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler and scheduler_file:
        raise CourseError("give a scheduler address or a scheduler file, not both")
    if scheduler or scheduler_file:
        try:
            client = Client(scheduler, scheduler_file=str(scheduler_file) if scheduler_file else None,
                            timeout=timeout)
        except (OSError, TimeoutError, ValueError) as error:
            raise CourseError(f"cannot reach the Dask scheduler {scheduler or scheduler_file}: {error}") from error
        with client:
            try:
                client.wait_for_workers(1, timeout=worker_timeout)
            except TimeoutError as error:
                target = scheduler if isinstance(scheduler, str) else f"--scheduler-file {scheduler_file}"
                raise CourseError(f"the Dask scheduler {scheduler or scheduler_file} has no worker after "
                                  f"{worker_timeout:g} s: start workers with `dask worker {target}`") from error
            yield client
        return
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.worker.daemon": False}):
        with LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address="127.0.0.1:0", memory_limit=WORKER_MEMORY_LIMIT,
                          silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            yield client


def _load_state(root: Path) -> dict:
    path = root / "autograded" / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_state(root: Path, state: dict) -> None:
    path = root / "autograded" / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=1, sort_keys=True))
    temporary.replace(path)


def _submissions(root: Path, assignments: list[str]) -> list[tuple[str, str, Path]]:
    base = root / "submitted"
    if not base.is_dir():
        return []
    return [(student.name, assignment, student / assignment)
            for student in sorted(base.iterdir()) if student.is_dir()
            for assignment in assignments if (student / assignment).is_dir()]


def _store(root: Path, outcome: dict) -> SubmissionResult:
    """Write one task's output into the course folder: ``autograded/``, ``feedback/`` and the gradebook."""
    result: SubmissionResult = outcome["result"]
    _write_folder(root / "autograded" / result.student / result.assignment, outcome["autograded"])
    _write_folder(root / "feedback" / result.student / result.assignment, outcome["feedback"])
    if store_gradebook_rows(root / "gradebook.db", result.assignment, result.student, outcome["rows"]):
        # A manual score from before: the worker's feedback lacks it, so it is made again from the gradebook.
        run_nbgrader(root, "generate_feedback", result.assignment, f"--student={result.student}", "--force")
    return result


def grade(root: Path, *, assignments: list[str] | None = None, jobs: int | None = None,
          scheduler=None, scheduler_file: str | Path | None = None, zip_files: list[Path] = (),
          zip_assignment: str | None = None, limits: GradingLimits = GradingLimits(), export: Path | None = None,
          log: Callable[[str], None] = tqdm.write) -> list[SubmissionResult]:
    """Autograde every new or changed submission in ``root/submitted`` on a Dask cluster, then write grades.csv.

    Args:
        root: the course folder (``nbgrader_config.py``, ``source/``, ``submitted/``).
        assignments: assignments to grade; default every one in ``source/``.
        jobs: worker processes of the local cluster (default :func:`default_workers`); ignored with a scheduler.
        scheduler: a running Dask scheduler to grade on: its address (``tcp://host:8786``), or a Dask cluster
            object such as ``dask_jobqueue.SLURMCluster`` (see ``docs/grading-at-scale.md``).
        scheduler_file: a running scheduler's file (``dask scheduler --scheduler-file``).
        zip_files: LMS downloads to collect first (with ``zip_assignment``).
        zip_assignment: the assignment the archives belong to.
        limits: time and memory limits of the grading kernels.
        export: where to write the grades CSV (``nbgrader export``); default ``root/grades.csv``.
        log: where progress lines go; a progress bar goes to stderr when it is a terminal.

    Returns:
        One :class:`SubmissionResult` per submission found (graded, unchanged or failed).

    Raises:
        CourseError: no ``nbgrader_config.py``, an unknown assignment, an unreachable scheduler, or a
            failing nbgrader step that is the instructor's (generate_assignment, zip_collect).
    """
    root = Path(root).resolve()
    if not (root / "nbgrader_config.py").is_file():
        raise CourseError(f"{root} has no nbgrader_config.py: run the grade command from the course root")
    available = course_assignments(root)
    assignments = list(assignments or available)
    unknown = [a for a in assignments if a not in available]
    if unknown:
        raise CourseError(f"no assignment {', '.join(unknown)} in {root / 'source'}; found {', '.join(available)}")
    for archive in zip_files:
        if not zip_assignment:
            raise CourseError("say which assignment the archive holds (--assignment)")
        collect_zip(root, zip_assignment, Path(archive))

    state = _load_state(root)
    results, todo = [], []
    for student, assignment, folder in _submissions(root, assignments):
        result = SubmissionResult(student, assignment)
        digest = submission_digest(folder)
        before = state.get(f"{assignment}/{student}")
        before = before if isinstance(before, dict) else {"digest": before}
        if before.get("digest") == digest and (root / "autograded" / student / assignment).is_dir():
            result.skipped_unchanged = True
            result.flags = list(before.get("flags", []))
        else:
            todo.append((result, digest, folder))
        results.append(result)
    log(f"{len(results)} submission(s); {len(todo)} new or changed to grade")
    timing = None
    if todo:
        timing = _grade_on_cluster(root, todo, state, jobs=jobs, scheduler=scheduler, scheduler_file=scheduler_file,
                                   limits=limits, log=log)
    _finish(root, results, export=export, log=log)
    if timing:
        log(timing)
    return results


def _grade_on_cluster(root: Path, todo: list, state: dict, *, jobs, scheduler, scheduler_file, limits, log) -> str:
    """Grade ``todo`` (``[(result, digest, folder)]``) on the cluster; store each result as it arrives.

    Returns the line that ends the summary: seconds per submission and the workers used.
    """
    names = sorted({result.assignment for result, _, _ in todo})
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        kit = background.submit(course_kit, root, names)  # a fresh gradebook takes seconds: overlap it
        for assignment in names:
            register_assignment(root, assignment)
        with connect(scheduler=scheduler, scheduler_file=scheduler_file,
                     workers=max(1, min(jobs or default_workers(), len(todo)))) as client:
            kit = kit.result()
            failures, workers = _run_tasks(client, root, todo, state, kit, limits, log, remote=bool(
                scheduler or scheduler_file), where=scheduler or scheduler_file)
    wall = time.monotonic() - began
    used = sorted({result.worker for result, _, _ in todo if result.worker})
    return (f"\nGraded {len(todo)} submission(s) in {wall:.0f} s, {wall / len(todo):.1f} s per submission, on "
            f"{workers} Dask worker(s) ({len(used)} used: {', '.join(used) or 'none'}); {failures} failed.")


def _run_tasks(client, root: Path, todo: list, state: dict, kit: CourseKit, limits: GradingLimits, log, *,
               remote: bool, where) -> tuple[int, int]:
    """Submit one task per submission and store each result as it arrives. Returns (failures, workers)."""
    from distributed import as_completed

    database = root / "gradebook.db"
    workers = client.scheduler_info()["workers"]
    per_host: dict[str, int] = {}
    for address in workers:
        per_host[_host(address)] = per_host.get(_host(address), 0) + 1
    log(f"grading on {len(workers)} Dask worker(s) on {len(per_host)} host(s) "
        f"({'scheduler ' + str(where) if remote else 'local cluster'})")
    shared = client.scatter(kit, broadcast=True)
    futures = {}
    for result, digest, folder in todo:
        files, problems = submission_files(folder)
        result.problems.extend(problems)
        future = client.submit(grade_on_worker, shared, result.student, result.assignment, files, limits,
                               per_host, key=f"autograde-{result.assignment}-{result.student}-{uuid.uuid4().hex}",
                               retries=1, pure=False)
        futures[future] = (result, digest)
    failures = 0
    with tqdm(total=len(futures), unit="submission", desc="autograding", disable=None) as bar:
        for future in as_completed(futures):
            result, digest = futures[future]
            started = time.monotonic()
            try:
                graded = _store(root, future.result())
                graded.store_seconds = time.monotonic() - started
            except Exception as error:  # a worker died twice on it (KilledWorker), or the grader failed
                failures += 1
                result.failed = result.graded = True
                result.problems.append(f"grading failed: {type(error).__name__}: {error}"[:500])
                zero_ungraded(database, result)
                log(f"  {result.assignment}/{result.student}: FAILED ({type(error).__name__}: {error})")
            else:
                graded.problems = [*result.problems, *graded.problems]
                result.__dict__.update(graded.__dict__)
                state[f"{result.assignment}/{result.student}"] = {"digest": digest, "flags": result.flags}
                _save_state(root, state)
                log(f"  {result.assignment}/{result.student}: {result.seconds:.1f} s on {result.worker}"
                    + (f"; problems: {'; '.join(result.problems)}" if result.problems else ""))
            bar.update(1)
            bar.set_postfix(failed=failures)
    return failures, len(workers)


def _finish(root: Path, results: list[SubmissionResult], *, export: Path | None, log) -> None:
    for result in (result for result in results if result.graded):
        report = root / "feedback" / result.student / result.assignment / "grading-problems.txt"
        notes = [*result.problems, *([] if result.isolated else [NO_ISOLATION_NOTE])]
        if notes:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text("Notes from grading this submission:\n" + "".join(f"- {note}\n" for note in notes))
        elif report.exists():
            report.unlink()
    target = export or root / "grades.csv"
    run = run_nbgrader(root, "export", f"--CsvExportPlugin.to={target}")
    if run.returncode != 0:
        log(f"warning: nbgrader export failed: {(run.stdout.strip().splitlines() or [''])[-1][:300]}")
    else:
        _add_flagged_column(target, results)
    _print_summary(root, results, target, log)
    if any(result.graded and not result.isolated for result in results):
        log(f"\nwarning: {NO_ISOLATION_NOTE} Install bubblewrap (apt-get install bubblewrap) to sandbox grading.")


def _add_flagged_column(path: Path, results: list[SubmissionResult]) -> None:
    """Add a ``flagged`` column to nbgrader's grades CSV: how many lines of each submission were flagged."""
    flagged = {(result.assignment, result.student): len(result.flags) for result in results}
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return
    fields = [name for name in rows[0] if name != "flagged"] + ["flagged"]
    for row in rows:
        row["flagged"] = flagged.get((row.get("assignment"), row.get("student_id")), 0)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _print_summary(root: Path, results: list[SubmissionResult], export: Path, log) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for result in results:
            try:
                submission = gradebook.find_submission(result.assignment, result.student)
                score, maximum = submission.score, submission.max_score
            except MissingEntry:
                score, maximum = float("nan"), float("nan")
            status = ("unchanged" if result.skipped_unchanged else "FAILED" if result.failed
                      else "problems" if result.problems else "graded")
            rows.append((result.student, result.assignment, score, maximum, len(result.flags), status))
    log("")
    log(f"{'student':<20} {'assignment':<14} {'score':>7} {'max':>6} {'flagged':>7}  status")
    for student, assignment, score, maximum, flagged, status in rows:
        log(f"{student:<20} {assignment:<14} {score:>7.2f} {maximum:>6.1f} {flagged:>7}  {status}")
    for result in results:
        for flag in result.flags:
            log(f"  flagged for a person, {result.student}: {flag}")
    log(f"\nGrades: {export}\nFeedback: {root / 'feedback'}/<student>/<assignment>/")
    for result in results:
        for path in sorted((root / "feedback" / result.student / result.assignment).glob("*")):
            log(f"  {path.relative_to(root)}")
