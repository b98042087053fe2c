"""Autograding that is safe, incremental and parallel, on top of nbgrader's own commands.

nbgrader does the grading: ``zip_collect``, ``autograde``, ``generate_feedback`` and ``export``
run as nbgrader's CLI. This module adds what nbgrader lacks:

* **Limits on each grading kernel** (:class:`SafeExecute`, set in ``nbgrader_config.py``): a
  per-cell timeout, a wall-clock limit per notebook, an address-space limit on the kernel
  process, and, where bubblewrap works, a read-only file system outside the submission's folder.
  A kernel that dies (``os._exit``, a crash, ``exit()``) is restarted, the cells before the one
  that killed it are run again, and grading goes on: the student loses the points of what broke.
  Before each grade cell the course's check modules and Python's builtins are restored, so a
  submission cannot patch the tests.
* **One submission cannot stop the others**: each submission is graded in its own process with
  a wall-clock limit; a submission that fails (a malformed notebook, a hung kernel) is graded
  notebook by notebook, and what still fails scores 0 with the reason written to its feedback.
* **Incremental**: a submission is graded again only when its files changed.
* **Parallel** (``jobs`` > 1): students are graded in worker processes, each with its own copy of
  the SQLite gradebook; the copies are merged into the course's gradebook through nbgrader's API,
  so SQLite never sees two writers ("database is locked" cannot happen).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from sqlalchemy.exc import SAWarning
from traitlets import Bool, Integer

from . import sandbox

__all__ = [
    "SafeExecute",
    "GradingLimits",
    "SubmissionResult",
    "CourseError",
    "grade",
    "merge_gradebook",
    "submission_digest",
]

STATE_FILE = ".grading-state.json"

# nbgrader's gradebook properties (scores, notebooks of a submission) touch lazily loaded rows, which
# SQLAlchemy warns about while the values are right; only warnings raised inside nbgrader.api are hidden.
warnings.filterwarnings("ignore", category=SAWarning, module="nbgrader.api")


class CourseError(Exception):
    """An instructor's error: a missing configuration, source or assignment. The grade command exits 2."""


# --------------------------------------------------------------------------------------------
# The grading kernel
# --------------------------------------------------------------------------------------------

class _SandboxedKernelManager(AsyncKernelManager):
    """Starts the kernel through :func:`cnn_course.sandbox.kernel_command`; interrupts it by message."""

    sandbox_options: dict = {}

    async def _async_pre_start_kernel(self, **kw):
        command, kw = await super()._async_pre_start_kernel(**kw)
        options = self.sandbox_options
        command, extra_environment = sandbox.kernel_command(
            command, memory_bytes=options["memory_bytes"], writable=options["writable"],
            temporary=options["temporary"], filesystem_sandbox=options["filesystem_sandbox"])
        kw["env"] = {**(kw.get("env") or os.environ), **extra_environment}
        # Signals stop at bubblewrap; ipykernel also takes an interrupt as a control message.
        self.kernel_spec.interrupt_mode = "message"
        return command, kw


# Run silently in the kernel before the student's first cell: keep pristine references.
_GUARD_SETUP = """
def __cnn_course_guard():
    import builtins, importlib, sys
    pristine_builtins = dict(vars(builtins))
    reload, modules = importlib.reload, sys.modules
    def restore(namespace):
        for name, value in pristine_builtins.items():
            setattr(builtins, name, value)
        for name in ("cnn_course.models", "cnn_course.checks"):
            if name in modules:
                reload(modules[name])
        namespace["checks"] = modules.get("cnn_course.checks", namespace.get("checks"))
        namespace["models"] = modules.get("cnn_course.models", namespace.get("models"))
    return restore
__cnn_course_restore = __cnn_course_guard()
del __cnn_course_guard
"""

# Run silently before each grade cell.
_GUARD_RESTORE = "__cnn_course_restore(globals())"


def _error_output(name: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=name, evalue=message,
                        traceback=[f"\x1b[0;31m{name}\x1b[0m: {message}"])


