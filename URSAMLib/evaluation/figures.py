"""The evaluation's figures (matplotlib, PNG): per-organ bars like the paper's Figs. 3-4, the
uncertainty-vs-DSC scatter, and Fig. 5-style panels of the slices rectification changed most.

Reads evaluation rows and cached panel crops; never runs a model.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .tables import REVIEW_THRESHOLD, by_organ, pick, short_name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bars(rows: list[dict], organs: list[str], variant: str, path: Path, title: str) -> None:
    """Figs. 3-4: per organ, DSC of the one-box prompt, the ensemble and UR-SAM (mean, sd bars)."""
    plt = _pyplot()
    methods = [("one-box", "one box", "#9e9e9e"), ("ensemble", "ensemble", "#4f81bd"),
               ("ursam", "UR-SAM", "#c0504d")]
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(organs) + 2), 3.6), layout="constrained")
    x = np.arange(len(organs))
    for k, (method, label, colour) in enumerate(methods):
        values = by_organ(pick(rows, variant=variant, method=method), "dsc", organs)
        means = [np.mean(values[o]) if values[o] else 0 for o in organs]
        sds = [np.std(values[o], ddof=1) if len(values[o]) > 1 else 0 for o in organs]
        axis.bar(x + (k - 1) * width, means, width, yerr=sds, label=label, color=colour, capsize=2,
                 error_kw={"linewidth": 0.8})
    axis.set_xticks(x, [short_name(o) for o in organs], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("DSC")
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, ncols=3, loc="upper right")
    axis.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def figure_scatter(rows: list[dict], organs: list[str], variant: str, path: Path) -> None:
    """Mean uncertainty over the boxes vs the ensemble's DSC, one point per patient and organ."""
    plt = _pyplot()
    ensemble = [r for r in pick(rows, variant=variant, method="ensemble") if r["found"]]
    figure, axis = plt.subplots(figsize=(5.2, 3.8), layout="constrained")
    colours = plt.colormaps["tab20"]
    for k, organ in enumerate(organs):
        subset = pick(ensemble, organ=organ)
        axis.scatter([r["mean_uncertainty"] for r in subset], [r["dsc"] for r in subset], s=14,
                     color=colours(k % 20), label=short_name(organ))
    axis.axvline(REVIEW_THRESHOLD, color="k", linewidth=0.8, linestyle="--")
    axis.set_xlabel("mean uncertainty over the organ's boxes (nats)")
    axis.set_ylabel("ensemble DSC")
    axis.legend(fontsize=7, loc="best", ncols=2)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def figure_examples(examples: list[tuple[str, dict, dict]], path: Path) -> bool:
    """Fig. 5: per example (patient, description, arrays) ground truth, ensemble, uncertainty heatmap
    and rectified mask on the CT crop (green: ground-truth contour; cyan dashed: the prompt box).
    False when there is nothing to show."""
    if not examples:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(len(examples), 4, figsize=(10, 2.6 * len(examples)), squeeze=False,
                                layout="constrained")
    titles = ["ground truth", "ensemble", "uncertainty", "UR-SAM (rectified)"]
    for row, (patient, entry, arrays) in enumerate(examples):
        ct = arrays["ct"].astype(float)
        aspect = entry["pixel_aspect"]
        for column in range(4):
            axis = axes[row, column]
            axis.imshow(ct, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=9)
        overlays = {0: arrays["reference"], 1: arrays["ensemble"].astype(float) > 0.5, 3: arrays["rectified"]}
        for column, mask in overlays.items():
            axes[row, column].imshow(np.ma.masked_where(~mask.astype(bool), mask.astype(float)), cmap="autumn",
                                     alpha=0.45, aspect=aspect, interpolation="nearest", vmin=0, vmax=1)
            axes[row, column].contour(arrays["reference"].astype(float), levels=[0.5], colors="lime",
                                      linewidths=0.7)
        for column in (1, 3):  # the prompt box: rectification only changes voxels inside it
            axes[row, column].contour(arrays["box_region"].astype(float), levels=[0.5], colors="cyan",
                                      linewidths=0.7, linestyles="dashed")
        heat = axes[row, 2].imshow(arrays["uncertainty"].astype(float), cmap="hot", vmin=0, vmax=math.log(2),
                                   alpha=0.8, aspect=aspect, interpolation="nearest")
        axes[row, 0].set_ylabel(f"{patient}\n{short_name(entry['organ'])} z={entry['z']}", fontsize=8)
        axes[row, 1].set_xlabel(f"slice DSC {entry['slice_dsc_ensemble']:.3f}", fontsize=8)
        axes[row, 3].set_xlabel(f"slice DSC {entry['slice_dsc_ursam']:.3f} ({entry['changed_voxels']} px changed)",
                                fontsize=8)
    figure.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.6, label="uncertainty: entropy (nats)")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def load_examples(records: list[dict], panels_dir: Path, count: int = 4) -> list[tuple[str, dict, dict]]:
    """The ``count`` slices where UR-SAM's rectification changed most, over all patients (those whose
    cached crops are present)."""
    entries = sorted(((e["changed_voxels"], r["patient"], e) for r in records for e in r.get("panels", [])),
                     key=lambda item: -item[0])
    examples = []
    for _, patient, entry in entries:
        path = panels_dir / f"{patient}.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            prefix = f"{entry['organ']}/"
            arrays = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
        if arrays:
            examples.append((patient, entry, arrays))
        if len(examples) == count:
            break
    return examples
