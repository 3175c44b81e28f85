"""The Slicer module's glue on a real MRML scene (slicer-core): results land on the right voxels.

Volumes are loaded by Slicer's own readers (the DICOM series sorted as the DICOM module sorts it,
NIfTI/NRRD by the archetype reader — which, for the abdomen labels, even stores the slices in the
opposite order from SimpleITK). The expected result is computed straight from URSAMLib on the
files, as ``ursam segment`` does. Segments are then compared in physical space: every voxel of a
segment's own labelmap, mapped through its own image-to-world matrix, must be a voxel URSAMLib
labelled with that organ, and vice versa. The stand-in backbone (URSAMSlicerLib.testing.BrightInBox)
makes the run fast and deterministic; the real model is not needed to test placement.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

import fake_slicer_gui as fake
from slicer_scene import (add_slice_views, build_oblique_case, indices_of_points, load_dicom_series, load_volume,
                          place_in_study, require, scene_snapshot, segment_voxels_lps)
from URSAMLib import io
from URSAMLib.errors import URSAMError
from URSAMLib.pipeline import Settings, segment
from URSAMLib.prompts import prompts_from_labels

require("slicer")
from URSAMSlicerLib import mrml, mrml_outputs, regions  # noqa: E402
from URSAMSlicerLib.testing import BrightInBox, bright_in_box  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture
def ursam(monkeypatch):
    """URSAM.py imported with the fake ScriptedLoadableModule/Qt layer; slicer.mrmlScene is real."""
    fake.install(monkeypatch)
    return fake.import_module(monkeypatch)


def in_process_logic(module):
    logic = module.URSAMLogic()
    logic.runInProcess = True
    logic.backboneLoader = bright_in_box
    return logic


def expected_result(ct: sitk.Image, labels: sitk.Image, organs: dict[int, str], settings: Settings, mode="slice"):
    """What URSAMLib alone makes of the files (the command line's path)."""
    hu, frame = io.axial_array(ct)
    label_array, _ = io.axial_array(labels, np.uint16)
    prompts, _ = prompts_from_labels(label_array, organs, mode, spacing=frame.spacing)
    return segment(hu, prompts, BrightInBox(), settings)


def segment_on_grid(segmentation_node, segment_id: str, ct: sitk.Image) -> np.ndarray:
    """A segment's voxels as a bool array ``[k, j, i]`` of the SimpleITK CT, found in physical space."""
    ijk = indices_of_points(ct, segment_voxels_lps(segmentation_node, segment_id))
    size = ct.GetSize()
    assert (ijk >= 0).all() and (ijk < size).all()
    mask = np.zeros(size[::-1], bool)
    mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = True
    assert mask.sum() == len(ijk)
    return mask


def volume_on_grid(volume_node, ct: sitk.Image) -> np.ndarray:
    """A volume node's voxels re-indexed ``[k, j, i]`` onto the CT's grid through physical space
    (each node voxel must sit exactly on a CT voxel)."""
    values = mrml.voxel_array(volume_node)
    k, j, i = np.indices(values.shape, dtype=np.float64)
    ijk1 = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    lps = (mrml.ijk_to_ras(volume_node) @ ijk1)[:3].T * [-1, -1, 1]
    index = indices_of_points(ct, lps)
    out = np.full(ct.GetSize()[::-1], np.nan, np.float64)
    out[index[:, 2], index[:, 1], index[:, 0]] = values.ravel()
    assert not np.isnan(out).any()
    return out


def assert_segments_match(outputs, result, ct, organ_keys: dict[int, str]):
    for which, node in (("rectified", outputs.segmentation), ("ensemble", outputs.ensemble)):
        expected = sitk.GetArrayFromImage(io.image_from_axial(result.label_map(which), ct))
        segments = mrml_outputs.ursam_segments(node, which)
        assert set(segments) == set(organ_keys.values())
        for label, key in organ_keys.items():
            got = segment_on_grid(node, segments[key], ct)
            assert got.any(), f"{which} {key} is empty"
            assert np.array_equal(got, expected == label), f"{which} {key}: voxels differ"


# ---------------------------------------------------------------------------------------
# The DICOM CT (identity LPS direction, i.e. IJK-to-RAS diag(-0.98, -0.98, 2)) and its labels

@pytest.fixture
def dicom_scene(ursam, abdomen):
    import slicer

    scene = slicer.mrmlScene
    ct_node = load_dicom_series(scene, abdomen / "dicom", "CT")
    labels_node = load_volume(scene, abdomen / "dicom_labels.nii.gz", "CT labels", labelmap=True)
    study = place_in_study(scene, ct_node)
    return scene, ct_node, labels_node, study


def test_volume_node_reads_as_the_same_image_as_simpleitk_reads_the_series(dicom_scene, abdomen):
    _, ct_node, labels_node, _ = dicom_scene
    ct = io.read_ct(abdomen / "dicom")
    image = mrml.image_from_volume_node(ct_node)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ct))
    assert np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), ct.GetSpacing()) and np.allclose(image.GetDirection(), ct.GetDirection())
    assert not np.allclose(mrml.ijk_to_ras(ct_node)[:3, :3], np.eye(3))  # RAS: not an identity matrix
    # Slicer stored the labels' slices in the opposite order; the prompts must still land right
    assert mrml.ijk_to_ras(labels_node)[2, 2] < 0


