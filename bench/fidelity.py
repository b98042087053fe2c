"""Fidelity of the course: does a full run of every solution notebook show what the course states?

The notebooks of ``cnn_mnist`` and ``cnn_cifar10`` are checked declaratively (:mod:`claims_check`):
each records its results with ``cnn_course.records.record``, and ``bench/claims/<notebook>.toml``
lists every claim of its text (the quoted phrase, the recorded value, a verb and its tolerance); a
number of the markdown that no claim covers fails. Those of ``cnn_design`` still have a check
function below, which reads the outputs of an executed notebook (printed text and tables) and
compares them with

* the published figures (seed courses, see ``cnn_grader.references.PUBLISHED_PARAMETER_COUNTS`` and
  :data:`PUBLISHED_ACCURACY`): parameter counts must match exactly; accuracies must reach or beat
  what the notebook's text says they reach or beat;
* the claims of the notebook's own text about its results ("about 94 %", "model 3 is worst",
  "the largest batch has the shortest epochs but ends least accurate", "the baseline ends 0.26
  points below the published 98.13 %", ...). Where the text itself states a shortfall against a
  published figure, the check is that this stated claim holds, not that the figure is reached.

Tolerances. Parameter counts: exact. "About X %" with X a whole percent: within
:data:`ABOUT_POINTS` (1 point): the text rounds to whole percent and one of these runs moves by
up to about a point between machines (validation sets of 1,000-5,000 images). A published figure
given only approximately ("~91 %") counts as reached from X - 0.5 (its rounding). Figures that
the text quotes to a decimal or two ("98.58 %", "41 %" in a results table) must equal the
printed value at the text's precision. Comparisons ("reaches the published accuracy after every
epoch", "model 3 is worst") are strict comparisons of the printed numbers. Most absolute timings
the text quotes ("271 s of training") are not checked: they depend on the machine and its load;
the wall time of each notebook on this machine is reported instead. Those of predictions
(minutes of training, seconds per epoch) are checked within a factor of 1.5
(:data:`TIMING_FACTOR`). What only the plots
show (confusion matrices, the most confident mistakes) is not checked.

Every number comes from the notebook's printed output (stream text, and the HTML of the tables it
displays), found by the source of the cell that printed it. A line, cell or table that is not
found makes its row FAIL with "line not found: ..." (never a silent pass). One more row per
notebook checks that the outputs come from a full run ("Run budget: full").

Usage::

    python bench/fidelity.py [--run] [--write] [--budget full|smoke] [--only NAME ...]

Without ``--run`` the outputs stored in the source notebooks (the committed full run) are
checked. With ``--run`` every notebook is executed first with nbclient (kernel python3, working
directory the notebook's folder, up to an hour per cell), with ``CNN_COURSE_BUDGET`` set from
``--budget`` (default ``full``; an already-set ``CNN_COURSE_BUDGET`` is ignored, so that
``make fidelity`` always runs the full budget; ``--budget smoke`` only exercises the runner, and
its accuracy rows are expected to FAIL). A full run takes about half an hour on 2 CPU cores and
needs the data sets (``CNN_COURSE_DATA``, Fashion-MNIST). A notebook that raises is recorded as a
FAIL row and the run goes on with the next. ``--write`` (full budget only) saves each executed
notebook in place when it ran without error. ``--only`` limits the run to the named notebooks
(``fc_mnist``, ``cnn1_mnist``, ..., ``predictions``).

Prints one PASS/FAIL line per row and a final count; exits 1 if any row FAILs. Writes
docs/fidelity.md (one table per notebook: claim | published | ours | result, and its wall time)
and bench/fidelity.json (the same rows as plain JSON).
"""

import argparse
import html.parser
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from cnn_course.published import PUBLISHED_ACCURACY  # the seed courses' figures, kept once

sys.path.insert(0, str(Path(__file__).resolve().parent))
import claims_check  # noqa: E402  (bench/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "source"
DOCS = ROOT / "docs" / "fidelity.md"
JSON = ROOT / "bench" / "fidelity.json"
CELL_TIMEOUT = 3600  # seconds per cell; the slowest cell of a full run takes about 8 minutes on 2 cores

ABOUT_POINTS = 1.0  # "about X %" (whole percent) holds within this many percentage points
APPROX_PUBLISHED_POINTS = 0.5  # a published "~X %" counts as reached from X - 0.5 (its rounding)



# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One checked claim: what is claimed, the published (or stated) figure, ours, and the verdict."""

    claim: str
    published: str
    ours: str
    ok: bool
    detail: str = ""


@dataclass
class NotebookResult:
    """The rows of one notebook, and how its outputs were obtained."""

    name: str
    path: str
    rows: list[Row] = field(default_factory=list)
    wall_seconds: float | None = None  # None: stored outputs, not run here
    stated_wall_time: str | None = None  # the notebook's own "Wall time of this run" line, if it prints one


class LineNotFound(LookupError):
    """An output line, cell or table that a check needs is not in the notebook."""


class _Rows:
    """Collects rows; a check whose output is missing becomes a FAIL row, never a silent pass."""

    def __init__(self):
        self.rows: list[Row] = []

    def add(self, claim: str, published: str, compute) -> None:
        """Append the row ``compute()`` gives as ``(ours, ok, detail)``; a missing output makes it FAIL."""
        try:
            ours, ok, detail = compute()
        except LineNotFound as error:
            ours, ok, detail = "—", False, str(error)
        self.rows.append(Row(claim, published, str(ours), bool(ok), detail))


def _pct(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f} %"


TIMING_FACTOR = 1.5


def _similar_time(ours: float, stated: float) -> bool:
    """Whether a time of this run is within :data:`TIMING_FACTOR` of the time the text states.

    Timings vary from run to run on a shared machine (a rerun gives the same accuracies, not the
    same seconds), so a stated time holds when this run's is of the same size.
    """
    return stated / TIMING_FACTOR <= ours <= stated * TIMING_FACTOR


def _quoted(value: float, stated: str) -> tuple[str, bool, str]:
    """The text quotes ``stated`` (e.g. "98.58" or "41"); the printed value must round to it."""
    digits = len(stated.split(".")[1]) if "." in stated else 0
    ours = f"{value:.{digits}f}"
    return f"{ours} %", ours == stated, f"printed {value:g}, the text says {stated} %"


# --------------------------------------------------------------------------------------------
# Reading the outputs of a notebook
# --------------------------------------------------------------------------------------------

def stream_text(notebook) -> str:
    """All text that the code cells of ``notebook`` printed (stdout and stderr), in order."""
    return "".join(_cell_stream(cell) for cell in notebook.cells if cell.cell_type == "code")


def _cell_stream(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream")


def cell_output(notebook, source: str) -> str:
    """The printed text of the first code cell whose source contains ``source``.

    Raises:
        LineNotFound: no code cell contains ``source``.
    """
    for cell in notebook.cells:
        if cell.cell_type == "code" and source in cell.source:
            return _cell_stream(cell)
    raise LineNotFound(f"line not found: no code cell with {source!r}")


def _cell(notebook, source: str):
    for cell in notebook.cells:
        if cell.cell_type == "code" and source in cell.source:
            return cell
    raise LineNotFound(f"line not found: no code cell with {source!r}")


def find(pattern: str, text: str, what: str) -> re.Match:
    """The first match of ``pattern`` (multiline) in ``text``.

    Raises:
        LineNotFound: "line not found: ``what``".
    """
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise LineNotFound(f"line not found: {what}")
    return match


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%").strip())


_PARAMETERS = r"([\d,]+) parameters: ([\d,]+) trainable, ([\d,]+) non-trainable"


def parameter_counts(notebook, source: str, label: str = "") -> tuple[int, int, int]:
    """(total, trainable, non-trainable) from the ``parameter_summary`` line of the cell with ``source``.

    ``label`` is the prefix of the line where the cell prints several ("small CNN: ...").
    """
    text = cell_output(notebook, source)
    prefix = re.escape(f"{label}: ") if label else ""
    match = find(rf"^{prefix}{_PARAMETERS}$", text, f"'{label + ': ' if label else ''}N parameters: ...' "
                 f"in the cell with {source!r}")
    return tuple(int(group.replace(",", "")) for group in match.groups())


_EPOCH_LINE = re.compile(r"^\d+/\d+ - .*?accuracy: ([\d.]+) - loss: ([\d.]+|nan) - "
                         r"val_accuracy: ([\d.]+) - val_loss: ([\d.]+|nan)", re.MULTILINE)


def epoch_logs(notebook, source: str) -> list[list[dict]]:
    """Keras' per-epoch log lines printed by the cell with ``source``, split into runs (at "Epoch 1/").

    Each epoch is ``{"accuracy", "loss", "val_accuracy", "val_loss"}``, accuracies in percent.

    Raises:
        LineNotFound: the cell printed no epoch lines.
    """
    runs: list[list[dict]] = []
    for line in cell_output(notebook, source).splitlines():
        if re.match(r"^Epoch 1/\d+$", line):
            runs.append([])
        match = _EPOCH_LINE.match(line)
        if match and runs:
            accuracy, loss, val_accuracy, val_loss = (float(value) for value in match.groups())
            runs[-1].append({"accuracy": 100 * accuracy, "loss": loss,
                             "val_accuracy": 100 * val_accuracy, "val_loss": val_loss})
    runs = [run for run in runs if run]
    if not runs:
        raise LineNotFound(f"line not found: Keras epoch lines in the cell with {source!r}")
    return runs


class _TableParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1]["rows"].append(self._row)
            self._row = None
        elif tag == "caption" and self._caption is not None and self.tables:
            self.tables[-1]["caption"] = "".join(self._caption).strip()
            self._caption = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._caption is not None:
            self._caption.append(data)


