"""The ``ursam`` command: end to end with the real LiteMedSAM on real CT, and every bad input.

The end-to-end run is the issue's acceptance command: per-slice label prompts on the
30-slice abdomen slab, 9 FLARE organs, rectified DSC asserted against the real labels.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from URSAMLib import io
from URSAMLib.cli import main
from URSAMLib.metrics import dice

NINE = "spleen,kidney_right,kidney_left,gallbladder,liver,stomach,pancreas,aorta,inferior_vena_cava"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def same_grid(image, reference):
    return (image.GetSize() == reference.GetSize() and image.GetSpacing() == reference.GetSpacing()
            and image.GetOrigin() == reference.GetOrigin() and image.GetDirection() == reference.GetDirection())


@pytest.fixture(scope="module")
def abdomen_run(abdomen, tmp_path_factory):
    out = tmp_path_factory.mktemp("abdomen") / "result"
    code = main([
        "segment", str(abdomen / "ct_small.nii.gz"), "-o", str(out),
        "--prompt-labels", str(abdomen / "labels_small.nii.gz"), "--classes", str(abdomen / "classes.json"),
        "--prompt-mode", "slice", "--organs", NINE, "--quiet"])
    assert code == 0
    return out


@pytest.mark.model
def test_outputs_lie_exactly_on_the_input_grid(abdomen, abdomen_run):
    ct = sitk.ReadImage(str(abdomen / "ct_small.nii.gz"))
    for name in ("ensemble.nii.gz", "rectified.nii.gz", "uncertainty.nii.gz"):
        assert same_grid(sitk.ReadImage(str(abdomen_run / name)), ct), name
    assert sitk.ReadImage(str(abdomen_run / "uncertainty.nii.gz")).GetPixelID() == sitk.sitkFloat32


@pytest.mark.model
def test_rectified_dice_against_the_real_labels(abdomen, abdomen_run):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(abdomen / "labels_small.nii.gz")))
    classes = {name: value for value, name in io.read_classes(abdomen / "classes.json").items()}
    scores = {}
    for which in ("ensemble", "rectified"):
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(abdomen_run / f"{which}.nii.gz")))
        scores[which] = {n: dice(predicted == classes[n], labels == classes[n]) for n in NINE.split(",")}
    rectified = scores["rectified"]
    for organ in ("liver", "spleen", "kidney_right", "kidney_left", "aorta"):
        assert rectified[organ] >= 0.70, (organ, rectified[organ])
    assert np.mean(list(rectified.values())) >= 0.75, rectified
    # The paper's claim, on this scan: rectification improves on the plain ensemble.
    assert np.mean(list(rectified.values())) > np.mean(list(scores["ensemble"].values()))


@pytest.mark.model
def test_uncertainty_is_entropy_inside_the_organ_crops(abdomen_run):
    u = sitk.GetArrayFromImage(sitk.ReadImage(str(abdomen_run / "uncertainty.nii.gz")))
    assert u.min() == 0.0 and 0.3 < u.max() <= math.log(2) + 1e-6
    assert (u > 0).mean() < 0.6  # zero outside every organ's crop


@pytest.mark.model
def test_summary_records_organs_parameters_and_timings(abdomen_run):
    summary = json.loads((abdomen_run / "summary.json").read_text())
    assert set(summary["organs"]) == set(NINE.split(","))
    liver = summary["organs"]["liver"]
    assert liver["label"] == 5 and liver["voxels"]["rectified"] > 10_000
    assert 0 < liver["mean_uncertainty_in_box"] < math.log(2)
    assert liver["threshold"] > 0 and liver["dice_vs_prompt_labels"]["rectified"] > 0.85
    assert liver["rectification"] == "ursam" and summary["parameters"]["method"] == "per-organ"  # labels: no choice
    assert len(liver["box_ijk"]) == 2 and len(liver["box_lps_mm"]) == 2
    assert summary["parameters"]["num_aug"] == 3 and summary["parameters"]["ratio"] == 0.01
    assert summary["parameters"]["max_zoom"] == 1.0  # the whole slice (docs/atlas-prompts.md, zoom)
    assert summary["backbone"]["name"] == "litemedsam" and "sha256" in summary["backbone"]["weights"]
    assert summary["timings_s"]["boxes"] > 0 and summary["timings_s"]["all_s"] > 0
    assert (abdomen_run / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.model
def test_a_dicom_series_with_flipped_labels_is_segmented_on_its_own_grid(abdomen, tmp_path, capsys):
    out = tmp_path / "dicom"
    code, stdout, _ = run(capsys, "segment", abdomen / "dicom", "-o", out,
                          "--prompt-labels", abdomen / "dicom_labels.nii.gz",
                          "--classes", abdomen / "classes.json", "--organs", "liver,spleen", "--num-aug", 2)
    assert code == 0 and "liver" in stdout
    ct = io.read_ct(abdomen / "dicom")
    rectified = sitk.ReadImage(str(out / "rectified.nii.gz"))
    assert same_grid(rectified, ct)
    reference = io.read_label_map(abdomen / "dicom_labels.nii.gz", ct)
    predicted, expected = sitk.GetArrayFromImage(rectified), sitk.GetArrayFromImage(reference)
    assert dice(predicted == 5, expected == 5) > 0.85 and dice(predicted == 1, expected == 1) > 0.8


# --- bad input: one line on stderr, exit status 2, nothing written ---------------------------

def assert_user_error(capsys, out_dir, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ursam: error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists()


@pytest.fixture
def args(abdomen, tmp_path):
    out = tmp_path / "out"

    def make(ct=abdomen / "ct_small.nii.gz", labels=abdomen / "labels_small.nii.gz",
             classes=abdomen / "classes.json", organs="liver"):
        return ["segment", ct, "-o", out, "--prompt-labels", labels, "--classes", classes, "--organs", organs]

    return out, make


def test_text_file_named_nifti(capsys, tmp_path, args):
    out, make = args
    fake = tmp_path / "ct.nii.gz"
    fake.write_text("hello\n")
    assert_user_error(capsys, out, make(ct=fake), "but holds text")


def test_two_dimensional_png(capsys, tmp_path, args):
    out, make = args
    png = tmp_path / "ct.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(4096, dtype=np.uint8).reshape(64, 64)), str(png))
    assert_user_error(capsys, out, make(ct=png), "2-D image")


def test_all_zero_volume(capsys, tmp_path, args):
    out, make = args
    zero = tmp_path / "zero.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 40, 40), np.int16)), str(zero))
    assert_user_error(capsys, out, make(ct=zero), "constant")


def test_label_map_on_another_grid(capsys, abdomen, args):
    out, make = args
    assert_user_error(capsys, out, make(labels=abdomen / "labels.nii.gz"), "another grid")


def test_class_map_without_the_requested_organ(capsys, args):
    out, make = args
    assert_user_error(capsys, out, make(organs="liver,heart_ventricle_x"), "heart_ventricle_x not in")


def test_organ_absent_from_the_labels(capsys, args):
    out, make = args
    assert_user_error(capsys, out, make(organs="urinary_bladder"), "None of the requested organs")


def test_bad_parameters(capsys, args):
    out, make = args
    assert_user_error(capsys, out, make() + ["--num-aug", "0"], "augmented prompts")
    assert_user_error(capsys, out, make() + ["--ratio", "0.9"], "ratio")
    assert_user_error(capsys, out, make() + ["--max-zoom", "0.5"], "zoom")


def test_existing_output_folder_without_overwrite(capsys, args):
    out, make = args
    out.mkdir()
    (out / "summary.json").write_text("mine")
    code, _, err = run(capsys, *make())
    assert code == 2 and "--overwrite" in err and (out / "summary.json").read_text() == "mine"


@pytest.mark.subprocess
def test_the_installed_command_reports_errors_without_traceback(tmp_path, abdomen):
    fake = tmp_path / "ct.nii.gz"
    fake.write_text("hello\n")
    done = subprocess.run([sys.executable, "-m", "URSAMLib.cli", "segment", str(fake), "-o", str(tmp_path / "o"),
                           "--prompt-labels", str(fake), "--classes", str(abdomen / "classes.json")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "but holds text" in done.stderr


def test_sample_data_manifest_matches_the_shared_files(abdomen):
    from URSAMLib.resources import load_json
    from URSAMLib.weights import KnownFile, verify

    sample = load_json("sample_data.json")["abdomen-ts"]
    for name, info in sample["files"].items():
        verify(abdomen / name, KnownFile(name, info["sha256"], info["size"]))  # raises if it differs
    shared = io.read_classes(abdomen / "classes.json")
    assert all(shared[int(v)] == n for v, n in sample["classes"].items())


def test_sample_data_command_downloads_verifies_and_writes_classes(abdomen, tmp_path, capsys, monkeypatch):
    import functools
    import http.server
    import threading

    from URSAMLib import resources

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(abdomen))
    handler.log_message = lambda *a: None
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real = resources.load_json("sample_data.json")
    local = {"abdomen-ts": {**real["abdomen-ts"], "files": {
        name: {**info, "url": f"http://127.0.0.1:{server.server_address[1]}/{name}"}
        for name, info in real["abdomen-ts"]["files"].items()}}}
    monkeypatch.setattr(resources, "load_json", lambda name: local)
    try:
        code, out, _ = run(capsys, "sample-data", "-o", tmp_path / "sample")
    finally:
        server.shutdown()
    assert code == 0 and "Sample CT" in out
    assert (tmp_path / "sample/ct_small.nii.gz").read_bytes() == (abdomen / "ct_small.nii.gz").read_bytes()
    assert io.read_classes(tmp_path / "sample/classes.json")[5] == "liver"


# --- automatic prompts from a template ---------------------------------------------------------

@pytest.fixture(scope="module")
def hn_template_dir(head_neck, tmp_path_factory):
    folder = tmp_path_factory.mktemp("template") / "hn"
    ct, labels = (head_neck / "train" / f"pt_4_{kind}.nii.gz" for kind in ("ct", "oar"))
    assert main(["build-template", "--images", str(ct), "--labels", str(labels), "--classes",
                 str(head_neck / "classes.json"), "-o", str(folder), "--organs", "Brainstem,Mandible",
                 "--region", "head-and-neck"]) == 0
    return folder


@pytest.mark.model
@pytest.mark.slow
def test_segment_with_a_template_localizes_and_writes_boxes(head_neck, hn_template_dir, tmp_path, capsys):
    from URSAMLib.localize import box_iou
    from URSAMLib.prompts import Box3D

    ct = head_neck / "validation/pt_201_ct.nii.gz"
    reference = head_neck / "validation/pt_201_oar.nii.gz"
    out = tmp_path / "auto"
    code, stdout, err = run(capsys, "segment", ct, "-o", out, "--template", hn_template_dir, "--organs", "Brainstem",
                            "--reference", reference, "--num-aug", 1)
    assert code == 0, err
    boxes = json.loads((out / "boxes.json").read_text())
    brainstem = boxes["organs"]["Brainstem"]
    assert brainstem["found"] and 0 < brainstem["agreement"] <= 1 and len(brainstem["extreme_points_mm"]) == 6
    truth, _ = io.axial_array(io.read_label_map(reference, io.read_ct(ct)), np.uint16)
    assert box_iou(Box3D(*brainstem["box_axial_zyx"]), Box3D.from_mask(truth == 1)) > 0.2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["localizer"] == "registration" and "boxes.json" in summary["outputs"]
    assert "dice_vs_reference" in summary["organs"]["Brainstem"]
    assert same_grid(sitk.ReadImage(str(out / "rectified.nii.gz")), sitk.ReadImage(str(ct)))
    # which organs to review: a predicted DSC and flag from the automatic-prompt model and its signals
    entry = summary["organs"]["Brainstem"]
    assert 0 <= entry["predicted_dsc"] <= 1 and isinstance(entry["review"], bool)
    assert entry["quality_signals"]["support_agreement"] == pytest.approx(brainstem["agreement"], abs=1e-4)
    assert entry["quality_signals"]["volume_deviation"] is not None and summary["review_order"] == ["Brainstem"]
    assert "pred. DSC" in stdout


@pytest.mark.model
def test_organs_not_found_are_listed_and_the_others_go_on(head_neck, hn_template_dir, tmp_path, capsys,
                                                          monkeypatch):
    from URSAMLib import localize
    from URSAMLib.prompts import Box3D

    def fake(ct, template, organs, progress=None):
        points = np.array([[0, 0, 0], [1, 1, 1]] * 3, float)
        return {"Brainstem": localize.Localization("Brainstem", 1, points, box=Box3D(60, 61, 60, 64, 60, 64),
                                                   agreement=1.0),
                "Mandible": localize.Localization("Mandible", 7, points, reason="its box lies outside the image"),
                # an atlas vote that is empty places no point at all
                "Larynx": localize.Localization("Larynx", 6, reason="the supports agree on none of its voxels")}

    monkeypatch.setitem(localize.LOCALIZERS, "registration", fake)
    out = tmp_path / "partial"
    code, stdout, _ = run(capsys, "segment", head_neck / "validation/pt_201_ct.nii.gz", "-o", out,
                          "--template", hn_template_dir, "--num-aug", 1)
    assert code == 0 and "Mandible" in stdout and "not found" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["not_found"] == {"Mandible": "its box lies outside the image",
                                    "Larynx": "the supports agree on none of its voxels"}
    assert list(summary["organs"]) == ["Brainstem"]
    boxes = json.loads((out / "boxes.json").read_text())["organs"]
    assert boxes["Mandible"]["found"] is False and len(boxes["Mandible"]["extreme_points_mm"]) == 6
    assert boxes["Larynx"]["found"] is False and boxes["Larynx"]["extreme_points_mm"] is None


def test_template_and_labels_are_exclusive_prompt_sources(capsys, args, hn_template_dir):
    out, make = args
    assert_user_error(capsys, out, make() + ["--template", hn_template_dir], "exactly one prompt source")
    assert_user_error(capsys, out, ["segment", make()[1], "-o", out], "exactly one prompt source")
    assert_user_error(capsys, out, ["segment", make()[1], "-o", out, "--template", out.parent],
                      "not an URSAM template")


# --- no data loss when a run is stopped ---------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_run_stopped_while_writing_leaves_the_previous_outputs_and_no_debris(abdomen, tmp_path, stop):
    import os
    import signal

    from conftest import ROOT, sigint_as_in_a_terminal

    out = tmp_path / "out"
    out.mkdir()
    (out / "rectified.nii.gz").write_bytes(b"last week's result")
    (out / "notes.txt").write_text("mine")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "Testing" / "stand_ins.py"), "--pause-when-staged", "segment",
         str(abdomen / "ct_small.nii.gz"), "-o", str(out), "--prompt-labels", str(abdomen / "labels_small.nii.gz"),
         "--classes", str(abdomen / "classes.json"), "--organs", "spleen", "--num-aug", "1", "--overwrite",
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=sigint_as_in_a_terminal)
    assert process.stdout.readline().strip() == "staged"  # every output is written, none moved in yet
    assert any(p.name.startswith(".out.ursam-") for p in tmp_path.iterdir())
    process.send_signal(getattr(signal, stop))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip() == "ursam: cancelled; no output was written."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the staging folder is gone
    assert (out / "rectified.nii.gz").read_bytes() == b"last week's result"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "rectified.nii.gz"]


# --- determinism and no network, with the real LiteMedSAM on three slices ----------------------

@pytest.fixture(scope="module")
def two_slices(abdomen, tmp_path_factory):
    """Slices 19-20 of the abdomen slab (liver and spleen), as a user's small CT and labels: the
    real model costs about 1.5 s per slice on a free CPU core."""
    folder = tmp_path_factory.mktemp("two")
    for name in ("ct_small.nii.gz", "labels_small.nii.gz"):
        image = sitk.ReadImage(str(abdomen / name))
        sitk.WriteImage(image[:, :, 19:21], str(folder / name))
    return folder


def run_outputs(folder):
    """Every output's bytes, summary.json without its timings (the one thing that may differ)."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "summary.json"}
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("timings_s")
    return files, summary


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.subprocess
def test_same_input_parameters_and_seed_give_bitwise_identical_outputs_without_network(abdomen, two_slices, tmp_path,
                                                                                      capsys, no_network):
    from conftest import ROOT

    def argv(out, seed):  # n = 2 boxes, so the seeded augmentation matters
        return ["segment", two_slices / "ct_small.nii.gz", "-o", out, "--prompt-labels",
                two_slices / "labels_small.nii.gz", "--classes", abdomen / "classes.json", "--organs",
                "liver,spleen", "--num-aug", 2, "--ratio", 0.02, "--seed", seed, "--device", "cpu", "--quiet"]

    assert run(capsys, *argv(tmp_path / "a", 7))[0] == 0
    first = run_outputs(tmp_path / "a")
    assert first[1]["warnings"] == [] and first[1]["backbone"]["weights_verified"] is True
    assert set(first[0]) == {"ensemble.nii.gz", "rectified.nii.gz", "uncertainty.nii.gz", "overview.png"}
    # a fresh interpreter (nothing cached from the first run), network blocked from its start
    done = subprocess.run([sys.executable, str(ROOT / "Testing" / "no_network.py"),
                           *map(str, argv(tmp_path / "b", 7))], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert run_outputs(tmp_path / "b") == first


# --- one option model ----------------------------------------------------------------------------
def test_segment_batch_and_evaluate_take_their_defaults_from_the_code():
    from dataclasses import fields

    from URSAMLib.cli import build_parser
    from URSAMLib.cli.batch import PER_CASE
    from URSAMLib.evaluation import EvalConfig
    from URSAMLib.job import SegmentJob
    from URSAMLib.pipeline import Settings

    parser = build_parser()
    segment = vars(parser.parse_args(["segment", "CT", "-o", "OUT"]))
    batch = vars(parser.parse_args(["batch", "IN", "-o", "OUT"]))
    evaluate = vars(parser.parse_args(["evaluate", "IN", "-o", "OUT"]))
    settings, job, config = Settings(), SegmentJob(ct="", output=""), EvalConfig()
    in_settings = [f.name for f in fields(Settings) if f.name in segment]
    assert {"num_aug", "ratio", "seed", "method", "alpha_h", "lower_bound"} <= set(in_settings)
    for name in in_settings:
        assert segment[name] == getattr(settings, name), name
    in_job = [f.name for f in fields(SegmentJob) if f.name in segment and f.name not in ("ct", "output")]
    assert {"box_margin", "backbone", "precision", "device", "runtime", "prompt_mode", "dicom_out"} <= set(in_job)
    for name in in_job:
        assert segment[name] == getattr(job, name), name
    # batch: every option of segment but one case's files, with the same defaults
    per_case = PER_CASE | {"quiet", "handler", "command"}
    assert {k: v for k, v in segment.items() if k not in per_case} == \
        {k: v for k, v in batch.items() if k in segment and k not in per_case}
    assert set(segment) - per_case <= set(batch)
    for name in (f.name for f in fields(EvalConfig)):
        if name in evaluate and name not in ("organs", "localizer"):  # --organs is a comma-separated list
            assert evaluate[name] == getattr(config, name), name
    assert evaluate["localizer"] is None  # the region's choice with --region, else EvalConfig.localizer
    # evaluate's UR-SAM parameters are segment's, with its defaults (it scores every rectification
    # method, so it has no --method)
    in_evaluate = [name for name in in_settings if name in evaluate]
    assert {"num_aug", "ratio", "seed", "alpha_h", "lower_bound", "prior_weight", "max_zoom"} <= set(in_evaluate)
    for name in in_evaluate:
        assert evaluate[name] == getattr(config.settings, name), name
    assert evaluate["box_margin"] == config.margin and evaluate["jitter"] == config.jitter


def test_no_argparse_private_api_in_the_command_line():
    from conftest import ROOT

    for path in (ROOT / "URSAMLib").rglob("*.py"):
        text = path.read_text()
        assert "._actions" not in text and "._add_action(" not in text, path
