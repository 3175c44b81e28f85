"""``ursam segment``: UR-SAM on one CT."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from ..job import SegmentJob, run_segment_job
from ..pipeline import Settings
from ..prompts import DEFAULT_BOX_MARGIN
from ..rectify import DEFAULT_ALPHA_H, METHODS
from .options import add_speed_options, box_margin, dicom_kinds, non_negative_int, warn, window, with_progress_bar


def add_parser(commands):
    """Register ``ursam segment`` under ``commands`` (argparse subparsers); returns its parser."""
    seg = commands.add_parser("segment", help="segment organs in one CT volume",
                              description="Segment organs in a CT with prompt augmentation, "
                              "uncertainty estimation and uncertainty rectification.")
    seg.add_argument("ct", help="CT volume: .nii/.nii.gz/.nrrd/.mha file or a DICOM series folder")
    seg.add_argument("-o", "--output", required=True, help="output folder (created)")
    source = seg.add_argument_group("prompt source (exactly one)")
    source.add_argument("--prompt-labels", metavar="LABELS",
                        help="label map on the CT's grid from which the box prompts are made (needs --classes)")
    source.add_argument("--region", metavar="REGION",
                        help="automatic prompts from a built-in template: head-and-neck or abdomen "
                        "('ursam templates' lists them); nothing else is needed")
    source.add_argument("--template", metavar="TEMPLATE_DIR",
                        help="automatic prompts: localize organs with your own template ('ursam build-template')")
    seg.add_argument("--classes", metavar="CLASSES.json",
                     help='label value → organ name, e.g. {"1": "spleen"}')
    seg.add_argument("--localizer",
                     help="how --region/--template localize organs: registration (no training), medlam (the "
                     "paper's learned landmark model, trained weights ship with URSAM) or auto (registration "
                     "where its supports agree, else medlam). Default: the region's choice ('ursam templates'), "
                     "registration for --template")
    seg.add_argument("--localizer-weights", metavar="WEIGHTS",
                     help="your own weights for medlam/auto ('ursam train-localizer'; default: the shipped ones)")
    seg.add_argument("--reference", metavar="LABELS",
                     help="label map to score the result against (DSC in summary.json; same label values)")
    seg.add_argument("--box-margin", type=box_margin, default=DEFAULT_BOX_MARGIN, metavar="Z,Y,X[mm]",
                     help="extension of each side of a 3-D box prompt, in mm (5,10,10mm, the default: the "
                     "paper's [2, 10, 10] voxels in physical size) or in voxels (2,10,10)")
    seg.add_argument("--prompt-mode", choices=("slice", "box3d"), default="slice",
                     help="slice: a box per slice from the labels (manual prompting); box3d: the labels' "
                     "3-D box extended by --box-margin on every slice (perfect localization)")
    seg.add_argument("--organs", help="comma-separated organ names (default: every class present in the "
                     "labels, or every organ of the template)")
    seg.add_argument("--box-jitter", type=non_negative_int, default=0, metavar="PX",
                     help="slice mode: widen each box side by a random 0..PX pixels (default 0)")
    seg.add_argument("--backbone", default="litemedsam", help="litemedsam (default), sam-vit-b, medsam-vit-b")
    seg.add_argument("--checkpoint", help="weights file for the backbone")
    seg.add_argument("--checkpoint-sha256", metavar="HEX",
                     help="SHA-256 the checkpoint must have (e.g. from 'sha256sum'): verifies weights that URSAM's "
                     "catalogue does not know, such as MedSAM's")
    seg.add_argument("--window", type=window, metavar="LOW,HIGH",
                     help="CT window in HU mapped to [0, 1] (default: the backbone's)")
    seg.add_argument("--num-aug", type=int, default=3, help="augmented boxes per slice (default 3)")
    seg.add_argument("--ratio", type=float, default=0.01,
                     help="box perturbation, fraction of the slice size (default 0.01)")
    seg.add_argument("--method", choices=tuple(METHODS), default="ursam",
                     help="rectification (default ursam: class-specific threshold + Algorithm 1)")
    seg.add_argument("--alpha-h", type=float, default=DEFAULT_ALPHA_H,
                     help=f"upper intensity factor of the rectification (default {DEFAULT_ALPHA_H})")
    seg.add_argument("--lower-bound", choices=("midpoint", "paper"), default="midpoint",
                     help="rectification lower bound: (I_t + I_b)/2 (default) or the paper's (I_t - I_b)/2")
    seg.add_argument("--seed", type=int, default=0)
    seg.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    seg.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                     help="bfloat16 runs the networks under autocast: about 2x faster encoding on CPUs with "
                     "AVX512-BF16/AMX and on GPUs, same DSC on abdomen-ts (default float32)")
    add_speed_options(seg)
    seg.add_argument("--overwrite", action="store_true",
                     help="replace URSAM's files in an existing output folder")
    seg.add_argument("--dicom-out", type=dicom_kinds, default=(), metavar="KINDS",
                     help="for a DICOM series: also write DICOM objects, any of seg (DICOM SEG of the rectified "
                     "organs), seg-ensemble, rtstruct (RT Structure Set), uncertainty (Parametric Map), "
                     "e.g. seg,rtstruct,uncertainty")
    seg.add_argument("--quiet", action="store_true", help="no progress bar or table")
    seg.set_defaults(handler=_run_segment)
    return seg


def _run_segment(args) -> int:
    settings = Settings(num_aug=args.num_aug, ratio=args.ratio, seed=args.seed, method=args.method,
                        alpha_h=args.alpha_h, lower_bound=args.lower_bound)
    job = SegmentJob(**{f.name: getattr(args, f.name) for f in fields(SegmentJob) if f.name != "settings"},
                     settings=settings)
    summary = run_segment_job(job, lambda title, run: with_progress_bar(args.quiet, title, run), warn)
    if not args.quiet:
        _print_table(summary, Path(args.output))
    return 0


def _print_table(summary: dict, outdir: Path) -> None:
    first = next(iter(summary["organs"].values()))
    dice_key = next((key for key in first if key.startswith("dice_vs_")), None)
    header = f"{'organ':24s} {'volume mL':>10s} {'mean unc.':>10s}"
    print(header + (f" {'DSC ens.':>9s} {'DSC rect.':>9s}" if dice_key else ""))
    for name, entry in summary["organs"].items():
        line = f"{name:24s} {entry['volume_ml']['rectified']:10.1f} {entry['mean_uncertainty_in_box']:10.4f}"
        if dice_key:
            line += f" {entry[dice_key]['ensemble']:9.3f} {entry[dice_key]['rectified']:9.3f}"
        print(line)
    for name, reason in summary["not_found"].items():
        print(f"{name:24s} not found: {reason}")
    if dice_key:
        means = [np.mean([e[dice_key][k] for e in summary["organs"].values()]) for k in ("ensemble", "rectified")]
        print(f"{'mean DSC':24s} {'':10s} {'':10s} {means[0]:9.3f} {means[1]:9.3f}")
    print(f"Wrote {', '.join(summary['outputs'])} to {outdir} in {summary['timings_s']['all_s']:.0f} s.")