def html_tables(notebook, source: str) -> list[dict]:
    """The HTML tables (pandas Stylers) that the cell with ``source`` displayed: ``[{"caption", "rows"}]``.

    ``rows`` are lists of cell texts, header rows included.

    Raises:
        LineNotFound: the cell displayed no table.
    """
    parser = _TableParser()
    for output in _cell(notebook, source).get("outputs", []):
        markup = output.get("data", {}).get("text/html", "")
        if "<table" in markup:
            parser.feed(markup)
    if not parser.tables:
        raise LineNotFound(f"line not found: a table displayed by the cell with {source!r}")
    return parser.tables


def _full_run(rows: _Rows, notebook) -> None:
    def compute():
        match = find(r"^Run budget: (\w+)", stream_text(notebook), "Run budget: ...")
        return match.group(1), match.group(1) == "full", match.group(0)
    rows.add("outputs come from a full run", "Run budget: full", compute)


def _published_counts(name: str) -> tuple[int, int | None, int | None]:
    from cnn_grader.references import PUBLISHED_PARAMETER_COUNTS

    return PUBLISHED_PARAMETER_COUNTS[name]


def _parameters(rows: _Rows, notebook, label: str, source: str, published: tuple, *,
                line_label: str = "", origin: str = "") -> None:
    """A row comparing printed (total, trainable, non-trainable) with ``published`` (None: not published)."""
    shown = " / ".join("—" if value is None else f"{value:,}" for value in published)

    def compute():
        ours = parameter_counts(notebook, source, line_label)
        ok = all(want is None or want == got for want, got in zip(published, ours))
        return " / ".join(f"{value:,}" for value in ours), ok, "total / trainable / non-trainable, exact"
    rows.add(f"{label}: parameters (total / trainable / non-trainable)", shown + (f" ({origin})" if origin else ""),
             compute)


# --------------------------------------------------------------------------------------------
# cnn_mnist
# --------------------------------------------------------------------------------------------

def declared(name: str):
    """The check of a notebook whose claims are declared in ``bench/claims/<name>.toml`` (:mod:`claims_check`).

    Its rows: the outputs come from a full run, then one row per ``[[claims]]`` entry, then one row for
    the numbers of its markdown that no claim covers.
    """
    def check(notebook) -> list[Row]:
        rows = _Rows()
        _full_run(rows, notebook)
        rows.rows += [Row(*row) for row in claims_check.check(notebook, claims_check.read_claims(name))]
        return rows.rows
    check.__name__ = f"check_{name}"
    check.__doc__ = f"{name}.ipynb: the [[claims]] of bench/claims/{name}.toml against the results it recorded."
    return check


# --------------------------------------------------------------------------------------------
# cnn_design
# --------------------------------------------------------------------------------------------

def _progression(notebook) -> dict[str, list[float]]:
    """``{run: [Keras test accuracy after each epoch]}`` from the table next to the published runs."""
    rows = html_tables(notebook, "epoch_accuracy_table(runs")[0]["rows"]
    runs = [cell for cell in rows[0][1:] if cell]
    kinds = rows[1][1:]
    series: dict[str, list[float]] = {run: [] for run in runs}
    for row in rows:
        if not re.fullmatch(r"\d+", row[0] if row else ""):
            continue
        values = row[1:]
        for index, run in enumerate(runs):
            column = 2 * index
            if column < len(values) and kinds[column] == "Keras" and values[column]:
                series[run].append(float(values[column]))
    if not all(series.values()):
        raise LineNotFound(f"line not found: Keras accuracies per epoch for every run, found {series}")
    return series


