"""Autograding that can be trusted, and that is safe, incremental and parallel, on nbgrader's own commands.

nbgrader does the grading: ``zip_collect``, ``autograde``, ``generate_feedback`` and ``export``
run as nbgrader's CLI. This module adds what nbgrader lacks:

* **Grade cells outside the student's process** (:class:`CheckedExecute`, set in
  ``nbgrader_config.py``): every test cell runs in a checker kernel that never runs student code;
  the values it reads cross over as data (:mod:`cnn_course.exchange`). No code in a student's cells
  can make a test pass that its answers alone would fail.
* **A sandbox for the student's kernel**: a per-cell timeout, a wall-clock limit per notebook, an
  address-space limit and, where bubblewrap works, a view of its own submission only, without
  network or sight of other processes (:mod:`cnn_grader.sandbox`). A kernel that dies is restarted,
  the cells before the one that killed it are run again, and grading goes on.
* **Suspicious code flagged for a person** (:mod:`cnn_grader.flags`): the grade cells after it keep
  their score but are marked for manual grading, with a comment that names the notebook, cell and line.
* **One submission cannot stop the others**: each submission is graded in its own nbgrader process
  with a wall-clock limit; a submission that fails is graded notebook by notebook, and what still
  fails scores 0 with the reason written to its feedback.
* **Incremental**: a submission is graded again only when its files changed.
* **Parallel** (``jobs`` > 1): students are graded in worker processes, each with its own copy of
  the SQLite gradebook; the copies are merged into the course's gradebook through nbgrader's API.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
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


from . import flags as flagging
from . import sandbox
from .checker import TRUSTED_NAMES
from .course import CourseError, assignments as course_assignments, run_nbgrader

__all__ = [
    "CheckedExecute",
    "free_names",
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


# --------------------------------------------------------------------------------------------
# The grading kernels: the student's, sandboxed, and the checker, trusted
# --------------------------------------------------------------------------------------------

class _SandboxedKernelManager(AsyncKernelManager):
    """Starts the student's kernel through :func:`cnn_grader.sandbox.kernel_command`.

    The kernel talks over Unix sockets in its private temporary folder (``transport="ipc"``), since
    the sandbox has no network; its connection file is there too. Interrupts go by message.
    """

    sandbox_options: dict = {}

    async def _async_pre_start_kernel(self, **kw):
        options = self.sandbox_options
        sockets = os.path.join(options["temporary"], "sockets")
        os.makedirs(sockets, exist_ok=True)
        self.transport, self.ip = "ipc", os.path.join(sockets, "kernel")
        self.connection_file = os.path.join(sockets, "kernel.json")
        command, kw = await super()._async_pre_start_kernel(**kw)
        command, extra_environment, _ = sandbox.kernel_command(
            command, memory_bytes=options["memory_bytes"], writable=options["writable"],
            temporary=options["temporary"], isolate=options["isolate"])
        kw["env"] = {**(kw.get("env") or os.environ), **extra_environment}
        # Signals stop at bubblewrap; ipykernel also takes an interrupt as a control message.
        self.kernel_spec.interrupt_mode = "message"
        return command, kw


def _error_output(name: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=name, evalue=message,
                        traceback=[f"\x1b[0;31m{name}\x1b[0m: {message}"])


def free_names(source: str) -> list[str]:
    """The variables a grade cell reads from the notebook: names it loads but never binds, less the trusted ones.

    Args:
        source: a grade cell's source (the instructor's, from the gradebook).

    Returns:
        Sorted names; empty when the source does not parse.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return sorted(loaded - bound - TRUSTED_NAMES)


def gradebook_tests(resources: dict) -> dict[str, str]:
    """The autograder test cells of the notebook being graded, from the gradebook: ``{grade_id: source}``.

    Args:
        resources: nbgrader's resources of the notebook (``resources["nbgrader"]`` names the gradebook,
            the assignment and the notebook).

    Raises:
        RuntimeError: the resources name no gradebook (the preprocessor runs outside ``nbgrader autograde``).
    """
    from nbgrader.api import Gradebook

    info = (resources or {}).get("nbgrader", {})
    if not all(info.get(key) for key in ("db_url", "assignment", "notebook")):
        raise RuntimeError("CheckedExecute grades notebooks under nbgrader autograde, which names the gradebook")
    with Gradebook(info["db_url"]) as gradebook:
        notebook = gradebook.find_notebook(info["notebook"], info["assignment"])
        answers = {cell.name for cell in notebook.solution_cells}
        sources = {cell.name: cell.source for cell in notebook.source_cells}
        return {cell.name: sources[cell.name] for cell in notebook.grade_cells
                if cell.cell_type == "code" and cell.name not in answers and cell.name in sources}


