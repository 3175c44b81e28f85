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
from .io import AxialFrame
from .prompts import DEFAULT_BOX_MARGIN, Box3D, BoxMargin, OrganPrompt
from .template import Template, resample_isotropic

Progress = Callable[[float, str], None]


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
    return sitk.Clamp(image, sitk.sitkFloat32, -1024.0, 1500.0) + 1024.0


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


AUTO_MIN_AGREEMENT = 0.5
"""Below this agreement of the registered supports (mean box IoU with their fused box) the ``auto``
localizer takes MedLAM's box instead (chosen on held-out training patients: docs/localizers.md)."""


def localize_automatically(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                           progress: Progress | None = None, weights: str | None = None,
                           min_agreement: float = AUTO_MIN_AGREEMENT, **options) -> dict[str, Localization]:
    """Registration where its supports agree, MedLAM where they do not.

    Registration is the more accurate of the two on complete scans, but fails on scans blanked
    outside the organs' neighbourhood or covering a small field of view, where the registered
    supports then scatter; there the learned localizer (weights: default the shipped ones) keeps
    working. Each organ whose registration agreement is below ``min_agreement`` (and every organ
    when registration cannot run) is localized by MedLAM; its ``Localization.localizer`` says which.
    """
    def part(start: float, span: float) -> Progress | None:
        return (lambda fraction, message: progress(start + span * fraction, message)) if progress else None

    try:
        found = localize_by_registration(ct, template, organs, progress=part(0.0, 0.7))
    except URSAMError:  # too small a field of view for registration: the learned localizer only
        found = {}
    organs = list(template.organs) if organs is None else organs
    unsure = [o for o in organs if o not in found or found[o].box is None or found[o].agreement < min_agreement]
    for localization in found.values():
        localization.localizer = "registration"
    if unsure:
        learned = localize_by_medlam(ct, template, unsure, progress=part(0.7, 0.3), weights=weights, **options)
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
    voxels = margin.voxels(frame.spacing)
    prompts = [loc.prompt(frame.shape, voxels) for loc in localizations.values() if loc.box is not None]
    missing = {name: loc.reason for name, loc in localizations.items() if loc.box is None}
    return TemplatePrompts(prompts, missing, localizations, voxels)


def no_organ_found(found: TemplatePrompts, template: Template, ct_name: str) -> URSAMError:
    """The error for a CT in which no organ of the template was found: a template for another body
    region when every organ fell outside the CT, else each organ's reason."""
    localizations = found.localizations
    if localizations and all(loc.outside for loc in localizations.values()):
        region = f" (made for: {template.body_region})" if template.body_region else ""
        return URSAMError(f"Every organ of the template{region} was localized outside {ct_name} "
                          f"({', '.join(localizations)}): the template is probably for another body region than "
                          "this CT. Use a template built from scans of the same body region.")
    return URSAMError(f"No organ of the template was found in {ct_name}: "
                      f"{'; '.join(f'{n}: {r}' for n, r in found.missing.items())}.")
