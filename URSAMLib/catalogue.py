"""The organ catalogue: display names, colours and standard terminology (``Resources/organs.json``).

The catalogue is data; this module only reads it and answers two questions: which
catalogue organ a class or segment name means (:func:`match_name`, :func:`match_terminology`),
and how Slicer spells an organ's terminology (:func:`terminology_entry`). The 3D Slicer module
names its segments from it, and the DICOM export its segments and ROIs.
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
