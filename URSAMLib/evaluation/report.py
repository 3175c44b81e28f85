"""The evaluation's outputs: results.csv, report.md (tables shaped like the paper's) and figures.

Everything here reads the rows of :mod:`URSAMLib.evaluation.scoring` (one per patient x organ x method x
setting) and never runs a model, so a report can be rewritten from the per-patient cache at
any time, also while a long run is still going.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..metrics import spearman
from .figures import figure_bars, figure_examples, figure_scatter, load_examples
from .plan import SWEEP_NUM_AUG, SWEEP_RATIOS, setting_name
from .tables import (METHOD_TITLES, PROMPT_TITLES, REVIEW_THRESHOLD, by_organ, cell, delivered_method, fmt, organ_mean,
                     paired, pick, reliability_scores, short_name, table, verdict, write_csv)


def claims(rows: list[dict], main: str, refine_variant: str | None) -> list[str]:
    """Sentences that set our paired results against the paper's claims, with the evidence."""
    def sel(method, variant=main):
        return pick(rows, variant=variant, method=method)

    checks = [
        ("prompt augmentation: the ensemble beats the one-box prompt", sel("one-box"), sel("ensemble"), "better"),
        ("UR-SAM beats the one-box auto prompt (the paper: up to +10.7 / +13.8 % DSC)",
         sel("one-box"), sel("ursam"), "better"),
        ("rectification: UR-SAM beats the ensemble it rectifies", sel("ensemble"), sel("ursam"), "better"),
        ("the class-specific threshold (Eq. 3) beats a fixed one, both with Rec", sel("fixed"), sel("ursam"),
         "better"),
        ("UR-SAM beats Unc-FPC (remove every uncertain voxel)", sel("unc-fpc"), sel("ursam"), "better"),
        ("UR-SAM beats Unc-FNC (add every uncertain voxel)", sel("unc-fnc"), sel("ursam"), "better"),
        ("UR-SAM beats Unc-FPNC (flip every uncertain voxel)", sel("unc-fpnc"), sel("ursam"), "better"),
        ("manual prompting beats automatic prompting with UR-SAM", sel("ursam"),
         pick(rows, variant="manual", method="one-box"), "better"),
    ]
    if any(r["method"] == "per-organ" for r in rows):
        checks.append(("the per-organ rectification beats UR-SAM's everywhere (not a claim of the paper; our "
                       "addition)", sel("ursam"), sel("per-organ"), "better"))
    if refine_variant:
        checks.append(("slice-wise refinement improves UR-SAM (not a claim of the paper; our addition)",
                       sel("ursam"), sel("ursam", refine_variant), "better"))
    lines = ["| claim (B vs A) | paper | here | evidence |", "|---|---|---|---|"]
    for text, a, b, expected in checks:
        outcome, evidence = verdict(paired(a, b))
        agrees = ("**agrees**" if outcome == expected else "**disagrees**" if outcome in ("better", "worse")
                  else "**not reproduced**" if outcome == "no clear difference" else "–")
        if "not a claim" in text:
            agrees = outcome
        lines.append(f"| {text} | {expected} | {outcome} ({agrees}) | {evidence} |")
    return lines


# ---------------------------------------------------------------------------------------
# Uncertainty quality.
def uncertainty_lines(rows: list[dict], organs: list[str], variants: list[tuple[str, str]]) -> list[str]:
    """Per organ and prompt source: AUROC of voxel uncertainty for the ensemble's errors inside the
    boxes (the paper's entropy, and the error likelihood of :mod:`URSAMLib.error_map`), and
    Spearman's rho between an organ's mean uncertainty and its ensemble DSC."""
    keys = ("auroc", "auroc_error_map") if any(by_organ(rows, "auroc_error_map", organs).values()) else ("auroc",)
    titles = {"auroc": "AUROC, entropy (mean ± sd)", "auroc_error_map": "AUROC, error likelihood"}
    lines = ["| prompts | organ | " + "".join(f"{titles[key]} | " for key in keys)
             + "ρ(mean uncertainty, DSC) | p | n |", "|---" * (5 + len(keys)) + "|"]
    for variant, title in variants:
        ensemble = [r for r in pick(rows, variant=variant, method="ensemble") if r["found"]]
        if not ensemble:
            continue
        aurocs = {key: by_organ(ensemble, key, organs) for key in keys}
        for organ in organs + ["all organs"]:
            subset = ensemble if organ == "all organs" else pick(ensemble, organ=organ)
            if not subset:
                continue
            values = {key: [a for v in found.values() for a in v] if organ == "all organs" else found[organ]
                      for key, found in aurocs.items()}
            rho, p, n = spearman([r["mean_uncertainty"] for r in subset], [r["dsc"] for r in subset])
            lines.append(f"| {title} | {short_name(organ)} | " + "".join(f"{cell(values[key])} | " for key in keys)
                         + f"{fmt(rho, 2)} | {fmt(p, 2, 'g')} | {n} |")
    return lines


