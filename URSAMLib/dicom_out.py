"""A run's results as DICOM objects that a PACS or a treatment planning system imports.

On a DICOM series input, ``--dicom-out`` writes any of (see :data:`OUTPUTS`):

* ``seg``: ``seg.dcm``, a DICOM Segmentation of the rectified organs (one segment per organ, named,
  coded and coloured from the organ catalogue); ``seg-ensemble``: ``seg_ensemble.dcm``, the same for
  the ensemble;
* ``rtstruct``: ``rtstruct.dcm``, an RT Structure Set, one ROI per organ, its contours on the source
  slices (holes are inner contours: a planning system combines a slice's contours even-odd);
* ``uncertainty``: ``uncertainty.dcm``, the uncertainty map as a Parametric Map (float32 entropy in
  nats, UCUM unit ``{nat}``) on the source grid.

Every object carries the source study's patient and study identity, a new series, a series
description naming URSAM and its version, and the algorithm's identification, and refers to the
source slices. Arrays here are in the source's frame order: ``[frame, row, column]``, which is the
stored array ``[k, j, i]`` of the image SimpleITK reads from the series (:func:`read_source` checks
that every file lies on its slice ``k``).

pydicom and highdicom are imported only when DICOM objects are made.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__
from .errors import URSAMError

if TYPE_CHECKING:
    import SimpleITK as sitk
    from pydicom.dataset import Dataset

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


@dataclass(frozen=True)
class DicomOutput:
    """One kind of DICOM object ``--dicom-out`` can write."""

    filename: str
    source: str
    """Which map of the run it shows: ``rectified``, ``ensemble`` (label maps) or ``uncertainty``."""
    description: str
    """The end of its series description, after "URSAM <version> "."""
    series_number: int
    write: Callable[..., "Dataset"] = field(repr=False)


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"seg,rtstruct"`` → ``("seg", "rtstruct")``; raises ValueError naming the unknown kinds."""
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in OUTPUTS]
    if unknown or not kinds:
        raise ValueError(f"unknown DICOM output {', '.join(unknown) or repr(text)}; choose any of "
                         f"{', '.join(OUTPUTS)}, separated by commas")
    return kinds


def filenames(kinds) -> list[str]:
    """The files that ``kinds`` write, in the order given."""
    return [OUTPUTS[kind].filename for kind in kinds]


def check_request(ct: str, kinds) -> None:
    """Refuse ``--dicom-out`` before anything is computed: its objects refer to the slices of a
    DICOM series, so the input must be one; and it needs pydicom and highdicom."""
    if not kinds:
        return
    if not Path(ct).is_dir():
        raise URSAMError(f"--dicom-out needs a DICOM series as input (the folder of its files): DICOM objects refer to "
                         f"the slices they were made from, and {ct} is not a DICOM series. Leave out --dicom-out, or "
                         "segment the CT's DICOM series.")
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError as error:
        raise URSAMError(f"--dicom-out needs pydicom and highdicom ({error}): pip install highdicom.") from None


# ---------------------------------------------------------------------------------------
# The source series.

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

    from . import io

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


# ---------------------------------------------------------------------------------------
# Writing.

@dataclass(frozen=True)
class OrganTerms:
    """How one label of the run is named, coded and coloured in DICOM."""

    label: int
    key: str
    """The class name of the run (e.g. ``kidney_right``)."""
    name: str
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    modifier: tuple[str, str, str] | None
    color: tuple[float, float, float]
    """RGB in [0, 1]."""

    @classmethod
    def of(cls, label: int, key: str) -> "OrganTerms":
        """The catalogue organ of class name ``key`` (any alias), or a generic anatomical structure."""
        from .catalogue import match_name

        organ = match_name(key)
        if organ is None:
            return cls(label, key, key, UNKNOWN_CATEGORY, UNKNOWN_TYPE, None, UNKNOWN_COLOUR)

        def triple(code):
            return (code.scheme, code.value, code.meaning) if code else None

        return cls(label, key, organ.name, triple(organ.category), triple(organ.type), triple(organ.modifier),
                   organ.color)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(round(255 * c)) for c in self.color)


