"""Segment OpenKBP patients exactly as `ursam segment --region head-and-neck` does, and score them.

For each patient two runs of the product's own job (``URSAMLib.job.run_segment_job``) on the CT,
sharing its slice embeddings through the embedding cache:

* ``auto``: the built-in head-and-neck template and its default localizer, no labels as input;
* ``label``: per-slice boxes of the reference labels (``--prompt-labels``, one box per part),
  what a person drawing a box on every slice would give.

Each organ's row holds the DSC of the rectified and ensemble masks (and of the atlas vote where
the atlas placed the prompts), the quality signals and predicted DSC of summary.json, which
localizer placed it, and the seconds per scan. Rows go to OUTPUT/rows.jsonl after every patient
(a rerun resumes); ``scripts/fit_quality.py`` fits the shipped quality model on the training rows,
and ``--table`` summarises a split's rows.

    python scripts/measure_end_to_end.py --split train --patients 1,2,3 -o docs/results/end-to-end/train
    python scripts/measure_end_to_end.py --split validation -o docs/results/end-to-end/validation
    python scripts/measure_end_to_end.py --split validation --table docs/results/end-to-end/validation
    python scripts/measure_end_to_end.py --split train --patients 33,40,52 --max-zoom 4 -o /tmp/zoom
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib.job import SegmentJob, run_segment_job  # noqa: E402
from URSAMLib.settings import Settings  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hn-openkbp"
RUNS = ("auto", "label")


def patient_ids(split: str, wanted: str | None) -> list[str]:
    found = sorted((p.name[:-len("_ct.nii.gz")] for p in (DATA / split).glob("pt_*_ct.nii.gz")),
                   key=lambda name: int(name.split("_")[1]))
    if wanted:
        chosen = [f"pt_{n.strip()}" for n in wanted.split(",")]
        unknown = sorted(set(chosen) - set(found))
        if unknown:
            raise SystemExit(f"not in {split}: {', '.join(unknown)}")
        return chosen
    return found


def run_patient(split: str, patient: str, scratch: Path, runs: tuple[str, ...] = RUNS,
                settings: Settings = Settings()) -> list[dict]:
    ct, labels = DATA / split / f"{patient}_ct.nii.gz", DATA / split / f"{patient}_oar.nii.gz"
    jobs = {"auto": SegmentJob(str(ct), str(scratch / "auto"), region="head-and-neck", reference=str(labels),
                               settings=settings),
            "label": SegmentJob(str(ct), str(scratch / "label"), prompt_labels=str(labels),
                                classes=str(DATA / "classes.json"), reference=str(labels), settings=settings)}
    jobs = {run: job for run, job in jobs.items() if run in runs}
    labelled = labelled_organs(labels)
    rows = []
    for run, job in jobs.items():
        started = time.perf_counter()
        summary = run_segment_job(job)
        seconds = time.perf_counter() - started
        localizers = {}
        boxes = scratch / run / "boxes.json"
        if boxes.is_file():
            localizers = {k: v.get("localizer", "") for k, v in json.loads(boxes.read_text())["organs"].items()}
        for organ, entry in summary["organs"].items():
            scores = entry["dice_vs_reference"]
            rows.append({"patient": patient, "run": run, "organ": organ, "labelled": organ in labelled,
                         "seconds": round(seconds, 1), "localizer": localizers.get(organ, ""),
                         "dsc": scores["rectified"],
                         "dsc_ensemble": scores["ensemble"], "dsc_atlas_vote": scores.get("atlas_vote"),
                         "predicted_dsc": entry["predicted_dsc"], "signals": entry["quality_signals"]})
        for organ, reason in summary["not_found"].items():
            rows.append({"patient": patient, "run": run, "organ": organ, "labelled": organ in labelled,
                         "seconds": round(seconds, 1), "localizer": localizers.get(organ, ""), "dsc": 0.0,
                         "dsc_ensemble": 0.0,
                         "dsc_atlas_vote": None, "predicted_dsc": None, "signals": None, "not_found": reason})
    return rows


def labelled_organs(labels: Path) -> set[str]:
    """The organs a patient's label map holds."""
    from URSAMLib import io

    values = set(np.unique(sitk.GetArrayViewFromImage(sitk.ReadImage(str(labels)))).tolist())
    return {name for value, name in io.read_classes(DATA / "classes.json").items() if value in values}


def scored_rows(folder: Path) -> list[dict]:
    """The rows of organs the patient's labels hold: OpenKBP leaves out some organs on some patients
    (the automatic run still segments them; there is nothing to score them against). Rows say so
    (``labelled``); in rows written before they did, the label run tells, as it prompts exactly the
    organs the labels hold."""
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    prompted = {(r["patient"], r["organ"]) for r in rows if r["run"] == "label"}
    return [r for r in rows if r.get("labelled", (r["patient"], r["organ"]) in prompted)]


