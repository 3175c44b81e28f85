"""What ships inside URSAM for one-click segmentation: built-in region templates and the trained
localizer, each file pinned by SHA-256 in the catalogue ``Resources/builtin.json``.

``ursam segment CT --region head-and-neck`` needs nothing else: no labels, no template folder, no
download. The catalogue is data (region → template folder, default localizer, provenance); it and
the files it lists are rebuilt from ``../shared/data`` by ``scripts/build_builtin_templates.py``.
Every packaged file is checked against its SHA-256 before it is used, so a damaged install is one
clear sentence rather than a wrong segmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import URSAMError
from .resources import load_json, resource_path
from .weights import sha256_of

CATALOGUE = "builtin.json"


@dataclass(frozen=True)
class RegionTemplate:
    """A built-in template of one body region."""

    region: str
    """Its name on the command line (``--region``), e.g. ``head-and-neck``."""
    title: str
    folder: Path
    """The template folder (as :class:`URSAMLib.template.Template` loads it)."""
    localizer: str
    """The localizer chosen for this region by measurement (a name of ``localize.LOCALIZERS``)."""
    organs: tuple[str, ...]
    supports: int
    provenance: str


def _catalogue() -> dict:
    return load_json(CATALOGUE)


def region_names() -> list[str]:
    """The built-in regions, in catalogue order."""
    return list(_catalogue()["templates"])


def region_template(region: str) -> RegionTemplate:
    """The built-in template of ``region``, its files verified; a user error for an unknown region."""
    entries = _catalogue()["templates"]
    if region not in entries:
        raise URSAMError(f"Unknown region {region!r}; the built-in templates are: {', '.join(entries)} "
                         "(see 'ursam templates'), or give your own with --template TEMPLATE_DIR.")
    entry = entries[region]
    _verify_under(entry["folder"])
    return RegionTemplate(region, entry["title"], resource_path(entry["folder"]), entry["localizer"],
                          tuple(entry["organs"]), entry["supports"], entry["provenance"])


def localizer_weights() -> Path:
    """The shipped MedLAM weights (``Resources/localizers/``), verified."""
    relative = _catalogue()["localizer_weights"]
    _verify_under(relative)
    return resource_path(relative)


def describe() -> list[dict]:
    """Every built-in template as ``ursam templates`` lists it, with the rectification it names per
    organ (only its manifest is read; the scans are not)."""
    return [{"region": name, "title": entry["title"], "organs": entry["organs"], "supports": entry["supports"],
             "localizer": entry["localizer"], "provenance": entry["provenance"],
             "rectification": load_json(f"{entry['folder']}/template.json").get("rectification", {})}
            for name, entry in _catalogue()["templates"].items()]


def _verify_under(prefix: str) -> None:
    """Check every catalogued file under ``prefix`` (a file or folder of Resources/) once per process."""
    files = {path: digest for path, digest in _catalogue()["sha256"].items()
             if path == prefix or path.startswith(prefix.rstrip("/") + "/")}
    if not files:
        raise URSAMError(f"The catalogue {CATALOGUE} lists no files for {prefix}; reinstall URSAM.")
    for relative, digest in files.items():
        _verify(relative, resource_path(relative), digest)


@lru_cache(maxsize=None)
def _verify(relative: str, path: Path, expected: str) -> None:
    """Once per process and file: reading 7 MB on every run would cost more than the check is worth."""
    if not path.is_file():
        raise URSAMError(f"URSAM's packaged file {relative} is missing ({path}); reinstall URSAM.")
    if sha256_of(path) != expected:
        raise URSAMError(f"URSAM's packaged file {relative} fails its SHA-256 check ({path}): the installation "
                         "is damaged or was altered; reinstall URSAM.")
