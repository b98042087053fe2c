"""Plotting helpers for the notebooks: learning curves, image grids, confusion matrices, timings.

Every function draws with matplotlib's object API and returns the :class:`~matplotlib.figure.Figure`
(so tests can inspect it); none calls ``plt.show()``, because Jupyter's inline backend shows a
figure by itself. Nothing here imports TensorFlow, and scikit-learn is imported only when a
confusion matrix is drawn, so ``import cnn_course.plots`` stays fast.

Labels may be given as integers ``(N,)``, as Keras-style ``(N, 1)`` columns, or as one-hot /
probability rows ``(N, classes)`` (their argmax is used). ``class_names`` may be a sequence of
names indexed by label or a data-set name such as ``"fashion_mnist"`` (see
:func:`cnn_course.data.class_names`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from . import data

__all__ = [
    "RIGHT_COLOR",
    "WRONG_COLOR",
    "plot_learning_curves",
    "plot_image_grid",
    "extreme_prediction_indices",
    "plot_extreme_predictions",
    "plot_confusion_matrix",
    "plot_seconds_per_epoch",
    "plot_against_published",
    "plot_filters",
    "plot_feature_maps",
    "plot_receptive_fields",
    "plot_accuracy_under_shift",
    "plot_running_statistics",
]

#: Title colour of a correct prediction.
RIGHT_COLOR = "tab:green"
#: Title colour of a wrong prediction.
WRONG_COLOR = "tab:red"

_LAYOUTS = ("overlay", "side_by_side")
_WHICH = ("both", "correct", "wrong")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

def _history_dict(history: Any) -> dict[str, list[float]]:
    """The ``{metric: [value per epoch]}`` dict of a Keras ``History``, an object with ``.history``, or a dict."""
    raw = getattr(history, "history", history)
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"expected a keras History, an object with a .history dict, or a dict of lists; "
            f"got {type(history).__name__}"
        )
    return {str(key): [float(v) for v in np.ravel(values)] for key, values in raw.items()}


def _is_history(value: Any) -> bool:
    return hasattr(value, "history") or isinstance(value, Mapping)


def _runs(histories: Any) -> dict[str, dict[str, list[float]]]:
    """``{run label: history dict}`` from one history or a dict of labelled histories."""
    if isinstance(histories, Mapping) and not histories:
        raise ValueError("no histories given")
    if isinstance(histories, Mapping) and all(_is_history(v) for v in histories.values()):
        return {str(label): _history_dict(h) for label, h in histories.items()}
    return {"": _history_dict(histories)}


def _class_names(class_names: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str):
        return data.class_names(class_names)
    return tuple(str(name) for name in class_names)


def _labels(labels: Any, what: str) -> np.ndarray:
    """Integer labels ``(N,)`` from ``(N,)``, ``(N, 1)`` or one-hot / probability rows ``(N, C)``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=1)
    if labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1):
        raise ValueError(f"{what} must have shape (N,), (N, 1) or (N, classes); got {labels.shape}")
    return labels.reshape(-1).astype(np.int64)


def _label_text(label: int, names: tuple[str, ...] | None) -> str:
    return names[int(label)] if names is not None else str(int(label))


def _check_images(images: Any, n_labels: int) -> np.ndarray:
    images = np.asarray(images)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise ValueError(f"images must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); got {images.shape}")
    if len(images) != n_labels:
        raise ValueError(f"{len(images)} images but {n_labels} labels")
    if len(images) == 0:
        raise ValueError("no images to show")
    return images


