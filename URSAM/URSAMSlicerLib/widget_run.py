"""The panel's run and result controls: Apply/Cancel, polling the job, errors, re-rectification,
the views and the uncertain regions (a part of :class:`URSAMSlicerLib.widget.URSAMWidget`).
"""
from __future__ import annotations

import logging
import time
import traceback

import qt
import slicer

from URSAMLib.errors import URSAMError
from URSAMSlicerLib import regions
from URSAMSlicerLib.requests import (PreparedRun, URSAMRequest)
from URSAMSlicerLib.gui import _, reportErrors


class RunControls:
    """The panel's run and result controls (mixed into URSAMWidget)."""

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
            self.outputs = self.logic.apply(prepared, job.result(), job.not_found, job.quality_context)
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
        self.updateDecisionButtons()

    def updateDecisionButtons(self) -> None:
        """The region decisions apply to the region the views are centred on: enabled once there is one."""
        current = self.outputs is not None and 0 <= self.regionIndex < len(self.outputs.regions)
        for button in (self.ui.takeRectifiedButton, self.ui.takeEnsembleButton, self.ui.eraseRegionButton):
            button.setEnabled(current)

    @reportErrors
    def onRegionDecision(self, decision: str) -> None:
        """Take the rectified or the ensemble decision for the current uncertain region, or erase it."""
        if self.outputs is None or not 0 <= self.regionIndex < len(self.outputs.regions):
            return
        region = self.outputs.regions[self.regionIndex]
        self.logic.decideRegion(self.outputs, region, decision)
        done = {"rectified": _("took the rectified decision"), "ensemble": _("took the ensemble's decision"),
                "erase": _("erased it")}[decision]
        self.ui.statusLabel.text = _("Uncertain region {index} of {organ}: {done}.").format(
            index=self.regionIndex + 1, organ=region.organ, done=done)

    @reportErrors
    def onOrganClicked(self, row, column=0):
        if self.outputs is None or not 0 <= row < len(self.outputs.statistics):
            return
        statistics = self.outputs.statistics[row]
        focus = regions.organ_focus(self.outputs.result, statistics.label, self.outputs.errorLikelihoods)
        if focus is not None:
            self.logic.centreOn(self.outputs, focus)
            self.ui.statusLabel.text = _("{organ}: centred on its region most in need of review.").format(
                organ=statistics.name)

    def updateOutputs(self) -> None:
        """Fill the organ table and enable the region buttons for the current result."""
        table = self.ui.organTableWidget
        rows = self.outputs.statistics if self.outputs is not None else []
        table.setRowCount(len(rows))
        for row, statistics in enumerate(rows):
            predicted = "" if statistics.predicted_dsc is None else f"{statistics.predicted_dsc:.2f}"
            cells = (statistics.name, f"{statistics.volume_ml:.1f}", f"{statistics.mean_uncertainty:.3f}", predicted,
                     _("Review") if statistics.needs_review else _("OK"))
            for column, text in enumerate(cells):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        hasRegions = self.outputs is not None and bool(self.outputs.regions)
        self.ui.nextRegionButton.setEnabled(hasRegions)
        self.ui.previousRegionButton.setEnabled(hasRegions)
        self.updateDecisionButtons()
