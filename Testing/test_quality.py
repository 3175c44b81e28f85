"""URSAMLib.quality: the quality signals of an organ's result, the linear model on them, the Review
flag and the review order; and the shipped model file."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from URSAMLib import quality
from URSAMLib.pipeline import OrganResult, SegmentationResult, Settings
from URSAMLib.resources import resource_path


def organ_with(votes: np.ndarray, num_aug: int = 3, prior: np.ndarray | None = None) -> OrganResult:
    """An organ whose ensemble is the members' vote fraction (every member certain)."""
    ensemble = (votes / num_aug).astype(np.float32)
    organ = OrganResult("liver", 1, tuple(slice(0, n) for n in votes.shape), {}, np.ones(votes.shape, bool),
                        np.full(votes.shape, 0.5, np.float32), ensemble, quality_entropy(ensemble), ensemble.copy(),
                        votes=votes.astype(np.uint8), prior=prior)
    organ.rectify(Settings(num_aug=num_aug))
    return organ


def quality_entropy(p: np.ndarray) -> np.ndarray:
    from URSAMLib.uncertainty import predictive_entropy

    return predictive_entropy(p)


def test_members_that_agree_score_one_and_members_that_differ_score_the_shared_part():
    votes = np.zeros((2, 6, 6), np.uint8)
    votes[:, 1:5, 1:5] = 3  # 32 voxels every member segments
    signals = quality.organ_features(organ_with(votes), 3, voxel_ml=0.001)
    assert signals["member_agreement"] == 1.0
    votes[:, 1:5, 5] = 1  # 8 voxels only one member segments
    signals = quality.organ_features(organ_with(votes), 3, voxel_ml=0.001)
    assert signals["member_agreement"] == pytest.approx(32 / 40)
    assert signals["uncertain_fraction"] >= 0 and signals["mean_uncertainty"] > 0
    # signals that need what a run did not have are missing, not made up
    for name in ("prior_agreement", "prior_confidence", "support_agreement", "volume_deviation"):
        assert math.isnan(signals[name]), name
    assert signals["has_prior"] == 0.0


def test_the_atlas_prior_and_the_template_volume_give_their_signals():
    votes = np.zeros((2, 6, 6), np.uint8)
    votes[:, 1:5, 1:5] = 3  # SAM's majority: 32 voxels
    prior = np.zeros(votes.shape, np.float32)
    prior[:, 1:5, 1:3] = 0.8  # the atlas: half of it, with 4 of 5 supports
    signals = quality.organ_features(organ_with(votes, prior=prior), 3, voxel_ml=0.5, support_agreement=0.7,
                                     typical_ml=8.0)
    assert signals["prior_agreement"] == pytest.approx(2 * 16 / (32 + 16))
    assert signals["prior_confidence"] == pytest.approx(0.8)
    assert signals["has_prior"] == 1.0 and signals["support_agreement"] == 0.7
    segmented_ml = organ_with(votes, prior=prior).mask.sum() * 0.5
    assert signals["volume_deviation"] == pytest.approx(abs(math.log(segmented_ml / 8.0)))


def test_the_model_standardises_fills_missing_signals_and_clips():
    model = quality.QualityModel(("member_agreement", "support_agreement"), fill=(0.5, 0.6), mean=(0.5, 0.5),
                                 scale=(0.1, 0.2), coefficients=(0.1, 0.05), intercept=0.4, review_below=0.45)
    assert model.predict({"member_agreement": 0.7, "support_agreement": 0.5}) == pytest.approx(0.4 + 0.2)
    # a missing signal takes its fill value
    assert model.predict({"member_agreement": 0.5, "support_agreement": float("nan")}) == pytest.approx(0.425)
    assert model.predict({"member_agreement": 5.0, "support_agreement": 0.5}) == 1.0
    assert model.predict({"member_agreement": -5.0, "support_agreement": 0.5}) == 0.0
    assert quality.QualityModel.from_json(json.loads(json.dumps(model.to_json()))) == model
    assert quality.assess({"member_agreement": 0.5, "support_agreement": 0.5}, "automatic", model) == \
        {"predicted_dsc": 0.4, "review": True}
    assert quality.assess({"member_agreement": 0.7, "support_agreement": 0.5}, "automatic", model)["review"] is False


def test_the_shipped_file_holds_a_model_for_each_kind_of_prompt_fitted_on_training_patients():
    shipped = json.loads(resource_path(quality.QUALITY_MODEL).read_text())
    for kind in quality.PROMPT_KINDS:
        model = quality.shipped_model(kind)
        assert model is not None and set(model.features) <= set(quality.FEATURES) and model.features
        assert 0 < model.review_below < 1
        patients = shipped["fitted_on"][kind]["patients"]
        assert patients and all(200 > int(p.split("_")[1]) for p in patients)  # OpenKBP training ids: 1-200
    with pytest.raises(ValueError, match="prompt kind"):
        quality.shipped_model("drawn")


def test_review_order_puts_the_lowest_predicted_first_and_unknown_last():
    assert quality.review_order({"a": 0.8, "b": None, "c": 0.2, "d": 0.5}) == ["c", "d", "a", "b"]


def test_a_result_is_assessed_organ_by_organ_with_its_context():
    votes = np.zeros((2, 6, 6), np.uint8)
    votes[:, 1:5, 1:5] = 3
    organ = organ_with(votes)
    result = SegmentationResult([organ], (2, 6, 6), Settings())
    context = quality.QualityContext("given", 0.001)
    assessed = quality.assess_result(result, context)
    assert set(assessed) == {"liver"}
    assert assessed["liver"]["signals"]["member_agreement"] == 1.0
    assert assessed["liver"]["signals"]["support_agreement"] is None
    expected = quality.assess(quality.organ_features(organ, 3, 0.001), "given")
    assert {k: assessed["liver"][k] for k in ("predicted_dsc", "review")} == expected
    assert quality.QualityContext.from_json(json.loads(json.dumps(context.to_json()))) == context


def test_the_legend_names_the_prediction_and_the_flag():
    assert quality.legend("Liver", {"predicted_dsc": 0.42, "review": True}) == "Liver (pred. DSC 0.42, Review)"
    assert quality.legend("Liver", {"predicted_dsc": 0.9, "review": False}) == "Liver (pred. DSC 0.90)"
    assert quality.legend("Liver", {"predicted_dsc": None, "review": None}) == "Liver"
