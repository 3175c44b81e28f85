"""The labelled CTs of an evaluation: their class map, and reading one (finding them:
:func:`URSAMLib.cases.find_labelled_cases`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import io
from ..cases import Case
from ..errors import URSAMError
from ..organs import select_by_name


def find_classes(inputs: list[str], given: str | None) -> Path:
    """``--classes``, or a classes.json / CLASSES.json in the first input's folder or its parent."""
    if given:
        return Path(given)
    first = Path(inputs[0])
    folder = first if first.is_dir() else first.parent
    for place in (folder, folder.parent):
        for name in ("classes.json", "CLASSES.json"):
            if (place / name).is_file():
                return place / name
    raise URSAMError(f"No classes.json in {folder} or its parent; give the class map with --classes.")


@dataclass
class LoadedCase:
    """A case read into URSAM's axial arrays ``[z, y, x]``."""

    case: Case
    image: object
    """The CT as a SimpleITK image (for localization)."""
    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    """``(z, y, x)`` mm."""
    organs: dict[int, str]
    """Evaluated organs present in the reference: label value → name."""
    absent: list[str]


def load_case(case: Case, classes: dict[int, str], organs: tuple[str, ...]) -> LoadedCase:
    image = io.read_ct(case.ct)
    hu, frame = io.axial_array(image)
    labels, _ = io.axial_array(io.read_label_map(case.reference, image), np.uint16)
    wanted = select(classes, organs)
    present = set(np.unique(labels).tolist())
    chosen = {v: n for v, n in wanted.items() if v in present}
    absent = [n for v, n in wanted.items() if v not in present]
    return LoadedCase(case, image, hu, labels, frame.spacing, chosen, absent)


def select(classes: dict[int, str], organs: tuple[str, ...]) -> dict[int, str]:
    """The class-map entries named by ``organs`` (all when empty), in ``organs``' order."""
    return select_by_name(classes, organs) if organs else dict(classes)
