"""The labelled CTs of an evaluation: finding them (CT, label map, class map) and reading one."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import io
from ..cases import Case
from ..errors import URSAMError
from ..organs import select_by_name


LABEL_SUFFIXES = ("oar", "labels", "label", "seg")


def label_path_for(ct: Path) -> Path | None:
    """The reference label map beside a CT, by name: the ``ct`` token of its file name replaced by
    ``oar``, ``labels``, ``label`` or ``seg`` (``pt_1_ct.nii.gz`` → ``pt_1_oar.nii.gz``,
    ``ct_small.nii.gz`` → ``labels_small.nii.gz``); None when there is none."""
    stem, dot, extension = ct.name.partition(".")
    tokens = stem.split("_")
    for i in reversed(range(len(tokens))):
        if tokens[i].lower() == "ct":
            for suffix in LABEL_SUFFIXES:
                candidate = ct.with_name("_".join(tokens[:i] + [suffix] + tokens[i + 1:]) + dot + extension)
                if candidate.is_file():
                    return candidate
            return None
    return None


def case_name(ct: Path) -> str:
    stem = ct.name.partition(".")[0]
    tokens = [t for t in stem.split("_") if t.lower() != "ct"]
    return "_".join(tokens) or ct.parent.name


def _natural_key(path: Path):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_cases(inputs: list[str], labels: list[str] | None = None) -> list[Case]:
    """Cases from CT files (with ``labels`` in the same order, or found by name) and folders
    (every CT file in them whose label map is found by name), in natural order."""
    if labels and len(labels) != len(inputs):
        raise URSAMError(f"Give one label map per CT ({len(inputs)} CTs, {len(labels)} label maps).")
    cases = []
    for k, given in enumerate(inputs):
        path = Path(given)
        if path.is_dir():
            if labels:
                raise URSAMError(f"{path} is a folder; --labels goes with CT files, not folders.")
            found = [(ct, label_path_for(ct)) for ct in sorted(path.iterdir(), key=_natural_key)
                     if ct.is_file() and (label_path_for(ct) is not None)]
            if not found:
                raise URSAMError(f"{path} holds no CT with a label map beside it (pt_1_ct.nii.gz with "
                                 "pt_1_oar.nii.gz, or ct.nii.gz with labels.nii.gz).")
            cases += [Case(case_name(ct), ct, reference=lab) for ct, lab in found]
        elif path.is_file():
            label = Path(labels[k]) if labels else label_path_for(path)
            if label is None or not label.is_file():
                raise URSAMError(f"No label map for {path}: give it with --labels, or name it like the CT "
                                 "with 'ct' replaced by 'labels' or 'oar'.")
            cases.append(Case(case_name(path), path, reference=label))
        else:
            raise URSAMError(f"{path} does not exist; give CT files or folders of labelled CTs.")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):  # e.g. two folders with ct.nii.gz: qualify by folder
        cases = [replace(c, name=f"{c.ct.parent.name}_{c.name}") for c in cases]
    if len({c.name for c in cases}) != len(cases):
        raise URSAMError("Two cases have the same name; give each CT once.")
    return cases


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
