"""UR-SAM over a CT volume: augmented prompts → ensemble → uncertainty → rectification.

Work is organised by slice, not by organ: every axial slice that any organ needs is
embedded exactly once, and all boxes on it (every organ x every augmentation) are decoded
against that one embedding in batches. Each organ's results are kept only inside a crop
around its boxes, so memory grows with the organs' size, not the volume's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .backbones import SamBackbone, window_ct
from .errors import Cancelled, URSAMError
from .prompts import OrganPrompt, augment_box, augmentation_rng
from .rectify import (DEFAULT_ALPHA_H, DEFAULT_FIXED_THRESHOLD, DEFAULT_LOWER_BOUND, METHODS,
                      Rectification, rectify)
from .uncertainty import predictive_entropy

Progress = Callable[[float, str], None]
"""Called with (fraction done in [0, 1], message)."""


@dataclass(frozen=True)
class Settings:
    """Parameters of a UR-SAM run (defaults: the paper's best setting)."""

    num_aug: int = 3
    """Boxes per slice and organ (1 = no augmentation)."""
    ratio: float = 0.01
    """Perturbation of the augmented boxes, a fraction of the slice's longest side."""
    seed: int = 0
    method: str = "ursam"
    """Rectification method, a key of :data:`URSAMLib.rectify.METHODS`."""
    alpha_h: float = DEFAULT_ALPHA_H
    lower_bound: str = DEFAULT_LOWER_BOUND
    fixed_threshold: float = DEFAULT_FIXED_THRESHOLD
    slice_batch: int = 0
    """Slices embedded per encoder call; 0 = 1 on CPU, 8 on a GPU."""
    box_batch: int = 64
    """Boxes decoded per decoder call."""

    def validate(self) -> "Settings":
        if not 1 <= self.num_aug <= 64:
            raise URSAMError(f"The number of augmented prompts must be 1..64, not {self.num_aug}.")
        if not 0.0 <= self.ratio <= 0.5:
            raise URSAMError(f"The perturbation ratio must be between 0 and 0.5, not {self.ratio}.")
        if self.method not in METHODS:
            raise URSAMError(f"Unknown rectification method {self.method!r}; "
                             f"choose one of {', '.join(METHODS)}.")
        if not 1.0 <= self.alpha_h <= 3.0:
            raise URSAMError(f"alpha_h must be between 1 and 3, not {self.alpha_h}.")
        if self.lower_bound not in ("midpoint", "paper"):
            raise URSAMError(f"The lower bound must be 'midpoint' or 'paper', not {self.lower_bound!r}.")
        return self


@dataclass
class OrganResult:
    """One organ's UR-SAM output; arrays cover ``region`` of the axial volume."""

    name: str
    label: int
    region: tuple[slice, slice, slice]
    boxes: dict[int, np.ndarray]
    """The un-augmented prompt boxes ``{z: (x0, y0, x1, y1)}`` in axial slice pixels."""
    box_region: np.ndarray
    """Voxels inside the prompt boxes (bool); Eq. 3 and rectification work here."""
    intensity: np.ndarray
    """Windowed CT in [0, 1]."""
    ensemble: np.ndarray
    """Ensemble probability ŷ (Eq. 1), float32."""
    uncertainty: np.ndarray
    """Predictive entropy of ŷ in nats (Eq. 2), float32."""
    plain: np.ndarray
    """Probability from the un-augmented box alone: plain SAM, the paper's baseline."""
    rectification: Rectification | None = None

    @property
    def ensemble_mask(self) -> np.ndarray:
        return self.ensemble > 0.5

    @property
    def mask(self) -> np.ndarray:
        """The rectified mask (the ensemble mask if not rectified)."""
        return self.rectification.mask if self.rectification is not None else self.ensemble_mask

    @property
    def mean_uncertainty(self) -> float:
        """Mean entropy over the box region: the organ's reliability score (lower is better)."""
        return float(self.uncertainty[self.box_region].mean())

    def rectify(self, settings: Settings) -> None:
        self.rectification = rectify(self.intensity, self.ensemble, self.uncertainty, self.box_region,
                                     settings.method, settings.alpha_h, settings.lower_bound,
                                     settings.fixed_threshold)


@dataclass
class SegmentationResult:
    """All organs of one run, on an axial volume of ``shape``."""

    organs: list[OrganResult]
    shape: tuple[int, int, int]
    settings: Settings
    timings: dict[str, float] = field(default_factory=dict)

    def rerectify(self, **changes) -> None:
        """Re-run only the rectification with changed settings (no SAM computation)."""
        self.settings = replace(self.settings, **changes).validate()
        for organ in self.organs:
            organ.rectify(self.settings)

    def label_map(self, which: str = "rectified") -> np.ndarray:
        """Multi-organ label map ``[z, y, x]`` (uint16) of the ``rectified``, ``ensemble`` or
        ``plain`` (un-augmented box) masks.

        A voxel claimed by several organs goes to the one with the highest probability.
        """
        labels = np.zeros(self.shape, np.uint16)
        best = np.full(self.shape, -1.0, np.float32)
        for organ in self.organs:
            probability = organ.plain if which == "plain" else organ.ensemble
            mask = {"rectified": organ.mask, "ensemble": organ.ensemble_mask, "plain": organ.plain > 0.5}[which]
            organ_labels, organ_best = labels[organ.region], best[organ.region]
            wins = mask & (probability > organ_best)
            organ_labels[wins] = organ.label
            organ_best[wins] = probability[wins]
        return labels

    def uncertainty_map(self) -> np.ndarray:
        """Per voxel the highest uncertainty over organs (float32, nats; 0 outside every crop)."""
        volume = np.zeros(self.shape, np.float32)
        for organ in self.organs:
            np.maximum(volume[organ.region], organ.uncertainty, out=volume[organ.region])
        return volume


@dataclass
class _Plan:
    """One organ's augmented boxes and the crop that holds them."""

    prompt: OrganPrompt
    augmented: dict[int, np.ndarray]
    region: tuple[slice, slice, slice]


def _plan(prompt: OrganPrompt, settings: Settings, shape: tuple[int, int, int]) -> _Plan:
    slice_shape = shape[1:]
    augmented = {z: augment_box(box, settings.num_aug, settings.ratio, slice_shape,
                                augmentation_rng(settings.seed, prompt.label, z))
                 for z, box in prompt.boxes.items()}
    every = np.concatenate(list(augmented.values()))
    zs = sorted(augmented)
    region = (slice(zs[0], zs[-1] + 1),
              slice(int(np.floor(every[:, 1].min())), int(np.ceil(every[:, 3].max())) + 1),
              slice(int(np.floor(every[:, 0].min())), int(np.ceil(every[:, 2].max())) + 1))
    return _Plan(prompt, augmented, region)


def _box_region(plan: _Plan, crop_shape: tuple[int, int, int]) -> np.ndarray:
    region = np.zeros(crop_shape, bool)
    z0, y0, x0 = plan.region[0].start, plan.region[1].start, plan.region[2].start
    for z, (bx0, by0, bx1, by1) in plan.prompt.boxes.items():
        region[z - z0, int(round(by0)) - y0:int(round(by1)) + 1 - y0,
               int(round(bx0)) - x0:int(round(bx1)) + 1 - x0] = True
    return region


def segment(ct: np.ndarray, prompts: list[OrganPrompt], backbone: SamBackbone,
            settings: Settings = Settings(), progress: Progress | None = None,
            cancel: Callable[[], bool] | None = None) -> SegmentationResult:
    """Run UR-SAM on an axial CT volume.

    ct: ``[z, y, x]`` in HU. prompts: one per organ, boxes in axial slice pixels.
    progress: called after every slice; cancel: polled between slices — when it returns
    True, :class:`~URSAMLib.errors.Cancelled` is raised and nothing is returned.
    """
    settings = settings.validate()
    prompts = [p for p in prompts if p.boxes]
    if not prompts:
        raise URSAMError("No organ has a prompt box; nothing to segment.")
    start = time.perf_counter()
    intensity = window_ct(ct, backbone.window)
    plans = [_plan(p, settings, ct.shape) for p in prompts]
    sums = [np.zeros(tuple(s.stop - s.start for s in plan.region), np.float32) for plan in plans]
    plains = [np.zeros_like(total) for total in sums]
    needed = sorted({z for plan in plans for z in plan.augmented})
    batch = settings.slice_batch or (1 if backbone.device == "cpu" else 8)
    timings = {"embed_s": 0.0, "decode_s": 0.0, "slices": len(needed), "boxes": 0}

    for first in range(0, len(needed), batch):
        if cancel is not None and cancel():
            raise Cancelled()
        zs = needed[first:first + batch]
        tick = time.perf_counter()
        embeddings = backbone.embed(intensity[zs])
        timings["embed_s"] += time.perf_counter() - tick
        tick = time.perf_counter()
        for row, z in enumerate(zs):
            owners = [k for k, plan in enumerate(plans) if z in plan.augmented]
            boxes = np.concatenate([plans[k].augmented[z] for k in owners])
            timings["boxes"] += len(boxes)
            probabilities = np.concatenate([
                backbone.decode(embeddings[row:row + 1], boxes[i:i + settings.box_batch], ct.shape[1:])
                for i in range(0, len(boxes), settings.box_batch)])
            for j, k in enumerate(owners):
                _, ys, xs = plans[k].region
                rows = probabilities[j * settings.num_aug:(j + 1) * settings.num_aug, ys, xs]
                sums[k][z - plans[k].region[0].start] = rows.sum(axis=0)
                plains[k][z - plans[k].region[0].start] = rows[0]  # row 0: the original box
        timings["decode_s"] += time.perf_counter() - tick
        if progress is not None:
            progress(min(first + batch, len(needed)) / len(needed),
                     f"Segmented slice {min(first + batch, len(needed))} of {len(needed)}")

    tick = time.perf_counter()
    organs = []
    for plan, total, plain in zip(plans, sums, plains):
        ensemble = total / settings.num_aug  # Eq. 1
        organ = OrganResult(plan.prompt.name, plan.prompt.label, plan.region, plan.prompt.boxes,
                            _box_region(plan, ensemble.shape), intensity[plan.region].copy(),
                            ensemble, predictive_entropy(ensemble), plain)
        organ.rectify(settings)
        organs.append(organ)
    timings["rectify_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    return SegmentationResult(organs, tuple(ct.shape), settings, timings)