@pytest.mark.slow
def test_dicom_segments_ensemble_and_heatmap_land_on_ursamlib_voxels(ursam, dicom_scene, abdomen):
    scene, ct_node, labels_node, study = dicom_scene
    settings = Settings(num_aug=3, ratio=0.02, seed=4)
    organs = {5: "liver", 1: "spleen", 6: "stomach", 52: "aorta"}
    outputs = in_process_logic(ursam).process(ursam.URSAMRequest(
        ct_node, promptSource="labelmap", promptNode=labels_node, classesPath=str(abdomen / "classes.json"),
        organLabels=list(organs), settings=settings))

    ct = io.read_ct(abdomen / "dicom")
    labels = io.read_label_map(abdomen / "dicom_labels.nii.gz", ct)
    result = expected_result(ct, labels, organs, settings)
    assert_segments_match(outputs, result, ct, organs)
    heat = volume_on_grid(outputs.uncertainty, ct)
    expected_heat = sitk.GetArrayFromImage(io.image_from_axial(result.uncertainty_map(), ct))
    assert expected_heat.max() > 0.5 and np.array_equal(heat, expected_heat.astype(np.float64))

    # names, colours, terminology, visibility, geometry and place in the study
    import slicer

    assert outputs.segmentation.GetName() == "CT URSAM"
    assert outputs.ensemble.GetName() == "CT URSAM ensemble" and not outputs.ensemble.GetDisplayNode().GetVisibility()
    assert outputs.uncertainty.GetName() == "CT URSAM uncertainty"
    liver_id = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")["liver"]
    liver = outputs.segmentation.GetSegmentation().GetSegment(liver_id)
    assert liver.GetName() == "Liver" and np.allclose(liver.GetColor(), np.array([221, 130, 101]) / 255)
    assert "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~" in \
        mrml.segment_terminology(outputs.segmentation, liver_id)
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    reference = outputs.segmentation.GetNodeReference(role)
    assert reference is ct_node
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in (outputs.segmentation, outputs.ensemble, outputs.uncertainty):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    display = outputs.uncertainty.GetDisplayNode()
    assert display.GetColorNode().GetName() == mrml.HEAT_COLOR_NODE_NAME
    assert display.GetWindowLevelMin() == 0 and display.GetWindowLevelMax() == pytest.approx(np.log(2))
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(mrml.OVERLAY_THRESHOLD)


# ---------------------------------------------------------------------------------------
# An oblique CT (20 degrees about S, rows flipped), prompted by segments Slicer imported

@pytest.fixture
def oblique_scene(ursam, tmp_path):
    """An oblique CT with two bright 'organs' and a segmentation of them named liver and Gallbladder."""
    import slicer

    ct_node, prompts = build_oblique_case(slicer.mrmlScene, tmp_path)
    return slicer.mrmlScene, ct_node, prompts, tmp_path


