"""URSAM: automatic organ segmentation in CT with Segment Anything and an uncertainty map.

The module is glue: the algorithms are in URSAMLib (plain Python), the scene conversions and
the background job in URSAMSlicerLib. :class:`URSAMLogic` works without the GUI::

    logic = URSAMLogic()
    request = URSAMRequest(ctNode, promptNode=segmentationNode, settings=Settings(num_aug=3, ratio=0.01))
    outputs = logic.process(request)          # synchronous; the GUI runs it in a background process
    logic.rerectify(outputs, alpha_h=1.5)     # no SAM recomputation

    # automatic prompts: organs localized from a built-in template (only the CT needed), a template
    # folder, or labelled CTs in the scene
    logic.process(URSAMRequest(ctNode, promptSource="region", region="head-and-neck"))
    logic.process(URSAMRequest(ctNode, promptSource="template", templateFolder="/data/abdomen-template"))
    logic.process(URSAMRequest(ctNode, promptSource="sceneTemplate", supports=[(otherCtNode, itsSegmentation)]))
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4
    def _(text):
        return text

    def translate(context, text):
        return text


def _addSourceTreeToPath() -> None:
    """In a source checkout URSAMLib sits beside URSAM/ rather than beside URSAM.py (as it does in
    a Slicer build), so put the checkout on the path before importing it — first, so that the
    module always runs with the URSAMLib of its own checkout."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "URSAMLib").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


_addSourceTreeToPath()

from URSAMLib import builtin, io  # noqa: E402  (needs the path set above)
from URSAMLib.backbones import DEFAULT_BACKBONE, catalogue as backboneCatalogue  # noqa: E402
from URSAMLib.errors import URSAMError  # noqa: E402
from URSAMLib.job import SegmentJob, check_model_choice  # noqa: E402
from URSAMLib.localize import LOCALIZERS, check_localizer  # noqa: E402
from URSAMLib.pipeline import SegmentationResult, Settings  # noqa: E402
from URSAMLib.prompts import DEFAULT_BOX_MARGIN, BoxMargin, OrganPrompt, prompts_from_labels  # noqa: E402
from URSAMLib.template import Template  # noqa: E402
from URSAMSlicerLib import catalogue, dependencies, jobs, mrml, regions  # noqa: E402

PROMPT_SOURCES = ("region", "segmentation", "labelmap", "template", "sceneTemplate")
"""Prompt sources, in the order of promptSourceComboBox's items (the first is the default: it needs
only the CT)."""
TEMPLATE_SOURCES = ("region", "template", "sceneTemplate")
"""Sources whose prompts are found automatically, by localizing organs of a template (one built into
URSAM, a folder made by 'ursam build-template', or one built from labelled CTs in the scene) in the
input CT."""
REGION_SOURCES = ("region",)
"""Sources whose Organ set chooser lists URSAM's built-in templates (body regions) rather than the
catalogue's organ sets."""
SOURCE_CONTROLS = {
    "region": ("templateNoteLabel",),
    "segmentation": ("promptSegmentationLabel", "promptSegmentationSelector"),
    "labelmap": ("promptLabelMapLabel", "promptLabelMapSelector", "classesLabel", "classesPathLineEdit"),
    "template": ("templateLabel", "templatePathLineEdit", "templateNoteLabel"),
    "sceneTemplate": ("supportVolumeLabel", "supportVolumeSelector", "supportSegmentationLabel",
                      "supportSegmentationSelector", "supportsLabel", "supportsListWidget", "addSupportButton",
                      "clearSupportsButton", "templateNoteLabel"),
}
"""The controls each prompt source shows; those of the other sources are hidden. Another source is
added here, in PROMPT_SOURCES and promptSourceComboBox's items, and as a reader of its organs in
URSAMLogic.promptOrgans (and of its prompts in URSAMLogic.prepare)."""
LOCALIZER_TITLES = {"auto": "Automatic: registration, MedLAM on blanked scans",
                    "registration": "Registration of the template scans (no training)",
                    "medlam": "MedLAM landmarks (trained weights)"}
"""Titles of URSAMLib's localizers in localizerComboBox (others show their name)."""
PROMPT_MODES = ("slice", "box3d")
"""URSAMLib prompt modes, in the order of promptModeComboBox's items."""
PRECISIONS = ("float32", "bfloat16")
"""Model precisions, in the order of precisionComboBox's items (bfloat16: autocast on the GPU)."""
DEVICES = ("auto", "cpu", "cuda", "mps")
"""Devices, in the order of deviceComboBox's items."""
THRESHOLD_MODES = ("ursam", "fixed")
"""Rectification methods, in the order of thresholdModeComboBox's items: the class-specific
threshold of Eq. 3, or the fixed ln(2)/2, each followed by Algorithm 1."""
ANY_ORGAN = "any"
"""Organ set of every structure found in the prompts."""
POLL_INTERVAL_MS = 200
MARGIN_PATTERN = re.compile(r"\d+(?:\.\d+)?/\d+(?:\.\d+)?/\d+(?:\.\d+)? (?:mm|voxels?)")
"""A box margin as the .ui's texts write it ("5/10/10 mm"); the widget shows URSAMLib's in its place."""


def marginText(margin: BoxMargin | None = None) -> str:
    """A box margin (default: URSAMLib's) as the panel shows it, z/y/x: "5/10/10 mm"."""
    margin = margin or DEFAULT_BOX_MARGIN
    unit = _("mm") if margin.unit == "mm" else _("voxels")
    return "/".join(f"{value:g}" for value in margin.zyx) + f" {unit}"


