"""Running a job (:mod:`URSAMSlicerLib.jobs`): in this process (:class:`InProcessJob`), or in a
background Python process (:class:`BackgroundJob`) that this module is also the entry point of
(``python -m URSAMSlicerLib.running FOLDER``), with the files they exchange: the worker's progress
(written atomically, read tolerantly: on Windows a replace fails while the GUI reads the file) and
its result (every organ's crops, so that it can be re-rectified after loading).

Plain Python: no Slicer, no Qt.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from URSAMLib.errors import Cancelled, URSAMError
from URSAMLib.pipeline import OrganResult, SegmentationResult, Settings
from URSAMLib.prompts import boxes_from_rows, boxes_to_rows
from URSAMLib.quality import QualityContext
from URSAMSlicerLib import processes
from URSAMSlicerLib.jobs import (EXIT_USER_ERROR, LOG_LIMIT, BackboneLoader, Job, JobStatus, _remove, compute,
                                 load_job, save_job, temporary_template, write_exports)


_ORGAN_ARRAYS = ("box_region", "intensity", "ensemble", "uncertainty", "plain")
_OPTIONAL_ORGAN_ARRAYS = ("votes", "prior")
"""Kept where the organ has them: the quality signals (:mod:`URSAMLib.quality`) are computed from them."""


def save_result(result: SegmentationResult, path: Path) -> None:
    """Write a result with every organ's crops, so that it can be re-rectified after loading."""
    arrays = {}
    organs = []
    for index, organ in enumerate(result.organs):
        for name in _ORGAN_ARRAYS:
            arrays[f"{name}{index}"] = getattr(organ, name)
        for name in _OPTIONAL_ORGAN_ARRAYS:
            if getattr(organ, name) is not None:
                arrays[f"{name}{index}"] = getattr(organ, name)
        arrays[f"boxz{index}"], arrays[f"boxes{index}"] = boxes_to_rows(organ.boxes)
        organs.append({"name": organ.name, "label": organ.label,
                       "region": [[s.start, s.stop] for s in organ.region],
                       "preferred_method": organ.preferred_method})
    meta = {"organs": organs, "shape": list(result.shape), "settings": dataclasses.asdict(result.settings),
            "timings": result.timings}
    arrays["meta"] = np.array(json.dumps(meta))
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


def load_result(path: Path) -> SegmentationResult:
    """Read a result written by :func:`save_result`; rectification is recomputed from the crops."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        settings = Settings(**meta["settings"])
        organs = []
        for index, organ in enumerate(meta["organs"]):
            boxes = boxes_from_rows(data[f"boxz{index}"], data[f"boxes{index}"])
            optional = {name: data[f"{name}{index}"] for name in _OPTIONAL_ORGAN_ARRAYS if f"{name}{index}" in data}
            result_organ = OrganResult(organ["name"], int(organ["label"]),
                                       tuple(slice(a, b) for a, b in organ["region"]), boxes,
                                       *(data[f"{name}{index}"] for name in _ORGAN_ARRAYS), **optional,
                                       preferred_method=organ.get("preferred_method"))
            result_organ.rectify(settings)
            organs.append(result_organ)
    return SegmentationResult(organs, tuple(meta["shape"]), settings, meta["timings"])


REPLACE_ATTEMPTS = 20
REPLACE_RETRY_SECONDS = 0.05


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file, never a part.

    On Windows replacing a file fails with PermissionError while another process (the GUI
    polling it) has it open, so the replace is retried for up to a second.
    """
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    for attempt in range(REPLACE_ATTEMPTS):
        try:
            os.replace(partial, path)
            return
        except PermissionError:
            if attempt == REPLACE_ATTEMPTS - 1:
                raise
            time.sleep(REPLACE_RETRY_SECONDS)


