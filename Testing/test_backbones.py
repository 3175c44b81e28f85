"""URSAMLib.backbones: preprocessing, box transforms, the registry, and each model's code path.

SAM/MedSAM ViT-B weights are not available offline, so their path is exercised with a tiny,
randomly initialised ViT built from segment_anything.modeling; LiteMedSAM runs for real.
"""
import numpy as np
import pytest
import torch

from URSAMLib import backbones
from URSAMLib.backbones import Preprocessing, SamViTConfig, build_sam_vit, load_backbone, window_ct
from URSAMLib.errors import URSAMError

TINY_VIT = SamViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_sam.pth"
    torch.save(build_sam_vit(TINY_VIT).state_dict(), path)
    return path


def test_ct_window_maps_hu_linearly_and_clips():
    assert np.allclose(window_ct(np.array([-1000, -500, 250, 1000, 3000]), (-500, 1000)), [0, 0, 0.5, 1, 1])


def test_longest_side_boxes_round_trip():
    prep = Preprocessing(input_size=256, resize="longest")
    assert prep.resized_shape(101, 122) == (212, 256)
    boxes = np.array([[0, 0, 121, 100], [10.5, 20, 30, 40]])
    model = prep.boxes_to_model(boxes, (101, 122))
    assert np.allclose(model[0], [0, 0, 121 * 256 / 122, 100 * 256 / 122])
    assert np.allclose(prep.boxes_from_model(model, (101, 122)), boxes)


def test_square_resize_scales_x_and_y_separately():
    prep = Preprocessing(input_size=1024, resize="square")
    assert prep.resized_shape(100, 400) == (1024, 1024)
    model = prep.boxes_to_model(np.array([[40, 10, 80, 50]]), (100, 400))
    assert np.allclose(model, [[40 * 2.56, 10 * 10.24, 80 * 2.56, 50 * 10.24]])
    assert np.allclose(prep.boxes_from_model(model, (100, 400)), [[40, 10, 80, 50]])


def test_catalogue_entries_name_registered_architectures():
    entries = backbones.catalogue()
    assert {"litemedsam", "sam-vit-b", "medsam-vit-b"} <= set(entries)
    for entry in entries.values():
        assert entry["architecture"] in backbones.ARCHITECTURES
        assert len(entry["window"]) == 2 and entry["preprocessing"]["resize"] in ("longest", "square")


