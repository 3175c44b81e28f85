"""The requirement specifiers, as pyproject.toml declares them, of the packages the Slicer glue
tests (Testing/test_slicer_*.py) need, printed one per line for ``pip install``:

    python Testing/slicer_glue_requirements.py numpy slicer-core PySide6-Essentials ...

Used by ``make test-slicer-py312``, which installs them into a Python 3.12 virtual environment
without torch (the glue must run without it), so that the versions are declared once, here in
pyproject.toml. A name pyproject.toml does not declare is an error.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared() -> dict[str, str]:
    """Normalised package name → its specifier in pyproject.toml (dependencies, then the extras)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found: dict[str, str] = {}
    for requirement in project["dependencies"] + sum(project.get("optional-dependencies", {}).values(), []):
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        found.setdefault(_normalise(name), requirement)
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(names: list[str]) -> int:
    known = declared()
    unknown = [name for name in names if _normalise(name) not in known]
    if unknown:
        print(f"not declared in {PYPROJECT.name}: {', '.join(unknown)}", file=sys.stderr)
        return 1
    print("\n".join(known[_normalise(name)] for name in names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
