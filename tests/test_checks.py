"""Tests of cnn_course.checks.

Equivalent ways of writing a model pass; each kind of mistake fails with a message that names the layer and the mistake.
"""

import re

import keras
import pytest
from keras import layers

from cnn_course.checks import (
    assert_feature_map_before_flatten,
    assert_has_layers,
    assert_output_shape,
    assert_parameter_count,
    assert_same_architecture,
    describe_layers,
)
from cnn_grader.references import cifar10_small_dropout, cnn1_mnist, cnn2_mnist

# cnn2_mnist, numbered as the messages number it:
#  1 Conv2D 32   2 BN   3 relu   4 Conv2D 32   5 BN   6 relu   7 MaxPooling2D
#  8 Conv2D 64   9 BN  10 relu  11 Conv2D 64  12 BN  13 relu  14 MaxPooling2D
# 15 Flatten    16 Dense 200  17 BN  18 Dropout 0.3  19 relu  20 Dense 10  21 softmax
REFERENCE = cnn2_mnist()
RELU_POSITIONS = (3, 6, 10, 13, 19)


def clone(layer):
    return type(layer).from_config(layer.get_config())


def variant(changes=None, *, reference=REFERENCE, with_input=True):
    """``reference`` as a fresh Sequential; ``changes`` maps a 1-based layer position to the layers that replace it."""
    changes = changes or {}
    stack = [new for number, layer in enumerate(reference.layers, start=1) for new in changes.get(number, [clone(layer)])]
    return keras.Sequential([keras.Input(reference.input_shape[1:])] * with_input + stack)


def fails(student, message, reference=REFERENCE, **options):
    with pytest.raises(AssertionError, match=re.escape(message)):
        assert_same_architecture(student, reference, **options)


# Equivalent forms pass.

def test_an_identical_copy_passes():
    assert_same_architecture(variant(), REFERENCE)


def test_functional_model_equals_sequential():
    inputs = keras.Input((28, 28, 1))
    outputs = inputs
    for layer in REFERENCE.layers:
        outputs = clone(layer)(outputs)
    assert_same_architecture(keras.Model(inputs, outputs), REFERENCE)


def test_sequential_without_input_is_built_with_the_reference_input_shape():
    assert_same_architecture(variant(with_input=False), REFERENCE)


@pytest.mark.parametrize("relu", [layers.ReLU, lambda: layers.Activation(keras.activations.relu)],
                         ids=["ReLU()", "Activation(keras.activations.relu)"])
def test_relu_layers_equal_activation_relu(relu):
    assert_same_architecture(variant({number: [relu()] for number in RELU_POSITIONS}), REFERENCE)


def test_softmax_layer_equals_activation_softmax():
    assert_same_architecture(variant({21: [layers.Softmax()]}), REFERENCE)


def test_kernel_size_tuple_and_padding_case_do_not_matter():
    convs = {number: [layers.Conv2D(filters, (3, 3), padding="SAME")]
             for number, filters in ((1, 32), (4, 32), (8, 64), (11, 64))}
    assert_same_architecture(variant(convs), REFERENCE)


@pytest.mark.parametrize("pooling", [lambda: layers.MaxPooling2D(), lambda: layers.MaxPooling2D((2, 2)),
                                     lambda: layers.MaxPooling2D(pool_size=2, strides=2)],
                         ids=["MaxPooling2D()", "MaxPooling2D((2, 2))", "pool_size=2, strides=2"])
def test_pooling_forms_are_equal(pooling):
    assert_same_architecture(variant({7: [pooling()], 14: [pooling()]}), REFERENCE)


def test_initializers_regularizers_and_names_are_ignored():
    assert_same_architecture(variant({
        1: [layers.Conv2D(32, 3, padding="same", kernel_initializer="he_normal", name="first_conv")],
        16: [layers.Dense(200, kernel_regularizer=keras.regularizers.l2(1e-4), bias_initializer="ones")],
    }), REFERENCE)


def test_activation_fused_into_dense_equals_a_separate_layer():
    assert_same_architecture(variant({20: [layers.Dense(10, activation="softmax")], 21: []}), REFERENCE)


def test_activation_fused_into_conv2d_equals_a_separate_layer():
    fused = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, 3, padding="same", activation="relu"),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])
    assert_same_architecture(fused, cnn1_mnist())


