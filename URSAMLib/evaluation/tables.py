"""Rows of an evaluation (one per patient x organ x method x setting) selected, summarised and
written: results.csv, the paper-shaped tables, paired comparisons."""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


METHOD_TITLES = {
    "one-box": "Auto Prompting (one box)",
    "ensemble": "Ensemble (prompt augmentation)",
    "unc-fpc": "Unc-FPC",
    "unc-fnc": "Unc-FNC",
    "unc-fpnc": "Unc-FPNC",
    "fixed": "Fixed T_unc + Rec",
    "ursam": "UR-SAM (class-specific T_unc + Rec)",
    "per-organ": "Per-organ rectification (measured; the default)",
}


def delivered_method(rows: list[dict]) -> str:
    """The rectification a user gets by default (``per-organ``), or ``ursam`` in reports from before it."""
    return "per-organ" if any(r["method"] == "per-organ" for r in rows) else "ursam"


PROMPT_TITLES = {
    "auto": "auto (template localization)",
    "box3d": "box3d from labels (perfect localization)",
    "slice": "slice boxes from labels (tight)",
    "manual": "manual (slice boxes + jitter)",
    "atlas": "multi-atlas vote (no SAM)",
}
CSV_COLUMNS = ["patient", "organ", "prompt", "variant", "setting", "num_aug", "ratio", "refine", "method",
               "found", "dsc", "hd95_mm", "mean_uncertainty", "auroc", "auroc_error_map",
               "ensemble_error_voxels", "threshold",
               "uncertain_voxels", "changed_voxels", "predicted_ml", "reference_ml", "reference_in_boxes",
               "predicted_dsc", "review"]
REVIEW_THRESHOLD = 0.1
"""The earlier rule of thumb for the 'Review' flag (mean uncertainty over the boxes above 0.1 nats),
reported beside the predicted-DSC flag of :mod:`URSAMLib.quality` for comparison."""
POOR_DSC, GOOD_DSC = 0.5, 0.7
"""An organ under POOR_DSC needs a reviewer; one at GOOD_DSC or above should not cost one."""


def reliability_scores(predicted: list[float], dsc: list[float], review: list[bool]) -> dict:
    """How well per-organ predicted DSC and a Review flag tell poor organs from good ones.

    ``pearson_r`` of predicted and true DSC; ``mae``; ``ece``: the calibration error over 5 equal
    bins of predicted DSC (the organ-weighted mean of |mean predicted − mean true| per bin);
    ``aurc``: area under the risk-coverage curve when organs are accepted best-predicted first,
    risk = 1 − DSC (lower is better; accepting in the order of true DSC is the floor);
    ``poor_caught``: flagged among organs with DSC < POOR_DSC (sensitivity); ``good_flagged``: flagged
    among organs with DSC >= GOOD_DSC; ``specificity``: not flagged among organs with DSC >= POOR_DSC.
    """
    p, d, flag = np.asarray(predicted, float), np.asarray(dsc, float), np.asarray(review, bool)
    if len(p) < 2:
        return {"organs": len(p)}
    bins = np.minimum((p * 5).astype(int), 4)
    ece = sum(np.count_nonzero(bins == b) / len(p) * abs(p[bins == b].mean() - d[bins == b].mean())
              for b in range(5) if np.any(bins == b))
    risk = np.cumsum(1.0 - d[np.argsort(-p, kind="stable")]) / np.arange(1, len(d) + 1)
    floor = np.cumsum(1.0 - np.sort(d)[::-1]) / np.arange(1, len(d) + 1)

    def share(selected):
        return float(flag[selected].mean()) if np.any(selected) else math.nan

    return {"organs": len(p), "pearson_r": float(np.corrcoef(p, d)[0, 1]) if p.std() > 0 else math.nan,
            "mae": float(np.abs(p - d).mean()), "ece": float(ece), "aurc": float(risk.mean()),
            "aurc_floor": float(floor.mean()), "poor_caught": share(d < POOR_DSC),
            "good_flagged": share(d >= GOOD_DSC), "specificity": 1.0 - share(d >= POOR_DSC)}


