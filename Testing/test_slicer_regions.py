"""URSAMSlicerLib.regions: the result table's numbers and the uncertain regions the views step through."""
from __future__ import annotations

import numpy as np
import pytest

from URSAMLib.pipeline import OrganResult, SegmentationResult, Settings
from URSAMSlicerLib import regions

pytestmark = pytest.mark.slicer


def hand_made_result() -> SegmentationResult:
    """One organ in a crop at offset (1, 2, 3), with two uncertain blobs of known size and entropy."""
    shape = (4, 10, 12)
    ensemble = np.full(shape, 0.02, np.float32)
    ensemble[1:3, 2:8, 2:9] = 0.98  # the organ: 2 x 6 x 7 = 84 voxels
    uncertainty = np.full(shape, 0.01, np.float32)
    uncertainty[0:2, 0:2, 0:2] = 0.6  # blob A: 8 voxels, total 4.8
    uncertainty[3, 7:10, 9:12] = 0.5  # blob B: 9 voxels, total 4.5
    uncertainty[3, 0, 11] = 0.69  # a single voxel: below MIN_REGION_VOXELS
    box_region = np.ones(shape, bool)
    organ = OrganResult("liver", 5, (slice(1, 5), slice(2, 12), slice(3, 15)), {z: np.array([3.0, 2, 14, 11])
                                                                                  for z in range(1, 5)},
                        box_region, np.full(shape, 0.5, np.float32), ensemble, uncertainty, ensemble.copy())
    organ.rectify(Settings(method="fixed"))  # fixed T = ln(2)/2 = 0.35: exactly the blobs are uncertain
    return SegmentationResult([organ], (6, 14, 16), Settings(method="fixed"))


def test_organ_statistics_give_volume_in_ml_mean_uncertainty_and_a_review_flag():
    result = hand_made_result()
    rows = regions.organ_statistics(result, spacing_zyx=(2.0, 0.5, 0.5))
    organ = result.organs[0]
    assert rows[0].name == "liver" and rows[0].label == 5
    assert rows[0].volume_ml == pytest.approx(organ.mask.sum() * 0.5 / 1000)
    assert rows[0].mean_uncertainty == pytest.approx(float(organ.uncertainty.mean()))
    assert rows[0].needs_review == (rows[0].mean_uncertainty > regions.REVIEW_ABOVE)
    # the flag follows the mean uncertainty in the boxes
    organ.uncertainty[:] = 0.3
    assert regions.organ_statistics(result, (1, 1, 1))[0].needs_review
    organ.uncertainty[:] = 0.01
    assert not regions.organ_statistics(result, (1, 1, 1))[0].needs_review


def test_volume_counts_the_segment_after_overlaps_are_resolved():
    result = hand_made_result()
    labels = np.zeros(result.shape, np.uint16)
    labels[0, 0, :7] = 5
    assert regions.organ_statistics(result, (1, 1, 1), labels)[0].volume_ml == pytest.approx(0.007)


