"""URSAMSlicerLib.jobs and .running: the module's run in this process or a background process, and its files."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import MODULE_DIR
from URSAMLib import job as job_module
from URSAMLib.pipeline import Settings
from URSAMLib.prompts import BoxMargin, OrganPrompt
from URSAMSlicerLib import jobs, processes, running
from URSAMSlicerLib.testing import BrightInBox, bright_in_box

pytestmark = pytest.mark.slicer

STAND_IN = ("--backbone-factory", "URSAMSlicerLib.testing:bright_in_box")


def small_job(**settings) -> jobs.Job:
    hu = np.full((6, 30, 40), -100.0, np.float32)
    hu[1:4, 5:12, 5:15] = 100
    hu[2:6, 15:25, 20:35] = 100
    prompts = [OrganPrompt("a", 1, {z: np.array([4.0, 4.0, 15.0, 12.0]) for z in (1, 2, 3)}),
               OrganPrompt("b", 7, {z: np.array([19.0, 14.0, 35.0, 25.0]) for z in (2, 3, 4, 5)})]
    return jobs.Job(hu, prompts, options(settings=Settings(**{"num_aug": 4, "ratio": 0.1, "seed": 3, **settings})))


def options(**fields):
    return jobs.scene_options("test CT", **{"backbone": "bright", **fields})


def with_options(job, **fields):
    """``job`` with some of its options replaced."""
    return dataclasses.replace(job, options=dataclasses.replace(job.options, **fields))


def assert_same_result(a, b):
    assert a.shape == b.shape and a.settings == b.settings
    for x, y in zip(a.organs, b.organs):
        assert (x.name, x.label, x.region) == (y.name, y.label, y.region)
        assert x.boxes.keys() == y.boxes.keys() and all(np.array_equal(x.boxes[z], y.boxes[z]) for z in x.boxes)
        for name in ("box_region", "intensity", "ensemble", "uncertainty", "plain", "mask", "votes"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), name
        assert (x.prior is None) == (y.prior is None) and (x.prior is None or np.array_equal(x.prior, y.prior))
    for which in ("rectified", "ensemble", "plain"):
        assert np.array_equal(a.label_map(which), b.label_map(which))
    assert np.array_equal(a.uncertainty_map(), b.uncertainty_map())


def test_job_files_round_trip(tmp_path):
    job = small_job()
    jobs.save_job(job, tmp_path)
    again = jobs.load_job(tmp_path)
    assert np.array_equal(again.hu, job.hu) and again.settings == job.settings
    assert [(p.name, p.label) for p in again.prompts] == [("a", 1), ("b", 7)]
    assert all(np.array_equal(a.boxes[z], np.reshape(b.boxes[z], (-1, 4)))
               for a, b in zip(again.prompts, job.prompts) for z in a.boxes)
    assert again.options == job.options and (again.options.backbone, again.options.device) == ("bright", "auto")


def test_an_organ_in_two_parts_on_a_slice_keeps_both_boxes_through_the_job_and_its_result(tmp_path):
    job = small_job()
    two = np.array([[1.0, 1.0, 4.0, 4.0], [10.0, 1.0, 14.0, 4.0]])
    job.prompts[0].boxes = {**job.prompts[0].boxes, 1: two}
    jobs.save_job(job, tmp_path)
    assert np.array_equal(jobs.load_job(tmp_path).prompts[0].boxes[1], two)
    result = jobs.compute(job, loader=bright_in_box)
    running.save_result(result, tmp_path / "result.npz")
    assert np.array_equal(running.load_result(tmp_path / "result.npz").organs[0].boxes[1], two)


def test_a_saved_result_is_the_same_result_and_rerectifies_the_same(tmp_path):
    job = small_job()
    job.prompts[0].method = "unc-fnc"  # a built-in template's measured choice, which per-organ follows
    result = jobs.compute(job, loader=bright_in_box)
    running.save_result(result, tmp_path / "result.npz")
    loaded = running.load_result(tmp_path / "result.npz")
    assert_same_result(loaded, result)
    assert loaded.organs[0].rectification.method == "unc-fnc"
    for changes in ({"alpha_h": 1.0}, {"method": "fixed"}, {"method": "unc-fpc"}, {"method": "per-organ"}):
        result.rerectify(**changes)
        loaded.rerectify(**changes)
        assert np.array_equal(loaded.label_map(), result.label_map())


def test_the_in_process_job_reports_progress_and_its_result():
    job = running.InProcessJob(small_job(), bright_in_box)
    job.start()
    status = job.poll()
    assert status.state == "done" and status.fraction == 1.0 and status.finished
    assert_same_result(job.result(), jobs.compute(small_job(), loader=bright_in_box))


@pytest.mark.subprocess
def test_the_background_job_computes_the_same_result_in_another_process():
    job = running.BackgroundJob(small_job(), extra_arguments=STAND_IN)
    job.start()
    assert job.job is None  # the volume went to the worker, no second copy is kept
    status = job.wait(timeout=120)
    assert status.state == "done", (status.error, status.details)
    assert not job.folder.exists()  # the private folder is removed
    assert_same_result(job.result(), jobs.compute(small_job(), loader=bright_in_box))
    assert job.quality_context.kind == "given"  # the prompts were given, not localized


@pytest.mark.subprocess
def test_the_background_job_reports_progress_while_it_runs(tmp_path):
    job = running.BackgroundJob(small_job(), extra_arguments=STAND_IN)
    job.start()
    seen = set()
    while not job.poll().finished:
        seen.add(job.poll().message)
        time.sleep(0.01)
    seen.add(job.poll().message)
    assert "Done" in seen and job.poll().fraction == 1.0


@pytest.mark.subprocess
def test_a_user_error_in_the_worker_becomes_one_line_for_a_dialog():
    job = running.BackgroundJob(small_job(), extra_arguments=("--backbone-factory",
                                                           "URSAMSlicerLib.testing:failing_loader"))
    job.start()
    status = job.wait(timeout=120)
    assert status.state == "failed" and "does not exist" in status.error and "\n" not in status.error
    assert status.details == ""


@pytest.mark.subprocess
def test_a_crash_in_the_worker_is_reported_with_its_traceback():
    job = running.BackgroundJob(small_job(), extra_arguments=("--backbone-factory", "URSAMSlicerLib.testing:no_such"))
    job.start()
    status = job.wait(timeout=120)
    assert status.state == "failed" and "stopped unexpectedly" in status.error
    assert "AttributeError" in status.details and "no_such" in status.details


@pytest.mark.subprocess
def test_cancel_stops_the_worker_at_once_and_removes_its_files():
    job = running.BackgroundJob(small_job(),
                                extra_arguments=("--backbone-factory", "URSAMSlicerLib.testing:slow_loader"))
    job.start()
    time.sleep(0.5)
    process = job._process
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    assert process.poll() is not None  # the worker is gone
    assert job.poll().state == "cancelled" and not job.folder.exists()
    with pytest.raises(RuntimeError):
        job.result()


def test_start_returns_at_once_and_the_job_is_written_off_the_calling_thread(monkeypatch):
    """Writing the CT for the worker (150 MB for a 512 x 512 x 141 scan) must not freeze Slicer's GUI."""
    import threading

    release, writers = threading.Event(), []
    save_job = jobs.save_job

    def slow_save(job, folder):
        writers.append(threading.current_thread())
        release.wait(30)
        save_job(job, folder)

    monkeypatch.setattr(running, "save_job", slow_save)
    job = running.BackgroundJob(small_job(), extra_arguments=STAND_IN)
    started = time.monotonic()
    job.start()
    assert time.monotonic() - started < 5 and job.poll().state == "running"
    assert job.poll().message == "Handing the CT to the segmentation process" and job._process is None
    assert writers and writers[0] is not threading.main_thread()
    release.set()
    assert job.wait(timeout=120).state == "done"


