"""How URSAM and each organ are named and coded in DICOM: organ terms from the catalogue, the
algorithm identification, the contributing equipment, coded concepts."""
from __future__ import annotations

from .. import __version__
from ..catalogue import OrganLook
from .source import MANUFACTURER, UNKNOWN_CATEGORY, UNKNOWN_COLOUR, UNKNOWN_TYPE


def organ_codes(look: OrganLook) -> tuple[tuple[str, str, str], tuple[str, str, str], tuple[str, str, str] | None]:
    """(category, type, modifier) of an organ as ``(scheme, value, meaning)`` triples: its catalogue
    codes, or a generic anatomical structure outside the catalogue (modifier None where there is none)."""
    if look.organ is None:
        return UNKNOWN_CATEGORY, UNKNOWN_TYPE, None

    def triple(code):
        return (code.scheme, code.value, code.meaning) if code else None

    return triple(look.organ.category), triple(look.organ.type), triple(look.organ.modifier)


def organ_look(label: int, class_name: str) -> OrganLook:
    """How a label of the run appears in DICOM: its catalogue organ, or its class name in the generic
    colour; its key (the tracking id) is the run's class name."""
    return OrganLook.of(label, class_name, UNKNOWN_COLOUR, key=class_name)


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
