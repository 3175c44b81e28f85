"""Overlap and distance metrics between binary masks ``[z, y, x]``."""
from __future__ import annotations

import numpy as np

HD95_DEFINITION = "max of the two directed 95th percentiles of surface distances (MONAI)"
"""What ``hausdorff95`` computes; part of ``ursam evaluate``'s cache key, so that results scored
under another definition are recomputed rather than mixed in."""


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice similarity coefficient 2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(prediction & reference)) / total


def hausdorff95(prediction: np.ndarray, reference: np.ndarray,
                spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """HD95 in mm, as MONAI's ``compute_hausdorff_distance(percentile=95)`` defines it.

    The surface of a mask is its voxels with a background neighbour (a 6-neighbourhood; outside
    the array counts as background). For each surface voxel of ``prediction`` take the distance
    in mm to the nearest surface voxel of ``reference``, and vice versa; HD95 is the larger of
    the two directed 95th percentiles (linear interpolation, as ``np.percentile``)::

        max(P95{d(p, S_ref) : p in S_pred}, P95{d(r, S_pred) : r in S_ref})

    A prediction with a stray blob far from the organ therefore scores the blob's distance once
    it holds more than 5 % of the prediction's surface, however large the reference.
    ``prediction``, ``reference``: boolean ``[z, y, x]`` on one grid; ``spacing``: ``(z, y, x)``
    in mm. 0.0 for identical masks; NaN when either mask is empty.
    """
    from scipy import ndimage

    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if not prediction.any() or not reference.any():
        return float("nan")
    # Both surfaces lie in the masks' joint bounding box: crop to it, one voxel larger so that
    # erosion sees the same background, and the distance transforms cost the organ's size,
    # not the volume's. (At the volume's border the crop stops there, as the volume does.)
    window = _joint_box(prediction | reference)
    prediction, reference = prediction[window], reference[window]

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask)

    to_reference = ndimage.distance_transform_edt(~surface(reference), sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~surface(prediction), sampling=spacing)
    forward = to_reference[surface(prediction)]
    backward = to_prediction[surface(reference)]
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def _joint_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask grown by one voxel per side, clipped to the array."""
    window = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        window.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, mask.shape[axis])))
    return tuple(window)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for telling ``positives`` (bool) from the rest.

    Rank-based (the Mann-Whitney U statistic over P x N pairs): the probability that a random
    positive scores higher than a random negative, ties counting one half. 1 = perfect
    ranking, 0.5 = no better than chance. NaN when either class is empty. Any shape; flattened.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # midranks for ties
    u = float(ranks[positives].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def spearman(x, y) -> tuple[float, float, int]:
    """Spearman's rank correlation of paired values: ``(rho, two-sided p, n)``.

    Pairs with a NaN are dropped; rho and p are NaN for fewer than 3 pairs or a constant side.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), n
    result = spearmanr(x, y)
    return float(result.statistic), float(result.pvalue), n