class SafeExecute(Execute):
    """nbgrader's Execute preprocessor with limits, kernel restarts and protected grade cells.

    Configure it in ``nbgrader_config.py`` (``c.SafeExecute.memory_limit_mb = ...``) and put it
    in place of ``Execute`` in ``c.Autograde.autograde_preprocessors``. The per-cell timeout is
    nbgrader's ``Execute.timeout``.
    """

    memory_limit_mb = Integer(6144, help="Address-space limit of a grading kernel in MiB (0: none).").tag(config=True)
    notebook_time_limit = Integer(
        600, help="Wall-clock seconds for one notebook; cells after it are not run and score 0.").tag(config=True)
    filesystem_sandbox = Bool(
        True, help="Run the kernel in bubblewrap (read-only outside the submission) when bwrap works.").tag(config=True)
    max_kernel_restarts = Integer(3, help="Kernel deaths survived per notebook; after that cells are not run.").tag(
        config=True)
    max_output_characters = Integer(
        100_000, help="Characters of text kept per cell output; the rest is cut (nbgrader's LimitOutput counts "
                      "lines only).").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._deadline = time.monotonic() + self.notebook_time_limit
        self._restarts = 0
        self._temporary = tempfile.mkdtemp(prefix="cnn-course-kernel-")
        folder = str(Path((resources or {}).get("metadata", {}).get("path") or ".").resolve())
        self.kernel_manager_class = type("SandboxedKernelManager", (_SandboxedKernelManager,), {
            "sandbox_options": {"memory_bytes": self.memory_limit_mb * 2**20, "writable": [folder],
                                "temporary": self._temporary, "filesystem_sandbox": self.filesystem_sandbox}})
        try:
            return super().preprocess(nb, resources, km)
        finally:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def _run_silently(self, code: str) -> None:
        """Run code in the kernel without touching the notebook (no outputs, no history)."""
        self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False, allow_stdin=False))

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if time.monotonic() > self._deadline:
            cell.outputs = [_error_output(
                "TimeLimitExceeded",
                f"Not run: grading this notebook took longer than its limit of {self.notebook_time_limit} s.")]
            return cell, resources
        if self._restarts > self.max_kernel_restarts:
            cell.outputs = [_error_output("KernelDied", "Not run: the kernel died too often in this notebook.")]
            return cell, resources
        try:
            if index == self._first_code_cell():
                self._run_silently(_GUARD_SETUP)
            if cell.metadata.get("nbgrader", {}).get("grade"):
                self._run_silently(_GUARD_RESTORE)
            cell, resources = super().preprocess_cell(cell, resources, index)
            self._limit_output(cell)
            return cell, resources
        except DeadKernelError:
            cell.outputs.append(_error_output(
                "KernelDied",
                "The kernel died while running this cell: it called exit() or os._exit(), crashed, or "
                f"ran out of its memory limit of {self.memory_limit_mb:,} MiB. Grading went on in a fresh kernel, "
                "after running the cells above again."))
            self._restarts += 1
            self._restart_and_replay(index)
            return cell, resources

    def _limit_output(self, cell) -> None:
        limit = self.max_output_characters
        for output in cell.outputs:
            if output.get("output_type") == "stream" and len(output.get("text", "")) > limit:
                cut = len(output.text) - limit
                output.text = output.text[:limit] + f"\n... [{cut:,} more characters cut by the grader]\n"

    def _first_code_cell(self) -> int:
        return next((i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"), -1)

    def _restart_and_replay(self, index: int) -> None:
        """A fresh kernel, with the code cells before ``index`` run again (their outputs stay as they were)."""
        from jupyter_core.utils import run_sync

        run_sync(self.km.restart_kernel)(now=True)
        run_sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)
        self._run_silently(_GUARD_SETUP)
        for earlier in self.nb.cells[:index]:
            if earlier.cell_type == "code" and not any(o.get("ename") in ("KernelDied", "CellTimeoutError")
                                                       for o in earlier.outputs):
                try:
                    self._run_silently(earlier.source)
                except DeadKernelError:
                    self._restarts += 1
                    run_sync(self.km.restart_kernel)(now=True)
                    run_sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)
                    self._run_silently(_GUARD_SETUP)


