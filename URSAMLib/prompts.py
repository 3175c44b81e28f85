"""Box prompts: 3-D boxes, per-slice 2-D boxes, and UR-SAM's prompt augmentation.

All arrays are in URSAM's axial array order ``[z, y, x]`` (see :mod:`URSAMLib.io`).
A 2-D box is ``(x_min, y_min, x_max, y_max)``: pixel indices of an axial slice, inclusive,
as floats (augmented boxes are sub-pixel).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np



@dataclass(frozen=True)
class BoxMargin:
    """How far a 3-D box prompt is extended on each side: ``(z, y, x)`` in mm or in voxels."""

    zyx: tuple[float, float, float]
    unit: str = "mm"  # "mm" or "voxel"

    def voxels(self, spacing: tuple[float, float, float] | None) -> tuple[int, int, int]:
        """The margin in voxels of an axial volume with ``spacing`` (z, y, x) mm."""
        if self.unit == "voxel":
            return tuple(int(v) for v in self.zyx)
        if spacing is None:
            raise ValueError("a margin in mm needs the voxel spacing")
        return tuple(max(1, int(round(mm / s))) for mm, s in zip(self.zyx, spacing))

    @classmethod
    def parse(cls, text: str) -> "BoxMargin":
        """``"5,10,10mm"`` (millimetres) or ``"2,10,10"`` / ``"2,10,10vox"`` (voxels)."""
        text = text.strip().lower()
        unit = "mm" if text.endswith("mm") else "voxel"
        values = tuple(float(v) for v in text.removesuffix("mm").removesuffix("vox").split(","))
        if len(values) != 3 or min(values) < 0 or (unit == "voxel" and any(v != int(v) for v in values)):
            raise ValueError(f"not a margin: {text!r}")
        return cls(values, unit)

    def __str__(self) -> str:
        return ",".join(f"{v:g}" for v in self.zyx) + ("mm" if self.unit == "mm" else "vox")


PAPER_BOX_MARGIN = BoxMargin((2, 10, 10), "voxel")
"""The paper's extension of a localized box, [2, 10, 10] voxels in (z, x, y) — equal in-plane, so
the same in URSAM's (z, y, x). It was set on ~0.8-1 mm pixels and 2.5-3 mm slices."""
DEFAULT_BOX_MARGIN = BoxMargin((5.0, 10.0, 10.0), "mm")
"""The paper's margin in physical size. On coarser scans 10 voxels are 3-5 cm, which drowns small
organs: on abdomen-ts (3 mm voxels) 3-D box prompts score rectified DSC 0.760 with this margin
against 0.495 with [2, 10, 10] voxels (docs/rectification.md)."""


@dataclass(frozen=True)
class Box3D:
    """An axis-aligned box of voxels ``[z0..z1] x [y0..y1] x [x0..x1]``, bounds inclusive."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Box3D | None":
        """The box through a mask's six extreme points (None for an empty mask)."""
        if not mask.any():
            return None
        bounds = []
        for axis in range(3):
            present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            bounds += [int(present[0]), int(present[-1])]
        return cls(*bounds)

    @classmethod
    def from_extreme_points(cls, points: np.ndarray) -> "Box3D":
        """The box through extreme points ``K x 3`` in voxels ``(z, y, x)`` (rounded)."""
        points = np.rint(np.asarray(points, dtype=float)).astype(int)
        low, high = points.min(axis=0), points.max(axis=0)
        return cls(low[0], high[0], low[1], high[1], low[2], high[2])

    def extended(self, margin: tuple[int, int, int], shape: tuple[int, int, int]) -> "Box3D":
        """The box grown by ``margin`` voxels ``(z, y, x)`` on each side, clipped to ``shape``."""
        mz, my, mx = margin
        return Box3D(max(self.z0 - mz, 0), min(self.z1 + mz, shape[0] - 1),
                     max(self.y0 - my, 0), min(self.y1 + my, shape[1] - 1),
                     max(self.x0 - mx, 0), min(self.x1 + mx, shape[2] - 1))

    def slice_boxes(self) -> dict[int, np.ndarray]:
        """The box projected on each axial slice in its z range: ``{z: (x0, y0, x1, y1)}``."""
        box = np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)
        return {z: box.copy() for z in range(self.z0, self.z1 + 1)}

    def as_list(self) -> list[int]:
        return [self.z0, self.z1, self.y0, self.y1, self.x0, self.x1]


