"""One `ursam segment` job: files in, an output folder out.

The command line builds a :class:`SegmentJob` from its arguments and calls
:func:`run_segment_job`; anything else that segments files (a batch runner, a script)
can do the same. Every check of user input happens before any model runs.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# backbones by module: callers and tests may swap backbones.load_backbone for another loader
from . import backbones, dicom_out, embedding_cache, io, metrics, outputs, quality
from .builtin import region_template
from .errors import URSAMError
from .localize import check_localizer, no_organ_found, prompts_from_template
from .organs import check_known, select_by_name
from .overview import save_overview
from .pipeline import SegmentationResult, Settings, segment
from .prompts import DEFAULT_BOX_MARGIN, BoxMargin, prompts_from_labels
from .runtime import check_runtime_choice
from .template import Template
from .weights import parse_sha256

PROMPT_MODES = ("slice", "box3d")
"""How boxes come from a label map: one per slice (manual prompting), or the 3-D box on every slice."""

ProgressBar = Callable[[str, Callable], object]
"""``progress_bar(title, run)`` calls ``run(progress)`` with a progress callback and returns its result."""

Warn = Callable[[str], None]
"""``warn(message)`` tells the user something doubtful that does not stop the run, as soon as it is known."""


def _no_bar(title: str, run: Callable):
    return run(None)


def _no_warn(message: str) -> None:
    pass


@dataclass
class SegmentJob:
    """Everything `ursam segment` needs (see its --help for each field)."""

    ct: str
    output: str
    prompt_labels: str | None = None
    classes: str | None = None
    template: str | None = None
    region: str | None = None
    """A built-in template (``ursam templates``), instead of ``template``."""
    localizer: str | None = None
    """None: the built-in region's localizer, or registration for a template folder."""
    localizer_weights: str | None = None
    reference: str | None = None
    prompt_mode: str = "slice"
    organs: str | None = None
    box_jitter: int = 0
    box_margin: BoxMargin = DEFAULT_BOX_MARGIN
    backbone: str = "litemedsam"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    window: tuple[float, float] | None = None
    precision: str = "float32"
    device: str = "auto"
    runtime: str = "auto"
    embedding_cache: bool = True
    overwrite: bool = False
    dicom_out: tuple[str, ...] = ()
    """DICOM objects to write too (:data:`URSAMLib.dicom_out.OUTPUTS` kinds); needs a DICOM series input."""
    settings: Settings = field(default_factory=Settings)


def select_organs(classes: dict[int, str], requested: str | None, present: set[int],
                  classes_path: str) -> dict[int, str]:
    """The organs to segment: ``requested`` names (all must be in the class map), or every
    class with voxels in the prompt labels."""
    if not requested:
        chosen = {label: name for label, name in classes.items() if label in present}
        if not chosen:
            raise URSAMError(f"None of the labels in {classes_path} occur in the prompt label map; "
                             "check that the class map belongs to these labels.")
        return chosen
    return select_by_name(classes, [n.strip() for n in requested.split(",") if n.strip()], classes_path)


@dataclass
class Prompting:
    """Where a run's prompts came from, and what to score the result against."""

    prompts: list
    missing: dict[str, str]
    description: dict
    reference: np.ndarray | None = None
    """Axial label map for the DSC in summary.json (None: no score)."""
    reference_key: str = "dice_vs_reference"
    boxes_json: dict | None = None
    quality_context: quality.QualityContext | None = None
    """What the organs' predicted DSC is computed from, for automatic prompts (None: given boxes)."""


