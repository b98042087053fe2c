"""The answers: every architecture students are asked to build, and the course's other CNN designs.

This module is grader-side: students never install it, and a grading kernel cannot import it
(the sandbox does not show this package). Hidden tests take their references from here, e.g.
``checks.assert_same_architecture(cnn2, references.cnn2_mnist())``.

The parameter counts are exact and equal the figures in the course's reference table
(``shared/reference/published-numbers.md``, taken from the seed write-ups):

=============================  ==========  ==========  ===============  ======
builder                         total       trainable   non-trainable    seed
=============================  ==========  ==========  ===============  ======
``dense_mnist``                 420,260     419,160     1,100            002
``cnn1_mnist``                  251,210     251,210     0                002
``cnn2_mnist``                  695,970     695,186     784              002
``mnist_cnn_99``                1,625,866   1,625,866   0                004
``cifar10_vgg``                 551,466     551,018     448              004
``progression_baseline``        63,562      63,562      0                001
``progression_part_a``          83,466                                   001
``progression_part_b``          3,274,634                                001
``progression_part_c``          3,274,634                                001
=============================  ==========  ==========  ===============  ======

The CIFAR-10 "hands on" models of seed 003 give no padding; valid padding (the Keras
default) gives model 1 178,506 parameters.

``keras_mnist_convnet`` and ``fast_cnn`` are the benchmark's peer and fast design. They are no
answer, but any working CNN builder could be handed in as a student's "own design", so they stay
out of the student package too.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from cnn_course import checks
from cnn_course.models import CIFAR10_SHAPE, HANDED_OUT, MNIST_SHAPE

__all__ = [
    "ARCHITECTURES",
    "PUBLISHED_PARAMETER_COUNTS",
    "build",
    "handed_out_match",
    "cnn1_mnist",
    "cnn2_mnist",
    "mnist_cnn_99",
    "progression_baseline",
    "progression_part_a",
    "progression_part_b",
    "progression_part_c",
    "cifar10_small",
    "cifar10_small_bn",
    "cifar10_small_dropout",
    "keras_mnist_convnet",
    "fast_cnn",
]


def cnn1_mnist(input_shape=MNIST_SHAPE) -> keras.Model:
    """The first CNN of seed 002: Conv2D 32 3×3 same → ReLU → Flatten → Dense 10 → softmax.

    Input ``(N, 28, 28, 1)`` float32. 251,210 parameters: 320 in the convolution, 250,890 in the dense layer.
    """
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(32, 3, padding="same"),
        layers.Activation("relu"),
        layers.Flatten(),
        layers.Dense(10),
        layers.Activation("softmax"),
    ], name="cnn1_mnist")


def cnn2_mnist(input_shape=MNIST_SHAPE, dropout: float = 0.3) -> keras.Model:
    """The deeper CNN of seed 002.

    [Conv 32 → BN → ReLU] ×2 → MaxPool → [Conv 64 → BN → ReLU] ×2 → MaxPool → Flatten →
    Dense 200 → BN → Dropout 0.3 → ReLU → Dense 10 → softmax; every convolution 3×3, same padding.
    Input ``(N, 28, 28, 1)``; feature map before Flatten ``(7, 7, 64)``.
    695,970 parameters, 695,186 trainable, 784 non-trainable.
    """
    stack = [keras.Input(input_shape)]
    for filters in (32, 32, None, 64, 64, None):
        if filters is None:
            stack.append(layers.MaxPooling2D(2))
        else:
            stack += [layers.Conv2D(filters, 3, padding="same"), layers.BatchNormalization(), layers.Activation("relu")]
    stack += [
        layers.Flatten(),
        layers.Dense(200),
        layers.BatchNormalization(),
        layers.Dropout(dropout),
        layers.Activation("relu"),
        layers.Dense(10),
        layers.Activation("softmax"),
    ]
    return keras.Sequential(stack, name="cnn2_mnist")


def mnist_cnn_99(input_shape=MNIST_SHAPE) -> keras.Model:
    """The MNIST CNN of seed 004 (99.2 % test accuracy after 10 epochs at batch 128).

    Conv 32 3×3 same ReLU → Conv 64 3×3 same ReLU → MaxPool → Dropout 0.25 → Flatten →
    Dropout 0.5 → Dense 128 ReLU → Dense 10 softmax. 1,625,866 parameters, all trainable.
    """
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="mnist_cnn_99")


def _progression(name: str, *, second_conv: bool, hidden_dense: bool, relu: bool, dropout: float,
                 input_shape=MNIST_SHAPE) -> keras.Model:
    stack = [keras.Input(input_shape), layers.Conv2D(32, 5, padding="same")]
    if relu:
        stack.append(layers.Activation("relu"))
    if dropout:
        stack.append(layers.Dropout(dropout))
    stack.append(layers.MaxPooling2D(2))
    if second_conv:
        stack.append(layers.Conv2D(64, 5, padding="same"))
        if relu:
            stack.append(layers.Activation("relu"))
        stack.append(layers.MaxPooling2D(2))
    stack.append(layers.Flatten())
    if hidden_dense:
        stack.append(layers.Dense(1024))
    stack.append(layers.Dense(10, activation="softmax"))
    return keras.Sequential(stack, name=name)


def progression_baseline(input_shape=MNIST_SHAPE) -> keras.Model:
    """Seed 001's baseline: Conv 32 5×5 same → MaxPool → Flatten → Dense 10. 63,562 parameters."""
    return _progression("progression_baseline", second_conv=False, hidden_dense=False, relu=False, dropout=0.0,
                        input_shape=input_shape)


