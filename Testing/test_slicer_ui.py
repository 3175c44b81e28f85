"""URSAM/Resources/UI/URSAM.ui loaded by Qt's own QUiLoader (PySide6, offscreen): every named control,
its range and its default; and the glue in URSAM.py uses exactly these names and item orders.

Slicer's custom widgets (ctk*, qMRML*) are unknown to plain Qt, so QUiLoader builds their declared
base class and keeps their properties as dynamic properties; their class names are checked in the
XML, their values through the loaded widgets.
"""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import MODULE_DIR, ROOT
from slicer_scene import require
from URSAMLib.pipeline import Settings
from URSAMLib.prompts import DEFAULT_BOX_MARGIN

pytestmark = pytest.mark.slicer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
UI = MODULE_DIR / "Resources" / "UI" / "URSAM.ui"

MARGIN = "/".join(f"{v:g}" for v in DEFAULT_BOX_MARGIN.zyx)
DEFAULTS = Settings()
"""URSAMLib's defaults: the .ui shows them (and the widget sets them again, from URSAMLib)."""
SLIDERS = {  # name: (minimum, maximum, singleStep, decimals, default)
    "numAugSliderWidget": (1, 10, 1, 0, DEFAULTS.num_aug),
    "ratioSliderWidget": (0.0, 0.2, 0.005, 3, DEFAULTS.ratio),
    "alphaHSliderWidget": (1.0, 3.0, 0.05, 2, DEFAULTS.alpha_h),
    "heatmapOpacitySliderWidget": (0.0, 1.0, 0.05, 2, 0.5),
}
COMBOS = {  # name: items (empty: filled by URSAMWidget.setup)
    "promptSourceComboBox": ["Built-in template (only the CT needed)", "Segments in the scene",
                             "Label map in the scene",
                             "Template folder (automatic localization)", "Template from labelled CTs in the scene"],
    "promptModeComboBox": ["Per-slice boxes", f"3-D box (+{MARGIN} mm margin)"],
    "deviceComboBox": ["Automatic (GPU if present)", "CPU", "CUDA GPU", "Apple GPU (MPS)"],
    "precisionComboBox": ["float32", "bfloat16 (faster)"],
    "thresholdModeComboBox": ["Per organ, as measured", "Class-specific (Eq. 3)", "Fixed (ln 2 / 2)"],
    "organSetComboBox": [],
    "backboneComboBox": [],
    "localizerComboBox": [],
}
NODE_SELECTORS = {  # name: (node type, none enabled, none display)
    "inputVolumeSelector": ("vtkMRMLScalarVolumeNode", False, None),
    "promptSegmentationSelector": ("vtkMRMLSegmentationNode", True, "Select segments drawn on this CT"),
    "promptLabelMapSelector": ("vtkMRMLLabelMapVolumeNode", True, "Select a label map on this CT"),
    "outputSegmentationSelector": ("vtkMRMLSegmentationNode", True, "Create new segmentation"),
    "supportVolumeSelector": ("vtkMRMLScalarVolumeNode", True, "Select a labelled CT"),
    "supportSegmentationSelector": ("vtkMRMLSegmentationNode", True, "Select its organ segments"),
}
PATHS = {"classesPathLineEdit": "Files", "templatePathLineEdit": "Dirs", "checkpointPathLineEdit": "Files",
         "localizerWeightsPathLineEdit": "Files"}
COLLAPSIBLES = {"inputsCollapsibleButton": False, "advancedCollapsibleButton": True, "outputsCollapsibleButton": False,
                "logCollapsibleButton": True}
OTHERS = {"URSAM": "qMRMLWidget", "applyButton": "QPushButton", "progressBar": "QProgressBar", "statusLabel": "QLabel",
          "showEnsembleCheckBox": "QCheckBox", "previousRegionButton": "QPushButton",
          "nextRegionButton": "QPushButton", "organsListWidget": "QListWidget", "organTableWidget": "QTableWidget",
          "templateNoteLabel": "QLabel", "supportsListWidget": "QListWidget", "addSupportButton": "QPushButton",
          "clearSupportsButton": "QPushButton", "show3DCheckBox": "QCheckBox", "logTextEdit": "QPlainTextEdit",
          "checkpointSha256LineEdit": "QLineEdit", "windowLineEdit": "QLineEdit", "takeRectifiedButton": "QPushButton",
          "takeEnsembleButton": "QPushButton", "eraseRegionButton": "QPushButton"}