# --------------------------------------------------------------------------------------------
# Grading a course folder
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradingLimits:
    """Limits of the grade command; the per-kernel ones are passed to :class:`SafeExecute`.

    Attributes:
        submission_seconds: wall-clock seconds for all notebooks of one submission.
        cell_seconds: seconds one cell may run (``Execute.timeout``).
        notebook_seconds: wall-clock seconds for one notebook.
        memory_mb: address-space limit of each kernel, MiB.
    """

    submission_seconds: int = 1800
    cell_seconds: int = 120
    notebook_seconds: int = 600
    memory_mb: int = 6144

    def nbgrader_arguments(self) -> list[str]:
        return [f"--Execute.timeout={self.cell_seconds}", f"--SafeExecute.notebook_time_limit={self.notebook_seconds}",
                f"--SafeExecute.memory_limit_mb={self.memory_mb}"]


@dataclass
class SubmissionResult:
    """What happened to one student's submission of one assignment."""

    student: str
    assignment: str
    graded: bool = False
    skipped_unchanged: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def submission_digest(folder: Path) -> str:
    """SHA-256 over the relative paths and contents of every file in a submission folder (hex)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _nbgrader(root: Path, *arguments: str, timeout: float | None = None, db: Path | None = None) -> subprocess.CompletedProcess:
    """Run nbgrader in ``root`` (own process group, killed whole on timeout); output is captured."""
    from .course import nbgrader_command

    database = [f"--CourseDirectory.db_url=sqlite:///{db}"] if db is not None else []
    command, environment = nbgrader_command(*arguments, *database)
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=output) from None
    return subprocess.CompletedProcess(command, process.returncode, output, None)


def _gradebook_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _notebook_problem(path: Path) -> str | None:
    """Why a submitted notebook cannot be graded at all (None if it reads as a notebook)."""
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except Exception as error:  # nbformat raises several kinds for broken JSON or schema
        return f"{path.name} is not a valid notebook ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    return None


def _grade_one(root: Path, result: SubmissionResult, db: Path, limits: GradingLimits) -> None:
    """Autograde one submission into ``db``: whole, and notebook by notebook if the whole fails."""
    started = time.monotonic()
    base = ["autograde", result.assignment, f"--student={result.student}", "--force", *limits.nbgrader_arguments()]
    try:
        run = _nbgrader(root, *base, timeout=limits.submission_seconds, db=db)
        failed = run.returncode != 0 or "There was an error processing assignment" in run.stdout
    except subprocess.TimeoutExpired:
        result.problems.append(f"grading stopped after the submission's limit of {limits.submission_seconds} s")
        failed = True
    if failed:
        submitted = root / "submitted" / result.student / result.assignment
        for notebook in sorted(submitted.glob("*.ipynb")):
            problem = _notebook_problem(notebook)
            if problem:
                result.problems.append(problem)
                continue
            remaining = limits.submission_seconds - (time.monotonic() - started)
            try:
                run = _nbgrader(root, *base, f"--notebook={notebook.stem}", timeout=max(remaining, 1), db=db)
                if run.returncode != 0:
                    result.problems.append(f"{notebook.name} could not be autograded: {_last_error(run.stdout)}")
            except subprocess.TimeoutExpired:
                result.problems.append(f"{notebook.name}: stopped at the submission's time limit")
    _zero_ungraded(db, result)
    result.graded = True
    result.seconds = time.monotonic() - started


def _last_error(log: str) -> str:
    lines = [line for line in log.splitlines() if "ERROR" in line or "Error" in line]
    return (lines[-1] if lines else log.strip().splitlines()[-1:] or ["unknown error"])[-1][:300]


def _zero_ungraded(db: Path, result: SubmissionResult) -> None:
    """Give 0 to every autograded grade of the submission that has no score (its notebook failed or is missing)."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(_gradebook_url(db)) as gradebook:
        try:
            submission = gradebook.find_submission(result.assignment, result.student)
        except MissingEntry:
            try:
                gradebook.update_or_create_student(result.student)
                submission = gradebook.update_or_create_submission(result.assignment, result.student)
            except MissingEntry:
                return
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if grade.auto_score is None and grade.cell.cell_type == "code":
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
        gradebook.db.commit()


