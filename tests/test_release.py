"""release/ is exactly what nbgrader generates from source/ (the committed student versions are in sync)."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from cnn_grader.course import assignments, release_differences

ROOT = Path(__file__).resolve().parents[1]


def test_release_matches_a_fresh_generation(tmp_path):
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    shutil.copytree(ROOT / "source", tmp_path / "source")
    subprocess.run([sys.executable, "-m", "cnn_grader", "--root", str(tmp_path), "release"], check=True)
    (tmp_path / "release").mkdir(exist_ok=True)
    differences = release_differences(ROOT / "release", tmp_path / "release")
    assert not differences, "release/ is out of date; run `make release` and commit:\n" + "\n".join(differences)


def test_release_differences_sees_a_changed_cell(tmp_path):
    for side in ("a", "b"):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
        if side == "b":
            notebook.cells[0].source = "x = 2"
        (tmp_path / side / "hw").mkdir(parents=True)
        nbformat.write(notebook, tmp_path / side / "hw" / "nb.ipynb")
    (tmp_path / "b" / "hw" / "extra.txt").write_text("new")
    differences = release_differences(tmp_path / "a", tmp_path / "b")
    assert differences == [
        "hw/extra.txt: generated from source/ but missing in " + str(tmp_path / "a"),
        "hw/nb.ipynb: differs from a fresh release, first at cell 1",
    ]


def test_every_released_assignment_has_a_source():
    assert set(assignments(ROOT, "release")) <= set(assignments(ROOT, "source"))


def test_released_notebooks_hold_no_solution_and_no_hidden_test():
    """Every committed student version: the stub where solutions were, no solution, no hidden test."""
    released = sorted((ROOT / "release").glob("*/*.ipynb"))
    assert released, "nothing released"
    for path in released:
        text = nbformat.writes(nbformat.read(path, as_version=4))
        for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "assert_same_architecture", 'correct="'):
            assert marker not in text, (path.name, marker)
        assert "# here is your code coming" in text, path.name
