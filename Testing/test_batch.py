"""``ursam batch``: case discovery, a cohort of 3 real CT slabs run sequentially and on a
2-worker dask LocalCluster (byte-identical outputs), resuming, a bad case among good ones,
and bad input.

The cohort is cut out of abdomen-ts/ct_small: 2 slices each around the gallbladder, one
organ, n = 2 — a few seconds of LiteMedSAM per case.
"""
import csv
import json
import os

import pytest
import SimpleITK as sitk

from URSAMLib.cases import find_cohort
from URSAMLib.cli import main
from URSAMLib.errors import URSAMError

from conftest import ROOT

SLABS = {"pt_1": (4, 6), "pt_2": (7, 9), "pt_3": (10, 12)}
OPTIONS = ["--prompt-labels-pattern", "*_oar.nii.gz", "--organs", "gallbladder", "--num-aug", "2",
           "--threads", "1", "--device", "cpu"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cohort(abdomen, tmp_path_factory):
    """INPUT_DIR with pt_N_ct.nii.gz + pt_N_oar.nii.gz for 3 slabs, plus an unreadable CT."""
    folder = tmp_path_factory.mktemp("cohort")
    ct = sitk.ReadImage(str(abdomen / "ct_small.nii.gz"))
    labels = sitk.ReadImage(str(abdomen / "labels_small.nii.gz"))
    for case, (first, last) in SLABS.items():
        sitk.WriteImage(ct[:, :, first:last], str(folder / f"{case}_ct.nii.gz"))
        sitk.WriteImage(labels[:, :, first:last], str(folder / f"{case}_oar.nii.gz"))
    (folder / "pt_4_ct.nii.gz").write_bytes(b"not an image")
    sitk.WriteImage(labels[:, :, 4:6], str(folder / "pt_4_oar.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def sequential(cohort, abdomen, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential") / "out"
    code = main(["batch", str(cohort), "-o", str(out), "--ct-pattern", "*_ct.nii.gz",
                 "--classes", str(abdomen / "classes.json"), *OPTIONS])
    return code, out


def test_cases_are_named_by_the_star_and_labels_are_not_cases(tmp_path):
    for name in ("pt_1_ct.nii.gz", "pt_1_oar.nii.gz", "pt_2_ct.nii.gz", "pt_2_oar.nii.gz", "notes.txt", ".hidden.nii"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "pt_3_ct").mkdir()  # a DICOM series folder
    cases = find_cohort(tmp_path, "*_ct.nii.gz", "*_oar.nii.gz")
    assert [c.name for c in cases] == ["pt_1", "pt_2"]
    assert cases[0].ct == tmp_path / "pt_1_ct.nii.gz" and cases[0].prompt_labels == tmp_path / "pt_1_oar.nii.gz"
    # the default pattern keeps the whole name, less the extension; label maps are never CTs
    assert [c.name for c in find_cohort(tmp_path)] == ["pt_1_ct", "pt_1_oar", "pt_2_ct", "pt_2_oar", "pt_3_ct"]


def test_case_names_strip_the_extension_and_labels_may_sit_in_a_subfolder(tmp_path):
    (tmp_path / "labels").mkdir()
    for name in ("ct_a.nii.gz", "ct_b.nrrd", "labels/a.nii.gz", "labels/b.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "ct_c").mkdir()
    cases = find_cohort(tmp_path, "ct_*", "labels/*.nii.gz", exclude=[tmp_path / "out"])
    assert [(c.name, c.ct.name, c.prompt_labels.relative_to(tmp_path).as_posix()) for c in cases] == [
        ("a", "ct_a.nii.gz", "labels/a.nii.gz"), ("b", "ct_b.nrrd", "labels/b.nii.gz"),
        ("c", "ct_c", "labels/c.nii.gz")]
    (tmp_path / "ct_a_seg.nii.gz").write_bytes(b"")  # beside the CT: never a case itself
    assert [c.name for c in find_cohort(tmp_path, "*", "*_seg.nii.gz")] == ["ct_a", "ct_b", "ct_c", "labels"]


def test_case_discovery_refuses_ambiguous_or_empty_folders(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "a.nrrd").write_bytes(b"")
    with pytest.raises(URSAMError, match="make case 'a'"):
        find_cohort(tmp_path)
    with pytest.raises(URSAMError, match="exactly one"):
        find_cohort(tmp_path, "*_*")
    with pytest.raises(URSAMError, match="No CT"):
        find_cohort(tmp_path, "*_ct.nii.gz")
    (tmp_path / "b.nii.gz").write_bytes(b"")
    with pytest.raises(URSAMError, match="None of the 2 CTs has a label map"):
        find_cohort(tmp_path, "*.nii.gz", "*_oar.nii.gz")


@pytest.mark.model
def test_a_bad_case_fails_alone(sequential, capsys):
    code, out = sequential
    assert code == 1  # some case failed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["pt_1", "pt_2", "pt_3"]
    for case in SLABS:
        assert (out / case / "summary.json").is_file() and (out / case / "rectified.nii.gz").is_file()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["case"], r["organ"], r["status"]) for r in rows] == [
        ("pt_1", "gallbladder", "done"), ("pt_2", "gallbladder", "done"), ("pt_3", "gallbladder", "done"),
        ("pt_4", "", "failed")]
    assert "pt_4_ct.nii.gz" in rows[3]["message"] and "not an image" in rows[3]["message"]
    for row in rows[:3]:
        assert float(row["volume_ml"]) > 0 and 0 <= float(row["mean_uncertainty"]) < 0.7
        assert float(row["dsc_rectified"]) > 0.5 and row["dsc_against"] == "prompt_labels"


@pytest.fixture
def environment_restored():
    """A LocalCluster sets OMP_NUM_THREADS=1 (and MKL_, OPENBLAS_, MALLOC_TRIM_) in this process's
    environment for its workers; later tests' subprocesses would inherit one thread, and PyTorch's
    float sums differ with the thread count."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.subprocess
def test_dask_cluster_gives_byte_identical_outputs(sequential, cohort, abdomen, tmp_path, monkeypatch,
                                                   environment_restored):
    distributed = pytest.importorskip("distributed")
    _, first = sequential
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        code = main(["batch", str(cohort), "-o", str(out), "--ct-pattern", "*_ct.nii.gz",
                     "--classes", str(abdomen / "classes.json"), *OPTIONS,
                     "--dask-scheduler", cluster.scheduler_address])
    assert code == 1
    for case in SLABS:
        names = sorted(p.name for p in (first / case).iterdir())
        assert names == sorted(p.name for p in (out / case).iterdir())
        for name in names:
            if name == "summary.json":
                a, b = (json.loads((folder / case / name).read_text()) for folder in (first, out))
                a.pop("timings_s"), b.pop("timings_s")
                assert a == b, case
            else:
                assert (first / case / name).read_bytes() == (out / case / name).read_bytes(), (case, name)


@pytest.mark.model
def test_a_rerun_skips_complete_cases(sequential, cohort, abdomen, capsys):
    _, out = sequential
    before = {case: (out / case / "summary.json").stat().st_mtime_ns for case in SLABS}
    code, stdout, err = run(capsys, "batch", cohort, "-o", out, "--ct-pattern", "*_ct.nii.gz",
                            "--classes", abdomen / "classes.json", *OPTIONS)
    assert code == 1 and "case pt_4 failed" in err and len(err.strip().splitlines()) == 1
    assert "3 skipped" in stdout
    assert before == {case: (out / case / "summary.json").stat().st_mtime_ns for case in SLABS}
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["skipped"] * 3 + ["failed"]
    # a complete case made with other settings is not passed off as this run's
    code, _, err = run(capsys, "batch", cohort, "-o", out, "--ct-pattern", "*_ct.nii.gz",
                       "--classes", abdomen / "classes.json", *OPTIONS, "--num-aug", "3")
    assert code == 2 and "other settings (num_aug: 2 there, 3 now)" in err


def test_bad_input_dir_is_one_line_and_status_2(tmp_path, capsys):
    for folder in (tmp_path / "missing", tmp_path):
        code, _, err = run(capsys, "batch", folder, "-o", tmp_path / "out", "--prompt-labels-pattern", "*_oar.nii.gz",
                           "--classes", "classes.json")
        assert code == 2 and err.startswith("ursam: error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "batch", tmp_path, "-o", tmp_path / "out", "--dask-scheduler", "tcp://x:1")
    assert code == 2 and "exactly one prompt source" in err


def test_a_checkpoint_pin_is_checked_for_every_case(cohort, abdomen, tmp_path, capsys):
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"someone's weights")
    code, _, err = run(capsys, "batch", cohort, "-o", tmp_path / "out", "--ct-pattern", "*_ct.nii.gz",
                       "--classes", abdomen / "classes.json", "--checkpoint", mine,
                       "--checkpoint-sha256", "0" * 64, *OPTIONS)
    # checked with the model options, before any case runs: a mistake in the command (exit 2)
    assert code == 2 and err.startswith("ursam: error: ") and "fails its SHA-256 check" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.model
def test_ctrl_c_keeps_the_finished_cases_and_says_so(cohort, abdomen, tmp_path, capsys, monkeypatch):
    import URSAMLib.batch as batch

    real, calls = batch.run_case, []

    def interrupted_after_the_first_case(job, threads=0):
        calls.append(job.ct)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(job, threads)

    monkeypatch.setattr(batch, "run_case", interrupted_after_the_first_case)
    out = tmp_path / "out"
    code, _, err = run(capsys, "batch", cohort, "-o", out, "--ct-pattern", "*_ct.nii.gz",
                       "--classes", abdomen / "classes.json", *OPTIONS)
    assert code == 130 and len(calls) == 2
    assert err.strip().splitlines()[-1] == ("ursam: cancelled; finished cases are kept in OUTDIR; "
                                            "run the same command again to resume.")
    assert (out / "pt_1" / "summary.json").is_file() and not (out / "pt_2").exists()
