"""What every localizer returns and how its points become a box.

A localizer maps each organ of a template to a :class:`Localization` in the query CT: six extreme
points (axial voxels ``(z, y, x)``) fused over the template's supports, the box through them, and
how well the supports agree. :func:`reject_implausible` drops boxes of a size no organ has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..io import AxialFrame
from ..prompts import Box3D, OrganPrompt
from ..template import Template


VOTE_THRESHOLD = 0.5
"""A voxel is an organ's in the multi-atlas vote where at least this fraction of the registered
supports label it so (majority vote)."""


@dataclass
class Localization:
    """Where one organ is in the query CT (axial voxel coordinates ``(z, y, x)``)."""

    organ: str
    label: int
    points: np.ndarray | None = None
    """Fused extreme points ``6 x 3`` (continuous axial voxels)."""
    support_boxes: list[Box3D] = field(default_factory=list)
    box: Box3D | None = None
    """The fused box through ``points``, clipped to the image; None when not found."""
    agreement: float = 0.0
    """Mean IoU between each support's box and the fused box, in [0, 1]."""
    reason: str | None = None
    """Why the organ was not found (None when it was)."""
    outside: bool = False
    """Not found because it was localized entirely outside the image: when this holds for every
    organ, the template is probably for another body region than the CT."""
    implausible: bool = False
    """Not found because its localized box has a size no patient's organ has (:func:`reject_implausible`)."""
    localizer: str = ""
    """Which localizer placed it, where a combined one (``auto``) chose."""
    slice_boxes: dict[int, np.ndarray] | None = None
    """Atlas-shaped prompts where the localizer gives them: ``{z: K x 4}``, a box per separate part
    of the organ on each slice where it is, already extended (:mod:`URSAMLib.localize.atlas`)."""
    atlas: AtlasVote | None = None
    """The multi-atlas estimate of the organ, where the localizer made one."""

    def prompt(self, shape: tuple[int, int, int], margin: tuple[int, int, int]) -> OrganPrompt:
        """The localizer's per-slice boxes where it has them (its atlas vote as the prompt's prior);
        else the paper's auto-prompt: the box extended by ``margin`` voxels ``(z, y, x)`` on every
        slice of its range."""
        if self.slice_boxes:
            prior = (self.atlas.region, self.atlas.fraction) if self.atlas is not None else None
            return OrganPrompt(self.organ, self.label, dict(self.slice_boxes), prior)
        return OrganPrompt(self.organ, self.label, self.box.extended(margin, shape).slice_boxes())


