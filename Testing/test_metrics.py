"""URSAMLib.metrics: DSC and HD95 on masks small enough to check by hand."""
import math

import numpy as np

from URSAMLib.metrics import dice, hausdorff95


def test_dice_by_hand():
    a = np.zeros((1, 4, 4), bool)
    b = np.zeros((1, 4, 4), bool)
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :3] = True  # 6 voxels, 4 shared
    assert dice(a, b) == 2 * 4 / 10
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_hd95_of_a_shifted_cube_is_the_shift_in_mm():
    a = np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    b = np.roll(a, 2, axis=2)
    assert math.isclose(hausdorff95(a, b, spacing=(1.0, 1.0, 1.5)), 3.0)
    assert hausdorff95(a, a) == 0.0
    assert math.isnan(hausdorff95(a, np.zeros_like(a)))


def _hd95_uncropped(prediction, reference, spacing):
    """The definition, on the whole array (no cropping), to check the cropped version against."""
    from scipy import ndimage

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask)

    to_reference = ndimage.distance_transform_edt(~surface(reference), sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~surface(prediction), sampling=spacing)
    return float(np.percentile(np.concatenate([to_reference[surface(prediction)],
                                               to_prediction[surface(reference)]]), 95))


def test_hd95_cropped_to_the_masks_equals_the_whole_volume_computation():
    rng = np.random.default_rng(4)
    for trial in range(20):
        shape = (12, 15, 18)
        a, b = np.zeros(shape, bool), np.zeros(shape, bool)
        for mask in (a, b):
            for _ in range(2):  # two random blocks, some touching the volume border
                low = rng.integers(0, np.array(shape) - 2)
                high = low + rng.integers(1, 7, size=3)
                mask[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
        spacing = (2.5, 0.8, 1.1)
        assert math.isclose(hausdorff95(a, b, spacing), _hd95_uncropped(a, b, spacing)), trial


def test_auroc_worked_by_hand():
    from URSAMLib.metrics import auroc

    # positives score 0.9, 0.4; negatives 0.1, 0.4, 0.5. Pairs (pos > neg): 0.9 beats all 3;
    # 0.4 beats 0.1, ties 0.4 (one half), loses to 0.5: (3 + 1.5) / 6 = 0.75.
    scores = np.array([0.9, 0.4, 0.1, 0.4, 0.5])
    positives = np.array([True, True, False, False, False])
    assert math.isclose(auroc(scores, positives), 0.75)
    assert auroc(np.array([1.0, 2.0]), np.array([False, True])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([True, False])) == 0.0
    assert auroc(np.ones(4), np.array([True, False, True, False])) == 0.5  # all tied: chance
    assert math.isnan(auroc(np.ones(3), np.zeros(3, bool)))
    assert math.isnan(auroc(np.ones(3), np.ones(3, bool)))


def test_spearman_by_hand():
    from URSAMLib.metrics import spearman

    rho, p, n = spearman([1, 2, 3, 4, 5], [50, 40, 30, 20, 10])  # monotone decreasing
    assert math.isclose(rho, -1.0) and n == 5 and p < 0.05
    # ranks x 1..4 vs y ranks (2, 1, 4, 3): d^2 = 1+1+1+1 = 4; rho = 1 - 6*4/(4*15) = 0.6.
    rho, _, _ = spearman([1, 2, 3, 4], [5, 1, 9, 7])
    assert math.isclose(rho, 0.6)
    rho, p, n = spearman([1, 2, float("nan"), 3], [1, 2, 3, float("nan")])
    assert n == 2 and math.isnan(rho) and math.isnan(p)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])[0])
