"""URSAMLib.localize.medlam: the learned MedLAM-style localizer.

Geometry (sampler offsets, RDR steps, MSS matching) is checked on synthetic volumes with a
stand-in network whose answers are exact, so a sign or unit error shows as a wrong point.
Training runs a tiny network for a few steps on two real head-and-neck CTs: the loss must
fall, a resumed run must end bit-identical to an uninterrupted one, and the files must load
with ``weights_only=True`` and localize every template organ inside the image.
"""
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from URSAMLib import io
from URSAMLib.cli import main
from URSAMLib.errors import URSAMError
from URSAMLib.localize import LOCALIZERS, Localization
from URSAMLib.localize.medlam.infer import (PatchEncoder, extract_patches, load_weights, localize_points, normalize_hu,
                             read_payload)
from URSAMLib.localize.medlam.net import MedLAMConfig, build_network
from URSAMLib.localize.medlam.train import (PatchPairSampler, TrainSettings, checkpoint_path, find_images,
                                   load_training_volume, train, training_loss, virtual_patch)
from URSAMLib.template import build_template

TINY = MedLAMConfig(width=8, patch=32)
TINY_SETTINGS = TrainSettings(steps=24, batch=2, learning_rate=2e-3, seed=3, checkpoint_every=12, anchors=8,
                              near_fraction=1.0, near_range=10)


# ---------------------------------------------------------------------------------------
# Geometry on synthetic volumes.

