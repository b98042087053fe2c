"""Tests of the helpers that assignment cnn_design added to cnn_course.

* checks.load_saved_model / evaluate_saved_model / assert_saved_model_accuracy: grading a model file
  by evaluation only: a missing, empty, corrupt or wrong-shape file fails with a clear message;
  any keras.Model that takes the images and returns 10 scores is accepted.
* checks.assert_cnn_designs: at least two different CNNs of the right shape.
* training.model_file and training.epoch_accuracy_table.

The saved models here need no training: a model whose scores ignore the image and always favour
one class has an accuracy that is known exactly, the share of that class in the test split.
"""

import os
import zipfile

import keras
import numpy as np
import pytest
from keras import layers

from cnn_course import checks
from cnn_course.data import load_dataset
from cnn_course.training import RunBudget, epoch_accuracy_table, model_file


def constant_sequential(favourite: int, input_shape=(28, 28, 1), *, logits: bool = False):
    """A model that always gives class ``favourite`` the highest score, whatever the image."""
    stack = [keras.Input(input_shape), layers.Rescaling(1 / 255)]
    if len(input_shape) > 1:
        stack.append(layers.Flatten())
    dense = layers.Dense(10, activation=None if logits else "softmax")
    model = keras.Sequential([*stack, dense])
    kernel, bias = dense.get_weights()
    bias[:] = 0.0
    bias[favourite] = 5.0
    dense.set_weights([np.zeros_like(kernel), bias])
    return model


def constant_functional(favourite: int):
    """The same as a functional model with logits."""
    inputs = keras.Input((28, 28, 1))
    dense = layers.Dense(10)
    outputs = dense(layers.Flatten()(layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, outputs)
    kernel, bias = dense.get_weights()
    bias[:] = 0.0
    bias[favourite] = 5.0
    dense.set_weights([np.zeros_like(kernel), bias])
    return model


@pytest.fixture(scope="module")
def mnist_test_labels():
    """The labels of the MNIST test split the helpers evaluate on (the full split, or the offline sample's)."""
    _, (_, y_test) = load_dataset("mnist", verbose=False)
    return y_test


def save(model, path):
    model.save(path)
    return str(path)


# --------------------------------------------------------------------------------------------
# Saved models
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, favourite", [
    (lambda: constant_sequential(3), 3),
    (lambda: constant_sequential(7, logits=True), 7),
    (lambda: constant_sequential(1, input_shape=(28, 28)), 1),
    (lambda: constant_sequential(2, input_shape=(784,)), 2),
    (lambda: constant_functional(0), 0),
], ids=["sequential-softmax", "logits", "input-28x28", "input-784", "functional"])
def test_any_model_that_takes_the_images_is_evaluated_exactly(build, favourite, tmp_path, mnist_test_labels, capsys):
    path = save(build(), tmp_path / "model.keras")
    accuracy = checks.evaluate_saved_model(path, "mnist")
    assert accuracy == pytest.approx(np.mean(mnist_test_labels == favourite))
    assert "model.keras: " in capsys.readouterr().out


def test_the_accuracy_check_passes_at_the_minimum_and_fails_above_it(tmp_path, mnist_test_labels, monkeypatch):
    monkeypatch.setenv("CNN_COURSE_BUDGET", "full")  # a smoke run (the tests' default) needs 0 % only
    path = save(constant_sequential(1), tmp_path / "best_mnist.keras")
    expected = float(np.mean(mnist_test_labels == 1))
    # Returns None: nbgrader would take a number shown by a grade cell as its partial credit.
    assert checks.assert_saved_model_accuracy(path, "mnist", minimum=expected) is None
    checks.assert_saved_model_accuracy(path, "mnist", minimum=0.0)
    with pytest.raises(AssertionError) as failure:
        checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985)
    message = str(failure.value)
    assert f"classifies {expected:.2%} of the MNIST test images correctly" in message
    assert "at least 98.5% is needed" in message
    assert "Rescaling" in message


def test_a_subset_of_the_test_split_can_be_evaluated(tmp_path):
    path = save(constant_sequential(4), tmp_path / "m.keras")
    accuracy = checks.evaluate_saved_model(path, "mnist", n_test=200, verbose=False)
    assert 0.0 <= accuracy <= 1.0


def test_a_missing_file_fails_with_a_message(tmp_path):
    with pytest.raises(AssertionError, match=r"No saved model at best_mnist\.keras .*hand in best_mnist\.keras"):
        checks.assert_saved_model_accuracy(tmp_path / "best_mnist.keras", "mnist", minimum=0.985)


@pytest.mark.parametrize("content, expected", [
    (b"", r"is empty \(0 bytes\)"),
    (os.urandom(4096), r"not a saved Keras model: a \.keras file is a zip archive"),
    (b"PK\x03\x04" + os.urandom(100), r"not a saved Keras model"),
], ids=["empty", "random-bytes", "truncated-zip"])
def test_a_corrupt_file_fails_with_a_message(content, expected, tmp_path):
    path = tmp_path / "best_mnist.keras"
    path.write_bytes(content)
    with pytest.raises(AssertionError, match=expected):
        checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985)


