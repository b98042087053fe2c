"""Assignment cnn_design: release → submit (notebooks and saved model files) → autograde.

Runs real nbgrader autograding in real kernels (grading budget) in a temporary course folder.
Grading trains nothing: the model files handed in with cnn_vs_dense and predictions are loaded and
evaluated on the test split. The submissions here carry model files that are quick to make:

* ``solution``: the source notebooks with small CNNs trained for seconds: every point except the
  three accuracy tests, which fail with the accuracy found (a tiny model cannot reach 98.5 %);
* ``missing``, ``broken``: no model files; a corrupt file, a truncated file and models for 32×32×3
  images: 0 for those tests, with a message that says what is wrong;
* ``full_run``: where a full run of the source notebooks has left its models in source/cnn_design/
  (they are gitignored, so a fresh clone has none), those models must score every point.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, build_course, skip_without

ASSIGNMENT = "cnn_design"
NOTEBOOKS = ("architectures", "cnn_vs_dense", "predictions")
MODEL_FILES = {"cnn_vs_dense": ("best_mnist.keras", "best_fashion.keras"), "predictions": ("mnist_cnn.keras",)}
ACCURACY_TESTS = {("cnn_vs_dense", "test_best_mnist_model"): "best_mnist.keras",
                  ("cnn_vs_dense", "test_best_fashion_model"): "best_fashion.keras",
                  ("predictions", "test_mnist_cnn_model"): "mnist_cnn.keras"}
FULL_RUN_FILES = {name: ROOT / "source" / ASSIGNMENT / name for files in MODEL_FILES.values() for name in files}

pytestmark = pytest.mark.notebooks


def quick_model(dataset: str, input_shape=(28, 28, 1)):
    """A small CNN trained for one epoch on 2,000 images: loads and works, but far below the thresholds."""
    import keras
    from keras import layers

    from cnn_course.data import add_channel_axis, load_dataset
    from cnn_course.training import fit, seed_everything

    seed_everything(0)
    model = keras.Sequential([keras.Input(input_shape), layers.Rescaling(1 / 255), layers.Conv2D(8, 3, activation="relu"),
                              layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if input_shape == (28, 28, 1):
        (x, y), _ = load_dataset(dataset, n_train=2000, n_test=100, verbose=False)
        fit(model, add_channel_axis(x), y, epochs=1, batch_size=64, verbose=0)
    return model


def submission_folder(course, student):
    return course.root / "submitted" / student / ASSIGNMENT


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One autograde run over the submissions, then one more, timed, for a single submission."""
    skip_without("fashion_mnist")
    course = build_course(tmp_path_factory.mktemp("cnn_design") / "course", ASSIGNMENT)
    # A full run leaves its models in source/cnn_design/, and nbgrader's autograde copies every
    # non-notebook file of source/ over the submission's (see the last test). Grade as a fresh
    # clone would, without them.
    for model in (course.root / "source" / ASSIGNMENT).glob("*.keras"):
        model.unlink()
    source = {name: course.source_notebook(ASSIGNMENT, name) for name in NOTEBOOKS}
    released = {name: course.released_notebook(ASSIGNMENT, name) for name in NOTEBOOKS}

    course.submit("solution", ASSIGNMENT, source)
    folder = submission_folder(course, "solution")
    quick_model("mnist").save(folder / "best_mnist.keras")
    quick_model("fashion_mnist").save(folder / "best_fashion.keras")
    shutil.copy(folder / "best_mnist.keras", folder / "mnist_cnn.keras")

    course.submit("blank", ASSIGNMENT, released)

    course.submit("broken", ASSIGNMENT, {name: source[name] for name in MODEL_FILES})
    folder = submission_folder(course, "broken")
    (folder / "best_mnist.keras").write_bytes(os.urandom(50_000))
    quick_model("fashion_mnist", input_shape=(32, 32, 3)).save(folder / "best_fashion.keras")
    whole = (submission_folder(course, "solution") / "mnist_cnn.keras").read_bytes()
    (folder / "mnist_cnn.keras").write_bytes(whole[: len(whole) // 2])

    if all(path.is_file() for path in FULL_RUN_FILES.values()):
        course.submit("full_run", ASSIGNMENT, {name: source[name] for name in MODEL_FILES})
        for name, path in FULL_RUN_FILES.items():
            shutil.copy(path, submission_folder(course, "full_run") / name)

    course.autograde(ASSIGNMENT)

    # The submission with no model files at all, graded on its own and timed: evaluation only, no training.
    course.submit("missing", ASSIGNMENT, {name: source[name] for name in MODEL_FILES})
    from cnn_grader.course import run_nbgrader

    started = time.perf_counter()
    run_nbgrader(course.root, "autograde", ASSIGNMENT, "--student", "missing", "--log-level=WARN")
    course.seconds_for_missing = time.perf_counter() - started

    # A model file in source/ (what a full run of the solution leaves there) and a student's own file.
    quick_model("mnist", input_shape=(32, 32, 3)).save(course.root / "source" / ASSIGNMENT / "best_mnist.keras")
    course.submit("own_file", ASSIGNMENT, {"cnn_vs_dense": source["cnn_vs_dense"]})
    shutil.copy(submission_folder(course, "solution") / "best_mnist.keras", submission_folder(course, "own_file"))
    run_nbgrader(course.root, "autograde", ASSIGNMENT, "--student", "own_file", "--log-level=WARN")
    return course


def accuracy_scores(course, student):
    scores = course.scores(ASSIGNMENT, student)
    return {key: scores[key] for key in ACCURACY_TESTS if key in scores}


def test_the_solution_scores_every_point_but_the_accuracy_of_models_trained_for_seconds(graded):
    maximum = graded.max_scores(ASSIGNMENT)
    assert sum(maximum.values()) == 8 + 8 + 5
    scores = graded.scores(ASSIGNMENT, "solution")
    assert {key: score for key, score in scores.items() if key not in ACCURACY_TESTS} == \
        {key: points for key, points in maximum.items() if key not in ACCURACY_TESTS}
    assert accuracy_scores(graded, "solution") == dict.fromkeys(ACCURACY_TESTS, 0)
    feedback = graded.feedback_text(ASSIGNMENT, "solution", "cnn_vs_dense")
    assert "best_mnist.keras classifies" in feedback and "at least 98.5% is needed" in feedback
    assert "best_fashion.keras classifies" in feedback and "at least 90.0% is needed" in feedback
    assert "at least 99.0% is needed" in graded.feedback_text(ASSIGNMENT, "solution", "predictions")


def test_grading_trains_nothing_and_leaves_the_model_files_as_handed_in(graded):
    for name in MODEL_FILES:
        feedback = graded.feedback_text(ASSIGNMENT, "solution", name)
        assert "Grading run: nothing is trained" in feedback
        assert "Epoch 1/" not in feedback and "/step" not in feedback, name
    for files in MODEL_FILES.values():
        for file in files:
            handed_in = submission_folder(graded, "solution") / file
            assert digest(graded.root / "autograded" / "solution" / ASSIGNMENT / file) == digest(handed_in)


def test_grading_a_submission_takes_seconds(graded):
    # Two notebooks, each a kernel start, a data load and an evaluation of the model files (here: none).
    assert graded.seconds_for_missing < 2 * 45, graded.seconds_for_missing


def test_missing_model_files_score_zero_with_a_message(graded):
    assert accuracy_scores(graded, "missing") == dict.fromkeys(ACCURACY_TESTS, 0)
    for (notebook, _), file in ACCURACY_TESTS.items():
        feedback = graded.feedback_text(ASSIGNMENT, "missing", notebook)
        assert f"No saved model at {file}" in feedback, file


def test_corrupt_and_wrong_shape_model_files_score_zero_with_a_message(graded):
    assert accuracy_scores(graded, "broken") == dict.fromkeys(ACCURACY_TESTS, 0)
    feedback = graded.feedback_text(ASSIGNMENT, "broken", "cnn_vs_dense")
    assert "best_mnist.keras is not a saved Keras model: a .keras file is a zip archive" in feedback
    assert "best_fashion.keras takes images of shape 32×32×3, but the Fashion-MNIST images have shape 28×28×1" in feedback
    assert "mnist_cnn.keras is not a saved Keras model" in graded.feedback_text(ASSIGNMENT, "broken", "predictions")
    assert graded.scores(ASSIGNMENT, "broken")[("cnn_vs_dense", "test_cnn_designs")] == 2


def test_the_blank_release_scores_zero_with_a_readable_error(graded):
    scores = graded.scores(ASSIGNMENT, "blank")
    assert scores and set(scores.values()) == {0}
    assert "This cell is yours to write" in graded.feedback_text(ASSIGNMENT, "blank", "architectures")


def test_the_models_of_a_full_run_score_every_point(graded):
    if not (submission_folder(graded, "full_run")).is_dir():
        pytest.skip("no full run has left its models in source/cnn_design/ (" +
                    ", ".join(sorted(FULL_RUN_FILES)) + ")")
    assert accuracy_scores(graded, "full_run") == {key: graded.max_scores(ASSIGNMENT)[key] for key in ACCURACY_TESTS}


def test_released_notebooks_hold_no_solution_no_hidden_test_and_no_model(graded):
    for name in NOTEBOOKS:
        text = nbformat.writes(graded.released_notebook(ASSIGNMENT, name))
        for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "assert_same_architecture", 'correct="'):
            assert marker not in text, (name, marker)
        assert "# here is your code coming" in text or "YOUR ANSWER HERE" in text
    assert not list((graded.root / "release" / ASSIGNMENT).glob("*.keras"))


def test_every_notebook_states_its_points_at_the_top(graded):
    from cnn_grader.course import notebook_points

    for name in NOTEBOOKS:
        notebook = graded.source_notebook(ASSIGNMENT, name)
        points = notebook_points(graded.root / "source" / ASSIGNMENT / f"{name}.ipynb")
        assert f"**Points: {points.total_points:g}" in notebook.cells[0].source, name


def test_the_manual_question_has_a_rubric():
    notebook = nbformat.read(ROOT / "source" / ASSIGNMENT / "cnn_vs_dense.ipynb", as_version=4)
    manual = [cell for cell in notebook.cells
              if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("grade")]
    assert len(manual) == 1 and "Rubric" in manual[0].source and manual[0].metadata["nbgrader"]["points"] == 2


def test_nbgrader_validate_passes_on_the_architectures_notebook(tmp_path):
    skip_without("fashion_mnist")
    notebook = tmp_path / "architectures.ipynb"
    shutil.copy(ROOT / "source" / ASSIGNMENT / notebook.name, notebook)
    result = subprocess.run([Path(sys.executable).with_name("nbgrader"), "validate", str(notebook)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout + result.stderr


def test_a_model_file_left_in_source_does_not_replace_the_students(graded):
    handed_in = submission_folder(graded, "own_file") / "best_mnist.keras"
    graded_file = graded.root / "autograded" / "own_file" / ASSIGNMENT / "best_mnist.keras"
    assert digest(graded_file) == digest(handed_in), "autograde graded the file from source/, not the student's"