def review_flag_lines(rows: list[dict], variants: list[tuple[str, str]]) -> list[str]:
    """Per prompt source: how well the predicted DSC and its Review flag (:mod:`URSAMLib.quality`)
    find the organs that need a reviewer, beside the earlier mean-uncertainty rule."""
    lines = ["| prompts | flag | organs | Pearson r | MAE | ECE | AURC (floor) | DSC < 0.5 flagged | "
             "DSC ≥ 0.7 flagged | specificity |", "|---|---|---|---|---|---|---|---|---|---|"]
    delivered = delivered_method(rows)
    for variant, title in variants:
        scored = [r for r in pick(rows, variant=variant, method=delivered) if r["found"]]
        with_prediction = [r for r in scored if r.get("predicted_dsc") not in (None, "")]
        flags = {"predicted DSC": (with_prediction, [bool(r["review"]) for r in with_prediction]),
                 f"mean unc. > {REVIEW_THRESHOLD}": (scored, [r["mean_uncertainty"] > REVIEW_THRESHOLD
                                                             for r in scored])}
        for name, (subset, review) in flags.items():
            if len(subset) < 2:
                continue
            predicted = ([float(r["predicted_dsc"]) for r in subset] if name == "predicted DSC"
                         else [-r["mean_uncertainty"] for r in subset])  # the rule ranks by uncertainty only
            s = reliability_scores(predicted, [r["dsc"] for r in subset], review)
            calibrated = name == "predicted DSC"
            lines.append(f"| {title} | {name} | {s['organs']} | {fmt(s['pearson_r'], 2)} | "
                         f"{fmt(s['mae']) if calibrated else '–'} | {fmt(s['ece']) if calibrated else '–'} | "
                         f"{fmt(s['aurc'])} ({fmt(s['aurc_floor'])}) | {fmt(s['poor_caught'], 2)} | "
                         f"{fmt(s['good_flagged'], 2)} | {fmt(s['specificity'], 2)} |")
    return lines