SAVED_CONTROLS = {
    # parameter name: (control, property); combo boxes filled from catalogues keep their item's data
    "PromptSource": ("promptSourceComboBox", "currentData"),  # by name: scenes outlive the item order
    "PromptMode": ("promptModeComboBox", "currentIndex"),
    "OrganSet": ("organSetComboBox", "currentData"),
    "NumAug": ("numAugSliderWidget", "value"),
    "Ratio": ("ratioSliderWidget", "value"),
    "ClassesPath": ("classesPathLineEdit", "currentPath"),
    "TemplateFolder": ("templatePathLineEdit", "currentPath"),
    "Backbone": ("backboneComboBox", "currentData"),
    "Checkpoint": ("checkpointPathLineEdit", "currentPath"),
    "CheckpointSha256": ("checkpointSha256LineEdit", "text"),
    "Precision": ("precisionComboBox", "currentIndex"),
    "Window": ("windowLineEdit", "text"),
    "Device": ("deviceComboBox", "currentIndex"),
    "AlphaH": ("alphaHSliderWidget", "value"),
    "ThresholdMode": ("thresholdModeComboBox", "currentIndex"),
    "Localizer": ("localizerComboBox", "currentData"),
    "LocalizerWeights": ("localizerWeightsPathLineEdit", "currentPath"),
    "ShowEnsemble": ("showEnsembleCheckBox", "checked"),
    "Show3D": ("show3DCheckBox", "checked"),
    "HeatmapOpacity": ("heatmapOpacitySliderWidget", "value"),
}
"""Settings kept in the module's parameter node, so that they are saved with the scene."""
SAVED_NODES = {"InputVolume": "inputVolumeSelector", "PromptSegmentation": "promptSegmentationSelector",
               "PromptLabelMap": "promptLabelMapSelector", "OutputSegmentation": "outputSegmentationSelector"}
"""Node choices kept as references of the parameter node (the input first: choosing it chooses the output)."""
CONTROL_SIGNALS = {"value": "valueChanged(double)", "currentIndex": "currentIndexChanged(int)",
                   "currentData": "currentIndexChanged(int)", "currentPath": "currentPathChanged(QString)",
                   "checked": "toggled(bool)", "text": "textChanged(QString)"}


#
# URSAM
#

class URSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("URSAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["URSAM contributors"]
        self.parent.helpText = _(
            "Segments organs in CT with Segment Anything models and shows where the result is uncertain. "
            "Each organ is prompted with a box on every axial slice; each box is augmented into n shifted boxes, "
            "their mean probability is the ensemble, its binary entropy the uncertainty heatmap, and uncertain "
            "voxels are rectified by their intensity. The results are ordinary segments: correct them in the "
            "Segment Editor, guided by the heatmap and the 'next uncertain region' button. "
            "Needs 3D Slicer 5.10 or later. "
            "See <a href='https://github.com/ursam/ursam/blob/main/docs/slicer.md'>the documentation</a>.")
        self.parent.acknowledgementText = _(
            "URSAM implements UR-SAM: Y. Zhang, S. Hu, S. Ren, C. Jiang, Y. Cheng, Y. Qi, 'Enhancing the "
            "Reliability of Segment Anything Model for Auto-Prompting Medical Image Segmentation with "
            "Uncertainty Rectification', arXiv:2311.10529 (2023). The default model is LiteMedSAM "
            "(J. Ma et al., 'Segment anything in medical images', Nature Communications 15, 654, 2024).")


#
# Requests and outputs
#

@dataclass
class URSAMRequest:
    """What to segment and how; everything the GUI collects."""

    inputVolume: object
    """The CT: a vtkMRMLScalarVolumeNode in HU."""
    promptSource: str = "segmentation"
    """One of :data:`PROMPT_SOURCES`."""
    region: str = ""
    """Source ``region``: a built-in template, one of ``URSAMLib.builtin.region_names()``."""
    promptNode: object = None
    """A vtkMRMLSegmentationNode (source ``segmentation``) or vtkMRMLLabelMapVolumeNode (``labelmap``)."""
    classesPath: str = ""
    """Optional JSON class map naming the label values of a label map."""
    templateFolder: str = ""
    """Source ``template``: a folder made by ``ursam build-template``."""
    supports: list = field(default_factory=list)
    """Source ``sceneTemplate``: ``(CT volume node, segmentation node)`` pairs, the labelled scans
    the template is built from; segment names (or terminology) say which organ each segment is."""
    localizer: str | None = None
    """Template sources: one of URSAMLib's LOCALIZERS; None: the built-in region's own (chosen by
    measurement), or registration for the other template sources."""
    localizerWeights: str | None = None
    """Template sources: weights of a learned localizer."""
    promptMode: str = "slice"
    organSet: str = ANY_ORGAN
    organLabels: list[int] | None = None
    """The organs to segment (labels of :meth:`URSAMLogic.promptOrgans`); None: all of the organ set."""
    settings: Settings = field(default_factory=Settings)
    backbone: str = DEFAULT_BACKBONE
    checkpoint: str | None = None
    checkpointSha256: str | None = None
    """The SHA-256 the checkpoint must have (pins weights that no published digest vouches for)."""
    precision: str = "float32"
    """One of :data:`PRECISIONS`."""
    window: str = ""
    """CT window ``"LOW,HIGH"`` in HU; empty: the backbone's own."""
    device: str = "auto"
    outputSegmentation: object = None
    """An existing segmentation to write into; None creates "<volume> URSAM"."""


@dataclass
class PromptOrgan:
    """An organ the chosen prompt source can prompt."""

    label: int
    """Its label value in URSAMLib's label maps (the label value, or the segment's position + 1)."""
    output: mrml.OrganOutput
    source: str = ""
    """Segment ID (source ``segmentation``), the template's organ name (template sources) or ''
    (``labelmap``)."""
    inPrompt: bool = True
    """False for organs of a built-in set that the prompt source does not hold."""


@dataclass
class SceneSupports:
    """The organs that labelled CTs in the scene can give a template."""

    organs: list[PromptOrgan]
    """The catalogue organs segmented in every support; ``source`` is the catalogue key."""
    segments: list[dict[str, str]]
    """Per support: catalogue key → segment ID."""


@dataclass
class PreparedRun:
    """A request turned into a job: read from the scene, checked, not yet computed."""

    request: URSAMRequest
    job: jobs.Job
    frame: io.AxialFrame
    organs: list[mrml.OrganOutput]
    missing: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    """Doubts that do not stop the run (e.g. intensities that are not CT), for the user."""


@dataclass
class URSAMOutputs:
    """The nodes of one run and the result behind them (kept for re-rectification)."""

    inputVolume: object
    segmentation: object
    ensemble: object
    uncertainty: object
    result: SegmentationResult
    frame: io.AxialFrame
    organs: list[mrml.OrganOutput]
    statistics: list[regions.OrganStatistics]
    regions: list[regions.UncertainRegion]
    missing: dict[str, str] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)
    """Digests of URSAM's rectified segments as URSAM last wrote them (segment id → digest), to
    notice the user's edits before they would be replaced."""