def blob_volume(shape=(48, 48, 48), centre=(24, 24, 24)) -> np.ndarray:
    """HU volume: air, a soft-tissue cube around ``centre`` (the 'body'), a bright Gaussian blob at it."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = np.full(shape, -1000.0, dtype=np.float32)
    volume[tuple(slice(c - 6, c + 7) for c in centre)] = 0.0
    volume += 3000.0 * np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 2.0 ** 2))
    return volume.astype(np.int16)


def centroid(patch: np.ndarray) -> np.ndarray:
    weights = np.clip(patch - 0.7, 0, None)  # the blob only (normalised soft tissue is 0.5)
    return (np.argwhere(np.ones_like(patch, bool)) * weights.reshape(-1, 1)).sum(0) / weights.sum()


def test_sampler_offsets_point_from_patch_a_to_patch_b_in_virtual_voxels():
    # The blob is in both patches of every near pair: where it appears in a and in b tells the
    # true offset a -> b. A reversed sign would be off by twice the offset.
    config = MedLAMConfig(width=4, patch=32)
    settings = TrainSettings(batch=4, near_fraction=1.0, near_range=6, seed=1)
    sampler = PatchPairSampler([blob_volume()], config, settings)
    checked = 0
    for step in range(3):
        batch = sampler.batch(step)
        for a, b, offset in zip(batch.patches_a, batch.patches_b, batch.offsets):
            assert np.abs(offset).max() <= 6
            np.testing.assert_allclose(centroid(a) - centroid(b), offset, atol=0.35)
            checked += int(np.abs(offset).sum() > 0)
    assert checked >= 8


def test_virtual_patch_scales_around_its_centre():
    volume = blob_volume()
    plain = virtual_patch(volume, np.array([24, 24, 24]), np.ones(3), 32)
    assert np.allclose(plain, extract_patches(volume.astype(np.float32), np.array([[24, 24, 24]]), 32)[0])
    # Scale 0.5: virtual voxel 48 is volume voxel 24, and the blob looks twice as wide.
    zoomed = virtual_patch(volume, np.array([48, 48, 48]), np.full(3, 0.5), 32)
    assert np.unravel_index(np.argmax(zoomed), zoomed.shape) == (16, 16, 16)
    assert (zoomed > 1000).sum() > 4 * (plain > 1000).sum()


class OracleNet(nn.Module):
    """Stands in for a perfectly trained network on volumes with one bright marker voxel.

    RDR vector: ``-(marker's place in the patch - centre) * 3 mm / scale`` (so the difference of
    two vectors is the exact offset); one feature map at stride 1 holding each voxel's 3x3x3
    neighbourhood of intensities (unique in random noise)."""

    def __init__(self, patch=32):
        super().__init__()
        self.config = MedLAMConfig(width=1, patch=patch)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, patches):
        flat = patches.reshape(len(patches), -1).argmax(1)
        where = torch.stack(torch.unravel_index(flat, patches.shape[2:]), 1).float()
        positions = -(where - self.config.patch // 2) * self.config.spacing_mm / self.config.distance_scale_mm
        neighbourhoods = nn.functional.pad(patches, (1,) * 6).unfold(2, 3, 1).unfold(3, 3, 1).unfold(4, 3, 1)
        features = neighbourhoods.reshape(*patches.shape[:1], *patches.shape[2:], 27).permute(0, 4, 1, 2, 3)
        return positions, [features - features.mean(1, keepdim=True)]


@pytest.fixture()
def shifted_pair():
    rng = np.random.default_rng(0)
    query = rng.normal(0, 1, (60, 64, 56)).astype(np.float32)
    query[30, 34, 26] = 50.0  # the marker
    shift = np.array([5, -3, 7])
    support = np.roll(query, shift, axis=(0, 1, 2))  # support voxel v is query voxel v - shift
    points = np.array([[35, 31, 33], [29, 40, 30], [38, 28, 36.4]])  # near the support's marker
    return query, support, shift, points


@pytest.mark.parametrize("iterations, radius", [(1, 0), (2, 0), (2, 3)])
def test_rdr_moves_to_the_support_points_counterpart(shifted_pair, iterations, radius):
    query, support, shift, points = shifted_pair
    found = localize_points(PatchEncoder(OracleNet()), query, support, points, start=np.array([20, 20, 20]),
                            iterations=iterations, radius=radius)
    np.testing.assert_array_equal(found, np.rint(points) - shift)


def test_mss_alone_finds_the_point_within_its_radius(shifted_pair):
    query, support, shift, points = shifted_pair
    truth = np.rint(points[0]) - shift
    start = truth + np.array([3, -4, 2])  # no RDR step: the search starts 3-4 voxels off
    found = localize_points(PatchEncoder(OracleNet()), query, support, points[:1], start, iterations=0, radius=5)
    np.testing.assert_array_equal(found[0], truth)
    far = localize_points(PatchEncoder(OracleNet()), query, support, points[:1], start, iterations=0, radius=2)
    assert not np.array_equal(far[0], truth)  # out of reach of a smaller neighbourhood


# ---------------------------------------------------------------------------------------
# Training a tiny network on real CT.

def ct_paths(head_neck, numbers=(4, 13), split="train"):
    return [head_neck / split / f"pt_{n}_ct.nii.gz" for n in numbers]


@pytest.fixture(scope="module")
def straight_run(head_neck, tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    history = train(ct_paths(head_neck), folder / "w.pth", TINY_SETTINGS, TINY)
    return folder / "w.pth", history


@pytest.mark.model
@pytest.mark.slow
def test_training_loss_falls(head_neck, straight_run):
    # Measured on the same held-out pairs before and after training: batch-to-batch noise
    # would hide a 24-step trend in the training history itself.
    weights, history = straight_run
    assert [h[0] for h in history] == list(range(1, 25)) and np.all(np.isfinite(history))
    volumes = [load_training_volume(p) for p in ct_paths(head_neck)]
    held_out = PatchPairSampler(volumes, TINY, replace(TINY_SETTINGS, batch=8))
    batches = [held_out.batch(10_000 + k) for k in range(2)]  # steps the run never drew
    torch.manual_seed(TINY_SETTINGS.seed)
    initial, trained = build_network(TINY), load_weights(weights)
    with torch.no_grad():
        before = np.mean([training_loss(initial, b, TINY_SETTINGS)[1:] for b in batches], axis=0)
        after = np.mean([training_loss(trained, b, TINY_SETTINGS)[1:] for b in batches], axis=0)
    assert after.sum() < 0.9 * before.sum(), (before, after)  # RDR + MSS
    assert after[1] < 0.9 * before[1], (before, after)  # MSS on its own


@pytest.mark.model
@pytest.mark.slow
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(head_neck, straight_run, tmp_path):
    straight_weights, straight_history = straight_run
    output = tmp_path / "w.pth"
    train(ct_paths(head_neck), output, replace(TINY_SETTINGS, steps=12), TINY)
    assert read_payload(checkpoint_path(output))["step"] == 12
    resumed_history = train(ct_paths(head_neck), output, TINY_SETTINGS, resume=checkpoint_path(output))
    assert [h[0] for h in resumed_history] == list(range(13, 25))
    np.testing.assert_allclose(np.array(resumed_history), np.array(straight_history[12:]), rtol=1e-6)
    resumed, straight = read_payload(output)["model"], read_payload(straight_weights)["model"]
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_processes_draw_the_same_batches(head_neck, straight_run, tmp_path):
    # Patches drawn ahead by 2 processes: the same steps, losses and weights as drawn in-process.
    straight_weights, straight_history = straight_run
    history = train(ct_paths(head_neck), tmp_path / "w.pth", TINY_SETTINGS, TINY, workers=2)
    np.testing.assert_allclose(np.array(history), np.array(straight_history), rtol=1e-6)
    mine, straight = read_payload(tmp_path / "w.pth")["model"], read_payload(straight_weights)["model"]
    assert all(torch.equal(mine[k], straight[k]) for k in straight)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_with_workers_stops_cleanly_and_keeps_the_checkpoint(head_neck, tmp_path):
    # A terminal's Ctrl-C reaches the whole process group, workers included: one line, no traceback.
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, sigint_as_in_a_terminal

    weights = tmp_path / "w.pth"
    command = [sys.executable, "-c", "import sys; from URSAMLib.cli import main; sys.exit(main(sys.argv[1:]))",
               "train-localizer", "--images", *map(str, ct_paths(head_neck)), "-o", str(weights), "--steps",
               "100000", "--batch", "1", "--width", "2", "--checkpoint-every", "1", "--workers", "2", "--quiet",
               "--device", "cpu"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT,
                               preexec_fn=sigint_as_in_a_terminal)
    deadline = time.monotonic() + 120
    while not checkpoint_path(weights).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ursam: cancelled"), err
    assert read_payload(checkpoint_path(weights))["step"] >= 1 and not weights.exists()


@pytest.mark.model
def test_resuming_with_other_settings_or_images_is_refused(head_neck, straight_run, tmp_path):
    checkpoint = checkpoint_path(straight_run[0])
    with pytest.raises(URSAMError, match="other settings"):
        train(ct_paths(head_neck), tmp_path / "w.pth", replace(TINY_SETTINGS, seed=4), resume=checkpoint)
    with pytest.raises(URSAMError, match="other images"):
        train(ct_paths(head_neck, (4, 17)), tmp_path / "w.pth", TINY_SETTINGS, resume=checkpoint)
    with pytest.raises(URSAMError, match="without --width"):
        train(ct_paths(head_neck), tmp_path / "w.pth", TINY_SETTINGS, MedLAMConfig(width=6, patch=32),
              resume=checkpoint)


@pytest.mark.model
def test_weights_and_checkpoint_are_plain_tensors_and_types(straight_run):
    weights = straight_run[0]
    for path in (weights, checkpoint_path(weights)):
        payload = torch.load(path, weights_only=True)  # refuses anything but tensors and plain types
        assert payload["format"] == "ursam-medlam" and MedLAMConfig.from_dict(payload["config"]) == TINY
    checkpoint = torch.load(checkpoint_path(weights), weights_only=True)
    assert checkpoint["step"] == 24 and checkpoint["optimizer"]["state"]
    assert checkpoint["settings"]["seed"] == 3 and checkpoint["images"] == ["pt_4_ct.nii.gz", "pt_13_ct.nii.gz"]
    model = load_weights(weights)
    assert not model.training
    reference = build_network(TINY)
    reference.load_state_dict(torch.load(weights, weights_only=True)["model"])
    patch = torch.rand(1, 1, 32, 32, 32)
    assert torch.equal(model(patch)[0], reference.eval()(patch)[0])


@pytest.fixture(scope="module")
def hn_template(head_neck, tmp_path_factory):
    images = [str(p) for p in ct_paths(head_neck)]
    labels = [p.replace("_ct.nii.gz", "_oar.nii.gz") for p in images]
    return build_template(images, labels, io.read_classes(head_neck / "classes.json"),
                          tmp_path_factory.mktemp("t") / "hn", organs=["Brainstem", "Mandible", "RightParotid"])


@pytest.mark.model
@pytest.mark.slow
def test_the_medlam_localizer_places_every_organ_inside_the_image(head_neck, hn_template, straight_run):
    ct = io.read_ct(head_neck / "validation" / "pt_201_ct.nii.gz")
    shape = io.AxialFrame.of(ct).shape
    messages = []
    found = LOCALIZERS["medlam"](ct, hn_template, None, progress=lambda f, m: messages.append((f, m)),
                                 weights=str(straight_run[0]), device="cpu")
    assert set(found) == set(hn_template.organs)
    for organ, result in found.items():
        assert isinstance(result, Localization) and result.label == hn_template.organs[organ]
        assert result.points.shape == (6, 3)
        assert np.all(result.points > -0.5) and np.all(result.points < np.array(shape) - 0.5), organ
        assert result.box is not None and 0 < result.agreement <= 1
        assert len(result.support_boxes) == 2
    assert messages[-1] == (1.0, "Localized") and len(messages) == 3


def test_missing_damaged_or_foreign_weights_are_user_errors(head_neck, hn_template, tmp_path):
    ct = sitk.ReadImage(str(ct_paths(head_neck)[0]))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, foreign)
    misfit = tmp_path / "misfit.pth"
    payload = {"format": "ursam-medlam", "version": 1, "config": MedLAMConfig(width=4, patch=32).as_dict(),
               "model": build_network(MedLAMConfig(width=6, patch=32)).state_dict()}
    torch.save(payload, misfit)
    code = tmp_path / "code.pth"
    torch.save({"format": "ursam-medlam", "version": 1, "sneaky": nn.Linear(2, 2)}, code)  # a pickled module
    for path, message in [(tmp_path / "absent.pth", "do not exist"), (garbage, "Could not load"),
                          (foreign, "not a MedLAM weights file"), (misfit, "does not fit"),
                          (code, "Could not load")]:
        with pytest.raises(URSAMError, match=message):
            LOCALIZERS["medlam"](ct, hn_template, weights=str(path))


def test_segment_with_medlam_and_missing_weights_stops_before_sam(head_neck, hn_template, tmp_path, capsys):
    ct = str(head_neck / "validation" / "pt_201_ct.nii.gz")
    missing = tmp_path / "none.pth"
    code = main(["segment", ct, "-o", str(tmp_path / "out"), "--template", str(hn_template.folder),
                 "--localizer", "medlam", "--quiet", "--localizer-weights", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and "train-localizer" in err and str(missing) in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_without_weights_medlam_uses_the_shipped_ones(head_neck, hn_template, monkeypatch):
    from URSAMLib import builtin
    from URSAMLib.localize.medlam import infer as medlam

    loaded = []
    monkeypatch.setattr(medlam, "load_weights", lambda path, device: loaded.append(path) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        LOCALIZERS["medlam"](io.read_ct(head_neck / "validation" / "pt_201_ct.nii.gz"), hn_template)
    assert loaded == [builtin.localizer_weights()]


def test_training_images_from_folders_and_label_maps_refused(head_neck, tmp_path):
    found = find_images([head_neck / "train"], "pt_1*_ct.nii.gz")
    assert found and all(p.name.startswith("pt_1") and p.name.endswith("_ct.nii.gz") for p in found)
    with pytest.raises(URSAMError, match="label map"):
        load_training_volume(head_neck / "train" / "pt_4_oar.nii.gz")
    with pytest.raises(URSAMError, match="no image file"):
        find_images([tmp_path])
    volume = load_training_volume(ct_paths(head_neck)[0])
    assert volume.dtype == np.int16 and (volume > -500).mean() > 0.2  # cropped to the body


def test_normalisation_maps_air_to_zero():
    assert normalize_hu(np.array([-2000.0, -1000.0, 0.0, 1000.0, 3000.0]), (-1000.0, 1000.0)).tolist() == \
        [0.0, 0.0, 0.5, 1.0, 1.0]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.subprocess
def test_train_localizer_command(head_neck, tmp_path, capsys, monkeypatch):
    weights = tmp_path / "m.pth"
    args = ["train-localizer", "--images", *map(str, ct_paths(head_neck)), "-o", str(weights), "--steps", "2",
            "--batch", "1", "--width", "2", "--checkpoint-every", "1", "--quiet"]
    assert main(args) == 0
    assert weights.is_file() and checkpoint_path(weights).is_file() and "--localizer medlam" in capsys.readouterr().out
    assert main(args) == 2 and "exists" in capsys.readouterr().err  # no silent overwrite
    resume = args + ["--steps", "3", "--resume", str(checkpoint_path(weights)), "--workers", "1"]
    assert main(resume) == 0 and read_payload(checkpoint_path(weights))["step"] == 3
    code = main(resume + ["--seed", "9"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ursam: error:") and err.count("\n") == 1
    defaults = tmp_path / "d.pth"  # no --width: the default network
    assert main(["train-localizer", "--images", *map(str, ct_paths(head_neck)), "-o", str(defaults), "--steps", "1",
                 "--batch", "1", "--quiet"]) == 0
    assert MedLAMConfig.from_dict(read_payload(defaults)["config"]) == MedLAMConfig()
    monkeypatch.setenv("URSAM_CACHE", str(tmp_path / "cache"))  # the default -o
    assert main(["train-localizer", "--images", str(tmp_path / "none.nii.gz"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
