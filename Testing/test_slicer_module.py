"""URSAM/URSAM.py imported with only the ScriptedLoadableModule/Qt layer replaced (fake_slicer_gui):
the Widget hands what the controls show to the Logic, runs, cancels, reports errors in one dialog
line and re-rectifies without SAM; URSAMTest (the in-Slicer self-test) runs here too.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fake_slicer_gui as fake
from conftest import ROOT, damaged_resources
from slicer_scene import add_slice_views, build_oblique_case, require, scene_snapshot
from URSAMLib import job as job_module
from URSAMLib.job import SegmentJob
from URSAMLib.pipeline import Settings
from URSAMLib.prompts import DEFAULT_BOX_MARGIN

require("slicer")
from URSAMSlicerLib import catalogue, mrml, mrml_outputs  # noqa: E402
from URSAMSlicerLib.testing import BrightInBox  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The module, its widget set up on a scene holding an oblique CT and prompt segments."""
    slicer, dialogs = fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    ct_node, prompts = build_oblique_case(slicer.mrmlScene, tmp_path)
    widget = module.URSAMWidget()
    widget.setup()
    fake.choose_source(widget.ui, "segmentation")  # a user who drew rough prompts
    widget.ui.promptSegmentationSelector.setCurrentNode(prompts)
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda ask=True: None)  # all installed here
    yield module, widget, dialogs, slicer.mrmlScene, ct_node, prompts
    widget.cleanup()


def organ_items(widget):
    items = widget.ui.organsListWidget.items
    return [(item.text(), item.checkState() == fake.Qt.Checked, bool(item.flags() & fake.Qt.ItemIsEnabled))
            for item in items]


class CancelledJob:
    """A started job that reports at once that it was cancelled: for tests of what happens before."""

    def __init__(self, module):
        self.module = module

    def poll(self):
        return self.module.jobs.JobStatus("cancelled", 0.0, "Cancelled")

    def cancel(self):
        pass

    def log(self):
        return ""


def test_module_description_cites_the_paper(monkeypatch):
    fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    parent = type("Parent", (), {})()
    module.URSAM(parent)
    assert parent.title == "URSAM" and parent.categories == ["Segmentation"]
    assert "arXiv:2311.10529" in parent.acknowledgementText and "Zhang" in parent.acknowledgementText
    assert "uncertain" in parent.helpText


def test_setup_fills_the_organ_sets_models_and_checklist(env):
    module, widget, dialogs, scene, ct_node, prompts = env
    ui = widget.ui
    assert [data for _, data in ui.organSetComboBox.items] == ["any", "abdomen", "head_neck"]
    assert [data for _, data in ui.backboneComboBox.items] == ["litemedsam", "sam-vit-b", "medsam-vit-b"]
    assert ui.backboneComboBox.currentData == "litemedsam"
    assert ui.inputVolumeSelector.currentNode() is ct_node  # the only CT in the scene
    assert ui.outputSegmentationSelector.currentNode() is None  # "Create new segmentation"
    # by default every organ in the prompts, ticked, under its catalogue name
    assert organ_items(widget) == [("Liver", True, True), ("Gallbladder", True, True)]
    ui.organSetComboBox.currentIndex = 1  # abdomen: the other FLARE22 organs listed without a prompt
    items = organ_items(widget)
    assert items[:2] == [("Liver", True, True), ("Gallbladder", True, True)]
    assert len(items) == 13 and all(text.endswith("(no prompt)") and not enabled for text, _, enabled in items[2:])
    ui.organSetComboBox.currentIndex = 2  # head and neck: neither prompt is an organ at risk
    assert len(organ_items(widget)) == 7 and not any(enabled for *_, enabled in organ_items(widget))
    assert ui.applyButton.text == "Auto-segment organs" and not ui.nextRegionButton.enabled


SUPPORT_CONTROLS = ("supportVolumeSelector", "supportSegmentationSelector", "supportsListWidget", "addSupportButton",
                    "clearSupportsButton", "supportVolumeLabel", "supportSegmentationLabel", "supportsLabel")


def test_prompt_source_shows_its_own_controls(env):
    module, widget, dialogs, *_ = env
    ui = widget.ui
    assert ui.promptSegmentationSelector.visible and not ui.promptLabelMapSelector.visible
    assert not ui.templatePathLineEdit.visible and not ui.templateNoteLabel.visible
    assert not any(getattr(ui, name).visible for name in SUPPORT_CONTROLS)
    fake.choose_source(ui, "labelmap")
    assert ui.promptLabelMapSelector.visible and ui.classesPathLineEdit.visible
    assert not ui.promptSegmentationSelector.visible
    fake.choose_source(ui, "template")
    assert ui.templatePathLineEdit.visible and ui.templateNoteLabel.visible and not ui.promptModeComboBox.enabled
    assert not any(getattr(ui, name).visible for name in SUPPORT_CONTROLS)
    assert organ_items(widget) == []
    ui.organSetComboBox.currentIndex = 1  # a built-in set is listed, though nothing can be ticked yet
    assert len(organ_items(widget)) == 13
    assert organ_items(widget)[0] == ("Liver (not in the template)", False, False)
    ui.applyButton.click()
    assert [text for text, _ in dialogs.errors] == [
        "Choose a template folder (made with 'ursam build-template'), or prompt with segments or a label map."]
    fake.choose_source(ui, "sceneTemplate")
    assert all(getattr(ui, name).visible for name in SUPPORT_CONTROLS) and ui.templateNoteLabel.visible
    assert not ui.templatePathLineEdit.visible and not ui.promptModeComboBox.enabled
    assert [data for _, data in ui.localizerComboBox.items] == list(module.LOCALIZERS) == \
        ["registration", "atlas", "medlam", "auto"]
    assert ui.localizerComboBox.items[3][0] == "Automatic: atlas, MedLAM on blanked scans"


