"""URSAMLib.uncertainty: Eqs. 1-3 against values worked out by hand."""
import math

import numpy as np
import pytest

from URSAMLib.uncertainty import MAX_ENTROPY, predictive_entropy, uncertainty_threshold


def test_binary_entropy_in_nats():
    p = np.array([0.0, 1.0, 0.5, 0.25, 0.9])
    expected = [0.0, 0.0, math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)),
                -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))]
    assert np.allclose(predictive_entropy(p), expected, atol=1e-6)
    assert math.isclose(MAX_ENTROPY, 0.6931471805599453)
    assert predictive_entropy(p).dtype == np.float32


def test_class_specific_threshold_by_hand():
    # Box of 10 voxels, ensemble mask covers 4 of them; u ranges 0.1 .. 0.6.
    u = np.array([0.1, 0.2, 0.3, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 5.0])
    box = np.array([True] * 10 + [False])  # the 5.0 outside the box must not count
    mask = np.array([True] * 4 + [False] * 6 + [True])
    # T = 0.1 + (4 + 10) / (2 * 10) * (0.6 - 0.1) = 0.1 + 0.7 * 0.5 = 0.45
    assert uncertainty_threshold(u, mask, box) == pytest.approx(0.45)


def test_threshold_factor_is_between_half_and_one():
    u = np.linspace(0, 1, 101)
    box = np.ones(101, bool)
    assert uncertainty_threshold(u, np.zeros(101, bool), box) == pytest.approx(0.5)
    assert uncertainty_threshold(u, np.ones(101, bool), box) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        uncertainty_threshold(u, box, np.zeros(101, bool))
