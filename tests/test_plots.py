"""Tests of cnn_course.plots: what the figures hold, not how they look."""

import matplotlib

matplotlib.use("Agg")

import subprocess
import sys
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from cnn_course import plots
from cnn_course.data import class_names


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(epochs=4, offset=0.0, val=True):
    values = {
        "loss": list(np.linspace(1.0, 0.4, epochs) + offset),
        "accuracy": list(np.linspace(0.5, 0.9, epochs) - offset),
    }
    if val:
        values["val_loss"] = list(np.linspace(1.1, 0.6, epochs) + offset)
        values["val_accuracy"] = list(np.linspace(0.45, 0.8, epochs) - offset)
    return values


def labels_of(ax):
    return [line.get_label() for line in ax.lines]


# --------------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------------

def test_one_history_two_subplots_with_solid_train_and_dashed_validation():
    fig = plots.plot_learning_curves(history(epochs=5), title="run")
    assert isinstance(fig, Figure)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    for ax in fig.axes:
        assert labels_of(ax) == ["train", "validation"]
        train, val = ax.lines
        assert train.get_linestyle() == "-" and val.get_linestyle() == "--"
        assert list(train.get_xdata()) == [1, 2, 3, 4, 5]
        assert ax.get_xlabel() == "epoch"
        assert ax.get_legend() is not None
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), history(epochs=5)["loss"])
    assert fig._suptitle.get_text() == "run"


def test_history_objects_with_history_attribute_are_read():
    fig = plots.plot_learning_curves(SimpleNamespace(history=history(epochs=3)))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


def test_keras_history_object_is_read():
    keras = pytest.importorskip("keras")
    callback = keras.callbacks.History()
    callback.history = history(epochs=2)
    fig = plots.plot_learning_curves(callback, metrics=("loss",))
    assert len(fig.axes) == 1 and list(fig.axes[0].lines[0].get_xdata()) == [1, 2]


def test_missing_validation_keys_are_not_drawn():
    fig = plots.plot_learning_curves(history(val=False))
    assert all(labels_of(ax) == ["train"] for ax in fig.axes)


def test_several_runs_overlay_share_axes_one_colour_per_run():
    runs = {"small": history(offset=0.0), "big": SimpleNamespace(history=history(offset=0.1))}
    fig = plots.plot_learning_curves(runs)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert labels_of(ax) == ["small: train", "small: validation", "big: train", "big: validation"]
        colors = [to_rgba(line.get_color()) for line in ax.lines]
        assert colors[0] == colors[1] and colors[2] == colors[3] and colors[0] != colors[2]
        assert [line.get_linestyle() for line in ax.lines] == ["-", "--", "-", "--"]


def test_side_by_side_one_column_per_run_with_shared_y_limits():
    runs = {"A": history(offset=0.0), "B": history(offset=0.5), "C": history(epochs=6, offset=1.0)}
    fig = plots.plot_learning_curves(runs, layout="side_by_side")
    assert len(fig.axes) == 6  # 2 metrics x 3 runs
    grid = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in grid[0]] == ["A", "B", "C"]
    assert [ax.get_xlabel() for ax in grid.ravel()] == [""] * 3 + ["epoch"] * 3
    for row in grid:
        limits = {ax.get_ylim() for ax in row}
        assert len(limits) == 1
        low, high = limits.pop()
        for ax in row:
            for line in ax.lines:
                assert low <= np.min(line.get_ydata()) and np.max(line.get_ydata()) <= high
    # The loss of run C goes up to 2.1, above A's maximum: only sharing keeps A's axis that high.
    assert grid[0, 0].get_ylim()[1] >= 2.1
    assert list(grid[1, 2].lines[0].get_xdata()) == [1, 2, 3, 4, 5, 6]


def test_side_by_side_on_given_axes_equalizes_y_limits():
    fig, axes = plt.subplots(1, 2)
    runs = {"A": {"loss": [1.0, 0.5]}, "B": {"loss": [5.0, 4.0]}}
    assert plots.plot_learning_curves(runs, metrics="loss", layout="side_by_side", axes=axes) is fig
    assert axes[0].get_ylim() == axes[1].get_ylim()
    with pytest.raises(ValueError, match="needs 2 axes"):
        plots.plot_learning_curves(runs, metrics="loss", layout="side_by_side", axes=axes[:1])


