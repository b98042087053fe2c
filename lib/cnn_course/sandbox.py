"""Run a grading kernel with a memory limit and, where bubblewrap exists, a read-only file system.

``python -m cnn_course.sandbox --memory-bytes N -- COMMAND ...`` sets the address-space limit
(``RLIMIT_AS``) of this process and then replaces itself with ``COMMAND``, so the kernel runs
under the limit with the same process id (signals reach it directly). An allocation beyond the
limit raises ``MemoryError`` in the student's cell instead of pushing the machine into swap or
the out-of-memory killer.

:func:`kernel_command` wraps a kernel command line: the limit always, and ``bwrap`` (Debian's
``bubblewrap``) when it is installed and works, so that the kernel can write only inside the
submission's folder and a private temporary folder.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import subprocess
import sys

__all__ = ["kernel_command", "bubblewrap_works", "main"]


@functools.lru_cache(maxsize=1)
def bubblewrap_works() -> bool:
    """Whether ``bwrap`` is installed and can start a sandbox here (it needs user namespaces or root)."""
    executable = shutil.which("bwrap")
    if executable is None:
        return False
    try:
        probe = subprocess.run([executable, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
                               capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def kernel_command(command: list[str], *, memory_bytes: int, writable: list[str],
                   temporary: str, filesystem_sandbox: bool) -> tuple[list[str], dict[str, str]]:
    """A kernel command line under the memory limit and, if asked and possible, bubblewrap.

    Args:
        command: the kernel's command line (``python -m ipykernel_launcher -f CONNECTION_FILE``).
        memory_bytes: the address-space limit in bytes; 0 means none.
        writable: folders the kernel may write (the submission's folder).
        temporary: a private folder for ``TMPDIR``, IPython's and matplotlib's caches.
        filesystem_sandbox: wrap in bubblewrap when it works here.

    Returns:
        ``(command, environment)``: the new command line, and variables to add to the kernel's environment.
    """
    environment = {"TMPDIR": temporary, "IPYTHONDIR": os.path.join(temporary, "ipython"),
                   "MPLCONFIGDIR": os.path.join(temporary, "matplotlib")}
    wrapped = [sys.executable, "-m", "cnn_course.sandbox", f"--memory-bytes={memory_bytes}", "--", *command]
    if filesystem_sandbox and bubblewrap_works():
        binds = [argument for folder in [*writable, temporary] for argument in ("--bind", folder, folder)]
        wrapped = [shutil.which("bwrap"), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *binds,
                   "--die-with-parent", "--", *wrapped]
    return wrapped, environment


def main(argv: list[str] | None = None) -> None:
    """Set the memory limit, then replace this process with the command after ``--``."""
    parser = argparse.ArgumentParser(prog="python -m cnn_course.sandbox")
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
