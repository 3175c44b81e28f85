"""URSAMLib.pipeline: slice bookkeeping, crops, label maps, cancel and progress.

The SAM-specific parts are tested with the real LiteMedSAM in test_cli.py; here a small
geometric stand-in (it marks the bright pixels inside each box) makes every expected voxel
computable by hand (URSAMSlicerLib.testing.BrightInBox, shared with the Slicer self-test).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from URSAMLib.errors import Cancelled, URSAMError
from URSAMLib.pipeline import Settings, segment
from URSAMLib.prompts import OrganPrompt, augment_box, augmentation_rng
from URSAMSlicerLib.testing import BrightInBox


def volume():
    ct = np.full((6, 30, 40), -100.0, np.float32)
    ct[1:4, 5:12, 5:15] = 100  # organ A
    ct[2:6, 15:25, 20:35] = 100  # organ B
    return ct


def prompts():
    a = OrganPrompt("a", 1, {z: np.array([4.0, 4.0, 15.0, 12.0]) for z in (1, 2, 3)})
    b = OrganPrompt("b", 2, {z: np.array([19.0, 14.0, 35.0, 25.0]) for z in (2, 3, 4, 5)})
    return [a, b]


def test_each_needed_slice_is_embedded_once_and_organs_land_in_place():
    backbone = BrightInBox()
    result = segment(volume(), prompts(), backbone, Settings(num_aug=3, ratio=0.0))
    assert sum(backbone.embedded) == 5  # slices 1..5, shared by both organs and all 3 boxes
    labels = result.label_map("ensemble")
    expected = np.zeros(volume().shape, np.uint16)
    expected[1:4, 5:12, 5:15] = 1
    expected[2:6, 15:25, 20:35] = 2
    assert np.array_equal(labels, expected)
    assert result.timings["slices"] == 5 and result.timings["boxes"] == 3 * (3 + 4)


def test_crops_hold_probabilities_and_uncertainty_only_around_the_boxes():
    result = segment(volume(), prompts(), BrightInBox(), Settings(num_aug=1))
    a = result.organs[0]
    assert a.region == (slice(1, 4), slice(4, 13), slice(4, 16))
    assert a.ensemble.shape == (3, 9, 12) and a.box_region.all()
    assert np.isclose(a.ensemble.max(), 0.9) and np.isclose(a.ensemble.min(), 0.1)
    u = result.uncertainty_map()
    assert u[0].max() == 0 and u[1, 4:13, 4:16].min() > 0  # slice 0 has no organ
    assert a.mean_uncertainty == pytest.approx(float(a.uncertainty.mean()))


def test_augmented_boxes_disagree_at_the_border_and_make_it_uncertain():
    settings = Settings(num_aug=5, ratio=0.1, seed=3)
    result = segment(volume(), prompts()[:1], BrightInBox(), settings)
    a = result.organs[0]
    # Reproduce the stand-in's ensemble on slice 2 from the same seeded boxes.
    boxes = augment_box(np.array([4.0, 4.0, 15.0, 12.0]), 5, 0.1, (30, 40), augmentation_rng(3, 1, 2))
    rows, cols = np.mgrid[:30, :40]
    bright = volume()[2] > 0
    maps = [np.where((cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1) & bright, 0.9, 0.1)
            for x0, y0, x1, y1 in boxes]
    _, ys, xs = a.region
    assert np.allclose(a.ensemble[1], np.mean(maps, axis=0)[ys, xs])
    assert a.uncertainty.max() > 0.5  # boxes that cut the organ disagree
    assert np.allclose(a.plain[1], maps[0][ys, xs])  # the un-augmented box alone
    # each voxel's count of members that segment it (the quality signals' member agreement)
    assert np.array_equal(a.votes[1], (np.array(maps) > 0.5).sum(axis=0)[ys, xs]) and a.votes.max() == 5
    assert np.array_equal(result.label_map("plain")[2], np.where(maps[0] > 0.5, 1, 0))


def test_an_organ_in_two_parts_is_segmented_in_both_and_not_between_them():
    ct = np.full((1, 20, 40), 100.0, np.float32)  # bright everywhere: one box around both parts takes all
    two = OrganPrompt("mandible", 7, {0: np.array([[2.0, 5.0, 9.0, 14.0], [30.0, 5.0, 37.0, 14.0]])})
    result = segment(ct, [two], BrightInBox(), Settings(num_aug=3, ratio=0.02, seed=1))
    labels = result.label_map("ensemble")[0]
    assert labels[6:14, 3:9].all() and labels[6:14, 31:37].all()  # inside each part's box
    assert not labels[:, 12:28].any()  # the gap between the parts stays out
    organ = result.organs[0]
    assert organ.boxes[0].shape == (2, 4) and result.timings["boxes"] == 2 * 3
    assert not organ.box_region[:, :, 12 - organ.region[2].start].any()  # Eq. 3's region is the two boxes
    one = OrganPrompt("mandible", 7, {0: np.array([2.0, 5.0, 37.0, 14.0])})
    assert segment(ct, [one], BrightInBox(), Settings(num_aug=1)).label_map("ensemble")[0, 5:15, 12:28].all()


def test_a_prior_joins_the_ensemble_as_a_weighted_member():
    ct = np.full((1, 20, 20), 100.0, np.float32)
    prior = np.zeros((1, 20, 20), np.float32)
    prior[0, :, :10] = 1.0  # the prior says: only the left half
    prompt = OrganPrompt("a", 1, {0: np.array([0.0, 0.0, 19.0, 19.0])}, prior=((slice(0, 1), slice(0, 20),
                                                                                  slice(0, 20)), prior))
    sam_only = segment(ct, [prompt], BrightInBox(), Settings(num_aug=1, prior_weight=0)).organs[0]
    assert np.allclose(sam_only.ensemble, 0.9)  # weight 0: the paper's ensemble, the prior ignored
    default = segment(ct, [prompt], BrightInBox(), Settings(num_aug=1)).organs[0]
    assert np.allclose(default.ensemble[0, :, 10:], 0.9 / (1 + Settings().prior_weight))  # on by default
    both = segment(ct, [prompt], BrightInBox(), Settings(num_aug=1, prior_weight=1.0)).organs[0]
    assert np.allclose(both.ensemble[0, :, :10], (0.9 + 1.0) / 2) and np.allclose(both.ensemble[0, :, 10:], 0.45)
    assert both.uncertainty[0, :, 10:].min() > both.uncertainty[0, :, :10].max()  # disagreement is uncertain
    assert np.array_equal(both.prior, prior) and sam_only.prior is not None  # kept on the crop for quality
    assert segment(ct, [OrganPrompt("a", 1, prompt.boxes)], BrightInBox(), Settings(num_aug=1)).organs[0].prior is None
    with pytest.raises(URSAMError):
        Settings(prior_weight=-1).validate()


def test_another_prior_weight_after_the_run_is_the_run_with_that_weight():
    rng = np.random.default_rng(4)
    ct = rng.normal(-100, 20, (3, 24, 24)).astype(np.float32)
    ct[:, 5:15, 4:18] = 90
    prior = np.zeros((3, 24, 24), np.float32)
    prior[:, 6:16, 3:12] = 0.6
    prior[1, 6:16, 3:12] = 1.0
    boxes = {z: np.array([[2.0, 3.0, 20.0, 18.0]]) for z in range(3)}
    prompt = OrganPrompt("a", 1, boxes, prior=((slice(0, 3), slice(0, 24), slice(0, 24)), prior))
    result = segment(ct, [prompt, OrganPrompt("b", 2, boxes)], BrightInBox(), Settings(num_aug=3))
    without_prior = result.organs[1].ensemble.copy()
    for weight in (0.0, 2.0, 64.0, Settings().prior_weight):
        result.reweigh_prior(weight)
        direct = segment(ct, [prompt], BrightInBox(), Settings(num_aug=3, prior_weight=weight)).organs[0]
        organ = result.organs[0]
        assert np.allclose(organ.ensemble, direct.ensemble, atol=1e-5), weight
        assert np.allclose(organ.uncertainty, direct.uncertainty, atol=1e-4), weight
        assert np.array_equal(organ.mask, direct.mask), weight
        assert result.settings.prior_weight == weight
    assert np.array_equal(result.organs[1].ensemble, without_prior)  # no prior: untouched
    with pytest.raises(URSAMError, match="prior's weight"):
        result.reweigh_prior(-1)


def test_overlaps_go_to_the_organ_with_the_higher_ensemble_probability():
    ct = np.full((2, 20, 20), 100.0, np.float32)
    a = OrganPrompt("a", 1, {0: np.array([0.0, 0.0, 9.0, 19.0])})
    b = OrganPrompt("b", 2, {0: np.array([5.0, 0.0, 19.0, 19.0])})

    class Weighted(BrightInBox):
        def decode(self, embedding, boxes, slice_shape):
            maps = super().decode(embedding, boxes, slice_shape)
            maps[boxes[:, 0] == 5] *= 0.8  # b is less sure (0.72) than a (0.9)
            return maps

    labels = segment(ct, [a, b], Weighted(), Settings(num_aug=1)).label_map()
    assert (labels[0, :, :10] == 1).all() and (labels[0, :, 10:] == 2).all()


def test_rerectify_changes_only_the_rectification():
    backbone = BrightInBox()
    result = segment(volume(), prompts(), backbone, Settings(num_aug=3, ratio=0.05))
    calls = list(backbone.embedded)
    ensemble_before = result.organs[0].ensemble.copy()
    result.rerectify(method="unc-fnc")
    assert backbone.embedded == calls and result.settings.method == "unc-fnc"
    assert np.array_equal(result.organs[0].ensemble, ensemble_before)
    assert np.array_equal(result.organs[0].mask,
                          result.organs[0].ensemble_mask | result.organs[0].rectification.uncertain)
    with pytest.raises(URSAMError):
        result.rerectify(num_aug=0)


def test_per_organ_rectification_takes_each_prompts_measured_rule_and_ursam_elsewhere():
    from dataclasses import replace

    from URSAMLib.rectify import rectify

    measured = [replace(prompts()[0], method="unc-fnc"), prompts()[1]]
    result = segment(volume(), measured, BrightInBox(), Settings(num_aug=3, ratio=0.05))
    assert result.settings.method == "per-organ"
    for organ, expected in zip(result.organs, ("unc-fnc", "ursam")):
        assert organ.rectification.method == expected
        alone = rectify(organ.intensity, organ.ensemble, organ.uncertainty, organ.box_region, expected)
        assert np.array_equal(organ.mask, alone.mask)
    assert not np.array_equal(result.organs[0].mask, result.organs[0].ensemble_mask)  # the rule did something
    result.rerectify(method="fixed")  # a rule chosen for the run applies to every organ
    assert [organ.rectification.method for organ in result.organs] == ["fixed", "fixed"]
    result.rerectify(method="per-organ")
    assert [organ.rectification.method for organ in result.organs] == ["unc-fnc", "ursam"]


def test_same_seed_same_result_bit_for_bit():
    runs = [segment(volume(), prompts(), BrightInBox(), Settings(num_aug=4, ratio=0.05, seed=11))
            for _ in range(2)]
    assert np.array_equal(runs[0].uncertainty_map(), runs[1].uncertainty_map())
    assert np.array_equal(runs[0].label_map(), runs[1].label_map())


def test_progress_reaches_one_and_cancel_stops_between_slices():
    seen = []
    segment(volume(), prompts(), BrightInBox(), progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 5
    backbone = BrightInBox()
    with pytest.raises(Cancelled):
        segment(volume(), prompts(), backbone, cancel=lambda: len(backbone.embedded) >= 2)
    assert len(backbone.embedded) == 2


def test_invalid_settings_and_empty_prompts_are_user_errors():
    with pytest.raises(URSAMError, match="augmented"):
        segment(volume(), prompts(), BrightInBox(), Settings(num_aug=0))
    with pytest.raises(URSAMError, match="ratio"):
        segment(volume(), prompts(), BrightInBox(), Settings(ratio=2))
    with pytest.raises(URSAMError, match="No organ"):
        segment(volume(), [OrganPrompt("a", 1, {})], BrightInBox())


def test_variants_share_embeddings_and_equal_separate_runs():
    from URSAMLib.pipeline import segment_variants

    backbone = BrightInBox()
    variants = {"n3": (prompts(), Settings(num_aug=3, ratio=0.05, seed=1)),
                "n1": (prompts()[1:], Settings(num_aug=1))}
    results = segment_variants(volume(), variants, backbone)
    assert sum(backbone.embedded) == 5  # slices 1..5 once, for both variants
    for key, (organ_prompts, settings) in variants.items():
        alone = segment(volume(), organ_prompts, BrightInBox(), settings)
        assert np.array_equal(results[key].label_map(), alone.label_map())
        assert np.array_equal(results[key].uncertainty_map(), alone.uncertainty_map())


def test_slice_wise_refinement_shrinks_a_loose_box_to_the_organ():
    loose = OrganPrompt("a", 1, {z: np.array([0.0, 0.0, 39.0, 29.0]) for z in (1, 2, 3)})
    ct = volume()
    ct[:, 15:25, 20:35] = -100  # only organ A is bright
    plain = segment(ct, [loose], BrightInBox(), Settings(num_aug=1))
    refined = segment(ct, [loose], BrightInBox(), Settings(num_aug=1, refine=True, refine_margin=2))
    # Organ A spans rows 5..11 and columns 5..14: refined box = that plus 2 pixels.
    assert np.array_equal(refined.organs[0].boxes[2], [[3, 3, 16, 13]])
    assert np.array_equal(plain.organs[0].boxes[2], [[0, 0, 39, 29]])
    assert refined.organs[0].box_region.sum() < plain.organs[0].box_region.sum()
    assert refined.timings["boxes"] == 2 * plain.timings["boxes"]  # every slice decoded twice


def test_refined_box_keeps_the_largest_component_inside_the_prompt():
    from URSAMLib.pipeline import refined_box

    mask = np.zeros((20, 20), bool)
    mask[2:4, 2:4] = True  # small blob
    mask[8:15, 9:18] = True  # large blob
    assert np.array_equal(refined_box(mask, np.array([0, 0, 16, 19.0]), 1), [8, 7, 16, 15])
    assert refined_box(np.zeros((5, 5), bool), np.array([0, 0, 4, 4.0]), 1) is None


# --- properties: prompts at and beyond the borders, one-voxel organs, empty results -----------

@st.composite
def runs(draw):
    """A small CT with a bright region, and 1-3 organ prompts whose boxes may cross or exceed the
    slice (as localized boxes do), shrink to one pixel, or cover nothing bright (SAM finds nothing)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (int(rng.integers(1, 6)), int(rng.integers(4, 40)), int(rng.integers(4, 40)))
    ct = rng.normal(-100, 20, shape).astype(np.float32)
    z0, y0, x0 = (int(rng.integers(0, n)) for n in shape)
    ct[z0:, y0:y0 + int(rng.integers(1, 12)), x0:x0 + int(rng.integers(1, 12))] = 100
    prompts = []
    for label in range(1, draw(st.integers(1, 3)) + 1):
        zs = sorted(set(rng.integers(0, shape[0], size=int(rng.integers(1, shape[0] + 1))).tolist()))
        kind = draw(st.sampled_from(["anywhere", "one-pixel", "whole-and-beyond"]))
        boxes = {}
        for z in zs:
            if kind == "one-pixel":
                x, y = float(rng.integers(0, shape[2])), float(rng.integers(0, shape[1]))
                boxes[z] = np.array([x, y, x, y])
            elif kind == "whole-and-beyond":
                boxes[z] = np.array([-7.0, -3.0, shape[2] + 9.0, shape[1] + 4.0])
            else:
                xs = np.sort(rng.uniform(-0.5 * shape[2], 1.5 * shape[2], 2))
                ys = np.sort(rng.uniform(-0.5 * shape[1], 1.5 * shape[1], 2))
                boxes[z] = np.array([xs[0], ys[0], xs[1], ys[1]])
        prompts.append(OrganPrompt(f"organ{label}", label, boxes))
    settings = Settings(num_aug=draw(st.integers(1, 4)), ratio=draw(st.floats(0.0, 0.3)),
                        seed=draw(st.integers(0, 1000)), method=draw(st.sampled_from(["ursam", "fixed", "unc-fpnc"])))
    return ct, prompts, settings


