"""release/ is exactly what nbgrader generates from source/ (the committed student versions are in sync),
and no student version gives a question's answer away in its text before the question is graded."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

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


# --- No answer before its question ----------------------------------------------------------------------------
#
# bench/claims/<notebook>.toml gives every question (every grade cell) phrases that give its answer away. No
# markdown cell of the student version before that grade cell may contain one. The claims are outside source/
# because nbgrader copies every file there into the release.

_spec = importlib.util.spec_from_file_location("claims_check", ROOT / "bench" / "claims_check.py")
claims_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claims_check)
CLAIMS = claims_check.CLAIMS
normalise, phrase_pattern, answers_given_away = (claims_check.normalise, claims_check.phrase_pattern,
                                                 claims_check.answers_given_away)
RELEASED = sorted((ROOT / "release").glob("*/*.ipynb"))

def notebook_name(path: Path) -> str:
    """``<assignment>/<notebook>`` of a notebook in release/ or source/."""
    return f"{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("path", RELEASED, ids=notebook_name)
def test_no_release_notebook_gives_an_answer_away_before_its_question(path):
    """Every grade cell has phrases in bench/claims, and no markdown cell before it contains one."""
    claims_path = CLAIMS / f"{path.stem}.toml"
    assert claims_path.exists(), f"{notebook_name(path)}: no claims file {claims_path.relative_to(ROOT)}"
    claims = claims_check.read_claims(path.stem)
    assert claims.get("notebook") == notebook_name(path), (claims_path.name, claims.get("notebook"))
    problems = answers_given_away(nbformat.read(path, as_version=4), claims, notebook_name(path))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", RELEASED, ids=notebook_name)
def test_every_answer_has_a_phrase_that_the_solution_notebook_says(path):
    """Phrases of which the solution notebook says none (typos, an answer since reworded) could never match.
    (A phrase may also be a wording that an earlier release used, e.g. "accuracy near 100".)"""
    claims = claims_check.read_claims(path.stem)
    source = ROOT / "source" / path.parent.name / path.name
    text = normalise("\n".join(cell.source for cell in nbformat.read(source, as_version=4).cells))
    unsaid = [answer["grade_id"] for answer in claims["answers"]
              if not any(phrase_pattern(phrase).search(text) for phrase in answer["phrases"])]
    assert not unsaid, f"{notebook_name(path)}: {source.relative_to(ROOT)} says none of the phrases of {unsaid}"


def test_every_claims_file_is_of_a_released_notebook():
    """One claims file per released notebook, none left over from a notebook that is gone."""
    assert RELEASED, "nothing released"
    assert sorted(path.stem for path in CLAIMS.glob("*.toml")) == sorted(path.stem for path in RELEASED)


def test_normalise_reads_a_number_the_same_however_its_thousands_are_separated():
    """Thousands separators, thin and non-breaking spaces and "100 %" against "100%" do not hide a phrase."""
    assert {normalise(text) for text in ("250,890", "250 890", "250\u2009890", "250\u202f890", "250_890")} == {"250890"}
    assert normalise("Nearly\u00a0100 %\n of  it") == "nearly 100% of it"
    assert phrase_pattern("320").search(normalise("320 parameters"))
    assert not phrase_pattern("320").search(normalise("3,200 parameters"))
    assert not phrase_pattern("98.7 %").search(normalise("98.75 %"))


def test_a_phrase_before_its_grade_cell_is_found_and_one_after_it_is_not():
    """The check fails a hand-made notebook that gives answers away, and passes it once they come after."""
    def grade_cell(grade_id):
        return nbformat.v4.new_code_cell("check()", metadata={"nbgrader": {
            "grade": True, "solution": False, "grade_id": grade_id, "points": 1}})

    claims = {"answers": [{"grade_id": "test_dense", "phrases": ["250,890"]},
                          {"grade_id": "test_overfit", "phrases": ["Nearly 100 %"]}]}
    leaky = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("The dense layer has 250\u2009890 parameters."),
        grade_cell("test_dense"),
        nbformat.v4.new_markdown_cell("Training accuracy climbs to nearly 100%."),
        grade_cell("test_overfit"),
    ])
    assert answers_given_away(leaky, claims, "hw/leaky") == [
        "hw/leaky: markdown cell 0 gives away the answer to 'test_dense' (cell 1): it contains '250,890'",
        "hw/leaky: markdown cell 2 gives away the answer to 'test_overfit' (cell 3): it contains 'Nearly 100 %'",
    ]
    leaky.cells[0].source = "How many parameters does the dense layer have?"
    leaky.cells.insert(2, nbformat.v4.new_markdown_cell("It has 250,890."))  # after its grade cell: allowed
    leaky.cells[3].source = "Does it overfit?"
    assert answers_given_away(leaky, claims, "hw/leaky") == []
    leaky.cells.append(grade_cell("test_unclaimed"))
    claims["answers"].append({"grade_id": "test_gone", "phrases": ["x"]})
    assert answers_given_away(leaky, claims, "hw/leaky") == [
        "hw/leaky: the claims name grade_id 'test_gone', which the notebook has no grade cell of",
        "hw/leaky: grade cell 'test_unclaimed' (cell 5) has no [[answers]] phrases",
    ]
