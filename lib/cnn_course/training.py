"""The run budget, seeding, and a fit helper with a fast CPU path.

One switch sets how much every notebook trains:

========  =========================================  ======================================
mode      when                                       what a notebook does
========  =========================================  ======================================
full      the default, a student running a notebook  the seeds' settings: full epochs and data
grading   nbgrader sets ``NBGRADER_EXECUTION``        one epoch of two batches, run eagerly;
          (autograde and validate)                   the tests check architectures and answers
smoke     ``CNN_COURSE_SMOKE=1`` (CI)                 one epoch on about a thousand images
========  =========================================  ======================================

``CNN_COURSE_BUDGET=full|grading|smoke`` overrides the detection, e.g. to run a notebook
in full mode under nbgrader.

:func:`fit` trains with bfloat16 arithmetic where the CPU computes bfloat16 natively
(AVX512-BF16 or AMX, e.g. AMD Zen 4 and Intel Sapphire Rapids): the weights stay float32 and
the model is float32 again when ``fit`` returns (see :func:`training_precision`).
``CNN_COURSE_PRECISION=float32`` turns this off.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "BUDGET_MODES",
    "RunBudget",
    "current_budget",
    "seed_everything",
    "EpochTimer",
    "make_dataset",
    "PRECISIONS",
    "native_bfloat16",
    "training_precision",
    "fit",
    "cosine_adam",
    "one_cycle_adam",
    "summarize_runs",
    "model_file",
    "epoch_accuracy_table",
    "predict_scores",
    "accuracy_under_shift",
    "RunningStatistics",
    "recalibrated_batch_norm",
]

BUDGET_MODES = ("full", "grading", "smoke")

# Sizes in the short modes: small enough for the time limits on 2 CPU cores, large enough
# that every class is present and a learning curve has something to show.
_SHORT_MODE_SIZES = {
    "grading": {"epochs": 1, "n_train": 512, "n_test": 256},
    "smoke": {"epochs": 1, "n_train": 1024, "n_test": 512},
}

#: Weight updates per epoch in a grading run, run eagerly (no graph to trace): no grade cell reads what
#: grading-mode training gives, so it only has to show that the student's model trains at all. Tracing
#: the training step cost more than the rest of such a run (``bench/grading_breakdown.py``).
GRADING_STEPS = 2


def _detect_mode(environ=os.environ) -> tuple[str, str]:
    explicit = environ.get("CNN_COURSE_BUDGET", "").strip().lower()
    if explicit:
        if explicit not in BUDGET_MODES:
            raise ValueError(
                f"CNN_COURSE_BUDGET={explicit!r} is not a run budget; use one of {', '.join(BUDGET_MODES)}"
            )
        return explicit, "CNN_COURSE_BUDGET"
    if environ.get("NBGRADER_EXECUTION"):
        return "grading", f"NBGRADER_EXECUTION={environ['NBGRADER_EXECUTION']}"
    if environ.get("CNN_COURSE_SMOKE", "").strip() not in ("", "0"):
        return "smoke", "CNN_COURSE_SMOKE"
    return "full", "default"


@dataclass(frozen=True)
class RunBudget:
    """How much a notebook trains: ``full``, ``grading`` or ``smoke``.

    Ask it for every number that sets the size of a run, with the full-mode value as argument;
    in the short modes the answer shrinks to a size that fits the time limits::

        budget = current_budget()
        epochs = budget.epochs(10)          # 10 in full mode, 1 otherwise
        n_train = budget.n_train(4000)      # 4000, 1024 (smoke) or 512 (grading)
    """

    mode: str = "full"
    reason: str = "default"

    def __post_init__(self):
        if self.mode not in BUDGET_MODES:
            raise ValueError(f"unknown run budget {self.mode!r}; use one of {', '.join(BUDGET_MODES)}")

    @property
    def is_full(self) -> bool:
        """True in full mode, where a notebook's stated results must hold."""
        return self.mode == "full"

    def pick(self, full, *, grading=None, smoke=None):
        """The value for this mode: ``full``, or ``grading``/``smoke`` when given for those modes (else ``full``)."""
        chosen = {"full": full, "grading": grading, "smoke": smoke}[self.mode]
        return full if chosen is None else chosen

    def _shrink(self, key: str, full: int | None) -> int | None:
        if self.is_full:
            return full
        short = _SHORT_MODE_SIZES[self.mode][key]
        return short if full is None else min(full, short)

    def epochs(self, full: int) -> int:
        """Epochs to train: ``full`` in full mode, 1 in the short modes.

        Raises:
            ValueError: ``full`` is smaller than 1.
        """
        if full < 1:
            raise ValueError(f"epochs must be at least 1, got {full}")
        return self._shrink("epochs", full)

    def n_train(self, full: int | None = None) -> int | None:
        """Training images: ``full`` (``None`` = all) in full mode, at most 1,024 (smoke) or 512 (grading)."""
        return self._shrink("n_train", full)

    def n_test(self, full: int | None = None) -> int | None:
        """Test or validation images: ``full`` in full mode, at most 512 (smoke) or 256 (grading)."""
        return self._shrink("n_test", full)

    def describe(self) -> str:
        """One line for a notebook's output: the mode and why it was chosen."""
        what = {
            "full": "full run, the settings whose results the notebook states",
            "grading": "grading run: one epoch of two batches; results are not meaningful",
            "smoke": "smoke run for CI: one short epoch; results are not meaningful",
        }[self.mode]
        return f"Run budget: {self.mode} ({what}; set by {self.reason})"


