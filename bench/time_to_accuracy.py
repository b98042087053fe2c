"""Time to accuracy: wall seconds of training until the test accuracy first reaches a target.

    python bench/time_to_accuracy.py [--only NAME ...]

Targets: 99.2 % on the full MNIST test set (seed 004's figure after 10 epochs) and 92 % on
Fashion-MNIST. Runs, one after another in this process, on the full training sets:

* ``course mnist_cnn_99``: the 1,625,866-parameter CNN with the predictions notebook's recipe
  (Adam 0.001 with a cosine fall over 10 epochs, batch 128, ``cnn_course.training.fit``);
* ``keras mnist_convnet``: the Keras example's recipe as published (34,826 parameters, Adam,
  batch 128, 15 epochs, 10 % validation split, plain ``model.fit``), the reference peer;
* ``fast_cnn``: the course's design for accuracy per CPU second (``references.fast_cnn``, one-cycle
  Adam with a peak of 0.01, batch 128, ``cnn_course.training.fit``): 2 epochs on MNIST, 8 on
  Fashion-MNIST;
* ``keras mnist_convnet`` on Fashion-MNIST, as the peer there.

After every epoch the test accuracy is measured; the clock counts training only (the recipe's own
validation included), not this measurement. A run stops at its target or after its epochs. The
accuracy at the stop is measured once more with float32 arithmetic (``cnn_course`` trains in
bfloat16 where the CPU has it). Writes bench/results/time_to_accuracy.json.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from common import write_result

import keras
import numpy as np

from cnn_course import data, training
from cnn_grader import references


class TestAccuracyClock(training.EpochTimer):
    """The course's epoch timer, then the test accuracy after every epoch; stops training at ``target``.

    ``epoch_seconds`` holds training time only: the timer stops before the test images are predicted.
    """

    def __init__(self, x_test, y_test, target: float):
        super().__init__()
        self.x_test, self.y_test, self.target = x_test, y_test, target
        self.test_accuracy: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        predicted = self.model.predict(self.x_test, batch_size=1000, verbose=0).argmax(axis=1)
        self.test_accuracy.append(float(np.mean(predicted == self.y_test)))
        print(f"  epoch {epoch + 1}: {self.epoch_seconds[-1]:.1f} s, test accuracy {self.test_accuracy[-1]:.2%}",
              flush=True)
        if self.test_accuracy[-1] >= self.target:
            self.model.stop_training = True


@dataclass
class Run:
    """One recipe: a model, how it is compiled and trained, and for how many epochs at most."""

    label: str
    dataset: str
    target: float
    build: Callable[[], keras.Model]
    epochs: int
    batch_size: int
    recipe: str  # "course": cnn_course fit with an optimizer factory; "keras": the example's plain fit
    optimizer: Callable[[int, int, int], keras.optimizers.Optimizer] | None = None


def _cosine(epochs, n_train, batch_size):
    return training.cosine_adam(epochs=epochs, n_train=n_train, batch_size=batch_size)


def _one_cycle(max_learning_rate):
    return lambda epochs, n_train, batch_size: training.one_cycle_adam(
        epochs=epochs, n_train=n_train, batch_size=batch_size, max_learning_rate=max_learning_rate)


RUNS = [
    Run("course mnist_cnn_99", "mnist", 0.992, references.mnist_cnn_99, 10, 128, "course", _cosine),
    Run("keras mnist_convnet", "mnist", 0.992, references.keras_mnist_convnet, 15, 128, "keras"),
    Run("fast_cnn", "mnist", 0.992, references.fast_cnn, 2, 128, "course", _one_cycle(0.01)),
    Run("keras mnist_convnet", "fashion_mnist", 0.92, references.keras_mnist_convnet, 15, 128, "keras"),
    Run("fast_cnn", "fashion_mnist", 0.92, references.fast_cnn, 8, 128, "course", _one_cycle(0.01)),
]


def time_to_accuracy(run: Run, x, y, x_test, y_test) -> dict:
    """Train ``run`` until its target; seconds, epochs and accuracies as a dict for the results."""
    training.seed_everything(0)
    model = run.build()
    clock = TestAccuracyClock(x_test, y_test, run.target)
    print(f"{run.label} on {run.dataset} (target {run.target:.1%}, at most {run.epochs} epochs)", flush=True)
    if run.recipe == "keras":
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, keras.utils.to_categorical(y, 10), batch_size=run.batch_size, epochs=run.epochs,
                  validation_split=0.1, verbose=0, callbacks=[clock])
    else:
        model.compile(optimizer=run.optimizer(run.epochs, len(x), run.batch_size),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        training.fit(model, x, y, batch_size=run.batch_size, epochs=run.epochs, verbose=0, callbacks=[clock])
    reached = next((i for i, accuracy in enumerate(clock.test_accuracy) if accuracy >= run.target), None)
    final = float(np.mean(model.predict(x_test, batch_size=1000, verbose=0).argmax(axis=1) == y_test))
    return {
        "parameters": model.count_params(),
        "seconds to target": round(sum(clock.epoch_seconds[: reached + 1]), 1) if reached is not None
        else f"not reached in {run.epochs} epochs",
        "epochs to target": reached + 1 if reached is not None else None,
        "test accuracy per epoch (%)": ", ".join(f"{a:.2%}"[:-1] for a in clock.test_accuracy),
        "test accuracy at the stop, float32 (%)": round(100 * final, 2),
        "seconds per epoch": round(float(np.median(clock.epoch_seconds)), 1),
        "training precision": "float32" if run.recipe == "keras" else training.training_precision(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="labels of runs to do (default: all)")
    args = parser.parse_args(argv)
    loaded = {}
    results = {}
    for run in RUNS:
        if args.only and run.label not in args.only:
            continue
        if run.dataset not in loaded:
            (x, y), (x_test, y_test) = data.load_dataset(run.dataset)
            loaded[run.dataset] = (data.add_channel_axis(data.scale_to_unit(x)), y,
                                   data.add_channel_axis(data.scale_to_unit(x_test)), y_test)
        key = f"{run.dataset} {run.target:.1%}: {run.label}"
        results[key] = time_to_accuracy(run, *loaded[run.dataset])
    for dataset, target, ours, peer in [("mnist", 0.992, "fast_cnn", "keras mnist_convnet"),
                                        ("fashion_mnist", 0.92, "fast_cnn", "keras mnist_convnet")]:
        mine, theirs = (results.get(f"{dataset} {target:.1%}: {label}", {}).get("seconds to target")
                        for label in (ours, peer))
        if isinstance(mine, float) and isinstance(theirs, float):
            results[f"{dataset}: Keras recipe time / {ours} time"] = round(theirs / mine, 2)
    print(write_result("time_to_accuracy", results, description=__doc__.split("\n\n")[0], command="make bench (bench/time_to_accuracy.py)"))


if __name__ == "__main__":
    main()
