"""The wheel: built from the sources, installed apart from the checkout, it finds its packaged data.

An editable install reads Resources/ beside URSAMLib/ and would hide a wheel that lacks its data
(or a data package shadowed by a module of the same name), so the wheel is built from a copy of the
sources, installed into a folder of its own, and run from a folder where the checkout is not on
the path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """``(site folder, wheel path)`` of the wheel built from this checkout and installed with ``--target``."""
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("URSAMLib", "Resources"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels, site = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True)
    wheel = next(wheels.glob("ursam-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site, wheel


def _run_installed(site, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", "import sys, URSAMLib, URSAMLib.cli as cli; "
                           "print('from', URSAMLib.__file__); sys.exit(cli.main(sys.argv[1:]))", *args],
                          cwd=site.parent, env=env, capture_output=True, text=True)


def test_the_wheel_carries_every_packaged_file(installed_wheel):
    _, wheel = installed_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT / "Resources").as_posix() for p in (ROOT / "Resources").rglob("*")
               if p.is_file() and p.suffix in {".json", ".md", ".gz", ".pth"}}
    assert shipped and {f"URSAMLib/packaged/{name}" for name in shipped} <= names


def test_templates_and_backbones_run_from_the_installed_wheel(installed_wheel):
    site, _ = installed_wheel
    templates = _run_installed(site, "templates")
    assert templates.returncode == 0, templates.stderr
    assert f"from {site}" in templates.stdout  # the wheel, not the checkout
    assert "head-and-neck:" in templates.stdout and "abdomen:" in templates.stdout
    assert "Mandible" in templates.stdout and "liver" in templates.stdout and "unc-fnc for" in templates.stdout
    backbones = _run_installed(site, "backbones")
    assert backbones.returncode == 0 and "litemedsam (default)" in backbones.stdout, backbones.stderr


def test_the_installed_wheel_verifies_its_template_and_localizer_files(installed_wheel):
    site, _ = installed_wheel
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("from URSAMLib import builtin; t = builtin.region_template('head-and-neck'); "
            "w = builtin.localizer_weights(); print(t.folder, w)")
    done = subprocess.run([sys.executable, "-c", code], cwd=site.parent, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(site / "URSAMLib" / "packaged" / "templates" / "head-and-neck"))
