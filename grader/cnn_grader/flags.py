"""Code in a submission that a person should look at before its grades are trusted.

Before autograding, the code cells of each student notebook are read with Python's own parser
(:mod:`ast`; regular expressions only recognize IPython's prompts and ``obj?`` help, as IPython
itself does) and every construct that could tamper with grading is
*flagged*: IPython's hooks, the import system, the interpreter's hooks, imports of modules a
course notebook never needs, code built at run time, function and frame internals, objects
that compare equal to anything, changes to imported library modules (monkeypatching), process
and signal calls, and paths outside the submission's folder.

A flag never changes a score. The grader marks the grade cells of a flagged notebook for manual
grading, with a comment that names the notebook, the cell and the line (:meth:`Flag.describe`);
a person decides. The checks are deliberately simple and err on the side of flagging, yet they
leave ordinary course code alone: building and training Keras models, plotting, saving a model
under a relative path, importing the course's own modules.

IPython syntax is understood the way IPython itself turns a cell into Python (magics, shell
escapes, ``obj?`` help, pasted prompts, cell magics): those lines are replaced by neutral Python
of the same line count, so line numbers stay those of the cell. A cell that still does not
parse is not flagged: the kernel fails on it too and nothing in it runs. What magics do is
checked separately (a ``%run``, a ``%%bash`` cell, the code of ``%time``, paths in a shell
command). A flag names a line; the reason is a short phrase such as ``"imports ctypes"``.

Only the standard library and :mod:`nbformat` are used.
"""

from __future__ import annotations

import ast
import re
import shlex
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["Flag", "flag_source", "flag_notebook", "flag_submission"]


@dataclass(frozen=True)
class Flag:
    """One construct in a student's notebook that a person should look at.

    Attributes:
        notebook: the notebook's file name, e.g. ``"cnn1_mnist.ipynb"``.
        cell: 1-based index of the cell in the notebook, counting every cell (markdown too).
        grade_id: the cell's nbgrader ``grade_id`` (``metadata["nbgrader"]["grade_id"]``), or ``None``.
        line: 1-based line within the cell's source.
        reason: a short phrase in plain English, e.g. ``"uses sys.meta_path (the import system)"``.
    """

    notebook: str
    cell: int
    grade_id: str | None
    line: int
    reason: str

    def describe(self) -> str:
        """The flag in one line for a grader's comment.

        Returns:
            e.g. ``"cnn1_mnist.ipynb, cell 7 (cnn1_model), line 3: uses sys.meta_path (the import system)"``;
            the parenthesized grade id is left out when the cell has none.
        """
        cell = f"cell {self.cell}" + (f" ({self.grade_id})" if self.grade_id else "")
        return f"{self.notebook}, {cell}, line {self.line}: {self.reason}"


# ------------------------------------------------------------------------------------------------
# What is flagged
# ------------------------------------------------------------------------------------------------

#: Modules a course notebook never needs; importing one (or a submodule) is flagged.
_FLAGGED_MODULES = frozenset({
    # the import system, the interpreter and memory
    "importlib", "imp", "_imp", "zipimport", "pkgutil", "runpy", "code", "codeop", "gc", "ctypes", "_ctypes",
    "cffi", "inspect", "builtins", "__builtin__", "marshal", "atexit", "faulthandler",
    # processes, signals, threads
    "signal", "_signal", "subprocess", "_posixsubprocess", "multiprocessing", "threading", "_thread", "concurrent",
    "asyncio", "pty", "pexpect", "posix", "nt", "mmap", "select", "selectors",
    # network and databases
    "socket", "_socket", "sqlite3", "urllib", "http", "requests", "ftplib", "smtplib", "xmlrpc",
    # the notebook server, the kernel and the grader
    "ipykernel", "jupyter_client", "jupyter_core", "jupyter_server", "notebook", "zmq", "tornado", "traitlets",
    "IPython", "nbformat", "nbclient", "nbgrader", "cnn_grader",
})

_GET_IPYTHON = "uses get_ipython() (IPython's hooks)"

#: Attributes of IPython's shell that reach its hooks (``kernel`` and ``events`` are left out:
#: a convolution has a ``kernel``, and ``events`` is a common word). ``_ip`` is the shell
#: that IPython's ``exit``/``quit`` objects carry.
_IPYTHON_ATTRIBUTES = frozenset({
    "input_transformers_cleanup", "input_transformers_post", "input_transformer_manager", "ast_transformers",
    "set_custom_exc", "showtraceback", "_showtraceback", "showsyntaxerror", "run_cell", "run_cell_async",
    "run_ast_nodes", "register_magic_function", "set_hook", "InteractiveTB", "display_formatter", "display_pub",
    "displayhook", "user_ns", "user_global_ns", "_ip",
})

#: ``sys`` attributes whose any use is flagged, with what they reach.
_SYS_USES = {
    "sys.modules": "loaded modules",
    "sys.meta_path": "the import system",
    "sys.path_hooks": "the import system",
    "sys.path_importer_cache": "the import system",
    "sys.settrace": "tracing hooks",
    "sys.setprofile": "tracing hooks",
    "sys.excepthook": "interpreter hooks",
    "sys.displayhook": "interpreter hooks",
    "sys.addaudithook": "interpreter hooks",
    "sys._getframe": "stack frames",
}
#: ``sys`` attributes flagged only when assigned (or deleted).
_SYS_REPLACED = frozenset({"sys.stdout", "sys.stderr", "sys.stdin", "sys.__stdout__", "sys.__stderr__",
                           "sys.__stdin__"})

#: ``os`` functions that start, stop or replace processes.
_OS_PROCESS = frozenset({
    "os.kill", "os.killpg", "os.system", "os.popen", "os.fork", "os.forkpty", "os._exit", "os.abort",
    "os.putenv", "os.unsetenv", "os.posix_spawn", "os.posix_spawnp", "os.startfile", "os.setsid", "os.setpgid",
    "os.setpgrp", "os.register_at_fork", "os.dup2", "os.closerange",
})
_OS_PROCESS_PREFIXES = ("os.exec", "os.spawn", "signal.")

#: Built-in names whose use is flagged: code built and run at run time, the notebook's namespace.
_BUILTIN_USES = {
    "exec": "runs code built at run time",
    "eval": "runs code built at run time",
    "compile": "builds code at run time",
    "__import__": "imports a module by name",
    "globals": "the notebook's namespace",
    "__builtins__": "Python's built-in functions",
}

