"""URSAMSlicerLib.processes on Windows, simulated here: the worker is started without a console
window (as slicer.util.launchConsoleProcess does: STARTUPINFO with STARTF_USESHOWWINDOW and
SW_HIDE) in a process group of its own, and cancelling ends the whole tree (taskkill /T /F, then a
plain kill if the launcher outlived it). The POSIX path runs for real in test_slicer_jobs.py
(a stand-in launcher whose child must be gone after cancel)."""
from __future__ import annotations

import subprocess

import pytest

from URSAMSlicerLib import processes

pytestmark = pytest.mark.slicer


class StartupInfo:
    """subprocess.STARTUPINFO as Windows' Python has it."""

    def __init__(self):
        self.dwFlags, self.wShowWindow = 0, 0


@pytest.fixture
def windows(monkeypatch):
    """os.name == "nt" and the Windows-only names of subprocess, as on Windows."""
    monkeypatch.setattr(processes.os, "name", "nt")
    monkeypatch.setattr(subprocess, "STARTUPINFO", StartupInfo, raising=False)
    monkeypatch.setattr(subprocess, "STARTF_USESHOWWINDOW", 1, raising=False)
    monkeypatch.setattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)
    runs = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: runs.append((args, kwargs)))
    return runs


def test_on_windows_the_worker_starts_hidden_in_its_own_process_group(windows):
    options = processes.hidden_process_options()
    info = options["startupinfo"]
    assert info.dwFlags & subprocess.STARTF_USESHOWWINDOW and info.wShowWindow == 0  # SW_HIDE: no console
    assert options["creationflags"] & subprocess.CREATE_NEW_PROCESS_GROUP
    assert "start_new_session" not in options  # a POSIX option


def test_elsewhere_the_worker_leads_a_session_of_its_own():
    assert processes.hidden_process_options() == {"start_new_session": True}


class FakeProcess:
    """A Popen whose process ends when taskkill ran (or never, to test the fallback)."""

    def __init__(self, runs, ends_on_taskkill=True):
        self.pid, self.runs, self.ends_on_taskkill = 4242, runs, ends_on_taskkill
        self.killed = False

    def poll(self):
        ended = self.killed or (self.ends_on_taskkill and any(args[0] == "taskkill" for args, _ in self.runs))
        return 1 if ended else None

    def wait(self, timeout=None):
        if self.poll() is None and timeout is not None:
            raise subprocess.TimeoutExpired("worker", timeout)
        return 1

    def kill(self):
        self.killed = True


def test_on_windows_cancel_kills_the_whole_tree_with_taskkill_hidden(windows):
    process = FakeProcess(windows)
    processes.end_process_tree(process, grace=0.01)
    (args, kwargs), = windows
    assert args == ["taskkill", "/T", "/F", "/PID", "4242"]  # /T: the launcher's child (python-real) too
    assert kwargs["startupinfo"].wShowWindow == 0 and not process.killed


def test_on_windows_a_launcher_that_survives_taskkill_is_killed(windows):
    process = FakeProcess(windows, ends_on_taskkill=False)
    processes.end_process_tree(process, grace=0.01)
    assert len(windows) == 1 and process.killed


def test_on_windows_an_ended_worker_is_not_taskkilled(windows):
    process = FakeProcess(windows)
    process.killed = True  # already ended
    processes.end_process_tree(process, grace=0.01)
    assert windows == []
