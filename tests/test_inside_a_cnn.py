"""The helpers behind the notebooks' look inside a CNN: receptive fields, feature maps, filters, moved digits, records."""

import json

import keras
import matplotlib
import numpy as np
import pytest
from keras import layers

matplotlib.use("Agg")

from cnn_course import data, models, plots, records, training  # noqa: E402
from cnn_grader.references import cnn2_mnist  # noqa: E402


def test_receptive_fields_of_cnn2_grow_by_the_kernel_times_the_jump():
    fields = models.receptive_fields(cnn2_mnist())
    assert [(field.kind, field.size, field.jump, field.output_size) for field in fields] == [
        ("Conv2D", 3, 1, (28, 28)), ("Conv2D", 5, 1, (28, 28)), ("MaxPooling2D", 6, 2, (14, 14)),
        ("Conv2D", 10, 2, (14, 14)), ("Conv2D", 14, 2, (14, 14)), ("MaxPooling2D", 16, 4, (7, 7))]
    table = models.describe_receptive_fields(cnn2_mnist()).splitlines()
    assert len(table) == 7 and table[-1].split()[-3:] == ["16×16", "px", "4"]


def test_receptive_fields_count_strides_and_dilation_and_stop_at_the_dense_part():
    model = keras.Sequential([keras.Input((32, 32, 3)), layers.Conv2D(4, 5, strides=2), layers.Conv2D(4, 3, dilation_rate=2),
                              layers.Flatten(), layers.Dense(3), layers.Reshape((3, 1, 1)), layers.Conv2D(1, 1)])
    assert [(field.size, field.jump) for field in models.receptive_fields(model)] == [(5, 2), (5 + 2 * 2 * 2, 2)]


def test_feature_maps_are_the_layers_output_for_one_image():
    model = keras.Sequential([keras.Input((6, 6, 1)), layers.Conv2D(2, 3, padding="same", use_bias=False, name="edges")])
    kernel = np.zeros((3, 3, 1, 2), "float32")
    kernel[:, 0, 0, 0], kernel[:, 2, 0, 0] = 1, -1  # bright left, dark right
    kernel[1, 1, 0, 1] = 1  # the pixel itself
    model.get_layer("edges").set_weights([kernel])
    image = np.zeros((6, 6, 1), "float32")
    image[:, :3] = 1  # a vertical edge between columns 2 and 3
    maps = models.feature_maps(model, image, "edges")
    assert maps.shape == (6, 6, 2)
    assert np.allclose(maps[..., 1], image[..., 0])
    assert maps[2, :, 0].argmax() in (2, 3) and maps[2, 0, 0] <= 1 and maps[2, 3, 0] == 3
    with pytest.raises(ValueError, match=r"one image of shape"):
        models.feature_maps(model, image[None])


def test_shift_images_moves_pixels_and_fills_black():
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5) + 1
    moved = data.shift_images(images, right=2, down=-1)
    assert moved.shape == images.shape and moved.dtype == images.dtype
    assert (moved[:, :, :2] == 0).all() and (moved[:, -1, :] == 0).all()
    assert (moved[:, :3, 2:] == images[:, 1:, :3]).all()
    assert (data.shift_images(images) == images).all()
    with pytest.raises(ValueError, match="out of view"):
        data.shift_images(images, right=5)
    with pytest.raises(ValueError, match="batch of images"):
        data.shift_images(images[0])


def test_accuracy_under_shift_is_the_mean_over_four_directions():
    # A "model" that says 1 when the left half of the image is brighter, else 0.
    inputs = keras.Input((4, 4, 1))
    left = layers.Lambda(lambda x: keras.ops.sum(x[:, :, :2], axis=(1, 2, 3)) - keras.ops.sum(x[:, :, 2:], axis=(1, 2, 3)))(inputs)
    scores = layers.Lambda(lambda d: keras.ops.stack([-d, d], axis=1))(left)
    model = keras.Model(inputs, scores)
    images = np.zeros((1, 4, 4), "float32")
    images[0, :, 1] = 1  # a bright column just left of the middle: class 1
    result = training.accuracy_under_shift({"halves": model}, images, np.array([1]), [0, 1, 2],
                                           prepare=data.add_channel_axis)
    # shift 1: right moves the column to the right half (wrong), left/up/down keep it left (right): 3 of 4
    # shift 2: right is wrong, left pushes it out of the image (a tie: class 0, wrong), up/down right: 2 of 4
    assert result == {"halves": [1.0, 0.75, 0.5]}
    with pytest.raises(ValueError, match=">= 0"):
        training.accuracy_under_shift({"halves": model}, images, np.array([1]), [-1])


def test_the_new_plots_draw_what_they_are_given():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 10)).astype("float32")
    figure = plots.plot_filters(kernel, ncols=4, title="filters")
    assert len([ax for ax in figure.axes if ax.images]) == 10
    with pytest.raises(ValueError, match="expected a kernel"):
        plots.plot_filters(np.zeros((3, 3, 2, 4)))
    figure = plots.plot_feature_maps(np.zeros((8, 8)), np.ones((8, 8, 5)), ncols=3)
    assert len([ax for ax in figure.axes if ax.images]) == 6
    fields = models.receptive_fields(cnn2_mnist())
    figure = plots.plot_receptive_fields(np.zeros((28, 28)), fields)
    assert [patch.get_width() for patch in figure.axes[0].patches] == [3, 5, 6, 10, 14, 16]
    figure = plots.plot_accuracy_under_shift({"a": [0.9, 0.5], "b": [0.8, 0.7]}, [0, 3])
    assert [list(line.get_ydata()) for line in figure.axes[0].lines] == [[90.0, 50.0], [80.0, 70.0]]
    with pytest.raises(ValueError, match="2 accuracies for 3 shifts"):
        plots.plot_accuracy_under_shift({"a": [0.9, 0.5]}, [0, 1, 2])


