"""Choosing organs by name: one check, one message, for class maps and templates alike."""
from __future__ import annotations

from typing import Iterable

from .errors import URSAMError

LISTED = 30
"""How many of the known names an error lists (a class map may name over a hundred)."""


def check_known(requested: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise a user error naming every organ of ``requested`` that is not among ``known``;
    ``where`` says what was searched (e.g. ``the template``, a class map's path)."""
    known = list(known)
    unknown = [name for name in requested if name not in known]
    if unknown:
        more = f" and {len(known) - LISTED} more" if len(known) > LISTED else ""
        raise URSAMError(f"{', '.join(unknown)} not in {where}; it names: {', '.join(known[:LISTED])}{more}.")


def select_by_name(classes: dict[int, str], names: Iterable[str], where: str = "the class map") -> dict[int, str]:
    """The entries ``{label: name}`` of the class map ``classes`` that ``names`` name, in their order."""
    names = list(names)
    by_name = {name: label for label, name in classes.items()}
    check_known(names, by_name, where)
    return {by_name[name]: name for name in names}