def check_architectures(notebook) -> list[Row]:
    """architectures.ipynb: parameter counts of the progression; accuracies per epoch against 001, as the text states."""
    rows = _Rows()
    _full_run(rows, notebook)
    for label, source, key in [("baseline", "parameter_summary(baseline)", "progression_baseline"),
                               ("part A", "parameter_summary(part_a)", "progression_part_a"),
                               ("part B", "parameter_summary(part_b)", "progression_part_b"),
                               ("part C", "parameter_summary(part_c)", "progression_part_c")]:
        _parameters(rows, notebook, label, source, _published_counts(key), origin="001")
    total_a = _published_counts("progression_part_a")[0]
    _parameters(rows, notebook, "part D (part A with ReLU and dropout)", "parameter_summary(part_d)",
                (total_a, None, None), origin="as part A")

    names = {"baseline": "progression_baseline", "A": "progression_part_a", "B": "progression_part_b",
             "C": "progression_part_c", "D (Fashion-MNIST)": "progression_part_d"}

    def series(run):
        found = _progression(notebook)
        if run not in found:
            raise LineNotFound(f"line not found: run {run!r} in the accuracy table (runs {sorted(found)})")
        return found[run]

    def published(run):
        return PUBLISHED_ACCURACY[names[run]]

    def per_epoch(run):
        return ", ".join(f"{ours:.2f}/{theirs:.2f}" for ours, theirs in zip(series(run), published(run)))

    for run in ("C", "D (Fashion-MNIST)"):
        def every_epoch(run=run):
            ours, theirs = series(run), published(run)
            ok = len(ours) == len(theirs) and all(a >= b for a, b in zip(ours, theirs))
            return f"{ours[-1]:.2f} %", ok, "ours/published per epoch: " + per_epoch(run)
        rows.add(f"text: part {run} reaches the published accuracy or better after every epoch",
                 " ".join(f"{value:.2f}" for value in published(run)), every_epoch)

    def part_a():
        ours, theirs = series("A"), published("A")
        ahead = [epoch + 1 for epoch, (a, b) in enumerate(zip(ours, theirs)) if a > b]
        shortfall = theirs[-1] - ours[-1]
        ok = len(ours) == len(theirs) == 5 and ahead == [1, 2, 3, 4] and f"{shortfall:.2f}" == "0.06"
        return (f"{ours[-1]:.2f} %, ahead after epochs {ahead}", ok,
                f"{shortfall:.2f} points below the published final; ours/published: " + per_epoch("A"))
    rows.add("text: part A is ahead of the published run after epochs 1-4 and ends 0.06 points below it",
             "98.57 % (001); text: ahead after 1-4, 0.06 below after 5", part_a)
    for run, stated in [("A", "98.51"), ("C", "98.95"), ("D (Fashion-MNIST)", "90.59"), ("baseline", "97.89"),
                        ("B", "98.27")]:
        rows.add(f"text: {run} ends at {stated} %", f"{published(run)[-1]:.2f} % (published); text {stated} %",
                 lambda run=run, stated=stated: _quoted(series(run)[-1], stated))

    def baseline_short():
        ours, theirs = series("baseline"), published("baseline")
        shortfall = theirs[-1] - ours[-1]
        ahead = [epoch + 1 for epoch, (a, b) in enumerate(zip(ours, theirs)) if a > b]
        ok = f"{shortfall:.2f}" == "0.24" and ahead == [1, 3]
        return (f"{ours[-1]:.2f} %, ahead after epochs {ahead}", ok,
                f"{shortfall:.2f} points below the published final; ours/published: " + per_epoch("baseline"))
    rows.add("text: the baseline ends 0.24 points below the published 98.13 % and is ahead only after epochs 1 and 3",
             "98.13 % (001); text: 0.24 below, ahead after 1 and 3", baseline_short)

    def part_b():
        ours, theirs = series("B"), published("B")
        below = {epoch + 1: f"{b - a:.2f}" for epoch, (a, b) in enumerate(zip(ours, theirs)) if a < b}
        ok = len(ours) == len(theirs) and below == {2: "0.11", 4: "0.06"} and ours[-1] > theirs[-1]
        gaps = ", ".join(f"{epoch} by {gap}" for epoch, gap in below.items()) or "none"
        return f"{ours[-1]:.2f} %", ok, f"below after epochs {gaps}; ours/published: " + per_epoch("B")
    rows.add("text: part B is 0.11 and 0.06 points below the published run after epochs 2 and 4 (only there), "
             "and ends higher", "98.07 % (001)", part_b)

    def b_no_better():
        a, b = series("A"), series("B")
        ok = b[-1] <= a[-1] and max(b) <= max(a)
        return f"B {b[-1]:.2f} %", ok, f"final A {a[-1]:.2f} %, B {b[-1]:.2f} %; best A {max(a):.2f} %, B {max(b):.2f} %"
    rows.add("text: part B is no better than part A (final and best epoch)", "as in 001 (98.07 vs 98.57)", b_no_better)

    def c_lifts():
        found = {run: series(run)[-1] for run in ("baseline", "A", "B", "C")}
        ok = all(found["C"] > value for run, value in found.items() if run != "C") \
            and abs(found["C"] - 99) <= ABOUT_POINTS
        return f"{found['C']:.2f} %", ok, ", ".join(f"{run} {value:.2f}" for run, value in found.items())
    rows.add("text: ReLU with dropout (part C) lifts the accuracy to about 99 %, the best on MNIST",
             "98.62 % (001); text: about 99 %", c_lifts)
    return rows.rows


