"""Overlap and distance metrics between binary masks ``[z, y, x]``."""
from __future__ import annotations

import numpy as np


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice similarity coefficient 2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(prediction & reference)) / total


def hausdorff95(prediction: np.ndarray, reference: np.ndarray,
                spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """95th percentile of the symmetric surface distance in mm (``spacing`` is ``(z, y, x)``).

    NaN when either mask is empty.
    """
    from scipy import ndimage

    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if not prediction.any() or not reference.any():
        return float("nan")

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask)

    to_reference = ndimage.distance_transform_edt(~surface(reference), sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~surface(prediction), sampling=spacing)
    distances = np.concatenate([to_reference[surface(prediction)], to_prediction[surface(reference)]])
    return float(np.percentile(distances, 95))