def write_outputs(folder: Path, kinds, source: DicomSource, maps: dict[str, np.ndarray], organs: dict[int, str],
                  parameters: dict[str, str]) -> list[str]:
    """Write the DICOM objects ``kinds`` into ``folder`` (a staging folder); returns their file names.

    maps: ``rectified`` and ``ensemble`` label maps and the ``uncertainty`` map, each
    ``[frame, row, column]`` in ``source``'s frame order. organs: label value → class name.
    parameters: the run's settings, recorded in the algorithm identification (None: left out).
    """
    import warnings

    from highdicom import UID

    parameters = {key: value for key, value in parameters.items() if value is not None}

    described = [OrganTerms.of(label, name) for label, name in organs.items()]
    tracking = {organ.label: str(UID()) for organ in described}  # one finding per organ across objects
    written = []
    for kind in kinds:
        output = OUTPUTS[kind]
        array = maps[output.source]
        if array.shape != source.shape:
            raise ValueError(f"{output.source} map of shape {array.shape} for a series of {source.shape}")
        identity = {"series_instance_uid": str(UID()), "series_number": output.series_number,
                    "sop_instance_uid": str(UID()), "series_description": f"URSAM {__version__} {output.description}"}
        with warnings.catch_warnings():  # highdicom's doubts about the source's values (e.g. a patient
            warnings.simplefilter("ignore", UserWarning)  # name of one component): copied as they are
            dataset = output.write(source, array, described, identity, {**parameters, "output": output.source},
                                   tracking)
        dataset.save_as(folder / output.filename, enforce_file_format=True)
        written.append(output.filename)
    return written


def _algorithm(parameters: dict[str, str]):
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    return AlgorithmIdentificationSequence(name="URSAM UR-SAM", family=codes.cid7162.ArtificialIntelligence,
                                           version=__version__, source=MANUFACTURER,
                                           parameters={k: str(v) for k, v in parameters.items()})


def _equipment() -> dict:
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": "URSAM", "software_versions": __version__,
            "device_serial_number": __version__}


def _contribution(parameters: dict[str, str]):
    """URSAM as the Contributing Equipment (SOP Common module) that processed the source: the
    algorithm identification every object can carry, the Parametric Map having no other."""
    from highdicom import ContributingEquipment
    from pydicom.sr.codedict import codes

    settings = ", ".join(f"{key} {value}" for key, value in parameters.items())
    return ContributingEquipment(MANUFACTURER, codes.DCM.ProcessingEquipment, manufacturer_model_name="URSAM",
                                 software_versions=__version__, contribution_description=(
                                     f"UR-SAM, uncertainty-rectified Segment Anything ({settings})")[:1024])


def _code(triple):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = triple
    return CodedConcept(value, scheme, meaning)


def _write_segmentation(source: DicomSource, labels: np.ndarray, organs: list[OrganTerms], identity: dict,
                        parameters: dict, tracking: dict[int, str]):
    """A binary DICOM Segmentation: segment ``n`` is ``organs[n - 1]``."""
    import highdicom as hd
    from pydicom.sequence import Sequence

    algorithm = _algorithm(parameters)
    descriptions = []
    segment_of = np.zeros(max([int(labels.max(initial=0))] + [o.label for o in organs]) + 1, np.uint16)
    for number, organ in enumerate(organs, start=1):
        segment_of[organ.label] = number
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=organ.name[:64], segmented_property_category=_code(organ.category),
            segmented_property_type=_code(organ.type), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=tracking[organ.label], tracking_id=organ.key[:64],
            display_color=hd.color.CIELabColor.from_rgb(*organ.rgb))
        if organ.modifier:  # e.g. Right for the right kidney; highdicom has no argument for it
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = \
                Sequence([_code_item(organ.modifier)])
        descriptions.append(description)
    pixels = segment_of[labels]  # label values → segment numbers; labels of no organ → 0
    segmentation = hd.seg.Segmentation(
        source_images=source.datasets, pixel_array=pixels.astype(np.uint8 if len(organs) < 256 else np.uint16),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        instance_number=1, content_label="URSAM", content_description=identity["series_description"][:64],
        omit_empty_frames=bool(pixels.any()), contributing_equipment=[_contribution(parameters)], **_equipment(),
        **identity)
    return segmentation


