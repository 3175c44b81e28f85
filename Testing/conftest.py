"""Shared fixtures: the real CT data in ../shared/data and small synthetic volumes.

Tests that need the data are skipped when it is absent, unless URSAM_REQUIRE_DATA=1
(as in .ci/run), which turns a missing data folder into a failure.

Property-based tests (hypothesis) run under the "ci" profile by default: a fixed number of
examples, derandomized (the same examples on every run, so CI never fails by chance), no
per-example deadline (this machine's CPUs are shared) and no example database written to the
checkout. HYPOTHESIS_PROFILE=explore runs many more, randomly chosen examples.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import settings

settings.register_profile("ci", max_examples=100, derandomize=True, deadline=None, database=None,
                          print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "URSAM"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # URSAMSlicerLib, as Slicer puts a module's folder on the path
DATA = Path(os.environ.get("URSAM_DATA", ROOT.parent / "shared" / "data"))
ABDOMEN = DATA / "abdomen-ts"
HEAD_NECK = DATA / "hn-openkbp"
DCMQI = DATA / "ct3slice-dcmqi"


DATA_FIXTURES = {"abdomen", "head_neck", "dcmqi"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that asks, directly or through another fixture, for real data: ``-m data``."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: a test run started as a background
    job (`make test &`, a CI runner's shell) inherits an ignored SIGINT, and Python then never turns
    Ctrl-C into KeyboardInterrupt as it would under a terminal."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"real data not found at {path} (set URSAM_DATA)"
        if os.environ.get("URSAM_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def abdomen() -> Path:
    return _require(ABDOMEN)


@pytest.fixture(scope="session")
def head_neck() -> Path:
    return _require(HEAD_NECK)


@pytest.fixture(scope="session")
def dcmqi() -> Path:
    return _require(DCMQI)


def hn_pair(head_neck: Path, number: int, split: str = "train") -> tuple[str, str]:
    """Paths of head-and-neck patient ``number``'s CT and organ-at-risk label map."""
    ct = head_neck / split / f"pt_{number}_ct.nii.gz"
    return str(ct), str(ct).replace("_ct.nii.gz", "_oar.nii.gz")


def synthetic_ct(shape=(6, 40, 48), spacing=(0.8, 0.9, 2.5), direction=None, origin=(10.0, -20.0, 30.0),
                 seed=0) -> sitk.Image:
    """A small CT-like image (int16 HU) with a bright box 'organ', on any grid.

    shape is the numpy shape (k, j, i); spacing/origin/direction are SimpleITK's (i, j, k).
    """
    rng = np.random.default_rng(seed)
    array = rng.normal(-100, 20, size=shape).astype(np.int16)
    array[1:5, 10:25, 12:30] = 60
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    return image


def damaged_resources(monkeypatch, folder: Path, pattern: str) -> Path:
    """URSAM's Resources/ copied into ``folder`` with one byte changed (the size kept) in the first file
    matching ``pattern`` (a glob below Resources/), and URSAMLib.builtin reading the copy; returns
    that file. Verification results are kept per path, so the installed files' do not stand in."""
    import shutil

    from URSAMLib import builtin

    copy = folder / "Resources"
    shutil.copytree(ROOT / "Resources", copy)
    damaged = next(copy.glob(pattern))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(builtin, "resource_path", lambda name: copy / name)
    return damaged


@pytest.fixture(autouse=True)
def _slicer_logics_released():
    """After each test, the Slicer logics its scenes made are disconnected in order (slicer_scene.release_logics)."""
    yield
    scene_module = sys.modules.get("slicer_scene")
    if scene_module is not None:
        scene_module.release_logics()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test (see no_network.py); yields the attempts."""
    import no_network as guard

    guard.attempts.clear()
    guard.block(monkeypatch.setattr)
    yield guard.attempts
    assert guard.attempts == [], f"network access attempted: {guard.attempts}"