#: Attribute names whose any use is flagged, with what they reach.
_INTERNAL_ATTRIBUTES = {
    "__code__": "function internals",
    "__globals__": "function internals",
    "__closure__": "function internals",
    "__defaults__": "function internals",
    "__kwdefaults__": "function internals",
    "__builtins__": "Python's built-in functions",
    "__subclasses__": "class internals",
    "__import__": "imports a module by name",
    "f_globals": "stack frames",
    "f_locals": "stack frames",
    "f_builtins": "stack frames",
    "f_back": "stack frames",
    "f_trace": "stack frames",
    "tb_frame": "stack frames",
    "gi_frame": "stack frames",
    "cr_frame": "stack frames",
    "ag_frame": "stack frames",
}

#: Methods that, defined in a class, make objects that can pass a check they should fail.
_CLASS_DUNDERS = {
    "__eq__": "objects that compare equal to anything",
    "__ne__": "objects that compare equal to anything",
    "__hash__": "objects that compare equal to anything",
    "__lt__": "objects that pass any comparison",
    "__le__": "objects that pass any comparison",
    "__gt__": "objects that pass any comparison",
    "__ge__": "objects that pass any comparison",
    "__bool__": "objects that pass any truth test",
    "__instancecheck__": "classes that pass any isinstance check",
    "__subclasscheck__": "classes that pass any isinstance check",
}

#: Built-in answer types: a subclass can pass the checks' isinstance tests with any value.
_ANSWER_TYPES = frozenset({"int", "float", "complex", "str", "numpy.integer", "numpy.floating", "numpy.number",
                           "numpy.generic", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
                           "numpy.str_"})

#: Methods that change a dict or a list in place.
_MUTATORS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "append", "extend", "insert", "remove",
                       "__setitem__", "__delitem__", "__iadd__"})

#: Names that ``setattr``/``delattr`` may not take as their object, imported or not.
_SETATTR_NAMES = frozenset({"builtins", "keras", "np", "numpy", "tf", "tensorflow", "checks", "models", "sys",
                            "os"})

#: Library settings a notebook may change: not monkeypatching (qualified names, prefixes).
_SETTINGS = ("matplotlib.rcParams", "matplotlib.pyplot.rcParams", "pandas.options")

#: Functions that read, write or list files (qualified names); a literal path outside the
#: submission among their arguments is flagged as a read.
_PATH_FUNCTIONS = frozenset({
    "open", "io.open", "codecs.open", "pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath",
    "pathlib.PurePosixPath", "os.listdir", "os.scandir", "os.walk", "os.fwalk", "os.open", "os.stat", "os.lstat",
    "os.chdir", "os.remove", "os.unlink", "os.rename", "os.renames", "os.replace", "os.rmdir", "os.removedirs",
    "os.makedirs", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown", "os.truncate", "os.utime",
    "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.getsize", "os.path.join", "os.path.abspath",
    "os.path.realpath", "os.path.expanduser", "os.path.normpath", "glob.glob", "glob.iglob", "numpy.load",
    "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.save", "numpy.savez", "numpy.savez_compressed",
    "numpy.memmap", "keras.models.load_model", "keras.saving.load_model", "tensorflow.keras.models.load_model",
    "keras.utils.load_img", "tensorflow.io.read_file", "tensorflow.io.gfile.GFile", "tensorflow.io.gfile.listdir",
    "tensorflow.io.gfile.glob", "matplotlib.pyplot.imread", "pandas.read_csv", "cnn_course.checks.load_saved_model",
    "cnn_course.checks.evaluate_saved_model", "cnn_course.checks.assert_saved_model_accuracy",
})
_PATH_FUNCTION_PREFIXES = ("shutil.",)

#: Names a cell may use without importing them in :func:`flag_source`, with the modules they
#: usually stand for. They count as imported library modules for the monkeypatch check.
_DEFAULT_IMPORTS = {
    "np": "numpy", "numpy": "numpy", "keras": "keras", "tf": "tensorflow", "tensorflow": "tensorflow",
    "layers": "keras.layers", "checks": "cnn_course.checks", "models": "cnn_course.models",
    "data": "cnn_course.data", "plots": "cnn_course.plots", "training": "cnn_course.training", "math": "math",
    "os": "os", "sys": "sys", "builtins": "builtins", "random": "random", "json": "json", "pathlib": "pathlib",
    "plt": "matplotlib.pyplot", "matplotlib": "matplotlib",
}
#: Names resolved as these modules even where no import binds them (never monkeypatch roots on their
#: own): a cell may rely on another cell's import, and none of them is a likely variable name.
_RESOLVED_NAMES = {**_DEFAULT_IMPORTS, "Path": "pathlib.Path", "glob": "glob", "shutil": "shutil", "io": "io",
                   "codecs": "codecs"}

#: The course's checks, which grade cells call: rebinding a name imported from them is flagged.
_COURSE_CHECKS = "cnn_course.checks"

# Magics ---------------------------------------------------------------------------------------

#: Magics that do something a person should see, with what they do.
_MAGIC_REASONS = {
    "run": "runs another file with %run",
    "sx": "runs a shell command with %sx",
    "system": "runs a shell command with %system",
    "!": "runs shell commands with %%!",
    "bash": "runs a cell in another program with %%bash",
    "sh": "runs a cell in another program with %%sh",
    "script": "runs a cell in another program with %%script",
    "python": "runs a cell in another program with %%python",
    "python2": "runs a cell in another program with %%python2",
    "python3": "runs a cell in another program with %%python3",
    "pypy": "runs a cell in another program with %%pypy",
    "perl": "runs a cell in another program with %%perl",
    "ruby": "runs a cell in another program with %%ruby",
    "writefile": "writes a file with %%writefile",
    "load_ext": "loads an IPython extension with %load_ext",
    "reload_ext": "loads an IPython extension with %reload_ext",
}
#: Extensions that are fine to load.
_HARMLESS_EXTENSIONS = frozenset({"autoreload"})
#: Line magics whose argument is Python code run in the kernel (options come first).
_CODE_MAGICS = frozenset({"time", "timeit", "prun", "debug"})
#: Options of those magics that take a value.
_CODE_MAGIC_VALUE_OPTIONS = frozenset({"-n", "-r", "-p", "-D", "-l", "-s", "-T", "--breakpoint", "-b"})
#: Cell magics whose body is Python run in the kernel.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})

