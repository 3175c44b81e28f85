"""The panel's settings: the defaults shown (URSAMLib's), and the controls kept in the module's
parameter node so that they are saved with the scene.
"""
from __future__ import annotations

import re


from URSAMLib.prompts import DEFAULT_BOX_MARGIN, BoxMargin
from URSAMSlicerLib.gui import _


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
    "Rectification": ("thresholdModeComboBox", "currentIndex"),  # not "ThresholdMode": its items changed
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
