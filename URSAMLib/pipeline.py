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
from .embedding_cache import embed_slices
from .errors import Cancelled, URSAMError
from .progress import Progress
from .prompts import OrganPrompt, augment_box, augmentation_rng, clip_boxes
from .rectify import PER_ORGAN, Rectification, rectify
from .settings import Settings
from .uncertainty import predictive_entropy
from .zoom import View, slice_view


@dataclass
class OrganResult:
    """One organ's UR-SAM output; arrays cover ``region`` of the axial volume."""

    name: str
    label: int
    region: tuple[slice, slice, slice]
    boxes: dict[int, np.ndarray]
    """The un-augmented prompt boxes ``{z: K x 4}`` (one row ``(x0, y0, x1, y1)`` per part of the
    organ on slice z) in axial slice pixels."""
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
    votes: np.ndarray | None = None
    """Per voxel, how many of the n SAM members (augmented boxes) put it inside the organ (uint8);
    their agreement is a signal of the organ's quality (:mod:`URSAMLib.quality`)."""
    prior: np.ndarray | None = None
    """The prompt's prior probability (atlas vote) on this organ's crop, float32; None without one."""
    preferred_method: str | None = None
    """The prompt's measured rectification (:attr:`URSAMLib.prompts.OrganPrompt.method`), if any."""

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

    def method(self, settings: Settings) -> str:
        """The rectification ``settings`` give this organ: theirs, or with ``per-organ`` its own choice."""
        if settings.method == PER_ORGAN:
            return self.preferred_method or "ursam"
        return settings.method

    def rectify(self, settings: Settings) -> None:
        self.rectification = rectify(self.intensity, self.ensemble, self.uncertainty, self.box_region,
                                     self.method(settings), settings.alpha_h, settings.lower_bound,
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

    def reweigh_prior(self, prior_weight: float) -> None:
        """The ensemble of every organ with a prior again, with the prior at ``prior_weight``
        (:attr:`Settings.prior_weight`), then its uncertainty and rectification: no SAM computation.

        The SAM members' sum is recovered from the ensemble, ``ŷ (n + w) - w · prior``, so a weight
        can be chosen per organ by measurement, or moved by a slider, after one run."""
        before, self.settings = self.settings, replace(self.settings, prior_weight=prior_weight).validate()
        for organ in self.organs:
            if organ.prior is not None:
                members = organ.ensemble * (before.num_aug + before.prior_weight) - before.prior_weight * organ.prior
                organ.ensemble = np.clip(_ensemble(members, organ.prior, self.settings), 0.0, 1.0).astype(np.float32)
                organ.uncertainty = predictive_entropy(organ.ensemble)
                organ.rectify(self.settings)

    def label_map(self, which: str = "rectified") -> np.ndarray:
        """Multi-organ label map ``[z, y, x]`` (uint16) of the ``rectified``, ``ensemble`` or
        ``plain`` (un-augmented box) masks.

        A voxel claimed by several organs goes to the one with the highest probability.
        """
        labels = np.zeros(self.shape, np.uint16)
        if not self.organs:
            return labels
        # the winning probability so far, kept over the organs' joint extent only (not a second whole volume)
        extent = [slice(min(o.region[axis].start for o in self.organs), max(o.region[axis].stop for o in self.organs))
                  for axis in range(3)]
        best = np.full([s.stop - s.start for s in extent], -1.0, np.float32)
        for organ in self.organs:
            probability = organ.plain if which == "plain" else organ.ensemble
            mask = {"rectified": organ.mask, "ensemble": organ.ensemble_mask, "plain": organ.plain > 0.5}[which]
            organ_labels = labels[organ.region]
            organ_best = best[tuple(slice(r.start - e.start, r.stop - e.start) for r, e in zip(organ.region, extent))]
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
    """``{z: (K * n) x 4}``: the n augmented boxes of each of the slice's K part boxes, part by part."""
    region: tuple[slice, slice, slice]
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    """The un-augmented boxes finally used, ``{z: K x 4}`` (the prompt's clipped to the slice, or refined ones)."""


def _augment_parts(boxes: np.ndarray, settings: Settings, slice_shape: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """The n augmented boxes of each part box ``K x 4``, from one random stream: ``(K * n) x 4``."""
    return np.concatenate([augment_box(box, settings.num_aug, settings.ratio, slice_shape, rng) for box in boxes])


def _combine_parts(maps: np.ndarray, num_aug: int) -> np.ndarray:
    """Probability maps ``(K * n) x H x W`` of K part boxes x n members → ``n x H x W``: each member's
    organ probability is the most probable of its parts (the parts are separate regions)."""
    return maps.reshape(-1, num_aug, *maps.shape[1:]).max(axis=0)


def _plan(prompt: OrganPrompt, settings: Settings, shape: tuple[int, int, int]) -> _Plan:
    slice_shape = shape[1:]
    outside = sorted(z for z in prompt.boxes if not 0 <= z < shape[0])
    if outside:
        raise ValueError(f"{prompt.name}: prompt boxes on slices {outside[:5]} outside the volume's {shape[0]}")
    if not all(np.all(np.isfinite(box)) for box in prompt.boxes.values()):
        raise ValueError(f"{prompt.name}: a prompt box is not finite")
    # A box reaching beyond the slice (a localized box near the border) is clipped first, so that
    # the box region, Eq. 3 and the summary see the box the model saw.
    boxes = {z: clip_boxes(np.asarray(box, np.float64).reshape(-1, 4), slice_shape)
             for z, box in prompt.boxes.items() if np.size(box)}
    augmented = {z: _augment_parts(box, settings, slice_shape, augmentation_rng(settings.seed, prompt.label, z))
                 for z, box in boxes.items()}
    every = np.concatenate(list(augmented.values()))
    zs = sorted(augmented)
    region = (slice(zs[0], zs[-1] + 1),
              slice(int(np.floor(every[:, 1].min())), int(np.ceil(every[:, 3].max())) + 1),
              slice(int(np.floor(every[:, 0].min())), int(np.ceil(every[:, 2].max())) + 1))
    return _Plan(prompt, augmented, region, boxes)


def _views(plans: list[_Plan], settings: Settings, slice_shape: tuple[int, int]) -> dict[int, View]:
    """The view (:mod:`URSAMLib.zoom`) of every slice that one run's organs are prompted on."""
    zs = sorted({z for plan in plans for z in plan.augmented})
    return {z: slice_view(np.concatenate([plan.boxes[z] for plan in plans if z in plan.boxes]),
                          np.concatenate([plan.augmented[z] for plan in plans if z in plan.augmented]),
                          slice_shape, settings.max_zoom) for z in zs}


def _box_region(plan: _Plan, crop_shape: tuple[int, int, int]) -> np.ndarray:
    region = np.zeros(crop_shape, bool)
    z0, y0, x0 = plan.region[0].start, plan.region[1].start, plan.region[2].start
    for z, parts in plan.boxes.items():
        for bx0, by0, bx1, by1 in parts:
            region[z - z0, int(round(by0)) - y0:int(round(by1)) + 1 - y0,
                   int(round(bx0)) - x0:int(round(bx1)) + 1 - x0] = True
    return region


def boxes_per_call(settings: Settings, backbone: SamBackbone) -> int:
    """Boxes per decoder call: the setting, or by default 36 on CPU (12 organs x n = 3) and 64 on a GPU."""
    return settings.box_batch or (36 if backbone.device == "cpu" else 64)


def _decode_groups(backbone: SamBackbone, embedding, groups: list[np.ndarray], slice_shape: tuple[int, int],
                   view: View, box_batch: int) -> tuple[list[np.ndarray], int]:
    """Decode groups of boxes (``k x 4`` each, slice pixels) on one slice together, against the
    embedding of the slice's ``view``; one ``k x H x W`` map per group (0 outside the view), and the
    number of boxes actually decoded.

    Identical boxes are decoded once: variants that share prompts (a run and its refined
    version before refinement, or n = 3, 5, 7 drawn from one seeded stream, whose first rows
    coincide) then cost only their distinct boxes.
    """
    boxes = np.concatenate(groups)
    unique, inverse = np.unique(boxes, axis=0, return_inverse=True)
    in_view = clip_boxes(view.to_view(unique), view.shape)
    decoded = np.concatenate([backbone.decode(embedding, in_view[i:i + box_batch], view.shape)
                              for i in range(0, len(unique), box_batch)])
    if view.shape == tuple(slice_shape):
        maps = decoded
    else:
        maps = np.zeros((len(unique), *slice_shape), np.float32)
        maps[(slice(None), *view.window)] = decoded
    return np.split(maps[inverse.ravel()], np.cumsum([len(g) for g in groups])[:-1]), len(unique)


def refined_box(mask: np.ndarray, outer: np.ndarray, margin: int) -> np.ndarray | None:
    """The box ``(x0, y0, x1, y1)`` of a slice mask's largest connected component, grown by
    ``margin`` pixels and kept inside ``outer`` (the original prompt); None for an empty mask."""
    from scipy import ndimage

    components, count = ndimage.label(mask)
    if count == 0:
        return None
    largest = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    rows, cols = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
    box = np.array([cols[0] - margin, rows[0] - margin, cols[-1] + margin, rows[-1] + margin], np.float64)
    return np.concatenate([np.maximum(box[:2], outer[:2]), np.minimum(box[2:], outer[2:])])


def _inside(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``mask`` with everything outside ``box`` (x0, y0, x1, y1) cleared: one part's share of a slice."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = np.zeros_like(mask)
    inside[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
    return inside


def _refine_slice(backbone, embedding, z: int, plans: list[_Plan], maps: list[np.ndarray], settings: Settings,
                  slice_shape: tuple[int, int], view: View) -> tuple[int, int]:
    """Slice-wise refinement, in place: an organ the first pass found on slice ``z`` is
    prompted again with the box of what it found (a 3-D box projected on a slice is loose
    near the organ's top and bottom). Returns the number of extra boxes (requested, decoded)."""
    refined, where = [], []
    for j, plan in enumerate(plans):
        found = _combine_parts(maps[j], settings.num_aug).mean(axis=0) > 0.5
        parts = plan.boxes[z]
        boxes = [box for box in (refined_box(found if len(parts) == 1 else _inside(found, part), part,
                                             settings.refine_margin) for part in parts) if box is not None]
        if boxes:
            rng = np.random.default_rng([settings.seed, plan.prompt.label, z, 1])  # its own stream
            refined.append(_augment_parts(np.array(boxes), settings, slice_shape, rng))
            where.append(j)
            plan.boxes[z] = np.array(boxes)
    decoded = 0
    if refined:
        groups, decoded = _decode_groups(backbone, embedding, refined, slice_shape, view,
                                         boxes_per_call(settings, backbone))
        for j, group in zip(where, groups):
            maps[j] = group
    return sum(len(g) for g in refined), decoded


def _prior_on_crop(plan: _Plan, crop_shape: tuple[int, int, int]) -> np.ndarray | None:
    """The prompt's prior probability (``OrganPrompt.prior``) on the organ's crop; None without one."""
    if plan.prompt.prior is None:
        return None
    region, probability = plan.prompt.prior
    on_crop = np.zeros(crop_shape, np.float32)
    # the overlap of the prior's region and the crop, in each one's own coordinates
    inter = [slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(plan.region, region)]
    if all(s.stop > s.start for s in inter):
        on_crop[tuple(slice(s.start - a.start, s.stop - a.start) for s, a in zip(inter, plan.region))] = \
            probability[tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(inter, region))]
    return on_crop


def _ensemble(total: np.ndarray, prior: np.ndarray | None, settings: Settings) -> np.ndarray:
    """Eq. 1, the mean of the n members' probabilities over the organ's crop; with a prior and
    ``settings.prior_weight`` w > 0, the prior joins as a member of weight w."""
    if prior is None or settings.prior_weight == 0:
        return total / settings.num_aug
    return ((total + settings.prior_weight * prior) / (settings.num_aug + settings.prior_weight)).astype(np.float32)


def segment(ct: np.ndarray, prompts: list[OrganPrompt], backbone: SamBackbone,
            settings: Settings = Settings(), progress: Progress | None = None,
            cancel: Callable[[], bool] | None = None) -> SegmentationResult:
    """Run UR-SAM on an axial CT volume.

    ct: ``[z, y, x]`` in HU. prompts: one per organ, boxes in axial slice pixels.
    progress: called after every slice; cancel: polled between slices — when it returns
    True, :class:`~URSAMLib.errors.Cancelled` is raised and nothing is returned.
    """
    return segment_variants(ct, {"": (prompts, settings)}, backbone, progress, cancel)[""]


def segment_variants(ct: np.ndarray, variants: dict[str, tuple[list[OrganPrompt], Settings]],
                     backbone: SamBackbone, progress: Progress | None = None,
                     cancel: Callable[[], bool] | None = None) -> dict[str, SegmentationResult]:
    """Several runs on one CT — other prompts, augmentation or refinement — sharing every
    slice embedding: each slice any variant needs is embedded once, and the boxes of all
    variants on it are decoded together. ``variants`` maps a name to (prompts, settings);
    returns a result per name (their ``timings`` are those of the shared run).
    """
    for _, settings in variants.values():
        settings.validate()
    variants = {key: ([p for p in prompts if p.boxes], settings) for key, (prompts, settings) in variants.items()}
    if not any(prompts for prompts, _ in variants.values()):
        raise URSAMError("No organ has a prompt box; nothing to segment.")
    start = time.perf_counter()
    plans = {key: [_plan(p, settings, ct.shape) for p in prompts] for key, (prompts, settings) in variants.items()}
    sums = {key: [np.zeros(tuple(s.stop - s.start for s in plan.region), np.float32) for plan in group]
            for key, group in plans.items()}
    plains = {key: [np.zeros_like(total) for total in group] for key, group in sums.items()}
    votes = {key: [np.zeros(total.shape, np.uint8) for total in group] for key, group in sums.items()}
    # each variant's view of each slice it needs; a (slice, view) is embedded once for every variant showing it
    views = {key: _views(group, variants[key][1], ct.shape[1:]) for key, group in plans.items()}
    needed = sorted({(z, view) for by_slice in views.values() for z, view in by_slice.items()})
    first_settings = next(iter(variants.values()))[1]
    batch = first_settings.slice_batch or (1 if backbone.device == "cpu" else 8)
    batch_of_boxes = boxes_per_call(first_settings, backbone)
    timings = {"embed_s": 0.0, "decode_s": 0.0, "slices": len(needed), "cached_slices": 0, "boxes": 0,
               "decoded_boxes": 0}

    for first in range(0, len(needed), batch):
        if cancel is not None and cancel():
            raise Cancelled()
        items = needed[first:first + batch]
        tick = time.perf_counter()
        # windowed view by view, and each organ's crop below: a windowed copy of a whole CT is as large as the CT
        images = [window_ct(ct[z][view.window], backbone.window) for z, view in items]
        same_size = len({image.shape for image in images}) == 1
        embeddings, cached = embed_slices(backbone, np.stack(images) if same_size else images,
                                          getattr(backbone, "embedding_cache", None))
        timings["cached_slices"] += cached
        backbone.synchronize()
        timings["embed_s"] += time.perf_counter() - tick
        tick = time.perf_counter()
        for row, (z, view) in enumerate(items):
            embedding = embeddings[row:row + 1]
            owners = [(key, k) for key, group in plans.items() if views[key].get(z) == view
                      for k, plan in enumerate(group) if z in plan.augmented]
            groups = [plans[key][k].augmented[z] for key, k in owners]
            maps, decoded = _decode_groups(backbone, embedding, groups, ct.shape[1:], view, batch_of_boxes)
            timings["boxes"] += sum(len(g) for g in groups)
            timings["decoded_boxes"] += decoded
            for key, (_, settings) in variants.items():
                mine = [i for i, (owner, _) in enumerate(owners) if owner == key]
                if settings.refine and mine:
                    mine_maps = [maps[i] for i in mine]
                    requested, decoded = _refine_slice(backbone, embedding, z, [plans[key][owners[i][1]] for i in mine],
                                                       mine_maps, settings, ct.shape[1:], view)
                    timings["boxes"] += requested
                    timings["decoded_boxes"] += decoded
                    for i, group in zip(mine, mine_maps):
                        maps[i] = group
            for (key, k), group in zip(owners, maps):
                plan = plans[key][k]
                _, ys, xs = plan.region
                members = _combine_parts(group[:, ys, xs], variants[key][1].num_aug)
                sums[key][k][z - plan.region[0].start] = members.sum(axis=0)
                votes[key][k][z - plan.region[0].start] = (members > 0.5).sum(axis=0)
                plains[key][k][z - plan.region[0].start] = members[0]  # member 0: the original boxes
        timings["decode_s"] += time.perf_counter() - tick
        if progress is not None:
            progress(min(first + batch, len(needed)) / len(needed),
                     f"Segmented slice {min(first + batch, len(needed))} of {len(needed)}")

    tick = time.perf_counter()
    results = {}
    for key, (_, settings) in variants.items():
        organs = []
        for plan, total, plain, vote in zip(plans[key], sums[key], plains[key], votes[key]):
            prior = _prior_on_crop(plan, total.shape)
            ensemble = _ensemble(total, prior, settings)
            organ = OrganResult(plan.prompt.name, plan.prompt.label, plan.region, plan.boxes,
                                _box_region(plan, ensemble.shape), window_ct(ct[plan.region], backbone.window),
                                ensemble, predictive_entropy(ensemble), plain, votes=vote, prior=prior,
                                preferred_method=plan.prompt.method)
            organ.rectify(settings)
            organs.append(organ)
        results[key] = SegmentationResult(organs, tuple(ct.shape), settings, timings)
    timings["rectify_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    return results