def test_history_without_requested_metrics_raises():
    with pytest.raises(ValueError, match="none of the metrics"):
        plots.plot_learning_curves({"mse": [1.0, 0.5]})
    with pytest.raises(ValueError, match="'bad'"):
        plots.plot_learning_curves({"good": history(), "bad": {"mae": [0.3]}})
    with pytest.raises(ValueError, match="layout"):
        plots.plot_learning_curves(history(), layout="grid")


def test_metric_absent_from_every_run_is_left_out():
    fig = plots.plot_learning_curves({"loss": [1.0, 0.8], "val_loss": [1.2, 0.9]})
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "loss"


# --------------------------------------------------------------------------------------------
# Image grids
# --------------------------------------------------------------------------------------------

def test_image_grid_titles_are_green_when_right_and_red_when_wrong():
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    true = np.array([0, 1, 2, 3, 4, 5])
    predicted = np.array([0, 1, 7, 3, 9, 5])
    fig = plots.plot_image_grid(images, true, predicted, class_names="fashion_mnist", ncols=3)
    assert len(fig.axes) == 6
    names = class_names("fashion_mnist")
    for ax, t, p in zip(fig.axes, true, predicted):
        title = ax.title
        assert title.get_text() == f"true: {names[t]}\npred: {names[p]}"
        expected = plots.RIGHT_COLOR if t == p else plots.WRONG_COLOR
        assert to_rgba(title.get_color()) == to_rgba(expected)
    assert to_rgba(fig.axes[2].title.get_color()) == to_rgba("tab:red")


@pytest.mark.parametrize("shape", [(30, 6, 6), (30, 6, 6, 1), (30, 6, 6, 3)])
def test_image_grid_shows_n_images_of_any_layout(shape):
    images = np.random.default_rng(1).random(shape).astype(np.float32)
    fig = plots.plot_image_grid(images, np.arange(30) % 10, n=7, ncols=4, title="sample")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 7
    assert shown[0].title.get_text() == "true: 0"
    assert to_rgba(shown[0].title.get_color()) == to_rgba("black")
    assert shown[0].images[0].get_array().shape == shape[1:3] + ((3,) if shape[-1] == 3 else ())


def test_image_grid_scales_standardized_floats_and_accepts_one_hot_labels():
    images = np.random.default_rng(2).normal(size=(3, 5, 5, 3))
    fig = plots.plot_image_grid(images, np.eye(10)[[3, 1, 2]], class_names=["c%d" % i for i in range(10)])
    shown = fig.axes[0].images[0].get_array()
    assert shown.min() >= 0 and shown.max() <= 1
    assert fig.axes[0].title.get_text() == "true: c3"


