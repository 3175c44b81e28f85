"""URSAMLib.zoom: the part of a slice the model is shown, and the pipeline's use of it."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from URSAMLib.pipeline import Settings, segment
from URSAMLib.prompts import OrganPrompt
from URSAMLib.zoom import CONTEXT, View, slice_view, whole_slice
from URSAMSlicerLib.testing import BrightInBox


def test_without_zoom_the_view_is_the_whole_slice():
    boxes = np.array([[60.0, 60.0, 70.0, 66.0]])
    assert slice_view(boxes, boxes, (128, 120), 1.0) == View(0, 128, 0, 120) == whole_slice((128, 120))


def test_a_small_organ_is_shown_at_most_max_zoom_times_larger():
    boxes = np.array([[60.0, 60.0, 69.0, 65.0]])  # 10 x 6 px
    view = slice_view(boxes, boxes, (128, 128), 4.0)
    assert view.shape == (32, 32)  # 128 / 4: the box with its context would be smaller
    assert view.x0 <= 60 and view.x1 > 69 and view.y0 <= 60 and view.y1 > 65


def test_boxes_get_context_on_every_side_and_the_view_is_square():
    boxes = np.array([[40.0, 50.0, 59.0, 59.0], [70.0, 52.0, 79.0, 61.0]])  # joint extent 40 x 12 px
    view = slice_view(boxes, boxes, (256, 256), 8.0)
    side = int(np.ceil(40 * (1 + 2 * CONTEXT)))
    assert view.shape == (side, side)
    assert view.x0 == pytest.approx(60 - side / 2, abs=1) and view.y0 == pytest.approx(56 - side / 2, abs=1)


def test_a_view_near_the_border_moves_inside_the_slice():
    boxes = np.array([[0.0, 120.0, 9.0, 127.0]])
    view = slice_view(boxes, boxes, (128, 128), 4.0)
    assert view == View(96, 128, 0, 32)


def test_a_view_grows_to_hold_augmented_boxes_beyond_the_context():
    boxes = np.array([[60.0, 60.0, 69.0, 65.0]])
    augmented = np.array([[60.0, 60.0, 69.0, 65.0], [30.0, 61.0, 69.0, 100.0]])
    view = slice_view(boxes, augmented, (128, 128), 4.0)
    assert view.x0 <= 30 and view.y1 > 100


def test_boxes_convert_to_the_views_pixels():
    view = View(10, 50, 20, 60)
    assert np.array_equal(view.to_view([[25, 12, 30, 40]]), [[5, 2, 10, 30]])
    assert np.zeros((64, 64))[view.window].shape == view.shape == (40, 40)


@given(x=st.floats(0, 127), y=st.floats(0, 99), w=st.floats(0, 60), h=st.floats(0, 60), zoom=st.floats(1, 16))
def test_a_view_always_holds_the_boxes_and_stays_inside_the_slice(x, y, w, h, zoom):
    box = np.array([[x, y, min(x + w, 127), min(y + h, 99)]])
    view = slice_view(box, box, (100, 128), zoom)
    assert 0 <= view.x0 <= box[0, 0] and box[0, 2] < view.x1 <= 128
    assert 0 <= view.y0 <= box[0, 1] and box[0, 3] < view.y1 <= 100
    assert max(view.shape) >= min(100, 128 / zoom - 1)


def test_zoomed_views_are_embedded_and_maps_land_where_the_whole_slice_puts_them():
    ct = np.full((4, 64, 80), -100.0, np.float32)
    ct[1:3, 10:16, 8:14] = 100  # a small organ near a corner
    ct[1:4, 40:50, 50:70] = 100  # a larger one
    prompts = [OrganPrompt("small", 1, {z: np.array([7.0, 9.0, 14.0, 16.0]) for z in (1, 2)}),
               OrganPrompt("large", 2, {z: np.array([49.0, 39.0, 70.0, 50.0]) for z in (1, 2, 3)})]
    whole, zoomed = BrightInBox(), BrightInBox()
    plain = segment(ct, prompts, whole, Settings(num_aug=3, ratio=0.02, max_zoom=1.0))
    closer = segment(ct, prompts, zoomed, Settings(num_aug=3, ratio=0.02, max_zoom=4.0))
    assert whole.shapes == [(64, 80)] * 3
    # slices 1-2: both organs with their context need the whole slice; slice 3: the large organ's square
    assert zoomed.shapes == [(64, 80), (64, 80), (44, 44)]
    for which in ("ensemble", "rectified", "plain"):
        assert np.array_equal(closer.label_map(which), plain.label_map(which))
    assert closer.label_map("ensemble")[1:3, 11:15, 9:13].all()
