"""``ursam evaluate`` over many patients: each computed once and cached in ``REPORT/cases/<patient>.json.gz``
(a rerun skips patients already done with the same configuration), then the report written."""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import atomic, io
from ..errors import URSAMError
from ..progress import Progress
from ..template import Template, build_template
from .cases import Case, load_case, select
from .environment import environment
from .plan import EvalConfig
from .report import write_report
from .scoring import estimate_work, evaluate_case


Log = Callable[[str], None]


CASES_DIR, CACHE_DIR = "cases", "cache"


def _write_json(path: Path, data: dict) -> None:
    """Atomic: a reader (a report written while the run goes on) never sees half a file."""
    atomic.write_json(path, data, indent=1, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value)}")


def case_record_path(output: Path, patient: str) -> Path:
    """Where a patient's record is cached: gzip-compressed JSON, a tenth of its size, so that the
    committed reports can carry their records (docs/results/*/cases)."""
    return output / CASES_DIR / f"{patient}.json.gz"


def _write_record(path: Path, record: dict) -> None:
    """Atomic, and the same bytes for the same record (no time stamp in the gzip header)."""
    text = json.dumps(record, indent=1, default=_json_default) + "\n"
    with atomic.replacing(path) as temporary, open(temporary, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as packed:
        packed.write(text.encode("utf-8"))


def load_record(path: Path) -> dict | None:
    """A record or history written here (``.json.gz`` or ``.json``); None if missing or unreadable.
    A patient's ``.json.gz`` that is missing is looked for as the plain ``.json`` of older runs."""
    candidates = [path, path.with_suffix("")] if path.suffix == ".gz" else [path]
    for candidate in candidates:
        try:
            data = gzip.decompress(candidate.read_bytes()) if candidate.suffix == ".gz" else candidate.read_bytes()
            return json.loads(data.decode("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError):
            return None
    return None


@dataclass
class EvalRun:
    """What ``ursam evaluate`` needs besides the cases and the configuration."""

    output: Path
    classes: dict[int, str]
    template: object | None = None
    template_dir: str | None = None
    sweep_patients: int = 0
    """The first K cases also get the Table I sweep (-1: all)."""
    overwrite: bool = False
    device: str = "auto"
    box_batch: int | None = None
    """Boxes per decoder call (speed only; see :func:`evaluate_case`)."""
    backbone_loader: Callable | None = None
    """``() -> backbone``; called only if some patient needs computing (tests pass a stand-in)."""
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_cases(cases: list[Case], config: EvalConfig, run: EvalRun, progress: Progress | None = None,
              log: Log = print, on_done: Callable[[str], None] | None = None) -> list[dict]:
    """Evaluate every case not already cached with this configuration; returns every record.
    ``on_done(name)`` is called after each patient is computed and cached."""
    cases_dir = run.output / CASES_DIR
    panels_dir = run.output / CACHE_DIR / "panels"
    cases_dir.mkdir(parents=True, exist_ok=True)
    panels_dir.mkdir(parents=True, exist_ok=True)
    records, todo = {}, []
    for index, case in enumerate(cases):
        sweep = run.sweep_patients < 0 or index < run.sweep_patients
        key = config.key(run.template_dir, sweep)
        cached = None if run.overwrite else load_record(case_record_path(run.output, case.name))
        if cached is not None and cached.get("config") == key:
            records[case.name] = cached
            run.skipped.append(case.name)
        else:
            if cached is not None:
                log(f"{case.name}: cached with another configuration; recomputing")
            todo.append((case, sweep, key))
    if run.skipped:
        log(f"{len(run.skipped)} of {len(cases)} patients already done in {cases_dir}; skipping them")
    if todo:
        _announce_estimate(todo, config, run, log)
        backbone = run.backbone_loader()
        for k, (case, sweep, key) in enumerate(todo):
            def step(fraction: float, message: str, k=k, name=case.name) -> None:
                if progress:
                    progress((k + fraction) / len(todo), f"{name}: {message}")

            step(0.0, "loading")
            loaded = load_case(case, run.classes, config.organs)
            if not loaded.organs:
                log(f"{case.name}: none of the evaluated organs is in its labels; skipped")
                continue
            record, arrays = evaluate_case(loaded, config, backbone, run.template, sweep,
                                           lambda f, m, step=step: step(0.05 + 0.9 * f, m), run.box_batch)
            record["config"] = key
            np.savez_compressed(panels_dir / f"{case.name}.npz", **arrays)
            _write_record(case_record_path(run.output, case.name), record)
            records[case.name] = record
            run.computed.append(case.name)
            step(1.0, f"done in {record['timings']['total_s']:.0f} s")
            if on_done:
                on_done(case.name)
    return [records[c.name] for c in cases if c.name in records]


def _announce_estimate(todo, config: EvalConfig, run: EvalRun, log: Log) -> None:
    slices = boxes = 0
    for case, sweep, _ in todo:
        image = io.read_image(case.reference)
        labels, frame = io.axial_array(image, np.uint16)
        organs = {v: n for v, n in select(run.classes, config.organs).items()}
        s, b = estimate_work(labels, organs, config, run.template is not None, sweep, frame.spacing)
        slices, boxes = slices + s, boxes + b
    per_slice = 0.6 if config.precision == "bfloat16" else 1.2
    minutes = (slices * per_slice + boxes * 0.1) / 60
    log(f"To compute: {len(todo)} patients, about {slices} slices to embed and {boxes} boxes to decode: "
        f"~{minutes:.0f} min on an idle 2-core CPU ({per_slice} s/slice, 0.1 s/box; a GPU is far faster, a busy "
        "CPU slower). Finished patients are kept: rerun the same command to resume.")


def prepare_template(output: Path, template: str | None, support_images: list[str] | None,
                     support_labels: list[str] | None, classes: dict[int, str], organs: tuple[str, ...],
                     cases: list[Case]):
    """(Template or None, its cache identity): ``--template DIR``, or one built from supports
    into ``REPORT/template`` (reused when it holds the same supports)."""
    if template and support_images:
        raise URSAMError("Give either --template or --support-images/--support-labels, not both.")
    if support_images:
        folder = output / "template"
        sources = sorted(str(Path(p).resolve()) for p in support_images)
        if (folder / "template.json").is_file():
            manifest = json.loads((folder / "template.json").read_text())
            if sorted(s["source_image"] for s in manifest["supports"]) != sources:
                raise URSAMError(f"{folder} holds a template of other supports; add --overwrite to rebuild it.")
            loaded = Template.load(folder)
        else:
            wanted = [o for o in (organs or classes.values())]
            loaded = build_template(support_images, support_labels or [], classes, folder,
                                    list(organs) if organs else None, overwrite=True) if wanted else None
    elif template:
        loaded = Template.load(template)
    else:
        return None, None
    supports = {str(Path(s).resolve()) for s in (support_images or [])}
    leaked = [c.name for c in cases if str(c.ct.resolve()) in supports]
    if leaked:
        raise URSAMError(f"{', '.join(leaked)} is also a support of the template; evaluate on other patients.")
    return loaded, {"supports": [s.name for s in loaded.supports], "organs": loaded.organs}


def evaluate_command(cases: list[Case], config: EvalConfig, run: EvalRun, context: dict,
                     report_only: bool = False, progress: Progress | None = None, log: Log = print) -> Path:
    """Compute what is missing (unless ``report_only``), then write results.csv, report.md and
    figures into ``run.output``; returns the report's path. ``context``: title, command, notes,
    backbone, device (for the report)."""
    run.output.mkdir(parents=True, exist_ok=True)
    history_path = run.output / "run.json"
    history = (None if run.overwrite else load_record(history_path)) or {"invocations": []}
    started = time.perf_counter()
    invocation = {"command": context["command"], "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "environment": environment(), "computed": [], "wall_s": 0.0,
                  "backbone": config.backbone, "device": run.device}

    def record_progress() -> None:
        invocation["computed"], invocation["wall_s"] = list(run.computed), round(time.perf_counter() - started, 1)
        if invocation not in history["invocations"]:
            history["invocations"].append(invocation)
        _write_json(history_path, history)

    if report_only:
        records = [r for c in cases if (r := load_record(case_record_path(run.output, c.name))) is not None]
    else:
        # After each patient the history is saved, so a partial report made meanwhile is current.
        records = run_cases(cases, config, run, progress, log, on_done=lambda name: record_progress())
        if run.computed:
            record_progress()
    if not records:
        raise URSAMError(f"No finished patient in {run.output}; run without --report-only first.")
    organs = list(select(run.classes, config.organs).values())
    write_report(run.output, records, {**context, "organs": organs, "total_cases": len(cases),
                                       "config": asdict(config), "invocations": history["invocations"],
                                       "amendments": history.get("amendments", []),
                                       "template": context.get("template")})
    return run.output / "report.md"