#
# URSAMLogic
#

class URSAMLogic(ScriptedLoadableModuleLogic):
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
    def _catalogueOutput(organ: catalogue.Organ) -> mrml.OrganOutput:
        return mrml.OrganOutput(0, organ.key, organ.name, organ.color, catalogue.terminology_entry(organ))

    def _describe(self, label: int, name: str, terminology: str, color) -> mrml.OrganOutput:
        organ = catalogue.match_terminology(terminology) if terminology else None
        organ = organ or catalogue.match_name(name)
        if organ is None:
            return mrml.OrganOutput(label, f"prompt:{catalogue.normalise(name) or label}", name,
                                    tuple(color) if color is not None else (0.9, 0.6, 0.2))
        return replace(self._catalogueOutput(organ), label=label)

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
                     ) -> tuple[list[OrganPrompt], list[mrml.OrganOutput], dict[str, str]]:
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
                raise URSAMError(f"{request.promptNode.GetName()} and {request.inputVolume.GetName()} are under "
                                 "different transforms; harden the transforms (Data module: right-click > Harden "
                                 "transform) or put both under the same one, then run again.")
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
                             ) -> tuple[jobs.TemplateLocalization, list[mrml.OrganOutput]]:
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
            job = jobs.InProcessJob(prepared.job, self.backboneLoader)
        else:
            job = jobs.BackgroundJob(prepared.job, self.python, self.workerArguments, self.workerEnvironment())
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
        return self.apply(prepared, job.result(), job.not_found)

    def apply(self, prepared: PreparedRun, result: SegmentationResult,
              notFound: dict[str, str] | None = None) -> URSAMOutputs:
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
                    not mrml.outputs_belong_to(segmentation, volume):
                segmentation = mrml.outputs_of(scene, volume)  # another CT's outputs are never overwritten
            if segmentation is None or segmentation.GetScene() is None:
                segmentation = new(mrml.new_segmentation(scene, baseName, volume))
            ensemble = segmentation.GetNodeReference(mrml.REFERENCE_ENSEMBLE)
            if ensemble is None:
                ensemble = new(mrml.new_segmentation(scene, f"{baseName} ensemble", volume))
                mrml.style_as_ensemble(ensemble)
                mrml.set_segmentation_visible(ensemble, False)  # hidden until asked for
            uncertainty = segmentation.GetNodeReference(mrml.REFERENCE_UNCERTAINTY)
            rectifiedLabels = result.label_map("rectified")
            mrml.write_organ_segments(segmentation, frame.from_axial(rectifiedLabels), organs, volume, "rectified")
            mrml.write_organ_segments(ensemble, frame.from_axial(result.label_map("ensemble")),
                                      [replace(o, color=mrml.ensemble_color(o.color)) for o in organs], volume,
                                      "ensemble")
            if uncertainty is None:
                uncertainty = new(mrml.write_uncertainty_volume(scene, None, f"{baseName} uncertainty",
                                                                frame.from_axial(result.uncertainty_map()), volume))
            else:
                mrml.write_uncertainty_volume(scene, uncertainty, "", frame.from_axial(result.uncertainty_map()),
                                              volume)
            segmentation.SetNodeReferenceID(mrml.REFERENCE_INPUT, volume.GetID())
            segmentation.SetNodeReferenceID(mrml.REFERENCE_ENSEMBLE, ensemble.GetID())
            segmentation.SetNodeReferenceID(mrml.REFERENCE_UNCERTAINTY, uncertainty.GetID())
            for node in created:
                mrml.place_beside(node, volume)
        except Exception:
            for node in created:
                scene.RemoveNode(node)
            raise
        outputs = URSAMOutputs(volume, segmentation, ensemble, uncertainty, result, frame, organs,
                               regions.organ_statistics(result, frame.spacing, rectifiedLabels),
                               regions.uncertain_regions(result), {**prepared.missing, **(notFound or {})})
        self._remember(outputs)
        return outputs

    @staticmethod
    def _remember(outputs: URSAMOutputs) -> None:
        ours = mrml.ursam_segments(outputs.segmentation, "rectified")
        outputs.written = mrml.segment_digests(outputs.segmentation, ours.values(), outputs.inputVolume)

    def editedOrgans(self, outputs: URSAMOutputs) -> list[str]:
        """Names of URSAM's rectified segments the user changed (or deleted) since URSAM wrote them:
        re-rectifying would replace those edits."""
        now = mrml.segment_digests(outputs.segmentation, outputs.written, outputs.inputVolume)
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
        mrml.write_organ_segments(outputs.segmentation, outputs.frame.from_axial(labels), outputs.organs,
                                  outputs.inputVolume, "rectified")
        outputs.statistics = regions.organ_statistics(outputs.result, outputs.frame.spacing, labels)
        outputs.regions = regions.uncertain_regions(outputs.result)
        self._remember(outputs)

    # -- viewing ------------------------------------------------------------------------

    def showResults(self, outputs: URSAMOutputs, heatmapOpacity: float, showEnsemble: bool,
                    show3D: bool = False) -> None:
        """CT in the background, heatmap in the foreground of every slice view; ensemble and 3D
        surfaces as asked."""
        scene = outputs.inputVolume.GetScene()
        mrml.show_overlay(scene, outputs.inputVolume, outputs.uncertainty, heatmapOpacity)
        mrml.set_segmentation_visible(outputs.ensemble, showEnsemble)
        self.setShow3D(outputs, show3D)

    def setShow3D(self, outputs: URSAMOutputs, visible: bool) -> None:
        """URSAM's segments as surfaces in the 3D views (built on first use: that takes a moment)."""
        mrml.show_surfaces(outputs.segmentation, visible)

    def setHeatmapOpacity(self, outputs: URSAMOutputs, opacity: float) -> None:
        mrml.set_overlay_opacity(outputs.inputVolume.GetScene(), outputs.uncertainty, opacity)

    def setEnsembleVisible(self, outputs: URSAMOutputs, visible: bool) -> None:
        mrml.set_segmentation_visible(outputs.ensemble, visible)

    def centreOn(self, outputs: URSAMOutputs, zyx) -> np.ndarray:
        """Centre the slice views on an axial voxel ``(z, y, x)``; returns its RAS position."""
        ras = mrml.ras_of_axial_index(zyx, outputs.frame, outputs.inputVolume)
        mrml.centre_slice_views(outputs.inputVolume.GetScene(), ras)
        return ras


