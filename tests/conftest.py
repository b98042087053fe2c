"""Shared fixtures: a temporary nbgrader course, and skipping tests whose data set is missing."""

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from cnn_grader.testing import dataset_available, how_to_get

ROOT = Path(__file__).resolve().parents[1]


def skip_without(name: str) -> None:
    """Skip the calling test when data set ``name`` is nowhere to be found, saying how to get it."""
    if not dataset_available(name):
        pytest.skip(f"{name} is not available here: {how_to_get(name)}")


@dataclass
class Course:
    """A course folder in a temporary directory with this repository's nbgrader_config.py and source/."""

    root: Path

    def release(self, assignment: str) -> None:
        from cnn_grader.course import release

        release(self.root, [assignment])

    def source_notebook(self, assignment: str, name: str):
        return nbformat.read(self.root / "source" / assignment / f"{name}.ipynb", as_version=4)

    def released_notebook(self, assignment: str, name: str):
        return nbformat.read(self.root / "release" / assignment / f"{name}.ipynb", as_version=4)

    def submit(self, student: str, assignment: str, notebooks: dict) -> None:
        """Write a submission: ``notebooks`` maps a notebook name to its (edited) NotebookNode."""
        folder = self.root / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        for name, notebook in notebooks.items():
            nbformat.write(notebook, folder / f"{name}.ipynb")

    def autograde(self, assignment: str) -> None:
        """Grade every submission of ``assignment`` as ``make grade`` does: on a local Dask cluster of two
        workers, with feedback and grades.csv. (Plain ``nbgrader autograde`` runs in test_cnn_design.)"""
        from cnn_grader.cluster import grade

        lines = []
        results = grade(self.root, assignments=[assignment], jobs=2, log=lines.append)
        failed = [f"{r.student}: {r.problems}" for r in results if r.failed or not r.graded]
        assert not failed, "\n".join([*failed, *lines[-20:]])

    def scores(self, assignment: str, student: str) -> dict:
        """``{(notebook, grade_id): autograded score}`` for every autograded grade cell of a submission."""
        from nbgrader.api import Gradebook

        scores = {}
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gradebook:
            submission = gradebook.find_submission(assignment, student)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.auto_score is not None:
                        scores[(notebook.name, grade.name)] = grade.auto_score
        return scores

    def max_scores(self, assignment: str) -> dict:
        """``{(notebook, grade_id): points}`` of the autograded grade cells (test cells) of an assignment."""
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gradebook:
            return {(notebook.name, cell.name): cell.max_score
                    for notebook in gradebook.find_assignment(assignment).notebooks
                    for cell in notebook.grade_cells if cell.cell_type == "code"}

    def feedback_text(self, assignment: str, student: str, name: str) -> str:
        """All outputs (tracebacks included) of an autograded notebook, as text."""
        notebook = nbformat.read(self.root / "autograded" / student / assignment / f"{name}.ipynb", as_version=4)
        return "\n".join(
            "\n".join(output.get("traceback", [])) + output.get("text", "") + output.get("evalue", "")
            for cell in notebook.cells for output in cell.get("outputs", [])
        )


def build_course(root: Path, *assignments: str) -> Course:
    """A course in ``root`` with the given assignments of source/ copied in and released."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for assignment in assignments:
        shutil.copytree(ROOT / "source" / assignment, root / "source" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    course = Course(root)
    for assignment in assignments:
        course.release(assignment)
    return course


@pytest.fixture
def make_course(tmp_path):
    """``make_course(*assignments)``: a released temporary course (see :func:`build_course`)."""
    return lambda *assignments: build_course(tmp_path / "course", *assignments)


def replace_cell(notebook, grade_id: str, source: str):
    """A copy of ``notebook`` whose cell ``grade_id`` holds ``source`` (a student's answer)."""
    notebook = copy.deepcopy(notebook)
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    cell.source = source
    return notebook


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``), for fixtures that act on failure."""
    outcome = yield
    setattr(item, f"rep_{outcome.get_result().when}", outcome.get_result())


# -- the course server (JupyterHub) ------------------------------------------------------------------

HUB_STUDENTS = ["student1", "student2", "student3", "student4"]


def skip_without_hub() -> None:
    """Skip the calling test when the course server cannot start here, saying what is missing."""
    from cnn_grader.course import CourseError
    from cnn_grader.hub import PROXY, check_student_environment

    if not PROXY.exists():
        pytest.skip(f"configurable-http-proxy is not installed at {PROXY}: `make setup` installs it with npm "
                    "(needs Node.js 20 and npm; .ci/run has both)")
    try:
        check_student_environment()
    except CourseError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def course_server(tmp_path_factory):
    """One course server for the session: instructor, student1-4; torn down with a check that the hub
    stopped everything it started."""
    skip_without_hub()
    from cnn_grader.hub import leftover_processes, start

    state = tmp_path_factory.mktemp("hub")
    server = start(ROOT, state, students=HUB_STUDENTS)
    yield server
    killed = server.stop()
    assert killed == [], f"processes outlived the hub: {killed}"
    assert leftover_processes(state) == []


@pytest.fixture(scope="session")
def hub_cycle_report(course_server):
    """The whole cycle of cnn_mnist through the course server (student1 answers, student2 is blank)."""
    from cnn_grader.hub_cycle import run_cycle

    skip_without("mnist")
    return run_cycle(course_server, "cnn_mnist", answering="student1", blank="student2",
                     manual_grade=("cnn1_mnist", "cnn1_standardization", 1.0))
