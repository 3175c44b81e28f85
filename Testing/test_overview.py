"""URSAMLib.overview: the PNG of a run, also when nothing was segmented."""
import numpy as np

from URSAMLib.overview import representative_slices, save_overview


def test_slices_are_spread_over_the_segmented_range():
    labels = np.zeros((20, 8, 8), np.uint8)
    labels[5:15, 2:5, 2:5] = 1
    slices = representative_slices(labels)
    assert 1 < len(slices) <= 4 and all(5 <= z < 15 for z in slices)
    assert representative_slices(np.zeros((4, 8, 8), np.uint8)) == []


def test_an_overview_is_written_with_organs_and_without_any(tmp_path):
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 100, (6, 32, 32)).astype(np.float32)
    labels = np.zeros(ct.shape, np.uint8)
    uncertainty = rng.uniform(0, 0.6, ct.shape).astype(np.float32)
    labels[2:4, 10:20, 10:20] = 3
    save_overview(tmp_path / "organs.png", ct, labels, uncertainty, {3: "liver"}, (3.0, 1.0, 1.0))
    # SAM found nothing (an empty ensemble): the run still ends with its overview, not a traceback
    save_overview(tmp_path / "empty.png", ct, np.zeros_like(labels), np.zeros_like(uncertainty), {3: "liver"},
                  (3.0, 1.0, 1.0))
    for name in ("organs.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
