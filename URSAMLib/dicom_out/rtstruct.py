"""RT Structure Set (written with pydicom: highdicom has no writer for it)."""
from __future__ import annotations

import datetime

import numpy as np

from .. import __version__
from ..catalogue import OrganLook
from .coding import algorithm_identification, code_item, contribution, dicom_item, organ_codes
from .source import MANUFACTURER, DicomSource


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


def write_rtstruct(source: DicomSource, labels: np.ndarray, organs: list[OrganLook], identity: dict,
                    parameters: dict, tracking: dict[int, str]):
    """An RT Structure Set: ROI ``n`` is ``organs[n - 1]``, one CLOSED_PLANAR contour per outline
    and source slice."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    first = source.datasets[0]
    now = datetime.datetime.now()
    images = [dicom_item(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)
              for d in source.datasets]
    dataset = dicom_item()
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
    series = dicom_item(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=images)
    study = dicom_item(ReferencedSOPClassUID=STUDY_COMPONENT_SOP_CLASS, ReferencedSOPInstanceUID=first.StudyInstanceUID,
                  RTReferencedSeriesSequence=[series])
    dataset.FrameOfReferenceUID = first.FrameOfReferenceUID
    dataset.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    dataset.ReferencedFrameOfReferenceSequence = [dicom_item(FrameOfReferenceUID=first.FrameOfReferenceUID,
                                                        RTReferencedStudySequence=[study])]
    algorithm = algorithm_identification(parameters)
    description = f"URSAM {__version__} UR-SAM ({', '.join(f'{k} {v}' for k, v in parameters.items())})"[:64]
    rois, contours, observations = [], [], []
    for number, organ in enumerate(organs, start=1):
        rois.append(dicom_item(ROINumber=number, ReferencedFrameOfReferenceUID=first.FrameOfReferenceUID,
                          ROIName=organ.name[:64], ROIGenerationAlgorithm="AUTOMATIC",
                          ROIGenerationDescription=description, ROIDerivationAlgorithmIdentificationSequence=algorithm))
        outlines = []
        for frame, slice_dataset in enumerate(source.datasets):
            mask = labels[frame] == organ.label
            if not mask.any():
                continue
            for contour in slice_contours(mask):
                outlines.append(dicom_item(
                    ContourImageSequence=[dicom_item(ReferencedSOPClassUID=slice_dataset.SOPClassUID,
                                                ReferencedSOPInstanceUID=slice_dataset.SOPInstanceUID)],
                    ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(contour),
                    ContourNumber=len(outlines) + 1, ContourData=_points(slice_dataset, contour)))
        roi_contour = dicom_item(ReferencedROINumber=number, ROIDisplayColor=list(organ.rgb))
        if outlines:
            roi_contour.ContourSequence = outlines
        contours.append(roi_contour)
        observations.append(dicom_item(ObservationNumber=number, ReferencedROINumber=number,
                                  ROIObservationLabel=organ.key[:16], RTROIInterpretedType="ORGAN", ROIInterpreter="",
                                  RTROIIdentificationCodeSequence=[code_item(organ_codes(organ)[1])]))
    dataset.StructureSetROISequence = rois
    dataset.ROIContourSequence = contours
    dataset.RTROIObservationsSequence = observations
    dataset.ApprovalStatus = "UNAPPROVED"
    dataset.ContributingEquipmentSequence = [contribution(parameters)]
    return dataset
