"""Training throughput: images/s of the course's fit path against plain ``model.fit``, and the share
of this machine's matmul peak that each reaches.

    python bench/throughput.py [--rounds 5] [--images 8000]

For ``cnn2_mnist`` (batch 32, the cnn_mnist assignment's setting) and ``mnist_cnn_99`` (the
1,625,866-parameter CNN, batch 128), in one process:

* the fp32 matmul peak: the best of several timed ``tf.matmul`` of two 4096×4096 float32 matrices
  (and the same in bfloat16, for reference), measured at the start and at the end;
* ``rounds`` alternating runs of the two paths on the same MNIST images and batch size, each on
  its own model: plain ``model.fit(x, y, batch_size=...)`` on numpy arrays, and
  ``cnn_course.training.fit`` (tf.data pipeline, bfloat16 arithmetic where the CPU has it).
  A run is two epochs; the second (steady state, no tracing) is timed, together with the CPU
  seconds the process used in it, so a run during which fewer cores were busy is visible;
* the median images/s of each path and their ratio, and the same for the best run of each (the
  run least disturbed by other work, as ``timeit`` recommends); model FLOPs from the layer shapes
  (``models.training_flops``), achieved GFLOP/s and the fraction of the fp32 peak.

Writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from common import write_result

import keras
import numpy as np
import tensorflow as tf

from cnn_course import data, models, training
from cnn_grader import references

MODELS = {"cnn2_mnist": 32, "mnist_cnn_99": 128}


def matmul_peak(dtype=tf.float32, size: int = 4096, seconds: float = 2.0) -> float:
    """Best GFLOP/s of ``size``×``size`` matrix products in ``dtype`` over about ``seconds`` of repeats."""
    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    tf.matmul(a, b).numpy()
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        began = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = max(best, 2 * size**3 / (time.perf_counter() - began) / 1e9)
    return best


class _EpochCpuTimer(training.EpochTimer):
    """The course's epoch timer, plus the CPU seconds the process used in every epoch."""

    def __init__(self):
        super().__init__()
        self.cpu_seconds: list[float] = []

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._cpu_started = self._cpu()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.cpu_seconds.append(self._cpu() - self._cpu_started)

    def last_epoch(self, images: int) -> tuple[float, float]:
        """(images/s, busy cores) of the last epoch."""
        return images / self.epoch_seconds[-1], self.cpu_seconds[-1] / self.epoch_seconds[-1]


def _compiled(name: str) -> keras.Model:
    model = references.build(name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_plain(model, x, y, batch_size) -> tuple[float, float]:
    """(images/s, busy cores) of the second of two epochs of plain ``model.fit`` on numpy arrays."""
    timer = _EpochCpuTimer()
    model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[timer])
    return timer.last_epoch(len(x))


def run_course(model, x, y, batch_size) -> tuple[float, float]:
    """(images/s, busy cores) of the second of two epochs of ``cnn_course.training.fit``."""
    timer = _EpochCpuTimer()
    training.fit(model, x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[timer])
    return timer.last_epoch(len(x))


def compare(name: str, batch_size: int, x, y, rounds: int, peak: float) -> dict:
    """Alternating runs of both paths for one model; medians, ratio and fraction of the fp32 peak."""
    plain_model, course_model = _compiled(name), _compiled(name)
    runs = {"plain model.fit": [], "cnn_course fit": []}
    for round_ in range(rounds):
        order = [("plain model.fit", run_plain, plain_model), ("cnn_course fit", run_course, course_model)]
        for label, run, model in (order if round_ % 2 == 0 else order[::-1]):
            runs[label].append(run(model, x, y, batch_size))
            print(f"{name} batch {batch_size}, {label}: {runs[label][-1][0]:,.0f} images/s "
                  f"({runs[label][-1][1]:.1f} cores busy)", flush=True)
    flops = models.training_flops(plain_model)
    result = {"parameters": plain_model.count_params(), "batch size": batch_size,
              "training MFLOP per image": round(flops / 1e6, 1),
              "cnn_course precision": training.training_precision()}
    for label, values in runs.items():
        speed = statistics.median(v[0] for v in values)
        result[f"{label}: images/s (median of {rounds})"] = round(speed)
        result[f"{label}: images/s (best of {rounds})"] = round(max(v[0] for v in values))
        result[f"{label}: images/s, every run"] = ", ".join(f"{v[0]:,.0f}" for v in values)
        result[f"{label}: cores busy, every run"] = ", ".join(f"{v[1]:.1f}" for v in values)
        result[f"{label}: GFLOP/s"] = round(speed * flops / 1e9, 1)
        result[f"{label}: fraction of fp32 matmul peak"] = round(speed * flops / 1e9 / peak, 3)
    for statistic in ("median", "best"):
        result[f"ratio cnn_course / plain ({statistic})"] = round(
            result[f"cnn_course fit: images/s ({statistic} of {rounds})"]
            / result[f"plain model.fit: images/s ({statistic} of {rounds})"], 2)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs per path and model")
    parser.add_argument("--images", type=int, default=8_000, help="MNIST training images per epoch")
    parser.add_argument("--models", nargs="*", metavar="NAME:BATCH",
                        help="architectures of cnn_grader.references with their batch sizes (default: "
                             + " ".join(f"{name}:{batch}" for name, batch in MODELS.items()) + ")")
    parser.add_argument("--name", default="throughput", help="the result file's name (default: throughput)")
    args = parser.parse_args(argv)
    chosen = dict(MODELS)
    if args.models:
        chosen = {name: int(batch) for name, batch in (spec.split(":") for spec in args.models)}

    (x, y), _ = data.load_dataset("mnist")
    x = data.add_channel_axis(data.scale_to_unit(x[: args.images]))
    y = y[: args.images]
    peak_before = matmul_peak()
    bf16_peak = matmul_peak(tf.bfloat16)
    print(f"matmul peak: {peak_before:.0f} GFLOP/s fp32, {bf16_peak:.0f} GFLOP/s bfloat16", flush=True)
    results = {name: compare(name, batch, x, y, args.rounds, peak_before) for name, batch in chosen.items()}
    peak_after = matmul_peak()
    results = {"fp32 matmul peak, GFLOP/s (start / end)": f"{peak_before:.0f} / {peak_after:.0f}",
               "bfloat16 matmul peak, GFLOP/s": round(bf16_peak),
               "MNIST images per epoch": args.images, **results}
    print(write_result(args.name, results, description=__doc__.split("\n\n")[0], command="make bench (bench/throughput.py)"))


if __name__ == "__main__":
    main()
