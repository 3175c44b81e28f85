"""URSAMLib.metrics: DSC and HD95 on masks small enough to check by hand, and HD95 against MONAI."""
import math

import numpy as np
import pytest

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


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
    # One row of voxels (every voxel is surface: its neighbours across the row are background),
    # 2 mm apart along x. The reference is x = 0..19; the prediction is the same plus a stray blob
    # at x = 30..32. Prediction -> reference: 20 zeros and the blob's 22, 24, 26 mm; the 95th
    # percentile of those 23 sorted values sits at index 0.95 * 22 = 20.9: 22 + 0.9 * 2 = 23.8 mm.
    # Reference -> prediction: all 0. Pooling both directions (43 values, index 39.9) would give
    # 0.9 * 22 = 19.8 mm instead.
    reference = np.zeros((1, 1, 40), bool)
    reference[0, 0, :20] = True
    prediction = reference.copy()
    prediction[0, 0, 30:33] = True
    assert math.isclose(hausdorff95(prediction, reference, spacing=(1.0, 1.0, 2.0)), 23.8)
    assert math.isclose(hausdorff95(reference, prediction, spacing=(1.0, 1.0, 2.0)), 23.8)  # symmetric


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notices
def test_hd95_equals_monai_on_random_masks_with_anisotropic_spacing():
    """Against MONAI's compute_hausdorff_distance (an independent implementation), on random
    blocks, some touching the volume's border, which also checks the crop to the masks."""
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance

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
        expected = compute_hausdorff_distance(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None],
                                              include_background=True, percentile=95, spacing=spacing)
        assert math.isclose(hausdorff95(a, b, spacing), float(expected), rel_tol=1e-6), trial


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