@given(runs())
def test_any_prompts_give_results_on_the_volume_and_rectify_only_inside_the_boxes(run):
    ct, prompts, settings = run
    result = segment(ct, prompts, BrightInBox(), settings)
    labels = result.label_map("rectified")
    assert labels.shape == ct.shape and set(np.unique(labels)) <= {0} | {p.label for p in prompts}
    uncertainty = result.uncertainty_map()
    assert uncertainty.min() >= 0 and uncertainty.max() <= np.log(2) + 1e-6
    for organ in result.organs:
        for axis, part in enumerate(organ.region):
            assert 0 <= part.start < part.stop <= ct.shape[axis]
        assert organ.ensemble.shape == organ.box_region.shape == tuple(p.stop - p.start for p in organ.region)
        assert organ.box_region.any()  # even a one-pixel box at the border covers its pixel
        for box in np.concatenate(list(organ.boxes.values())):  # the boxes reported are the ones on the slice
            assert box.min() >= 0 and box[2] <= ct.shape[2] - 1 and box[3] <= ct.shape[1] - 1
        outside = ~organ.box_region
        assert np.array_equal(organ.mask[outside], organ.ensemble_mask[outside])
        assert np.isfinite(organ.mean_uncertainty)
    again = segment(ct, prompts, BrightInBox(), settings)
    assert np.array_equal(again.label_map("rectified"), labels)
    assert np.array_equal(again.uncertainty_map(), uncertainty)


