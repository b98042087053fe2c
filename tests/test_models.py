"""Every architecture against the published parameter counts (shared/reference/published-numbers.md)."""

import numpy as np
import pytest

from cnn_grader.references import ARCHITECTURES, PUBLISHED_PARAMETER_COUNTS, build

# The totals the reference table gives, copied here so that a change to the table in models.py cannot
# silently change what is tested.
REFERENCE_TOTALS = [420_260, 251_210, 695_970, 1_625_866, 551_466, 63_562, 83_466, 3_274_634]


def parameter_counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return model.count_params(), trainable, frozen


@pytest.fixture(scope="module")
def built():
    return {name: build(name) for name in ARCHITECTURES}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETER_COUNTS))
def test_parameter_counts_equal_the_published_ones(built, name):
    total, trainable, frozen = parameter_counts(built[name])
    expected_total, expected_trainable, expected_frozen = PUBLISHED_PARAMETER_COUNTS[name]
    assert total == expected_total
    if expected_trainable is not None:
        assert (trainable, frozen) == (expected_trainable, expected_frozen)


def test_every_published_total_is_among_the_architectures(built):
    totals = {parameter_counts(model)[0] for model in built.values()}
    assert set(REFERENCE_TOTALS) <= totals


def test_builders_return_uncompiled_models_with_ten_class_softmax(built):
    for name, model in built.items():
        assert not model.compiled, name
        assert model.output_shape == (None, 10), name
        probabilities = model(np.zeros((2, *model.input_shape[1:]), dtype="float32"), training=False)
        np.testing.assert_allclose(np.asarray(probabilities).sum(axis=1), 1.0, rtol=1e-5, err_msg=name)


def test_cnn2_feature_map_before_flatten_is_7x7x64(built):
    flatten = next(layer for layer in built["cnn2_mnist"].layers if layer.__class__.__name__ == "Flatten")
    assert tuple(flatten.input.shape[1:]) == (7, 7, 64)


def test_cifar10_small_padding_variants_match_the_table_note():
    # The table: valid padding gives model 1 178,506 parameters, same padding 267,594.
    import keras
    from keras import layers

    same = keras.Sequential([keras.Input((32, 32, 3)), layers.Conv2D(16, 3, padding="same", activation="relu"),
                             layers.MaxPooling2D(), layers.Conv2D(32, 3, padding="same", activation="relu"),
                             layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(10)])
    assert same.count_params() == 267_594
    assert build("cifar10_small").count_params() == 178_506


def test_unknown_architecture_lists_the_names():
    with pytest.raises(KeyError, match="cnn2_mnist"):
        build("resnet")


def test_forward_flops_counts_conv_and_dense_multiply_adds_from_the_shapes():
    import keras

    from cnn_course.models import forward_flops, training_flops

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(5)])
    conv = 2 * 8 * 8 * 4 * (3 * 3 * 3)
    dense = 2 * (4 * 4 * 4) * 5
    assert forward_flops(model) == conv + dense
    assert training_flops(model) == 3 * (conv + dense)
    nested = keras.Sequential([keras.Input((8, 8, 3)), model])
    assert forward_flops(nested) == conv + dense


def test_the_keras_peer_and_the_fast_design_have_their_documented_sizes():
    from cnn_course.models import forward_flops
    from cnn_grader.references import fast_cnn, keras_mnist_convnet

    assert keras_mnist_convnet().count_params() == 34_826  # the Keras example's printed total
    fast = fast_cnn()
    assert fast.count_params() == 94_634
    assert round(forward_flops(fast) / 1e6, 1) == 14.9
