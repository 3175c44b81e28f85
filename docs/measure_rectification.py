"""Measure URSAM's free choices on real CT and write docs/rectification.md.

Choices measured (LiteMedSAM, n = 3, ratio = 0.01, seed 0, prompts from the reference labels):
* the CT window given to LiteMedSAM: [-160, 240] (its training) vs the paper's [-500, 1000];
* the rectification lower bound: midpoint (I_t + I_b)/2 vs the paper's (I_t - I_b)/2;
* alpha_h in {1.1, 1.2, 1.5};
* and, for context, every comparison method of the paper.
Each case runs SAM once; all rectification variants reuse its ensemble (``rerectify``).

    python docs/measure_rectification.py --data ../shared/data --hn-patients 5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import io  # noqa: E402
from URSAMLib.backbones import load_backbone  # noqa: E402
from URSAMLib.metrics import dice  # noqa: E402
from URSAMLib.pipeline import Settings, segment  # noqa: E402
from URSAMLib.prompts import prompts_from_labels  # noqa: E402

FLARE9 = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas", "aorta",
          "inferior_vena_cava"]
VARIANTS = [("plain SAM (original box)", "plain", {}), ("ensemble (n=3)", "ensemble", {})]
VARIANTS += [(f"UR-SAM, {bound}, alpha_h={alpha}", "rectified",
              {"method": "ursam", "lower_bound": bound, "alpha_h": alpha})
             for bound in ("midpoint", "paper") for alpha in (1.1, 1.2, 1.5)]
VARIANTS += [(f"fixed T + Alg. 1, {bound}", "rectified", {"method": "fixed", "lower_bound": bound, "alpha_h": 1.2})
             for bound in ("midpoint", "paper")]
VARIANTS += [(name, "rectified", {"method": name.lower()}) for name in ("Unc-FPC", "Unc-FNC", "Unc-FPNC")]


def load_case(ct_path, labels_path, classes_path, organ_names=None):
    ct = io.read_ct(ct_path)
    hu, frame = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(labels_path, ct), np.uint16)
    classes = io.read_classes(classes_path)
    organs = {v: n for v, n in classes.items() if (organ_names is None or n in organ_names) and (labels == v).any()}
    return hu, labels, organs


def organ_dice(labels_pred, labels_ref, organs):
    return {name: dice(labels_pred == value, labels_ref == value) for value, name in organs.items()}


def run_case(backbone, hu, labels, organs, mode):
    prompts, _ = prompts_from_labels(labels, organs, mode)
    result = segment(hu, prompts, backbone, Settings(num_aug=3, ratio=0.01, seed=0))
    rows = {}
    for title, which, changes in VARIANTS:
        if changes:
            result.rerectify(**changes)
        rows[title] = organ_dice(result.label_map(which), labels, organs)
    return rows, result.timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--hn-patients", type=int, default=5)
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("rectification.md")))
    args = parser.parse_args()
    data = Path(args.data)
    backbone = load_backbone("litemedsam", device="cpu")
    started = time.time()

    cases = [("abdomen-ts ct_small (9 FLARE organs)",
              load_case(data / "abdomen-ts/ct_small.nii.gz", data / "abdomen-ts/labels_small.nii.gz",
                        data / "abdomen-ts/classes.json", FLARE9))]
    hn = sorted((data / "hn-openkbp/validation").glob("pt_*_ct.nii.gz"), key=lambda p: int(p.name.split("_")[1]))
    for ct_path in hn[:args.hn_patients]:
        patient = ct_path.name.replace("_ct.nii.gz", "")
        cases.append((f"hn-openkbp validation {patient}",
                      load_case(ct_path, ct_path.with_name(f"{patient}_oar.nii.gz"), data / "hn-openkbp/classes.json")))

    # 1. The window, on plain single-box LiteMedSAM.
    hu, labels, organs = cases[0][1]
    window_rows = {}
    for window in ((-160.0, 240.0), (-500.0, 1000.0)):
        backbone.window = window
        prompts, _ = prompts_from_labels(labels, organs, "slice")
        result = segment(hu, prompts, backbone, Settings(num_aug=1))
        window_rows[window] = organ_dice(result.label_map("plain"), labels, organs)
        print("window", window, np.mean(list(window_rows[window].values())), flush=True)
    backbone.window = (-160.0, 240.0)

    # 2. Rectification variants per case and prompt mode.
    tables = {}
    for mode in ("slice", "box3d"):
        for title, (hu, labels, organs) in cases:
            rows, timings = run_case(backbone, hu, labels, organs, mode)
            tables[(mode, title)] = rows
            print(mode, title, {k: round(float(np.mean(list(v.values()))), 3) for k, v in rows.items()}, flush=True)

    write_report(Path(args.output), window_rows, tables, cases, time.time() - started, args)


def mean(scores: dict) -> float:
    return float(np.mean(list(scores.values())))


def write_report(path, window_rows, tables, cases, seconds, args):
    lines = ["# Rectification and preprocessing choices, measured", "",
             "Generated by `python docs/measure_rectification.py --data ../shared/data "
             f"--hn-patients {args.hn_patients}` (LiteMedSAM on CPU, {seconds / 60:.0f} min).",
             "Prompts come from the reference labels: `slice` = a tight box per slice (manual prompting), "
             "`box3d` = the labels' 3-D box extended by [2, 10, 10] voxels on every slice (automatic "
             "prompting with perfect localization). n = 3, ratio = 0.01, seed 0. Mean DSC over organs; "
             "the head-and-neck column is the mean over patients.", "",
             "## CT window given to LiteMedSAM (single box, abdomen-ts, slice prompts)", "",
             "| window (HU) | mean DSC | " + " | ".join(next(iter(window_rows.values()))) + " |",
             "|---|---|" + "---|" * len(next(iter(window_rows.values())))]
    for window, scores in window_rows.items():
        lines.append(f"| [{window[0]:g}, {window[1]:g}] | {mean(scores):.3f} | "
                     + " | ".join(f"{v:.3f}" for v in scores.values()) + " |")
    lines += ["", "## Rectification variants", ""]
    hn_titles = [t for t, _ in cases if t.startswith("hn-openkbp")]
    header = "| method | abdomen slice | abdomen box3d | head-neck slice | head-neck box3d |"
    lines += [header, "|---|---|---|---|---|"]
    for variant, _, _ in VARIANTS:
        cells = []
        for mode in ("slice", "box3d"):
            cells.append(f"{mean(tables[(mode, cases[0][0])][variant]):.3f}")
        for mode in ("slice", "box3d"):
            cells.append(f"{np.mean([mean(tables[(mode, t)][variant]) for t in hn_titles]):.3f}" if hn_titles else "–")
        lines.append(f"| {variant} | " + " | ".join([cells[0], cells[1], cells[2], cells[3]]) + " |")
    lines += ["", "## Per organ, default UR-SAM (midpoint, alpha_h = 1.2) vs ensemble and plain SAM", ""]
    default = "UR-SAM, midpoint, alpha_h=1.2"
    for mode in ("slice", "box3d"):
        for title, _ in cases:
            rows = tables[(mode, title)]
            lines.append(f"**{title}, {mode}**: " + ", ".join(
                f"{organ} {rows['plain SAM (original box)'][organ]:.2f} / {rows['ensemble (n=3)'][organ]:.2f} / "
                f"{rows[default][organ]:.2f}" for organ in rows[default]) + " (plain / ensemble / UR-SAM)")
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
