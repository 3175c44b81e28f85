"""Axial slicing: the voxel grid URSAM works on, and exact maps to and from an image's own grid.

Coordinates used throughout URSAM:

* A SimpleITK image has index axes (i, j, k) and a direction matrix whose columns
  give each index axis' direction in LPS physical space.
* URSAM works on an **axial array** ``[z, y, x]``: x runs to the patient's left, y to
  the posterior, z to the superior. Axial slice ``a[z]`` is then displayed like a
  radiologist's axial view (patient right on the image left, anterior at the top),
  which is how SAM-family models saw CT in training.
* The axial array is the stored voxel array with its axes permuted and flipped, never
  resampled, so :meth:`AxialFrame.from_axial` puts every voxel back exactly where it was.
  For an oblique acquisition the closest axes are used (the slices stay the acquired ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import URSAMError


@dataclass(frozen=True)
class AxialFrame:
    """How the stored voxel array maps onto URSAM's axial array ``[z, y, x]``.

    ``axes[c]`` is the axis of the stored array (``sitk.GetArrayFromImage`` order ``[k, j, i]``)
    that becomes axial axis ``c``; ``flips[c]`` says whether it is reversed.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    """Shape of the axial array ``(z, y, x)``."""
    spacing: tuple[float, float, float]
    """Voxel spacing of the axial array in mm ``(z, y, x)``."""

    @classmethod
    def of(cls, image: sitk.Image) -> "AxialFrame":
        direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
        physical_axis = np.argmax(np.abs(direction), axis=0)  # per index axis i, j, k
        ranked = np.sort(np.abs(direction), axis=0)
        ambiguous = np.any(ranked[2] - ranked[1] < 0.01)  # an axis halfway between two others
        if ambiguous or sorted(physical_axis.tolist()) != [0, 1, 2]:
            raise URSAMError("The image's direction matrix is too oblique (45 degrees) to tell its axial "
                             "slices; resample it to an axial orientation first.")
        axes, flips, spacing = [], [], []
        for physical in (2, 1, 0):  # axial axes z (S), y (P), x (L) are LPS axes 2, 1, 0
            index_axis = int(np.where(physical_axis == physical)[0][0])
            axes.append(2 - index_axis)  # numpy array axes are reversed index axes
            flips.append(bool(direction[physical, index_axis] < 0))
            spacing.append(float(image.GetSpacing()[index_axis]))
        stored_shape = image.GetSize()[::-1]
        shape = tuple(int(stored_shape[a]) for a in axes)
        return cls(tuple(axes), tuple(flips), shape, tuple(spacing))

    def to_axial(self, stored: np.ndarray) -> np.ndarray:
        """Stored array ``[k, j, i]`` → axial array ``[z, y, x]`` (a view where possible)."""
        axial = np.transpose(stored, self.axes)
        return axial[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def from_axial(self, axial: np.ndarray) -> np.ndarray:
        """Axial array ``[z, y, x]`` → stored array ``[k, j, i]``, the exact inverse of :meth:`to_axial`."""
        unflipped = axial[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        return np.ascontiguousarray(np.transpose(unflipped, np.argsort(self.axes)))

    def index_to_stored(self, zyx: np.ndarray) -> np.ndarray:
        """Axial voxel indices ``(..., 3)`` as ``(z, y, x)`` → SimpleITK indices ``(..., 3)`` as ``(i, j, k)``."""
        zyx = np.asarray(zyx, dtype=float)
        unflipped = np.where(self.flips, np.array(self.shape) - 1 - zyx, zyx)
        stored = np.empty_like(unflipped)
        stored[..., list(self.axes)] = unflipped  # stored array axes [k, j, i]
        return stored[..., ::-1]

    def index_from_stored(self, ijk: np.ndarray) -> np.ndarray:
        """SimpleITK (continuous) indices ``(..., 3)`` as ``(i, j, k)`` → axial ``(..., 3)`` as ``(z, y, x)``.

        The inverse of :meth:`index_to_stored`.
        """
        kji = np.asarray(ijk, dtype=float)[..., ::-1]
        zyx = kji[..., list(self.axes)]
        return np.where(self.flips, np.array(self.shape) - 1 - zyx, zyx)


def axial_array(image: sitk.Image, dtype=np.float32) -> tuple[np.ndarray, AxialFrame]:
    """The image's voxels as a contiguous axial array ``[z, y, x]`` of ``dtype``, and its frame."""
    frame = AxialFrame.of(image)
    stored = sitk.GetArrayViewFromImage(image)  # a view: the copy below must not be skipped,
    # or the array would outlive the image's buffer
    return np.array(frame.to_axial(stored), dtype=dtype, order="C", copy=True), frame


def image_from_axial(axial: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image on exactly ``reference``'s grid whose voxels are the axial array ``[z, y, x]``."""
    frame = AxialFrame.of(reference)
    if axial.shape != frame.shape:
        raise ValueError(f"axial array shape {axial.shape} does not match the reference {frame.shape}")
    image = sitk.GetImageFromArray(frame.from_axial(axial))
    image.CopyInformation(reference)
    return image


def same_voxel_centres(image: sitk.Image, reference: sitk.Image, tolerance: float = 1e-2) -> bool:
    """Whether two images sample the same voxel centres, up to the order and direction of axes.

    ``tolerance`` is a fraction of the smallest voxel spacing.
    """
    if sorted(image.GetSize()) != sorted(reference.GetSize()):
        return False

    def corners(img: sitk.Image) -> np.ndarray:
        size = np.array(img.GetSize()) - 1
        points = [img.TransformContinuousIndexToPhysicalPoint((size * np.array(c)).tolist())
                  for c in np.ndindex(2, 2, 2)]
        return np.array(sorted(np.round(points, 3).tolist()))

    limit = tolerance * min(reference.GetSpacing())
    spacing_ok = np.allclose(sorted(image.GetSpacing()), sorted(reference.GetSpacing()),
                             atol=limit)
    return spacing_ok and np.abs(corners(image) - corners(reference)).max() <= limit + 1e-3