def _prompts_from_label_map(job: SegmentJob, ct_image) -> Prompting:
    if not job.classes:
        raise URSAMError("--prompt-labels needs --classes CLASSES.json (label value → organ name).")
    classes = io.read_classes(job.classes)
    labels, frame = io.axial_array(io.read_label_map(job.prompt_labels, ct_image), np.uint16)
    organs = select_organs(classes, job.organs, set(np.unique(labels).tolist()), job.classes)
    prompts, missing = prompts_from_labels(labels, organs, job.prompt_mode, margin=job.box_margin,
                                           spacing=frame.spacing, jitter=job.box_jitter, seed=job.settings.seed)
    if not prompts:
        raise URSAMError(f"None of the requested organs has voxels in {job.prompt_labels}; "
                         "nothing to prompt with.")
    return Prompting(prompts, missing, {"prompt_labels": str(job.prompt_labels), "classes": str(job.classes),
                                        "prompt_mode": job.prompt_mode, "box_jitter": job.box_jitter},
                     labels, "dice_vs_prompt_labels")


@dataclass
class TemplateChoice:
    """The template a job localizes with, the organs it asks for and the localizer that finds them."""

    template: object
    """A :class:`URSAMLib.template.Template`."""
    organs: list[str]
    localizer: str
    description: dict


def _prompts_from_template(job: SegmentJob, chosen: TemplateChoice, ct_image, frame, progress) -> Prompting:
    found = prompts_from_template(ct_image, chosen.template, chosen.organs, chosen.localizer,
                                  job.localizer_weights, job.box_margin, progress)
    if not found.prompts:
        raise no_organ_found(found, chosen.template, str(job.ct))
    return Prompting(found.prompts, found.missing, chosen.description,
                     boxes_json=_boxes_json(found.localizations, frame, ct_image, found.margin),
                     quality_context=quality.automatic_context(found.localizations, chosen.template,
                                                               float(np.prod(frame.spacing)) / 1000.0))


def template_organs(job: SegmentJob) -> TemplateChoice:
    """The job's template (a folder, or a built-in region's) and organs, checked before any work."""
    if job.region:
        builtin = region_template(job.region)
        template, localizer = Template.load(builtin.folder), job.localizer or builtin.localizer
        description = {"region": job.region, "template": f"built-in {job.region} ({len(template.supports)} "
                       "supports)"}
    else:
        template, localizer = Template.load(job.template), job.localizer or "registration"
        description = {"template": str(job.template)}
    check_localizer(localizer)
    organs = [n.strip() for n in job.organs.split(",") if n.strip()] if job.organs else list(template.organs)
    check_known(organs, template.organs, "the template")
    description.update(localizer=localizer, body_region=template.body_region)
    return TemplateChoice(template, organs, localizer, description)


def _boxes_json(localizations, frame, ct_image, margin) -> dict:
    """Per organ: fused extreme points in voxels (i, j, k) and LPS mm, the extended box, agreement."""
    entries = {}
    for name, loc in localizations.items():
        entry = {"label": loc.label, "found": loc.box is not None, "reason": loc.reason,
                 "agreement": round(loc.agreement, 4), **({"localizer": loc.localizer} if loc.localizer else {}),
                 "extreme_points_ijk": None, "extreme_points_mm": None}
        if loc.points is not None:  # None: the localizer placed no point (an atlas vote that is empty)
            ijk = frame.index_to_stored(loc.points)
            entry["extreme_points_ijk"] = np.round(ijk, 2).tolist()
            entry["extreme_points_mm"] = [list(ct_image.TransformContinuousIndexToPhysicalPoint(p.tolist()))
                                          for p in ijk]
        if loc.box is not None:
            entry["box_axial_zyx"] = loc.box.as_list()
            if loc.slice_boxes:  # atlas prompts: per-slice part boxes, not the 3-D box extended
                entry["prompt_slices"] = len(loc.slice_boxes)
                entry["prompt_boxes"] = sum(len(parts) for parts in loc.slice_boxes.values())
            else:
                entry["extended_box_axial_zyx"] = loc.box.extended(margin, frame.shape).as_list()
        entries[name] = entry
    return {"point_order": ["-x (right)", "+x (left)", "-y (anterior)", "+y (posterior)", "-z (inferior)",
                            "+z (superior)"], "box_margin_zyx": list(margin), "organs": entries}


