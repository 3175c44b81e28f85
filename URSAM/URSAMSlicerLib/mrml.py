"""Between MRML nodes and URSAMLib's arrays: volumes, prompts from the scene, and the result nodes.

Coordinates. A volume node stores voxels as a VTK image with index axes (i, j, k) and an
IJK-to-RAS matrix; ``arrayFromVolume``-style numpy views of it are ``[k, j, i]``. SimpleITK and
URSAMLib use the same ``[k, j, i]`` voxel order but LPS physical coordinates, so a volume node
becomes a SimpleITK image by negating the first two rows of its matrix — voxels are never
resampled. URSAMLib then works on its axial array ``[z, y, x]`` (:class:`URSAMLib.io.AxialFrame`),
and :meth:`AxialFrame.from_axial` brings results back to ``[k, j, i]``, which are written with the
input's own IJK-to-RAS matrix: every output voxel is an input voxel.

Nothing here reads the GUI; everything takes the scene or nodes as arguments, so it works
in Slicer and on a bare ``vtkMRMLScene`` (slicer-core) alike.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from URSAMLib.errors import URSAMError
from URSAMLib.io import AxialFrame
from URSAMLib.uncertainty import MAX_ENTROPY

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

TAG_ORGAN = "URSAM.Organ"
"""Segment tag naming the organ a URSAM segment holds; segments without it belong to the user."""
TAG_OUTPUT = "URSAM.Output"
"""Segment tag: ``rectified`` or ``ensemble``."""
REFERENCE_ENSEMBLE = "URSAM.Ensemble"
"""Node reference from the rectified segmentation to its ensemble segmentation."""
REFERENCE_UNCERTAINTY = "URSAM.Uncertainty"
"""Node reference from the rectified segmentation to its uncertainty volume."""
REFERENCE_INPUT = "URSAM.Input"
"""Node reference from the rectified segmentation to the CT it segments: outputs belong to one CT."""
HEAT_COLOR_NODE_NAME = "URSAM uncertainty heat"
OVERLAY_THRESHOLD = 0.01
"""Uncertainty (nats) at and below which the heatmap is transparent, so certain tissue is not tinted."""


# ---------------------------------------------------------------------------------------
# Volumes

def ijk_to_ras(node) -> np.ndarray:
    """A volume node's IJK-to-RAS matrix, 4 x 4 (parent transforms not included)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def voxel_array(node) -> np.ndarray:
    """The voxels of a scalar or label map volume node as a numpy **view** ``[k, j, i]``."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        name = node.GetName() if node is not None else "The volume"
        raise URSAMError(f"{name} has no voxels; load the image again.")
    if image.GetNumberOfScalarComponents() != 1:
        raise URSAMError(f"{node.GetName()} has {image.GetNumberOfScalarComponents()} values per voxel; "
                         "select a grey-scale CT volume, not a colour or vector image.")
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])


def image_from_volume_node(node) -> sitk.Image:
    """A SimpleITK image (LPS) with a copy of the node's voxels and exactly its geometry."""
    image = sitk.GetImageFromArray(np.array(voxel_array(node)))
    _set_node_geometry(image, node)
    return image


def _set_node_geometry(image: sitk.Image, node) -> None:
    """Give a SimpleITK image of the node's voxel array the node's spacing, direction and origin (LPS)."""
    matrix = ijk_to_ras(node)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((LPS_FROM_RAS @ (matrix[:3, :3] / spacing)).ravel().tolist())
    image.SetOrigin((LPS_FROM_RAS @ matrix[:3, 3]).tolist())


def geometry_image(node) -> slicer.vtkOrientedImageData:
    """An oriented image with the volume node's extent and IJK-to-RAS matrix and no voxels:
    the reference geometry segments are resampled onto."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(node.GetImageData().GetExtent())
    image.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras(node)))
    return image


def ras_of_axial_index(zyx, frame: AxialFrame, node) -> np.ndarray:
    """World RAS position (mm) of an axial voxel index ``(z, y, x)`` of ``node``'s axial frame, where
    the views show it: through the node's parent transforms."""
    ijk = frame.index_to_stored(np.asarray(zyx, dtype=float))
    ras = (ijk_to_ras(node) @ np.append(ijk, 1.0))[:3]
    parent = node.GetParentTransformNode()
    if parent is None:
        return ras
    to_world = vtk.vtkGeneralTransform()
    parent.GetTransformToWorld(to_world)
    return np.array(to_world.TransformPoint(*(float(v) for v in ras)))


# ---------------------------------------------------------------------------------------
# Prompts from the scene

def prompt_segments(segmentation_node) -> list[tuple[str, str]]:
    """``(segment id, name)`` of the segments the user made (URSAM's own segments excluded)."""
    segmentation = segmentation_node.GetSegmentation()
    segments = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        if not segment.HasTag(TAG_ORGAN):
            segments.append((segment_id, segment.GetName()))
    return segments


