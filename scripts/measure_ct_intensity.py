"""Measure the CT landmarks behind URSAMLib.io.intensity_warning on every CT in ../shared/data.

For each volume: the share of voxels below -500 HU (air), the median of the rest (the body) and
the share of the body in the soft-tissue range -200..300 HU — and whether URSAM would warn.
Writes docs/ct_intensity.md.

    python scripts/measure_ct_intensity.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from URSAMLib import io  # noqa: E402


def landmarks(values: np.ndarray) -> tuple[float, float, float]:
    body = values[values >= io.AIR_THRESHOLD_HU]
    soft = np.mean((body >= io.SOFT_TISSUE_HU[0]) & (body <= io.SOFT_TISSUE_HU[1])) if body.size else 0.0
    air = float(np.mean(values < io.AIR_THRESHOLD_HU))
    return air, float(np.median(body)) if body.size else float("nan"), float(soft)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "ct_intensity.md"))
    args = parser.parse_args()
    data = Path(args.data)
    groups = {
        "abdomen-ts (NIfTI, DICOM series)": [data / "abdomen-ts/ct.nii.gz", data / "abdomen-ts/ct_small.nii.gz",
                                             data / "abdomen-ts/dicom"],
        "chest-ct": [data / "chest-ct/ct.nii.gz"],
        "ct3slice-dcmqi (DICOM)": [data / "ct3slice-dcmqi"],
        "hn-openkbp (head and neck)": sorted((data / "hn-openkbp").glob("*/*_ct.nii.gz")),
    }
    lines = ["# CT intensity landmarks", "",
             "Measured by `scripts/measure_ct_intensity.py` on every CT volume in `../shared/data`; the basis of "
             "`URSAMLib.io.intensity_warning`, which warns when a volume is below "
             f"{100 * io.MIN_AIR_FRACTION:g} % air (< {io.AIR_THRESHOLD_HU:g} HU), has a body median outside "
             f"{io.BODY_MEDIAN_HU[0]:g}..{io.BODY_MEDIAN_HU[1]:g} HU, or less than "
             f"{100 * io.MIN_SOFT_TISSUE_FRACTION:g} % of the body in "
             f"{io.SOFT_TISSUE_HU[0]:g}..{io.SOFT_TISSUE_HU[1]:g} HU.",
             "", "| data | volumes | air share | body median (HU) | soft-tissue share of the body | warned |",
             "|---|---|---|---|---|---|"]
    for group, paths in groups.items():
        rows, warned = [], 0
        for path in paths:
            image = io.read_image(path)
            values = io.axial_array(image)[0]
            rows.append(landmarks(values))
            warned += io.intensity_warning(values, str(path)) is not None
        air, median, soft = np.array(rows).T
        lines.append(f"| {group} | {len(rows)} | {air.min():.1%} – {air.max():.1%} | {median.min():.0f} – "
                     f"{median.max():.0f} | {soft.min():.0%} – {soft.max():.0%} | {warned} |")
        print(lines[-1], flush=True)
    Path(args.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
