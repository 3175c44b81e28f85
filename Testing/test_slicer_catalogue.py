"""URSAMSlicerLib.catalogue and Resources/organs.json: names, colours and SNOMED CT terminology."""
from __future__ import annotations

import gzip
import json

import pytest

from conftest import ROOT
from slicer_scene import require
from URSAMSlicerLib import catalogue

pytestmark = pytest.mark.slicer

FLARE22 = ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
           "adrenal_gland_right", "adrenal_gland_left", "esophagus", "duodenum", "aorta", "inferior_vena_cava")

# Transcribed by hand from Slicer/Slicer (commit 583e9b37d5) Modules/Loadable/Terminologies/Resources/
# SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json (DICOM-Master.json for the IVC, the parotid
# gland and the brain stem): organ → (type code, type meaning, modifier code). The tests at the end check
# the catalogue against those files themselves, read by Slicer's terminologies logic.
SNOMED = {
    "spleen": ("78961009", "Spleen", None), "kidney_right": ("64033007", "Kidney", "24028007"),
    "kidney_left": ("64033007", "Kidney", "7771000"), "gallbladder": ("28231008", "Gallbladder", None),
    "liver": ("10200004", "Liver", None), "stomach": ("69695003", "Stomach", None),
    "pancreas": ("15776009", "Pancreas", None), "adrenal_gland_right": ("23451007", "Adrenal gland", "24028007"),
    "adrenal_gland_left": ("23451007", "Adrenal gland", "7771000"), "esophagus": ("32849002", "Esophagus", None),
    "duodenum": ("38848004", "Duodenum", None), "aorta": ("15825003", "Aorta", None),
    "inferior_vena_cava": ("64131007", "Inferior vena cava", None), "brainstem": ("119238007", "Brain stem", None),
    "spinal_cord": ("2748008", "Spinal cord", None), "parotid_right": ("45289007", "Parotid gland", "24028007"),
    "parotid_left": ("45289007", "Parotid gland", "7771000"), "larynx": ("4596009", "Larynx", None),
    "mandible": ("91609006", "Mandible", None),
}


def test_the_catalogue_holds_the_13_flare22_organs_and_the_7_head_and_neck_oars():
    organs = catalogue.organs()
    assert set(organs) == set(SNOMED)
    assert set(catalogue.organ_sets()["abdomen"].organs) == set(FLARE22)
    assert len(catalogue.organ_sets()["head_neck"].organs) == 7
    for organ_set in catalogue.organ_sets().values():
        assert set(organ_set.organs) <= set(organs)


@pytest.mark.parametrize("key", sorted(SNOMED))
def test_terminology_codes_are_the_ones_slicer_lists(key):
    organ = catalogue.organs()[key]
    type_code, meaning, modifier = SNOMED[key]
    assert organ.category == catalogue.Code("SCT", "123037004", "Anatomical Structure")
    assert organ.type == catalogue.Code("SCT", type_code, meaning)
    if modifier is None:
        assert organ.modifier is None
    else:
        assert organ.modifier == catalogue.Code("SCT", modifier, {"24028007": "Right", "7771000": "Left"}[modifier])
        assert organ.name.split()[0] == organ.modifier.meaning  # "Right kidney" carries the Right modifier
    assert organ.context.startswith("Segmentation category and type - ")
    assert all(0.0 <= c <= 1.0 for c in organ.color) and len(organ.color) == 3


def test_class_names_of_the_shared_data_map_onto_the_catalogue(abdomen, head_neck):
    abdomen_classes = json.loads((abdomen / "classes.json").read_text())
    for key in FLARE22:
        assert key in abdomen_classes.values()
        assert catalogue.match_name(key).key == key
    expected = {"Brainstem": "brainstem", "SpinalCord": "spinal_cord", "RightParotid": "parotid_right",
                "LeftParotid": "parotid_left", "Esophagus": "esophagus", "Larynx": "larynx", "Mandible": "mandible"}
    head_neck_classes = json.loads((head_neck / "classes.json").read_text())
    assert set(head_neck_classes.values()) == set(expected)
    for name, key in expected.items():
        assert catalogue.match_name(name).key == key
    # Slicer's and FLARE22's spellings too; unknown names stay unknown
    assert catalogue.match_name("Right Kidney").key == "kidney_right"
    assert catalogue.match_name("left adrenal gland").key == "adrenal_gland_left"
    assert catalogue.match_name("Inferior Vena Cava").key == "inferior_vena_cava"
    assert catalogue.match_name("heart") is None and catalogue.match_name("") is None


def test_aliases_never_name_two_organs():
    seen = {}
    for organ in catalogue.organs().values():
        for alias in (organ.key, organ.name, *organ.aliases):
            assert seen.setdefault(catalogue.normalise(alias), organ.key) == organ.key, alias


def test_terminology_entries_are_read_back_by_slicers_own_parser():
    slicer = require("slicer")
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    for organ in catalogue.organs().values():
        text = catalogue.terminology_entry(organ)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(text, entry)
        assert entry.GetTerminologyContextName() == organ.context
        assert entry.GetCategoryObject().GetCodeValue() == "123037004"
        assert entry.GetTypeObject().GetCodeValue() == organ.type.value
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        modifier = entry.GetTypeModifierObject().GetCodeValue() or None
        assert modifier == (organ.modifier.value if organ.modifier else None)
        assert logic.SerializeTerminologyEntry(entry) == text  # the exact string Slicer itself writes
        assert catalogue.match_terminology(text) is organ


