"""Between MRML nodes and URSAMLib's arrays: volumes and prompts from the scene (the result nodes:
:mod:`URSAMSlicerLib.mrml_outputs`).

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


import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from URSAMLib.errors import URSAMError
from URSAMLib.io import AxialFrame

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


def _on_extent(image, extent, dtype=np.uint8) -> np.ndarray:
    """An image's voxels ``[k, j, i]`` cut or zero-padded to ``extent`` (both on one grid): VTK's
    resampling may return the union of the input's and the reference's extents. ``np.uint8``: 1
    where the image is not 0; another dtype: the values."""
    have = image.GetExtent()
    shape = tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in (2, 1, 0))
    out = np.zeros(shape, dtype)
    if image.GetPointData().GetScalars() is None:
        return out
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
        tuple(have[2 * a + 1] - have[2 * a] + 1 for a in (2, 1, 0)))
    if dtype == np.uint8:
        values = values != 0
    source, target = [], []
    for axis in (2, 1, 0):  # k, j, i
        low, high = max(have[2 * axis], extent[2 * axis]), min(have[2 * axis + 1], extent[2 * axis + 1])
        if low > high:
            return out  # no overlap
        source.append(slice(low - have[2 * axis], high - have[2 * axis] + 1))
        target.append(slice(low - extent[2 * axis], high - extent[2 * axis] + 1))
    out[tuple(target)] = values[tuple(source)]
    return out


def label_map_on_volume(labelmap_node, volume_node) -> np.ndarray:
    """A label map volume's values on ``volume_node``'s grid, uint16 ``[k, j, i]`` of the volume's
    shape: resampled (nearest neighbour) through the parent transforms of both nodes, i.e. where
    the user sees the labels on the CT. Labels outside the CT are dropped."""
    labels = slicer.vtkOrientedImageData()
    labels.ShallowCopy(labelmap_node.GetImageData())
    labels.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras(labelmap_node)))
    reference = geometry_image(volume_node)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labels, reference, resampled, False, False, relative_transform(labelmap_node, volume_node))
    return _on_extent(resampled, reference.GetExtent(), np.uint16)


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
