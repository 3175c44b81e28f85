"""The uncertainty of the ensemble of augmented prompts (UR-SAM Eqs. 2-3).

Eq. 1, the ensemble itself (the mean of the n maps), is a running sum in :func:`URSAMLib.pipeline.segment`.
"""
from __future__ import annotations

import numpy as np

MAX_ENTROPY = float(np.log(2.0))
"""Binary entropy of p = 0.5 in nats: the largest uncertainty a voxel can have."""


def predictive_entropy(probability: np.ndarray) -> np.ndarray:
    """Eq. 2: binary predictive entropy ``-(p ln p + (1 - p) ln(1 - p))`` in nats (float32).

    0 where the ensemble is sure (p = 0 or 1), ln 2 at p = 0.5.
    """
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0)
    return (-terms).astype(np.float32)


def uncertainty_threshold(uncertainty: np.ndarray, ensemble_mask: np.ndarray,
                          box_region: np.ndarray) -> float:
    """Eq. 3: the class-specific threshold over one organ's box.

    ``T = min(u) + (S_y + S_b) / (2 S_b) * (max(u) - min(u))`` with ``S_b`` the number of
    voxels in the box region and ``S_y`` the ensemble mask's voxels inside it. The factor
    lies in [0.5, 1]: an organ that fills its box tolerates more uncertainty before a
    voxel counts as uncertain.
    """
    box_voxels = int(np.count_nonzero(box_region))
    if box_voxels == 0:
        raise ValueError("the box region is empty")
    values = uncertainty[box_region]
    mask_voxels = int(np.count_nonzero(ensemble_mask & box_region))
    low, high = float(values.min()), float(values.max())
    return low + (mask_voxels + box_voxels) / (2 * box_voxels) * (high - low)