def test_activation_fused_before_batch_normalization_is_in_another_place():
    fails(variant({1: [layers.Conv2D(32, 3, padding="same", activation="relu")], 3: []}),
          "After layer 1 (Conv2D), expected a BatchNormalization; found the activation 'relu' of layer 1 (Conv2D).")


def test_describe_layers_splits_fused_activations_and_skips_the_input():
    specs = describe_layers(variant({20: [layers.Dense(10, activation="softmax")], 21: []}))
    assert [(spec.kind, spec.number, spec.fused) for spec in specs[-2:]] == [("Dense", 20, False), ("Activation", 20, True)]
    assert [spec.kind for spec in specs] == [spec.kind for spec in describe_layers(REFERENCE)]
    assert specs[0].settings == {"filters": 32, "kernel_size": (3, 3), "strides": (1, 1),
                                 "dilation_rate": (1, 1), "padding": "same"}


# Each kind of difference fails with a message that names the layer and the difference.

@pytest.mark.parametrize("changes, message", [
    ({8: [layers.Conv2D(32, 3, padding="same")]}, "Layer 8 (Conv2D): expected 64 filters, found 32."),
    ({1: [layers.Conv2D(32, 5, padding="same")]}, "Layer 1 (Conv2D): expected kernel size 3×3, found 5×5."),
    ({4: [layers.Conv2D(32, 3)]}, "Layer 4 (Conv2D): expected padding 'same', found 'valid'."),
    ({1: [layers.Conv2D(32, 3, strides=2, padding="same")]}, "Layer 1 (Conv2D): expected strides 1×1, found 2×2."),
    ({7: [layers.MaxPooling2D(3)]},
     "Layer 7 (MaxPooling2D): expected pool size 2×2, found 3×3; expected strides 2×2, found 3×3."),
    ({16: [layers.Dense(100)]}, "Layer 16 (Dense): expected 200 units, found 100."),
    ({21: [layers.Activation("sigmoid")]},
     "Layer 21 (Activation sigmoid): expected activation 'softmax', found 'sigmoid'."),
    ({3: [layers.Activation("tanh")]}, "Layer 3 (Activation tanh): expected activation 'relu', found 'tanh'."),
    ({20: [layers.Dense(10, activation="sigmoid")], 21: []},
     "The activation 'sigmoid' of layer 20 (Dense): expected activation 'softmax', found 'sigmoid'."),
    ({18: [layers.Dropout(0.5)]}, "Layer 18 (Dropout): expected dropout rate 0.3, found 0.5."),
], ids=["filters", "kernel size", "padding", "strides", "pool size", "units", "activation", "hidden activation",
        "fused activation", "dropout rate"])
def test_a_wrong_setting_names_the_layer_and_the_setting(changes, message):
    fails(variant(changes), message)


def test_a_wrong_spatial_dropout_rate_is_named():
    fails(cifar10_small_dropout(rates=(0.1, 0.5, 0.5)), "Layer 3 (SpatialDropout2D): expected dropout rate 0.2, found 0.1.",
          reference=cifar10_small_dropout())


def test_dropout_in_place_of_spatial_dropout_is_named():
    reference = cifar10_small_dropout()
    fails(variant({3: [layers.Dropout(0.2)]}, reference=reference),
          "After layer 2 (Activation relu), expected a SpatialDropout2D with dropout rate 0.2; "
          "found a Dropout with dropout rate 0.2.",
          reference=reference)


def test_a_missing_batch_normalization_is_named_with_its_place():
    fails(variant({2: []}), "After layer 1 (Conv2D), expected a BatchNormalization; found an Activation 'relu'.\n"
                            "Expected 21 layers, found 20.")


def test_a_missing_max_pooling_layer_is_named_with_its_place():
    fails(variant({14: []}), "After layer 13 (Activation relu), expected a MaxPooling2D with pool size 2×2, "
                             "padding 'valid'; found a Flatten.")


def test_a_missing_convolutional_block_is_listed_where_it_belongs():
    fails(variant({number: [] for number in range(8, 15)}),
          "After layer 7 (MaxPooling2D), expected a Conv2D with 64 filters, kernel size 3×3, padding 'same', "
          "then a BatchNormalization, then an Activation 'relu', then a Conv2D with 64 filters")


