"""URSAMLib.rectify: Algorithm 1 and the comparison methods on hand-built crops."""
import numpy as np
import pytest

from URSAMLib.rectify import METHODS, intensity_band, rectify


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
