"""``ursam batch``: segment every CT of a folder (a cohort), resumably, optionally on dask.

Which files are cases, what they are called and where their label maps are:
:mod:`URSAMLib.cases` (:func:`~URSAMLib.cases.find_cohort`). Results go to ``OUTDIR/<name>/``.

A case is **complete** when ``OUTDIR/<name>/summary.json`` exists (it is moved in last) and
names outputs that all exist; a rerun skips complete cases and retries the others. Each case
runs :func:`URSAMLib.job.run_segment_job`; a failing case is reported in one line and the
others go on. ``OUTDIR/summary.csv`` has one row per case and organ.

With ``--dask-scheduler ADDRESS`` the cases run as tasks on an existing dask.distributed
cluster (``pip install 'ursam[batch]'``). Every case sets PyTorch's CPU thread count to
``--threads`` wherever it runs, because PyTorch sums in a thread-dependent order: with the
same ``--threads`` the outputs are byte-identical to a sequential run.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from . import dicom_out, io
from .atomic import replacing
from .cases import Case, find_cohort
from .errors import URSAMError
from .job import SegmentJob, cached_backbone, run_segment_job, template_organs

EXIT_CASES_FAILED = 1
CSV_COLUMNS = ("case", "organ", "label", "status", "volume_ml", "volume_ml_ensemble", "mean_uncertainty",
               "dsc_rectified", "dsc_ensemble", "dsc_against", "seconds", "message")


@dataclass(frozen=True)
class CaseOutcome:
    """What became of one case. status: ``done``, ``skipped`` (complete before) or ``failed``."""

    name: str
    status: str
    seconds: float = 0.0
    message: str = ""
    detail: str = ""
    """For failures that are bugs (not :class:`URSAMError`): the traceback."""


# ---------------------------------------------------------------------------------------
# Running one case (in this process or on a dask worker).

def completed_summary(folder: Path) -> dict | None:
    """A case folder's summary.json when the folder is complete, else None."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((folder / name).is_file() for name in summary.get("outputs", ["?"])):
        return None
    return summary


def run_case(job: SegmentJob, threads: int = 0) -> CaseOutcome:
    """Segment one case; never raises for a failing case (the outcome says why).

    threads: PyTorch CPU threads during the case (0 = leave as is); restored afterwards.
    The model is loaded once per process and reused by later cases.
    """
    import torch

    name = Path(job.output).name
    started = time.perf_counter()
    previous = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        backbone = cached_backbone(job)  # loaded once; this case's own copy (window, precision)
        summary = run_segment_job(job, backbone=backbone)
        return CaseOutcome(name, "done", round(time.perf_counter() - started, 2),
                           f"{len(summary['organs'])} organs")
    except URSAMError as error:
        return CaseOutcome(name, "failed", round(time.perf_counter() - started, 2), str(error))
    except Exception as error:  # a bug, or a worker-side problem: keep the others going
        return CaseOutcome(name, "failed", round(time.perf_counter() - started, 2),
                           f"{type(error).__name__}: {error} (traceback in errors.log)", traceback.format_exc())
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------
# The batch.

def _case_job(template: SegmentJob, case: Case, outdir: Path) -> SegmentJob:
    return replace(template, ct=str(case.ct), output=str(outdir / case.name), overwrite=True,
                   prompt_labels=str(case.prompt_labels) if case.prompt_labels else None,
                   reference=str(case.reference) if case.reference and case.reference.is_file() else None)


def _check_inputs(template: SegmentJob, label_prompts: bool) -> None:
    """The checks every case would fail alike, once, before anything runs."""
    template.settings.validate()
    if label_prompts:
        if not template.classes:
            raise URSAMError("--prompt-labels-pattern needs --classes CLASSES.json (label value → organ name).")
        io.read_classes(template.classes)
    if template.template or template.region:
        template_organs(template)
    cached_backbone(template)  # a checkpoint that does not load fails here, not once per case


def _check_previous(summary: dict, job: SegmentJob, folder: Path) -> None:
    """A complete case made with other parameters must not pass for this run's."""
    expected = {"backbone": job.backbone, **{k: getattr(job.settings, k, None) for k in summary.get("parameters", {})}}
    found = {"backbone": summary.get("backbone", {}).get("name"), **summary.get("parameters", {})}
    changed = [f"{k}: {found[k]} there, {expected[k]} now" for k in expected if found.get(k) != expected[k]]
    if changed:
        raise URSAMError(f"{folder} holds a result made with other settings ({'; '.join(changed)}); "
                         "use another output folder, or remove that case's folder to redo it.")


