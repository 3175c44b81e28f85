"""Reading CT volumes, label maps and class maps: headers first, then voxels, each refused with a
clear reason (wrong format, damaged file, irregular DICOM series, too large for memory).
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from .. import formats, memory
from ..errors import URSAMError
from .checks import check_grid, check_volume
from .geometry import same_voxel_centres


SUPPORTED_FORMATS = ", ".join(formats.IMAGE_SUFFIXES) + ", or a folder with one DICOM series"


@dataclass(frozen=True)
class ImageHeader:
    """What an image file (or DICOM series) says about itself, read without its voxels."""

    path: Path
    dimension: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    """For a DICOM series the slice spacing is only known once every file is read (the third
    value is the first file's own, usually 1)."""
    components: int
    pixel_id: int
    format: str | None
    """The format the content is in ("NIfTI", "DICOM", ...; None when not recognised)."""
    files: tuple[str, ...] = ()
    """A DICOM series' files in slice order (empty for a single file)."""

    @property
    def bytes_per_voxel(self) -> int:
        """Bytes one voxel takes in memory as read."""
        try:
            probe = sitk.Image([1] * 2, self.pixel_id, self.components) if self.components > 1 else \
                sitk.Image([1] * 2, self.pixel_id)
            return sitk.GetArrayViewFromImage(probe).itemsize * self.components
        except RuntimeError:  # a pixel type SimpleITK cannot hold: assume the widest
            return 8 * max(self.components, 1)


@contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """Keep what ITK's C++ readers print by themselves (MetaImage's "data not read completely",
    ITK's warnings) off the user's terminal: the user gets URSAM's one-line message instead. Yields
    a list that holds the captured text once the block is left (for a better error message)."""
    captured: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect (e.g. a GUI process on Windows)
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _itk_reason(error: RuntimeError, native: list[str] | None = None) -> str:
    """The useful part of an ITK exception, without its source location and object address. ITK's
    "Reason:" line is the C library's last error, often unrelated (MetaImage reports a cut-short
    file as "No such file or directory"); what the reader printed itself then says more."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    printed = " ".join(" ".join(native or []).split())
    if lines and lines[-1].startswith("Reason:") and printed:
        return printed[:200]
    lines = [line for line in lines if not line.startswith("Reason:")] or ["unknown reason"]
    line = lines[-1]
    if "): " in line and line.startswith("ITK ERROR"):
        line = line.split("): ", 1)[1]
    return line.replace("sitk::ERROR: ", "")[:200]


def _content_error(path: Path, expected: str, found: str | None) -> URSAMError:
    ending = formats.suffix(path)
    if found == "an empty file":
        return URSAMError(f"{path} is empty (0 bytes); copy or export the image again.")
    if found == "text":
        return URSAMError(f"{path} is named like a {expected} file ({ending}) but holds text, not an image. "
                          f"Give a CT volume: {SUPPORTED_FORMATS}.")
    if found is None:
        return URSAMError(f"{path} is named like a {expected} file ({ending}) but its content is not a {expected} "
                          "image (damaged, or another format); export the CT again.")
    advice = ("a DICOM CT is a series of files: give the folder that holds them" if found == "DICOM"
              else f"rename it to its real format, or convert it to a CT volume ({SUPPORTED_FORMATS})")
    return URSAMError(f"{path} is named like a {expected} file ({ending}) but holds a {found} image; {advice}.")


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read an image's header (size, spacing, pixel type) without its voxels.

    Raises :class:`URSAMError` for a missing path, a file whose content does not match its name,
    an unreadable or damaged file, and a folder without exactly one DICOM series.
    """
    path = Path(path)
    if not path.exists():
        raise URSAMError(f"{path} does not exist. Give the path of a {SUPPORTED_FORMATS}.")
    if path.is_dir():
        return _dicom_series_header(path)
    found = formats.sniff(path)
    expected = formats.BY_SUFFIX.get(formats.suffix(path))
    # DICOM files without the "DICM" preamble exist (old ACR-NEMA style): GDCM may still read them
    lenient = expected is not None and expected[1] == "DICOM" and found is None
    if found == "an empty file" or (expected is not None and found != expected[1] and not lenient):
        raise _content_error(path, expected[1] if expected else "image", found)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if expected is not None:
        reader.SetImageIO(expected[0])  # never let ITK fall back to a format the name does not say
    try:
        with _native_stderr_captured() as native:
            reader.ReadImageInformation()
    except RuntimeError as error:  # SimpleITK/ITK reports unreadable files as RuntimeError
        raise _unreadable(path, found, _itk_reason(error, native)) from None
    if found == "NIfTI":
        problem = formats.nifti_problem(path)
        if problem:
            raise URSAMError(f"{path} {problem}.")
    return ImageHeader(path, reader.GetDimension(), tuple(reader.GetSize()), tuple(reader.GetSpacing()),
                       reader.GetNumberOfComponents(), reader.GetPixelID(), found)


def _dicom_series_header(folder: Path) -> ImageHeader:
    with _native_stderr_captured():
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []
    if not series_ids:
        raise URSAMError(f"{folder} is a folder but holds no DICOM series. Point to the series folder.")
    if len(series_ids) > 1:
        raise URSAMError(
            f"{folder} holds {len(series_ids)} DICOM series; put the CT series in a folder of its own."
        )
    with _native_stderr_captured():
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    reader = _dicom_file_header(files[0], f"the DICOM series in {folder}")
    columns, rows = reader.GetSize()[:2]
    check_slice_geometry(folder, files)
    return ImageHeader(folder, 3, (columns, rows, len(files)), tuple(reader.GetSpacing()),
                       reader.GetNumberOfComponents(), reader.GetPixelID(), "DICOM", files)


def _dicom_file_header(file: str, what: str) -> sitk.ImageFileReader:
    """A reader holding one DICOM file's header (no voxels read); ``what`` names it in the error."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.SetImageIO("GDCMImageIO")
    try:
        with _native_stderr_captured():
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise URSAMError(f"Could not read {what} ({_itk_reason(error)}).") from None
    return reader


SLICE_TOLERANCE = 0.01
"""How far a DICOM slice may lie from the regular grid, as a fraction of the voxel's size there.

ITK stacks a series' slices on a regular grid: the first slice's orientation and the mean slice
spacing. A missing slice, uneven spacing or a gantry tilt would then move every voxel off its
slice, silently (ITK only prints a warning), and every result with it."""

_REGULARIZE = ("resample it onto a regular grid first (e.g. load it in 3D Slicer with DICOM acquisition geometry "
               "regularization turned on and save it as NRRD)")


def check_slice_geometry(folder: Path, files: tuple[str, ...]) -> None:
    """Refuse a DICOM series whose slices, in ``files`` order, do not lie on one regular grid.

    Reads each file's header (image position and orientation, no voxels) and raises
    :class:`URSAMError` for slices of different orientations, two slices at one position, a
    missing slice, uneven spacing, or a gantry tilt (slices shifted within their plane).
    """
    if len(files) < 2:
        return
    positions, directions, pixel = [], [], None
    for file in files:
        reader = _dicom_file_header(file, f"{file} of the DICOM series in {folder}")
        positions.append(reader.GetOrigin()[:3])
        directions.append(reader.GetDirection())
        pixel = pixel or min(reader.GetSpacing()[:2])
    if not np.allclose(directions, directions[0], atol=1e-4):
        raise URSAMError(f"The slices of the DICOM series in {folder} have different orientations; give a series of "
                         f"parallel slices, or {_REGULARIZE}.")
    normal = np.array(directions[0], dtype=float).reshape(3, 3)[:, 2]
    offsets = np.array(positions, dtype=float) - positions[0]
    along = offsets @ normal
    within = np.linalg.norm(offsets - along[:, None] * normal, axis=1)
    steps = np.abs(np.diff(along))
    typical = float(np.median(steps))
    if steps.min() <= SLICE_TOLERANCE * max(typical, pixel):
        raise URSAMError(f"The DICOM series in {folder} holds two slices at one position ({len(files)} files): it "
                         "mixes acquisitions or repeats files; put one series' slices, each once, in the folder.")
    if within.max() > SLICE_TOLERANCE * pixel:
        angle = math.degrees(math.atan2(within[-1], abs(along[-1])))
        raise URSAMError(f"The DICOM series in {folder} was acquired with a gantry tilt (about {angle:.1f} degrees): "
                         "its slices are shifted within their plane, which a regular volume cannot hold without "
                         f"moving them; {_REGULARIZE}.")
    if np.abs(steps - typical).max() > SLICE_TOLERANCE * typical:
        widest = int(np.argmax(steps))
        ratio = steps[widest] / typical
        if ratio > 1.5 and abs(ratio - round(ratio)) <= SLICE_TOLERANCE * round(ratio):
            missing = "a slice" if round(ratio) == 2 else f"{round(ratio) - 1} slices"
            raise URSAMError(f"The DICOM series in {folder} misses {missing}: its slices are "
                             f"{typical:.3g} mm apart, but {steps[widest]:.3g} mm after {Path(files[widest]).name}. "
                             "Give the complete series (every file of it).")
        raise URSAMError(f"The DICOM series in {folder} has unevenly spaced slices ({steps.min():.3g} to "
                         f"{steps.max():.3g} mm apart); {_REGULARIZE}.")


def _unreadable(path: Path, found: str | None, reason: str) -> URSAMError:
    if found in set(name for _, name in formats.BY_SUFFIX.values()):  # the right format, yet unreadable
        return URSAMError(f"Could not read {path} ({reason}): the {found} file is damaged or cut short; "
                          "copy or export it again.")
    return URSAMError(f"Could not read {path} as an image ({reason}). Supported: {SUPPORTED_FORMATS}.")


def _read_voxels(header: ImageHeader) -> sitk.Image:
    path = header.path
    native: list[str] = []
    try:
        with _native_stderr_captured() as native:
            if header.files:
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(list(header.files))
                return reader.Execute()
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            expected = formats.BY_SUFFIX.get(formats.suffix(path))
            if expected is not None:
                reader.SetImageIO(expected[0])
            return reader.Execute()
    except RuntimeError as error:
        raise _unreadable(path, header.format, _itk_reason(error, native)) from None


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a NIfTI/NRRD/MetaImage file or a DICOM series folder, keeping origin, spacing, direction.

    The header is read first: a file named like one format but holding another, a damaged or
    truncated file, and an image that cannot fit in memory are refused before any voxel is read.
    """
    header = read_header(path)
    memory.check_fits(header.size, str(path), header.bytes_per_voxel)
    return _read_voxels(header)


def read_ct(path: str | os.PathLike) -> sitk.Image:
    """Read a CT volume (HU) and check that it can be segmented.

    Raises :class:`URSAMError` for 2-D or 4-D images, vector images, a single DICOM slice, too
    few voxels, zero/absurd spacing and volumes too large for memory — all from the header,
    before the voxels are read — and then for non-finite or constant voxels.
    """
    header = read_header(path)
    name = str(path)
    if header.format == "DICOM" and not header.files and header.dimension == 3 and header.size[2] == 1:
        raise URSAMError(f"{name} is a single DICOM image (one slice); give the folder that holds the whole "
                         "DICOM series of the CT.")
    spacing = header.spacing[:2] if header.files else header.spacing
    check_grid(header.dimension, header.components, header.size, spacing, name)
    image = _read_voxels(header)
    check_volume(image, name)
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


def _fmt(values) -> str:
    return "x".join(f"{v:.3g}" for v in values)


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