def check_predictions(notebook) -> list[Row]:
    """predictions.ipynb: MNIST 99.28 % in the last (bfloat16) epoch line and 99.27 % for the saved model (float32),
    both ≥ the published 99.2 %; CIFAR-10 64.79 % after 10 epochs; the training times, as the text states."""
    rows = _Rows()
    _full_run(rows, notebook)
    _parameters(rows, notebook, "MNIST CNN", "parameter_summary(mnist_cnn)", _published_counts("mnist_cnn_99"),
                origin="004")
    _parameters(rows, notebook, "CIFAR-10 VGG-like", "parameter_summary(cifar_vgg)", _published_counts("cifar10_vgg"),
                origin="004")

    def mnist_final():
        text = cell_output(notebook, "mnist_history.images_per_second")
        return _number(find(r"^(\d+) epochs in .*test accuracy after the last epoch: ([\d.]+)%", text,
                            "'N epochs in ... test accuracy after the last epoch: X%'").group(2))

    def mnist_published():
        ours = mnist_final()
        return _pct(ours, 2), ours >= PUBLISHED_ACCURACY["mnist_cnn_99"], "reaches or beats the published 99.2 %"
    rows.add("MNIST CNN: test accuracy after 10 epochs", "99.2 % (004)", mnist_published)
    rows.add("text: MNIST CNN's last epoch line (bfloat16) ends at 99.28 %", "99.28 %",
             lambda: _quoted(mnist_final(), "99.28"))

    def keras_seconds(source):
        seconds = [int(value) for value in re.findall(r"^\d+/\d+ - (\d+)s - ", cell_output(notebook, source),
                                                      re.MULTILINE)]
        if not seconds:
            raise LineNotFound(f"line not found: Keras epoch lines with seconds in the cell with {source!r}")
        return seconds

    def mnist_time():
        text = cell_output(notebook, "mnist_history.images_per_second")
        minutes = find(r"^\d+ epochs in ([\d.]+) min of training", text, "'N epochs in X min of training'").group(1)
        seconds = keras_seconds("mnist_history = fit(")
        ok = _similar_time(float(minutes), 3.0) and _similar_time(min(seconds), 16) and _similar_time(max(seconds), 21)
        return (f"{minutes} min, {min(seconds)}-{max(seconds)} s per epoch", ok,
                "Keras epoch seconds " + ", ".join(str(value) for value in seconds))
    rows.add("text: MNIST training took 3.0 minutes, 16-21 s per epoch", "3.0 min, 16-21 s per epoch", mnist_time)

    def mnist_curve():
        run = epoch_logs(notebook, "mnist_history = fit(")[0]
        later = [epoch["val_accuracy"] for epoch in run[3:]]
        third = run[2]["val_accuracy"]
        train = max(epoch["accuracy"] for epoch in run)
        ok = (len(run) == 10 and all(99.0 <= value <= 99.3 for value in later) and f"{third:.2f}" == "98.92"
              and f"{train:.1f}" == "99.6")
        return (f"{min(later):.2f}-{max(later):.2f} %; epoch 3 {third:.2f} %; train {train:.2f} %", ok,
                f"{len(run)} epochs; test accuracy from epoch 4: " + ", ".join(f"{v:.2f}" for v in later))
    rows.add("text: from epoch 4 the test accuracy stays between 99.0 % and 99.3 % (98.92 % after epoch 3); "
             "training reaches 99.6 %", "99.0-99.3 %; 98.92 %; 99.6 %", mnist_curve)

    def saved_accuracy():
        """The float32 test accuracy of the saved mnist_cnn.keras, as the grade cell prints it."""
        text = cell_output(notebook, 'model_file("mnist_cnn.keras"), "mnist"')
        return _number(find(r"([\d.]+)% of 10,000 MNIST test images classified correctly", text,
                            "'mnist_cnn.keras: X% of 10,000 MNIST test images ...'").group(1))

    def saved():
        ours = saved_accuracy()
        return _pct(ours, 2), ours >= 99.0 and f"{ours:.2f}" == "99.27", "needs 99.0 %; the text says 99.27 % (float32)"
    rows.add("saved mnist_cnn.keras: test accuracy", ">= 99.0 %; text 99.27 %", saved)

    def one_fewer():
        difference = round(100 * (mnist_final() - saved_accuracy()))
        return (f"{difference} image(s)", difference == 1,
                f"last epoch line (bfloat16) {mnist_final():.2f} %, saved model (float32) {saved_accuracy():.2f} %")
    rows.add("text: the saved model (float32) gets one test image fewer right than the last epoch line (bfloat16)",
             "one image", one_fewer)

    def misclassified():
        count = int(find(r"^(\d+) of 10,000 test images are misclassified", cell_output(notebook, "misclassified"),
                         "'N of 10,000 test images are misclassified'").group(1))
        return (count, count == 73 and abs(100 - count / 100 - saved_accuracy()) < 0.005,
                f"agrees with the saved model's float32 test accuracy {saved_accuracy():.2f} %")
    rows.add("text: 73 of the 10,000 test images are misclassified", "73", misclassified)

    def cifar():
        text = cell_output(notebook, "cifar_history.epoch_seconds")
        return _number(find(r"^(\d+) epochs on .*test accuracy after the last epoch: ([\d.]+)%", text,
                            "'N epochs on ... test accuracy after the last epoch: X%'").group(2))

    def cifar_short():
        ours = cifar()
        ok = f"{ours:.2f}" == "64.79" and ours < PUBLISHED_ACCURACY["cifar10_vgg"]
        return _pct(ours, 2), ok, "10 epochs on 10,000 images, far below the 100-epoch published run (as stated)"
    rows.add("text: CIFAR-10 after 10 epochs 64.79 %, far below the published (100 epochs)",
             "86.87 % (004, 100 epochs); text 64.79 %", cifar_short)

    def cifar_time():
        text = cell_output(notebook, "cifar_history.epoch_seconds")
        found = find(r"^\d+ epochs on .* in ([\d.]+) min of training \((\d+) s per epoch\)", text,
                     "'N epochs on ... in X min of training (Y s per epoch)'")
        minutes, per_epoch = found.group(1), int(found.group(2))
        seconds = keras_seconds("cifar_history = fit(")
        ok = (_similar_time(float(minutes), 1.5) and _similar_time(per_epoch, 9) and _similar_time(min(seconds), 7)
              and _similar_time(max(seconds), 12))  # the text's 15 and 75 minutes are 100 and 500 epochs of its 9 s
        return (f"{minutes} min, {min(seconds)}-{max(seconds)} s per epoch ({per_epoch} s on average)", ok,
                f"100 epochs: {100 * per_epoch / 60:.0f} min on 10,000 images, {500 * per_epoch / 60:.0f} min on 50,000; "
                "Keras epoch seconds " + ", ".join(str(value) for value in seconds))
    rows.add("text: CIFAR-10 training took 1.5 minutes, 7-12 s per epoch (9 s on average); 100 epochs about "
             "15 minutes, on 50,000 images some 75 minutes", "1.5 min; 7-12 s (9 s); 15 min; 75 min", cifar_time)

    def cifar_curve():
        run = epoch_logs(notebook, "cifar_history = fit(")[0]
        if len(run) < 10:
            raise LineNotFound(f"line not found: 10 epoch lines of the CIFAR-10 run, found {len(run)}")
        test = [f"{epoch['val_accuracy']:.2f}" for epoch in run]
        train = [epoch["accuracy"] for epoch in run]
        ok = (test[5:9] == ["57.81", "55.40", "61.08", "60.58"]
              and [f"{run[0]['val_accuracy']:.1f}", f"{run[1]['val_accuracy']:.1f}"] == ["10.0", "21.8"]
              and [f"{train[0]:.0f}", f"{train[1]:.0f}", f"{train[-1]:.0f}"] == ["29", "41", "70"]
              and all(b > a for a, b in zip(train, train[1:]))
              and all(run[-1]["val_accuracy"] > epoch["val_accuracy"] for epoch in run[:-1]))
        return (f"test {', '.join(test)}", ok, "train " + ", ".join(f"{value:.1f}" for value in train))
    rows.add("text: CIFAR-10 test accuracy 10.0, 21.8 after epochs 1-2 and 57.81, 55.40, 61.08, 60.58 after 6-9, "
             "best after the last; training climbs steadily 29, 41 ... 70 %", "as stated", cifar_curve)
    return rows.rows


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

