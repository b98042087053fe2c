"""Grading checks: compare a student's Keras model with a reference and explain any difference.

The checks are meant for nbgrader test cells. Each raises :class:`AssertionError` with a
message in plain words that names the layer that differs (its 1-based position in
``model.layers`` with the ``InputLayer`` left out, and its kind) and says what was expected
and what was found, for example::

    Your model does not match the expected architecture.
    Layer 8 (Conv2D): expected 64 filters, found 32.
    Parameter count: expected 695,970 parameters, found 658,786.

Equivalent ways of writing a model compare equal. Each model is first turned into a
normalized list of :class:`LayerSpec`:

* Sequential and functional models give the same list; the ``InputLayer`` is skipped.
* Activations are one kind, ``Activation``, named by function: ``Activation("relu")``,
  ``ReLU()`` and ``Activation(keras.activations.relu)`` are all ``Activation 'relu'``;
  ``Softmax()`` is ``Activation 'softmax'``.
* An activation given inside a layer (``Conv2D(32, 3, activation="relu")``) becomes a
  separate ``Activation`` entry after it; linear activations are dropped.
* Sizes are tuples (``kernel_size=3`` is ``(3, 3)``), pooling strides default to the pool
  size, padding is compared in lower case.
* Names, initializers, regularizers and constraints are ignored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from itertools import takewhile
from typing import Iterable

import numpy as np

from .data import DATASETS

# Keras is imported by the checks that take a model, not here: a notebook whose grade cells check numbers
# and choices only then starts without TensorFlow (about 6 s less per grading kernel).

__all__ = [
    "LayerSpec",
    "describe_layers",
    "assert_same_architecture",
    "assert_parameter_count",
    "assert_output_shape",
    "assert_feature_map_before_flatten",
    "assert_has_layers",
    "assert_choice",
    "assert_number",
    "architecture_signature",
    "model_input_shape",
    "SAVED_MODEL_INPUT_SHAPES",
    "load_saved_model",
    "evaluate_saved_model",
    "assert_saved_model_accuracy",
    "assert_cnn_designs",
]

#: The settings compared, in the order they are reported, each with its phrase in a message.
_TERMS = {
    "filters": "{} filters",
    "units": "{} units",
    "kernel_size": "kernel size {}",
    "pool_size": "pool size {}",
    "strides": "strides {}",
    "dilation_rate": "dilation rate {}",
    "depth_multiplier": "depth multiplier {}",
    "padding": "padding {}",
    "rate": "dropout rate {}",
    "activation": "activation {}",
}

#: Layers that are nothing but an activation function, with the name of that function.
_ACTIVATION_LAYERS = {
    "Activation": lambda layer: _function_name(layer.activation),
    "ReLU": lambda layer: _relu_name(layer),
    "LeakyReLU": lambda layer: f"leaky_relu(negative_slope={layer.negative_slope:g})",
    "Softmax": lambda layer: "softmax",
    "ELU": lambda layer: "elu",
}


@dataclass
class LayerSpec:
    """One entry of a model's normalized layer list (see the module docstring).

    ``kind`` is what is compared (``"Conv2D"``, ``"Activation"``, ...); ``layer_kind`` is the
    class the student wrote (``"ReLU"``); ``number`` is the layer's 1-based position in
    ``model.layers`` without the ``InputLayer``; ``fused`` marks an activation split out of
    the layer ``number``. ``settings`` maps the compared settings to their values;
    ``output_shape`` leaves out the batch axis (``None`` when unknown).
    """

    kind: str
    layer_kind: str
    number: int
    settings: dict
    output_shape: tuple | None
    parameter_count: int
    fused: bool = False

    @property
    def where(self) -> str:
        """Where the entry is, for a message: ``layer 9 (Activation relu)``."""
        if self.fused:
            return f"the activation {_value(self.settings['activation'])} of layer {self.number} ({self.layer_kind})"
        title = f"{self.layer_kind} {self.settings['activation']}" if self.layer_kind == "Activation" else self.layer_kind
        return f"layer {self.number} ({title})"

    def describe(self) -> str:
        """The entry in words: ``a Conv2D with 64 filters, kernel size 3×3, padding 'same'``."""
        if self.kind == "Activation":
            return f"an Activation {_value(self.settings['activation'])}"
        shown = [_phrase(key, value) for key, value in self.settings.items() if _worth_showing(key, value, self.settings)]
        return _article(self.kind) + (f" with {', '.join(shown)}" if shown else "")


def describe_layers(model: keras.Model) -> list[LayerSpec]:
    """The normalized layer list of ``model`` (see the module docstring), in the model's layer order.

    Raises:
        AssertionError: ``model`` is not a built ``keras.Model``.
    """
    _require_model(model)
    specs = []
    for number, layer in enumerate(_layers(model), start=1):
        kind, config = type(layer).__name__, layer.get_config()
        shape, count = _output_shape(layer), layer.count_params()
        if kind in _ACTIVATION_LAYERS:
            activation = _ACTIVATION_LAYERS[kind](layer)
            if activation != "linear":
                specs.append(LayerSpec("Activation", kind, number, {"activation": activation}, shape, count))
            continue
        settings = {key: _normalize(config[key]) for key in _TERMS if key in config and key != "activation"}
        specs.append(LayerSpec(kind, kind, number, settings, shape, count))
        fused = _function_name(getattr(layer, "activation", None))
        if fused not in (None, "linear"):
            specs.append(LayerSpec("Activation", kind, number, {"activation": fused}, shape, 0, fused=True))
    return specs


def assert_same_architecture(student, reference: keras.Model, *, check_params: bool = True,
                             label: str = "your model", kinds: Iterable[str] | None = None,
                             settings: Iterable[str] | None = None, check_shapes: bool = True) -> None:
    """Check that ``student`` has the architecture of ``reference``, layer by layer.

    Compared, in order: the input shape; the kinds of layers in order; for each layer its
    settings (filters, units, kernel size, pool size, strides, dilation rate, padding,
    dropout rate, activation), then its output shape, then (with ``check_params``) its
    parameter count. Only the first difference is reported, with hints: the total parameter
    count and the number of layers where they differ. An unbuilt ``student`` (a Sequential
    without ``keras.Input``) is built with the reference's input shape first.

    Narrower checks, so that each grade cell tests one part of an answer:

    * ``kinds``: compare only the layers of these kinds, e.g. ``("Conv2D",)``;
    * ``settings``: compare only these settings, e.g. ``("kernel_size", "padding")``;
      ``settings=()`` with ``check_shapes=False`` and ``check_params=False`` compares the
      sequence of layer kinds (and activation functions) alone;
    * ``check_shapes``: compare output shapes.

    Raises:
        AssertionError: ``student`` is not a ``keras.Model``, cannot be built, or differs from
            ``reference``; the message names the layer and the difference.
        ValueError: ``reference`` is not a built ``keras.Model`` (a mistake in the course, not the answer).
    """
    import keras

    from .models import parameter_counts

    if not (isinstance(reference, keras.Model) and reference.built):
        raise ValueError(f"the reference must be a built keras.Model, got {type(reference).__name__}")
    _require_model(student, label, build_shape=reference.input_shape)
    expected_input, found_input = _input_shape(reference), _input_shape(student)
    def compared(model):
        return _restrict(describe_layers(model), kinds, settings, check_shapes)

    problem = ([f"The input: expected shape {_value(expected_input)}, found {_value(found_input)}."]
               if found_input != expected_input and check_shapes else
               _first_difference(compared(student), compared(reference), check_params))
    if problem is None:
        return
    expected_total, found_total = parameter_counts(reference)[0], parameter_counts(student)[0]
    if check_params and expected_total != found_total:
        problem.append(f"Parameter count: expected {expected_total:,} parameters, found {found_total:,}.")
    raise AssertionError("\n".join([f"{_capitalize(label)} does not match the expected architecture.", *problem]))


def assert_parameter_count(model, expected_total: int, expected_trainable: int | None = None,
                           expected_non_trainable: int | None = None, *, label: str = "your model") -> None:
    """Check the total parameter count of ``model`` and, if given, its trainable and non-trainable counts.

    The counts are summed from the shapes of the model's weights, so a patched
    ``count_params`` or a printed number changes nothing.

    Raises:
        AssertionError: ``model`` is not a built ``keras.Model``, or a count differs.
    """
    from .models import parameter_counts
    _require_model(model, label)
    total, trainable, _ = parameter_counts(model)
    for what, expected, found in (("parameters in total", expected_total, total),
                                  ("trainable parameters", expected_trainable, trainable),
                                  ("non-trainable parameters", expected_non_trainable, total - trainable)):
        if expected is not None and expected != found:
            raise AssertionError(f"{_capitalize(label)}: expected {expected:,} {what}, found {found:,}.")


def assert_output_shape(model, layer: int | str, expected: Iterable, *, label: str = "your model") -> None:
    """Check the output shape of one layer of ``model``, without the batch axis.

    ``layer`` is a 1-based position in ``model.layers`` without the ``InputLayer`` (the
    numbers the messages use; negative numbers count from the end as in Python), a layer
    name, or ``"before_flatten"`` for the feature map that goes into the first ``Flatten``.
    ``expected`` may start with ``None`` for the batch axis.

    Raises:
        AssertionError: ``model`` is not a built ``keras.Model``, has no such layer, or the shape differs.
    """
    import keras
    _require_model(model, label)
    found_layers = _layers(model)
    if layer == "before_flatten":
        flatten = next((candidate for candidate in found_layers if isinstance(candidate, keras.layers.Flatten)), None)
        if flatten is None:
            raise AssertionError(f"{_capitalize(label)} has no Flatten layer; expected one after the convolutional part.")
        where, found = "The feature map before Flatten", _shape(flatten.input.shape)
    else:
        names = [candidate.name for candidate in found_layers]
        if isinstance(layer, str):
            index = names.index(layer) if layer in names else None
        else:
            index = layer - 1 if layer > 0 else len(found_layers) + layer
        if index is None or not 0 <= index < len(found_layers):
            raise AssertionError(f"{_capitalize(label)} has no layer {layer!r}; it has {len(found_layers)} layers.")
        where, found = f"Layer {index + 1} ({type(found_layers[index]).__name__})", _output_shape(found_layers[index])
    expected = tuple(expected)
    expected = expected[1:] if expected and expected[0] is None else expected
    if found != expected:
        raise AssertionError(f"{where}: expected {_phrase('output_shape', expected)}, found {_value(found)}.")


def assert_feature_map_before_flatten(model, expected_shape: Iterable, *, label: str = "your model") -> None:
    """Check the shape of the feature map that goes into the first ``Flatten`` (e.g. ``(7, 7, 64)``).

    Raises:
        AssertionError: as :func:`assert_output_shape` with ``"before_flatten"``.
    """
    assert_output_shape(model, "before_flatten", expected_shape, label=label)


def assert_has_layers(model, kinds: Iterable[str | type], *, label: str = "your model") -> None:
    """Check that ``model`` has at least the layers ``kinds`` (class names or classes), in any order.

    A kind listed twice must occur at least twice. ``"Activation"`` counts every activation,
    also one given inside a layer (``activation="relu"``); other kinds count layers of that class.

    Raises:
        AssertionError: ``model`` is not a built ``keras.Model``, or a kind occurs too few times;
            the message names every kind that is short.
    """
    _require_model(model, label)
    specs = describe_layers(model)
    wanted = Counter(kind if isinstance(kind, str) else kind.__name__ for kind in kinds)
    short = [f"at least {count} {kind} layer{'s' * (count > 1)}, found {found}"
             for kind, count in wanted.items()
             if (found := sum(kind in ({spec.kind} if spec.fused else {spec.kind, spec.layer_kind})
                              for spec in specs)) < count]
    if short:
        raise AssertionError(f"{_capitalize(label)}: expected {'; '.join(short)}.")


def _first_difference(found: list[LayerSpec], expected: list[LayerSpec], check_params: bool) -> list[str] | None:
    """The first difference between two normalized layer lists, as message lines; ``None`` if they match."""
    steps = _align(expected, found)
    for index, (wanted, got) in enumerate(steps):
        problem = _layer_difference(wanted, got, check_params) if wanted and got else _gap(steps, index)
        if problem:
            break
    else:
        return None
    if len(found) == len(expected):
        return [problem]
    fused_note = " (an activation given inside a layer counts as a layer of its own)" if any(s.fused for s in found) else ""
    return [problem, f"Expected {len(expected)} layers, found {len(found)}{fused_note}."]


def _align(expected: list[LayerSpec], found: list[LayerSpec]) -> list[tuple[LayerSpec | None, LayerSpec | None]]:
    """Pair up two layer lists along a longest common subsequence of (kind, settings), matching as early as possible.

    Returns ``(expected, found)`` pairs; ``(spec, None)`` is a missing layer, ``(None, spec)`` an extra one. Two layers
    of the same kind are paired when that costs no match, so that other settings are reported as such.
    """
    keys = [[(spec.kind, tuple(spec.settings.items())) for spec in specs] for specs in (expected, found)]
    n, m = len(expected), len(found)
    common = [[0] * (m + 1) for _ in range(n + 1)]  # common[i][j]: longest common subsequence of expected[i:], found[j:]
    for i in reversed(range(n)):
        for j in reversed(range(m)):
            common[i][j] = (common[i + 1][j + 1] + 1 if keys[0][i] == keys[1][j]
                            else max(common[i + 1][j], common[i][j + 1]))
    steps, i, j = [], 0, 0
    while i < n or j < m:
        if i < n and j < m and (keys[0][i] == keys[1][j] or (
                expected[i].kind == found[j].kind and common[i + 1][j + 1] == common[i][j])):
            steps.append((expected[i], found[j]))
            i, j = i + 1, j + 1
        elif i < n and (j == m or common[i + 1][j] == common[i][j]):
            steps.append((expected[i], None))
            i += 1
        else:
            steps.append((None, found[j]))
            j += 1
    return steps


def _gap(steps: list, index: int) -> str:
    """The message for missing layers (``steps[index]`` lacks a found layer) or an extra one (it lacks an expected one)."""
    got = steps[index][1]
    previous = next((found for _, found in reversed(steps[:index]) if found), None)
    after = f"after {previous.where}" if previous else "at the start"
    if got is None:
        missing = list(takewhile(lambda step: step[1] is None, steps[index:]))
        next_found = next((found for _, found in steps[index + len(missing):] if found), None)
        return (f"{_capitalize(after)}, expected {_listing([spec for spec, _ in missing])}; "
                f"found {_found(next_found)}.")
    next_expected = next((spec for spec, _ in steps[index:] if spec), None)
    return (f"{_capitalize(got.where)} is one too many: {after}, expected "
            f"{next_expected.describe() if next_expected else 'the end of the model'}; found {got.describe()}.")


def _layer_difference(expected: LayerSpec, found: LayerSpec, check_params: bool) -> str | None:
    """What differs between two layers of the same kind: settings first, then output shape, then parameter count."""
    tiers = [
        [(key, expected.settings.get(key), found.settings.get(key)) for key in _TERMS],
        [("output_shape", expected.output_shape, found.output_shape)]
        if None not in (expected.output_shape, found.output_shape) else [],
        [("parameter_count", expected.parameter_count, found.parameter_count)] if check_params else [],
    ]
    for tier in tiers:
        differences = [f"expected {_phrase(key, e)}, found {_value(f)}" for key, e, f in tier if e != f]
        if differences:
            return f"{_capitalize(found.where)}: {'; '.join(differences)}."
    return None


def _require_model(model, label: str = "the model", build_shape=None) -> None:
    """Fail with advice unless ``model`` is a built ``keras.Model``; an unbuilt one is built with ``build_shape`` first."""
    import keras
    if not isinstance(model, keras.Model):
        hint = "did you call the function that builds it?" if callable(model) else "did you return/assign the model?"
        raise AssertionError(f"Expected {label} to be a keras.Model, got {type(model).__name__} — {hint}")
    if not model.built and build_shape is not None:
        try:
            model.build(build_shape)
        except Exception as error:  # any failure means the same advice
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
            raise AssertionError(f"{_capitalize(label)} could not be built for input shape {_value(_shape(build_shape))}: "
                                 f"{reason}. Start it with keras.Input(shape={_shape(build_shape)}) to see which "
                                 "layer does not fit.") from error
    if not model.built:
        raise AssertionError(f"{_capitalize(label)} is not built yet, so its layers have no shapes. "
                             "Start it with keras.Input(shape=...).")


def _restrict(specs: list[LayerSpec], kinds, settings, check_shapes: bool) -> list[LayerSpec]:
    """The entries of ``kinds`` only, with only ``settings`` kept (an activation keeps its function) and no shapes."""
    kinds = None if kinds is None else set(kinds)
    settings = None if settings is None else {*settings, "activation"}
    return [replace(spec,
                    settings={key: value for key, value in spec.settings.items() if settings is None or key in settings},
                    output_shape=spec.output_shape if check_shapes else None)
            for spec in specs if kinds is None or spec.kind in kinds]


def _layers(model: keras.Model) -> list:
    import keras
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _output_shape(layer) -> tuple | None:
    try:
        return _shape(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called more than once
        return None


def _input_shape(model: keras.Model) -> tuple | None:
    inputs = getattr(model, "inputs", None)
    return _shape(inputs[0].shape) if inputs and len(inputs) == 1 else None


def _shape(shape) -> tuple:
    return tuple(shape)[1:]


def _relu_name(layer) -> str:
    options = [f"{key}={getattr(layer, key):g}"
               for key in ("max_value", "negative_slope", "threshold") if getattr(layer, key)]
    return f"relu({', '.join(options)})" if options else "relu"


def _function_name(function) -> str | None:
    return None if function is None else getattr(function, "__name__", str(function))


def _normalize(value):
    if isinstance(value, str):
        return value.lower()
    return tuple(value) if isinstance(value, list) else value


def _worth_showing(key: str, value, settings: dict) -> bool:
    """Whether a setting is worth naming when a layer is described: leaves out unit strides and default pooling strides."""
    if key in ("strides", "dilation_rate") and set(np.atleast_1d(value)) == {1}:
        return False
    return not (key == "strides" and value == settings.get("pool_size"))


def _phrase(key: str, value) -> str:
    if key == "output_shape":
        return f"a {_value(value)} feature map" if len(value) > 1 else f"output shape {_value(value)}"
    if key == "parameter_count":
        return f"{_value(value)} parameters"
    return _TERMS[key].format(_value(value))


def _value(value) -> str:
    if isinstance(value, tuple):
        return "×".join("?" if size is None else f"{size}" for size in value)
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _found(spec: LayerSpec | None) -> str:
    """A found layer in words; an activation given inside a layer is named by where it is."""
    if spec is None:
        return "the end of the model"
    return spec.where if spec.fused else spec.describe()


def _listing(specs: list[LayerSpec], limit: int = 8) -> str:
    """Layers in words, one after the other; past ``limit`` the rest is only counted."""
    shown = [spec.describe() for spec in specs[:limit - 1 if len(specs) > limit else limit]]
    rest = len(specs) - len(shown)
    return ", then ".join(shown + ([f"{rest} more layers"] if rest else []))


def _article(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def assert_choice(answer, options: str, *, correct: str | None = None, explanation: str = "",
                  name: str = "answer") -> None:
    """Check a multiple-choice answer: one letter of ``options`` and, if ``correct`` is given, that letter.

    Case and surrounding spaces do not matter. Visible tests call it without ``correct`` (is
    the answer a valid option?); hidden tests call it with ``correct`` and an ``explanation``
    that the feedback shows when the answer is wrong.

    Raises:
        AssertionError: ``answer`` is not a string holding one of ``options``, or is not ``correct``.
    """
    choices = ", ".join(options)
    if not isinstance(answer, str) or answer.strip().upper() not in options.upper():
        raise AssertionError(f"Set {name} to one letter of {choices} (as a string, e.g. {name} = \"{options[0]}\"); "
                             f"found {answer!r}.")
    if correct is not None and answer.strip().upper() != correct.upper():
        raise AssertionError(f"{name} = {answer.strip().upper()!r} is not correct. {explanation}".strip())


def assert_number(answer, expected: float | None = None, *, name: str = "answer", explanation: str = "",
                  tolerance: float = 0.0) -> None:
    """Check a numeric answer: a real number and, if ``expected`` is given, equal to it within ``tolerance``.

    Raises:
        AssertionError: ``answer`` is not a number (``bool`` and strings are not), or differs from ``expected``.
    """
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        raise AssertionError(f"Set {name} to a number, e.g. {name} = 1234; found {answer!r}.")
    if expected is not None and abs(float(answer) - float(expected)) > tolerance:
        raise AssertionError(f"{name} = {_value(answer)} is not correct. {explanation}".strip())


# --------------------------------------------------------------------------------------------
# Saved models: the files a student hands in with a notebook, graded by evaluation only
# --------------------------------------------------------------------------------------------

#: The image shapes a saved model may take for each data set, without the batch axis; the first
#: is the one the course's notebooks ask for. Pixels are raw values 0..255 as float32.
SAVED_MODEL_INPUT_SHAPES = {
    "mnist": ((28, 28, 1), (28, 28), (784,)),
    "fashion_mnist": ((28, 28, 1), (28, 28), (784,)),
    "cifar10": ((32, 32, 3), (3072,)),
}

#: What a saved model must take, in words, for the messages.
SAVED_MODEL_CONTRACT = ("images of shape {shape} holding the raw pixel values 0-255 as float32, "
                        "and return 10 scores per image (probabilities or logits)")


def model_input_shape(model) -> tuple | None:
    """The input shape of a single-input model without the batch axis, e.g. ``(28, 28, 1)``.

    Returns ``None`` when the model does not say (a subclassed model that was never built).

    Raises:
        AssertionError: the model has more than one input.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    if len(inputs) != 1:
        raise AssertionError(f"The saved model has {len(inputs)} inputs; it must take one batch of images.")
    return tuple(inputs[0].shape)[1:]


