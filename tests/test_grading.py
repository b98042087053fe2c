"""The grade command end to end on a small real assignment: hostile and broken submissions, LMS zips,
incremental and parallel grading. Real nbgrader, real kernels, a real SQLite gradebook."""

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cnn_grader.cluster import grade
from cnn_grader.grading import GradingLimits
from cnn_grader.sandbox import bubblewrap_works

pytestmark = pytest.mark.notebooks

# A cell may take 30 s: importing TensorFlow (through cnn_course.checks) takes several on a busy CI machine.
LIMITS = GradingLimits(submission_seconds=240, cell_seconds=30, notebook_seconds=120, memory_mb=4096)


def _meta(grade_id, **flags):
    return {"nbgrader": {"grade_id": grade_id, "schema_version": 3, "grade": False, "solution": False,
                         "locked": False, "task": False, **flags}}


def toy_source() -> dict:
    """Two notebooks of a small assignment: 2 autograded points in `toy`, 1 in `second`."""
    toy = new_notebook(cells=[
        new_markdown_cell("# Toy assignment\n**Points: 2**", metadata=_meta("header", locked=True)),
        new_code_cell("from cnn_course import checks", metadata=_meta("setup", locked=True)),
        new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", metadata=_meta("answer", solution=True)),
        new_code_cell('checks.assert_number(answer, 42, name="answer")',
                      metadata=_meta("test_answer", grade=True, locked=True, points=1)),
        new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                      metadata=_meta("double", solution=True)),
        new_code_cell('assert double(3) == 6, "double(3) should be 6"',
                      metadata=_meta("test_double", grade=True, locked=True, points=1)),
    ])
    second = new_notebook(cells=[
        new_code_cell('### BEGIN SOLUTION\nword = "cnn"\n### END SOLUTION', metadata=_meta("word", solution=True)),
        new_code_cell('assert word == "cnn"', metadata=_meta("test_word", grade=True, locked=True, points=1)),
    ])
    for notebook in (toy, second):
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"toy": toy, "second": second}


def with_answer(notebook, answer: str):
    notebook = copy.deepcopy(notebook)
    next(c for c in notebook.cells if c.metadata["nbgrader"]["grade_id"] == "answer").source = answer
    return notebook


def make_toy_course(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((Path(__file__).resolve().parents[1] / "nbgrader_config.py").read_text())
    for name, notebook in toy_source().items():
        (root / "source" / "toy").mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, root / "source" / "toy" / f"{name}.ipynb")
    return root


def submit(root: Path, student: str, notebooks: dict) -> None:
    folder = root / "submitted" / student / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in notebooks.items():
        path = folder / f"{name}.ipynb"
        if isinstance(content, str):
            path.write_text(content)
        else:
            nbformat.write(content, path)


def snapshot(root: Path) -> dict:
    """Hashes of every file an autograde must not touch: all but autograded/, feedback/, the gradebook and grades."""
    skip = {"autograded", "feedback", "gradebook.db", "grades.csv"}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in skip}


