"""Measure the localizers of the built-in head-and-neck template, and the rule that combines them.

For each patient: the built-in template localizes the 7 organs by registration and by the shipped
MedLAM weights; per organ the script records the box IoU with the labels' box, the registered
supports' agreement, and seconds per scan. From those rows it scores every choice the ``auto``
localizer could make (registration where the agreement is at least t, else MedLAM) without running
anything again. Choose t on training patients (``--split train``), report on validation.

    python scripts/measure_region_localizers.py --split train --patients 34,66,95,122,36,92,104,108 \
        -o docs/results/region-localizers/train   # the choice of the auto rule (4 complete, 4 blanked scans)
    python scripts/measure_region_localizers.py --split validation -o docs/results/region-localizers/validation

Rows go to OUTPUT/rows.csv after every patient (a run resumes), the table to OUTPUT/table.md.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import builtin, io  # noqa: E402
from URSAMLib.localize import (BLANKED_BELOW, box_iou, localize_by_medlam,  # noqa: E402
                               localize_by_registration, visible_body)
from URSAMLib.prompts import Box3D  # noqa: E402
from URSAMLib.template import Template  # noqa: E402

FIELDS = ["patient", "visible_body", "organ", "registration_iou", "agreement", "medlam_iou",
          "registration_s", "medlam_s"]
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--split", choices=("train", "validation"), required=True)
    parser.add_argument("--patients", help="comma-separated patient numbers (default: all of the split)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    folder = Path(args.data) / "hn-openkbp" / args.split
    template = Template.load(builtin.region_template("head-and-neck").folder)
    shipped = {s.name.split("_ct")[0] for s in template.supports}
    numbers = ([int(n) for n in args.patients.split(",")] if args.patients else
               sorted(int(p.name.split("_")[1]) for p in folder.glob("pt_*_ct.nii.gz")))
    numbers = [n for n in numbers if f"pt_{n}" not in shipped]  # never score a support on itself
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.csv"
    rows = list(csv.DictReader(rows_path.open())) if rows_path.exists() else []
    done = {r["patient"] for r in rows}
    for number in numbers:
        patient = f"pt_{number}"
        if patient in done:
            continue
        ct = io.read_ct(folder / f"{patient}_ct.nii.gz")
        labels = io.axial_array(io.read_label_map(folder / f"{patient}_oar.nii.gz", ct), np.uint16)[0]
        visible = visible_body(ct)
        started = time.perf_counter()
        try:
            registered = localize_by_registration(ct, template)
        except Exception:  # noqa: BLE001 - a failed registration counts as nothing found
            registered = {}
        middle = time.perf_counter()
        learned = localize_by_medlam(ct, template, device="cpu")
        ended = time.perf_counter()
        for organ, value in template.organs.items():
            mask = labels == value
            if not mask.any():
                continue
            truth = Box3D.from_mask(mask)
            reg = registered.get(organ)
            rows.append({"patient": patient, "visible_body": f"{visible:.4f}", "organ": organ,
                         "registration_iou": f"{box_iou(reg.box, truth) if reg and reg.box else 0.0:.4f}",
                         "agreement": f"{reg.agreement if reg else 0.0:.4f}",
                         "medlam_iou": f"{box_iou(learned[organ].box, truth) if learned[organ].box else 0.0:.4f}",
                         "registration_s": f"{middle - started:.1f}", "medlam_s": f"{ended - middle:.1f}"})
        with rows_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        mine = [r for r in rows if r["patient"] == patient]
        print(f"{patient}: registration {np.mean([float(r['registration_iou']) for r in mine]):.3f}, "
              f"medlam {np.mean([float(r['medlam_iou']) for r in mine]):.3f}", flush=True)
    rows = [r for r in rows if int(r["patient"].split("_")[1]) in numbers]
    table = report(rows, args)
    (out / "table.md").write_text(table)
    print(table)


def auto_iou(row: dict, threshold: float) -> float:
    """The box IoU the ``auto`` localizer gets for this (patient, organ) at agreement threshold t."""
    return float(row["registration_iou"] if float(row["agreement"]) >= threshold else row["medlam_iou"])


def report(rows: list[dict], args) -> str:
    def mean(selected, key) -> str:
        values = [key(r) for r in selected]
        return f"{np.mean(values):.3f}" if values else "-"

    kinds = {"all": rows, "complete": [r for r in rows if float(r["visible_body"]) >= BLANKED_BELOW],
             "blanked": [r for r in rows if float(r["visible_body"]) < BLANKED_BELOW]}
    scans = {k: len({r["patient"] for r in v}) for k, v in kinds.items()}
    lines = [f"Box IoU with the labels' box, built-in head-and-neck template, {args.split} patients "
             f"({scans['all']} scans: {scans['complete']} complete, {scans['blanked']} blanked; "
             f"{len(rows)} patient-organ pairs).", "",
             "| localizer | all | complete | blanked |", "|---|---|---|---|"]
    for label, key in [("registration", lambda r: float(r["registration_iou"])),
                       ("MedLAM (shipped weights)", lambda r: float(r["medlam_iou"]))] + \
            [(f"MedLAM where the registered supports disagree (agreement < {t:g})", lambda r, t=t: auto_iou(r, t))
             for t in THRESHOLDS[1:-1]] + \
            [("auto: MedLAM on blanked scans, registration on the others", lambda r: float(
                r["medlam_iou"] if float(r["visible_body"]) < BLANKED_BELOW else r["registration_iou"]))]:
        lines.append(f"| {label} | " + " | ".join(mean(kinds[k], key) for k in kinds) + " |")
    seconds = {r["patient"]: (float(r["registration_s"]), float(r["medlam_s"])) for r in rows}
    if seconds:
        reg, med = np.mean(list(seconds.values()), axis=0)
        lines += ["", f"Seconds per scan: registration {reg:.0f}, MedLAM {med:.0f} (2-core CPU, shared)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