class CheckedExecute(Execute):
    """nbgrader's Execute preprocessor with grade cells run in a trusted checker, limits and kernel restarts.

    Every code cell of the student runs in the student's kernel, under a memory limit and, where
    bubblewrap works, in the sandbox of :mod:`cnn_grader.sandbox`. Every autograder test cell runs in
    a second kernel, the checker (:mod:`cnn_grader.checker`), which reads the variables the cell
    needs from the student's kernel as data only (:mod:`cnn_course.exchange`). The test's outputs
    go into the notebook as usual, so nbgrader scores them and the feedback shows them.

    Configure it in ``nbgrader_config.py`` (``c.CheckedExecute.memory_limit_mb = ...``) and put it in
    place of ``Execute`` in ``c.Autograde.autograde_preprocessors``. The per-cell timeout is nbgrader's
    ``Execute.timeout``.
    """

    memory_limit_mb = Integer(6144, help="Address-space limit of each grading kernel in MiB (0: none).").tag(config=True)
    notebook_time_limit = Integer(
        600, help="Wall-clock seconds for one notebook; cells after it are not run and score 0.").tag(config=True)
    isolate = Bool(
        True, help="Run the student's kernel in the bubblewrap sandbox (only its submission visible, no network, "
                   "own process namespace) when bwrap works.").tag(config=True)
    max_kernel_restarts = Integer(3, help="Kernel deaths survived per notebook; after that cells are not run.").tag(
        config=True)
    max_output_characters = Integer(
        100_000, help="Characters of text kept per cell output; the rest is cut (nbgrader's LimitOutput counts "
                      "lines only).").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._deadline = time.monotonic() + self.notebook_time_limit
        self._restarts = 0
        self._temporary = tempfile.mkdtemp(prefix="cnn-grader-kernel-")
        self._exchange = os.path.join(self._temporary, "exchange")
        os.makedirs(self._exchange)
        self._folder = str(Path((resources or {}).get("metadata", {}).get("path") or ".").resolve())
        self._sandbox_options = {"memory_bytes": self.memory_limit_mb * 2**20, "writable": [self._folder],
                                 "temporary": self._temporary, "isolate": self.isolate}
        self.kernel_manager_class = type("SandboxedKernelManager", (_SandboxedKernelManager,),
                                         {"sandbox_options": self._sandbox_options})
        self._checker_km = self._checker_kc = self._checker_setup = None
        self._requests = 0
        self._tests = gradebook_tests(resources)
        self._checked: set[str] = set()
        try:
            if self._tests:
                self._start_checker()
            return super().preprocess(nb, resources, km)
        finally:
            self._stop_checker()
            shutil.rmtree(self._temporary, ignore_errors=True)

    # -- the checker kernel -------------------------------------------------------------------

    def _start_checker(self) -> None:
        """Start the checker kernel and send it its set-up, without waiting for it: its imports overlap the
        student's first cells."""
        from jupyter_core.utils import run_sync

        manager = AsyncKernelManager(kernel_name=self.kernel_name or "python3")
        run_sync(manager.start_kernel)(cwd=self._folder, extra_arguments=list(self.extra_arguments),
                                       env={**os.environ, "MPLBACKEND": "agg"})
        client = manager.client()
        client.start_channels()
        run_sync(client.wait_for_ready)(timeout=self.startup_timeout)
        self._checker_km, self._checker_kc = manager, client
        # The student kernel's connection file is known before it starts (_SandboxedKernelManager puts it there).
        connection_file = os.path.join(self._temporary, "sockets", "kernel.json")
        # The imports happen here, silently: TensorFlow's start-up lines on stderr would fail the first grade cell.
        self._checker_setup = client.execute(
            "from cnn_grader.checker import Checker as __Checker, trusted_namespace as __trusted\n"
            f"__checker = __Checker({connection_file!r}, {self._exchange!r}, {self.timeout or 120})\n"
            "__trusted()\n"
            "del __Checker, __trusted", silent=True, store_history=False, allow_stdin=False)

    def _checker_ready(self) -> None:
        """Wait until the checker kernel has run its set-up (once)."""
        if self._checker_setup is None:
            return
        student_kc, self.kc = self.kc, self._checker_kc
        try:
            reply = self.wait_for_reply(self._checker_setup)
        finally:
            self.kc = student_kc
        self._checker_setup = None
        if reply is None or reply["content"].get("status") != "ok":
            raise RuntimeError(f"the checker kernel could not start: {(reply or {}).get('content', {}).get('evalue')}")

    def _stop_checker(self) -> None:
        from jupyter_core.utils import run_sync

        if self._checker_km is None:
            return
        with contextlib.suppress(Exception):
            self._checker_kc.stop_channels()
        with contextlib.suppress(Exception):
            run_sync(self._checker_km.shutdown_kernel)(now=True)
        self._checker_km = self._checker_kc = self._checker_setup = None

    def _run_silently(self, code: str, client=None) -> dict | None:
        """Run code in a kernel (default the student's) without touching the notebook; returns the reply."""
        student_kc = self.kc
        self.kc = client or student_kc
        try:
            return self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False, allow_stdin=False))
        finally:
            self.kc = student_kc

    def _run_test_cell(self, cell, resources, index):
        """Export the values the test reads from the student's kernel, then run the test in the checker."""
        self._requests += 1
        manifest = f"values-{self._requests}.json"
        names = free_names(cell.source)
        export = ("import cnn_course.exchange as __cnn_course_exchange\n"
                  f"__cnn_course_exchange.export_names({names!r}, globals(), {self._exchange!r}, {manifest!r})\n"
                  "del __cnn_course_exchange")
        reply = self._run_silently(export)
        if reply is None or reply["content"].get("status") != "ok":
            content = (reply or {}).get("content", {})
            cell.outputs = [_error_output(
                "ExportError", "The values this test reads could not be taken from your notebook "
                f"({content.get('ename', 'no reply')}: {str(content.get('evalue', ''))[:300]}). "
                "Did a cell change how the kernel runs?")]
            return cell, resources
        if self._checker_km is None:
            self._start_checker()
        self._checker_ready()
        student_km, student_kc, source = self.km, self.kc, cell.source
        self.km, self.kc = self._checker_km, self._checker_kc
        cell.source = f"__checker.receive(globals(), {manifest!r})\n{source}"
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            cell.outputs.append(_error_output(
                "CheckerDied", f"The checker stopped while reading your answers (a model too large for the memory "
                               f"limit of {self.memory_limit_mb:,} MiB?)."))
            self.km, self.kc = student_km, student_kc
            self._stop_checker()
        finally:
            cell.source = source
            self.km, self.kc = student_km, student_kc
        return cell, resources

    # -- every cell ---------------------------------------------------------------------------

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
            if self._is_instructor_test(cell):
                cell, resources = self._run_test_cell(cell, resources, index)
            else:
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

    def _is_instructor_test(self, cell) -> bool:
        """Whether the cell is one of the gradebook's test cells, with the instructor's source, seen once."""
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id not in self._tests or grade_id in self._checked or cell.source != self._tests[grade_id]:
            return False
        self._checked.add(grade_id)
        return True

    def _limit_output(self, cell) -> None:
        limit = self.max_output_characters
        for output in cell.outputs:
            if output.get("output_type") == "stream" and len(output.get("text", "")) > limit:
                cut = len(output.text) - limit
                output.text = output.text[:limit] + f"\n... [{cut:,} more characters cut by the grader]\n"

    def _restart_and_replay(self, index: int) -> None:
        """A fresh student kernel, with the student's cells before ``index`` run again (outputs stay as they were)."""
        from jupyter_core.utils import run_sync

        run_sync(self.km.restart_kernel)(now=True)
        run_sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)
        for earlier in self.nb.cells[:index]:
            if earlier.cell_type == "code" and earlier.get("metadata", {}).get("nbgrader", {}).get(
                    "grade_id") not in self._checked and not any(
                    o.get("ename") in ("KernelDied", "CellTimeoutError") for o in earlier.outputs):
                try:
                    self._run_silently(earlier.source)
                except DeadKernelError:
                    self._restarts += 1
                    run_sync(self.km.restart_kernel)(now=True)
                    run_sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)


