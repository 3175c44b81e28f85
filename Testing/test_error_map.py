"""URSAMLib.error_map: the voxel features, the logistic error model and the shipped model file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from URSAMLib import error_map
from URSAMLib.error_map import FEATURES, ErrorModel, error_likelihood, voxel_features
from URSAMLib.metrics import auroc
from URSAMLib.pipeline import OrganResult, Settings
from URSAMLib.resources import resource_path
from URSAMLib.uncertainty import predictive_entropy


def square_organ(prior: np.ndarray | None = None) -> OrganResult:
    """A 6 x 6 organ (intensity 0.6) on 3 slices of background (0.2), the ensemble sure of it except
    one boundary voxel at p = 0.5; one voxel inside the mask has the background's intensity."""
    shape = (3, 12, 12)
    ensemble = np.full(shape, 0.02, np.float32)
    ensemble[:, 3:9, 3:9] = 0.98
    ensemble[1, 3, 5] = 0.5
    intensity = np.full(shape, 0.2, np.float32)
    intensity[:, 3:9, 3:9] = 0.6
    intensity[1, 5, 5] = 0.2
    votes = np.where(ensemble > 0.5, 3, 0).astype(np.uint8)
    organ = OrganResult("liver", 1, tuple(slice(0, n) for n in shape), {}, np.ones(shape, bool), intensity,
                        ensemble, predictive_entropy(ensemble), ensemble.copy(), votes=votes, prior=prior)
    organ.rectify(Settings())
    return organ


def column(features: np.ndarray, name: str, shape) -> np.ndarray:
    return features[:, FEATURES.index(name)].reshape(shape)


def test_each_voxel_gets_entropy_boundary_intensity_and_prior_features():
    organ = square_organ()
    features = voxel_features(organ, (2.0, 1.0, 1.0), num_aug=3)
    assert features.shape == (organ.box_region.sum(), len(FEATURES)) and features.dtype == np.float32
    shape = organ.box_region.shape
    entropy = column(features, "entropy", shape)
    assert entropy[1, 3, 5] == pytest.approx(1.0) and entropy.max() == pytest.approx(1.0)  # p = 0.5: one bit
    boundary = column(features, "boundary", shape)
    assert boundary[1, 3, 4] > boundary[1, 5, 6] and boundary[1, 2, 5] > boundary[1, 0, 5]  # nearer the edge
    deviation = column(features, "inside_x_intensity_deviation", shape)
    assert np.unravel_index(np.argmax(deviation), shape) == (1, 5, 5)  # the voxel unlike the organ
    assert deviation[0, 0, 0] == 0  # outside the mask it does not count
    disagreement = column(features, "intensity_disagreement", shape)
    assert disagreement[1, 5, 5] > 0.5 > disagreement[1, 6, 6]
    # without a prior the ensemble stands in for it and SAM cannot disagree with it
    assert np.all(column(features, "prior_disagreement", shape) == 0)
    assert column(features, "prior_margin", shape)[0, 0, 0] == pytest.approx(0.48)


def test_an_atlas_prior_that_disagrees_with_sam_is_a_feature():
    prior = np.zeros((3, 12, 12), np.float32)
    prior[:, 3:9, 3:6] = 0.8  # the atlas puts the organ in the left half only
    features = voxel_features(square_organ(prior), (2.0, 1.0, 1.0), num_aug=3)
    disagreement = column(features, "prior_disagreement", prior.shape)
    assert disagreement[1, 5, 7] == pytest.approx(1.0) and disagreement[1, 5, 4] == pytest.approx(0.2)
    assert column(features, "prior_margin", prior.shape)[1, 5, 4] == pytest.approx(0.3)


