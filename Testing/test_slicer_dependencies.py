"""URSAMSlicerLib.dependencies: what is installed inside Slicer, when, and after which question."""
from __future__ import annotations

import re
import sys
import types
from subprocess import CalledProcessError

import pytest

from conftest import ROOT
from URSAMLib.errors import URSAMError
from URSAMSlicerLib import dependencies

pytestmark = pytest.mark.slicer


class FakeSlicer:
    """The parts of the slicer package that install packages, recording every call."""

    def __init__(self, with_pip_ensure=True, answer=True, pip_fails=False):
        self.calls = []
        self.util = types.SimpleNamespace(confirmOkCancelDisplay=self._confirm, pip_install=self._pip_install)
        self.answer, self.pip_fails = answer, pip_fails
        if with_pip_ensure:
            self.packaging = types.SimpleNamespace(pip_ensure=self._pip_ensure)

    def _confirm(self, text, title=None, **kwargs):
        self.calls.append(("confirm", text))
        return self.answer

    def _pip_install(self, requirements):
        self.calls.append(("pip_install", requirements))
        if self.pip_fails:
            raise CalledProcessError(1, "pip")
        dependencies_installed.append(True)

    def _pip_ensure(self, requirements, prompt_install=True, requester=None, **kwargs):
        self.calls.append(("pip_ensure", requirements, prompt_install, requester))
        if not self.answer:
            raise RuntimeError("User declined")
        dependencies_installed.append(True)


dependencies_installed: list[bool] = []


@pytest.fixture
def missing(monkeypatch):
    """Pretend segment-anything is missing until something installs it."""
    dependencies_installed.clear()
    monkeypatch.setattr(dependencies, "missing_requirements",
                        lambda requirements=dependencies.REQUIREMENTS: [] if dependencies_installed
                        else ["segment-anything>=1.0"])
    monkeypatch.setattr(dependencies, "torch_installed", lambda: True)


def test_every_runtime_dependency_of_ursamlib_is_accounted_for():
    block = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    declared = re.findall(r'"([^"]+)"', block)
    assert len(declared) >= 5
    names = {entry.split(">")[0].split("=")[0].split("<")[0].strip().lower() for entry in declared}
    listed = {r.split(">")[0].split("=")[0].lower() for r in dependencies.REQUIREMENTS}
    covered = listed | {n.lower() for n in dependencies.PROVIDED_BY_SLICER + dependencies.PROVIDED_BY_PYTORCH_EXTENSION
                                                + dependencies.COMMAND_LINE_ONLY}
    assert names == covered


def test_nothing_is_asked_or_installed_when_everything_is_there(monkeypatch):
    monkeypatch.setattr(dependencies, "missing_requirements", lambda requirements=(): [])
    monkeypatch.setattr(dependencies, "torch_installed", lambda: True)
    slicer = FakeSlicer()
    dependencies.ensure(slicer)
    assert slicer.calls == []


def test_requirements_are_checked_against_installed_versions():
    assert dependencies.missing_requirements(("numpy>=1.0",)) == []
    assert dependencies.missing_requirements(("numpy>=999",)) == ["numpy>=999"]
    assert dependencies.missing_requirements(("surely-not-installed-ursam-x",)) == ["surely-not-installed-ursam-x"]


def test_pip_ensure_asks_and_installs_where_slicer_has_it(missing):
    slicer = FakeSlicer()
    dependencies.ensure(slicer)
    assert slicer.calls == [("pip_ensure", ["segment-anything>=1.0"], True, "URSAM")]


def test_older_slicer_confirms_then_pip_installs(missing):
    slicer = FakeSlicer(with_pip_ensure=False)
    dependencies.ensure(slicer)
    assert [call[0] for call in slicer.calls] == ["confirm", "pip_install"]
    assert "segment-anything" in slicer.calls[0][1]


@pytest.mark.parametrize("with_pip_ensure", [True, False])
def test_declining_stops_with_a_clear_message_and_installs_nothing(missing, with_pip_ensure):
    slicer = FakeSlicer(with_pip_ensure=with_pip_ensure, answer=False)
    with pytest.raises(URSAMError, match="segment-anything"):
        dependencies.ensure(slicer)
    assert "pip_install" not in [call[0] for call in slicer.calls] and not dependencies_installed


def test_a_failed_pip_install_is_a_user_error(missing):
    slicer = FakeSlicer(with_pip_ensure=False, pip_fails=True)
    with pytest.raises(URSAMError, match="network"):
        dependencies.ensure(slicer)


def test_torch_comes_from_the_pytorch_extension(monkeypatch):
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda requirements=(): [])
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the extension is not installed
    with pytest.raises(URSAMError, match="'PyTorch' extension from the Extensions Manager"):
        dependencies.ensure(FakeSlicer())

    installs = []

    class PyTorchUtilsLogic:
        def torchInstalled(self):
            return False

        def installTorch(self, askConfirmation=True, **kwargs):
            installs.append(askConfirmation)
            return object()

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    slicer = FakeSlicer()
    dependencies.ensure(slicer)
    assert installs == [False] and slicer.calls[0][0] == "confirm"  # our question, then no second one
    slicer = FakeSlicer(answer=False)
    installs.clear()
    with pytest.raises(URSAMError, match="declined"):
        dependencies.ensure(slicer)
    assert installs == []

