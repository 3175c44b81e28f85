"""The built-in templates and the shipped localizer (URSAMLib/builtin.py): pinned, small, documented,
and segmenting a CT that no one labelled with nothing but ``--region``."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import ROOT, damaged_resources, hn_pair

from URSAMLib import builtin, io
from URSAMLib.cli import main
from URSAMLib.errors import URSAMError
from URSAMLib.localize import LOCALIZERS, box_iou
from URSAMLib.metrics import dice
from URSAMLib.prompts import Box3D
from URSAMLib.template import Template
from URSAMLib.weights import sha256_of

RESOURCES = ROOT / "Resources"
CATALOGUE = json.loads((RESOURCES / "builtin.json").read_text())


def test_every_shipped_file_is_pinned_small_and_its_provenance_written():
    shipped = {p.relative_to(RESOURCES).as_posix() for p in (RESOURCES / "templates").rglob("*") if p.is_file()}
    shipped.add(CATALOGUE["localizer_weights"])
    assert set(CATALOGUE["sha256"]) == shipped
    for relative, digest in CATALOGUE["sha256"].items():
        assert sha256_of(RESOURCES / relative) == digest, relative
    sizes = [p.stat().st_size for p in RESOURCES.rglob("*") if p.is_file()]
    assert max(sizes) < 2_000_000 and sum(sizes) <= 12_000_000
    provenance = (RESOURCES / "PROVENANCE.md").read_text()
    assert "scripts/build_builtin_templates.py" in provenance and "train-localizer" in provenance
    for entry in CATALOGUE["templates"].values():
        for support in json.loads((RESOURCES / entry["folder"] / "template.json").read_text())["supports"]:
            patient = re.search(r"pt_\d+|abdomen-ts/ct\.nii\.gz", support["source"]).group()
            assert re.search(rf"{re.escape(patient)}\b", provenance), support["source"]


@pytest.mark.parametrize("region", builtin.region_names())
def test_each_region_template_holds_its_organs_in_every_support(region):
    entry = builtin.region_template(region)
    template = Template.load(entry.folder)
    assert list(template.organs) == list(entry.organs) and len(template.supports) == entry.supports
    assert entry.localizer in LOCALIZERS
    for support in template.supports:
        labels = io.axial_array(support.read_labels(), np.uint8)[0]
        for organ, value in template.organs.items():
            assert (labels == value).any(), (support.name, organ)


def test_the_head_and_neck_supports_are_never_validation_patients():
    template = Template.load(builtin.region_template("head-and-neck").folder)
    validation = {p.name.split("_ct")[0] for p in (ROOT.parent / "shared" / "data" / "hn-openkbp" / "validation")
                  .glob("pt_*_ct.nii.gz")}
    assert not {s.name.split("_ct")[0] for s in template.supports} & validation


def test_the_head_and_neck_rectification_per_organ_is_the_one_measured_on_training_patients():
    import importlib.util

    spec = importlib.util.spec_from_file_location("measure_prior_weights",
                                                  ROOT / "scripts" / "measure_prior_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.read_rows(ROOT / "docs" / "results" / "prior-weights" / "train")
    measured = {r["patient"] for r in rows}
    template = Template.load(builtin.region_template("head-and-neck").folder)
    supports = {s.name.split("_ct")[0] for t in (template, template.blanked) for s in t.supports}
    assert len(measured) >= 12 and not measured & supports
    assert template.rectification == script.choose_rectification(rows) != {}


def test_ursam_templates_lists_each_regions_organs_and_its_rectification_per_organ(capsys):
    assert main(["templates"]) == 0
    listing = capsys.readouterr().out
    head_and_neck = listing[listing.index("head-and-neck:"):listing.index("abdomen:")]
    chosen = Template.load(builtin.region_template("head-and-neck").folder).rectification
    assert chosen and f"unc-fnc for {', '.join(chosen)}; ursam for the others" in head_and_neck
    assert "rectification (--method per-organ): ursam for all" in listing[listing.index("abdomen:"):]


def test_an_unknown_region_is_one_line_naming_the_known_ones(abdomen, tmp_path, capsys):
    code = main(["segment", str(abdomen / "ct_small.nii.gz"), "-o", str(tmp_path / "out"), "--region", "thorax"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Unknown region 'thorax'" in err
    assert all(name in err for name in builtin.region_names())
    assert not (tmp_path / "out").exists()


def test_a_region_and_a_template_together_are_refused(abdomen, tmp_path, capsys):
    code = main(["segment", str(abdomen / "ct_small.nii.gz"), "-o", str(tmp_path / "out"), "--region", "abdomen",
                 "--template", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "exactly one prompt source" in err and "--region" in err


def test_a_damaged_packaged_file_is_one_sentence_and_nothing_is_written(abdomen, tmp_path, monkeypatch, capsys):
    support = damaged_resources(monkeypatch, tmp_path, "templates/abdomen/supports/*_labels.nii.gz")
    with pytest.raises(URSAMError, match="fails its SHA-256 check.*reinstall URSAM"):
        builtin.region_template("abdomen")
    code = main(["segment", str(abdomen / "ct_small.nii.gz"), "-o", str(tmp_path / "out"), "--region", "abdomen",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and support.name in err
    assert not (tmp_path / "out").exists()


def _mean_iou(found, labels, template) -> float:
    ious = [box_iou(found[o].box, Box3D.from_mask(labels == v)) if found[o].box else 0.0
            for o, v in template.organs.items() if (labels == v).any()]
    return float(np.mean(ious))


@pytest.mark.parametrize("patient, kind", [(201, "complete"), (202, "blanked")])
def test_the_shipped_defaults_localize_validation_patients(head_neck, patient, kind):
    """The supports' atlas on a complete scan; on a blanked one the blanked supports' atlas for the
    organs they hold, and the shipped MedLAM for the esophagus, which they do not."""
    entry = builtin.region_template("head-and-neck")
    template = Template.load(entry.folder)
    ct_path, labels_path = hn_pair(head_neck, patient, "validation")
    ct = io.read_ct(ct_path)
    labels = io.axial_array(io.read_label_map(labels_path, ct), np.uint16)[0]
    found = LOCALIZERS[entry.localizer](ct, template, device="cpu")
    chosen = {organ: loc.localizer for organ, loc in found.items()}
    by_atlas = set(template.blanked.organs if kind == "blanked" else template.organs)
    assert chosen == {o: "atlas" if o in by_atlas else "medlam" for o in template.organs}
    # Measured (scripts/measure_region_localizers.py): pt_202 0.14 by the shipped MedLAM alone, 0.03
    # by registration to complete supports; misplaced boxes overlap the organs hardly at all.
    assert _mean_iou(found, labels, template) > 0.4
    # the multi-atlas vote itself (scripts/measure_end_to_end.py): pt_201 0.52, pt_202 0.50
    votes = [dice(found[o].atlas.mask(labels.shape), labels == template.organs[o]) for o in by_atlas
             if (labels == template.organs[o]).any()]
    assert float(np.mean(votes)) > 0.45
