"""URSAMWidget: the glue between the .ui and :class:`URSAMSlicerLib.logic.URSAMLogic` (set-up, the
parameter node, reading the controls); its prompt controls and run controls are in
``widget_prompts`` and ``widget_run``.
"""
from __future__ import annotations

import logging
import sys

import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from URSAMLib.backbones import DEFAULT_BACKBONE, catalogue as backboneCatalogue
from URSAMLib.localize import LOCALIZERS
from URSAMLib.pipeline import Settings
from URSAMSlicerLib import dependencies
from URSAMSlicerLib.requests import (ANY_ORGAN, DEVICES, LOCALIZER_TITLES, PRECISIONS, PROMPT_MODES,
                                     PROMPT_SOURCES, REGION_SOURCES, THRESHOLD_MODES, PromptOrgan, URSAMOutputs,
                                     URSAMRequest)
from URSAMSlicerLib.logic import URSAMLogic
from URSAMSlicerLib.widget_prompts import PromptControls
from URSAMSlicerLib.widget_run import RunControls
from URSAMSlicerLib.widget_settings import (CONTROL_SIGNALS, MARGIN_PATTERN, POLL_INTERVAL_MS, SAVED_CONTROLS,
                                            SAVED_NODES, marginText)


class URSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, PromptControls, RunControls):
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
        self.ui.takeRectifiedButton.connect("clicked(bool)", lambda *args: self.onRegionDecision("rectified"))
        self.ui.takeEnsembleButton.connect("clicked(bool)", lambda *args: self.onRegionDecision("ensemble"))
        self.ui.eraseRegionButton.connect("clicked(bool)", lambda *args: self.onRegionDecision("erase"))
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