def test_an_extra_layer_is_named():
    fails(variant({15: [layers.Flatten(), layers.Dropout(0.5)]}),
          "Layer 16 (Dropout) is one too many: after layer 15 (Flatten), expected a Dense with 200 units; "
          "found a Dropout with dropout rate 0.5.\nExpected 21 layers, found 22.")


def test_an_extra_layer_at_the_end_is_named():
    fails(variant({21: [layers.Activation("softmax"), layers.Dense(10)]}),
          "Layer 22 (Dense) is one too many: after layer 21 (Activation softmax), expected the end of the model")


def test_a_wrong_input_shape_is_named():
    fails(cnn2_mnist(input_shape=(32, 32, 1)), "The input: expected shape 28×28×1, found 32×32×1.")


def test_a_wrong_parameter_count_names_the_layer_and_the_total():
    no_bias = variant({1: [layers.Conv2D(32, 3, padding="same", use_bias=False)]})
    fails(no_bias, "Layer 1 (Conv2D): expected 320 parameters, found 288.\n"
                   "Parameter count: expected 695,970 parameters, found 695,938.")
    assert_same_architecture(no_bias, REFERENCE, check_params=False)


def test_the_total_parameter_count_is_given_with_a_layer_difference():
    fails(variant({8: [layers.Conv2D(32, 3, padding="same")]}),
          "Parameter count: expected 695,970 parameters, found 668,162.")


def test_the_label_names_the_model():
    fails(variant({16: [layers.Dense(100)]}), "The CNN of exercise 2 does not match", label="the CNN of exercise 2")


# Input that is not a model.

@pytest.mark.parametrize("student, message", [
    (None, "Expected your model to be a keras.Model, got NoneType — did you return/assign the model?"),
    ("model", "Expected your model to be a keras.Model, got str — did you return/assign the model?"),
    (cnn2_mnist, "Expected your model to be a keras.Model, got function — did you call the function that builds it?"),
    (layers.Dense(10), "Expected your model to be a keras.Model, got Dense"),
])
def test_input_that_is_not_a_model_gets_a_clear_message(student, message):
    fails(student, message)


def test_a_model_that_cannot_be_built_asks_for_an_input():
    fails(keras.Sequential([layers.Conv1D(8, 3), layers.Flatten()]),
          "Your model could not be built for input shape 28×28×1: ")
    fails(keras.Sequential([layers.Conv1D(8, 3), layers.Flatten()]),
          "Start it with keras.Input(shape=(28, 28, 1)) to see which layer does not fit.")


def test_a_bad_reference_is_a_course_error_not_a_wrong_answer():
    with pytest.raises(ValueError, match="the reference must be a built keras.Model"):
        assert_same_architecture(REFERENCE, None)


# The smaller checks.

def test_parameter_counts():
    assert_parameter_count(REFERENCE, 695_970, 695_186)
    with pytest.raises(AssertionError, match=re.escape("Your model: expected 658,786 parameters in total, found 695,970.")):
        assert_parameter_count(REFERENCE, 658_786)
    with pytest.raises(AssertionError,
                       match=re.escape("Your model: expected 695,970 trainable parameters, found 695,186.")):
        assert_parameter_count(REFERENCE, 695_970, 695_970)


def test_feature_map_before_flatten():
    assert_feature_map_before_flatten(REFERENCE, (7, 7, 64))
    assert_feature_map_before_flatten(REFERENCE, (None, 7, 7, 64))
    with pytest.raises(AssertionError, match=re.escape("The feature map before Flatten: expected a 7×7×64 feature map, "
                                                       "found 14×14×64.")):
        assert_feature_map_before_flatten(variant({14: []}), (7, 7, 64))
    with pytest.raises(AssertionError, match="has no Flatten layer"):
        assert_feature_map_before_flatten(keras.Sequential([keras.Input((4,)), layers.Dense(2)]), (7, 7, 64))


def test_output_shape_by_number_name_and_from_the_end():
    assert_output_shape(REFERENCE, 7, (14, 14, 32))
    assert_output_shape(REFERENCE, REFERENCE.layers[15].name, (None, 200))
    assert_output_shape(REFERENCE, -1, (10,))
    with pytest.raises(AssertionError,
                       match=re.escape("Layer 7 (MaxPooling2D): expected a 28×28×32 feature map, found 14×14×32.")):
        assert_output_shape(REFERENCE, 7, (28, 28, 32))
    with pytest.raises(AssertionError, match=re.escape("Layer 16 (Dense): expected output shape 100, found 200.")):
        assert_output_shape(REFERENCE, 16, (100,))
    with pytest.raises(AssertionError, match=re.escape("Your model has no layer 22; it has 21 layers.")):
        assert_output_shape(REFERENCE, 22, (10,))


