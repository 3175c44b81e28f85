"""`ursam evaluate` (URSAMLib.evaluation): finding cases, the variants of a patient,
scoring from crops, the cache, the report; and one small real run.

The orchestration runs the deterministic stand-in backbone of test_pipeline.py (bright pixels
inside each box), so every number is computable; the metrics themselves are tested by hand in
test_metrics.py.
"""
import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from test_pipeline import BrightInBox

from URSAMLib import evaluation as ev
from URSAMLib.cli import main
from URSAMLib.metrics import HD95_DEFINITION, auroc, dice, hausdorff95
from URSAMLib.pipeline import Settings, segment
from URSAMLib.prompts import OrganPrompt
from URSAMLib.evaluation.tables import CSV_COLUMNS, METHOD_TITLES

SPACING = (1.5, 1.5, 3.0)  # SimpleITK (x, y, z)


class StandIn(BrightInBox):
    precision = "float32"


def write_patient(folder, name, shift=0, seed=0, organs=(1, 2)):
    """A 12 x 40 x 48 CT with two bright box organs (labels 1, 2) and their label map."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(-100, 15, size=(12, 40, 48)).astype(np.int16)
    labels = np.zeros(ct.shape, np.uint8)
    if 1 in organs:
        ct[2:8, 8 + shift:20 + shift, 10:24] = 80
        labels[2:8, 8 + shift:20 + shift, 10:24] = 1
    if 2 in organs:
        ct[4:11, 22:34, 26:40] = 120
        labels[4:11, 22:34, 26:40] = 2
        labels[5, 22:24, 26:30] = 0  # a notch the stand-in fills: a real error to detect
    paths = []
    for array, suffix in ((ct, "ct"), (labels, "oar")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        paths.append(folder / f"{name}_{suffix}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    return paths


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_patient(data, "pt_1", 0, 1)
    write_patient(data, "pt_2", 2, 2)
    write_patient(data, "pt_10", 1, 3, organs=(2,))  # organ 1 absent: not scored
    (tmp_path / "classes.json").write_text(json.dumps({"1": "alpha", "2": "beta"}))  # in the parent folder
    return data


@pytest.fixture
def stand_in(monkeypatch):
    """The backbone every `ursam evaluate` gets; counts how often a model was loaded."""
    loads = []

    def load(*args, **kwargs):
        loads.append(args)
        return StandIn()

    monkeypatch.setattr("URSAMLib.backbones.load_backbone", load)
    return loads


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cases_are_paired_by_name_in_natural_order(dataset, tmp_path):
    cases = ev.find_labelled_cases([str(dataset)])
    assert [c.name for c in cases] == ["pt_1", "pt_2", "pt_10"]
    assert cases[2].reference.name == "pt_10_oar.nii.gz"
    assert ev.find_classes([str(dataset)], None) == tmp_path / "classes.json"
    (tmp_path / "ct_small.nii.gz").write_bytes(b"")
    (tmp_path / "labels_small.nii.gz").write_bytes(b"")
    assert ev.label_path_for(tmp_path / "ct_small.nii.gz") == tmp_path / "labels_small.nii.gz"
    assert ev.label_path_for(dataset / "pt_1_oar.nii.gz") is None


def test_the_variants_of_a_patient():
    config = ev.EvalConfig()
    keys = [v.key for v in ev.plan_variants(config, has_template=True, sweep=False)]
    assert keys == ["auto", "box3d", "auto-refine", "slice", "manual"]
    manual = ev.plan_variants(config, True, False)[-1]
    assert manual.settings.num_aug == 1 and manual.methods == ("one-box",)
    swept = ev.plan_variants(config, has_template=False, sweep=True)
    sweep = [v for v in swept if "@" in v.key]
    # n = 1, and 3 x 5 settings less the default (n = 3, r = 0.01), which is the main run itself.
    assert len(sweep) == 1 + 3 * 5 - 1 and all(v.prompt == "box3d" for v in sweep)
    assert {(v.settings.num_aug, v.settings.ratio) for v in sweep} >= {(1, 0.01), (7, 0.1), (5, 0.005)}


def test_scores_from_crops_equal_whole_volume_scores():
    ct = np.full((6, 30, 40), -100.0, np.float32)
    ct[1:5, 5:15, 5:20] = 100
    labels = np.zeros(ct.shape, np.uint16)
    labels[1:5, 5:15, 5:20] = 1
    labels[2, 10:12, 8:10] = 0  # an error the stand-in makes (it marks bright pixels)
    # The prompt misses the organ's last slice and its right part: reference outside the crop.
    prompt = OrganPrompt("a", 1, {z: np.array([3.0, 3.0, 15.0, 17.0]) for z in (1, 2, 3)})
    result = segment(ct, [prompt], StandIn(), ev.EvalConfig(settings=Settings(ratio=0.05)).run_settings())
    loaded = ev.LoadedCase(ev.Case("p", None, None), None, ct, labels, (3.0, 1.5, 1.5), {1: "a"}, [])
    variant = ev.Variant("box3d", "box3d", result.settings, ("one-box", "ensemble", "ursam"), "n=3")
    rows = {r["method"]: r for r in ev.score_variant(result, variant, loaded, [])}
    for method, which in (("one-box", "plain"), ("ensemble", "ensemble"), ("ursam", "rectified")):
        if method == "ursam":
            result.rerectify(method="ursam")
        mask = result.label_map(which) == 1
        assert math.isclose(rows[method]["dsc"], dice(mask, labels == 1)), method
        assert math.isclose(rows[method]["hd95_mm"], hausdorff95(mask, labels == 1, (3.0, 1.5, 1.5))), method
    organ = result.organs[0]
    inside = organ.box_region
    errors = organ.ensemble_mask != (labels[organ.region] == 1)
    assert rows["ensemble"]["auroc"] == auroc(organ.uncertainty[inside], errors[inside])
    from URSAMLib.error_map import error_likelihood

    likelihood = error_likelihood(organ, (3.0, 1.5, 1.5), result.settings.num_aug)
    assert rows["ensemble"]["auroc_error_map"] == auroc(likelihood[inside], errors[inside])
    assert 0 < rows["ensemble"]["reference_in_boxes"] < 1  # the prompt misses part of the organ


def test_a_run_writes_every_row_and_method_and_a_rerun_does_no_sam_work(dataset, tmp_path, stand_in, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(dataset), "-o", str(out), "--quiet"]) == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == CSV_COLUMNS
    # pt_1, pt_2: 2 organs, pt_10: 1. Variants box3d, box3d-refine, slice (8 methods each), manual (1).
    assert len(rows) == (2 + 2 + 1) * (3 * 8 + 1)
    assert not any(r["patient"] == "pt_10" and r["organ"] == "alpha" for r in rows)
    assert {r["method"] for r in rows} == set(METHOD_TITLES)
    report = (out / "report.md").read_text()
    for title in list(METHOD_TITLES.values()) + ["Manual Prompting", "Slice-wise refinement", "AUROC",
                                                  "ursam evaluate", "numpy", "Which organs to review"]:
        assert title in report, title
    # every organ's predicted DSC and Review flag, the same on each method's row of a variant
    ursam_rows = [r for r in rows if r["method"] == "ursam"]
    assert all(0 <= float(r["predicted_dsc"]) <= 1 and r["review"] in ("True", "False") for r in ursam_rows)
    for r in ursam_rows:
        same = [x for x in rows if (x["patient"], x["organ"], x["variant"]) == (r["patient"], r["organ"], r["variant"])]
        assert {x["predicted_dsc"] for x in same} == {r["predicted_dsc"]}
    assert "Partial" not in report
    for figure in ("dsc_by_organ.png", "uncertainty_vs_dsc.png", "examples.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert len(stand_in) == 1

    before = (out / "results.csv").read_text()
    assert main(["evaluate", str(dataset), "-o", str(out), "--quiet"]) == 0
    assert len(stand_in) == 1  # nothing to compute: not even a model was loaded
    assert (out / "results.csv").read_text() == before
    assert "3 already done" in capsys.readouterr().out

    # Another setting invalidates the cache; --limit gives a partial report.
    assert main(["evaluate", str(dataset), "-o", str(out), "--quiet", "--ratio", "0.05", "--limit", "1"]) == 0
    assert "(1 patients computed, 0 already done)" in capsys.readouterr().out
    assert len(stand_in) == 1  # recomputed with the model this process already holds (job.cached_backbone)
    assert "Partial report: 1 of 1" not in (out / "report.md").read_text()  # --limit 1: 1 of 1 is complete
    assert {r["patient"] for r in read_csv(out / "results.csv")} == {"pt_1"}


def test_a_patient_scored_with_another_hd95_definition_is_recomputed(dataset, tmp_path, stand_in, capsys):
    out = tmp_path / "report"
    one = [str(dataset / "pt_2_ct.nii.gz")]
    assert main(["evaluate", *one, "-o", str(out), "--quiet"]) == 0
    record_path = ev.case_record_path(out, "pt_2")
    record = ev.load_record(record_path)
    assert record["config"]["hd95"] == HD95_DEFINITION
    del record["config"]["hd95"]  # as written before the definition was part of the key
    record_path.unlink()
    record_path.with_suffix("").write_text(json.dumps(record))  # a plain .json, as older runs wrote
    assert main(["evaluate", *one, "-o", str(out), "--quiet"]) == 0  # recomputed, not reused:
    assert capsys.readouterr().out.count("(1 patients computed, 0 already done)") == 2


def test_the_per_patient_table_is_each_patients_mean_worst_first(dataset, tmp_path, stand_in):
    out = tmp_path / "report"
    assert main(["evaluate", str(dataset), "-o", str(out), "--quiet", "--no-refine"]) == 0
    rows = read_csv(out / "results.csv")
    report = (out / "report.md").read_text()
    table = report.split("## Per patient")[1].split("\n## ")[0]
    lines = [line for line in table.splitlines() if line.startswith("| pt_")]
    assert len(lines) == 3
    shown = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        shown[cells[0]] = [float(c) for c in cells[2:]]  # box3d, slice (UR-SAM) and manual
    for patient, (box3d, slice_, manual) in shown.items():
        for variant, method, value in (("box3d", "ursam", box3d), ("slice", "ursam", slice_),
                                       ("manual", "one-box", manual)):
            mean = np.mean([float(r["dsc"]) for r in rows
                            if r["patient"] == patient and r["variant"] == variant and r["method"] == method])
            assert value == pytest.approx(mean, abs=5e-4)
    assert [v[0] for v in shown.values()] == sorted(v[0] for v in shown.values())


def test_report_only_and_a_partial_report(dataset, tmp_path, stand_in):
    out = tmp_path / "report"
    one = [str(dataset / "pt_2_ct.nii.gz")]
    assert main(["evaluate", *one, "-o", str(out), "--quiet"]) == 0
    # Asking for all three patients without computing: a report of the one that is done.
    assert main(["evaluate", str(dataset), "-o", str(out), "--quiet", "--report-only"]) == 0
    assert len(stand_in) == 1
    assert "Partial report: 1 of 3 patients" in (out / "report.md").read_text()


def test_sweep_on_the_first_patient_only(dataset, tmp_path, stand_in):
    out = tmp_path / "report"
    assert main(["evaluate", str(dataset), "-o", str(out), "--quiet", "--sweep-patients", "1", "--no-refine"]) == 0
    rows = read_csv(out / "results.csv")
    swept = {r["patient"] for r in rows if "@" in r["variant"]}
    assert swept == {"pt_1"}
    settings = {r["setting"] for r in rows if r["patient"] == "pt_1"}
    assert {"no augmentation", "n=7, r=0.1", "n=3, r=0.005"} <= settings
    assert "Table I" in (out / "report.md").read_text()
    record = ev.load_record(ev.case_record_path(out, "pt_1"))
    timings = record["timings"]
    assert timings["decoded_boxes"] < timings["boxes"]  # the sweep's shared boxes decoded once


def test_automatic_prompts_from_a_template(dataset, tmp_path, stand_in, monkeypatch):
    from URSAMLib.localize import LOCALIZERS, Localization
    from URSAMLib.prompts import Box3D

    support = tmp_path / "support"
    support.mkdir()
    ct_path, labels_path = write_patient(support, "sup_1", 0, 9)

    def shifted(ct, template, organs, progress=None, **options):
        """A stand-in localizer: each organ's true box (found from the bright CT) one voxel off;
        'beta' is not found."""
        from URSAMLib import io

        hu, _ = io.axial_array(ct)
        bright = hu > 50
        found = {}
        for organ in organs:
            if organ == "beta":
                found[organ] = Localization(organ, template.organs[organ], reason="missed")
                continue
            box = Box3D.from_mask(bright[:, :21, :25])
            moved = Box3D(box.z0, box.z1, box.y0 + 1, box.y1 + 1, box.x0, box.x1)
            found[organ] = Localization(organ, template.organs[organ], box=moved, agreement=1.0)
        return found

    monkeypatch.setitem(LOCALIZERS, "shifted", shifted)
    out = tmp_path / "report"
    code = main(["evaluate", str(dataset / "pt_1_ct.nii.gz"), "-o", str(out), "--quiet", "--localizer", "shifted",
                 "--support-images", str(ct_path), "--support-labels", str(labels_path), "--no-refine"])
    assert code == 0
    rows = read_csv(out / "results.csv")
    auto = [r for r in rows if r["variant"] == "auto"]
    assert {r["method"] for r in auto} == set(METHOD_TITLES)
    alpha = [r for r in auto if r["organ"] == "alpha"]
    assert all(float(r["dsc"]) > 0.5 for r in alpha)
    beta = [r for r in auto if r["organ"] == "beta"]
    assert all(r["found"] == "False" and float(r["dsc"]) == 0.0 for r in beta)  # a miss scores 0
    report = (out / "report.md").read_text()
    assert "## Localization" in report and "template's localization" in report
    assert (out / "template" / "template.json").is_file()


def test_the_multi_atlas_vote_is_scored_as_its_own_row_beside_sam(dataset, tmp_path, stand_in, monkeypatch):
    from URSAMLib import io
    from URSAMLib.localize import LOCALIZERS, Localization
    from URSAMLib.localize.common import AtlasVote
    from URSAMLib.prompts import Box3D, part_boxes

    support = tmp_path / "support"
    support.mkdir()
    ct_path, labels_path = write_patient(support, "sup_1", 0, 9)
    votes = {}

    def atlas_like(ct, template, organs, progress=None, **options):
        """A stand-in atlas: 'alpha' voted where the CT is bright in its corner, minus one row of it
        (so the vote is good, not perfect); 'beta' placed nowhere."""
        hu, _ = io.axial_array(ct)
        vote = np.zeros(hu.shape, bool)
        vote[:, :21, :25] = hu[:, :21, :25] > 50
        vote[:, np.flatnonzero(vote.any(axis=(0, 2)))[0]] = False
        votes["alpha"] = vote
        box = Box3D.from_mask(vote)
        region = tuple(slice(a, b + 1) for a, b in zip(box.as_list()[0::2], box.as_list()[1::2]))
        alpha = Localization("alpha", template.organs["alpha"], box=box, localizer="atlas",
                             slice_boxes={int(z): part_boxes(vote[z]) for z in range(box.z0, box.z1 + 1)},
                             atlas=AtlasVote(region, vote[region].astype(np.float32), 1))
        return {"alpha": alpha, "beta": Localization("beta", template.organs["beta"], reason="no majority")}

    monkeypatch.setitem(LOCALIZERS, "atlas-like", atlas_like)
    out = tmp_path / "report"
    assert main(["evaluate", str(dataset / "pt_1_ct.nii.gz"), "-o", str(out), "--quiet", "--localizer", "atlas-like",
                 "--support-images", str(ct_path), "--support-labels", str(labels_path), "--no-refine"]) == 0
    rows = [r for r in read_csv(out / "results.csv") if r["variant"] == "atlas"]
    assert {(r["organ"], r["method"]) for r in rows} == {("alpha", "atlas-vote"), ("beta", "atlas-vote")}
    labels, _ = io.axial_array(sitk.ReadImage(str(dataset / "pt_1_oar.nii.gz")))
    alpha = next(r for r in rows if r["organ"] == "alpha")
    assert float(alpha["dsc"]) == pytest.approx(dice(votes["alpha"], labels == 1)) and 0.5 < float(alpha["dsc"]) < 1
    assert next(float(r["dsc"]) for r in rows if r["organ"] == "beta") == 0.0
    assert "| Multi-atlas vote (no SAM) |" in (out / "report.md").read_text()


def test_user_mistakes_are_one_line_errors(dataset, tmp_path, stand_in, capsys):
    lone = tmp_path / "lone_ct.nii.gz"
    (dataset / "pt_1_ct.nii.gz").rename(lone)
    assert main(["evaluate", str(lone), "-o", str(tmp_path / "r")]) == 2
    assert "No label map for" in capsys.readouterr().err
    ct, labels = dataset / "pt_2_ct.nii.gz", dataset / "pt_2_oar.nii.gz"
    assert main(["evaluate", str(ct), "-o", str(tmp_path / "r"), "--support-images", str(ct),
                 "--support-labels", str(labels)]) == 2
    assert "also a support" in capsys.readouterr().err
    assert main(["evaluate", str(ct), "-o", str(tmp_path / "r"), "--organs", "gamma"]) == 2
    assert "gamma not in the class map" in capsys.readouterr().err
    assert stand_in == []  # nothing was loaded for a mistake



def test_region_evaluates_with_the_built_in_template_and_its_localizer(head_neck, tmp_path, stand_in, monkeypatch):
    """`--region` is `ursam segment --region`'s template and localizer; the localizer is a stand-in that
    returns the labels' box, so only the wiring is under test here."""
    from conftest import hn_pair

    from URSAMLib import io
    from URSAMLib.builtin import region_template
    from URSAMLib.localize import LOCALIZERS, Localization
    from URSAMLib.prompts import Box3D

    ct, labels = hn_pair(head_neck, 201, "validation")
    calls = []

    def labels_box(image, template, organs, progress=None, **options):
        calls.append((template.folder, tuple(organs)))
        reference, _ = io.axial_array(io.read_label_map(labels, image), np.uint16)
        return {o: Localization(o, template.organs[o], box=Box3D.from_mask(reference == template.organs[o]),
                                agreement=1.0) for o in organs}

    builtin = region_template("head-and-neck")
    monkeypatch.setitem(LOCALIZERS, builtin.localizer, labels_box)
    out = tmp_path / "report"
    assert main(["evaluate", ct, "--labels", labels, "--classes", str(head_neck / "classes.json"), "-o", str(out),
                 "--region", "head-and-neck", "--organs", "Brainstem", "--no-refine", "--num-aug", "1",
                 "--quiet"]) == 0
    assert calls == [(builtin.folder, ("Brainstem",))]
    record = ev.load_record(ev.case_record_path(out, "pt_201"))
    assert record["config"]["localizer"] == builtin.localizer
    assert json.loads(record["config"]["template"])["supports"][0] == "pt_119_ct"
    auto = [r for r in read_csv(out / "results.csv") if r["variant"] == "auto" and r["method"] == "one-box"]
    assert len(auto) == 1 and auto[0]["found"] == "True"