def test_cancel_while_the_job_is_written_starts_no_worker(monkeypatch):
    import threading

    release = threading.Event()
    save_job = jobs.save_job
    monkeypatch.setattr(running, "save_job", lambda job, folder: release.wait(30) and save_job(job, folder))
    job = running.BackgroundJob(small_job(), extra_arguments=STAND_IN)
    job.start()
    threading.Timer(0.3, release.set).start()  # the write ends while cancel waits for it
    job.cancel()
    assert job.poll().state == "cancelled" and job._process is None and not job.folder.exists()


def test_a_job_that_cannot_be_written_fails_with_the_reason_and_details(monkeypatch):
    def full_disk(job, folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(running, "save_job", full_disk)
    job = running.BackgroundJob(small_job(), extra_arguments=STAND_IN)
    job.start()
    status = job.wait(timeout=30)
    assert status.state == "failed" and "No space left on device" in status.error and "\n" not in status.error
    assert "Traceback" in status.details and not job.folder.exists()


LAUNCHER = """\
import os, subprocess, sys
# Like CTK's AppLauncher (PythonSlicer): start the real interpreter as a child and wait for it.
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
with open(os.environ["URSAM_TEST_CHILD_PID"], "w") as file:
    file.write(str(child.pid))
sys.exit(child.wait())
"""


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_cancel_ends_the_launcher_and_the_interpreter_it_started(tmp_path):
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f"#!{sys.executable}\n" + LAUNCHER)
    launcher.chmod(0o755)
    pid_file = tmp_path / "child.pid"
    job = running.BackgroundJob(small_job(), python=str(launcher),
                             extra_arguments=("--backbone-factory", "URSAMSlicerLib.testing:slow_loader"),
                             environment={**os.environ, "URSAM_TEST_CHILD_PID": str(pid_file)})
    job.start()
    deadline = time.monotonic() + 60
    while not job.poll().message.startswith("Loading"):  # the child has read the job and is at work
        assert time.monotonic() < deadline and not job.poll().finished, "the stand-in launcher's child did not start"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    try:
        assert process_alive(child) and processes.tree_alive(job._process)
        job.cancel()
        assert job._process.poll() is not None  # the launcher
        deadline = time.monotonic() + 10
        while process_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(child), "the interpreter the launcher started still runs after Cancel"
        assert not processes.tree_alive(job._process, wait=5.0)
        assert job.poll().state == "cancelled" and not job.folder.exists()
    finally:
        if process_alive(child):
            os.kill(child, 9)  # the process this test started, so that it does not run for a minute