def progression_part_a(input_shape=MNIST_SHAPE) -> keras.Model:
    """Seed 001's part A: the baseline plus Conv 64 5×5 same → MaxPool. 83,466 parameters."""
    return _progression("progression_part_a", second_conv=True, hidden_dense=False, relu=False, dropout=0.0,
                        input_shape=input_shape)


def progression_part_b(input_shape=MNIST_SHAPE) -> keras.Model:
    """Seed 001's part B: part A plus Dense 1024 before the output. 3,274,634 parameters."""
    return _progression("progression_part_b", second_conv=True, hidden_dense=True, relu=False, dropout=0.0,
                        input_shape=input_shape)


def progression_part_c(input_shape=MNIST_SHAPE, dropout: float = 0.3) -> keras.Model:
    """Seed 001's part C: part B with ReLU after each convolution and Dropout 0.3 after the first.

    ReLU and Dropout have no weights, so the count stays 3,274,634.
    """
    return _progression("progression_part_c", second_conv=True, hidden_dense=True, relu=True, dropout=dropout,
                        input_shape=input_shape)


def _cifar10_small(name: str, *, batch_norm: bool, dropout: tuple[float, float, float] | None,
                   input_shape=CIFAR10_SHAPE) -> keras.Model:
    def conv_block(filters: int, spatial_dropout: float | None) -> list:
        block = [layers.Conv2D(filters, 3)]
        if batch_norm:
            block.append(layers.BatchNormalization())
        block.append(layers.Activation("relu"))
        if spatial_dropout:
            block.append(layers.SpatialDropout2D(spatial_dropout))
        return block

    conv_rate, flatten_rate, dense_rate = dropout or (None, None, None)
    stack = [keras.Input(input_shape), *conv_block(16, conv_rate), layers.MaxPooling2D(2), *conv_block(32, conv_rate),
             layers.Flatten()]
    if flatten_rate:
        stack.append(layers.Dropout(flatten_rate))
    stack.append(layers.Dense(32))
    if batch_norm:
        stack.append(layers.BatchNormalization())
    stack.append(layers.Activation("relu"))
    if dense_rate:
        stack.append(layers.Dropout(dense_rate))
    stack.append(layers.Dense(10, activation="softmax"))
    return keras.Sequential(stack, name=name)


def cifar10_small(input_shape=CIFAR10_SHAPE) -> keras.Model:
    """Seed 003's model 1: Conv 16 3×3 ReLU → MaxPool → Conv 32 3×3 ReLU → Flatten → Dense 32 ReLU → Dense 10.

    Valid padding. Input ``(N, 32, 32, 3)``. 178,506 parameters.
    """
    return _cifar10_small("cifar10_small", batch_norm=False, dropout=None, input_shape=input_shape)


def cifar10_small_bn(input_shape=CIFAR10_SHAPE) -> keras.Model:
    """Seed 003's model 2: model 1 with batch normalization before each hidden ReLU."""
    return _cifar10_small("cifar10_small_bn", batch_norm=True, dropout=None, input_shape=input_shape)


def cifar10_small_dropout(input_shape=CIFAR10_SHAPE, rates=(0.2, 0.5, 0.5)) -> keras.Model:
    """Seed 003's model 3: model 1 with SpatialDropout2D 0.2 after each convolution and Dropout 0.5 on the dense layers."""
    return _cifar10_small("cifar10_small_dropout", batch_norm=False, dropout=tuple(rates), input_shape=input_shape)


def keras_mnist_convnet(input_shape=MNIST_SHAPE) -> keras.Model:
    """The Keras example "Simple MNIST convnet" (``mnist_convnet``), the peer in ``make bench``.

    Conv 32 3×3 ReLU → MaxPool → Conv 64 3×3 ReLU → MaxPool → Flatten → Dropout 0.5 →
    Dense 10 softmax, valid padding. 34,826 parameters; the example trains 15 epochs at
    batch 128 with Adam on 54,000 images and reports a test accuracy of 0.9922
    (keras.io/examples/vision/mnist_convnet).
    """
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ], name="keras_mnist_convnet")


