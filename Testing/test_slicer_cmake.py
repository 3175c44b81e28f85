"""The extension's CMake files: metadata, and a Slicer build installing URSAMLib beside URSAM.py.

No Slicer SDK can be installed here, so the build test configures the real CMakeLists.txt against a
stand-in ``SlicerConfig.cmake`` whose ``slicerMacroBuildScriptedModule`` copies scripts and resources
the way CTK's ctkMacroCompilePythonScript does (a relative path lands at the same relative path in
the scripted-modules folder; an absolute path at its path relative to the current binary folder).
The installed tree must then work: URSAM.py, URSAMSlicerLib, URSAMLib and its data side by side.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slicer

TOP = (ROOT / "CMakeLists.txt").read_text()
MODULE = (ROOT / "URSAM" / "CMakeLists.txt").read_text()
SCRIPTED = "lib/Slicer-5.8/qt-scripted-modules"

STUB_CONFIG = f"""
set(Slicer_VERSION "5.10.0")
set(Slicer_USE_FILE ${{CMAKE_CURRENT_LIST_DIR}}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${{CMAKE_CURRENT_LIST_DIR}}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${{CMAKE_CURRENT_LIST_DIR}}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR {SCRIPTED})
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR {SCRIPTED})
"""
STUB_USE = r"""
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  set(_destination ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
  foreach(_file ${MY_SCRIPTS})
    if(IS_ABSOLUTE ${_file})
      file(RELATIVE_PATH _target ${CMAKE_CURRENT_BINARY_DIR} ${_file})
      set(_source ${_file})
    else()
      set(_target ${_file})
      set(_source ${CMAKE_CURRENT_SOURCE_DIR}/${_file})
    endif()
    if(NOT EXISTS ${_source})
      message(FATAL_ERROR "script ${_source} does not exist")
    endif()
    configure_file(${_source} ${_destination}/${_target} COPYONLY)
    file(APPEND ${CMAKE_BINARY_DIR}/scripts.txt "${_target}\n")
  endforeach()
  foreach(_file ${MY_RESOURCES})
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${_file})
      message(FATAL_ERROR "resource ${_file} does not exist")
    endif()
    configure_file(${CMAKE_CURRENT_SOURCE_DIR}/${_file} ${_destination}/${_file} COPYONLY)
  endforeach()
  install(DIRECTORY ${_destination}/ DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR})
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""


def cmake() -> str:
    beside = Path(sys.executable).parent / "cmake"  # the test extra's cmake, in the virtual environment
    found = str(beside) if beside.exists() else shutil.which("cmake")
    if found is None:
        if os.environ.get("URSAM_REQUIRE_DATA") == "1":
            pytest.fail("cmake is missing (pip install -e '.[test]')")
        pytest.skip("cmake is not installed")
    return found


def setting(name: str) -> str:
    match = re.search(rf'set\({name} "([^"]*)"\)', TOP)
    assert match, f"{name} is not set"
    return match.group(1)


def test_extension_metadata():
    assert re.search(r"^project\(URSAM\)", TOP, re.M)
    assert setting("EXTENSION_CATEGORY") == "Segmentation"
    assert setting("EXTENSION_DEPENDS") == "PyTorch"
    assert setting("EXTENSION_HOMEPAGE").startswith("https://")
    assert setting("EXTENSION_ICONURL").endswith("URSAM/Resources/Icons/URSAM.png")
    for url in setting("EXTENSION_SCREENSHOTURLS").split():  # images of this repository, at their paths in it
        assert url.startswith("https://raw.githubusercontent.com/ursam/ursam/main/")
        assert (ROOT / url.split("/main/", 1)[1]).is_file(), url
    assert (ROOT / setting("EXTENSION_ICONURL").split("/main/", 1)[1]).is_file()
    assert setting("EXTENSION_CONTRIBUTORS") and "2311.10529" in setting("EXTENSION_DESCRIPTION")
    order = [TOP.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                    "add_subdirectory(URSAM)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                    "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)


