"""A stand-in for the part of 3D Slicer that needs the application: ScriptedLoadableModule and Qt.

Everything else URSAM.py touches is real: the ``slicer`` package is slicer-core's (MRML nodes,
segmentation logic, subject hierarchy), ``slicer.mrmlScene`` is a real vtkMRMLScene. Only these are
replaced:

* ``slicer.ScriptedLoadableModule`` — the four base classes, minimal;
* ``qt`` — QTimer (fired by hand), list and table items, the Qt enums the module uses;
* ``slicer.util.loadUI`` / ``childWidgetVariables`` — the real ``Resources/UI/URSAM.ui`` is parsed
  and each named widget becomes a fake that behaves like PythonQt exposes it: properties as
  attributes (``slider.value = 4`` emits ``valueChanged(double)``), signals connected by signature
  strings, initial values taken from the .ui;
* ``slicer.util.errorDisplay``, ``warningDisplay`` and friends — recorded instead of shown.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from collections import defaultdict

from conftest import MODULE_DIR
from slicer_scene import new_scene, require

# ---------------------------------------------------------------------------------------
# qt


class Qt:
    Unchecked, Checked = 0, 2
    UserRole = 256
    NoItemFlags, ItemIsSelectable, ItemIsUserCheckable, ItemIsEnabled = 0, 1, 16, 32
    WaitCursor = 3


class QApplication:
    """Records the override cursor (slicer.util.WaitCursor sets it on qt.QApplication)."""

    cursors: list = []
    history: list = []

    @classmethod
    def setOverrideCursor(cls, cursor):
        cls.cursors.append(cursor)
        cls.history.append(("set", cursor))

    @classmethod
    def restoreOverrideCursor(cls):
        cls.cursors.pop()
        cls.history.append(("restore", None))


class QTimer:
    def __init__(self):
        self.interval, self.active, self._slots = 0, False, []

    def setInterval(self, milliseconds):
        self.interval = milliseconds

    def connect(self, signal, slot):
        assert signal == "timeout()"
        self._slots.append(slot)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active

    def fire(self):
        """What the event loop would do when the interval elapses."""
        for slot in list(self._slots):
            slot()


class QListWidgetItem:
    def __init__(self, text=""):
        self._text, self._flags, self._check, self._data = text, Qt.ItemIsSelectable | Qt.ItemIsEnabled, None, {}

    def text(self):
        return self._text

    def flags(self):
        return self._flags

    def setFlags(self, flags):
        self._flags = flags

    def checkState(self):
        return self._check

    def setCheckState(self, state):
        self._check = state

    def data(self, role):
        return self._data.get(role)

    def setData(self, role, value):
        self._data[role] = value


class QTableWidgetItem:
    def __init__(self, text=""):
        self._text = text

    def text(self):
        return self._text


def make_qt_module() -> types.ModuleType:
    module = types.ModuleType("qt")
    module.Qt, module.QTimer = Qt, QTimer
    QApplication.cursors, QApplication.history = [], []
    module.QApplication = QApplication
    module.QListWidgetItem, module.QTableWidgetItem = QListWidgetItem, QTableWidgetItem
    return module


# ---------------------------------------------------------------------------------------
# Widgets from the .ui

class FakeWidget:
    """A widget as PythonQt shows it: properties are attributes, signals are connected by signature."""

    SIGNALS: dict[str, str] = {}
    """Property → signal emitted when it changes."""

    def __init__(self, class_name: str, name: str, properties: dict):
        object.__setattr__(self, "_slots", defaultdict(list))
        self.className, self.objectName = class_name, name
        self.enabled, self.visible, self.toolTip = True, True, ""
        for key, value in properties.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key, value):
        signal = self.SIGNALS.get(key)
        changed = signal is not None and getattr(self, key, None) != value
        object.__setattr__(self, key, value)
        if changed:
            self.emit(signal, value)

    def connect(self, signal: str, slot) -> None:
        self._slots[signal].append(slot)

    def emit(self, signal: str, *args) -> None:
        for slot in list(self._slots[signal]):
            slot(*args)

    def setEnabled(self, enabled):
        self.enabled = bool(enabled)

    def setVisible(self, visible):
        self.visible = bool(visible)


class FakeSlider(FakeWidget):  # ctkSliderWidget
    SIGNALS = {"value": "valueChanged(double)"}

    def __setattr__(self, key, value):
        if key == "value" and hasattr(self, "maximum"):
            value = min(max(float(value), self.minimum), self.maximum)  # Qt clamps like this
        super().__setattr__(key, value)


class FakeCheckBox(FakeWidget):
    SIGNALS = {"checked": "toggled(bool)"}

    def setChecked(self, checked):
        self.checked = bool(checked)


class FakeButton(FakeWidget):
    def click(self):
        self.emit("clicked(bool)", False)


class FakePathLineEdit(FakeWidget):  # ctkPathLineEdit
    SIGNALS = {"currentPath": "currentPathChanged(QString)"}


class FakeComboBox(FakeWidget):
    SIGNALS = {"currentIndex": "currentIndexChanged(int)"}

    @property
    def count(self):
        return len(self.items)

    @property
    def currentText(self):
        return self.items[self.currentIndex][0] if 0 <= self.currentIndex < self.count else ""

    @property
    def currentData(self):
        return self.items[self.currentIndex][1] if 0 <= self.currentIndex < self.count else None

    def addItem(self, text, data=None):
        self.items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def itemText(self, index):
        return self.items[index][0]

    def itemData(self, index):
        return self.items[index][1]

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index):
        self.currentIndex = index

    def setItemText(self, index, text):
        self.items[index] = (text, self.items[index][1])

    def setItemData(self, index, data):
        self.items[index] = (self.items[index][0], data)

    def clear(self):
        self.items.clear()
        self.currentIndex = -1


class FakeNodeComboBox(FakeWidget):  # qMRMLNodeComboBox
    def setMRMLScene(self, scene):
        self.mrmlScene = scene
        if not self.noneEnabled and getattr(self, "_node", None) is None:
            first = next((scene.GetNthNodeByClass(i, self.nodeTypes[0])
                          for i in range(scene.GetNumberOfNodesByClass(self.nodeTypes[0]))), None)
            self.setCurrentNode(first)

    def currentNode(self):
        return getattr(self, "_node", None)

    def setCurrentNode(self, node):
        if node is not None:
            assert node.IsA(self.nodeTypes[0]), f"{self.objectName} cannot hold a {node.GetClassName()}"
        object.__setattr__(self, "_node", node)
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class FakeLineEdit(FakeWidget):  # QLineEdit
    SIGNALS = {"text": "textChanged(QString)"}


class FakePlainTextEdit(FakeWidget):  # QPlainTextEdit
    def setPlainText(self, text):
        self.plainText = text

    def toPlainText(self):
        return getattr(self, "plainText", "")


class FakeListWidget(FakeWidget):
    @property
    def count(self):
        return len(self.items)

    def clear(self):
        self.items.clear()

    def addItem(self, item):
        self.items.append(item)

    def item(self, row):
        return self.items[row]


class FakeTableWidget(FakeWidget):
    def setRowCount(self, rows):
        self.rows = {r: self.rows.get(r, {}) for r in range(rows)}

    def rowCount(self):
        return len(self.rows)

    def setItem(self, row, column, item):
        self.rows[row][column] = item

    def item(self, row, column):
        return self.rows[row].get(column)


class FakeRoot(FakeWidget):  # qMRMLWidget: propagates the scene like the .ui's connections do
    def setMRMLScene(self, scene):
        self.mrmlScene = scene
        for target in self.scene_receivers:
            target.setMRMLScene(scene)


WIDGET_CLASSES = {
    "ctkSliderWidget": FakeSlider, "QCheckBox": FakeCheckBox, "QPushButton": FakeButton,
    "ctkPathLineEdit": FakePathLineEdit, "QComboBox": FakeComboBox, "qMRMLNodeComboBox": FakeNodeComboBox,
    "QListWidget": FakeListWidget, "QTableWidget": FakeTableWidget, "qMRMLWidget": FakeRoot,
    "QPlainTextEdit": FakePlainTextEdit, "QLineEdit": FakeLineEdit,
}


def _value(node: ET.Element):
    kind = node[0]
    if kind.tag in ("double",):
        return float(kind.text)
    if kind.tag == "number":
        return int(kind.text)
    if kind.tag == "bool":
        return kind.text == "true"
    if kind.tag == "string":
        return kind.text or ""
    if kind.tag == "stringlist":
        return [s.text or "" for s in kind]
    return kind.text


def load_ui(path) -> FakeRoot:
    """Every named widget of a .ui file as a fake, initialised from the file's properties."""
    tree = ET.parse(path)
    widgets = {}
    for element in tree.iter("widget"):
        properties = {p.get("name"): _value(p) for p in element.findall("property")}
        cls = WIDGET_CLASSES.get(element.get("class"), FakeWidget)
        if cls is FakeComboBox:
            properties["items"] = [(i.find("property/string").text, None) for i in element.findall("item")]
            properties.setdefault("currentIndex", 0 if properties["items"] else -1)
        if cls is FakeListWidget:
            properties["items"] = []
        if cls is FakeTableWidget:
            properties["rows"] = {}
        if cls is FakeCheckBox:
            properties.setdefault("checked", False)
        if cls is FakePathLineEdit:
            properties.setdefault("currentPath", "")
        if cls is FakeLineEdit:
            properties.setdefault("text", "")
        widgets[element.get("name")] = cls(element.get("class"), element.get("name"), properties)
    root = widgets[tree.find("widget").get("name")]
    object.__setattr__(root, "children", widgets)
    object.__setattr__(root, "scene_receivers", [
        widgets[c.find("receiver").text] for c in tree.iter("connection")
        if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"])
    return root


# ---------------------------------------------------------------------------------------
# ScriptedLoadableModule

class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = self.__class__.__name__[:-len("Widget")]
        self.layout = types.SimpleNamespace(widgets=[], addWidget=lambda w: self.layout.widgets.append(w))

    def onReload(self):
        """Slicer's Reload re-imports the module's script; here it is only recorded."""
        self.reloaded = getattr(self, "reloaded", 0) + 1

    def resourcePath(self, filename):
        return str(MODULE_DIR / "Resources" / filename)

    def setup(self):
        pass


class ScriptedLoadableModuleLogic:
    """Slicer's parameter-node handling, as ScriptedLoadableModule.py does it, on the real scene."""

    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__[:-len("Logic")]

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            if node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return slicer.mrmlScene.AddNode(node)


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, milliseconds=0):
        self.displayed = getattr(self, "displayed", []) + [message]


def make_scripted_loadable_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")
    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    module.__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                      "ScriptedLoadableModuleTest"]
    return module