def test_a_zip_that_is_no_model_fails_with_keras_reason(tmp_path):
    path = tmp_path / "best_mnist.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(AssertionError, match=r"could not be loaded as a Keras model \(\w+"):
        checks.load_saved_model(path, "mnist")


def test_a_model_for_other_images_fails_with_the_shapes(tmp_path):
    path = save(constant_sequential(0, input_shape=(32, 32, 3)), tmp_path / "best_mnist.keras")
    with pytest.raises(AssertionError) as failure:
        checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985)
    assert "takes images of shape 32×32×3, but the MNIST images have shape 28×28×1" in str(failure.value)
    assert "raw pixel values 0-255" in str(failure.value)


def test_a_model_with_another_number_of_outputs_fails(tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(5)])
    path = save(model, tmp_path / "five.keras")
    with pytest.raises(AssertionError, match=r"returns scores of shape 5 per image; it must return 10 scores"):
        checks.load_saved_model(path, "mnist")


def test_a_model_with_two_outputs_fails(tmp_path):
    inputs = keras.Input((28, 28, 1))
    flat = layers.Flatten()(inputs)
    model = keras.Model(inputs, [layers.Dense(10)(flat), layers.Dense(10)(flat)])
    path = save(model, tmp_path / "two.keras")
    with pytest.raises(AssertionError, match=r"returns 2 outputs"):
        checks.load_saved_model(path, "mnist")


def test_a_lambda_layer_is_not_run_when_loading(tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Lambda(lambda x: x * 2), layers.Flatten(),
                              layers.Dense(10)])
    path = save(model, tmp_path / "lambda.keras")
    with pytest.raises(AssertionError, match=r"could not be loaded as a Keras model"):
        checks.load_saved_model(path, "mnist")


def test_a_cifar10_model_is_checked_against_cifar10_shapes(tmp_path):
    path = save(constant_sequential(0, input_shape=(32, 32, 3)), tmp_path / "cifar.keras")
    model, shape = checks.load_saved_model(path, "cifar10")
    assert shape == (32, 32, 3) and isinstance(model, keras.Model)


def test_a_minimum_in_percent_is_a_course_error(tmp_path):
    path = save(constant_sequential(0), tmp_path / "m.keras")
    with pytest.raises(ValueError, match="fraction"):
        checks.assert_saved_model_accuracy(path, "mnist", minimum=98.5)


# --------------------------------------------------------------------------------------------
# CNN designs
# --------------------------------------------------------------------------------------------

def small_cnn():
    return keras.Sequential([keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Conv2D(8, 3, activation="relu"),
                             layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10, activation="softmax")])


def deeper_cnn():
    return keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(),
                             layers.ReLU(), layers.MaxPooling2D(2), layers.Conv2D(16, 3), layers.ReLU(),
                             layers.GlobalAveragePooling2D(), layers.Dense(10)])


def nested_cnn():
    features = keras.Sequential([layers.Conv2D(4, 5), layers.ReLU()], name="features")
    return keras.Sequential([keras.Input((28, 28, 1)), features, layers.Flatten(), layers.Dense(10)])


def dense_only():
    return keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10)])


def test_different_cnns_pass():
    checks.assert_cnn_designs({"small": small_cnn, "deeper": deeper_cnn, "nested": nested_cnn})


@pytest.mark.parametrize("designs, message", [
    ([small_cnn, deeper_cnn], r"Set designs to a dict .* found a list"),
    ({"small": small_cnn}, r"Designs has 1 design\(s\); at least 2 are needed"),
    ({"small": small_cnn, "model": deeper_cnn()}, r"Design 'model' must be a function that returns a new model"),
    ({"small": small_cnn, "dense": dense_only}, r"Design 'dense' has no Conv2D layer"),
    ({"small": small_cnn, "again": small_cnn}, r"Designs 'small' and 'again' have the same architecture"),
    ({"small": small_cnn, "broken": lambda: 1 / 0}, r"Design 'broken' failed when called: ZeroDivisionError"),
    ({"small": small_cnn, "none": lambda: None}, r"Design 'none' returned a NoneType, not a keras.Model"),
    ({"small": small_cnn, "colour": lambda: keras.Sequential([keras.Input((32, 32, 3)), layers.Conv2D(4, 3),
                                                              layers.Flatten(), layers.Dense(10)])},
     r"Design 'colour' takes input of shape 32×32×3; it must take 28×28×1"),
    ({"small": small_cnn, "five": lambda: keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3),
                                                            layers.Flatten(), layers.Dense(5)])},
     r"Design 'five' has output shape 5; it must end with 10 outputs"),
], ids=["list", "one", "model-not-function", "no-conv", "same-twice", "raises", "returns-none", "input-shape",
        "outputs"])
