"""Declarative fidelity: the numbers a notebook's text states, checked against what its run recorded.

A notebook records its results with :func:`cnn_course.records.record` (a display output of MIME
type ``application/vnd.cnn-course.record+json``). Its claims live in ``bench/claims/<notebook>.toml``
as ``[[claims]]`` entries::

    [[claims]]
    phrase = "reaches about 94 % validation accuracy"   # must appear in the notebook's markdown
    record = "val_accuracy_standardized"                # the recorded value the phrase states
    verb = "about"                                     # how the value is compared, see VERBS
    value = 94                                         # the figure the phrase states
    scale = 100                                        # recorded fraction 0..1 -> stated percent
    index = 2                                          # optional: one item of a recorded list (-1: the last);
                                                       # [row, column] in a recorded list of lists
    tolerance = 1                                      # for "about", in the stated unit

Verbs (``x`` is the recorded value times ``scale``):

* ``about``: ``|x - value| <= tolerance``.
* ``exact``: ``x`` printed with as many decimals as ``value`` is written with equals ``value``
  (write ``value`` as a string, e.g. ``"97.70"``, to keep trailing zeros); lists compare item by item.
* ``at_least`` / ``above`` / ``below``: ``x >= value`` / ``x > value`` / ``x < value``.
* ``order``: ``records`` (a list of names) holds strictly decreasing values, first the largest;
  with ``index``, the item ``index`` of each recorded list (a recorded number stands as it is).
* ``falls``: the recorded list falls from one item to the next at least ``value`` times.
* ``published``: the recorded value reaches (``relation = "at_least"``) or stays below
  (``relation = "below"``) the published figure ``figure`` of :mod:`cnn_course.published`.
* ``parameters``: the recorded ``[total, trainable, non-trainable]`` equal the published counts of
  ``model`` in ``cnn_grader.references.PUBLISHED_PARAMETER_COUNTS``.
* ``points``: ``value`` is the sum of the points of the notebook's grade cells.
* ``given``: the phrase states a setting of the exercise (epochs, sizes, points), not a result;
  ``why`` says which. Nothing is compared; its numbers count as covered.

Every number in a student-facing markdown cell (solution cells, inline code and headings that
only number a question are left out) must appear in the phrase of some claim; each one that does
not becomes a FAIL row, so no stated number goes unchecked.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from cnn_course.published import PUBLISHED_ACCURACY
from cnn_course.records import recorded

CLAIMS = Path(__file__).resolve().parent / "claims"

VERBS = ("about", "exact", "at_least", "above", "below", "order", "falls", "published", "parameters", "points", "given")

#: A number as a text states it: 251,210 or 97.7 or 0.01 (thousands separators: comma, thin space).
NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:[,\u202f\u2009]\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])\d+(?:\.\d+)?")
_INLINE_CODE = re.compile(r"`[^`]*`")
_QUESTION_HEADING = re.compile(r"^#+ .*$", re.MULTILINE)


def read_claims(name: str, folder: Path = CLAIMS) -> dict:
    """The parsed ``bench/claims/<name>.toml``.

    Raises:
        FileNotFoundError: there is no claims file for ``name``.
        tomllib.TOMLDecodeError: the file is not valid TOML (the message names line and column).
    """
    with open(folder / f"{name}.toml", "rb") as handle:
        return tomllib.load(handle)


_SPACES = str.maketrans({"\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " "})


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.translate(_SPACES)).strip()


def student_markdown(notebook) -> list[str]:
    """The markdown a student reads: every markdown cell but the solution (manually graded answer) cells."""
    return [cell.source for cell in notebook.cells if cell.cell_type == "markdown"
            and not cell.get("metadata", {}).get("nbgrader", {}).get("solution", False)]


def all_markdown(notebook) -> str:
    """All markdown of the notebook, solutions included, with whitespace normalized."""
    return _normal("\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown"))


# --- Answers: no markdown before a question's grade cell may hold a phrase of its answer (tests/test_release.py)

def normalise(text: str) -> str:
    """``text`` lower-cased, for a phrase search: thin and non-breaking spaces are spaces, any run of white space
    one space, a thousands separator (comma, space or underscore) is dropped ("250,890", "250 890" and "250_890"
    read "250890"), and no space stands before "%"."""
    text = re.sub(r"\s+", " ", text.translate(_SPACES).lower())
    text = re.sub(r"(?<=\d)[, _](?=\d{3}(?!\d))", "", text)
    return text.replace(" %", "%")


def phrase_pattern(phrase: str) -> re.Pattern:
    """A search for the normalised ``phrase`` in normalised text; a number is matched whole ("320" is not in
    "3200", "98.7" is not in "98.75")."""
    text = normalise(phrase).strip()
    before = r"(?<!\d)" if text[:1].isdigit() else ""
    after = r"(?!\d)" if text[-1:].isdigit() else ""
    return re.compile(before + re.escape(text) + after)


def grade_cells(notebook) -> dict[str, int]:
    """``{grade_id: cell index}`` of the notebook's grade cells: autograded tests and manually graded answers."""
    return {cell.metadata["nbgrader"]["grade_id"]: index for index, cell in enumerate(notebook.cells)
            if cell.metadata.get("nbgrader", {}).get("grade")}