def test_the_in_process_job_stops_between_slices_when_cancelled():
    backbone = BrightInBox()
    job = running.InProcessJob(small_job(), lambda *args: backbone)
    job._cancelled = True  # as if Cancel was pressed before the first slice
    job.start()
    assert job.poll().state == "cancelled" and backbone.embedded == []


def test_the_backbone_is_loaded_once_per_process():
    loads = []

    def loader(name, checkpoint, device):
        loads.append(name)
        return BrightInBox()

    jobs.compute(small_job(), loader=loader)
    jobs.compute(small_job(num_aug=2), loader=loader)
    assert loads == ["bright"]


@pytest.mark.subprocess
def test_the_worker_imports_without_slicer_or_qt(tmp_path):
    """The worker runs in a plain Python (PythonSlicer): it must need neither slicer nor qt."""
    code = ("import sys, URSAMSlicerLib.jobs, URSAMSlicerLib.running, URSAMSlicerLib.regions, "
            "URSAMSlicerLib.catalogue; "
            "assert 'slicer' not in sys.modules and 'qt' not in sys.modules and 'torch' not in sys.modules")
    environment = {**os.environ, "PYTHONPATH": running.worker_pythonpath()}
    subprocess.run([sys.executable, "-c", code], check=True, env=environment, cwd=tmp_path)
    assert str(MODULE_DIR) in running.worker_pythonpath().split(os.pathsep)


def test_settings_survive_the_trip_whatever_their_values(tmp_path):
    settings = Settings(num_aug=7, ratio=0.123, seed=99, method="fixed", alpha_h=2.5, lower_bound="paper")
    job = with_options(small_job(), settings=settings, checkpoint="/w.pth", device="cuda:1", prompt_mode="box3d",
                       box_margin=BoxMargin((1.0, 2.0, 3.0), "voxel"), runtime="torch", embedding_cache=False)
    jobs.save_job(job, tmp_path)
    again = jobs.load_job(tmp_path)
    assert again.settings == settings and again.options == job.options
    assert again.options.box_margin == BoxMargin((1.0, 2.0, 3.0), "voxel")