def check_model_choice(job: SegmentJob) -> None:
    """The model options a user can get wrong, checked before anything is read or loaded (torch alone
    takes seconds to import): the backbone's name, the device's name, the checkpoint's path and pin."""
    entries = backbones.catalogue()
    if job.backbone not in entries:
        raise URSAMError(f"Unknown backbone {job.backbone!r}; choose one of: {', '.join(entries)}.")
    backbones.check_device_name(job.device)
    check_runtime_choice(job.runtime, job.device, job.precision)
    if job.checkpoint and not Path(job.checkpoint).expanduser().is_file():
        raise URSAMError(f"Checkpoint {job.checkpoint} does not exist; check the checkpoint path (--checkpoint).")
    if job.checkpoint_sha256:
        parse_sha256(job.checkpoint_sha256)


PIN_HINT = "--checkpoint-sha256 {sha256}"
"""How a user pins a checkpoint, in the unverified-weights warning (the Slicer module names its field)."""


def load_job_backbone(job: SegmentJob, warn: Warn = _no_warn):
    """The job's backbone: its checkpoint (checked against the pin), device, and runtime compiled for
    the job's precision."""
    return backbones.load_backbone(job.backbone, job.checkpoint, job.device, checkpoint_sha256=job.checkpoint_sha256,
                                   runtime=job.runtime, precision=job.precision, warn=warn)


def set_up_backbone(job: SegmentJob, backbone, warn: Warn = _no_warn, pin_hint: str = PIN_HINT) -> None:
    """Give a loaded backbone (this job's, or one reused across jobs) the job's window (None: keep
    the backbone's), precision and embedding cache, and warn about weights nothing vouches for."""
    if getattr(backbone, "weights_verified", True) is False:  # also for a model loaded by the caller
        warn(f"{job.checkpoint} is not a checkpoint URSAM can verify (no published SHA-256); it was loaded as "
             "weights only, so it cannot run code, but nothing vouches for where it came from. To have exactly "
             f"this file checked on every run, pin it: {pin_hint.format(sha256=backbone.weights_sha256)}")
    if job.window:
        backbone.window = tuple(job.window)
    backbone.precision = job.precision
    embedding_cache.attach(backbone, job.embedding_cache)


BackboneLoader = Callable[[str, "str | None", str], object]
"""``(name, checkpoint, device) -> backbone``: a caller's own loader instead of :func:`load_job_backbone`."""

_BACKBONES: dict[tuple, object] = {}
"""The one model kept loaded in this process, by what loaded it (see :func:`cached_backbone`)."""


def cached_backbone(job: SegmentJob, loader: BackboneLoader | None = None, warn: Warn = _no_warn,
                    pin_hint: str = PIN_HINT):
    """The job's backbone, loaded once per process and kept (loading weights costs seconds), as a
    shallow copy set up for this job by :func:`set_up_backbone`: its window (or the model's own),
    precision and embedding cache, so nothing one job sets reaches the next. Only one model is kept:
    asking for another (backbone, checkpoint, device, pin, runtime, a runtime's precision or loader) drops
    the previous one.

    loader: ``(name, checkpoint, device) -> backbone`` instead of :func:`load_job_backbone` (which
    checks the checkpoint's pin and attaches the runtime). warn: loading and unverified-weights notes."""
    # PyTorch runs any precision with one model; a runtime's engine is compiled for one
    precision = None if job.runtime == "torch" else job.precision
    # the loader in use belongs to the key: a test that swaps backbones.load_backbone gets its own model
    key = (job.backbone, job.checkpoint, job.device, job.checkpoint_sha256, job.runtime, precision,
           loader if loader is not None else backbones.load_backbone)
    if key not in _BACKBONES:
        _BACKBONES.clear()  # one model in memory, not one per setting tried
        _BACKBONES[key] = (load_job_backbone(job, warn) if loader is None
                           else loader(job.backbone, job.checkpoint, job.device))
    backbone = copy.copy(_BACKBONES[key])  # the weights are shared; window, precision, cache are this job's
    set_up_backbone(job, backbone, warn, pin_hint)
    return backbone


