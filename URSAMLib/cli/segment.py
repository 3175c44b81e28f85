"""``ursam segment``: UR-SAM on one CT."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from ..job import SegmentJob, run_segment_job
from .options import warn, with_progress_bar
from .parents import augmentation_parent, job_parent, model_parent, settings_from


LABELS = ("--prompt-labels", "LABELS",
          "label map on the CT's grid from which the box prompts are made (needs --classes)")


def add_parser(commands):
    """Register ``ursam segment`` under ``commands`` (argparse subparsers); returns its parser."""
    seg = commands.add_parser("segment", help="segment organs in one CT volume",
                              parents=[job_parent(LABELS), augmentation_parent(), model_parent()],
                              description="Segment organs in a CT with prompt augmentation, "
                              "uncertainty estimation and uncertainty rectification.")
    seg.add_argument("ct", help="CT volume: .nii/.nii.gz/.nrrd/.mha file or a DICOM series folder")
    seg.add_argument("-o", "--output", required=True, help="output folder (created)")
    seg.add_argument("--reference", metavar="LABELS",
                     help="label map to score the result against (DSC in summary.json; same label values)")
    seg.add_argument("--overwrite", action="store_true",
                     help="replace URSAM's files in an existing output folder")
    seg.add_argument("--quiet", action="store_true", help="no progress bar or table")
    seg.set_defaults(handler=_run_segment)
    return seg


def _run_segment(args) -> int:
    settings = settings_from(args)
    job = SegmentJob(**{f.name: getattr(args, f.name) for f in fields(SegmentJob) if f.name != "settings"},
                     settings=settings)
    summary = run_segment_job(job, lambda title, run: with_progress_bar(args.quiet, title, run), warn)
    if not args.quiet:
        _print_table(summary, Path(args.output))
    return 0


def _print_table(summary: dict, outdir: Path) -> None:
    first = next(iter(summary["organs"].values()))
    dice_key = next((key for key in first if key.startswith("dice_vs_")), None)
    header = f"{'organ':24s} {'volume mL':>10s} {'mean unc.':>10s} {'pred. DSC':>9s} {'':6s}"
    print(header + (f" {'DSC ens.':>9s} {'DSC rect.':>9s}" if dice_key else ""))
    for name, entry in summary["organs"].items():
        predicted = "" if entry["predicted_dsc"] is None else f"{entry['predicted_dsc']:.2f}"
        line = (f"{name:24s} {entry['volume_ml']['rectified']:10.1f} {entry['mean_uncertainty_in_box']:10.4f} "
                f"{predicted:>9s} {'Review' if entry['review'] else '':6s}")
        if dice_key:
            line += f" {entry[dice_key]['ensemble']:9.3f} {entry[dice_key]['rectified']:9.3f}"
        print(line)
    for name, reason in summary["not_found"].items():
        print(f"{name:24s} not found: {reason}")
    if dice_key:
        means = [np.mean([e[dice_key][k] for e in summary["organs"].values()]) for k in ("ensemble", "rectified")]
        print(f"{'mean DSC':24s} {'':10s} {'':10s} {'':9s} {'':6s} {means[0]:9.3f} {means[1]:9.3f}")
    flagged = [name for name in summary["review_order"] if summary["organs"][name]["review"]]
    if flagged:
        print(f"Review first (lowest predicted DSC first): {', '.join(flagged)}.")
    print(f"Wrote {', '.join(summary['outputs'])} to {outdir} in {summary['timings_s']['all_s']:.0f} s.")