def _fits(shape: tuple, wanted: tuple) -> bool:
    return len(shape) == len(wanted) and all(size is None or size == want for size, want in zip(shape, wanted))


def load_saved_model(path, dataset: str = "mnist", *, classes: int = 10) -> tuple[keras.Model, tuple]:
    """Load a saved model that a student hands in, and check that it can classify ``dataset``'s images.

    The file is loaded with ``keras.models.load_model(path, compile=False)`` in Keras' safe
    mode (no ``Lambda`` code is run). Any ``keras.Model`` is accepted, Sequential, functional or
    subclassed, whatever its architecture, as long as it takes one batch of images of one of
    :data:`SAVED_MODEL_INPUT_SHAPES` for ``dataset`` (raw pixel values 0..255, float32) and
    returns ``(N, classes)`` scores, probabilities or logits alike.

    Args:
        path: the model file, e.g. ``"best_mnist.keras"`` (``.keras`` or ``.h5``).
        dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``; it sets the accepted input shapes.
        classes: the number of scores the model must return per image.

    Returns:
        ``(model, input_shape)``: the loaded model and the shape (without the batch axis) its
        images must be given in, one of :data:`SAVED_MODEL_INPUT_SHAPES[dataset]`.

    Raises:
        AssertionError: the file is missing, cannot be loaded as a Keras model (corrupt,
            truncated, not a model, a custom class Keras does not know), takes images of
            another shape, or returns another number of scores. The message names the file,
            says what was wrong and what the model must take and return.
        KeyError: ``dataset`` is not one of :data:`SAVED_MODEL_INPUT_SHAPES` (a course error).
    """
    import zipfile
    from pathlib import Path

    import keras

    if dataset not in SAVED_MODEL_INPUT_SHAPES:
        raise KeyError(f"unknown data set {dataset!r}; choose one of {', '.join(SAVED_MODEL_INPUT_SHAPES)}")
    accepted = SAVED_MODEL_INPUT_SHAPES[dataset]
    contract = SAVED_MODEL_CONTRACT.format(shape=_value(accepted[0]))
    path = Path(path)
    if not path.is_file():
        raise AssertionError(
            f"No saved model at {path.name} (looked for {path.resolve()}). Run the notebook in a full run, "
            f"so that it trains and saves the model, and hand in {path.name} next to the notebook.")
    size = path.stat().st_size
    if size == 0:
        raise AssertionError(f"{path.name} is empty (0 bytes), not a saved model. Save the trained model with "
                             f"model.save({str(path.name)!r}) and hand in that file unchanged.")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise AssertionError(
            f"{path.name} is not a saved Keras model: a .keras file is a zip archive, and this one ({size:,} bytes) "
            f"is not (corrupt, truncated, or another kind of file). Save the trained model with "
            f"model.save({str(path.name)!r}) and hand in that file unchanged.")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to load scores 0 with its reason
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise AssertionError(
            f"{path.name} could not be loaded as a Keras model ({type(error).__name__}: {reason}). "
            f"Save the trained model with model.save({str(path.name)!r}) and hand in that file unchanged.") from None
    if not isinstance(model, keras.Model):
        raise AssertionError(f"{path.name} holds a {type(model).__name__}, not a keras.Model.")
    shape = model_input_shape(model)
    if shape is not None:
        fitting = [wanted for wanted in accepted if _fits(shape, wanted)]
        if not fitting:
            raise AssertionError(
                f"{path.name} takes images of shape {_value(shape)}, but the {DATASETS[dataset].title} images have shape "
                f"{_value(accepted[0])}. The saved model must take {contract}.")
        candidates = fitting
    else:  # a subclassed model that does not say: try each accepted shape
        candidates = list(accepted)
    problems = []
    for wanted in candidates:
        try:
            scores = model.predict_on_batch(np.zeros((2, *wanted), dtype=np.float32))
        except Exception as error:  # noqa: BLE001
            problems.append(f"{_value(wanted)}: {type(error).__name__}: {' '.join(str(error).split())[:200]}")
            continue
        if isinstance(scores, (list, tuple, dict)):
            raise AssertionError(f"{path.name} returns {len(scores)} outputs; it must return one array of "
                                 f"{classes} scores per image.")
        scores_shape = tuple(np.shape(scores))
        if scores_shape != (2, classes):
            raise AssertionError(f"{path.name} returns scores of shape {_value(scores_shape[1:])} per image; "
                                 f"it must return {classes} scores per image (one per class).")
        return model, wanted
    raise AssertionError(f"{path.name} cannot classify images of shape {_value(accepted[0])} "
                         f"({'; '.join(problems)}). The saved model must take {contract}.")


