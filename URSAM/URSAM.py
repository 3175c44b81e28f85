"""URSAM: automatic organ segmentation in CT with Segment Anything and an uncertainty map.

The module is glue: the algorithms are in URSAMLib (plain Python), the scene conversions, the
background job and the module's own classes (logic, widget, self-test) in URSAMSlicerLib; this
file declares the module and re-exports those classes, where Slicer looks them up by name.
:class:`URSAMLogic` works without the GUI::

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

import sys
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule


def _addSourceTreeToPath() -> None:
    """In a source checkout URSAMLib sits beside URSAM/ rather than beside URSAM.py (as it does in
    a Slicer build), so put the checkout on the path before importing it — first, so that the
    module always runs with the URSAMLib of its own checkout."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "URSAMLib").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


_addSourceTreeToPath()

from URSAMLib.errors import URSAMError  # noqa: E402
from URSAMLib.localize import LOCALIZERS  # noqa: E402
from URSAMLib.pipeline import Settings  # noqa: E402
from URSAMSlicerLib import catalogue, dependencies, jobs, mrml, regions, running  # noqa: E402
from URSAMSlicerLib.gui import _, translate  # noqa: E402
# Slicer finds the module's logic, widget and test here, by name; the rest is re-exported for scripts.
from URSAMSlicerLib.logic import URSAMLogic  # noqa: E402
from URSAMSlicerLib.moduletest import URSAMTest  # noqa: E402
from URSAMSlicerLib.requests import (ANY_ORGAN, DEVICES, LOCALIZER_TITLES, PRECISIONS, PROMPT_MODES,  # noqa: E402
                                     PROMPT_SOURCES, REGION_SOURCES, SOURCE_CONTROLS, TEMPLATE_SOURCES,
                                     THRESHOLD_MODES, PreparedRun, PromptOrgan, SceneSupports, URSAMOutputs,
                                     URSAMRequest)
from URSAMSlicerLib.widget import URSAMWidget  # noqa: E402
from URSAMSlicerLib.widget_settings import SAVED_CONTROLS, SAVED_NODES, marginText  # noqa: E402


__all__ = [  # what scripts and tests reach through this module
    "URSAM", "URSAMLogic", "URSAMWidget", "URSAMTest", "URSAMRequest", "URSAMOutputs", "PreparedRun", "PromptOrgan",
    "SceneSupports", "ANY_ORGAN", "DEVICES", "LOCALIZER_TITLES", "PRECISIONS", "PROMPT_MODES", "PROMPT_SOURCES",
    "REGION_SOURCES", "SOURCE_CONTROLS", "TEMPLATE_SOURCES", "THRESHOLD_MODES", "SAVED_CONTROLS", "SAVED_NODES",
    "marginText", "Settings", "URSAMError", "LOCALIZERS", "catalogue", "dependencies", "jobs", "mrml", "regions",
    "running", "slicer",
]


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
