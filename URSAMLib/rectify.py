"""Uncertainty rectification (UR-SAM Eq. 4 and Algorithm 1) and the paper's comparison methods.

Everything here works on one organ, inside a crop of the volume, on its *box region*
(the voxels covered by the organ's un-augmented prompt boxes). Voxels outside the box
region keep the ensemble's answer.

Intensities are the windowed CT in [0, 1] (see :func:`URSAMLib.backbones.window_ct`), not
HU: Algorithm 1 compares ``x < alpha_h * I_t``, which is meaningless for negative HU.

Algorithm 1, as implemented:

1. ``T`` = the class-specific threshold (Eq. 3), or a fixed one; ``uncertain = u > T``.
2. ``I_t`` / ``I_b`` = mean intensity of the *certain* voxels predicted target / background.
3. Each uncertain voxel joins the organ iff its intensity lies in the band
   ``(lower, alpha_h * I_t)``; otherwise it is background.

The paper writes the lower bound as ``(I_t - I_b) / 2``; read literally that is a contrast,
not an intensity, and for the windowed CT it lies near 0, so every uncertain voxel that is
not air would join. The likely intent is the midpoint ``(I_t + I_b) / 2`` (closer to the
target than to the background). Both are available (``lower_bound="paper"`` or
``"midpoint"``); the default is chosen by measurement, see docs/rectification.md.
Organs darker than their surroundings (I_t < I_b, e.g. the gallbladder next to the liver)
are handled by inverting intensities (x → 1 - x) so the rule sees a bright organ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .uncertainty import MAX_ENTROPY, uncertainty_threshold

DEFAULT_ALPHA_H = 1.2
LOWER_BOUNDS = ("midpoint", "paper")
"""The rectification's lower bound: ``(I_t + I_b)/2`` or the paper's ``(I_t - I_b)/2``."""
DEFAULT_LOWER_BOUND = "midpoint"
DEFAULT_FIXED_THRESHOLD = 0.5 * MAX_ENTROPY
"""The "fixed T" comparison: u > ln(2)/2, i.e. ensemble probability between 0.11 and 0.89."""


@dataclass
class Rectification:
    """The result of rectifying one organ (arrays have the crop's shape)."""

    mask: np.ndarray
    """The rectified organ mask (bool)."""
    uncertain: np.ndarray
    """Voxels of the box region with ``u > threshold`` (bool), Eq. 4."""
    threshold: float
    target_intensity: float | None = None
    background_intensity: float | None = None
    band: tuple[float, float] | None = None
    """Windowed intensities between which uncertain voxels joined the organ."""
    method: str = ""
    """The rule applied, a key of :data:`METHODS`."""


def intensity_band(target: float, background: float, alpha_h: float = DEFAULT_ALPHA_H,
                   lower_bound: str = DEFAULT_LOWER_BOUND) -> tuple[float, float]:
    """The open interval of windowed intensities for which an uncertain voxel joins the organ."""
    dark = target < background
    t, b = (1.0 - target, 1.0 - background) if dark else (target, background)
    if lower_bound == "midpoint":
        low = (t + b) / 2
    elif lower_bound == "paper":
        low = (t - b) / 2
    else:
        raise ValueError(f"lower_bound must be 'midpoint' or 'paper', not {lower_bound!r}")
    high = alpha_h * t
    return (1.0 - high, 1.0 - low) if dark else (low, high)


def _threshold(uncertainty, ensemble_mask, box_region, fixed: float | None) -> float:
    return fixed if fixed is not None else uncertainty_threshold(uncertainty, ensemble_mask, box_region)


def _algorithm1(intensity, ensemble_mask, uncertain, box_region, threshold, alpha_h, lower_bound):
    certain = box_region & ~uncertain
    target, background = certain & ensemble_mask, certain & ~ensemble_mask
    if not target.any() or not background.any():
        # Without certain examples of both classes there is nothing to compare with.
        return Rectification(ensemble_mask.copy(), uncertain, threshold)
    i_t, i_b = float(intensity[target].mean()), float(intensity[background].mean())
    low, high = intensity_band(i_t, i_b, alpha_h, lower_bound)
    joins = (intensity > low) & (intensity < high)
    mask = np.where(uncertain, joins, ensemble_mask)
    return Rectification(mask, uncertain, threshold, i_t, i_b, (low, high))


def _ursam(intensity, ensemble_mask, uncertainty, box_region, alpha_h, lower_bound, fixed_threshold):
    t = _threshold(uncertainty, ensemble_mask, box_region, None)
    return _algorithm1(intensity, ensemble_mask, box_region & (uncertainty > t), box_region, t,
                       alpha_h, lower_bound)


def _fixed(intensity, ensemble_mask, uncertainty, box_region, alpha_h, lower_bound, fixed_threshold):
    t = fixed_threshold
    return _algorithm1(intensity, ensemble_mask, box_region & (uncertainty > t), box_region, t,
                       alpha_h, lower_bound)


def _correction(rule: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    """A comparison method that relabels uncertain voxels without looking at intensity."""

    def method(intensity, ensemble_mask, uncertainty, box_region, alpha_h, lower_bound, fixed_threshold):
        t = _threshold(uncertainty, ensemble_mask, box_region, None)
        uncertain = box_region & (uncertainty > t)
        return Rectification(rule(ensemble_mask, uncertain), uncertain, t)

    return method


def _none(intensity, ensemble_mask, uncertainty, box_region, alpha_h, lower_bound, fixed_threshold):
    t = _threshold(uncertainty, ensemble_mask, box_region, None)
    return Rectification(ensemble_mask.copy(), box_region & (uncertainty > t), t)


METHODS: dict[str, Callable[..., Rectification]] = {
    "ursam": _ursam,  # class-specific T (Eq. 3) + Algorithm 1: the paper's method
    "fixed": _fixed,  # fixed T + Algorithm 1
    "unc-fpc": _correction(lambda mask, unc: mask & ~unc),  # uncertain = false positive: remove
    "unc-fnc": _correction(lambda mask, unc: mask | unc),  # uncertain = false negative: add
    "unc-fpnc": _correction(lambda mask, unc: mask ^ unc),  # both: flip every uncertain voxel
    "ensemble": _none,  # no rectification: the ensemble mask (p > 0.5)
}

PER_ORGAN = "per-organ"
"""A run setting, not a rule of its own: each organ takes the rule a template chose for it by measurement
(:attr:`URSAMLib.prompts.OrganPrompt.method`, from the template's ``rectification``), UR-SAM's where
none was chosen. Which rule is best depends on the organ (on OpenKBP training patients adding every
uncertain voxel beat the intensity rule on the parotids, esophagus and larynx, not on the mandible:
docs/atlas-prompts.md)."""
METHOD_CHOICES = (PER_ORGAN, *METHODS)
"""What a run's ``method`` may be."""


def rectify(intensity: np.ndarray, ensemble: np.ndarray, uncertainty: np.ndarray,
            box_region: np.ndarray, method: str = "ursam", alpha_h: float = DEFAULT_ALPHA_H,
            lower_bound: str = DEFAULT_LOWER_BOUND,
            fixed_threshold: float = DEFAULT_FIXED_THRESHOLD) -> Rectification:
    """Rectify one organ's ensemble prediction.

    intensity: windowed CT in [0, 1]; ensemble: ensemble probability; uncertainty: entropy
    (nats); box_region: bool — all of the same shape (one organ's crop).
    method: a key of :data:`METHODS`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown rectification method {method!r}; choose from {', '.join(METHODS)}")
    box_region = np.asarray(box_region, dtype=bool)
    ensemble_mask = ensemble > 0.5
    if not box_region.any():
        return Rectification(ensemble_mask, np.zeros_like(box_region), float("nan"), method=method)
    result = METHODS[method](intensity, ensemble_mask, uncertainty, box_region, alpha_h, lower_bound,
                             fixed_threshold)
    result.method = method
    return result