def test_uncertain_regions_are_components_ranked_by_summed_uncertainty():
    result = hand_made_result()
    found = regions.uncertain_regions(result)
    assert [(r.voxels, round(r.total_uncertainty, 3)) for r in found] == [(8, 4.8), (9, 4.5)]
    organ = result.organs[0]
    for region in found:
        local = np.array(region.centre) - [s.start for s in organ.region]
        assert organ.rectification.uncertain[tuple(local)]  # the centre is inside the region
    assert found[0].centre in [(1 + z, 2 + y, 3 + x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    assert found[1].centre == (4, 2 + 8, 3 + 10)  # blob B's middle voxel


def test_an_organ_is_focused_on_its_worst_region_or_else_its_middle():
    result = hand_made_result()
    assert regions.organ_focus(result, 5) == regions.uncertain_regions(result)[0].centre
    organ = result.organs[0]
    organ.rectification.uncertain[:] = False
    z, y, x = regions.organ_focus(result, 5)
    assert organ.mask[z - 1, y - 2, x - 3]  # inside the segment
    assert regions.organ_focus(result, 99) is None


def test_an_organ_with_only_tiny_regions_still_offers_its_largest():
    result = hand_made_result()
    organ = result.organs[0]
    organ.rectification.uncertain[:] = False
    organ.rectification.uncertain[0, 0, 0] = True
    assert [r.voxels for r in regions.uncertain_regions(result)] == [1]


def two_organ_result() -> SegmentationResult:
    """The hand-made liver and a copy of it as 'spleen' (label 6), each with the same two regions."""
    result = hand_made_result()
    liver = result.organs[0]
    spleen = OrganResult("spleen", 6, liver.region, liver.boxes, liver.box_region, liver.intensity,
                         liver.ensemble.copy(), liver.uncertainty.copy(), liver.plain)
    spleen.rectify(result.settings)
    return SegmentationResult([liver, spleen], result.shape, result.settings)


def test_the_table_lists_organs_in_review_order_with_their_predicted_dsc_and_flag():
    result = two_organ_result()
    assessed = {"liver": {"predicted_dsc": 0.8, "review": False}, "spleen": {"predicted_dsc": 0.3, "review": True}}
    rows = regions.organ_statistics(result, (1, 1, 1), assessed=assessed)
    assert [(r.name, r.predicted_dsc, r.needs_review) for r in rows] == [("spleen", 0.3, True), ("liver", 0.8, False)]
    # the next-region buttons follow that order: all of the spleen's regions, then the liver's
    found = regions.uncertain_regions(result, [r.name for r in rows])
    assert [(r.organ, r.voxels) for r in found] == [("spleen", 8), ("spleen", 9), ("liver", 8), ("liver", 9)]
    # without a prediction the old rule of thumb flags it
    rows = regions.organ_statistics(result, (1, 1, 1), assessed={})
    assert all(r.predicted_dsc is None and r.needs_review == (r.mean_uncertainty > regions.REVIEW_ABOVE) for r in rows)


def test_a_region_mask_is_exactly_its_component():
    result = hand_made_result()
    organ = result.organs[0]
    first, second = regions.uncertain_regions(result)
    masks = [regions.region_mask(organ, r) for r in (first, second)]
    assert [int(m.sum()) for m in masks] == [first.voxels, second.voxels]
    assert not (masks[0] & masks[1]).any() and not ((masks[0] | masks[1]) & ~organ.rectification.uncertain).any()


def test_with_an_error_likelihood_regions_are_ranked_by_their_expected_wrong_voxels():
    result = hand_made_result()
    organ = result.organs[0]
    likelihood = np.zeros(organ.uncertainty.shape, np.float32)
    likelihood[3, 7:10, 9:12] = 0.5  # blob B, less uncertain than A, holds more expected errors: 9 x 0.5
    likelihood[0:2, 0:2, 0:2] = 0.25  # blob A: 8 x 0.25
    found = regions.organ_regions(organ, likelihood)
    assert [(r.voxels, r.expected_errors) for r in found] == [(9, pytest.approx(4.5)), (8, pytest.approx(2.0))]
    assert [r.voxels for r in regions.organ_regions(organ)] == [8, 9]  # without it: summed uncertainty


def test_given_the_spacing_the_shipped_error_model_ranks_the_regions():
    from URSAMLib.error_map import error_likelihood

    result = hand_made_result()
    likelihoods = regions.error_likelihoods(result, (2.0, 0.5, 0.5))
    found = regions.uncertain_regions(result, likelihoods=likelihoods)
    likelihood = error_likelihood(result.organs[0], (2.0, 0.5, 0.5), result.settings.num_aug)
    sums = [float(likelihood[regions.region_mask(result.organs[0], r)].sum()) for r in found]
    assert [r.expected_errors for r in found] == pytest.approx(sums) and sums == sorted(sums, reverse=True)
    assert regions.organ_focus(result, 5, likelihoods) == found[0].centre
