"""Whether an image can be a CT to segment: its grid (dimension, size, spacing) and its intensities."""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from .. import memory
from ..errors import URSAMError


MIN_SPACING_MM, MAX_SPACING_MM = 0.01, 50.0
"""Voxel spacing outside this range is a broken header (e.g. metres written as millimetres),
not a CT: clinical CT voxels are 0.2 to 10 mm."""


def check_grid(dimension: int, components: int, size, spacing, name: str) -> None:
    if dimension != 3:
        advice = ("give the CT volume, not a single slice or a picture" if dimension == 2 else
                  "extract one 3-D volume (one time point or phase) first")
        raise URSAMError(f"{name} is a {dimension}-D image; URSAM needs a 3-D CT volume: {advice}.")
    if components != 1:
        raise URSAMError(f"{name} has {components} values per voxel; "
                         "give a grey-scale CT volume, not a colour or vector image.")
    if min(size) < 2 or size[0] < 16 or size[1] < 16:
        raise URSAMError(f"{name} has size {tuple(size)}; a CT volume needs at least 16x16 pixels and 2 slices.")
    spacing = tuple(float(s) for s in spacing)
    if not all(math.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise URSAMError(f"{name} has voxel spacing {tuple(round(s, 6) for s in spacing)} mm; fix the image header "
                         f"(spacing must be between {MIN_SPACING_MM} and {MAX_SPACING_MM:g} mm).")
    memory.check_fits(size, name)


def check_volume(image: sitk.Image, name: str) -> None:
    """Validate a CT volume for segmentation (see :func:`read_ct`)."""
    check_grid(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), image.GetSpacing(),
                name)
    if not all(math.isfinite(v) for v in image.GetOrigin() + image.GetDirection()):
        raise URSAMError(f"{name} has no valid position in space (its origin or direction is not a number); "
                         "fix the image header.")
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        count = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise URSAMError(f"{name} contains NaN or infinite voxels ({count:,}); replace them (e.g. by -1024 HU) "
                         "first.")
    if values.min() == values.max():
        raise URSAMError(f"{name} is constant (every voxel is {values.min()}); it holds no image to segment.")


# Landmarks of CT in Hounsfield units, and how far the 208 CT volumes in ../shared/data are from
# them (scripts/measure_ct_intensity.py): air and lung are below -500 HU (at least 36 % of every volume
# there, as the scanner's field of view holds air); the median of the rest, the body, lies
# between -56 and 46 HU; and at least 79 % of the body lies in the soft-tissue range -200..300 HU.
# MR, PET, or a CT stored without its rescale to HU miss the first landmark by far.
AIR_THRESHOLD_HU = -500.0
"""Voxels below are air (or lung); at or above, the body."""
AIR_VALUE_HU = -1024.0
"""The HU of air: what fills a volume outside the scanned field."""
MIN_AIR_FRACTION = 0.001
BODY_MEDIAN_HU = (-200.0, 200.0)
SOFT_TISSUE_HU = (-200.0, 300.0)
MIN_SOFT_TISSUE_FRACTION = 0.5
_SAMPLE = 2_000_000  # voxels looked at: the percentages are stable far below the size of a CT


def intensity_warning(values: np.ndarray, name: str) -> str | None:
    """A warning when a volume's intensities do not look like CT in HU, else None.

    Not an error: an unusual CT (e.g. cropped inside the body) may miss a landmark, and the user
    may know better. But for MR or PET the HU window URSAM applies maps nothing sensible onto the
    model's input, so the user must hear of it.
    """
    flat = np.asarray(values).ravel()
    sample = flat[::max(1, flat.size // _SAMPLE)].astype(np.float32)
    air = float(np.mean(sample < AIR_THRESHOLD_HU))
    body = sample[sample >= AIR_THRESHOLD_HU]
    if air < MIN_AIR_FRACTION:
        reason = (f"no voxel is below {AIR_THRESHOLD_HU:g} HU, where air should be" if air == 0 else
                  f"only {100 * air:.2g} % of the voxels are below {AIR_THRESHOLD_HU:g} HU, where air should be")
    elif body.size == 0:
        return None  # all air: check_volume's constant test or the prompts will speak
    elif not BODY_MEDIAN_HU[0] <= float(np.median(body)) <= BODY_MEDIAN_HU[1]:
        reason = (f"the body's median intensity is {float(np.median(body)):.4g}, where soft tissue is about "
                  "0 to 100 HU")
    elif float(np.mean((body >= SOFT_TISSUE_HU[0]) & (body <= SOFT_TISSUE_HU[1]))) < MIN_SOFT_TISSUE_FRACTION:
        share = float(np.mean((body >= SOFT_TISSUE_HU[0]) & (body <= SOFT_TISSUE_HU[1])))
        reason = (f"only {100 * share:.0f} % of the body lies in the soft-tissue range "
                  f"{SOFT_TISSUE_HU[0]:g} to {SOFT_TISSUE_HU[1]:g} HU")
    else:
        return None
    return (f"{name} does not look like a CT in Hounsfield units ({reason}). It may be MR, PET, or a CT "
            "stored without its rescale to HU: the CT window URSAM applies is then meaningless and the "
            "segmentation unreliable.")