def run_batch(input_dir: str | os.PathLike, output: str | os.PathLike, template: SegmentJob,
              ct_pattern: str = "*", labels_pattern: str | None = None, reference_pattern: str | None = None,
              threads: int = 0, scheduler: str | None = None,
              log: Callable[[str], None] = print) -> list[CaseOutcome]:
    """Segment every case of ``input_dir`` into ``output/<case>/`` and write ``output/summary.csv``.

    template: the options shared by all cases (its ct, output, prompt_labels and reference
    are set per case). threads: PyTorch CPU threads per case (0: this process's current
    count, passed on to dask workers too). scheduler: a dask.distributed address, or None to
    run here one after another. Returns one outcome per case, in case-name order.
    """
    import torch

    outdir = Path(output)
    if outdir.exists() and not outdir.is_dir():
        raise URSAMError(f"{outdir} exists and is not a folder; choose another output folder.")
    if threads < 0:
        raise URSAMError(f"--threads must be 1 or more (0: the default), not {threads}.")
    threads = threads or torch.get_num_threads()
    cases = find_cohort(input_dir, ct_pattern, labels_pattern, reference_pattern, exclude=[outdir])
    _check_inputs(template, bool(labels_pattern))
    outcomes: dict[str, CaseOutcome] = {}
    pending = []
    for case in cases:
        job = _case_job(template, case, outdir)
        summary = completed_summary(outdir / case.name)
        if summary is not None and not set(dicom_out.filenames(job.dicom_out)) <= set(summary.get("outputs", [])):
            summary = None  # complete, but without DICOM objects this run asks for: redo it
        if summary is not None:
            _check_previous(summary, job, outdir / case.name)
            outcomes[case.name] = CaseOutcome(case.name, "skipped", summary.get("timings_s", {}).get("all_s", 0.0),
                                              "complete from an earlier run")
        elif case.prompt_labels is not None and not case.prompt_labels.is_file():
            outcomes[case.name] = CaseOutcome(case.name, "failed", message=f"no prompt label map {case.prompt_labels}")
        else:
            pending.append(job)
    for outcome in outcomes.values():
        _report(outcome, log)
    outdir.mkdir(parents=True, exist_ok=True)
    run = _run_on_dask(scheduler, pending, threads) if scheduler else (run_case(job, threads) for job in pending)
    for outcome in run:
        outcomes[outcome.name] = outcome
        _report(outcome, log)
        if outcome.detail:
            with open(outdir / "errors.log", "a") as errors:
                errors.write(f"--- {outcome.name} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{outcome.detail}\n")
    ordered = [outcomes[case.name] for case in cases]
    csv_path = write_summary_csv(outdir, ordered)
    counts = {s: sum(o.status == s for o in ordered) for s in ("done", "skipped", "failed")}
    log(f"{counts['done']} done, {counts['skipped']} skipped (complete), {counts['failed']} failed; "
        f"table: {csv_path}")
    return ordered


def _report(outcome: CaseOutcome, log: Callable[[str], None]) -> None:
    if outcome.status == "failed":
        print(f"ursam: case {outcome.name} failed: {outcome.message}", file=sys.stderr)
    else:
        log(f"{outcome.name}: {outcome.status} ({outcome.message}, {outcome.seconds:.0f} s)")


def _run_on_dask(address: str, jobs: list[SegmentJob], threads: int) -> Iterable[CaseOutcome]:
    """Run the jobs as tasks on the dask.distributed scheduler at ``address``; yields outcomes as
    they finish. The workers must import this URSAMLib and read/write the same paths."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise URSAMError("--dask-scheduler needs dask.distributed: pip install 'ursam[batch]' "
                         "(or: pip install dask distributed).") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as error:
        raise URSAMError(f"Could not connect to the dask scheduler at {address} ({error}); start one with "
                         "'dask scheduler' and workers with 'dask worker ADDRESS'.") from None
    with client:
        futures = {client.submit(run_case, job, threads, pure=False, key=f"ursam-batch-{Path(job.output).name}-"
                                 f"{os.getpid()}-{time.time_ns()}"): Path(job.output).name for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # the worker died (e.g. out of memory)
                yield CaseOutcome(futures[future], "failed", message=f"dask task lost: {type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------
# The table.

def summary_rows(outcome: CaseOutcome, folder: Path) -> list[dict]:
    """summary.csv rows of one case: one per organ (and per organ not found), or one for a failure."""
    if outcome.status == "failed":
        return [{"case": outcome.name, "status": "failed", "seconds": outcome.seconds, "message": outcome.message}]
    summary = json.loads((folder / "summary.json").read_text())
    seconds = summary.get("timings_s", {}).get("all_s", outcome.seconds)
    rows = []
    for organ, entry in summary["organs"].items():
        dice_key = next((k for k in entry if k.startswith("dice_vs_")), None)
        dice = entry.get(dice_key, {})
        rows.append({"case": outcome.name, "organ": organ, "label": entry["label"], "status": outcome.status,
                     "volume_ml": entry["volume_ml"]["rectified"], "volume_ml_ensemble": entry["volume_ml"]["ensemble"],
                     "mean_uncertainty": entry["mean_uncertainty_in_box"], "dsc_rectified": dice.get("rectified", ""),
                     "dsc_ensemble": dice.get("ensemble", ""),
                     "dsc_against": dice_key.removeprefix("dice_vs_") if dice_key else "", "seconds": seconds})
    for organ, reason in summary.get("not_found", {}).items():
        rows.append({"case": outcome.name, "organ": organ, "status": "not_found", "seconds": seconds,
                     "message": reason})
    return rows


def write_summary_csv(outdir: Path, outcomes: list[CaseOutcome]) -> Path:
    """Write ``outdir/summary.csv`` (columns :data:`CSV_COLUMNS`) atomically; returns its path."""
    path = outdir / "summary.csv"
    with replacing(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, restval="")
        writer.writeheader()
        for outcome in outcomes:
            writer.writerows(summary_rows(outcome, outdir / outcome.name))
    return path
