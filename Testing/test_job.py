"""URSAMLib.job: the model kept loaded across jobs (``ursam batch`` cases, Slicer runs)."""
from __future__ import annotations

from dataclasses import replace

from stand_ins import StandInBackbone
from URSAMLib import job as job_module
from URSAMLib.job import SegmentJob, cached_backbone


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