def oblique_template(folder):
    """A template folder made by URSAMLib from the oblique case's files (liver 1, gallbladder 2)."""
    from URSAMLib.template import build_template

    return build_template([str(folder / "oblique.nrrd")], [str(folder / "oblique_labels.nrrd")],
                          {1: "liver", 2: "gallbladder"}, folder / "template")


def recording_start(module, widget, monkeypatch):
    """Replace Logic.start by a job that stays running; returns the prepared runs it was given."""
    class Running:
        cancelled = False

        def poll(self):
            if self.cancelled:
                return module.jobs.JobStatus("cancelled", 0.1, "Cancelled")
            return module.jobs.JobStatus("running", 0.1, "Localizing organs: Registering support support1")

        def cancel(self):
            self.cancelled = True

        def log(self):
            return "  25.0% Segmented slice 1 of 4"

    started = []
    monkeypatch.setattr(widget.logic, "start", lambda prepared: started.append(prepared) or Running())
    return started


@pytest.fixture
def ct_only(monkeypatch, tmp_path):
    """The module's widget, set up on a scene holding one CT and nothing else, as a clinician opens it."""
    slicer, dialogs = fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    ct_node, prompts = build_oblique_case(slicer.mrmlScene, tmp_path)
    slicer.mrmlScene.RemoveNode(prompts)
    widget = module.URSAMWidget()
    widget.setup()
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda ask=True: None)
    yield module, widget, dialogs, slicer.mrmlScene, ct_node
    widget.cleanup()


def test_the_built_in_template_is_the_default_source_and_offers_its_regions_organs(ct_only, monkeypatch):
    from URSAMLib import builtin

    module, widget, dialogs, scene, ct_node = ct_only
    ui = widget.ui
    assert module.PROMPT_SOURCES[0] == "region" and widget.promptSource() == "region"
    assert ui.promptSourceComboBox.currentText == "Built-in template (only the CT needed)"
    assert ui.templateNoteLabel.visible and not ui.promptSegmentationSelector.visible
    assert not ui.templatePathLineEdit.visible and not ui.promptModeComboBox.enabled
    # the Organ set chooser lists the built-in templates, titled as 'ursam templates' lists them
    assert ui.organSetComboBox.items == [(entry["title"], entry["region"]) for entry in builtin.describe()]
    assert [data for _, data in ui.organSetComboBox.items] == ["head-and-neck", "abdomen"]
    # the template's organs (the data set's class names) under the catalogue's names, all ticked
    head_neck = [catalogue.organs()[key].name for key in catalogue.organ_sets()["head_neck"].organs]
    assert organ_items(widget) == [(name, True, True) for name in head_neck]
    assert head_neck[0] == "Brainstem" and "Mandible" in head_neck
    assert ui.localizerComboBox.currentData == builtin.region_template("head-and-neck").localizer == "auto"
    ui.localizerComboBox.currentIndex = ui.localizerComboBox.findData("medlam")  # the user's choice is kept
    ui.organSetComboBox.currentIndex = ui.organSetComboBox.findData("abdomen")
    abdomen = [catalogue.match_name(name) for name in builtin.region_template("abdomen").organs]
    assert all(abdomen) and {o.key for o in abdomen} <= set(catalogue.organ_sets()["abdomen"].organs)
    assert organ_items(widget) == [(o.name, True, True) for o in abdomen]
    assert ui.localizerComboBox.currentData == "auto"  # another region: its own localizer

    # Auto-segment organs: the job localizes the ticked organs with the built-in template, then segments
    ui.organsListWidget.item(0).setCheckState(fake.Qt.Unchecked)  # not the liver
    started = recording_start(module, widget, monkeypatch)
    ui.applyButton.click()
    assert dialogs.errors == [] and ui.applyButton.text == "Cancel"
    job = started[0].job
    assert job.prompts == []  # found in the background job
    localization = job.localization
    assert localization.folder == str(builtin.region_template("abdomen").folder) and not localization.temporary
    assert list(localization.organs) == list(builtin.region_template("abdomen").organs[1:])
    assert localization.organs["kidney_right"] == "Right kidney"
    assert (localization.localizer, localization.weights) == ("auto", None)  # None: the shipped MedLAM weights
    assert [o.key for o in started[0].organs] == [o.key for o in abdomen[1:]]
    assert ui.statusLabel.text.startswith("Localizing organs")
    ui.applyButton.click()  # Cancel
    assert widget.job is None and ui.statusLabel.text == "Cancelled; the scene was not changed."

    # the other sources keep their organ sets; coming back shows the region chosen before
    fake.choose_source(ui, "segmentation")
    assert [data for _, data in ui.organSetComboBox.items] == ["any", "abdomen", "head_neck"]
    assert ui.organSetComboBox.currentData == "any"
    fake.choose_source(ui, "region")
    assert ui.organSetComboBox.currentData == "abdomen" and len(organ_items(widget)) == 12


def test_a_damaged_built_in_template_is_one_dialog_line_and_no_job(ct_only, monkeypatch, tmp_path):
    module, widget, dialogs, scene, ct_node = ct_only
    support = damaged_resources(monkeypatch, tmp_path, "templates/head-and-neck/supports/*_ct-*.nii.gz")
    before = scene_snapshot(scene)
    widget.ui.applyButton.click()
    assert len(dialogs.errors) == 1, dialogs.errors
    text, _ = dialogs.errors[0]
    assert "\n" not in text and text.startswith(f"URSAM's packaged file templates/head-and-neck/supports/"
                                                f"{support.name} fails its SHA-256 check")
    assert text.endswith("reinstall URSAM.")
    assert widget.job is None and widget.ui.applyButton.text == "Auto-segment organs"
    assert scene_snapshot(scene) == before


