"""Results that a notebook states, recorded where the course's fidelity check can read them.

A notebook calls :func:`record` for every result its text states (an accuracy, a receptive
field, a gap between two curves). The value becomes a display output of its own MIME type,
:data:`MIME_TYPE` (the idea of scrapbook's ``glue``), so a checker reads it from the saved
notebook by name instead of searching printed text. Students see the value as one short line.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MIME_TYPE", "record", "recorded"]

#: The MIME type of a recorded result: JSON ``{"name": str, "value": number, str, bool or list}``.
MIME_TYPE = "application/vnd.cnn-course.record+json"


def _plain(value: Any) -> Any:
    """``value`` as JSON data: NumPy scalars and arrays become numbers and lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot record {value!r}: not a finite number")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}: record numbers, strings, booleans or lists of them")


def record(name: str, value: Any, *, text: str | None = None) -> None:
    """Show ``value`` and record it under ``name`` in the cell's outputs.

    Args:
        name: a short identifier, unique within the notebook, e.g. ``"cnn2_val_accuracy"``.
        value: a number (accuracies as fractions 0..1), string, boolean, or a list of them;
            NumPy scalars and arrays are accepted.
        text: what the student sees; ``None`` shows ``name = value`` (floats to 4 significant digits).

    Raises:
        TypeError: ``value`` is of another type.
        ValueError: ``value`` is NaN or infinite, or ``name`` is empty.
    """
    from IPython.display import display

    if not name:
        raise ValueError("a recorded result needs a name")
    plain = _plain(value)
    display({MIME_TYPE: {"name": name, "value": plain},
             "text/plain": text if text is not None else f"{name} = {_readable(plain)}"}, raw=True)


def _readable(value: Any) -> str:
    """``value`` for a reader: floats to 4 significant digits, lists item by item."""
    if isinstance(value, list):
        return "[" + ", ".join(_readable(item) for item in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def recorded(notebook) -> dict[str, Any]:
    """Every result recorded in an executed notebook (an ``nbformat`` node or a dict), by name.

    Raises:
        ValueError: a name is recorded twice.
    """
    found: dict[str, Any] = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            entry = output.get("data", {}).get(MIME_TYPE)
            if entry is None:
                continue
            if entry["name"] in found:
                raise ValueError(f"{entry['name']!r} is recorded twice")
            found[entry["name"]] = entry["value"]
    return found
