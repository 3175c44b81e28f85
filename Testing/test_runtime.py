"""URSAMLib.runtime: LiteMedSAM exported to ONNX and run by OpenVINO / ONNX Runtime.

The real LiteMedSAM weights on a real abdomen-ts slice: an engine's masks must be PyTorch's. Then
what happens when a runtime is missing, its cache is corrupt or it fails to build: PyTorch runs,
with one warning line.
"""
import json
import sys

import numpy as np
import pytest

from URSAMLib import io, runtime
from URSAMLib.backbones import load_backbone, window_ct
from URSAMLib.errors import URSAMError
from URSAMLib.prompts import prompts_from_labels

RUNTIME_PACKAGES = ("openvino", "onnxruntime", "onnx")


@pytest.fixture(scope="module")
def torch_backbone():
    return load_backbone("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ursam-cache")


@pytest.fixture(scope="module")
def abdomen_slice(abdomen):
    """The abdomen-ts slice with the most organs, windowed, and a box per organ on it."""
    ct = io.read_ct(abdomen / "ct.nii.gz")
    hu, _ = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(abdomen / "labels.nii.gz", ct), np.uint16)
    z = int(np.argmax([len(np.unique(s)) for s in labels]))
    classes = io.read_classes(abdomen / "classes.json")
    prompts, _ = prompts_from_labels(labels[z:z + 1], classes, "slice")
    boxes = np.array([p.boxes[0][0] for p in prompts])  # each organ's largest part on the slice
    assert len(boxes) >= 5
    return hu[z], boxes


@pytest.fixture
def blocked(monkeypatch):
    """Make the runtime packages unimportable, as where they are not installed."""
    for name in RUNTIME_PACKAGES:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("name", list(runtime.RUNTIMES))
def test_runtime_masks_equal_pytorchs_on_a_real_slice(name, torch_backbone, cache, abdomen_slice):
    pytest.importorskip(name)
    hu, boxes = abdomen_slice
    engine_backbone = load_backbone("litemedsam", device="cpu")
    warnings = []
    assert runtime.attach_runtime(engine_backbone, name, cache, warnings.append) == name, warnings
    assert engine_backbone.runtime == name and not warnings
    windowed = window_ct(hu[None], torch_backbone.window)
    reference_embedding = torch_backbone.embed(windowed)
    embedding = engine_backbone.embed(windowed)
    assert embedding.shape == reference_embedding.shape == (1, 256, 64, 64)
    assert float((embedding - reference_embedding).abs().max()) < 1e-4
    for count in (1, 4, len(boxes)):  # the decoder graph takes any number of boxes
        reference = torch_backbone.decode(reference_embedding, boxes[:count], hu.shape)
        probability = engine_backbone.decode(reference_embedding, boxes[:count], hu.shape)
        assert probability.shape == reference.shape == (count, *hu.shape)
        assert np.abs(probability - reference).max() < 1e-4
        # the masks: identical except where PyTorch itself is within 1e-4 of the threshold
        differ = (probability > 0.5) != (reference > 0.5)
        assert not np.any(differ & (np.abs(reference - 0.5) > 1e-4))
        assert (reference > 0.5).sum() > 100 * count  # real organs, not empty masks
    # on the next load the cache is used: nothing exported again
    built = sorted(p.name for p in runtime.cache_folder(engine_backbone, name, runtime.RUNTIMES[name].version(),
                                                        cache).iterdir())
    assert {"encoder.onnx", "decoder.onnx", "manifest.json"} <= set(built)


