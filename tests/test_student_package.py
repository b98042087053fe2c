"""What students install holds no answer: the built distribution, and every model its functions build."""

import importlib
import inspect
import pkgutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import keras
import pytest

import cnn_course
from cnn_course import checks
from cnn_grader import references

ROOT = Path(__file__).resolve().parents[1]

#: Builders of answers: what students are asked to build, and the other CNN designs of the grader.
ANSWERS = sorted(name for name in references.__all__
                 if callable(getattr(references, name)) and name not in ("build", "handed_out_match",
                                                                           "assert_own_designs"))
#: Answers the hidden tests expect, in the forms a file could hold them.
HIDDEN_NUMBERS = ("392_500", "392500", "392,500", "250_890", "250890", "250,890")


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    """The student package built as students get it: a wheel and an sdist (``python -m build``)."""
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out),
                          str(ROOT)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = {}
    wheel, = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files.update({f"wheel:{name}": archive.read(name) for name in archive.namelist()})
    sdist, = out.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        files.update({f"sdist:{member.name}": archive.extractfile(member).read()
                      for member in archive.getmembers() if member.isfile()})
    return files


def test_the_distributions_hold_the_student_package_only(distributions):
    names = list(distributions)
    assert any(name.endswith("cnn_course/exchange.py") for name in names if name.startswith("wheel:"))
    assert not [name for name in names if "cnn_grader" in name or "references" in name]
    assert not [name for name in names if name.endswith(".ipynb")]


def test_the_distributions_hold_no_reference_architecture_and_no_hidden_answer(distributions):
    leaks = []
    for name, content in distributions.items():
        text = content.decode("utf-8", errors="ignore")
        leaks += [f"{name}: def {builder}" for builder in ANSWERS if f"def {builder}(" in text]
        leaks += [f"{name}: {number}" for number in HIDDEN_NUMBERS if number in text]
    assert leaks == []


def _public_model_builders():
    """Every public function of the student package that builds a model with its default arguments."""
    for module_info in pkgutil.iter_modules(cnn_course.__path__):
        module = importlib.import_module(f"cnn_course.{module_info.name}")
        for name in getattr(module, "__all__", []):
            function = getattr(module, name)
            if inspect.isfunction(function) and all(
                    parameter.default is not inspect.Parameter.empty or parameter.kind in (
                        parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
                    for parameter in inspect.signature(function).parameters.values()):
                yield f"cnn_course.{module_info.name}.{name}", function


def test_no_function_of_the_student_package_builds_an_answer():
    answers = {}
    for name in ANSWERS:
        model = getattr(references, name)()
        answers[checks.architecture_signature(model)] = name
    built = {}
    for name, function in _public_model_builders():
        try:
            model = function()
        except Exception:  # noqa: BLE001 - most functions need data; only what builds a model counts
            continue
        if isinstance(model, keras.Model):
            built[name] = answers.get(checks.architecture_signature(model))
    assert built, "the handed-out models should have been found"
    assert {name: answer for name, answer in built.items() if answer} == {}


def test_handed_out_models_are_recognised_as_such():
    from cnn_course.models import HANDED_OUT

    for name, builder in HANDED_OUT.items():
        assert references.handed_out_match(builder()) == name
    assert references.handed_out_match(references.cnn1_mnist()) is None


@pytest.mark.parametrize("environment", [".venv", ".venv-student"])
def test_nbgrader_starts_without_building_the_iri_grammar(environment):
    """``make setup`` removes rfc3987-syntax, whose grammar took 2.6 s of every nbgrader command and Jupyter
    server start; jsonschema, which would load it, runs without it."""
    python = ROOT / environment / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{environment} is not set up here (make setup)")
    run = subprocess.run([str(python), "-c", "import sys, nbgrader.apps, jsonschema\n"
                          "jsonschema.Draft7Validator({'type': 'string', 'format': 'iri'}, "
                          "format_checker=jsonschema.FormatChecker()).validate('x')\n"
                          "print(sorted(name for name in sys.modules if name.startswith('rfc3987_syntax')))"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
