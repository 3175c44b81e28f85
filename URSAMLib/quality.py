"""How good is an organ's contour, without labels: quality signals, a predicted DSC, a Review flag.

UR-SAM's entropy says *where* inside an organ the ensemble is unsure; a clinician first needs to
know *which organs* to look at. Each organ's result carries cheap signals of its quality:

* ``member_agreement``: the n SAM members (one per augmented box) agree; the volume all of them
  segment over the volume any of them does (1 = identical masks);
* ``prior_agreement``: SAM's members' majority against the atlas vote (Dice), where the prompts
  came from an atlas; two independent estimates that coincide are rarely both wrong;
* ``prior_confidence``: how unanimous the supports are inside the atlas vote's mask;
* ``mean_uncertainty`` / ``uncertain_fraction``: the paper's entropy over the box region, and the
  uncertain voxels per voxel of the mask;
* ``support_agreement``: the localizer's supports agree on the organ's box (mean IoU);
* ``volume_deviation``: how far the segmented volume is from the template's typical volume of the
  organ, ``|ln(volume / typical)|`` (0: typical; ln 2 = 0.69: half or double).

:func:`predict_dsc` maps them to a DSC with a small linear model fitted on OpenKBP training
patients only (``Resources/quality.json``, rebuilt by ``scripts/fit_quality.py``); an organ whose
predicted DSC is under the model's threshold is flagged for review. Organs are reviewed in
order of predicted DSC, lowest first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .metrics import dice
from .pipeline import OrganResult, SegmentationResult
from .resources import load_json, resource_path

QUALITY_MODEL = "quality.json"
"""The fitted model in ``Resources/``: feature names, their fill value where a signal is missing, standardisation,
coefficients, intercept and the Review threshold (written by ``scripts/fit_quality.py``)."""

FEATURES = ("member_agreement", "prior_agreement", "prior_confidence", "has_prior", "mean_uncertainty",
            "uncertain_fraction", "support_agreement", "volume_deviation")
"""Every signal :func:`organ_features` computes; the model uses a subset, chosen on training patients."""


def organ_features(organ: OrganResult, num_aug: int, voxel_ml: float, support_agreement: float | None = None,
                   typical_ml: float | None = None) -> dict[str, float]:
    """The quality signals of one organ's result (NaN where a signal does not exist for it).

    organ: a UR-SAM result (its ``votes``, ``prior``, entropy and rectification); num_aug: n;
    voxel_ml: the volume of one voxel in ml; support_agreement: the localizer's box agreement in
    [0, 1] (None for prompts a person gave); typical_ml: the organ's median volume over the
    template's supports (None when unknown).
    """
    nan = float("nan")
    votes = organ.votes
    member_agreement = nan
    sam_majority = None
    if votes is not None:
        anywhere = int(np.count_nonzero(votes))
        member_agreement = int(np.count_nonzero(votes >= num_aug)) / anywhere if anywhere else 0.0
        sam_majority = 2 * votes.astype(np.int16) > num_aug
    prior_agreement = prior_confidence = nan
    if organ.prior is not None:
        inside = organ.prior >= 0.5
        prior_confidence = float(organ.prior[inside].mean()) if inside.any() else 0.0
        if sam_majority is not None:
            prior_agreement = dice(sam_majority, inside)
    mask_voxels = int(organ.mask.sum())
    uncertain = 0 if organ.rectification is None else int(organ.rectification.uncertain.sum())
    volume_ml = mask_voxels * voxel_ml
    volume_deviation = abs(math.log(max(volume_ml, voxel_ml) / typical_ml)) if typical_ml else nan
    return {
        "member_agreement": member_agreement,
        "prior_agreement": prior_agreement,
        "prior_confidence": prior_confidence,
        "has_prior": float(organ.prior is not None),
        "mean_uncertainty": organ.mean_uncertainty,
        "uncertain_fraction": uncertain / max(mask_voxels, 1),
        "support_agreement": nan if support_agreement is None else float(support_agreement),
        "volume_deviation": volume_deviation,
    }


@dataclass(frozen=True)
class QualityModel:
    """A linear model of an organ's DSC on standardised quality signals, clipped to [0, 1]."""

    features: tuple[str, ...]
    fill: tuple[float, ...]
    """The value a missing (NaN) signal takes: its median over the training organs that have it."""
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    review_below: float
    """Organs whose predicted DSC is under this are flagged for review."""

    def predict(self, features: dict[str, float]) -> float:
        x = np.array([features.get(name, float("nan")) for name in self.features], float)
        x = np.where(np.isfinite(x), x, np.array(self.fill))
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(np.clip(self.intercept + z @ np.array(self.coefficients), 0.0, 1.0))

    def to_json(self) -> dict:
        return {"features": list(self.features), "fill": list(self.fill), "mean": list(self.mean),
                "scale": list(self.scale), "coefficients": list(self.coefficients),
                "intercept": self.intercept, "review_below": self.review_below}

    @classmethod
    def from_json(cls, entry: dict) -> "QualityModel":
        return cls(tuple(entry["features"]), tuple(entry["fill"]), tuple(entry["mean"]), tuple(entry["scale"]),
                   tuple(entry["coefficients"]), float(entry["intercept"]), float(entry["review_below"]))


