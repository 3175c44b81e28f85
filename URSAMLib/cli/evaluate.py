"""``ursam evaluate``: UR-SAM and the paper's comparison methods on labelled CTs, with a report."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..builtin import region_template
from ..errors import URSAMError
from ..evaluation import (EvalConfig, EvalRun, evaluate_command, find_labelled_cases, find_classes, manual_jitter,
                          prepare_template)
from ..io import read_classes
from ..job import SegmentJob, cached_backbone
from ..localize import LOCALIZERS
from ..runtime import check_runtime_choice
from .options import non_negative_int, warn, with_progress_bar
from .parents import augmentation_parent, model_parent, settings_from


def add_parser(commands) -> None:
    """Register ``ursam evaluate`` under ``commands`` (argparse subparsers)."""
    ev = commands.add_parser(
        "evaluate", help="score UR-SAM and the paper's comparison methods on labelled CTs, with a report",
        parents=[augmentation_parent(), model_parent()],
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
    ev.add_argument("--region", metavar="REGION", help="automatic prompts from a built-in template, localized "
                    "as `ursam segment --region` localizes ('ursam templates' lists them)")
    ev.add_argument("--template", metavar="TEMPLATE_DIR", help="automatic prompts from this template")
    ev.add_argument("--support-images", nargs="+", metavar="CT", help="build a template from these CTs (into "
                    "REPORT_DIR/template) for automatic prompts")
    ev.add_argument("--support-labels", nargs="+", metavar="LABELS", help="the support CTs' label maps")
    ev.add_argument("--localizer", help="how the template localizes organs (default: the region's choice for "
                    f"--region, {EvalConfig.localizer} otherwise)")
    ev.add_argument("--localizer-weights", metavar="WEIGHTS", help="weights of a learned localizer")
    ev.add_argument("--jitter", type=non_negative_int, default=EvalConfig.jitter, metavar="PX",
                    help="manual prompting: widen each box side by 0..PX pixels of a 512-pixel slice, scaled to "
                    f"the slice size (default {EvalConfig.jitter}, MedSAM's)")
    ev.add_argument("--no-refine", action="store_true", help="leave out the slice-wise refinement runs")
    ev.add_argument("--sweep", action="store_true",
                    help="also the Table I sweep (n = 1, and 3/5/7 x ratio 0.005-0.1) on every patient")
    ev.add_argument("--sweep-patients", type=non_negative_int, metavar="K",
                    help="the sweep on the first K patients only (implies --sweep)")
    ev.add_argument("--limit", type=int, metavar="N", help="only the first N patients")
    ev.add_argument("--title", help="report title (default: the first input's name)")
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
    cases = find_labelled_cases(args.inputs, args.labels)[:args.limit]
    classes_path = find_classes(args.inputs, args.classes)
    classes = read_classes(classes_path)
    organs = tuple(n.strip() for n in args.organs.split(",") if n.strip()) if args.organs else ()
    output = Path(args.output)
    if bool(args.support_images) != bool(args.support_labels):
        raise URSAMError("--support-images and --support-labels go together (one label map per support CT).")
    template_dir, localizer = args.template, args.localizer or EvalConfig.localizer
    if args.region:
        if args.template or args.support_images:
            raise URSAMError("Give one of --region, --template or --support-images, not several.")
        builtin = region_template(args.region)
        template_dir, localizer = str(builtin.folder), args.localizer or builtin.localizer
    template, template_key = prepare_template(output, template_dir, args.support_images, args.support_labels,
                                              classes, organs, cases)
    config = EvalConfig(organs=organs, settings=settings_from(args), jitter=args.jitter, margin=args.box_margin,
                        refine=not args.no_refine, backbone=args.backbone, checkpoint=args.checkpoint,
                        precision=args.precision, window=args.window, localizer=localizer,
                        localizer_weights=args.localizer_weights)
    config.run_settings()  # invalid settings are user errors before anything runs
    check_runtime_choice(args.runtime, args.device, args.precision)
    if template is not None:
        if localizer not in LOCALIZERS:
            raise URSAMError(f"Unknown localizer {localizer!r}; choose one of: {', '.join(LOCALIZERS)}.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    # the model is loaded and set up as `ursam segment` loads it (pin, runtime, precision, window, cache)
    model = SegmentJob(ct="", output="", backbone=args.backbone, checkpoint=args.checkpoint, window=args.window,
                       precision=args.precision, device=args.device, runtime=args.runtime,
                       embedding_cache=args.embedding_cache)

    run = EvalRun(output, classes, template, json.dumps(template_key, sort_keys=True) if template_key else None,
                  args.sweep_patients if args.sweep_patients is not None else (-1 if args.sweep else 0),
                  args.overwrite, args.device, args.box_batch, lambda: cached_backbone(model, warn=warn))
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
    path = with_progress_bar(args.quiet, "Evaluating", lambda progress: evaluate_command(
        cases, config, run, context, args.report_only, progress, log))
    print(f"Report: {path} ({len(run.computed)} patients computed, {len(run.skipped)} already done).")
    return 0