def test_a_terminology_of_another_structure_matches_nothing():
    heart = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
             "~SCT^80891009^Heart~^^~Anatomic codes - DICOM master list~^^~^^")
    assert catalogue.match_terminology(heart) is None
    assert catalogue.match_terminology("garbage") is None


# ---------------------------------------------------------------------------------------
# The codes, checked against Slicer's own lists with Slicer's own terminologies logic

TERMINOLOGIES = ROOT / "Testing" / "data" / "slicer-terminologies"


@pytest.fixture(scope="module")
def terminologies(tmp_path_factory):
    """slicer-core's terminologies logic with Slicer's segmentation lists loaded; ``logic.names``:
    the contexts loaded."""
    slicer = require("slicer")
    folder = tmp_path_factory.mktemp("terminologies")
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    logic.names = []
    for packed in sorted(TERMINOLOGIES.glob("*.json.gz")):
        path = folder / packed.name.removesuffix(".gz")
        path.write_bytes(gzip.decompress(packed.read_bytes()))
        logic.names.append(logic.LoadTerminologyFromFile(str(path)))
    assert len(logic.names) == 2 and all(logic.names)
    return logic


def listed_codes(logic, context: str) -> dict:
    """``{(category code, type code): {modifier codes}}`` of one loaded context, codes as
    ``(scheme, value, meaning)``, walked through the logic's own accessors."""
    slicer = require("slicer")

    def code(term):
        return (term.GetCodingSchemeDesignator(), term.GetCodeValue(), term.GetCodeMeaning())

    codes = {}
    for c in range(logic.GetNumberOfCategoriesInTerminology(context)):
        category = slicer.vtkSlicerTerminologyCategory()
        assert logic.GetNthCategoryInTerminology(context, c, category)
        for t in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
            kind = slicer.vtkSlicerTerminologyType()
            assert logic.GetNthTypeInTerminologyCategory(context, category, t, kind)
            modifiers = set()
            for m in range(logic.GetNumberOfTypeModifiersInTerminologyType(context, category, kind)):
                modifier = slicer.vtkSlicerTerminologyType()
                assert logic.GetNthTypeModifierInTerminologyType(context, category, kind, m, modifier)
                modifiers.add(code(modifier))
            codes[(code(category), code(kind))] = modifiers
    return codes


@pytest.mark.parametrize("key", sorted(SNOMED))
def test_every_code_exists_in_the_slicer_list_the_organ_names(terminologies, key):
    organ = catalogue.organs()[key]
    assert organ.context in terminologies.names, f"{organ.context} is not one of Slicer's lists"
    codes = listed_codes(terminologies, organ.context)
    entry = (tuple(vars(organ.category).values()), tuple(vars(organ.type).values()))
    assert entry in codes, f"{organ.name}: {organ.type} is not in {organ.context}"
    if organ.modifier is not None:
        assert tuple(vars(organ.modifier).values()) in codes[entry]


def test_the_check_can_fail_and_slicer_reads_our_serialized_entries(terminologies):
    slicer = require("slicer")
    general = "Segmentation category and type - 3D Slicer General Anatomy list"
    codes = listed_codes(terminologies, general)
    anatomical = ("SCT", "123037004", "Anatomical Structure")
    assert (anatomical, ("SCT", "10200004", "Liver")) in codes
    assert (anatomical, ("SCT", "15926001", "Brainstem")) not in codes  # a code no Slicer list holds
    for organ in catalogue.organs().values():
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(catalogue.terminology_entry(organ), entry)
        assert entry.GetTerminologyContextName() == organ.context
        assert entry.GetTypeObject().GetCodeValue() == organ.type.value


def test_one_look_per_label_for_slicer_segments_and_dicom_objects():
    from URSAMLib import dicom_out

    kidney = catalogue.match_name("kidney_right")
    look = catalogue.OrganLook.of(3, "Kidney_Right", (0.1, 0.2, 0.3))  # any alias: the catalogue's look
    assert (look.label, look.key, look.name, look.color, look.organ) == (3, kidney.key, kidney.name, kidney.color,
                                                                         kidney)
    assert look.terminology == catalogue.terminology_entry(kidney)
    assert look.rgb == tuple(int(round(255 * c)) for c in kidney.color)
    lesion = catalogue.OrganLook.of(9, "my lesion", (0.1, 0.2, 0.3))  # outside the catalogue: its own
    assert (lesion.key, lesion.name, lesion.color, lesion.organ, lesion.terminology) == \
        ("my lesion", "my lesion", (0.1, 0.2, 0.3), None, "")
    # DICOM: the run's class name is the key (tracking id); codes from the catalogue or generic ones
    in_dicom = dicom_out.organ_look(3, "kidney_right")
    assert in_dicom.key == "kidney_right" and in_dicom.name == kidney.name
    category, kind, modifier = dicom_out.organ_codes(in_dicom)
    assert kind == (kidney.type.scheme, kidney.type.value, kidney.type.meaning) and modifier[2] == "Right"
    assert dicom_out.organ_codes(dicom_out.organ_look(9, "my lesion")) == \
        (dicom_out.UNKNOWN_CATEGORY, dicom_out.UNKNOWN_TYPE, None)
    assert dicom_out.organ_look(9, "my lesion").color == dicom_out.UNKNOWN_COLOUR
