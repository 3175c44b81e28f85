"""A UR-SAM run as a job: computed in this process, or in a background process.

Slicer's GUI thread holds Python's global interpreter lock whenever it is idle (PythonQt does
not release it), so a Python thread computing SAM there would crawl. The module therefore runs
the heavy part — loading the backbone and :func:`URSAMLib.pipeline.segment` — in a separate
Python process (:class:`BackgroundJob`) that shares nothing with the scene:

* the job (axial HU volume, prompt boxes or the template to localize them with, and the run's
  options as a :class:`URSAMLib.job.SegmentJob` — the one job model of ``ursam segment``, so the
  module runs with the same checkpoint pin, precision, window, runtime and unverified-weights
  warning) is written to a private folder;
* the worker (``python -m URSAMSlicerLib.running FOLDER``) writes its progress to a file that the
  GUI polls with a timer, and the result (each organ's crops: ensemble, plain SAM, intensity,
  uncertainty, box region) to ``result.npz`` and the organs it could not localize to
  ``not_found.json``;
* a user mistake ends the worker with ``error.json`` (one line for a dialog); cancelling
  terminates it. Either way nothing reaches the scene, and the folder is deleted.

This module holds the job and its computation; :mod:`URSAMSlicerLib.running` runs it (the
background process, :class:`~URSAMSlicerLib.running.BackgroundJob`, and the worker's entry point).
:class:`~URSAMSlicerLib.running.InProcessJob` runs the same computation synchronously (scripts, tests, the in-Slicer
self-test). Both hand back a complete :class:`~URSAMLib.pipeline.SegmentationResult`, so
re-rectifying later needs no SAM recomputation.

Plain Python: no Slicer, no Qt.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from URSAMLib.errors import Cancelled
from URSAMLib.job import BackboneLoader, SegmentJob
from URSAMLib.job import cached_backbone as job_backbone
from URSAMLib.pipeline import SegmentationResult, Settings, segment
from URSAMLib.prompts import DEFAULT_BOX_MARGIN, BoxMargin, OrganPrompt, boxes_from_rows, boxes_to_rows
from URSAMLib.quality import QualityContext, automatic_context

EXIT_USER_ERROR = 2
LOG_LIMIT = 20000
"""Characters of the worker's log kept for the log panel and bug reports (its end)."""
LOCALIZATION_SHARE = 0.3
"""The part of the progress bar that localizing organs takes, when a job localizes."""


@dataclass
class ImageGeometry:
    """Where the CT's voxels are (SimpleITK's stored order and LPS), to rebuild it from the axial array."""

    size: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> "ImageGeometry":
        return cls(tuple(image.GetSize()), tuple(image.GetOrigin()), tuple(image.GetSpacing()),
                   tuple(image.GetDirection()))

    def image(self, axial: np.ndarray):
        """A SimpleITK image with this geometry whose voxels are the axial array ``[z, y, x]``."""
        import SimpleITK as sitk

        from URSAMLib.io import image_from_axial

        reference = sitk.Image([int(n) for n in self.size], sitk.sitkUInt8)
        reference.SetOrigin(self.origin)
        reference.SetSpacing(self.spacing)
        reference.SetDirection(self.direction)
        return image_from_axial(axial, reference)


@dataclass
class TemplateBuild:
    """Labelled CTs exported from the scene, to build the template from in the job (building resamples
    every support: seconds each, which would freeze Slicer's GUI)."""

    images: list[str]
    labels: list[str]
    """Label maps on the grids of ``images``, pairwise."""
    classes: dict[int, str]
    """Label value → template organ name."""
    exports: dict[str, object] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    """Path → SimpleITK image still to write there (by :func:`write_exports`, off Slicer's GUI thread);
    empty once written."""


@dataclass
class TemplateLocalization:
    """Prompts that the job finds itself, by localizing organs of a template in the CT (slow, so
    it runs in the job rather than on Slicer's GUI thread)."""

    folder: str
    """The template (made by ``ursam build-template`` or :func:`URSAMLib.template.build_template`)."""
    organs: dict[str, str]
    """Template organ name → the organ's name for the user (prompts and reports use it)."""
    geometry: ImageGeometry
    localizer: str = "registration"
    weights: str | None = None
    margin: BoxMargin = DEFAULT_BOX_MARGIN
    temporary: bool = False
    """Delete the template folder when the job is cleaned up (a template built for this run)."""
    build: TemplateBuild | None = None
    """Build the template into ``folder`` first, from these exported supports (then deleted)."""


