"""The organ catalogue: display names, colours and standard terminology (``Resources/organs.json``).

The catalogue is data; this module only reads it and answers three questions: which
catalogue organ a class or segment name means (:func:`match_name`, :func:`match_terminology`),
how Slicer spells an organ's terminology (:func:`terminology_entry`), and how one label of a run
is shown (:class:`OrganLook`). The 3D Slicer module names its segments from it, and the DICOM
export its segments and ROIs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .resources import load_json

ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
"""Slicer's anatomic-region context; URSAM's segments name no region, but Slicer writes the context."""


@dataclass(frozen=True)
class Code:
    """One coded concept: coding scheme designator, code value and code meaning (e.g. SCT, 10200004, Liver)."""

    scheme: str
    value: str
    meaning: str

    def serialized(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


@dataclass(frozen=True)
class Organ:
    """A catalogue organ."""

    key: str
    """The catalogue key, e.g. ``kidney_right``."""
    name: str
    """The segment name shown to the user, e.g. ``Right kidney``."""
    color: tuple[float, float, float]
    """Display colour, RGB in [0, 1]."""
    aliases: tuple[str, ...]
    context: str
    category: Code
    type: Code
    modifier: Code | None


@dataclass(frozen=True)
class OrganSet:
    """A named list of catalogue organs, e.g. the 13 FLARE22 abdominal organs."""

    key: str
    title: str
    organs: tuple[str, ...]


def normalise(name: str) -> str:
    """Lower case without spaces, underscores or hyphens: ``Right Kidney`` and ``right_kidney`` agree."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _code(triple) -> Code | None:
    return Code(*triple) if triple else None


@lru_cache(maxsize=None)
def organs() -> dict[str, Organ]:
    """Every catalogue organ by key, in catalogue order."""
    entries = load_json("organs.json")["organs"]
    return {key: Organ(key=key, name=entry["name"], color=tuple(c / 255.0 for c in entry["color"]),
                       aliases=tuple(entry["aliases"]), context=entry["context"],
                       category=_code(entry["category"]), type=_code(entry["type"]),
                       modifier=_code(entry.get("modifier")))
            for key, entry in entries.items()}


@lru_cache(maxsize=None)
def organ_sets() -> dict[str, OrganSet]:
    """The built-in organ sets by key."""
    return {key: OrganSet(key, entry["title"], tuple(entry["organs"]))
            for key, entry in load_json("organs.json")["organ_sets"].items()}


@lru_cache(maxsize=None)
def _by_alias() -> dict[str, Organ]:
    table: dict[str, Organ] = {}
    for organ in organs().values():
        for alias in (organ.key, organ.name, *organ.aliases):
            table[normalise(alias)] = organ
    return table


def match_name(name: str) -> Organ | None:
    """The catalogue organ a class or segment name stands for, or None."""
    return _by_alias().get(normalise(name))


def match_terminology(entry: str) -> Organ | None:
    """The catalogue organ whose type (and modifier) codes a serialized Slicer terminology entry carries."""
    fields = entry.split("~")
    if len(fields) < 4:
        return None
    type_value = fields[2].split("^")[1] if fields[2].count("^") == 2 else ""
    modifier_value = fields[3].split("^")[1] if fields[3].count("^") == 2 else ""
    for organ in organs().values():
        if organ.type.value == type_value and (organ.modifier.value if organ.modifier else "") == modifier_value:
            return organ
    return None


def terminology_entry(organ: Organ) -> str:
    """The organ's terminology as Slicer serializes it in a segment's ``TerminologyEntry`` tag:
    ``context~category~type~type modifier~anatomic context~region~region modifier``, each code
    written ``scheme^value^meaning`` (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry)."""
    empty = "^^"
    modifier = organ.modifier.serialized() if organ.modifier else empty
    return "~".join([organ.context, organ.category.serialized(), organ.type.serialized(), modifier,
                     ANATOMIC_CONTEXT, empty, empty])


@dataclass(frozen=True)
class OrganLook:
    """How one label of a run is shown, as a Slicer segment or a DICOM segment or ROI: the catalogue
    organ it stands for (name, colour, codes), or for a structure the catalogue lacks its own name
    and a colour of the caller's."""

    label: int
    """The label value of the organ in URSAMLib's label maps."""
    key: str
    """Identifies the organ across runs and objects (a Slicer segment's tag, a DICOM tracking id)."""
    name: str
    color: tuple[float, float, float]
    """RGB in [0, 1]."""
    organ: Organ | None = None
    """The catalogue organ (None: not in the catalogue)."""

    @classmethod
    def of(cls, label: int, name: str, color: tuple[float, float, float], key: str | None = None) -> "OrganLook":
        """The look of class or segment ``name``: its catalogue organ's where there is one, else
        ``name`` and ``color``. key: default the catalogue key, or ``name`` outside the catalogue."""
        organ = match_name(name)
        if organ is None:
            return cls(label, key or name, name, tuple(color))
        return cls.of_organ(organ, label, key)

    @classmethod
    def of_organ(cls, organ: Organ, label: int = 0, key: str | None = None) -> "OrganLook":
        return cls(label, key or organ.key, organ.name, organ.color, organ)

    @property
    def terminology(self) -> str:
        """Serialized Slicer terminology entry ('' outside the catalogue: Slicer's default)."""
        return terminology_entry(self.organ) if self.organ is not None else ""

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(round(255 * c)) for c in self.color)
