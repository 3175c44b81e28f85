"""`ursam evaluate`: UR-SAM and the paper's comparison methods over labelled CTs, scored.

Per patient there is exactly one :func:`~URSAMLib.pipeline.segment_variants` call, so every
method and setting of a patient shares its slice embeddings (and identical boxes are decoded
once). Its variants are prompt sources x augmentation settings:

* ``auto``: the template's localized 3-D box, extended by the box margin (default 5, 10, 10 mm), on every slice
  (only with a template); ``box3d``: the same from the reference labels (perfect
  localization); ``slice``: a tight box per slice from the labels; ``manual``: ``slice``
  widened by a random 0..jitter pixels per side (MedSAM's simulated manual prompting);
* ``<main>-refine``: the main source (``auto``, else ``box3d``) with slice-wise refinement;
* with the sweep, the main source at every Table I setting (n = 1, and n in {3, 5, 7} x
  ratio in {0.005, 0.01, 0.03, 0.05, 0.1}).

Methods that differ only in rectification come from ``rerectify`` on the same ensemble;
"one-box" is the un-augmented box alone (row 0 of every augmentation). Each organ is scored
from its own crop (variants and organs never interact) against the reference labels.
Results are cached per patient in ``REPORT/cases/<patient>.json``: a rerun skips patients
already done with the same configuration.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import io
from .errors import URSAMError
from .localize import box_iou, prompts_from_template
from .metrics import HD95_DEFINITION, auroc, hausdorff95
from .pipeline import OrganResult, SegmentationResult, Settings, segment_variants
from .progress import Progress
from .prompts import DEFAULT_BOX_MARGIN, Box3D, BoxMargin, OrganPrompt, prompts_from_labels
from .rectify import DEFAULT_ALPHA_H, DEFAULT_FIXED_THRESHOLD, DEFAULT_LOWER_BOUND

Log = Callable[[str], None]

RECTIFICATIONS = ("ensemble", "unc-fpc", "unc-fnc", "unc-fpnc", "fixed", "ursam")
ALL_METHODS = ("one-box",) + RECTIFICATIONS
SWEEP_NUM_AUG = (3, 5, 7)
SWEEP_RATIOS = (0.005, 0.01, 0.03, 0.05, 0.1)
JITTER_REFERENCE_PX = 512
"""``--jitter`` is in pixels of a 512-pixel slice (the paper's images) and scaled to the slice's
longest side, like the augmentation ratio: 20 px would be 11 cm on a 128-pixel head-and-neck
slice of 5.4 mm pixels, but is 2 cm on a 512-pixel slice of 1 mm pixels."""
LABEL_SUFFIXES = ("oar", "labels", "label", "seg")
PANELS_PER_PATIENT = 3
CASES_DIR, CACHE_DIR = "cases", "cache"


@dataclass(frozen=True)
class Case:
    """One labelled CT: ``name`` (unique in a report), the CT and its reference label map."""

    name: str
    ct: Path
    labels: Path


@dataclass(frozen=True)
class EvalConfig:
    """Everything that changes a patient's results (the cache is valid only for the same)."""

    organs: tuple[str, ...] = ()
    """Organ names to evaluate (empty: every class of the class map)."""
    num_aug: int = 3
    ratio: float = 0.01
    seed: int = 0
    jitter: int = 20
    """Manual prompting: each side widened by 0..jitter px of a 512-px slice (scaled)."""
    margin: BoxMargin = DEFAULT_BOX_MARGIN
    """3-D box extension (default 5,10,10 mm: the paper's [2, 10, 10] voxels in physical size)."""
    alpha_h: float = DEFAULT_ALPHA_H
    lower_bound: str = DEFAULT_LOWER_BOUND
    fixed_threshold: float = DEFAULT_FIXED_THRESHOLD
    refine: bool = True
    backbone: str = "litemedsam"
    checkpoint: str | None = None
    precision: str = "float32"
    window: tuple[float, float] | None = None
    localizer: str = "registration"
    localizer_weights: str | None = None

    def settings(self, **changes) -> Settings:
        return replace(Settings(num_aug=self.num_aug, ratio=self.ratio, seed=self.seed, alpha_h=self.alpha_h,
                                lower_bound=self.lower_bound, fixed_threshold=self.fixed_threshold),
                       **changes).validate()

    def key(self, template: str | None, sweep: bool) -> dict:
        """JSON-able identity of a patient's run (template folder, whether it had the sweep, and
        the HD95 definition its rows were scored with)."""
        return json.loads(json.dumps({**asdict(self), "template": template, "sweep": sweep,
                                      "hd95": HD95_DEFINITION}))


@dataclass(frozen=True)
class Variant:
    """One run of a patient: a prompt source at one setting, and the methods scored on it."""

    key: str
    prompt: str
    """``auto``, ``box3d``, ``slice`` or ``manual``."""
    settings: Settings
    methods: tuple[str, ...]
    setting: str
    """Human-readable setting, e.g. ``n=3, r=0.01`` or ``refined``."""


def setting_name(num_aug: int, ratio: float) -> str:
    return "no augmentation" if num_aug == 1 else f"n={num_aug}, r={ratio:g}"


def plan_variants(config: EvalConfig, has_template: bool, sweep: bool) -> list[Variant]:
    """The variants of one patient's run (see the module docstring)."""
    main = "auto" if has_template else "box3d"
    base = config.settings()
    default = setting_name(config.num_aug, config.ratio)
    variants = []
    if has_template:
        variants.append(Variant("auto", "auto", base, ALL_METHODS, default))
    variants.append(Variant("box3d", "box3d", base, ALL_METHODS, default))
    if config.refine:
        variants.append(Variant(f"{main}-refine", main, config.settings(refine=True), ALL_METHODS,
                                f"{default}, refined"))
    variants.append(Variant("slice", "slice", base, ALL_METHODS, default))
    variants.append(Variant("manual", "manual", config.settings(num_aug=1), ("one-box",), "one box"))
    if sweep:
        variants.append(Variant(f"{main}@n1", main, config.settings(num_aug=1), ("ensemble", "ursam"),
                                setting_name(1, 0.0)))
        for n in SWEEP_NUM_AUG:
            for ratio in SWEEP_RATIOS:
                if (n, ratio) != (config.num_aug, config.ratio):  # the default run is the main variant
                    variants.append(Variant(f"{main}@n{n}r{ratio:g}", main, config.settings(num_aug=n, ratio=ratio),
                                            ("ensemble", "ursam"), setting_name(n, ratio)))
    return variants


# ---------------------------------------------------------------------------------------
# Finding the cases.
def label_path_for(ct: Path) -> Path | None:
    """The reference label map beside a CT, by name: the ``ct`` token of its file name replaced by
    ``oar``, ``labels``, ``label`` or ``seg`` (``pt_1_ct.nii.gz`` → ``pt_1_oar.nii.gz``,
    ``ct_small.nii.gz`` → ``labels_small.nii.gz``); None when there is none."""
    stem, dot, extension = ct.name.partition(".")
    tokens = stem.split("_")
    for i in reversed(range(len(tokens))):
        if tokens[i].lower() == "ct":
            for suffix in LABEL_SUFFIXES:
                candidate = ct.with_name("_".join(tokens[:i] + [suffix] + tokens[i + 1:]) + dot + extension)
                if candidate.is_file():
                    return candidate
            return None
    return None


def case_name(ct: Path) -> str:
    stem = ct.name.partition(".")[0]
    tokens = [t for t in stem.split("_") if t.lower() != "ct"]
    return "_".join(tokens) or ct.parent.name


def _natural_key(path: Path):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_cases(inputs: list[str], labels: list[str] | None = None) -> list[Case]:
    """Cases from CT files (with ``labels`` in the same order, or found by name) and folders
    (every CT file in them whose label map is found by name), in natural order."""
    if labels and len(labels) != len(inputs):
        raise URSAMError(f"Give one label map per CT ({len(inputs)} CTs, {len(labels)} label maps).")
    cases = []
    for k, given in enumerate(inputs):
        path = Path(given)
        if path.is_dir():
            if labels:
                raise URSAMError(f"{path} is a folder; --labels goes with CT files, not folders.")
            found = [(ct, label_path_for(ct)) for ct in sorted(path.iterdir(), key=_natural_key)
                     if ct.is_file() and (label_path_for(ct) is not None)]
            if not found:
                raise URSAMError(f"{path} holds no CT with a label map beside it (pt_1_ct.nii.gz with "
                                 "pt_1_oar.nii.gz, or ct.nii.gz with labels.nii.gz).")
            cases += [Case(case_name(ct), ct, lab) for ct, lab in found]
        elif path.is_file():
            label = Path(labels[k]) if labels else label_path_for(path)
            if label is None or not label.is_file():
                raise URSAMError(f"No label map for {path}: give it with --labels, or name it like the CT "
                                 "with 'ct' replaced by 'labels' or 'oar'.")
            cases.append(Case(case_name(path), path, label))
        else:
            raise URSAMError(f"{path} does not exist; give CT files or folders of labelled CTs.")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):  # e.g. two folders with ct.nii.gz: qualify by folder
        cases = [replace(c, name=f"{c.ct.parent.name}_{c.name}") for c in cases]
    if len({c.name for c in cases}) != len(cases):
        raise URSAMError("Two cases have the same name; give each CT once.")
    return cases