LABELS = {"inputVolumeLabel", "promptSourceLabel", "promptSegmentationLabel", "promptLabelMapLabel", "classesLabel",
          "templateLabel", "promptModeLabel", "organSetLabel", "organsLabel", "numAugLabel", "ratioLabel",
          "backboneLabel", "checkpointLabel", "deviceLabel", "alphaHLabel", "thresholdModeLabel",
          "outputSegmentationLabel", "heatmapOpacityLabel", "supportVolumeLabel", "supportSegmentationLabel",
          "supportsLabel", "localizerLabel", "localizerWeightsLabel", "checkpointSha256Label", "precisionLabel",
          "windowLabel"}


@pytest.fixture(scope="module")
def ui():
    widgets = require("PySide6.QtWidgets")
    ui_tools = require("PySide6.QtUiTools")
    app = widgets.QApplication.instance() or widgets.QApplication([])
    loader = ui_tools.QUiLoader()
    root = loader.load(str(UI))
    assert root is not None and loader.errorString() == "", loader.errorString()
    yield root
    root.deleteLater()
    del app


def child(ui, name):
    from PySide6.QtWidgets import QWidget

    widget = ui if ui.objectName() == name else ui.findChild(QWidget, name)
    assert widget is not None, f"{name} is not in URSAM.ui"
    return widget


def xml_classes() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}


def test_every_named_widget_is_expected_and_of_its_class():
    classes = xml_classes()
    expected = {**{n: "ctkSliderWidget" for n in SLIDERS}, **{n: "QComboBox" for n in COMBOS},
                **{n: "qMRMLNodeComboBox" for n in NODE_SELECTORS}, **{n: "ctkPathLineEdit" for n in PATHS},
                **{n: "ctkCollapsibleButton" for n in COLLAPSIBLES}, **OTHERS, **{n: "QLabel" for n in LABELS}}
    assert classes == expected


@pytest.mark.parametrize("name", sorted(SLIDERS))
def test_slider_ranges_and_defaults(ui, name):
    minimum, maximum, step, decimals, default = SLIDERS[name]
    slider = child(ui, name)
    assert slider.property("minimum") == pytest.approx(minimum)
    assert slider.property("maximum") == pytest.approx(maximum)
    assert slider.property("singleStep") == pytest.approx(step)
    assert slider.property("decimals") == decimals
    assert slider.property("value") == pytest.approx(default)


def test_rectification_sliders_update_on_release_only(ui):
    """α_h re-rectifies the whole result: do it once the handle is released, not on every pixel."""
    assert child(ui, "alphaHSliderWidget").property("tracking") is False


@pytest.mark.parametrize("name", sorted(COMBOS))
def test_combo_box_items(ui, name):
    combo = child(ui, name)
    assert [combo.itemText(i) for i in range(combo.count())] == COMBOS[name]
    assert combo.currentIndex() == (0 if COMBOS[name] else -1)


@pytest.mark.parametrize("name", sorted(NODE_SELECTORS))
def test_node_selectors(ui, name):
    node_type, none_enabled, none_display = NODE_SELECTORS[name]
    selector = child(ui, name)
    assert selector.property("nodeTypes") == [node_type]
    assert selector.property("noneEnabled") is none_enabled
    assert selector.property("showChildNodeTypes") is False  # a label map is no CT
    assert selector.property("addEnabled") is False
    if none_display:
        assert selector.property("noneDisplay") == none_display


def test_every_node_selector_gets_the_scene():
    receivers = {c.find("receiver").text for c in ET.parse(UI).iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)" and c.find("sender").text == "URSAM"}
    assert receivers == set(NODE_SELECTORS)


