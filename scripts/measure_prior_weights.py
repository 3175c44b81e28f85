"""How much should the atlas vote weigh in UR-SAM's ensemble, per organ? Measured on OpenKBP patients.

The one-click path (``ursam segment --region head-and-neck``) puts the multi-atlas vote into the
ensemble as a member of weight w (``Settings.prior_weight``): ŷ = (Σ n SAM members + w · vote) / (n + w).
Per patient this script localizes and segments once, exactly as that path does, then re-weighs the
prior for every w of ``--weights`` (``SegmentationResult.reweigh_prior``: no SAM work) and scores
every organ under each rectification of ``METHODS`` against the labels, beside the vote alone. Rows
go to OUTPUT/rows.jsonl after every patient (a rerun resumes); ``--table`` prints, per method, the
mean DSC per organ and weight, and the weight that is best for each organ. Choose on training patients that are not
supports of the template; report on validation patients.

``--choose`` prints each organ's rectification by :func:`choose_rectification` (the choice the built-in
template ships, scripts/build_builtin_templates.py: ``HN_RECTIFICATION``).

    python scripts/measure_prior_weights.py --split train --patients 33,40,52 -o /tmp/prior-weights
    python scripts/measure_prior_weights.py --table /tmp/prior-weights
    python scripts/measure_prior_weights.py --choose docs/results/prior-weights/train
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import io  # noqa: E402
from URSAMLib.backbones import load_backbone  # noqa: E402
from URSAMLib.builtin import region_template  # noqa: E402
from URSAMLib.localize import prompts_from_template  # noqa: E402
from URSAMLib.metrics import dice  # noqa: E402
from URSAMLib.pipeline import Settings, segment  # noqa: E402
from URSAMLib.template import Template  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hn-openkbp"
WEIGHTS = (0.0, 1.0, 3.0, 6.0, 12.0, 24.0, 64.0)
METHODS = ("ursam", "unc-fnc", "ensemble")
"""Rectifications scored at every weight: UR-SAM's, adding every uncertain voxel, and none."""


def score_patient(split: str, patient: str, template: Template, localizer: str, backbone,
                  weights: tuple[float, ...]) -> list[dict]:
    ct_path = DATA / split / f"{patient}_ct.nii.gz"
    ct = io.read_ct(str(ct_path))
    hu, _ = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(str(ct_path).replace("_ct.nii.gz", "_oar.nii.gz"), ct), np.uint16)
    started = time.perf_counter()
    found = prompts_from_template(ct, template, localizer=localizer)
    result = segment(hu, found.prompts, backbone, Settings())
    seconds = round(time.perf_counter() - started, 1)
    references = {organ.name: labels == organ.label for organ in result.organs}
    # OpenKBP leaves some organs out of some patients: there is nothing to score them against
    scored = [organ for organ in result.organs if references[organ.name].any()]
    votes = {}
    for organ in scored:
        atlas = found.localizations[organ.name].atlas
        votes[organ.name] = dice(atlas.mask(labels.shape), references[organ.name]) if atlas else None
    rows = []
    for weight in weights:
        result.reweigh_prior(weight)
        scores = defaultdict(dict)  # organ → rectification method → DSC
        for method in METHODS:
            result.rerectify(method=method)
            for organ in scored:
                full = np.zeros(labels.shape, bool)
                full[organ.region] = organ.mask
                scores[organ.name][method] = round(dice(full, references[organ.name]), 4)
        for organ in scored:
            vote = votes[organ.name]
            rows.append({"patient": patient, "organ": organ.name, "weight": weight,
                         "has_prior": organ.prior is not None, "dsc": scores[organ.name]["ursam"],
                         "dsc_by_method": scores[organ.name],
                         "dsc_atlas_vote": None if vote is None else round(vote, 4), "seconds": seconds})
        result.rerectify(method=Settings().method)
    return rows


MIN_GAIN = 0.02
"""Another rule replaces UR-SAM's for an organ only if its mean DSC is higher by this much: a smaller
difference over a dozen patients is noise."""


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines() if line.strip()]