def find_classes(inputs: list[str], given: str | None) -> Path:
    """``--classes``, or a classes.json / CLASSES.json in the first input's folder or its parent."""
    if given:
        return Path(given)
    first = Path(inputs[0])
    folder = first if first.is_dir() else first.parent
    for place in (folder, folder.parent):
        for name in ("classes.json", "CLASSES.json"):
            if (place / name).is_file():
                return place / name
    raise URSAMError(f"No classes.json in {folder} or its parent; give the class map with --classes.")


# ---------------------------------------------------------------------------------------
# One patient.
@dataclass
class LoadedCase:
    """A case read into URSAM's axial arrays ``[z, y, x]``."""

    case: Case
    image: object
    """The CT as a SimpleITK image (for localization)."""
    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    """``(z, y, x)`` mm."""
    organs: dict[int, str]
    """Evaluated organs present in the reference: label value → name."""
    absent: list[str]


def load_case(case: Case, classes: dict[int, str], organs: tuple[str, ...]) -> LoadedCase:
    image = io.read_ct(case.ct)
    hu, frame = io.axial_array(image)
    labels, _ = io.axial_array(io.read_label_map(case.labels, image), np.uint16)
    wanted = select(classes, organs)
    present = set(np.unique(labels).tolist())
    chosen = {v: n for v, n in wanted.items() if v in present}
    absent = [n for v, n in wanted.items() if v not in present]
    return LoadedCase(case, image, hu, labels, frame.spacing, chosen, absent)