PROMPT_SOURCES = ("--prompt-labels LABELS (with --classes)", "--region REGION (a built-in template: "
                  "'ursam templates')", "--template TEMPLATE_DIR (your own template)")


def check_prompt_source(job: SegmentJob, labels_given: bool | None = None) -> None:
    """Exactly one prompt source; ``labels_given`` overrides ``job.prompt_labels`` (a batch has a pattern)."""
    given = [bool(job.prompt_labels) if labels_given is None else labels_given, bool(job.region),
             bool(job.template)]
    if sum(given) != 1:
        raise URSAMError(f"Give exactly one prompt source: {', or '.join(PROMPT_SOURCES)}.")


@dataclass
class Segmented:
    """What a job computes before anything is written (:func:`segment_job_ct`)."""

    prompting: Prompting
    result: SegmentationResult
    backbone: object
    """The model, set up for the job (window, precision, embedding cache)."""
    loaded_at: float
    """``time.perf_counter()`` once the prompts were found and the model loaded."""


def segment_job_ct(job: SegmentJob, ct_image, hu: np.ndarray, frame, progress_bar: ProgressBar = _no_bar,
                   warn: Warn = _no_warn, backbone=None) -> Segmented:
    """A job's prompts for its CT (already read: ``ct_image``, its axial ``hu`` and ``frame`` from
    :func:`URSAMLib.io.axial_array`), the model set up for it, and UR-SAM's result; nothing is written.
    :func:`run_segment_job` calls it between its input checks and its outputs; scripts that score
    the product's own run call it directly.

    backbone: an already loaded model to reuse (see :func:`run_segment_job`); None: the job's own.
    """
    settings = job.settings.validate()
    if job.prompt_labels:
        prompting = _prompts_from_label_map(job, ct_image)
    else:
        chosen = template_organs(job)  # checked before any progress bar starts
        prompting = progress_bar("Localizing", lambda progress: _prompts_from_template(
            job, chosen, ct_image, frame, progress))
    if job.reference:
        prompting.reference = io.axial_array(io.read_label_map(job.reference, ct_image), np.uint16)[0]
        prompting.reference_key = "dice_vs_reference"
    if backbone is None:
        backbone = load_job_backbone(job, warn)
    set_up_backbone(job, backbone, warn)
    loaded = time.perf_counter()

    result = progress_bar("UR-SAM", lambda progress: segment(
        hu, prompting.prompts, backbone, settings, progress=progress))
    return Segmented(prompting, result, backbone, loaded)