PIN_HINT = "enter its SHA-256 {sha256} under Checkpoint SHA-256."
"""How a Slicer user pins a checkpoint (the unverified-weights warning of :func:`URSAMLib.job.set_up_backbone`)."""


def scene_options(ct_name: str = "the input CT", **options) -> SegmentJob:
    """The options of a run on a CT in the scene, as the :class:`~URSAMLib.job.SegmentJob` that
    ``ursam segment`` runs: ``backbone``, ``checkpoint``, ``checkpoint_sha256``, ``window``,
    ``precision``, ``device``, ``runtime``, ``settings``, ``box_margin``, ``prompt_mode``... The CT
    and the prompts come from the scene (``ct`` only names the CT in messages) and the result goes
    back into it (no ``output`` folder)."""
    return SegmentJob(ct=ct_name, output="", **options)


@dataclass
class Job:
    """Everything a run needs, without any MRML."""

    hu: np.ndarray
    """The CT, axial ``[z, y, x]``, float32 HU."""
    prompts: list[OrganPrompt]
    """Empty when ``localization`` finds them."""
    options: SegmentJob
    """The model and UR-SAM options (:func:`scene_options`), checked as ``ursam segment`` checks them."""
    localization: TemplateLocalization | None = None
    not_found: dict[str, str] = dataclasses.field(default_factory=dict)
    """Filled by :func:`compute`: organ → why localization did not find it."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Filled by :func:`compute`: doubts for the user that did not stop the run (unverified weights)."""
    quality_context: QualityContext | None = None
    """Filled by :func:`compute`: what the organs' predicted DSC is computed from (:mod:`URSAMLib.quality`)."""

    @property
    def settings(self) -> Settings:
        return self.options.settings


@dataclass
class JobStatus:
    state: str
    """``running``, ``done``, ``failed`` or ``cancelled``."""
    fraction: float = 0.0
    message: str = ""
    error: str | None = None
    """For ``failed``: a message for the user (one line for a user mistake)."""
    details: str = ""
    """For ``failed`` by a bug: the worker's log, for the detailed text of the error dialog."""

    @property
    def finished(self) -> bool:
        return self.state != "running"


# ---------------------------------------------------------------------------------------
# Computing

def cached_backbone(options: SegmentJob, loader: BackboneLoader | None = None,
                    warn: Callable[[str], None] | None = None):
    """The backbone of ``options`` from :func:`URSAMLib.job.cached_backbone` (loaded once per
    process, this run's own copy with its window, precision and embedding cache); weights nothing
    vouches for go to ``warn``, with the Slicer field that pins them.

    loader: a test's ``(name, checkpoint, device) -> backbone`` instead of URSAMLib's loader (which
    checks the checkpoint's pin and attaches the runtime)."""
    return job_backbone(options, loader, warn or (lambda message: None), PIN_HINT)


def _scaled(progress: Callable[[float, str], None] | None, start: float, share: float):
    """A progress callback reporting into ``[start, start + share]`` of ``progress``."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + share * fraction, message)


def localize(job: Job, progress: Callable[[float, str], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> None:
    """Fill ``job.prompts`` (and ``job.not_found``) by localizing the template's organs in the CT
    (raises URSAMError when none is found, Cancelled)."""
    from URSAMLib.localize import no_organ_found, prompts_from_template
    from URSAMLib.template import Template

    task = job.localization

    def report(fraction: float, message: str) -> None:
        if cancel is not None and cancel():
            raise Cancelled()
        if progress is not None:
            progress(fraction, f"Localizing organs: {message}")

    if task.build is not None:
        from URSAMLib.template import build_template

        report(0.0, "building the template from the labelled CTs")
        build_template(task.build.images, task.build.labels, task.build.classes, task.folder,
                       organs=list(task.build.classes.values()))
        for path in task.build.images + task.build.labels:
            Path(path).unlink(missing_ok=True)  # the template holds what it needs of them
        report(0.1, "template built")
    template = Template.load(task.folder)
    found = prompts_from_template(task.geometry.image(job.hu), template, list(task.organs), task.localizer,
                                  task.weights, task.margin, report)
    job.not_found = {task.organs[name]: reason for name, reason in found.missing.items()}
    if not found.prompts:
        raise no_organ_found(dataclasses.replace(found, missing=job.not_found), template, "the input CT")
    job.prompts = [dataclasses.replace(p, name=task.organs[p.name]) for p in found.prompts]
    job.quality_context = automatic_context(found.localizations, template,
                                            float(np.prod(task.geometry.spacing)) / 1000.0, task.organs)


def compute(job: Job, progress: Callable[[float, str], None] | None = None,
            cancel: Callable[[], bool] | None = None, loader: BackboneLoader | None = None) -> SegmentationResult:
    """Load the backbone, localize the organs if the job says so, and run UR-SAM on the job
    (raises URSAMError, Cancelled)."""
    if progress is not None:
        progress(0.0, f"Loading {job.options.backbone}")

    def warn(message: str) -> None:
        if message not in job.warnings:
            job.warnings.append(message)

    backbone = cached_backbone(job.options, loader, warn)
    if cancel is not None and cancel():
        raise Cancelled()
    if job.localization is not None:
        localize(job, _scaled(progress, 0.0, LOCALIZATION_SHARE), cancel)
        progress = _scaled(progress, LOCALIZATION_SHARE, 1.0 - LOCALIZATION_SHARE)
    else:  # boxes a person drew or a label map gave; the organ volumes are not compared with a template
        job.quality_context = QualityContext("given", 0.0)
    return segment(job.hu, job.prompts, backbone, job.settings, progress=progress, cancel=cancel)


def temporary_template(job: Job) -> str | None:
    """The job's template folder if it was built for this run only (to delete after it), else None."""
    task = job.localization
    return task.folder if task is not None and task.temporary else None


