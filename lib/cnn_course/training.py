"""The run budget, seeding, and a fit helper with a fast CPU input path.

One switch sets how much every notebook trains:

========  =========================================  ======================================
mode      when                                       what a notebook does
========  =========================================  ======================================
full      the default, a student running a notebook  the seeds' settings: full epochs and data
grading   nbgrader sets ``NBGRADER_EXECUTION``        one short epoch on a few hundred images;
          (autograde and validate)                   the tests check architectures and answers
smoke     ``CNN_COURSE_SMOKE=1`` (CI)                 one epoch on about a thousand images
========  =========================================  ======================================

``CNN_COURSE_BUDGET=full|grading|smoke`` overrides the detection, e.g. to run a notebook
in full mode under nbgrader.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

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
    "fit",
    "cosine_adam",
    "summarize_runs",
]

BUDGET_MODES = ("full", "grading", "smoke")

# Sizes in the short modes: small enough for the time limits on 2 CPU cores, large enough
# that every class is present and a learning curve has something to show.
_SHORT_MODE_SIZES = {
    "grading": {"epochs": 1, "n_train": 512, "n_test": 256},
    "smoke": {"epochs": 1, "n_train": 1024, "n_test": 512},
}


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
            "grading": "grading run: one short epoch on a few hundred images; results are not meaningful",
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


def fit(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks=(),
    verbose=2,
    seed: int = 0,
):
    """Train a compiled model on in-memory arrays through :func:`make_dataset`, timing every epoch.

    Args:
        model: a compiled ``keras.Model``.
        x_train: training inputs ``(N, ...)`` float32 (or anything numpy converts).
        y_train: labels ``(N,)`` or one-hot ``(N, classes)``.
        epochs: number of epochs.
        batch_size: images per weight update.
        validation_data: ``(x_val, y_val)``, evaluated after every epoch.
        callbacks: further Keras callbacks.
        verbose: Keras' progress report: 2 (default) prints one line per epoch, 1 an updating
            progress bar (for long epochs), 0 nothing.
        seed: the shuffle seed.

    Returns:
        The ``keras.callbacks.History`` of the run, with two more attributes:
        ``epoch_seconds`` (list of float, wall seconds per epoch) and
        ``images_per_second`` (float, training images per wall second over all epochs).

    Raises:
        ValueError: the arrays do not match (see :func:`make_dataset`).
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
    history = model.fit(train, epochs=epochs, validation_data=validation,
                        callbacks=[timer, *callbacks], verbose=verbose, shuffle=False)
    history.epoch_seconds = list(timer.epoch_seconds)
    total = sum(history.epoch_seconds)
    history.images_per_second = len(x_train) * len(history.epoch_seconds) / total if total > 0 else math.nan
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
    steps = epochs * math.ceil(n_train / batch_size)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1)))


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
