"""URSAMTest: the self-test Slicer runs on "Reload and Test" (it also runs under the test suite).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from URSAMLib import builtin
from URSAMLib.errors import URSAMError
from URSAMLib.pipeline import Settings
from URSAMLib.template import Template
from URSAMSlicerLib import catalogue, dependencies, mrml, mrml_outputs
from URSAMSlicerLib.requests import URSAMRequest
from URSAMSlicerLib.logic import URSAMLogic


class URSAMTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Developer mode: Reload and Test) and under pytest (Testing/test_slicer_module.py)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_segments_land_on_the_prompted_organ()
        self.setUp()
        self.test_user_segments_survive_a_rerun_and_rectification_changes()
        self.setUp()
        self.test_background_process_and_cancel()
        self.setUp()
        self.test_template_from_a_labelled_ct_in_the_scene()
        self.setUp()
        self.test_built_in_template_is_installed_and_prepares_a_job()
        self.setUp()
        self.test_a_prompt_past_the_ct_and_a_second_ct_under_a_transform()
        self.setUp()
        self.test_litemedsam_on_a_small_volume()

    # A small oblique CT (turned 15 degrees about the S axis): a bright 'organ' block in soft tissue.
    def _volume(self, name="URSAM test CT"):
        hu = np.full((6, 48, 40), -80, np.int16)  # [k, j, i]
        hu[1:5, 12:30, 8:26] = 120
        angle = np.radians(15)
        ijkToRas = np.array([[-0.8 * np.cos(angle), 0.9 * np.sin(angle), 0, 12.0],
                             [-0.8 * np.sin(angle), -0.9 * np.cos(angle), 0, -4.0],
                             [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
        return self._volumeNode(name, hu, ijkToRas), hu

    @staticmethod
    def _volumeNode(name, hu, ijkToRas):
        """A scalar volume node holding ``hu`` ``[k, j, i]`` (int16) with the given IJK-to-RAS matrix."""
        from vtk.util import numpy_support

        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        image = vtk.vtkImageData()
        image.SetDimensions(hu.shape[2], hu.shape[1], hu.shape[0])
        image.AllocateScalars(vtk.VTK_SHORT, 1)
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = hu.ravel()
        node.SetAndObserveImageData(image)
        node.SetIJKToRASMatrix(mrml._vtk_matrix(ijkToRas))
        node.CreateDefaultDisplayNodes()
        return node

    def _bodyVolume(self, name):
        """A 10 cm slab of a synthetic body (soft tissue in air, a bright 'organ' and a 'spine'): big
        enough for the registration localizer, which works at 3 mm. Returns the node and the organ mask."""
        rng = np.random.default_rng(0)
        k, j, i = np.mgrid[:40, :96, :96]
        hu = np.full(k.shape, -1000.0)
        hu[((j - 48) / 40.0) ** 2 + ((i - 48) / 44.0) ** 2 < 1] = 0
        organ = np.zeros(k.shape, bool)
        organ[8:30, 20:50, 14:44] = True
        hu[organ] = 150
        hu[:, 62:74, 42:54] = 700
        hu = (hu + rng.normal(0, 10, hu.shape)).astype(np.int16)
        ijkToRas = np.array([[-2.0, 0, 0, 90.0], [0, -2.0, 0, 60.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
        return self._volumeNode(name, hu, ijkToRas), organ

    def _promptSegmentation(self, volume, mask, name="Liver"):
        segmentation = mrml_outputs.new_segmentation(slicer.mrmlScene, "URSAM test prompts", volume)
        segmentation.GetSegmentation().AddEmptySegment("prompt", name)
        image, extent = mrml_outputs._mask_image(mask, mrml.ijk_to_ras(volume))
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        logic.SetBinaryLabelmapToSegment(image, segmentation, "prompt", logic.MODE_REPLACE, extent)
        return segmentation

    def _logic(self):
        from URSAMSlicerLib.testing import bright_in_box

        logic = URSAMLogic()
        logic.runInProcess = True
        logic.backboneLoader = bright_in_box
        return logic

    def test_segments_land_on_the_prompted_organ(self):
        self.delayDisplay("URSAM: segments and heatmap on the input's voxels")
        volume, hu = self._volume()
        prompts = self._promptSegmentation(volume, hu > 0)
        outputs = self._logic().process(URSAMRequest(volume, promptNode=prompts,
                                                     settings=Settings(num_aug=3, ratio=0.0)))
        segment = outputs.segmentation.GetSegmentation().GetSegment(outputs.segmentation.GetSegmentation()
                                                                      .GetNthSegmentID(0))
        self.assertEqual(segment.GetName(), "Liver")
        mask = mrml.segment_mask(outputs.segmentation, outputs.segmentation.GetSegmentation().GetNthSegmentID(0),
                                 volume)
        # ratio 0: every box is the organ's tight box, so the stand-in marks exactly the bright voxels
        self.assertTrue(np.array_equal(mask, hu > 0))
        uncertainty = mrml.voxel_array(outputs.uncertainty)
        self.assertEqual(uncertainty.shape, hu.shape)
        self.assertFalse(outputs.ensemble.GetDisplayNode().GetVisibility())
        self.delayDisplay("Test passed")

    def test_user_segments_survive_a_rerun_and_rectification_changes(self):
        self.delayDisplay("URSAM: user segments are never touched")
        volume, hu = self._volume()
        prompts = self._promptSegmentation(volume, hu > 0)
        logic = self._logic()
        request = URSAMRequest(volume, promptNode=prompts, settings=Settings(num_aug=4, ratio=0.1))
        outputs = logic.process(request)
        userMask = np.zeros(hu.shape, bool)
        userMask[2:4, 5:40, 5:30] = True
        outputs.segmentation.GetSegmentation().AddEmptySegment("mine", "My correction")
        image, extent = mrml_outputs._mask_image(userMask, mrml.ijk_to_ras(volume))
        segmentationLogic = slicer.vtkSlicerSegmentationsModuleLogic
        segmentationLogic.SetBinaryLabelmapToSegment(image, outputs.segmentation, "mine",
                                                     segmentationLogic.MODE_REPLACE, extent)
        again = logic.process(replace(request, outputSegmentation=outputs.segmentation))
        logic.rerectify(again, alpha_h=2.0, method="fixed")
        self.assertEqual(again.segmentation.GetSegmentation().GetNumberOfSegments(), 2)
        self.assertTrue(np.array_equal(mrml.segment_mask(again.segmentation, "mine", volume), userMask))
        self.delayDisplay("Test passed")

    def test_background_process_and_cancel(self):
        self.delayDisplay("URSAM: background process, then cancel")
        volume, hu = self._volume()
        prompts = self._promptSegmentation(volume, hu > 0)
        logic = URSAMLogic()
        logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:bright_in_box")
        outputs = logic.process(URSAMRequest(volume, promptNode=prompts, settings=Settings(ratio=0.0)))
        self.assertTrue(np.array_equal(
            mrml.segment_mask(outputs.segmentation, outputs.segmentation.GetSegmentation().GetNthSegmentID(0), volume),
            hu > 0))
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:slow_loader")
        job = logic.start(logic.prepare(URSAMRequest(volume, promptNode=prompts)))
        deadline = time.monotonic() + 60
        while job._process is None and not job.poll().finished and time.monotonic() < deadline:
            pass  # the job is written, then the worker starts
        job.cancel()
        self.assertEqual(job.poll().state, "cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        # PythonSlicer is a launcher: the interpreter it started must be gone too (zombies aside)
        from URSAMSlicerLib.processes import tree_alive

        self.assertFalse(tree_alive(job._process, wait=5.0))
        self.delayDisplay("Test passed")

    def test_template_from_a_labelled_ct_in_the_scene(self):
        self.delayDisplay("URSAM: organs localized from a template built of a labelled CT in the scene")
        support, organ = self._bodyVolume("URSAM test support")
        segments = self._promptSegmentation(support, organ)
        query, _ = self._bodyVolume("URSAM test query")  # the same anatomy; registration must find it
        logic = self._logic()
        request = URSAMRequest(query, promptSource="sceneTemplate", supports=[(support, segments)],
                               settings=Settings(num_aug=3, ratio=0.0))
        self.assertEqual([o.output.name for o in logic.promptOrgans("sceneTemplate", None, supports=request.supports)],
                         ["Liver"])
        outputs = logic.process(request)
        self.assertEqual([o.name for o in outputs.organs], ["Liver"])
        self.assertEqual(outputs.missing, {})
        mask = mrml.segment_mask(outputs.segmentation, outputs.segmentation.GetSegmentation().GetNthSegmentID(0),
                                 query)
        dice = 2 * np.count_nonzero(mask & organ) / (np.count_nonzero(mask) + np.count_nonzero(organ))
        self.assertGreater(dice, 0.95)  # the stand-in marks the bright voxels in the localized box
        with self.assertRaises(URSAMError):
            logic.process(replace(request, supports=[]))
        self.delayDisplay(f"Test passed (Dice {dice:.3f})")

    def test_built_in_template_is_installed_and_prepares_a_job(self):
        self.delayDisplay("URSAM: the built-in templates are installed intact and need only the CT")
        logic = self._logic()
        for entry in builtin.describe():  # every packaged file is checked against its SHA-256 here
            organs = logic.promptOrgans("region", None, region=entry["region"])
            self.assertEqual(len(organs), len(entry["organs"]))
            self.assertTrue(all(organ.output.key in catalogue.organs() for organ in organs))  # named as in Slicer
        volume, _ = self._bodyVolume("URSAM test CT, unlabelled")
        prepared = logic.prepare(URSAMRequest(volume, promptSource="region", region="head-and-neck"))
        localization = prepared.job.localization
        self.assertEqual(Path(localization.folder), builtin.region_template("head-and-neck").folder)
        self.assertEqual(localization.localizer, builtin.region_template("head-and-neck").localizer)
        self.assertEqual(len(prepared.organs), 7)
        self.assertEqual(prepared.job.settings.method, "per-organ")  # the rule measured per organ, by default
        self.assertTrue(Template.load(localization.folder).rectification)
        self.assertTrue(builtin.localizer_weights().is_file())
        with self.assertRaises(URSAMError):
            logic.prepare(URSAMRequest(volume, promptSource="region", region="thorax"))
        self.delayDisplay("Test passed")

    def test_a_prompt_past_the_ct_and_a_second_ct_under_a_transform(self):
        self.delayDisplay("URSAM: a prompt longer than the CT; a second, moved CT gets its own outputs")
        volume, hu = self._volume()
        organ = hu > 0
        longer = np.zeros((hu.shape[0] + 6, *hu.shape[1:]), bool)  # drawn on a series 3 slices longer each way
        longer[:, organ.any(axis=0)] = True
        ijkToRas = mrml.ijk_to_ras(volume)
        ijkToRas[:3, 3] -= 3 * ijkToRas[:3, 2]
        prompts = mrml_outputs.new_segmentation(slicer.mrmlScene, "URSAM test long prompts", volume)
        prompts.GetSegmentation().AddEmptySegment("prompt", "Liver")
        image, extent = mrml_outputs._mask_image(longer, ijkToRas)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        logic.SetBinaryLabelmapToSegment(image, prompts, "prompt", logic.MODE_REPLACE, extent)
        ursam = self._logic()
        first = ursam.process(URSAMRequest(volume, promptNode=prompts, settings=Settings(num_aug=3, ratio=0.0)))
        self.assertEqual(sorted(first.result.organs[0].boxes), list(range(hu.shape[0])))
        firstMask = mrml.segment_mask(first.segmentation, first.segmentation.GetSegmentation().GetNthSegmentID(0),
                                      volume)
        # a second CT, moved 20 mm by a transform, with its prompts drawn where they show on it
        second, _ = self._volume("URSAM test CT 2")
        shift = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        matrix = vtk.vtkMatrix4x4()
        matrix.SetElement(0, 3, 20.0)
        shift.SetMatrixTransformToParent(matrix)
        second.SetAndObserveTransformNodeID(shift.GetID())
        secondPrompts = self._promptSegmentation(second, organ)
        secondPrompts.SetAndObserveTransformNodeID(shift.GetID())
        again = ursam.process(URSAMRequest(second, promptNode=secondPrompts, outputSegmentation=first.segmentation,
                                           settings=Settings(num_aug=3, ratio=0.0)))
        self.assertIsNot(again.segmentation, first.segmentation)  # CT 1's outputs are not CT 2's
        self.assertEqual(again.segmentation.GetTransformNodeID(), shift.GetID())
        self.assertTrue(np.array_equal(
            mrml.segment_mask(again.segmentation, again.segmentation.GetSegmentation().GetNthSegmentID(0), second),
            organ))
        self.assertTrue(np.array_equal(
            mrml.segment_mask(first.segmentation, first.segmentation.GetSegmentation().GetNthSegmentID(0), volume),
            firstMask))
        self.delayDisplay("Test passed")

    def test_litemedsam_on_a_small_volume(self):
        self.delayDisplay("URSAM: LiteMedSAM on a 6-slice synthetic CT")
        if dependencies.missing_requirements() or not dependencies.torch_installed():
            self.delayDisplay("Skipped: torch or URSAM's packages are not installed (start a segmentation once "
                              "to install them).")
            return
        volume, hu = self._volume()
        prompts = self._promptSegmentation(volume, hu > 0)
        logic = URSAMLogic()
        logic.runInProcess = True
        outputs = logic.process(URSAMRequest(volume, promptNode=prompts, device="cpu"))
        mask = mrml.segment_mask(outputs.segmentation, outputs.segmentation.GetSegmentation().GetNthSegmentID(0),
                                 volume)
        organ = hu > 0
        dice = 2 * np.count_nonzero(mask & organ) / (np.count_nonzero(mask) + np.count_nonzero(organ))
        self.assertGreater(dice, 0.75)  # 0.83 measured; a misplaced result would score near 0
        self.delayDisplay(f"Test passed (Dice {dice:.3f})")
