"""URSAM's result nodes in the scene: the organs' segments (rectified and ensemble), the uncertainty
volume and its heatmap overlay, surfaces, and centring the views. Coordinates as in
:mod:`URSAMSlicerLib.mrml`: every output voxel is a voxel of the input CT.

Nothing here reads the GUI; everything takes the scene or nodes as arguments.
"""
from __future__ import annotations

import hashlib

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from URSAMLib.catalogue import OrganLook
from URSAMLib.uncertainty import MAX_ENTROPY
from URSAMSlicerLib.mrml import (HEAT_COLOR_NODE_NAME, OVERLAY_THRESHOLD, REFERENCE_ENSEMBLE, REFERENCE_INPUT,
                                 TAG_ORGAN, TAG_OUTPUT, _vtk_matrix, ijk_to_ras, segment_mask)


# ---------------------------------------------------------------------------------------
# Results

def _mask_image(mask: np.ndarray, matrix: np.ndarray) -> tuple[slicer.vtkOrientedImageData, list[int]]:
    """The bounding box of a ``[k, j, i]`` mask as an oriented image (uint8, 0/1) and its extent."""
    present = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(p) == 0 for p in present):
        box = [slice(0, 1)] * 3
    else:
        box = [slice(int(p[0]), int(p[-1]) + 1) for p in present]
    crop = np.ascontiguousarray(mask[tuple(box)], dtype=np.uint8)
    extent = [box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1]
    image = slicer.vtkOrientedImageData()
    image.SetExtent(extent)
    image.SetImageToWorldMatrix(_vtk_matrix(matrix))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = crop.ravel()
    return image, extent


def ursam_segments(segmentation_node, output: str) -> dict[str, str]:
    """``{organ key: segment id}`` of URSAM's segments of one output kind in a segmentation."""
    segmentation = segmentation_node.GetSegmentation()
    found = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        organ, kind = vtk.reference(""), vtk.reference("")
        if segment.GetTag(TAG_ORGAN, organ) and segment.GetTag(TAG_OUTPUT, kind) and str(kind) == output:
            found[str(organ)] = segment_id
    return found


def write_organ_segments(segmentation_node, labels: np.ndarray, organs: list[OrganLook], volume_node,
                         output: str) -> dict[int, str]:
    """Write each organ of a label map ``[k, j, i]`` (on ``volume_node``'s grid) into its URSAM segment.

    An organ's segment from an earlier run (same organ key and output kind) is overwritten; a
    missing one is created with the organ's name, colour and terminology. Segments without
    URSAM's tags — the user's — are never read or written. Returns ``{label: segment id}``.
    """
    segmentation = segmentation_node.GetSegmentation()
    existing = ursam_segments(segmentation_node, output)
    matrix = ijk_to_ras(volume_node)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    written = {}
    for organ in organs:
        segment_id = existing.get(organ.key)
        if segment_id is None:
            segment_id = segmentation.GenerateUniqueSegmentID(f"URSAM_{output}_{organ.key}")
            segmentation.AddEmptySegment(segment_id, organ.name, list(organ.color))
            segment = segmentation.GetSegment(segment_id)
            segment.SetTag(TAG_ORGAN, organ.key)
            segment.SetTag(TAG_OUTPUT, output)
            if organ.terminology:
                segment.SetTag(segment.GetTerminologyEntryTagName(), organ.terminology)
        mask = labels == organ.label
        image, extent = _mask_image(mask, matrix)
        if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE, extent):
            raise RuntimeError(f"Could not write the {organ.name} segment")
        written[organ.label] = segment_id
    return written


def segment_digests(segmentation_node, segment_ids, volume_node) -> dict[str, str]:
    """A fingerprint of each segment's voxels on ``volume_node``'s grid, ``{segment id: digest}``:
    equal digests mean unchanged voxels (segments sharing a labelmap layer change one another's
    modification time, so times cannot tell)."""
    digests = {}
    for segment_id in segment_ids:
        if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            digests[segment_id] = ""  # deleted by the user
            continue
        mask = segment_mask(segmentation_node, segment_id, volume_node)
        digests[segment_id] = hashlib.sha1(np.packbits(mask).tobytes()).hexdigest()
    return digests


ENSEMBLE_TINT = 0.55
"""How far the ensemble's colours are moved towards white, so that they differ from the rectified ones."""


def ensemble_color(color) -> tuple[float, float, float]:
    """The ensemble segment's colour for an organ of ``color`` (RGB in [0, 1]): a pale tint of it."""
    return tuple(float(c + (1.0 - c) * ENSEMBLE_TINT) for c in color)