def select(classes: dict[int, str], organs: tuple[str, ...]) -> dict[int, str]:
    """The class-map entries named by ``organs`` (all when empty), in ``organs``' order."""
    if not organs:
        return dict(classes)
    by_name = {n: v for v, n in classes.items()}
    unknown = [o for o in organs if o not in by_name]
    if unknown:
        raise URSAMError(f"{', '.join(unknown)} not in the class map; it names: "
                         f"{', '.join(list(by_name)[:30])}{' ...' if len(by_name) > 30 else ''}.")
    return {by_name[o]: o for o in organs}


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
                                      seed=config.seed)[0],
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
                  missing: list[str]) -> list[dict]:
    """Rows for every organ x method of one variant's result (rectification re-run per method).

    Organs in ``missing`` (the localizer did not find them) score DSC 0 for every method.
    """
    rows, hd_cache = [], {}
    reference_counts = {label: int(np.count_nonzero(loaded.labels == label)) for label in loaded.organs}
    voxel_ml = float(np.prod(loaded.spacing)) / 1000.0
    base = {"patient": loaded.case.name, "prompt": variant.prompt, "variant": variant.key,
            "num_aug": variant.settings.num_aug, "ratio": variant.settings.ratio,
            "refine": variant.settings.refine, "setting": variant.setting}
    per_organ = {organ.label: _organ_constants(organ, loaded) for organ in result.organs}
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
                         **per_organ[organ.label]})
        for name in missing:
            label = next(v for v, n in loaded.organs.items() if n == name)
            rows.append({**base, "organ": name, "method": method, "found": False, "dsc": 0.0,
                         "hd95_mm": float("nan"), "threshold": float("nan"), "uncertain_voxels": 0,
                         "changed_voxels": 0, "predicted_ml": 0.0,
                         "reference_ml": reference_counts[label] * voxel_ml, "mean_uncertainty": float("nan"),
                         "auroc": float("nan"), "ensemble_error_voxels": 0, "reference_in_boxes": 0.0})
    return rows


