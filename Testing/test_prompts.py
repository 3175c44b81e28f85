"""URSAMLib.prompts: boxes from masks, margins, per-slice boxes, augmentation — small exact cases,
then properties over generated boxes, images and organs (hypothesis; profile in conftest.py)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from URSAMLib.prompts import (DEFAULT_BOX_MARGIN, MIN_PART_FRACTION, PAPER_BOX_MARGIN, Box3D, BoxMargin,
                              augment_box, augmentation_rng, clip_boxes, part_boxes, prompts_from_labels,
                              slice_boxes_from_mask)


def organ(shape=(8, 20, 30)):
    mask = np.zeros(shape, bool)
    mask[2:5, 4:9, 10:16] = True  # z 2..4, y 4..8, x 10..15
    mask[3, 9, 12] = True  # one voxel below on slice 3
    return mask


def test_box3d_goes_through_the_six_extreme_points():
    assert Box3D.from_mask(organ()) == Box3D(2, 4, 4, 9, 10, 15)
    assert Box3D.from_mask(np.zeros((3, 3, 3), bool)) is None
    points = np.array([[2, 6, 10], [4, 6, 12], [3, 4, 12], [3, 9, 12], [3, 6, 10.4], [3, 6, 14.6]])
    assert Box3D.from_extreme_points(points) == Box3D(2, 4, 4, 9, 10, 15)


def test_extension_by_the_paper_margin_is_clipped_to_the_image():
    box = Box3D(2, 4, 4, 9, 10, 15).extended(PAPER_BOX_MARGIN.voxels(None), (8, 20, 30))
    assert PAPER_BOX_MARGIN.voxels(None) == (2, 10, 10)
    assert box == Box3D(0, 6, 0, 19, 0, 25)
    assert Box3D(0, 0, 0, 0, 0, 0).extended((1, 1, 1), (1, 1, 1)) == Box3D(0, 0, 0, 0, 0, 0)


def test_margins_in_mm_become_voxels_by_spacing():
    assert DEFAULT_BOX_MARGIN.voxels((2.5, 0.8, 0.8)) == (2, 12, 12)
    assert DEFAULT_BOX_MARGIN.voxels((3.0, 3.0, 3.0)) == (2, 3, 3)
    assert DEFAULT_BOX_MARGIN.voxels((3.0, 30.0, 30.0)) == (2, 1, 1)  # at least one voxel
    assert BoxMargin.parse("5,10,10mm") == DEFAULT_BOX_MARGIN and str(DEFAULT_BOX_MARGIN) == "5,10,10mm"
    assert BoxMargin.parse("2,10,10") == PAPER_BOX_MARGIN == BoxMargin.parse(" 2,10,10vox")
    for bad in ("2,10", "1.5,2,2", "-1,2,2mm", "a,b,c"):
        with pytest.raises(ValueError):
            BoxMargin.parse(bad)
    with pytest.raises(ValueError, match="spacing"):
        DEFAULT_BOX_MARGIN.voxels(None)


def test_a_3d_box_projects_onto_every_slice_of_its_range():
    boxes = Box3D(2, 4, 4, 9, 10, 15).slice_boxes()
    assert sorted(boxes) == [2, 3, 4]
    assert all(np.array_equal(b, [10, 4, 15, 9]) for b in boxes.values())  # x0, y0, x1, y1


def test_slice_boxes_from_a_mask_are_tight_per_slice():
    boxes = slice_boxes_from_mask(organ())
    assert sorted(boxes) == [2, 3, 4]
    assert np.array_equal(boxes[2], [[10, 4, 15, 8]])  # one part: one box
    assert np.array_equal(boxes[3], [[10, 4, 15, 9]])


def test_jitter_only_widens_boxes_by_at_most_the_given_pixels():
    tight = slice_boxes_from_mask(organ())
    rng = np.random.default_rng(0)
    for _ in range(20):
        loose = slice_boxes_from_mask(organ(), jitter=3, rng=rng)
        for z, box in loose.items():
            grow = (box - tight[z]) * np.array([-1, -1, 1, 1])
            assert np.all(grow >= 0)
            assert np.all((grow <= 3) | (box == [0, 0, 29, 19]))  # clipped at the border
    with pytest.raises(ValueError):
        slice_boxes_from_mask(organ(), jitter=2)


def test_augmentation_keeps_the_original_box_first_and_stays_within_the_ratio():
    box = np.array([40.0, 50.0, 80.0, 90.0])
    boxes = augment_box(box, 7, 0.05, (200, 100), augmentation_rng(0, 1, 3))
    assert boxes.shape == (7, 4)
    assert np.array_equal(boxes[0], box)
    assert np.all(np.abs(boxes[1:] - box) <= 0.05 * 200 + 1e-9)  # L = longest side = 200 px
    assert np.abs(boxes[1:] - box).max() > 1.0  # they really moved
    assert np.array_equal(augment_box(box, 1, 0.05, (200, 100), augmentation_rng(0, 1, 3)), box[None])


def test_augmentation_is_seeded_per_organ_and_slice():
    box = np.array([40.0, 50.0, 80.0, 90.0])
    one = augment_box(box, 3, 0.01, (512, 512), augmentation_rng(7, 5, 10))
    assert np.array_equal(one, augment_box(box, 3, 0.01, (512, 512), augmentation_rng(7, 5, 10)))
    assert not np.array_equal(one, augment_box(box, 3, 0.01, (512, 512), augmentation_rng(7, 5, 11)))
    assert not np.array_equal(one, augment_box(box, 3, 0.01, (512, 512), augmentation_rng(8, 5, 10)))


def test_augmented_boxes_at_the_border_are_clipped_and_ordered():
    boxes = augment_box(np.array([0.0, 0.0, 1.0, 1.0]), 50, 0.5, (10, 10), np.random.default_rng(1))
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 9 and boxes[:, [1, 3]].max() <= 9
    assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
    assert np.array_equal(clip_boxes(np.array([[5, 8, -3, 20]]), (10, 12)), [[0, 8, 5, 9]])


def test_prompts_from_labels_in_both_modes_and_missing_organs():
    labels = np.zeros((8, 20, 30), np.uint16)
    labels[organ()] = 3
    prompts, missing = prompts_from_labels(labels, {3: "kidney", 4: "spleen"}, "slice")
    assert [p.name for p in prompts] == ["kidney"] and prompts[0].label == 3
    assert sorted(prompts[0].boxes) == [2, 3, 4]
    assert "spleen" in missing and "label 4" in missing["spleen"]
    prompts, _ = prompts_from_labels(labels, {3: "kidney"}, "box3d", margin=PAPER_BOX_MARGIN)
    assert sorted(prompts[0].boxes) == list(range(0, 7))  # z 2..4 extended by 2
    assert np.array_equal(prompts[0].boxes[0], [0, 0, 25, 19])
    prompts, _ = prompts_from_labels(labels, {3: "kidney"}, "box3d", spacing=(2.5, 5.0, 5.0))  # 5,10,10 mm
    assert sorted(prompts[0].boxes) == list(range(0, 7))
    assert np.array_equal(prompts[0].boxes[2], [8, 2, 17, 11])


# --- properties (hypothesis): borders, boxes larger than the image, one-voxel organs ----------


@st.composite
def slice_and_box(draw):
    """A slice shape and a box anywhere from well outside to well beyond it (as localizers give)."""
    height, width = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    coordinate = st.floats(-2.0 * max(height, width), 3.0 * max(height, width), allow_nan=False)
    box = np.array([draw(coordinate) for _ in range(4)])
    return (height, width), box


@given(slice_and_box(), st.integers(1, 16), st.floats(0.0, 0.5), st.integers(0, 2**32 - 1))
def test_augmented_boxes_always_lie_on_the_slice_and_start_with_the_clipped_box(case, num_aug, ratio, seed):
    (height, width), box = case
    boxes = augment_box(box, num_aug, ratio, (height, width), np.random.default_rng(seed))
    assert boxes.shape == (num_aug, 4) and np.all(np.isfinite(boxes))
    assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= width - 1)
    assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= height - 1)
    assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
    assert np.array_equal(boxes[0], clip_boxes(box[None], (height, width))[0])
    # each coordinate moves at most ratio x the longest side (clipping only brings it closer)
    assert np.all(np.abs(boxes - boxes[0]) <= ratio * max(height, width) + 1e-9)


@st.composite
def volume_and_box(draw):
    shape = tuple(draw(st.integers(1, 40)) for _ in range(3))
    bounds = []
    for n in shape:
        low = draw(st.integers(0, n - 1))
        bounds += [low, draw(st.integers(low, n - 1))]
    margin = tuple(draw(st.integers(0, 15)) for _ in range(3))
    return shape, Box3D(*bounds), margin


@given(volume_and_box())
def test_an_extended_box_holds_the_box_and_stays_in_the_image(case):
    shape, box, margin = case
    grown = box.extended(margin, shape)
    for axis, (low, high) in enumerate(zip(grown.as_list()[0::2], grown.as_list()[1::2])):
        original_low, original_high = box.as_list()[2 * axis], box.as_list()[2 * axis + 1]
        assert 0 <= low <= original_low and original_high <= high <= shape[axis] - 1
        assert low == max(original_low - margin[axis], 0) and high == min(original_high + margin[axis],
                                                                              shape[axis] - 1)
    slices = grown.slice_boxes()
    assert sorted(slices) == list(range(grown.z0, grown.z1 + 1))


@given(st.tuples(st.integers(1, 12), st.integers(1, 40), st.integers(1, 40)).flatmap(
    lambda shape: st.tuples(st.just(shape), st.tuples(*(st.integers(0, n - 1) for n in shape)))),
    st.integers(0, 20), st.integers(0, 2**32 - 1))
def test_a_one_voxel_organ_gets_a_box_on_its_slice_that_holds_it(case, jitter, seed):
    shape, (z, y, x) = case
    labels = np.zeros(shape, np.uint16)
    labels[z, y, x] = 7
    prompts, missing = prompts_from_labels(labels, {7: "node"}, "slice", jitter=jitter, seed=seed)
    assert missing == {} and list(prompts[0].boxes) == [z]
    x0, y0, x1, y1 = np.reshape(prompts[0].boxes[z], 4)
    assert x0 <= x <= x1 and y0 <= y <= y1 and x0 >= 0 and y0 >= 0 and x1 <= shape[2] - 1 and y1 <= shape[1] - 1
    if jitter == 0:
        assert (x0, y0, x1, y1) == (x, y, x, y)
    prompts, _ = prompts_from_labels(labels, {7: "node"}, "box3d", margin=PAPER_BOX_MARGIN)
    assert sorted(prompts[0].boxes) == list(range(max(z - 2, 0), min(z + 2, shape[0] - 1) + 1))


@given(st.integers(0, 2**32 - 1), st.sampled_from(["slice", "box3d"]))
def test_every_organ_voxel_lies_in_its_slices_box(seed, mode):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 24, size=3))
    labels = np.where(rng.random(shape) < rng.uniform(0, 0.2), rng.integers(1, 4, size=shape), 0).astype(np.uint16)
    prompts, missing = prompts_from_labels(labels, {1: "a", 2: "b", 3: "c"}, mode, spacing=(3.0, 1.0, 1.0),
                                           per_part=False)
    assert {p.name for p in prompts} | set(missing) == {"a", "b", "c"}
    for prompt in prompts:
        for z, y, x in np.argwhere(labels == prompt.label):
            x0, y0, x1, y1 = np.reshape(prompt.boxes[z], 4)
            assert x0 <= x <= x1 and y0 <= y <= y1


@given(st.integers(0, 2**32 - 1))
def test_each_large_part_of_an_organ_on_a_slice_gets_its_own_box(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.uniform(0, 0.3)
    boxes = part_boxes(mask)
    parts, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    areas = np.bincount(parts.ravel())[1:]
    large = [k + 1 for k in range(count) if areas[k] >= MIN_PART_FRACTION * areas.max()]
    assert len(boxes) == len(large)
    for k in large:  # each large part lies whole in exactly one box, which is tight around it
        ys, xs = np.nonzero(parts == k)
        tight = [xs.min(), ys.min(), xs.max(), ys.max()]
        assert sum(np.array_equal(box, tight) for box in boxes) >= 1
    if len(boxes):
        assert (boxes[0][2] - boxes[0][0] + 1) * (boxes[0][3] - boxes[0][1] + 1) >= areas.max()  # largest first


def test_the_two_rami_of_a_mandible_get_a_box_each_and_specks_none():
    labels = np.zeros((1, 40, 60), np.uint16)
    labels[0, 10:30, 5:12] = 7  # left ramus
    labels[0, 10:30, 48:55] = 7  # right ramus
    labels[0, 20, 30] = 7  # a speck of the label between them
    prompts, _ = prompts_from_labels(labels, {7: "Mandible"}, "slice")
    assert np.array_equal(prompts[0].boxes[0], [[5, 10, 11, 29], [48, 10, 54, 29]])
    whole, _ = prompts_from_labels(labels, {7: "Mandible"}, "slice", per_part=False)
    assert np.array_equal(whole[0].boxes[0], [[5, 10, 54, 29]])