def style_as_ensemble(segmentation_node) -> None:
    """Show a segmentation as outlines only in the slice views, so that the ensemble drawn over the
    rectified segments leaves them visible and is told apart from them."""
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility2DFill(False)
        display.SetVisibility2DOutline(True)


def new_segmentation(scene, name: str, volume_node):
    """A segmentation node referenced to ``volume_node``'s geometry, with a display node."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    follow_transform(node, volume_node)
    return node


def outputs_belong_to(segmentation_node, volume_node) -> bool:
    """True when ``segmentation_node`` may receive URSAM's results for ``volume_node``: it was made
    for that CT, or it is a segmentation of the user's that URSAM has not written into yet."""
    source = segmentation_node.GetNodeReference(REFERENCE_INPUT)
    if source is not None:
        return source.GetID() == volume_node.GetID()
    return not (ursam_segments(segmentation_node, "rectified")
                or segmentation_node.GetNodeReference(REFERENCE_ENSEMBLE))


def outputs_of(scene, volume_node):
    """The segmentation holding URSAM's results for ``volume_node`` (the most recent), or None."""
    found = None
    for node in _nodes(scene, "vtkMRMLSegmentationNode"):
        source = node.GetNodeReference(REFERENCE_INPUT)
        if source is not None and source.GetID() == volume_node.GetID():
            found = node
    return found


def follow_transform(node, volume_node) -> None:
    """Put ``node`` under the volume's parent transform, so that it stays on the volume's voxels."""
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())


def heat_color_node(scene):
    """A black-red-yellow-white colour table for the uncertainty heatmap (created once per scene)."""
    node = scene.GetFirstNodeByName(HEAT_COLOR_NODE_NAME)
    if node is not None and node.IsA("vtkMRMLColorTableNode"):
        return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEAT_COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for index, t in enumerate(np.linspace(0.0, 1.0, 256)):
        node.SetColor(index, float(np.clip(3 * t, 0, 1)), float(np.clip(3 * t - 1, 0, 1)),
                      float(np.clip(3 * t - 2, 0, 1)), 1.0)
    return node


def write_uncertainty_volume(scene, node, name: str, uncertainty: np.ndarray, volume_node):
    """Put the uncertainty ``[k, j, i]`` (float32, nats) in a scalar volume on ``volume_node``'s grid,
    shown with the heat colour table from 0 to ln 2, transparent where nearly certain.
    ``node`` None creates the volume. Returns the node."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    image = vtk.vtkImageData()
    image.SetDimensions(volume_node.GetImageData().GetDimensions())
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = \
        np.ascontiguousarray(uncertainty, dtype=np.float32).ravel()
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(volume_node)))
    node.SetAndObserveImageData(image)
    follow_transform(node, volume_node)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heat_color_node(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, MAX_ENTROPY)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(OVERLAY_THRESHOLD)
    display.SetUpperThreshold(1.0)
    return node


def place_beside(node, reference_node) -> None:
    """Put ``node`` in the subject hierarchy folder (e.g. the DICOM study) that holds ``reference_node``."""
    scene = node.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        return  # the reference is in no hierarchy (e.g. a bare scene): nothing to follow
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def show_surfaces(segmentation_node, visible: bool) -> None:
    """Show (building them once) or hide a segmentation's closed surfaces in the 3D views."""
    display = segmentation_node.GetDisplayNode()
    if visible:
        segmentation_node.CreateClosedSurfaceRepresentation()
    if display is not None:
        display.SetVisibility3D(bool(visible))


def set_segmentation_visible(segmentation_node, visible: bool) -> None:
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility(bool(visible))


# ---------------------------------------------------------------------------------------
# Views

def show_overlay(scene, background_node, overlay_node, opacity: float) -> None:
    """Show the volume in every slice view with the heatmap as foreground at ``opacity``."""
    for composite in _nodes(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(overlay_node.GetID())
        composite.SetForegroundOpacity(float(opacity))


def set_overlay_opacity(scene, overlay_node, opacity: float) -> None:
    """Change the heatmap's opacity in the slice views that show it."""
    for composite in _nodes(scene, "vtkMRMLSliceCompositeNode"):
        if composite.GetForegroundVolumeID() == overlay_node.GetID():
            composite.SetForegroundOpacity(float(opacity))


def centre_slice_views(scene, ras) -> None:
    """Move every slice view so that it passes through and is centred on ``ras`` (mm)."""
    for slice_node in _nodes(scene, "vtkMRMLSliceNode"):
        slice_node.JumpSliceByCentering(*(float(v) for v in ras))


def _nodes(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]
