"""Tests of cnn_grader.flags: code in a submission that a person should look at before grading.

Fast and without kernels: the module only parses code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

try:
    from cnn_grader.flags import Flag, flag_notebook, flag_source, flag_submission
except ImportError:  # the grader package is not installed: use the checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "grader"))
    from cnn_grader.flags import Flag, flag_notebook, flag_source, flag_submission


# ------------------------------------------------------------------------------------------------
# Hostile snippets: each must give the flag (line, reason)
# ------------------------------------------------------------------------------------------------

HOSTILE = [
    # IPython's hooks
    ("get_ipython", 'x = 1\nip = get_ipython()\nip.events.register("post_run_cell", hook)',
     2, "uses get_ipython() (IPython's hooks)"),
    ("get_ipython_reference", "shell_of = get_ipython", 1, "uses get_ipython() (IPython's hooks)"),
    ("ipython_shell_via_exit", "shell = exit._ip", 1, "uses _ip (IPython's hooks)"),
    ("ipython_import", "from IPython import get_ipython", 1, "imports IPython"),
    # the import system and the interpreter's hooks
    ("sys_meta_path", "import sys\nsys.meta_path.insert(0, Finder())", 2, "uses sys.meta_path (the import system)"),
    ("sys_modules_alias", 'import sys as s\n\ns.modules["cnn_course.checks"] = fake', 3,
     "uses sys.modules (loaded modules)"),
    ("sys_modules_from_import", "from sys import modules", 1, "uses sys.modules (loaded modules)"),
    ("sys_modules_getattr", 'loaded = getattr(sys, "modules")', 1, "uses sys.modules (loaded modules)"),
    ("sys_settrace", "import sys\n\n\nsys.settrace(tracer)", 4, "uses sys.settrace (tracing hooks)"),
    ("sys_excepthook", "sys.excepthook = lambda *args: None", 1, "uses sys.excepthook (interpreter hooks)"),
    ("sys_getframe", "def f():\n    return sys._getframe(1).f_locals", 2, "uses sys._getframe (stack frames)"),
    ("sys_stdout_assigned", "import io, sys\nsys.stdout = io.StringIO()", 2, "replaces sys.stdout (output capture)"),
    # imports a course notebook never needs, at any depth
    ("import_ctypes", "import numpy as np\nimport ctypes", 2, "imports ctypes"),
    ("import_in_function", 'def f():\n    from importlib import import_module\n    return import_module("os")',
     2, "imports importlib"),
    ("import_submodule", "import IPython.core.interactiveshell as shell", 1, "imports IPython.core.interactiveshell"),
    ("import_grader", "from cnn_grader import references", 1, "imports cnn_grader"),
    ("import_subprocess_aliased", "import subprocess as sp", 1, "imports subprocess"),
    ("import_gc", "if True:\n    import gc", 2, "imports gc"),
    # code built at run time, the notebook's namespace
    ("dunder_import", 'os_module = __import__("os")', 1, "calls __import__() (imports a module by name)"),
    ("exec", 'source = "print(1)"\nexec(source)', 2, "calls exec() (runs code built at run time)"),
    ("eval", 'value = eval("1 + 1")', 1, "calls eval() (runs code built at run time)"),
    ("compile", 'code = compile("x", "<s>", "eval")', 1, "calls compile() (builds code at run time)"),
    ("globals", 'globals()["checks"] = None', 1, "uses globals() (the notebook's namespace)"),
    ("vars_without_argument", 'vars()["checks"] = None', 1, "calls vars() (the notebook's namespace)"),
    ("builtins_name", "__builtins__.print = print", 1, "uses __builtins__ (Python's built-in functions)"),
    ("setattr_module", 'import keras\nsetattr(keras.Model, "count_params", lambda self: 0)', 2,
     "calls setattr on keras.Model (monkeypatch)"),
    ("setattr_np", 'setattr(np, "allclose", lambda *a, **k: True)', 1, "calls setattr on np (monkeypatch)"),
    ("delattr_checks", 'delattr(checks, "assert_number")', 1, "calls delattr on checks (monkeypatch)"),
    # function, frame and object internals; objects equal to anything
    ("code_object", "checks.assert_number.__code__ = (lambda *a, **k: None).__code__", 1,
     "uses __code__ (function internals)"),
    ("function_globals", "namespace = fit.__globals__", 1, "uses __globals__ (function internals)"),
    ("string_attribute", 'namespace = getattr(fit, "__globals__")', 1, "uses __globals__ (function internals)"),
    ("subclasses", "everything = object.__subclasses__()", 1, "uses __subclasses__ (class internals)"),
    ("frame_globals", "try:\n    1 / 0\nexcept ZeroDivisionError as error:\n"
                      "    caller = error.__traceback__.tb_frame.f_back.f_globals",
     4, "uses f_globals (stack frames)"),
    ("dict_item_assigned", 'layer.__dict__["call"] = patched', 1, "changes layer.__dict__ (object internals)"),
    ("class_assigned", "answer.__class__ = AlwaysRight", 1, "changes __class__ (object identity)"),
    ("defines_eq", "class Always:\n    def __eq__(self, other):\n        return True", 2,
     "defines __eq__ (objects that compare equal to anything)"),
    ("defines_bool", "class Always:\n    x = 1\n\n    def __bool__(self):\n        return True", 4,
     "defines __bool__ (objects that pass any truth test)"),
    ("defines_instancecheck", "class Meta(type):\n    def __instancecheck__(cls, obj):\n        return True", 2,
     "defines __instancecheck__ (classes that pass any isinstance check)"),
    ("answer_subclass", "class Anything(float):\n    pass", 1,
     "subclasses float (answers that can pretend to be right)"),
    # monkeypatching imported modules
    ("patch_keras", "import keras\n\nkeras.Model.count_params = lambda self: 251_210", 3,
     "changes keras.Model.count_params (monkeypatch)"),
    ("patch_numpy_testing", "np.testing.assert_equal = lambda *a, **k: None", 1,
     "changes np.testing.assert_equal (monkeypatch)"),
    ("patch_checks", "checks.assert_number = lambda *a, **k: None", 1, "changes checks.assert_number (monkeypatch)"),
    ("patch_builtins", "import builtins\nbuiltins.print = quiet_print", 2, "changes builtins.print (monkeypatch)"),
    ("patch_math", "import math\nmath.isclose = lambda *a, **k: True", 2, "changes math.isclose (monkeypatch)"),
    ("patch_layer_init", "keras.layers.Conv2D.__init__ = patched_init", 1,
     "changes keras.layers.Conv2D.__init__ (monkeypatch)"),
    ("patch_delete", "del checks.assert_choice", 1, "changes checks.assert_choice (monkeypatch)"),
    ("patch_subscript", 'checks.SAVED_MODEL_INPUT_SHAPES["mnist"] = ((1,),)', 1,
     "changes checks.SAVED_MODEL_INPUT_SHAPES (monkeypatch)"),
    ("patch_augmented", "import cnn_course.checks as c\nc.TOLERANCE += 1", 2, "changes c.TOLERANCE (monkeypatch)"),
    ("patch_through_alias", "Model = keras.Model\nModel.count_params = lambda self: 0", 2,
     "changes Model.count_params (monkeypatch)"),
    ("rebinds_checks", "class Fake:\n    pass\n\nchecks = Fake()", 4, "rebinds checks (the course's checks)"),
    # processes and signals
    ("os_kill", "import os\nos.kill(os.getppid(), 9)", 2, "calls os.kill"),
    ("os_system", 'os.system("pkill -f nbgrader")', 1, "calls os.system"),
    ("os_system_from_import", 'from os import system as shell\nshell("true")', 2, "calls os.system"),
    ("os_exec", 'os.execv("/bin/true", ["true"])', 1, "calls os.execv"),
    ("os_exit", "os._exit(0)", 1, "calls os._exit"),
    ("os_environ", 'os.environ["CNN_BUDGET"] = "full"', 1, "changes os.environ (environment variables)"),
    ("os_environ_update", 'os.environ.update(CNN_BUDGET="full")', 1, "changes os.environ (environment variables)"),
    ("signal_import", "import signal", 1, "imports signal"),
    ("signal_call", "from signal import alarm\nalarm(0)", 2, "calls signal.alarm"),
    # paths outside the submission
    ("open_absolute", 'with open("/work/source/cnn_mnist/cnn1_mnist.ipynb") as notebook:\n    text = notebook.read()',
     1, "reads a path outside the submission: '/work/source/cnn_mnist/cnn1_mnist.ipynb'"),
    ("path_climbing", 'from pathlib import Path\nsource = Path("../../source") / "cnn_mnist"', 2,
     "reads a path outside the submission: '../../source'"),
    ("listdir_root", 'os.listdir("/work")', 1, "reads a path outside the submission: '/work'"),
    ("glob_fstring", 'import glob\nfiles = glob.glob(f"/home/{user}/*.ipynb")', 2,
     "reads a path outside the submission: '/home/'"),
    ("np_load_home", 'answers = np.load("~/answers.npy")', 1, "reads a path outside the submission: '~/answers.npy'"),
    ("load_model_climbing", 'reference = keras.models.load_model("../reference.keras")', 1,
     "reads a path outside the submission: '../reference.keras'"),
    ("shutil_copy", 'import shutil\nshutil.copy("best_mnist.keras", "/tmp/stolen.keras")', 2,
     "reads a path outside the submission: '/tmp/stolen.keras'"),
    ("path_literal", 'SOURCE = "/work/source/cnn_mnist"\nnotebook = SOURCE + "/cnn1_mnist.ipynb"', 1,
     "uses a path outside the submission: '/work/source/cnn_mnist'"),
    # magics
    ("magic_time_code", "x = 1\n%time import ctypes", 2, "imports ctypes"),
    ("magic_run", "%run ../grader.py", 1, "runs another file with %run"),
    ("magic_shell_path", "!cat /work/source/cnn_mnist/cnn1_mnist.ipynb", 1,
     "uses a path outside the submission: '/work/source/cnn_mnist/cnn1_mnist.ipynb'"),
    ("cell_magic_bash", "%%bash\npkill -f nbgrader", 1, "runs a cell in another program with %%bash"),
    ("cell_magic_time_body", "%%time\nimport os\nos.kill(1, 9)", 3, "calls os.kill"),
]


@pytest.mark.parametrize("source, line, reason", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_code_is_flagged_at_its_line(source, line, reason):
    assert (line, reason) in flag_source(source)


def test_flags_are_sorted_and_unique():
    source = "import ctypes, ctypes\nimport gc\nexec('1'); exec('2')"
    assert flag_source(source) == [
        (1, "imports ctypes"),
        (2, "imports gc"),
        (3, "calls exec() (runs code built at run time)"),
    ]


# ------------------------------------------------------------------------------------------------
# Ordinary student code is left alone
# ------------------------------------------------------------------------------------------------

HARMLESS_CELLS = [
    """\
