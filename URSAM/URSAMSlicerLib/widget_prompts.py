"""The panel's prompt controls: the prompt source, the organ sets and the Organs list (which follows
the prompt segmentation's segments), the supports of a template built from the scene (a part of
:class:`URSAMSlicerLib.widget.URSAMWidget`).
"""
from __future__ import annotations


import qt
import slicer

from URSAMLib import builtin
from URSAMLib.errors import URSAMError
from URSAMSlicerLib import catalogue, mrml, mrml_outputs
from URSAMSlicerLib.requests import (ANY_ORGAN, REGION_SOURCES, SOURCE_CONTROLS, TEMPLATE_SOURCES)
from URSAMSlicerLib.gui import _, reportErrors


class PromptControls:
    """The panel's prompt controls (mixed into URSAMWidget)."""

    # -- prompts ------------------------------------------------------------------------

    @reportErrors
    def onInputVolumeChanged(self, volume=None):
        """Another CT: write into its own URSAM outputs (or new ones), never into the previous CT's."""
        volume = self.ui.inputVolumeSelector.currentNode()
        self.ui.outputSegmentationSelector.setCurrentNode(
            mrml_outputs.outputs_of(slicer.mrmlScene, volume) if volume is not None else None)

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
