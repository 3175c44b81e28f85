"""Fit the shipped voxel error model (Resources/error_map.json) on training patients only, or score it.

For each patient the product's automatic run (the built-in head-and-neck template, its default
localizer and settings) segments the CT; inside each labelled organ's prompt boxes every voxel gets
the features of :func:`URSAMLib.error_map.voxel_features` and a target: the ensemble mask is wrong
there. A logistic regression (Newton steps, a small L2 penalty) is fitted on all training voxels;
each patient's AUROC is also measured with a model fitted without that patient. Per organ, the
AUROC of the error likelihood and of the paper's entropy for the same error voxels go to
OUTPUT/rows.jsonl, their means to OUTPUT/table.md.

    python scripts/fit_error_map.py --split train --patients 4,31,33 -o docs/results/error-map/train
    python scripts/fit_error_map.py --split validation --evaluate -o docs/results/error-map/validation
    python scripts/fit_error_map.py --abdomen -o docs/results/error-map/abdomen --evaluate

``--abdomen`` scores abdomen-ts' 12 FLARE22 organs with per-slice boxes from its labels (one per
part), as ``ursam evaluate`` prompts it. Features are cached per patient in ``--cache``: delete it after
a change to the product, or the fit reads what the old product computed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import atomic, io  # noqa: E402
from URSAMLib.catalogue import organ_sets  # noqa: E402
from URSAMLib.error_map import ERROR_MODEL, ErrorModel, voxel_features  # noqa: E402
from URSAMLib.metrics import auroc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_end_to_end import DATA, patient_ids  # noqa: E402

MODEL_FILE = Path(__file__).resolve().parent.parent / "Resources" / ERROR_MODEL
ABDOMEN = DATA.parent / "abdomen-ts"
L2 = 1e-3


def segmented(ct_path: Path, labels_path: Path, classes: dict[int, str], automatic: bool):
    """The product's run on one CT (``URSAMLib.job.segment_job_ct``, as ``ursam segment`` computes it):
    (result, axial reference labels, spacing (z, y, x), n). automatic: the built-in head-and-neck
    template; else per-slice boxes of abdomen-ts' organs ``classes`` from the labels."""
    from URSAMLib.job import SegmentJob, segment_job_ct

    if automatic:
        job = SegmentJob(str(ct_path), "unused", region="head-and-neck")
    else:
        job = SegmentJob(str(ct_path), "unused", prompt_labels=str(labels_path), classes=str(ABDOMEN / "classes.json"),
                         organs=",".join(classes.values()))
    ct_image = io.read_ct(str(ct_path))
    hu, frame = io.axial_array(ct_image)
    reference = io.axial_array(io.read_label_map(str(labels_path), ct_image), np.uint16)[0]
    return segment_job_ct(job, ct_image, hu, frame).result, reference, frame.spacing, job.settings.num_aug


def case_voxels(case: str, ct_path: Path, labels_path: Path, classes: dict[int, str], automatic: bool,
                cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Organ → (features, ensemble wrong, entropy) over its prompt boxes; cached in ``cache``."""
    stored = cache / f"{case}.npz"
    if stored.is_file():
        with np.load(stored) as data:
            names = [str(n) for n in data["names"]]
            return {n: (data[f"{n}/x"], data[f"{n}/y"], data[f"{n}/h"]) for n in names}
    result, reference, spacing, num_aug = segmented(ct_path, labels_path, classes, automatic)
    found = {}
    for organ in result.organs:
        truth = reference[organ.region] == organ.label
        if not (reference == organ.label).any():
            continue  # an organ the labels leave out: nothing to score against
        box = organ.box_region
        found[organ.name] = (voxel_features(organ, spacing, num_aug), (organ.ensemble_mask != truth)[box],
                             organ.uncertainty[box].astype(np.float32))
    cache.mkdir(parents=True, exist_ok=True)
    arrays = {f"{n}/{k}": v for n, (x, y, h) in found.items() for k, v in (("x", x), ("y", y), ("h", h))}
    np.savez_compressed(stored, names=np.array(list(found)), **arrays)
    return found


def fit(voxels: list[tuple[np.ndarray, np.ndarray]]) -> ErrorModel:
    """Logistic regression of the error on the features, Newton's method with an L2 penalty."""
    x = np.concatenate([v[0] for v in voxels]).astype(np.float64)
    y = np.concatenate([v[1] for v in voxels]).astype(np.float64)
    x1 = np.c_[np.ones(len(x)), x]
    w = np.zeros(x1.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(x1 @ w, -30, 30)))
        gradient = x1.T @ (p - y) + L2 * w
        hessian = (x1 * (p * (1 - p))[:, None]).T @ x1 + L2 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return ErrorModel(tuple(float(c) for c in w[1:]), float(w[0]))