def scores(root: Path) -> dict:
    """``{student: {(notebook, grade cell): auto score}}`` from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return {submission.student.id: {(notebook.name, g.name): g.auto_score
                                        for notebook in submission.notebooks for g in notebook.grades}
                for submission in gradebook.find_assignment("toy").submissions}


def feedback(root: Path, student: str) -> str:
    folder = root / "feedback" / student / "toy"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*")) if p.is_file())


HOSTILE = {
    "solution": lambda s: s,
    "blank": None,  # the release
    "infinite_loop": lambda s: {**s, "toy": with_answer(s["toy"], "while True:\n    pass\nanswer = 42")},
    "sys_exit": lambda s: {**s, "toy": with_answer(s["toy"], "import sys\nsys.exit(1)\nanswer = 42")},
    "os_exit": lambda s: {**s, "toy": with_answer(s["toy"], "import os\nos._exit(1)\nanswer = 42")},
    "kernel_crash": lambda s: {**s, "toy": with_answer(s["toy"], "import ctypes\nctypes.string_at(0)\nanswer = 42")},
    "allocates_50gb": lambda s: {**s, "toy": with_answer(
        s["toy"], "import numpy as np\nbig = np.ones(50 * 10**9 // 8)\nanswer = 42")},
    "patches_checks": lambda s: {**s, "toy": with_answer(
        s["toy"], "answer = 41\nchecks.assert_number = lambda *args, **kwargs: None")},
    "redefines_helpers": lambda s: {**s, "toy": with_answer(
        s["toy"], "answer = 41\nclass Lenient:\n    def assert_number(*args, **kwargs):\n        pass\n"
                  "checks = Lenient()\nimport builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})")},
    "hardcodes_output": lambda s: {**s, "toy": with_answer(s["toy"], 'answer = 41\nprint("answer = 42")')},
    "prints_megabytes": lambda s: {**s, "toy": with_answer(s["toy"], 'print("x" * 5_000_000)\nanswer = 42')},
    "malformed_json": lambda s: {**s, "toy": '{"cells": [ this is not json'},
    "missing_notebook": lambda s: {"second": s["second"]},
    "extra_notebook": lambda s: {**s, "notes": new_notebook(cells=[new_code_cell("print('my notes')")])},
    "writes_outside": lambda s: {**s, "toy": with_answer(
        s["toy"], "answer = 42\nimport pathlib\npathlib.Path('../../../source/toy/toy.ipynb').write_text('gone')")},
}


def edited_and_deleted_tests(source):
    toy = with_answer(source["toy"], "answer = 41")
    edited = copy.deepcopy(toy)
    next(c for c in edited.cells if c.metadata["nbgrader"]["grade_id"] == "test_answer").source = "pass"
    deleted = copy.deepcopy(toy)
    deleted.cells = [c for c in deleted.cells if c.metadata["nbgrader"]["grade_id"] != "test_answer"]
    return {"edits_test_cell": {**source, "toy": edited}, "deletes_test_cell": {**source, "toy": deleted}}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = make_toy_course(tmp_path_factory.mktemp("hostile") / "course")
    from cnn_grader.course import release

    release(root, ["toy"])
    source = toy_source()
    blank = {name: nbformat.read(root / "release" / "toy" / f"{name}.ipynb", as_version=4) for name in source}
    for student, make in HOSTILE.items():
        submit(root, student, blank if make is None else make(source))
    for student, notebooks in edited_and_deleted_tests(source).items():
        submit(root, student, notebooks)
    # The instructor's solution handed in as a symbolic link: its target must never be read.
    submit(root, "links_to_source", {"second": source["second"]})
    (root / "submitted" / "links_to_source" / "toy" / "toy.ipynb").symlink_to(root / "source" / "toy" / "toy.ipynb")
    before = snapshot(root)
    results = grade(root, limits=LIMITS, log=lambda line: None)
    return root, before, {r.student: r for r in results}


EXPECTED_TOTALS = {
    "solution": 3, "blank": 0, "infinite_loop": 2, "sys_exit": 2, "os_exit": 2, "kernel_crash": 2,
    "allocates_50gb": 2, "patches_checks": 2, "redefines_helpers": 2, "hardcodes_output": 2,
    "prints_megabytes": 3, "malformed_json": 1, "missing_notebook": 1, "extra_notebook": 3,
    "writes_outside": 3, "edits_test_cell": 2, "deletes_test_cell": 2, "links_to_source": 1,
}


@pytest.mark.parametrize("student", sorted(EXPECTED_TOTALS))
def test_each_submission_gets_zero_only_for_what_it_broke(hostile, student):
    root, _, _ = hostile
    if student == "writes_outside" and not bubblewrap_works():
        pytest.skip("the read-only file system needs bubblewrap (apt-get install bubblewrap)")
    graded = scores(root)[student]
    assert None not in graded.values(), f"ungraded cells left in the gradebook: {graded}"
    assert sum(graded.values()) == EXPECTED_TOTALS[student], graded


def test_reasons_reach_the_feedback(hostile):
    root, _, results = hostile
    assert "The kernel died while running this cell" in feedback(root, "os_exit")
    assert "The kernel died while running this cell" in feedback(root, "kernel_crash")
    assert "MemoryError" in feedback(root, "allocates_50gb")
    assert "CellTimeoutError" in feedback(root, "infinite_loop")
    assert "toy.ipynb is not a valid notebook" in feedback(root, "malformed_json")
    assert "answer = 41 is not correct" in feedback(root, "patches_checks")
    assert "answer = 41 is not correct" in feedback(root, "redefines_helpers")
    assert "toy.ipynb is a symbolic link; it was not graded" in feedback(root, "links_to_source")
    assert results["solution"].problems == []


def test_huge_output_is_cut(hostile):
    root, _, _ = hostile
    autograded = root / "autograded" / "prints_megabytes" / "toy" / "toy.ipynb"
    assert autograded.stat().st_size < 1_000_000
    assert "more characters cut by the grader" in autograded.read_text()


def test_nothing_outside_autograded_and_feedback_changes(hostile):
    root, before, _ = hostile
    if not bubblewrap_works():
        pytest.skip("the read-only file system needs bubblewrap (apt-get install bubblewrap)")
    assert snapshot(root) == before


def test_grades_csv_has_one_row_per_student_and_assignment(hostile):
    root, _, _ = hostile
    import csv

    rows = list(csv.DictReader((root / "grades.csv").open()))
    assert sorted(row["student_id"] for row in rows) == sorted(EXPECTED_TOTALS)
    by_student = {row["student_id"]: row for row in rows}
    assert float(by_student["solution"]["score"]) == 3.0 and float(by_student["solution"]["max_score"]) == 3.0
    assert float(by_student["blank"]["score"]) == 0.0


def test_a_second_run_grades_only_changed_submissions(hostile):
    root, _, _ = hostile
    source = toy_source()
    submit(root, "blank", source)  # the student hands in again, now correct
    results = {r.student: r for r in grade(root, limits=LIMITS, log=lambda line: None)}
    assert results["blank"].graded and not results["blank"].skipped_unchanged
    assert all(r.skipped_unchanged for student, r in results.items() if student != "blank")
    graded = scores(root)
    assert sum(graded["blank"].values()) == 3
    assert sum(graded["os_exit"].values()) == EXPECTED_TOTALS["os_exit"]


def test_an_instructors_error_exits_2_and_grades_nothing(tmp_path):
    root = make_toy_course(tmp_path / "course")
    run = subprocess.run([sys.executable, "-m", "cnn_grader", "--root", str(root), "grade",
                          "--assignment", "no_such_assignment"], capture_output=True, text=True)
    assert run.returncode == 2 and "no assignment no_such_assignment" in run.stderr
    assert not (root / "autograded").exists()


def test_one_and_two_dask_workers_agree_and_zip_collect(tmp_path):
    source = toy_source()
    submissions = {"solution": source, "os_exit": HOSTILE["os_exit"](source),
                   "missing_notebook": HOSTILE["missing_notebook"](source),
                   "patches_checks": HOSTILE["patches_checks"](source)}
    totals = {}
    for jobs in (1, 2):
        root = make_toy_course(tmp_path / f"jobs{jobs}")
        archive = tmp_path / f"lms-{jobs}.zip"
        with zipfile.ZipFile(archive, "w") as bundle:
            for student, notebooks in submissions.items():
                for name, notebook in notebooks.items():
                    bundle.writestr(f"{student.replace('_', '-')}_{name}.ipynb", nbformat.writes(notebook))
        grade(root, jobs=jobs, zip_files=[archive], zip_assignment="toy", limits=LIMITS, log=lambda line: None)
        totals[jobs] = scores(root)
    assert totals[1] == totals[2]
    assert sum(totals[1]["solution"].values()) == 3 and sum(totals[1]["os-exit"].values()) == 2
    assert sorted(totals[1]) == ["missing-notebook", "os-exit", "patches-checks", "solution"]


def test_demo_grades_solution_blank_and_examples_and_skips_assignments_without_data(tmp_path, monkeypatch, capsys):
    from cnn_grader import cli, course

    root = make_toy_course(tmp_path / "repo")
    needs_cifar = new_notebook(cells=[new_code_cell('data.load_dataset("cifar10")')])
    (root / "source" / "colour").mkdir()
    nbformat.write(needs_cifar, root / "source" / "colour" / "colour.ipynb")
    course.release(root, ["toy"])
    source = toy_source()
    (root / "examples" / "toy" / "partly_right").mkdir(parents=True)
    partly = {**source, "toy": with_answer(source["toy"], "answer = 41")}
    for name, notebook in partly.items():
        nbformat.write(notebook, root / "examples" / "toy" / "partly_right" / f"{name}.ipynb")
    monkeypatch.setattr("cnn_course.data.is_available", lambda name: name != "cifar10")

    assert cli.demo(root, jobs=2) == 0
    output = capsys.readouterr().out
    assert "colour: skipped, cifar10 not available here" in output
    totals = {student: sum(cells.values()) for student, cells in scores(root / "build" / "demo").items()}
    assert totals == {"instructor_solution": 3, "blank_release": 0, "partly_right": 2}
    assert "feedback/partly_right/toy/toy.html" in output


def test_grading_without_the_sandbox_says_so_in_the_summary_and_the_feedback(tmp_path):
    root = make_toy_course(tmp_path / "course")
    submit(root, "solution", toy_source())
    lines = []
    limits = GradingLimits(submission_seconds=240, cell_seconds=30, notebook_seconds=120, memory_mb=4096,
                           isolate=False)
    grade(root, limits=limits, log=lines.append)
    assert sum(scores(root)["solution"].values()) == 3
    assert any("Grading ran without isolation" in line for line in lines)
    assert "Grading ran without isolation" in feedback(root, "solution")


def test_validate_works_on_a_students_machine_without_the_grader_package(tmp_path):
    """A completed release notebook passes ``nbgrader validate`` where cnn_grader cannot be imported."""
    repository = Path(__file__).resolve().parents[1]
    released = nbformat.read(repository / "release" / "cnn_mnist" / "fc_mnist.ipynb", as_version=4)
    solved = {cell.metadata["nbgrader"]["grade_id"]: cell.source
              for cell in nbformat.read(repository / "source" / "cnn_mnist" / "fc_mnist.ipynb", as_version=4).cells
              if cell.get("metadata", {}).get("nbgrader", {}).get("solution")}
    for cell in released.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in solved:
            cell.source = solved[grade_id]
    nbformat.write(released, tmp_path / "fc_mnist.ipynb")
    (tmp_path / "nbgrader_config.py").write_text((repository / "nbgrader_config.py").read_text())
    blocker = tmp_path / "no_grader"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoGrader:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'cnn_grader':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoGrader())\n")
    environment = {**os.environ, "PYTHONPATH": str(blocker)}
    probe = subprocess.run([sys.executable, "-c", "import cnn_grader"], env=environment, capture_output=True)
    assert probe.returncode != 0
    nbgrader = Path(sys.executable).parent / "nbgrader"
    run = subprocess.run([str(nbgrader), "validate", "fc_mnist.ipynb"], cwd=tmp_path, env=environment,
                         capture_output=True, text=True, timeout=300)
    assert "Success! Your notebook passes all the tests." in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


def test_the_checker_imports_keras_and_the_references_when_a_grade_cell_first_needs_them():
    code = """