def _organ_constants(organ: OrganResult, loaded: LoadedCase) -> dict:
    """What depends only on the ensemble: mean uncertainty in the boxes, the AUROC of voxel
    uncertainty for the ensemble's errors inside the boxes, and how much of the reference
    organ the boxes cover."""
    reference = loaded.labels[organ.region] == organ.label
    inside = organ.box_region
    errors = (organ.ensemble_mask != reference)[inside]
    total_reference = int(np.count_nonzero(loaded.labels == organ.label))
    return {"mean_uncertainty": organ.mean_uncertainty,
            "auroc": auroc(organ.uncertainty[inside], errors),
            "ensemble_error_voxels": int(errors.sum()),
            "reference_in_boxes": float(np.count_nonzero(reference & inside)) / max(total_reference, 1)}


def panel_candidates(result: SegmentationResult, loaded: LoadedCase, window: tuple[float, float],
                     count: int = PANELS_PER_PATIENT) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fig. 5 material: for the ``count`` organs whose UR-SAM rectification changed most voxels on
    one slice, that slice's crop of CT, reference, ensemble probability, uncertainty and rectified
    mask. Returns (descriptions, arrays keyed ``<organ>/<what>``) — arrays stay out of the report."""
    from .backbones import window_ct

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
                        "slice_dsc_ensemble": _dice(ensemble, reference),
                        "slice_dsc_ursam": _dice(rectified, reference),
                        "pixel_aspect": loaded.spacing[1] / loaded.spacing[2]})
        for what, array in (("ct", window_ct(loaded.hu[z][organ.region[1:]], window)), ("reference", reference),
                            ("ensemble", organ.ensemble[dz]), ("uncertainty", organ.uncertainty[dz]),
                            ("rectified", rectified), ("box_region", organ.box_region[dz])):
            arrays[f"{organ.name}/{what}"] = np.asarray(array, np.float16 if array.dtype.kind == "f" else bool)
    return entries, arrays


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 1.0


def evaluate_case(loaded: LoadedCase, config: EvalConfig, backbone, template=None, sweep: bool = False,
                  progress: Progress | None = None, box_batch: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run and score every variant of one patient; returns (the cache record, panel arrays).

    box_batch: boxes per decoder call (None: the pipeline's default). It changes speed only —
    a box's map does not depend on the batch it is decoded in — so it is not part of the cache key.
    """
    started = time.perf_counter()

    def part(start: float, end: float) -> Progress | None:
        return None if progress is None else (lambda f, m: progress(start + (end - start) * f, m))

    auto, localization = None, {}
    split = 0.0
    if template is not None:
        split = 0.15  # registering 5 supports costs about a sixth of a patient on a CPU
        organs = [n for n in loaded.organs.values() if n in template.organs]
        found = (prompts_from_template(loaded.image, template, organs, config.localizer, config.localizer_weights,
                                       config.margin, part(0, split)) if organs else None)
        auto = found.prompts if found else []
        localization = localization_summary(loaded, config, found.localizations if found else {})
    localized = time.perf_counter()
    sources = build_prompts(loaded, config, auto)
    variants = [v for v in plan_variants(config, template is not None, sweep) if sources[v.prompt]]
    if box_batch:
        variants = [replace(v, settings=replace(v.settings, box_batch=box_batch)) for v in variants]
    results = segment_variants(loaded.hu, {v.key: (sources[v.prompt], v.settings) for v in variants}, backbone,
                               part(split, 1.0))
    segmented = time.perf_counter()
    rows = []
    for variant in variants:
        found = {p.name for p in sources[variant.prompt]}
        missing = [n for n in loaded.organs.values() if n not in found]
        rows += score_variant(results[variant.key], variant, loaded, missing)
    main = variants[0].key  # auto, else box3d: the source of the methods table
    panels, arrays = panel_candidates(results[main], loaded, backbone.window)
    timings = {k: round(float(v), 3) for k, v in results[main].timings.items()}
    timings.update(localize_s=round(localized - started, 3), segment_s=round(segmented - localized, 3),
                   score_s=round(time.perf_counter() - segmented, 3), total_s=round(time.perf_counter() - started, 3))
    record = {"patient": loaded.case.name, "ct": str(loaded.case.ct), "labels": str(loaded.case.labels),
              "shape_zyx": list(loaded.hu.shape), "spacing_zyx_mm": [round(s, 4) for s in loaded.spacing],
              "organs": list(loaded.organs.values()), "absent": loaded.absent, "main_variant": main,
              "variants": [v.key for v in variants], "localization": localization, "panels": panels,
              "timings": timings, "rows": rows}
    return record, arrays