def answers_given_away(notebook, claims: dict, name: str) -> list[str]:
    """What is wrong with a student ``notebook`` (named ``name``, e.g. ``cnn_mnist/fc_mnist``) against its
    ``claims``: a claimed grade_id that the notebook lacks, a grade cell without an ``[[answers]]`` entry or
    without phrases, and every markdown cell before a grade cell that contains one of its answer's phrases
    (case-insensitive). One line per problem; an empty list means the notebook gives no answer away."""
    problems = []
    graded = grade_cells(notebook)
    answers = {}
    for answer in claims.get("answers", []):
        grade_id = answer.get("grade_id")
        if grade_id in answers:
            problems.append(f"{name}: grade_id {grade_id!r} has two [[answers]] entries")
        answers[grade_id] = answer
    for grade_id in sorted(answers.keys() - graded.keys(), key=str):
        problems.append(f"{name}: the claims name grade_id {grade_id!r}, which the notebook has no grade cell of")
    for grade_id, grade_index in graded.items():
        phrases = [phrase for phrase in answers.get(grade_id, {}).get("phrases", []) if phrase.strip()]
        if not phrases:
            problems.append(f"{name}: grade cell {grade_id!r} (cell {grade_index}) has no [[answers]] phrases")
        for phrase in phrases:
            pattern = phrase_pattern(phrase)
            for index, cell in enumerate(notebook.cells[:grade_index]):
                if cell.cell_type == "markdown" and pattern.search(normalise(cell.source)):
                    problems.append(f"{name}: markdown cell {index} gives away the answer to {grade_id!r} "
                                    f"(cell {grade_index}): it contains {phrase!r}")
    return problems



def numbers_in(text: str) -> list[str]:
    """The numbers written in ``text``, as written (``"251,210"``, ``"97.7"``)."""
    return NUMBER.findall(text)


def _canonical(number: str) -> str:
    return re.sub(r"[,\u202f\u2009]", "", number)


def unclaimed_numbers(notebook, claims: list[dict]) -> list[str]:
    """Numbers of the student-facing markdown that no claim's phrase contains, each with its context.

    Inline code and headings are left out: code states settings the cells below use, and a heading
    numbers a question or a part.
    """
    covered: dict[str, int] = {}
    for claim in claims:
        for number in numbers_in(claim.get("phrase", "")):
            covered[_canonical(number)] = covered.get(_canonical(number), 0) + 1
    missing = []
    for text in student_markdown(notebook):
        text = _QUESTION_HEADING.sub("", _INLINE_CODE.sub("", text))
        for match in NUMBER.finditer(text):
            if _canonical(match.group(0)) not in covered:
                context = _normal(text[max(0, match.start() - 30):match.end() + 30])
                missing.append(f"{match.group(0)} in \"...{context}...\"")
    return missing


def _decimals(value: Any) -> int:
    text = str(value)
    return len(text.split(".")[1]) if "." in text else 0


