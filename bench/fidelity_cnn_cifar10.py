"""Fidelity check of assignment cnn_cifar10: does a full run show what the notebooks state?

Two claims, checked on the outputs of a *full* run of the solution notebooks in source/cnn_cifar10/:

1. model_comparison.ipynb: model 3 (dropout) ends with the lowest validation accuracy of the three
   models (the correct answer of its question says model 3 underfits and is worst).
2. batch_size.ipynb: the largest batch runs an epoch in fewer seconds than batch sizes 1 and 8, and
   ends its epochs with a lower validation accuracy than every smaller batch size (the correct
   answer says a large batch trains faster per epoch but needs more epochs).

By default the outputs stored in the notebooks are read (the committed full run). With ``--run`` the
notebooks are executed first, in full mode (``CNN_COURSE_BUDGET=full``; a few minutes each on
2 CPU cores; CIFAR-10 must be available, e.g. ``CNN_COURSE_DATA=../shared/data``); ``--write`` then
saves the executed notebooks in place. Timings on a shared machine vary; the claims compare sizes
that differ several-fold, not by a few percent.

Prints one PASS/FAIL line per check and exits 0 when all pass, 1 otherwise.

    python bench/fidelity_cnn_cifar10.py [--run [--write]] [--folder source/cnn_cifar10]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "source" / "cnn_cifar10"

_FULL_RUN = re.compile(r"^Run budget: full\b", re.MULTILINE)
_MODEL_LINE = re.compile(r"^(model [^:]+): final training accuracy ([\d.]+)%, final validation accuracy ([\d.]+)%$",
                         re.MULTILINE)
_BATCH_LINE = re.compile(r"^batch ([\d,]+): ([\d.]+) s per epoch of [\d,]+ images; "
                         r"validation accuracy after (\d+) epochs? ([\d.]+)%$", re.MULTILINE)


def stream_text(notebook) -> str:
    """All text that the code cells of ``notebook`` printed (stdout and stderr), in order."""
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []) if output.get("output_type") == "stream")


def _full_run(text: str, name: str) -> tuple[str, bool, str]:
    found = bool(_FULL_RUN.search(text))
    return (f"{name}: outputs come from a full run", found,
            "Run budget: full" if found else "no 'Run budget: full' line: the stored outputs are not a full run")


def check_comparison(notebook) -> list[tuple[str, bool, str]]:
    """Checks of model_comparison.ipynb: a full run, and model 3 has the lowest final validation accuracy."""
    text = stream_text(notebook)
    results = [_full_run(text, "model_comparison")]
    final = {name: float(validation) for name, _, validation in _MODEL_LINE.findall(text)}
    claim = "model_comparison: model 3 has the lowest final validation accuracy"
    model3 = [name for name in final if name.startswith("model 3")]
    if len(final) != 3 or len(model3) != 1:
        return results + [(claim, False, f"expected three 'model N: final ...' lines, found {sorted(final)}")]
    others = {name: value for name, value in final.items() if name != model3[0]}
    ok = all(final[model3[0]] < value for value in others.values())
    detail = ", ".join(f"{name} {value:.1f}%" for name, value in final.items())
    return results + [(claim, ok, detail)]


def check_batch_size(notebook) -> list[tuple[str, bool, str]]:
    """Checks of batch_size.ipynb: a full run; the largest batch is faster per epoch and ends less accurate."""
    text = stream_text(notebook)
    results = [_full_run(text, "batch_size")]
    runs = {int(size.replace(",", "")): (float(seconds), float(accuracy))
            for size, seconds, _, accuracy in _BATCH_LINE.findall(text)}
    faster = "batch_size: the largest batch needs fewer seconds per epoch than batch sizes 1 and 8"
    behind = "batch_size: the largest batch ends with a lower validation accuracy than every smaller batch"
    if not {1, 8} < set(runs):
        missing = f"expected 'batch N: ...' lines for 1, 8 and a larger batch, found {sorted(runs)}"
        return results + [(faster, False, missing), (behind, False, missing)]
    largest = max(runs)
    seconds = ", ".join(f"batch {size:,} {runs[size][0]:.1f} s" for size in sorted(runs))
    accuracy = ", ".join(f"batch {size:,} {runs[size][1]:.1f}%" for size in sorted(runs))
    return results + [
        (faster, all(runs[largest][0] < runs[size][0] for size in (1, 8)), seconds),
        (behind, all(runs[largest][1] < runs[size][1] for size in runs if size != largest), accuracy),
    ]


CHECKS = {"model_comparison": check_comparison, "batch_size": check_batch_size}


def execute(path: Path):
    """Execute a copy of the notebook at ``path`` in full mode and return it (the file is not changed)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    previous = os.environ.get("CNN_COURSE_BUDGET")
    os.environ["CNN_COURSE_BUDGET"] = "full"  # the kernel inherits it; it overrides smoke and grading
    try:
        NotebookClient(notebook, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if previous is None:
            os.environ.pop("CNN_COURSE_BUDGET", None)
        else:
            os.environ["CNN_COURSE_BUDGET"] = previous
    return notebook


def check_folder(folder: Path = FOLDER, *, run: bool = False, write: bool = False) -> list[tuple[str, bool, str]]:
    """Every check on the notebooks in ``folder``: ``[(claim, passed, detail)]``.

    Raises:
        FileNotFoundError: a notebook is missing.
    """
    results = []
    for name, check in CHECKS.items():
        path = Path(folder) / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such notebook")
        if run:
            notebook = execute(path)
            if write:
                nbformat.write(notebook, path)
        else:
            notebook = nbformat.read(path, as_version=4)
        results += check(notebook)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="execute the notebooks in full mode first")
    parser.add_argument("--write", action="store_true", help="with --run: save the executed notebooks in place")
    parser.add_argument("--folder", type=Path, default=FOLDER, help=f"the notebooks' folder (default {FOLDER})")
    args = parser.parse_args(argv)
    results = check_folder(args.folder, run=args.run, write=args.write)
    for claim, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {claim}  ({detail})")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