def test_oblique_segments_and_heatmap_land_on_ursamlib_voxels(ursam, oblique_scene):
    scene, ct_node, prompts, folder = oblique_scene
    assert abs(mrml.ijk_to_ras(ct_node)[0, 1]) > 0.1  # really oblique
    settings = Settings(num_aug=5, ratio=0.05, seed=2)
    for mode in ("slice", "box3d"):
        outputs = in_process_logic(ursam).process(ursam.URSAMRequest(
            ct_node, promptNode=prompts, promptMode=mode, settings=settings))
        ct = io.read_ct(folder / "oblique.nrrd")
        result = expected_result(ct, io.read_label_map(folder / "oblique_labels.nrrd", ct),
                                 {1: "liver", 2: "gallbladder"}, settings, mode)
        assert_segments_match(outputs, result, ct, {1: "liver", 2: "gallbladder"})
        expected_heat = sitk.GetArrayFromImage(io.image_from_axial(result.uncertainty_map(), ct))
        assert expected_heat.max() > 0.3
        assert np.array_equal(volume_on_grid(outputs.uncertainty, ct), expected_heat.astype(np.float64))
        names = {outputs.segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)}
        assert names == {"Liver", "Gallbladder"}


def test_rerun_and_rerectification_never_touch_the_users_segments(ursam, oblique_scene):
    import slicer

    scene, ct_node, prompts, folder = oblique_scene
    logic = in_process_logic(ursam)
    request = ursam.URSAMRequest(ct_node, promptNode=prompts, settings=Settings(num_aug=4, ratio=0.08, seed=1))
    outputs = logic.process(request)
    segmentation = outputs.segmentation.GetSegmentation()
    # the user adds a correction overlapping the liver and a segment of their own elsewhere
    shape = mrml.node_shape(ct_node)
    user_masks = {"fix": np.zeros(shape, bool), "other": np.zeros(shape, bool)}
    user_masks["fix"][1:4, 8:20, 10:20] = True
    user_masks["other"][0:2, 0:5, 0:5] = True
    for segment_id, mask in user_masks.items():
        segmentation.AddEmptySegment(segment_id, f"My {segment_id}", [0.1, 0.2, 0.3])
        image, extent = mrml_outputs._mask_image(mask, mrml.ijk_to_ras(ct_node))
        logic_ = slicer.vtkSlicerSegmentationsModuleLogic
        assert logic_.SetBinaryLabelmapToSegment(image, outputs.segmentation, segment_id, logic_.MODE_REPLACE, extent)
    ours = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")

    again = logic.process(dataclasses.replace(request, outputSegmentation=outputs.segmentation))
    logic.rerectify(again, alpha_h=1.0, method="fixed")
    assert again.segmentation is outputs.segmentation and again.ensemble is outputs.ensemble
    assert mrml_outputs.ursam_segments(again.segmentation, "rectified") == ours  # replaced in place, not duplicated
    assert segmentation.GetNumberOfSegments() == 4
    for segment_id, mask in user_masks.items():
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == f"My {segment_id}" and np.allclose(segment.GetColor(), [0.1, 0.2, 0.3])
        assert not segment.HasTag(mrml.TAG_ORGAN)
        assert np.array_equal(mrml.segment_mask(again.segmentation, segment_id, ct_node), mask)
    # and only URSAM's segments follow the new rectification
    ct = io.read_ct(folder / "oblique.nrrd")
    result = expected_result(ct, io.read_label_map(folder / "oblique_labels.nrrd", ct), {1: "liver", 2: "gallbladder"},
                             Settings(num_aug=4, ratio=0.08, seed=1))
    result.rerectify(alpha_h=1.0, method="fixed")
    assert_segments_match(again, result, ct, {1: "liver", 2: "gallbladder"})


def test_rerectify_changes_only_the_rectified_segments_without_sam(ursam, oblique_scene):
    scene, ct_node, prompts, _ = oblique_scene
    backbone = BrightInBox()
    logic = ursam.URSAMLogic()
    logic.runInProcess = True
    logic.backboneLoader = lambda name, checkpoint, device: backbone
    outputs = logic.process(ursam.URSAMRequest(ct_node, promptNode=prompts, settings=Settings(num_aug=5, ratio=0.1)))
    calls = list(backbone.embedded)
    liver = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")["liver"]
    before = mrml.segment_mask(outputs.segmentation, liver, ct_node)
    ensemble_before = scene_snapshot(scene)[outputs.ensemble.GetID()]
    heat_before = mrml.voxel_array(outputs.uncertainty).copy()
    logic.rerectify(outputs, method="unc-fnc")  # uncertain voxels all join: the mask can only grow
    after = mrml.segment_mask(outputs.segmentation, liver, ct_node)
    assert backbone.embedded == calls
    assert after.sum() > before.sum() and (after | before).sum() == after.sum()
    assert scene_snapshot(scene)[outputs.ensemble.GetID()] == ensemble_before
    assert np.array_equal(mrml.voxel_array(outputs.uncertainty), heat_before)
    assert outputs.statistics[0].volume_ml > 0