NOTEBOOKS = {  # name: (assignment folder under source/, check)
    "fc_mnist": ("cnn_mnist", declared("fc_mnist")),
    "cnn1_mnist": ("cnn_mnist", declared("cnn1_mnist")),
    "cnn2_mnist": ("cnn_mnist", declared("cnn2_mnist")),
    "model_comparison": ("cnn_cifar10", declared("model_comparison")),
    "batch_size": ("cnn_cifar10", declared("batch_size")),
    "architectures": ("cnn_design", check_architectures),
    "cnn_vs_dense": ("cnn_design", declared("cnn_vs_dense")),
    "predictions": ("cnn_design", check_predictions),
}


def notebook_path(name: str, source: Path = SOURCE) -> Path:
    """Where the solution notebook ``name`` is: ``source/<assignment>/<name>.ipynb``."""
    return Path(source) / NOTEBOOKS[name][0] / f"{name}.ipynb"


def execute(path: Path, budget: str = "full"):
    """Execute a copy of the notebook at ``path`` with ``CNN_COURSE_BUDGET=budget``.

    Returns ``(notebook, seconds, error)``: the executed notebook (as far as it got), the wall seconds,
    and the error (``None`` when every cell ran). The file is not changed.
    """
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    previous = os.environ.get("CNN_COURSE_BUDGET")
    os.environ["CNN_COURSE_BUDGET"] = budget  # the kernel inherits it; it overrides smoke and grading
    started = time.perf_counter()
    error = None
    try:
        NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except Exception as exception:  # noqa: BLE001 - a failed notebook is a result, and the run goes on
        error = exception
    finally:
        if previous is None:
            os.environ.pop("CNN_COURSE_BUDGET", None)
        else:
            os.environ["CNN_COURSE_BUDGET"] = previous
    return notebook, time.perf_counter() - started, error


