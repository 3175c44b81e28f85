"""URSAMLib.rectify: Algorithm 1 and the comparison methods on hand-built crops, then properties
over generated crops (hypothesis): empty ensembles, all-uncertain boxes, tiny and border regions."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from URSAMLib.rectify import METHODS, intensity_band, rectify
from URSAMLib.uncertainty import MAX_ENTROPY, predictive_entropy, uncertainty_threshold


def scene():
    """A 1 x 1 x 10 crop: organ intensity 0.6, background 0.2, four uncertain voxels.

    voxel:        0    1    2    3    4    5    6    7    8    9
    intensity:  0.6  0.6  0.6  0.55 0.25 0.62 0.95 0.2  0.2  0.2
    ensemble:   0.99 0.99 0.99 0.45 0.55 0.6  0.5  0.01 0.01 0.01
    """
    intensity = np.array([0.6, 0.6, 0.6, 0.55, 0.25, 0.62, 0.95, 0.2, 0.2, 0.2]).reshape(1, 1, 10)
    ensemble = np.array([0.99, 0.99, 0.99, 0.45, 0.55, 0.6, 0.5, 0.01, 0.01, 0.01]).reshape(1, 1, 10)
    uncertainty = np.array([0.05, 0.05, 0.05, 0.69, 0.69, 0.67, 0.69, 0.05, 0.05, 0.05]).reshape(1, 1, 10)
    return intensity, ensemble, uncertainty, np.ones((1, 1, 10), bool)


def test_band_for_bright_and_dark_organs():
    assert intensity_band(0.6, 0.2, 1.2, "midpoint") == pytest.approx((0.4, 0.72))
    assert intensity_band(0.6, 0.2, 1.2, "paper") == pytest.approx((0.2, 0.72))
    # A dark organ (0.3 in 0.7): the same rule on inverted intensities, mapped back.
    low, high = intensity_band(0.3, 0.7, 1.2, "midpoint")
    assert (low, high) == pytest.approx((1 - 1.2 * 0.7, 0.5))
    with pytest.raises(ValueError):
        intensity_band(0.6, 0.2, 1.2, "other")


def test_ursam_adds_organ_like_and_removes_background_like_uncertain_voxels():
    result = rectify(*scene(), method="ursam", alpha_h=1.2, lower_bound="midpoint")
    # T = 0.05 + (S_y + S_b) / (2 S_b) * (0.69 - 0.05) with S_y = 5 (p > 0.5: 0,1,2,4,5), S_b = 10
    assert result.threshold == pytest.approx(0.05 + 0.75 * 0.64)
    assert result.uncertain.ravel().tolist() == [False] * 3 + [True] * 4 + [False] * 3
    assert result.target_intensity == pytest.approx(0.6) and result.background_intensity == pytest.approx(0.2)
    # band (0.4, 0.72): voxel 3 (0.55) joins, 4 (0.25) leaves, 5 (0.62) stays, 6 (0.95, bone) is refused
    assert result.mask.ravel().tolist() == [True, True, True, True, False, True, False, False, False, False]


def test_paper_lower_bound_keeps_dim_uncertain_voxels():
    result = rectify(*scene(), method="ursam", lower_bound="paper")
    assert result.mask.ravel()[4]  # 0.25 > (0.6 - 0.2) / 2 = 0.2


def test_dark_organ_is_rectified_symmetrically():
    intensity, ensemble, uncertainty, box = scene()
    result = rectify(1 - intensity, ensemble, uncertainty, box, method="ursam")
    assert result.mask.ravel().tolist() == [True, True, True, True, False, True, False, False, False, False]


def test_comparison_methods():
    args = scene()
    ensemble_mask = (args[1] > 0.5).ravel()
    uncertain = np.array([False] * 3 + [True] * 4 + [False] * 3)
    assert np.array_equal(rectify(*args, method="ensemble").mask.ravel(), ensemble_mask)
    assert np.array_equal(rectify(*args, method="unc-fpc").mask.ravel(), ensemble_mask & ~uncertain)
    assert np.array_equal(rectify(*args, method="unc-fnc").mask.ravel(), ensemble_mask | uncertain)
    assert np.array_equal(rectify(*args, method="unc-fpnc").mask.ravel(), ensemble_mask ^ uncertain)
    fixed = rectify(*args, method="fixed", fixed_threshold=0.68)
    assert fixed.threshold == 0.68 and fixed.uncertain.ravel().tolist().count(True) == 3  # 0.67 is certain
    assert set(METHODS) == {"ursam", "fixed", "unc-fpc", "unc-fnc", "unc-fpnc", "ensemble"}
    with pytest.raises(ValueError):
        rectify(*args, method="nope")


def test_only_the_box_region_is_changed():
    intensity, ensemble, uncertainty, box = scene()
    box[..., 3] = False  # voxel 3 would join, but is outside the box
    result = rectify(intensity, ensemble, uncertainty, box)
    assert not result.mask.ravel()[3] and not result.uncertain.ravel()[3]


def test_without_certain_target_the_ensemble_is_kept():
    intensity, _, uncertainty, box = scene()
    ensemble = np.full_like(intensity, 0.45)
    uncertainty = np.full_like(intensity, 0.69)
    result = rectify(intensity, ensemble, uncertainty, box)
    assert not result.mask.any() and result.target_intensity is None


def test_empty_box_region_keeps_the_ensemble():
    intensity, ensemble, uncertainty, box = scene()
    result = rectify(intensity, ensemble, uncertainty, np.zeros_like(box))
    assert np.array_equal(result.mask, ensemble > 0.5) and np.isnan(result.threshold)


# --- properties -------------------------------------------------------------------------------

@st.composite
def crops(draw):
    """An organ's crop: windowed intensity, ensemble probability (sometimes all background,
    all 0.5, or a few levels only), its entropy, and a box region (sometimes one voxel)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 9, size=3))
    kind = draw(st.sampled_from(["random", "levels", "empty", "all-uncertain", "certain"]))
    if kind == "random":
        ensemble = rng.random(shape)
    elif kind == "levels":  # n = 3 boxes: the ensemble takes only the values k/3
        ensemble = rng.integers(0, 4, size=shape) / 3
    elif kind == "empty":  # SAM found nothing in the box
        ensemble = rng.uniform(0, 0.3, size=shape)
    elif kind == "all-uncertain":  # every box disagrees everywhere
        ensemble = np.full(shape, 0.5)
    else:
        ensemble = rng.integers(0, 2, size=shape).astype(float)
    box = rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    if draw(st.booleans()):
        box[tuple(rng.integers(0, n) for n in shape)] = True  # at least one voxel
    intensity = rng.random(shape).astype(np.float32)
    ensemble = ensemble.astype(np.float32)
    return intensity, ensemble, predictive_entropy(ensemble), box