def run_segment_job(job: SegmentJob, progress_bar: ProgressBar = _no_bar, warn: Warn = _no_warn,
                    backbone=None) -> dict:
    """Run one job and write its outputs; returns the summary written to summary.json.

    Warnings (e.g. intensities that are not CT) go to ``warn`` when they arise and into the
    summary's ``warnings``.

    backbone: an already loaded ``load_backbone(job.backbone, job.checkpoint, job.device)`` to
    reuse across jobs (``ursam batch``); the job sets its window and precision.
    """
    started = time.perf_counter()
    outdir = Path(job.output)
    outputs.check_output_dir(outdir, job.overwrite)
    written = list(outputs.OUTPUT_FILES) + ["boxes.json"] + dicom_out.filenames(job.dicom_out)
    outputs.check_inputs_survive(outdir, written, [job.ct, job.prompt_labels, job.classes, job.reference,
                                                   job.checkpoint, job.template, job.localizer_weights])
    check_prompt_source(job)
    settings = job.settings.validate()
    check_model_choice(job)
    dicom_out.check_request(job.ct, job.dicom_out)
    ct_image = io.read_ct(job.ct)
    hu, frame = io.axial_array(ct_image)
    warnings: list[str] = []

    def note(message: str | None) -> None:
        if message:
            warnings.append(message)
            warn(message)

    note(io.intensity_warning(hu, str(job.ct)))
    source = dicom_out.read_source(job.ct, ct_image, note) if job.dicom_out else None
    computed = segment_job_ct(job, ct_image, hu, frame, progress_bar, note, backbone)
    prompting, result, backbone = computed.prompting, computed.result, computed.backbone
    summary = {
        "input": {"ct": str(job.ct), "size_ijk": list(ct_image.GetSize()),
                  "spacing_mm": list(ct_image.GetSpacing()), **prompting.description,
                  "box_margin_zyx": str(job.box_margin), "reference": job.reference},
        "backbone": {"name": backbone.name, "weights": backbone.weights,
                     "weights_verified": getattr(backbone, "weights_verified", None), "device": backbone.device,
                     "runtime": getattr(backbone, "runtime", "torch"), "precision": backbone.precision,
                     "window_hu": list(backbone.window)},
        "parameters": {k: getattr(settings, k) for k in
                       ("num_aug", "ratio", "seed", "method", "alpha_h", "lower_bound", "fixed_threshold",
                        "prior_weight", "max_zoom")},
        "organs": {},
        "not_found": prompting.missing,
        "warnings": warnings,
    }
    rectified, ensemble = result.label_map("rectified"), result.label_map("ensemble")
    context = prompting.quality_context or quality.QualityContext("given", float(np.prod(frame.spacing)) / 1000.0)
    assessed = quality.assess_result(result, context)
    for organ in result.organs:
        entry = outputs.organ_summary(organ, frame, ct_image)
        entry.update(predicted_dsc=assessed[organ.name]["predicted_dsc"], review=assessed[organ.name]["review"],
                     quality_signals=assessed[organ.name]["signals"])
        if prompting.reference is not None:
            reference = prompting.reference == organ.label
            entry[prompting.reference_key] = {
                "ensemble": round(metrics.dice(ensemble == organ.label, reference), 4),
                "rectified": round(metrics.dice(rectified == organ.label, reference), 4)}
            if organ.prior is not None:  # the multi-atlas segmentation alone, a baseline without SAM
                vote = np.zeros(result.shape, bool)
                vote[organ.region] = organ.prior >= 0.5
                entry[prompting.reference_key]["atlas_vote"] = round(metrics.dice(vote, reference), 4)
        summary["organs"][organ.name] = entry
    summary["review_order"] = quality.review_order({name: entry["predicted_dsc"]
                                                    for name, entry in summary["organs"].items()})
    files = (list(outputs.OUTPUT_FILES) + (["boxes.json"] if prompting.boxes_json else [])
             + dicom_out.filenames(job.dicom_out))
    with outputs.staged_output(outdir, job.overwrite) as staging:
        # each whole volume made once: a 512 x 512 x 300 CT's uncertainty alone is 315 MB
        maps = {"rectified": rectified, "ensemble": ensemble, "uncertainty": result.uncertainty_map()}
        outputs.write_results(staging, maps, ct_image)
        save_overview(staging / "overview.png", hu, rectified, maps["uncertainty"],
                      {o.label: quality.legend(o.name, summary["organs"][o.name]) for o in result.organs},
                      frame.spacing)
        if prompting.boxes_json:
            (staging / "boxes.json").write_text(json.dumps(prompting.boxes_json, indent=1) + "\n")
        if source is not None:
            dicom_out.write_outputs(staging, job.dicom_out, source, {k: frame.from_axial(v) for k, v in maps.items()},
                                    {o.label: o.name for o in result.organs},
                                    {"backbone": backbone.name, **summary["parameters"]})
        summary["timings_s"] = {**{k: round(v, 3) for k, v in result.timings.items()},
                                "load_and_localize_s": round(computed.loaded_at - started, 3),
                                "all_s": round(time.perf_counter() - started, 3)}
        summary["outputs"] = files
        outputs.write_summary(staging / "summary.json", summary)
    return summary
