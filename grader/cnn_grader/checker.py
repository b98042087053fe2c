"""The checker: where a grade cell runs during autograding, in a process that never runs student code.

:class:`cnn_grader.grading.CheckedExecute` starts one checker kernel per notebook next to the
student's kernel. Before each grade cell it asks the student's kernel to export the variables the
cell reads (:mod:`cnn_course.exchange`), then runs the grade cell here, on a namespace that holds
only trusted modules and the decoded values. Functions the notebook defines are called back in the
student's kernel (:class:`StudentFunction`) and return data too.

So a student's code can change its own kernel as it likes (IPython hooks, the import system,
Keras, NumPy, builtins): the checks, the references and the comparison run here, untouched.
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import re
import time
import types
from typing import Any, Iterable

from cnn_course import exchange

__all__ = ["Checker", "ImportedOnFirstUse", "StudentFunction", "StudentError", "TRUSTED_NAMES", "names_keras",
           "trusted_namespace"]


class StudentError(Exception):
    """A function of the student's notebook raised an exception, or did not return in time."""


def submission_model_file(filename: str) -> str:
    """``cnn_course.training.model_file`` for grade cells: the path, which must stay inside the submission.

    Raises:
        AssertionError: the name points outside the submission's folder (``..``, an absolute path or a link).
    """
    __tracebackhide__ = True  # noqa: F841
    from cnn_course.training import model_file

    path = model_file(filename)
    folder = os.path.realpath(os.getcwd())
    if os.path.commonpath([folder, os.path.realpath(path)]) != folder:
        raise AssertionError(f"{filename} is not a file of your submission; hand in the model next to the notebook.")
    return path


#: The names a grade cell finds without asking the student's kernel: the course's checks and libraries.
_TRUSTED = ("checks", "keras", "layers", "np", "numpy", "math", "model_file", "references")

#: Names a grade cell never reads from the student's notebook.
TRUSTED_NAMES = frozenset(_TRUSTED) | frozenset(dir(builtins))


class ImportedOnFirstUse(types.ModuleType):
    """A trusted module that a grade cell names, imported when the cell first reads one of its attributes.

    So a notebook whose grade cells check numbers and choices only never imports TensorFlow in the
    checker (about 6 s). The checker's set-up imports the real modules ahead when a notebook's grade
    cells name them (:func:`trusted_namespace` with ``preload``).
    """

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_imported_name"] = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self.__dict__["_imported_name"]), attribute)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_imported_name"]))


#: The trusted names that stand for a module imported on first use, and that module.
_ON_FIRST_USE = {"keras": "keras", "layers": "keras.layers", "references": "cnn_grader.references"}

#: Words of a notebook that mean its grading needs Keras: the modules above, and the saved models of ``model_file``.
_NEEDS_KERAS = re.compile(r"\b(" + "|".join([*_ON_FIRST_USE, "model_file"]) + r")\b")


def names_keras(sources: Iterable[str]) -> bool:
    """Whether any of these cell sources names Keras, the references or ``model_file``.

    The checker's set-up, which overlaps the student's first cells, then imports them ahead
    (:func:`trusted_namespace` with ``preload``); otherwise a grade cell's first use does.
    """
    return any(_NEEDS_KERAS.search(source) for source in sources)


def trusted_namespace(preload: bool = False) -> dict[str, Any]:
    """The trusted names (:data:`TRUSTED_NAMES` less the builtins) with their modules and helpers.

    Args:
        preload: import Keras and the references now; otherwise a grade cell's first use imports them.
    """
    import math

    import numpy as np

    from cnn_course import checks

    if preload:
        for module in _ON_FIRST_USE.values():
            importlib.import_module(module)
    namespace = {"checks": checks, "np": np, "numpy": np, "math": math, "model_file": submission_model_file,
                 **{name: ImportedOnFirstUse(module) for name, module in _ON_FIRST_USE.items()}}
    return {name: namespace[name] for name in _TRUSTED}


