"""Assignment cnn_cifar10: release → submit → autograde, graded as a teacher would grade it.

Runs real nbgrader autograding in real kernels (grading budget), in a temporary course folder.
Needs CIFAR-10 (the course's subset in ../shared/data is enough); skipped with a reason without it.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import build_course, replace_cell, skip_without

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "cnn_cifar10"
NOTEBOOKS = ("model_comparison", "batch_size")

pytestmark = pytest.mark.notebooks

MODEL1_FUNCTIONAL = '''
inputs = keras.Input(shape=(32, 32, 3))
x = layers.ReLU()(layers.Conv2D(filters=16, kernel_size=3, padding="valid")(inputs))
x = layers.MaxPooling2D(pool_size=(2, 2), strides=2)(x)
x = layers.Activation(keras.activations.relu)(layers.Conv2D(32, (3, 3))(x))
x = layers.Dense(32)(layers.Flatten()(x))
outputs = layers.Softmax()(layers.Dense(10)(layers.ReLU()(x)))
model1 = keras.Model(inputs, outputs, name="my_model1")
'''

MODEL1_WITHOUT_POOL = '''
model1 = keras.Sequential(name="model1")
model1.add(keras.Input((32, 32, 3)))
model1.add(layers.Conv2D(16, (3, 3), activation="relu"))
model1.add(layers.Conv2D(32, (3, 3), activation="relu"))
model1.add(layers.Flatten())
model1.add(layers.Dense(32, activation="relu"))
model1.add(layers.Dense(10, activation="softmax"))
'''

MODEL3_FUNCTIONAL = '''
inputs = keras.Input(shape=(32, 32, 3))
x = layers.SpatialDropout2D(rate=0.2)(layers.Conv2D(16, 3, activation="relu")(inputs))
x = layers.MaxPooling2D()(x)
x = layers.SpatialDropout2D(rate=0.2)(layers.ReLU()(layers.Conv2D(32, 3)(x)))
x = layers.Dropout(rate=0.5)(layers.Flatten()(x))
x = layers.Dropout(0.5)(layers.Dense(32, activation="relu")(x))
model3 = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
'''


def model3_with_spatial_rate(rate: float) -> str:
    """The source's model 3, written out, with ``rate`` in the first SpatialDropout2D (0.2 is right)."""
    return f'''
model3 = keras.Sequential(name="model3")
model3.add(keras.Input((32, 32, 3)))
model3.add(layers.Conv2D(16, (3, 3), activation="relu"))
model3.add(layers.SpatialDropout2D({rate}))
model3.add(layers.MaxPooling2D((2, 2)))
model3.add(layers.Conv2D(32, (3, 3), activation="relu"))
model3.add(layers.SpatialDropout2D(0.2))
model3.add(layers.Flatten())
model3.add(layers.Dropout(0.5))
model3.add(layers.Dense(32, activation="relu"))
model3.add(layers.Dropout(0.5))
model3.add(layers.Dense(10, activation="softmax"))
'''