def test_path_editors_filter_files_or_folders():
    for widget in ET.parse(UI).iter("widget"):
        if widget.get("name") in PATHS:
            filters = widget.find("property[@name='filters']/set").text
            assert f"ctkPathLineEdit::{PATHS[widget.get('name')]}" in filters


def test_buttons_table_progress_and_sections(ui):
    apply = child(ui, "applyButton")
    assert apply.text() == "Auto-segment organs" and apply.isEnabled()
    for name in ("previousRegionButton", "nextRegionButton", "takeRectifiedButton", "takeEnsembleButton",
                 "eraseRegionButton"):
        assert not child(ui, name).isEnabled()  # nothing to step through or decide before a result
    assert [child(ui, n).text() for n in ("takeRectifiedButton", "takeEnsembleButton", "eraseRegionButton")] == \
        ["Take rectified", "Take ensemble", "Erase region"]
    assert not child(ui, "showEnsembleCheckBox").isChecked()
    assert child(ui, "addSupportButton").text() == "Add support" and child(ui, "addSupportButton").isEnabled()
    assert child(ui, "clearSupportsButton").text() == "Clear supports"
    assert child(ui, "supportsListWidget").count() == 0  # supports are added by the user
    progress = child(ui, "progressBar")
    assert (progress.minimum(), progress.maximum(), progress.value()) == (0, 100, 0)
    table = child(ui, "organTableWidget")
    assert [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())] == \
        ["Organ", "Volume (mL)", "Mean uncertainty", "Predicted DSC", "Reliability"]
    from PySide6.QtWidgets import QAbstractItemView

    assert table.editTriggers() == QAbstractItemView.EditTrigger.NoEditTriggers
    assert table.selectionBehavior() == QAbstractItemView.SelectionBehavior.SelectRows
    for name, collapsed in COLLAPSIBLES.items():
        assert child(ui, name).property("collapsed") is collapsed


def test_the_widget_code_uses_only_controls_that_exist_and_the_same_item_orders():
    source = "\n".join(path.read_text() for path in [MODULE_DIR / "URSAM.py",
                                                    *sorted((MODULE_DIR / "URSAMSlicerLib").glob("*.py"))])
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    source_controls = ast.literal_eval(re.search(r"^SOURCE_CONTROLS = (\{.*?\n\})", source, re.M | re.S).group(1))
    used |= set().union(*source_controls.values())
    assert set(source_controls) == set(ast.literal_eval(re.search(r"^PROMPT_SOURCES = (\(.*?\))", source,
                                                                  re.M).group(1)))
    assert used and used <= set(xml_classes()), used - set(xml_classes())
    constants = {name: ast.literal_eval(value) for name, value in  # the tuples mapping combo indices to values
                 re.findall(r"^(PROMPT_SOURCES|PROMPT_MODES|DEVICES|THRESHOLD_MODES|PRECISIONS) = (\(.*?\))",
                            source, re.M)}
    assert len(constants["PROMPT_SOURCES"]) == len(COMBOS["promptSourceComboBox"])
    assert len(constants["PROMPT_MODES"]) == len(COMBOS["promptModeComboBox"])
    assert len(constants["DEVICES"]) == len(COMBOS["deviceComboBox"])
    assert len(constants["THRESHOLD_MODES"]) == len(COMBOS["thresholdModeComboBox"])
    assert len(constants["PRECISIONS"]) == len(COMBOS["precisionComboBox"])
    assert constants["THRESHOLD_MODES"] == ("per-organ", "ursam", "fixed")
    assert constants["PROMPT_MODES"] == ("slice", "box3d")