_ESCAPES = frozenset({"!", "?", "%", ",", ";", "/"})
# IPython's pattern for ``obj?`` help (IPython.core.inputtransformer2._help_end_re).
_HELP_END = re.compile(r"(%{0,2}(?!\d)[\w*]+(\.(?!\d)[\w*]+|\[-?[0-9]+\])*)(\?\??)$")
# IPython's prompt patterns (IPython.core.inputtransformer2.PromptStripper).
_DOCTEST_FIRST = re.compile(r"^\s*>>>")
_DOCTEST_PS1 = re.compile(r"^\s*>>>[ \t]?")
_DOCTEST_PS2 = re.compile(r"^\s*\.\.\.[ \t]?")
_TRIPLE_QUOTE = re.compile(r"(?<!\\)(\"\"\"|\'\'\')")
_STRING_PREFIX = re.compile(r"(?i)^[rubf]*$")
_IPYTHON_PROMPT = re.compile(r"^(((\[nav\]|\[ins\])? )?In \[\d+\]: |\s*\.{3,}: ?)")


# ------------------------------------------------------------------------------------------------
# Public functions
# ------------------------------------------------------------------------------------------------

def flag_source(source: str) -> list[tuple[int, str]]:
    """Flag the source of one code cell on its own.

    IPython syntax does not crash it: magics, shell escapes (``!ls``), ``obj?`` help and pasted
    prompts become neutral Python of the same line count before parsing. A cell that still does
    not parse yields no flags (the kernel fails on it as well, so nothing in it runs). A cell
    with so much IPython syntax that rewriting it would take seconds gets one flag on line 1.

    Imported names are those of the cell itself plus a default set (``np``, ``keras``, ``tf``,
    ``layers``, ``checks``, ``models``, ``data``, ``plots``, ``training``, ``math``, ``os``,
    ``sys``, ``builtins``, ``random``, ``json``, ``pathlib``, ``plt``, ``matplotlib``).

    Args:
        source: the cell's source (``str``).

    Returns:
        ``list[tuple[int, str]]``: ``(line, reason)`` pairs, 1-based lines of ``source``, sorted by
        line and without duplicates; empty when nothing is flagged or the cell does not parse.

    Raises:
        AttributeError: ``source`` is not a ``str``. Any text is accepted, including text that is
        not Python or nested too deeply for the parser.
    """
    cell = _prepare(source)
    if cell is None:
        return []
    context = _Context(patch_roots=set(_DEFAULT_IMPORTS), course={"checks": "cnn_course.checks"})
    context.collect(cell)
    context.finish()
    return _flags_of(cell, context)


def flag_notebook(notebook, name: str) -> list[Flag]:
    """Flag every code cell of one notebook.

    Names imported anywhere in the notebook count for every cell (a module imported in the
    first cell and patched in the tenth is caught); markdown and raw cells are skipped.

    Args:
        notebook: an nbformat ``NotebookNode`` of version 4 (or a ``dict`` shaped like one).
        name: the notebook's file name, reported in each :class:`Flag`.

    Returns:
        ``list[Flag]`` in cell order, then line order; empty when nothing is flagged.

    Raises:
        AttributeError: ``notebook`` is not a mapping. Cells of any content are accepted; a cell
        that is not a mapping is skipped.
    """
    return _flag_notebook(notebook, name, frozenset())


def _flag_notebook(notebook, name: str, overwritten: frozenset[str]) -> list[Flag]:
    """:func:`flag_notebook`, leaving out the cells whose grade id is in ``overwritten``."""
    context = _Context(patch_roots=set(), course={})
    cells = []
    for index, cell in enumerate(notebook.get("cells") or [], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code" or _grade_id(cell) in overwritten:
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(piece) for piece in source)
        prepared = _prepare(str(source))
        if prepared is None:
            continue
        context.collect(prepared)
        cells.append((index, _grade_id(cell), prepared))
    context.finish()
    return [Flag(name, index, grade_id, line, reason)
            for index, grade_id, prepared in cells
            for line, reason in _flags_of(prepared, context)]


def flag_submission(folder) -> list[Flag]:
    """Flag every notebook directly in one submission folder.

    Args:
        folder: the folder (``pathlib.Path`` or ``str``); sub-folders are not searched.

    Returns:
        ``list[Flag]`` of every ``*.ipynb`` in ``folder``, sorted by notebook, cell and line. A
        file that cannot be read as a notebook (not JSON, not nbformat, unreadable) is skipped:
        another part of the grader reports it.

        When ``folder`` is a submission of an nbgrader course (``<course>/submitted/<student>/<assignment>``)
        and the assignment's source notebook exists (``<course>/source/<assignment>/<notebook>``),
        the cells whose grade id names a locked cell of the source notebook (its grade cells and
        read-only cells) are left out: nbgrader's autograde replaces their source with the
        instructor's, so what a student wrote there never runs. A cell that merely claims to be
        locked in its own metadata is checked like any other.

    Raises:
        OSError: ``folder`` cannot be listed.
    """
    folder = Path(folder)
    flags = []
    for path in sorted(folder.glob("*.ipynb")):
        if not path.is_file():
            continue
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 -- any failure to read means "not a notebook": skip it
            continue
        flags.extend(_flag_notebook(notebook, path.name, _overwritten_cells(folder, path.name)))
    return sorted(flags, key=lambda flag: (flag.notebook, flag.cell, flag.line, flag.reason))


def _overwritten_cells(folder: Path, name: str) -> frozenset[str]:
    """Grade ids of the cells autograde overwrites: the locked cells of the source notebook (as
    ``nbgrader.utils.is_locked`` decides), when ``folder`` is ``<course>/submitted/<student>/<assignment>``."""
    folder = Path(folder).absolute()
    if len(folder.parents) < 3 or folder.parents[1].name != "submitted":
        return frozenset()
    try:
        source = nbformat.read(folder.parents[2] / "source" / folder.name / name, as_version=4)
    except Exception:  # noqa: BLE001 -- no readable source notebook: nothing is known to be overwritten
        return frozenset()
    locked = set()
    for cell in source.get("cells") or []:
        metadata = cell.get("metadata") if isinstance(cell, dict) else None
        nbgrader_metadata = metadata.get("nbgrader") if isinstance(metadata, dict) else None
        if not isinstance(nbgrader_metadata, dict) or nbgrader_metadata.get("solution"):
            continue
        if (nbgrader_metadata.get("grade") or nbgrader_metadata.get("locked")) and _grade_id(cell):
            locked.add(_grade_id(cell))
    return frozenset(locked)