def test_a_template_folder_offers_its_organs_and_reaches_the_logic(env, monkeypatch, tmp_path):
    module, widget, dialogs, scene, ct_node, prompts = env
    template = oblique_template(tmp_path)
    ui = widget.ui
    fake.choose_source(ui, "template")
    ui.templatePathLineEdit.currentPath = str(template.folder)
    assert organ_items(widget) == [("Liver", True, True), ("Gallbladder", True, True)]
    ui.organsListWidget.item(0).setCheckState(fake.Qt.Unchecked)  # only the gallbladder
    started = recording_start(module, widget, monkeypatch)
    ui.applyButton.click()
    assert dialogs.errors == [] and ui.applyButton.text == "Cancel"
    localization = started[0].job.localization
    assert started[0].job.prompts == []  # the job finds them, in the background
    assert localization.folder == str(template.folder) and localization.organs == {"gallbladder": "Gallbladder"}
    assert (localization.localizer, localization.weights, localization.temporary) == ("registration", None, False)
    assert localization.geometry.size == tuple(ct_node.GetImageData().GetDimensions())
    assert [o.key for o in started[0].organs] == ["gallbladder"]
    assert ui.statusLabel.text == "Localizing organs: Registering support support1"
    ui.applyButton.click()  # Cancel
    assert widget.job is None and ui.statusLabel.text == "Cancelled; the scene was not changed."

    ui.templatePathLineEdit.currentPath = str(tmp_path)  # not a template
    assert organ_items(widget) == [] and "is not an URSAM template" in ui.statusLabel.text


def test_supports_in_the_scene_make_a_template_for_the_logic(env, monkeypatch):
    module, widget, dialogs, scene, ct_node, prompts = env
    ui = widget.ui
    fake.choose_source(ui, "sceneTemplate")
    assert organ_items(widget) == []
    ui.addSupportButton.click()  # nothing chosen yet
    assert widget.supports == [] and ui.statusLabel.text.startswith("Choose a support volume")
    ui.supportVolumeSelector.setCurrentNode(ct_node)
    ui.supportSegmentationSelector.setCurrentNode(prompts)
    ui.addSupportButton.click()
    ui.addSupportButton.click()  # the same pair once only
    assert widget.supports == [(ct_node, prompts)]
    assert [item.text() for item in ui.supportsListWidget.items] == ["Oblique: Prompts"]
    assert organ_items(widget) == [("Liver", True, True), ("Gallbladder", True, True)]
    ui.localizerWeightsPathLineEdit.currentPath = ""
    started = recording_start(module, widget, monkeypatch)
    ui.applyButton.click()
    assert dialogs.errors == []
    localization = started[0].job.localization
    assert localization.organs == {"liver": "Liver", "gallbladder": "Gallbladder"} and localization.temporary
    from URSAMLib.template import Template

    assert localization.build.classes == {1: "liver", 2: "gallbladder"}  # exported here; the job builds it so:
    from URSAMLib.template import build_template

    module.jobs.write_exports(started[0].job)  # as the job does, off the GUI thread
    build_template(localization.build.images, localization.build.labels, localization.build.classes,
                   localization.folder)
    template = Template.load(localization.folder)  # built from the support, in a folder of its own
    assert template.organs == {"liver": 1, "gallbladder": 2} and len(template.supports) == 1
    module.jobs._remove(localization.folder)  # the job would have
    ui.applyButton.click()  # Cancel
    assert widget.job is None

    ui.clearSupportsButton.click()
    assert widget.supports == [] and ui.supportsListWidget.count == 0 and organ_items(widget) == []
    ui.applyButton.click()
    assert [text for text, _ in dialogs.errors] == [
        "Add a support first: a CT in the scene with its organs segmented (choose the support volume and its "
        "segmentation, then press Add support)."]


def test_the_controls_reach_the_logic_and_apply_turns_into_cancel(env, monkeypatch, tmp_path):
    module, widget, dialogs, scene, ct_node, prompts = env
    ui = widget.ui
    weights = tmp_path / "sam.pth"
    weights.write_bytes(b"weights")
    ui.numAugSliderWidget.value = 7
    ui.ratioSliderWidget.value = 0.05
    ui.alphaHSliderWidget.value = 1.6
    ui.thresholdModeComboBox.currentIndex = 2  # fixed
    ui.promptModeComboBox.currentIndex = 1
    ui.deviceComboBox.currentIndex = 1
    ui.backboneComboBox.currentIndex = ui.backboneComboBox.findData("sam-vit-b")
    ui.checkpointPathLineEdit.currentPath = str(weights)
    ui.organsListWidget.item(1).setCheckState(fake.Qt.Unchecked)  # only the liver

    class Running:
        cancelled = False

        def poll(self):
            state = "cancelled" if self.cancelled else "running"
            return module.jobs.JobStatus(state, 0.25, "Segmented slice 1 of 4")

        def cancel(self):
            self.cancelled = True

        def log(self):
            return "  25.0% Segmented slice 1 of 4"

    started = []
    monkeypatch.setattr(widget.logic, "start", lambda prepared: started.append(prepared) or Running())
    before = scene_snapshot(scene)
    ui.applyButton.click()
    job = started[0].job
    assert job.settings == Settings(num_aug=7, ratio=0.05, method="fixed", alpha_h=1.6)
    assert (job.options.backbone, job.options.checkpoint, job.options.device) == ("sam-vit-b", str(weights), "cpu")
    assert job.options.prompt_mode == "box3d" and job.options.box_margin == DEFAULT_BOX_MARGIN
    assert [p.name for p in job.prompts] == ["Liver"] and started[0].request.promptMode == "box3d"
    assert len(job.prompts[0].boxes) == 6  # 3-D box mode: the 4 prompted slices + 2 margin slices (clipped)
    assert ui.applyButton.text == "Cancel" and widget.timer.active and not ui.inputsCollapsibleButton.enabled
    assert ui.progressBar.value == 25 and ui.statusLabel.text == "Segmented slice 1 of 4"
    ui.applyButton.click()  # Cancel
    assert ui.applyButton.text == "Auto-segment organs" and not widget.timer.active and widget.job is None
    assert ui.statusLabel.text == "Cancelled; the scene was not changed." and ui.inputsCollapsibleButton.enabled
    assert scene_snapshot(scene) == before and dialogs.errors == []


