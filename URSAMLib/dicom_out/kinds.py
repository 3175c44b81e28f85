"""The kinds of DICOM object ``--dicom-out`` writes (:data:`OUTPUTS`), and writing them."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import __version__
from ..errors import URSAMError
from .coding import organ_look
from .rtstruct import write_rtstruct
from .seg import write_parametric_map, write_segmentation
from .source import DicomSource

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


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




def write_outputs(folder: Path, kinds, source: DicomSource, maps: dict[str, np.ndarray], organs: dict[int, str],
                  parameters: dict[str, str]) -> list[str]:
    """Write the DICOM objects ``kinds`` into ``folder`` (a staging folder); returns their file names.

    maps: ``rectified`` and ``ensemble`` label maps and the ``uncertainty`` map, each
    ``[frame, row, column]`` in ``source``'s frame order. organs: label value → class name.
    parameters: the run's settings, recorded in the algorithm identification (None: left out).
    """
    from highdicom import UID

    parameters = {key: value for key, value in parameters.items() if value is not None}

    described = [organ_look(label, name) for label, name in organs.items()]
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


OUTPUTS: dict[str, DicomOutput] = {
    "seg": DicomOutput("seg.dcm", "rectified", "organs (rectified)", 901, write_segmentation),
    "seg-ensemble": DicomOutput("seg_ensemble.dcm", "ensemble", "organs (ensemble)", 902, write_segmentation),
    "rtstruct": DicomOutput("rtstruct.dcm", "rectified", "organ contours (rectified)", 903, write_rtstruct),
    "uncertainty": DicomOutput("uncertainty.dcm", "uncertainty", "uncertainty (entropy, nats)", 904,
                               write_parametric_map),
}
"""``--dicom-out`` kinds → what they write. Series numbers are fixed so that a viewer lists them apart."""
