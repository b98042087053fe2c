"""The whole course cycle through a course server, by its REST API (``python -m cnn_grader hub-cycle``).

1. The instructor generates and releases an assignment to the exchange (the formgrader's API).
2. Two students fetch it. ``student1`` fills in the instructor's answers, ``student2`` leaves it blank;
   both validate every notebook and submit (nbgrader's endpoints on their own servers).
3. The instructor collects, autogrades with the course's grading command (``cnn_grader grade``: its
   sandbox and limits), gives a manual score in the formgrader, generates and releases the feedback.
4. The students fetch their feedback; each finds only their own.

Every step goes through the hub: the students' servers and the formgrader service, with each account's
own token. The course's grading command runs as the instructor would run it, in the course folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .course import CourseError
from .hub import CourseServer, start

__all__ = ["CycleReport", "complete_with_solutions", "run", "run_cycle"]

SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


@dataclass
class CycleReport:
    """What one cycle did and measured: per student the validation of each notebook (``True`` when no
    test failed), the total score from the gradebook, and the feedback files each student fetched;
    ``seconds`` is the wall time of each step."""

    assignment: str
    validation: dict[str, dict[str, bool]] = field(default_factory=dict)
    validation_messages: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    max_score: float = 0.0
    manual_grade: dict = field(default_factory=dict)
    feedback: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def complete_with_solutions(released: dict, solution: nbformat.NotebookNode) -> dict:
    """A copy of the released notebook ``released`` (nbformat JSON as a dict) whose solution cells hold
    the instructor's answers from ``solution`` (matched by nbgrader ``grade_id``, without the
    ``### BEGIN/END SOLUTION`` lines). Raises :class:`CourseError` when a solution cell has no answer."""
    answers = {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in solution.cells
               if cell.metadata.get("nbgrader", {}).get("solution")}
    completed = json.loads(json.dumps(released))
    for cell in completed["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            if grade_id not in answers:
                raise CourseError(f"the solution notebook has no answer for cell {grade_id!r}")
            cell["source"] = "\n".join(line for line in answers[grade_id].splitlines()
                                       if not SOLUTION_MARKER.match(line))
    return completed


def _timed(report: CycleReport, step: str):
    class _Timer:
        def __enter__(self):
            self.start = time.monotonic()

        def __exit__(self, *exc):
            report.seconds[step] = round(time.monotonic() - self.start, 1)
    return _Timer()


def _formgrader_action(server: CourseServer, token: str, assignment: str, action: str) -> dict:
    """POST one of the formgrader's assignment actions (assign, release, collect, generate_feedback,
    release_feedback); raises :class:`CourseError` with nbgrader's log when it fails."""
    answer = server.request("POST", server.service_url(f"formgrader/api/assignment/{assignment}/{action}"),
                            token=token).json()
    if not answer.get("success"):
        raise CourseError(f"the formgrader's {action} of {assignment} failed: {answer}")
    return answer


def _listing(answer: dict, action: str) -> list[dict]:
    """The assignment list in an answer of nbgrader's assignment endpoints; raises :class:`CourseError`
    with nbgrader's message when the action failed."""
    if not answer.get("success"):
        raise CourseError(f"{action} failed: {answer.get('value', answer)}")
    return answer["value"]


def _failed_tests(answer: dict) -> list[str]:
    """The messages of the failed tests in an answer of nbgrader's validate endpoint."""
    if not answer.get("success"):
        return [str(answer.get("value"))]
    value = answer["value"]
    value = json.loads(value) if isinstance(value, str) else value
    return [item.get("raw_error", "") for item in value.get("failed", [])] + \
        [f"changed: {item['source'][:80]}" for item in value.get("changed", [])]


def run_cycle(server: CourseServer, assignment: str, *, answering: str | None = None, blank: str | None = None,
              manual_grade: tuple[str, str, float] = ("cnn1_mnist", "cnn1_overfitting", 1.0),
              grade_command: list[str] | None = None) -> CycleReport:
    """Run the cycle of the module docstring for ``assignment`` on ``server``.

    ``answering`` and ``blank`` are the two students (default: the server's first two). ``manual_grade``
    is (notebook, grade cell, score) that the instructor enters for the answering student.
    ``grade_command`` replaces ``cnn_grader grade --jobs 1`` (run in the course folder).
    Raises :class:`CourseError` when a step fails, with what the server answered.
    """
    answering = answering or server.students[0]
    blank = blank or server.students[1]
    instructor = server.token(server.instructors[0])
    course = server.course_id
    report = CycleReport(assignment)
    exchange_args = {"course_id": course, "assignment_id": assignment}

    with _timed(report, "release"):
        for action in ("assign", "release"):
            _formgrader_action(server, instructor, assignment, action)

    folder = f"{course}/{assignment}"
    solutions = server.course_root / "source" / assignment
    notebooks = sorted(path.name for path in solutions.glob("*.ipynb"))
    for student in (answering, blank):
        token = server.token(student)
        with _timed(report, f"fetch {student}"):
            server.start_server(student)
            listing = _listing(server.request("POST", server.user_url(student, "assignments/fetch"), token=token,
                                              data=exchange_args).json(), f"{student}'s fetch")
            if not any(item["assignment_id"] == assignment and item["status"] == "fetched" for item in listing):
                raise CourseError(f"{student} could not fetch {assignment}: {listing}")
        if student == answering:
            for name in notebooks:
                url = server.user_url(student, f"api/contents/{folder}/{name}")
                model = server.request("GET", url, token=token).json()
                completed = complete_with_solutions(model["content"], nbformat.read(solutions / name, as_version=4))
                server.request("PUT", url, token=token, json={"type": "notebook", "content": completed})
        with _timed(report, f"validate {student}"):
            report.validation[student], report.validation_messages[student] = {}, {}
            for name in notebooks:
                answer = server.request("POST", server.user_url(student, "assignments/validate"), token=token,
                                        data={"path": f"{folder}/{name}"}, timeout=600).json()
                messages = _failed_tests(answer)
                report.validation[student][name] = not messages
                report.validation_messages[student][name] = messages
        with _timed(report, f"submit {student}"):
            _listing(server.request("POST", server.user_url(student, "assignments/submit"), token=token,
                                    data=exchange_args).json(), f"{student}'s submit")

    with _timed(report, "collect"):
        _formgrader_action(server, instructor, assignment, "collect")
    with _timed(report, "autograde"):
        command = grade_command or [sys.executable, "-m", "cnn_grader", "grade", "--jobs", "1"]
        done = subprocess.run(command, cwd=server.course_root, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise CourseError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                              f"{done.stderr[-2000:]}")

    with _timed(report, "manual grade"):
        notebook, cell, score = manual_grade
        submissions = server.request("GET", server.service_url(
            f"formgrader/api/submitted_notebooks/{assignment}/{Path(notebook).stem}"), token=instructor).json()
        submission = next(item for item in submissions if item["student"] == answering)
        grades = server.request("GET", server.service_url("formgrader/api/grades"), token=instructor,
                                params={"submission_id": submission["id"]}).json()
        grade = next(item for item in grades if item["name"] == cell)
        server.request("PUT", server.service_url(f"formgrader/api/grade/{grade['id']}"), token=instructor,
                       json={"manual_score": score})
        report.manual_grade = server.request("GET", server.service_url(f"formgrader/api/grade/{grade['id']}"),
                                             token=instructor).json()

    with _timed(report, "feedback"):
        for action in ("generate_feedback", "release_feedback"):
            _formgrader_action(server, instructor, assignment, action)
        for item in server.request("GET", server.service_url(f"formgrader/api/submissions/{assignment}"),
                                   token=instructor).json():
            report.scores[item["student"]] = item["score"]
            report.max_score = item["max_score"]

    for student in (answering, blank):
        token = server.token(student)
        with _timed(report, f"fetch feedback {student}"):
            _listing(server.request("POST", server.user_url(student, "assignments/fetch_feedback"), token=token,
                                    data=exchange_args).json(), f"{student}'s fetch of feedback")
            report.feedback[student] = _fetched_feedback(server, student, token, f"{folder}/feedback")
    return report


def _fetched_feedback(server: CourseServer, student: str, token: str, folder: str) -> dict[str, str]:
    """The feedback files in ``folder`` of ``student``'s server: {relative path: HTML}."""
    found = {}
    pending = [folder]
    while pending:
        path = pending.pop()
        model = server.request("GET", server.user_url(student, f"api/contents/{path}"), token=token).json()
        for item in model["content"]:
            if item["type"] == "directory":
                pending.append(item["path"])
            elif item["name"].endswith(".html"):
                content = server.request("GET", server.user_url(student, f"api/contents/{item['path']}"),
                                         token=token, params={"type": "file", "format": "text"}).json()["content"]
                found[item["path"][len(folder) + 1:]] = content
    return found


def run(root: Path, state: Path, assignment: str = "cnn_mnist") -> CycleReport:
    """Start a fresh course server in ``state``, run the cycle on it, print what happened, stop the server."""
    server = start(root, state)
    try:
        print(f"Course server at {server.url} (state {state}); running the cycle of {assignment} ...", flush=True)
        report = run_cycle(server, assignment)
    finally:
        killed = server.stop()
    for student, results in report.validation.items():
        print(f"{student}: validate " + ", ".join(f"{name} {'passed' if ok else 'failed'}" for name, ok in results.items())
              + f"; score {report.scores.get(student, 0):g} of {report.max_score:g}; "
              f"feedback files: {', '.join(sorted(report.feedback.get(student, {}))) or 'none'}")
    print("Seconds per step: " + ", ".join(f"{step} {seconds:g}" for step, seconds in report.seconds.items()))
    if killed:
        print(f"Killed {len(killed)} process(es) that outlived the hub.")
    return report