def read_progress(path: Path) -> tuple[float, str] | None:
    """The worker's last progress report ``(fraction, message)``, or None while there is none to read:
    not written yet, being replaced (PermissionError on Windows), or unreadable."""
    try:
        update = json.loads(path.read_text())
        return float(update["fraction"]), str(update["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------
# Running

class InProcessJob:
    """Runs the job synchronously in :meth:`start`; :meth:`poll` then reports the outcome."""

    def __init__(self, job: Job, loader: BackboneLoader | None = None):
        self.job, self.loader = job, loader
        self._status = JobStatus("running")
        self._result: SegmentationResult | None = None
        self._cancelled = False
        self._log: list[str] = []
        self.not_found: dict[str, str] = {}
        """Organ → why localization did not find it (known once the job is done)."""
        self.warnings: list[str] = []
        """Doubts about the run for the user (known once the job is done)."""
        self.quality_context: QualityContext | None = None
        """What the organs' predicted DSC is computed from (known once the job is done)."""

    def log(self) -> str:
        """The progress messages so far, one per line."""
        return "\n".join(self._log)

    def start(self) -> None:
        def progress(fraction: float, message: str) -> None:
            self._status = JobStatus("running", fraction, message)
            self._log.append(f"{100 * fraction:5.1f}% {message}")

        try:
            write_exports(self.job)
            self._result = compute(self.job, progress, lambda: self._cancelled, self.loader)
            self.not_found = dict(self.job.not_found)
            self.warnings = list(self.job.warnings)
            self.quality_context = self.job.quality_context
            self._status = JobStatus("done", 1.0, "Done")
        except Cancelled:
            self._status = JobStatus("cancelled", self._status.fraction, "Cancelled")
        except URSAMError as error:
            self._status = JobStatus("failed", self._status.fraction, "Failed", str(error))
        finally:
            _remove(temporary_template(self.job))

    def poll(self) -> JobStatus:
        return self._status

    def cancel(self) -> None:
        self._cancelled = True
        if not self._status.finished:
            self._status = JobStatus("cancelled", self._status.fraction, "Cancelled")

    def wait(self, timeout: float = 0.0) -> JobStatus:
        return self._status

    def result(self) -> SegmentationResult:
        if self._result is None:
            raise RuntimeError("the job has no result")
        return self._result

    def cleanup(self) -> None:
        pass


def worker_pythonpath() -> str:
    """PYTHONPATH for the worker: the folders holding URSAMLib and URSAMSlicerLib."""
    import URSAMLib

    folders = [str(Path(URSAMLib.__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent)]
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(dict.fromkeys(folders + ([existing] if existing else [])))


HANDOFF_SECONDS = 0.05
"""How long a poll waits for the thread writing the job: a wait releases Python's lock, which
Slicer's GUI thread otherwise holds while idle, so the writer progresses at every poll."""


class BackgroundJob:
    """Runs the job in another Python process; poll it from a GUI timer.

    :meth:`start` returns at once: a thread writes the job (the CT alone is ~150 MB for a
    512 x 512 x 141 scan) and then starts the worker, so Slicer's GUI stays responsive.
    """

    def __init__(self, job: Job, python: str | None = None, extra_arguments: tuple[str, ...] = (),
                 environment: dict[str, str] | None = None):
        self.job = job
        self.python = python or sys.executable
        self.extra_arguments = tuple(extra_arguments)
        self.environment = environment
        self.folder: Path | None = None
        self._process: subprocess.Popen | None = None
        self._status = JobStatus("running", 0.0, "Starting")
        self._result: SegmentationResult | None = None
        self._log = None
        self._last_log = ""
        self.not_found: dict[str, str] = {}
        """Organ → why localization did not find it (known once the job is done)."""
        self.warnings: list[str] = []
        """Doubts about the run for the user (known once the job is done)."""
        self.quality_context: QualityContext | None = None
        """What the organs' predicted DSC is computed from (known once the job is done)."""
        self._temporary_template = temporary_template(job)
        self._writer: threading.Thread | None = None
        self._launch_error: str | None = None
        self._lock = threading.Lock()
        """Guards starting the worker against cancelling meanwhile."""

    def start(self) -> None:
        """Write the job and start the worker, in a thread (see the class); returns at once."""
        self.folder = Path(tempfile.mkdtemp(prefix="ursam-job-"))
        job, self.job = self.job, None  # the thread, then the worker has it: no second copy of the volume
        self._status = JobStatus("running", 0.0, "Handing the CT to the segmentation process")
        self._writer = threading.Thread(target=self._launch, args=(job,), name="URSAM job writer", daemon=True)
        self._writer.start()

    def _launch(self, job: Job) -> None:
        try:
            save_job(job, self.folder)
            del job
            environment = dict(os.environ if self.environment is None else self.environment)
            environment["PYTHONPATH"] = worker_pythonpath()
            with self._lock:
                if self._status.finished:  # cancelled while writing
                    return
                self._log = open(self.folder / "worker.log", "w")
                self._process = subprocess.Popen(
                    [self.python, "-m", "URSAMSlicerLib.running", str(self.folder), *self.extra_arguments],
                    stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                    **processes.hidden_process_options())
        except Exception:  # e.g. a full disk: reported by the next poll, with the details
            self._launch_error = traceback.format_exc()

    def _launching(self) -> bool:
        """Whether the job is still being written (waits a moment for the writer: see HANDOFF_SECONDS)."""
        if self._writer is None:
            return False
        self._writer.join(HANDOFF_SECONDS)
        return self._writer.is_alive()

    def poll(self) -> JobStatus:
        if self._status.finished or self._launching():
            return self._status
        if self._launch_error is not None:
            self._status = JobStatus("failed", 0.0, "Failed", "The segmentation process could not be started: "
                                     f"{self._launch_error.strip().splitlines()[-1]}", self._launch_error)
            self.cleanup()
            return self._status
        if self._process is None:
            return self._status
        code = self._process.poll()
        update = read_progress(self.folder / "progress.json")
        if update is not None:  # else: nothing new readable now; the next poll reads it
            self._status = JobStatus("running", *update)
        if code is None:
            return self._status
        self._close_log()
        if code == 0 and (self.folder / "result.npz").exists():
            self._result = load_result(self.folder / "result.npz")
            if (self.folder / "not_found.json").exists():
                self.not_found = json.loads((self.folder / "not_found.json").read_text())
            if (self.folder / "warnings.json").exists():
                self.warnings = json.loads((self.folder / "warnings.json").read_text())
            if (self.folder / "quality.json").exists():
                self.quality_context = QualityContext.from_json(json.loads((self.folder / "quality.json").read_text()))
            self._status = JobStatus("done", 1.0, "Done")
        elif (self.folder / "error.json").exists():
            message = json.loads((self.folder / "error.json").read_text())["message"]
            self._status = JobStatus("failed", self._status.fraction, "Failed", message)
        else:
            self._status = JobStatus("failed", self._status.fraction, "Failed",
                                     f"The segmentation process stopped unexpectedly (exit status {code}).",
                                     self.log())
        self.log()  # keep what the worker said: the folder goes now
        self.cleanup()
        return self._status

    def wait(self, timeout: float = 600.0, interval: float = 0.1) -> JobStatus:
        """Poll until the job finishes (for scripts and tests; the GUI polls from a timer)."""
        deadline = time.monotonic() + timeout
        while not self.poll().finished:
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError("the segmentation process did not finish in time")
            time.sleep(interval)
        return self._status

    def cancel(self) -> None:
        """Stop the worker and every process it started (in Slicer the interpreter is the child
        of the PythonSlicer launcher); its partial work is discarded."""
        with self._lock:  # the writer starts no worker after this
            finished = self._status.finished
            if not finished:
                self._status = JobStatus("cancelled", self._status.fraction, "Cancelled")
        if self._process is not None and not finished:
            processes.end_process_tree(self._process)
        if self._writer is not None:
            self._writer.join()  # at most the rest of one write; then its files can go
        self._close_log()
        self.cleanup()

    def result(self) -> SegmentationResult:
        if self._result is None:
            raise RuntimeError("the job has no result")
        return self._result

    def log(self) -> str:
        """The last :data:`LOG_LIMIT` characters the worker printed (progress, warnings, a traceback),
        read while it runs and kept once its folder is removed."""
        if self.folder is not None and self.folder.exists():
            try:
                self._last_log = (self.folder / "worker.log").read_text(errors="replace")[-LOG_LIMIT:]
            except OSError:
                pass  # being written (Windows): the last text read stands
        return self._last_log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        _remove(self.folder)
        _remove(self._temporary_template)


# ---------------------------------------------------------------------------------------
# The worker process

def _factory(spec: str) -> BackboneLoader:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m URSAMSlicerLib.running",
                                     description="Run one URSAM job folder (started by the Slicer module).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--backbone-factory", metavar="MODULE:FUNCTION",
                        help="load the backbone with this function instead of URSAMLib's (tests)")
    args = parser.parse_args(argv)
    folder: Path = args.folder

    def progress(fraction: float, message: str) -> None:
        print(f"{100 * fraction:5.1f}% {message}", flush=True)  # the worker's log, shown in the module
        try:
            _write_atomically(folder / "progress.json", json.dumps({"fraction": fraction, "message": message}))
        except PermissionError:
            pass  # the GUI held the file for a second: it shows the next report instead

    try:
        job = load_job(folder)
        loader = _factory(args.backbone_factory) if args.backbone_factory else None
        result = compute(job, progress, loader=loader)
        _write_atomically(folder / "not_found.json", json.dumps(job.not_found))
        _write_atomically(folder / "warnings.json", json.dumps(job.warnings))
        if job.quality_context is not None:
            _write_atomically(folder / "quality.json", json.dumps(job.quality_context.to_json()))
        for warning in job.warnings:
            print(f"Warning: {warning}", flush=True)
        save_result(result, folder / "result.npz")
    except URSAMError as error:
        _write_atomically(folder / "error.json", json.dumps({"message": str(error)}))
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
