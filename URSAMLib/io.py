"""Reading CT volumes and label maps, axial slicing, and writing results on the input grid.

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

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import URSAMError

SUPPORTED_FORMATS = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, or a folder with one DICOM series"

# Refuse volumes whose working set would not fit: the HU array, its windowed copy and the
# multi-organ outputs cost roughly 16 bytes per voxel. 2**30 voxels (e.g. 2048x2048x256)
# is far beyond any diagnostic CT; users with such data should crop or downsample first.
MAX_VOXELS = 2**30


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a NIfTI/NRRD/MetaImage file or a DICOM series folder, keeping origin, spacing, direction."""
    path = Path(path)
    if not path.exists():
        raise URSAMError(f"{path} does not exist. Give the path of a {SUPPORTED_FORMATS}.")
    try:
        if path.is_dir():
            return _read_dicom_series(path)
        return sitk.ReadImage(str(path))
    except RuntimeError as error:  # SimpleITK/ITK reports unreadable files as RuntimeError
        reason = str(error).strip().splitlines()[-1][:200] if str(error).strip() else "unknown reason"
        raise URSAMError(
            f"Could not read {path} as an image ({reason}). Supported: {SUPPORTED_FORMATS}."
        ) from None


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []
    if not series_ids:
        raise URSAMError(f"{folder} is a folder but holds no DICOM series. Point to the series folder.")
    if len(series_ids) > 1:
        raise URSAMError(
            f"{folder} holds {len(series_ids)} DICOM series; put the CT series in a folder of its own."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return reader.Execute()


def read_ct(path: str | os.PathLike) -> sitk.Image:
    """Read a CT volume (HU) and check that it can be segmented.

    Raises :class:`URSAMError` for 2-D or 4-D images, vector images, non-finite or constant
    voxels, zero/absurd spacing and volumes too large for memory.
    """
    image = read_image(path)
    check_volume(image, str(path))
    return image


def check_volume(image: sitk.Image, name: str) -> None:
    """Validate a CT volume for segmentation (see :func:`read_ct`)."""
    if image.GetDimension() != 3:
        raise URSAMError(
            f"{name} is a {image.GetDimension()}-D image; URSAM needs a 3-D CT volume."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise URSAMError(f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel; "
                         "give a grey-scale CT volume, not a colour or vector image.")
    size = image.GetSize()
    if min(size) < 2 or size[0] < 16 or size[1] < 16:
        raise URSAMError(f"{name} has size {size}; a CT volume needs at least 16x16 pixels and 2 slices.")
    if int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
        raise URSAMError(f"{name} has {np.prod(size, dtype=np.int64):,} voxels, more than URSAM can hold "
                         f"in memory ({MAX_VOXELS:,}); crop it to the region of interest or downsample it.")
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or np.any(spacing > 50):
        raise URSAMError(f"{name} has voxel spacing {tuple(spacing)} mm; fix the image header "
                         "(spacing must be positive and at most 50 mm).")
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise URSAMError(f"{name} contains NaN or infinite voxels; replace them (e.g. by -1024 HU) first.")
    if values.min() == values.max():
        raise URSAMError(f"{name} is constant (every voxel is {values.min()}); it holds no image to segment.")


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


def read_label_map(path: str | os.PathLike, reference: sitk.Image) -> sitk.Image:
    """Read a label map and return it on ``reference``'s grid.

    A label map stored with other axis order or flips but the same voxel centres (e.g. a
    NIfTI written from a DICOM series) is re-indexed exactly; any other grid is an error,
    because resampling labels silently would move organ borders.
    """
    return label_map_on_grid(read_image(path), reference, str(path))


def label_map_on_grid(labels: sitk.Image, reference: sitk.Image, name: str) -> sitk.Image:
    """A label map already in memory (e.g. from a 3D Slicer scene) on ``reference``'s grid,
    with the same checks and exact re-indexing as :func:`read_label_map`; ``name`` is used
    in error messages."""
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise URSAMError(f"{name} is not a 3-D label map (one integer label per voxel).")
    if sitk.GetArrayViewFromImage(labels).dtype.kind == "f":
        values = sitk.GetArrayViewFromImage(labels)
        if not np.array_equal(values, np.round(values)):
            raise URSAMError(f"{name} holds non-integer values; give a label map of integer labels.")
    if not same_voxel_centres(labels, reference):
        raise URSAMError(
            f"{name} is on another grid than the CT (size {labels.GetSize()} vs {reference.GetSize()}, "
            f"spacing {_fmt(labels.GetSpacing())} vs {_fmt(reference.GetSpacing())} mm); "
            "give labels drawn on this CT, or resample them onto it first."
        )
    resampled = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                              sitk.sitkUInt16)
    return resampled


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


def _fmt(values) -> str:
    return "x".join(f"{v:.3g}" for v in values)


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write an image atomically: to a temporary file beside ``path``, then rename."""
    path = Path(path)
    suffix = "".join(path.suffixes) or ".nii.gz"
    handle, temporary = tempfile.mkstemp(prefix=".ursam-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, compress)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_classes(path: str | os.PathLike) -> dict[int, str]:
    """Read a class map ``{"1": "spleen", ...}`` (label value → organ name) as ``{1: "spleen"}``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise URSAMError(f"{path} does not exist; give a JSON class map like "
                         '{"1": "spleen", "2": "kidney_right"}.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise URSAMError(f"{path} is not valid JSON ({error}); give a class map like "
                         '{"1": "spleen", "2": "kidney_right"}.') from None
    if not isinstance(raw, dict) or not raw:
        raise URSAMError(f"{path} must be a JSON object mapping label values to organ names.")
    classes: dict[int, str] = {}
    for key, name in raw.items():
        try:
            value = int(key)
        except ValueError:
            raise URSAMError(f"{path}: key {key!r} is not an integer label value.") from None
        if not 0 < value < 65536 or not isinstance(name, str) or not name.strip():
            raise URSAMError(f"{path}: entry {key!r}: {name!r} needs a label value in 1..65535 "
                             "and a non-empty organ name.")
        classes[value] = name.strip()
    if len(set(classes.values())) != len(classes):
        raise URSAMError(f"{path} names an organ twice; organ names must be unique.")
    return classes