def evaluate_saved_model(path, dataset: str = "mnist", *, n_test: int | None = None, batch_size: int = 500,
                         verbose: bool = True) -> float:
    """The test accuracy of a saved model on ``dataset``'s test split, without training anything.

    The model is loaded and checked by :func:`load_saved_model`; the test split comes from
    :func:`cnn_course.data.load_dataset` (the official 10,000 test images where the full data set
    is available). Images are given as float32 raw pixel values 0..255, reshaped to the input
    shape the model takes; the predicted class is the argmax of the scores.

    Args:
        path: the model file.
        dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        n_test: a stratified subset of this many test images; ``None`` (the default) evaluates all.
        batch_size: images per prediction batch.
        verbose: print one line: the file, the accuracy, how many test images and where they came from.

    Returns:
        The accuracy, a float in [0, 1].

    Raises:
        AssertionError: as :func:`load_saved_model`, or the model fails on the test images.
        FileNotFoundError: the data set is nowhere to be found (see :func:`cnn_course.data.load_dataset`).
    """
    from pathlib import Path

    from .data import load_dataset_with_source
    from .training import predict_scores

    model, shape = load_saved_model(path, dataset)
    loaded = load_dataset_with_source(dataset, n_test=n_test, verbose=False)
    images = np.asarray(loaded.x_test, dtype=np.float32).reshape((-1, *shape))
    labels = np.asarray(loaded.y_test).reshape(-1)
    try:
        scores = predict_scores(model, images, batch_size=batch_size)
    except Exception as error:  # noqa: BLE001
        raise AssertionError(f"{Path(path).name} failed on the test images: {type(error).__name__}: "
                             f"{' '.join(str(error).split())[:300]}") from None
    accuracy = float(np.mean(np.argmax(np.asarray(scores), axis=1) == labels))
    if verbose:
        print(f"{Path(path).name}: {accuracy:.2%} of {len(labels):,} {DATASETS[dataset].title} test images classified correctly "
              f"(test split from {loaded.source})")
    return accuracy