@given(crops(), st.sampled_from(sorted(METHODS)), st.floats(1.0, 3.0), st.sampled_from(["midpoint", "paper"]))
def test_rectification_changes_only_uncertain_voxels_inside_the_box(crop, method, alpha_h, lower_bound):
    intensity, ensemble, uncertainty, box = crop
    result = rectify(intensity, ensemble, uncertainty, box, method, alpha_h, lower_bound)
    ensemble_mask = ensemble > 0.5
    assert result.mask.shape == ensemble.shape and result.mask.dtype == bool
    assert not np.any(result.uncertain & ~box)  # Eq. 4 is confined to the box region
    assert np.array_equal(result.mask[~result.uncertain], ensemble_mask[~result.uncertain])
    if box.any() and method != "fixed":
        values = uncertainty[box]
        assert values.min() - 1e-6 <= result.threshold <= values.max() + 1e-6  # Eq. 3 lies in the range
    if not box.any():
        assert np.isnan(result.threshold) and not result.uncertain.any()


@given(crops(), st.sampled_from(["ursam", "fixed"]))
def test_without_certain_voxels_of_both_kinds_algorithm_1_keeps_the_ensemble(crop, method):
    intensity, ensemble, uncertainty, box = crop
    result = rectify(intensity, ensemble, uncertainty, box, method)
    certain = box & ~result.uncertain
    if not (certain & (ensemble > 0.5)).any() or not (certain & (ensemble <= 0.5)).any():
        assert np.array_equal(result.mask, ensemble > 0.5) and result.target_intensity is None


@given(st.integers(1, 6), st.sampled_from(sorted(METHODS)))
def test_an_all_uncertain_box_keeps_the_ensemble(size, method):
    # p = 0.5 everywhere: Eq. 3's threshold equals every voxel's entropy (nothing exceeds it), and
    # with a fixed threshold every voxel is uncertain, leaving no certain examples to compare with.
    shape = (size, size, size)
    ensemble = np.full(shape, 0.5, np.float32)
    result = rectify(np.random.default_rng(size).random(shape), ensemble, predictive_entropy(ensemble),
                     np.ones(shape, bool), method)
    if method in ("ursam", "fixed", "ensemble"):
        assert not result.mask.any()
    if method == "fixed":
        assert result.uncertain.all()


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(1.0, 3.0))
def test_the_midpoint_band_lies_between_background_and_target_side(target, background, alpha_h):
    low, high = intensity_band(target, background, alpha_h, "midpoint")
    if target > background:  # a bright organ: voxels join between the midpoint and alpha_h x target
        assert low == pytest.approx((target + background) / 2) and high == pytest.approx(alpha_h * target)
        assert low <= target <= high + 1e-12
    elif target < background:  # a dark one: the same rule on inverted intensities
        assert low <= target + 1e-12 and high == pytest.approx((target + background) / 2)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=64))
def test_entropy_is_bounded_symmetric_and_its_threshold_lies_in_its_range(probabilities):
    p = np.array(probabilities, np.float32)
    u = predictive_entropy(p)
    assert np.all(u >= 0) and np.all(u <= MAX_ENTROPY + 1e-6)
    assert np.allclose(u, predictive_entropy(1 - p), atol=1e-6)
    region = np.ones(p.shape, bool)
    t = uncertainty_threshold(u, p > 0.5, region)
    assert u.min() - 1e-6 <= t <= u.max() + 1e-6
