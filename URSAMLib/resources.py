"""Find the data files kept in the top-level ``Resources/`` folder.

In a source checkout and in a Slicer build, ``Resources/`` sits beside ``URSAMLib/``;
a wheel installs the same files as the package ``URSAMLib.packaged`` (a name of its own: a
data package named like this module would be shadowed by it).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


def resource_path(name: str) -> Path:
    """The path of ``name`` (relative, ``/``-separated) in ``Resources/``: beside ``URSAMLib/``
    (checkout, Slicer) or, in a wheel install, ``URSAMLib/packaged/``."""
    here = Path(__file__).resolve().parent
    beside = here.parent / "Resources" / name
    return beside if beside.exists() else here / "packaged" / name


@lru_cache(maxsize=None)
def load_json(name: str) -> dict:
    """A JSON resource, with keys starting with ``_`` (comments) removed."""
    data = json.loads(resource_path(name).read_text())
    return {key: value for key, value in data.items() if not key.startswith("_")}
