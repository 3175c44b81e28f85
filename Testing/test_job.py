"""URSAMLib.job: a job's computation without its outputs, and the model kept loaded across jobs
(``ursam batch`` cases, Slicer runs)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from stand_ins import StandInBackbone, use_stand_in
from URSAMLib import io
from URSAMLib import job as job_module
from URSAMLib.job import SegmentJob, cached_backbone, run_segment_job, segment_job_ct


def test_two_jobs_on_one_model_load_it_once_and_a_window_stays_with_its_job(monkeypatch):
    monkeypatch.setattr(job_module, "_BACKBONES", {})
    loads = []

    def loader(name, checkpoint, device):
        loads.append((name, checkpoint, device))
        return StandInBackbone()

    # PyTorch runs either precision, so both jobs ask for the same loaded model
    first = SegmentJob(ct="a.nii.gz", output="a", checkpoint="/w.pth", window=(-50.0, 150.0), precision="bfloat16",
                       runtime="torch")
    second = replace(first, ct="b.nii.gz", output="b", window=None, precision="float32")
    windowed = cached_backbone(first, loader)
    plain = cached_backbone(second, loader)
    assert loads == [("litemedsam", "/w.pth", "auto")]  # one load for both jobs
    assert (windowed.window, windowed.precision) == ((-50.0, 150.0), "bfloat16")
    # the next job gets the model's own window and its own precision, not the first job's
    assert (tuple(plain.window), plain.precision) == (tuple(StandInBackbone.window), "float32")
    assert windowed.window == (-50.0, 150.0)  # and the first job's copy keeps its own
    assert cached_backbone(replace(second, checkpoint="/other.pth"), loader) is not None
    assert loads[1:] == [("litemedsam", "/other.pth", "auto")]  # another model: loaded, in place of the first
    cached_backbone(second, loader)
    assert len(loads) == 3


def test_the_job_loader_loads_with_the_pin_and_the_runtime_once_per_runtime(monkeypatch):
    from URSAMLib import backbones

    monkeypatch.setattr(job_module, "_BACKBONES", {})
    calls = []

    def load_backbone(name, checkpoint=None, device="auto", checkpoint_sha256=None, runtime="auto",
                      precision="float32", warn=None):
        calls.append((checkpoint_sha256, runtime, precision))
        return StandInBackbone()

    monkeypatch.setattr(backbones, "load_backbone", load_backbone)
    job = SegmentJob(ct="a.nii.gz", output="a", checkpoint="/w.pth", checkpoint_sha256="cd" * 32)
    cached_backbone(job)
    cached_backbone(replace(job, ct="b.nii.gz"))
    cached_backbone(replace(job, precision="bfloat16"))  # a runtime's engine is compiled for one precision
    assert calls == [("cd" * 32, "auto", "float32"), ("cd" * 32, "auto", "bfloat16")]


def test_a_jobs_computation_writes_nothing_and_is_what_the_job_then_writes(tmp_path, monkeypatch, abdomen):
    use_stand_in(monkeypatch)
    job = SegmentJob(str(abdomen / "ct_small.nii.gz"), str(tmp_path / "out"),
                     prompt_labels=str(abdomen / "labels_small.nii.gz"), classes=str(abdomen / "classes.json"),
                     organs="liver,spleen,kidney_left")
    ct = io.read_ct(job.ct)
    hu, frame = io.axial_array(ct)
    computed = segment_job_ct(job, ct, hu, frame)
    assert not (tmp_path / "out").exists()
    assert {organ.name for organ in computed.result.organs} == {"liver", "spleen", "kidney_left"}
    summary = run_segment_job(job)
    written = frame.to_axial(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "rectified.nii.gz"))))
    assert np.array_equal(written, computed.result.label_map("rectified")) and written.any()
    assert set(summary["organs"]) == {"liver", "spleen", "kidney_left"}