PROMPT_KINDS = ("automatic", "given")
"""The shipped file holds one model per kind of prompt: ``automatic`` (a template localized the organ)
and ``given`` (boxes from a label map or drawn by a person), whose signals and errors differ."""


@lru_cache(maxsize=None)
def shipped_model(kind: str) -> QualityModel | None:
    """The model that ships with URSAM for prompts of ``kind`` (None if the package lacks it)."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompt kind {kind!r} is not one of {PROMPT_KINDS}")
    if not resource_path(QUALITY_MODEL).is_file():
        return None
    entry = load_json(QUALITY_MODEL)["models"].get(kind)
    return QualityModel.from_json(entry) if entry else None


def assess(features: dict[str, float], kind: str, model: QualityModel | None = None) -> dict:
    """``{"predicted_dsc": float, "review": bool}`` for one organ's signals, by the shipped model
    for prompts of ``kind`` (or ``model``); None/None without a model."""
    model = model or shipped_model(kind)
    if model is None:
        return {"predicted_dsc": None, "review": None}
    predicted = model.predict(features)
    return {"predicted_dsc": round(predicted, 3), "review": bool(predicted < model.review_below)}


def review_order(predicted: dict[str, float | None]) -> list[str]:
    """Organ names, the one most in need of review (lowest predicted DSC) first; unknown last."""
    return sorted(predicted, key=lambda name: (predicted[name] is None, predicted[name] or 0.0, name))


def legend(name: str, entry: dict) -> str:
    """An organ's name with its predicted DSC and Review flag from its summary ``entry`` (for figures)."""
    if entry.get("predicted_dsc") is None:
        return name
    return f"{name} (pred. DSC {entry['predicted_dsc']:.2f}{', Review' if entry['review'] else ''})"


@dataclass(frozen=True)
class QualityContext:
    """What a run knows about its organs besides their results: the kind of prompts, the voxel
    volume, and for automatic prompts the localizer's agreement and the template's typical volumes."""

    kind: str
    """``automatic`` or ``given`` (:data:`PROMPT_KINDS`)."""
    voxel_ml: float
    support_agreement: dict[str, float] = field(default_factory=dict)
    typical_ml: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "voxel_ml": self.voxel_ml, "support_agreement": dict(self.support_agreement),
                "typical_ml": dict(self.typical_ml)}

    @classmethod
    def from_json(cls, entry: dict) -> "QualityContext":
        return cls(entry["kind"], float(entry["voxel_ml"]), dict(entry["support_agreement"]),
                   dict(entry["typical_ml"]))


def automatic_context(localizations: dict, template, voxel_ml: float,
                      names: dict[str, str] | None = None) -> QualityContext:
    """The context of prompts a localizer placed: each organ's support agreement (``localizations``,
    :class:`URSAMLib.localize.Localization` by organ) and the ``template``'s typical volumes.
    names: template organ → the organ's name in the run (default: the same; given, only those)."""
    def rename(organ: str) -> str:
        return names.get(organ, organ) if names else organ

    return QualityContext("automatic", voxel_ml,
                          {rename(organ): loc.agreement for organ, loc in localizations.items()},
                          {rename(organ): ml for organ, ml in template.typical_volumes_ml().items()
                           if not names or organ in names})


def assess_result(result: SegmentationResult, context: QualityContext) -> dict[str, dict]:
    """Organ name → ``{"predicted_dsc", "review", "signals"}`` for every organ of a run (signals
    rounded, None where missing). Call it again after a re-rectification: some signals change."""
    assessed = {}
    for organ in result.organs:
        signals = organ_features(organ, result.settings.num_aug, context.voxel_ml,
                                 context.support_agreement.get(organ.name), context.typical_ml.get(organ.name))
        assessed[organ.name] = {**assess(signals, context.kind),
                                "signals": {k: (round(v, 4) if np.isfinite(v) else None) for k, v in signals.items()}}
    return assessed