def test_prompts_on_slices_outside_the_volume_are_a_bug_not_a_result():
    with pytest.raises(ValueError, match="outside the volume"):
        segment(volume(), [OrganPrompt("a", 1, {6: np.array([1.0, 1, 5, 5])})], BrightInBox())


def test_identical_boxes_of_several_variants_are_decoded_once():
    from URSAMLib.pipeline import segment_variants

    class Counting(BrightInBox):
        decoded = 0

        def decode(self, embedding, boxes, slice_shape):
            Counting.decoded += len(boxes)
            return super().decode(embedding, boxes, slice_shape)

    backbone = Counting()
    # n = 3 and 5 from one seeded stream share their first 3 boxes; the refined variant's
    # first pass is the plain one's.
    variants = {"n3": (prompts(), Settings(num_aug=3, ratio=0.05)),
                "n5": (prompts(), Settings(num_aug=5, ratio=0.05)),
                "n3-refined": (prompts(), Settings(num_aug=3, ratio=0.05, refine=True))}
    results = segment_variants(volume(), variants, backbone)
    organ_slices = 3 + 4
    first_pass = 5 * organ_slices  # the 5 distinct boxes per organ and slice
    timings = results["n3"].timings
    assert timings["boxes"] == (3 + 5 + 3 + 3) * organ_slices  # requested, refinement included
    assert Counting.decoded == timings["decoded_boxes"] <= first_pass + 3 * organ_slices
    assert Counting.decoded >= first_pass
    for key, (organ_prompts, settings) in variants.items():
        alone = segment(volume(), organ_prompts, BrightInBox(), settings)
        assert np.array_equal(results[key].organs[1].ensemble, alone.organs[1].ensemble)


@pytest.mark.parametrize("device, expected", [("cpu", 36), ("cuda", 64)])
def test_boxes_are_decoded_in_calls_of_the_devices_default_size(device, expected):
    class Recording(BrightInBox):
        def __init__(self):
            super().__init__()
            self.device, self.calls = device, []

        def decode(self, embedding, boxes, slice_shape):
            self.calls.append(len(boxes))
            return super().decode(embedding, boxes, slice_shape)

    backbone = Recording()
    result = segment(volume(), prompts(), backbone, Settings(num_aug=40, ratio=0.05))
    assert max(backbone.calls) == min(expected, 80)  # slices 2 and 3 hold 2 organs x 40 boxes
    assert sum(backbone.calls) == result.timings["decoded_boxes"]
    one_by_one = segment(volume(), prompts(), BrightInBox(), Settings(num_aug=40, ratio=0.05, box_batch=1))
    for organ, alone in zip(result.organs, one_by_one.organs, strict=True):
        assert np.array_equal(organ.ensemble, alone.ensemble)
