"""URSAMLib.localize.atlas: the majority vote and its per-slice part boxes, dropped supports, and
multi-atlas localization on real head-and-neck CT."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import hn_pair
from URSAMLib import io
from URSAMLib.localize import atlas
from URSAMLib.localize.atlas import VOTE_THRESHOLD, fuse_votes, localize_by_atlas
from URSAMLib.localize.registration import registration_image
from URSAMLib.errors import URSAMError
from URSAMLib.localize import OUTSIDE_IMAGE
from URSAMLib.metrics import dice
from URSAMLib.template import Template, build_template


def test_the_vote_keeps_voxels_most_supports_label_and_boxes_each_part_of_a_slice():
    carried = [np.zeros((3, 20, 30), np.uint8) for _ in range(3)]
    for k, labels in enumerate(carried):
        labels[1:, 5:10, 2:8] = 4  # every support: a left part ...
        labels[1:, 5:10, 20:26] = 4  # ... and a right part on slices 1 and 2
        labels[0, 12 + k, 12] = 4  # one support each: no majority
    found = fuse_votes("Mandible", 4, carried, spacing=(3.0, 2.0, 2.0), margin_mm=2.0)
    expected = np.zeros((3, 20, 30), bool)
    expected[1:, 5:10, 2:8] = expected[1:, 5:10, 20:26] = True
    assert np.array_equal(found.atlas.mask((3, 20, 30)), expected)
    assert found.atlas.supports == 3 and found.localizer == "atlas"
    assert list(found.slice_boxes) == [1, 2]  # no box where the vote has no organ
    assert np.array_equal(found.slice_boxes[1], [[1, 4, 8, 10], [19, 4, 26, 10]])  # 2 mm = 1 px margin
    assert found.agreement < 1.0  # the supports' boxes reach their single votes on slice 0
    prompt = found.prompt((3, 20, 30), (5, 10, 10))  # the 3-D margin does not apply to atlas prompts
    assert prompt.boxes.keys() == found.slice_boxes.keys() and prompt.prior[0] == found.atlas.region
    assert np.isclose(prompt.prior[1].max(), 1.0) and VOTE_THRESHOLD == 0.5


def test_an_organ_no_majority_places_is_not_found_with_the_reason():
    carried = [np.zeros((2, 8, 8), np.uint8) for _ in range(3)]
    carried[0][0, 2:4, 2:4] = 1
    found = fuse_votes("Larynx", 1, carried, spacing=(3.0, 1.0, 1.0))
    assert found.box is None and found.atlas is None and "agree on none" in found.reason
    assert not found.slice_boxes and not found.outside
    nowhere = fuse_votes("Larynx", 2, carried, spacing=(3.0, 1.0, 1.0))  # no support has it inside the CT
    assert nowhere.outside and nowhere.reason == OUTSIDE_IMAGE


def test_the_organ_region_is_where_the_affine_puts_the_supports_organs_grown_by_the_margin():
    points = {"Brainstem": np.array([[0.0, 0, 0], [10, 0, 0], [5, -4, 0], [5, 6, 0], [5, 0, 20], [5, 0, 30]]),
              "Larynx": np.array([[40.0, 50, 60]] * 6)}
    support = atlas.Support("s", None, points)
    shift = sitk.TranslationTransform(3, (1.0, 2.0, 3.0))  # query point → support point: support = query + shift
    low, high = atlas.organ_region_mm(support, shift, margin_mm=5.0)
    assert np.allclose(low, [-1 - 5, -6 - 5, -3 - 5]) and np.allclose(high, [39 + 5, 48 + 5, 57 + 5])


def test_the_index_region_covers_the_physical_box_on_any_grid_and_is_clipped_to_the_image():
    image = sitk.Image(20, 30, 10, sitk.sitkUInt8)
    image.SetSpacing((2.0, 1.0, 3.0))
    image.SetDirection((-1.0, 0, 0, 0, 1, 0, 0, 0, 1))  # i runs towards -x
    image.SetOrigin((0.0, 0.0, 0.0))
    lower, upper = atlas.index_region(image, np.array([-10.0, 5.0, -100.0]), np.array([-4.0, 7.5, 7.0]))
    assert lower.tolist() == [2, 5, 0] and upper.tolist() == [6, 9, 4]  # x -4..-10 → i 2..5; z clipped at 0
    lower, upper = atlas.index_region(image, np.array([500.0, 0, 0]), np.array([600.0, 5, 5]))
    assert (upper - lower).min() == 0  # all of it outside the image: empty


@pytest.fixture(scope="module")
def hn_template(head_neck, tmp_path_factory):
    images, labels = zip(*(hn_pair(head_neck, n) for n in (4, 13, 17)))
    return build_template(list(images), list(labels), io.read_classes(head_neck / "classes.json"),
                          tmp_path_factory.mktemp("t") / "hn", organs=["Brainstem", "Mandible", "RightParotid"])


def test_a_support_that_fails_is_dropped_with_a_warning_and_all_failing_is_one_error(head_neck, hn_template,
                                                                                       monkeypatch):
    ct = io.read_ct(hn_pair(head_neck, 201, "validation")[0])
    real = atlas.register_affine
    first = hn_template.supports[0].name

    first_image = registration_image(hn_template.supports[0].read())

    def failing_first(fixed, moving, seed=0):  # supports are registered side by side: known by their image
        if moving.GetSize() == first_image.GetSize() and moving.GetOrigin() == first_image.GetOrigin():
            raise RuntimeError("ITK ERROR: too few samples")
        return real(fixed, moving, seed)

    monkeypatch.setattr(atlas, "register_affine", failing_first)
    with pytest.warns(UserWarning, match=f"support {first} .* left out; the other 2 vote"):
        carried, used = atlas.carry_supports(ct, hn_template, deformable=False)
    assert len(carried) == 2 and first not in used
    lower, upper = atlas.index_region(ct, *atlas.organ_region_mm(hn_template.supports[1], real(
        registration_image(ct), registration_image(hn_template.supports[1].read()))))
    outside = np.ones(ct.GetSize()[::-1], bool)  # [k, j, i]
    outside[lower[2]:upper[2], lower[1]:upper[1], lower[0]:upper[0]] = False
    frame = io.AxialFrame.of(ct)
    assert carried[0].any() and not carried[0][frame.to_axial(outside)].any()  # nothing carried outside the region
    assert outside.any()  # the region is smaller than the CT
    monkeypatch.setattr(atlas, "register_affine",  # diverged: every support lands 1 m away
                        lambda fixed, moving, seed=0: sitk.TranslationTransform(3, (0.0, 0.0, -1000.0)))
    with pytest.raises(URSAMError, match="No support of the template could be registered .* Dice 0.00"):
        localize_by_atlas(ct, hn_template, deformable=False)


def test_the_b_spline_bends_only_the_organs_region(head_neck, hn_template, monkeypatch):
    bent = []

    def recording(fixed, moving, affine, seed=0):  # the affine stands: only what the B-spline would see counts
        bent.append(fixed.GetSize())
        return affine

    monkeypatch.setattr(atlas, "register_deformable", recording)
    ct = io.read_ct(hn_pair(head_neck, 201, "validation")[0])
    atlas.carry_supports(ct, Template(hn_template.folder, hn_template.organs, "", hn_template.supports[:1]))
    assert len(bent) == 1 and np.prod(bent[0]) < 0.6 * np.prod(registration_image(ct).GetSize())


def test_supports_without_label_maps_are_one_clear_error(hn_template):
    bare = Template(hn_template.folder, hn_template.organs, "",
                    [type(s)(s.name, s.image, None) for s in hn_template.supports])
    with pytest.raises(URSAMError, match="need the supports' label maps.*ursam build-template"):
        localize_by_atlas(sitk.Image(10, 10, 10, sitk.sitkInt16), bare)


@pytest.mark.slow
def test_the_atlas_vote_segments_an_unseen_patient_and_its_boxes_hold_the_organ(head_neck, hn_template):
    ct_path, label_path = hn_pair(head_neck, 201, "validation")
    ct = io.read_ct(ct_path)
    labels, _ = io.axial_array(io.read_label_map(label_path, ct), np.uint16)
    found = localize_by_atlas(ct, hn_template)
    for organ, value in hn_template.organs.items():
        reference = labels == value
        vote = found[organ].atlas.mask(labels.shape)
        # 3 supports, affine + B-spline: a real but coarse segmentation of each organ.
        assert dice(vote, reference) > 0.3, organ
        covered = np.zeros_like(reference)
        for z, parts in found[organ].slice_boxes.items():
            for x0, y0, x1, y1 in np.rint(parts).astype(int):
                covered[z, max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
        assert (covered & reference).sum() / reference.sum() > 0.5, organ  # the boxes hold most of the organ