def _show_image(ax, image: np.ndarray) -> None:
    """Draw one image without ticks: uint8 0..255 and float 0..1 as they are, anything else min-max scaled."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if np.issubdtype(image.dtype, np.integer) and image.min() >= 0 and image.max() <= 255:
        image = image.astype(np.float32) / np.float32(255)
    else:
        image = image.astype(np.float32)
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:  # e.g. standardized pixels
            image = (image - low) / max(high - low, 1e-12)
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def _cell_axes(parent, count: int, ncols: int) -> list:
    """``count`` axes in rows of ``ncols`` (>= 1) on a Figure or SubFigure; unused cells are switched off."""
    nrows = -(-count // ncols)
    axes = np.asarray(parent.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    return list(axes[:count])


def _image_cells(parent, images, true, predicted, confidence, names, ncols) -> list:
    """One titled image per cell: ``true: X`` and, with predictions, ``pred: Y (p=0.99)`` in red/green."""
    axes = _cell_axes(parent, len(images), ncols)
    for i, ax in enumerate(axes):
        _show_image(ax, images[i])
        title, color = f"true: {_label_text(true[i], names)}", "black"
        if predicted is not None:
            title += f"\npred: {_label_text(predicted[i], names)}"
            if confidence is not None:
                title += f" (p={confidence[i]:.2f})"
            color = RIGHT_COLOR if predicted[i] == true[i] else WRONG_COLOR
        ax.set_title(title, color=color, fontsize=9)
    return axes


def _new_figure(figsize) -> Figure:
    return plt.figure(figsize=figsize, layout="constrained")


def _axes_and_figure(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.get_figure(root=True), ax


# --------------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------------

def _draw_metric(ax, history: dict[str, list[float]], metric: str, color: str, prefix: str) -> None:
    for key, style, part in ((metric, "-", "train"), (f"val_{metric}", "--", "validation")):
        values = history.get(key)
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, linestyle=style, color=color,
                    marker="o" if len(values) == 1 else None, label=f"{prefix}{part}")


def plot_learning_curves(
    histories: Any,
    *,
    metrics: str | Sequence[str] = ("loss", "accuracy"),
    layout: str = "overlay",
    title: str | None = None,
    axes: Any = None,
) -> Figure:
    """Training and validation curves per epoch, for one run or several.

    Args:
        histories: one history, or a dict ``{run label: history}``. A history is a
            ``keras.callbacks.History``, any object with a ``.history`` dict, or a dict such as
            ``{"loss": [...], "val_loss": [...], "accuracy": [...], "val_accuracy": [...]}``
            with one float per epoch.
        metrics: the metrics to draw, one subplot each; the ``val_`` curve of a metric is drawn
            dashed when the history has it. Metrics that no history has are left out.
        layout: ``"overlay"`` (one subplot per metric, all runs on it, one colour per run) or
            ``"side_by_side"`` (one row per metric, one column per run, y axes shared along a row).
        title: the figure's title.
        axes: optional axes to draw on: ``len(metrics)`` of them for ``"overlay"``, or
            ``len(metrics) * runs`` (rows = metrics) for ``"side_by_side"``.

    Returns:
        The figure. Training curves are solid, validation curves dashed; the x axis is the
        epoch, starting at 1.

    Raises:
        ValueError: no histories, a history has none of ``metrics`` (neither plain nor ``val_``),
            an unknown ``layout``, or ``axes`` of the wrong number.
        TypeError: a history is neither a History, an object with ``.history``, nor a dict.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}; got {layout!r}")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    runs = _runs(histories)
    for label, history in runs.items():
        if not any(m in history or f"val_{m}" in history for m in metrics):
            raise ValueError(
                f"history{f' {label!r}' if label else ''} has none of the metrics {list(metrics)}; "
                f"its keys are {sorted(history)}"
            )
    metrics = tuple(m for m in metrics if any(m in h or f"val_{m}" in h for h in runs.values()))
    shape = (len(metrics), len(runs)) if layout == "side_by_side" else (1, len(metrics))
    if axes is None:
        fig, grid = plt.subplots(*shape, figsize=(4.5 * shape[1], 3.2 * shape[0]), squeeze=False,
                                 sharex=True, sharey="row" if layout == "side_by_side" else False,
                                 layout="constrained")
    else:
        flat = np.ravel(np.asarray(axes, dtype=object))
        if flat.size != shape[0] * shape[1]:
            raise ValueError(f"layout {layout!r} needs {shape[0] * shape[1]} axes, got {flat.size}")
        grid, fig = flat.reshape(shape), flat[0].get_figure(root=True)
    colors = {label: f"C{i}" for i, label in enumerate(runs)}

    if layout == "overlay":
        for ax, metric in zip(grid[0], metrics):
            for label, history in runs.items():
                _draw_metric(ax, history, metric, colors[label], f"{label}: " if label else "")
            ax.set_ylabel(metric)
            ax.set_title(metric)
    else:
        for row, metric in zip(grid, metrics):
            for ax, (label, history) in zip(row, runs.items()):
                _draw_metric(ax, history, metric, colors[label], "")
                if not ax.lines:
                    ax.text(0.5, 0.5, f"no {metric}", ha="center", va="center", transform=ax.transAxes)
            low = min(ax.get_ylim()[0] for ax in row)
            high = max(ax.get_ylim()[1] for ax in row)
            for ax in row:
                ax.set_ylim(low, high)
            row[0].set_ylabel(metric)
        for ax, label in zip(grid[0], runs):
            ax.set_title(label)
    for ax in grid[-1]:
        ax.set_xlabel("epoch")
    for ax in grid.ravel():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# Images and predictions
