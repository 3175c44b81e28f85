"""Real MRML scenes for the Slicer-module tests, from PyPI's slicer-core (no Slicer application).

slicer-core holds Slicer's MRML and logic libraries without Qt. What the application would do
at start-up is done here by hand: registering the segmentation converter rules (without them a
segmentation cannot even hold an empty binary labelmap) and loading volumes through Slicer's own
readers (vtkSlicerVolumesLogic), so that the geometry under test is Slicer's, not ours.
"""
from __future__ import annotations

import importlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest



def require(module: str):
    """Import a test dependency (slicer-core, PySide6); skip when it is missing or its system libraries
    are (see .ci/qt_system_libs.py), but fail in CI (URSAM_REQUIRE_DATA=1), where every test must run."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if os.environ.get("URSAM_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{module} cannot be imported ({error}); run 'pip install -e .[test]' and "
                    "'python .ci/qt_system_libs.py'")


@lru_cache(maxsize=None)
def register_converter_rules() -> None:
    slicer = require("slicer")
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


_LOGICS: dict[int, dict] = {}
"""Per scene (by id): the logics made for it, kept alive as long as the test needs them."""


def new_scene():
    """An empty scene as the application sets it up: converter rules registered, and Slicer's
    application logic with the colour logic (which adds Slicer's built-in colour tables)."""
    slicer = require("slicer")
    register_converter_rules()
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    application.SetMRMLScene(scene)
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)
    _LOGICS[id(scene)] = {"application": application, "colors": colors}
    return scene


def release_logics() -> None:
    """Disconnect and drop every logic made by :func:`new_scene` and :func:`add_slice_views`, slice
    logics first and the application logic last, as Slicer does on exit. Left to the interpreter's
    final garbage collection, VTK would delete them in any order and crash (segmentation fault after
    the tests have passed, which turns the run's exit status into a failure)."""
    for logics in _LOGICS.values():
        for slice_logic in logics.pop("slices", {}).values():
            slice_logic.SetMRMLScene(None)
        for key in ("colors", "application"):
            if key in logics:
                logics.pop(key).SetMRMLScene(None)
    _LOGICS.clear()


def application_logic(scene):
    """The application logic of a scene made by :func:`new_scene`."""
    return _LOGICS[id(scene)]["application"]


def volumes_logic(scene):
    """Slicer's volumes logic, connected to the application (it takes label map colours from the colour logic)."""
    slicer = require("slicer")
    logic = slicer.vtkSlicerVolumesLogic()
    logic.SetMRMLApplicationLogic(application_logic(scene))
    logic.SetMRMLScene(scene)
    return logic


def load_volume(scene, path: Path, name: str, labelmap: bool = False):
    """Load a NIfTI/NRRD file with Slicer's archetype reader, as File > Add Data does."""
    node = volumes_logic(scene).AddArchetypeVolume(str(path), name, 1 if labelmap else 0)
    assert node is not None, f"Slicer could not read {path}"
    return node


def load_dicom_series(scene, folder: Path, name: str):
    """Load a DICOM series as Slicer's DICOM scalar volume plugin does: the files sorted along
    the slice normal, then read by the archetype reader as one volume."""
    import SimpleITK as sitk
    import vtk

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))  # sorted by position
    names = vtk.vtkStringArray()
    for file in files:
        names.InsertNextValue(file)
    node = volumes_logic(scene).AddArchetypeScalarVolume(files[0], name, 0, names)
    assert node is not None
    return node


def place_in_study(scene, node, patient="Patient", study="Study"):
    """Put a node under patient/study items, as the DICOM module does; returns the study item."""
    slicer = require("slicer")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient_item = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), patient)
    study_item = hierarchy.CreateStudyItem(patient_item, study)
    hierarchy.CreateItem(study_item, node)
    return study_item


def add_slice_views(scene, names=("Red", "Yellow", "Green")):
    """The slice views of the default layout, made by Slicer's slice logic as the layout manager makes
    them (slice and slice-composite nodes); returns ``[(slice node, composite node)]``. The logics are
    kept: :func:`rendered_slice` renders through them."""
    slicer = require("slicer")
    views = []
    logics = _LOGICS.setdefault(id(scene), {}).setdefault("slices", {})
    for name in names:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(application_logic(scene))
        logic.SetMRMLScene(scene)
        slice_node = logic.AddSliceNode(name)
        logics[name] = logic
        views.append((slice_node, logic.GetSliceCompositeNode()))
    return views