def test_an_uncertain_region_takes_the_ensemble_or_is_erased_and_the_rest_of_the_organ_stays(ursam, oblique_scene):
    scene, ct_node, prompts, _ = oblique_scene
    logic = in_process_logic(ursam)
    outputs = logic.process(ursam.URSAMRequest(ct_node, promptNode=prompts, settings=Settings(num_aug=5, ratio=0.1)))

    def organ_of(region):
        organ = next(o for o in outputs.result.organs if o.name == region.organ)
        key = next(o.key for o in outputs.organs if o.label == organ.label)
        return organ, mrml_outputs.ursam_segments(outputs.segmentation, "rectified")[key]

    def whole(organ, crop):
        volume = np.zeros(outputs.result.shape, bool)
        volume[organ.region] = crop
        return volume

    # a region where the rectification and the ensemble decided differently, and the organ keeps voxels
    region = next(r for r in outputs.regions
                  if (lambda o: (o.mask != o.ensemble_mask)[regions.region_mask(o, r)].any())(organ_of(r)[0]))
    organ, segment = organ_of(region)

    def axial():
        return outputs.frame.to_axial(mrml.segment_mask(outputs.segmentation, segment, ct_node))

    before = axial()
    inside = whole(organ, regions.region_mask(organ, region))
    assert inside.sum() == region.voxels
    ensemble = whole(organ, organ.ensemble_mask)
    logic.decideRegion(outputs, region, "ensemble")
    after = axial()
    assert np.array_equal(after[inside], ensemble[inside]) and np.array_equal(after[~inside], before[~inside])
    assert not np.array_equal(after, before)
    assert logic.editedOrgans(outputs) == [organ.name]  # a re-rectification would ask before replacing it
    logic.decideRegion(outputs, region, "erase")
    after = axial()
    assert not after[inside].any() and np.array_equal(after[~inside], before[~inside])
    logic.decideRegion(outputs, region, "rectified")
    assert np.array_equal(axial(), before)
    with pytest.raises(ValueError, match="decision"):
        logic.decideRegion(outputs, region, "both")


def test_cancelled_and_failed_runs_leave_the_scene_exactly_as_it_was(ursam, oblique_scene):
    scene, ct_node, prompts, _ = oblique_scene
    before = scene_snapshot(scene)
    logic = ursam.URSAMLogic()
    logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:slow_loader")
    job = logic.start(logic.prepare(ursam.URSAMRequest(ct_node, promptNode=prompts)))
    assert job.poll().state == "running"
    job.cancel()
    assert job.poll().state == "cancelled" and not job.folder.exists()
    assert scene_snapshot(scene) == before

    logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:failing_loader")
    with pytest.raises(URSAMError, match="does not exist"):
        logic.process(ursam.URSAMRequest(ct_node, promptNode=prompts, checkpoint="/nowhere/x.pth"))
    assert scene_snapshot(scene) == before


def test_bad_inputs_are_one_line_user_errors(ursam, oblique_scene, abdomen):
    scene, ct_node, prompts, _ = oblique_scene
    logic = in_process_logic(ursam)
    Request = ursam.URSAMRequest
    cases = [
        (Request(None, promptNode=prompts), "Select the input CT"),
        (Request(ct_node, promptNode=None), "Select the prompt segmentation"),
        (Request(ct_node, promptSource="template"), "Choose a template folder"),
        (Request(ct_node, promptSource="template", templateFolder=str(abdomen)), "not an URSAM template"),
        (Request(ct_node, promptSource="sceneTemplate"), "Add a support first"),
        (Request(ct_node, promptSource="region"), "Choose a built-in template under Organ set"),
        (Request(ct_node, promptSource="region", region="thorax"), "Unknown region 'thorax'.*head-and-neck"),
        (Request(ct_node, promptSource="region", region="abdomen", localizer="guess"), "Unknown localizer 'guess'"),
        (Request(ct_node, promptSource="region", region="abdomen", organLabels=[]), "No organ is chosen"),
        (Request(ct_node, promptNode=prompts, organLabels=[]), "No organ is chosen"),
        (Request(ct_node, promptNode=prompts, settings=Settings(num_aug=0)), "augmented prompts"),
    ]
    labels_node = load_volume(scene, abdomen / "labels_small.nii.gz", "other grid", labelmap=True)
    cases.append((Request(ct_node, promptSource="labelmap", promptNode=labels_node), "another grid"))
    cases.append((Request(labels_node, promptNode=prompts), "not a grey-scale volume"))
    constant = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "flat")
    constant.CopyOrientation(ct_node)
    import vtk

    image = vtk.vtkImageData()
    image.SetDimensions(ct_node.GetImageData().GetDimensions())
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    image.GetPointData().GetScalars().Fill(0)
    constant.SetAndObserveImageData(image)
    cases.append((Request(constant, promptNode=prompts), "is constant"))
    before = scene_snapshot(scene)
    for request, message in cases:
        with pytest.raises(URSAMError, match=message) as error:
            logic.process(request)
        assert "\n" not in str(error.value)
    assert scene_snapshot(scene) == before