def test_sliders_clamp_like_qt_to_the_ranges_of_the_ui(env):
    module, widget, *_ = env
    widget.ui.numAugSliderWidget.value = 50
    widget.ui.ratioSliderWidget.value = -1
    settings = widget.settingsFromGUI()
    assert settings.num_aug == 10 and settings.ratio == 0.0


def test_a_full_run_through_the_widget(env):
    module, widget, dialogs, scene, ct_node, prompts = env
    views = add_slice_views(scene)
    backbone = BrightInBox()
    widget.logic.runInProcess = True
    widget.logic.backboneLoader = lambda name, checkpoint, device: backbone
    ui = widget.ui
    ui.ratioSliderWidget.value = 0.1
    ui.numAugSliderWidget.value = 5
    ui.applyButton.click()
    assert dialogs.errors == [] and widget.job is None and ui.applyButton.text == "Auto-segment organs"
    outputs = widget.outputs
    assert ui.outputSegmentationSelector.currentNode() is outputs.segmentation
    assert ui.statusLabel.text.startswith("Segmented 2 organs in")
    table = ui.organTableWidget
    # in review order: the lowest predicted DSC first, with its flag
    names = [table.item(row, 0).text() for row in range(table.rowCount())]
    assert sorted(names) == ["Gallbladder", "Liver"] and names == [s.name for s in outputs.statistics]
    predicted = [float(table.item(row, 3).text()) for row in range(2)]
    assert predicted == sorted(predicted) and predicted == [round(s.predicted_dsc, 2) for s in outputs.statistics]
    assert float(table.item(0, 1).text()) == pytest.approx(outputs.statistics[0].volume_ml, abs=0.05)
    assert [table.item(row, 4).text() for row in range(2)] == \
        ["Review" if s.needs_review else "OK" for s in outputs.statistics]
    assert all(c.GetForegroundVolumeID() == outputs.uncertainty.GetID() for _, c in views)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.5) for _, c in views)
    assert not outputs.ensemble.GetDisplayNode().GetVisibility()

    ui.showEnsembleCheckBox.checked = True
    assert outputs.ensemble.GetDisplayNode().GetVisibility()
    ui.heatmapOpacitySliderWidget.value = 0.8
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for _, c in views)

    assert ui.nextRegionButton.enabled
    ui.nextRegionButton.click()
    first = outputs.regions[0]
    centre = module.mrml.ras_of_axial_index(first.centre, outputs.frame, ct_node)
    assert np.allclose([views[0][0].GetSliceToRAS().GetElement(r, 3) for r in range(3)], centre)
    assert ui.statusLabel.text.startswith(f"Uncertain region 1 of {len(outputs.regions)}: {first.organ}")
    rank = [s.name for s in outputs.statistics]  # the regions follow the review order
    assert [rank.index(r.organ) for r in outputs.regions] == sorted(rank.index(r.organ) for r in outputs.regions)
    assert ui.eraseRegionButton.enabled and ui.takeEnsembleButton.enabled and ui.takeRectifiedButton.enabled
    ui.takeEnsembleButton.click()
    assert ui.statusLabel.text == f"Uncertain region 1 of {first.organ}: took the ensemble's decision."
    ui.takeRectifiedButton.click()  # back to URSAM's own decision
    assert ui.statusLabel.text == f"Uncertain region 1 of {first.organ}: took the rectified decision."
    ui.previousRegionButton.click()
    assert ui.statusLabel.text.startswith(f"Uncertain region {len(outputs.regions)} of")
    table.emit("cellClicked(int,int)", 1, 0)
    assert ui.statusLabel.text == f"{outputs.statistics[1].name}: centred on its region most in need of review."

    # α_h and the threshold mode re-rectify the kept result: no SAM, URSAM's segments updated
    calls = list(backbone.embedded)
    liver = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")["liver"]
    ui.thresholdModeComboBox.currentIndex = 2  # fixed
    ui.alphaHSliderWidget.value = 1.05
    assert backbone.embedded == calls
    assert outputs.result.settings.method == "fixed" and outputs.result.settings.alpha_h == pytest.approx(1.05)
    expected = outputs.frame.from_axial(outputs.result.label_map("rectified")) == 1
    assert np.array_equal(mrml.segment_mask(outputs.segmentation, liver, ct_node), expected)
    assert ui.statusLabel.text.startswith("Rectification updated (α_h = 1.05")

    # a second run writes into the same segmentation, replacing only URSAM's segments
    ui.applyButton.click()
    assert widget.outputs.segmentation is outputs.segmentation
    assert outputs.segmentation.GetSegmentation().GetNumberOfSegments() == 2
    assert len([n for n in scene_snapshot(scene).values() if n[0] == "vtkMRMLSegmentationNode"]) == 3


def test_intensities_that_are_not_ct_are_a_warning_dialog_and_the_run_goes_on(env):
    module, widget, dialogs, scene, ct_node, prompts = env
    widget.logic.runInProcess = True
    widget.logic.backboneLoader = lambda name, checkpoint, device: BrightInBox()
    widget.ui.applyButton.click()  # the synthetic CT holds no air at all, like an MR
    assert len(dialogs.warnings) == 1 and dialogs.errors == []
    assert dialogs.warnings[0].startswith("Oblique does not look like a CT in Hounsfield units (no voxel is below")
    assert widget.outputs is not None and widget.ui.statusLabel.text.startswith("Segmented 2 organs")

    mrml.voxel_array(ct_node)[:, :5, :] = -1000  # air above the body: a CT after all
    ct_node.Modified()
    widget.ui.applyButton.click()
    assert len(dialogs.warnings) == 1 and dialogs.errors == []