def _grade_id(cell) -> str | None:
    metadata = cell.get("metadata")
    nbgrader_metadata = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    grade_id = nbgrader_metadata.get("grade_id") if isinstance(nbgrader_metadata, dict) else None
    return str(grade_id) if grade_id else None


# ------------------------------------------------------------------------------------------------
# IPython syntax to Python, keeping line numbers
# ------------------------------------------------------------------------------------------------

@dataclass
class _Cell:
    """A code cell made ready for the checks."""

    tree: ast.Module | None                 # None: the cell's body is not Python (a %%bash cell)
    magics: list[tuple[int, str]] = field(default_factory=list)   # (line, "%name args" / "!cmd")
    snippets: list[tuple[int, ast.Module]] = field(default_factory=list)   # code given to %time & co.
    notes: list[tuple[int, str]] = field(default_factory=list)   # flags about the cell as a whole


#: Lines the tokenizer may read while rewriting one cell's IPython syntax; beyond it the cell is
#: flagged as a whole instead of checked (IPython's one-at-a-time rewriting is quadratic).
_TOKENIZE_BUDGET = 250_000
_TOO_MUCH_SYNTAX = "has too much IPython syntax to check (look at the whole cell)"


class _TooMuchSyntax(Exception):
    """Rewriting a cell's IPython syntax would take too long."""


def _parse(code: str) -> ast.Module | None:
    try:
        return compile(code, "<cell>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _prepare(source: str) -> _Cell | None:
    """Turn a cell's source into a syntax tree the way IPython would run it; ``None``: it does not parse."""
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    tree = _parse(text)
    if tree is not None:
        return _Cell(tree)
    lines = _strip_prompts(_dedent(text.split("\n")))
    magics: list[tuple[int, str]] = []
    while True:                                   # cell magics (IPython.core.inputtransformer2.cell_magic)
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        if first is None or not lines[first].startswith("%%") or re.match(r"%%\w+\?", lines[first]):
            break
        magics.append((first + 1, lines[first].rstrip()))
        name = lines[first][2:].partition(" ")[0].strip()
        if name not in _PYTHON_CELL_MAGICS:
            return _Cell(None, magics)         # %%bash & co.: the body is not Python
        lines[first] = ""
        lines = _strip_prompts(_dedent(lines))    # the body is a cell of its own to IPython
    try:
        if not _rewrite_all(lines, magics):       # IPython's token transforms
            return None
    except _TooMuchSyntax:
        return _Cell(None, notes=[(1, _TOO_MUCH_SYNTAX)])
    tree = _parse("\n".join(lines))
    if tree is None:
        return None
    snippets = [(line, snippet) for line, snippet in ((line, _magic_code(command)) for line, command in magics)
                if snippet is not None]
    return _Cell(tree, sorted(magics), snippets)


def _dedent(lines: list[str]) -> list[str]:
    return textwrap.dedent("\n".join(lines)).split("\n")


def _strip_prompts(lines: list[str]) -> list[str]:
    """Remove pasted ``>>>`` / ``...`` or ``In [1]:`` prompts as IPython does (its PromptStripper:
    doctest prompts only outside triple-quoted strings, by the same heuristic)."""
    inside = _triple_quote_mask(lines)
    if any(not masked and _DOCTEST_FIRST.match(line) for line, masked in zip(lines, inside)):
        stripped, changed = [], []
        for line, masked in zip(lines, inside):
            new = line
            if not masked:
                for prompt in (_DOCTEST_PS1, _DOCTEST_PS2):
                    if prompt.match(line):
                        new = prompt.sub("", line, count=1)
                        break
            stripped.append(new)
            changed.append(new != line)
        lines, start = [], 0
        while start < len(stripped):                   # dedent each stretch outside strings that had prompts
            stop = start
            while stop < len(stripped) and inside[stop] == inside[start]:
                stop += 1
            segment = stripped[start:stop]
            lines += _dedent(segment) if not inside[start] and any(changed[start:stop]) else segment
            start = stop
    first = next((index for index, line in enumerate(lines) if line.strip()), len(lines))
    if lines[first:first + 1] and (_IPYTHON_PROMPT.match(lines[first])
                                   or (len(lines) > first + 1 and _IPYTHON_PROMPT.match(lines[first + 1]))):
        lines = [_IPYTHON_PROMPT.sub("", line, count=1) for line in lines]
    return lines


def _triple_quote_mask(lines: list[str]) -> list[bool]:
    """Which lines IPython's prompt stripper takes to be inside a triple-quoted string."""
    mask: list[bool] = []
    quote: str | None = None
    preserve = seen_prompt = False
    for line in lines:
        mask.append(quote is not None and preserve)
        for match in _TRIPLE_QUOTE.finditer(line):
            if quote is None:
                quote = match.group(1)
                before = line[:match.start()]
                bare = _DOCTEST_PS2.sub("", _DOCTEST_PS1.sub("", before, count=1), count=1)
                preserve = not (bare != before and seen_prompt) and bool(_STRING_PREFIX.match(bare.strip()))
                mask[-1] = preserve
            elif quote == match.group(1):
                quote, preserve = None, False
        seen_prompt = seen_prompt or bool(_DOCTEST_FIRST.match(line))
    return mask


#: Tokenizer errors after which IPython adds an empty error token (IPython.utils.tokenutil).
_TOKEN_ERRORS_MARKED = ("unterminated string literal", "invalid non-printable character",
                        "after line continuation character", "invalid decimal literal", "invalid binary literal",
                        "invalid octal literal", "invalid hexadecimal literal", "in binary literal",
                        "in octal literal")


def _logical_lines(lines: list[str]) -> tuple[list[list[tokenize.TokenInfo]], bool] | None:
    """Tokens grouped by logical line, as far as the (possibly non-Python) text tokenizes, and
    whether the tokenizer got to the end (else the last group may be cut short); ``None`` where
    the tokenizer fails as IPython does not allow (bad indentation: the cell does not run)."""
    groups: list[list[tokenize.TokenInfo]] = [[]]
    depth = 0
    # As IPython reads a cell: every line ends in a newline, and no empty line follows the last.
    readline = iter([line + "\n" for line in (lines[:-1] if lines and not lines[-1] else lines)]).__next__
    complete = True
    try:
        for token in tokenize.generate_tokens(readline):
            groups[-1].append(token)
            if token.type == tokenize.NEWLINE or (token.type == tokenize.NL and depth <= 0):
                groups.append([])
            elif token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}" and depth > 0:
                depth -= 1
    except tokenize.TokenError as error:
        complete = False
        if any(message in str(error.args[0]) for message in _TOKEN_ERRORS_MARKED):
            groups[-1].append(tokenize.TokenInfo(tokenize.ERRORTOKEN, "", (1, 0), (1, 0), ""))
    except (SyntaxError, RecursionError, MemoryError):
        return None
    return [group for group in groups if group], complete