def test_image_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        plots.plot_image_grid(np.zeros((2, 4, 4, 2)), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        plots.plot_image_grid(np.zeros((2, 4, 4)), [0, 1, 2])


# --------------------------------------------------------------------------------------------
# Extreme predictions
# --------------------------------------------------------------------------------------------

TRUE = np.array([0, 1, 2, 0, 1, 2])
PROBS = np.array([
    [0.90, 0.05, 0.05],  # 0: correct, p=0.90
    [0.20, 0.70, 0.10],  # 1: correct, p=0.70
    [0.60, 0.10, 0.30],  # 2: wrong (pred 0), p=0.60
    [0.01, 0.98, 0.01],  # 3: wrong (pred 1), p=0.98
    [0.05, 0.95, 0.00],  # 4: correct, p=0.95
    [0.10, 0.45, 0.45],  # 5: wrong (pred 1, tie broken by argmax), p=0.45
])


def test_extreme_prediction_indices_on_a_hand_made_example():
    best, worst = plots.extreme_prediction_indices(TRUE, PROBS, 2)
    assert best.tolist() == [4, 0]
    assert worst.tolist() == [3, 2]
    best, worst = plots.extreme_prediction_indices(TRUE.reshape(-1, 1), PROBS, 10)
    assert best.tolist() == [4, 0, 1]
    assert worst.tolist() == [3, 2, 5]
    assert plots.extreme_prediction_indices(TRUE, PROBS, 0)[0].size == 0


def test_extreme_prediction_indices_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        plots.extreme_prediction_indices(TRUE, PROBS[:, 0], 2)
    with pytest.raises(ValueError, match="rows"):
        plots.extreme_prediction_indices(TRUE[:4], PROBS, 2)


def test_plot_extreme_predictions_shows_both_groups_with_confidence():
    images = np.zeros((6, 4, 4), dtype=np.uint8)
    fig = plots.plot_extreme_predictions(images, TRUE, PROBS, class_names=["a", "b", "c"], n=2)
    titled = [ax for ax in fig.axes if ax.images]
    assert [ax.title.get_text() for ax in titled] == [
        "true: b\npred: b (p=0.95)", "true: a\npred: a (p=0.90)",
        "true: a\npred: b (p=0.98)", "true: c\npred: a (p=0.60)",
    ]
    colors = [to_rgba(ax.title.get_color()) for ax in titled]
    assert colors == [to_rgba(plots.RIGHT_COLOR)] * 2 + [to_rgba(plots.WRONG_COLOR)] * 2
    assert [sub._suptitle.get_text() for sub in fig.subfigs] == [
        "Most confident correct predictions", "Most confident wrong predictions",
    ]


def test_plot_extreme_predictions_one_group_and_empty_group():
    images = np.zeros((3, 4, 4, 3), dtype=np.float32)
    probs = np.eye(3)
    fig = plots.plot_extreme_predictions(images, [0, 1, 2], probs, which="wrong")
    assert not any(ax.images for ax in fig.axes)
    assert fig.subfigs[0]._suptitle.get_text().endswith("none")
    fig = plots.plot_extreme_predictions(images, [0, 1, 2], probs, which="correct", n=5)
    assert sum(bool(ax.images) for ax in fig.axes) == 3
    with pytest.raises(ValueError, match="which"):
        plots.plot_extreme_predictions(images, [0, 1, 2], probs, which="best")


# --------------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------------

def test_confusion_matrix_values_equal_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    true = rng.integers(0, 10, size=200)
    predicted = np.where(rng.random(200) < 0.7, true, rng.integers(0, 10, size=200))
    fig = plots.plot_confusion_matrix(true, predicted, class_names="fashion_mnist")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), confusion_matrix(true, predicted, labels=range(10)))
    assert [t.get_text() for t in ax.get_xticklabels()] == list(class_names("fashion_mnist"))
    assert ax.get_xticklabels()[0].get_rotation() == 45
    assert len(fig.axes) == 2  # the matrix and its colour bar


def test_confusion_matrix_normalized_on_given_axes_with_short_labels():
    from sklearn.metrics import confusion_matrix

    true, predicted = [0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 2]
    fig, ax = plt.subplots()
    assert plots.plot_confusion_matrix(true, predicted, normalize="true", ax=ax) is fig
    np.testing.assert_allclose(ax.images[0].get_array(), confusion_matrix(true, predicted, normalize="true"))
    np.testing.assert_allclose(ax.images[0].get_array().sum(axis=1), 1.0)
    assert ax.get_xticklabels()[0].get_rotation() == 0


# --------------------------------------------------------------------------------------------
# Seconds per epoch
# --------------------------------------------------------------------------------------------

def test_seconds_per_epoch_log_x_axis_sorted_with_lists():
    fig = plots.plot_seconds_per_epoch([256, 32, 64], [2.0, 9.5, 5.0])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.lines[0].get_xdata()) == [32, 64, 256]
    assert list(ax.lines[0].get_ydata()) == [9.5, 5.0, 2.0]
    assert ax.get_ylabel() == "seconds per epoch" and ax.get_xlabel() == "batch size"
    assert len(fig.axes) == 1


def test_seconds_per_epoch_with_accuracy_on_second_axis():
    fig = plots.plot_seconds_per_epoch([32, 64], [9.5, 5.0], accuracy=[0.91, 0.89])
    ax, twin = fig.axes
    assert twin.get_ylabel() == "final accuracy"
    assert list(twin.lines[0].get_ydata()) == [0.91, 0.89]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seconds per epoch", "final accuracy"]
    with pytest.raises(ValueError, match="accuracies"):
        plots.plot_seconds_per_epoch([32, 64], [9.5, 5.0], accuracy=[0.9])
    with pytest.raises(ValueError, match="positive"):
        plots.plot_seconds_per_epoch([0, 64], [9.5, 5.0])


# --------------------------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------------------------

def test_importing_plots_loads_neither_tensorflow_nor_sklearn():
    code = (
        "import sys, cnn_course.plots; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_function_calls_show(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() was called"))
    plots.plot_learning_curves(history())
    plots.plot_image_grid(np.zeros((2, 3, 3)), [0, 1], [0, 0])
    plots.plot_seconds_per_epoch([32], [1.0])
