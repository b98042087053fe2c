"""Run a grading kernel under a memory limit and, where bubblewrap works, in a sandbox that shows
it only its own submission.

``python -m cnn_grader.sandbox --memory-bytes N -- COMMAND ...`` sets the address-space limit
(``RLIMIT_AS``) of this process and then replaces itself with ``COMMAND``, so the kernel runs under
the limit with the same process id. An allocation beyond the limit raises ``MemoryError`` in the
student's cell instead of pushing the machine into swap or the out-of-memory killer.

:func:`kernel_command` wraps a student kernel's command line: the limit always, and ``bwrap``
(Debian's ``bubblewrap``) when it is installed and works. The sandbox shows the kernel

* its submission's folder and a private temporary folder, writable;
* the system (``/usr``, ``/etc``), the Python environment, the student package ``cnn_course`` and
  the data sets, read-only;

and nothing else: not the course's ``source/``, ``gradebook.db``, ``submitted/``, ``autograded/``
or ``feedback/``, not the grader package ``cnn_grader``, not any home folder. It has no network
(``--unshare-net``) and its own process namespace (``--unshare-pid``), so it can neither reach a
host nor see or signal the grader and the other kernels.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["kernel_command", "bubblewrap_works", "readable_paths", "main"]

#: Namespaces a sandboxed kernel gets of its own.
UNSHARE = ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts")


@functools.lru_cache(maxsize=1)
def bubblewrap_works() -> bool:
    """Whether ``bwrap`` is installed and can start a sandbox with its own network and process namespaces here."""
    executable = shutil.which("bwrap")
    if executable is None:
        return False
    try:
        probe = subprocess.run([executable, *UNSHARE, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _package_root(module_file: str) -> Path:
    """The folder on ``sys.path`` that holds a package (``lib/`` for ``lib/cnn_course/__init__.py``)."""
    return Path(module_file).resolve().parent.parent


def keras_home() -> str:
    """The grader's Keras folder (``$KERAS_HOME`` or ``~/.keras``); its ``datasets/`` cache is shared with kernels."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def readable_paths() -> list[str]:
    """Folders a grading kernel may read: the Python environment, the student package and the data sets.

    Returns existing absolute paths, without duplicates and without folders inside another one.
    """
    import cnn_course
    from cnn_course.data import DEBIAN_FASHION_MNIST_DIR

    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
                  str(Path(os.path.realpath(sys.executable)).parent.parent), str(_package_root(cnn_course.__file__)),
                  str(DEBIAN_FASHION_MNIST_DIR)]
    if os.environ.get("CNN_COURSE_DATA"):
        candidates.append(os.environ["CNN_COURSE_DATA"])
    candidates.append(os.path.join(keras_home(), "datasets"))
    found = sorted({os.path.realpath(path) for path in candidates if path and os.path.isdir(path)})
    return [path for path in found if not any(path != other and path.startswith(other + os.sep) for other in found)]


def kernel_command(command: list[str], *, memory_bytes: int, writable: list[str], temporary: str,
                   isolate: bool) -> tuple[list[str], dict[str, str], bool]:
    """A kernel command line under the memory limit and, if asked and possible, in the bubblewrap sandbox.

    Args:
        command: the kernel's command line (``python -m ipykernel_launcher -f CONNECTION_FILE``).
        memory_bytes: the address-space limit in bytes; 0 means none.
        writable: folders the kernel may write (the submission's folder; the first is its working folder).
        temporary: a private folder for ``TMPDIR``, ``HOME``, IPython's and matplotlib's caches and the
            kernel's sockets.
        isolate: wrap in bubblewrap when it works here.

    Returns:
        ``(command, environment, isolated)``: the new command line, variables to add to the kernel's
        environment, and whether the kernel runs in the sandbox.
    """
    home = os.path.join(temporary, "home")
    os.makedirs(home, exist_ok=True)
    environment = {"TMPDIR": temporary, "HOME": home, "IPYTHONDIR": os.path.join(temporary, "ipython"),
                   "MPLCONFIGDIR": os.path.join(temporary, "matplotlib"),
                   "KERAS_HOME": keras_home()}  # the data cache, read-only in the sandbox
    limiter = [sys.executable, "-m", "cnn_grader.sandbox", f"--memory-bytes={memory_bytes}", "--"]
    if not (isolate and bubblewrap_works()):
        return [*limiter, *command], environment, False
    system = []
    for top in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(top):
            system += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            system += ["--ro-bind", top, top]
    readable = [path for path in readable_paths() if path not in ("/usr", "/etc")]
    binds = [argument for path in readable for argument in ("--ro-bind", path, path)]
    import cnn_grader

    grader_folder = str(Path(cnn_grader.__file__).resolve().parent)
    if any(grader_folder.startswith(path + os.sep) for path in readable):
        binds += ["--tmpfs", grader_folder]  # installed next to the student package: hide it
    binds += [argument for path in [temporary, *writable] for argument in ("--bind", path, path)]
    # In its own process namespace the kernel's parent is bubblewrap's init (pid 1), which ipykernel would take
    # for "parent exited" (jupyter_client sets JPY_PARENT_PID at launch); --die-with-parent ends the kernel
    # with the grader instead.
    sandboxed = [shutil.which("bwrap"), *UNSHARE, "--die-with-parent", "--new-session", "--unsetenv", "JPY_PARENT_PID",
                 "--ro-bind", "/usr", "/usr", *system, "--ro-bind", "/etc", "/etc",
                 "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", *binds,
                 "--chdir", writable[0] if writable else temporary, "--", *command]
    return [*limiter, *sandboxed], environment, True


def main(argv: list[str] | None = None) -> None:
    """Set the memory limit, then replace this process with the command after ``--``."""
    parser = argparse.ArgumentParser(prog="python -m cnn_grader.sandbox")
    parser.add_argument("--memory-bytes", type=int, default=0, help="address-space limit in bytes (0: none)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    if args.memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