def test_the_model_is_a_logistic_regression_that_round_trips_and_refuses_other_features():
    model = ErrorModel(tuple([2.0] + [0.0] * (len(FEATURES) - 1)), -1.0)
    x = np.zeros((2, len(FEATURES)), np.float32)
    x[1, 0] = 1.0
    assert model.predict(x) == pytest.approx([1 / (1 + np.e), 1 / (1 + np.exp(-1.0))])
    assert ErrorModel.from_json(json.loads(json.dumps(model.to_json()))) == model
    with pytest.raises(ValueError, match="fit_error_map.py"):
        ErrorModel.from_json({**model.to_json(), "features": ["entropy"]})


def test_the_likelihood_covers_the_boxes_only_and_ranks_the_odd_voxel_first():
    organ = square_organ()
    organ.box_region[:, :, 10:] = False
    weights = dict.fromkeys(FEATURES, 0.0)
    weights.update(inside_x_intensity_deviation=5.0, entropy=1.0)
    likelihood = error_likelihood(organ, (2.0, 1.0, 1.0), 3, ErrorModel(tuple(weights.values()), -3.0))
    assert likelihood.shape == organ.box_region.shape and np.all(likelihood[:, :, 10:] == 0)
    assert np.unravel_index(np.argmax(likelihood), likelihood.shape) == (1, 5, 5)


def test_the_shipped_model_was_fitted_on_training_patients_and_beats_the_entropy_there():
    shipped = json.loads(resource_path(error_map.ERROR_MODEL).read_text())
    assert shipped["model"]["features"] == list(FEATURES)
    assert error_map.shipped_error_model() == ErrorModel.from_json(shipped["model"])
    patients = shipped["fitted_on"]
    assert len(patients) >= 5 and all(p.startswith("pt_") and int(p[3:]) <= 200 for p in patients)
    held_out = shipped["leave_one_patient_out_auroc"]
    assert held_out["error_map"] > held_out["entropy"] + 0.03


def test_on_a_hand_made_error_the_shipped_model_ranks_better_than_the_entropy():
    """The ensemble takes in a block of background intensity next to the organ as confidently as the
    organ itself (as a prompt box that is too large can make SAM do): the entropy cannot tell the
    block from the organ, the error model can."""
    organ = square_organ()
    organ.ensemble[:, 3:9, 9:11] = 0.98
    organ.uncertainty = predictive_entropy(organ.ensemble)
    truth = np.zeros(organ.ensemble.shape, bool)
    truth[:, 3:9, 3:9] = True
    wrong = organ.ensemble_mask != truth
    likelihood = error_likelihood(organ, (2.0, 1.0, 1.0), 3)
    assert auroc(likelihood, wrong) > auroc(organ.uncertainty, wrong) + 0.1


@pytest.mark.model
@pytest.mark.slow
def test_on_an_unseen_ct_the_error_likelihood_ranks_the_wrong_voxels_better_than_the_entropy(head_neck):
    """Validation patient pt_201, the product's automatic run for two organs, scored against its
    labels. Measured (scripts/fit_error_map.py): AUROC 0.59 -> 0.77 (brainstem), 0.83 -> 0.97 (mandible)."""
    from conftest import hn_pair
    from URSAMLib import io
    from URSAMLib.job import SegmentJob, segment_job_ct

    ct_path, labels_path = hn_pair(head_neck, 201, "validation")
    job = SegmentJob(ct_path, "unused", region="head-and-neck", organs="Brainstem,Mandible", embedding_cache=False)
    ct = io.read_ct(ct_path)
    hu, frame = io.axial_array(ct)
    reference = io.axial_array(io.read_label_map(labels_path, ct), np.uint16)[0]
    result = segment_job_ct(job, ct, hu, frame).result
    assert [organ.name for organ in result.organs] == ["Brainstem", "Mandible"]
    for organ in result.organs:
        box = organ.box_region
        wrong = (organ.ensemble_mask != (reference[organ.region] == organ.label))[box]
        likelihood = error_likelihood(organ, frame.spacing, job.settings.num_aug)[box]
        assert auroc(likelihood, wrong) > auroc(organ.uncertainty[box], wrong) + 0.08, organ.name
