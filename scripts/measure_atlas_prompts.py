"""Measure atlas-shaped prompts against the multi-atlas vote and per-slice label boxes (OpenKBP).

For each patient the built-in head-and-neck template's supports are registered (affine + B-spline)
and fused (URSAMLib.atlas); then one UR-SAM pass (LiteMedSAM, n = 3, ratio 0.01, every slice
embedded once) segments with each prompt variant:

* ``atlas_m{M}_w{W}``: the fused map's per-slice part boxes extended by M mm, the atlas vote joining
  the ensemble with weight W (0: SAM alone);
* ``label_part`` / ``label_whole``: per-slice boxes of the reference labels, one per part of the organ
  on a slice, or one around all of it (manual prompting);
* ``atlas_vote``: the multi-atlas segmentation itself (no SAM).

Per organ: DSC of the rectified and of the ensemble mask. Per organ and slice, for the label
variants, the 2-D DSC on slices where the organ is in one part and in two or more. Blanked scans
(OpenKBP keeps intensities only near the organs on some) are skipped: registration has nothing to
match there (the ``auto`` localizer uses MedLAM on them).

    python scripts/measure_atlas_prompts.py --split train --patients 34,66,95,122 -o docs/results/atlas-prompts/train
    python scripts/measure_atlas_prompts.py --split validation -o docs/results/atlas-prompts/validation

Rows go to OUTPUT/rows.jsonl after every patient (a run resumes); OUTPUT/table.md is the summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import builtin, io  # noqa: E402
from URSAMLib.localize.atlas import localize_by_atlas, vote_slice_boxes  # noqa: E402
from URSAMLib.backbones import load_backbone  # noqa: E402
from URSAMLib.localize import BLANKED_BELOW, reject_implausible, visible_body  # noqa: E402
from URSAMLib.metrics import dice  # noqa: E402
from URSAMLib.pipeline import Settings, segment_variants  # noqa: E402
from URSAMLib.prompts import OrganPrompt, prompts_from_labels  # noqa: E402
from URSAMLib.template import Template  # noqa: E402

MARGINS_MM = (3.0, 6.0)
PRIOR_WEIGHTS = (0.0, 3.0, 6.0, 10.0)


def atlas_prompts(localizations: dict, shape: tuple[int, int, int], spacing, margin_mm: float) -> list[OrganPrompt]:
    prompts = []
    for loc in localizations.values():
        if loc.box is None or loc.atlas is None:
            continue
        boxes = vote_slice_boxes(loc.atlas.mask(shape), spacing, margin_mm)
        prompts.append(OrganPrompt(loc.organ, loc.label, boxes, (loc.atlas.region, loc.atlas.fraction)))
    return prompts


def slice_dice_by_parts(mask: np.ndarray, reference: np.ndarray) -> dict[str, list[float]]:
    """2-D DSC on each slice of the reference, grouped by its number of parts (``one``/``several``)."""
    groups: dict[str, list[float]] = {"one": [], "several": []}
    for z in np.flatnonzero(reference.any(axis=(1, 2))):
        parts = ndimage.label(reference[z], structure=np.ones((3, 3), bool))[1]
        groups["one" if parts == 1 else "several"].append(dice(mask[z], reference[z]))
    return groups


def measure(patient: Path, labels_path: Path, template: Template, backbone) -> dict:
    ct = io.read_ct(patient)
    hu, frame = io.axial_array(ct, np.float32)
    labels = io.axial_array(io.read_label_map(labels_path, ct), np.uint16)[0]
    row = {"patient": patient.name.split("_ct")[0], "visible_body": round(visible_body(ct), 4)}
    if row["visible_body"] < BLANKED_BELOW:
        return {**row, "skipped": "blanked scan"}
    tick = time.perf_counter()
    found = localize_by_atlas(ct, template)
    row["atlas_s"] = round(time.perf_counter() - tick, 1)
    reject_implausible(found, template, frame)
    variants = {}
    for margin in MARGINS_MM:
        prompts = atlas_prompts(found, hu.shape, frame.spacing, margin)
        for weight in PRIOR_WEIGHTS:
            variants[f"atlas_m{margin:g}_w{weight:g}"] = (prompts, Settings(prior_weight=weight))
    classes = {value: name for name, value in template.organs.items()}
    variants["label_part"] = (prompts_from_labels(labels, classes, "slice", per_part=True)[0], Settings())
    variants["label_whole"] = (prompts_from_labels(labels, classes, "slice", per_part=False)[0], Settings())
    tick = time.perf_counter()
    results = segment_variants(hu, variants, backbone)
    row["sam_s"] = round(time.perf_counter() - tick, 1)
    row["organs"] = {}
    for name, value in template.organs.items():
        reference = labels == value
        if not reference.any():
            continue
        scores = {"atlas_vote": dice(found[name].atlas.mask(hu.shape), reference) if found[name].atlas else 0.0}
        for key, result in results.items():
            organ = next((o for o in result.organs if o.name == name), None)
            rectified, ensemble = np.zeros(hu.shape, bool), np.zeros(hu.shape, bool)
            if organ is not None:
                rectified[organ.region], ensemble[organ.region] = organ.mask, organ.ensemble_mask
            scores[key], scores[f"{key}_ensemble"] = dice(rectified, reference), dice(ensemble, reference)
            if key.startswith("label"):
                scores[f"{key}_slices"] = slice_dice_by_parts(rectified, reference)
        row["organs"][name] = scores
    return row


def table(rows: list[dict]) -> str:
    measured = [r for r in rows if "organs" in r]
    if not measured:
        return "No complete scan measured yet.\n"
    keys = [k for k in measured[0]["organs"][next(iter(measured[0]["organs"]))] if not k.endswith("_slices")]
    organs = list(measured[0]["organs"])
    lines = [f"Mean DSC over {len(measured)} complete scans ({', '.join(r['patient'] for r in measured)}); "
             f"{len(rows) - len(measured)} blanked scans skipped. Rectified unless marked ensemble.", "",
             "| prompts | mean | " + " | ".join(organs) + " |", "|---|---|" + "---|" * len(organs)]
    for key in keys:
        per_organ = [np.mean([r["organs"][o][key] for r in measured if o in r["organs"]]) for o in organs]
        lines.append(f"| {key} | {np.mean([r['organs'][o][key] for r in measured for o in r['organs']]):.3f} | "
                     + " | ".join(f"{v:.3f}" for v in per_organ) + " |")
    lines += ["", "Per-slice 2-D DSC of per-slice label prompting, on slices where the organ is in one part "
              "and in two or more:",
              "", "| prompts | one part | two or more parts | slices with two or more |", "|---|---|---|---|"]
    for key in ("label_part", "label_whole"):
        one = [v for r in measured for o in r["organs"].values() for v in o[f"{key}_slices"]["one"]]
        several = [v for r in measured for o in r["organs"].values() for v in o[f"{key}_slices"]["several"]]
        lines.append(f"| {key} | {np.mean(one):.3f} | {np.mean(several):.3f} | {len(several)} |")
    seconds = [r["atlas_s"] for r in measured]
    lines += ["", f"Atlas localization {np.mean(seconds):.0f} s per scan (mean; 5 supports, affine + B-spline, "
              "shared 2-core CPU)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--split", choices=("train", "validation"), required=True)
    parser.add_argument("--patients", help="comma-separated patient numbers (default: all of the split)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    folder = Path(args.data) / "hn-openkbp" / args.split
    template = Template.load(builtin.region_template("head-and-neck").folder)
    supports = {s.name.split("_ct")[0] for s in template.supports}
    numbers = ([int(n) for n in args.patients.split(",")] if args.patients else
               sorted(int(p.name.split("_")[1]) for p in folder.glob("pt_*_ct.nii.gz")))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {r["patient"] for r in rows}
    backbone = load_backbone(device="cpu", runtime="auto")
    for number in numbers:
        name = f"pt_{number}"
        if name in done or name in supports:  # never score a support on itself
            continue
        row = measure(folder / f"{name}_ct.nii.gz", folder / f"{name}_oar.nii.gz", template, backbone)
        rows.append(row)
        with rows_path.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        print(name, row.get("skipped") or f"atlas {row['atlas_s']} s, SAM {row['sam_s']} s", flush=True)
        (out / "table.md").write_text(table(rows))
    (out / "table.md").write_text(table(rows))


if __name__ == "__main__":
    main()
