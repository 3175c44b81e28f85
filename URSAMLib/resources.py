"""Find the data files kept in the top-level ``Resources/`` folder.

In a source checkout and in a Slicer build, ``Resources/`` sits beside ``URSAMLib/``;
a wheel installs the same files as the package ``URSAMLib.resources``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


def resource_path(name: str) -> Path:
    beside = Path(__file__).resolve().parent.parent / "Resources" / name
    if beside.exists():
        return beside
    from importlib.resources import files

    return Path(str(files("URSAMLib.resources").joinpath(name)))


@lru_cache(maxsize=None)
def load_json(name: str) -> dict:
    """A JSON resource, with keys starting with ``_`` (comments) removed."""
    data = json.loads(resource_path(name).read_text())
    return {key: value for key, value in data.items() if not key.startswith("_")}
