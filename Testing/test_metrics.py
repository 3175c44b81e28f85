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