def test_the_documented_workflow_names_only_controls_that_exist():
    """Every control the workflow in docs/slicer.md names in italics (or bold) is spelled as in the .ui."""
    page = (ROOT / "docs" / "slicer.md").read_text()
    workflow = page.split("## Using it")[1].split("## How the background job works")[0]
    workflow = re.sub(r"\s*\n\s*", " ", workflow)
    named = set(re.findall(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", workflow))
    named |= {b.rstrip(".") for b in re.findall(r"\*\*([^*]+)\*\*", workflow)}
    texts = {t.text.rstrip(":") for t in ET.parse(UI).iter("string") if t.text}
    from URSAMLib.builtin import describe

    texts |= {"Any organ in the prompts", "Cancel", "Review", "OK"}  # set by URSAM.py
    texts |= {entry["title"] for entry in describe()}  # the built-in templates' titles, in the Organ set list
    texts |= {"Automatic: atlas, MedLAM on blanked scans", "Atlas", "Registration", "MedLAM"}  # LOCALIZER_TITLES
    texts |= {"Harden transform", "Show Details"}  # Slicer's Data module; Qt's message box
    steps = {"Load the CT", "Mark the organs roughly", "Open URSAM", "open URSAM", "Read the result",
             "Go where it is unsure", "Tune, then correct", "Auto-segment organs", "Or let URSAM find the organs",
             "Choose the built-in template", "Review the heatmap, then edit", "Settings, the run and the result",
             "The other prompt sources", "Transforms", "Errors", "Settings"}
    not_controls = {"to URSAM's segments", "α_h", "Next / Previous uncertain region", "label map"}
    assert {"Next uncertain region", "Previous uncertain region"} <= texts
    unknown = {phrase for phrase in named - steps - not_controls
               if not any(text == phrase or text.startswith(phrase + " (") for text in texts)}
    assert not unknown, f"docs/slicer.md names controls the .ui does not have: {unknown}"
    assert len(named) > 20


def test_the_box_margin_the_ui_names_is_the_one_the_code_applies(ui):
    assert DEFAULT_BOX_MARGIN.unit == "mm"
    margin = "/".join(f"{v:g}" for v in DEFAULT_BOX_MARGIN.zyx)
    combo = child(ui, "promptModeComboBox")
    assert combo.itemText(1) == f"3-D box (+{margin} mm margin)"
    assert f"enlarged by {margin} mm" in combo.toolTip()
    assert f"{margin} mm larger" in child(ui, "templateNoteLabel").text()
    # every margin the .ui writes is the one applied (the widget replaces each with URSAMLib's)
    pattern = re.compile(r"\d+(?:\.\d+)?/\d+(?:\.\d+)?/\d+(?:\.\d+)? (?:mm|voxels?)")
    written = pattern.findall(UI.read_text())
    assert len(written) >= 3 and set(written) == {f"{margin} mm"}


def test_the_default_rectification_method_is_urSAMLibs(ui):
    assert child(ui, "thresholdModeComboBox").currentIndex() == ("per-organ", "ursam", "fixed").index(DEFAULTS.method)


def test_the_log_is_read_only_and_folded_away(ui):
    assert child(ui, "logTextEdit").isReadOnly()
    assert not child(ui, "show3DCheckBox").isChecked()


# ---------------------------------------------------------------------------------------
# The extension's screenshot: the panel as the .ui lays it out

SCREENSHOT = ROOT / "docs" / "slicer-screenshot.png"


def render_panel(path, width: int = 460):
    """Render URSAM.ui offscreen with plain Qt and save it as a PNG: the panel as the .ui lays it out,
    with CTK's and Slicer's widgets (unknown to plain Qt) drawn by look-alike stand-ins that show their
    properties from the .ui, and the combo boxes the module fills filled as it fills them. Returns the
    image size ``(width, height)``."""
    widgets = require("PySide6.QtWidgets")
    ui_tools = require("PySide6.QtUiTools")
    from PySide6.QtCore import Qt

    from URSAMLib.backbones import catalogue as backbones
    from URSAMSlicerLib import catalogue

    app = widgets.QApplication.instance() or widgets.QApplication([])

    class ctkCollapsibleButton(widgets.QGroupBox):  # noqa: N801  (named as in the .ui)
        pass

    loader = ui_tools.QUiLoader()
    loader.registerCustomWidget(ctkCollapsibleButton)
    root = loader.load(str(UI))
    for box in root.findChildren(ctkCollapsibleButton):
        collapsed = bool(box.property("collapsed"))
        box.setTitle(("▸ " if collapsed else "▾ ") + box.property("text"))
        if collapsed:
            for inner in box.findChildren(widgets.QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
                inner.hide()
    shown_nodes = {"inputVolumeSelector": "CT"}
    for name in NODE_SELECTORS:
        holder = child(root, name)
        combo = widgets.QComboBox()
        combo.addItem(shown_nodes.get(name, holder.property("noneDisplay") or ""))
        widgets.QHBoxLayout(holder).addWidget(combo)
        holder.layout().setContentsMargins(0, 0, 0, 0)
    for name in SLIDERS:
        holder = child(root, name)
        layout = widgets.QHBoxLayout(holder)
        layout.setContentsMargins(0, 0, 0, 0)
        scale = 10 ** holder.property("decimals")
        slider = widgets.QSlider(Qt.Orientation.Horizontal)
        slider.setRange(round(holder.property("minimum") * scale), round(holder.property("maximum") * scale))
        slider.setValue(round(holder.property("value") * scale))
        spin = widgets.QDoubleSpinBox()
        spin.setDecimals(holder.property("decimals"))
        spin.setRange(holder.property("minimum"), holder.property("maximum"))
        spin.setValue(holder.property("value"))
        layout.addWidget(slider)
        layout.addWidget(spin)
    for name in PATHS:
        holder = child(root, name)
        layout = widgets.QHBoxLayout(holder)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(widgets.QLineEdit())
        layout.addWidget(widgets.QToolButton(text="..."))
    from URSAMLib import builtin

    # the default prompt source, the built-in template, as URSAMWidget fills it: the first region,
    # its localizer, its organs under the catalogue's names
    region = builtin.describe()[0]
    child(root, "organSetComboBox").addItem(region["title"])
    child(root, "backboneComboBox").addItem(next(iter(backbones().values()))["title"])
    child(root, "localizerComboBox").addItem("Automatic: atlas, MedLAM on blanked scans")
    organs = child(root, "organsListWidget")
    for name in region["organs"]:
        item = widgets.QListWidgetItem(catalogue.match_name(name).name)
        item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        item.setCheckState(Qt.CheckState.Checked)
        organs.addItem(item)
    for name in ("promptSegmentationLabel", "promptSegmentationSelector", "promptLabelMapSelector",
                 "promptLabelMapLabel", "classesLabel", "classesPathLineEdit", "templateLabel", "templatePathLineEdit",
                 "supportVolumeLabel", "supportVolumeSelector", "supportSegmentationLabel",
                 "supportSegmentationSelector", "supportsLabel", "supportsListWidget", "addSupportButton",
                 "clearSupportsButton"):
        child(root, name).hide()  # the default prompt source, the built-in template, needs only the CT
    child(root, "promptModeComboBox").setEnabled(False)  # its boxes are the localized ones
    root.resize(width, 10)
    root.adjustSize()
    root.resize(width, root.sizeHint().height())
    image = root.grab()
    assert image.save(str(path))
    size = (image.width(), image.height())
    root.deleteLater()
    del app
    return size


def test_the_screenshot_is_the_ui_as_it_is_now(tmp_path):
    """docs/slicer-screenshot.png (the extension's screenshot) is the .ui rendered by render_panel;
    after a change of the .ui, run `python Testing/test_slicer_ui.py` to make it again."""
    from PySide6.QtGui import QImage

    width, height = render_panel(tmp_path / "panel.png")
    rendered = QImage(str(tmp_path / "panel.png"))
    colours = {rendered.pixel(x, y) for x in range(0, width, 7) for y in range(0, height, 7)}
    assert height > width and len(colours) > 20  # a panel with controls, not a blank window
    committed = QImage(str(SCREENSHOT))
    assert not committed.isNull(), f"{SCREENSHOT} is missing"
    # fonts differ between machines, so only the shape is compared
    assert abs(committed.width() - width) < 0.2 * width and abs(committed.height() - height) < 0.2 * height


if __name__ == "__main__":
    print(SCREENSHOT, render_panel(SCREENSHOT))