def _assign_index(group: list[tokenize.TokenInfo]) -> int | None:
    depth = 0
    for index, token in enumerate(group):
        if token.string == "=" and depth == 0:
            return index
        if token.string in ("(", "[", "{"):
            depth += 1
        elif token.string in (")", "]", "}") and depth > 0:
            depth -= 1
    return None


def _candidates(groups) -> list[tuple[int, int, int, str, int, int]]:
    """Every piece of IPython syntax, in the order IPython rewrites them:
    (line, col, priority, kind, group index, line of a help ``?``)."""
    found = []
    for number, group in enumerate(groups):
        index = _assign_index(group)
        if index is not None and len(group) > index + 2 and group[index + 1].string == "%" \
                and group[index + 2].type == tokenize.NAME:                       # a = %magic
            found.append((*group[index + 1].start, 10, "magic_assign", number, 0))
        if index is not None and not group[index].line.strip().startswith("="):  # a = !command
            following = [token for token in group[index + 1:]
                         if not (token.type == tokenize.ERRORTOKEN and token.string.isspace())]
            if following and following[0].string == "!":
                found.append((*following[0].start, 10, "system_assign", number, 0))
        tokens = [token for token in group if token.type not in (tokenize.INDENT, tokenize.DEDENT)]
        if tokens and tokens[0].string in _ESCAPES:                                 # %magic, !cmd, /f a ...
            found.append((*tokens[0].start, 10, "escape", number, 0))
        if len(group) > 2 and group[-2].string == "?":                              # obj?
            found.append((*tokens[0].start, 5, "help", number, group[-2].start[0]))
    return sorted(found)


def _continued(lines: list[str], start: int, col: int) -> tuple[str, int]:
    """The text from (start, col) to the end of its backslash-continued line, and that end's index."""
    end = start
    while lines[end].endswith("\\") and end + 1 < len(lines):
        end += 1
    parts = [lines[start][col:]] + lines[start + 1:end + 1]
    return " ".join([part.rstrip()[:-1] for part in parts[:-1]] + [parts[-1].rstrip()]), end


def _replace(lines: list[str], start: int, end: int, new: str) -> None:
    lines[start:end + 1] = [new] + [""] * (end - start)


def _rewrite(lines: list[str], line: int, col: int, kind: str, help_line: int,
             magics: list[tuple[int, str]]) -> tuple[int, str] | None:
    """Rewrite one piece of IPython syntax in ``lines`` (in place) into Python of the same line
    count, as IPython does. Returns the index of the last line replaced and the Python written,
    or ``None`` where IPython cannot rewrite it."""
    start = line - 1
    if kind in ("magic_assign", "system_assign"):
        command, end = _continued(lines, start, col)
        magics.append((line, command))
        python = lines[start][:col] + "None"
    elif kind == "escape":
        command, end = _continued(lines, start, col)
        escape = command[:2] if command[:2] in ("!!", "??") else command[:1]
        name, _, arguments = command[len(escape):].partition(" ")
        if escape in ("!", "!!", "%"):
            magics.append((line, command))
            python = "pass"
        elif escape in ("?", "??"):
            python = "pass"
        elif escape == ",":
            python = '{}("{}")'.format(name, '", "'.join(arguments.split()))
        elif escape == ";":
            python = f'{name}("{arguments}")'
        elif name:                                                       # "/"
            python = "{}({})".format(name, ", ".join(arguments.split()))
        else:
            return None
        python = lines[start][:col] + python
    else:                                                                # "help"
        end = help_line - 1
        if not _HELP_END.search("\n".join(lines[start:help_line])[col:]):
            return None
        python = lines[start][:col] + "pass"
    _replace(lines, start, end, python)
    return end, python


def _bracket_balance(tokens) -> int:
    return sum((token.string in "([{") - (token.string in ")]}") for token in tokens if token.type == tokenize.OP)


def _same_state_after(group: list[tokenize.TokenInfo], end: int, python: str, last_complete: bool) -> bool:
    """Does the tokenizer stand where it stood after ``group`` once ``group`` is replaced by ``python``?

    True when the group ended on the last line replaced, its brackets and those of the new line
    net out alike (the tokenizer carries unbalanced closing brackets on), and the new line
    tokenizes cleanly; then the tokens of everything after it are unchanged.
    """
    last = group[-1]
    if last.type not in (tokenize.NEWLINE, tokenize.NL) or last.start[0] != end + 1 or not last_complete:
        return False
    try:
        tokens = list(tokenize.generate_tokens(iter([python.strip() + "\n"]).__next__))
    except (tokenize.TokenError, SyntaxError):
        return False
    if any(token.type == tokenize.ERRORTOKEN for token in tokens):
        return False
    return _bracket_balance(group) == _bracket_balance(tokens)


def _rewrite_all(lines: list[str], magics: list[tuple[int, str]]) -> bool:
    """Rewrite all IPython syntax in ``lines`` (in place); ``False`` where IPython would give up.

    IPython rewrites one piece at a time and tokenizes the cell again after each (its token
    transformers, IPython.core.inputtransformer2). The same result comes here from fewer
    passes: when a rewrite leaves the tokenizer's state after it unchanged, the tokens that
    follow are unchanged too, and the next piece found in the same pass is rewritten at once.
    As in IPython, only the first piece of each kind counts (one that cannot be rewritten blocks
    the later ones of its kind until its own line is rewritten), and a cell that needs 500
    rewrites or more fails.
    """
    rewrites = 0
    budget = _TOKENIZE_BUDGET
    while True:
        budget -= len(lines)
        if budget < 0:
            raise _TooMuchSyntax
        tokenized = _logical_lines(lines)
        if tokenized is None:
            return False
        groups, complete = tokenized
        blocked: dict[str, int] = {}                 # kind -> the group of its piece that cannot be rewritten
        done: set[int] = set()
        progressed = False
        for line, col, _, kind, number, help_line in _candidates(groups):
            if kind in blocked or number in done:
                continue
            rewritten = _rewrite(lines, line, col, kind, help_line, magics)
            if rewritten is None:
                blocked[kind] = number
                continue
            rewrites += 1
            if rewrites >= 500:
                return False
            progressed = True
            done.add(number)
            blocked = {other: group for other, group in blocked.items() if group != number}
            end, python = rewritten
            if not _same_state_after(groups[number], end, python, complete or number < len(groups) - 1):
                break                                    # what follows may tokenize differently now
        if not progressed:
            return True


