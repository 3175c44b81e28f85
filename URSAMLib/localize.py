"""Automatic prompts: localize each organ's extreme points in a new CT from a template.

The default localizer needs no training: every support CT of the template is registered
(affine, at 3 mm) to the query, its organs' extreme points are carried over, and the points
of all supports are fused by their median. How well the supports agree is reported per
organ (mean IoU of each support's box with the fused box): a low score means the position
is unsure before SAM even runs.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import SimpleITK as sitk

from .errors import URSAMError
from .io import AIR_THRESHOLD_HU, AIR_VALUE_HU, AxialFrame
from .progress import Progress
from .prompts import DEFAULT_BOX_MARGIN, Box3D, BoxMargin, OrganPrompt
from .template import Template, resample_isotropic



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

    def prompt(self, shape: tuple[int, int, int], margin: tuple[int, int, int]) -> OrganPrompt:
        """The paper's auto-prompt: the box extended by ``margin`` voxels ``(z, y, x)`` on every
        slice of its range."""
        return OrganPrompt(self.organ, self.label, self.box.extended(margin, shape).slice_boxes())


def box_iou(a: Box3D, b: Box3D) -> float:
    """Intersection over union of two voxel boxes (bounds inclusive)."""
    low = np.maximum(a.as_list()[0::2], b.as_list()[0::2])
    high = np.minimum(a.as_list()[1::2], b.as_list()[1::2])
    inter = float(np.prod(np.clip(high - low + 1, 0, None)))

    def volume(box):
        return float(np.prod(np.array(box.as_list()[1::2]) - box.as_list()[0::2] + 1))

    return inter / (volume(a) + volume(b) - inter)


def _registration_image(ct: sitk.Image) -> sitk.Image:
    """CT at 3 mm, HU clipped and shifted to be non-negative: air 0, water ~1000.

    Non-negative intensities make the moment-based initialisation weigh the body, not air.
    """
    image = ct if np.allclose(ct.GetSpacing(), 3.0) else resample_isotropic(ct)
    image = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Clamp(image, sitk.sitkFloat32, AIR_VALUE_HU, 1500.0) - AIR_VALUE_HU


def register_affine(fixed: sitk.Image, moving: sitk.Image, seed: int = 0) -> sitk.AffineTransform:
    """Affine transform mapping points of ``fixed`` (query) to ``moving`` (support).

    ``seed`` fixes the random voxel sample of the metric, so the same inputs give the same
    transform (SimpleITK would take a seed of 0 as "seed from the clock", hence the + 1).

    Moments initialisation, a similarity stage at 24 and 12 mm, then an affine stage at 12
    and 6 mm, each with Mattes mutual information on a random 5 % of the voxels. Finer
    levels cost much and change organ boxes little: boxes are extended by 10 voxels anyway.
    """
    def run(initial: sitk.Transform, shrink: list[int], sigmas: list[float]) -> sitk.Transform:
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(32)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(0.05, seed + 1)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=100,
                                                        gradientMagnitudeTolerance=1e-6)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel(shrink)
        method.SetSmoothingSigmasPerLevel(sigmas)
        method.SetInitialTransform(initial, inPlace=False)
        result = method.Execute(fixed, moving)
        if isinstance(result, sitk.CompositeTransform):  # Execute wraps the optimized transform
            result = result.GetNthTransform(0)
        return result.Downcast()

    with _single_threaded_itk():
        start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Similarity3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
        similarity = run(start, [8, 4], [2.0, 1.0])
        affine = sitk.AffineTransform(3)
        affine.SetCenter(similarity.GetCenter())
        affine.SetMatrix(similarity.GetMatrix())
        affine.SetTranslation(similarity.GetTranslation())
        return run(affine, [4, 2], [1.0, 0.0])


@contextmanager
def _single_threaded_itk():
    """ITK's threaded metric and scale estimation sum in a varying order, so a multi-threaded
    registration differs slightly from run to run; with one thread it is repeatable (and at 3 mm
    it takes about 12 s per support on one core)."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _axial_points(points_mm: np.ndarray, query: sitk.Image, frame: AxialFrame) -> np.ndarray:
    ijk = np.array([query.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points_mm])
    return frame.index_from_stored(ijk)


OUTSIDE_IMAGE = "its localized box lies outside the image (is the template for this body region?)"


def _clipped_box(points: np.ndarray, shape: tuple[int, int, int]) -> tuple[Box3D | None, str | None]:
    low, high = np.rint(points.min(axis=0)), np.rint(points.max(axis=0))  # nearest voxel centres
    if np.any(high < 0) or np.any(low > np.array(shape) - 1):
        return None, OUTSIDE_IMAGE
    low, high = np.clip(low, 0, np.array(shape) - 1), np.clip(high, 0, np.array(shape) - 1)
    if np.any(high - low < 1):
        return None, "its localized box collapses to less than 2 voxels at the image border"
    return Box3D(*[int(v) for pair in zip(low, high) for v in pair]), None