def write_csv(rows: list[dict], path: Path) -> None:
    """One line per patient x organ x method x setting; NaN written as empty."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


# ---------------------------------------------------------------------------------------
# Selecting and summarising rows.
def pick(rows: list[dict], **where) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def by_organ(rows: list[dict], key: str, organs: list[str]) -> dict[str, list[float]]:
    """organ → the per-patient values of ``key`` (NaN dropped)."""
    values = defaultdict(list)
    for r in rows:
        value = r.get(key)  # None also where a row predates the key
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            values[r["organ"]].append(float(value))
    return {o: values.get(o, []) for o in organs}


def organ_mean(values: dict[str, list[float]]) -> float:
    """The paper's summary: the mean over organs of each organ's mean over patients."""
    means = [np.mean(v) for v in values.values() if v]
    return float(np.mean(means)) if means else float("nan")


def cell(values: list[float], digits: int = 3, sd: bool = True) -> str:
    if not values:
        return "–"
    mean = f"{np.mean(values):.{digits}f}"
    return f"{mean} ± {np.std(values, ddof=1):.{digits}f}" if sd and len(values) > 1 else mean


def table(rows_by_title: dict[str, list[dict]], organs: list[str], key: str = "dsc", higher: bool = True,
          digits: int = 3, reference_titles: tuple[str, ...] = ()) -> list[str]:
    """A Markdown table: organs as columns (+ mean over organs), one row per title; the best value
    of each column in bold (rows in ``reference_titles`` are shown in italics and not ranked)."""
    summaries = {t: by_organ(rows, key, organs) for t, rows in rows_by_title.items()}
    columns = organs + ["mean"]
    value = {t: {**{o: (np.mean(v) if v else math.nan) for o, v in s.items()}, "mean": organ_mean(s)}
             for t, s in summaries.items()}
    ranked = [t for t in rows_by_title if t not in reference_titles]
    best = {}
    for c in columns:
        candidates = [value[t][c] for t in ranked if not math.isnan(value[t][c])]
        if candidates:
            best[c] = round(max(candidates) if higher else min(candidates), digits)
    lines = ["| method | " + " | ".join(short_name(o) for o in columns) + " |", "|---|" + "---|" * len(columns)]
    for title, summary in summaries.items():
        cells = []
        for c in columns:
            text = (f"{value[title][c]:.{digits}f}" if c == "mean" and not math.isnan(value[title][c])
                    else "–" if c == "mean" else cell(summary[c], digits))
            if title in reference_titles:
                text = f"*{text}*" if text != "–" else text
            elif c in best and not math.isnan(value[title][c]) and round(value[title][c], digits) == best[c]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def short_name(organ: str) -> str:
    return organ.replace("inferior_vena_cava", "IVC").replace("adrenal_gland_", "adrenal ").replace("_", " ")


# ---------------------------------------------------------------------------------------
# Paired comparisons: do our numbers agree with the paper's claims?
def paired(rows_a: list[dict], rows_b: list[dict], key: str = "dsc") -> np.ndarray:
    """``b - a`` per (patient, organ) present in both."""
    a = {(r["patient"], r["organ"]): r[key] for r in rows_a}
    pairs = [(a[(r["patient"], r["organ"])], r[key]) for r in rows_b if (r["patient"], r["organ"]) in a]
    diff = np.array([b - x for x, b in pairs], dtype=float)
    return diff[np.isfinite(diff)]


def verdict(diff: np.ndarray, margin: float = 0.005) -> tuple[str, str]:
    """(``better``/``worse``/``no clear difference``, evidence) for paired differences ``b - a``."""
    if diff.size == 0:
        return "no data", "no pairs"
    wins, losses = int((diff > 1e-4).sum()), int((diff < -1e-4).sum())
    p = float("nan")
    if wins + losses >= 6:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(diff[np.abs(diff) > 1e-4]).pvalue)
    mean = float(diff.mean())
    evidence = (f"mean Δ {mean:+.4f} DSC over {diff.size} patient-organ pairs, {wins} better / {losses} worse"
                + (f", Wilcoxon p = {p:.2g}" if not math.isnan(p) else ", too few pairs for a test"))
    significant = (not math.isnan(p) and p < 0.05) or (math.isnan(p) and diff.size > 0)
    if mean > margin and significant and wins > losses:
        return "better", evidence
    if mean < -margin and significant and losses > wins:
        return "worse", evidence
    return "no clear difference", evidence


def fmt(value: float, digits: int = 3, kind: str = "f") -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}{kind}}"
