"""The parameters of a UR-SAM run (:func:`URSAMLib.pipeline.segment`), with their checks."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import URSAMError
from .rectify import DEFAULT_ALPHA_H, DEFAULT_FIXED_THRESHOLD, DEFAULT_LOWER_BOUND, METHOD_CHOICES, PER_ORGAN


@dataclass(frozen=True)
class Settings:
    """Parameters of a UR-SAM run (defaults: the paper's best setting, n = 3 and ratio 0.01; the
    rectification as measured per organ where a built-in template chose one, else the paper's)."""

    num_aug: int = 3
    """Boxes per slice and organ (1 = no augmentation)."""
    ratio: float = 0.01
    """Perturbation of the augmented boxes, a fraction of the slice's longest side."""
    seed: int = 0
    method: str = PER_ORGAN
    """Rectification method: a key of :data:`URSAMLib.rectify.METHODS` for every organ, or
    :data:`~URSAMLib.rectify.PER_ORGAN`: each organ's measured choice where its prompt has one
    (a built-in template's), else ``ursam`` (the paper's)."""
    alpha_h: float = DEFAULT_ALPHA_H
    lower_bound: str = DEFAULT_LOWER_BOUND
    fixed_threshold: float = DEFAULT_FIXED_THRESHOLD
    refine: bool = False
    """Slice-wise box refinement: re-prompt each slice with the box of its own first prediction."""
    refine_margin: int = 2
    """Pixels added around the first prediction's box when refining."""
    prior_weight: float = 6.0
    """Weight of an organ's prior probability (:attr:`URSAMLib.prompts.OrganPrompt.prior`: the atlas
    vote of atlas prompts; other prompts have none) as a member of the ensemble:
    ŷ = (Σ SAM members + w · prior) / (n + w). Where SAM and the prior disagree, ŷ lands between
    them, so the voxel becomes uncertain and the rectification decides it. 0: SAM alone (the paper).
    6 (twice the n = 3 SAM members together) was best of 0, 3, 6, 10 on OpenKBP training patients
    (docs/atlas-prompts.md)."""
    slice_batch: int = 0
    """Slices embedded per encoder call; 0 = 1 on CPU, 8 on a GPU."""
    max_zoom: float = 1.0
    """Zoom (:mod:`URSAMLib.zoom`): each slice is shown to the model as the square around its prompt
    boxes with context, enlarged at most this many times beyond the whole slice; 1: the whole slice."""
    box_batch: int = 0
    """Boxes decoded per decoder call; 0 = 36 on CPU, 64 on a GPU. Speed only (maps agree to ~1e-5).
    The boxes of a call share the decoder's first image-side projections, so larger calls pay less
    per box: on 2 CPU cores 36-box calls were the fastest of 1, 4, 12, 36 with OpenVINO and ONNX
    Runtime, and on a par with 12 in PyTorch (docs/performance.md)."""

    def validate(self) -> "Settings":
        if not 1 <= self.num_aug <= 64:
            raise URSAMError(f"The number of augmented prompts must be 1..64, not {self.num_aug}.")
        if not 0.0 <= self.ratio <= 0.5:
            raise URSAMError(f"The perturbation ratio must be between 0 and 0.5, not {self.ratio}.")
        if self.method not in METHOD_CHOICES:
            raise URSAMError(f"Unknown rectification method {self.method!r}; "
                             f"choose one of {', '.join(METHOD_CHOICES)}.")
        if not 1.0 <= self.alpha_h <= 3.0:
            raise URSAMError(f"alpha_h must be between 1 and 3, not {self.alpha_h}.")
        if not 0.0 <= self.prior_weight <= 64:
            raise URSAMError(f"The prior's weight must be between 0 and 64, not {self.prior_weight}.")
        if not 1.0 <= self.max_zoom <= 16:
            raise URSAMError(f"The zoom must be between 1 (the whole slice) and 16, not {self.max_zoom}.")
        if self.lower_bound not in ("midpoint", "paper"):
            raise URSAMError(f"The lower bound must be 'midpoint' or 'paper', not {self.lower_bound!r}.")
        return self
