"""How URSAM and each organ are named and coded in DICOM: organ terms from the catalogue, the
algorithm identification, the contributing equipment, coded concepts."""
from __future__ import annotations

from dataclasses import dataclass

from .. import __version__
from ..catalogue import match_name
from .source import MANUFACTURER, UNKNOWN_CATEGORY, UNKNOWN_COLOUR, UNKNOWN_TYPE


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


def algorithm_identification(parameters: dict[str, str]):
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    return AlgorithmIdentificationSequence(name="URSAM UR-SAM", family=codes.cid7162.ArtificialIntelligence,
                                           version=__version__, source=MANUFACTURER,
                                           parameters={k: str(v) for k, v in parameters.items()})


def equipment() -> dict:
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": "URSAM", "software_versions": __version__,
            "device_serial_number": __version__}


def contribution(parameters: dict[str, str]):
    """URSAM as the Contributing Equipment (SOP Common module) that processed the source: the
    algorithm identification every object can carry, the Parametric Map having no other."""
    from highdicom import ContributingEquipment
    from pydicom.sr.codedict import codes

    settings = ", ".join(f"{key} {value}" for key, value in parameters.items())
    return ContributingEquipment(MANUFACTURER, codes.DCM.ProcessingEquipment, manufacturer_model_name="URSAM",
                                 software_versions=__version__, contribution_description=(
                                     f"UR-SAM, uncertainty-rectified Segment Anything ({settings})")[:1024])


def coded_concept(triple):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = triple
    return CodedConcept(value, scheme, meaning)


def dicom_item(**attributes):
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def code_item(triple):
    scheme, value, meaning = triple
    return dicom_item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)