def _write_parametric_map(source: DicomSource, values: np.ndarray, organs: list[OrganTerms], identity: dict,
                          parameters: dict, tracking: dict[int, str]):
    """A float32 Parametric Map of the uncertainty, in nats."""
    import highdicom as hd

    from .uncertainty import MAX_ENTROPY

    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ENTROPY", lut_explanation="UR-SAM predictive entropy of the prompt ensemble, in nats",
        unit=_code(NAT), value_range=(0.0, MAX_ENTROPY), slope=1.0, intercept=0.0)
    window = hd.content.VOILUTTransformation(window_center=MAX_ENTROPY / 2, window_width=MAX_ENTROPY,
                                             window_explanation="0 to ln 2 nats", voi_lut_function="LINEAR_EXACT")
    parametric = hd.pm.ParametricMap(
        source_images=source.datasets, pixel_array=np.ascontiguousarray(values, dtype=np.float32),
        instance_number=1, contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[window], content_label="URSAM",
        content_description=identity["series_description"][:64], contributing_equipment=[_contribution(parameters)],
        **_equipment(), **identity)
    parametric.Laterality = ""  # Type 2C, which dciodvfy wants present: unknown (organs of either side)
    return parametric


# ---------------------------------------------------------------------------------------
# RT Structure Set (written with pydicom: highdicom has no writer for it).

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
"""The SOP class that RT Referenced Study Sequence items conventionally name (Detached Study Management)."""
_PATIENT_STUDY = (("PatientName", 2), ("PatientID", 2), ("PatientBirthDate", 2), ("PatientSex", 2),
                  ("IssuerOfPatientID", 3), ("PatientAge", 3), ("PatientWeight", 3), ("PatientSize", 3),
                  ("StudyInstanceUID", 1), ("StudyDate", 2), ("StudyTime", 2), ("ReferringPhysicianName", 2),
                  ("StudyID", 2), ("AccessionNumber", 2), ("StudyDescription", 3))
"""The Patient and General Study attributes copied from the source, with their type (2: empty if absent)."""


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The closed contours of a 2-D mask ``[row, column]`` as ``(n, 2)`` arrays of (row, column)
    pixel coordinates, without a repeated closing point. They run half-way between inside and
    outside pixel centres; inner contours bound holes (combine them even-odd)."""
    from skimage.measure import find_contours

    padded = np.pad(mask.astype(np.uint8), 1)  # contours of organs at the border close
    contours = []
    for contour in find_contours(padded, 0.5):
        corners = _corners(contour[:-1] - 1.0)  # find_contours repeats the first point at the end
        if len(corners) >= 3:
            contours.append(corners)
    return contours


def _corners(points: np.ndarray) -> np.ndarray:
    """A closed polygon's vertices without those on a straight line between their neighbours (the
    contour's points lie on a half-pixel lattice, so the cross products are exact)."""
    before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return points[turns != 0]


def _points(dataset, contour: np.ndarray) -> list[float]:
    """(row, column) pixel coordinates of a source slice → flat x, y, z in mm on its plane."""
    position = np.array(dataset.ImagePositionPatient, dtype=float)
    orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    points = (position + np.outer(contour[:, 1] * column_spacing, orientation[:3])
              + np.outer(contour[:, 0] * row_spacing, orientation[3:]))
    return [round(float(v), 4) for v in points.ravel()]


