"""URSAMLib.template: extreme points, building and loading templates from real head-and-neck CT."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import hn_pair
from URSAMLib import io
from URSAMLib.errors import URSAMError
from URSAMLib.template import Template, build_template, extreme_points


def test_extreme_points_lie_on_the_organ_in_a_fixed_order():
    mask = np.zeros((5, 6, 7), bool)
    mask[1:4, 2:5, 1:6] = True
    mask[2, 5, 3] = True  # a lone voxel at the posterior edge
    points = extreme_points(mask)
    assert points.shape == (6, 3)
    assert np.allclose(points[0], [2, 3, 1]) and np.allclose(points[1], [2, 3, 5])  # -x, +x
    assert np.allclose(points[3], [2, 5, 3])  # +y: the lone voxel
    assert np.allclose(points[4], [1, 3, 3]) and np.allclose(points[5], [3, 3, 3])  # -z, +z
    u_shape = np.zeros((1, 5, 7), bool)
    u_shape[0, :, [0, 6]] = True
    u_shape[0, 4, :] = True
    assert mask[tuple(extreme_points(mask).astype(int).T)].all()
    assert u_shape[tuple(extreme_points(u_shape).astype(int).T)].all()  # never between the arms


@pytest.fixture(scope="module")
def template(head_neck, tmp_path_factory):
    images, labels = zip(*(hn_pair(head_neck, n) for n in (4, 13)))
    classes = io.read_classes(head_neck / "classes.json")
    return build_template(list(images), list(labels), classes, tmp_path_factory.mktemp("t") / "hn",
                          body_region="head-and-neck")


def test_template_records_points_on_each_support_organ(template, head_neck):
    manifest = json.loads((template.folder / "template.json").read_text())
    assert manifest["format"] == "ursam-template" and manifest["version"] == 1
    assert set(template.organs) == {"Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus",
                                    "Larynx", "Mandible"}
    assert len(template.supports) == 2 and template.body_region == "head-and-neck"
    ct_path, label_path = hn_pair(head_neck, 4)
    labels = sitk.ReadImage(label_path)
    for organ, value in template.organs.items():
        for point in template.supports[0].points_mm[organ]:
            index = labels.TransformPhysicalPointToIndex(point.tolist())
            assert labels[index] == value, (organ, point)  # the point is a voxel of its organ
    support = template.supports[0].read()
    assert np.allclose(support.GetSpacing(), 3.0)
    assert np.allclose(support.GetOrigin(), sitk.ReadImage(ct_path).GetOrigin())


def test_right_parotid_is_on_the_patients_right(template):
    for support in template.supports:
        right, left = support.points_mm["RightParotid"], support.points_mm["LeftParotid"]
        assert right[:, 0].mean() < left[:, 0].mean()  # LPS: x grows to the patient's left


def test_loading_checks_the_manifest(tmp_path, template):
    with pytest.raises(URSAMError, match="no template.json"):
        Template.load(tmp_path)
    (tmp_path / "template.json").write_text('{"format": "ursam-template", "version": 99}')
    with pytest.raises(URSAMError, match="version-1"):
        Template.load(tmp_path)
    assert Template.load(template.folder).organs == template.organs


def test_build_errors_name_the_file(head_neck, tmp_path):
    classes = io.read_classes(head_neck / "classes.json")
    ct4, lab4 = hn_pair(head_neck, 4)
    ct202, lab202 = hn_pair(head_neck, 202, "validation")  # has no Esophagus and no Larynx
    with pytest.raises(URSAMError, match="pt_202_oar.nii.gz has no voxels of Esophagus, Larynx"):
        build_template([ct4, ct202], [lab4, lab202], classes, tmp_path / "t", organs=list(classes.values()))
    with pytest.raises(URSAMError, match="one label map per image"):
        build_template([ct4, ct202], [lab4], classes, tmp_path / "t")
    _, lab201 = hn_pair(head_neck, 201, "validation")  # 5.4 mm pixels, pt_4 has 3.9 mm
    with pytest.raises(URSAMError, match="pt_201_oar.nii.gz is on another grid"):
        build_template([ct4], [lab201], classes, tmp_path / "t")
    with pytest.raises(URSAMError, match="not in the class map"):
        build_template([ct4], [lab4], classes, tmp_path / "t", organs=["Heart"])
    # Without --organs the template keeps what every support has.
    template = build_template([ct4, ct202], [lab4, lab202], classes, tmp_path / "t")
    assert "Esophagus" not in template.organs and "Brainstem" in template.organs
    with pytest.raises(URSAMError, match="already holds a template"):
        build_template([ct4], [lab4], classes, tmp_path / "t")


def test_a_failed_rebuild_leaves_the_previous_template_intact_and_a_good_one_replaces_it(head_neck, tmp_path,
                                                                                         monkeypatch):
    from URSAMLib import template as template_module

    classes = io.read_classes(head_neck / "classes.json")
    ct4, lab4 = hn_pair(head_neck, 4)
    ct13, lab13 = hn_pair(head_neck, 13)
    folder = tmp_path / "t"
    first = build_template([ct4], [lab4], classes, folder, organs=["Brainstem"])
    before = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    real_write = template_module.write_image
    calls = []

    def fail_on_the_second_support(image, path):
        calls.append(path)
        if len(calls) == 3:  # the second support's image (each support: image, then label map)
            raise OSError("disk full")
        real_write(image, path)

    monkeypatch.setattr(template_module, "write_image", fail_on_the_second_support)
    with pytest.raises(OSError, match="disk full"):
        build_template([ct4, ct13], [lab4, lab13], classes, folder, organs=["Brainstem"], overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert Template.load(folder).supports[0].points_mm["Brainstem"].tolist() == \
        first.supports[0].points_mm["Brainstem"].tolist()

    monkeypatch.setattr(template_module, "write_image", real_write)
    second = build_template([ct4, ct13], [lab4, lab13], classes, folder, organs=["Brainstem"], overwrite=True)
    assert len(second.supports) == 2
    files = sorted(p.name for p in (folder / "supports").iterdir())
    assert files == sorted(f.name for s in second.supports for f in (s.image, s.labels))  # the old files are gone


def test_a_template_names_its_blanked_supports_and_loads_them_with_it(template, tmp_path):
    import shutil

    from URSAMLib.template import link_blanked

    folder = tmp_path / "hn"
    shutil.copytree(template.folder, folder)
    shutil.copytree(template.folder, folder / "blanked")  # stands in for a template of blanked scans
    assert Template.load(folder).blanked is None
    linked = link_blanked(folder, "blanked")
    assert linked.blanked is not None and linked.blanked.folder == folder / "blanked"
    assert [s.name for s in linked.blanked.supports] == [s.name for s in template.supports]
    assert json.loads((folder / "template.json").read_text())["blanked"] == "blanked"
    # a template of another body region is refused, and the manifest is left as it was
    other = json.loads((folder / "blanked" / "template.json").read_text())
    (folder / "abdomen").mkdir()
    shutil.copytree(folder / "blanked" / "supports", folder / "abdomen" / "supports")
    (folder / "abdomen" / "template.json").write_text(json.dumps({**other, "body_region": "abdomen"}))
    before = (folder / "template.json").read_text()
    with pytest.raises(URSAMError, match="abdomen"):
        link_blanked(folder, "abdomen")
    assert (folder / "template.json").read_text() == before
    with pytest.raises(URSAMError, match="not an URSAM template"):
        link_blanked(folder, "nowhere")


def test_a_template_records_each_organs_measured_rectification_and_its_prompts_carry_it(template, head_neck,
                                                                                       tmp_path):
    import shutil

    from URSAMLib.localize import prompts_from_template
    from URSAMLib.template import set_rectification

    folder = tmp_path / "hn"
    shutil.copytree(template.folder, folder)
    assert Template.load(folder).rectification == {}
    organ = next(iter(template.organs))
    assert set_rectification(folder, {organ: "unc-fnc"}).rectification == {organ: "unc-fnc"}
    before = (folder / "template.json").read_text()
    for wrong in ({organ: "guess"}, {"Kidney": "unc-fnc"}):
        with pytest.raises(URSAMError, match="not an organ of the template or not one of"):
            set_rectification(folder, wrong)
    assert (folder / "template.json").read_text() == before
    ct = io.read_ct(hn_pair(head_neck, 201, "validation")[0])
    found = prompts_from_template(ct, Template.load(folder), localizer="medlam")  # the shipped weights: fast
    assert found.prompts
    assert {p.name: p.method for p in found.prompts} == {p.name: "unc-fnc" if p.name == organ else None
                                                         for p in found.prompts}
    (folder / "template.json").write_text(before.replace('"unc-fnc"', '"guess"'))
    with pytest.raises(URSAMError, match="fix or rebuild the template"):
        Template.load(folder)


def test_a_template_records_each_organs_typical_volume(template):
    volumes = template.typical_volumes_ml()
    assert set(volumes) == set(template.organs)
    # the median over the supports of each organ's voxels on the 3 mm grid (27 µl per voxel)
    for organ, value in template.organs.items():
        counts = [int((sitk.GetArrayFromImage(s.read_labels()) == value).sum()) for s in template.supports]
        assert volumes[organ] == pytest.approx(np.median(counts) * 0.027, rel=1e-3)