def _remove(folder: str | os.PathLike | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Files

def save_job(job: Job, folder: Path) -> None:
    """Write a job into ``folder``: ``hu.npy``, ``boxes.npz`` and ``job.json`` (and the template's
    exported scans where they belong)."""
    write_exports(job)
    np.save(folder / "hu.npy", np.ascontiguousarray(job.hu, dtype=np.float32))
    boxes = {}
    organs = []
    for index, prompt in enumerate(job.prompts):
        boxes[f"z{index}"], boxes[f"b{index}"] = boxes_to_rows(prompt.boxes)
        organs.append({"name": prompt.name, "label": prompt.label})
    np.savez(folder / "boxes.npz", **boxes)
    (folder / "job.json").write_text(json.dumps({
        "organs": organs, "options": _options_json(job.options),
        "localization": _localization_json(job.localization)}))


def _options_json(options: SegmentJob) -> dict:
    return {**dataclasses.asdict(options), "box_margin": str(options.box_margin)}


def _options_from_json(entry: dict) -> SegmentJob:
    return SegmentJob(**{**entry, "settings": Settings(**entry["settings"]),
                         "box_margin": BoxMargin.parse(entry["box_margin"]),
                         "window": tuple(entry["window"]) if entry.get("window") else None,
                         "dicom_out": tuple(entry.get("dicom_out", ()))})


def write_exports(job: Job) -> None:
    """Write the images exported from the scene that the job's template is built from (slow for
    large CTs, so it happens where the job runs, not on Slicer's GUI thread)."""
    import SimpleITK as sitk

    build = job.localization.build if job.localization is not None else None
    if build is not None:
        while build.exports:
            path, image = build.exports.popitem()
            sitk.WriteImage(image, path, False)


def _localization_json(task: TemplateLocalization | None) -> dict | None:
    if task is None:
        return None
    if task.build is not None:
        task = dataclasses.replace(task, build=dataclasses.replace(task.build, exports={}))  # written by now
    return {**dataclasses.asdict(task), "margin": str(task.margin)}


def _localization_from_json(entry: dict | None) -> TemplateLocalization | None:
    if entry is None:
        return None
    geometry = ImageGeometry(**{key: tuple(value) for key, value in entry["geometry"].items()})
    build = entry.get("build")
    if build is not None:
        build = TemplateBuild(build["images"], build["labels"], {int(k): v for k, v in build["classes"].items()})
    return TemplateLocalization(**{**entry, "geometry": geometry, "margin": BoxMargin.parse(entry["margin"]),
                                   "build": build})


def load_job(folder: Path) -> Job:
    meta = json.loads((folder / "job.json").read_text())
    with np.load(folder / "boxes.npz") as boxes:
        prompts = [OrganPrompt(organ["name"], int(organ["label"]), boxes_from_rows(boxes[f"z{i}"], boxes[f"b{i}"]))
                   for i, organ in enumerate(meta["organs"])]
    return Job(np.load(folder / "hu.npy"), prompts, _options_from_json(meta["options"]),
               _localization_from_json(meta.get("localization")))
