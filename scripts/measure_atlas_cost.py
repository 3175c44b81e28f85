"""Cost and accuracy of the head-and-neck localizers on OpenKBP patients, without SAM.

For each patient, the built-in head-and-neck template's registration localizer and atlas localizer
(the template's blanked supports for a blanked scan, as the ``auto`` localizer picks them) run one
after the other in this process. A row holds each one's CPU seconds (ITK registers one support per
thread, two at a time on two cores, so CPU time is what a shared machine inflates least) and wall
seconds, their ratio, and the DSC of the atlas vote (the multi-atlas segmentation) per organ against
the patient's labels.

    python scripts/measure_atlas_cost.py --split train --patients 4,31,60,66,72,87,96,100 \\
        -o docs/results/atlas-cost/train

Rows go to OUTPUT/rows.jsonl after every patient (a rerun resumes); OUTPUT/table.md is the summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import builtin, io  # noqa: E402
from URSAMLib.localize import BLANKED_BELOW, localize_by_atlas, localize_by_registration, visible_body  # noqa: E402
from URSAMLib.metrics import dice  # noqa: E402
from URSAMLib.template import Template  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hn-openkbp"


def timed(localize, ct, template) -> tuple[dict, dict]:
    cpu, wall = time.process_time(), time.perf_counter()
    found = localize(ct, template)
    return found, {"cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1)}


def measure(split: str, patient: str, template: Template) -> dict:
    ct = io.read_ct(DATA / split / f"{patient}_ct.nii.gz")
    labels = io.axial_array(io.read_label_map(DATA / split / f"{patient}_oar.nii.gz", ct), np.uint16)[0]
    blanked = visible_body(ct) < BLANKED_BELOW
    supports = template.blanked if blanked else template
    _, registration = timed(localize_by_registration, ct, supports)
    found, atlas = timed(localize_by_atlas, ct, supports)
    vote = {organ: round(dice(loc.atlas.mask(labels.shape), labels == loc.label) if loc.atlas else 0.0, 4)
            for organ, loc in found.items() if (labels == loc.label).any()}
    return {"patient": patient, "scan": "blanked" if blanked else "complete", "supports": len(supports.supports),
            "registration": registration, "atlas": atlas,
            "atlas_over_registration_cpu": round(atlas["cpu_s"] / registration["cpu_s"], 2),
            "vote_dsc": vote, "mean_vote_dsc": round(float(np.mean(list(vote.values()))), 4)}


def table(rows: list[dict]) -> str:
    lines = ["| patient | scan | registration CPU s | atlas CPU s | ratio | atlas wall s | mean vote DSC |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['patient']} | {r['scan']} | {r['registration']['cpu_s']} | {r['atlas']['cpu_s']} | "
                     f"{r['atlas_over_registration_cpu']} | {r['atlas']['wall_s']} | {r['mean_vote_dsc']:.3f} |")
    for kind in ("complete", "blanked"):
        some = [r for r in rows if r["scan"] == kind]
        if some:
            lines.append(f"| **mean, {kind}** ({len(some)}) | | "
                         f"{np.mean([r['registration']['cpu_s'] for r in some]):.1f} | "
                         f"{np.mean([r['atlas']['cpu_s'] for r in some]):.1f} | "
                         f"{np.mean([r['atlas_over_registration_cpu'] for r in some]):.2f} | "
                         f"{np.mean([r['atlas']['wall_s'] for r in some]):.1f} | "
                         f"{np.mean([r['mean_vote_dsc'] for r in some]):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "validation"), default="train")
    parser.add_argument("--patients", required=True, help="comma-separated numbers, e.g. 4,31,60")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    template = Template.load(builtin.region_template("head-and-neck").folder)
    for patient in (f"pt_{n.strip()}" for n in args.patients.split(",")):
        if any(r["patient"] == patient for r in rows):
            continue
        rows.append(measure(args.split, patient, template))
        with rows_path.open("a") as stream:
            stream.write(json.dumps(rows[-1]) + "\n")
        print(json.dumps(rows[-1]), flush=True)
    (out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
