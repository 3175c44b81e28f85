"""Which hn-openkbp CTs are blanked outside the organs' neighbourhood, and what that does to
automatic prompting; prints a Markdown table for docs/localizers.md.

Some OpenKBP CTs keep real intensities only in a region around the contoured organs and are
air (-1024 HU) elsewhere. This script measures, per validation patient, the fraction of voxels
above -500 HU (the visible body) and reads the evaluation report's per-patient records (cases/).

    python scripts/field_of_view.py [--data ../shared/data] [--report docs/results/hn-openkbp] [--batch DIR]

--batch adds the UR-SAM DSC of an `ursam batch ... --reference-pattern '*_oar.nii.gz'` run over the
same patients (e.g. prompted by another localizer; docs/localizers.md has the command), over the
organs each patient's labels hold, as the evaluation scores them; the table then lists only the
patients the batch run has finished, so that every column compares the same patients.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The auto localizer's own measure of a blanked scan; measure_localizers.py imports it from here.
from URSAMLib.localize import BLANKED_BELOW, visible_body  # noqa: E402,F401
from URSAMLib.evaluation import load_record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--report", default="docs/results/hn-openkbp")
    parser.add_argument("--batch", help="an `ursam batch` output folder of the same patients (optional)")
    parser.add_argument("--batch-label", default="batch", help="its column's name (default 'batch')")
    args = parser.parse_args()
    report = Path(args.report)
    variants = ["auto", "box3d", "slice"] + (["batch"] if args.batch else [])
    lines = ["| patient | visible body % | blanked | box IoU (auto) | UR-SAM DSC auto | UR-SAM DSC box3d | "
             "UR-SAM DSC slice |" + (f" UR-SAM DSC {args.batch_label} |" if args.batch else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if args.batch else "")]
    groups = defaultdict(lambda: defaultdict(list))
    folder = Path(args.data) / "hn-openkbp" / "validation"
    classes = {name: int(value) for value, name in json.loads((folder.parent / "classes.json").read_text()).items()}
    for case in sorted((report / "cases").glob("*.json*"), key=lambda p: int(p.name.split(".")[0].split("_")[1])):
        record = load_record(case)
        if args.batch and not (Path(args.batch) / record["patient"] / "summary.json").exists():
            continue  # not (yet) in the batch run: leave it out of every column
        visible = visible_body(sitk.ReadImage(str(folder / f"{record['patient']}_ct.nii.gz")))
        blanked = visible < BLANKED_BELOW
        iou = float(np.mean([e["box_iou"] for e in record["localization"].values() if e.get("found")] or [0.0]))
        means = {v: float(np.mean([r["dsc"] for r in record["rows"] if r["variant"] == v and r["method"] == "ursam"]))
                 for v in ("auto", "box3d", "slice")}
        if args.batch:
            means["batch"] = batch_dsc(Path(args.batch) / record["patient"] / "summary.json",
                                       folder / f"{record['patient']}_oar.nii.gz", classes)
        for key, value in (("iou", iou), *means.items()):
            groups[blanked][key].append(value)
        lines.append(f"| {record['patient']} | {100 * visible:.1f} | {'yes' if blanked else 'no'} | {iou:.2f} | "
                     + " | ".join(f"{means[v]:.3f}" for v in variants) + " |")
    for blanked, values in sorted(groups.items()):
        lines.append(f"| **{'blanked' if blanked else 'full'} ({len(values['iou'])})** | | | "
                     f"**{np.mean(values['iou']):.2f}** | "
                     + " | ".join(f"**{np.mean(values[v]):.3f}**" for v in variants) + " |")
    if args.batch:  # the same patients in every column: a paired comparison
        pooled = {v: [x for b in groups for x in groups[b][v]] for v in variants}
        lines.append(f"\nMean of the patients' UR-SAM DSC over these {len(pooled['batch'])} patients: "
                     + ", ".join(f"{args.batch_label if v == 'batch' else v} {np.mean(x):.3f}"
                                 for v, x in pooled.items()) + ".")
    print("\n".join(lines))


def batch_dsc(summary: Path, labels: Path, classes: dict[str, int]) -> float:
    """Mean rectified (UR-SAM) DSC of a batch case over the organs its reference labels hold; an organ
    the localizer did not find counts 0. classes: organ name → label value."""
    present = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))).tolist()) - {0}
    record = json.loads(summary.read_text())
    scores = [e["dice_vs_reference"]["rectified"] for e in record["organs"].values() if e["label"] in present]
    scores += [0.0 for organ in record.get("not_found", {}) if classes[organ] in present]
    return float(np.mean(scores))


if __name__ == "__main__":
    main()
