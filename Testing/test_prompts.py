"""URSAMLib.prompts: boxes from masks, margins, per-slice boxes, augmentation — small exact cases."""
import numpy as np
import pytest

from URSAMLib.prompts import (DEFAULT_BOX_MARGIN, PAPER_BOX_MARGIN, Box3D, BoxMargin, augment_box,
                              augmentation_rng, clip_boxes, prompts_from_labels, slice_boxes_from_mask)


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
    assert np.array_equal(boxes[2], [10, 4, 15, 8])
    assert np.array_equal(boxes[3], [10, 4, 15, 9])


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