def localize_by_registration(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                             progress: Progress | None = None, **options) -> dict[str, Localization]:
    """Localize ``organs`` (default: all of the template's) in ``ct`` by affine registration."""
    if options:
        raise URSAMError(f"The registration localizer takes no {', '.join(options)}.")
    organs = list(template.organs) if organs is None else organs
    unknown = [o for o in organs if o not in template.organs]
    if unknown:
        raise URSAMError(f"The template has no {', '.join(unknown)}; it holds: {', '.join(template.organs)}.")
    frame = AxialFrame.of(ct)
    fixed = _registration_image(ct)
    mapped: dict[str, list[np.ndarray]] = {o: [] for o in organs}
    for k, support in enumerate(template.supports):
        if progress:
            progress(k / len(template.supports), f"Registering support {support.name}")
        try:
            transform = register_affine(fixed, _registration_image(support.read()))
        except RuntimeError as error:  # ITK fails on fields of view too small for its pyramid
            size_mm = [round(n * d) for n, d in zip(ct.GetSize(), ct.GetSpacing())]
            raise URSAMError(f"Could not register the template's support {support.name} to this CT of "
                             f"{' x '.join(map(str, size_mm))} mm ({str(error).strip().splitlines()[-1][:120]}); "
                             "registration needs a CT that covers the body region (about 10 cm or more in each "
                             "direction): use a larger field of view, or prompt with labels or segments instead."
                             ) from None
        inverse = transform.GetInverse()  # support points → query points
        for organ in organs:
            points_mm = np.array([inverse.TransformPoint(p.tolist()) for p in support.points_mm[organ]])
            mapped[organ].append(_axial_points(points_mm, ct, frame))
    results = {organ: fuse_supports(organ, template.organs[organ], np.stack(mapped[organ]), frame.shape)
               for organ in organs}
    if progress:
        progress(1.0, "Localized")
    return results


def fuse_supports(organ: str, label: int, per_support: np.ndarray, shape: tuple[int, int, int]) -> Localization:
    """One organ's localization from each support's estimate of its extreme points.

    per_support: ``supports x 6 x 3`` extreme points in axial voxels ``(z, y, x)`` of the query
    (of ``shape``). The fused points are their median; the agreement is the mean IoU of each
    support's box with the fused box.
    """
    fused = np.median(per_support, axis=0)
    result = Localization(organ, label, fused)
    result.box, result.reason = _clipped_box(fused, shape)
    result.outside = result.reason == OUTSIDE_IMAGE
    result.support_boxes = [b for b, _ in (_clipped_box(p, shape) for p in per_support) if b]
    if result.box is not None:
        result.agreement = float(np.mean([box_iou(b, result.box) for b in result.support_boxes] or [0.0]))
    return result


def localize_by_medlam(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                       progress: Progress | None = None, **options) -> dict[str, Localization]:
    """The paper's learned localizer (MedLAM); see :func:`URSAMLib.medlam.localize_by_medlam`.

    Imported on use: it needs torch and trained weights (``weights=PATH``)."""
    from .medlam import localize_by_medlam as medlam

    return medlam(ct, template, organs, progress, **options)


BLANKED_BELOW = 0.05
"""Fraction of a CT's voxels above -500 HU under which the ``auto`` localizer treats it as blanked
(intensities kept only around the organs, air elsewhere: 14 of the 33 OpenKBP validation CTs, at
2-4 %; complete head-and-neck scans 6-13 %, abdominal ones more)."""


def visible_body(ct: sitk.Image) -> float:
    """Fraction of the CT's voxels above :data:`URSAMLib.io.AIR_THRESHOLD_HU` (body, not air)."""
    return float((sitk.GetArrayViewFromImage(ct) > AIR_THRESHOLD_HU).mean())


def localize_automatically(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                           progress: Progress | None = None, weights: str | None = None,
                           **options) -> dict[str, Localization]:
    """Registration on complete scans; MedLAM on blanked ones and where registration cannot run.

    Registration is the more accurate of the two on complete scans, but on a scan blanked outside
    the organs' neighbourhood it has nothing to match and lands centimetres off, while the learned
    localizer (weights: default the shipped ones) keeps working. Measured on held-out training
    patients (scripts/measure_region_localizers.py), this rule beat registration alone, MedLAM
    alone, and MedLAM wherever the registered supports disagree. Every organ's
    ``Localization.localizer`` says which placed it. An organ that registration places outside a
    complete scan stays not found: the scan does not show it (MedLAM would put it somewhere inside).
    """
    def part(start: float, span: float) -> Progress | None:
        return (lambda fraction, message: progress(start + span * fraction, message)) if progress else None

    organs = list(template.organs) if organs is None else organs
    found: dict[str, Localization] = {}
    if visible_body(ct) >= BLANKED_BELOW:
        try:
            found = localize_by_registration(ct, template, organs, progress=part(0.0, 0.7))
        except URSAMError:  # too small a field of view for registration: the learned localizer only
            found = {}
    for localization in found.values():
        localization.localizer = "registration"
    unplaced = [o for o in organs if o not in found]
    if unplaced:
        start = 0.7 if found else 0.0  # after registration, or the whole bar
        learned = localize_by_medlam(ct, template, unplaced, progress=part(start, 1.0 - start), weights=weights,
                                     **options)
        for organ, localization in learned.items():
            localization.localizer = "medlam"
            found[organ] = localization
    if progress:
        progress(1.0, "Localized")
    return {organ: found[organ] for organ in organs}


