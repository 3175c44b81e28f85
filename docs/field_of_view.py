"""Which hn-openkbp CTs are blanked outside the organs' neighbourhood, and what that does to
automatic prompting; prints a Markdown table for docs/localizers.md.

Some OpenKBP CTs keep real intensities only in a region around the contoured organs and are
air (-1024 HU) elsewhere. This script measures, per validation patient, the fraction of voxels
above -500 HU (the visible body) and reads the evaluation report's per-patient records (cases/).

    python docs/field_of_view.py [--data ../shared/data] [--report docs/results/hn-openkbp]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

BLANKED_BELOW = 0.05
"""Visible-body fraction under which a 128^3 head-and-neck CT is blanked (full scans: 0.06-0.13)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--report", default="docs/results/hn-openkbp")
    args = parser.parse_args()
    report = Path(args.report)
    lines = ["| patient | visible body % | blanked | box IoU (auto) | UR-SAM DSC auto | UR-SAM DSC box3d | "
             "UR-SAM DSC slice |", "|---|---|---|---|---|---|---|"]
    groups = defaultdict(lambda: defaultdict(list))
    for case in sorted((report / "cases").glob("*.json"), key=lambda p: int(p.stem.split("_")[1])):
        record = json.loads(case.read_text())
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(args.data) / "hn-openkbp" / "validation"
                                                           / f"{record['patient']}_ct.nii.gz")))
        visible = float((ct > -500).mean())
        blanked = visible < BLANKED_BELOW
        iou = float(np.mean([e["box_iou"] for e in record["localization"].values() if e.get("found")] or [0.0]))
        means = {v: float(np.mean([r["dsc"] for r in record["rows"] if r["variant"] == v and r["method"] == "ursam"]))
                 for v in ("auto", "box3d", "slice")}
        for key, value in (("iou", iou), *means.items()):
            groups[blanked][key].append(value)
        lines.append(f"| {record['patient']} | {100 * visible:.1f} | {'yes' if blanked else 'no'} | {iou:.2f} | "
                     + " | ".join(f"{means[v]:.3f}" for v in ("auto", "box3d", "slice")) + " |")
    for blanked, values in sorted(groups.items()):
        lines.append(f"| **{'blanked' if blanked else 'full'} ({len(values['iou'])})** | | | "
                     f"**{np.mean(values['iou']):.2f}** | "
                     + " | ".join(f"**{np.mean(values[v]):.3f}**" for v in ("auto", "box3d", "slice")) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