# --------------------------------------------------------------------------------------------
# Grading a course folder
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradingLimits:
    """Limits of the grade command; the per-kernel ones are passed to :class:`CheckedExecute`.

    Attributes:
        submission_seconds: wall-clock seconds for all notebooks of one submission.
        cell_seconds: seconds one cell may run (``Execute.timeout``).
        notebook_seconds: wall-clock seconds for one notebook.
        memory_mb: address-space limit of each kernel, MiB.
        isolate: run each student kernel in the bubblewrap sandbox where bubblewrap works.
    """

    submission_seconds: int = 1800
    cell_seconds: int = 120
    notebook_seconds: int = 600
    memory_mb: int = 6144
    isolate: bool = True

    @property
    def isolated(self) -> bool:
        """Whether student kernels run in the sandbox: asked for, and bubblewrap works here."""
        return self.isolate and sandbox.bubblewrap_works()

    def nbgrader_arguments(self) -> list[str]:
        return [f"--Execute.timeout={self.cell_seconds}", f"--CheckedExecute.notebook_time_limit={self.notebook_seconds}",
                f"--CheckedExecute.memory_limit_mb={self.memory_mb}", f"--CheckedExecute.isolate={self.isolate}"]


@dataclass
class SubmissionResult:
    """What happened to one student's submission of one assignment."""

    student: str
    assignment: str
    graded: bool = False
    skipped_unchanged: bool = False
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0