def rendered_slice(scene, name: str, size=(256, 256)) -> np.ndarray:
    """What the slice view ``name`` shows: the image Slicer's slice logic blends from its layers
    (background, foreground with its opacity and colour table), ``[row, column, RGBA]`` uint8,
    row 0 at the bottom (VTK's order)."""
    from vtk.util import numpy_support

    logic = _LOGICS[id(scene)]["slices"][name]
    logic.GetSliceNode().SetDimensions(size[0], size[1], 1)
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    columns, rows, _ = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1).copy()


def slice_pixel_of_ras(scene, name: str, ras) -> tuple[int, int]:
    """The ``(row, column)`` of :func:`rendered_slice` where the RAS point ``ras`` (mm) is drawn."""
    import vtk

    slice_node = _LOGICS[id(scene)]["slices"][name].GetSliceNode()
    to_xy = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(slice_node.GetXYToRAS(), to_xy)
    x, y, _, _ = to_xy.MultiplyPoint([*(float(v) for v in ras), 1.0])
    return int(round(y)), int(round(x))


def scene_snapshot(scene) -> dict[str, tuple]:
    """Every node's ID → (class, name, modification time): equal snapshots mean an untouched scene."""
    snapshot = {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        snapshot[node.GetID()] = (node.GetClassName(), node.GetName(), node.GetMTime())
    return snapshot


def segment_voxels_lps(segmentation_node, segment_id: str) -> np.ndarray:
    """LPS positions (mm) of a segment's voxels, ``N x 3``, read from the segment's own labelmap
    and its own image-to-world matrix (no URSAM code involved)."""
    from vtk.util import numpy_support

    slicer = require("slicer")
    import vtk

    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    if labelmap.GetPointData().GetScalars() is None:
        return np.zeros((0, 3))
    extent = labelmap.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(shape)
    kji = np.argwhere(values > 0) + [extent[4], extent[2], extent[0]]
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    to_world = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    ras = (to_world @ ijk1.T).T[:, :3]
    return ras * [-1, -1, 1]


def indices_of_points(image, lps: np.ndarray) -> np.ndarray:
    """SimpleITK ``(i, j, k)`` indices of LPS points; asserts each point is a voxel centre."""
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    continuous = np.linalg.solve(direction, (lps - np.array(image.GetOrigin())).T).T
    rounded = np.rint(continuous)
    assert np.abs(continuous - rounded).max(initial=0) < 1e-3, "a segment voxel is not on the CT's grid"
    return rounded.astype(int)


def rotation(degrees: float) -> np.ndarray:
    """A rotation about the S axis (LPS z), 3 x 3."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def build_oblique_case(scene, folder: Path):
    """An oblique CT (20 degrees about S, rows flipped) with two bright 'organs', written as NRRD and
    loaded by Slicer, and a segmentation of them that Slicer imported from a label map NRRD, its
    segments named 'liver' and 'Gallbladder' as a user would. Files: oblique.nrrd, oblique_labels.nrrd
    (labels 1 and 2) in ``folder``. Returns (CT node, prompt segmentation node)."""
    import SimpleITK as sitk

    from conftest import synthetic_ct

    slicer = require("slicer")
    ct = synthetic_ct(shape=(6, 40, 48), direction=rotation(20) @ np.diag([1, -1, 1]))
    array = sitk.GetArrayFromImage(ct)
    array[2:6, 28:36, 32:44] = 90  # a second organ beside synthetic_ct's bright block
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(ct)
    labels = np.zeros(array.shape, np.uint8)
    labels[1:5, 10:25, 12:30] = 1
    labels[2:6, 28:36, 32:44] = 2
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(ct)
    sitk.WriteImage(image, str(folder / "oblique.nrrd"))
    sitk.WriteImage(label_image, str(folder / "oblique_labels.nrrd"))

    ct_node = load_volume(scene, folder / "oblique.nrrd", "Oblique")
    label_node = load_volume(scene, folder / "oblique_labels.nrrd", "Oblique labels", labelmap=True)
    prompts = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Prompts")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, prompts)
    scene.RemoveNode(label_node)
    segmentation = prompts.GetSegmentation()
    segmentation.GetNthSegment(0).SetName("liver")
    segmentation.GetNthSegment(1).SetName("Gallbladder")
    return ct_node, prompts