def assert_saved_model_accuracy(path, dataset: str, minimum: float, *, smoke_minimum: float | None = 0.0,
                                n_test: int | None = None, batch_size: int = 500) -> None:
    """Check that a saved model reaches at least ``minimum`` accuracy on ``dataset``'s test split.

    For hidden tests that grade a model file handed in with a notebook: the file is loaded and
    evaluated (see :func:`evaluate_saved_model`), nothing is trained, so grading takes seconds.

    Args:
        path: the model file, e.g. ``"best_mnist.keras"``.
        dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        minimum: the accuracy needed, a fraction in [0, 1] (0.985 for 98.5 %); 0 checks the file only.
        smoke_minimum: the accuracy needed instead in a smoke run (CI, ``CNN_COURSE_SMOKE=1`` or
            ``CNN_COURSE_BUDGET=smoke``), which trains for seconds: by default 0, so that a smoke run
            checks that the file loads and is evaluated; ``None`` keeps ``minimum``. It never
            applies under nbgrader (``NBGRADER_EXECUTION`` set): autograding and validation always
            use ``minimum``, whatever a notebook did to its ``budget`` variable.
        n_test: evaluate on a stratified subset of this many test images; ``None`` evaluates all.
        batch_size: images per prediction batch.

    Returns nothing, on purpose: nbgrader takes a number that a grade cell shows as its output for
    partial credit, so a returned accuracy would become the cell's score. The accuracy is printed;
    :func:`evaluate_saved_model` returns it.

    Raises:
        AssertionError: the file is missing, corrupt or of the wrong shape (see
            :func:`load_saved_model`), or its accuracy is below ``minimum``; the message gives
            the accuracy found and the one needed.
        ValueError: ``minimum`` is outside [0, 1] (a course error, e.g. 98.5 instead of 0.985).
    """
    from pathlib import Path

    import os

    from .training import current_budget

    for value in (minimum, 0.0 if smoke_minimum is None else smoke_minimum):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"minimum is a fraction in [0, 1], e.g. 0.985 for 98.5 %; got {value}")
    if (smoke_minimum is not None and not os.environ.get("NBGRADER_EXECUTION")
            and current_budget(announce=False).mode == "smoke"):
        print(f"Smoke run: the minimum accuracy is {smoke_minimum:.1%} instead of {minimum:.1%}.")
        minimum = smoke_minimum
    accuracy = evaluate_saved_model(path, dataset, n_test=n_test, batch_size=batch_size)
    if accuracy < minimum:
        raise AssertionError(
            f"{Path(path).name} classifies {accuracy:.2%} of the {DATASETS[dataset].title} test images correctly; "
            f"at least {minimum:.1%} is needed. Train longer or try another design. The saved model gets the raw "
            f"pixel values 0-255: if it expects values scaled to 0-1, put layers.Rescaling(1 / 255) at its start.")


