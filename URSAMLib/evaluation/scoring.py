"""One patient of an evaluation: its prompts, one run of every variant, and each organ x method scored
against the reference labels (DSC, HD95, uncertainty quality), plus the material of Fig. 5."""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import numpy as np

from ..backbones import window_ct
from ..error_map import error_likelihood
from ..localize import box_iou, prompts_from_template
from ..metrics import auroc, dice, hausdorff95
from ..pipeline import OrganResult, SegmentationResult, segment_variants
from ..progress import Progress
from ..quality import QualityContext, assess_result, automatic_context
from ..prompts import Box3D, OrganPrompt, prompts_from_labels
from .cases import LoadedCase
from .plan import JITTER_REFERENCE_PX, SWEEP_NUM_AUG, SWEEP_RATIOS, EvalConfig, Variant, plan_variants


PANELS_PER_PATIENT = 3


def manual_jitter(config: EvalConfig, slice_shape: tuple[int, int]) -> int:
    """The manual-prompt jitter in this slice's pixels (see :data:`JITTER_REFERENCE_PX`)."""
    return int(round(config.jitter * max(slice_shape) / JITTER_REFERENCE_PX))


def build_prompts(loaded: LoadedCase, config: EvalConfig,
                  auto: list[OrganPrompt] | None) -> dict[str, list[OrganPrompt]]:
    """Prompt source → prompts; ``auto``: the template's prompts (None without a template), given
    the reference's label values here."""
    labels, organs = loaded.labels, loaded.organs
    sources = {
        "box3d": prompts_from_labels(labels, organs, "box3d", margin=config.margin, spacing=loaded.spacing)[0],
        "slice": prompts_from_labels(labels, organs, "slice")[0],
        "manual": prompts_from_labels(labels, organs, "slice", jitter=manual_jitter(config, labels.shape[1:]),
                                      seed=config.settings.seed)[0],
    }
    if auto is not None:
        label_of = {name: label for label, name in organs.items()}
        sources["auto"] = [replace(prompt, label=label_of[prompt.name]) for prompt in auto]
    return sources


def localization_summary(loaded: LoadedCase, config: EvalConfig, localizations: dict) -> dict:
    """Per organ: found, the supports' agreement, and the IoU of the localized (extended) box
    with the reference's (extended) box — how far automatic prompts are from perfect ones."""
    summary, margin = {}, config.margin.voxels(loaded.spacing)
    for label, name in loaded.organs.items():
        loc = localizations.get(name)
        entry = {"found": bool(loc is not None and loc.box is not None),
                 "reason": None if loc is None else loc.reason}
        if entry["found"]:
            reference = Box3D.from_mask(loaded.labels == label).extended(margin, loaded.labels.shape)
            auto = loc.box.extended(margin, loaded.labels.shape)
            entry.update(agreement=round(float(loc.agreement), 4), box_iou=round(box_iou(auto, reference), 4),
                         box_zyx=auto.as_list(), reference_box_zyx=reference.as_list())
        elif loc is None:
            entry["reason"] = "not in the template"
        summary[name] = entry
    return summary


def _mask_key(mask: np.ndarray) -> str:
    return hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).hexdigest()


def score_variant(result: SegmentationResult, variant: Variant, loaded: LoadedCase,
                  missing: list[str], assessed: dict[str, dict] | None = None) -> list[dict]:
    """Rows for every organ x method of one variant's result (rectification re-run per method).

    Organs in ``missing`` (the localizer did not find them) score DSC 0 for every method.
    assessed: :func:`URSAMLib.quality.assess_result` of the result as segmented (each organ's
    predicted DSC and Review flag, the same on every method's row).
    """
    assessed = assessed or {}
    rows, hd_cache = [], {}
    reference_counts = {label: int(np.count_nonzero(loaded.labels == label)) for label in loaded.organs}
    voxel_ml = float(np.prod(loaded.spacing)) / 1000.0
    base = {"patient": loaded.case.name, "prompt": variant.prompt, "variant": variant.key,
            "num_aug": variant.settings.num_aug, "ratio": variant.settings.ratio,
            "refine": variant.settings.refine, "setting": variant.setting}
    per_organ = {organ.label: _organ_constants(organ, loaded, variant.settings.num_aug) for organ in result.organs}
    for method in variant.methods:
        if method != "one-box":
            result.rerectify(method=method)
        for organ in result.organs:
            reference = loaded.labels[organ.region] == organ.label
            if method == "one-box":
                mask, threshold, uncertain, changed = organ.plain > 0.5, float("nan"), 0, 0
            else:
                mask = organ.mask
                threshold = float(organ.rectification.threshold)
                uncertain = int(np.count_nonzero(organ.rectification.uncertain))
                changed = int(np.count_nonzero(mask ^ organ.ensemble_mask))
            key = (organ.label, _mask_key(mask))
            if key not in hd_cache:
                full = np.zeros(loaded.labels.shape, bool)
                full[organ.region] = mask
                hd_cache[key] = hausdorff95(full, loaded.labels == organ.label, loaded.spacing)
            predicted, overlap = int(np.count_nonzero(mask)), int(np.count_nonzero(mask & reference))
            total = predicted + reference_counts[organ.label]
            rows.append({**base, "organ": organ.name, "method": method, "found": True,
                         "dsc": 2.0 * overlap / total if total else 1.0, "hd95_mm": hd_cache[key],
                         "threshold": threshold, "uncertain_voxels": uncertain, "changed_voxels": changed,
                         "predicted_ml": predicted * voxel_ml,
                         "reference_ml": reference_counts[organ.label] * voxel_ml,
                         "predicted_dsc": assessed.get(organ.name, {}).get("predicted_dsc"),
                         "review": assessed.get(organ.name, {}).get("review"),
                         **per_organ[organ.label]})
        for name in missing:
            label = next(v for v, n in loaded.organs.items() if n == name)
            rows.append({**base, "organ": name, "method": method, "found": False, "dsc": 0.0,
                         "hd95_mm": float("nan"), "threshold": float("nan"), "uncertain_voxels": 0,
                         "changed_voxels": 0, "predicted_ml": 0.0,
                         "reference_ml": reference_counts[label] * voxel_ml, "mean_uncertainty": float("nan"),
                         "auroc": float("nan"), "auroc_error_map": float("nan"), "ensemble_error_voxels": 0,
                         "reference_in_boxes": 0.0})
    return rows