import sys
from cnn_grader.checker import trusted_namespace
names = trusted_namespace()
before = sorted(name for name in ("keras", "tensorflow", "cnn_grader.references") if name in sys.modules)
names["checks"].assert_number(42, 42, name="answer")
reference = names["references"].cnn1_mnist()
names["checks"].assert_same_architecture(reference, names["references"].cnn1_mnist(), label="model")
assert isinstance(reference, names["keras"].Model) and names["layers"].Dense is sys.modules["keras"].layers.Dense
print(before, sorted(name for name in ("keras", "cnn_grader.references") if name in sys.modules))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[] ['cnn_grader.references', 'keras']"


def test_the_checker_imports_keras_ahead_for_every_course_notebook_and_not_for_a_notebook_of_numbers():
    from cnn_grader.checker import names_keras

    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.glob("source/*/*.ipynb")):
        assert names_keras(cell.source for cell in nbformat.read(path, as_version=4).cells), path.name
    assert not names_keras(cell.source for notebook in toy_source().values() for cell in notebook.cells)


def test_packages_handed_in_with_a_submission_never_replace_the_checkers_modules(tmp_path):
    """The course package handed in next to the notebooks, with a check that passes anything: the checker,
    which works in the submission's folder, still imports the installed package."""
    import cnn_course

    root = make_toy_course(tmp_path / "course")
    source = toy_source()
    submit(root, "shadows", {**source, "toy": with_answer(source["toy"], "answer = 41")})
    planted = root / "submitted" / "shadows" / "toy" / "cnn_course"
    shutil.copytree(Path(cnn_course.__file__).parent, planted, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    with open(planted / "checks.py", "a") as checks_file:
        checks_file.write("\n\ndef assert_number(*args, **kwargs):\n    pass\n")
    grade(root, limits=LIMITS, log=lambda line: None)
    assert (root / "autograded" / "shadows" / "toy" / "cnn_course" / "checks.py").is_file(), "the package was not handed in"
    assert scores(root)["shadows"] == {("toy", "test_answer"): 0, ("toy", "test_double"): 1, ("second", "test_word"): 1}


def test_one_checker_grades_every_notebook_of_a_submission_and_carries_no_value_from_one_to_the_next(tmp_path):
    """Both notebooks' grade cells read ``answer``; a student who answers in one notebook only scores in that one,
    whichever notebook the checker graded first. The grade cells print the checker's process id."""
    root = tmp_path / "course"
    (root / "source" / "pair").mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((Path(__file__).resolve().parents[1] / "nbgrader_config.py").read_text())
    test = 'import os\nprint("checker", os.getpid())\nchecks.assert_number(answer, 42, name="answer")'
    for name in ("first", "second"):
        notebook = new_notebook(cells=[
            new_code_cell("from cnn_course import checks", metadata=_meta("setup", locked=True)),
            new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", metadata=_meta("answer", solution=True)),
            new_code_cell(test, metadata=_meta("test_answer", grade=True, locked=True, points=1))])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, root / "source" / "pair" / f"{name}.ipynb")
    from cnn_grader.course import release

    release(root, ["pair"])
    blank = {name: nbformat.read(root / "release" / "pair" / f"{name}.ipynb", as_version=4)
             for name in ("first", "second")}
    solved = {name: with_answer(notebook, "answer = 42") for name, notebook in blank.items()}
    for student, notebooks in {"both": solved, "first_only": {**blank, "first": solved["first"]},
                               "second_only": {**blank, "second": solved["second"]}}.items():
        folder = root / "submitted" / student / "pair"
        folder.mkdir(parents=True)
        for name, notebook in notebooks.items():
            nbformat.write(notebook, folder / f"{name}.ipynb")
    grade(root, jobs=2, limits=LIMITS, log=lambda line: None)

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        found = {submission.student.id: {notebook.name: notebook.score for notebook in submission.notebooks}
                 for submission in gradebook.find_assignment("pair").submissions}
    assert found == {"both": {"first": 1, "second": 1}, "first_only": {"first": 1, "second": 0},
                     "second_only": {"first": 0, "second": 1}}
    checkers = set()
    for name in ("first", "second"):
        notebook = nbformat.read(root / "autograded" / "both" / "pair" / f"{name}.ipynb", as_version=4)
        printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
        checkers |= {line.split()[1] for line in printed.splitlines() if line.startswith("checker ")}
    assert len(checkers) == 1
