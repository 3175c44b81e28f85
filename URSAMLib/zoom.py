"""Zoom: the part of an axial slice that the model is shown.

LiteMedSAM sees every slice at 256 px. On a head-and-neck CT of 128 px at about 4 mm a larynx
is some ten pixels wide, twenty in the model's view: too few for the model to find its edges. So
each slice is shown to the model as a *view*: the square around that slice's prompt boxes (all
organs together), grown by :data:`CONTEXT` on every side, resized to the model's input as the
whole slice was. A slice is still embedded once, so zoom costs nothing; the organs just fill more
of the model's view. A view never enlarges more than ``max_zoom`` times beyond the whole slice (a
single small organ keeps some surroundings) and never reaches outside the slice.

The view is made from the un-augmented boxes (grown to hold the augmented ones, which move by
at most ``ratio`` of the slice's longest side), so another n or a small change of ratio keeps the
views, and the slice embeddings stay in the cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTEXT = 0.5
"""Context on each side of the slice's boxes, a fraction of their joint extent's longest side."""


@dataclass(frozen=True, order=True)
class View:
    """The rectangle of a slice the model is shown: rows ``y0:y1``, columns ``x0:x1`` (ends excluded)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def window(self) -> tuple[slice, slice]:
        """Index of the view in a ``rows x columns`` slice."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def to_view(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``N x 4`` (x0, y0, x1, y1) in slice pixels → in the view's pixels."""
        return np.asarray(boxes, np.float64).reshape(-1, 4) - (self.x0, self.y0, self.x0, self.y0)


def whole_slice(slice_shape: tuple[int, int]) -> View:
    return View(0, slice_shape[0], 0, slice_shape[1])


def _span(low: float, high: float, side: int, length: int) -> tuple[int, int]:
    """``side`` pixels centred on [low, high], moved inside [0, length) (all of it if it does not fit)."""
    if side >= length:
        return 0, length
    start = int(np.floor((low + high + 1 - side) / 2))
    start = min(max(start, 0), length - side)
    return start, start + side


def slice_view(boxes: np.ndarray, augmented: np.ndarray, slice_shape: tuple[int, int], max_zoom: float) -> View:
    """The view of one slice.

    boxes: ``N x 4`` un-augmented prompt boxes of every organ on the slice (x0, y0, x1, y1; pixel
        indices, inclusive); augmented: ``M x 4``, every box that will be decoded on the slice.
    max_zoom: at most this many times the whole slice's scale; 1: the whole slice.
    """
    if max_zoom <= 1.0:
        return whole_slice(slice_shape)
    rows, cols = slice_shape
    low, high = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)  # (x, y) of the joint extent
    extent = float(np.max(high - low + 1))
    side = int(np.ceil(max(extent * (1 + 2 * CONTEXT), max(rows, cols) / max_zoom)))
    (x0, x1), (y0, y1) = _span(low[0], high[0], side, cols), _span(low[1], high[1], side, rows)
    # a large perturbation ratio may push augmented boxes past the context: the view then grows to hold them
    x0 = min(x0, int(np.floor(augmented[:, 0].min())))
    y0 = min(y0, int(np.floor(augmented[:, 1].min())))
    x1 = max(x1, int(np.ceil(augmented[:, 2].max())) + 1)
    y1 = max(y1, int(np.ceil(augmented[:, 3].max())) + 1)
    return View(max(y0, 0), min(y1, rows), max(x0, 0), min(x1, cols))