ATLAS_VARIANT = "atlas"
"""Rows of the multi-atlas vote (variant ``atlas``, method ``atlas-vote``): the classical baseline that
the atlas localizer computes anyway, scored like every method."""


def score_atlas_vote(localizations: dict, loaded: LoadedCase) -> list[dict]:
    """Rows for the multi-atlas segmentation (the majority vote of the registered supports' label
    maps) of every organ, where the localizer made one; an organ it did not place scores DSC 0."""
    if not any(loc.atlas is not None for loc in localizations.values()):
        return []
    rows = []
    voxel_ml = float(np.prod(loaded.spacing)) / 1000.0
    for label, name in loaded.organs.items():
        reference = loaded.labels == label
        loc = localizations.get(name)
        mask = loc.atlas.mask(reference.shape) if loc is not None and loc.atlas is not None and loc.box is not None \
            else np.zeros_like(reference)
        rows.append({"patient": loaded.case.name, "prompt": ATLAS_VARIANT, "variant": ATLAS_VARIANT,
                     "num_aug": 0, "ratio": 0.0, "refine": False, "setting": "vote", "organ": name,
                     "method": "atlas-vote", "found": bool(mask.any()), "dsc": dice(mask, reference),
                     "hd95_mm": hausdorff95(mask, reference, loaded.spacing) if mask.any() else float("nan"),
                     "threshold": float("nan"), "uncertain_voxels": 0, "changed_voxels": 0,
                     "predicted_ml": float(mask.sum()) * voxel_ml, "reference_ml": float(reference.sum()) * voxel_ml,
                     "mean_uncertainty": float("nan"), "auroc": float("nan"), "auroc_error_map": float("nan"),
                     "ensemble_error_voxels": 0,
                     "reference_in_boxes": float("nan")})
    return rows


def _organ_constants(organ: OrganResult, loaded: LoadedCase, num_aug: int) -> dict:
    """What depends only on the ensemble: mean uncertainty in the boxes, the AUROC of voxel
    uncertainty (the paper's entropy, and :mod:`URSAMLib.error_map`'s error likelihood) for the
    ensemble's errors inside the boxes, and how much of the reference organ the boxes cover."""
    reference = loaded.labels[organ.region] == organ.label
    inside = organ.box_region
    errors = (organ.ensemble_mask != reference)[inside]
    total_reference = int(np.count_nonzero(loaded.labels == organ.label))
    likelihood = error_likelihood(organ, loaded.spacing, num_aug)
    return {"mean_uncertainty": organ.mean_uncertainty,
            "auroc": auroc(organ.uncertainty[inside], errors),
            "auroc_error_map": float("nan") if likelihood is None else auroc(likelihood[inside], errors),
            "ensemble_error_voxels": int(errors.sum()),
            "reference_in_boxes": float(np.count_nonzero(reference & inside)) / max(total_reference, 1)}


