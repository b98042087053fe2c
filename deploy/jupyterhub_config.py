"""JupyterHub configuration of the course server for a local trial (`make hub`).

One course, one machine, everything on 127.0.0.1:

- JupyterHub's dummy authenticator and ``SimpleLocalProcessSpawner``: every account runs as the OS user
  who started the hub, with its home folder under the hub's state folder. **For a trial only**: anyone
  who can reach the port and knows the shared password can log in, and the students' servers can read
  each other's files. The README's section "Running the course server for real" has the settings for
  a real deployment.
- nbgrader's exchange in ``<state>/exchange``, with the course's groups: ``nbgrader-<course>``
  (students) and ``formgrade-<course>`` (instructors), and the roles that give them access.
- The formgrader runs as the hub-managed service ``<course>``: ``jupyterhub-singleuser`` in the
  course folder, from the grader's environment. Students' servers run from the student environment
  (``.venv-student``: the student package and nbgrader's lab extensions, no grader package).

``python -m cnn_grader hub`` writes the settings that this file reads (``CNN_COURSE_HUB_SETTINGS``,
a JSON file) and starts JupyterHub with it; see ``cnn_grader.hub``.
"""

import json
import os
from pathlib import Path

c = get_config()  # noqa: F821  (JupyterHub provides get_config)

settings = json.loads(Path(os.environ["CNN_COURSE_HUB_SETTINGS"]).read_text())
state = Path(settings["state"])
course = settings["course_id"]
instructors = settings["instructors"]
students = settings["students"]
# The formgrader service acts as this hub account (nbgrader's exchange asks the hub about JUPYTERHUB_USER).
grader_account = f"grader-{course}"

# Network: the hub, its proxy and every server on 127.0.0.1.
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.command = [settings["proxy_command"]]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
c.ConfigurableHTTPProxy.auth_token = settings["proxy_token"]
c.Spawner.ip = "127.0.0.1"

# The hub's own files stay in the state folder.
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every single-user server
c.JupyterHub.cleanup_proxy = True

# Accounts (trial only: one shared password, see the module docstring).
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = settings["password"]
c.Authenticator.allowed_users = set(instructors + students + [grader_account])

# Students' servers: the student environment, one home folder each, JupyterLab.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(state / "home" / "{username}")
c.Spawner.cmd = [settings["student_singleuser"]]
# Jupyter servers refuse to run as root unless told; a trial started as root (a container, CI) runs them so.
ROOT_ARGS = ["--allow-root"] if os.getuid() == 0 else []
c.Spawner.args = ROOT_ARGS
c.Spawner.default_url = "/lab"
c.Spawner.environment = {**settings["student_environment"],
                         "JUPYTER_CONFIG_PATH": str(state / "jupyter-config" / "student")}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

# Groups and roles as nbgrader expects them: group names start with nbgrader- and formgrade-.
c.JupyterHub.load_groups = {
    f"formgrade-{course}": {"users": instructors + [grader_account]},
    f"nbgrader-{course}": {"users": students},
}
c.JupyterHub.load_roles = [
    {"name": f"formgrade-{course}", "groups": [f"formgrade-{course}"],
     "scopes": [f"access:services!service={course}", "list:services", f"read:services!service={course}"]},
    {"name": f"nbgrader-{course}", "groups": [f"nbgrader-{course}"],
     "scopes": ["list:services", f"read:services!service={course}"]},
    # A server's token may do what its owner may: nbgrader's assignment list reads the owner's groups.
    {"name": "server", "scopes": ["inherit"]},
    # The formgrader service looks up students' groups (nbgrader's JupyterHubAuthPlugin).
    {"name": f"{course}-service", "services": [course], "scopes": ["read:users", "list:users", "read:groups"]},
    # The course's own scripts (cnn_grader.hub): start servers and issue tokens for the accounts.
    {"name": "course-admin", "services": ["course-admin"],
     "scopes": ["admin:users", "admin:servers", "tokens", "read:users", "list:users", "access:servers",
                f"access:services!service={course}"]},
]

c.JupyterHub.services = [
    {
        "name": course,
        "url": f"http://127.0.0.1:{settings['service_port']}",
        "command": [settings["grader_singleuser"], *ROOT_ARGS],
        "cwd": settings["course_root"],
        "environment": {**settings["grader_environment"],
                        "JUPYTER_CONFIG_PATH": str(state / "jupyter-config" / "instructor"),
                        "JUPYTERHUB_USER": grader_account, "JUPYTERHUB_DEFAULT_URL": "/lab"},
        "oauth_no_confirm": True,
        "display": True,
    },
    {"name": "course-admin", "api_token": settings["admin_token"]},
]