# --------------------------------------------------------------------------------------------

def plot_image_grid(
    images: Any,
    true_labels: Any,
    predicted_labels: Any = None,
    *,
    class_names: str | Sequence[str] | None = None,
    n: int = 25,
    ncols: int = 5,
    title: str | None = None,
) -> Figure:
    """The first ``n`` images in a grid, titled with their true and (optionally) predicted class.

    Args:
        images: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``; uint8 0..255 or float 0..1
            (other float ranges, e.g. standardized pixels, are min-max scaled for display).
        true_labels: integer labels ``(N,)`` or ``(N, 1)``, or one-hot rows ``(N, classes)``.
        predicted_labels: the same forms as ``true_labels`` (probability rows too), or ``None``.
        class_names: names indexed by label, or a data-set name such as ``"cifar10"``;
            ``None`` shows the label numbers.
        n: how many images to show (at most N).
        ncols: images per row.
        title: the figure's title.

    Returns:
        The figure, one axes per image. Titles read ``true: X`` and, with predictions,
        ``pred: Y``, coloured :data:`RIGHT_COLOR` (green) when right, :data:`WRONG_COLOR`
        (red) when wrong.

    Raises:
        ValueError: images of another shape, no images, or label counts that differ from N.
        KeyError: ``class_names`` names an unknown data set.
    """
    true = _labels(true_labels, "true_labels")
    images = _check_images(images, len(true))
    predicted = None if predicted_labels is None else _labels(predicted_labels, "predicted_labels")
    if predicted is not None and len(predicted) != len(true):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predicted labels")
    count = max(1, min(n, len(images)))
    ncols = max(1, min(ncols, count))
    fig = _new_figure((1.9 * ncols, 2.2 * -(-count // ncols)))
    _image_cells(fig, images[:count], true[:count], None if predicted is None else predicted[:count],
                 None, _class_names(class_names), ncols)
    if title:
        fig.suptitle(title)
    return fig


def extreme_prediction_indices(true_labels: Any, probabilities: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The most confident correct predictions and the most confident wrong ones.

    Args:
        true_labels: integer labels ``(N,)`` or ``(N, 1)``, or one-hot rows ``(N, classes)``.
        probabilities: float ``(N, classes)``, e.g. a softmax output; the prediction is the
            argmax and its confidence the probability there.
        n: how many of each to return (fewer when there are fewer).

    Returns:
        ``(best_correct_indices, worst_wrong_indices)``, two int64 arrays of indices into N,
        each sorted by confidence, most confident first (ties keep their original order).
        The worst wrong predictions are those with the highest probability on the wrong class.

    Raises:
        ValueError: ``probabilities`` is not 2-D, its rows differ from the number of labels,
            or ``n`` is negative.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true = _labels(true_labels, "true_labels")
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must have shape (N, classes); got {probabilities.shape}")
    if len(probabilities) != len(true):
        raise ValueError(f"{len(true)} labels but {len(probabilities)} rows of probabilities")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    predicted = probabilities.argmax(axis=1)
    order = np.argsort(-probabilities.max(axis=1), kind="stable")
    correct = predicted[order] == true[order]
    return order[correct][:n].astype(np.int64), order[~correct][:n].astype(np.int64)


def plot_extreme_predictions(
    images: Any,
    true_labels: Any,
    probabilities: Any,
    *,
    class_names: str | Sequence[str] | None = None,
    n: int = 10,
    which: str = "both",
    ncols: int = 5,
) -> Figure:
    """The ``n`` most confident correct predictions and/or the ``n`` most confident wrong ones.

    Args:
        images: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``, uint8 or float (see
            :func:`plot_image_grid`).
        true_labels: integer labels ``(N,)`` or ``(N, 1)``, or one-hot rows ``(N, classes)``.
        probabilities: float ``(N, classes)``, e.g. ``model.predict(images)``.
        class_names: names indexed by label, or a data-set name; ``None`` shows numbers.
        n: images per group.
        which: ``"both"``, ``"correct"`` or ``"wrong"``.
        ncols: images per row within a group.

    Returns:
        The figure: one sub-figure per group, titled, with one axes per image in the order of
        :func:`extreme_prediction_indices`. Image titles read ``true: X`` / ``pred: Y (p=0.99)``,
        green when right and red when wrong. A group with no examples says "none".

    Raises:
        ValueError: an unknown ``which``, or shapes as in :func:`extreme_prediction_indices`
            and :func:`plot_image_grid`.
    """
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}; got {which!r}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true = _labels(true_labels, "true_labels")
    images = _check_images(images, len(true))
    best, worst = extreme_prediction_indices(true, probabilities, n)
    groups = [("Most confident correct predictions", best), ("Most confident wrong predictions", worst)]
    groups = [groups[0]] if which == "correct" else [groups[1]] if which == "wrong" else groups
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    names = _class_names(class_names)
    ncols = max(1, min(ncols, n))
    rows = [max(1, -(-len(idx) // ncols)) for _, idx in groups]
    fig = _new_figure((1.9 * ncols, 2.3 * sum(rows) + 0.4 * len(groups)))
    subfigures = np.ravel(fig.subfigures(len(groups), 1, height_ratios=rows, squeeze=False))
    for subfigure, (heading, idx) in zip(subfigures, groups):
        subfigure.suptitle(heading if len(idx) else f"{heading}: none")
        if len(idx):
            _image_cells(subfigure, images[idx], true[idx], predicted[idx], confidence[idx], names, ncols)
    return fig


# --------------------------------------------------------------------------------------------
# Confusion matrix and timings
# --------------------------------------------------------------------------------------------

def plot_confusion_matrix(
    true_labels: Any,
    predicted_labels: Any,
    *,
    class_names: str | Sequence[str] | None = None,
    normalize: str | None = None,
    ax=None,
) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted class) via scikit-learn.

    Args:
        true_labels: integer labels ``(N,)`` or ``(N, 1)``, or one-hot rows ``(N, classes)``.
        predicted_labels: the same forms, probability rows too (their argmax is used).
        class_names: names indexed by label, or a data-set name; with names, every class
            ``0 .. len(names) - 1`` gets a row and column, even if absent from the labels.
        normalize: ``None`` (counts), ``"true"`` (rows sum to 1), ``"pred"`` (columns sum to 1)
            or ``"all"``.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure (the matrix is ``fig.axes[0].images[0]``, with a colour bar beside it).
        x tick labels longer than three characters are rotated by 45 degrees.

    Raises:
        ValueError: label counts differ, or an unknown ``normalize`` (from scikit-learn).
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    true = _labels(true_labels, "true_labels")
    predicted = _labels(predicted_labels, "predicted_labels")
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predicted labels")
    names = _class_names(class_names)
    size = 10 if names is None else len(names)
    fig, ax = _axes_and_figure(ax, (1.8 + 0.55 * size, 1.4 + 0.5 * size))
    display = ConfusionMatrixDisplay.from_predictions(
        true, predicted,
        labels=None if names is None else np.arange(len(names)),
        display_labels=names,
        normalize=normalize,
        values_format=None if normalize is None else ".2f",
        cmap="Blues",
        ax=ax,
    )
    if max((len(t.get_text()) for t in display.ax_.get_xticklabels()), default=0) > 3:
        for tick in display.ax_.get_xticklabels():
            tick.set_rotation(45)
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    return fig


def plot_seconds_per_epoch(
    batch_sizes: Sequence[int],
    seconds_per_epoch: Sequence[float],
    *,
    accuracy: Sequence[float] | None = None,
    ax=None,
) -> Figure:
    """Training time per epoch against batch size, optionally with the final accuracy.

    Args:
        batch_sizes: positive batch sizes, a list or 1-D array; they need not be sorted.
        seconds_per_epoch: wall-clock seconds per epoch, one per batch size.
        accuracy: final (e.g. validation) accuracy in 0..1 per batch size, drawn dashed on a
            second y axis at the right; ``None`` leaves it out.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure. The x axis is logarithmic (base 2) with a tick at every batch size.

    Raises:
        ValueError: the sequences are empty, differ in length, or a batch size is not positive.
    """
    sizes = np.asarray(batch_sizes, dtype=np.float64).reshape(-1)
    seconds = np.asarray(seconds_per_epoch, dtype=np.float64).reshape(-1)
    acc = None if accuracy is None else np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if sizes.size == 0:
        raise ValueError("no batch sizes given")
    if seconds.size != sizes.size or (acc is not None and acc.size != sizes.size):
        raise ValueError(
            f"{sizes.size} batch sizes but {seconds.size} timings"
            + ("" if acc is None else f" and {acc.size} accuracies")
        )
    if np.any(sizes <= 0):
        raise ValueError(f"batch sizes must be positive; got {sizes.tolist()}")
    order = np.argsort(sizes)
    fig, ax = _axes_and_figure(ax, (6, 3.8))
    lines = ax.plot(sizes[order], seconds[order], "o-", color="C0", label="seconds per epoch")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes[order], labels=[f"{s:g}" for s in sizes[order]])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("seconds per epoch")
    if acc is not None:
        twin = ax.twinx()
        lines += twin.plot(sizes[order], acc[order], "s--", color="C1", label="final accuracy")
        twin.set_ylabel("final accuracy")
    ax.legend(handles=lines, loc="best")
    ax.set_title("Seconds per epoch by batch size")
    return fig


def plot_against_published(
    histories: Any,
    published: Mapping[str, Sequence[float]],
    *,
    metric: str = "val_accuracy",
    ax=None,
    title: str | None = None,
    ylabel: str = "test accuracy (%)",
) -> Figure:
    """A metric per epoch of several runs (solid) next to published values for the same runs (dotted).

    Args:
        histories: a dict ``{run label: history}`` (a Keras ``History``, an object with ``.history``,
            or a dict of lists), as for :func:`plot_learning_curves`.
        published: ``{run label: [value per epoch]}`` in percent; a run without an entry is drawn alone.
        metric: the history key to draw, e.g. ``"val_accuracy"`` (fractions 0..1, drawn in percent).
        ax: axes to draw on; ``None`` makes a new figure.
        title: the axes' title.
        ylabel: the y-axis label.

    Returns:
        The figure. Each run has one colour: its own values solid with round markers, the published
        values dotted with square markers. The x axis is the epoch, starting at 1.

    Raises:
        ValueError: no histories, or a history without ``metric`` (the message lists its keys).
        TypeError: a history is neither a History, an object with ``.history``, nor a dict.
    """
    runs = _runs(histories)
    fig, ax = _axes_and_figure(ax, (6, 3.8))
    for i, (label, history) in enumerate(runs.items()):
        if metric not in history:
            raise ValueError(f"history {label!r} has no {metric!r}; its keys are {sorted(history)}")
        values = 100 * np.asarray(history[metric])
        ax.plot(np.arange(1, len(values) + 1), values, "-o", color=f"C{i}", label=f"{label}: this run")
        if label in published:
            theirs = np.asarray(published[label], dtype=float)
            ax.plot(np.arange(1, len(theirs) + 1), theirs, ":s", color=f"C{i}", label=f"{label}: published")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig




# --------------------------------------------------------------------------------------------
# Inside a CNN: filters, feature maps, receptive fields, translation
# --------------------------------------------------------------------------------------------

def _numbered_panels(parent, stack: np.ndarray, ncols: int, draw) -> None:
    """One small panel per channel of ``stack`` ``(height, width, channels)``, titled with its index.

    ``draw(ax, array)`` shows one ``(height, width)`` channel on its axes.
    """
    for index, ax in enumerate(_cell_axes(parent, stack.shape[-1], ncols)):
        draw(ax, stack[..., index])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(index), fontsize=8)


def plot_filters(kernel: Any, *, ncols: int = 8, title: str | None = None) -> Figure:
    """The learned 2-D filters of a convolutional layer with one input channel, one small image each.

    Args:
        kernel: the layer's weights ``(height, width, 1, filters)`` (``layer.kernel``), or ``(height, width, filters)``.
        ncols: filters per row, at least 1.
        title: the figure's title.

    Returns:
        The figure. Every filter has its own symmetric colour scale: red weights are positive, blue
        negative, white zero; the number is the filter's index.

    Raises:
        ValueError: the kernel has another shape, e.g. more than one input channel.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim == 4 and kernel.shape[2] == 1:
        kernel = kernel[:, :, 0, :]
    if kernel.ndim != 3:
        raise ValueError(f"expected a kernel (height, width, 1, filters), got shape {kernel.shape}")
    count = kernel.shape[-1]
    fig = _new_figure((1.1 * min(ncols, count), 1.2 * -(-count // ncols) + 0.4))
    def draw(ax, weights):
        scale = max(float(np.abs(weights).max()), 1e-12)
        ax.imshow(weights, cmap="RdBu_r", vmin=-scale, vmax=scale)
    _numbered_panels(fig, kernel, ncols, draw)
    if title:
        fig.suptitle(title)
    return fig


def plot_feature_maps(image: Any, maps: Any, *, ncols: int = 8, title: str | None = None) -> Figure:
    """One image and the feature maps a layer computes for it.

    Args:
        image: the image ``(height, width)`` or ``(height, width, channels)``.
        maps: the layer's output for it, ``(height, width, filters)`` (:func:`cnn_course.models.feature_maps`).
        ncols: feature maps per row, at least 1.
        title: the figure's title.

    Returns:
        The figure: the image at the left, the maps in a grid at the right, each scaled to its own
        range (bright: the filter responds strongly there).

    Raises:
        ValueError: ``maps`` does not have 3 dimensions.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"expected feature maps (height, width, filters), got shape {maps.shape}")
    count = maps.shape[-1]
    rows = -(-count // ncols)
    fig = _new_figure((1.1 * ncols + 2.2, 1.15 * rows + 0.5))
    left, right = fig.subfigures(1, 2, width_ratios=[2.2, 1.1 * ncols])
    ax = left.subplots()
    _show_image(ax, image)
    ax.set_title("input")
    _numbered_panels(right, maps, ncols, lambda ax, values: ax.imshow(values, cmap="magma"))
    if title:
        fig.suptitle(title)
    return fig


def plot_receptive_fields(image: Any, fields: Sequence[Any], *, ax=None, title: str | None = None) -> Figure:
    """An image with the receptive field of one central unit of every layer drawn as a square.

    Args:
        image: the input image ``(height, width)`` or ``(height, width, channels)``.
        fields: :class:`cnn_course.models.ReceptiveField` entries (anything with ``layer``, ``size``, ``jump``).
        ax: axes to draw on; ``None`` makes a new figure.
        title: the axes' title.

    Returns:
        The figure: nested squares centred on the image, labelled with the layer and its size in pixels.
    """
    image = np.asarray(image)
    fig, ax = _axes_and_figure(ax, (5.2, 4.6))
    _show_image(ax, image)
    height, width = image.shape[:2]
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    for index, field in enumerate(fields):
        half = field.size / 2
        color = f"C{index % 10}"
        ax.add_patch(plt.Rectangle((centre_x - half, centre_y - half), field.size, field.size, fill=False,
                                   edgecolor=color, linewidth=2, label=f"{field.layer}: {field.size}×{field.size} px"))
    ax.set_xlim(-0.5 - 1, width - 0.5 + 1)
    ax.set_ylim(height - 0.5 + 1, -0.5 - 1)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_accuracy_under_shift(results: Mapping[str, Sequence[float]], shifts: Sequence[int], *, ax=None,
                              title: str | None = None) -> Figure:
    """Accuracy against how far the images were moved, one line per model.

    Args:
        results: ``{model label: [accuracy in 0..1 per shift]}`` (:func:`cnn_course.training.accuracy_under_shift`).
        shifts: the shifts in pixels, the x axis.
        ax: axes to draw on; ``None`` makes a new figure.
        title: the axes' title.

    Returns:
        The figure, accuracy in percent.

    Raises:
        ValueError: a model has not one accuracy per shift.
    """
    shifts = list(shifts)
    fig, ax = _axes_and_figure(ax, (5.5, 3.6))
    for label, accuracies in results.items():
        if len(accuracies) != len(shifts):
            raise ValueError(f"{label!r} has {len(accuracies)} accuracies for {len(shifts)} shifts")
        ax.plot(shifts, 100 * np.asarray(accuracies), "o-", label=label)
    ax.set_xlabel("shift (pixels, mean over left, right, up, down)")
    ax.set_ylabel("validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def plot_running_statistics(means: Sequence[float], variances: Sequence[float], data_mean: float,
                            data_variance: float, *, title: str | None = None) -> Figure:
    """The running mean and variance of one batch-normalization channel per training step, against the data's.

    Args:
        means, variances: the running statistics after each step (:class:`cnn_course.training.RunningStatistics`).
        data_mean, data_variance: the statistics of that channel's input over the training images.
        title: the figure's title.

    Returns:
        The figure: two panels (mean, variance), the running value solid, the data's value dashed.

    Raises:
        ValueError: ``means`` and ``variances`` differ in length or are empty.
    """
    if len(means) != len(variances) or not len(means):
        raise ValueError(f"{len(means)} running means but {len(variances)} variances")
    fig = _new_figure((9, 3.2))
    steps = np.arange(1, len(means) + 1)
    for ax, values, target, name in zip(fig.subplots(1, 2), (means, variances), (data_mean, data_variance),
                                        ("mean", "variance")):
        ax.plot(steps, values, "-", label=f"running {name}")
        ax.axhline(target, color="C1", linestyle="--", label=f"{name} over the training images")
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