def choose_rectification(rows: list[dict], weight: float = Settings().prior_weight) -> dict[str, str]:
    """Per organ, the rule of ``METHODS`` with the highest mean DSC over the patients of ``rows`` at the
    prior weight the product uses, where it beats UR-SAM's by :data:`MIN_GAIN`; organs where UR-SAM's
    rule stays are left out. Organs whose prompts had no prior (not placed by the atlas) do not count."""
    by = defaultdict(lambda: defaultdict(list))  # organ → method → DSC per patient
    for r in rows:
        if r["has_prior"] and r["weight"] == weight:
            for method, value in r["dsc_by_method"].items():
                by[r["organ"]][method].append(value)
    chosen = {}
    for organ, scores in by.items():
        means = {method: float(np.mean(values)) for method, values in scores.items()}
        best = max(means, key=means.get)
        if best != "ursam" and means[best] >= means["ursam"] + MIN_GAIN:
            chosen[organ] = best
    return chosen


def table(folder: Path, method: str = "ursam") -> str:
    rows = read_rows(folder)
    rows = [r for r in rows if r["has_prior"]]
    by = defaultdict(list)
    for r in rows:
        by[(r["organ"], r["weight"])].append(r["dsc_by_method"][method])
    votes = defaultdict(list)
    for r in rows:
        if r["weight"] == rows[0]["weight"] and r["dsc_atlas_vote"] is not None:
            votes[r["organ"]].append(r["dsc_atlas_vote"])
    organs = sorted({o for o, _ in by}, key=lambda o: [r["organ"] for r in rows].index(o))
    weights = sorted({w for _, w in by})
    patients = len({r["patient"] for r in rows})
    lines = [f"Mean DSC ({method}) per organ and prior weight w ({patients} patients; organs placed by the atlas)", "",
             "| w | " + " | ".join(organs) + " | mean |", "|---|" + "---|" * (len(organs) + 1)]
    for w in weights:
        means = [float(np.mean(by[(o, w)])) for o in organs]
        lines.append(f"| {w:g} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {np.mean(means):.3f} |")
    vote_means = [float(np.mean(votes[o])) if votes[o] else float("nan") for o in organs]
    lines.append("| vote alone | " + " | ".join(f"{m:.3f}" for m in vote_means) + f" | {np.nanmean(vote_means):.3f} |")
    best = {o: max(weights, key=lambda w, o=o: np.mean(by[(o, w)])) for o in organs}
    lines += ["", "Best w per organ: " + ", ".join(f"{o} {w:g}" for o, w in best.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train", choices=("train", "validation"))
    parser.add_argument("--patients", help="comma-separated patient numbers (default: all of the split)")
    parser.add_argument("-o", "--output", type=Path, help="folder for rows.jsonl")
    parser.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHTS))
    parser.add_argument("--table", type=Path, metavar="FOLDER", help="print the table of FOLDER's rows and stop")
    parser.add_argument("--choose", type=Path, metavar="FOLDER", help="print each organ's rectification chosen "
                        "from FOLDER's rows and stop")
    args = parser.parse_args()
    if args.table:
        print("\n\n".join(table(args.table, method) for method in METHODS))
        return
    if args.choose:
        print(json.dumps(choose_rectification(read_rows(args.choose)), indent=1))
        return
    if not args.output:
        parser.error("-o OUTPUT is needed to measure")
    names = sorted((p.name[:-len("_ct.nii.gz")] for p in (DATA / args.split).glob("pt_*_ct.nii.gz")),
                   key=lambda name: int(name.split("_")[1]))
    if args.patients:
        names = [f"pt_{n.strip()}" for n in args.patients.split(",")]
    builtin = region_template("head-and-neck")
    template = Template.load(builtin.folder)
    supports = {s.name.removesuffix("_ct") for t in (template, template.blanked) if t for s in t.supports}
    if supports & set(names):
        raise SystemExit(f"{', '.join(sorted(supports & set(names)))} are supports of the template: choose others")
    args.output.mkdir(parents=True, exist_ok=True)
    rows_path = args.output / "rows.jsonl"
    done = {json.loads(line)["patient"] for line in rows_path.read_text().splitlines()} if rows_path.exists() else set()
    weights = tuple(float(w) for w in args.weights.split(","))
    backbone = load_backbone("litemedsam", runtime="auto")
    for name in names:
        if name in done:
            continue
        rows = score_patient(args.split, name, template, builtin.localizer, backbone, weights)
        with rows_path.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{name}: {rows[0]['seconds'] if rows else 0} s", flush=True)
    print("\n\n".join(table(args.output, method) for method in METHODS))


if __name__ == "__main__":
    main()
