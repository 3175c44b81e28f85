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

Modules: :mod:`.source` (the source series), :mod:`.coding` (names and codes), :mod:`.seg` (Segmentation,
Parametric Map), :mod:`.rtstruct`, :mod:`.kinds` (what each ``--dicom-out`` kind writes).
"""
from .coding import organ_codes, organ_look
from .kinds import OUTPUTS, DicomOutput, check_request, filenames, parse_kinds, write_outputs
from .rtstruct import slice_contours
from .source import (CT_IMAGE_STORAGE, MANUFACTURER, NAT, POSITION_TOLERANCE, UNKNOWN_CATEGORY, UNKNOWN_COLOUR,
                     UNKNOWN_TYPE, DicomSource, read_source)

__all__ = ["CT_IMAGE_STORAGE", "MANUFACTURER", "NAT", "OUTPUTS", "POSITION_TOLERANCE", "UNKNOWN_CATEGORY",
           "UNKNOWN_COLOUR", "UNKNOWN_TYPE", "DicomOutput", "DicomSource", "check_request", "filenames", "organ_codes",
           "organ_look", "parse_kinds", "read_source", "slice_contours", "write_outputs"]
