"""Stand-ins for the self-tests (URSAMTest in Slicer, and the pytest suite): no torch, no weights.

:class:`BrightInBox` answers like a SAM backbone whose every voxel is computable by hand:
probability 0.9 for bright pixels (windowed intensity > 0.5) inside the box, 0.1 elsewhere.
Augmented boxes that cut the bright region therefore disagree exactly along their edges.
"""
from __future__ import annotations

import numpy as np


class BrightInBox:
    """A backbone with :class:`URSAMLib.backbones.SamBackbone`'s embed/decode interface."""

    name, device, window = "bright-in-box", "cpu", (-160.0, 240.0)

    def __init__(self):
        self.embedded: list[int] = []
        self.shapes: list[tuple[int, int]] = []

    def embed(self, slices):
        """slices ``B x H x W`` in [0, 1], or B images of any sizes (zoomed views) → the slices
        themselves (the "embedding"), as an array or a list."""
        self.embedded.append(len(slices))
        self.shapes.extend(np.shape(image) for image in slices)
        return np.asarray(slices) if isinstance(slices, np.ndarray) else list(slices)

    def synchronize(self) -> None:
        """Nothing runs asynchronously here."""

    def decode(self, embedding: np.ndarray, boxes: np.ndarray, slice_shape: tuple[int, int]) -> np.ndarray:
        """boxes ``N x 4`` XYXY → ``N x H x W`` probabilities."""
        rows, cols = np.mgrid[:slice_shape[0], :slice_shape[1]]
        bright = embedding[0] > 0.5
        maps = [np.where((cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1) & bright, 0.9, 0.1)
                for x0, y0, x1, y1 in boxes]
        return np.array(maps, np.float32)


def bright_in_box(name: str = "", checkpoint: str | None = None, device: str = "auto") -> BrightInBox:
    """A loader with :func:`URSAMLib.backbones.load_backbone`'s signature (for ``--backbone-factory``)."""
    return BrightInBox()


def failing_loader(name: str = "", checkpoint: str | None = None, device: str = "auto"):
    """A loader that fails like a user mistake would (for error-path tests)."""
    from URSAMLib.errors import URSAMError

    raise URSAMError(f"Checkpoint {checkpoint} does not exist; check the checkpoint path (--checkpoint).")


def slow_loader(name: str = "", checkpoint: str | None = None, device: str = "auto"):
    """A loader that takes a minute (for cancel tests)."""
    import time

    time.sleep(60)
    return BrightInBox()


def unverified_loader(name: str = "", checkpoint: str | None = None, device: str = "auto") -> BrightInBox:
    """A loader whose weights no published SHA-256 vouches for (for the warning's tests)."""
    backbone = BrightInBox()
    backbone.weights_verified, backbone.weights_sha256 = False, "ab" * 32
    return backbone
