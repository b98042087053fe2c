"""The course server: JupyterHub with nbgrader's exchange for one course, on 127.0.0.1 (``make hub``).

:func:`start` prepares a state folder and starts JupyterHub with ``deploy/jupyterhub_config.py``:

``<state>/course/``          the course folder: ``source/`` and ``nbgrader_config.py``, a copy of the repository's
                             (the formgrader service works here: release/, submitted/, gradebook.db, feedback/)
``<state>/exchange/``        nbgrader's exchange
``<state>/home/<account>/``  each account's home folder, where its JupyterLab opens
``<state>/jupyter-config/``  nbgrader settings of the students' servers and of the formgrader service
``<state>/jupyterhub.log``   the hub's log

The students' servers run from the student environment (``.venv-student``: the student package and
nbgrader's lab extensions; :func:`check_student_environment` proves there is no grader package). The
formgrader runs from the grader's environment, so that autograding uses the course's sandbox and limits.

:class:`CourseServer` also speaks the hub's REST API for scripts and tests: tokens, servers, and the
URLs of nbgrader's endpoints.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from traitlets.config.loader import PyFileConfigLoader

from .course import RELEASE_IGNORE, CourseError

__all__ = ["CourseServer", "DEPLOY", "STUDENT_ENVIRONMENT", "check_student_environment", "course_id", "serve",
           "start", "leftover_processes"]

REPOSITORY = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY / "deploy"
STUDENT_ENVIRONMENT = REPOSITORY / ".venv-student"
PROXY = DEPLOY / "node_modules" / ".bin" / "configurable-http-proxy"
MARKER = "CNN_COURSE_HUB_STATE"  # set in every process the hub starts, so that a stop can find them all
PASSED_THROUGH = ("CNN_COURSE_DATA", "CNN_COURSE_BUDGET", "CNN_COURSE_SMOKE", "KERAS_HOME", "LANG", "LC_ALL")


def course_id(root: Path) -> str:
    """The ``CourseDirectory.course_id`` of the course at ``root``, read from its ``nbgrader_config.py``.

    Raises :class:`CourseError` when the file is missing or sets no course id.
    """
    path = Path(root) / "nbgrader_config.py"
    if not path.is_file():
        raise CourseError(f"{path} is missing: the course server needs the course's nbgrader settings")
    config = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    name = config.CourseDirectory.get("course_id")
    if not name:
        raise CourseError(f"{path} sets no CourseDirectory.course_id; the exchange needs one")
    return name


def check_student_environment(environment: Path = STUDENT_ENVIRONMENT) -> Path:
    """The ``jupyterhub-singleuser`` of the student environment, after checking that it has the student
    package and nbgrader, and that it cannot import the grader package.

    Raises :class:`CourseError` with the command that builds it (``make setup``) when it is missing or wrong.
    """
    singleuser = environment / "bin" / "jupyterhub-singleuser"
    python = environment / "bin" / "python"
    if not singleuser.is_file():
        raise CourseError(f"no student environment at {environment}: `make setup` builds it "
                          "(the student package, nbgrader and JupyterLab, without the grader package)")
    probe = ("import importlib.util as u, json; "
             "print(json.dumps({m: u.find_spec(m) is not None for m in ('cnn_course', 'nbgrader', 'cnn_grader')}))")
    found = json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True,
                                      timeout=60).stdout)
    if found["cnn_grader"]:
        raise CourseError(f"the student environment {environment} can import cnn_grader: students' servers must not "
                          "have the grader package (its references hold the answers)")
    if not (found["cnn_course"] and found["nbgrader"]):
        raise CourseError(f"the student environment {environment} lacks cnn_course or nbgrader: run `make setup`")
    return singleuser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _exchange_settings(state: Path) -> str:
    return (
        '"""nbgrader settings written by cnn_grader.hub: the course server\'s exchange and its groups."""\n'
        "from nbgrader.auth import JupyterHubAuthPlugin\n\n"
        "c = get_config()  # noqa: F821\n"
        f"c.Exchange.root = {str(state / 'exchange')!r}\n"
        "c.Exchange.path_includes_course = True\n"
        "c.Authenticator.plugin_class = JupyterHubAuthPlugin\n"
    )


# In the trial every account runs as one OS user, and nbgrader's exchange would file every submission under
# that user's name: the students' servers take the student id from their hub account instead.
STUDENT_ID_SETTING = (
    "import os\n"
    "if os.environ.get('JUPYTERHUB_USER'):\n"
    "    c.CourseDirectory.student_id = os.environ['JUPYTERHUB_USER']\n"
)

# For the same reason every submission belongs to that one OS user: collect's owner check (a defence
# where each student is an OS user) would warn of cheating on every submission.
OWNER_SETTING = "c.CollectApp.check_owner = False\n"