@dataclass
class OrganPrompt:
    """The prompts for one organ: on each axial slice that should contain it, one 2-D box, or one
    box per separate part of the organ on that slice."""

    name: str
    label: int
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    """``{z: (x_min, y_min, x_max, y_max)}`` or ``{z: K x 4}`` (K parts), pixel indices of axial slice z."""
    prior: "tuple[tuple[slice, slice, slice], np.ndarray] | None" = None
    """Optionally an independent estimate of the organ's probability, ``(region, p[z, y, x])`` over
    ``region`` of the volume (e.g. the atlas vote): it joins the ensemble with
    :attr:`URSAMLib.pipeline.Settings.prior_weight`."""
    method: str | None = None
    """The rectification (a key of :data:`URSAMLib.rectify.METHODS`) measured best for this organ with
    these prompts, where a template chose one; a run with method ``per-organ`` uses it."""


MIN_PART_FRACTION = 0.2
"""A separate part of an organ on a slice gets its own box when its area is at least this fraction
of the slice's largest part; smaller fragments (a stray voxel of a label, a speck of an atlas vote)
are left to the boxes of the larger parts, whose margins usually cover them."""


def part_boxes(mask: np.ndarray, min_fraction: float = MIN_PART_FRACTION) -> np.ndarray:
    """One tight box per connected part of a slice mask ``[y, x]`` (8-connected).

    An organ that shows as several parts on one axial slice (the two rami of the mandible, an
    aortic arch) would get one box around all of them from its bounding box, and SAM would
    segment everything between them. Parts smaller than ``min_fraction`` of the largest part get
    no box of their own. Returns ``K x 4`` XYXY (largest part first; ``0 x 4`` for an empty mask).
    """
    from scipy import ndimage

    parts, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros((0, 4))
    areas = np.bincount(parts.ravel())[1:]
    keep = [k for k in np.argsort(-areas, kind="stable") if areas[k] >= min_fraction * areas.max()]
    boxes = []
    for rows, cols in (ndimage.find_objects(parts)[k] for k in keep):
        boxes.append([cols.start, rows.start, cols.stop - 1, rows.stop - 1])
    return np.array(boxes, dtype=np.float64)