def organ_rows(case: str, organs: dict, model: ErrorModel) -> list[dict]:
    rows = []
    for name, (x, wrong, entropy) in organs.items():
        if wrong.all() or not wrong.any():
            continue  # AUROC is undefined without both right and wrong voxels
        rows.append({"patient": case, "organ": name, "voxels": int(len(wrong)), "wrong": int(wrong.sum()),
                     "auroc_entropy": round(auroc(entropy, wrong), 4),
                     "auroc_error_map": round(auroc(model.predict(x), wrong), 4)})
    return rows


def table(rows: list[dict], title: str) -> str:
    entropy = np.mean([r["auroc_entropy"] for r in rows])
    error_map = np.mean([r["auroc_error_map"] for r in rows])
    lines = [title, "", "| organ | organs scored | AUROC, entropy (Eq. 2) | AUROC, error likelihood |",
             "|---|---|---|---|"]
    for organ in sorted({r["organ"] for r in rows}):
        mine = [r for r in rows if r["organ"] == organ]
        lines.append(f"| {organ} | {len(mine)} | {np.mean([r['auroc_entropy'] for r in mine]):.3f} | "
                     f"{np.mean([r['auroc_error_map'] for r in mine]):.3f} |")
    lines.append(f"| **all organs** | {len(rows)} | **{entropy:.3f}** | **{error_map:.3f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("train", "validation"))
    parser.add_argument("--patients", help="comma-separated numbers (default: every patient of the split)")
    parser.add_argument("--abdomen", action="store_true", help="abdomen-ts with per-slice label boxes")
    parser.add_argument("--evaluate", action="store_true", help="score the shipped model instead of fitting")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ursam" / "error-map-features")
    args = parser.parse_args()
    if args.abdomen and not args.evaluate:
        raise SystemExit("the model is fitted on OpenKBP training patients only; use --abdomen with --evaluate")
    if args.abdomen:
        # FLARE22's organs; abdomen-ts has no esophagus voxels, so 12 are scored
        flare22 = organ_sets()["abdomen"].organs
        classes = {v: n for v, n in io.read_classes(ABDOMEN / "classes.json").items() if n in flare22}
        cases = {"abdomen-ts": case_voxels("abdomen-ts", ABDOMEN / "ct.nii.gz", ABDOMEN / "labels.nii.gz", classes,
                                           False, args.cache)}
    else:
        if not args.split:
            raise SystemExit("give --split (or --abdomen)")
        if args.split != "train" and not args.evaluate:
            raise SystemExit("fit on training patients only: --split train, or --evaluate")
        cases = {}
        for patient in patient_ids(args.split, args.patients):
            cases[patient] = case_voxels(f"{args.split}-{patient}", DATA / args.split / f"{patient}_ct.nii.gz",
                                         DATA / args.split / f"{patient}_oar.nii.gz", {}, True, args.cache)
            print(patient, "features ready", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.evaluate:
        model = ErrorModel.from_json(json.loads(MODEL_FILE.read_text())["model"])
        rows = [row for case, organs in cases.items() for row in organ_rows(case, organs, model)]
        title = f"Voxel error detection, the shipped model ({len(cases)} CTs: {', '.join(cases)})."
    else:
        rows = []
        for case in cases:  # leave one patient out: each patient scored by a model fitted without it
            held_out = fit([v[:2] for other, organs in cases.items() if other != case for v in organs.values()])
            rows += organ_rows(case, cases[case], held_out)
        model = fit([v[:2] for organs in cases.values() for v in organs.values()])
        atomic.write_json(MODEL_FILE, {
            "_comment": "Voxel error model (URSAMLib.error_map); rebuilt by scripts/fit_error_map.py on OpenKBP "
                        "training patients.",
            "model": model.to_json(), "fitted_on": sorted(cases, key=lambda p: int(p.split("_")[1])),
            "leave_one_patient_out_auroc": {key: round(float(np.mean([r[f"auroc_{key}"] for r in rows])), 4)
                                            for key in ("entropy", "error_map")}}, indent=1)
        title = (f"Voxel error detection, leave one patient out ({len(cases)} training patients: "
                 f"{', '.join(cases)}).")
    (args.output / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (args.output / "table.md").write_text(table(rows, title + " Mean AUROC per organ of telling the ensemble's "
                                                "wrong voxels inside the prompt boxes from its right ones."))
    print((args.output / "table.md").read_text())


if __name__ == "__main__":
    main()