def test_bad_input_is_one_dialog_line_and_no_job(env):
    module, widget, dialogs, scene, *_ = env
    widget.ui.promptSegmentationSelector.setCurrentNode(None)
    before = scene_snapshot(scene)
    widget.ui.applyButton.click()
    assert len(dialogs.errors) == 1
    text, _ = dialogs.errors[0]
    assert text == "Select the prompt segmentation: the organs drawn roughly on the input CT."
    assert widget.job is None and widget.ui.applyButton.text == "Auto-segment organs"
    assert scene_snapshot(scene) == before


@pytest.mark.subprocess
def test_a_failure_in_the_background_process_reaches_the_user_as_one_line(env, tmp_path):
    module, widget, dialogs, scene, *_ = env
    widget.logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:failing_loader")
    weights = tmp_path / "such.pth"  # there when checked, and (the stand-in says) gone when the worker loads it
    weights.write_bytes(b"weights")
    widget.ui.checkpointPathLineEdit.currentPath = str(weights)
    before = scene_snapshot(scene)
    widget.ui.applyButton.click()
    assert widget.ui.applyButton.text == "Cancel"
    for _ in range(600):
        if widget.job is None:
            break
        widget.timer.fire()
        import time

        time.sleep(0.05)
    assert widget.job is None
    assert dialogs.errors == [
        (f"Checkpoint {weights} does not exist; check the checkpoint path (--checkpoint).", {})]  # no log
    assert widget.ui.statusLabel.text.startswith("Failed: Checkpoint") and scene_snapshot(scene) == before


def test_closing_the_scene_forgets_the_result(env):
    module, widget, dialogs, scene, *_ = env
    widget.logic.runInProcess = True
    widget.logic.backboneLoader = lambda *args: BrightInBox()
    widget.ui.applyButton.click()
    assert widget.outputs is not None and widget.ui.organTableWidget.rowCount() == 2
    scene.Clear(0)
    assert widget.outputs is None and widget.ui.organTableWidget.rowCount() == 0
    assert not widget.ui.nextRegionButton.enabled


@pytest.mark.model
@pytest.mark.slow
def test_the_in_slicer_self_test_passes_here_too(monkeypatch):
    """The ScriptedLoadableModuleTest that Slicer's 'Reload and Test' runs, including the real LiteMedSAM
    on a 6-slice synthetic volume when torch is installed."""
    fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    test = module.URSAMTest()
    test.runTest()
    passed = [m for m in test.displayed if m.startswith("Test passed")]
    skipped = [m for m in test.displayed if m.startswith("Skipped")]  # LiteMedSAM, where torch is not installed
    assert len(passed) + len(skipped) == 7 and len(skipped) <= 1, test.displayed
    assert not skipped or "torch" in skipped[0]


@pytest.mark.subprocess
def test_importing_the_module_imports_no_torch_and_installs_nothing(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT / 'Testing')!r}, {str(ROOT)!r}]
        from _pytest.monkeypatch import MonkeyPatch
        import fake_slicer_gui as fake
        patch = MonkeyPatch()
        slicer, dialogs = fake.install(patch)
        def forbidden(*args, **kwargs):
            raise AssertionError("installed something at import")
        patch.setattr(slicer.util, "pip_install", forbidden)
        module = fake.import_module(patch)
        assert hasattr(module, "URSAMWidget")
        assert "torch" not in sys.modules, "URSAM.py imported torch"
        assert dialogs.confirmations == []
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)


def test_catalogue_organs_keep_their_terminology_when_prompted_by_name(env):
    module, widget, dialogs, scene, ct_node, prompts = env
    organs = widget.logic.promptOrgans("segmentation", prompts, "any")
    assert [o.output.key for o in organs] == ["liver", "gallbladder"]
    assert organs[0].output.terminology == catalogue.terminology_entry(catalogue.organs()["liver"])
    prompts.GetSegmentation().GetNthSegment(1).SetName("my lesion")  # not a catalogue organ
    organs = widget.logic.promptOrgans("segmentation", prompts, "any")
    assert organs[1].output.name == "my lesion" and organs[1].output.terminology == ""
    assert organs[1].output.key == "prompt:mylesion"
    prompts.GetSegmentation().GetNthSegment(1).SetName("Liver")  # two prompts of one organ: two segments
    assert [o.output.key for o in widget.logic.promptOrgans("segmentation", prompts, "any")] == ["liver", "liver#2"]


def test_label_map_prompts_are_named_by_the_class_map_not_by_a_generic_colour_table(env, abdomen):
    module, widget, dialogs, scene, ct_node, prompts = env
    from slicer_scene import load_volume

    labels = load_volume(scene, abdomen / "labels_small.nii.gz", "labels", labelmap=True)
    labels.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileGenericAnatomyColors.txt")
    organs = widget.logic.promptOrgans("labelmap", labels, "any")
    assert organs[0].output.name == "Label 1"  # 'tissue' from the generic table would be wrong
    organs = widget.logic.promptOrgans("labelmap", labels, "abdomen", str(abdomen / "classes.json"))
    assert [o.output.key for o in organs if o.inPrompt] == ["spleen", "kidney_right", "kidney_left", "gallbladder",
                                                            "liver", "stomach", "pancreas", "adrenal_gland_right",
                                                            "adrenal_gland_left", "duodenum", "aorta",
                                                            "inferior_vena_cava"]
    assert [o.output.key for o in organs if not o.inPrompt] == ["esophagus"]  # not in this slab


