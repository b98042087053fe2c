"""The models that the course's notebooks hand out, and tools to measure any model.

Only architectures that are **not an answer anywhere in the course** live here: students install
this package, so a builder of an answer (cnn1, cnn2, the parts of the architecture progression,
the CIFAR-10 models students build) would hand them the solution. Those reference architectures
are in the grader-side package ``cnn_grader.references``, which students never install.

=============================  ==========  ==========  ===============  ======
builder                         total       trainable   non-trainable    seed
=============================  ==========  ==========  ===============  ======
``dense_mnist``                 420,260     419,160     1,100            002
``cifar10_vgg``                 551,466     551,018     448              004
``progression_part_d``          83,466      83,466      0                001
=============================  ==========  ==========  ===============  ======

(Parameter counts from the course's reference table, ``shared/reference/published-numbers.md``;
``tests/test_models.py`` checks them.)
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import layers

__all__ = [
    "HANDED_OUT",
    "dense_mnist",
    "cifar10_vgg",
    "progression_part_d",
    "parameter_counts",
    "parameter_summary",
    "forward_flops",
    "training_flops",
]

MNIST_SHAPE = (28, 28, 1)
CIFAR10_SHAPE = (32, 32, 3)


def dense_mnist(input_shape=(28, 28), dropout: float = 0.3) -> keras.Model:
    """The fully connected baseline of seed 002: 784 → Dense 500 → BN → Dropout → ReLU → Dense 50 → BN → Dropout → ReLU → Dense 10 softmax.

    Input ``(N, 28, 28)`` float32 (flattened to 784 inside). 420,260 parameters, 419,160 trainable.
    """
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Flatten(),
        layers.Dense(500),
        layers.BatchNormalization(),
        layers.Dropout(dropout),
        layers.Activation("relu"),
        layers.Dense(50),
        layers.BatchNormalization(),
        layers.Dropout(dropout),
        layers.Activation("relu"),
        layers.Dense(10, activation="softmax"),
    ], name="dense_mnist")


def cifar10_vgg(input_shape=CIFAR10_SHAPE, dropout: float = 0.2) -> keras.Model:
    """The VGG-like CIFAR-10 network of seed 004 (86.87 % after 100 epochs at batch 64).

    Three blocks [Conv f 3×3 same ReLU → Conv f 3×3 same ReLU → BN → MaxPool → Dropout],
    f = 32, 64, 128, then Flatten (2,048) → Dense 128 ReLU → Dropout → Dense 10 softmax.
    Input ``(N, 32, 32, 3)``. 551,466 parameters, 551,018 trainable, 448 non-trainable.
    """
    stack = [keras.Input(input_shape)]
    for filters in (32, 64, 128):
        stack += [
            layers.Conv2D(filters, 3, padding="same", activation="relu"),
            layers.Conv2D(filters, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.Dropout(dropout),
        ]
    stack += [
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(dropout),
        layers.Dense(10, activation="softmax"),
    ]
    return keras.Sequential(stack, name="cifar10_vgg")


def progression_part_d(input_shape=MNIST_SHAPE, dropout: float = 0.2) -> keras.Model:
    """Seed 001's part D model for Fashion-MNIST: two 5×5 convolutions (32 and 64 filters, same padding),
    each followed by ReLU and 2×2 max pooling, dropout 0.2 after the first block, then Dense 10 softmax.

    Input ``(N, 28, 28, 1)``. 83,466 parameters.
    """
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(32, 5, padding="same"),
        layers.Activation("relu"),
        layers.Dropout(dropout),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 5, padding="same"),
        layers.Activation("relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name="progression_part_d")


#: The builders a notebook may hand out, by name. None is an answer anywhere in the course; the
#: grader refuses a student's design or saved model that is one of these (``cnn_grader.references``).
HANDED_OUT: dict[str, Callable[..., keras.Model]] = {
    "dense_mnist": dense_mnist,
    "cifar10_vgg": cifar10_vgg,
    "progression_part_d": progression_part_d,
}


def parameter_counts(model: keras.Model) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) parameters of a built model, summed from its weight shapes."""
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    total = sum(int(np.prod(weight.shape)) for weight in model.weights)
    return total, trainable, total - trainable


def parameter_summary(model: keras.Model) -> str:
    """One line with a model's parameter counts, e.g. ``695,970 parameters: 695,186 trainable, 784 non-trainable``."""
    total, trainable, frozen = parameter_counts(model)
    return f"{total:,} parameters: {trainable:,} trainable, {frozen:,} non-trainable"


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one forward pass of one example, counted from the layer shapes.

    Counts the multiply-adds of Conv2D (``2 × output height × width × filters × kernel height ×
    kernel width × input channels``, divided by ``groups``) and Dense (``2 × inputs × units``
    per output position) layers, nested models included; pooling, normalization and
    activations are left out (they are memory-bound and small next to these). This is the
    usual way to count a CNN's compute, e.g. for the fraction of a machine's matmul peak.

    Args:
        model: a built ``keras.Model``.

    Returns:
        FLOPs per example (int).
    """
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            flops += forward_flops(layer)
        elif isinstance(layer, layers.Conv2D):
            kernel = layer.kernel.shape  # (kh, kw, in / groups, filters)
            positions = int(np.prod(layer.output.shape[1:-1]))
            flops += 2 * positions * int(np.prod(kernel))
        elif isinstance(layer, layers.Dense):
            positions = int(np.prod(layer.output.shape[1:-1] or (1,)))
            flops += 2 * positions * int(np.prod(layer.kernel.shape))
    return flops


def training_flops(model: keras.Model) -> int:
    """FLOPs to train on one example: 3 × :func:`forward_flops`.

    The backward pass computes the gradient for the weights and for the layer's input, each
    as much work as the forward pass (the usual approximation; the first layer's input gradient,
    which is not needed, is counted too).
    """
    return 3 * forward_flops(model)