%matplotlib inline
import math

import keras
import matplotlib.pyplot as plt
import numpy as np
from keras import layers

from cnn_course import checks, data, models, plots
from cnn_course.training import current_budget, fit

budget = current_budget()
plt.rcParams["figure.figsize"] = (8, 4)""",
    """\
!ls
(x_train, y_train), (x_val, y_val) = data.load_dataset("mnist", n_train=budget.n_train(4000))
x = np.zeros(3)
x[0] = 1
steps = math.ceil(5 / 2)
path = "results/run1.csv"
print("/", "../", f"{steps}/{len(x)} done")""",
    '''\
def build_cnn(filters=32, name="cnn"):
    """A small convolutional network for MNIST."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(filters, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name=name)


model = build_cnn()
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
kernel = model.layers[0].kernel
print(models.parameter_summary(model))''',
    """\
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight(shape=(1,), initializer="ones")

    def call(self, inputs):
        return inputs * self.factor * self.w

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}""",
    """\
history = fit(model, x_train, y_train, epochs=budget.epochs(3), validation_data=(x_val, y_val))
for layer in model.layers:
    print(layer.name)
model.layers[0].trainable = False
layer.trainable = False
sizes = [2 ** k for k in range(5) if k % 2 == 0]
results = {}
results["cnn"] = max(history.history["val_accuracy"])
print(f"Best validation accuracy: {results['cnn']:.1%} after {len(sizes)} tries")
plt.plot(history.history["loss"], label="loss")
plt.legend()
plt.show()
plots.plot_learning_curves({"cnn": history}, title="cnn")
model.save("best_mnist.keras")
with open("notes.txt", "w") as notes:
    notes.write("done")""",
    """\
conv_parameters = 3 * 3 * 1 * 32 + 32
checks.assert_number(conv_parameters, name="conv_parameters")
answer_most_weights = "B"
checks.assert_choice(answer_most_weights, "ABC", name="answer_most_weights")""",
]


def harmless_notebook():
    cells = [new_markdown_cell("# A first convolutional network\n\nRun `import ctypes`? No: this is markdown.")]
    for index, source in enumerate(HARMLESS_CELLS):
        cell = new_code_cell(source)
        cell.metadata["nbgrader"] = {"grade_id": f"cell_{index}", "solution": True, "grade": False,
                                     "locked": False, "schema_version": 3}
        cells.append(cell)
    return new_notebook(cells=cells)


def test_harmless_notebook_has_no_flags():
    assert flag_notebook(harmless_notebook(), "cnn1_mnist.ipynb") == []


@pytest.mark.parametrize("source", HARMLESS_CELLS)
def test_harmless_cells_have_no_flags_on_their_own(source):
    assert flag_source(source) == []


def test_names_not_imported_in_the_notebook_are_not_monkeypatch_targets():
    notebook = new_notebook(cells=[
        new_code_cell("import keras as K"),
        new_code_cell("from types import SimpleNamespace\nplots = SimpleNamespace()\nplots.style = 'dark'"),
        new_code_cell("K.Model.fit = lambda *a, **k: None"),
    ])
    assert [(flag.cell, flag.line, flag.reason) for flag in flag_notebook(notebook, "n.ipynb")] == [
        (3, 1, "changes K.Model.fit (monkeypatch)"),
    ]


# ------------------------------------------------------------------------------------------------
# Where a flag is: notebook, cell, grade id, line
# ------------------------------------------------------------------------------------------------

def test_flag_notebook_reports_notebook_cell_grade_id_and_line():
    graded = new_code_cell("cnn1 = keras.Sequential([layers.Dense(10)])\nimport sys\nsys.meta_path.clear()")
    graded.metadata["nbgrader"] = {"grade_id": "cnn1_model", "solution": True, "grade": False, "locked": False,
                                   "schema_version": 3}
    notebook = new_notebook(cells=[
        new_markdown_cell("# Title"),
        new_code_cell("import keras\nfrom keras import layers"),
        new_markdown_cell("Build `cnn1`."),
        graded,
        new_code_cell("import ctypes"),
    ])

    flags = flag_notebook(notebook, "cnn1_mnist.ipynb")

    assert flags == [
        Flag("cnn1_mnist.ipynb", 4, "cnn1_model", 3, "uses sys.meta_path (the import system)"),
        Flag("cnn1_mnist.ipynb", 5, None, 1, "imports ctypes"),
    ]
    described = flags[0].describe()
    for part in ("cnn1_mnist.ipynb", "cell 4", "cnn1_model", "line 3", "uses sys.meta_path (the import system)"):
        assert part in described
    assert described == "cnn1_mnist.ipynb, cell 4 (cnn1_model), line 3: uses sys.meta_path (the import system)"
    assert flags[1].describe() == "cnn1_mnist.ipynb, cell 5, line 1: imports ctypes"


def test_flag_is_frozen():
    flag = Flag("a.ipynb", 1, None, 1, "imports gc")
    with pytest.raises(AttributeError):
        flag.line = 2


# ------------------------------------------------------------------------------------------------
# A submission folder
# ------------------------------------------------------------------------------------------------

def test_flag_submission_reads_every_notebook_and_skips_corrupt_ones(tmp_path):
    nbformat.write(new_notebook(cells=[new_markdown_cell("text"), new_code_cell("x = 1\nimport socket")]),
                   tmp_path / "b_second.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("import gc"), new_code_cell("os.kill(1, 9)")]),
                   tmp_path / "a_first.ipynb")
    (tmp_path / "corrupt.ipynb").write_text('{"cells": [', encoding="utf-8")
    (tmp_path / "not_a_notebook.ipynb").write_text('{"hello": "world"}', encoding="utf-8")
    (tmp_path / "notes.txt").write_text("import ctypes", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell("import ctypes")]), tmp_path / "sub" / "nested.ipynb")

    flags = flag_submission(tmp_path)

    assert [(flag.notebook, flag.cell, flag.line, flag.reason) for flag in flags] == [
        ("a_first.ipynb", 1, 1, "imports gc"),
        ("a_first.ipynb", 2, 1, "calls os.kill"),
        ("b_second.ipynb", 2, 2, "imports socket"),
    ]
    assert flag_submission(str(tmp_path)) == flags


def test_flag_submission_of_an_empty_folder(tmp_path):
    assert flag_submission(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# IPython syntax
# ------------------------------------------------------------------------------------------------

def test_ipython_syntax_does_not_crash_and_keeps_line_numbers():
    source = "\n".join([
        "%matplotlib inline",
        "!pip install -q something",
        "files = !ls",
        "listing = %sx ls",
        "%time total = sum(range(10))",
        "model?",
        "for name in files:",
        "    !echo {name}",
        "%config InlineBackend.figure_format = 'retina'",
        "import ctypes",
    ])
    assert flag_source(source) == [
        (4, "runs a shell command with %sx"),
        (10, "imports ctypes"),
    ]


@pytest.mark.parametrize("source", [
    "%matplotlib inline",
    "!ls",
    "!ls -la | head\n%load_ext autoreload\n%autoreload 2",
    "%%time\nx = sum(range(10))",
    "%%capture output\nmodel.fit(x, y)",
    "  x = 1\n  y = 2",
    ">>> x = 1\n>>> y = x + 1",
    "In [1]: x = 1\n   ...: y = 2",
    "help(len)\nlen?\nlen??",
    "%%javascript\nconsole.log('hi')",
])
def test_harmless_ipython_syntax_has_no_flags(source):
    assert flag_source(source) == []


def test_a_cell_magic_body_that_is_not_python_is_not_parsed():
    assert flag_source("%%bash\nimport ctypes") == [(1, "runs a cell in another program with %%bash")]
    assert flag_source("%%writefile helper.py\nimport ctypes") == [(1, "writes a file with %%writefile")]


@pytest.mark.parametrize("source", [
    "def broken(:\n    import ctypes",
    "import ctypes\nx = (",
    "x = 1\n  y = 2\nimport gc",
    "x = " + "(" * 5000 + ")" * 5000,
    "import ctypes\nx = " + "1 + " * 30000 + "1",
])
def test_a_cell_that_does_not_parse_yields_no_flags(source):
    assert flag_source(source) == []


def test_magic_and_python_mixed_in_one_logical_line_parse_like_ipython():
    # A line that starts with % inside brackets is the modulo operator, not a magic.
    assert flag_source("x = (7\n% 2)\n!ls\nimport pty") == [(4, "imports pty")]


def test_a_cell_with_too_much_ipython_syntax_is_flagged_as_a_whole(monkeypatch):
    import cnn_grader.flags as flags

    monkeypatch.setattr(flags, "_TOKENIZE_BUDGET", 100)
    source = "\n".join(["x = 1", "!echo )"] * 20 + ["import ctypes"])
    assert flag_source(source) == [(1, "has too much IPython syntax to check (look at the whole cell)")]


def test_flag_notebook_accepts_a_plain_dict_with_list_sources():
    notebook = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["import ctypes"]},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "answer"}}, "outputs": [],
         "source": ["x = 1\n", "import gc\n"]},
        {"cell_type": "raw", "metadata": {}, "source": "import socket"},
    ]}
    assert flag_notebook(notebook, "n.ipynb") == [Flag("n.ipynb", 2, "answer", 2, "imports gc")]


def _nbgrader_cell(source, grade_id, **flags):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "schema_version": 3, "grade": False, "solution": False,
                                 "locked": False, **flags}
    return cell


def test_flag_submission_leaves_out_cells_that_autograde_overwrites(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "a1").mkdir(parents=True)
    hidden_test = "### BEGIN HIDDEN TESTS\nfrom cnn_grader import references\n### END HIDDEN TESTS"
    nbformat.write(new_notebook(cells=[
        _nbgrader_cell("from cnn_course import checks", "setup", locked=True),
        _nbgrader_cell("answer = 42", "answer", solution=True),
        _nbgrader_cell(hidden_test, "test_answer", grade=True, locked=True, points=1),
    ]), course / "source" / "a1" / "nb.ipynb")
    submission = course / "submitted" / "student" / "a1"
    submission.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[
        _nbgrader_cell("from cnn_course import checks\nimport ctypes", "setup", locked=True),  # replaced by autograde
        _nbgrader_cell("answer = 42\nimport gc", "answer", solution=True),                   # the student's answer
        _nbgrader_cell("import socket", "not_in_the_source", locked=True),                   # only claims to be locked
        _nbgrader_cell(hidden_test, "test_answer", grade=True, locked=True, points=1),       # replaced by autograde
    ]), submission / "nb.ipynb")

    assert [(flag.cell, flag.reason) for flag in flag_submission(submission)] == [
        (2, "imports gc"), (3, "imports socket")]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "nb.ipynb").write_bytes((submission / "nb.ipynb").read_bytes())
    assert [(flag.cell, flag.reason) for flag in flag_submission(elsewhere)] == [
        (1, "imports ctypes"), (2, "imports gc"), (3, "imports socket"), (4, "imports cnn_grader")]