def test_a_run_on_a_second_ct_never_writes_into_the_first_cts_outputs(env, tmp_path):
    module, widget, dialogs, scene, ct_node, prompts = env
    widget.logic.runInProcess = True
    widget.logic.backboneLoader = lambda *args: BrightInBox()
    ui = widget.ui
    ui.applyButton.click()
    first = widget.outputs
    assert ui.outputSegmentationSelector.currentNode() is first.segmentation
    liver = mrml_outputs.ursam_segments(first.segmentation, "rectified")["liver"]
    first_mask = mrml.segment_mask(first.segmentation, liver, ct_node)
    first_heat = mrml.voxel_array(first.uncertainty).copy()
    (tmp_path / "second").mkdir()
    ct2, prompts2 = build_oblique_case(scene, tmp_path / "second")
    mrml.voxel_array(ct2)[:] = np.roll(mrml.voxel_array(ct2), 3, axis=2)  # another patient: organs elsewhere
    ct2.Modified()

    ui.inputVolumeSelector.setCurrentNode(ct2)
    assert ui.outputSegmentationSelector.currentNode() is None  # "Create new segmentation", not CT1's
    ui.promptSegmentationSelector.setCurrentNode(prompts2)
    ui.applyButton.click()
    second = widget.outputs
    assert dialogs.errors == [] and second.inputVolume is ct2
    assert second.segmentation is not first.segmentation and second.ensemble is not first.ensemble
    assert second.uncertainty is not first.uncertainty
    assert np.array_equal(mrml.segment_mask(first.segmentation, liver, ct_node), first_mask)
    assert np.array_equal(mrml.voxel_array(first.uncertainty), first_heat)
    ui.inputVolumeSelector.setCurrentNode(ct_node)  # back to CT1: its own outputs again
    assert ui.outputSegmentationSelector.currentNode() is first.segmentation

    # a script (or a stale choice) naming CT1's outputs for CT2 gets CT2's own outputs instead
    again = widget.logic.process(module.URSAMRequest(ct2, promptNode=prompts2, outputSegmentation=first.segmentation))
    assert again.segmentation is second.segmentation
    assert np.array_equal(mrml.segment_mask(first.segmentation, liver, ct_node), first_mask)


def test_an_unsupported_slicer_is_told_at_start_and_cannot_run(monkeypatch):
    slicer, dialogs = fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    monkeypatch.setattr(slicer.app, "majorVersion", 5)
    monkeypatch.setattr(slicer.app, "minorVersion", 8)
    widget = module.URSAMWidget()
    widget.setup()
    assert not widget.ui.applyButton.enabled
    assert widget.ui.statusLabel.text.startswith("URSAM needs 3D Slicer 5.10 or later; this is Slicer 5.8")
    with pytest.raises(module.URSAMError, match="5.10 or later"):
        widget.logic.ensureDependencies()
    widget.cleanup()


def test_the_organs_list_follows_segments_added_renamed_and_removed(env):
    module, widget, dialogs, scene, ct_node, prompts = env
    segmentation = prompts.GetSegmentation()
    assert [text for text, *_ in organ_items(widget)] == ["Liver", "Gallbladder"]
    widget.ui.organsListWidget.item(1).setCheckState(fake.Qt.Unchecked)  # the user unticks the gallbladder
    segmentation.AddEmptySegment("spleen", "spleen")
    assert organ_items(widget) == [("Liver", True, True), ("Gallbladder", False, True), ("Spleen", True, True)]
    segmentation.GetSegment("spleen").SetName("Right kidney")
    assert [text for text, *_ in organ_items(widget)] == ["Liver", "Gallbladder", "Right kidney"]
    segmentation.RemoveSegment(segmentation.GetNthSegmentID(0))  # the liver
    assert organ_items(widget) == [("Gallbladder", False, True), ("Right kidney", True, True)]
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Other prompts")
    widget.ui.promptSegmentationSelector.setCurrentNode(other)
    segmentation.AddEmptySegment("liver2", "Liver")  # the segmentation no longer chosen: not followed
    assert organ_items(widget) == []


def test_inputs_are_checked_before_anything_is_installed_under_a_wait_cursor(env, monkeypatch):
    module, widget, dialogs, scene, ct_node, prompts = env
    installs = []
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda ask=True: installs.append(ask))
    widget.ui.promptSegmentationSelector.setCurrentNode(None)  # a user mistake
    widget.ui.applyButton.click()
    assert installs == [] and len(dialogs.errors) == 1  # told at once, not after a long installation
    assert fake.QApplication.history == [("set", fake.Qt.WaitCursor), ("restore", None)]
    assert fake.QApplication.cursors == []

    widget.ui.promptSegmentationSelector.setCurrentNode(prompts)
    order = []
    prepare = widget.logic.prepare
    monkeypatch.setattr(widget.logic, "prepare", lambda request: order.append("check") or prepare(request))
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda ask=True: order.append("install"))
    monkeypatch.setattr(widget.logic, "start", lambda prepared: order.append("start") or CancelledJob(module))

    widget.ui.applyButton.click()
    assert order == ["check", "install", "start"]


def test_an_unexpected_error_is_a_dialog_with_details_never_only_a_console_traceback(env, monkeypatch):
    module, widget, dialogs, scene, ct_node, prompts = env

    def broken(request):
        raise ZeroDivisionError("a bug in preparing")

    monkeypatch.setattr(widget.logic, "prepare", broken)
    widget.ui.applyButton.click()
    text, extra = dialogs.errors[-1]
    assert text.startswith("Starting the segmentation failed.")
    assert "ZeroDivisionError: a bug in preparing" in extra["detailedText"]
    assert widget.job is None and widget.ui.applyButton.text == "Auto-segment organs"

    # a bug while the job runs: the job is ended, and its log goes with the details
    class Breaks:
        cancelled = False

        def poll(self):
            raise KeyError("progress")

        def cancel(self):
            self.cancelled = True

        def log(self):
            return "  10.0% Loading litemedsam"

    job = Breaks()
    monkeypatch.setattr(widget.logic, "prepare", lambda request: module.PreparedRun(request, None, None, [], {}))
    monkeypatch.setattr(widget.logic, "start", lambda prepared: job)
    widget.ui.applyButton.click()
    text, extra = dialogs.errors[-1]
    assert text.startswith("The segmentation failed.") and job.cancelled and not widget.timer.active
    assert "KeyError: 'progress'" in extra["detailedText"] and "Loading litemedsam" in extra["detailedText"]
    assert widget.ui.applyButton.text == "Auto-segment organs"

    # and in any other control: a broken template folder in the prompt list
    monkeypatch.setattr(widget.logic, "promptOrgans", lambda *args: 1 / 0)
    widget.ui.organSetComboBox.currentIndex = 1
    text, extra = dialogs.errors[-1]
    assert text.startswith("URSAM failed unexpectedly.") and "ZeroDivisionError" in extra["detailedText"]


