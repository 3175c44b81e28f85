"""Measure URSAM's free choices on real CT and write docs/rectification.md.

Choices measured (LiteMedSAM, n = 3, ratio = 0.01, seed 0, prompts from the reference labels):
* the CT window given to LiteMedSAM: [-160, 240] (its training) vs the paper's [-500, 1000];
* the 3-D box margin: 5,10,10 mm vs the paper's [2, 10, 10] voxels, and slice-wise refinement;
* the rectification lower bound: midpoint (I_t + I_b)/2 vs the paper's (I_t - I_b)/2, and alpha_h;
* and, for context, every comparison method of the paper.
Per case, all prompt variants share one pass of slice embeddings (segment_variants) and all
rectification variants reuse its ensembles (rerectify).

    python scripts/measure_rectification.py --data ../shared/data --hn-patients 5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import io
from URSAMLib.backbones import load_backbone
from URSAMLib.metrics import dice
from URSAMLib.pipeline import Settings, segment, segment_variants
from URSAMLib.prompts import DEFAULT_BOX_MARGIN, PAPER_BOX_MARGIN, prompts_from_labels

ROOT = Path(__file__).resolve().parent.parent

FLARE9 = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas", "aorta",
          "inferior_vena_cava"]
PROMPTS = {  # variant → (prompt mode, margin, refine)
    "slice": ("slice", DEFAULT_BOX_MARGIN, False),
    "box3d 5,10,10 mm": ("box3d", DEFAULT_BOX_MARGIN, False),
    "box3d 2,10,10 voxels": ("box3d", PAPER_BOX_MARGIN, False),
    "box3d 5,10,10 mm + refine": ("box3d", DEFAULT_BOX_MARGIN, True),
}
METHODS = [("plain SAM (original box)", "plain", {}), ("ensemble (n=3)", "ensemble", {})]
METHODS += [(f"UR-SAM, {bound}, alpha_h={alpha}", "rectified", {"method": "ursam", "lower_bound": bound,
                                                                  "alpha_h": alpha})
            for bound in ("midpoint", "paper") for alpha in (1.1, 1.2, 1.5)]
METHODS += [(f"fixed T + Alg. 1, {bound}", "rectified", {"method": "fixed", "lower_bound": bound, "alpha_h": 1.2})
            for bound in ("midpoint", "paper")]
METHODS += [(name, "rectified", {"method": name.lower()}) for name in ("Unc-FPC", "Unc-FNC", "Unc-FPNC")]
DEFAULT = "UR-SAM, midpoint, alpha_h=1.2"
HN_PROMPTS = ("slice", "box3d 5,10,10 mm")


def load_case(ct_path, labels_path, classes_path, organ_names=None):
    ct = io.read_ct(ct_path)
    hu, frame = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(labels_path, ct), np.uint16)
    classes = io.read_classes(classes_path)
    organs = {v: n for v, n in classes.items() if (organ_names is None or n in organ_names) and (labels == v).any()}
    return hu, frame.spacing, labels, organs


def organ_dice(result, which, labels, organs):
    predicted = result.label_map(which)
    return {name: dice(predicted == value, labels == value) for value, name in organs.items()}


def run_case(backbone, hu, spacing, labels, organs, prompt_names=tuple(PROMPTS)):
    """{prompt variant: {method: {organ: DSC}}} for one CT."""
    variants = {name: (prompts_from_labels(labels, organs, mode, margin=margin, spacing=spacing)[0],
                       Settings(num_aug=3, ratio=0.01, seed=0, refine=refine))
                for name, (mode, margin, refine) in PROMPTS.items() if name in prompt_names}
    results = segment_variants(hu, variants, backbone)
    table = {}
    for name, result in results.items():
        table[name] = {}
        for title, which, changes in METHODS:
            if changes:
                result.rerectify(**changes)
            table[name][title] = organ_dice(result, which, labels, organs)
    return table


def mean(scores: dict) -> float:
    return float(np.mean(list(scores.values())))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--hn-patients", type=int, default=5)
    parser.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "rectification.md"))
    args = parser.parse_args()
    data = Path(args.data)
    backbone = load_backbone("litemedsam", device="cpu")
    backbone.precision = args.precision
    started = time.time()

    cases = [("abdomen-ts ct_small", load_case(data / "abdomen-ts/ct_small.nii.gz",
                                               data / "abdomen-ts/labels_small.nii.gz",
                                               data / "abdomen-ts/classes.json", FLARE9))]
    hn = sorted((data / "hn-openkbp/validation").glob("pt_*_ct.nii.gz"), key=lambda p: int(p.name.split("_")[1]))
    for ct_path in hn[:args.hn_patients]:
        patient = ct_path.name.replace("_ct.nii.gz", "")
        cases.append((f"hn-openkbp {patient}", load_case(ct_path, ct_path.with_name(f"{patient}_oar.nii.gz"),
                                                        data / "hn-openkbp/classes.json")))

    hu, spacing, labels, organs = cases[0][1]  # 1. the window, on plain single-box LiteMedSAM
    window_rows = {}
    for window in ((-160.0, 240.0), (-500.0, 1000.0)):
        backbone.window = window
        result = segment(hu, prompts_from_labels(labels, organs, "slice")[0], backbone, Settings(num_aug=1))
        window_rows[window] = organ_dice(result, "plain", labels, organs)
        print("window", window, round(mean(window_rows[window]), 3), flush=True)
    backbone.window = (-160.0, 240.0)

    tables = {}  # 2. prompt and rectification variants
    for title, (hu, spacing, labels, organs) in cases:
        # head and neck: the two prompts that matter there; the voxel margin (5 cm on its 5.4 mm
        # pixels) and refinement are measured on the abdomen, where they cost less
        tables[title] = run_case(backbone, hu, spacing, labels, organs,
                                 tuple(PROMPTS) if title.startswith("abdomen") else HN_PROMPTS)
        print(title, {v: round(mean(t[DEFAULT]), 3) for v, t in tables[title].items()}, flush=True)
    write_report(Path(args.output), window_rows, tables, time.time() - started, args)


def write_report(path, window_rows, tables, seconds, args):
    abdomen = tables["abdomen-ts ct_small"]
    head_neck = [t for name, t in tables.items() if name.startswith("hn-openkbp")]
    lines = ["# Preprocessing, prompt and rectification choices, measured", "",
             f"Generated by `python scripts/measure_rectification.py --data ../shared/data --hn-patients "
             f"{args.hn_patients} --precision {args.precision}` (LiteMedSAM on a 2-core CPU, "
             f"{seconds / 60:.0f} min). Prompts come from the reference labels: `slice` = a tight box per slice "
             "(manual prompting); `box3d` = the labels' 3-D box, extended by the margin, on every slice of its "
             "range (automatic prompting with perfect localization). n = 3, ratio = 0.01, seed 0. Mean DSC over "
             f"organs: 9 FLARE organs of abdomen-ts ct_small (3 mm voxels); the 7 organs at risk of the first "
             f"{len(head_neck)} hn-openkbp validation patients (2.5-5.4 mm voxels), averaged over patients.", "",
             "## CT window given to LiteMedSAM (single box, abdomen-ts, slice prompts)", "",
             "| window (HU) | mean DSC | " + " | ".join(next(iter(window_rows.values()))) + " |",
             "|---|---|" + "---|" * len(next(iter(window_rows.values())))]
    for window, scores in window_rows.items():
        lines.append(f"| [{window[0]:g}, {window[1]:g}] | {mean(scores):.3f} | "
                     + " | ".join(f"{v:.3f}" for v in scores.values()) + " |")
    for region, per_case in (("abdomen-ts", [abdomen]), ("head and neck", head_neck)):
        if not per_case:
            continue
        shown = list(per_case[0])
        lines += ["", f"## Methods x prompts, {region}", "",
                  "| method | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for title, _, _ in METHODS:
            cells = [np.mean([mean(case[variant][title]) for case in per_case]) for variant in shown]
            lines.append(f"| {title} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", "## Per organ: plain SAM / ensemble / UR-SAM (midpoint, alpha_h = 1.2)", ""]
    for name, table in tables.items():
        for variant in ("slice", "box3d 5,10,10 mm"):
            rows = table[variant]
            lines.append(f"**{name}, {variant}**: " + ", ".join(
                f"{organ} {rows[METHODS[0][0]][organ]:.2f} / {rows[METHODS[1][0]][organ]:.2f} / "
                f"{rows[DEFAULT][organ]:.2f}" for organ in rows[DEFAULT]))
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