def test_module_lists_every_python_file_and_resource():
    listed = set(re.findall(r"^\s+([\w/.${}_]+)$", MODULE, re.M))
    for path in (ROOT / "URSAM" / "URSAMSlicerLib").glob("*.py"):
        assert f"URSAMSlicerLib/{path.name}" in listed
    for path in (ROOT / "URSAMLib").rglob("*.py"):  # subpackages included, at their path in URSAMLib
        name = path.relative_to(ROOT / "URSAMLib").as_posix()
        assert name in listed, name
    for path in (ROOT / "URSAM" / "Resources").rglob("*"):
        if path.is_file():
            name = str(path.relative_to(ROOT / "URSAM")).replace("URSAM.", "${MODULE_NAME}.")
            assert name in listed, name
    for path in (ROOT / "Resources").glob("*.json"):
        assert path.name in listed, path.name
    assert "PROVENANCE.md" in listed
    assert "slicerMacroBuildScriptedModule(" in MODULE
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in MODULE


def stand_in_slicer(folder: Path, version: str = "5.10.0") -> Path:
    """A stand-in Slicer SDK (SlicerConfig.cmake and friends) of the given version, in ``folder``."""
    folder.mkdir()
    (folder / "SlicerConfig.cmake").write_text(STUB_CONFIG.replace('"5.10.0"', f'"{version}"'))
    (folder / "UseSlicer.cmake").write_text(STUB_USE)
    (folder / "Empty.cmake").write_text("")
    return folder


def test_the_minimum_slicer_version_is_the_modules_and_older_slicers_are_refused(tmp_path):
    from URSAMSlicerLib.dependencies import MINIMUM_SLICER_VERSION

    assert setting("URSAM_MINIMUM_SLICER_VERSION") == ".".join(map(str, MINIMUM_SLICER_VERSION))
    refused = subprocess.run([cmake(), "-S", str(ROOT), "-B", str(tmp_path / "build"),
                              f"-DSlicer_DIR={stand_in_slicer(tmp_path / 'slicer', '5.8.1')}"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "URSAM needs 3D Slicer 5.10 or later (found 5.8.1)" in refused.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_slicer_build_installs_ursamlib_and_its_data_beside_the_module(tmp_path):
    stub = stand_in_slicer(tmp_path / "slicer")
    build, prefix = tmp_path / "build", tmp_path / "install"
    for arguments in (["-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}"],
                      ["--install", str(build), "--prefix", str(prefix)]):
        subprocess.run([cmake(), *arguments], check=True, capture_output=True, text=True)
    installed = prefix / SCRIPTED
    packaged = json.loads((ROOT / "Resources" / "builtin.json").read_text())["sha256"]
    assert packaged and any(p.startswith("templates/") for p in packaged) and any(
        p.startswith("localizers/") for p in packaged)
    for path in ["URSAM.py", "Resources/UI/URSAM.ui", "Resources/Icons/URSAM.png", "Resources/PROVENANCE.md",
                 *[f"URSAMSlicerLib/{p.name}" for p in (ROOT / "URSAM" / "URSAMSlicerLib").glob("*.py")],
                 *[f"URSAMLib/{p.relative_to(ROOT / 'URSAMLib').as_posix()}"
                   for p in (ROOT / "URSAMLib").rglob("*.py")],
                 *[f"Resources/{p.name}" for p in (ROOT / "Resources").glob("*.json")]]:
        assert (installed / path).is_file(), path
    for tree in (installed, build / SCRIPTED):  # the built-in templates and the localizer, at their paths
        for path, digest in packaged.items():
            assert (tree / "Resources" / path).is_file(), (tree, path)
            assert hashlib.sha256((tree / "Resources" / path).read_bytes()).hexdigest() == digest, path
    # the installed tree works on its own: URSAMLib finds its data, URSAMSlicerLib its catalogue
    code = ("import URSAMLib.resources as r, URSAMSlicerLib.catalogue as c; "
            f"assert r.resource_path('organs.json') == __import__('pathlib').Path({str(installed)!r}) / 'Resources' "
            "/ 'organs.json'; assert len(c.organs()) == 19; import URSAMLib.backbones as b; "
            "assert 'litemedsam' in b.catalogue(); import URSAMLib.builtin as t; "
            "assert all(t.region_template(n).folder.is_relative_to(r.resource_path('templates')) "
            "for n in t.region_names()); assert t.localizer_weights().is_file()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": str(installed)})


MODULE_LINE_LIMIT = 400
"""A module a maintainer can hold in their head: URSAM.py and each URSAMSlicerLib module stay under this."""


def test_no_python_file_of_the_slicer_module_is_over_about_400_lines():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
             for path in (ROOT / "URSAM").rglob("*.py")}
    assert len(sizes) >= 10 and sizes["URSAM/URSAM.py"] < 150  # the module's declaration and re-exports
    assert {path: lines for path, lines in sizes.items() if lines > MODULE_LINE_LIMIT} == {}
