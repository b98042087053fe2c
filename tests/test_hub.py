"""The course server (JupyterHub with nbgrader's exchange), driven through its REST API: the whole cycle,
the student environment, and a clean start and stop of `make hub`."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from nbgrader.api import Gradebook

from cnn_grader.course import CourseError
from cnn_grader.hub import check_student_environment, course_id, leftover_processes
from cnn_grader.hub_cycle import complete_with_solutions

from conftest import ROOT, skip_without_hub

pytestmark = pytest.mark.notebooks


def test_whole_cycle_release_fetch_validate_submit_grade_feedback(course_server, hub_cycle_report):
    report = hub_cycle_report
    notebooks = {"cnn1_mnist.ipynb", "cnn2_mnist.ipynb", "fc_mnist.ipynb"}

    # Validate in each student's own server: the answering student passes, the blank one sees why not.
    assert report.validation["student1"] == dict.fromkeys(notebooks, True), report.validation_messages["student1"]
    assert report.validation["student2"] == dict.fromkeys(notebooks, False)
    messages = report.validation_messages["student2"]
    assert any("Cnn2: expected 695,970 parameters in total, found 28,576" in m for m in messages["cnn2_mnist.ipynb"])
    for name in ("fc_mnist.ipynb", "cnn1_mnist.ipynb"):
        assert any(re.search("This cell is yours to write|NotImplementedError|is not defined", m)
                   for m in messages[name]), messages[name]

    # The course's grading command graded both submissions that the formgrader collected.
    state = json.loads((course_server.course_root / "autograded" / ".grading-state.json").read_text())
    assert {"cnn_mnist/student1", "cnn_mnist/student2"} <= set(state)
    # All autograded points and the one manual grade for student1; nothing for the blank notebooks.
    assert report.max_score == 23  # 19 autograded points, 4 manually graded
    assert report.scores["student1"] == 20
    assert report.scores["student2"] == 0
    assert report.manual_grade["manual_score"] == 1.0
    with Gradebook(f"sqlite:///{course_server.course_root / 'gradebook.db'}") as gradebook:
        grade = gradebook.find_grade("cnn1_standardization", "cnn1_mnist", "cnn_mnist", "student1")
        assert grade.manual_score == 1.0

    # Each student fetched exactly the feedback that the instructor's side made for them.
    for student in ("student1", "student2"):
        fetched = report.feedback[student]
        assert {Path(path).name for path in fetched} == {name.replace(".ipynb", ".html") for name in notebooks}
        for path, html in fetched.items():
            own = course_server.course_root / "feedback" / student / "cnn_mnist" / Path(path).name
            assert html == own.read_text(), f"{student} got feedback that is not theirs: {path}"
    assert report.feedback["student1"] != report.feedback["student2"]


def test_student_servers_have_no_grader_package(course_server, hub_cycle_report):
    # The environment itself (what make setup built) ...
    check_student_environment()
    # ... and a student's running server: its kernel's Python cannot import the grader package.
    token = course_server.token("student1")
    probe = course_server.user_url("student1", "api/contents/probe.ipynb")
    def grade_cell(grade_id, source):
        return {"cell_type": "code", "outputs": [], "execution_count": None, "source": source,
                "metadata": {"nbgrader": {"grade": True, "grade_id": grade_id, "points": 1, "solution": False,
                                          "locked": False, "schema_version": 3}}}

    notebook = {"cells": [grade_cell("student_package", "import cnn_course.exchange"),
                          grade_cell("grader_package", "import cnn_grader")],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    course_server.request("PUT", probe, token=token, json={"type": "notebook", "content": notebook})
    answer = course_server.request("POST", course_server.user_url("student1", "assignments/validate"), token=token,
                                   data={"path": "probe.ipynb"}, timeout=300).json()
    failed = answer["value"]["failed"]
    assert [cell["source"] for cell in failed] == ["import cnn_grader"]
    assert "No module named 'cnn_grader'" in failed[0]["raw_error"]


def test_a_missing_student_environment_or_course_id_is_a_clear_error(tmp_path):
    with pytest.raises(CourseError, match="make setup"):
        check_student_environment(tmp_path / "no-venv")
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\n")
    with pytest.raises(CourseError, match="course_id"):
        course_id(tmp_path)
    assert course_id(ROOT) == "cnn_course"


def test_complete_with_solutions_fills_every_solution_cell_without_markers():
    import nbformat

    solution = nbformat.read(ROOT / "source" / "cnn_mnist" / "cnn2_mnist.ipynb", as_version=4)
    released = json.loads((ROOT / "release" / "cnn_mnist" / "cnn2_mnist.ipynb").read_text())
    completed = complete_with_solutions(released, solution)
    sources = ["".join(cell["source"]) for cell in completed["cells"] if cell["cell_type"] == "code"]
    assert not any("here is your code coming" in source or "BEGIN SOLUTION" in source for source in sources)
    assert any('cnn2.add(layers.Conv2D(64, (3, 3), padding="same"))\ncnn2.add(layers.BatchNormalization())'
               in source for source in sources)
    del solution.cells[5].metadata["nbgrader"]
    with pytest.raises(CourseError, match="cnn2_model"):
        complete_with_solutions(released, solution)


def test_make_hub_prints_the_accounts_and_ctrl_c_stops_everything(tmp_path):
    skip_without_hub()
    state = tmp_path / "hub"
    command = [sys.executable, "-m", "cnn_grader", "hub", "--port", "0", "--state", str(state)]
    hub = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not lines or "Press Ctrl-C" not in lines[-1]:
            assert time.monotonic() < deadline and hub.poll() is None, "".join(lines)
            lines.append(hub.stdout.readline())
        banner = "".join(lines)
        url = re.search(r"runs at (http://127\.0\.0\.1:\d+)/", banner).group(1)
        assert "instructor" in banner and "student1, student2" in banner
        password = re.search(r"password of every account: (\S+)", banner).group(1)

        # A student's server and kernel are running when the instructor presses Ctrl-C.
        admin = json.loads((state / "hub-settings.json").read_text())["admin_token"]
        headers = {"Authorization": f"token {admin}"}
        requests.post(f"{url}/hub/api/users/student1/server", headers=headers, timeout=30).raise_for_status()
        deadline = time.monotonic() + 120
        while not requests.get(f"{url}/hub/api/users/student1", headers=headers,
                               timeout=30).json()["servers"].get("", {}).get("ready"):
            assert time.monotonic() < deadline, "student1's server did not start"
            time.sleep(0.5)
        token = requests.post(f"{url}/hub/api/users/student1/tokens", headers=headers, json={},
                              timeout=30).json()["token"]
        requests.post(f"{url}/user/student1/api/kernels", headers={"Authorization": f"token {token}"},
                      json={"name": "python3"}, timeout=60).raise_for_status()
        # The dummy authenticator takes the printed password, and only that one.
        session = requests.Session()
        login = session.get(f"{url}/hub/login", timeout=30)
        xsrf = session.cookies.get("_xsrf")
        wrong = session.post(f"{url}/hub/login", data={"username": "student2", "password": "wrong", "_xsrf": xsrf},
                             allow_redirects=False, timeout=30)
        assert wrong.status_code == 403, login.status_code
        right = session.post(f"{url}/hub/login", data={"username": "student2", "password": password, "_xsrf": xsrf},
                             allow_redirects=False, timeout=30)
        assert right.status_code == 302
        started = leftover_processes(state)
        assert len(started) >= 4  # the hub, its proxy, the formgrader service, student1's server and kernel

        hub.send_signal(signal.SIGINT)
        rest, _ = hub.communicate(timeout=120)
        assert hub.returncode == 0, rest
        assert "Stopped." in rest and "Killed" not in rest, rest
        assert leftover_processes(state) == []
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/hub/api/", timeout=5)
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait(30)
        for process in leftover_processes(state):
            process.kill()