def test_region_mistakes_are_one_line_errors(dataset, tmp_path, stand_in, capsys):
    ct = str(dataset / "pt_1_ct.nii.gz")
    assert main(["evaluate", ct, "-o", str(tmp_path / "r"), "--region", "knee"]) == 2
    assert "Unknown region 'knee'; the built-in templates are: head-and-neck, abdomen" in capsys.readouterr().err
    assert main(["evaluate", ct, "-o", str(tmp_path / "r"), "--region", "abdomen", "--template", "T"]) == 2
    assert "Give one of --region, --template or --support-images" in capsys.readouterr().err
    assert stand_in == []

@pytest.mark.model
@pytest.mark.slow
def test_real_litemedsam_on_the_abdomen_slab(abdomen, tmp_path):
    """One small real run: the right kidney (23 slices), no augmentation, no refinement, bfloat16
    (about 30 s on an idle 2-core CPU)."""
    out = tmp_path / "abdomen"
    code = main(["evaluate", str(abdomen / "ct_small.nii.gz"), "-o", str(out), "--organs", "kidney_right",
                 "--num-aug", "1", "--no-refine", "--precision", "bfloat16", "--quiet", "--device", "cpu"])
    assert code == 0
    rows = {(r["variant"], r["method"]): r for r in read_csv(out / "results.csv")}
    assert float(rows[("slice", "one-box")]["dsc"]) > 0.8  # tight boxes from the labels
    # The labels' 3-D box on every slice is loose where the organ is small: worse, but not lost.
    assert 0.3 < float(rows[("box3d", "one-box")]["dsc"]) < float(rows[("slice", "one-box")]["dsc"])
    assert float(rows[("box3d", "ursam")]["hd95_mm"]) > 0
    assert "## DSC per organ" in (out / "report.md").read_text()


