"""URSAMLib.localize: box geometry, and registration-based localization on real head-and-neck CT."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import hn_pair
from URSAMLib import io
from URSAMLib.errors import URSAMError
from URSAMLib.localize import box_iou, localize_by_registration
from URSAMLib.localize.common import clipped_box
from URSAMLib.prompts import Box3D
from URSAMLib.template import build_template


def test_box_iou_by_hand():
    a, b = Box3D(0, 1, 0, 1, 0, 1), Box3D(1, 2, 0, 1, 0, 1)  # 8 voxels each, 4 shared
    assert box_iou(a, b) == pytest.approx(4 / 12)
    assert box_iou(a, a) == 1.0 and box_iou(a, Box3D(5, 6, 5, 6, 5, 6)) == 0.0


def test_boxes_outside_or_collapsed_are_not_found_with_a_reason():
    shape = (10, 20, 20)
    box, reason = clipped_box(np.array([[2.2, 3.0, 4.0], [5.0, 8.6, 9.0]]), shape)
    assert box == Box3D(2, 5, 3, 9, 4, 9) and reason is None
    box, _ = clipped_box(np.array([[-3.0, 3.0, 4.0], [5.0, 8.6, 25.0]]), shape)
    assert box == Box3D(0, 5, 3, 9, 4, 19)  # clipped to the image
    box, reason = clipped_box(np.array([[20.0, 3, 4], [25, 8, 9]]), shape)
    assert box is None and "outside the image" in reason
    box, reason = clipped_box(np.array([[-5.0, 3, 4], [0, 8, 9]]), shape)
    assert box is None and "collapses" in reason


def test_a_template_mapped_off_the_image_marks_every_organ_outside(head_neck, hn_template, monkeypatch):
    # As when the template is for another body region: every support maps 1 m above the query.
    from URSAMLib import localize
    from URSAMLib.localize import registration

    monkeypatch.setattr(registration, "register_affine",
                        lambda fixed, moving, seed=0: sitk.TranslationTransform(3, (0.0, 0.0, -1000.0)))
    found = localize_by_registration(io.read_ct(hn_pair(head_neck, 201, "validation")[0]), hn_template)
    assert set(found) == set(hn_template.organs)
    assert all(loc.box is None and loc.outside and loc.reason == localize.OUTSIDE_IMAGE for loc in found.values())


@pytest.fixture(scope="module")
def hn_template(head_neck, tmp_path_factory):
    images, labels = zip(*(hn_pair(head_neck, n) for n in (4, 13)))
    return build_template(list(images), list(labels), io.read_classes(head_neck / "classes.json"),
                          tmp_path_factory.mktemp("t") / "hn", organs=["Brainstem", "Mandible", "RightParotid"])


@pytest.mark.slow
def test_a_support_moved_in_space_is_found_where_its_labels_are(head_neck, hn_template, tmp_path):
    # Query = support pt_4 itself with a shifted origin: registration must undo the shift exactly
    # (a mapping in the wrong direction would show twice the shift).
    ct_path, label_path = hn_pair(head_neck, 4)
    moved = sitk.ReadImage(ct_path)
    moved.SetOrigin((25.0, -15.0, 30.0))
    support_only = type(hn_template)(hn_template.folder, hn_template.organs, "", hn_template.supports[:1])
    found = localize_by_registration(moved, support_only)
    labels, _ = io.axial_array(sitk.ReadImage(label_path), np.uint16)
    for organ, value in hn_template.organs.items():
        assert box_iou(found[organ].box, Box3D.from_mask(labels == value)) > 0.8, organ
        assert found[organ].agreement == pytest.approx(1.0)


@pytest.mark.slow
def test_organs_of_an_unseen_patient_are_localized(head_neck, hn_template):
    ct_path, label_path = hn_pair(head_neck, 201, "validation")
    ct = io.read_ct(ct_path)
    labels, _ = io.axial_array(io.read_label_map(label_path, ct), np.uint16)
    found = localize_by_registration(ct, hn_template)
    for organ, value in hn_template.organs.items():
        reference = Box3D.from_mask(labels == value)
        assert found[organ].box is not None and 0 < found[organ].agreement <= 1
        # Affine registration from 2 supports: boxes overlap the truth clearly, not perfectly.
        assert box_iou(found[organ].box, reference) > 0.25, organ
        extended = found[organ].box.extended((2, 10, 10), labels.shape)
        assert box_iou(extended, reference) > 0 and _contains_most(extended, labels == value)


def _contains_most(box: Box3D, mask: np.ndarray) -> bool:
    inside = mask[box.z0:box.z1 + 1, box.y0:box.y1 + 1, box.x0:box.x1 + 1].sum()
    return inside / mask.sum() > 0.8  # the extended box holds most of the organ


def test_a_ct_too_small_to_register_is_one_clear_error(head_neck, hn_template):
    ct = io.read_ct(hn_pair(head_neck, 201, "validation")[0])
    small = ct[50:62, 50:62, 60:68]  # 65 x 65 x 24 mm
    with pytest.raises(URSAMError, match="Could not register the template's support .* mm"):
        localize_by_registration(small, hn_template)


@pytest.mark.slow
def test_registration_is_repeatable(head_neck, hn_template):
    ct = io.read_ct(hn_pair(head_neck, 201, "validation")[0])
    first = localize_by_registration(ct, hn_template, ["Brainstem"])["Brainstem"]
    again = localize_by_registration(ct, hn_template, ["Brainstem"])["Brainstem"]
    assert np.array_equal(first.points, again.points)



def test_supports_are_registered_side_by_side_in_order_and_a_failure_is_raised():
    import threading
    import time

    from URSAMLib.localize.registration import for_each_support
    from URSAMLib.template import Support

    supports = [Support(f"s{k}", None, {}) for k in range(4)]
    threads, messages = set(), []

    def register(support):
        threads.add(threading.get_ident())
        time.sleep(0.05 * (4 - int(support.name[1:])))  # the first finishes last
        return support.name

    names = for_each_support(supports, register, lambda fraction, message: messages.append((fraction, message)))
    assert names == ["s0", "s1", "s2", "s3"]
    assert messages[-1][0] == 1.0 and [f for f, _ in messages] == sorted(f for f, _ in messages)
    import os
    assert len(threads) == min(4, os.cpu_count() or 1)

    def failing(support):
        if support.name == "s2":
            raise URSAMError("s2 could not be registered")
        return support.name

    with pytest.raises(URSAMError, match="s2 could not"):
        for_each_support(supports, failing)

def test_implausible_boxes_are_not_found_and_all_of_them_mean_another_region():
    from URSAMLib.localize import (Localization, TemplatePrompts, fuse_supports, no_organ_found,
                                   reject_implausible)
    from URSAMLib.template import Support, Template

    # Two supports whose liver spans 150 x 120 x 100 mm (x, y, z); the query has 2 x 1 x 1 mm voxels (z, y, x).
    liver_mm = np.array([[0, 60, 50], [150, 60, 50], [75, 0, 50], [75, 120, 50], [75, 60, 0], [75, 60, 100]], float)
    template = Template(None, {"liver": 5}, "abdomen", [Support(n, None, {"liver": liver_mm}) for n in "ab"])
    frame = io.AxialFrame((0, 1, 2), (False, False, False), (100, 400, 400), (2.0, 1.0, 1.0))

    def localized(extent_zyx_voxels, start=(10, 10, 10)) -> dict[str, Localization]:
        points = np.array([start, np.add(start, extent_zyx_voxels)], float)
        return {"liver": fuse_supports("liver", 5, np.stack([points, points]), frame.shape)}

    plausible = localized((60, 140, 170))  # 120 x 140 x 170 mm: a larger patient
    reject_implausible(plausible, template, frame)
    assert plausible["liver"].box is not None and not plausible["liver"].implausible
    for extent in ((5, 140, 170), (60, 389, 170)):  # 10 mm tall; 389 mm deep (over 3 x 120 mm)
        found = localized(extent)
        reject_implausible(found, template, frame)
        assert found["liver"].box is None and found["liver"].implausible and "implausible" in found["liver"].reason
    truncated = localized((5, 140, 170), start=(94, 10, 10))  # 10 mm tall, but up to the CT's last slice
    reject_implausible(truncated, template, frame)
    assert truncated["liver"].box is not None
    # 40 mm tall (0.45 of the usual length): 30 mm deep is 0.33 of the usual depth, too little for the whole
    # organ but plausible for a stretch of it; 5 mm deep is not (under 0.45 / 3 with the slack)
    for depth_voxels, plausible_stretch in ((30, True), (5, False)):
        stretch = localized((20, depth_voxels, 150))
        reject_implausible(stretch, template, frame)
        assert (stretch["liver"].box is not None) == plausible_stretch
    flat = localized((60, 30, 150))  # the whole length but 30 mm deep: a box on other anatomy
    reject_implausible(flat, template, frame)
    assert flat["liver"].box is None and flat["liver"].implausible
    error = no_organ_found(TemplatePrompts([], {"liver": found["liver"].reason}, found, (0, 0, 0)), template, "ct")
    assert "probably for another body region" in str(error) and "implausible size" in str(error)


@pytest.mark.parametrize("blanked", [False, True])
def test_auto_registers_a_blanked_ct_to_the_blanked_supports_and_leaves_their_missing_organs_to_medlam(
        blanked, monkeypatch, tmp_path):
    from URSAMLib.localize import auto
    from URSAMLib.localize.common import Localization
    from URSAMLib.template import Support, Template

    def template(folder, organs):
        return Template(tmp_path / folder, {o: k + 1 for k, o in enumerate(organs)}, "head-and-neck",
                        [Support("s", tmp_path / "s.nii.gz", {}, tmp_path / "s_labels.nii.gz")])

    main = template("hn", ["Brainstem", "Esophagus", "Mandible"])
    main.blanked = template("hn/blanked", ["Brainstem", "Mandible"])
    calls = []

    def localizer(name):
        def localize(ct, chosen, organs, progress=None, **options):
            calls.append((name, chosen.folder.name, list(organs)))
            return {o: Localization(o, chosen.organs[o], box=Box3D(0, 1, 0, 1, 0, 1)) for o in organs}
        return localize

    monkeypatch.setattr(auto, "localize_by_atlas", localizer("atlas"))
    monkeypatch.setattr(auto, "localize_by_medlam", localizer("medlam"))
    array = np.full((20, 30, 30), -1000, np.int16)
    array[:, 5:25, 5:25] = 40 if not blanked else -1000
    array[8:12, 12:18, 12:18] = 40  # a blanked CT: intensities only around the organs
    ct = sitk.GetImageFromArray(array)
    found = auto.localize_automatically(ct, main, ["Brainstem", "Esophagus", "Mandible"])
    if blanked:
        assert calls == [("atlas", "blanked", ["Brainstem", "Mandible"]), ("medlam", "hn", ["Esophagus"])]
        assert {o: loc.localizer for o, loc in found.items()} == \
            {"Brainstem": "atlas", "Esophagus": "medlam", "Mandible": "atlas"}
    else:
        assert calls == [("atlas", "hn", ["Brainstem", "Esophagus", "Mandible"])]
    main.blanked = None  # a template without blanked supports: a blanked CT goes to MedLAM
    calls.clear()
    auto.localize_automatically(ct, main, ["Brainstem"])
    assert calls == [("medlam" if blanked else "atlas", "hn", ["Brainstem"])]
