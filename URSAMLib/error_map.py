"""Where an organ's contour is likely wrong: a per-voxel error likelihood inside the prompt boxes.

UR-SAM's entropy (Eq. 2) is high along the whole boundary of an organ that LiteMedSAM segments
softly, so on its own it ranks the ensemble's error voxels only moderately well (AUROC about 0.73 on
OpenKBP training patients). Errors are more likely where, besides the entropy, the voxel is near the
ensemble's boundary, its intensity is unlike the organ's (inside) or like it (outside), and the atlas
prior is undecided or disagrees with SAM's members — Algorithm 1's intuition and the prior's, made
into features. A logistic model of them, fitted on training patients only
(``scripts/fit_error_map.py``, ``Resources/error_map.json``), gives each voxel in the prompt boxes
the probability that the ensemble is wrong there. It ranks regions for review; the uncertainty
heatmap stays the paper's entropy.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .pipeline import OrganResult
from .resources import load_json, resource_path

ERROR_MODEL = "error_map.json"
"""The fitted model in ``Resources/``: feature names, coefficients and intercept, the patients it was
fitted on and its leave-one-patient-out AUROC (written by ``scripts/fit_error_map.py``)."""

FEATURES = ("entropy", "boundary", "entropy_x_boundary", "intensity_deviation", "inside_x_intensity_deviation",
            "inside_x_boundary", "prior_margin", "prior_disagreement", "intensity_disagreement",
            "intensity_disagreement_x_boundary")
BOUNDARY_MM = 4.0
"""Length scale of ``boundary``, exp(-distance / BOUNDARY_MM): about one voxel of a coarse CT."""
HISTOGRAM_BINS = 32


def voxel_features(organ: OrganResult, spacing_zyx: tuple[float, float, float], num_aug: int) -> np.ndarray:
    """The :data:`FEATURES` of each voxel in ``organ.box_region``: float32 ``(N, len(FEATURES))``,
    rows in the order of ``np.argwhere(organ.box_region)``. spacing_zyx: voxel size in mm; num_aug: n.

    * ``entropy``: the paper's entropy in bits (0..1);
    * ``boundary``: exp(-d / 4 mm), d the distance to the ensemble mask's boundary;
    * ``intensity_deviation``: |I - median inside| / interquartile range inside, capped at 10, / 10;
    * ``prior_margin``: |prior - 0.5| (the atlas vote fraction; the ensemble itself without a prior);
    * ``prior_disagreement``: |fraction of SAM members inside - prior| (0 without a prior);
    * ``intensity_disagreement``: |inside - P(inside | intensity)|, the posterior from the
      intensity histograms of the mask and of the rest of the boxes;
    * products with ``inside`` (the ensemble mask) and ``boundary`` where one factor's meaning
      depends on the other.
    """
    from scipy import ndimage  # only needed once a result exists

    box = organ.box_region
    inside = organ.ensemble_mask
    spacing = tuple(float(s) for s in spacing_zyx)
    distance = np.where(inside, ndimage.distance_transform_edt(inside, sampling=spacing),
                        ndimage.distance_transform_edt(~inside, sampling=spacing))[box]
    boundary = np.exp(-distance / BOUNDARY_MM)
    entropy = organ.uncertainty[box] / np.log(2.0)
    intensity = organ.intensity[box]
    mask = inside[box]
    organ_intensity = intensity[mask]
    if organ_intensity.size > 10:
        median = float(np.median(organ_intensity))
        spread = float(np.subtract(*np.percentile(organ_intensity, [75, 25])))
    else:
        median, spread = float(np.median(intensity)), 0.05
    deviation = np.minimum(np.abs(intensity - median) / max(spread, 0.02), 10.0) / 10.0
    bins = np.clip((intensity * HISTOGRAM_BINS).astype(int), 0, HISTOGRAM_BINS - 1)
    organ_hist = np.bincount(bins[mask], minlength=HISTOGRAM_BINS) + 1.0
    rest_hist = np.bincount(bins[~mask], minlength=HISTOGRAM_BINS) + 1.0
    organ_hist, rest_hist = organ_hist / organ_hist.sum(), rest_hist / rest_hist.sum()
    posterior = (organ_hist / (organ_hist + rest_hist))[bins]
    disagreement = np.abs(mask - posterior)
    if organ.prior is not None:
        prior = organ.prior[box]
        members = organ.votes[box] / num_aug if organ.votes is not None else mask
        prior_disagreement = np.abs(members - prior)
    else:
        prior, prior_disagreement = organ.ensemble[box], np.zeros_like(entropy)
    columns = {"entropy": entropy, "boundary": boundary, "entropy_x_boundary": entropy * boundary,
               "intensity_deviation": deviation, "inside_x_intensity_deviation": mask * deviation,
               "inside_x_boundary": mask * boundary, "prior_margin": np.abs(prior - 0.5),
               "prior_disagreement": prior_disagreement, "intensity_disagreement": disagreement,
               "intensity_disagreement_x_boundary": disagreement * boundary}
    return np.stack([columns[name] for name in FEATURES], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class ErrorModel:
    """Logistic regression of "the ensemble is wrong here" on :func:`voxel_features`."""

    coefficients: tuple[float, ...]
    intercept: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probability of error per row of ``features`` (N x len(FEATURES)), float32."""
        z = self.intercept + features.astype(np.float64) @ np.array(self.coefficients)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "coefficients": list(self.coefficients), "intercept": self.intercept}

    @classmethod
    def from_json(cls, entry: dict) -> "ErrorModel":
        if tuple(entry["features"]) != FEATURES:
            raise ValueError(f"{ERROR_MODEL} was fitted on other features ({entry['features']}); "
                             "rebuild it with scripts/fit_error_map.py")
        return cls(tuple(float(c) for c in entry["coefficients"]), float(entry["intercept"]))


@lru_cache(maxsize=None)
def shipped_error_model() -> ErrorModel | None:
    """The model that ships with URSAM (None if the package lacks it)."""
    if not resource_path(ERROR_MODEL).is_file():
        return None
    return ErrorModel.from_json(load_json(ERROR_MODEL)["model"])


def error_likelihood(organ: OrganResult, spacing_zyx: tuple[float, float, float], num_aug: int,
                     model: ErrorModel | None = None) -> np.ndarray | None:
    """Per voxel of the organ's crop, the probability that its ensemble mask is wrong there (float32,
    0 outside the prompt boxes); None without a model (a package without ``error_map.json``).

    spacing_zyx: the axial volume's voxel size in mm, ``(z, y, x)``; num_aug: the run's n."""
    model = model or shipped_error_model()
    if model is None:
        return None
    likelihood = np.zeros(organ.box_region.shape, np.float32)
    if organ.box_region.any():
        likelihood[organ.box_region] = model.predict(voxel_features(organ, spacing_zyx, num_aug))
    return likelihood