def fast_cnn(input_shape=MNIST_SHAPE, widths: tuple[int, ...] = (32, 64, 128), classes: int = 10) -> keras.Model:
    """A small CNN designed for accuracy per CPU second, the course's "fast" reference.

    One block per width: Conv 3×3 same (no bias) → BatchNormalization → ReLU → MaxPool, then
    global average pooling and Dense ``classes`` softmax. Batch normalization allows the high
    learning rates of a one-cycle schedule (``training.one_cycle_adam``); pooling after every
    block keeps the feature maps small, so most of the compute is spent on useful filters.
    With the default widths: 94,634 parameters and 14.9 MFLOP per 28×28 image forward
    (``forward_flops``); on MNIST, two epochs of one-cycle Adam (peak 0.01, batch 128) reach
    99.3 % test accuracy, and eight epochs reach 92.8 % on Fashion-MNIST (``make bench``).
    """
    model = keras.Sequential([keras.Input(input_shape)], name="fast_cnn")
    for width in widths:
        model.add(layers.Conv2D(width, 3, padding="same", use_bias=False))
        model.add(layers.BatchNormalization())
        model.add(layers.ReLU())
        model.add(layers.MaxPooling2D(2))
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(classes, activation="softmax"))
    return model


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    **HANDED_OUT,
    "cnn1_mnist": cnn1_mnist,
    "cnn2_mnist": cnn2_mnist,
    "mnist_cnn_99": mnist_cnn_99,
    "progression_baseline": progression_baseline,
    "progression_part_a": progression_part_a,
    "progression_part_b": progression_part_b,
    "progression_part_c": progression_part_c,
    "cifar10_small": cifar10_small,
    "cifar10_small_bn": cifar10_small_bn,
    "cifar10_small_dropout": cifar10_small_dropout,
    "keras_mnist_convnet": keras_mnist_convnet,
    "fast_cnn": fast_cnn,
}

#: (total, trainable, non-trainable) parameter counts from the course's reference table;
#: ``None`` where the table gives no figure. Source: shared/reference/published-numbers.md, except
#: ``keras_mnist_convnet``: the summary printed by the Keras example "Simple MNIST convnet"
#: (keras.io/examples/vision/mnist_convnet). They live here, on the grader side, and not in
#: ``cnn_course.published`` with the published accuracies, because several are answers to grade cells.
PUBLISHED_PARAMETER_COUNTS: dict[str, tuple[int, int | None, int | None]] = {
    "dense_mnist": (420_260, 419_160, 1_100),
    "cnn1_mnist": (251_210, 251_210, 0),
    "cnn2_mnist": (695_970, 695_186, 784),
    "mnist_cnn_99": (1_625_866, 1_625_866, 0),
    "cifar10_vgg": (551_466, 551_018, 448),
    "progression_baseline": (63_562, 63_562, 0),
    "progression_part_a": (83_466, None, None),
    "progression_part_b": (3_274_634, None, None),
    "progression_part_c": (3_274_634, None, None),
    "cifar10_small": (178_506, None, None),
    "keras_mnist_convnet": (34_826, 34_826, 0),
}


def build(name: str, **kwargs) -> keras.Model:
    """Build the architecture ``name`` from :data:`ARCHITECTURES`; keyword arguments go to its builder.

    Raises:
        KeyError: ``name`` is not in :data:`ARCHITECTURES`; the message lists the names.
    """
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


def handed_out_match(model: keras.Model) -> str | None:
    """The name of the handed-out builder (``cnn_course.models.HANDED_OUT``) whose architecture ``model`` has.

    Compares layer kinds, settings and parameter counts (nested models expanded), built for the
    model's own input shape. A student's "own design" or saved model that is one of the models the
    course hands out is not an answer.

    Args:
        model: a built ``keras.Model``.

    Returns:
        The builder's name, or ``None`` when the architecture is none of them.
    """
    shape = checks.model_input_shape(model)
    if shape is None:
        return None
    signature = checks.architecture_signature(model)
    for name, builder in HANDED_OUT.items():
        try:
            candidate = builder(input_shape=shape)
        except Exception:  # noqa: BLE001 - a builder that cannot take this shape is not a match
            continue
        if checks.architecture_signature(candidate) == signature:
            return name
    return None


def assert_own_designs(designs, *, input_shape=(28, 28, 1)) -> None:
    """Check that no design in ``designs`` is a model the course hands out (``cnn_course.models.HANDED_OUT``).

    For the hidden test of a "design your own CNNs" question; :func:`cnn_course.checks.assert_cnn_designs`
    checks the rest first.

    Args:
        designs: a dict ``{name: function}``; each function returns a new ``keras.Model``.
        input_shape: the input shape the designs take, without the batch axis.

    Raises:
        AssertionError: a design has the architecture of a handed-out model; the message names both.
    """
    checks.assert_cnn_designs(designs, input_shape=input_shape)
    for name, build_design in designs.items():
        match = handed_out_match(build_design())
        if match is not None:
            raise AssertionError(f"Design {name!r} is the course library's {match}, a model the course hands out. "
                                 f"The designs must be your own.")