def submission_digest(folder: Path) -> str:
    """SHA-256 over the relative paths and contents of every file in a submission folder (hex)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _gradebook_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _notebook_problem(path: Path) -> str | None:
    """Why a submitted notebook cannot be graded at all (None if it reads as a notebook)."""
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except Exception as error:  # nbformat raises several kinds for broken JSON or schema
        return f"{path.name} is not a valid notebook ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    return None


def _remove_links(folder: Path, result: SubmissionResult) -> None:
    """Delete symbolic links from a submission: a link could point nbgrader's copy at another student's files."""
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            path.unlink()
            result.problems.append(f"{path.relative_to(folder)} is a symbolic link; it was removed, hand in files")


def _grade_one(root: Path, result: SubmissionResult, db: Path, limits: GradingLimits) -> None:
    """Autograde one submission into ``db``: whole, and notebook by notebook if the whole fails; then flag."""
    started = time.monotonic()
    submitted = root / "submitted" / result.student / result.assignment
    _remove_links(submitted, result)
    found = flagging.flag_submission(submitted)
    base = ["autograde", result.assignment, f"--student={result.student}", "--force", *limits.nbgrader_arguments()]
    try:
        run = run_nbgrader(root, *base, timeout=limits.submission_seconds, db=db)
        failed = run.returncode != 0 or "There was an error processing assignment" in run.stdout
    except subprocess.TimeoutExpired:
        result.problems.append(f"grading stopped after the submission's limit of {limits.submission_seconds} s")
        failed = True
    if failed:
        for notebook in sorted(submitted.glob("*.ipynb")):
            problem = _notebook_problem(notebook)
            if problem:
                result.problems.append(problem)
                continue
            remaining = limits.submission_seconds - (time.monotonic() - started)
            try:
                run = run_nbgrader(root, *base, f"--notebook={notebook.stem}", timeout=max(remaining, 1), db=db)
                if run.returncode != 0:
                    result.problems.append(f"{notebook.name} could not be autograded: {_last_error(run.stdout)}")
            except subprocess.TimeoutExpired:
                result.problems.append(f"{notebook.name}: stopped at the submission's time limit")
    _zero_ungraded(db, result)
    _mark_flagged(db, result, found, submitted)
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


def _mark_flagged(db: Path, result: SubmissionResult, found: list, submitted: Path) -> None:
    """Mark the grade cells after each flagged line for manual grading, with a comment naming where the code is.

    The autograded scores stay. The comment goes to the answer cell at or before the flagged cell (the
    first answer cell of the notebook when there is none before it), where the formgrader shows it.
    """
    from nbgrader.api import Gradebook, MissingEntry

    if not found:
        return
    result.flags = [flag.describe() for flag in found]
    with Gradebook(_gradebook_url(db)) as gradebook:
        for name in sorted({flag.notebook for flag in found}):
            try:
                cells = nbformat.read(submitted / name, as_version=4).cells
                notebook = gradebook.find_submission_notebook(Path(name).stem, result.assignment, result.student)
            except (MissingEntry, OSError, ValueError):
                continue
            grades = {grade.name: grade for grade in notebook.grades}
            comments = {comment.name: comment for comment in notebook.comments}
            ids = [cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") for cell in cells]
            for flag in (flag for flag in found if flag.notebook == name):
                after = [grade_id for grade_id in ids[flag.cell - 1:]
                         if grade_id in grades and grades[grade_id].cell.cell_type == "code"]
                for grade_id in after:
                    grades[grade_id].needs_manual_grade = True
                before = [grade_id for grade_id in ids[:flag.cell] if grade_id in comments]
                target = before[-1] if before else next((grade_id for grade_id in ids if grade_id in comments), None)
                if target is not None:
                    comment = comments[target]
                    text = (f"Flagged for a person: {flag.describe()}. The grade cells after it keep their autograded "
                            f"score and need a manual look: {', '.join(after) or 'none'}.")
                    comment.auto_comment = "\n\n".join(filter(None, [comment.auto_comment, text]))
            notebook.flagged = True
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
        run = run_nbgrader(root, "generate_assignment", assignment, "--force",
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
    run = run_nbgrader(root, "zip_collect", assignment, "--force")
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
        before = state.get(key) if isinstance(state.get(key), dict) else {"digest": state.get(key)}
        if before.get("digest") == digest and graded_before:
            result.skipped_unchanged = True
            result.flags = list(before.get("flags", []))
        else:
            todo.append((result, digest))
        results.append(result)
    log(f"{len(found)} submission(s); {len(todo)} new or changed to grade with {jobs} job(s)")
    if not todo:
        _finish(root, results, feedback=False, export=export, log=log, isolated=limits.isolated)
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
        state[f"{result.assignment}/{result.student}"] = {"digest": digest, "flags": result.flags}
    _save_state(root, state)
    _finish(root, results, feedback=feedback, export=export, log=log, isolated=limits.isolated)
    return results


def _finish(root: Path, results: list[SubmissionResult], *, feedback: bool, export: Path | None, log,
            isolated: bool) -> None:
    graded = [result for result in results if result.graded]
    if feedback:
        # One nbgrader run per assignment; it skips students whose feedback folder exists, so the
        # folders of the submissions graded now are removed first.
        for result in graded:
            shutil.rmtree(root / "feedback" / result.student / result.assignment, ignore_errors=True)
        for assignment in sorted({result.assignment for result in graded}):
            run = run_nbgrader(root, "generate_feedback", assignment)
            if run.returncode != 0:
                log(f"warning: nbgrader generate_feedback {assignment} failed: {_last_error(run.stdout)}")
    for result in graded:
        report = root / "feedback" / result.student / result.assignment / "grading-problems.txt"
        notes = [*result.problems, *([] if isolated else [NO_ISOLATION_NOTE])]
        if notes:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text("Notes from grading this submission:\n" + "".join(f"- {note}\n" for note in notes))
        elif report.exists():
            report.unlink()
    target = export or root / "grades.csv"
    run = run_nbgrader(root, "export", f"--CsvExportPlugin.to={target}")
    if run.returncode != 0:
        log(f"warning: nbgrader export failed: {_last_error(run.stdout)}")
    else:
        _add_flagged_column(target, results)
    _print_summary(root, results, target, log)
    if not isolated:
        log(f"\nwarning: {NO_ISOLATION_NOTE} Install bubblewrap (apt-get install bubblewrap) to sandbox grading.")


#: What a submission's feedback says when its kernel ran without the sandbox.
NO_ISOLATION_NOTE = ("Grading ran without isolation: bubblewrap could not run on the grading machine, so the "
                     "notebook's kernel was not kept from the machine's files, network and processes.")


def _add_flagged_column(path: Path, results: list[SubmissionResult]) -> None:
    """Add a ``flagged`` column to nbgrader's grades CSV: how many lines of each submission were flagged."""
    import csv

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
    with Gradebook(_gradebook_url(root / "gradebook.db")) as gradebook:
        for result in results:
            try:
                submission = gradebook.find_submission(result.assignment, result.student)
                score, maximum = submission.score, submission.max_score
            except MissingEntry:
                score, maximum = float("nan"), float("nan")
            status = "unchanged" if result.skipped_unchanged else ("problems" if result.problems else "graded")
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
