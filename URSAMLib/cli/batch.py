"""``ursam batch``: ``segment``'s options, for every CT of a folder (:mod:`URSAMLib.batch` runs it)."""
from __future__ import annotations

import argparse
from dataclasses import fields

from ..batch import EXIT_CASES_FAILED, run_batch
from ..job import SegmentJob, check_prompt_source
from .parents import augmentation_parent, job_parent, model_parent, settings_from

LABELS = ("--prompt-labels-pattern", "GLOB", "each case's prompt label map, relative to INPUT_DIR, '*' = case name "
          "(e.g. '*_oar.nii.gz'; needs --classes)")
PER_CASE = {"ct", "output", "prompt_labels", "reference", "overwrite", "settings"}
"""Fields of a :class:`SegmentJob` that each case of a batch sets itself."""


def add_parser(commands) -> argparse.ArgumentParser:
    """Register ``ursam batch`` under ``commands`` (argparse subparsers): the options of ``segment`` (the
    same parents), with patterns in place of one case's files."""
    batch = commands.add_parser(
        "batch", help="segment every CT in a folder (resumable; optionally on a dask cluster)",
        parents=[job_parent(LABELS), augmentation_parent(), model_parent()],
        description="Segment each CT of INPUT_DIR into OUTDIR/<case>/, skipping cases already complete, "
        "and write OUTDIR/summary.csv. Case names and label files: see docs/cli.md.")
    batch.add_argument("input_dir", metavar="INPUT_DIR", help="folder of CT files and/or DICOM series folders")
    batch.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (one subfolder per case)")
    batch.add_argument("--ct-pattern", default="*", metavar="GLOB",
                       help="which entries are CTs; the '*' part (less the extension) names the case "
                       "(default '*'; e.g. '*_ct.nii.gz' makes pt_1_ct.nii.gz case pt_1)")
    batch.add_argument("--reference-pattern", metavar="GLOB",
                       help="each case's label map to score against (DSC), '*' = case name")
    batch.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="run the cases on this dask.distributed scheduler (e.g. tcp://host:8786)")
    batch.add_argument("--threads", type=int, default=0, metavar="N",
                       help="PyTorch CPU threads per case, wherever it runs (default: this machine's "
                       "PyTorch default); the same N gives byte-identical outputs")
    batch.set_defaults(handler=run_from_args, cancelled_note="finished cases are kept in OUTDIR; "
                       "run the same command again to resume.")
    return batch


def run_from_args(args: argparse.Namespace) -> int:
    """``ursam batch``'s handler: 0 when every case is complete, 1 when some failed."""
    template = SegmentJob(ct="", output="", settings=settings_from(args), **{
        f.name: getattr(args, f.name) for f in fields(SegmentJob) if hasattr(args, f.name) and f.name not in PER_CASE})
    check_prompt_source(template, labels_given=bool(args.prompt_labels_pattern))
    outcomes = run_batch(args.input_dir, args.output, template, ct_pattern=args.ct_pattern,
                         labels_pattern=args.prompt_labels_pattern, reference_pattern=args.reference_pattern,
                         threads=args.threads, scheduler=args.dask_scheduler)
    return EXIT_CASES_FAILED if any(o.status == "failed" for o in outcomes) else 0