def _error_summary(error: BaseException) -> str:
    name = getattr(error, "ename", "") or type(error).__name__
    value = getattr(error, "evalue", "") or str(error)
    lines = [line for line in str(value).splitlines() if line.strip()]
    return f"{name}: {lines[-1] if lines else ''}"[:300]


def check_notebook(name: str, notebook) -> list[Row]:
    """The rows of the check of notebook ``name`` on an executed ``notebook``."""
    return NOTEBOOKS[name][1](notebook)


def check_notebooks(names=None, *, run: bool = False, write: bool = False, budget: str = "full",
                    source: Path = SOURCE, log=None) -> list[NotebookResult]:
    """Check the notebooks ``names`` (default all eight): their stored outputs, or a fresh run with ``run``.

    With ``write`` (and ``run``), each notebook that ran without error is saved in place. ``log`` is
    called with a line as each notebook starts (e.g. ``print``).

    Raises:
        KeyError: an unknown notebook name; the message lists the names.
        FileNotFoundError: a notebook is missing.
    """
    names = list(names or NOTEBOOKS)
    unknown = [name for name in names if name not in NOTEBOOKS]
    if unknown:
        raise KeyError(f"unknown notebook(s) {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}")
    results = []
    for name in names:
        path = notebook_path(name, source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such notebook")
        result = NotebookResult(name, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
        if run:
            if log:
                log(f"running {result.path} ({budget} budget) ...")
            notebook, result.wall_seconds, error = execute(path, budget)
            result.rows.append(Row("the notebook runs without error", "no error", "error" if error else "no error",
                                   error is None, _error_summary(error) if error else f"{result.wall_seconds:.0f} s"))
            if write and error is None:
                nbformat.write(notebook, path)
        else:
            notebook = nbformat.read(path, as_version=4)
        stated = re.search(r"^Wall time of this run: .*$", stream_text(notebook), re.MULTILINE)
        result.stated_wall_time = stated.group(0) if stated else None
        result.rows += check_notebook(name, notebook)
        results.append(result)
    return results


def _cell_md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_markdown(results: list[NotebookResult], *, command: str, machine: dict | None = None) -> str:
    """docs/fidelity.md: a header (command, date, machine) and one table per notebook."""
    passed = sum(row.ok for result in results for row in result.rows)
    total = sum(len(result.rows) for result in results)
    lines = ["# Fidelity: what a full run of the solution notebooks shows", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}; do not edit by hand. "
             "See the docstring of bench/fidelity.py for what is checked and with which tolerance.", ""]
    if machine:
        lines += [f"Machine: {machine.get('cpu')} ({machine.get('cores')} cores, {machine.get('memory_gib')} GiB), "
                  f"Python {machine.get('python')}, TensorFlow {machine.get('tensorflow', '?')}, "
                  f"Keras {machine.get('keras', '?')}, intra/inter-op threads "
                  f"{machine.get('intra_op_threads', '?')}/{machine.get('inter_op_threads', '?')}.", ""]
    lines += [f"**{passed} of {total} checks pass.**", ""]
    for result in results:
        if result.wall_seconds is None:
            wall = "stored outputs (not run here)"
            if result.stated_wall_time:
                wall += f"; the notebook printed: {result.stated_wall_time}"
        else:
            wall = f"{result.wall_seconds:.0f} s on this machine"
        lines += [f"## {result.name}", "", f"`{result.path}`. Wall time: {wall}.", "",
                  "| claim | published | ours | result |", "|---|---|---|---|"]
        for row in result.rows:
            verdict = "PASS" if row.ok else f"**FAIL**: {row.detail}"
            lines.append(f"| {_cell_md(row.claim)} | {_cell_md(row.published)} | {_cell_md(row.ours)} | "
                         f"{_cell_md(verdict)} |")
        lines.append("")
    return "\n".join(lines)


def report_json(results: list[NotebookResult], *, command: str, machine: dict | None = None) -> str:
    """bench/fidelity.json: the command, date, machine and every notebook's rows, as plain JSON."""
    return json.dumps({"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine,
                       "notebooks": [asdict(result) for result in results]}, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: check, print PASS/FAIL lines and a count, write docs/fidelity.md and bench/fidelity.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="execute the notebooks first (nbclient)")
    parser.add_argument("--write", action="store_true", help="with --run: save each executed notebook in place")
    parser.add_argument("--budget", choices=("full", "smoke"), default="full",
                        help="CNN_COURSE_BUDGET for --run (default full; the environment's value is ignored)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(NOTEBOOKS),
                        help="check only these notebooks")
    args = parser.parse_args(argv)
    if args.write and not args.run:
        parser.error("--write needs --run")
    if args.write and args.budget != "full":
        parser.error("--write saves notebooks in source/: only with --budget full")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine

    results = check_notebooks(args.only, run=args.run, write=args.write, budget=args.budget,
                              log=lambda line: print(line, flush=True))
    for result in results:
        for row in result.rows:
            print(f"{'PASS' if row.ok else 'FAIL'}  {result.name}: {row.claim}: published {row.published}; "
                  f"ours {row.ours}" + (f"  ({row.detail})" if row.detail else ""))
    rows = [row for result in results for row in result.rows]
    failed = sum(not row.ok for row in rows)
    print(f"{len(rows) - failed} passed, {failed} failed, of {len(rows)} checks in {len(results)} notebooks")
    command = "python bench/fidelity.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    host = machine()
    DOCS.write_text(report_markdown(results, command=command, machine=host))
    JSON.write_text(report_json(results, command=command, machine=host))
    print(f"wrote {DOCS.relative_to(ROOT)} and {JSON.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
