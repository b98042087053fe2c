"""The course server in a real browser: Debian's headless Chromium driven through its chromedriver (Selenium).

A student fetches cnn_mnist from JupyterLab's Assignments tab, completes cnn2, validates and submits; a blank
notebook's Validate shows the failing test; the instructor enters a manual score in the formgrader. Each
test saves screenshots of its key screens in build/test-artifacts/hub/ (PNG).
"""

import contextlib
import json
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from conftest import ROOT

pytestmark = pytest.mark.notebooks

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "build" / "test-artifacts" / "hub"
WAIT = 120  # seconds: the longest any one step may take (page loads, kernels, validation)
CNN2_BLOCK = ('cnn2.add(layers.Conv2D(64, (3, 3), padding="same"))\n'
              "cnn2.add(layers.BatchNormalization())\n"
              'cnn2.add(layers.Activation("relu"))\n'
              "cnn2.add(layers.MaxPooling2D((2, 2)))")

selenium = pytest.importorskip("selenium", reason="selenium is a dev dependency of the grader package")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as seen  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class Browser:
    """One headless Chromium with the steps the tests share; ``shot(name)`` saves a screenshot."""

    def __init__(self, driver, test_name: str):
        self.driver = driver
        self.prefix = test_name.removeprefix("test_")
        self.shots = []
        for old in ARTIFACTS.glob(f"{self.prefix}-*.png"):
            old.unlink()

    def wait(self, condition, seconds: float = WAIT):
        return WebDriverWait(self.driver, seconds).until(condition)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.prefix}-{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path

    def log_in(self, server, account: str, next_url: str | None = None) -> None:
        self.driver.get(f"{server.url}/hub/login" + (f"?next={next_url}" if next_url else ""))
        self.driver.find_element(By.NAME, "username").send_keys(account)
        self.driver.find_element(By.NAME, "password").send_keys(server.password)
        self.driver.find_element(By.ID, "login_submit").click()

    def open_lab(self) -> None:
        self.wait(seen.presence_of_element_located((By.CSS_SELECTOR, ".lm-MenuBar-item")))

    def menu(self, menu: str, item: str) -> list[str]:
        """Choose ``item`` in JupyterLab's menu ``menu``; returns the labels of all the menu's items."""
        self.wait(lambda d: any(e.text == menu for e in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")))
        next(e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if e.text == menu).click()
        entry = self.wait(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                                         if e.text.split("\n")[0].strip() == item), None))
        labels = [e.text.split("\n")[0].strip() for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")]
        entry.click()
        return [label for label in labels if label]

    def button(self, label: str):
        return self.wait(seen.element_to_be_clickable((By.XPATH, f"//button[normalize-space()='{label}']")))

    def open_notebook(self, server, account: str, path: str) -> None:
        self.driver.get(server.user_url(account, f"lab/tree/{path}"))
        self.wait(seen.presence_of_element_located(
            (By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")))

    def validate(self) -> str:
        """Press the notebook's Validate button; returns the text of nbgrader's result dialog."""
        self.driver.find_element(By.XPATH, "//*[contains(@class,'jp-Toolbar')]//*[normalize-space()='Validate']").click()
        dialog = self.wait(seen.visibility_of_element_located((By.CSS_SELECTOR, ".jp-Dialog-content")))
        self.wait(lambda d: "Success" in dialog.text or "failed" in dialog.text.lower())
        return dialog.text


@pytest.fixture
def browser(request):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed: "
                    "apt-get install chromium chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--no-first-run", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    session = Browser(driver, request.node.name)
    yield session
    with contextlib.suppress(Exception):
        if request.node.rep_call.failed:  # set by the hook in conftest.py
            session.shot("at-failure")
    driver.quit()


def _fetch_by_api(server, student: str) -> None:
    token = server.token(student)
    server.start_server(student)
    server.request("POST", server.user_url(student, "assignments/fetch"), token=token,
                   data={"course_id": server.course_id, "assignment_id": "cnn_mnist"})

#: The questions of cnn2_mnist after the missing block, the manually graded one included (Validate fails on an
#: answer left empty): answered in the fetched file before the notebook opens, so that the browser types the
#: block only and Validate can pass.
ANSWERED_IN_THE_FILE = ("cnn2_performance", "receptive_field_before_flatten", "answer_shift_tolerance",
                        "answer_first_epoch")


def answer_in_the_file(path: Path, grade_ids) -> None:
    """Fill in the solution cells ``grade_ids`` of the released notebook at ``path`` with the instructor's answers."""
    from cnn_grader.hub_cycle import complete_with_solutions

    released = json.loads(path.read_text())
    completed = complete_with_solutions(released, nbformat.read(ROOT / "source" / "cnn_mnist" / path.name, as_version=4))
    for cell, original in zip(completed["cells"], released["cells"]):
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") not in grade_ids:
            cell["source"] = original["source"]
    path.write_text(json.dumps(completed, indent=1))


def test_student_fetches_completes_validates_and_submits(course_server, hub_cycle_report, browser):
    student = "student3"
    browser.log_in(course_server, student)
    browser.open_lab()
    # A student's JupyterLab has the assignment list, and none of the instructor's tools.
    assert browser.menu("Nbgrader", "Assignment List") == ["Assignment List"]
    fetch = browser.button("Fetch")
    browser.shot("assignments-released")
    fetch.click()
    browser.button("Submit")  # cnn_mnist is now under "Downloaded assignments"
    browser.shot("assignments-fetched")
    fetched = course_server.state / "home" / student / "cnn_course" / "cnn_mnist" / "cnn2_mnist.ipynb"
    assert fetched.is_file()
    answer_in_the_file(fetched, ANSWERED_IN_THE_FILE)

    browser.open_notebook(course_server, student, "cnn_course/cnn_mnist/cnn2_mnist.ipynb")
    stub = "//div[contains(@class,'jp-CodeCell')]//div[contains(@class,'cm-line') and " \
           "starts-with(normalize-space(.), '# here is your code coming')]"
    marker = browser.wait(seen.presence_of_element_located((By.XPATH, stub)))
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", marker)
    marker = browser.wait(seen.visibility_of_element_located((By.XPATH, stub)))
    cell = marker.find_element(By.XPATH, "./ancestor::div[contains(@class,'jp-CodeCell')]")
    # Select the marker line and the line that raises NotImplementedError, and type the missing block.
    ActionChains(browser.driver).move_to_element(marker).click().send_keys(Keys.HOME).key_down(Keys.SHIFT) \
        .send_keys(Keys.DOWN).send_keys(Keys.END).key_up(Keys.SHIFT).send_keys(CNN2_BLOCK).perform()
    browser.menu("Run", "Run All Above Selected Cell")
    ActionChains(browser.driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    browser.wait(lambda d: "695,970" in cell.text)  # model.summary(): the parameter count of the whole cnn2
    browser.shot("cnn2-completed-and-run")
    ActionChains(browser.driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    browser.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, ".lm-TabBar-tab.jp-mod-current.jp-mod-dirty"))

    result = browser.validate()
    browser.shot("validate-passed")
    assert "Success! Your notebook passes all the tests." in result
    browser.button("Ok").click()

    browser.driver.find_element(By.XPATH, "//li[contains(@class,'lm-TabBar-tab')][.//*[normalize-space()='Assignments']]").click()
    browser.button("Submit").click()
    inbound = course_server.state / "exchange" / course_server.course_id / "inbound"
    deadline = time.monotonic() + WAIT
    while not list(inbound.glob(f"{student}+cnn_mnist+*")):
        assert time.monotonic() < deadline, "the submission never reached the exchange"
        time.sleep(0.5)
    browser.button("Fetch Feedback")  # cnn_mnist is now under "Submitted assignments"
    browser.shot("submitted")
    submitted = next(inbound.glob(f"{student}+cnn_mnist+*")) / "cnn2_mnist.ipynb"
    assert any(CNN2_BLOCK in cell.source for cell in nbformat.read(submitted, as_version=4).cells)


def test_blank_notebook_validate_shows_the_failing_test(course_server, hub_cycle_report, browser):
    student = "student4"
    _fetch_by_api(course_server, student)
    browser.log_in(course_server, student)
    browser.open_lab()
    browser.open_notebook(course_server, student, "cnn_course/cnn_mnist/cnn2_mnist.ipynb")
    result = browser.validate()
    browser.shot("validate-failed")
    assert "VALIDATION FAILED" in result.upper() or "failed" in result.lower()
    assert "expected 695,970 parameters in total, found 28,576" in result


def test_instructor_enters_a_manual_score_in_the_formgrader(course_server, hub_cycle_report, browser):
    formgrader = f"/services/{course_server.course_id}/formgrader/"
    browser.log_in(course_server, "instructor", next_url=formgrader)
    browser.wait(lambda d: "Manage Assignments" in d.page_source and "cnn_mnist" in d.page_source)
    browser.shot("formgrader-assignments")

    browser.driver.get(course_server.service_url("formgrader/manage_submissions/cnn_mnist"))
    row = browser.wait(seen.visibility_of_element_located((By.XPATH, "//tr[.//td[normalize-space()='student1']]")))
    assert "20" in row.text, row.text  # the autograded points and the cycle's one manual grade, of 23
    browser.shot("formgrader-submissions")

    token = course_server.token("instructor")
    submissions = course_server.request("GET", course_server.service_url(
        "formgrader/api/submitted_notebooks/cnn_mnist/cnn1_mnist"), token=token).json()
    submission = next(item for item in submissions if item["student"] == "student1")
    browser.driver.get(course_server.service_url(f"formgrader/submissions/{submission['id']}"))
    score = browser.wait(seen.visibility_of_element_located((By.CSS_SELECTOR, "input.score#cnn1_overfitting")))
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", score)
    score.clear()
    score.send_keys("1", Keys.TAB)

    database = f"sqlite:///{course_server.course_root / 'gradebook.db'}"

    def stored():
        with Gradebook(database) as gradebook:
            return gradebook.find_grade("cnn1_overfitting", "cnn1_mnist", "cnn_mnist", "student1").manual_score

    deadline = time.monotonic() + WAIT
    while stored() != 1.0:
        assert time.monotonic() < deadline, "the formgrader never stored the manual score"
        time.sleep(0.5)
    browser.shot("manual-score-entered")
    with Gradebook(database) as gradebook:
        assert gradebook.find_submission("cnn_mnist", "student1").score == 21