def _prepare(root: Path, state: Path) -> Path:
    """Write the state folder (see the module docstring); keeps what an earlier run left in it."""
    course = state / "course"
    (course / "source").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "nbgrader_config.py", course)
    for folder in sorted((root / "source").iterdir()):
        if folder.is_dir() and not (course / "source" / folder.name).exists():
            shutil.copytree(folder, course / "source" / folder.name, ignore=shutil.ignore_patterns(*RELEASE_IGNORE))
    (state / "exchange").mkdir(exist_ok=True)
    (state / "exchange").chmod(0o777)  # nbgrader's exchange wants a folder that everyone may write
    settings = _exchange_settings(state)
    for role in ("student", "instructor"):
        folder = state / "jupyter-config" / role
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nbgrader_config.py").write_text(settings + (STUDENT_ID_SETTING if role == "student" else
                                                               OWNER_SETTING))
    # The formgrader's pages open inside JupyterLab (an iframe of the same origin).
    (state / "jupyter-config" / "instructor" / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"tornado_settings": {"headers": {"Content-Security-Policy": "frame-ancestors 'self'"}}}}))
    return course


@dataclass
class CourseServer:
    """A running course server (from :func:`start`). ``url`` is the hub's public address, e.g.
    ``http://127.0.0.1:8000``; ``password`` is the trial's shared password of every account."""

    url: str
    state: Path
    course_root: Path
    course_id: str
    instructors: list[str]
    students: list[str]
    password: str
    admin_token: str
    process: subprocess.Popen
    _tokens: dict[str, str] = field(default_factory=dict)

    # -- the hub's REST API -------------------------------------------------------------------------
    def request(self, method: str, url: str, *, token: str | None = None, timeout: float = 120,
                **kwargs) -> requests.Response:
        """One HTTP request with ``Authorization: token ...`` (the admin token by default).

        ``url`` is absolute or relative to the hub's address. Raises :class:`CourseError` on a status of
        400 or more, with the method, the URL and the start of the answer.
        """
        full = url if url.startswith("http") else f"{self.url}/{url.lstrip('/')}"
        answer = requests.request(method, full, headers={"Authorization": f"token {token or self.admin_token}"},
                                  timeout=timeout, **kwargs)
        if answer.status_code >= 400:
            raise CourseError(f"{method} {full} answered {answer.status_code}: {answer.text[:500]}")
        return answer

    def token(self, account: str) -> str:
        """An API token of ``account`` (made once through the hub's API, valid for a day)."""
        if account not in self._tokens:
            answer = self.request("POST", f"hub/api/users/{account}/tokens",
                                  json={"note": "cnn_grader.hub", "expires_in": 86_400})
            self._tokens[account] = answer.json()["token"]
        return self._tokens[account]

    def start_server(self, account: str, timeout: float = 180) -> str:
        """Start ``account``'s single-user server unless it runs; returns its URL. Waits at most
        ``timeout`` seconds, then raises :class:`CourseError` with the end of the hub's log."""
        model = self.request("GET", f"hub/api/users/{account}").json()
        if not model.get("servers", {}).get("", {}).get("ready"):
            self.request("POST", f"hub/api/users/{account}/server")
            deadline = time.monotonic() + timeout
            while not self.request("GET", f"hub/api/users/{account}").json().get("servers", {}).get("", {}).get("ready"):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise CourseError(f"{account}'s server did not start in {timeout:g} s:\n{self.log_tail()}")
                time.sleep(0.5)
        return self.user_url(account)

    def user_url(self, account: str, path: str = "") -> str:
        """The URL of ``path`` on ``account``'s single-user server."""
        return f"{self.url}/user/{account}/{path.lstrip('/')}"

    def service_url(self, path: str = "") -> str:
        """The URL of ``path`` on the formgrader service (``/services/<course>/``)."""
        return f"{self.url}/services/{self.course_id}/{path.lstrip('/')}"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the hub's log."""
        path = self.state / "jupyterhub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- stopping -----------------------------------------------------------------------------------
    def stop(self, timeout: float = 60) -> list[str]:
        """Stop the hub, its proxy, the formgrader service and every single-user server and kernel.

        JupyterHub stops what it started on SIGTERM; whatever is left after ``timeout`` seconds (found by
        the marker in its environment) is killed. Returns descriptions of the processes that had to be
        killed (empty when the hub stopped cleanly).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        deadline = time.monotonic() + 10
        while leftover_processes(self.state) and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = []
        for process in leftover_processes(self.state):
            try:
                killed.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
                process.kill()
            except psutil.NoSuchProcess:
                pass
        return killed


def leftover_processes(state: Path) -> list[psutil.Process]:
    """Running processes that the course server in ``state`` started (the hub, proxy, servers, kernels)."""
    marker = str(Path(state).resolve())
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == marker:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def start(root: Path, state: Path, *, port: int | None = None, students: list[str] | None = None,
          instructors: list[str] | None = None, password: str | None = None,
          student_environment: Path = STUDENT_ENVIRONMENT, environment: dict[str, str] | None = None,
          timeout: float = 120) -> CourseServer:
    """Start the course server of the course at ``root`` with its state in ``state``.

    ``port`` is the hub's public port on 127.0.0.1 (a free one when ``None``). Accounts: ``instructors``
    (default ``["instructor"]``, group ``formgrade-<course>``) and ``students`` (default ``student1``,
    ``student2``, group ``nbgrader-<course>``), all with the trial's shared ``password`` (a random one when
    ``None``). ``environment`` adds variables to the students' servers and the formgrader; ``CNN_COURSE_DATA``
    and the run budget variables pass through from this process.

    Waits at most ``timeout`` seconds for the hub's API. Raises :class:`CourseError` when the proxy or the
    student environment is missing (both come from ``make setup``), or when the hub does not come up
    (with the end of its log).
    """
    root, state = Path(root).resolve(), Path(state).resolve()
    if not PROXY.exists():
        raise CourseError(f"no configurable-http-proxy at {PROXY}: `make setup` installs it with npm "
                          "(deploy/package.json; needs Node.js 20)")
    student_singleuser = check_student_environment(student_environment)
    name = course_id(root)
    state.mkdir(parents=True, exist_ok=True)
    course = _prepare(root, state)
    for account in (instructors or ["instructor"]) + (students or ["student1", "student2"]):
        (state / "home" / account).mkdir(parents=True, exist_ok=True)
    passed = {key: os.environ[key] for key in PASSED_THROUGH if key in os.environ}
    marker = {MARKER: str(state)}
    grader_bin = Path(sys.executable).parent
    settings = {
        "state": str(state), "course_id": name, "course_root": str(course),
        "instructors": instructors or ["instructor"], "students": students or ["student1", "student2"],
        "password": password or secrets.token_urlsafe(9),
        "port": port or _free_port(), "hub_port": _free_port(), "proxy_api_port": _free_port(),
        "service_port": _free_port(), "proxy_command": str(PROXY), "proxy_token": secrets.token_hex(32),
        "admin_token": secrets.token_hex(32),
        "student_singleuser": str(student_singleuser),
        "student_environment": {**passed, **(environment or {}), **marker, "VIRTUAL_ENV": str(student_environment),
                                "PATH": f"{student_environment / 'bin'}:/usr/local/bin:/usr/bin:/bin"},
        "grader_singleuser": str(grader_bin / "jupyterhub-singleuser"),
        "grader_environment": {**passed, **(environment or {}), **marker, "VIRTUAL_ENV": str(grader_bin.parent),
                               "PATH": f"{grader_bin}:/usr/local/bin:/usr/bin:/bin"},
    }
    settings_file = state / "hub-settings.json"
    settings_file.touch(mode=0o600)
    settings_file.write_text(json.dumps(settings, indent=1))
    log = open(state / "jupyterhub.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(DEPLOY / "jupyterhub_config.py")],
        cwd=state, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **marker, "CNN_COURSE_HUB_SETTINGS": str(settings_file)})
    log.close()
    server = CourseServer(url=f"http://127.0.0.1:{settings['port']}", state=state, course_root=course,
                          course_id=name, instructors=settings["instructors"], students=settings["students"],
                          password=settings["password"], admin_token=settings["admin_token"], process=process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{server.url}/hub/api/", timeout=5).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise CourseError(f"JupyterHub did not come up at {server.url} in {timeout:g} s "
                              f"(log: {state / 'jupyterhub.log'}):\n{tail}")
        time.sleep(0.5)


def serve(root: Path, state: Path, *, port: int = 8000, students: list[str] | None = None) -> int:
    """``make hub``: start the course server, print its URL and accounts, and run until Ctrl-C; then stop
    the hub, the proxy and every single-user server. Returns the exit status."""
    server = start(root, state, port=port, students=students)
    print(f"The course server of {server.course_id} runs at {server.url}/  (a local trial: see README, "
          "'The course server')")
    print(f"  instructor: {', '.join(server.instructors)}   formgrader: {server.service_url('formgrader')}")
    print(f"  students:   {', '.join(server.students)}")
    print(f"  password of every account: {server.password}")
    print(f"  state: {state}   log: {state / 'jupyterhub.log'}")
    print("Press Ctrl-C to stop it.", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
        print(f"JupyterHub exited with status {server.process.returncode}; see {state / 'jupyterhub.log'}")
    except KeyboardInterrupt:
        print("\nStopping the hub, the proxy and every single-user server ...", flush=True)
    killed = server.stop()
    if killed:
        print(f"Killed {len(killed)} process(es) that outlived the hub: " + "; ".join(killed))
    print("Stopped.")
    return 0