def test_heatmap_overlay_and_centring_on_uncertain_regions(ursam, oblique_scene):
    scene, ct_node, prompts, _ = oblique_scene
    views = add_slice_views(scene)
    logic = in_process_logic(ursam)
    outputs = logic.process(ursam.URSAMRequest(ct_node, promptNode=prompts, settings=Settings(num_aug=5, ratio=0.1)))
    logic.showResults(outputs, 0.4, showEnsemble=True)
    for _, composite in views:
        assert composite.GetBackgroundVolumeID() == ct_node.GetID()
        assert composite.GetForegroundVolumeID() == outputs.uncertainty.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    assert outputs.ensemble.GetDisplayNode().GetVisibility()
    logic.setHeatmapOpacity(outputs, 0.9)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.9) for _, c in views)

    region = outputs.regions[0]
    ras = logic.centreOn(outputs, region.centre)
    # the region's centre is an uncertain voxel, and every slice view now passes through it
    organ = next(o for o in outputs.result.organs if o.label == region.label)
    local = np.array(region.centre) - [s.start for s in organ.region]
    assert organ.rectification.uncertain[tuple(local)]
    heat = mrml.voxel_array(outputs.uncertainty)
    ijk = outputs.frame.index_to_stored(np.array(region.centre))
    assert heat[tuple(ijk[::-1].astype(int))] > organ.rectification.threshold
    for slice_node, _ in views:
        to_ras = slice_node.GetSliceToRAS()
        assert np.allclose([to_ras.GetElement(r, 3) for r in range(3)], ras)


@pytest.mark.subprocess
def test_a_result_for_a_ct_removed_meanwhile_writes_nothing(ursam, oblique_scene):
    scene, ct_node, prompts, _ = oblique_scene
    logic = in_process_logic(ursam)
    request = ursam.URSAMRequest(ct_node, promptNode=prompts)
    prepared = logic.prepare(request)
    job = logic.start(prepared)
    scene.RemoveNode(ct_node)  # while the background process computed
    before = scene_snapshot(scene)
    with pytest.raises(URSAMError, match="removed from the scene"):
        logic.apply(prepared, job.result())
    assert scene_snapshot(scene) == before


# ---------------------------------------------------------------------------------------
# Prompts that do not fit the CT's grid

def segmentation_holding(scene, name: str, mask: np.ndarray, ijk_to_ras: np.ndarray, offset_kji=(0, 0, 0)):
    """A segmentation whose one segment ('Liver') is ``mask`` ``[k, j, i]`` stored as is, on the grid of
    ``ijk_to_ras`` starting at voxel index ``offset_kji`` (which may lie outside any volume), as a
    segment drawn on another, longer series is stored."""
    import slicer
    from vtk.util import numpy_support

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    image = slicer.vtkOrientedImageData()
    k0, j0, i0 = offset_kji
    image.SetExtent(i0, i0 + mask.shape[2] - 1, j0, j0 + mask.shape[1] - 1, k0, k0 + mask.shape[0] - 1)
    image.SetImageToWorldMatrix(mrml._vtk_matrix(ijk_to_ras))
    image.AllocateScalars(vtk_type_uchar(), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    node.GetSegmentation().AddEmptySegment("liver", "Liver")
    node.GetSegmentation().GetSegment("liver").AddRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), image)
    return node


def vtk_type_uchar():
    import vtk

    return vtk.VTK_UNSIGNED_CHAR