def segment_terminology(segmentation_node, segment_id: str) -> str:
    """A segment's serialized terminology entry ('' if none)."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    value = vtk.reference("")
    return str(value) if segment.GetTag(segment.GetTerminologyEntryTagName(), value) else ""


def segment_color(segmentation_node, segment_id: str) -> tuple[float, float, float]:
    return tuple(segmentation_node.GetSegmentation().GetSegment(segment_id).GetColor())


def segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """A segment's voxels on ``volume_node``'s grid, bool ``[k, j, i]`` of exactly the volume's shape.

    When the segmentation was drawn on this volume the voxels are copied exactly; otherwise
    they are resampled (nearest neighbour) onto it, through the parent transforms of both nodes
    (the segmentation as the user sees it on the volume). The parts of the segment outside the
    volume are dropped: a prompt drawn on a longer series prompts only the slices this CT has.
    """
    if not segmentation_node.GetSegmentation().ContainsRepresentation(
            slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()):
        raise URSAMError(f"{segmentation_node.GetName()} holds no binary labelmaps; open it in the Segment "
                         "Editor (which converts it) or choose another prompt segmentation.")
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    shape = node_shape(volume_node)
    if labelmap.GetPointData().GetScalars() is None or labelmap.IsEmpty():
        return np.zeros(shape, bool)
    resampled = slicer.vtkOrientedImageData()
    reference = geometry_image(volume_node)
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, reference, resampled, False, False, relative_transform(segmentation_node, volume_node))
    return _on_extent(resampled, reference.GetExtent()) > 0


def _on_extent(image, extent) -> np.ndarray:
    """An image's voxels ``[k, j, i]`` cut or zero-padded to ``extent`` (both on one grid): VTK's
    resampling may return the union of the input's and the reference's extents."""
    have = image.GetExtent()
    shape = tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in (2, 1, 0))
    out = np.zeros(shape, np.uint8)
    if image.GetPointData().GetScalars() is None:
        return out
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
        tuple(have[2 * a + 1] - have[2 * a] + 1 for a in (2, 1, 0)))
    source, target = [], []
    for axis in (2, 1, 0):  # k, j, i
        low, high = max(have[2 * axis], extent[2 * axis]), min(have[2 * axis + 1], extent[2 * axis + 1])
        if low > high:
            return out  # no overlap
        source.append(slice(low - have[2 * axis], high - have[2 * axis] + 1))
        target.append(slice(low - extent[2 * axis], high - extent[2 * axis] + 1))
    out[tuple(target)] = values[tuple(source)] != 0
    return out


def relative_transform(node, reference_node):
    """The transform from ``node``'s coordinates to ``reference_node``'s (their parent transforms
    composed), or None when both are under the same parent transform (or none)."""
    if node.GetTransformNodeID() == reference_node.GetTransformNodeID():
        return None
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node.GetParentTransformNode(),
                                                         reference_node.GetParentTransformNode(), transform)
    return transform


def label_image_from_segments(segmentation_node, segment_labels: dict[str, int], volume_node) -> sitk.Image:
    """A label map (uint16) on ``volume_node``'s grid, in LPS like :func:`image_from_volume_node`:
    each segment of ``segment_labels`` (segment id → label value) written with its value. Raises
    URSAMError naming a segment that has no voxels on the volume."""
    labels = np.zeros(node_shape(volume_node), np.uint16)
    for segment_id, value in segment_labels.items():
        mask = segment_mask(segmentation_node, segment_id, volume_node)
        if not mask.any():
            name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
            raise URSAMError(f"Segment {name} of {segmentation_node.GetName()} has no voxels on "
                             f"{volume_node.GetName()}; draw it there, or choose the volume it was drawn on.")
        labels[mask] = value
    image = sitk.GetImageFromArray(labels)
    _set_node_geometry(image, volume_node)
    return image


def node_shape(volume_node) -> tuple[int, int, int]:
    """Voxel array shape ``(k, j, i)`` of a volume node."""
    return tuple(volume_node.GetImageData().GetDimensions()[::-1])


GENERIC_COLOR_TABLES = ("GenericAnatomyColors", "GenericColors", "vtkMRMLColorTableNodeLabels",
                        "vtkMRMLColorTableNodeRandom")
"""Colour tables Slicer gives any label map by default: their names ("tissue", "bone", ...) do not
say what the labels of this map are, so they are not used as organ names."""


def color_names(labelmap_node, values) -> dict[int, str]:
    """Names the label map's colour table gives to label ``values`` (empty names, and the names of
    Slicer's generic default tables, skipped)."""
    display = labelmap_node.GetDisplayNode()
    color_node = display.GetColorNode() if display is not None else None
    if color_node is not None and any(generic in (color_node.GetID() or "") for generic in GENERIC_COLOR_TABLES):
        return {}
    names = {}
    for value in values:
        name = color_node.GetColorName(int(value)) if color_node is not None else ""
        if name and name.lower() not in ("(none)", "background"):
            names[int(value)] = name
    return names


def label_color(labelmap_node, value: int) -> tuple[float, float, float] | None:
    display = labelmap_node.GetDisplayNode()
    color_node = display.GetColorNode() if display is not None else None
    if color_node is None or value >= color_node.GetNumberOfColors():
        return None
    rgba = [0.0, 0.0, 0.0, 0.0]
    color_node.GetColor(int(value), rgba)
    return tuple(rgba[:3])


# ---------------------------------------------------------------------------------------
# Results

@dataclass(frozen=True)
class OrganOutput:
    """How one organ appears as a segment."""

    label: int
    """The label value of the organ in URSAMLib's label maps."""
    key: str
    """Identifies the organ across runs: the catalogue key, or the prompt's name."""
    name: str
    color: tuple[float, float, float]
    terminology: str = ""
    """Serialized Slicer terminology entry ('' to leave Slicer's default)."""


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


def write_organ_segments(segmentation_node, labels: np.ndarray, organs: list[OrganOutput], volume_node,
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
    return not (ursam_segments(segmentation_node, "rectified") or segmentation_node.GetNodeReference(REFERENCE_ENSEMBLE))


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