def test_sam_vit_b_path_matches_segment_anythings_own_predictor(tiny_checkpoint):
    from segment_anything import SamPredictor

    backbone = load_backbone("sam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1024, 1024), dtype=np.uint8)  # no resizing on either side
    box = np.array([200.0, 300.0, 600.0, 700.0])
    ours = backbone.decode(backbone.embed(image[None] / 255.0), box[None], image.shape)[0]

    predictor = SamPredictor(backbone.model)
    predictor.set_image(np.repeat(image[..., None], 3, axis=2))
    logits, _, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
    expected = torch.sigmoid(torch.from_numpy(logits[0])).numpy()
    assert np.abs(ours - expected).max() < 1e-4


def test_sam_vit_b_decodes_many_boxes_at_slice_resolution(tiny_checkpoint):
    backbone = load_backbone("sam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT)
    slices = np.random.default_rng(1).random((2, 90, 130)).astype(np.float32)
    embeddings = backbone.embed(slices)
    assert embeddings.shape == (2, 256, 64, 64)
    probabilities = backbone.decode(embeddings[1:2], np.array([[10, 10, 60, 50], [0, 0, 129, 89], [5, 5, 6, 6]]),
                                    (90, 130))
    assert probabilities.shape == (3, 90, 130) and probabilities.dtype == np.float32
    assert 0 <= probabilities.min() and probabilities.max() <= 1
    assert backbone.window == (-500, 1000)


def test_images_of_different_sizes_embed_in_one_call_as_each_would_alone(tiny_checkpoint):
    backbone = load_backbone("sam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT)
    rng = np.random.default_rng(2)
    views = [rng.random((90, 130)).astype(np.float32), rng.random((40, 40)).astype(np.float32)]  # zoomed views
    together = backbone.embed(views)
    assert together.shape == (2, 256, 64, 64)
    for row, image in enumerate(views):
        assert torch.allclose(together[row], backbone.embed(image[None])[0], atol=1e-5)


def test_medsam_vit_b_path_stretches_to_a_square(tiny_checkpoint):
    backbone = load_backbone("medsam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT)
    assert backbone.preprocessing.resize == "square" and backbone.preprocessing.pixel_mean is None
    probabilities = backbone.decode(backbone.embed(np.zeros((1, 64, 128), np.float32)),
                                    np.array([[10, 10, 100, 50]]), (64, 128))
    assert probabilities.shape == (1, 64, 128)


@pytest.mark.model
def test_litemedsam_loads_its_verified_packaged_weights_and_segments_a_real_liver(abdomen):
    from URSAMLib import io

    backbone = load_backbone("litemedsam", device="cpu")
    assert "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76" in backbone.weights
    ct = io.read_ct(abdomen / "ct_small.nii.gz")
    hu, _ = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(abdomen / "labels_small.nii.gz", ct), np.uint16)
    z = 20
    liver = labels[z] == 5
    rows, cols = np.flatnonzero(liver.any(1)), np.flatnonzero(liver.any(0))
    box = np.array([[cols[0], rows[0], cols[-1], rows[-1]]])
    probability = backbone.decode(backbone.embed(window_ct(hu[z:z + 1], backbone.window)), box, liver.shape)[0]
    predicted = probability > 0.5
    assert 2 * (predicted & liver).sum() / (predicted.sum() + liver.sum()) > 0.85


def test_weights_for_another_architecture_are_refused(tiny_checkpoint):
    with pytest.raises(URSAMError, match="does not hold weights for LiteMedSAM"):
        load_backbone("litemedsam", checkpoint=tiny_checkpoint, device="cpu")


def test_a_damaged_official_checkpoint_is_refused_before_loading(tmp_path):
    fake = tmp_path / "sam_vit_b_01ec64.pth"  # the official name, but 10 bytes
    fake.write_bytes(b"0123456789")
    with pytest.raises(URSAMError, match="truncated"):
        load_backbone("sam-vit-b", checkpoint=fake, device="cpu")


@pytest.mark.model
def test_a_checkpoint_the_catalogue_cannot_vouch_for_is_verified_against_a_pinned_sha256(tiny_checkpoint):
    from URSAMLib.weights import sha256_of

    digest = sha256_of(tiny_checkpoint)
    unpinned = load_backbone("medsam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT)
    assert not unpinned.weights_verified and unpinned.weights_sha256 == digest
    pinned = load_backbone("medsam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT,
                           checkpoint_sha256=digest)
    assert pinned.weights_verified
    with pytest.raises(URSAMError, match="fails its SHA-256 check"):
        load_backbone("medsam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT,
                      checkpoint_sha256="0" * 64)
    assert load_backbone("litemedsam", device="cpu").weights_verified  # the packaged file, checked


def test_missing_weights_explain_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("URSAM_CACHE", str(tmp_path))
    with pytest.raises(URSAMError, match="ursam download-weights sam-vit-b"):
        load_backbone("sam-vit-b", device="cpu")
    with pytest.raises(URSAMError, match="medsam_vit_b.pth"):
        load_backbone("medsam-vit-b", device="cpu")
    with pytest.raises(URSAMError, match="Unknown backbone"):
        load_backbone("sam-vit-z")
    with pytest.raises(URSAMError, match="does not exist"):
        load_backbone("litemedsam", checkpoint=tmp_path / "nope.pth")


def test_device_resolution():
    assert backbones.resolve_device("cpu") == "cpu"
    assert backbones.resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(URSAMError, match="Unknown device"):
        backbones.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(URSAMError, match="not available"):
            backbones.resolve_device("cuda")


def test_bfloat16_autocast_gives_nearly_the_same_probabilities(tiny_checkpoint):
    backbone = load_backbone("sam-vit-b", checkpoint=tiny_checkpoint, device="cpu", vit_config=TINY_VIT)
    slices = np.random.default_rng(2).random((1, 64, 64)).astype(np.float32)
    box = np.array([[10, 10, 50, 40]])
    full = backbone.decode(backbone.embed(slices), box, (64, 64))
    backbone.precision = "bfloat16"
    half = backbone.decode(backbone.embed(slices), box, (64, 64))
    assert half.dtype == np.float32 and not np.array_equal(full, half)  # it really ran in bfloat16
    assert np.abs(full - half).max() < 0.1