def test_a_prompt_extending_past_the_ct_prompts_the_slices_the_ct_has(ursam, oblique_scene):
    scene, ct_node, _, _ = oblique_scene
    shape = mrml.node_shape(ct_node)  # (6, 40, 48)
    matrix = mrml.ijk_to_ras(ct_node)
    # drawn on the same grid, but on a longer series: 3 slices below and 4 above the CT, wider in-plane
    longer = np.zeros((shape[0] + 7, shape[1] + 10, shape[2] + 10), bool)
    longer[:, 10:30, 10:35] = True
    prompts = segmentation_holding(scene, "Longer series", longer, matrix, offset_kji=(-3, -5, -5))
    expected = np.zeros(shape, bool)
    expected[:, 5:25, 5:30] = True
    assert np.array_equal(mrml.segment_mask(prompts, "liver", ct_node), expected)
    # drawn on a grid of half the CT's slice spacing, reaching past both ends of the CT
    finer = matrix.copy()
    finer[:3, 2] /= 2
    fine = np.zeros((2 * shape[0] + 10, shape[1], shape[2]), bool)
    fine[:, 10:25, 12:30] = True
    fine_prompts = segmentation_holding(scene, "Finer series", fine, finer, offset_kji=(-5, 0, 0))
    expected = np.zeros(shape, bool)
    expected[:, 10:25, 12:30] = True
    assert np.array_equal(mrml.segment_mask(fine_prompts, "liver", ct_node), expected)
    outputs = in_process_logic(ursam).process(ursam.URSAMRequest(ct_node, promptNode=prompts,
                                                                 settings=Settings(num_aug=3, ratio=0.0)))
    assert [organ.name for organ in outputs.organs] == ["Liver"]
    assert sorted(outputs.result.organs[0].boxes) == list(range(shape[0]))  # every slice of the CT, no more