@dataclass
class AtlasVote:
    """The fused atlas estimate of one organ: the fraction of supports labelling each voxel of
    ``region`` (axial ``[z, y, x]`` slices of the CT's volume) as the organ."""

    region: tuple[slice, slice, slice]
    fraction: np.ndarray
    """float32 in [0, 1], shape of ``region``."""
    supports: int

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The multi-atlas segmentation (majority vote) on the whole volume of ``shape``."""
        full = np.zeros(shape, bool)
        full[self.region] = self.fraction >= VOTE_THRESHOLD
        return full


def box_iou(a: Box3D, b: Box3D) -> float:
    """Intersection over union of two voxel boxes (bounds inclusive)."""
    low = np.maximum(a.as_list()[0::2], b.as_list()[0::2])
    high = np.minimum(a.as_list()[1::2], b.as_list()[1::2])
    inter = float(np.prod(np.clip(high - low + 1, 0, None)))

    def volume(box):
        return float(np.prod(np.array(box.as_list()[1::2]) - box.as_list()[0::2] + 1))

    return inter / (volume(a) + volume(b) - inter)


def axial_points(points_mm: np.ndarray, query: sitk.Image, frame: AxialFrame) -> np.ndarray:
    ijk = np.array([query.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points_mm])
    return frame.index_from_stored(ijk)


OUTSIDE_IMAGE = "its localized box lies outside the image (is the template for this body region?)"


def clipped_box(points: np.ndarray, shape: tuple[int, int, int]) -> tuple[Box3D | None, str | None]:
    low, high = np.rint(points.min(axis=0)), np.rint(points.max(axis=0))  # nearest voxel centres
    if np.any(high < 0) or np.any(low > np.array(shape) - 1):
        return None, OUTSIDE_IMAGE
    low, high = np.clip(low, 0, np.array(shape) - 1), np.clip(high, 0, np.array(shape) - 1)
    if np.any(high - low < 1):
        return None, "its localized box collapses to less than 2 voxels at the image border"
    return Box3D(*[int(v) for pair in zip(low, high) for v in pair]), None


def fuse_supports(organ: str, label: int, per_support: np.ndarray, shape: tuple[int, int, int]) -> Localization:
    """One organ's localization from each support's estimate of its extreme points.

    per_support: ``supports x 6 x 3`` extreme points in axial voxels ``(z, y, x)`` of the query
    (of ``shape``). The fused points are their median; the agreement is the mean IoU of each
    support's box with the fused box.
    """
    fused = np.median(per_support, axis=0)
    result = Localization(organ, label, fused)
    result.box, result.reason = clipped_box(fused, shape)
    result.outside = result.reason == OUTSIDE_IMAGE
    result.support_boxes = [b for b, _ in (clipped_box(p, shape) for p in per_support) if b]
    if result.box is not None:
        result.agreement = float(np.mean([box_iou(b, result.box) for b in result.support_boxes] or [0.0]))
    return result


PLAUSIBLE_SIZE_FACTOR = 3.0
"""How much an organ's localized extent may differ, per axis, from the median of the template's
scans (after adding :data:`SIZE_SLACK_MM` to both): patients' organs differ by far less, so a
larger factor means the localizer placed the points on other anatomy."""
SIZE_SLACK_MM = 10.0


def reject_implausible(localizations: dict[str, Localization], template: Template, frame: AxialFrame) -> None:
    """Mark as not found each organ whose localized extent is implausible for that organ: more than
    :data:`PLAUSIBLE_SIZE_FACTOR` times larger, or smaller, along an axis than in the template's
    scans. Such a box would prompt SAM on anatomy that is not the organ. Along an axis where the
    points reach the edge of the CT the organ may go on outside it (a scan of part of the region),
    so there only a box too large counts. A box that covers only part of the organ's usual length
    (z) may also be narrower in the slice plane by the same fraction: a curved organ shows less of
    its curve over a shorter stretch (the spinal cord spans about 70 mm front to back over the whole
    neck, 15 mm over a short segment), so there the least in-plane size shrinks with the length."""
    for name, loc in localizations.items():
        if loc.box is None or loc.points is None:
            continue
        found = np.ptp(loc.points, axis=0) * np.array(frame.spacing) + SIZE_SLACK_MM  # (z, y, x) mm
        typical = np.median([np.ptp(s.points_mm[name], axis=0) for s in template.supports], axis=0)[::-1] \
            + SIZE_SLACK_MM  # LPS (x, y, z) -> (z, y, x)
        at_edge = (loc.points.min(axis=0) <= 0.5) | (loc.points.max(axis=0) >= np.array(frame.shape) - 1.5)
        ratio = found / typical
        least = np.full(3, 1 / PLAUSIBLE_SIZE_FACTOR)
        least[1:] *= min(1.0, ratio[0])
        if np.any(ratio > PLAUSIBLE_SIZE_FACTOR) or np.any((ratio < least) & ~at_edge):
            size = " x ".join(f"{v:.0f}" for v in (found - SIZE_SLACK_MM)[::-1])
            usual = " x ".join(f"{v:.0f}" for v in (typical - SIZE_SLACK_MM)[::-1])
            loc.box, loc.implausible = None, True
            loc.reason = (f"its localized box ({size} mm) is implausible for it (about {usual} mm in the "
                          "template's scans): is the template for this body region?")
