"""Atlas-shaped prompts: the supports' label maps carried onto the CT and fused by vote.

Every support of the template is registered to the query CT (the affine registration of
:func:`~URSAMLib.localize.registration.register_affine`, then a coarse B-spline that bends it to
the patient), and its label map is resampled onto the CT's own grid through that transform. The
B-spline and the resampling cover only the box where the affine puts the support's organs, grown
by :data:`REGION_MARGIN_MM`: the rest of the scan holds none of them, and a B-spline over that box
alone fits the organs better. A voxel belongs to an organ where at least half of the supports say
so: that is classical multi-atlas segmentation, and it is kept as its own result
(:class:`~URSAMLib.localize.common.AtlasVote`). Its shape gives each organ its prompts: on every
slice where the fused map has the organ, one box around each separate part of it, extended by
:data:`ATLAS_MARGIN_MM`; no box on slices where it has none. One 3-D box repeated on every slice
is far too large on most slices of a curved or tapering organ (mandible, spinal cord).
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import SimpleITK as sitk

from ..errors import URSAMError
from ..io import AIR_THRESHOLD_HU, AIR_VALUE_HU, AxialFrame
from ..organs import check_known
from ..progress import Progress
from ..prompts import Box3D, part_boxes
from ..template import Support, Template, extreme_points
from .common import OUTSIDE_IMAGE, VOTE_THRESHOLD, AtlasVote, Localization, box_iou, clipped_box
from .registration import for_each_support, register_affine, registration_image, single_threaded_itk

ATLAS_MARGIN_MM = 3.0
"""How far each per-slice box of the fused map is extended in-plane, in mm."""
BSPLINE_MESH = 4
"""Control-point intervals of the B-spline per axis: a coarse grid bends the affine result to the
patient's anatomy (neck flexion, body size) without the cost or the folding of a fine one."""
REGION_MARGIN_MM = 30.0
"""How far beyond the support's organs, as the affine carries them, the B-spline and the label maps
reach, in mm: room for the B-spline's corrections (a centimetre or two) and the organs' own extent
around their extreme points."""
MIN_BODY_DICE = 0.5
"""A support whose registered body (voxels above the air threshold) overlaps the CT's body less
than this (Dice) has diverged and is dropped."""


def register_deformable(fixed: sitk.Image, moving: sitk.Image, affine: sitk.Transform,
                        seed: int = 0) -> sitk.Transform:
    """``affine`` refined by a B-spline: a transform mapping points of ``fixed`` to ``moving``.

    Both images as :func:`~URSAMLib.localize.registration.registration_image` makes them (3 mm). The B-spline
    (:data:`BSPLINE_MESH` intervals per axis) is optimised with L-BFGS-B on Mattes mutual
    information over a random 5 % of the voxels, at 12 and 6 mm: organ prompts need the
    organs' position to a few millimetres, not a voxel-exact fit.
    """
    bspline = sitk.BSplineTransformInitializer(fixed, [BSPLINE_MESH] * 3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.05, seed + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=20,
                                maximumNumberOfCorrections=5)
    method.SetShrinkFactorsPerLevel([4, 2])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransform(bspline, inPlace=True)
    with single_threaded_itk():
        method.Execute(fixed, moving)
    composite = sitk.CompositeTransform(affine)
    composite.AddTransform(bspline)  # applied first: fixed → B-spline → affine → moving
    return composite