def boxes_to_rows(boxes: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice boxes ``{z: K x 4}`` (or ``{z: 4}``) as flat arrays to store: the slice of each row
    ``N`` (int64) and the rows ``N x 4``; :func:`boxes_from_rows` reverses it."""
    zs = sorted(boxes)
    rows = [np.asarray(boxes[z], np.float64).reshape(-1, 4) for z in zs]
    return (np.repeat(np.array(zs, np.int64), [len(r) for r in rows]),
            np.concatenate(rows) if rows else np.zeros((0, 4)))


def boxes_from_rows(zs: np.ndarray, rows: np.ndarray) -> dict[int, np.ndarray]:
    """``{z: K x 4}`` from the flat arrays of :func:`boxes_to_rows`."""
    return {int(z): rows[zs == z] for z in np.unique(zs)}


def slice_boxes_from_mask(mask: np.ndarray, jitter: int = 0, rng: np.random.Generator | None = None,
                          per_part: bool = True) -> dict[int, np.ndarray]:
    """Per-slice boxes around a mask ``[z, y, x]``: simulated manual prompting.

    per_part: one box per separate part of the organ on a slice (:func:`part_boxes`), as a person
        would draw them; False: one box around the whole slice mask.
    jitter: each side is moved *outward* by a random 0..jitter pixels (MedSAM's 0-20 px
        perturbation), clipped to the slice; 0 gives the tight box.
    Returns ``{z: K x 4}`` XYXY.
    """
    if jitter and rng is None:
        raise ValueError("jitter needs a random generator")
    height, width = mask.shape[1:]
    boxes = {}
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        if per_part:
            box = part_boxes(mask[z])
        else:
            rows, cols = np.flatnonzero(mask[z].any(axis=1)), np.flatnonzero(mask[z].any(axis=0))
            box = np.array([[cols[0], rows[0], cols[-1], rows[-1]]], dtype=np.float64)
        if jitter:
            box = box + rng.integers(0, jitter + 1, size=box.shape) * np.array([-1, -1, 1, 1])
            box = clip_boxes(box, (height, width))
        boxes[int(z)] = box
    return boxes


def clip_boxes(boxes: np.ndarray, slice_shape: tuple[int, int]) -> np.ndarray:
    """Clip boxes ``N x 4`` to a slice of ``(rows, columns)``; coordinates swapped if inverted."""
    height, width = slice_shape
    boxes = np.asarray(boxes, dtype=np.float64).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width - 1)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height - 1)
    x0, x1 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    return np.stack([x0, y0, x1, y1], axis=1)


def augment_box(box: np.ndarray, num_aug: int, ratio: float, slice_shape: tuple[int, int],
                rng: np.random.Generator) -> np.ndarray:
    """UR-SAM prompt augmentation: ``num_aug`` boxes from one.

    Row 0 is the box itself, so ``num_aug=1`` is plain SAM. Each further box moves each of
    its four coordinates independently by an offset drawn uniformly from
    ``[-ratio * L, +ratio * L]`` pixels, with ``L = max(rows, columns)`` the slice's longest
    side: the perturbation is a fraction of the field of view, so ``ratio=0.01`` is about
    5 px on a 512 px slice (the paper's images) and keeps the same physical size at any
    resolution. Boxes are clipped to the slice.

    Returns ``num_aug x 4`` XYXY.
    """
    box = np.asarray(box, dtype=np.float64).reshape(1, 4)
    offsets = rng.uniform(-1.0, 1.0, size=(num_aug - 1, 4)) * ratio * max(slice_shape)
    return clip_boxes(np.concatenate([box, box + offsets]), slice_shape)


def augmentation_rng(seed: int, label: int, z: int) -> np.random.Generator:
    """The random stream for one organ on one slice: results do not depend on which other
    organs or slices are segmented, or in which order."""
    return np.random.default_rng([seed, label, z])


def prompts_from_labels(labels: np.ndarray, organs: dict[int, str], mode: str = "slice",
                        margin: BoxMargin = DEFAULT_BOX_MARGIN, spacing: tuple[float, float, float] | None = None,
                        jitter: int = 0, seed: int = 0, per_part: bool = True
                        ) -> tuple[list[OrganPrompt], dict[str, str]]:
    """Prompts from a reference label map ``[z, y, x]``.

    mode: ``slice`` — one tight box per slice where the organ is (manual prompting, with
        optional ``jitter``; with ``per_part`` one box per separate part of the organ on a
        slice); ``box3d`` — the organ's 3-D box extended by ``margin`` and
        projected on every slice in its range (auto-prompting with perfect localization).
    spacing: the voxel spacing ``(z, y, x)`` in mm, needed for a margin in mm.
    Returns the prompts of organs present in ``labels`` and ``{name: reason}`` for the others.
    """
    if mode not in ("slice", "box3d"):
        raise ValueError(f"unknown prompt mode {mode!r}")
    prompts, missing = [], {}
    for label, name in organs.items():
        mask = labels == label
        box = Box3D.from_mask(mask)
        if box is None:
            missing[name] = f"label {label} has no voxels in the prompt label map"
            continue
        if mode == "slice":
            rng = np.random.default_rng([seed, label]) if jitter else None
            boxes = slice_boxes_from_mask(mask, jitter, rng, per_part)
        else:
            boxes = box.extended(margin.voxels(spacing), labels.shape).slice_boxes()
        prompts.append(OrganPrompt(name, int(label), boxes))
    return prompts, missing
