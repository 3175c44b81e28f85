"""Choose the support scans of the built-in head-and-neck template by measurement on training patients.

Every candidate support (a complete OpenKBP training scan holding all 7 organs) is registered to
each held-out training patient (never a validation patient, never a candidate) and carries its
organs' extreme points over, as the registration localizer does. From these per-support points the
script scores any subset of candidates offline: box IoU of the median-fused box with the held-out
patient's label box, averaged over (patient, organ) pairs. It prints the score of the greedy best
subset of each size, which `scripts/build_builtin_templates.py` then ships.

    python scripts/choose_hn_supports.py [--data ../shared/data] [-o /tmp/hn-supports]

Mapped points are kept in OUTPUT/points.json, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import io  # noqa: E402
from URSAMLib.localize import box_iou, fuse_supports, register_affine  # noqa: E402
from URSAMLib.localize.common import axial_points  # noqa: E402
from URSAMLib.localize.registration import registration_image  # noqa: E402
from URSAMLib.prompts import Box3D  # noqa: E402
from URSAMLib.template import build_template  # noqa: E402

CANDIDATES = (4, 13, 17, 31, 59, 82, 99, 119)
"""Complete training scans with all 7 organs, spread over the patient numbers."""
HELD_OUT = (34, 66, 95)
"""Other complete training scans with all 7 organs (the blanked ones defeat registration whatever the supports)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("-o", "--output", default="/tmp/hn-supports")
    args = parser.parse_args()
    data = Path(args.data) / "hn-openkbp" / "train"
    classes = io.read_classes(data.parent / "classes.json")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "points.json"
    points = json.loads(store.read_text()) if store.exists() else {}
    with tempfile.TemporaryDirectory() as folder:
        template = build_template([str(data / f"pt_{n}_ct.nii.gz") for n in CANDIDATES],
                                  [str(data / f"pt_{n}_oar.nii.gz") for n in CANDIDATES], classes,
                                  Path(folder) / "hn", body_region="head-and-neck")
        supports = {int(s.name.split("_")[1]): s for s in template.supports}
        truth = {}
        for query in HELD_OUT:
            ct = io.read_ct(data / f"pt_{query}_ct.nii.gz")
            labels, frame = io.axial_array(io.read_label_map(data / f"pt_{query}_oar.nii.gz", ct), np.uint16)
            truth[query] = ({o: Box3D.from_mask(labels == v).as_list() for o, v in template.organs.items()
                             if (labels == v).any()}, frame.shape)
            fixed = registration_image(ct)
            for number, support in supports.items():
                key = f"{query}/{number}"
                if key in points:
                    continue
                inverse = register_affine(fixed, registration_image(support.read())).GetInverse()
                points[key] = {organ: axial_points(np.array([inverse.TransformPoint(p.tolist())
                                                              for p in support.points_mm[organ]]), ct, frame).tolist()
                               for organ in template.organs}
                store.write_text(json.dumps(points))
                print(f"query {query} support {number}", flush=True)
        (out / "truth.json").write_text(json.dumps({q: t for q, t in truth.items()}))

    def score(subset: tuple[int, ...], queries=HELD_OUT) -> float:
        ious = []
        for query in queries:
            boxes, shape = truth[query]
            for organ, box in boxes.items():
                per_support = np.array([points[f"{query}/{n}"][organ] for n in subset])
                found = fuse_supports(organ, 0, per_support, tuple(shape))
                ious.append(box_iou(found.box, Box3D(*box)) if found.box else 0.0)
        return float(np.mean(ious))

    chosen: list[int] = []
    print("| supports | chosen (greedy, in order) | mean box IoU, held-out training patients |")
    print("|---|---|---|")
    while len(chosen) < len(CANDIDATES):
        best = max((n for n in CANDIDATES if n not in chosen), key=lambda n: score(tuple(chosen + [n])))
        chosen.append(best)
        print(f"| {len(chosen)} | {', '.join(map(str, chosen))} | {score(tuple(chosen)):.3f} |")
    print(f"| 5 (first five candidates) | {', '.join(map(str, CANDIDATES[:5]))} | {score(CANDIDATES[:5]):.3f} |")
    print(f"| all {len(CANDIDATES)} | | {score(CANDIDATES):.3f} |")


if __name__ == "__main__":
    main()