def _item(**attributes):
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _write_rtstruct(source: DicomSource, labels: np.ndarray, organs: list[OrganTerms], identity: dict,
                    parameters: dict, tracking: dict[int, str]):
    """An RT Structure Set: ROI ``n`` is ``organs[n - 1]``, one CLOSED_PLANAR contour per outline
    and source slice."""
    import datetime

    from highdicom import UID
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    first = source.datasets[0]
    now = datetime.datetime.now()
    images = [_item(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)
              for d in source.datasets]
    dataset = _item()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    dataset.file_meta.MediaStorageSOPInstanceUID = identity["sop_instance_uid"]
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if "SpecificCharacterSet" in first:
        dataset.SpecificCharacterSet = first.SpecificCharacterSet
    dataset.SOPClassUID, dataset.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, identity["sop_instance_uid"]
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword, kind in _PATIENT_STUDY:
        if keyword in first and (first[keyword].value not in (None, "") or kind < 3):
            setattr(dataset, keyword, first[keyword].value)
        elif kind == 2:
            setattr(dataset, keyword, "")
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID, dataset.SeriesNumber = identity["series_instance_uid"], identity["series_number"]
    dataset.SeriesDescription = identity["series_description"]
    dataset.SeriesDate, dataset.SeriesTime = dataset.InstanceCreationDate, dataset.InstanceCreationTime
    dataset.OperatorsName = ""
    dataset.Manufacturer, dataset.ManufacturerModelName = MANUFACTURER, "URSAM"
    dataset.SoftwareVersions, dataset.DeviceSerialNumber = __version__, __version__
    dataset.InstanceNumber = 1
    dataset.StructureSetLabel = "URSAM"
    dataset.StructureSetName = "URSAM organs"
    dataset.StructureSetDate, dataset.StructureSetTime = dataset.InstanceCreationDate, dataset.InstanceCreationTime
    series = _item(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=images)
    study = _item(ReferencedSOPClassUID=STUDY_COMPONENT_SOP_CLASS, ReferencedSOPInstanceUID=first.StudyInstanceUID,
                  RTReferencedSeriesSequence=[series])
    dataset.FrameOfReferenceUID = first.FrameOfReferenceUID
    dataset.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    dataset.ReferencedFrameOfReferenceSequence = [_item(FrameOfReferenceUID=first.FrameOfReferenceUID,
                                                        RTReferencedStudySequence=[study])]
    algorithm = _algorithm(parameters)
    description = f"URSAM {__version__} UR-SAM ({', '.join(f'{k} {v}' for k, v in parameters.items())})"[:64]
    rois, contours, observations = [], [], []
    for number, organ in enumerate(organs, start=1):
        rois.append(_item(ROINumber=number, ReferencedFrameOfReferenceUID=first.FrameOfReferenceUID,
                          ROIName=organ.name[:64], ROIGenerationAlgorithm="AUTOMATIC",
                          ROIGenerationDescription=description, ROIDerivationAlgorithmIdentificationSequence=algorithm))
        outlines = []
        for frame, slice_dataset in enumerate(source.datasets):
            mask = labels[frame] == organ.label
            if not mask.any():
                continue
            for contour in slice_contours(mask):
                outlines.append(_item(
                    ContourImageSequence=[_item(ReferencedSOPClassUID=slice_dataset.SOPClassUID,
                                                ReferencedSOPInstanceUID=slice_dataset.SOPInstanceUID)],
                    ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(contour),
                    ContourNumber=len(outlines) + 1, ContourData=_points(slice_dataset, contour)))
        roi_contour = _item(ReferencedROINumber=number, ROIDisplayColor=list(organ.rgb))
        if outlines:
            roi_contour.ContourSequence = outlines
        contours.append(roi_contour)
        observations.append(_item(ObservationNumber=number, ReferencedROINumber=number,
                                  ROIObservationLabel=organ.key[:16], RTROIInterpretedType="ORGAN", ROIInterpreter="",
                                  RTROIIdentificationCodeSequence=[_code_item(organ.type)]))
    dataset.StructureSetROISequence = rois
    dataset.ROIContourSequence = contours
    dataset.RTROIObservationsSequence = observations
    dataset.ApprovalStatus = "UNAPPROVED"
    dataset.ContributingEquipmentSequence = [_contribution(parameters)]
    return dataset


def _code_item(triple):
    scheme, value, meaning = triple
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


OUTPUTS: dict[str, DicomOutput] = {
    "seg": DicomOutput("seg.dcm", "rectified", "organs (rectified)", 901, _write_segmentation),
    "seg-ensemble": DicomOutput("seg_ensemble.dcm", "ensemble", "organs (ensemble)", 902, _write_segmentation),
    "rtstruct": DicomOutput("rtstruct.dcm", "rectified", "organ contours (rectified)", 903, _write_rtstruct),
    "uncertainty": DicomOutput("uncertainty.dcm", "uncertainty", "uncertainty (entropy, nats)", 904,
                               _write_parametric_map),
}
"""``--dicom-out`` kinds → what they write. Series numbers are fixed so that a viewer lists them apart."""
