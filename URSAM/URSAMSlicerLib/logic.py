"""URSAMLogic: runs URSAM on MRML nodes (prepare, start, apply, re-rectify, view); usable from the
Python console without the GUI (see URSAM.py).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from URSAMLib import io, quality
from URSAMLib.errors import URSAMError
from URSAMLib.job import SegmentJob, check_model_choice
from URSAMLib.pipeline import SegmentationResult
from URSAMSlicerLib import dependencies, jobs, mrml, mrml_outputs, regions, running
from URSAMSlicerLib.requests import (PRECISIONS, PROMPT_MODES,
                                     TEMPLATE_SOURCES,
                                     PreparedRun, URSAMOutputs,
                                     URSAMRequest)
from URSAMSlicerLib.prompting import PromptReading


class URSAMLogic(ScriptedLoadableModuleLogic, PromptReading):
    """Runs URSAM on MRML nodes; usable from the Python console without the GUI."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        # Python for the background job: Slicer's launcher sets up its libraries; elsewhere, this Python.
        self.python = shutil.which("PythonSlicer") or sys.executable
        self.backboneLoader = None
        """Replaces URSAMLib.backbones.load_backbone for in-process runs (self-tests)."""
        self.workerArguments: tuple[str, ...] = ()
        """Extra arguments for the background worker (self-tests: ``--backbone-factory``)."""
        self.runInProcess = False
        """Run jobs synchronously in this process instead of a background process."""

    # -- dependencies -------------------------------------------------------------------

    def ensureDependencies(self, ask: bool = True) -> None:
        """Install torch and URSAMLib's packages after the user agrees (raises URSAMError otherwise)."""
        dependencies.ensure(slicer, ask)

    # -- running ------------------------------------------------------------------------

    def prepare(self, request: URSAMRequest) -> PreparedRun:
        """Read the volume and prompts from the scene and check everything; does not change the scene."""
        volume = request.inputVolume
        if volume is None:
            raise URSAMError("Select the input CT volume.")
        if volume.IsA("vtkMRMLLabelMapVolumeNode") or not volume.IsA("vtkMRMLScalarVolumeNode"):
            raise URSAMError(f"{volume.GetName()} is not a grey-scale volume; select the CT to segment.")
        if request.promptMode not in PROMPT_MODES:
            raise URSAMError(f"Unknown prompt mode {request.promptMode!r}.")
        options = self.options(request)
        image = mrml.image_from_volume_node(volume)
        io.check_volume(image, volume.GetName())
        hu, frame = io.axial_array(image)
        if request.promptSource in TEMPLATE_SOURCES:
            localization, organs = self.templateLocalization(request, image, options.box_margin)
            prompts, missing = [], {}
        else:
            prompts, organs, missing = self.buildPrompts(request, image, frame, options.box_margin)
            localization = None
        warning = io.intensity_warning(hu, volume.GetName())
        job = jobs.Job(hu, prompts, options, localization)
        return PreparedRun(request, job, frame, organs, missing, [warning] if warning else [])

    @staticmethod
    def options(request: URSAMRequest) -> SegmentJob:
        """The request's options as the job model ``ursam segment`` runs (raises URSAMError), checked
        as it checks them: settings, backbone, device, checkpoint and its pin, precision, window."""
        from URSAMLib.weights import parse_sha256

        if request.checkpoint and not Path(request.checkpoint).expanduser().is_file():
            raise URSAMError(f"Checkpoint {request.checkpoint} does not exist; choose the weights file again.")
        if request.precision not in PRECISIONS:
            raise URSAMError(f"Unknown precision {request.precision!r}; choose one of: {', '.join(PRECISIONS)}.")
        window = None
        if request.window.strip():
            try:
                low, high = (float(v) for v in request.window.split(","))
            except ValueError:
                raise URSAMError(f"CT window {request.window!r} is not two numbers LOW,HIGH in HU, e.g. -160,240; "
                                 "leave it empty for the model's own window.") from None
            if not low < high:
                raise URSAMError(f"CT window {request.window!r}: LOW must be below HIGH.")
            window = (low, high)
        options = jobs.scene_options(
            request.inputVolume.GetName() if request.inputVolume is not None else "the input CT",
            backbone=request.backbone, checkpoint=request.checkpoint or None,
            checkpoint_sha256=parse_sha256(request.checkpointSha256) if request.checkpointSha256 else None,
            precision=request.precision, window=window,
            device=request.device, prompt_mode=request.promptMode, settings=request.settings.validate())
        check_model_choice(options)
        return options

    def start(self, prepared: PreparedRun):
        """Start computing a prepared run; returns the job to poll (``poll()``, ``cancel()``, ``result()``)."""
        if self.runInProcess:
            job = running.InProcessJob(prepared.job, self.backboneLoader)
        else:
            job = running.BackgroundJob(prepared.job, self.python, self.workerArguments, self.workerEnvironment())
        prepared.job = None  # the job owns the volume now; keeping it would double the memory
        job.start()
        return job

    @staticmethod
    def workerEnvironment() -> dict[str, str] | None:
        """The environment Slicer started with (as slicer.util.launchConsoleProcess uses): PythonSlicer
        sets up its own paths from it; Slicer's current environment has them set for the GUI already.
        None (this process's environment) outside the application."""
        try:
            return dict(slicer.util.startupEnvironment())
        except (AttributeError, TypeError):
            return None

    def process(self, request: URSAMRequest) -> URSAMOutputs:
        """Segment synchronously (scripts and self-tests): prepare, compute, apply."""
        prepared = self.prepare(request)
        job = self.start(prepared)
        status = job.wait()
        if status.state != "done":
            raise URSAMError(status.error or f"The segmentation was {status.state}.")
        return self.apply(prepared, job.result(), job.not_found, job.quality_context)

    def apply(self, prepared: PreparedRun, result: SegmentationResult,
              notFound: dict[str, str] | None = None, qualityContext=None) -> URSAMOutputs:
        """Write a finished result into the scene: segments, ensemble segments, uncertainty volume.

        ``notFound``: organs the job could not localize (``job.not_found``), reported with the
        outputs. Only URSAM's own segments are (re)written. If writing fails, the nodes it created
        are removed.
        """
        request = prepared.request
        segmented = {organ.label for organ in result.organs}
        organs = [organ for organ in prepared.organs if organ.label in segmented]
        volume = request.inputVolume
        scene = volume.GetScene()
        if scene is None:  # the scene may change while a background run computes
            raise URSAMError(f"{volume.GetName()} was removed from the scene during the segmentation; "
                             "nothing was written.")
        frame = prepared.frame
        created = []

        def new(node):
            created.append(node)
            return node

        baseName = f"{volume.GetName()} URSAM"
        try:
            segmentation = request.outputSegmentation
            if segmentation is not None and segmentation.GetScene() is not None and \
                    not mrml_outputs.outputs_belong_to(segmentation, volume):
                segmentation = mrml_outputs.outputs_of(scene, volume)  # another CT's outputs are never overwritten
            if segmentation is None or segmentation.GetScene() is None:
                segmentation = new(mrml_outputs.new_segmentation(scene, baseName, volume))
            ensemble = segmentation.GetNodeReference(mrml.REFERENCE_ENSEMBLE)
            if ensemble is None:
                ensemble = new(mrml_outputs.new_segmentation(scene, f"{baseName} ensemble", volume))
                mrml_outputs.style_as_ensemble(ensemble)
                mrml_outputs.set_segmentation_visible(ensemble, False)  # hidden until asked for
            uncertainty = segmentation.GetNodeReference(mrml.REFERENCE_UNCERTAINTY)
            rectifiedLabels = result.label_map("rectified")
            mrml_outputs.write_organ_segments(segmentation, frame.from_axial(rectifiedLabels), organs, volume,
                                              "rectified")
            mrml_outputs.write_organ_segments(
                ensemble, frame.from_axial(result.label_map("ensemble")),
                [replace(o, color=mrml_outputs.ensemble_color(o.color)) for o in organs], volume, "ensemble")
            heat = frame.from_axial(result.uncertainty_map())
            if uncertainty is None:
                uncertainty = new(mrml_outputs.write_uncertainty_volume(scene, None, f"{baseName} uncertainty", heat,
                                                                        volume))
            else:
                mrml_outputs.write_uncertainty_volume(scene, uncertainty, "", heat, volume)
            segmentation.SetNodeReferenceID(mrml.REFERENCE_INPUT, volume.GetID())
            segmentation.SetNodeReferenceID(mrml.REFERENCE_ENSEMBLE, ensemble.GetID())
            segmentation.SetNodeReferenceID(mrml.REFERENCE_UNCERTAINTY, uncertainty.GetID())
            for node in created:
                mrml_outputs.place_beside(node, volume)
        except Exception:
            for node in created:
                scene.RemoveNode(node)
            raise
        outputs = URSAMOutputs(volume, segmentation, ensemble, uncertainty, result, frame, organs, [], [],
                               {**prepared.missing, **(notFound or {})}, qualityContext=qualityContext,
                               errorLikelihoods=regions.error_likelihoods(result, frame.spacing))
        self._assess(outputs, rectifiedLabels)
        self._remember(outputs)
        return outputs

    @staticmethod
    def _assess(outputs: URSAMOutputs, labels) -> None:
        """The organ table's rows (predicted DSC, Review flag) in review order, and the uncertain
        regions in that order."""
        assessed = (quality.assess_result(outputs.result, outputs.qualityContext)
                    if outputs.qualityContext is not None else None)
        outputs.statistics = regions.organ_statistics(outputs.result, outputs.frame.spacing, labels, assessed)
        outputs.regions = regions.uncertain_regions(outputs.result, [row.name for row in outputs.statistics],
                                                    outputs.errorLikelihoods)

    @staticmethod
    def _remember(outputs: URSAMOutputs) -> None:
        ours = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")
        outputs.written = mrml_outputs.segment_digests(outputs.segmentation, ours.values(), outputs.inputVolume)

    def editedOrgans(self, outputs: URSAMOutputs) -> list[str]:
        """Names of URSAM's rectified segments the user changed (or deleted) since URSAM wrote them:
        re-rectifying would replace those edits."""
        now = mrml_outputs.segment_digests(outputs.segmentation, outputs.written, outputs.inputVolume)
        segmentation = outputs.segmentation.GetSegmentation()
        edited = []
        for segmentId, digest in outputs.written.items():
            if now[segmentId] != digest:
                segment = segmentation.GetSegment(segmentId)
                edited.append(segment.GetName() if segment is not None else segmentId)
        return edited

    def rerectify(self, outputs: URSAMOutputs, **changes) -> None:
        """Re-run only the rectification (e.g. ``alpha_h=1.5``, ``method="fixed"``) and update URSAM's
        rectified segments, the statistics and the regions. No SAM computation."""
        outputs.result.rerectify(**changes)
        labels = outputs.result.label_map("rectified")
        mrml_outputs.write_organ_segments(outputs.segmentation, outputs.frame.from_axial(labels), outputs.organs,
                                          outputs.inputVolume, "rectified")
        self._assess(outputs, labels)
        self._remember(outputs)

    REGION_DECISIONS = ("rectified", "ensemble", "erase")
    """What a reviewer can take for the voxels of an uncertain region: the rectification's decision,
    the ensemble's (ŷ > 0.5), or neither (the region is removed from the organ)."""

    def decideRegion(self, outputs: URSAMOutputs, region: regions.UncertainRegion, decision: str) -> None:
        """Set the voxels of one uncertain region in its organ's rectified segment to ``decision``
        (:data:`REGION_DECISIONS`). The rest of the segment, with any edits the user made, is kept;
        the change counts as the user's edit (a later re-rectification asks before replacing it)."""
        if decision not in self.REGION_DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {self.REGION_DECISIONS}")
        organ = next(o for o in outputs.result.organs if o.name == region.organ)
        output = next(o for o in outputs.organs if o.label == organ.label)
        segmentId = mrml_outputs.ursam_segments(outputs.segmentation, "rectified").get(output.key)
        if segmentId is None:
            raise URSAMError(f"The {region.organ} segment is gone from {outputs.segmentation.GetName()}; "
                             "segment again to get it back.")
        current = outputs.frame.to_axial(mrml.segment_mask(outputs.segmentation, segmentId, outputs.inputVolume))
        inside = regions.region_mask(organ, region)
        taken = {"rectified": organ.mask, "ensemble": organ.ensemble_mask,
                 "erase": np.zeros_like(inside)}[decision]
        crop = current[organ.region]
        crop[inside] = taken[inside]
        labels = np.where(current, organ.label, 0).astype(np.uint16)
        mrml_outputs.write_organ_segments(outputs.segmentation, outputs.frame.from_axial(labels), [output],
                                          outputs.inputVolume, "rectified")

    # -- viewing ------------------------------------------------------------------------

    def showResults(self, outputs: URSAMOutputs, heatmapOpacity: float, showEnsemble: bool,
                    show3D: bool = False) -> None:
        """CT in the background, heatmap in the foreground of every slice view; ensemble and 3D
        surfaces as asked."""
        scene = outputs.inputVolume.GetScene()
        mrml_outputs.show_overlay(scene, outputs.inputVolume, outputs.uncertainty, heatmapOpacity)
        mrml_outputs.set_segmentation_visible(outputs.ensemble, showEnsemble)
        self.setShow3D(outputs, show3D)

    def setShow3D(self, outputs: URSAMOutputs, visible: bool) -> None:
        """URSAM's segments as surfaces in the 3D views (built on first use: that takes a moment)."""
        mrml_outputs.show_surfaces(outputs.segmentation, visible)

    def setHeatmapOpacity(self, outputs: URSAMOutputs, opacity: float) -> None:
        mrml_outputs.set_overlay_opacity(outputs.inputVolume.GetScene(), outputs.uncertainty, opacity)

    def setEnsembleVisible(self, outputs: URSAMOutputs, visible: bool) -> None:
        mrml_outputs.set_segmentation_visible(outputs.ensemble, visible)

    def centreOn(self, outputs: URSAMOutputs, zyx) -> np.ndarray:
        """Centre the slice views on an axial voxel ``(z, y, x)``; returns its RAS position."""
        ras = mrml.ras_of_axial_index(zyx, outputs.frame, outputs.inputVolume)
        mrml_outputs.centre_slice_views(outputs.inputVolume.GetScene(), ras)
        return ras