def test_openvino_in_bfloat16_is_close_to_pytorchs_float32_masks(torch_backbone, cache, abdomen_slice):
    pytest.importorskip("openvino")
    hu, boxes = abdomen_slice
    backbone = load_backbone("litemedsam", device="cpu", runtime="openvino", precision="bfloat16")
    assert backbone.runtime == "openvino" and backbone.engine.precision == backbone.precision == "bfloat16"
    windowed = window_ct(hu[None], torch_backbone.window)
    reference_embedding = torch_backbone.embed(windowed)
    embedding = backbone.embed(windowed)
    reference = torch_backbone.decode(reference_embedding, boxes, hu.shape) > 0.5
    found = backbone.decode(embedding, boxes, hu.shape) > 0.5
    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(found, reference) > 0.98  # all organs' pixels together: nearly the same masks
    large = [(mask, expected) for mask, expected in zip(found, reference) if expected.sum() >= 100]
    assert len(large) >= 5 and all(dice(mask, expected) > 0.97 for mask, expected in large)  # each organ, too
    if runtime.cpu_computes_in_bfloat16():  # elsewhere OpenVINO computes in f32 despite the hint
        assert float((embedding - reference_embedding).abs().max()) > 1e-3
    backbone.precision = "float32"  # an engine compiled for bfloat16 does not run float32
    assert backbone.runtime == "torch"


def test_cache_key_changes_with_weights_runtime_version_and_export_settings(torch_backbone, cache, monkeypatch):
    from dataclasses import replace

    folder = runtime.cache_folder(torch_backbone, "openvino", "2026.4.1", cache)
    assert folder == runtime.cache_folder(torch_backbone, "openvino", "2026.4.1", cache)
    other_weights = replace(torch_backbone, weights_sha256="0" * 64)
    assert runtime.cache_folder(other_weights, "openvino", "2026.4.1", cache) != folder
    assert runtime.cache_folder(torch_backbone, "openvino", "2026.5.0", cache) != folder
    assert runtime.cache_folder(torch_backbone, "onnxruntime", "2026.4.1", cache) != folder
    monkeypatch.setattr(runtime, "OPSET", runtime.OPSET + 1)
    assert runtime.cache_folder(torch_backbone, "openvino", "2026.4.1", cache) != folder