LOCALIZERS: dict[str, Callable[..., dict[str, Localization]]] = {
    "registration": localize_by_registration,
    "medlam": localize_by_medlam,
    "auto": localize_automatically,
}
"""Localizer name → function ``(ct, template, organs, progress=None, **options)`` returning
``{organ: Localization}``; options come from the command line (e.g. ``weights``)."""


def check_localizer(name: str) -> None:
    """Raise a user error unless ``name`` is one of :data:`LOCALIZERS`."""
    if name not in LOCALIZERS:
        raise URSAMError(f"Unknown localizer {name!r}; choose one of: {', '.join(LOCALIZERS)}.")


@dataclass
class TemplatePrompts:
    """The automatic prompts of a CT: what :func:`prompts_from_template` localized, and what not."""

    prompts: list[OrganPrompt]
    """One per organ found: its localized box, extended by the margin, on every slice it spans."""
    missing: dict[str, str]
    """Organ → why it was not found."""
    localizations: dict[str, Localization]
    margin: tuple[int, int, int]
    """The box margin in axial voxels ``(z, y, x)``."""


def prompts_from_template(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                          localizer: str = "registration", weights: str | None = None,
                          margin: BoxMargin = DEFAULT_BOX_MARGIN,
                          progress: Progress | None = None) -> TemplatePrompts:
    """Localize ``organs`` (default: all of the template's) in ``ct`` with one of :data:`LOCALIZERS`
    and turn each organ found into the paper's auto-prompt (its box, extended by ``margin``).

    ``weights`` go to a learned localizer. Organs not found are listed with a reason; finding none
    is not an error here (the caller knows what to call the CT in its message).
    """
    check_localizer(localizer)
    options = {"weights": weights} if weights else {}
    localizations = LOCALIZERS[localizer](ct, template, organs, progress=progress, **options)
    frame = AxialFrame.of(ct)
    reject_implausible(localizations, template, frame)
    voxels = margin.voxels(frame.spacing)
    prompts = [loc.prompt(frame.shape, voxels) for loc in localizations.values() if loc.box is not None]
    missing = {name: loc.reason for name, loc in localizations.items() if loc.box is None}
    return TemplatePrompts(prompts, missing, localizations, voxels)


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
    so there only a box too large counts."""
    for name, loc in localizations.items():
        if loc.box is None or loc.points is None:
            continue
        found = np.ptp(loc.points, axis=0) * np.array(frame.spacing) + SIZE_SLACK_MM  # (z, y, x) mm
        typical = np.median([np.ptp(s.points_mm[name], axis=0) for s in template.supports], axis=0)[::-1] \
            + SIZE_SLACK_MM  # LPS (x, y, z) -> (z, y, x)
        at_edge = (loc.points.min(axis=0) <= 0.5) | (loc.points.max(axis=0) >= np.array(frame.shape) - 1.5)
        ratio = found / typical
        if np.any(ratio > PLAUSIBLE_SIZE_FACTOR) or np.any((ratio < 1 / PLAUSIBLE_SIZE_FACTOR) & ~at_edge):
            size = " x ".join(f"{v:.0f}" for v in (found - SIZE_SLACK_MM)[::-1])
            usual = " x ".join(f"{v:.0f}" for v in (typical - SIZE_SLACK_MM)[::-1])
            loc.box, loc.implausible = None, True
            loc.reason = (f"its localized box ({size} mm) is implausible for it (about {usual} mm in the "
                          "template's scans): is the template for this body region?")


def no_organ_found(found: TemplatePrompts, template: Template, ct_name: str) -> URSAMError:
    """The error for a CT in which no organ of the template was found: a template for another body
    region when every organ fell outside the CT or got an implausible box, else each organ's reason."""
    localizations = found.localizations
    if localizations and all(loc.outside or loc.implausible for loc in localizations.values()):
        region = f" (made for: {template.body_region})" if template.body_region else ""
        where = "outside" if all(loc.outside for loc in localizations.values()) else \
            "outside or with an implausible size in"
        return URSAMError(f"Every organ of the template{region} was localized {where} {ct_name} "
                          f"({', '.join(localizations)}): the template is probably for another body region than "
                          "this CT. Use a template built from scans of the same body region.")
    return URSAMError(f"No organ of the template was found in {ct_name}: "
                      f"{'; '.join(f'{n}: {r}' for n, r in found.missing.items())}.")