class StudentFunction:
    """A function of the student's notebook, called in the student's kernel with plain data."""

    def __init__(self, checker: "Checker", path: list):
        self._checker, self._path = checker, list(path)

    def __call__(self, *args, **kwargs):
        __tracebackhide__ = True  # noqa: F841
        return self._checker.call(self._path, args, kwargs)

    def __repr__(self) -> str:
        return f"<your function {exchange.display_path(self._path)}>"


class Checker:
    """The checker kernel's side of one notebook's grading.

    Args:
        connection_file: the student kernel's connection file (its sockets are reachable from here).
        folder: the exchange folder that the student's kernel writes into.
        call_timeout: seconds a call of a student's function may take.
    """

    def __init__(self, connection_file: str, folder: str, call_timeout: float = 120):
        self.connection_file, self.folder, self.call_timeout = connection_file, folder, call_timeout
        self._requests = 0
        self._client = None
        self._base: set[str] | None = None

    def receive(self, namespace: dict, manifest: str) -> None:
        """Reset ``namespace`` (the checker's globals) to the trusted names, then bind the values in ``manifest``.

        Raises:
            exchange.RefusedValue, NameError, AssertionError: a value the grade cell reads cannot be used
                (see :func:`cnn_course.exchange.decode`); the grade cell fails with that message.
        """
        __tracebackhide__ = True  # noqa: F841
        if self._base is None:
            self._base = set(namespace)
        for name in [name for name in namespace if name not in self._base]:
            del namespace[name]
        namespace.update(trusted_namespace())
        data = exchange.read_manifest(self.folder, manifest)
        values = data.get("values")
        if not isinstance(values, dict):
            raise exchange.RefusedValue("the notebook's values", "value of an unknown form")
        for name, entry in values.items():
            if name in TRUSTED_NAMES or not name.isidentifier():
                continue
            namespace[name] = exchange.decode(entry, self.folder, name, self._remote)

    def _remote(self, path: list) -> StudentFunction:
        return StudentFunction(self, path)

    def call(self, path: list, args: tuple, kwargs: dict) -> Any:
        """Call the student's function at ``path`` in the student's kernel; arguments and result are data.

        Raises:
            TypeError: an argument is not plain data (a checker's error).
            StudentError: the function raised, or did not return within ``call_timeout`` seconds.
        """
        __tracebackhide__ = True  # noqa: F841
        self._requests += 1
        manifest = f"call-{self._requests}.json"
        arguments = json.dumps({"args": list(args), "kwargs": kwargs})
        code = (f"import cnn_course.exchange as __cnn_course_exchange\n"
                f"__cnn_course_exchange.export_call({path!r}, {arguments!r}, globals(), {self.folder!r}, {manifest!r})\n"
                f"del __cnn_course_exchange")
        reply = self._execute(code)
        shown = exchange.display_path(path)
        if reply is None:
            raise StudentError(f"{shown} did not return within {self.call_timeout:g} s.")
        content = reply["content"]
        if content.get("status") != "ok":
            raise StudentError(f"calling {shown} raised {content.get('ename', 'an error')}: "
                               f"{str(content.get('evalue', ''))[:500]}")
        data = exchange.read_manifest(self.folder, manifest)
        return exchange.decode(data.get("result"), self.folder, f"the result of {shown}", self._remote)

    def close(self) -> None:
        """Close the connection to the student's kernel (before the checker grades another notebook)."""
        if self._client is not None:
            self._client.stop_channels()
            self._client = None

    def _execute(self, code: str) -> dict | None:
        from jupyter_client import BlockingKernelClient

        if self._client is None:
            client = BlockingKernelClient(connection_file=self.connection_file)
            client.load_connection_file()
            client.start_channels(iopub=False, stdin=False, hb=False, control=True)
            self._client = client
        msg_id = self._client.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + self.call_timeout
        while time.monotonic() < deadline:
            try:
                reply = self._client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - queue.Empty on timeout
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply
        # Stop the function, so that the student's kernel can run the next cells (it takes interrupts as messages).
        self._client.control_channel.send(self._client.session.msg("interrupt_request", {}))
        return None

