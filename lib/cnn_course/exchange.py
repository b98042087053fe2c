"""How a student's answers cross from their notebook's kernel to the grader: as data only.

When a notebook is autograded, its grade cells do not run in the student's kernel. They run in a
separate checker process that never runs student code, and the values a grade cell reads from the
notebook (``cnn2``, ``answer_most_weights``, ``dense_parameter_count``) are sent across as data:

* numbers, strings, ``None``, lists, tuples and dicts with string keys, as JSON (NumPy scalars
  become Python numbers);
* Keras models as ``.keras`` files, which the checker loads with ``safe_mode=True``;
* functions as *remote calls*: the checker calls the function in the student's kernel with JSON
  arguments, and the result comes back the same way.

Anything else (an array, a custom object) is refused, and the grade cell that needs it scores 0
with a message naming the variable. An object that "compares equal to anything" arrives as the
plain data it serialises to, so it compares like that data.

This module holds both sides of the format: :func:`export_names` and :func:`export_call` run in
the student's kernel and write a manifest (``*.json``) and model files into an exchange folder;
:func:`decode` reads them in the checker. Nothing here knows an answer.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "MAX_MANIFEST_BYTES",
    "MAX_MODEL_BYTES",
    "ACCEPTED",
    "RefusedValue",
    "display_path",
    "encode",
    "decode",
    "export_names",
    "export_call",
    "read_manifest",
]

#: The largest manifest (JSON) the checker reads, in bytes.
MAX_MANIFEST_BYTES = 32 * 2**20
#: The largest saved model the checker loads, in bytes.
MAX_MODEL_BYTES = 512 * 2**20
#: How deep lists, tuples and dicts may nest.
MAX_DEPTH = 16
#: What a grade cell can read from a notebook, in words, for messages.
ACCEPTED = "numbers, strings, lists, tuples, dicts with string keys, Keras models and functions"

_MODEL_FILE = re.compile(r"^model-\d+-\d+\.keras$")


class RefusedValue(TypeError):
    """A value that cannot cross to the checker: the variable named holds a type a grade cell cannot read."""

    def __init__(self, name: str, type_name: str):
        self.name, self.type_name = name, type_name
        super().__init__(f"{name} holds a {type_name}, which a grade cell cannot read. It reads {ACCEPTED}.")


def display_path(path: list) -> str:
    """How a value is written in the notebook, e.g. ``designs['small CNN']`` for ``["designs", "small CNN"]``."""
    return path[0] + "".join(f"[{key!r}]" for key in path[1:])


def encode(value: Any, folder: str | os.PathLike, path: list, prefix: str, counter: list[int], depth: int = 0) -> dict:
    """Turn one value into JSON-ready data, saving Keras models into ``folder``.

    Args:
        value: the value found in the student's kernel.
        folder: the exchange folder; models are saved there as ``{prefix}-{n}.keras``.
        path: how the value is reached from the notebook's globals, e.g. ``["designs", "small CNN"]``.
        prefix: the file-name prefix of this request's models, ``model-<request>``.
        counter: a one-element list counting the models saved so far.
        depth: how deep in lists, tuples or dicts the value sits.

    Returns:
        One of ``{"value": v}``, ``{"list": [...]}``, ``{"tuple": [...]}``, ``{"dict": [[key, item], ...]}``,
        ``{"keras": file name}``, ``{"function": path}`` or ``{"refused": type name}``.
    """
    if depth > MAX_DEPTH:
        return {"refused": f"structure nested deeper than {MAX_DEPTH} levels"}
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return {"value": value}
    if isinstance(value, bool):
        return {"value": bool(value)}
    if isinstance(value, int):
        return {"value": int.__index__(value)}
    if isinstance(value, float):
        return {"value": float.__float__(value)}
    if isinstance(value, str):
        return {"value": str.__str__(value)}
    numpy_scalar = _numpy_scalar(value)
    if numpy_scalar is not None:
        return {"value": numpy_scalar}
    if isinstance(value, (list, tuple)):
        items = [encode(item, folder, [*path, index], prefix, counter, depth + 1)
                 for index, item in enumerate(list(value))]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if isinstance(value, dict):
        keys = list(dict.keys(value))
        if not all(type(key) is str for key in keys):
            return {"refused": "dict whose keys are not all strings"}
        return {"dict": [[key, encode(dict.__getitem__(value, key), folder, [*path, key], prefix, counter, depth + 1)]
                         for key in keys]}
    if _is_keras_model(value):
        counter[0] += 1
        name = f"{prefix}-{counter[0]}.keras"
        value.save(os.path.join(os.fspath(folder), name))
        return {"keras": name}
    if callable(value):
        return {"function": list(path)}
    return {"refused": f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__}


def _numpy_scalar(value):
    import sys

    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(value, numpy.generic):
        return None
    item = value.item()
    return item if type(item) in (bool, int, float, str) else None


def _is_keras_model(value) -> bool:
    import sys

    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, keras.Model)


def _write(folder: str | os.PathLike, manifest: str, data: dict) -> None:
    target = os.path.join(os.fspath(folder), manifest)
    with open(target + ".part", "w", encoding="utf-8") as stream:
        json.dump(data, stream)
    os.replace(target + ".part", target)


def export_names(names: list[str], namespace: dict, folder: str | os.PathLike, manifest: str) -> None:
    """Write the values of ``names`` in ``namespace`` (the notebook's globals) to ``folder/manifest``.

    Runs in the student's kernel before a grade cell. A name that is not defined is recorded as
    ``{"missing": true}``; a value that cannot cross as ``{"refused": type}``.

    Args:
        names: the variables the grade cell reads.
        namespace: the notebook's global variables.
        folder: the exchange folder, writable by the kernel.
        manifest: the manifest's file name, e.g. ``values-3.json``.
    """
    counter = [0]
    prefix = "model-" + re.sub(r"\D", "", manifest)
    values = {}
    for name in names:
        if name not in namespace:
            values[name] = {"missing": True}
            continue
        try:
            values[name] = encode(namespace[name], folder, [name], prefix, counter)
        except Exception as error:  # noqa: BLE001 - e.g. a model that cannot be saved
            values[name] = {"refused": f"value that could not be sent ({type(error).__name__}: {error})"[:300]}
    _write(folder, manifest, {"values": values})


def export_call(path: list, arguments: str, namespace: dict, folder: str | os.PathLike, manifest: str) -> None:
    """Call a student's function and write its result to ``folder/manifest``.

    Runs in the student's kernel when the checker calls a function that the notebook defines.

    Args:
        path: how the function is reached from the notebook's globals, e.g. ``["designs", "small CNN"]``.
        arguments: JSON ``{"args": [...], "kwargs": {...}}`` of plain data.
        namespace: the notebook's global variables.
        folder: the exchange folder.
        manifest: the manifest's file name.

    An exception raised by the function propagates (the checker reports it in the grade cell).
    """
    target = namespace[path[0]]
    for key in path[1:]:
        target = target[key]
    call = json.loads(arguments)
    result = target(*call["args"], **call["kwargs"])
    prefix = "model-" + re.sub(r"\D", "", manifest)
    _write(folder, manifest, {"result": encode(result, folder, ["result"], prefix, [0])})


def read_manifest(folder: str | os.PathLike, manifest: str) -> dict:
    """Read a manifest that the student's kernel wrote.

    Raises:
        ValueError: the file is missing, larger than :data:`MAX_MANIFEST_BYTES`, or not JSON of the expected form.
    """
    target = Path(folder) / manifest
    if not target.is_file() or target.is_symlink():
        raise ValueError("the notebook's kernel did not send its values (did a cell change how the kernel runs?)")
    if target.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"the values sent are larger than {MAX_MANIFEST_BYTES // 2**20} MiB")
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"the values sent are not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError("the values sent are not of the expected form")
    return data


def decode(entry: Any, folder: str | os.PathLike, name: str, remote: Callable[[list], Any], depth: int = 0) -> Any:
    """Turn one entry written by :func:`encode` back into a value, in the checker.

    Args:
        entry: the entry as read from the manifest (untrusted data).
        folder: the exchange folder the models were saved into.
        name: how the value is reached in the notebook, for messages (``designs['small CNN']``).
        remote: makes a callable that calls the student's function at a path (see :func:`export_call`).
        depth: nesting depth so far.

    Returns:
        The value: plain data, a ``keras.Model`` loaded in safe mode, or ``remote(path)``.

    Raises:
        RefusedValue: the entry says the value could not be sent, or it is malformed.
        NameError: the variable is not defined in the notebook.
        AssertionError: a saved model is missing, too large, or cannot be loaded in safe mode.
    """
    __tracebackhide__ = True  # noqa: F841 - IPython leaves the checker's frames out of tracebacks
    if depth > MAX_DEPTH or not isinstance(entry, dict) or len(entry) != 1:
        raise RefusedValue(name, "value of an unknown form")
    (kind, content), = entry.items()
    if kind == "value" and (content is None or type(content) in (bool, int, float, str)):
        return content
    if kind in ("list", "tuple") and isinstance(content, list):
        items = [decode(item, folder, f"{name}[{index}]", remote, depth + 1) for index, item in enumerate(content)]
        return items if kind == "list" else tuple(items)
    if kind == "dict" and isinstance(content, list) and all(
            isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is str for pair in content):
        return {key: decode(item, folder, f"{name}[{key!r}]", remote, depth + 1) for key, item in content}
    if kind == "keras" and isinstance(content, str) and _MODEL_FILE.match(content):
        return _load_model(Path(folder) / content, name)
    if kind == "function" and isinstance(content, list) and content and all(
            type(key) in (str, int) for key in content) and type(content[0]) is str:
        return remote(content)
    if kind == "missing" and content is True:
        raise NameError(f"name {name!r} is not defined: the notebook has no variable {name} when this test runs. "
                        f"Run the cell that sets it, without errors.")
    if kind == "refused" and isinstance(content, str):
        raise RefusedValue(name, content[:300])
    raise RefusedValue(name, "value of an unknown form")


def _load_model(path: Path, name: str):
    __tracebackhide__ = True  # noqa: F841
    import keras

    if not path.is_file() or path.is_symlink():
        raise AssertionError(f"{name}: the model was not sent (it could not be saved in the notebook).")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise AssertionError(f"{name}: the saved model has {size:,} bytes, more than the "
                             f"{MAX_MODEL_BYTES // 2**20} MiB a grade cell reads.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - any failure to load is the answer's
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise AssertionError(
            f"{name} could not be read as a Keras model ({type(error).__name__}: {reason}). Grade cells read models "
            f"built from Keras' own layers; custom layers, Lambda layers and custom Python code are not read.") from None