# ---------------------------------------------------------------------------------------
# Jobs that localize their prompts from a template

def tiny_template(folder):
    """A template of one synthetic support with organs 'liver' (label 1) and 'spleen' (label 2)."""
    import SimpleITK as sitk

    from conftest import synthetic_ct
    from URSAMLib.template import build_template

    ct = synthetic_ct()
    labels = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    labels[1:5, 10:25, 12:30] = 1
    labels[1:3, 30:35, 35:40] = 2
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(ct)
    sitk.WriteImage(ct, str(folder / "ct.nrrd"))
    sitk.WriteImage(label_image, str(folder / "labels.nrrd"))
    return build_template([str(folder / "ct.nrrd")], [str(folder / "labels.nrrd")], {1: "liver", 2: "spleen"},
                          folder / "template")


def localizing_job(template_folder, temporary=False) -> jobs.Job:
    from conftest import synthetic_ct
    from URSAMLib import io

    ct = synthetic_ct()
    hu, _ = io.axial_array(ct)
    localization = jobs.TemplateLocalization(str(template_folder), {"liver": "Liver", "spleen": "Spleen"},
                                             jobs.ImageGeometry.of(ct), temporary=temporary)
    return jobs.Job(hu, [], options(settings=Settings(num_aug=2, ratio=0.0)), localization=localization)


def fake_localizer(found_box):
    """A localizer finding the liver in ``found_box`` and not the spleen (as registration would report)."""
    from URSAMLib.localize import Localization

    calls = []

    def localize(ct, template, organs, progress=None):
        calls.append((ct.GetSize(), list(organs)))
        progress(0.5, "Registering support ct")
        points = np.zeros((6, 3))
        return {"liver": Localization("liver", template.organs["liver"], points, box=found_box),
                "spleen": Localization("spleen", template.organs["spleen"], points, reason="outside the image")}

    localize.calls = calls
    return localize


def test_a_localization_survives_the_trip(tmp_path):
    from URSAMLib.prompts import BoxMargin

    job = localizing_job(tmp_path / "t", temporary=True)
    job.localization.margin = BoxMargin((2, 10, 10), "voxel")
    jobs.save_job(job, tmp_path)
    again = jobs.load_job(tmp_path)
    assert again.localization == job.localization and again.prompts == []


def test_a_template_to_build_in_the_job_survives_the_trip_and_is_built_there(tmp_path, monkeypatch):
    from URSAMLib import localize
    from URSAMLib.prompts import Box3D

    supports = tmp_path / "supports"
    supports.mkdir()
    tiny_template(supports)  # writes ct.nrrd and labels.nrrd there (and a template we do not use)
    folder = tmp_path / "to-build"
    folder.mkdir()
    job = localizing_job(folder, temporary=True)
    job.localization.build = jobs.TemplateBuild([str(supports / "ct.nrrd")], [str(supports / "labels.nrrd")],
                                                {1: "liver", 2: "spleen"})
    jobs.save_job(job, tmp_path)
    again = jobs.load_job(tmp_path)
    assert again.localization == job.localization
    monkeypatch.setitem(localize.LOCALIZERS, "registration", fake_localizer(Box3D(1, 4, 10, 24, 12, 29)))
    messages = []
    jobs.compute(again, lambda fraction, message: messages.append(message), loader=bright_in_box)
    assert (folder / "template.json").exists()  # built by the job, not by Slicer's GUI thread
    assert not (supports / "ct.nrrd").exists() and not (supports / "labels.nrrd").exists()  # exports removed
    assert "Localizing organs: building the template from the labelled CTs" in messages


def test_the_geometry_rebuilds_the_ct_from_its_axial_array():
    from conftest import synthetic_ct
    from URSAMLib import io

    ct = synthetic_ct(direction=np.diag([-1.0, 1.0, -1.0]))  # stored flipped: axial differs from stored
    hu, _ = io.axial_array(ct)
    rebuilt = jobs.ImageGeometry.of(ct).image(hu)
    assert np.array_equal(sitk_array(rebuilt), sitk_array(ct).astype(np.float32))
    assert rebuilt.GetOrigin() == ct.GetOrigin() and rebuilt.GetDirection() == ct.GetDirection()
    assert rebuilt.GetSpacing() == ct.GetSpacing()