def _all_layers(model) -> list:
    """Every layer of ``model``, with the layers of nested models (a Sequential inside a Sequential) in order."""
    import keras
    found = []
    for layer in _layers(model):
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += _all_layers(layer)
    return found


def assert_cnn_designs(designs, *, input_shape=(28, 28, 1), classes: int = 10, minimum: int = 2,
                       label: str = "designs") -> None:
    """Check a student's CNN designs: at least ``minimum`` different convolutional networks for the task.

    Args:
        designs: a dict ``{name: function}``; each function takes no arguments and returns a new,
            uncompiled ``keras.Model``.
        input_shape: the input shape each model must take, without the batch axis.
        classes: the number of outputs each model must have.
        minimum: how many designs with different architectures are needed.
        label: the variable's name, for the messages.

    Raises:
        AssertionError: ``designs`` is not such a dict, has too few entries, a function fails or
            returns no ``keras.Model``, a model has no ``Conv2D`` layer (nested models are looked
            into), takes another input shape, has another number of outputs, or two designs have
            the same architecture. The message names the design.
    """
    import keras
    example = f'{label} = {{"small": small_cnn, "deeper": deeper_cnn}}'
    if not isinstance(designs, dict):
        raise AssertionError(f"Set {label} to a dict from a name to a function that builds a model, e.g. {example}; "
                             f"found a {type(designs).__name__}.")
    if len(designs) < minimum:
        raise AssertionError(f"{_capitalize(label)} has {len(designs)} design(s); at least {minimum} are needed, "
                             f"e.g. {example}.")
    architectures = {}
    for name, build in designs.items():
        if isinstance(build, keras.Model) or not callable(build):
            raise AssertionError(f"Design {name!r} must be a function that returns a new model (so that each data set "
                                 f"gets fresh weights), e.g. def small_cnn(): return keras.Sequential([...]); "
                                 f"found a {type(build).__name__}.")
        try:
            model = build()
        except Exception as error:  # noqa: BLE001
            raise AssertionError(f"Design {name!r} failed when called: {type(error).__name__}: {error}") from None
        if not isinstance(model, keras.Model):
            raise AssertionError(f"Design {name!r} returned a {type(model).__name__}, not a keras.Model.")
        _require_model(model, f"design {name!r}", build_shape=(None, *input_shape))
        found_input = model_input_shape(model)
        if found_input != tuple(input_shape):
            raise AssertionError(f"Design {name!r} takes input of shape {_value(found_input)}; it must take "
                                 f"{_value(tuple(input_shape))}: start it with keras.Input(shape={tuple(input_shape)}).")
        if not any(isinstance(layer, keras.layers.Conv2D) for layer in _all_layers(model)):
            raise AssertionError(f"Design {name!r} has no Conv2D layer, so it is not a convolutional network.")
        output = tuple(model.outputs[0].shape)[1:] if len(model.outputs) == 1 else None
        if output != (classes,):
            raise AssertionError(f"Design {name!r} has output shape {_value(output) if output else 'of several outputs'}; "
                                 f"it must end with {classes} outputs, one per class.")
        signature = architecture_signature(model)
        if signature in architectures:
            raise AssertionError(f"Designs {architectures[signature]!r} and {name!r} have the same architecture; "
                                 f"at least {minimum} different designs are needed.")
        architectures[signature] = name


def architecture_signature(model) -> tuple:
    """What makes two architectures the same: each layer's kind, settings and parameter count, in order.

    Nested models are expanded into their own layers; names and weights do not count. Two models with
    equal signatures compute the same function family.
    """
    return tuple((spec.kind, tuple(sorted(spec.settings.items())), spec.parameter_count)
                 for spec in _nested_specs(model))


def _nested_specs(model) -> list[LayerSpec]:
    """:func:`describe_layers` of ``model`` with nested models expanded into their own layers."""
    import keras
    found_layers = _layers(model)
    specs = []
    for spec in describe_layers(model):
        layer = found_layers[spec.number - 1]
        specs += _nested_specs(layer) if isinstance(layer, keras.Model) else [spec]
    return specs

