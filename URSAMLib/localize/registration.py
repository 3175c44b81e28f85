"""The default localizer: affine registration of the template's supports to the query CT.

It needs no training: every support CT of the template is registered (affine, at 3 mm) to the
query, its organs' extreme points are carried over, and the points of all supports are fused by
their median (:func:`URSAMLib.localize.common.fuse_supports`). How well the supports agree is
reported per organ (mean IoU of each support's box with the fused box): a low score means the
position is unsure before SAM even runs.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Sequence, TypeVar

import numpy as np
import SimpleITK as sitk

from ..errors import URSAMError
from ..organs import check_known
from ..io import AIR_VALUE_HU, AxialFrame
from ..progress import Progress
from ..template import Support, Template, resample_isotropic
from .common import Localization, axial_points, fuse_supports

T = TypeVar("T")


def registration_image(ct: sitk.Image) -> sitk.Image:
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

    with single_threaded_itk():
        start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Similarity3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
        similarity = run(start, [8, 4], [2.0, 1.0])
        affine = sitk.AffineTransform(3)
        affine.SetCenter(similarity.GetCenter())
        affine.SetMatrix(similarity.GetMatrix())
        affine.SetTranslation(similarity.GetTranslation())
        return run(affine, [4, 2], [1.0, 0.0])


def for_each_support(supports: Sequence[Support], register: Callable[[Support], T],
                     progress: Progress | None = None) -> list[T]:
    """``register(support)`` for every support, in the supports' order, several at a time.

    Each registration runs on one thread (:func:`single_threaded_itk`), so the supports run side by
    side, one per core (SimpleITK releases the GIL while it computes): 1.7x faster on two cores,
    the same transforms. An exception of ``register`` is raised here, as from a plain loop.
    """
    workers = max(1, min(len(supports), os.cpu_count() or 1))
    with single_threaded_itk(), ThreadPoolExecutor(workers, thread_name_prefix="ursam-registration") as pool:
        futures = {pool.submit(register, support): support for support in supports}
        if progress:
            progress(0.0, f"Registering {len(supports)} supports")
        for done, future in enumerate(as_completed(futures), start=1):
            if progress:
                progress(done / len(supports), f"Registered support {futures[future].name}")
        return [future.result() for future in futures]


@contextmanager
def single_threaded_itk():
    """ITK's threaded metric and scale estimation sum in a varying order, so a multi-threaded
    registration differs slightly from run to run; with one thread it is repeatable (and at 3 mm
    it takes about 12 s per support on one core). The setting is process-wide (a filter's own
    ``SetNumberOfThreads(1)`` leaves the metric threaded), so threads that register side by side
    all enter this while :func:`for_each_support` holds it: they only ever see and restore one."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def localize_by_registration(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                             progress: Progress | None = None, **options) -> dict[str, Localization]:
    """Localize ``organs`` (default: all of the template's) in ``ct`` by affine registration."""
    if options:
        raise URSAMError(f"The registration localizer takes no {', '.join(options)}.")
    organs = list(template.organs) if organs is None else organs
    check_known(organs, template.organs, "the template")
    frame = AxialFrame.of(ct)
    fixed = registration_image(ct)

    def register(support: Support) -> sitk.Transform:
        try:
            return register_affine(fixed, registration_image(support.read()))
        except RuntimeError as error:  # ITK fails on fields of view too small for its pyramid
            size_mm = [round(n * d) for n, d in zip(ct.GetSize(), ct.GetSpacing())]
            raise URSAMError(f"Could not register the template's support {support.name} to this CT of "
                             f"{' x '.join(map(str, size_mm))} mm ({str(error).strip().splitlines()[-1][:120]}); "
                             "registration needs a CT that covers the body region (about 10 cm or more in each "
                             "direction): use a larger field of view, or prompt with labels or segments instead."
                             ) from None

    mapped: dict[str, list[np.ndarray]] = {o: [] for o in organs}
    for support, transform in zip(template.supports, for_each_support(template.supports, register, progress)):
        inverse = transform.GetInverse()  # support points → query points
        for organ in organs:
            points_mm = np.array([inverse.TransformPoint(p.tolist()) for p in support.points_mm[organ]])
            mapped[organ].append(axial_points(points_mm, ct, frame))
    results = {organ: fuse_supports(organ, template.organs[organ], np.stack(mapped[organ]), frame.shape)
               for organ in organs}
    if progress:
        progress(1.0, "Localized")
    return results