def _scaled(value: Any, scale: float) -> Any:
    if isinstance(value, list):
        return [_scaled(item, scale) for item in value]
    return value * scale


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def evaluate(claim: dict, records: dict[str, Any]) -> tuple[str, bool, str]:
    """``(ours, ok, detail)`` of one claim against the recorded values.

    Raises:
        KeyError: the claim names a record that the notebook did not record (the message names it).
        ValueError: an unknown verb.
    """
    verb = claim.get("verb")
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}; use one of {', '.join(VERBS)}")
    if verb == "given":
        return "—", True, f"a setting, not a result: {claim.get('why', '')}"

    def value_of(name: str) -> Any:
        if name not in records:
            raise KeyError(f"nothing recorded as {name!r}; recorded: {', '.join(sorted(records)) or 'nothing'}")
        value = records[name]
        if "index" in claim and isinstance(value, list) and (name == claim.get("record") or claim.get("verb") == "order"):
            for step in claim["index"] if isinstance(claim["index"], list) else [claim["index"]]:
                value = value[step]
        return _scaled(value, claim.get("scale", 1))

    if verb == "order":
        values = [value_of(name) for name in claim["records"]]
        ok = all(first > second for first, second in zip(values, values[1:]))
        return " > ".join(_show(value) for value in values), ok, "strictly decreasing: " + ", ".join(
            f"{name} {_show(value)}" for name, value in zip(claim["records"], values))
    ours = value_of(claim["record"])
    stated = claim.get("value")
    if verb == "about":
        tolerance = claim["tolerance"]
        return _show(ours), abs(ours - float(stated)) <= tolerance, (
            f"|{_show(ours)} - {stated}| = {abs(ours - float(stated)):.3g} (tolerance {tolerance})")
    if verb == "exact":
        wanted = stated if isinstance(stated, list) else [stated]
        got = ours if isinstance(ours, list) else [ours]
        printed = [f"{value:.{_decimals(want)}f}" if isinstance(value, float) else str(value)
                   for value, want in zip(got, wanted)]
        ok = len(got) == len(wanted) and all(text == str(want) for text, want in zip(printed, wanted))
        return ", ".join(printed), ok, f"recorded {_show(ours)}, the text says {stated}"
    if verb in ("at_least", "above", "below"):
        ok = {"at_least": ours >= stated, "above": ours > stated, "below": ours < stated}[verb]
        return _show(ours), ok, f"{_show(ours)} {verb.replace('_', ' ')} {stated}"
    if verb == "falls":
        falls = [before - after for before, after in zip(ours, ours[1:]) if after < before]
        return f"{len(falls)} falls", len(falls) >= stated, "values: " + _show(ours)
    if verb == "published":
        figure = PUBLISHED_ACCURACY[claim["figure"]]
        figure = figure[-1] if isinstance(figure, list) else figure
        relation = claim.get("relation", "at_least")
        ok = ours >= figure if relation == "at_least" else ours < figure
        return _show(ours), ok, f"{_show(ours)} {relation.replace('_', ' ')} the published {figure} ({claim['figure']})"
    # parameters
    from cnn_grader.references import PUBLISHED_PARAMETER_COUNTS

    published = PUBLISHED_PARAMETER_COUNTS[claim["model"]]
    ok = all(want is None or want == got for want, got in zip(published, ours))
    return " / ".join(f"{count:,}" for count in ours), ok, "total / trainable / non-trainable: published " + " / ".join(
        "—" if count is None else f"{count:,}" for count in published)


def check(notebook, claims: dict) -> list[tuple[str, str, str, bool, str]]:
    """Every ``[[claims]]`` entry of ``claims`` on an executed ``notebook``, then its unclaimed numbers.

    Returns:
        ``(claim, stated, ours, ok, detail)`` rows: one per claim (a phrase missing from the
        markdown, or a record missing from the outputs, fails it), and one failing row per number
        of the student-facing markdown that no claim covers.
    """
    markdown = all_markdown(notebook)
    try:
        records = recorded(notebook)
    except ValueError as error:
        return [("results are recorded once each", "", "", False, str(error))]
    rows = []
    for claim in claims.get("claims", []):
        phrase = claim.get("phrase", "")
        label = f"setting: {phrase}" if claim.get("verb") == "given" else f"text: {phrase}"
        stated = str(claim.get("value", claim.get("figure", claim.get("model", ""))))
        if _normal(phrase) not in markdown:
            rows.append((label, stated, "—", False, "phrase not found in the notebook's markdown"))
            continue
        if claim.get("verb") == "points":
            total = sum(cell.metadata.get("nbgrader", {}).get("points", 0) for cell in notebook.cells
                        if cell.metadata.get("nbgrader", {}).get("grade"))
            rows.append((label, stated, f"{total:g}", total == claim["value"], "the sum of the grade cells' points"))
            continue
        try:
            ours, ok, detail = evaluate(claim, records)
        except (KeyError, ValueError, TypeError) as error:
            ours, ok, detail = "—", False, str(error).strip("'\"")
        rows.append((label, stated, ours, ok, detail))
    unclaimed = unclaimed_numbers(notebook, claims.get("claims", []))
    rows.append(("every number of the markdown is claimed", "0 unclaimed", str(len(unclaimed)), not unclaimed,
                 "; ".join(unclaimed[:12]) + (f" and {len(unclaimed) - 12} more" if len(unclaimed) > 12 else "")))
    return rows