def test_a_corrupt_cache_is_detected_and_rebuilt(torch_backbone, cache, abdomen_slice):
    pytest.importorskip("onnxruntime")
    backbone = load_backbone("litemedsam", device="cpu")
    assert runtime.attach_runtime(backbone, "onnxruntime", cache) == "onnxruntime"
    folder = runtime.cache_folder(backbone, "onnxruntime", runtime.RUNTIMES["onnxruntime"].version(), cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    data = bytearray((folder / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: still a loadable model, wrong masks
    (folder / "decoder.onnx").write_bytes(bytes(data))
    assert not runtime._intact(folder, manifest["key"])

    warnings = []
    assert runtime.attach_runtime(backbone, "onnxruntime", cache, warnings.append) == "onnxruntime"
    assert not warnings and runtime._intact(folder, manifest["key"])
    hu, boxes = abdomen_slice
    windowed = window_ct(hu[None], backbone.window)
    embedding = torch_backbone.embed(windowed)
    assert np.abs(backbone.decode(embedding, boxes, hu.shape) - torch_backbone.decode(embedding, boxes, hu.shape)
                  ).max() < 1e-4


def test_missing_runtime_falls_back_to_pytorch_with_one_warning(blocked, cache, abdomen_slice):
    hu, boxes = abdomen_slice
    warnings = []
    backbone = load_backbone("litemedsam", device="cpu", runtime="openvino", warn=warnings.append)
    assert backbone.engine is None and backbone.runtime == "torch"
    assert len(warnings) == 1 and "openvino is not installed" in warnings[0] and "\n" not in warnings[0]
    # auto without any runtime installed: PyTorch, silently (nothing was asked for that failed)
    warnings.clear()
    backbone = load_backbone("litemedsam", device="cpu", runtime="auto", warn=warnings.append)
    assert backbone.runtime == "torch" and not warnings
    probability = backbone.decode(backbone.embed(window_ct(hu[None], backbone.window)), boxes[:2], hu.shape)
    assert probability.shape == (2, *hu.shape) and (probability > 0.5).any()


def test_a_runtime_that_fails_to_build_or_load_leaves_pytorch_in_charge(torch_backbone, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")

    def broken_export(backbone, folder):
        raise RuntimeError("exporter crashed\nwith a long second line")

    monkeypatch.setattr(runtime, "export_onnx", broken_export)
    warnings = []
    assert runtime.attach_runtime(torch_backbone, "onnxruntime", tmp_path, warnings.append) == "torch"
    assert torch_backbone.engine is None
    assert len(warnings) == 1 and "onnxruntime failed (RuntimeError: exporter crashed)" in warnings[0]
    assert not any(p.name.startswith(".building-") for p in (tmp_path / "runtimes").iterdir())  # cleaned up


def test_an_engine_that_disagrees_with_pytorch_is_not_used(torch_backbone, cache, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import shutil

    assert runtime.attach_runtime(torch_backbone, "onnxruntime", cache) == "onnxruntime"
    exported = runtime.cache_folder(torch_backbone, "onnxruntime", runtime.RUNTIMES["onnxruntime"].version(), cache)
    monkeypatch.setattr(runtime, "export_onnx", lambda backbone, folder: [  # the export made above, copied
        shutil.copy(exported / name, folder / name) for name in runtime.FILES])
    real_load = runtime.RUNTIMES["onnxruntime"].load

    class Off:
        name = "onnxruntime"

        def __init__(self, engine):
            self.engine = engine

        def encode(self, images):
            return self.engine.encode(images) + 0.01

        def decode(self, embedding, boxes):
            return self.engine.decode(embedding, boxes)

    monkeypatch.setitem(runtime.RUNTIMES, "onnxruntime", runtime.Runtime(
        "onnxruntime", "onnxruntime", lambda folder, threads, precision: Off(real_load(folder, threads, precision))))
    warnings = []
    assert runtime.attach_runtime(torch_backbone, "onnxruntime", tmp_path, warnings.append) == "torch"
    assert len(warnings) == 1 and "differ from PyTorch" in warnings[0]
    assert torch_backbone.engine is None


def test_impossible_runtime_choices_are_user_errors():
    with pytest.raises(URSAMError, match="Unknown runtime 'tensorrt'"):
        runtime.check_runtime_choice("tensorrt")
    with pytest.raises(URSAMError, match="CPU only"):
        runtime.check_runtime_choice("openvino", "cuda:0")
    with pytest.raises(URSAMError, match="float32 only"):
        runtime.check_runtime_choice("onnxruntime", "cpu", "bfloat16")
    runtime.check_runtime_choice("openvino", "cpu", "bfloat16")  # compiled with the bf16 hint
    runtime.check_runtime_choice("auto", "cuda", "bfloat16")  # auto: PyTorch there


def test_cli_rejects_an_unknown_runtime(capsys):
    from URSAMLib.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "ct.nii.gz", "-o", "out", "--runtime", "tensorrt"])
    assert exit_info.value.code != 0 and "--runtime" in capsys.readouterr().err


def test_shared_image_decoder_equals_sams_mask_decoder(torch_backbone, abdomen_slice):
    """prompt_decoder passes the image side once for all boxes and makes only the kept mask; its
    logits must be SAM's MaskDecoder(multimask_output=False)'s."""
    import torch

    from URSAMLib.sam_decoder import prompt_decoder

    hu, boxes = abdomen_slice
    model = torch_backbone.model
    embedding = torch_backbone.embed(window_ct(hu[None], torch_backbone.window))
    model_boxes = torch.as_tensor(torch_backbone.preprocessing.boxes_to_model(boxes, hu.shape), dtype=torch.float32)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=model_boxes[:, None], masks=None)
        sam, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        ours = prompt_decoder(model)(embedding, model_boxes)
    assert ours.shape == sam.shape == (len(boxes), 1, 256, 256)
    assert float((ours - sam).abs().max()) < 1e-4 * float(sam.abs().max())
    assert not torch.any(((ours > 0) != (sam > 0)) & (sam.abs() > 1e-3))  # masks differ only at a tie


def test_a_broken_runtime_installation_is_a_warning_not_a_crash(torch_backbone, tmp_path, monkeypatch):
    class Broken(runtime.Runtime):
        def version(self):
            raise OSError("libopenvino.so.2026: cannot open shared object file")

    monkeypatch.setitem(runtime.RUNTIMES, "openvino", Broken("openvino", "openvino", None))
    warnings = []
    assert runtime.attach_runtime(torch_backbone, "openvino", tmp_path, warnings.append) == "torch"
    assert warnings == ["running the networks with PyTorch: openvino failed to import (OSError: "
                        "libopenvino.so.2026: cannot open shared object file)."]