def test_the_log_panel_shows_the_workers_output_and_show_3d_builds_surfaces(env):
    module, widget, dialogs, scene, ct_node, prompts = env
    widget.logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:bright_in_box")
    widget.ui.applyButton.click()
    import time

    for _ in range(1200):
        if widget.job is None:
            break
        widget.timer.fire()
        time.sleep(0.05)
    assert dialogs.errors == [] and widget.outputs is not None
    log = widget.ui.logTextEdit.toPlainText()
    assert "Loading litemedsam" in log and "100.0%" in log  # what the worker printed, to the end
    surface = module.slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    segmentation = widget.outputs.segmentation
    assert not segmentation.GetSegmentation().ContainsRepresentation(surface)
    widget.ui.show3DCheckBox.checked = True
    assert segmentation.GetSegmentation().ContainsRepresentation(surface)
    assert segmentation.GetDisplayNode().GetVisibility3D()
    polydata = segmentation.GetSegmentation().GetNthSegment(0).GetRepresentation(surface)
    assert polydata.GetNumberOfPoints() > 0
    widget.ui.show3DCheckBox.checked = False
    assert not segmentation.GetDisplayNode().GetVisibility3D()


def test_the_3d_box_margin_shown_is_the_one_applied(env):
    from URSAMLib.prompts import DEFAULT_BOX_MARGIN

    module, widget, *_ = env
    margin = "/".join(f"{v:g}" for v in DEFAULT_BOX_MARGIN.zyx)
    assert widget.ui.promptModeComboBox.itemText(1) == f"3-D box (+{margin} mm margin)"


def test_the_panel_shows_urSAMLibs_defaults_whatever_the_ui_was_written_with(monkeypatch, tmp_path):
    """n, ratio, α_h, the rectification method and the box margin are defined once, in URSAMLib:
    change them there and the panel shows the new ones."""
    import functools

    from URSAMLib.prompts import BoxMargin

    slicer, dialogs = fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    panel, settings = sys.modules["URSAMSlicerLib.widget"], sys.modules["URSAMSlicerLib.widget_settings"]
    monkeypatch.setattr(panel, "Settings", functools.partial(Settings, num_aug=5, ratio=0.02, alpha_h=1.5,
                                                             method="fixed"))
    monkeypatch.setattr(settings, "DEFAULT_BOX_MARGIN", BoxMargin((3.0, 7.5, 7.5), "mm"))
    widget = module.URSAMWidget()
    widget.setup()
    ui = widget.ui
    assert (ui.numAugSliderWidget.value, ui.ratioSliderWidget.value, ui.alphaHSliderWidget.value) == (5, 0.02, 1.5)
    assert ui.thresholdModeComboBox.currentIndex == module.THRESHOLD_MODES.index("fixed")
    assert ui.promptModeComboBox.itemText(1) == "3-D box (+3/7.5/7.5 mm margin)"
    assert "enlarged by 3/7.5/7.5 mm" in ui.promptModeComboBox.toolTip
    assert "3/7.5/7.5 mm larger" in ui.templateNoteLabel.text and "5/10/10" not in ui.templateNoteLabel.text
    assert slicer.mrmlScene is not None and widget.logic.getParameterNode().GetParameter("NumAug") == "5.0"
    widget.cleanup()


def test_re_rectifying_over_the_users_edits_asks_first(env):
    import slicer

    module, widget, dialogs, scene, ct_node, prompts = env
    widget.logic.runInProcess = True
    widget.logic.backboneLoader = lambda *args: BrightInBox()
    widget.ui.applyButton.click()
    outputs = widget.outputs
    widget.ui.alphaHSliderWidget.value = 1.5  # no edits yet: no question
    assert dialogs.confirmations == [] and outputs.result.settings.alpha_h == pytest.approx(1.5)

    liver = mrml_outputs.ursam_segments(outputs.segmentation, "rectified")["liver"]
    edited = mrml.segment_mask(outputs.segmentation, liver, ct_node)
    edited[0, :3, :3] = True  # the user paints into URSAM's liver segment
    image, extent = mrml_outputs._mask_image(edited, mrml.ijk_to_ras(ct_node))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, outputs.segmentation, liver, logic.MODE_REPLACE, extent)
    dialogs.confirm_answer = False
    widget.ui.alphaHSliderWidget.value = 2.0
    assert len(dialogs.confirmations) == 1 and "Liver" in dialogs.confirmations[0]
    assert "Gallbladder" not in dialogs.confirmations[0]
    assert np.array_equal(mrml.segment_mask(outputs.segmentation, liver, ct_node), edited)  # kept
    assert outputs.result.settings.alpha_h == pytest.approx(1.5)
    assert widget.ui.statusLabel.text.startswith("Rectification not updated")

    dialogs.confirm_answer = True
    widget.ui.alphaHSliderWidget.value = 2.5
    assert len(dialogs.confirmations) == 2 and outputs.result.settings.alpha_h == pytest.approx(2.5)
    assert not mrml.segment_mask(outputs.segmentation, liver, ct_node)[0, :3, :3].any()
    widget.ui.alphaHSliderWidget.value = 2.0  # URSAM's own result again: no question
    assert len(dialogs.confirmations) == 2


