"""Measure the localizers (registration vs learned MedLAM) on head-and-neck CT; write docs/results/localizers/.

A template is built from 5 training patients that contain all 7 OpenKBP organs; every
localizer then finds the organs' extreme points in validation patients. Per organ: IoU of
the localized box with the box of the reference labels, and the mean distance (mm) between
the 6 localized and reference extreme points (same definition and order as the template's,
:func:`URSAMLib.template.extreme_points`); seconds per scan. SAM is not run.

Writes OUTPUT/rows.csv (one row per patient, organ and localizer, with the scan's visible-body
fraction) and OUTPUT/table.md (per organ; and per kind of scan: complete or blanked, see
scripts/field_of_view.py). Patients already in rows.csv are kept, so an interrupted run resumes.

    python scripts/measure_localizers.py --data ../shared/data --weights ~/.cache/ursam/medlam.pth --patients 33

Several MedLAM weights are compared with ``--weights LABEL=PATH`` given once per file; their
columns are named "medlam LABEL".
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from field_of_view import BLANKED_BELOW, visible_body  # this folder: the script's own

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import io
from URSAMLib.localize import box_iou, localize_by_registration
from URSAMLib.localize.medlam.infer import localize_by_medlam
from URSAMLib.prompts import Box3D
from URSAMLib.template import build_template, extreme_points

ROOT = Path(__file__).resolve().parent.parent

SUPPORTS = "4,13,17,22,31"
FIELDS = ["patient", "visible_body", "localizer", "organ", "iou", "error_mm", "agreement", "seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--weights", action="append", default=[], metavar="[LABEL=]PATH",
                        help="MedLAM weights ('ursam train-localizer'); repeat with labels to compare several")
    parser.add_argument("--supports", default=SUPPORTS, help=f"training patients of the template (default {SUPPORTS})")
    parser.add_argument("--patients", type=int, default=33, help="first N validation patients (default 33: all)")
    parser.add_argument("--no-registration", action="store_true",
                        help="only the MedLAM weights (e.g. in a second process; rows.csv files concatenate)")
    parser.add_argument("--rdr-only", action="store_true", help="also MedLAM without MSS refinement (radius 0)")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "results" / "localizers"))
    args = parser.parse_args()
    data = Path(args.data) / "hn-openkbp"
    classes = io.read_classes(data / "classes.json")
    numbers = [int(n) for n in args.supports.split(",")]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    localizers = {} if args.no_registration else {"registration": localize_by_registration}
    for item in args.weights:
        label, _, path = item.rpartition("=")
        name = f"medlam {label}" if label else "medlam"
        localizers[name] = lambda ct, t, path=path: localize_by_medlam(ct, t, weights=path, device="cpu")
        if args.rdr_only:
            localizers[f"{name}, RDR only"] = lambda ct, t, path=path: localize_by_medlam(ct, t, weights=path,
                                                                                        device="cpu", radius=0)
    queries = sorted((data / "validation").glob("pt_*_ct.nii.gz"), key=lambda p: int(p.name.split("_")[1]))
    queries = queries[:args.patients]
    rows_path = out / "rows.csv"
    rows = list(csv.DictReader(rows_path.open())) if rows_path.exists() else []
    done = {(r["patient"], r["localizer"]) for r in rows}
    with tempfile.TemporaryDirectory() as folder:
        template = build_template([str(data / f"train/pt_{n}_ct.nii.gz") for n in numbers],
                                  [str(data / f"train/pt_{n}_oar.nii.gz") for n in numbers], classes,
                                  Path(folder) / "hn", body_region="head-and-neck")
        for query in queries:
            patient = query.name.split("_ct")[0]
            todo = {n: f for n, f in localizers.items() if (patient, n) not in done}
            if not todo:
                continue
            ct = io.read_ct(query)
            visible = visible_body(ct)
            labels, frame = io.axial_array(io.read_label_map(str(query).replace("_ct.", "_oar."), ct), np.uint16)
            for name, localize in todo.items():
                started = time.perf_counter()
                found = localize(ct, template)
                seconds = time.perf_counter() - started
                for organ, value in template.organs.items():
                    mask = labels == value
                    if not mask.any():
                        continue  # organ not contoured in this patient
                    result = found[organ]
                    distance = (result.points - extreme_points(mask)) * np.array(frame.spacing) \
                        if result.points is not None else None  # not found: no points, IoU 0
                    rows.append({"patient": patient, "visible_body": f"{visible:.4f}", "localizer": name,
                                 "organ": organ,
                                 "iou": f"{box_iou(result.box, Box3D.from_mask(mask)) if result.box else 0.0:.4f}",
                                 "error_mm": "" if distance is None else
                                 f"{np.linalg.norm(distance, axis=1).mean():.2f}",
                                 "agreement": f"{result.agreement:.4f}",
                                 "seconds": f"{seconds:.1f}"})
                with rows_path.open("w", newline="") as handle:  # after every localizer: resumable
                    writer = csv.DictWriter(handle, FIELDS, restval="")
                    writer.writeheader()
                    writer.writerows(rows)
                mine = [float(r["iou"]) for r in rows if r["patient"] == patient and r["localizer"] == name]
                print(f"{patient} {name}: {seconds:.0f} s, mean box IoU {np.mean(mine):.3f}", flush=True)
    patients = {q.name.split("_ct")[0] for q in queries}
    rows = [r for r in rows if r["patient"] in patients and r["localizer"] in localizers]
    table = write_report(out / "table.md", args, list(template.organs), list(localizers), rows, len(patients))
    print(table)


def _mean(rows, key) -> str:
    values = [float(r[key]) for r in rows if r[key] != ""]  # no error for an organ not found
    return f"{np.mean(values):.3f}" if key == "iou" else f"{np.mean(values):.1f}"


def write_report(path: Path, args, organs: list[str], names: list[str], rows: list[dict], patients: int) -> str:
    """The per-organ table, then the same means for complete and blanked scans; returns the text."""
    def pick(name, keep=lambda row: True):
        return [r for r in rows if r["localizer"] == name and keep(r)]

    def blanked(row) -> bool:
        return float(row["visible_body"]) < BLANKED_BELOW

    header = ("| {first} | n | " + " | ".join(f"IoU {n}" for n in names) + " | "
              + " | ".join(f"error mm {n}" for n in names) + " |")
    rule = "|---|---|" + "---|" * (2 * len(names))

    def line(label, selected):
        count = len(selected[names[0]])
        return (f"| {label} | {count} | " + " | ".join(_mean(selected[n], "iou") for n in names) + " | "
                + " | ".join(_mean(selected[n], "error_mm") for n in names) + " |")

    lines = ["# Localizers measured: registration vs learned MedLAM", "",
             "Generated by `python scripts/measure_localizers.py "
             + " ".join(f"--weights {w.rpartition('=')[0] + '=' if '=' in w else ''}WEIGHTS" for w in args.weights)
             + f" --patients {args.patients}"
             f"{' --rdr-only' if args.rdr_only else ''}` (per-row data: rows.csv). Template: OpenKBP training "
             f"patients {args.supports} (all 7 organs); queries: the first {patients} validation patients. Box IoU "
             "of the localized box (before the [2, 10, 10] margin) with the reference labels' box, and mean "
             "distance between the 6 localized and reference extreme points; mean over the (patient, organ) "
             "pairs whose labels contain the organ. No SAM.", "",
             header.format(first="organ"), rule]
    for organ in organs:
        lines.append(line(organ, {n: pick(n, lambda r, o=organ: r["organ"] == o) for n in names}))
    lines.append(line("**all**", {n: pick(n) for n in names}))
    lines += ["", f"By kind of scan (blanked: under {BLANKED_BELOW:.0%} of the voxels above -500 HU, see "
              "scripts/field_of_view.py); n counts (patient, organ) pairs:", "", header.format(first="scans"), rule]
    for label, test in (("complete", lambda r: not blanked(r)), ("blanked", blanked)):
        selected = {n: pick(n, test) for n in names}
        scans = len({r["patient"] for r in selected[names[0]]})
        if scans:
            lines.append(line(f"{label} ({scans} scans)", selected))
    if "registration" in names:  # a rule that needs no labels: the kind of scan picks the localizer
        lines.append("")
        for name in (n for n in names if n != "registration"):
            chosen = [r for r in rows if r["localizer"] == (name if blanked(r) else "registration")]
            lines.append(f"Registration on the complete scans and {name} on the blanked ones (the CT alone "
                         f"decides): IoU {_mean(chosen, 'iou')}, error {_mean(chosen, 'error_mm')} mm "
                         f"over all {len(chosen)} pairs.")
    seconds = {n: np.mean([float(r["seconds"]) for r in {r["patient"]: r for r in pick(n)}.values()]) for n in names}
    lines += ["", "Seconds per scan (2-core CPU, 5 supports, 7 organs): "
              + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()) + ".", ""]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


if __name__ == "__main__":
    main()