def translation_node(scene, shift_ras):
    """A linear transform node translating by ``shift_ras`` (mm)."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        matrix.SetElement(row, 3, float(shift_ras[row]))
    node.SetMatrixTransformToParent(matrix)
    return node


def test_prompts_are_read_where_the_user_sees_them_through_parent_transforms(ursam, oblique_scene):
    scene, ct_node, _, _ = oblique_scene
    shape = mrml.node_shape(ct_node)
    matrix = mrml.ijk_to_ras(ct_node)
    mask = np.zeros(shape, bool)
    mask[1:5, 10:20, 10:20] = True
    prompts = segmentation_holding(scene, "Moved prompts", mask, matrix)
    moved = translation_node(scene, 3 * matrix[:3, 0])  # three columns along i
    prompts.SetAndObserveTransformNodeID(moved.GetID())
    shifted = np.zeros(shape, bool)
    shifted[1:5, 10:20, 13:23] = True
    assert np.array_equal(mrml.segment_mask(prompts, "liver", ct_node), shifted)
    ct_node.SetAndObserveTransformNodeID(moved.GetID())  # both moved alike: the prompt sits where it was drawn
    assert np.array_equal(mrml.segment_mask(prompts, "liver", ct_node), mask)
    # the views are centred where the CT is shown, through its transform
    outputs = in_process_logic(ursam).process(ursam.URSAMRequest(ct_node, promptNode=prompts,
                                                                 settings=Settings(num_aug=3, ratio=0.05)))
    assert outputs.segmentation.GetTransformNodeID() == moved.GetID()
    centre = (2, 14, 14)
    ras = ursam.URSAMLogic().centreOn(outputs, centre)
    ijk = outputs.frame.index_to_stored(np.array(centre, float))
    assert np.allclose(ras, (matrix @ np.append(ijk, 1))[:3] + 3 * matrix[:3, 0])


def test_a_label_map_under_another_transform_prompts_where_the_user_sees_it(ursam, oblique_scene):
    """As segments do: the labels are resampled onto the CT through both parent transforms."""
    import slicer

    scene, ct_node, prompts, _ = oblique_scene
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Labels")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(prompts, label_node, ct_node)
    logic = in_process_logic(ursam)
    request = ursam.URSAMRequest(ct_node, promptSource="labelmap", promptNode=label_node)
    before = {p.name: p.boxes for p in logic.prepare(request).job.prompts}
    matrix = mrml.ijk_to_ras(ct_node)
    moved = translation_node(scene, 3 * matrix[:3, 0])  # three columns along i: x + 3 in the axial frame
    label_node.SetAndObserveTransformNodeID(moved.GetID())
    labels = mrml.label_map_on_volume(label_node, ct_node)
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1, 2}
    after = {p.name: p.boxes for p in logic.prepare(request).job.prompts}
    assert before.keys() == after.keys() == {"Liver", "Gallbladder"}
    for name in before:
        assert before[name].keys() == after[name].keys()
        for z, box in before[name].items():
            for shift in after[name][z] - box:  # per part (x0, y0, x1, y1), columns are x; a flipped axis
                # moves the other way
                assert abs(shift[0]) == 3 and shift[0] == shift[2] and shift[1] == shift[3] == 0, (name, z, shift)
    ct_node.SetAndObserveTransformNodeID(moved.GetID())  # both moved alike: read exactly as drawn
    again = {p.name: p.boxes for p in logic.prepare(request).job.prompts}
    assert all(np.array_equal(again[n][z], before[n][z]) for n in before for z in before[n])


def test_the_ensemble_is_drawn_in_its_own_colours_as_outlines(ursam, oblique_scene):
    scene, ct_node, prompts, _ = oblique_scene
    outputs = in_process_logic(ursam).process(ursam.URSAMRequest(ct_node, promptNode=prompts))
    rectified = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")
    ensemble = mrml_outputs.ursam_segments(outputs.ensemble, "ensemble")
    assert rectified.keys() == ensemble.keys() == {"liver", "gallbladder"}
    colours = set()
    for key in rectified:
        ours = np.array(outputs.segmentation.GetSegmentation().GetSegment(rectified[key]).GetColor())
        pale = np.array(outputs.ensemble.GetSegmentation().GetSegment(ensemble[key]).GetColor())
        assert np.abs(ours - pale).max() > 0.2 and (pale >= ours).all()  # a paler tint of the organ's colour
        colours |= {tuple(ours), tuple(pale)}
    assert len(colours) == 4
    display = outputs.ensemble.GetDisplayNode()
    assert not display.GetVisibility2DFill() and display.GetVisibility2DOutline()
    assert outputs.segmentation.GetDisplayNode().GetVisibility2DFill()


def test_the_heatmap_is_drawn_over_the_ct_in_a_slice_view_rendered_by_slicers_slice_logic(ursam, oblique_scene):
    from slicer_scene import rendered_slice, slice_pixel_of_ras

    scene, ct_node, prompts, _ = oblique_scene
    [(slice_node, _)] = add_slice_views(scene, names=("Red",))
    logic = in_process_logic(ursam)
    outputs = logic.process(ursam.URSAMRequest(ct_node, promptNode=prompts, settings=Settings(num_aug=5, ratio=0.1)))
    logic.showResults(outputs, 1.0, showEnsemble=False)
    heat = mrml.voxel_array(outputs.uncertainty)
    # a voxel of middling uncertainty, whose colour in the heat table is a clear red-orange
    middling = np.argwhere((heat > 0.25) & (heat < 0.4))
    assert len(middling)
    hottest = tuple(middling[len(middling) // 2])  # (k, j, i)
    ras = (mrml.ijk_to_ras(ct_node) @ np.append(np.array(hottest[::-1], float), 1.0))[:3]
    slice_node.SetFieldOfView(60.0, 60.0, 2.5)
    slice_node.JumpSliceByCentering(*ras)
    row, column = slice_pixel_of_ras(scene, "Red", ras)
    pixels = rendered_slice(scene, "Red").astype(int)
    red, green, blue = pixels[row, column, :3]
    assert red > 200 and red > green + 60 and blue < 80  # heat red, not the grey CT (R = G = B)
    # a certain voxel of the same slice shows the CT through the transparent heatmap: grey
    certain = np.argwhere(heat[hottest[0]] <= mrml.OVERLAY_THRESHOLD)
    far = certain[np.argmax(((certain - hottest[1:]) ** 2).sum(axis=1))]
    ras_far = (mrml.ijk_to_ras(ct_node) @ np.array([far[1], far[0], hottest[0], 1.0]))[:3]
    row, column = slice_pixel_of_ras(scene, "Red", ras_far)
    if 0 <= row < pixels.shape[0] and 0 <= column < pixels.shape[1]:
        r, g, b = pixels[row, column, :3]
        assert r == g == b
    logic.setHeatmapOpacity(outputs, 0.0)  # no heatmap: the CT alone, grey everywhere
    assert (np.ptp(rendered_slice(scene, "Red")[..., :3].astype(int), axis=2) == 0).all()