def panel_candidates(result: SegmentationResult, loaded: LoadedCase, window: tuple[float, float],
                     count: int = PANELS_PER_PATIENT) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fig. 5 material: for the ``count`` organs whose UR-SAM rectification changed most voxels on
    one slice, that slice's crop of CT, reference, ensemble probability, uncertainty and rectified
    mask. Returns (descriptions, arrays keyed ``<organ>/<what>``) — arrays stay out of the report."""
    result.rerectify(method="ursam")
    found = []
    for organ in result.organs:
        per_slice = (organ.mask ^ organ.ensemble_mask).sum(axis=(1, 2))
        if per_slice.max() > 0:
            found.append((int(per_slice.max()), organ, int(np.argmax(per_slice))))
    found.sort(key=lambda item: -item[0])
    entries, arrays = [], {}
    for changed, organ, dz in found[:count]:
        z = organ.region[0].start + dz
        reference = loaded.labels[z][organ.region[1:]] == organ.label
        ensemble, rectified = organ.ensemble_mask[dz], organ.mask[dz]
        entries.append({"organ": organ.name, "z": z, "changed_voxels": changed,
                        "slice_dsc_ensemble": dice(ensemble, reference),
                        "slice_dsc_ursam": dice(rectified, reference),
                        "pixel_aspect": loaded.spacing[1] / loaded.spacing[2]})
        for what, array in (("ct", window_ct(loaded.hu[z][organ.region[1:]], window)), ("reference", reference),
                            ("ensemble", organ.ensemble[dz]), ("uncertainty", organ.uncertainty[dz]),
                            ("rectified", rectified), ("box_region", organ.box_region[dz])):
            arrays[f"{organ.name}/{what}"] = np.asarray(array, np.float16 if array.dtype.kind == "f" else bool)
    return entries, arrays


def evaluate_case(loaded: LoadedCase, config: EvalConfig, backbone, template=None, sweep: bool = False,
                  progress: Progress | None = None, box_batch: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run and score every variant of one patient; returns (the cache record, panel arrays).

    box_batch: boxes per decoder call (None: the pipeline's default). It changes speed only —
    a box's map does not depend on the batch it is decoded in — so it is not part of the cache key.
    """
    started = time.perf_counter()

    def part(start: float, end: float) -> Progress | None:
        return None if progress is None else (lambda f, m: progress(start + (end - start) * f, m))

    auto, localization, localizations = None, {}, {}
    split = 0.0
    if template is not None:
        split = 0.15  # registering 5 supports costs about a sixth of a patient on a CPU
        organs = [n for n in loaded.organs.values() if n in template.organs]
        found = (prompts_from_template(loaded.image, template, organs, config.localizer, config.localizer_weights,
                                       config.margin, part(0, split)) if organs else None)
        auto = found.prompts if found else []
        localizations = found.localizations if found else {}
        localization = localization_summary(loaded, config, localizations)
    localized = time.perf_counter()
    sources = build_prompts(loaded, config, auto)
    variants = [v for v in plan_variants(config, template is not None, sweep) if sources[v.prompt]]
    if box_batch:
        variants = [replace(v, settings=replace(v.settings, box_batch=box_batch)) for v in variants]
    results = segment_variants(loaded.hu, {v.key: (sources[v.prompt], v.settings) for v in variants}, backbone,
                               part(split, 1.0))
    segmented = time.perf_counter()
    voxel_ml = float(np.prod(loaded.spacing)) / 1000.0
    rows = []
    for variant in variants:
        found = {p.name for p in sources[variant.prompt]}
        missing = [n for n in loaded.organs.values() if n not in found]
        context = (automatic_context(localizations, template, voxel_ml) if variant.prompt == "auto"
                   else QualityContext("given", voxel_ml))
        rows += score_variant(results[variant.key], variant, loaded, missing,
                              assess_result(results[variant.key], context))
    rows += score_atlas_vote(localizations, loaded)
    main = variants[0].key  # auto, else box3d: the source of the methods table
    panels, arrays = panel_candidates(results[main], loaded, backbone.window)
    timings = {k: round(float(v), 3) for k, v in results[main].timings.items()}
    timings.update(localize_s=round(localized - started, 3), segment_s=round(segmented - localized, 3),
                   score_s=round(time.perf_counter() - segmented, 3), total_s=round(time.perf_counter() - started, 3))
    record = {"patient": loaded.case.name, "ct": str(loaded.case.ct), "labels": str(loaded.case.reference),
              "shape_zyx": list(loaded.hu.shape), "spacing_zyx_mm": [round(s, 4) for s in loaded.spacing],
              "organs": list(loaded.organs.values()), "absent": loaded.absent, "main_variant": main,
              "variants": [v.key for v in variants], "localization": localization, "panels": panels,
              "timings": timings, "rows": rows}
    return record, arrays


def estimate_work(loaded_labels: np.ndarray, organs: dict[int, str], config: EvalConfig, has_template: bool,
                  sweep: bool, spacing: tuple[float, float, float]) -> tuple[int, int]:
    """(slices to embed, boxes to decode) for one patient, from its reference labels.

    Auto prompts are counted as if localization were perfect (box3d); refinement as a full
    second pass; the sweep's boxes as the distinct boxes of n = 1..7 (n = 3 and 5 reuse 7's).
    """
    zs, organ_slices, tight_slices = set(), 0, 0
    margin = config.margin.voxels(spacing)
    for label in organs:
        box = Box3D.from_mask(loaded_labels == label)
        if box is None:
            continue
        grown = box.extended(margin, loaded_labels.shape)
        zs.update(range(grown.z0, grown.z1 + 1))
        organ_slices += grown.z1 - grown.z0 + 1
        tight_slices += int((loaded_labels == label).any(axis=(1, 2)).sum())
    n = config.settings.num_aug
    main = 1 + len(SWEEP_RATIOS) * (max(SWEEP_NUM_AUG) - 1) if sweep else n
    per_box3d_slice = main + (n if config.refine else 0) + (n if has_template else 0)
    return len(zs), organ_slices * per_box3d_slice + tight_slices * (n + 1)