def merge_gradebook(source: Path, target: Path, results: list[SubmissionResult]) -> None:
    """Copy the grades and comments of ``results``' submissions from gradebook ``source`` into ``target``.

    Both are nbgrader SQLite gradebooks of the same course (the source a worker's copy of the target).
    Uses nbgrader's API only; manual scores already in ``target`` are kept.
    """
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(_gradebook_url(source)) as worker, Gradebook(_gradebook_url(target)) as main:
        for result in results:
            graded = worker.find_submission(result.assignment, result.student)
            main.update_or_create_student(result.student)
            try:
                main.find_submission(result.assignment, result.student).timestamp = graded.timestamp
            except MissingEntry:
                main.update_or_create_submission(result.assignment, result.student, timestamp=graded.timestamp)
            for notebook in graded.notebooks:
                main.find_submission_notebook(notebook.name, result.assignment, result.student).flagged = \
                    notebook.flagged
                for grade in notebook.grades:
                    into = main.find_grade(grade.name, notebook.name, result.assignment, result.student)
                    into.auto_score, into.needs_manual_grade = grade.auto_score, grade.needs_manual_grade
                for comment in notebook.comments:
                    into = main.find_comment(comment.name, notebook.name, result.assignment, result.student)
                    into.auto_comment = comment.auto_comment
            main.db.commit()


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