def test_records_are_display_outputs_that_read_back_by_name(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda bundle, raw: shown.append(bundle))
    records.record("accuracy", np.float32(0.975))
    records.record("per_shift", np.array([0.5, 0.25]), text="two values")
    assert shown[0]["text/plain"] == "accuracy = 0.975" and shown[1]["text/plain"] == "two values"
    notebook = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "display_data", "data": bundle}]}
                          for bundle in shown] + [{"cell_type": "markdown", "source": "x"}]}
    assert records.recorded(json.loads(json.dumps(notebook))) == {"accuracy": pytest.approx(0.975), "per_shift": [0.5, 0.25]}
    with pytest.raises(ValueError, match="recorded twice"):
        records.recorded({"cells": notebook["cells"] * 2})
    with pytest.raises(ValueError, match="not a finite number"):
        records.record("bad", float("nan"))
    with pytest.raises(TypeError, match="cannot record a dict"):
        records.record("bad", {"a": 1})


def _tiny_batch_norm_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4, 4, 1)), layers.Conv2D(2, 3, padding="same", name="conv"),
                             layers.BatchNormalization(name="norm"), layers.Activation("relu"), layers.Flatten(),
                             layers.Dense(2, activation="softmax")])


def test_running_statistics_are_recorded_after_every_step_and_move_one_percent_per_step():
    model = _tiny_batch_norm_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")  # weights stay
    images = np.random.default_rng(0).normal(3.0, 1.0, size=(40, 4, 4, 1)).astype("float32")
    recorder = training.RunningStatistics("norm", channel=1)
    model.fit(images, np.zeros(40, "int32"), batch_size=10, epochs=1, verbose=0, shuffle=False, callbacks=[recorder])
    assert len(recorder.means) == len(recorder.variances) == 4
    mean, variance = training.batch_norm_input_statistics(model, "norm", images)
    assert mean.shape == variance.shape == (2,)
    # Each step moves the running mean 1 % of the way (momentum 0.99) from 0 towards a batch mean near the data's.
    assert recorder.means[0] == pytest.approx(0.01 * mean[1], rel=0.2)
    assert abs(recorder.means[-1]) < abs(mean[1]) * 0.05


def test_recalibrated_batch_norm_predicts_with_the_statistics_of_the_given_images():
    model = _tiny_batch_norm_model()
    images = np.random.default_rng(1).normal(5.0, 2.0, size=(64, 4, 4, 1)).astype("float32")
    copy = training.recalibrated_batch_norm(model, images, batch_size=16)
    mean, variance = training.batch_norm_input_statistics(model, "norm", images)
    assert np.allclose(np.asarray(copy.get_layer("norm").moving_mean), mean, atol=1e-5)
    assert np.allclose(np.asarray(copy.get_layer("norm").moving_variance), variance, rtol=1e-4)
    assert np.allclose(np.asarray(model.get_layer("norm").moving_mean), 0)  # the model itself is unchanged
    normalized = keras.Model(copy.inputs[0], copy.get_layer("norm").output)(images, training=False)
    assert abs(float(np.mean(normalized))) < 1e-3 and float(np.std(normalized)) == pytest.approx(1.0, rel=1e-2)


def test_running_statistics_plot_has_a_panel_for_mean_and_variance():
    figure = plots.plot_running_statistics([0.1, 0.2], [0.9, 0.8], 1.5, 2.0, title="t")
    assert len(figure.axes) == 2 and [ax.lines[1].get_ydata()[0] for ax in figure.axes] == [1.5, 2.0]
    with pytest.raises(ValueError, match="2 running means but 1 variances"):
        plots.plot_running_statistics([0.1, 0.2], [0.9], 1.5, 2.0)


def test_accuracy_counts_the_images_whose_top_score_is_their_label():
    scores_are_inputs = keras.Sequential([keras.Input((3,)), layers.Activation("linear")])
    images = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4]], dtype="float32")
    assert training.accuracy(scores_are_inputs, images, np.array([0, 1, 2, 2])) == 0.75
    assert training.accuracy(scores_are_inputs, images, np.array([[0], [1], [2], [0]]), batch_size=3) == 1.0
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        training.accuracy(scores_are_inputs, images, np.array([0, 1, 2]))


def test_a_probe_outputs_an_inner_tensor_with_the_models_weights():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="hidden"), layers.Dense(2)])
    inputs = np.ones((2, 4), dtype="float32")
    hidden = model.get_layer("hidden")
    expected = inputs @ np.asarray(hidden.kernel) + np.asarray(hidden.bias)
    np.testing.assert_allclose(np.asarray(models.probe(model, hidden.output)(inputs)), expected, rtol=1e-6)