def test_reliability_scores_on_hand_made_organs():
    from URSAMLib.evaluation.tables import reliability_scores

    dsc = [0.9, 0.8, 0.3, 0.1]
    perfect = reliability_scores([0.9, 0.8, 0.3, 0.1], dsc, [False, False, True, True])
    assert perfect["pearson_r"] == pytest.approx(1.0) and perfect["mae"] == 0 and perfect["ece"] == 0
    assert perfect["aurc"] == pytest.approx(perfect["aurc_floor"])
    assert (perfect["poor_caught"], perfect["good_flagged"], perfect["specificity"]) == (1.0, 0.0, 1.0)
    # accepting the worst first: the largest area; a flag on a good organ counts against it
    backwards = reliability_scores([0.1, 0.3, 0.8, 0.9], dsc, [True, False, False, False])
    assert backwards["pearson_r"] < 0 and backwards["aurc"] > perfect["aurc"]
    risks = np.cumsum([0.9, 0.7, 0.2, 0.1]) / np.arange(1, 5)
    assert backwards["aurc"] == pytest.approx(risks.mean())
    assert (backwards["poor_caught"], backwards["good_flagged"]) == (0.0, 0.5)
    # a constant 0.5 prediction: calibration error is the mean gap per bin (one bin here)
    flat = reliability_scores([0.5] * 4, dsc, [False] * 4)
    assert flat["ece"] == pytest.approx(abs(0.5 - np.mean(dsc))) and math.isnan(flat["pearson_r"])