#
# URSAMWidget
#

def reportErrors(slot):
    """A widget slot whose errors reach the user: a user mistake as one dialog line, anything else as
    an error dialog with the details (Qt would only print the traceback to the Python console)."""

    @functools.wraps(slot)
    def guarded(self, *args, **kwargs):
        try:
            return slot(self, *args, **kwargs)
        except URSAMError as error:
            self.ui.statusLabel.text = str(error)
            slicer.util.errorDisplay(str(error), windowTitle=_("URSAM"))
        except Exception:
            self.showBug(_("URSAM failed unexpectedly."))

    return guarded


class URSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Glue between the .ui and :class:`URSAMLogic`."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self.prepared = None
        self.outputs: URSAMOutputs | None = None
        self.regionIndex = -1
        self.started = 0.0
        self.timer = None
        self._promptOrgans: list[PromptOrgan] = []
        self._observedPrompt = None
        """The prompt segmentation whose segments the Organs list follows."""
        self._promptSignature = None
        self._shownLog = ""
        self.supports: list[tuple[object, object]] = []
        """The (CT volume, segmentation) pairs added as supports of a template built from the scene."""
        self._organSetKind = None
        """What the Organ set chooser lists now: "region" (built-in templates) or "catalogue"."""
        self._organSetChoices: dict[str, str] = {}
        """The organ set last chosen of each kind, shown again when the prompt source returns to it."""
        self._fillingOrganSets = False
        self._preselectedFor = None
        """The (template source, region) whose default localizer the Localizer chooser was last set to."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/URSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = URSAMLogic()

        for index, source in enumerate(PROMPT_SOURCES):  # saved by name: the item order may change
            self.ui.promptSourceComboBox.setItemData(index, source)
        for name, entry in backboneCatalogue().items():
            self.ui.backboneComboBox.addItem(entry["title"], name)
        self.ui.backboneComboBox.setCurrentIndex(self.ui.backboneComboBox.findData(DEFAULT_BACKBONE))
        for name in LOCALIZERS:
            self.ui.localizerComboBox.addItem(LOCALIZER_TITLES.get(name, name), name)
        self.showDefaults()

        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPollJob)

        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.promptSourceComboBox.connect("currentIndexChanged(int)", self.onPromptChanged)
        self.ui.promptSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onPromptChanged)
        self.ui.promptLabelMapSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onPromptChanged)
        self.ui.classesPathLineEdit.connect("currentPathChanged(QString)", self.onPromptChanged)
        self.ui.templatePathLineEdit.connect("currentPathChanged(QString)", self.onPromptChanged)
        self.ui.addSupportButton.connect("clicked(bool)", self.onAddSupport)
        self.ui.clearSupportsButton.connect("clicked(bool)", self.onClearSupports)
        self.ui.organSetComboBox.connect("currentIndexChanged(int)", self.onPromptChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.alphaHSliderWidget.connect("valueChanged(double)", self.onRectificationChanged)
        self.ui.thresholdModeComboBox.connect("currentIndexChanged(int)", self.onRectificationChanged)
        self.ui.showEnsembleCheckBox.connect("toggled(bool)", self.onShowEnsemble)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3D)
        self.ui.heatmapOpacitySliderWidget.connect("valueChanged(double)", self.onHeatmapOpacity)
        self.ui.nextRegionButton.connect("clicked(bool)", self.onNextRegion)
        self.ui.previousRegionButton.connect("clicked(bool)", self.onPreviousRegion)
        self.ui.organTableWidget.connect("cellClicked(int,int)", self.onOrganClicked)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        for name, (control, prop) in SAVED_CONTROLS.items():
            getattr(self.ui, control).connect(CONTROL_SIGNALS[prop], self.saveParameters)
        for control in SAVED_NODES.values():
            getattr(self.ui, control).connect("currentNodeChanged(vtkMRMLNode*)", self.saveParameters)

        self.onInputVolumeChanged()
        self.onPromptChanged()
        self.updateOutputs()
        self.restoreParameters()
        unsupported = dependencies.unsupported_slicer((slicer.app.majorVersion, slicer.app.minorVersion))
        if unsupported:  # said at once, not after a failed installation that seems to blame the network
            self.ui.applyButton.setEnabled(False)
            self.ui.statusLabel.text = unsupported
            logging.error(unsupported)

    def showDefaults(self) -> None:
        """Show URSAMLib's defaults (UR-SAM settings, box margin), whatever the .ui was written with:
        they are defined once, in URSAMLib. Called before the controls are connected, so that a
        scene's saved settings are not overwritten."""
        defaults = Settings()
        self.ui.numAugSliderWidget.value = defaults.num_aug
        self.ui.ratioSliderWidget.value = defaults.ratio
        self.ui.alphaHSliderWidget.value = defaults.alpha_h
        self.ui.thresholdModeComboBox.currentIndex = THRESHOLD_MODES.index(defaults.method)
        margin = marginText()
        combo = self.ui.promptModeComboBox
        box3d = PROMPT_MODES.index("box3d")
        combo.setItemText(box3d, MARGIN_PATTERN.sub(margin, combo.itemText(box3d)))
        combo.toolTip = MARGIN_PATTERN.sub(margin, combo.toolTip)
        self.ui.templateNoteLabel.text = MARGIN_PATTERN.sub(margin, self.ui.templateNoteLabel.text)

    RELOADED_PACKAGES = ("URSAMLib", "URSAMSlicerLib")

    def onReload(self):
        """Developer mode's Reload: URSAM.py is reloaded by Slicer; forget URSAMLib and URSAMSlicerLib
        too, so that the reloaded module imports their edited code rather than the copies in memory."""
        for name in [n for n in sys.modules if n.split(".")[0] in self.RELOADED_PACKAGES]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self):
        self.removeObservers()
        self._observedPrompt = None
        if self.job is not None:
            self.job.cancel()
            self.job = None
        if self.timer is not None:
            self.timer.stop()

    # -- the parameter node: settings saved with the scene --------------------------------

    def restoreParameters(self) -> None:
        """Show the settings of the scene's parameter node (saved with the scene); a new node takes
        the controls' current settings."""
        node = self.logic.getParameterNode()
        if not node.GetParameterNames():
            self.saveParameters()
            return
        self._restoring = True
        try:
            for name, (control, prop) in SAVED_CONTROLS.items():
                text = node.GetParameter(name)
                if text:
                    self._setControl(getattr(self.ui, control), prop, text)
            for name, control in SAVED_NODES.items():
                if node.GetNodeReferenceID(name) or name != "InputVolume":
                    getattr(self.ui, control).setCurrentNode(node.GetNodeReference(name))
        finally:
            self._restoring = False
        self.saveParameters()

    @staticmethod
    def _setControl(widget, prop: str, text: str) -> None:
        if prop == "value":
            widget.value = float(text)
        elif prop == "currentIndex":
            widget.currentIndex = int(text)
        elif prop == "currentData":
            index = widget.findData(text)
            if index >= 0:
                widget.currentIndex = index
        elif prop == "checked":
            widget.checked = text == "true"
        elif prop == "text":
            widget.text = text
        else:
            widget.currentPath = text

    def saveParameters(self, *args) -> None:
        """Keep what the controls show in the parameter node."""
        if getattr(self, "_restoring", False) or self.logic is None or slicer.mrmlScene is None:
            return
        node = self.logic.getParameterNode()
        wasModified = node.StartModify()
        for name, (control, prop) in SAVED_CONTROLS.items():
            value = getattr(getattr(self.ui, control), prop)
            node.SetParameter(name, ("true" if value else "false") if prop == "checked" else str(value or ""))
        for name, control in SAVED_NODES.items():
            chosen = getattr(self.ui, control).currentNode()
            node.SetNodeReferenceID(name, chosen.GetID() if chosen is not None else None)
        node.EndModify(wasModified)

    def onSceneEndImport(self, caller=None, event=None):
        """A scene was loaded: show its saved settings."""
        self.restoreParameters()

    def onSceneEndClose(self, caller=None, event=None):
        if self.job is not None:
            self.job.cancel()
            self.job = None
            self.timer.stop()
            self.setRunning(False)
        self.outputs = None
        self.updateOutputs()
        self.onClearSupports()

    # -- reading the GUI ----------------------------------------------------------------

    def promptSource(self) -> str:
        return PROMPT_SOURCES[self.ui.promptSourceComboBox.currentIndex]

    def organSetAndRegion(self) -> tuple[str, str]:
        """The Organ set chooser's choice as ``(organ set, built-in region)``: for the built-in template
        source it picks the region (and all of its organs are offered), for the others the organ set."""
        chosen = self.ui.organSetComboBox.currentData
        if self.promptSource() in REGION_SOURCES:
            return ANY_ORGAN, chosen or ""
        return chosen or ANY_ORGAN, ""

    def promptNode(self):
        source = self.promptSource()
        if source == "segmentation":
            return self.ui.promptSegmentationSelector.currentNode()
        if source == "labelmap":
            return self.ui.promptLabelMapSelector.currentNode()
        return None

    def settingsFromGUI(self) -> Settings:
        """The UR-SAM settings the sliders and combo boxes show."""
        return Settings(num_aug=int(round(self.ui.numAugSliderWidget.value)),
                        ratio=float(self.ui.ratioSliderWidget.value),
                        method=THRESHOLD_MODES[self.ui.thresholdModeComboBox.currentIndex],
                        alpha_h=float(self.ui.alphaHSliderWidget.value))

    def checkedOrganLabels(self) -> list[int]:
        labels = []
        for row in range(self.ui.organsListWidget.count):
            item = self.ui.organsListWidget.item(row)
            if item.checkState() == qt.Qt.Checked and item.data(qt.Qt.UserRole):
                labels.append(int(item.data(qt.Qt.UserRole)))
        return labels

    def requestFromGUI(self) -> URSAMRequest:
        return URSAMRequest(
            inputVolume=self.ui.inputVolumeSelector.currentNode(),
            promptSource=self.promptSource(),
            promptNode=self.promptNode(),
            classesPath=self.ui.classesPathLineEdit.currentPath,
            templateFolder=self.ui.templatePathLineEdit.currentPath,
            supports=list(self.supports),
            region=self.organSetAndRegion()[1],
            localizer=self.ui.localizerComboBox.currentData,
            localizerWeights=self.ui.localizerWeightsPathLineEdit.currentPath or None,
            promptMode=PROMPT_MODES[self.ui.promptModeComboBox.currentIndex],
            organSet=self.organSetAndRegion()[0],
            organLabels=self.checkedOrganLabels(),
            settings=self.settingsFromGUI(),
            backbone=self.ui.backboneComboBox.currentData,
            checkpoint=self.ui.checkpointPathLineEdit.currentPath or None,
            checkpointSha256=self.ui.checkpointSha256LineEdit.text.strip() or None,
            precision=PRECISIONS[self.ui.precisionComboBox.currentIndex],
            window=self.ui.windowLineEdit.text,
            device=DEVICES[self.ui.deviceComboBox.currentIndex],
            outputSegmentation=self.ui.outputSegmentationSelector.currentNode())

    # -- prompts ------------------------------------------------------------------------

    @reportErrors
    def onInputVolumeChanged(self, volume=None):
        """Another CT: write into its own URSAM outputs (or new ones), never into the previous CT's."""
        volume = self.ui.inputVolumeSelector.currentNode()
        self.ui.outputSegmentationSelector.setCurrentNode(
            mrml.outputs_of(slicer.mrmlScene, volume) if volume is not None else None)

    PROMPT_SEGMENT_EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified")

    def observePrompt(self, node) -> None:
        """Follow the segments of the chosen prompt segmentation: adding, removing or renaming one
        updates the Organs list."""
        if node is self._observedPrompt:
            return
        for event in self.PROMPT_SEGMENT_EVENTS:
            if self._observedPrompt is not None:
                self.removeObserver(self._observedPrompt, getattr(slicer.vtkSegmentation, event),
                                    self.onPromptSegmentsChanged)
            if node is not None:
                self.addObserver(node, getattr(slicer.vtkSegmentation, event), self.onPromptSegmentsChanged)
        self._observedPrompt = node

    def _segmentSignature(self, node):
        if node is None or node.GetScene() is None:
            return None
        return tuple((segmentId, name, mrml.segment_terminology(node, segmentId))
                     for segmentId, name in mrml.prompt_segments(node))

    @reportErrors
    def onPromptSegmentsChanged(self, caller=None, event=None):
        # SegmentModified also fires for every brush stroke: rebuild only when names or terminology changed
        if self._segmentSignature(self._observedPrompt) != self._promptSignature:
            self.onPromptChanged()

    def fillOrganSets(self, source: str) -> None:
        """List in the Organ set chooser what fits the prompt source: URSAM's built-in templates for
        the built-in template source, else "any organ" and the catalogue's organ sets."""
        kind = "region" if source in REGION_SOURCES else "catalogue"
        combo = self.ui.organSetComboBox
        if kind == self._organSetKind:
            return
        if self._organSetKind is not None:
            self._organSetChoices[self._organSetKind] = combo.currentData
        self._organSetKind = kind
        self._fillingOrganSets = True  # clearing and adding items signal changes: one update at the end
        try:
            combo.clear()
            if kind == "region":
                for entry in builtin.describe():
                    combo.addItem(entry["title"], entry["region"])
            else:
                combo.addItem(_("Any organ in the prompts"), ANY_ORGAN)
                for key, organSet in catalogue.organ_sets().items():
                    combo.addItem(organSet.title, key)
            combo.setCurrentIndex(max(combo.findData(self._organSetChoices.get(kind)), 0))
        finally:
            self._fillingOrganSets = False

    def preselectLocalizer(self, source: str, region: str) -> None:
        """A newly chosen template source or built-in region: choose its default localizer (a region's
        was chosen by measurement; registration for the others); the user may choose another under
        Advanced, and it stays until the source or region changes."""
        if source not in TEMPLATE_SOURCES or (source, region) == self._preselectedFor:
            return
        self._preselectedFor = (source, region)
        localizer = next((entry["localizer"] for entry in builtin.describe() if entry["region"] == region),
                         "registration")
        index = self.ui.localizerComboBox.findData(localizer)
        if index >= 0:
            self.ui.localizerComboBox.setCurrentIndex(index)

    @reportErrors
    def onPromptChanged(self, *args):
        if self._fillingOrganSets:
            return
        source = self.promptSource()
        self.fillOrganSets(source)
        organSet, region = self.organSetAndRegion()
        self.preselectLocalizer(source, region)
        node = self.promptNode() if source == "segmentation" else None
        self.observePrompt(node)
        self._promptSignature = self._segmentSignature(node)
        ticked = set(self.checkedOrganLabels())  # organs the user unticked stay unticked (by organ, not row)
        unticked = {organ.output.key for organ in self._promptOrgans if organ.inPrompt and organ.label not in ticked}
        shown = set(SOURCE_CONTROLS[source])
        for name in sorted(set().union(*SOURCE_CONTROLS.values())):
            getattr(self.ui, name).setVisible(name in shown)
        self.ui.promptModeComboBox.setEnabled(source not in TEMPLATE_SOURCES)
        try:
            self._promptOrgans = self.logic.promptOrgans(source, self.promptNode(), organSet,
                                                         self.ui.classesPathLineEdit.currentPath,
                                                         self.ui.templatePathLineEdit.currentPath, self.supports,
                                                         region)
        except URSAMError as error:
            self._promptOrgans = []
            self.ui.statusLabel.text = str(error)
        absent = _("{name} (not in the template)") if source in TEMPLATE_SOURCES else _("{name} (no prompt)")
        self.ui.organsListWidget.clear()
        for organ in self._promptOrgans:
            text = organ.output.name if organ.inPrompt else absent.format(name=organ.output.name)
            item = qt.QListWidgetItem(text)
            if organ.inPrompt:
                item.setFlags(qt.Qt.ItemIsUserCheckable | qt.Qt.ItemIsEnabled)
                item.setCheckState(qt.Qt.Unchecked if organ.output.key in unticked else qt.Qt.Checked)
                item.setData(qt.Qt.UserRole, organ.label)
            else:
                item.setFlags(qt.Qt.NoItemFlags)
            self.ui.organsListWidget.addItem(item)

    @reportErrors
    def onAddSupport(self, *args):
        """Add the chosen (CT volume, segmentation) pair to the supports of the scene template."""
        volume = self.ui.supportVolumeSelector.currentNode()
        segmentation = self.ui.supportSegmentationSelector.currentNode()
        if volume is None or segmentation is None:
            self.ui.statusLabel.text = _("Choose a support volume and the segmentation of its organs first.")
            return
        if (volume, segmentation) not in self.supports:
            self.supports.append((volume, segmentation))
            self.ui.supportsListWidget.addItem(qt.QListWidgetItem(
                _("{volume}: {segmentation}").format(volume=volume.GetName(), segmentation=segmentation.GetName())))
        self.onPromptChanged()

    @reportErrors
    def onClearSupports(self, *args):
        self.supports = []
        self.ui.supportsListWidget.clear()
        self.onPromptChanged()

    # -- running ------------------------------------------------------------------------

    def onApplyButton(self, *args):
        if self.job is not None:
            self.job.cancel()
            self.onPollJob()
            return
        try:
            with slicer.util.WaitCursor():
                self.prepared = self.prepareAndInstall(self.requestFromGUI())
                self.started = time.monotonic()
                self.job = self.logic.start(self.prepared)
        except URSAMError as error:
            self.prepared = None
            slicer.util.errorDisplay(str(error), windowTitle=_("URSAM"))
            return
        except Exception:
            self.prepared = self.job = None
            self.showBug(_("Starting the segmentation failed."))
            return
        self.setRunning(True)
        self.timer.start()
        for warning in self.prepared.warnings:  # shown while the job already runs; Cancel stays available
            slicer.util.warningDisplay(warning, windowTitle=_("URSAM"))
        self.onPollJob()

    def prepareAndInstall(self, request: URSAMRequest) -> PreparedRun:
        """Check the inputs, then install what is missing: a user mistake is reported before a long
        installation, not after it."""
        try:
            prepared = self.logic.prepare(request)
        except ImportError:  # checking needed a package that is not installed yet: install, then check
            prepared = None
        self.ui.statusLabel.text = _("Checking URSAM's Python packages...")
        self.logic.ensureDependencies()
        return prepared if prepared is not None else self.logic.prepare(request)

    def showBug(self, message: str, log: str = "") -> None:
        """An unexpected error (a bug, not a user mistake): a dialog with the traceback and the
        worker's log as details, for a bug report, and the same in Slicer's log."""
        details = traceback.format_exc()
        if log:
            details += "\n--- worker log ---\n" + log
        logging.error(f"{message}\n{details}")
        self.ui.statusLabel.text = message
        slicer.util.errorDisplay(message + " " + _("Click 'Show Details' for what to include in a bug report."),
                                 windowTitle=_("URSAM"), detailedText=details)

    def setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Auto-segment organs")
        self.ui.inputsCollapsibleButton.setEnabled(not running)
        self.ui.advancedCollapsibleButton.setEnabled(not running)
        self.ui.outputsCollapsibleButton.setEnabled(not running)
        if running:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Starting...")

    def onPollJob(self):
        """Timer slot: show the job's progress and, once it has finished, its outcome. An unexpected
        error ends the job and is shown with the details and the worker's log."""
        if self.job is None:
            return
        try:
            self.pollJob()
        except Exception:
            job, self.job, self.prepared = self.job, None, None
            self.timer.stop()
            if job is not None:
                job.cancel()
            self.setRunning(False)
            self.showBug(_("The segmentation failed."), job.log() if job is not None else "")

    def pollJob(self) -> None:
        status = self.job.poll()
        self.showLog(self.job.log())
        self.ui.progressBar.value = int(round(100 * status.fraction))
        self.ui.statusLabel.text = status.message
        if not status.finished:
            return
        self.timer.stop()
        job, prepared = self.job, self.prepared
        self.job = self.prepared = None
        self.setRunning(False)
        if status.state == "cancelled":
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")
            return
        if status.state == "failed":
            self.ui.statusLabel.text = _("Failed: {error}").format(error=status.error)
            details = {"detailedText": status.details} if status.details else {}  # a bug: its log, for support
            if status.details:
                logging.error(f"URSAM: {status.error}\n{status.details}")
            slicer.util.errorDisplay(status.error, windowTitle=_("URSAM"), **details)
            return
        try:
            self.outputs = self.logic.apply(prepared, job.result(), job.not_found)
        except URSAMError as error:
            slicer.util.errorDisplay(str(error), windowTitle=_("URSAM"))
            return
        except Exception:
            self.showBug(_("Writing the results into the scene failed."))
            return
        for warning in getattr(job, "warnings", []):  # e.g. weights that nothing vouches for
            logging.warning(warning)
            slicer.util.warningDisplay(warning, windowTitle=_("URSAM"))
        self.ui.outputSegmentationSelector.setCurrentNode(self.outputs.segmentation)
        self.logic.showResults(self.outputs, self.ui.heatmapOpacitySliderWidget.value,
                               self.ui.showEnsembleCheckBox.checked, self.ui.show3DCheckBox.checked)
        missing = "; ".join(f"{name}: {reason}" for name, reason in self.outputs.missing.items())
        count = len(self.outputs.organs)
        self.ui.statusLabel.text = _("Segmented {count} {organs} in {seconds:.0f} s.").format(
            count=count, organs=_("organ") if count == 1 else _("organs"),
            seconds=time.monotonic() - self.started) + (
            " " + _("Not segmented: {missing}.").format(missing=missing) if missing else "")
        self.regionIndex = -1
        self.updateOutputs()

    # -- outputs ------------------------------------------------------------------------

    @reportErrors
    def onRectificationChanged(self, *args):
        """α_h or the threshold mode changed: re-rectify the last result (no SAM recomputation)."""
        if self.outputs is None or self.job is not None:
            return
        settings = self.settingsFromGUI()
        edited = self.logic.editedOrgans(self.outputs)
        if edited and not slicer.util.confirmOkCancelDisplay(
                _("You edited {organs} since URSAM wrote them. Re-rectifying replaces these segments with the new "
                  "rectification, and your edits are lost. Continue? (To keep an edit, copy the segment first: "
                  "URSAM never touches segments it did not make.)").format(organs=", ".join(edited)),
                windowTitle=_("URSAM")):
            self.ui.statusLabel.text = _("Rectification not updated: your edits to {organs} were kept.").format(
                organs=", ".join(edited))
            return
        try:
            self.logic.rerectify(self.outputs, alpha_h=settings.alpha_h, method=settings.method)
        except URSAMError as error:
            slicer.util.errorDisplay(str(error), windowTitle=_("URSAM"))
            return
        self.regionIndex = -1
        self.updateOutputs()
        self.ui.statusLabel.text = _("Rectification updated (α_h = {alpha:.2f}, {mode}).").format(
            alpha=settings.alpha_h, mode=self.ui.thresholdModeComboBox.currentText)

    @reportErrors
    def onShowEnsemble(self, visible):
        if self.outputs is not None:
            self.logic.setEnsembleVisible(self.outputs, bool(visible))

    @reportErrors
    def onShow3D(self, visible):
        if self.outputs is not None:
            with slicer.util.WaitCursor():
                self.logic.setShow3D(self.outputs, bool(visible))

    def showLog(self, text: str) -> None:
        """Put the worker's output in the log panel (only when it changed: the timer polls often)."""
        if text != self._shownLog:
            self._shownLog = text
            self.ui.logTextEdit.setPlainText(text)

    @reportErrors
    def onHeatmapOpacity(self, opacity):
        if self.outputs is not None:
            self.logic.setHeatmapOpacity(self.outputs, float(opacity))

    @reportErrors
    def onNextRegion(self, *args):
        self.stepRegion(+1)

    @reportErrors
    def onPreviousRegion(self, *args):
        self.stepRegion(-1)

    def stepRegion(self, step: int) -> None:
        if self.outputs is None or not self.outputs.regions:
            return
        count = len(self.outputs.regions)
        if self.regionIndex < 0:  # the first step goes to the most (or, backwards, least) uncertain region
            self.regionIndex = 0 if step > 0 else count - 1
        else:
            self.regionIndex = (self.regionIndex + step) % count
        region = self.outputs.regions[self.regionIndex]
        self.logic.centreOn(self.outputs, region.centre)
        self.ui.statusLabel.text = _("Uncertain region {index} of {count}: {organ}, {voxels} voxels.").format(
            index=self.regionIndex + 1, count=count, organ=region.organ, voxels=region.voxels)

    @reportErrors
    def onOrganClicked(self, row, column=0):
        if self.outputs is None or not 0 <= row < len(self.outputs.statistics):
            return
        statistics = self.outputs.statistics[row]
        focus = regions.organ_focus(self.outputs.result, statistics.label)
        if focus is not None:
            self.logic.centreOn(self.outputs, focus)
            self.ui.statusLabel.text = _("{organ}: centred on its most uncertain region.").format(organ=statistics.name)

    def updateOutputs(self) -> None:
        """Fill the organ table and enable the region buttons for the current result."""
        table = self.ui.organTableWidget
        rows = self.outputs.statistics if self.outputs is not None else []
        table.setRowCount(len(rows))
        for row, statistics in enumerate(rows):
            cells = (statistics.name, f"{statistics.volume_ml:.1f}", f"{statistics.mean_uncertainty:.3f}",
                     _("Review") if statistics.needs_review else _("OK"))
            for column, text in enumerate(cells):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        hasRegions = self.outputs is not None and bool(self.outputs.regions)
        self.ui.nextRegionButton.setEnabled(hasRegions)
        self.ui.previousRegionButton.setEnabled(hasRegions)


#
# URSAMTest
#

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
        segmentation = mrml.new_segmentation(slicer.mrmlScene, "URSAM test prompts", volume)
        segmentation.GetSegmentation().AddEmptySegment("prompt", name)
        image, extent = mrml._mask_image(mask, mrml.ijk_to_ras(volume))
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
        image, extent = mrml._mask_image(userMask, mrml.ijk_to_ras(volume))
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
        while job._process is None and time.monotonic() < deadline:  # the job is written, then the worker starts
            job.poll()
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
        prompts = mrml.new_segmentation(slicer.mrmlScene, "URSAM test long prompts", volume)
        prompts.GetSegmentation().AddEmptySegment("prompt", "Liver")
        image, extent = mrml._mask_image(longer, ijkToRas)
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