def test_a_wrong_set_of_designs_fails_with_a_message(designs, message):
    with pytest.raises(AssertionError, match=message):
        checks.assert_cnn_designs(designs)


# --------------------------------------------------------------------------------------------
# Run helpers
# --------------------------------------------------------------------------------------------

def test_model_file_is_next_to_the_notebook_except_in_smoke_runs():
    assert model_file("best_mnist.keras", RunBudget("full")) == "best_mnist.keras"
    assert model_file("best_mnist.keras", RunBudget("grading")) == "best_mnist.keras"
    smoke = model_file("best_mnist.keras", RunBudget("smoke"))
    assert os.path.isabs(smoke) and smoke.endswith("best_mnist.keras") and os.path.isdir(os.path.dirname(smoke))
    assert model_file("mnist_cnn.keras", RunBudget("smoke")) == os.path.join(os.path.dirname(smoke), "mnist_cnn.keras")
    with pytest.raises(ValueError):
        model_file("", RunBudget("full"))


def test_epoch_accuracy_table_puts_published_values_next_to_the_run():
    runs = {"A": {"val_accuracy": [0.97, 0.98]}, "B": {"val_accuracy": [0.5]}}
    table = epoch_accuracy_table(runs, {"A": [97.02, 97.98, 98.34]}, ours="Keras", theirs="seed")
    assert list(table.columns) == [("A", "Keras"), ("A", "seed"), ("B", "Keras")]
    assert list(table.index) == [1, 2, 3]
    assert table.loc[2, ("A", "Keras")] == pytest.approx(98.0)
    assert table.loc[3, ("A", "seed")] == pytest.approx(98.34)
    assert np.isnan(table.loc[3, ("A", "Keras")]) and np.isnan(table.loc[2, ("B", "Keras")])
    with pytest.raises(KeyError, match="has no 'val_accuracy'"):
        epoch_accuracy_table({"C": {"loss": [1.0]}})


def test_a_smoke_run_may_lower_the_minimum_but_never_under_nbgrader(tmp_path, monkeypatch, capsys):
    path = save(constant_sequential(1), tmp_path / "m.keras")
    monkeypatch.delenv("CNN_COURSE_BUDGET", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("CNN_COURSE_SMOKE", "1")
    checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985)  # a smoke run lowers it to 0 by default
    assert "Smoke run: the minimum accuracy is 0.0% instead of 98.5%" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="at least 98.5% is needed"):
        checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985, smoke_minimum=None)
    monkeypatch.setenv("CNN_COURSE_BUDGET", "smoke")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="at least 98.5% is needed"):
        checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985, smoke_minimum=0.0)
    monkeypatch.delenv("NBGRADER_EXECUTION")
    monkeypatch.setenv("CNN_COURSE_BUDGET", "full")
    with pytest.raises(AssertionError, match="at least 98.5% is needed"):
        checks.assert_saved_model_accuracy(path, "mnist", minimum=0.985, smoke_minimum=0.0)


def test_predict_scores_equals_model_predict():
    from cnn_course.training import predict_scores

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Flatten(),
                              layers.Dense(10, activation="softmax")])
    images = np.random.default_rng(0).integers(0, 256, size=(1234, 28, 28, 1), dtype=np.uint8)
    scores = predict_scores(model, images, batch_size=500)
    assert scores.shape == (1234, 10) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, model.predict(images.astype(np.float32), verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        predict_scores(model, images, batch_size=0)
    with pytest.raises(ValueError):
        predict_scores(model, images[:0])


def test_plot_against_published_draws_a_solid_and_a_dotted_line_per_run():
    import matplotlib.pyplot as plt

    from cnn_course.plots import plot_against_published

    runs = {"A": {"val_accuracy": [0.97, 0.98]}, "B": {"val_accuracy": [0.96, 0.97]}}
    figure = plot_against_published(runs, {"A": [97.02, 97.98]}, title="MNIST")
    lines = figure.axes[0].lines
    assert [line.get_label() for line in lines] == ["A: this run", "A: published", "B: this run"]
    assert list(lines[0].get_ydata()) == pytest.approx([97.0, 98.0])
    assert lines[1].get_linestyle() == ":" and lines[0].get_color() == lines[1].get_color()
    with pytest.raises(ValueError, match="has no 'val_accuracy'"):
        plot_against_published({"C": {"loss": [1.0]}}, {})
    plt.close("all")


def test_smoke_model_folders_of_processes_that_are_gone_are_removed(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from cnn_course import training

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(training, "_SMOKE_MODEL_DIR", None)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"cnn_course_smoke_models_{int(gone.stdout)}"
    stale.mkdir()
    (stale / "best_mnist.keras").write_bytes(b"old")
    alive = tmp_path / f"cnn_course_smoke_models_{os.getppid()}"
    alive.mkdir()
    path = model_file("best_mnist.keras", RunBudget("smoke"))
    assert path == str(tmp_path / f"cnn_course_smoke_models_{os.getpid()}" / "best_mnist.keras")
    assert not stale.exists() and alive.exists()
