"""Reading prompts from the scene: the organs each prompt source offers, box prompts from segments or
a label map, and what a job needs to localize a template's organs itself (a part of
:class:`URSAMSlicerLib.logic.URSAMLogic`).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from URSAMLib import builtin, io
from URSAMLib.errors import URSAMError
from URSAMLib.localize import check_localizer
from URSAMLib.prompts import DEFAULT_BOX_MARGIN, BoxMargin, OrganPrompt, prompts_from_labels
from URSAMLib.template import Template
from URSAMSlicerLib import catalogue, jobs, mrml
from URSAMSlicerLib.requests import (ANY_ORGAN, REGION_SOURCES, PromptOrgan, SceneSupports, URSAMRequest)

PROMPT_COLOUR = (0.9, 0.6, 0.2)
"""The segment colour of a structure outside the catalogue whose prompt has no colour of its own."""


class PromptReading:
    """The logic's prompt sources (mixed into URSAMLogic)."""

    # -- prompts ------------------------------------------------------------------------

    def promptOrgans(self, promptSource: str, promptNode, organSet: str = ANY_ORGAN,
                     classesPath: str = "", templateFolder: str = "", supports=(), region: str = ""
                     ) -> list[PromptOrgan]:
        """The organs ``promptNode`` (or the template) can prompt, restricted to ``organSet`` (plus,
        greyed, the set's organs it lacks). Labels are stable: a segment's position + 1, the label
        value, or the template's label value. A built-in template (source ``region``) is itself the
        organ set: all its organs are offered."""
        readers = {  # prompt source → its organs (none until its input is chosen)
            "region": lambda: self._templateOrgans(self.regionTemplate(region).folder) if region else [],
            "segmentation": lambda: self._segmentOrgans(promptNode) if promptNode is not None else [],
            "labelmap": lambda: self._labelMapOrgans(promptNode, classesPath) if promptNode is not None else [],
            "template": lambda: self._templateOrgans(templateFolder) if templateFolder else [],
            "sceneTemplate": lambda: self.sceneSupports(supports).organs if supports else [],
        }
        if promptSource not in readers:
            raise URSAMError(f"Unknown prompt source {promptSource!r}.")
        found = readers[promptSource]()
        seen = set()
        for organ in found:  # two prompts of one organ (e.g. 'liver' and 'Liver') get a segment each
            if organ.output.key in seen:
                organ.output = replace(organ.output, key=f"{organ.output.key}#{organ.label}")
            seen.add(organ.output.key)
        if organSet == ANY_ORGAN or promptSource in REGION_SOURCES:
            return found
        wanted = catalogue.organ_sets()[organSet].organs
        inSet = [organ for organ in found if organ.output.key in wanted]
        present = {organ.output.key for organ in inSet}
        absent = [PromptOrgan(0, self._catalogueOutput(catalogue.organs()[key]), inPrompt=False)
                  for key in wanted if key not in present]
        return inSet + absent

    @staticmethod
    def _catalogueOutput(organ: catalogue.Organ) -> catalogue.OrganLook:
        return catalogue.OrganLook.of_organ(organ)

    def _describe(self, label: int, name: str, terminology: str, color) -> catalogue.OrganLook:
        organ = catalogue.match_terminology(terminology) if terminology else None
        if organ is not None:
            return catalogue.OrganLook.of_organ(organ, label)
        # a structure outside the catalogue keeps the prompt's name and colour; 'prompt:' keeps its key
        # apart from every catalogue key
        return catalogue.OrganLook.of(label, name, tuple(color) if color is not None else PROMPT_COLOUR,
                                      key=None if catalogue.match_name(name) else
                                      f"prompt:{catalogue.normalise(name) or label}")

    def _segmentOrgans(self, segmentationNode) -> list[PromptOrgan]:
        segmentation = segmentationNode.GetSegmentation()
        organs = []
        for segmentId, name in mrml.prompt_segments(segmentationNode):
            label = segmentation.GetSegmentIndex(segmentId) + 1
            output = self._describe(label, name, mrml.segment_terminology(segmentationNode, segmentId),
                                    mrml.segment_color(segmentationNode, segmentId))
            organs.append(PromptOrgan(label, output, segmentId))
        return organs

    def _labelMapOrgans(self, labelMapNode, classesPath: str) -> list[PromptOrgan]:
        values = [int(v) for v in np.unique(mrml.voxel_array(labelMapNode)) if v > 0]
        names = io.read_classes(classesPath) if classesPath else mrml.color_names(labelMapNode, values)
        return [PromptOrgan(value, self._describe(value, names.get(value, f"Label {value}"), "",
                                                  mrml.label_color(labelMapNode, value)))
                for value in values]

    @staticmethod
    def regionTemplate(region: str) -> builtin.RegionTemplate:
        """URSAM's built-in template of ``region``, its packaged files verified (URSAMError: an unknown
        region, or a damaged installation)."""
        return builtin.region_template(region)

    def _templateOrgans(self, folder) -> list[PromptOrgan]:
        template = Template.load(folder)
        return [PromptOrgan(value, self._describe(value, name, "", None), name)
                for name, value in template.organs.items()]

    def sceneSupports(self, supports) -> SceneSupports:
        """The organs the supports (``(volume, segmentation)`` pairs) have in common, matched to the
        organ catalogue by segment terminology or name. Raises URSAMError for no supports, a support
        without segments, or segments that name no catalogue organ (in one support or in all)."""
        if not supports:
            raise URSAMError("Add a support first: a CT in the scene with its organs segmented (choose the "
                             "support volume and its segmentation, then press Add support).")
        perSupport = [self._supportOrgans(volume, segmentation) for volume, segmentation in supports]
        common = [key for key in perSupport[0] if all(key in named for named in perSupport[1:])]
        if not common:
            found = "; ".join(f"{segmentation.GetName()}: {', '.join(o.output.name for o in named.values())}"
                              for (_, segmentation), named in zip(supports, perSupport))
            raise URSAMError(f"The supports have no organ in common ({found}); every support must segment "
                             "the organs to localize, under the same organ names.")
        organs = [PromptOrgan(index + 1, replace(perSupport[0][key].output, label=index + 1), key)
                  for index, key in enumerate(common)]
        return SceneSupports(organs, [{key: named[key].source for key in common} for named in perSupport])

    def _supportOrgans(self, volume, segmentation) -> dict[str, PromptOrgan]:
        """A support's segments that name catalogue organs, by catalogue key (first segment of each)."""
        if volume is None or segmentation is None:
            raise URSAMError("A support needs both a CT volume and the segmentation of its organs.")
        for node in (volume, segmentation):
            if node.GetScene() is None:
                raise URSAMError(f"Support {node.GetName()} was removed from the scene; clear the supports and "
                                 "add them again.")
        if volume.IsA("vtkMRMLLabelMapVolumeNode") or not volume.IsA("vtkMRMLScalarVolumeNode"):
            raise URSAMError(f"Support {volume.GetName()} is not a grey-scale CT volume.")
        segments = self._segmentOrgans(segmentation)
        if not segments:
            raise URSAMError(f"Support {segmentation.GetName()} has no segments; segment the organs on "
                             f"{volume.GetName()} first, or choose another support.")
        named: dict[str, PromptOrgan] = {}
        for organ in segments:
            if organ.output.key in catalogue.organs():
                named.setdefault(organ.output.key, organ)
        if not named:
            names = ", ".join(organ.output.name for organ in segments)
            raise URSAMError(f"No segment of support {segmentation.GetName()} names an organ URSAM knows ({names}); "
                             "name them like 'Liver' or 'Right kidney', or choose their terminology.")
        return named

    def _chosenOrgans(self, request: URSAMRequest, holders: str) -> list[PromptOrgan]:
        """The prompt source's organs in the organ set that are ticked (raises if none). ``holders``:
        what holds the organs, with its verb ("Prompts holds")."""
        available = [o for o in self.promptOrgans(request.promptSource, request.promptNode, request.organSet,
                                                  request.classesPath, request.templateFolder, request.supports,
                                                  request.region)
                     if o.inPrompt]
        chosen = [o for o in available if request.organLabels is None or o.label in request.organLabels]
        if not chosen:
            raise URSAMError(f"No organ is chosen: {holders} no organ of this organ set, or none is ticked.")
        return chosen

    def buildPrompts(self, request: URSAMRequest, image, frame: io.AxialFrame, margin: BoxMargin = DEFAULT_BOX_MARGIN
                     ) -> tuple[list[OrganPrompt], list[catalogue.OrganLook], dict[str, str]]:
        """The box prompts of the requested organs drawn in the scene, in URSAMLib's axial frame.

        Returns the prompts, the organs they belong to and ``{name: reason}`` for requested organs
        without a prompt. (Template sources find their prompts in the job: :meth:`templateLocalization`.)
        """
        if request.promptNode is None:
            kind = "segmentation" if request.promptSource == "segmentation" else "label map"
            raise URSAMError(f"Select the prompt {kind}: the organs drawn roughly on the input CT.")
        chosen = self._chosenOrgans(request, f"{request.promptNode.GetName()} holds")
        if request.promptSource == "segmentation":
            prompts, missing = [], {}
            for organ in chosen:
                mask = frame.to_axial(mrml.segment_mask(request.promptNode, organ.source, request.inputVolume))
                found, absent = prompts_from_labels(mask.astype(np.uint8), {1: organ.output.name},
                                                    request.promptMode, margin=margin, spacing=frame.spacing)
                for prompt in found:
                    prompts.append(OrganPrompt(prompt.name, organ.label, prompt.boxes))
                missing.update({name: "its prompt segment is empty" for name in absent})
        else:
            if mrml.relative_transform(request.promptNode, request.inputVolume) is not None:
                # under other transforms than the CT: the labels where the user sees them on the CT
                labels = frame.to_axial(mrml.label_map_on_volume(request.promptNode, request.inputVolume))
            else:
                labelImage = io.label_map_on_grid(mrml.image_from_volume_node(request.promptNode), image,
                                                  request.promptNode.GetName())
                labels = io.axial_array(labelImage, np.uint16)[0]
            prompts, missing = prompts_from_labels(labels, {o.label: o.output.name for o in chosen},
                                                   request.promptMode, margin=margin, spacing=frame.spacing)
        outputs = [o.output for o in chosen if any(p.label == o.label for p in prompts)]
        if not prompts:
            raise URSAMError(f"None of the chosen organs has voxels in {request.promptNode.GetName()}; "
                             "draw them on the input CT first.")
        return prompts, outputs, missing

    def templateLocalization(self, request: URSAMRequest, image, margin: BoxMargin = DEFAULT_BOX_MARGIN
                             ) -> tuple[jobs.TemplateLocalization, list[catalogue.OrganLook]]:
        """What the job needs to localize the requested organs of a template in ``image`` itself
        (localizing takes a minute: it runs in the job), and the organs it may find.

        For the scene source the template is built here, from the supports, in a temporary folder
        that the job deletes when it ends."""
        if request.localizer is not None:
            check_localizer(request.localizer)  # before a template is built for nothing
        folders = {"region": self._regionFolder, "template": self._templateFolder,
                   "sceneTemplate": self._sceneFolder}
        chosen, folder, build, localizer = folders[request.promptSource](request)
        localizer = request.localizer or localizer
        check_localizer(localizer)
        localization = jobs.TemplateLocalization(folder, {o.source: o.output.name for o in chosen},
                                                 jobs.ImageGeometry.of(image), localizer,
                                                 request.localizerWeights or None, margin, temporary=build is not None,
                                                 build=build)
        return localization, [o.output for o in chosen]

    # Each template source's organs, folder, build (a scene template's, else None) and default localizer.

    def _regionFolder(self, request: URSAMRequest):
        if not request.region:
            raise URSAMError("Choose a built-in template under Organ set (one of: "
                             f"{', '.join(builtin.region_names())}).")
        template = self.regionTemplate(request.region)  # a damaged installation: one sentence, no job
        chosen = self._chosenOrgans(request, f"the built-in template {template.title} holds")
        return chosen, str(template.folder), None, template.localizer

    def _templateFolder(self, request: URSAMRequest):
        if not request.templateFolder:
            raise URSAMError("Choose a template folder (made with 'ursam build-template'), or prompt with "
                             "segments or a label map.")
        chosen = self._chosenOrgans(request, f"the template {Path(request.templateFolder).name} holds")
        return chosen, request.templateFolder, None, "registration"

    def _sceneFolder(self, request: URSAMRequest):
        self.sceneSupports(request.supports)  # no supports, or unusable ones: say so, not "no organ"
        chosen = self._chosenOrgans(request, "the supports have")
        folder, build = self.buildSceneTemplate(request.supports, [o.source for o in chosen])
        return chosen, folder, build, "registration"

    def buildSceneTemplate(self, supports, organKeys: list[str]) -> tuple[str, jobs.TemplateBuild]:
        """What the job needs to build a template of ``organKeys`` (catalogue keys) from labelled CTs in
        the scene: a new temporary folder (returned; the job deletes it) for each support's CT and the
        label map of its segments, read from the scene here (that must happen on Slicer's main thread)
        and written into the folder by the job, and the build to run on them there (resampling is the
        slow part)."""
        scene = self.sceneSupports(supports)
        classes = {o.label: o.source for o in scene.organs if o.source in organKeys}
        folder = Path(tempfile.mkdtemp(prefix="ursam-template-"))
        scans = folder / "scans"
        try:
            scans.mkdir()
            build = jobs.TemplateBuild([], [], classes)
            for index, ((volume, segmentation), segments) in enumerate(zip(supports, scene.segments)):
                labelImage = mrml.label_image_from_segments(
                    segmentation, {segments[key]: label for label, key in classes.items()}, volume)
                build.images.append(str(scans / f"support{index + 1}.nrrd"))
                build.labels.append(str(scans / f"support{index + 1}_labels.nrrd"))
                # written by the job (jobs.write_exports), off the GUI thread
                build.exports[build.images[-1]] = mrml.image_from_volume_node(volume)
                build.exports[build.labels[-1]] = labelImage
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return str(folder), build