def scan_kind(split: str, patient: str) -> str:
    """``blanked`` or ``complete``, as the ``auto`` localizer tells them apart."""
    from URSAMLib import io
    from URSAMLib.localize import BLANKED_BELOW, visible_body

    return "blanked" if visible_body(io.read_ct(DATA / split / f"{patient}_ct.nii.gz")) < BLANKED_BELOW else "complete"


COLUMNS = {"UR-SAM, automatic (built-in template)": ("auto", "dsc"),
           "multi-atlas vote alone, no SAM": ("auto", "dsc_atlas_vote"),
           "UR-SAM, per-slice label boxes": ("label", "dsc")}


def table(folder: Path, split: str) -> str:
    rows = scored_rows(folder)
    organs = list(dict.fromkeys(r["organ"] for r in rows))
    patients = sorted({r["patient"] for r in rows}, key=lambda p: int(p.split("_")[1]))
    kinds = {p: scan_kind(split, p) for p in patients}
    auto = [r for r in rows if r["run"] == "auto"]

    def mean_dsc(run: str, key: str, organ: str | None = None, kind: str | None = None) -> float:
        values = [r[key] if r[key] is not None else 0.0 for r in rows if r["run"] == run
                  and (organ is None or r["organ"] == organ) and (kind is None or kinds[r["patient"]] == kind)
                  and (key != "dsc_atlas_vote" or r.get("signals") is None or r["localizer"] == "atlas")]
        return float(np.mean(values)) if values else float("nan")

    count = {k: sum(v == k for v in kinds.values()) for k in ("complete", "blanked")}
    lines = [f"{len(patients)} patients ({count['complete']} complete, {count['blanked']} blanked scans): "
             f"{', '.join(patients)}. Rectified DSC, mean over patients per organ; *mean*: over organs. An organ "
             "not localized scores 0; the atlas vote is scored where the atlas placed the organ (a blanked "
             "scan's esophagus is placed by MedLAM).", "",
             "| prompts | mean | " + " | ".join(organs) + " |", "|---" * (len(organs) + 2) + "|"]
    columns = {name: (run, key) for name, (run, key) in COLUMNS.items() if any(r["run"] == run for r in rows)}
    for name, (run, key) in columns.items():
        per_organ = [mean_dsc(run, key, organ) for organ in organs]
        lines.append(f"| {name} | {np.nanmean(per_organ):.3f} | " + " | ".join(f"{v:.3f}" for v in per_organ) + " |")
    lines += ["", "Mean over organs by kind of scan:", "", "| prompts | complete | blanked |", "|---|---|---|"]
    for name, (run, key) in columns.items():
        cells = [np.nanmean([mean_dsc(run, key, organ, kind) for organ in organs]) for kind in ("complete", "blanked")]
        lines.append(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} |")
    seconds = {p: next(r["seconds"] for r in auto if r["patient"] == p) for p in patients}
    mean_s, max_s = np.mean(list(seconds.values())), max(seconds.values())
    lines += ["", f"Automatic run, seconds per scan (localization included, one thread, the 2-core CPU shared with "
              f"another run): mean {mean_s:.0f}, max {max_s:.0f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("train", "validation"))
    parser.add_argument("--patients", help="comma-separated numbers (default: every patient of the split)")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--table", type=Path, help="print the summary of a finished OUTPUT folder and exit")
    parser.add_argument("--runs", default=",".join(RUNS), help="which runs per patient (default: auto,label)")
    parser.add_argument("--max-zoom", type=float, default=Settings.max_zoom,
                        help="Settings.max_zoom of both runs (default: the product's)")
    args = parser.parse_args()
    if args.table:
        text = table(args.table, args.split or "validation")
        (args.table / "table.md").write_text(text)
        print(text)
        return
    args.output.mkdir(parents=True, exist_ok=True)
    rows_file = args.output / "rows.jsonl"
    done = {json.loads(line)["patient"] for line in rows_file.read_text().splitlines()} if rows_file.exists() else set()
    for patient in patient_ids(args.split, args.patients):
        if patient in done:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            rows = run_patient(args.split, patient, Path(scratch), tuple(args.runs.split(",")),
                               Settings(max_zoom=args.max_zoom))
        with rows_file.open("a") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
        auto = [r["dsc"] for r in rows if r["run"] == "auto"]
        print(f"{patient}: auto {np.mean(auto):.3f} in {rows[0]['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