# ------------------------------------------------------------------------------------------------
# Names the checks need to know: imports, aliases, the course's names
# ------------------------------------------------------------------------------------------------

class _Context:
    """Which names stand for which modules, across one cell or one whole notebook."""

    def __init__(self, patch_roots: set[str], course: dict[str, str]):
        self.modules: dict[str, str] = dict(_RESOLVED_NAMES)   # name -> qualified name
        self.patch_roots = patch_roots                         # names whose attributes may not be assigned
        self.course = course                                   # names imported from the course's checks
        self._aliases: dict[str, ast.expr] = {}                # name = module.Class (one binding only)
        self._other_bindings: set[str] = set()

    def collect(self, cell: _Cell) -> None:
        """Take in the imports and aliases of one cell (call :meth:`finish` after the last)."""
        for tree in ([cell.tree] if cell.tree is not None else []) + [tree for _, tree in cell.snippets]:
            self._collect_tree(tree)

    def _collect_tree(self, tree: ast.Module) -> None:
        alias_targets = {id(node.targets[0]) for node in ast.walk(tree)
                         if isinstance(node, ast.Assign) and len(node.targets) == 1
                         and isinstance(node.targets[0], ast.Name) and _is_alias_value(node.value)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self._bind_import(alias.asname, alias.name)
                    else:
                        top = alias.name.split(".")[0]
                        self._bind_import(top, top)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if alias.name != "*":
                        self._bind_import(alias.asname or alias.name, f"{node.module}.{alias.name}")
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and id(node.targets[0]) in alias_targets:
                name = node.targets[0].id
                if name in self._aliases and _dotted(self._aliases[name], {}) != _dotted(node.value, {}):
                    self._other_bindings.add(name)
                self._aliases[name] = node.value
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                if id(node) not in alias_targets:
                    self._other_bindings.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._other_bindings.add(node.name)
            elif isinstance(node, ast.arg):
                self._other_bindings.add(node.arg)

    def _bind_import(self, name: str, qualified: str) -> None:
        self.modules[name] = qualified
        self.patch_roots.add(name)
        if qualified == _COURSE_CHECKS or qualified.startswith(_COURSE_CHECKS + "."):
            self.course[name] = qualified

    def finish(self) -> None:
        """Resolve aliases (``k = keras``, ``M = keras.Model``, ``env = os.environ``) to their modules."""
        aliases = {name: value for name, value in self._aliases.items() if name not in self._other_bindings}
        for _ in range(len(aliases) + 1):
            changed = False
            for name, value in aliases.items():
                root = _root_name(value)
                qualified = _dotted(value, self.modules)
                if root is None or qualified is None or root not in self.modules:
                    continue
                if self.modules.get(name) != qualified:
                    self.modules[name] = qualified
                    changed = True
                if root in self.patch_roots and name not in self.patch_roots:
                    self.patch_roots.add(name)
                    changed = True
            if not changed:
                break


def _is_alias_value(value: ast.expr) -> bool:
    """``module``, ``module.Class`` or a sensitive container such as ``os.environ``."""
    if isinstance(value, ast.Name):
        return True
    if isinstance(value, ast.Attribute) and _root_name(value) is not None:
        return value.attr[:1].isupper() or value.attr in ("environ", "environb", "path", "modules", "meta_path")
    return False


def _magic_code(command: str) -> ast.Module | None:
    """The Python code a ``%time``/``%timeit``/``%prun``/``%debug`` line (or ``%%timeit`` setup) runs."""
    if command.startswith("%%"):
        name, _, arguments = command[2:].partition(" ")
        if name != "timeit":
            return None
    elif command.startswith("%"):
        name, _, arguments = command[1:].partition(" ")
        if name not in _CODE_MAGICS:
            return None
    else:
        return None
    words = arguments.split()
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in _CODE_MAGIC_VALUE_OPTIONS and words:
            words.pop(0)
    code = " ".join(words)
    return _parse(code) if code else None


# ------------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------------

def _root_name(node: ast.AST) -> str | None:
    """The leftmost name of ``a.b.c`` (also through ``getattr(a, "b")``), or ``None``."""
    while True:
        if isinstance(node, ast.Attribute):
            node = node.value
        elif _is_literal_getattr(node):
            node = node.args[0]
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def _dotted(node: ast.AST, modules: dict[str, str]) -> str | None:
    """``a.b.c`` with ``a`` replaced by the module it stands for; ``None`` for anything else."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif _is_literal_getattr(node):
            parts.append(node.args[1].value)
            node = node.args[0]
        elif isinstance(node, ast.Name):
            parts.append(modules.get(node.id, node.id))
            return ".".join(reversed(parts))
        else:
            return None


def _is_literal_getattr(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str))


def _literal_start(node: ast.AST) -> str | None:
    """A string literal's text, or the literal text an f-string starts with."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
            and isinstance(node.values[0].value, str):
        return node.values[0].value
    return None


def _outside(text: str, loose: bool) -> bool:
    """Is ``text`` a path outside the submission's folder: absolute, in a home folder, or with ``..``?

    ``loose`` (an argument of a file function) also counts a bare ``..`` or ``~`` and an absolute
    path of one part (``/flag``); otherwise an absolute path needs two parts (``/work/source``) and
    a climbing path a named part (``../source``), so that strings such as ``"/"``, ``"/epoch"`` or
    ``"../"`` are left alone.
    """
    text = text.strip()
    if text.lower().startswith("file://"):
        text, loose = text[7:], True
    if not text or "\n" in text:
        return False
    parts = text.replace("\\", "/").split("/")
    if text.startswith("/"):
        named = [part for part in parts[1:] if part]
        if not named or not (named[0][0].isalnum() or named[0][0] in "._~-"):
            return False
        return loose or len(named) >= 2
    if text.startswith("~"):
        if text == "~":
            return loose
        return "/" in text and (parts[0] == "~" or parts[0][1:].replace("_", "").replace("-", "").isalnum())
    if ".." in parts:
        return loose or any(part not in ("", ".", "..") for part in parts)
    return False


def _show(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _source(node: ast.AST) -> str:
    """Short source text of an expression, for a reason."""
    dotted = _dotted(node, {})
    if dotted is not None:
        return _show(dotted)
    try:
        return _show(ast.unparse(node))
    except (RecursionError, ValueError, AttributeError, TypeError):
        return "an object"


class _Checker:
    """Runs the checks over one syntax tree (iteratively: a deeply nested cell cannot crash it)."""

    def __init__(self, tree: ast.Module, context: _Context, line_of):
        self.tree = tree
        self.context = context
        self.line_of = line_of
        self.found: list[tuple[int, str]] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.handled: set[int] = set()       # literals already reported by a file function

    def flag(self, node: ast.AST, reason: str) -> None:
        self.found.append((self.line_of(node), reason))

    def run(self) -> list[tuple[int, str]]:
        for node in ast.walk(self.tree):
            method = getattr(self, "visit_" + type(node).__name__, None)
            if method is not None:
                method(node)
        return self.found

    # helpers -----------------------------------------------------------------------------------

    def dotted(self, node: ast.AST) -> str | None:
        return _dotted(node, self.context.modules)

    def is_called(self, node: ast.AST) -> bool:
        parent = self.parents.get(node)
        return isinstance(parent, ast.Call) and parent.func is node

    def is_stored(self, node: ast.AST) -> bool:
        return isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del))

    def module_scope(self, node: ast.AST, name: str) -> bool:
        """Does binding ``name`` at ``node`` bind it in the notebook's namespace?"""
        scope = self.parents.get(node)
        while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                             ast.ClassDef, ast.ListComp, ast.SetComp,
                                                             ast.DictComp, ast.GeneratorExp)):
            scope = self.parents.get(scope)
        if scope is None:
            return True
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return any(isinstance(statement, ast.Global) and name in statement.names
                       for statement in ast.walk(scope))
        return False

    def is_setting(self, qualified: str | None) -> bool:
        return qualified is not None and qualified.startswith(_SETTINGS)

    def check_qualified(self, node: ast.AST, qualified: str | None) -> None:
        """Checks on a resolved name such as ``sys.modules`` or ``os.kill``."""
        if not qualified:
            return
        if qualified.startswith(("builtins.", "__builtin__.")):
            qualified = qualified.split(".", 1)[1]
        if "." not in qualified:
            if qualified in _BUILTIN_USES:
                what = _BUILTIN_USES[qualified]
                if qualified == "globals":
                    self.flag(node, f"uses globals() ({what})")
                elif self.is_called(node) and qualified != "__builtins__":
                    self.flag(node, f"calls {qualified}() ({what})")
                else:
                    self.flag(node, f"uses {qualified} ({what})")
            elif qualified == "get_ipython":
                self.flag(node, _GET_IPYTHON)
            elif qualified in ("setattr", "delattr") and not self.is_called(node):
                self.flag(node, f"uses {qualified} (monkeypatch)")
            return
        if qualified in _SYS_USES:
            self.flag(node, f"uses {qualified} ({_SYS_USES[qualified]})")
        elif qualified in _SYS_REPLACED and self.is_stored(node):
            self.flag(node, f"replaces {qualified} (output capture)")
        elif qualified in _OS_PROCESS or qualified.startswith(_OS_PROCESS_PREFIXES):
            self.flag(node, f"{'calls' if self.is_called(node) else 'uses'} {qualified}")
        elif qualified in ("os.environ", "os.environb") and self.is_stored(node):
            self.flag(node, "changes os.environ (environment variables)")
        elif qualified == "sys.path" and self.is_stored(node):
            self.flag(node, "changes sys.path (where modules are imported from)")
        elif qualified.endswith(".get_ipython"):
            self.flag(node, _GET_IPYTHON)

    def check_container(self, node: ast.AST, container: ast.AST) -> None:
        """``container`` is changed in place at ``node`` (``c[k] = v``, ``del c[k]``, ``c.update(...)``)."""
        qualified = self.dotted(container)
        if qualified in ("os.environ", "os.environb"):
            self.flag(node, "changes os.environ (environment variables)")
        elif qualified == "sys.path":
            self.flag(node, "changes sys.path (where modules are imported from)")
        elif isinstance(container, ast.Attribute) and container.attr == "__dict__":
            self.flag(node, f"changes {_source(container)} (object internals)")
        elif isinstance(container, ast.Call) and isinstance(container.func, ast.Name) \
                and container.func.id == "vars" and container.args:
            self.flag(node, f"changes {_source(container)} (object internals)")
        elif isinstance(container, ast.Attribute) and _root_name(container) in self.context.patch_roots \
                and not self.is_setting(qualified) and qualified not in _SYS_USES:
            self.flag(node, f"changes {_source(container)} (monkeypatch)")

    # visitors ----------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in _FLAGGED_MODULES:
                self.flag(node, f"imports {alias.name}")
            self.check_rebinding(node, alias.asname or alias.name.split(".")[0],
                                 alias.name if alias.asname else alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not node.module or node.level:
            return
        if node.module.split(".")[0] in _FLAGGED_MODULES:
            self.flag(node, f"imports {node.module}")
        for alias in node.names:
            qualified = f"{node.module}.{alias.name}"
            if alias.name == "*":
                if node.module in ("os", "sys"):
                    self.flag(node, f"imports * from {node.module}")
                continue
            self.check_qualified(node, qualified)
            self.check_rebinding(node, alias.asname or alias.name, qualified)

    def check_rebinding(self, node: ast.AST, name: str, qualified: str | None) -> None:
        """A name imported from the course's checks (``checks``) bound to something else in the notebook."""
        course = self.context.course.get(name)
        if course is not None and qualified != course and self.module_scope(node, name):
            self.flag(node, f"rebinds {name} (the course's checks)")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "get_ipython":
            self.flag(node, _GET_IPYTHON)
        elif isinstance(node.ctx, ast.Load):
            self.check_qualified(node, self.context.modules.get(node.id, node.id))
        if self.is_stored(node):
            self.check_rebinding(node, node.id, None)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attribute = node.attr
        stored = self.is_stored(node)
        qualified = self.dotted(node)
        special = qualified in _SYS_USES or qualified in _SYS_REPLACED or qualified in (
            "os.environ", "os.environb", "sys.path")
        if attribute == "get_ipython":
            self.flag(node, _GET_IPYTHON)
        if attribute in _INTERNAL_ATTRIBUTES:
            self.flag(node, f"uses {attribute} ({_INTERNAL_ATTRIBUTES[attribute]})")
        if attribute in _IPYTHON_ATTRIBUTES and not special:
            self.flag(node, f"uses {attribute} (IPython's hooks)")
        if stored and attribute in _CLASS_DUNDERS:
            self.flag(node, f"defines {attribute} ({_CLASS_DUNDERS[attribute]})")
        if stored and attribute == "__class__":
            self.flag(node, "changes __class__ (object identity)")
        if stored and attribute in ("__bases__", "__mro__"):
            self.flag(node, f"changes {attribute} (class internals)")
        if attribute == "__dict__":
            if stored:
                self.flag(node, f"changes {_source(node)} (object internals)")
            elif _root_name(node) in self.context.patch_roots and isinstance(node.value, ast.Name):
                self.flag(node, f"uses {_source(node)} (module internals)")
        self.check_qualified(node, qualified)
        if stored and _root_name(node) in self.context.patch_roots and not self.is_setting(qualified) \
                and not special:
            self.flag(node, f"changes {_source(node)} (monkeypatch)")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self.is_stored(node):
            self.check_container(node, node.value)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if _is_literal_getattr(node):                  # getattr(sys, "modules"); the string is checked on its own
            self.check_qualified(node, self.dotted(node))
        if isinstance(function, ast.Attribute) and function.attr in _MUTATORS:
            self.check_container(node, function.value)
        name = function.id if isinstance(function, ast.Name) else None
        if name in ("setattr", "delattr") and node.args:
            self.check_setattr(node, name, node.args[0])
        elif isinstance(function, ast.Attribute) and function.attr in ("__setattr__", "__delattr__") and node.args:
            self.check_setattr(node, function.attr.strip("_"), node.args[0])
        elif name == "vars" and not node.args and not node.keywords:
            self.flag(node, "calls vars() (the notebook's namespace)")
        elif name == "locals" and self.module_scope(node, "locals"):
            self.flag(node, "calls locals() (the notebook's namespace)")
        qualified = self.dotted(function)
        if qualified in _PATH_FUNCTIONS or (qualified or "").startswith(_PATH_FUNCTION_PREFIXES):
            for argument in list(node.args) + [keyword.value for keyword in node.keywords]:
                text = _literal_start(argument)
                if text is not None and _outside(text, loose=True):
                    self.flag(node, f"reads a path outside the submission: {_show(text)!r}")
                    self.handled.add(id(argument))

    def check_setattr(self, node: ast.Call, name: str, target: ast.AST) -> None:
        root = _root_name(target)
        if root is not None and (root in self.context.patch_roots or
                                 (isinstance(target, ast.Name) and root in _SETATTR_NAMES)):
            self.flag(node, f"calls {name} on {_source(target)} (monkeypatch)")

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str) or id(node) in self.handled:
            return
        parent = self.parents.get(node)
        if isinstance(parent, (ast.Expr, ast.JoinedStr)):
            return                                     # a docstring, or the literal text of an f-string
        self.check_string(node, node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        parent = self.parents.get(node)
        if id(node) in self.handled or (isinstance(parent, ast.FormattedValue) and parent.format_spec is node):
            return
        text = _literal_start(node)
        # f"/work/{name}": what follows the literal text is one more part of the path.
        if text is not None and _outside(text + ("x" if len(node.values) > 1 else ""), loose=False):
            self.flag(node, f"uses a path outside the submission: {_show(text)!r}")

    def check_string(self, node: ast.AST, text: str) -> None:
        if text in _INTERNAL_ATTRIBUTES:
            self.flag(node, f"uses {text} ({_INTERNAL_ATTRIBUTES[text]})")
        elif text in _IPYTHON_ATTRIBUTES:
            self.flag(node, f"uses {text} (IPython's hooks)")
        elif text in _CLASS_DUNDERS:
            self.flag(node, f"uses {text} ({_CLASS_DUNDERS[text]})")
        elif text == "get_ipython":
            self.flag(node, _GET_IPYTHON)
        elif _outside(text, loose=False):
            self.flag(node, f"uses a path outside the submission: {_show(text)!r}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.check_rebinding(node, node.name, None)
        for base in node.bases:
            qualified = self.dotted(base)
            if qualified in _ANSWER_TYPES:
                self.flag(base, f"subclasses {_source(base)} (answers that can pretend to be right)")
        for statement in node.body:
            names = []
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [(statement, statement.name)]
            elif isinstance(statement, ast.Assign):
                names = [(target, target.id) for target in statement.targets if isinstance(target, ast.Name)]
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                names = [(statement.target, statement.target.id)]
            for where, name in names:
                if name in _CLASS_DUNDERS:
                    self.flag(where, f"defines {name} ({_CLASS_DUNDERS[name]})")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.check_rebinding(node, node.name, None)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.check_rebinding(node, node.name, None)


def _magic_flags(line: int, command: str) -> list[tuple[int, str]]:
    """Flags of one magic or shell command (its code, if any, is checked as Python elsewhere)."""
    if command.startswith("%%"):
        name, _, arguments = command[2:].partition(" ")
    elif command.startswith("%"):
        name, _, arguments = command[1:].partition(" ")
    else:
        name, arguments = "", command.lstrip("!")
    found = []
    if name in _MAGIC_REASONS and not (name in ("load_ext", "reload_ext")
                                       and set(arguments.split()) <= _HARMLESS_EXTENSIONS):
        found.append((line, _MAGIC_REASONS[name]))
    if name in ("env", "set_env") and arguments.strip() and ("=" in arguments or len(arguments.split()) > 1):
        found.append((line, f"changes os.environ (environment variables) with %{name}"))
    if name in _CODE_MAGICS or (name == "timeit" and command.startswith("%%")):
        return found
    try:
        words = shlex.split(arguments)
    except ValueError:
        words = arguments.split()
    for word in words:
        for text in {word, word.partition("=")[2]}:
            if text and _outside(text, loose=True):
                found.append((line, f"uses a path outside the submission: {_show(text)!r}"))
    return found


def _flags_of(cell: _Cell, context: _Context) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    if cell.tree is not None:
        found += _Checker(cell.tree, context, lambda node: getattr(node, "lineno", 1)).run()
    for line, snippet in cell.snippets:
        found += _Checker(snippet, context, lambda node, line=line: line).run()
    for line, command in cell.magics:
        found += _magic_flags(line, command)
    return sorted(set(found + cell.notes))