class Dialogs:
    """Records what the module would show in message boxes."""

    def __init__(self):
        self.errors: list[tuple[str, dict]] = []
        self.warnings: list[str] = []
        self.confirmations: list[str] = []
        self.confirm_answer = True

    def errorDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        self.errors.append((text, kwargs))

    def warningDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        self.warnings.append(text)

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        self.confirmations.append(text)
        return self.confirm_answer


def install(monkeypatch):
    """Install the fake layer around the real slicer-core package; returns (slicer, dialogs).
    ``monkeypatch`` undoes it all after the test."""
    slicer = require("slicer")
    require("slicer.util")  # loaded, so that slicer.util is there to patch

    dialogs = Dialogs()
    monkeypatch.setitem(sys.modules, "qt", make_qt_module())
    scripted = make_scripted_loadable_module()
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", scripted, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", new_scene(), raising=False)
    major, minor = (int(v) for v in importlib.metadata.version("slicer-core").split(".")[:2])
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(testingEnabled=lambda: True, majorVersion=major,
                                                             minorVersion=minor, processEvents=lambda: None),
                        raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda root: types.SimpleNamespace(**root.children))
    monkeypatch.setattr(slicer.util, "errorDisplay", dialogs.errorDisplay)
    monkeypatch.setattr(slicer.util, "warningDisplay", dialogs.warningDisplay)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", dialogs.confirmOkCancelDisplay)
    return slicer, dialogs


GUI_MODULES = ("gui", "requests", "prompting", "logic", "widget", "widget_settings", "widget_prompts", "widget_run",
               "moduletest")
"""The modules of URSAMSlicerLib that URSAM.py's classes live in."""


def import_module(monkeypatch):
    """Import URSAM/URSAM.py afresh under the fake layer, with the parts of URSAMSlicerLib that hold
    its logic, widget and self-test (they import qt and slicer.ScriptedLoadableModule, faked per
    test); returns the module."""
    for name in [n for n in sys.modules if n.split(".")[-1] in GUI_MODULES and n.startswith("URSAMSlicerLib.")]:
        monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location("URSAM", MODULE_DIR / "URSAM.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "URSAM", module)
    spec.loader.exec_module(module)
    return module


def choose_source(ui, source: str) -> None:
    """Choose a prompt source by its name in URSAM.PROMPT_SOURCES, as a user picks its item."""
    combo = ui.promptSourceComboBox
    index = combo.findData(source)
    assert index >= 0, f"no prompt source {source!r} in {combo.items}"
    combo.currentIndex = index
