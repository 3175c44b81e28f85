"""What the module's logic is asked for and hands back: the prompt sources and model choices the
panel offers (in the order of their combo boxes' items), a request, the organs a prompt source can
prompt, a run prepared from the scene, and the outputs of a run.
"""
from __future__ import annotations

from dataclasses import dataclass, field


from URSAMLib import io
from URSAMLib.backbones import DEFAULT_BACKBONE
from URSAMLib.pipeline import SegmentationResult, Settings
from URSAMSlicerLib import catalogue, jobs, regions


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
LOCALIZER_TITLES = {"auto": "Automatic: atlas, MedLAM on blanked scans",
                    "registration": "Registration of the template scans (no training)",
                    "atlas": "Atlas: the template scans' labels registered and fused",
                    "medlam": "MedLAM landmarks (trained weights)"}
"""Titles of URSAMLib's localizers in localizerComboBox (others show their name)."""
PROMPT_MODES = ("slice", "box3d")
"""URSAMLib prompt modes, in the order of promptModeComboBox's items."""
PRECISIONS = ("float32", "bfloat16")
"""Model precisions, in the order of precisionComboBox's items (bfloat16: OpenVINO's bf16 on a CPU,
autocast on a GPU)."""
DEVICES = ("auto", "cpu", "cuda", "mps")
"""Devices, in the order of deviceComboBox's items."""
THRESHOLD_MODES = ("per-organ", "ursam", "fixed")
"""Rectification methods, in the order of thresholdModeComboBox's items: each organ's measured rule
(URSAMLib.rectify.PER_ORGAN), or the paper's Algorithm 1 after the class-specific threshold of Eq. 3
or the fixed ln(2)/2."""
ANY_ORGAN = "any"
"""Organ set of every structure found in the prompts."""

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
    output: catalogue.OrganLook
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
    organs: list[catalogue.OrganLook]
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
    organs: list[catalogue.OrganLook]
    statistics: list[regions.OrganStatistics]
    regions: list[regions.UncertainRegion]
    missing: dict[str, str] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)
    """Digests of URSAM's rectified segments as URSAM last wrote them (segment id → digest), to
    notice the user's edits before they would be replaced."""
    qualityContext: object = None
    """The run's :class:`URSAMLib.quality.QualityContext` (None: no predicted DSC)."""
    errorLikelihoods: dict = field(default_factory=dict)
    """Organ name → its error likelihood (:func:`URSAMSlicerLib.regions.error_likelihoods`), computed
    once per run: it ranks the uncertain regions after every re-rectification."""
