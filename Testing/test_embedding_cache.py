"""URSAMLib.embedding_cache: a second run on the same CT reuses the slice embeddings.

The real LiteMedSAM (PyTorch) on abdomen-ts; the encoder's calls are counted per slice.
"""
import numpy as np
import pytest
import torch

from URSAMLib import io
from URSAMLib.backbones import load_backbone
from URSAMLib.embedding_cache import EmbeddingCache, model_key, slice_key
from URSAMLib.pipeline import Settings, segment
from URSAMLib.prompts import OrganPrompt, prompts_from_labels


@pytest.fixture(scope="module")
def case(abdomen):
    """abdomen-ts in HU, and two organs prompted on 4 slices each, 2 of them shared."""
    ct = io.read_ct(abdomen / "ct.nii.gz")
    hu, _ = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(abdomen / "labels.nii.gz", ct), np.uint16)
    classes = {name: value for value, name in io.read_classes(abdomen / "classes.json").items()}
    prompts, _ = prompts_from_labels(labels, {classes["liver"]: "liver", classes["gallbladder"]: "gallbladder"})
    liver, gallbladder = sorted(prompts, key=lambda p: p.name != "liver")
    shared = sorted(set(liver.boxes) & set(gallbladder.boxes))[:4]
    first = OrganPrompt("liver", liver.label, {z: liver.boxes[z] for z in shared[:4]})
    other_zs = sorted(set(liver.boxes) - set(shared))[-2:]
    second = OrganPrompt("gallbladder", gallbladder.label, {z: gallbladder.boxes[z] for z in shared[2:4]})
    third = OrganPrompt("liver", liver.label, {z: liver.boxes[z] for z in other_zs})
    return hu, [first], [second, third]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("litemedsam", device="cpu")


class Counting:
    """The real backbone (a shallow copy, same networks) with ``cache``, counting the slices its
    encoder embeds."""

    def __init__(self, backbone, cache):
        from dataclasses import replace

        self.backbone = replace(backbone, embedding_cache=cache)
        self.embedded = 0

        def counted(slices):
            self.embedded += len(slices)
            return backbone.embed(slices)

        self.backbone.embed = counted


def _same(a, b):
    assert len(a.organs) == len(b.organs)
    for x, y in zip(a.organs, b.organs):
        assert np.array_equal(x.ensemble, y.ensemble) and np.array_equal(x.mask, y.mask)


def test_second_run_with_other_n_and_ratio_runs_only_the_decoder(case, backbone, tmp_path):
    hu, prompts, _ = case
    first = Counting(backbone, EmbeddingCache(tmp_path))
    segment(hu, prompts, first.backbone, Settings(num_aug=3))
    assert first.embedded == 4 and len(list(tmp_path.glob("*/*.pt"))) == 4

    again = Counting(backbone, EmbeddingCache(tmp_path))  # a new process: only the disk layer is shared
    settings = Settings(num_aug=1, ratio=0.02, method="fixed")
    cached = segment(hu, prompts, again.backbone, settings)
    assert again.embedded == 0 and cached.timings["cached_slices"] == 4

    plain = Counting(backbone, None)
    reference = segment(hu, prompts, plain.backbone, settings)
    assert plain.embedded == 4 and reference.timings["cached_slices"] == 0
    _same(cached, reference)  # bit-identical: the stored embedding is the computed one


def test_another_organ_set_embeds_only_the_slices_not_seen(case, backbone, tmp_path):
    hu, prompts, others = case
    cache = EmbeddingCache(tmp_path)
    segment(hu, prompts, Counting(backbone, cache).backbone)
    second = Counting(backbone, EmbeddingCache(tmp_path))
    result = segment(hu, others, second.backbone)
    assert second.embedded == 2 and result.timings["cached_slices"] == 2  # 2 shared slices, 2 new ones


def test_a_corrupt_entry_is_rebuilt(case, backbone, tmp_path):
    hu, prompts, _ = case
    cold = Counting(backbone, EmbeddingCache(tmp_path))
    reference = segment(hu, prompts, cold.backbone)
    entries = sorted(tmp_path.glob("*/*.pt"))
    entries[0].write_bytes(entries[0].read_bytes()[:1000])  # truncated (a crash while copying)
    payload = torch.load(entries[1], weights_only=True)  # a tampered value under the old hash
    payload["embedding"][0, 0, 0] += 1.0
    torch.save(payload, entries[1])

    cache = EmbeddingCache(tmp_path)
    warm = Counting(backbone, cache)
    result = segment(hu, prompts, warm.backbone)
    assert warm.embedded == 2 and cache.rebuilt == 2 and cache.hits == 2
    _same(result, reference)
    assert all(torch.load(e, weights_only=True)["embedding"].shape == (256, 64, 64) for e in entries)


def test_keys_depend_on_window_model_and_slice(backbone):
    from dataclasses import replace

    image = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    key = slice_key(model_key(backbone), image)
    assert key == slice_key(model_key(backbone), image.copy())
    assert key != slice_key(model_key(replace(backbone, window=(-160.0, 240.0))), image)
    assert key != slice_key(model_key(replace(backbone, weights_sha256="0" * 64)), image)
    assert key != slice_key(model_key(replace(backbone, precision="bfloat16")), image)
    changed = image.copy()
    changed[3, 3] += 1e-6
    assert key != slice_key(model_key(backbone), changed)


def test_disk_layer_stays_within_its_bound_dropping_the_least_recently_used(tmp_path):
    import os
    import time

    entry = torch.zeros(64, 64)
    cache = EmbeddingCache(tmp_path)
    cache.put("00", entry)
    file_size = cache._path("00").stat().st_size
    cache.disk_bytes = int(5.5 * file_size)
    for i in range(1, 5):
        cache.put(f"{i:02d}", entry + i)
    for i in range(5):
        os.utime(cache._path(f"{i:02d}"), (time.time() - 100 + i,) * 2)
    assert len(list(tmp_path.glob("*/*.pt"))) == 5  # within the bound: nothing dropped yet
    assert torch.equal(cache.get("00"), entry)  # used again: now the most recent of the five
    for i in range(5, 8):
        cache.put(f"{i:02d}", entry + i)
    kept = {p.stem for p in tmp_path.glob("*/*.pt")}
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*.pt")) <= cache.disk_bytes
    assert kept == {"00", "05", "06", "07"}


def test_memory_layer_serves_a_warm_process_without_disk(tmp_path):
    entry = torch.arange(16.0).reshape(4, 4)
    cache = EmbeddingCache(tmp_path, disk_bytes=0, memory_bytes=3 * 64)
    for key in "abcd":
        cache.put(key, entry)
    assert not list(tmp_path.iterdir())
    assert cache.get("a") is None and torch.equal(cache.get("d"), entry)  # "a" dropped: 3 fit
