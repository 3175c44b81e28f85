"""Slice embeddings kept between runs, so that a second run on the same CT runs only the decoder.

The encoder is the costly half of a run, and its output depends only on the windowed slice and the
model: not on the organs, boxes, number of augmented prompts, ratio or rectification. So every
embedding is stored under a key made of

* the *model key*: backbone name, weights' SHA-256, what runs it (runtime, device kind, precision)
  and its preprocessing; and
* the windowed slice itself (its float32 bytes and shape: the CT's content and the window).

Two layers, both optional and size-bounded: memory (for a process that stays warm, such as the
Slicer module's worker) and disk (``$URSAM_CACHE/embeddings``, for separate runs of the command
line). A disk entry holds the embedding and its SHA-256; it is written atomically and an entry that
does not load or match its hash is deleted and recomputed. When the folder outgrows its bound the
least recently used entries go.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .atomic import torch_save
from .weights import default_cache_dir

if TYPE_CHECKING:
    import torch

    from .backbones import SamBackbone

DEFAULT_DISK_BYTES = 4 << 30
"""4 GiB: about 1000 LiteMedSAM slice embeddings (4 MiB each), three 300-slice CTs."""
SUFFIX = ".pt"


def model_key(backbone: "SamBackbone") -> str:
    """What, besides the slice, determines an embedding (a hex digest)."""
    parts = (backbone.name, backbone.weights_sha256, backbone.runtime, backbone.device.split(":")[0],
             backbone.precision, repr(backbone.preprocessing), repr(tuple(backbone.window)))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def slice_key(model: str, windowed: np.ndarray) -> str:
    """Key of one windowed slice (``H x W`` float32 in [0, 1]) under ``model`` (:func:`model_key`)."""
    windowed = np.ascontiguousarray(windowed, dtype=np.float32)
    digest = hashlib.sha256(model.encode())
    digest.update(repr(windowed.shape).encode())
    digest.update(windowed.data)
    return digest.hexdigest()


def _tensor_sha256(tensor: "torch.Tensor") -> str:
    return hashlib.sha256(tensor.contiguous().numpy().data).hexdigest()


class EmbeddingCache:
    """Slice embeddings in memory and/or on disk, keyed by :func:`slice_key`.

    folder: the disk layer (default ``$URSAM_EMBEDDING_CACHE``, else ``$URSAM_CACHE/embeddings``).
    disk_bytes, memory_bytes: bounds of each layer (0 turns a layer off).
    """

    def __init__(self, folder: str | os.PathLike | None = None, disk_bytes: int = DEFAULT_DISK_BYTES,
                 memory_bytes: int = 0):
        self.folder = Path(folder or os.environ.get("URSAM_EMBEDDING_CACHE") or default_cache_dir() / "embeddings")
        self.disk_bytes, self.memory_bytes = disk_bytes, memory_bytes
        self._memory: OrderedDict[str, "torch.Tensor"] = OrderedDict()
        self._memory_used = 0
        self._disk_used: int | None = None  # measured on the first write
        self.hits = self.misses = self.rebuilt = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / (key + SUFFIX)

    def get(self, key: str) -> "torch.Tensor | None":
        """The embedding stored under ``key`` (on the CPU), or None; a corrupt disk entry is removed."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        embedding = self._read(key) if self.disk_bytes else None
        if embedding is None:
            self.misses += 1
            return None
        self.hits += 1
        self._remember(key, embedding)
        return embedding

    def _read(self, key: str) -> "torch.Tensor | None":
        import torch

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            embedding = payload["embedding"]
            if payload["sha256"] != _tensor_sha256(embedding):
                raise ValueError("hash mismatch")
        except Exception:  # truncated, overwritten, not ours: recompute it
            self.rebuilt += 1
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: pruned last
        return embedding

    def put(self, key: str, embedding: "torch.Tensor") -> None:
        """Store ``embedding`` (``C x h x w``, any device) under ``key`` in each layer."""
        embedding = embedding.detach().to("cpu").contiguous()
        self._remember(key, embedding)
        if not self.disk_bytes:
            return
        path = self._path(key)
        try:
            torch_save({"sha256": _tensor_sha256(embedding), "embedding": embedding}, path)
        except OSError:  # a full or read-only disk costs speed, never the run
            return
        if self._disk_used is None:
            self._disk_used = self._usage()[0]
        else:
            self._disk_used += path.stat().st_size
        if self._disk_used > self.disk_bytes:
            self.prune()

    def _remember(self, key: str, embedding: "torch.Tensor") -> None:
        size = embedding.numel() * embedding.element_size()
        if size > self.memory_bytes or key in self._memory:
            return
        self._memory[key] = embedding
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._memory_used -= dropped.numel() * dropped.element_size()

    def _usage(self) -> tuple[int, list[tuple[float, int, Path]]]:
        entries = []
        for path in self.folder.glob(f"*/*{SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        return sum(size for _, size, _ in entries), entries

    def prune(self) -> None:
        """Delete the least recently used disk entries until the folder is within 90% of its bound."""
        used, entries = self._usage()
        for _, size, path in sorted(entries):
            if used <= 0.9 * self.disk_bytes:
                break
            path.unlink(missing_ok=True)
            used -= size
        self._disk_used = used

    def clear_memory(self) -> None:
        self._memory.clear()
        self._memory_used = 0


def attach(backbone, enabled: bool = True) -> None:
    """Give ``backbone`` a new :class:`EmbeddingCache` (or none, when not ``enabled``). Only a model
    that embeds slices (a SamBackbone, which declares ``embedding_cache``) gets one: stand-in models
    (tests) have no embeddings to cache."""
    if hasattr(backbone, "embedding_cache"):
        backbone.embedding_cache = EmbeddingCache() if enabled else None


def embed_slices(backbone: "SamBackbone", windowed: "np.ndarray | Sequence[np.ndarray]",
                 cache: EmbeddingCache | None = None) -> tuple["torch.Tensor", int]:
    """Embeddings of windowed slices, from ``cache`` where it has them.

    windowed: ``B x H x W`` float32 in [0, 1], or B such images of any sizes (zoomed views).
    Returns (``B x C x h x w`` on the backbone's device, the number of slices taken from the cache).
    The encoder runs once, on the slices not cached.
    """
    if cache is None:
        return backbone.embed(windowed), 0
    import torch

    model = model_key(backbone)
    keys = [slice_key(model, image) for image in windowed]
    found = [cache.get(key) for key in keys]
    missing = [i for i, embedding in enumerate(found) if embedding is None]
    if missing:
        # one array of equal slices stays one batched resize; views of different sizes go as a list
        computed = backbone.embed(windowed[missing] if isinstance(windowed, np.ndarray)
                                  else [windowed[i] for i in missing])
        for row, i in enumerate(missing):
            found[i] = computed[row]
            cache.put(keys[i], computed[row])
    return torch.stack([e.to(backbone.device) for e in found]), len(keys) - len(missing)