# ---------------------------------------------------------------------------------------
# Many patients, cached.
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
    n = config.num_aug
    main = 1 + len(SWEEP_RATIOS) * (max(SWEEP_NUM_AUG) - 1) if sweep else n
    per_box3d_slice = main + (n if config.refine else 0) + (n if has_template else 0)
    return len(zs), organ_slices * per_box3d_slice + tight_slices * (n + 1)


def _write_json(path: Path, data: dict) -> None:
    """Atomic: a reader (a report written while the run goes on) never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    os.replace(temporary, path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value)}")


def load_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class EvalRun:
    """What ``ursam evaluate`` needs besides the cases and the configuration."""

    output: Path
    classes: dict[int, str]
    template: object | None = None
    template_dir: str | None = None
    sweep_patients: int = 0
    """The first K cases also get the Table I sweep (-1: all)."""
    overwrite: bool = False
    device: str = "auto"
    box_batch: int | None = None
    """Boxes per decoder call (speed only; see :func:`evaluate_case`)."""
    backbone_loader: Callable | None = None
    """``() -> backbone``; called only if some patient needs computing (tests pass a stand-in)."""
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_cases(cases: list[Case], config: EvalConfig, run: EvalRun, progress: Progress | None = None,
              log: Log = print, on_done: Callable[[str], None] | None = None) -> list[dict]:
    """Evaluate every case not already cached with this configuration; returns every record.
    ``on_done(name)`` is called after each patient is computed and cached."""
    cases_dir = run.output / CASES_DIR
    panels_dir = run.output / CACHE_DIR / "panels"
    cases_dir.mkdir(parents=True, exist_ok=True)
    panels_dir.mkdir(parents=True, exist_ok=True)
    records, todo = {}, []
    for index, case in enumerate(cases):
        sweep = run.sweep_patients < 0 or index < run.sweep_patients
        key = config.key(run.template_dir, sweep)
        cached = None if run.overwrite else load_record(cases_dir / f"{case.name}.json")
        if cached is not None and cached.get("config") == key:
            records[case.name] = cached
            run.skipped.append(case.name)
        else:
            if cached is not None:
                log(f"{case.name}: cached with another configuration; recomputing")
            todo.append((case, sweep, key))
    if run.skipped:
        log(f"{len(run.skipped)} of {len(cases)} patients already done in {cases_dir}; skipping them")
    if todo:
        _announce_estimate(todo, config, run, log)
        backbone = run.backbone_loader()
        for k, (case, sweep, key) in enumerate(todo):
            def step(fraction: float, message: str, k=k, name=case.name) -> None:
                if progress:
                    progress((k + fraction) / len(todo), f"{name}: {message}")

            step(0.0, "loading")
            loaded = load_case(case, run.classes, config.organs)
            if not loaded.organs:
                log(f"{case.name}: none of the evaluated organs is in its labels; skipped")
                continue
            record, arrays = evaluate_case(loaded, config, backbone, run.template, sweep,
                                           lambda f, m, step=step: step(0.05 + 0.9 * f, m), run.box_batch)
            record["config"] = key
            np.savez_compressed(panels_dir / f"{case.name}.npz", **arrays)
            _write_json(cases_dir / f"{case.name}.json", record)
            records[case.name] = record
            run.computed.append(case.name)
            step(1.0, f"done in {record['timings']['total_s']:.0f} s")
            if on_done:
                on_done(case.name)
    return [records[c.name] for c in cases if c.name in records]


def _announce_estimate(todo, config: EvalConfig, run: EvalRun, log: Log) -> None:
    slices = boxes = 0
    for case, sweep, _ in todo:
        image = io.read_image(case.labels)
        labels, frame = io.axial_array(image, np.uint16)
        organs = {v: n for v, n in select(run.classes, config.organs).items()}
        s, b = estimate_work(labels, organs, config, run.template is not None, sweep, frame.spacing)
        slices, boxes = slices + s, boxes + b
    per_slice = 0.6 if config.precision == "bfloat16" else 1.2
    minutes = (slices * per_slice + boxes * 0.1) / 60
    log(f"To compute: {len(todo)} patients, about {slices} slices to embed and {boxes} boxes to decode: "
        f"~{minutes:.0f} min on an idle 2-core CPU ({per_slice} s/slice, 0.1 s/box; a GPU is far faster, a busy "
        "CPU slower). Finished patients are kept: rerun the same command to resume.")


# ---------------------------------------------------------------------------------------
# The whole command.
def prepare_template(output: Path, template: str | None, support_images: list[str] | None,
                     support_labels: list[str] | None, classes: dict[int, str], organs: tuple[str, ...],
                     cases: list[Case]):
    """(Template or None, its cache identity): ``--template DIR``, or one built from supports
    into ``REPORT/template`` (reused when it holds the same supports)."""
    from .template import Template, build_template

    if template and support_images:
        raise URSAMError("Give either --template or --support-images/--support-labels, not both.")
    if support_images:
        folder = output / "template"
        sources = sorted(str(Path(p).resolve()) for p in support_images)
        if (folder / "template.json").is_file():
            manifest = json.loads((folder / "template.json").read_text())
            if sorted(s["source_image"] for s in manifest["supports"]) != sources:
                raise URSAMError(f"{folder} holds a template of other supports; add --overwrite to rebuild it.")
            loaded = Template.load(folder)
        else:
            wanted = [o for o in (organs or classes.values())]
            loaded = build_template(support_images, support_labels or [], classes, folder,
                                    list(organs) if organs else None, overwrite=True) if wanted else None
    elif template:
        loaded = Template.load(template)
    else:
        return None, None
    supports = {str(Path(s).resolve()) for s in (support_images or [])}
    leaked = [c.name for c in cases if str(c.ct.resolve()) in supports]
    if leaked:
        raise URSAMError(f"{', '.join(leaked)} is also a support of the template; evaluate on other patients.")
    return loaded, {"supports": [s.name for s in loaded.supports], "organs": loaded.organs}


def evaluate_command(cases: list[Case], config: EvalConfig, run: EvalRun, context: dict,
                     report_only: bool = False, progress: Progress | None = None, log: Log = print) -> Path:
    """Compute what is missing (unless ``report_only``), then write results.csv, report.md and
    figures into ``run.output``; returns the report's path. ``context``: title, command, notes,
    backbone, device (for the report)."""
    from .report import environment, write_report

    run.output.mkdir(parents=True, exist_ok=True)
    history_path = run.output / "run.json"
    history = (None if run.overwrite else load_record(history_path)) or {"invocations": []}
    started = time.perf_counter()
    invocation = {"command": context["command"], "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "environment": environment(), "computed": [], "wall_s": 0.0,
                  "backbone": config.backbone, "device": run.device}

    def record_progress() -> None:
        invocation["computed"], invocation["wall_s"] = list(run.computed), round(time.perf_counter() - started, 1)
        if invocation not in history["invocations"]:
            history["invocations"].append(invocation)
        _write_json(history_path, history)

    if report_only:
        records = [r for c in cases if (r := load_record(run.output / CASES_DIR / f"{c.name}.json")) is not None]
    else:
        # After each patient the history is saved, so a partial report made meanwhile is current.
        records = run_cases(cases, config, run, progress, log, on_done=lambda name: record_progress())
        if run.computed:
            record_progress()
    if not records:
        raise URSAMError(f"No finished patient in {run.output}; run without --report-only first.")
    organs = list(select(run.classes, config.organs).values())
    write_report(run.output, records, {**context, "organs": organs, "total_cases": len(cases),
                                       "config": asdict(config), "invocations": history["invocations"],
                                       "template": context.get("template")})
    return run.output / "report.md"