def test_reload_forgets_ursamlib_and_ursamslicerlib_so_their_edits_are_imported(env, monkeypatch):
    module, widget, *_ = env
    ours = [name for name in sys.modules if name.split(".")[0] in ("URSAMLib", "URSAMSlicerLib")]
    assert "URSAMSlicerLib.jobs" in ours and "URSAMLib.pipeline" in ours
    for name in ours:  # put them back after the test: the rest of the suite holds their classes
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
    widget.onReload()
    assert widget.reloaded == 1
    assert not [name for name in sys.modules if name.split(".")[0] in ("URSAMLib", "URSAMSlicerLib")]
    assert "numpy" in sys.modules  # only the module's own packages


def test_settings_and_node_choices_survive_saving_and_loading_the_scene(env, tmp_path):
    module, widget, dialogs, scene, ct_node, prompts = env
    ui = widget.ui
    ui.numAugSliderWidget.value = 7
    ui.ratioSliderWidget.value = 0.05
    ui.alphaHSliderWidget.value = 1.6
    ui.thresholdModeComboBox.currentIndex = 2  # fixed
    ui.promptModeComboBox.currentIndex = 1
    ui.organSetComboBox.currentIndex = ui.organSetComboBox.findData("abdomen")
    ui.backboneComboBox.currentIndex = ui.backboneComboBox.findData("sam-vit-b")
    ui.checkpointPathLineEdit.currentPath = "/weights/sam.pth"
    ui.showEnsembleCheckBox.checked = True
    ui.heatmapOpacitySliderWidget.value = 0.3
    saved = {name: getattr(getattr(ui, control), prop) for name, (control, prop) in module.SAVED_CONTROLS.items()}
    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()

    scene.Clear(0)  # File > Close scene, then load the saved one: the controls follow the scene
    ui.numAugSliderWidget.value = 3
    ui.backboneComboBox.currentIndex = 0
    ui.checkpointPathLineEdit.currentPath = ""
    ui.showEnsembleCheckBox.checked = False
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Import()
    assert {name: getattr(getattr(ui, control), prop) for name, (control, prop) in module.SAVED_CONTROLS.items()} \
        == saved
    assert ui.inputVolumeSelector.currentNode().GetName() == "Oblique"
    assert ui.promptSegmentationSelector.currentNode().GetName() == "Prompts"
    assert ui.inputVolumeSelector.currentNode().GetScene() is scene


def test_the_pin_precision_and_window_reach_the_job_and_bad_ones_are_one_line_errors(env, monkeypatch, tmp_path):
    module, widget, dialogs, scene, ct_node, prompts = env
    ui = widget.ui
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"weights")
    ui.checkpointPathLineEdit.currentPath = str(weights)
    ui.checkpointSha256LineEdit.text = " " + "AB" * 32 + " "
    ui.precisionComboBox.currentIndex = 1
    ui.windowLineEdit.text = "-100, 300"
    started = []
    monkeypatch.setattr(widget.logic, "start", lambda prepared: started.append(prepared) or CancelledJob(module))

    ui.applyButton.click()
    job = started[0].job
    options = job.options  # the job model of `ursam segment`, checked by its checks
    assert isinstance(options, SegmentJob) and options.ct == "Oblique"
    assert (options.checkpoint, options.checkpoint_sha256, options.precision, options.window) == \
        (str(weights), "ab" * 32, "bfloat16", (-100.0, 300.0))
    installs = []
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda ask=True: installs.append(ask))
    for control, value, message in (("windowLineEdit", "300,-100", "LOW must be below HIGH"),
                                    ("windowLineEdit", "soft tissue", "is not two numbers"),
                                    ("checkpointSha256LineEdit", "1234", "is not a SHA-256")):
        ui.windowLineEdit.text, ui.checkpointSha256LineEdit.text = "", ""
        setattr(getattr(ui, control), "text", value)
        ui.applyButton.click()
        text, _ = dialogs.errors[-1]
        assert message in text and "\n" not in text
    ui.checkpointSha256LineEdit.text = ""
    ui.checkpointPathLineEdit.currentPath = str(tmp_path / "missing.pth")
    ui.applyButton.click()
    assert "does not exist" in dialogs.errors[-1][0]
    assert installs == [] and len(started) == 1  # nothing installed or started for a mistake


def test_unverified_weights_are_a_warning_dialog_after_the_run(env):
    from URSAMSlicerLib.testing import unverified_loader

    module, widget, dialogs, *_ = env
    widget.logic.runInProcess = True
    widget.logic.backboneLoader = unverified_loader
    job_module._BACKBONES.clear()
    widget.ui.applyButton.click()
    assert widget.outputs is not None and dialogs.errors == []
    assert any("is not a checkpoint URSAM can verify" in warning for warning in dialogs.warnings)


def test_the_worker_starts_in_slicers_startup_environment(env, monkeypatch):
    module, widget, dialogs, scene, ct_node, prompts = env
    started = []

    class Recorded:
        def __init__(self, job, python, arguments, environment):
            started.append((python, environment))

        def start(self):
            pass

    monkeypatch.setattr(module.running, "BackgroundJob", Recorded)
    monkeypatch.setattr(module.slicer.util, "startupEnvironment", lambda: {"URSAM_STARTUP": "1", "PATH": "/bin"},
                        raising=False)
    widget.logic.start(widget.logic.prepare(widget.requestFromGUI()))
    assert started == [(widget.logic.python, {"URSAM_STARTUP": "1", "PATH": "/bin"})]
    monkeypatch.setattr(module.slicer.util, "startupEnvironment", lambda: module.slicer.app.startupEnvironment(),
                        raising=False)  # outside the application there is none: this process's environment
    widget.logic.start(widget.logic.prepare(widget.requestFromGUI()))
    assert started[-1][1] is None
