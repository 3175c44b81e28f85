"""Automatic prompts: the localizers by name, and a CT's organs turned into the paper's box prompts.

A localizer places each organ of a template in a new CT (:mod:`URSAMLib.localize.registration`,
:mod:`URSAMLib.localize.medlam`, :mod:`URSAMLib.localize.auto`); :func:`prompts_from_template`
runs one and turns each organ found into its box prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import SimpleITK as sitk

from ..errors import URSAMError
from ..io import AxialFrame
from ..progress import Progress
from ..prompts import DEFAULT_BOX_MARGIN, BoxMargin, OrganPrompt
from ..template import Template
from .atlas import localize_by_atlas
from .auto import localize_automatically
from .common import Localization, reject_implausible
from .medlam.infer import localize_by_medlam
from .registration import localize_by_registration


LOCALIZERS: dict[str, Callable[..., dict[str, Localization]]] = {
    "registration": localize_by_registration,
    "atlas": localize_by_atlas,
    "medlam": localize_by_medlam,
    "auto": localize_automatically,
}
"""Localizer name → function ``(ct, template, organs, progress=None, **options)`` returning
``{organ: Localization}``; options come from the command line (e.g. ``weights``)."""


def check_localizer(name: str) -> None:
    """Raise a user error unless ``name`` is one of :data:`LOCALIZERS`."""
    if name not in LOCALIZERS:
        raise URSAMError(f"Unknown localizer {name!r}; choose one of: {', '.join(LOCALIZERS)}.")


@dataclass
class TemplatePrompts:
    """The automatic prompts of a CT: what :func:`prompts_from_template` localized, and what not."""

    prompts: list[OrganPrompt]
    """One per organ found: its localized box, extended by the margin, on every slice it spans."""
    missing: dict[str, str]
    """Organ → why it was not found."""
    localizations: dict[str, Localization]
    margin: tuple[int, int, int]
    """The box margin in axial voxels ``(z, y, x)``."""


def prompts_from_template(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                          localizer: str = "registration", weights: str | None = None,
                          margin: BoxMargin = DEFAULT_BOX_MARGIN,
                          progress: Progress | None = None) -> TemplatePrompts:
    """Localize ``organs`` (default: all of the template's) in ``ct`` with one of :data:`LOCALIZERS`
    and turn each organ found into the paper's auto-prompt (its box, extended by ``margin``), or the
    localizer's per-slice boxes; each prompt carries the template's measured rectification for its organ.

    ``weights`` go to a learned localizer. Organs not found are listed with a reason; finding none
    is not an error here (the caller knows what to call the CT in its message).
    """
    check_localizer(localizer)
    options = {"weights": weights} if weights else {}
    localizations = LOCALIZERS[localizer](ct, template, organs, progress=progress, **options)
    frame = AxialFrame.of(ct)
    reject_implausible(localizations, template, frame)
    voxels = margin.voxels(frame.spacing)
    prompts = [replace(loc.prompt(frame.shape, voxels), method=template.rectification.get(loc.organ))
               for loc in localizations.values() if loc.box is not None]
    missing = {name: loc.reason for name, loc in localizations.items() if loc.box is None}
    return TemplatePrompts(prompts, missing, localizations, voxels)


def no_organ_found(found: TemplatePrompts, template: Template, ct_name: str) -> URSAMError:
    """The error for a CT in which no organ of the template was found: a template for another body
    region when every organ fell outside the CT or got an implausible box, else each organ's reason."""
    localizations = found.localizations
    if localizations and all(loc.outside or loc.implausible for loc in localizations.values()):
        region = f" (made for: {template.body_region})" if template.body_region else ""
        where = "outside" if all(loc.outside for loc in localizations.values()) else \
            "outside or with an implausible size in"
        return URSAMError(f"Every organ of the template{region} was localized {where} {ct_name} "
                          f"({', '.join(localizations)}): the template is probably for another body region than "
                          "this CT. Use a template built from scans of the same body region.")
    return URSAMError(f"No organ of the template was found in {ct_name}: "
                      f"{'; '.join(f'{n}: {r}' for n, r in found.missing.items())}.")