def _body_dice(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Dice of the two bodies (air threshold) once ``moving`` is carried onto ``fixed``'s grid, at
    twice its voxel size (6 mm): a check for divergence, eight times cheaper through a B-spline."""
    fixed = sitk.Shrink(fixed, [2, 2, 2])
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)
    air = AIR_THRESHOLD_HU - AIR_VALUE_HU  # registration images are HU shifted so that air is 0
    a, b = sitk.GetArrayViewFromImage(fixed) > air, sitk.GetArrayViewFromImage(warped) > air
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def organ_region_mm(support: Support, affine: sitk.Transform,
                    margin_mm: float = REGION_MARGIN_MM) -> tuple[np.ndarray, np.ndarray]:
    """The box of the query CT's physical space (LPS mm, lower and upper corner) where ``affine``
    (query → support points) puts all of ``support``'s organs, grown by ``margin_mm``."""
    points = np.concatenate(list(support.points_mm.values()))
    inverse = affine.GetInverse()  # support points → query points
    corners = np.array([inverse.TransformPoint(corner) for corner in
                        itertools.product(*zip(points.min(axis=0).tolist(), points.max(axis=0).tolist()))])
    return corners.min(axis=0) - margin_mm, corners.max(axis=0) + margin_mm


def index_region(image: sitk.Image, low_mm: np.ndarray, high_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index box ``[lower, upper)`` (``(i, j, k)``, clipped to the image) of ``image``'s voxels
    inside the physical box ``low_mm``..``high_mm``; empty along an axis where lower == upper."""
    corners = itertools.product(*zip(low_mm.tolist(), high_mm.tolist()))
    index = np.array([image.TransformPhysicalPointToContinuousIndex(corner) for corner in corners])
    size = np.array(image.GetSize())
    lower = np.clip(np.floor(index.min(axis=0)), 0, size).astype(int)
    upper = np.clip(np.ceil(index.max(axis=0)) + 1, 0, size).astype(int)  # never below lower
    return lower, upper


def _crop(image: sitk.Image, lower: np.ndarray, upper: np.ndarray) -> sitk.Image:
    return sitk.RegionOfInterest(image, [int(v) for v in upper - lower], [int(v) for v in lower])


def carry_supports(ct: sitk.Image, template: Template, deformable: bool = True,
                   progress: Progress | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Each support's label map registered onto ``ct``: axial ``[z, y, x]`` uint8 arrays on the CT's
    grid, and the names of the supports used. A support whose registration fails or diverges is
    dropped with a warning naming it; if all are, a :class:`URSAMError`."""
    without = [s.name for s in template.supports if s.labels is None]
    if without:
        raise URSAMError(f"Atlas prompts need the supports' label maps, and the template's {', '.join(without)} "
                         "has none; rebuild the template with `ursam build-template` (it now keeps them).")
    fixed = registration_image(ct)
    frame = AxialFrame.of(ct)

    def carry(support: Support) -> np.ndarray | str:
        """The support's label map on the CT's grid, or why it was dropped."""
        moving = registration_image(support.read())
        try:
            transform = register_affine(fixed, moving)
        except RuntimeError as error:  # ITK fails on fields of view too small for its pyramid
            return f"{support.name} ({str(error).strip().splitlines()[-1][:80]})"
        # Only the organs' region is bent and resampled: measured on training patients, half the
        # cost of the whole scan and a better vote (docs/atlas-prompts.md).
        region_mm = organ_region_mm(support, transform)
        lower, upper = index_region(ct, *region_mm)
        inside = bool((upper > lower).all())  # else the affine puts every organ outside the CT
        if deformable and inside:
            try:
                transform = register_deformable(_crop(fixed, *index_region(fixed, *region_mm)), moving, transform)
            except RuntimeError:  # a region too small for the B-spline's grid: the affine result stands
                pass
        overlap = _body_dice(fixed, moving, transform)
        if overlap < MIN_BODY_DICE:
            return f"{support.name} (its body overlaps the CT's by Dice {overlap:.2f} after registration)"
        stored = np.zeros(ct.GetSize()[::-1], np.uint8)  # [k, j, i]; no organ outside the region
        if inside:
            labels = sitk.Resample(support.read_labels(), _crop(ct, lower, upper), transform,
                                   sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            stored[lower[2]:upper[2], lower[1]:upper[1], lower[0]:upper[0]] = sitk.GetArrayViewFromImage(labels)
        return np.ascontiguousarray(frame.to_axial(stored))

    results = for_each_support(template.supports, carry, progress)
    carried = [r for r in results if not isinstance(r, str)]
    used = [s.name for s, r in zip(template.supports, results) if not isinstance(r, str)]
    dropped = [r for r in results if isinstance(r, str)]
    if dropped and carried:
        warnings.warn(f"Atlas: support {'; '.join(dropped)} could not be registered to this CT and is left out; "
                      f"the other {len(carried)} vote.", stacklevel=2)
    if not carried:
        size_mm = [round(n * d) for n, d in zip(ct.GetSize(), ct.GetSpacing())]
        raise URSAMError(f"No support of the template could be registered to this CT of "
                         f"{' x '.join(map(str, size_mm))} mm ({'; '.join(dropped)}): registration needs a CT that "
                         "covers the template's body region (about 10 cm or more in each direction).")
    return carried, used


def vote_slice_boxes(mask: np.ndarray, spacing: tuple[float, float, float],
                     margin_mm: float = ATLAS_MARGIN_MM) -> dict[int, np.ndarray]:
    """Atlas-shaped prompts from a fused mask ``[z, y, x]`` (``spacing`` ``(z, y, x)`` mm): on each
    slice where it has the organ, one box per part (:func:`~URSAMLib.prompts.part_boxes`) grown
    in-plane by ``margin_mm``; ``{z: K x 4}``."""
    grow = np.array([-1, -1, 1, 1]) * np.array([margin_mm / spacing[2], margin_mm / spacing[1]] * 2)
    return {int(z): part_boxes(mask[z]) + grow for z in np.flatnonzero(mask.any(axis=(1, 2)))}


def fuse_votes(organ: str, label: int, carried: list[np.ndarray], spacing: tuple[float, float, float],
               margin_mm: float = ATLAS_MARGIN_MM) -> Localization:
    """One organ's localization from the supports' label maps on the CT's grid (each ``[z, y, x]``).

    The fused mask is the majority vote; its six extreme points and box describe the organ like
    any localizer's, and its slices give the per-slice part boxes (extended by ``margin_mm``)."""
    shape = carried[0].shape
    votes = [labels == label for labels in carried]
    count = np.sum(votes, axis=0, dtype=np.uint8)
    result = Localization(organ, label, localizer="atlas")
    fused = count >= VOTE_THRESHOLD * len(carried)
    box = Box3D.from_mask(fused)
    if box is None:
        # no support puts any of the organ inside the CT: as a box outside the image for the other
        # localizers (when that holds for every organ, the template is for another body region)
        result.outside = not any(vote.any() for vote in votes)
        result.reason = OUTSIDE_IMAGE if result.outside else \
            "the supports' label maps, registered onto this CT, agree on none of its voxels"
        return result
    result.points = extreme_points(fused)
    result.box, result.reason = clipped_box(result.points, shape)
    if result.box is None:  # one voxel thick: no use as a prompt
        return result
    result.support_boxes = [b for b in (Box3D.from_mask(v) for v in votes) if b is not None]
    result.agreement = float(np.mean([box_iou(b, box) for b in result.support_boxes]))
    result.slice_boxes = vote_slice_boxes(fused, spacing, margin_mm)
    region = tuple(slice(low, high + 1) for low, high in zip(box.as_list()[0::2], box.as_list()[1::2]))
    result.atlas = AtlasVote(region, (count[region] / len(carried)).astype(np.float32), len(carried))
    return result


def localize_by_atlas(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                      progress: Progress | None = None, deformable: bool = True,
                      **options) -> dict[str, Localization]:
    """Localize ``organs`` (default: all of the template's) in ``ct`` by multi-atlas registration:
    every organ found carries per-slice part boxes (its prompts) and its :class:`AtlasVote`."""
    if options:
        raise URSAMError(f"The atlas localizer takes no {', '.join(options)}.")
    organs = list(template.organs) if organs is None else organs
    check_known(organs, template.organs, "the template")
    carried, _ = carry_supports(ct, template, deformable, progress)
    spacing = AxialFrame.of(ct).spacing
    results = {organ: fuse_votes(organ, template.organs[organ], carried, spacing) for organ in organs}
    if progress:
        progress(1.0, "Localized")
    return results