REPORTS_WITH_RECORDS = ("abdomen-ts", "hn-openkbp")
"""Committed reports (docs/results/NAME) that carry their per-patient records (cases/, run.json)."""


@pytest.mark.parametrize("name", REPORTS_WITH_RECORDS)
def test_a_committed_report_is_rewritten_to_the_same_values_from_its_records(name, head_neck, tmp_path,
                                                                            monkeypatch, stand_in):
    """`ursam evaluate --report-only` with the command recorded in run.json rewrites report.md and
    results.csv byte for byte from the committed records, loading no model."""
    import shlex
    import shutil

    from conftest import DATA, ROOT

    committed = ROOT / "docs" / "results" / name
    copy = tmp_path / name
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("report.md", "results.csv", "cache"))
    command = shlex.split(json.loads((committed / "run.json").read_text())["invocations"][0]["command"])
    assert command[:2] == ["ursam", "evaluate"]
    # the data where this run finds it (URSAM_DATA); the report then names it, and is read back as recorded
    args = [str(DATA) + a[len("../shared/data"):] if a.startswith("../shared/data") else a for a in command[1:]]
    args[args.index("-o") + 1] = str(copy)
    monkeypatch.chdir(ROOT)
    assert main([*args, "--report-only", "--quiet"]) == 0
    assert stand_in == []
    for written in ("results.csv", "report.md"):
        rewritten = (copy / written).read_text().replace(str(DATA), "../shared/data")
        assert rewritten == (committed / written).read_text(), written
