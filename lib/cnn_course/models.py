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

from dataclasses import dataclass
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
    "ReceptiveField",
    "receptive_fields",
    "describe_receptive_fields",
    "feature_maps",
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


@dataclass(frozen=True)
class ReceptiveField:
    """How much of the input one unit of a layer's feature map sees.

    Attributes:
        layer: the layer's name.
        kind: the layer's class name, e.g. ``"Conv2D"``.
        output_size: the feature map's height and width, in units.
        size: the side of the square of input pixels that one unit depends on, in pixels.
        jump: the distance in input pixels between two neighbouring units of the feature map.
    """

    layer: str
    kind: str
    output_size: tuple[int, int]
    size: int
    jump: int


def receptive_fields(model: keras.Model) -> list[ReceptiveField]:
    """The receptive field of every convolution and pooling layer of a model, from input to output.

    A layer with kernel ``k``, stride ``s`` and dilation ``d`` grows the receptive field by
    ``(k - 1) × d × jump`` pixels and multiplies the jump by ``s`` (square kernels; the
    height is used). Padding does not change the receptive field of a unit in the middle of
    the image. Layers that work on each position alone (batch normalization, activations,
    dropout) keep it and are left out of the list; the first ``Flatten`` or ``Dense`` ends it.

    Args:
        model: a built Keras model whose layers are in order (Sequential, or a functional chain).

    Returns:
        One :class:`ReceptiveField` per Conv2D, MaxPooling2D or AveragePooling2D layer, in order.
    """
    size, jump, fields = 1, 1, []
    for layer in model.layers:
        if isinstance(layer, (layers.Flatten, layers.Dense, layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
            break
        if isinstance(layer, layers.Conv2D):
            kernel, stride, dilation = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
        elif isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
            kernel, stride, dilation = layer.pool_size[0], layer.strides[0], 1
        else:
            continue
        size += (kernel - 1) * dilation * jump
        jump *= stride
        height, width = layer.output.shape[1:3]
        fields.append(ReceptiveField(layer.name, type(layer).__name__, (int(height), int(width)), size, jump))
    return fields


def describe_receptive_fields(model: keras.Model) -> str:
    """A table, one line per layer of :func:`receptive_fields`: feature-map size, receptive field and jump."""
    lines = [f"{'layer':<18}{'kind':<14}{'feature map':>12}{'receptive field':>18}{'jump':>6}"]
    for field in receptive_fields(model):
        height, width = field.output_size
        lines.append(f"{field.layer:<18}{field.kind:<14}{f'{height}×{width}':>12}"
                     f"{f'{field.size}×{field.size} px':>18}{field.jump:>6}")
    return "\n".join(lines)


def feature_maps(model: keras.Model, image: np.ndarray, layer: int | str = 0) -> np.ndarray:
    """The feature maps that one layer of ``model`` computes for one image.

    Args:
        model: a built Keras model.
        image: one image as the model takes it, shape ``(height, width, channels)``, float32.
        layer: the layer's index in ``model.layers`` or its name.

    Returns:
        ``(height, width, channels)`` float32: one map per filter of the layer.

    Raises:
        ValueError: ``image`` has not 3 dimensions.
    """
    image = np.asarray(image, dtype="float32")
    if image.ndim != 3:
        raise ValueError(f"expected one image of shape (height, width, channels), got shape {image.shape}")
    chosen = model.get_layer(layer) if isinstance(layer, str) else model.layers[layer]
    return np.asarray(probe(model, chosen.output)(image[None], training=False))[0]


def probe(model: keras.Model, tensor) -> keras.Model:
    """A model that shares ``model``'s layers and weights and outputs ``tensor``, a tensor inside it.

    Args:
        model: a built Keras model (Sequential or functional).
        tensor: the ``output`` or ``input`` of one of its layers, e.g. ``model.get_layer("conv").output``.

    Returns:
        A ``keras.Model`` from ``model``'s input(s) to ``tensor``: what the network computes up to there.

    Raises:
        ValueError: ``tensor`` does not depend on ``model``'s inputs (Keras' message).
    """
    return keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, tensor)