def _register_assignment(root: Path, assignment: str) -> None:
    """Record the assignment and its grade cells in the gradebook (generate_assignment into a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="cnn-course-release-") as scratch:
        run = _nbgrader(root, "generate_assignment", assignment, "--force",
                        f"--CourseDirectory.release_directory={scratch}")
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
    run = _nbgrader(root, "zip_collect", assignment, "--force")
    if run.returncode != 0:
        raise CourseError(f"nbgrader zip_collect {assignment} failed:\n{run.stdout[-2000:]}")


def _submissions(root: Path, assignments: list[str]) -> list[tuple[str, str, Path]]:
    base = root / "submitted"
    if not base.is_dir():
        return []
    return [(student.name, assignment, student / assignment)
            for student in sorted(base.iterdir()) if student.is_dir()
            for assignment in assignments if (student / assignment).is_dir()]


def grade(root: Path, *, assignments: list[str] | None = None, jobs: int = 1, zip_files: list[Path] = (),
          zip_assignment: str | None = None, limits: GradingLimits = GradingLimits(),
          feedback: bool = True, export: Path | None = None, log=print) -> list[SubmissionResult]:
    """Autograde every new or changed submission in ``root/submitted``, then write feedback and grades.csv.

    Args:
        root: the course folder (``nbgrader_config.py``, ``source/``, ``submitted/``).
        assignments: assignments to grade; default every one in ``source/``.
        jobs: worker processes; each grades whole submissions into its own gradebook copy.
        zip_files: LMS downloads to collect first (with ``zip_assignment``).
        zip_assignment: the assignment the archives belong to.
        limits: time and memory limits.
        feedback: write HTML feedback (``nbgrader generate_feedback``) for graded submissions.
        export: where to write the grades CSV (``nbgrader export``); default ``root/grades.csv``.
        log: where progress lines go.

    Returns:
        One :class:`SubmissionResult` per submission found (graded or unchanged).

    Raises:
        CourseError: no ``nbgrader_config.py``, an unknown assignment, or a failing nbgrader step
            that is the instructor's (generate_assignment, zip_collect).
    """
    from .course import assignments as course_assignments
    from nbgrader.api import Gradebook

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

    found = _submissions(root, assignments)
    state = _load_state(root)
    results, todo = [], []
    for student, assignment, folder in found:
        result = SubmissionResult(student, assignment)
        key = f"{assignment}/{student}"
        digest = submission_digest(folder)
        graded_before = (root / "autograded" / student / assignment).is_dir()
        if state.get(key) == digest and graded_before:
            result.skipped_unchanged = True
        else:
            todo.append((result, digest))
        results.append(result)
    log(f"{len(found)} submission(s); {len(todo)} new or changed to grade with {jobs} job(s)")
    if not todo:
        _finish(root, results, feedback=False, export=export, log=log)
        return results

    database = root / "gradebook.db"
    for assignment in sorted({result.assignment for result, _ in todo}):
        _register_assignment(root, assignment)
    with Gradebook(_gradebook_url(database)) as gradebook:
        known = {student.id for student in gradebook.students}
        for student in sorted({result.student for result, _ in todo} - known):
            gradebook.update_or_create_student(student)
            log(f"registered new student {student}")

    jobs = max(1, min(jobs, len(todo)))
    shards = [todo[worker::jobs] for worker in range(jobs)]
    with tempfile.TemporaryDirectory(prefix="cnn-course-grading-") as scratch:
        worker_dbs = [database] if jobs == 1 else [Path(scratch) / f"worker-{i}.db" for i in range(jobs)]
        if jobs > 1:
            for copy in worker_dbs:
                shutil.copy(database, copy)

        def work(index: int) -> None:
            for result, _ in shards[index]:
                log(f"autograding {result.assignment} for {result.student}")
                _grade_one(root, result, worker_dbs[index], limits)
                log(f"  {result.student}: {result.seconds:.1f} s" + (f"; problems: {'; '.join(result.problems)}"
                                                                     if result.problems else ""))

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for finished in [pool.submit(work, index) for index in range(jobs)]:
                finished.result()
        if jobs > 1:
            for index, copy in enumerate(worker_dbs):
                merge_gradebook(copy, database, [result for result, _ in shards[index]])

    for result, digest in todo:
        state[f"{result.assignment}/{result.student}"] = digest
    _save_state(root, state)
    _finish(root, results, feedback=feedback, export=export, log=log)
    return results


def _finish(root: Path, results: list[SubmissionResult], *, feedback: bool, export: Path | None, log) -> None:
    graded = [result for result in results if result.graded]
    if feedback:
        # One nbgrader run per assignment; it skips students whose feedback folder exists, so the
        # folders of the submissions graded now are removed first.
        for result in graded:
            shutil.rmtree(root / "feedback" / result.student / result.assignment, ignore_errors=True)
        for assignment in sorted({result.assignment for result in graded}):
            run = _nbgrader(root, "generate_feedback", assignment)
            if run.returncode != 0:
                log(f"warning: nbgrader generate_feedback {assignment} failed: {_last_error(run.stdout)}")
    for result in graded:
        report = root / "feedback" / result.student / result.assignment / "grading-problems.txt"
        if result.problems:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text("Problems found while grading this submission:\n"
                              + "".join(f"- {problem}\n" for problem in result.problems))
        elif report.exists():
            report.unlink()
    target = export or root / "grades.csv"
    run = _nbgrader(root, "export", f"--CsvExportPlugin.to={target}")
    if run.returncode != 0:
        log(f"warning: nbgrader export failed: {_last_error(run.stdout)}")
    _print_summary(root, results, target, log)


def _print_summary(root: Path, results: list[SubmissionResult], export: Path, log) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    with Gradebook(_gradebook_url(root / "gradebook.db")) as gradebook:
        for result in results:
            try:
                submission = gradebook.find_submission(result.assignment, result.student)
                score, maximum = submission.score, submission.max_score
            except MissingEntry:
                score, maximum = float("nan"), float("nan")
            status = "unchanged" if result.skipped_unchanged else ("problems" if result.problems else "graded")
            rows.append((result.student, result.assignment, score, maximum, status))
    log("")
    log(f"{'student':<20} {'assignment':<14} {'score':>7} {'max':>6}  status")
    for student, assignment, score, maximum, status in rows:
        log(f"{student:<20} {assignment:<14} {score:>7.2f} {maximum:>6.1f}  {status}")
    log(f"\nGrades: {export}\nFeedback: {root / 'feedback'}/<student>/<assignment>/")
    for result in results:
        for path in sorted((root / "feedback" / result.student / result.assignment).glob("*")):
            log(f"  {path.relative_to(root)}")
