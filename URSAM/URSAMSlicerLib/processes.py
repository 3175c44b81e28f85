"""Starting the worker process without a console window, and ending it with every process it started.

In 3D Slicer, ``PythonSlicer`` is not Python itself but CTK's application launcher: it sets up the
library paths and starts the real interpreter (``python-real``) as its child, then waits for it.
Terminating the launcher alone leaves that child computing (and holding the GPU) until it finishes.
So the worker is started as the leader of a new process group (POSIX) or process group (Windows),
and cancelling ends the whole group or tree.

On Windows a console program started from a GUI opens a console window; the worker is started
with that window hidden, as ``slicer.util.launchConsoleProcess`` does.

Plain Python: no Slicer, no Qt.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

GRACE_SECONDS = 5.0
"""How long the worker may take to exit after the polite request before it is killed."""

_SW_HIDE = 0
"""Win32 ShowWindow value that hides the window (subprocess names STARTF_USESHOWWINDOW but not this)."""


def hidden_process_options() -> dict:
    """Keyword arguments for :class:`subprocess.Popen` that start a process in its own process
    group and, on Windows, with its console window hidden."""
    if os.name == "nt":
        info = subprocess.STARTUPINFO()
        info.dwFlags |= subprocess.STARTF_USESHOWWINDOW
        info.wShowWindow = _SW_HIDE
        return {"startupinfo": info, "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def end_process_tree(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """End ``process`` (started with :func:`hidden_process_options`) and every process it started.

    POSIX: SIGTERM to the process group, then, after at most ``grace`` seconds, SIGKILL to what is
    left of the group (the launcher may have exited while its child still runs). Windows:
    ``taskkill /T /F``, which follows the tree from the launcher while it still exists.
    """
    if os.name == "nt":
        if process.poll() is None:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **hidden_process_options())
        _wait(process, grace)
        if process.poll() is None:
            process.kill()
            process.wait()
        return
    group = process.pid  # start_new_session: the worker leads a group of its own id
    _signal_group(group, signal.SIGTERM)
    _wait(process, grace)
    _signal_group(group, signal.SIGKILL)  # whatever of the tree did not stop politely
    process.wait()


def _wait(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(group: int, number: int) -> None:
    try:
        os.killpg(group, number)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended already


def tree_alive(process: subprocess.Popen, wait: float = 0.0) -> bool:
    """Whether any process of ``process``'s group still exists (POSIX; on Windows: the process itself),
    waiting up to ``wait`` seconds for the group to end. An ended child of the launcher exists until
    its new parent (init) collects it, a moment after it was killed: hence the wait."""
    deadline = time.monotonic() + wait
    while True:
        if os.name == "nt":
            alive = process.poll() is None
        else:
            try:
                os.killpg(process.pid, 0)
                alive = True
            except (ProcessLookupError, PermissionError):
                alive = False
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)