def current_budget(*, announce: bool = True) -> RunBudget:
    """The run budget from the environment, printed as one line unless ``announce`` is False.

    Raises:
        ValueError: ``CNN_COURSE_BUDGET`` is set to something other than full, grading or smoke.
    """
    budget = RunBudget(*_detect_mode())
    if announce:
        print(budget.describe())
    return budget


def seed_everything(seed: int = 0, *, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``).

    With ``deterministic_ops`` TensorFlow also runs its ops deterministically
    (``tf.config.experimental.enable_op_determinism``), so a rerun on the same machine gives
    the same weights. On the CPU this costs little for the course's models; it makes
    parallel reductions sequential on a GPU, where it can cost more.
    """
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


class EpochTimer(keras.callbacks.Callback):
    """A Keras callback that records the wall seconds of every epoch.

    After training, ``timer.epoch_seconds`` is a list of floats (seconds), one per epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._started)


def make_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool = True, seed: int = 0):
    """A cached, shuffled, batched and prefetched ``tf.data.Dataset`` over in-memory arrays.

    Args:
        x: inputs ``(N, ...)``; converted to float32 once, here, not per batch.
        y: labels ``(N,)`` integers or ``(N, classes)`` one-hot.
        batch_size: examples per batch, at least 1.
        shuffle: reshuffle the order every epoch (with ``seed``, so runs repeat).
        seed: the shuffle seed.

    Raises:
        ValueError: ``x`` and ``y`` differ in length, or ``batch_size`` < 1.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    x = np.asarray(x, dtype=np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (the ``avx512_bf16`` or ``amx_bf16`` flag).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; read from the file when None. Where that file does
            not exist (macOS, Windows) the answer is False.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as file:
                cpuinfo = file.read()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_precision(precision: str = "auto", environ=os.environ) -> str:
    """The arithmetic :func:`fit` trains with: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` (the default) gives bfloat16 on a CPU with native bfloat16 (:func:`native_bfloat16`)
    when TensorFlow sees no GPU, float32 otherwise. ``$CNN_COURSE_PRECISION`` (``auto``,
    ``float32`` or ``bfloat16``) overrides the argument, so a whole notebook run can be switched.

    bfloat16 keeps float32's range with an 8-bit mantissa: on such CPUs the course's CNNs train
    1.4 to 3 times faster per image (``make bench``) and reach the same accuracies.

    Raises:
        ValueError: an unknown precision, naming the accepted ones.
    """
    chosen = environ.get("CNN_COURSE_PRECISION", "").strip().lower() or precision
    if chosen not in PRECISIONS:
        raise ValueError(f"unknown precision {chosen!r}: use one of {', '.join(PRECISIONS)} "
                         "(argument precision= or $CNN_COURSE_PRECISION)")
    if chosen == "auto":
        on_cpu = not tf.config.list_physical_devices("GPU")
        return "bfloat16" if on_cpu and native_bfloat16() else "float32"
    return chosen


def _leaf_layers(model) -> list:
    layers = []
    for layer in model.layers:
        layers.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return layers


def _set_compute_dtype(model, policies: dict) -> None:
    for layer, policy in policies.items():
        layer.dtype_policy = policy
    # The compiled train/test/predict functions were traced with the old dtypes.
    model.train_function = model.test_function = model.predict_function = None


def fit(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    initial_epoch: int = 0,
    batch_size: int = 32,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks=(),
    verbose=2,
    seed: int = 0,
    precision: str = "auto",
):
    """Train a compiled model on in-memory arrays through :func:`make_dataset`, timing every epoch.

    With bfloat16 (:func:`training_precision`) every layer but the last computes in bfloat16
    during this call while the weights, the optimizer's state and the loss stay float32 (Keras'
    ``mixed_bfloat16`` policy); the validation accuracy reported per epoch is then computed in
    bfloat16 too. The model's own dtype policies are restored when training ends, even on an
    error or an interrupt, so ``evaluate``, ``predict`` and saved models are float32 as built.

    Args:
        model: a compiled ``keras.Model``.
        x_train: training inputs ``(N, ...)`` float32 (or anything numpy converts).
        y_train: labels ``(N,)`` or one-hot ``(N, classes)``.
        epochs: the epoch to stop after, counted from the first epoch of the first run.
        initial_epoch: epochs the model was trained for already: to train a model further,
            call again with ``initial_epoch`` = the old ``epochs`` and a larger ``epochs`` (and
            another ``seed``, or the new epochs see the old epochs' batch order again). The
            returned history holds the new epochs only.
        batch_size: images per weight update.
        validation_data: ``(x_val, y_val)``, evaluated after every epoch.
        callbacks: further Keras callbacks.
        verbose: Keras' progress report: 2 (default) prints one line per epoch, 1 an updating
            progress bar (for long epochs), 0 nothing.
        seed: the shuffle seed.
        precision: ``"auto"`` (default), ``"float32"`` or ``"bfloat16"``; see :func:`training_precision`.

    In a grading run (:func:`current_budget`), each epoch is :data:`GRADING_STEPS` batches run
    eagerly, and validation one batch.

    Returns:
        The ``keras.callbacks.History`` of the run, with three more attributes:
        ``precision`` (``"float32"`` or ``"bfloat16"``),
        ``epoch_seconds`` (list of float, wall seconds per epoch) and
        ``images_per_second`` (float, training images per wall second over all epochs).

    Raises:
        ValueError: the arrays do not match (see :func:`make_dataset`), or an unknown precision.
        RuntimeError: the model was not compiled.
    """
    if not getattr(model, "compiled", False):
        raise RuntimeError("compile the model first, e.g. model.compile(optimizer='adam', "
                           "loss='sparse_categorical_crossentropy', metrics=['accuracy'])")
    train = make_dataset(x_train, y_train, batch_size=batch_size, seed=seed)
    validation = None
    if validation_data is not None:
        validation = make_dataset(*validation_data, batch_size=max(batch_size, 256), shuffle=False)
    timer = EpochTimer()
    chosen = training_precision(precision)
    built_with = {}
    if chosen == "bfloat16":
        built_with = {layer: layer.dtype_policy for layer in _leaf_layers(model)[:-1]}
        _set_compute_dtype(model, dict.fromkeys(built_with, keras.DTypePolicy("mixed_bfloat16")))
    images_per_epoch, short, eager = len(x_train), {}, model.run_eagerly
    if current_budget(announce=False).mode == "grading":
        short = {"steps_per_epoch": GRADING_STEPS, "validation_steps": 1 if validation is not None else None}
        images_per_epoch = min(len(x_train), GRADING_STEPS * batch_size)
        model.run_eagerly = True
    try:
        history = model.fit(train, epochs=epochs, initial_epoch=initial_epoch, validation_data=validation,
                            callbacks=[timer, *callbacks], verbose=verbose, shuffle=False, **short)
    finally:
        model.run_eagerly = eager
        if built_with:
            _set_compute_dtype(model, built_with)
    history.precision = chosen
    history.epoch_seconds = list(timer.epoch_seconds)
    total = sum(history.epoch_seconds)
    history.images_per_second = images_per_epoch * len(history.epoch_seconds) / total if total > 0 else math.nan
    return history


def cosine_adam(*, epochs: int, n_train: int, batch_size: int, learning_rate: float = 1e-3):
    """Adam whose learning rate falls from ``learning_rate`` to 0 along a cosine over the whole run.

    A falling learning rate lets the last epochs settle instead of jumping around the minimum,
    which makes the final validation accuracy steadier than with a constant rate.

    Args:
        epochs: epochs the run will train.
        n_train: training images per epoch.
        batch_size: images per weight update; with ``n_train`` it gives the updates per epoch.
        learning_rate: the starting learning rate.
    """
    return one_cycle_adam(epochs=epochs, n_train=n_train, batch_size=batch_size,
                          max_learning_rate=learning_rate, warmup_fraction=0.0)


def one_cycle_adam(*, epochs: int, n_train: int, batch_size: int, max_learning_rate: float = 0.01,
                   warmup_fraction: float = 0.25, start_fraction: float = 0.04):
    """Adam with a one-cycle learning rate: a linear rise to ``max_learning_rate``, then a cosine fall to 0.

    The short warm-up lets a network with batch normalization train at a learning rate several
    times higher than a constant schedule would survive, and the long fall settles it, so a
    given accuracy is reached in fewer epochs (Smith & Topin, "Super-convergence", 2017).
    Built on Keras' ``CosineDecay`` with its warm-up.

    Args:
        epochs: epochs the run will train.
        n_train: training images per epoch.
        batch_size: images per weight update; with ``n_train`` it gives the updates per epoch.
        max_learning_rate: the peak learning rate, reached after the warm-up.
        warmup_fraction: the share of all updates spent rising (0 ≤ fraction < 1; 0: no warm-up).
        start_fraction: the starting learning rate as a fraction of the peak.

    Raises:
        ValueError: ``warmup_fraction`` outside [0, 1).
    """
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    steps = max(epochs * math.ceil(n_train / batch_size), 1)
    warmup = int(steps * warmup_fraction)
    if warmup == 0:
        schedule = keras.optimizers.schedules.CosineDecay(max_learning_rate, decay_steps=steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            max_learning_rate * start_fraction, decay_steps=max(steps - warmup, 1),
            warmup_target=max_learning_rate, warmup_steps=warmup)
    return keras.optimizers.Adam(schedule)


def summarize_runs(histories: dict):
    """A table of training runs: one row per run, for a notebook to show.

    Args:
        histories: ``{run label: History from fit()}``.

    Returns:
        A ``pandas.DataFrame`` indexed by run label with the columns ``epochs``,
        ``train accuracy`` and ``validation accuracy`` (after the last epoch, fractions 0..1),
        ``best validation accuracy`` and ``seconds`` (wall seconds of training, when timed).
    """
    import pandas as pd

    rows = {}
    for label, history in histories.items():
        logs = history.history
        rows[label] = {
            "epochs": len(logs.get("loss", [])),
            "train accuracy": logs["accuracy"][-1] if logs.get("accuracy") else math.nan,
            "validation accuracy": logs["val_accuracy"][-1] if logs.get("val_accuracy") else math.nan,
            "best validation accuracy": max(logs["val_accuracy"]) if logs.get("val_accuracy") else math.nan,
            "seconds": sum(getattr(history, "epoch_seconds", [])) or math.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------
# Saved models and comparisons with published results
# --------------------------------------------------------------------------------------------

import glob as _glob

_SMOKE_MODEL_DIR: str | None = None


def model_file(filename: str, budget: RunBudget | None = None) -> str:
    """Where a notebook saves a trained model that is handed in, and where its tests load it from.

    In full and grading mode that is ``filename`` itself, next to the notebook, where the
    student's submission has it. In smoke mode (CI) it is ``filename`` in a temporary folder of
    this process, ``$TMPDIR/cnn_course_smoke_models_<pid>``: a smoke run trains for seconds and
    must neither overwrite the model of a full run nor leave files in the repository. The folder
    is removed when the process exits normally, and folders of processes that are gone (a kernel
    that was killed) are removed when the next one is made.

    Args:
        filename: a file name such as ``"best_mnist.keras"``.
        budget: the run budget; ``None`` reads it from the environment (see :func:`current_budget`).

    Returns:
        The path as a string.

    Raises:
        ValueError: ``filename`` is empty.
    """
    global _SMOKE_MODEL_DIR
    if not filename:
        raise ValueError("filename must not be empty")
    budget = budget or current_budget(announce=False)
    if budget.mode != "smoke":
        return filename
    if _SMOKE_MODEL_DIR is None or not os.path.isdir(_SMOKE_MODEL_DIR):
        import atexit
        import shutil
        import tempfile

        prefix = os.path.join(tempfile.gettempdir(), "cnn_course_smoke_models_")
        for stale in _glob.glob(prefix + "*"):
            owner = stale[len(prefix):]
            if owner.isdigit() and int(owner) != os.getpid() and not _process_alive(int(owner)):
                shutil.rmtree(stale, ignore_errors=True)
        _SMOKE_MODEL_DIR = prefix + str(os.getpid())
        os.makedirs(_SMOKE_MODEL_DIR, mode=0o700, exist_ok=True)
        atexit.register(shutil.rmtree, _SMOKE_MODEL_DIR, True)
    return os.path.join(_SMOKE_MODEL_DIR, os.path.basename(filename))


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def epoch_accuracy_table(histories: dict, published: dict | None = None, *, metric: str = "val_accuracy",
                         ours: str = "this run", theirs: str = "published"):
    """Accuracy per epoch of several runs, each next to a published figure, in percent.

    Args:
        histories: ``{run label: History from fit() (or a dict of lists)}``.
        published: ``{run label: [accuracy in percent per epoch]}``; labels without a published
            series get only their own column. ``None`` shows the runs alone.
        metric: the history key to show, e.g. ``"val_accuracy"`` (fractions 0..1; shown in percent).
        ours: the column name of this run's values.
        theirs: the column name of the published values.

    Returns:
        A ``pandas.DataFrame`` indexed by epoch (1, 2, ...), with two-level columns
        ``(run label, ours)`` and ``(run label, theirs)``, in percent (float). Epochs that a run
        did not reach (a short run in the grading or smoke budget) are NaN.

    Raises:
        KeyError: a history has no ``metric``; the message lists its keys.
    """
    import pandas as pd

    published = published or {}
    columns = {}
    for label, history in histories.items():
        logs = getattr(history, "history", history)
        if metric not in logs:
            raise KeyError(f"run {label!r} has no {metric!r}; its history has {sorted(logs)}")
        columns[(label, ours)] = pd.Series([100.0 * float(v) for v in logs[metric]],
                                           index=range(1, len(logs[metric]) + 1))
        if label in published:
            columns[(label, theirs)] = pd.Series([float(v) for v in published[label]],
                                                 index=range(1, len(published[label]) + 1))
    table = pd.DataFrame(columns)
    table.index.name = "epoch"
    return table




def predict_scores(model, images: np.ndarray, *, batch_size: int = 500) -> np.ndarray:
    """The model's outputs for in-memory images, batch by batch: ``model.predict`` without its input pipeline.

    ``model.predict`` builds a ``tf.data`` pipeline for every call, which costs time for small
    arrays and, with TensorFlow 2.21 and Keras 3.15, can print a C++ error line
    (``NodeDef mentions attribute use_unbounded_threadpool``) into a notebook's output. This helper
    calls ``model.predict_on_batch`` on consecutive slices instead; the results are the same.

    Args:
        model: a built ``keras.Model`` with one input and one output.
        images: ``(N, ...)`` in the model's input shape; converted to float32 (uint8 pixels stay 0..255).
        batch_size: images per call, at least 1.

    Returns:
        float32 ``(N, ...)``: the model's outputs, e.g. ``(N, classes)`` probabilities for a softmax
        classifier.

    Raises:
        ValueError: ``batch_size`` < 1, or ``images`` is empty.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        raise ValueError("no images to predict")
    return np.concatenate([np.asarray(model.predict_on_batch(images[start:start + batch_size]), dtype=np.float32)
                           for start in range(0, len(images), batch_size)])




def accuracy(model, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500) -> float:
    """The fraction (0..1) of ``images`` whose highest-scoring class is their label.

    Args:
        model: a built Keras model with one output per class (softmax or scores).
        images: ``(N, ...)`` in the model's input shape.
        labels: ``(N,)`` integer classes (or ``(N, 1)``).
        batch_size: images per forward pass (:func:`predict_scores`).

    Raises:
        ValueError: ``images`` is empty, or ``labels`` has not one label per image.
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return float(np.mean(predict_scores(model, images, batch_size=batch_size).argmax(axis=1) == labels))


def accuracy_under_shift(models: dict, images: np.ndarray, labels: np.ndarray, shifts=range(5), *,
                         prepare: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> dict[str, list[float]]:
    """Accuracy of each model on images moved by 0, 1, 2, ... pixels: how much translation it tolerates.

    Every image is moved by ``shift`` pixels in each of the four directions (left, right, up,
    down; :func:`cnn_course.data.shift_images`), and the accuracy is the mean over the four.

    Args:
        models: ``{label: built Keras model}`` with softmax (or score) outputs, one per class.
        images: raw images ``(N, height, width)`` with a black (0) background, before ``prepare``.
        labels: ``(N,)`` integer classes.
        shifts: shifts in pixels, each >= 0 and smaller than the image.
        prepare: turns shifted raw images into the models' input (e.g. standardize, add a channel axis).

    Returns:
        ``{label: [accuracy in 0..1 per shift]}``, in the order of ``shifts``.

    Raises:
        ValueError: a shift is negative or as large as the image; ``images`` is empty.
    """
    from . import data

    labels = np.asarray(labels).reshape(-1)
    results: dict[str, list[float]] = {label: [] for label in models}
    for shift in shifts:
        if shift < 0:
            raise ValueError(f"shifts are distances in pixels, >= 0; got {shift}")
        moves = [(0, 0)] if shift == 0 else [(shift, 0), (-shift, 0), (0, shift), (0, -shift)]
        inputs = [prepare(data.shift_images(images, right=right, down=down)) for right, down in moves]
        for label, model in models.items():
            results[label].append(float(np.mean([accuracy(model, x, labels) for x in inputs])))
    return results


class RunningStatistics(keras.callbacks.Callback):
    """Records, after every training step, the running mean and variance of one channel of a BatchNormalization layer.

    Batch normalization normalizes with the statistics of each batch while it trains, and with its
    running statistics (``moving_mean``, ``moving_variance``) when it predicts. Those start at 0 and 1
    and move a fraction ``1 - momentum`` (1 % in Keras) of the way towards each batch's statistics.

    Attributes:
        means, variances: one float per training step, in the layer's input units.
    """

    def __init__(self, layer: str, channel: int = 0):
        super().__init__()
        self.layer_name, self.channel = layer, channel
        self.means: list[float] = []
        self.variances: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        layer = self.model.get_layer(self.layer_name)
        self.means.append(float(np.asarray(layer.moving_mean)[self.channel]))
        self.variances.append(float(np.asarray(layer.moving_variance)[self.channel]))


def batch_norm_input_statistics(model, layer: str, images: np.ndarray, *, batch_size: int = 500):
    """Mean and variance per channel of what a BatchNormalization layer receives for ``images``, in inference mode.

    Args:
        model: a built Keras model whose layers form one chain from its input (Sequential or functional).
        layer: the BatchNormalization layer's name.
        images: ``(N, ...)`` float32 in the model's input shape.
        batch_size: images per forward pass.

    Returns:
        ``(mean, variance)``: float32 arrays with one value per channel (the last axis).
    """
    from .models import probe

    values = predict_scores(probe(model, model.get_layer(layer).input), images, batch_size=batch_size)
    axes = tuple(range(values.ndim - 1))
    return values.mean(axis=axes), values.var(axis=axes)


def recalibrated_batch_norm(model, images: np.ndarray, *, batch_size: int = 500):
    """A copy of ``model`` whose BatchNormalization layers predict with the statistics of their inputs over ``images``.

    The weights stay as they are: only each layer's running mean and variance are replaced, layer by
    layer from the input (a later layer's input depends on the earlier layers' new statistics). So
    the copy shows what the model predicts once its running statistics have caught up with training.

    Args:
        model: a built Keras model whose layers form one chain from its input.
        images: ``(N, ...)`` float32 training inputs, e.g. the training split.
        batch_size: images per forward pass.

    Returns:
        A new ``keras.Model`` (same architecture, weights copied); ``model`` is not changed.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = batch_norm_input_statistics(copy, layer.name, images, batch_size=batch_size)
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
    return copy