def sitk_array(image):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def test_a_job_localizes_reports_the_organs_not_found_and_deletes_its_temporary_template(tmp_path, monkeypatch):
    from URSAMLib import localize
    from URSAMLib.prompts import Box3D

    template = tiny_template(tmp_path)
    localizer = fake_localizer(Box3D(1, 4, 10, 24, 12, 29))
    monkeypatch.setitem(localize.LOCALIZERS, "registration", localizer)
    messages = []
    localizing = localizing_job(template.folder)
    result = jobs.compute(localizing, lambda fraction, message: messages.append((fraction, message)),
                          loader=bright_in_box)
    assert localizer.calls == [((48, 40, 6), ["liver", "spleen"])]
    assert [o.name for o in result.organs] == ["Liver"]  # the user's names, not the template's
    assert localizing.not_found == {"Spleen": "outside the image"}
    # what the organs' predicted DSC is computed from, under the user's names
    context = localizing.quality_context
    assert context.kind == "automatic" and set(context.support_agreement) == {"Liver", "Spleen"}
    assert context.voxel_ml == pytest.approx(np.prod(localizing.localization.geometry.spacing) / 1000)
    assert set(context.typical_ml) == {"Liver", "Spleen"} and context.typical_ml["Liver"] > context.typical_ml["Spleen"]
    boxes = result.organs[0].boxes
    assert min(boxes) == 0 and max(boxes) == 5  # the found box, extended by 5 mm (2 slices of 2.5 mm)
    assert (0.15, "Localizing organs: Registering support ct") in messages  # half of the localization share
    segmenting = [f for f, m in messages if not m.startswith(("Loading", "Localizing"))]
    assert segmenting and min(segmenting) >= jobs.LOCALIZATION_SHARE

    job = running.InProcessJob(localizing_job(template.folder, temporary=True), bright_in_box)
    job.start()
    assert job.poll().state == "done" and job.not_found == {"Spleen": "outside the image"}
    assert not template.folder.exists()


def test_cancel_during_localization_stops_before_sam(tmp_path, monkeypatch):
    from URSAMLib import localize
    from URSAMLib.prompts import Box3D

    template = tiny_template(tmp_path)
    backbone = BrightInBox()
    job = running.InProcessJob(localizing_job(template.folder), lambda *args: backbone)
    localizer = fake_localizer(Box3D(1, 4, 10, 24, 12, 29))

    def cancelled_while_registering(ct, template, organs, progress=None):
        job.cancel()  # the user presses Cancel while the supports are registered
        return localizer(ct, template, organs, progress)

    monkeypatch.setitem(localize.LOCALIZERS, "registration", cancelled_while_registering)
    job.start()
    assert job.poll().state == "cancelled" and backbone.embedded == []
    assert template.folder.exists()  # a template folder of the user's is never deleted


def test_a_job_that_finds_no_organ_fails_with_the_reasons(tmp_path, monkeypatch):
    from URSAMLib import localize
    from URSAMLib.localize import Localization

    template = tiny_template(tmp_path)

    def finds_nothing(ct, template, organs, progress=None):
        return {o: Localization(o, template.organs[o], np.zeros((6, 3)), reason="outside the image") for o in organs}

    monkeypatch.setitem(localize.LOCALIZERS, "registration", finds_nothing)
    job = running.InProcessJob(localizing_job(template.folder, temporary=True), bright_in_box)
    job.start()
    status = job.poll()
    assert status.state == "failed" and "Liver: outside the image; Spleen: outside the image" in status.error
    assert not template.folder.exists()


# ---------------------------------------------------------------------------------------
# The progress file between the worker and the GUI

def test_the_progress_reader_tolerates_a_missing_partial_or_locked_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    assert running.read_progress(path) is None  # not written yet
    path.write_text('{"fraction": 0.5, "mess')  # a partial file (a writer without atomic replace)
    assert running.read_progress(path) is None
    path.write_text('{"fraction": 0.5}')
    assert running.read_progress(path) is None
    running._write_atomically(path, '{"fraction": 0.25, "message": "Slice 1 of 4"}')
    assert running.read_progress(path) == (0.25, "Slice 1 of 4")

    original = type(path).read_text

    def locked(self, *args, **kwargs):  # Windows: the worker is replacing it right now
        raise PermissionError(13, "The process cannot access the file")

    monkeypatch.setattr(type(path), "read_text", locked)
    assert running.read_progress(path) is None
    monkeypatch.setattr(type(path), "read_text", original)