# ---------------------------------------------------------------------------------------
# report.md
def sweep_lines(rows: list[dict], patients: set[str], main: str, num_aug: int, ratio: float) -> list[str]:
    """Table I: mean DSC (over organs) of the ensemble and of UR-SAM, n x ratio, for ``patients``."""
    rows = [r for r in rows if r["patient"] in patients and r["prompt"] == main and not r["refine"]]

    def mean_dsc(n, r, method):
        setting = setting_name(n, r)
        subset = pick(rows, setting=setting, method=method, variant=main if (n, r) == (num_aug, ratio)
                      else (f"{main}@n1" if n == 1 else f"{main}@n{n}r{r:g}"))
        return organ_mean(by_organ(subset, "dsc", sorted({x["organ"] for x in rows})))

    lines = []
    for method, title in (("ensemble", "Ensemble"), ("ursam", "UR-SAM")):
        grid = {(n, r): mean_dsc(n, r, method) for n in SWEEP_NUM_AUG for r in SWEEP_RATIOS}
        plain = mean_dsc(1, 0.0, method)
        best = max([v for v in grid.values() if not math.isnan(v)] + [plain])
        lines += [f"**{title}** (mean DSC over organs; no augmentation: "
                  f"{'**' if plain == best else ''}{fmt(plain)}{'**' if plain == best else ''})", "",
                  "| n \\ ratio | " + " | ".join(f"{r:g}" for r in SWEEP_RATIOS) + " |",
                  "|---|" + "---|" * len(SWEEP_RATIOS)]
        for n in SWEEP_NUM_AUG:
            cells = [f"**{fmt(grid[(n, r)])}**" if grid[(n, r)] == best else fmt(grid[(n, r)])
                     for r in SWEEP_RATIOS]
            lines.append(f"| n = {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


PAPER_CONTEXT = ("The paper (SAM / MedSAM ViT-B, auto-prompting with a trained localizer, 512-px slices) reports "
                 "mean DSC for UR-SAM of 0.572 / 0.586 on FLARE22 (13 abdominal organs) and 0.501 / 0.486 on "
                 "StructSeg (22 head-and-neck organs), and 0.787 for SAM with manual boxes on FLARE22. We run "
                 "LiteMedSAM on other data, so only the direction of each effect is comparable, not the level.")


def write_report(output: Path, records: list[dict], context: dict) -> list[str]:
    """Write results.csv, report.md and figures/ from the per-patient records; returns the
    report's Markdown lines. ``context``: title, organs (column order), total_cases, config,
    invocations, amendments (run.json's: what was changed in the records after they were computed), template
    (or None), notes."""
    rows = [row for record in records for row in record["rows"]]
    write_csv(rows, output / "results.csv")
    present = {r["organ"] for r in rows}
    organs = [o for o in context["organs"] if o in present]
    main = records[0]["main_variant"] if records else "box3d"
    variants = {v for record in records for v in record["variants"]}
    refine = f"{main}-refine" if f"{main}-refine" in variants else None
    config = context["config"]["settings"]  # the main runs' UR-SAM parameters
    done, total = len(records), context["total_cases"]
    figures = output / "figures"
    figures.mkdir(exist_ok=True)

    lines = [f"# UR-SAM evaluation: {context['title']}", ""]
    if done < total:
        lines += [f"**Partial report: {done} of {total} patients.** Resume with the command below (finished "
                  "patients are skipped).", ""]
    lines += [f"{done} patients, {len(organs)} organs, {len(rows)} result rows (`results.csv`: one per patient x "
              "organ x method x setting). " + PAPER_CONTEXT, ""]
    main_title = PROMPT_TITLES[main]
    methods = {METHOD_TITLES[m]: pick(rows, variant=main, method=m) for m in METHOD_TITLES}
    if refine:
        methods["Slice-wise refinement (one box)"] = pick(rows, variant=refine, method="one-box")
        methods["Slice-wise refinement + UR-SAM"] = pick(rows, variant=refine, method="ursam")
    if pick(rows, variant="atlas", method="atlas-vote"):  # the atlas localizer's own segmentation
        methods["Multi-atlas vote (no SAM)"] = pick(rows, variant="atlas", method="atlas-vote")
    manual = "Manual Prompting (one box per slice, jittered)"
    methods[manual] = pick(rows, variant="manual", method="one-box")
    lines += [f"## DSC per organ (like Tables II-III); prompts: {main_title}", "",
              f"Mean ± sd over patients; *mean* = mean over organs. Bold: best automatic method per column; "
              f"*{manual}* uses the labels and is shown for reference, unranked. Settings: n = {config['num_aug']}, "
              f"ratio = {config['ratio']}, α_h = {config['alpha_h']}, lower bound {config['lower_bound']}, fixed "
              f"T_unc = {config['fixed_threshold']:.4f} nats.", ""]
    lines += table(methods, organs, "dsc", reference_titles=(manual,)) + [""]
    lines += ["## HD95 (mm) per organ, same runs", "",
              "Lower is better. HD95: the larger of the two directed 95th percentiles of the distances between "
              "the surfaces (as MONAI); patients where a mask is empty are left out of that cell.", ""]
    lines += table(methods, organs, "hd95_mm", higher=False, digits=1, reference_titles=(manual,)) + [""]
    lines += _prompt_section(rows, organs, variants, main, refine)
    lines += _localization_section(records, organs, rows, main)
    lines += _patient_section(records, rows, variants, main)
    sweep_patients = {r["patient"] for r in rows if "@" in r["variant"]}
    if sweep_patients:
        lines += [f"## Table I: number of augmented prompts x perturbation ratio ({len(sweep_patients)} patient"
                  f"{'s' if len(sweep_patients) > 1 else ''}: {', '.join(sorted(sweep_patients))})", "",
                  f"Prompts: {main_title}. Bold: the best cell of each table.", ""]
        lines += sweep_lines(rows, sweep_patients, main, config["num_aug"], config["ratio"])
    lines += ["## Uncertainty quality", "",
              "AUROC: inside each organ's prompt boxes, how well voxel uncertainty ranks the ensemble's error "
              "voxels (ensemble mask ≠ reference) above its correct ones (0.5 = chance): the paper's entropy, and "
              "where scored the error likelihood (`URSAMLib.error_map`) that ranks regions for review. "
              "ρ: Spearman correlation, "
              "over patients, between an organ's mean uncertainty in its boxes and its ensemble DSC — negative "
              "means the reliability score works (more uncertain, worse).", ""]
    uvariants = [(v, PROMPT_TITLES[v.split("-")[0]]) for v in (main, "box3d", "slice") if v in variants]
    uvariants = list(dict.fromkeys(uvariants))
    lines += uncertainty_lines(rows, organs, uvariants) + [""]
    lines += ["## Which organs to review", "",
              "Each organ's predicted DSC (URSAMLib.quality: a linear model of quality signals, fitted on training "
              "patients only) and its *Review* flag, against the organ's true DSC with the default rectification; "
              "beside it the earlier "
              f"rule (mean uncertainty in the boxes above {REVIEW_THRESHOLD} nats), whose Pearson r is that of "
              "the negated mean uncertainty. AURC: the mean risk (1 − DSC) of the organs accepted when accepting "
              "the best-predicted first; in brackets the floor that a perfect ranking reaches. Targets: r ≥ 0.7, "
              "≥ 80 % of organs with DSC < 0.5 flagged, ≤ 30 % of organs with DSC ≥ 0.7 flagged.", ""]
    lines += review_flag_lines(rows, uvariants) + [""]
    lines += [f"## Our results against the paper's claims (prompts: {main_title})", "",
              "Paired per patient and organ (B − A); a difference counts when the mean exceeds 0.005 DSC and a "
              "Wilcoxon signed-rank test gives p < 0.05.", ""]
    claim_lines = claims(rows, main, refine)
    lines += claim_lines + [""]
    disagreements = [line.split(" | ")[0].lstrip("| ") for line in claim_lines[2:]
                     if "disagrees" in line or "not reproduced" in line]
    if disagreements:
        lines += ["**Where we disagree with the paper:** " + "; ".join(disagreements) + ". See the evidence "
                  "column; per-patient values are in `results.csv`.", ""]
    lines += ["## Figures", ""]
    figure_bars(rows, organs, main, figures / "dsc_by_organ.png", f"{context['title']}: DSC before/after "
                f"rectification ({main_title})")
    figure_scatter(rows, organs, main, figures / "uncertainty_vs_dsc.png")
    lines += ["![DSC by organ](figures/dsc_by_organ.png)", "",
              "Per organ: the one-box prompt, the ensemble and UR-SAM (like the paper's Figs. 3-4).", "",
              "![uncertainty vs DSC](figures/uncertainty_vs_dsc.png)", "",
              f"One point per patient and organ; dashed: the *Review* flag at {REVIEW_THRESHOLD} nats.", ""]
    # The crops are CT pixels and stay out of a committed report: without them, the figure that was
    # drawn from them when the patients were computed is kept.
    if figure_examples(load_examples(records, output / "cache" / "panels"), figures / "examples.png") \
            or (figures / "examples.png").is_file():
        lines += ["![examples](figures/examples.png)", "",
                  "Like the paper's Fig. 5: the slices where UR-SAM's rectification changed most voxels (green "
                  "contour: ground truth; cyan dashed: the prompt box). The slice DSC under each mask says whether "
                  "the change helped.", ""]
    lines += _run_section(records, context)
    (output / "report.md").write_text("\n".join(lines) + "\n")
    return lines


def _prompt_section(rows, organs, variants, main, refine) -> list[str]:
    """Table IV-like: every prompt source x (one box, ensemble, UR-SAM)."""
    titles = {}
    order = [v for v in ("auto", refine, "box3d", "slice", "manual") if v and v in variants]
    for variant in order:
        source = PROMPT_TITLES[variant.split("-")[0]] + (", refined" if variant.endswith("refine") else "")
        for method in (("one-box",) if variant == "manual" else ("one-box", "ensemble", "ursam", "per-organ")):
            selected = pick(rows, variant=variant, method=method)
            if selected:  # reports from before per-organ have no such rows
                titles[f"{source}: {METHOD_TITLES[method].split(' (')[0]}"] = selected
    return ["## Prompt sources (like Table IV): the effect of localization error", "",
            "The same organs with prompts from the template's localization, from the reference labels' 3-D box "
            "(perfect localization), from tight per-slice boxes, and jittered per-slice boxes (manual). Mean "
            "DSC ± sd; bold: best per column.", ""] + table(titles, organs, "dsc") + [""]


def _localization_section(records, organs, rows, main) -> list[str]:
    if main != "auto":
        return []
    lines = ["## Localization (auto prompts)", "",
             "Box IoU: the localized 3-D box vs the reference's, both extended by the margin. Covered: the "
             "fraction of the reference organ inside the prompt boxes (auto vs box3d from labels).", "",
             "| organ | found | box IoU | support agreement | covered (auto) | covered (box3d) |",
             "|---|---|---|---|---|---|"]
    for organ in organs:
        entries = [r["localization"][organ] for r in records if organ in r.get("localization", {})]
        found = [e for e in entries if e["found"]]
        covered = {v: [r["reference_in_boxes"] for r in pick(rows, variant=v, method="ensemble", organ=organ)]
                   for v in ("auto", "box3d")}
        lines.append(f"| {short_name(organ)} | {len(found)}/{len(entries)} | "
                     f"{cell([e['box_iou'] for e in found], 2)} | "
                     f"{cell([e['agreement'] for e in found], 2)} | {cell(covered['auto'], 2)} | "
                     f"{cell(covered['box3d'], 2)} |")
    return lines + [""]


def _patient_section(records, rows, variants, main) -> list[str]:
    """One line per patient: where automatic prompting fails, and whether localization is why."""
    if len(records) < 2:
        return []
    sources = [v for v in (main, "box3d", "slice") if v in variants]
    sources = list(dict.fromkeys(sources))
    lines = ["## Per patient", "",
             "Mean over the patient's organs. DSC with the default rectification per prompt source"
             + (", and the localized boxes' IoU with the reference's (extended) boxes" if main == "auto" else "")
             + "; sorted by the first DSC column, worst first.", "",
             "| patient | organs | " + ("box IoU | " if main == "auto" else "")
             + " | ".join(f"DSC {v}" for v in sources) + " | DSC manual (one box) |",
             "|---|---|" + ("---|" if main == "auto" else "") + "---|" * (len(sources) + 1)]
    delivered = delivered_method(rows)  # once: it scans every row
    entries = []
    for record in records:
        patient = record["patient"]

        def mean_dsc(variant, method):
            values = [r["dsc"] for r in pick(rows, patient=patient, variant=variant, method=method)]
            return float(np.mean(values)) if values else math.nan

        found = [e["box_iou"] for e in record.get("localization", {}).values() if e.get("found")]
        entries.append((patient, len(record["organs"]), float(np.mean(found)) if found else 0.0,
                        [mean_dsc(v, delivered) for v in sources], mean_dsc("manual", "one-box")))
    for patient, count, iou, dsc, manual in sorted(entries, key=lambda e: e[3][0]):
        lines.append(f"| {patient} | {count} | " + (f"{iou:.2f} | " if main == "auto" else "")
                     + " | ".join(fmt(d) for d in dsc) + f" | {fmt(manual)} |")
    return lines + [""]


def _run_section(records, context) -> list[str]:
    timings = [r["timings"] for r in records]
    total = sum(t["total_s"] for t in timings)
    lines = ["## How this report was made", ""]
    for k, run in enumerate(context["invocations"]):
        env = run["environment"]
        lines += [f"{'Run' if k == 0 else 'Resumed'} {run['date']}: `{run['command']}` (from the repository root; "
                  f"computed {len(run['computed'])} patients in {run['wall_s'] / 60:.1f} min)", "",
                  f"- code {env['commit']}; " + ", ".join(f"{m} {v}" for m, v in env["versions"].items()),
                  f"- machine: {env['machine'].get('cpu')} ({env['machine'].get('cpus')} CPUs, torch threads "
                  f"{env['machine'].get('torch_threads')}, GPU {env['machine'].get('cuda', 'none')}), "
                  f"{env['machine'].get('platform')}",
                  f"- backbone {run.get('backbone', '?')}, precision {context['config']['precision']}, device "
                  f"{run.get('device', '?')}", ""]
    if timings:
        mean = {k: np.mean([t.get(k, 0) for t in timings]) for k in
                ("total_s", "localize_s", "embed_s", "decode_s", "score_s", "slices", "boxes", "decoded_boxes")}
        lines += [f"Compute: {total / 60:.1f} min over {len(records)} patients; per patient on average "
                  f"{mean['total_s']:.0f} s ({mean['localize_s']:.0f} s localization, {mean['embed_s']:.0f} s "
                  f"encoder for {mean['slices']:.0f} slices, {mean['decode_s']:.0f} s decoder for "
                  f"{mean['decoded_boxes']:.0f} distinct of {mean['boxes']:.0f} boxes, {mean['score_s']:.0f} s "
                  "scoring).", ""]
    if context.get("template"):
        template = context["template"]
        lines += [f"Template: {len(template['supports'])} supports ({', '.join(template['supports'])}); organs "
                  f"{', '.join(template['organs'])}; localizer {context['config']['localizer']}.", ""]
    lines += [f"- {note}" for note in context.get("notes", [])]
    # run.json's "amendments": changes made to the records after they were computed, said here
    for amendment in context.get("amendments", []):
        lines += ["", f"Amended {amendment['date']}: {amendment['what']}"]
    return lines + [""]
