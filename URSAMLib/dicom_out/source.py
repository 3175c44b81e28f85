"""The source DICOM series of a run: its files in slice order and the identity the outputs copy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import io
from ..errors import URSAMError

if TYPE_CHECKING:
    import SimpleITK as sitk

MANUFACTURER = "URSAM"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UNKNOWN_CATEGORY = ("SCT", "123037004", "Anatomical Structure")
UNKNOWN_TYPE = ("SCT", "91723000", "Anatomical structure")
"""Codes of an organ the catalogue does not know (its class name becomes the segment's label)."""
UNKNOWN_COLOUR = (0.5, 0.5, 0.5)
NAT = ("UCUM", "{nat}", "nat")
"""The uncertainty's unit: UCUM has no atom for the natural unit of information, so it is the
dimensionless unit 1 annotated ``{nat}`` (entropy with the natural logarithm; ln 2 at p = 0.5)."""
POSITION_TOLERANCE = 0.01
"""How far (in voxels) a source file may lie from its slice of the volume read from the series."""


@dataclass
class DicomSource:
    """The headers (no pixels) of a source series' files, one per slice ``k`` of its volume."""

    datasets: list
    """pydicom datasets in slice order ``k``."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(frames, rows, columns)``."""
        first = self.datasets[0]
        return len(self.datasets), int(first.Rows), int(first.Columns)


_SOP_FROM_META = (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID"))
_SHARED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def read_source(ct: str, image: "sitk.Image", warn: Callable[[str], None]) -> DicomSource:
    """The headers of the DICOM series ``ct`` that ``image`` was read from, in its slice order.

    Anonymized exports may leave out UIDs that DICOM objects must refer to: a SOP Class or
    Instance UID missing from a dataset is taken from its file meta; a study, series or frame of
    reference UID missing from every file is derived from the files' SOP Instance UIDs (so it is
    the same on every run). ``warn`` hears of it once.
    """
    import pydicom

    files = io.read_header(ct).files
    try:
        datasets = [pydicom.dcmread(file, stop_before_pixels=True) for file in files]
    except (pydicom.errors.InvalidDicomError, OSError, ValueError) as error:
        raise URSAMError(f"Could not read the DICOM headers of {ct} for --dicom-out ({error}).") from None
    for dataset in datasets:
        if "SpecificCharacterSet" in dataset and not dataset.SpecificCharacterSet:
            del dataset.SpecificCharacterSet  # empty (Type 1C) means the default repertoire, so say nothing
    filled = _fill_uids(datasets)
    if filled:
        warn(f"The DICOM files of {ct} carry no {', '.join(filled)} (an anonymized export?); the DICOM outputs take "
             "them from the files' meta headers where those hold them, and derive the others from the series (the "
             "same on every run)." + (" A PACS will file the outputs in a study of their own."
                                      if "Study Instance UID" in filled else ""))
    return DicomSource([datasets[i] for i in _slice_order(datasets, image, ct)])


def _fill_uids(datasets: list) -> list[str]:
    """Fill missing UIDs in place (see :func:`read_source`); returns the names of those missing."""
    from pydicom.uid import generate_uid

    def derived(keyword: str, *sources) -> str:
        return generate_uid(entropy_srcs=[keyword, *(str(source) for source in sources)])

    missing: dict[str, None] = {}
    for dataset in datasets:
        meta = getattr(dataset, "file_meta", None) or {}
        for keyword, meta_keyword in _SOP_FROM_META:
            if not dataset.get(keyword):
                missing[keyword] = None
                fallback = (CT_IMAGE_STORAGE if keyword == "SOPClassUID" else  # URSAM reads CT
                            derived(keyword, *(dataset.get(k) for k in ("FrameOfReferenceUID", "ImagePositionPatient",
                                                                        "InstanceNumber"))))
                setattr(dataset, keyword, meta.get(meta_keyword) or fallback)
    instances = sorted(str(d.SOPInstanceUID) for d in datasets)
    for keyword in _SHARED_UIDS:
        values = [d.get(keyword) for d in datasets]
        if all(values):
            continue
        missing[keyword] = None
        value = next((v for v in values if v), None) or derived(keyword, *instances)
        for dataset in datasets:
            if not dataset.get(keyword):
                setattr(dataset, keyword, value)
    names = {"SOPClassUID": "SOP Class UID", "SOPInstanceUID": "SOP Instance UID",
             "StudyInstanceUID": "Study Instance UID", "SeriesInstanceUID": "Series Instance UID",
             "FrameOfReferenceUID": "Frame of Reference UID"}
    return [names[keyword] for keyword in missing]


def _slice_order(datasets: list, image: "sitk.Image", ct: str) -> list[int]:
    """For each slice ``k`` of ``image``, the index of the dataset that lies on it."""
    size = image.GetSize()
    order: dict[int, int] = {}
    for index, dataset in enumerate(datasets):
        if (int(dataset.Rows), int(dataset.Columns)) != (size[1], size[0]) or "ImagePositionPatient" not in dataset:
            raise URSAMError(f"{ct}: a file of the series has no position or another size than the volume "
                             "read from it; give a series of equal slices.")
        i, j, k = image.TransformPhysicalPointToContinuousIndex([float(v) for v in dataset.ImagePositionPatient])
        if max(abs(i), abs(j), abs(k - round(k))) > POSITION_TOLERANCE or round(k) in order:
            raise URSAMError(f"{ct}: the file {index + 1} of the series does not lie on a slice of the volume read "
                             "from it; give a series of parallel, evenly spaced slices.")
        order[round(k)] = index
    if sorted(order) != list(range(size[2])):
        raise URSAMError(f"{ct}: the series' files do not fill the {size[2]} slices of its volume.")
    return [order[k] for k in range(size[2])]
