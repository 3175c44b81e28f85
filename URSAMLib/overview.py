"""A picture of a run for a quick look: a few axial slices with contours and the uncertainty."""
from __future__ import annotations

import numpy as np

from .backbones import window_ct
from .uncertainty import MAX_ENTROPY


def representative_slices(labels: np.ndarray, count: int = 4) -> list[int]:
    """``count`` axial slices spread over the z range that holds segmented voxels."""
    present = np.flatnonzero(labels.any(axis=(1, 2)))
    if present.size == 0:
        return []
    picks = np.quantile(present, np.linspace(0.15, 0.85, count)).round().astype(int)
    return sorted(set(int(present[np.abs(present - p).argmin()]) for p in picks))


def save_overview(path, ct: np.ndarray, labels: np.ndarray, uncertainty: np.ndarray,
                  names: dict[int, str], spacing: tuple[float, float, float]) -> None:
    """Write a PNG: per chosen slice, CT with organ contours (top) and the uncertainty (bottom).

    ct, labels, uncertainty: axial arrays ``[z, y, x]``; spacing ``(z, y, x)`` in mm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    slices = representative_slices(labels) or [ct.shape[0] // 2]
    colours = matplotlib.colormaps["tab20"]
    image = window_ct(ct[slices], (-160, 240))  # the slices shown, not the whole CT
    top = max(float(uncertainty.max()), 1e-6)
    aspect = spacing[1] / spacing[2]
    figure, axes = plt.subplots(2, len(slices), figsize=(3.0 * len(slices) + 1.2, 6.4), squeeze=False,
                                layout="constrained")
    for column, z in enumerate(slices):
        for row in range(2):
            axis = axes[row, column]
            axis.imshow(image[column], cmap="gray", aspect=aspect, interpolation="nearest")
            axis.set_axis_off()
        for label in np.unique(labels[z]):
            if label:
                axes[0, column].contour(labels[z] == label, levels=[0.5], linewidths=1.2,
                                        colors=[colours(int(label) % 20)])
        heat = np.ma.masked_less(uncertainty[z], 0.02 * MAX_ENTROPY)  # hide the near-certain
        shown = axes[1, column].imshow(heat, cmap="hot", vmin=0, vmax=top, alpha=0.75, aspect=aspect,
                                       interpolation="nearest")
        axes[0, column].set_title(f"slice z={z}", fontsize=9)
    present = [int(v) for v in np.unique(labels) if v]
    handles = [Line2D([], [], color=colours(v % 20), label=names.get(v, str(v))) for v in present]
    if handles:
        figure.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 6), fontsize=8,
                      frameon=False)
    else:  # the model found no organ at all: say so (a legend of nothing makes matplotlib fail)
        figure.suptitle("nothing segmented", fontsize=9)
    figure.colorbar(shown, ax=axes[:, -1].tolist(), shrink=0.6, label="uncertainty (entropy, nats)")
    axes[0, 0].text(-0.06, 0.5, "rectified", rotation=90, va="center", transform=axes[0, 0].transAxes)
    axes[1, 0].text(-0.06, 0.5, "uncertainty", rotation=90, va="center", transform=axes[1, 0].transAxes)
    figure.savefig(path, dpi=110)
    plt.close(figure)