def test_has_layers():
    assert_has_layers(REFERENCE, ["Conv2D"] * 4 + [layers.BatchNormalization, "Dropout", "Activation"])
    assert_has_layers(variant({20: [layers.Dense(10, activation="softmax")], 21: []}), ["Activation"] * 6)
    with pytest.raises(AssertionError, match=re.escape(
            "Your model: expected at least 5 Conv2D layers, found 4; at least 1 SpatialDropout2D layer, found 0.")):
        assert_has_layers(REFERENCE, ["Conv2D"] * 5 + ["SpatialDropout2D"])
    with pytest.raises(AssertionError, match="at least 1 ReLU layer, found 0"):
        assert_has_layers(REFERENCE, ["ReLU"])


# Narrower checks: one grade cell, one part of the answer.

def test_layer_sequence_alone_ignores_filters_but_not_a_missing_layer():
    sequence_only = dict(settings=(), check_shapes=False, check_params=False)
    assert_same_architecture(variant({11: [layers.Conv2D(32, 3, padding="same")]}), REFERENCE, **sequence_only)
    fails(variant({12: []}), "After layer 11 (Conv2D), expected a BatchNormalization; found an Activation 'relu'.",
          **sequence_only)
    fails(variant({13: [layers.Activation("tanh")]}), "Layer 13 (Activation tanh): expected activation 'relu', "
                                                     "found 'tanh'.", **sequence_only)


def test_kernel_size_and_padding_of_convolutions_alone():
    conv_only = dict(kinds=("Conv2D",), settings=("kernel_size", "padding"), check_shapes=False, check_params=False)
    assert_same_architecture(variant({12: []}), REFERENCE, **conv_only)  # a missing BN is another cell's business
    fails(variant({11: [layers.Conv2D(64, 5, padding="same")]}),
          "Layer 11 (Conv2D): expected kernel size 3×3, found 5×5.", **conv_only)
    fails(variant({11: [layers.Conv2D(64, 3)]}), "Layer 11 (Conv2D): expected padding 'same', found 'valid'.",
          **conv_only)


def test_parameter_counts_come_from_the_weights_not_a_patched_method():
    student = variant({12: []})
    student.count_params = lambda: 695_970
    with pytest.raises(AssertionError, match=re.escape("expected 695,970 parameters in total, found 695,714")):
        assert_parameter_count(student, 695_970)
    with pytest.raises(AssertionError, match=re.escape("expected 784 non-trainable parameters, found 656")):
        assert_parameter_count(student, 695_714, 695_058, 784)


# Answers to questions.

def test_choice_answers():
    from cnn_course.checks import assert_choice

    assert_choice(" b ", "ABC")
    assert_choice("b", "ABC", correct="B")
    with pytest.raises(AssertionError, match=re.escape("Set answer to one letter of A, B, C")):
        assert_choice(None, "ABC")
    with pytest.raises(AssertionError, match=re.escape("Set answer to one letter of A, B, C")):
        assert_choice("D", "ABC")
    with pytest.raises(AssertionError, match=re.escape("answer = 'A' is not correct. Count the weights.")):
        assert_choice("a", "ABC", correct="B", explanation="Count the weights.")


def test_number_answers():
    from cnn_course.checks import assert_number

    assert_number(392_500, 392_500)
    assert_number(0.305, 0.3, tolerance=0.01)
    for bad in ("392500", True, None):
        with pytest.raises(AssertionError, match="Set n to a number"):
            assert_number(bad, name="n")
    with pytest.raises(AssertionError, match=re.escape("n = 392,000 is not correct. inputs × units + biases")):
        assert_number(392_000, 392_500, name="n", explanation="inputs × units + biases")


def test_checking_numbers_and_choices_starts_no_tensorflow():
    """A grading kernel whose notebook checks no model does not pay for TensorFlow's import (about 6 s)."""
    import subprocess
    import sys

    code = ("import sys\nfrom cnn_course import checks\n"
            "checks.assert_number(42, 42, name='answer')\nchecks.assert_choice('b', 'abc', correct='b')\n"
            "print(sorted(name for name in ('keras', 'tensorflow') if name in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
