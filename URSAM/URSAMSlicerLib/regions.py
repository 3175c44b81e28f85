"""What the result table and the "next / previous uncertain region" buttons show.

All indices are URSAMLib's axial ``(z, y, x)`` (see :mod:`URSAMLib.io`).

*Uncertain regions* are the connected components (26-connectivity) of each organ's uncertain
voxels — those its rectification looked at, ``u > T`` inside the prompt boxes (Eq. 4) — ranked
by their summed uncertainty, so the first regions are where a reviewer's time is best spent.

The *reliability flag* is a rule of thumb, not a calibrated test: an organ is flagged for review
when its mean uncertainty over its prompt boxes (the per-organ reliability score of
:attr:`URSAMLib.pipeline.OrganResult.mean_uncertainty`) exceeds :data:`REVIEW_ABOVE`, 0.1 nats
(14% of the maximum, ln 2). Where the augmented boxes agree the entropy is near zero, so a mean
that high needs disagreement over a sizeable part of the box. The limit has not been measured
against segmentation quality; the table shows the value itself next to the flag.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from URSAMLib.pipeline import OrganResult, SegmentationResult

REVIEW_ABOVE = 0.1
"""Mean uncertainty in the prompt boxes (nats) above which an organ is flagged "Review"."""
MIN_REGION_VOXELS = 5
"""Uncertain components smaller than this are not offered as regions (unless an organ has no other)."""
MAX_REGIONS = 500


@dataclass(frozen=True)
class OrganStatistics:
    """One row of the result table."""

    name: str
    label: int
    volume_ml: float
    """Volume of the organ's segment (rectified, after overlaps are resolved), in mL."""
    mean_uncertainty: float
    """Mean uncertainty over the organ's prompt boxes, nats."""
    needs_review: bool


@dataclass(frozen=True)
class UncertainRegion:
    """A connected group of uncertain voxels of one organ."""

    organ: str
    label: int
    voxels: int
    total_uncertainty: float
    """Sum of the uncertainty of its voxels (nats), the ranking key."""
    centre: tuple[int, int, int]
    """The region's voxel nearest to its centroid, axial ``(z, y, x)`` — always inside the region."""


def organ_statistics(result: SegmentationResult, spacing_zyx: tuple[float, float, float],
                     labels: np.ndarray | None = None) -> list[OrganStatistics]:
    """Volume, mean uncertainty and review flag of each organ.

    labels: the rectified label map ``[z, y, x]`` if already computed (it is the costly part).
    """
    if labels is None:
        labels = result.label_map("rectified")
    counts = np.bincount(labels.ravel(), minlength=max((o.label for o in result.organs), default=0) + 1)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    rows = []
    for organ in result.organs:
        mean = organ.mean_uncertainty
        rows.append(OrganStatistics(organ.name, organ.label, float(counts[organ.label]) * voxel_ml,
                                    mean, mean > REVIEW_ABOVE))
    return rows


def _uncertain_voxels(organ: OrganResult) -> np.ndarray:
    if organ.rectification is not None:
        return organ.rectification.uncertain
    return np.zeros(organ.uncertainty.shape, bool)


def organ_regions(organ: OrganResult) -> list[UncertainRegion]:
    """One organ's uncertain regions, most uncertain first."""
    from scipy import ndimage  # only needed once a result exists

    uncertain = _uncertain_voxels(organ)
    components, count = ndimage.label(uncertain, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(uncertain, components, index).astype(int)
    totals = ndimage.sum_labels(organ.uncertainty, components, index)
    large = sizes >= MIN_REGION_VOXELS
    keep = set((index[large] if large.any() else index[[np.argmax(sizes)]]).tolist())
    offset = np.array([s.start for s in organ.region])
    regions = []
    for box, number in zip(ndimage.find_objects(components), range(1, count + 1)):
        if number not in keep:
            continue
        points = np.argwhere(components[box] == number) + [s.start for s in box]
        nearest = points[np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1))]
        regions.append(UncertainRegion(organ.name, organ.label, int(sizes[number - 1]),
                                       float(totals[number - 1]), tuple(int(v) for v in nearest + offset)))
    return sorted(regions, key=lambda r: -r.total_uncertainty)


def uncertain_regions(result: SegmentationResult) -> list[UncertainRegion]:
    """Every organ's uncertain regions, most uncertain first (at most :data:`MAX_REGIONS`)."""
    regions = [region for organ in result.organs for region in organ_regions(organ)]
    return sorted(regions, key=lambda r: -r.total_uncertainty)[:MAX_REGIONS]


def organ_focus(result: SegmentationResult, label: int) -> tuple[int, int, int] | None:
    """Where to look first for an organ: its most uncertain region, else the middle of its
    segment, else (nothing segmented) the middle of its prompt boxes. Axial ``(z, y, x)``."""
    organ = next((o for o in result.organs if o.label == label), None)
    if organ is None:
        return None
    regions = organ_regions(organ)
    if regions:
        return regions[0].centre
    voxels = np.argwhere(organ.mask) if organ.mask.any() else np.argwhere(organ.box_region)
    if len(voxels) == 0:
        return None
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest + [s.start for s in organ.region])
