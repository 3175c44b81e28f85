"""What the result table and the "next / previous uncertain region" buttons show.

All indices are URSAMLib's axial ``(z, y, x)`` (see :mod:`URSAMLib.io`).

*Uncertain regions* are the connected components (26-connectivity) of each organ's uncertain
voxels — those its rectification looked at, ``u > T`` inside the prompt boxes (Eq. 4) — ranked
by how many wrong voxels they are expected to hold (the sum of :mod:`URSAMLib.error_map`'s error
likelihood; without that model, their summed uncertainty), so the first regions are where a
reviewer's time is best spent.

Each organ's *predicted DSC* and *Review* flag come from :mod:`URSAMLib.quality` (a model fitted
on training patients, as in ``summary.json``). The table lists organs in review order, the lowest
predicted DSC first, and the uncertain regions follow that order: all regions of the organ most in
need of review, most uncertain first, then the next organ's. Without a quality model (a package
without ``quality.json``) an organ is flagged when its mean uncertainty over its prompt boxes
exceeds :data:`REVIEW_ABOVE`, 0.1 nats, a rule of thumb.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from URSAMLib.error_map import error_likelihood
from URSAMLib.pipeline import OrganResult, SegmentationResult
from URSAMLib.quality import review_order

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
    predicted_dsc: float | None = None
    """The organ's DSC as :mod:`URSAMLib.quality` predicts it (None without a quality model)."""


@dataclass(frozen=True)
class UncertainRegion:
    """A connected group of uncertain voxels of one organ."""

    organ: str
    label: int
    voxels: int
    total_uncertainty: float
    """Sum of the uncertainty of its voxels (nats), the ranking key without an error model."""
    centre: tuple[int, int, int]
    """The region's voxel nearest to its centroid, axial ``(z, y, x)`` — always inside the region."""
    expected_errors: float | None = None
    """Sum of its voxels' error likelihood: how many of them the ensemble is expected to have wrong
    (None without the error model); the ranking key when known."""

    @property
    def need(self) -> float:
        """How much the region needs a reviewer: its expected wrong voxels, else its summed uncertainty."""
        return self.total_uncertainty if self.expected_errors is None else self.expected_errors


def organ_statistics(result: SegmentationResult, spacing_zyx: tuple[float, float, float],
                     labels: np.ndarray | None = None,
                     assessed: dict[str, dict] | None = None) -> list[OrganStatistics]:
    """Volume, mean uncertainty, predicted DSC and review flag of each organ, in review order.

    labels: the rectified label map ``[z, y, x]`` if already computed (it is the costly part).
    assessed: :func:`URSAMLib.quality.assess_result` of the result (None: no predicted DSC).
    """
    if labels is None:
        labels = result.label_map("rectified")
    counts = np.bincount(labels.ravel(), minlength=max((o.label for o in result.organs), default=0) + 1)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    rows = []
    assessed = assessed or {}
    for organ in result.organs:
        mean = organ.mean_uncertainty
        quality = assessed.get(organ.name, {})
        predicted = quality.get("predicted_dsc")
        review = quality["review"] if predicted is not None else mean > REVIEW_ABOVE
        rows.append(OrganStatistics(organ.name, organ.label, float(counts[organ.label]) * voxel_ml,
                                    mean, review, predicted))
    order = review_order({row.name: row.predicted_dsc for row in rows})
    return sorted(rows, key=lambda row: order.index(row.name))


def _uncertain_voxels(organ: OrganResult) -> np.ndarray:
    if organ.rectification is not None:
        return organ.rectification.uncertain
    return np.zeros(organ.uncertainty.shape, bool)


def organ_regions(organ: OrganResult, likelihood: np.ndarray | None = None) -> list[UncertainRegion]:
    """One organ's uncertain regions, the one most in need of review first.

    likelihood: the organ's error likelihood on its crop (:func:`URSAMLib.error_map.error_likelihood`);
    None ranks by summed uncertainty."""
    from scipy import ndimage  # only needed once a result exists

    uncertain = _uncertain_voxels(organ)
    components, count = ndimage.label(uncertain, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(uncertain, components, index).astype(int)
    totals = ndimage.sum_labels(organ.uncertainty, components, index)
    expected = ndimage.sum_labels(likelihood, components, index) if likelihood is not None else None
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
                                       float(totals[number - 1]), tuple(int(v) for v in nearest + offset),
                                       None if expected is None else float(expected[number - 1])))
    return sorted(regions, key=lambda r: -r.need)


def error_likelihoods(result: SegmentationResult, spacing_zyx: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Organ name → its error likelihood on its crop (:func:`URSAMLib.error_map.error_likelihood`);
    empty without the error model. It depends only on the ensemble, so a run computes it once and
    re-rectifications reuse it. spacing_zyx: the volume's voxel size in mm."""
    found = {organ.name: error_likelihood(organ, spacing_zyx, result.settings.num_aug) for organ in result.organs}
    return {name: likelihood for name, likelihood in found.items() if likelihood is not None}


def region_mask(organ: OrganResult, region: UncertainRegion) -> np.ndarray:
    """The voxels of one uncertain region of ``organ``: bool, on the organ's crop (``organ.region``)."""
    from scipy import ndimage

    components, _ = ndimage.label(_uncertain_voxels(organ), structure=np.ones((3, 3, 3), bool))
    centre = tuple(c - s.start for c, s in zip(region.centre, organ.region))
    return components == components[centre]


def uncertain_regions(result: SegmentationResult, organ_order: list[str] | None = None,
                      likelihoods: dict[str, np.ndarray] | None = None) -> list[UncertainRegion]:
    """Every organ's uncertain regions (at most :data:`MAX_REGIONS`): organ by organ in
    ``organ_order`` (the review order; default: the regions most in need first over all organs),
    each organ's most in need first.

    likelihoods: :func:`error_likelihoods` of the result; an organ with one has its regions ranked by
    expected wrong voxels, one without by summed uncertainty."""
    likelihoods = likelihoods or {}
    regions = [region for organ in result.organs for region in organ_regions(organ, likelihoods.get(organ.name))]
    if organ_order is None:
        return sorted(regions, key=lambda r: -r.need)[:MAX_REGIONS]
    rank = {name: k for k, name in enumerate(organ_order)}
    return sorted(regions, key=lambda r: (rank.get(r.organ, len(rank)), -r.need))[:MAX_REGIONS]


def organ_focus(result: SegmentationResult, label: int,
                likelihoods: dict[str, np.ndarray] | None = None) -> tuple[int, int, int] | None:
    """Where to look first for an organ: its region most in need of review (see
    :func:`uncertain_regions`), else the middle of its segment, else (nothing segmented) the
    middle of its prompt boxes. Axial ``(z, y, x)``."""
    organ = next((o for o in result.organs if o.label == label), None)
    if organ is None:
        return None
    regions = organ_regions(organ, (likelihoods or {}).get(organ.name))
    if regions:
        return regions[0].centre
    voxels = np.argwhere(organ.mask) if organ.mask.any() else np.argwhere(organ.box_region)
    if len(voxels) == 0:
        return None
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest + [s.start for s in organ.region])