def test_the_writer_retries_a_replace_refused_while_the_reader_holds_the_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    refusals = []
    real_replace = os.replace

    def replace(source, target):
        if len(refusals) < 3:  # Windows refuses while the GUI has the file open
            refusals.append(target)
            raise PermissionError(13, "Access is denied")
        real_replace(source, target)

    monkeypatch.setattr(running, "REPLACE_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(running.os, "replace", replace)
    running._write_atomically(path, '{"fraction": 1.0, "message": "Done"}')
    assert len(refusals) == 3 and running.read_progress(path) == (1.0, "Done")

    monkeypatch.setattr(running.os, "replace", lambda source, target: (_ for _ in ()).throw(PermissionError(13, "x")))
    with pytest.raises(PermissionError):  # held for good: the caller decides (progress skips one report)
        running._write_atomically(path, "{}")


# ---------------------------------------------------------------------------------------
# The model choices `ursam segment` has: checkpoint pin, precision, window, unverified weights

def test_the_pin_precision_and_window_survive_the_trip(tmp_path):
    job = with_options(small_job(), checkpoint="/w.pth", checkpoint_sha256="ab" * 32, precision="bfloat16",
                       window=(-100.0, 300.0))
    jobs.save_job(job, tmp_path)
    again = jobs.load_job(tmp_path).options
    assert (again.checkpoint_sha256, again.precision, again.window) == ("ab" * 32, "bfloat16", (-100.0, 300.0))


def test_the_job_sets_the_window_and_precision_and_asks_urSAMLib_for_the_pin(monkeypatch):
    from URSAMLib import backbones

    calls = []

    def load_backbone(name, checkpoint=None, device="auto", vit_config=None, checkpoint_sha256=None,
                      runtime="auto", precision="float32", warn=None):
        calls.append((name, checkpoint, checkpoint_sha256, runtime, precision))
        return BrightInBox()

    monkeypatch.setattr(backbones, "load_backbone", load_backbone)
    monkeypatch.setattr(job_module, "_BACKBONES", {})
    seen = []
    original = jobs.segment

    def segment(hu, prompts, backbone, settings, **kwargs):
        seen.append((tuple(backbone.window), backbone.precision))
        return original(hu, prompts, backbone, settings, **kwargs)

    monkeypatch.setattr(jobs, "segment", segment)
    jobs.compute(with_options(small_job(), checkpoint="/w.pth", checkpoint_sha256="cd" * 32,
                              window=(-50.0, 150.0)))
    jobs.compute(with_options(small_job(), checkpoint="/w.pth", checkpoint_sha256="cd" * 32))
    jobs.compute(with_options(small_job(), checkpoint="/w.pth", checkpoint_sha256="cd" * 32, precision="bfloat16"))
    # through URSAMLib.job, as `ursam segment` loads it: with the pin, the runtime compiled for the precision
    assert calls == [("bright", "/w.pth", "cd" * 32, "auto", "float32"),
                     ("bright", "/w.pth", "cd" * 32, "auto", "bfloat16")]
    # the next job on the kept model: the model's own window again
    assert seen == [((-50.0, 150.0), "float32"), (BrightInBox.window, "float32"), (BrightInBox.window, "bfloat16")]


def test_unverified_weights_reach_the_user_as_a_warning_from_the_worker():
    job = running.BackgroundJob(small_job(), extra_arguments=("--backbone-factory",
                                                           "URSAMSlicerLib.testing:unverified_loader"))
    job.start()
    assert job.wait(timeout=120).state == "done"
    assert len(job.warnings) == 1 and "is not a checkpoint URSAM can verify" in job.warnings[0]
    assert "ab" * 32 in job.warnings[0] and "Warning:" in job.log()
    verified = running.BackgroundJob(small_job(), extra_arguments=STAND_IN)
    verified.start()
    assert verified.wait(timeout=120).state == "done" and verified.warnings == []