def notebook_scores(course, student: str, notebook: str) -> dict:
    return {grade: score for (name, grade), score in course.scores(ASSIGNMENT, student).items() if name == notebook}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One autograde run over five submissions; returns the course."""
    skip_without("cifar10")
    course = build_course(tmp_path_factory.mktemp("cnn_cifar10") / "course", ASSIGNMENT)

    source = {name: course.source_notebook(ASSIGNMENT, name) for name in NOTEBOOKS}
    course.submit("solution", ASSIGNMENT, source)
    course.submit("blank", ASSIGNMENT, {name: course.released_notebook(ASSIGNMENT, name) for name in NOTEBOOKS})

    comparison = replace_cell(source["model_comparison"], "model1_model", MODEL1_FUNCTIONAL)
    comparison = replace_cell(comparison, "model3_model", MODEL3_FUNCTIONAL)
    comparison = replace_cell(comparison, "answer_comparison", "answer_comparison = ' c'")
    comparison = replace_cell(comparison, "answer_augmentation", "answer_augmentation = 'b '")
    batch_size = source["batch_size"]
    for grade_id, answer in [("answer_batch_size", 'answer_batch_size = "b "'),
                             ("answer_memory", "answer_memory = 'c'"),
                             ("updates_per_epoch", "updates_batch_1 = 50000.0\nupdates_batch_8 = 50_000 / 8\n"
                                                   "updates_batch_20000 = -(-50_000 // 20_000)")]:
        batch_size = replace_cell(batch_size, grade_id, answer)
    course.submit("other_style", ASSIGNMENT, {"model_comparison": comparison, "batch_size": batch_size})

    course.submit("wrong_dropout_rate", ASSIGNMENT, {"model_comparison": replace_cell(
        source["model_comparison"], "model3_model", model3_with_spatial_rate(0.5))})
    course.submit("missing_pool", ASSIGNMENT, {"model_comparison": replace_cell(
        source["model_comparison"], "model1_model", MODEL1_WITHOUT_POOL)})
    course.autograde(ASSIGNMENT)
    return course


def test_the_solution_scores_full_autograded_points(graded):
    maximum = graded.max_scores(ASSIGNMENT)
    assert maximum == {
        ("model_comparison", "test_model1_parameter_count"): 1,
        ("model_comparison", "test_model1_layer_sequence"): 1,
        ("model_comparison", "test_model1_layer_settings"): 1,
        ("model_comparison", "test_model3_dropout_layers"): 1,
        ("model_comparison", "test_model3_layer_sequence"): 1,
        ("model_comparison", "test_model3_dropout_rates"): 1,
        ("model_comparison", "test_comparison"): 2,
        ("model_comparison", "test_augmentation"): 1,
        ("batch_size", "test_batch_size"): 2,
        ("batch_size", "test_memory"): 1,
        ("batch_size", "test_updates_batch_1"): 1,
        ("batch_size", "test_updates_batch_8"): 1,
        ("batch_size", "test_updates_batch_20000"): 1,
    }
    assert graded.scores(ASSIGNMENT, "solution") == maximum


def test_the_blank_release_scores_zero_with_a_readable_error(graded):
    scores = graded.scores(ASSIGNMENT, "blank")
    assert set(scores) == set(graded.max_scores(ASSIGNMENT))
    assert set(scores.values()) == {0}
    for name in NOTEBOOKS:
        assert "This cell is yours to write" in graded.feedback_text(ASSIGNMENT, "blank", name), name


def test_a_correct_answer_in_another_style_scores_full_points(graded):
    assert graded.scores(ASSIGNMENT, "other_style") == graded.max_scores(ASSIGNMENT)


def test_a_wrong_dropout_rate_loses_exactly_the_rates_point(graded):
    assert notebook_scores(graded, "wrong_dropout_rate", "model_comparison") == {
        "test_model1_parameter_count": 1, "test_model1_layer_sequence": 1, "test_model1_layer_settings": 1,
        "test_model3_dropout_layers": 1, "test_model3_layer_sequence": 1, "test_model3_dropout_rates": 0,
        "test_comparison": 2, "test_augmentation": 1,
    }
    feedback = graded.feedback_text(ASSIGNMENT, "wrong_dropout_rate", "model_comparison")
    assert "Layer 2 (SpatialDropout2D): expected dropout rate 0.2, found 0.5." in feedback


def test_a_missing_pool_loses_exactly_the_points_that_check_it(graded):
    assert notebook_scores(graded, "missing_pool", "model_comparison") == {
        "test_model1_parameter_count": 0, "test_model1_layer_sequence": 0, "test_model1_layer_settings": 1,
        "test_model3_dropout_layers": 1, "test_model3_layer_sequence": 1, "test_model3_dropout_rates": 1,
        "test_comparison": 2, "test_augmentation": 1,
    }
    feedback = graded.feedback_text(ASSIGNMENT, "missing_pool", "model_comparison")
    assert "Model 1: expected 178,506 parameters in total, found 808,266." in feedback
    assert "After the activation 'relu' of layer 1 (Conv2D), expected a MaxPooling2D" in feedback


def test_model3_has_one_blank_per_dropout_layer():
    released = nbformat.read(ROOT / "release" / ASSIGNMENT / "model_comparison.ipynb", as_version=4)
    model3 = next(cell for cell in released.cells
                  if cell.metadata.get("nbgrader", {}).get("grade_id") == "model3_model")
    assert model3.source.count("# here is your code coming") == 4  # one blank per dropout layer


def test_every_notebook_states_its_points_at_the_top():
    from cnn_grader.course import notebook_points

    for name in NOTEBOOKS:
        path = ROOT / "source" / ASSIGNMENT / f"{name}.ipynb"
        points = notebook_points(path)
        assert f"**Points: {points.total_points:g}" in nbformat.read(path, as_version=4).cells[0].source, name


def test_fidelity_of_the_stored_full_run_shows_what_the_notebooks_state():
    """The committed source notebooks hold a full run, and it shows model 3 worst and the large-batch trade-off."""
    spec = importlib.util.spec_from_file_location("fidelity", ROOT / "bench" / "fidelity.py")
    fidelity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fidelity)
    results = fidelity.check_notebooks(NOTEBOOKS)
    rows = [row for result in results for row in result.rows]
    assert rows and all(row.ok for row in rows), [row for row in rows if not row.ok]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_nbgrader_validate_passes_on_the_source_notebook(name, tmp_path):
    skip_without("cifar10")
    notebook = tmp_path / f"{name}.ipynb"
    shutil.copy(ROOT / "source" / ASSIGNMENT / notebook.name, notebook)
    result = subprocess.run([Path(sys.executable).with_name("nbgrader"), "validate", str(notebook)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout + result.stderr
