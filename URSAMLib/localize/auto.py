"""The ``auto`` localizer: the supports' atlas (or their registration) on complete scans; on blanked
scans the atlas of the template's blanked supports where it has them, else the learned localizer."""
from __future__ import annotations

import SimpleITK as sitk

from ..errors import URSAMError
from ..io import AIR_THRESHOLD_HU
from ..progress import Progress
from ..template import Template
from .atlas import localize_by_atlas
from .common import Localization
from .medlam.infer import localize_by_medlam
from .registration import localize_by_registration


BLANKED_BELOW = 0.05
"""Fraction of a CT's voxels above -500 HU under which the ``auto`` localizer treats it as blanked
(intensities kept only around the organs, air elsewhere: 14 of the 33 OpenKBP validation CTs, at
2-4 %; complete head-and-neck scans 6-13 %, abdominal ones more)."""


def visible_body(ct: sitk.Image) -> float:
    """Fraction of the CT's voxels above :data:`URSAMLib.io.AIR_THRESHOLD_HU` (body, not air)."""
    return float((sitk.GetArrayViewFromImage(ct) > AIR_THRESHOLD_HU).mean())


def localize_automatically(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                           progress: Progress | None = None, weights: str | None = None,
                           **options) -> dict[str, Localization]:
    """Multi-atlas registration on complete scans (affine registration where the template's supports
    have no label maps); on blanked scans the same with the template's blanked supports
    (:attr:`URSAMLib.template.Template.blanked`) for the organs they hold; MedLAM for the rest and
    where registration cannot run.

    Registration is the more accurate of the two on complete scans, and the atlas's per-slice
    prompts and vote beat the registered box (scripts/measure_atlas_prompts.py); but a scan blanked
    outside the organs' neighbourhood registered to complete supports lands centimetres off. Blanked
    scans share their kind of field of view, so registered to blanked supports they match again
    (UR-SAM DSC 0.25-0.38 on the first three blanked validation CTs, against 0.06-0.09 with MedLAM's
    boxes; docs/atlas-prompts.md). Measured on held-out training patients
    (scripts/measure_region_localizers.py), atlas-or-registration on complete scans beat registration alone,
    MedLAM alone, and MedLAM wherever the registered supports disagree. Every organ's
    ``Localization.localizer`` says which placed it. An organ that registration places outside a
    complete scan stays not found: the scan does not show it (MedLAM would put it somewhere inside).
    """
    def part(start: float, span: float) -> Progress | None:
        return (lambda fraction, message: progress(start + span * fraction, message)) if progress else None

    organs = list(template.organs) if organs is None else organs
    found: dict[str, Localization] = {}
    # A blanked CT is registered only to blanked supports (the same kind of field of view), for
    # the organs they hold; without such supports registration has nothing to match.
    blanked = visible_body(ct) < BLANKED_BELOW
    supports = template.blanked if blanked else template
    registered = [o for o in organs if o in supports.organs] if supports is not None else []
    if registered:
        by_atlas = all(support.labels is not None for support in supports.supports)
        try:
            found = (localize_by_atlas if by_atlas else localize_by_registration)(ct, supports, registered,
                                                                                  progress=part(0.0, 0.7))
        except URSAMError:  # too small a field of view for registration: the learned localizer only
            found = {}
        for localization in found.values():
            localization.localizer = "atlas" if by_atlas else "registration"
    unplaced = [o for o in organs if o not in found]
    if unplaced:
        start = 0.7 if found else 0.0  # after registration, or the whole bar
        learned = localize_by_medlam(ct, template, unplaced, progress=part(start, 1.0 - start), weights=weights,
                                     **options)
        for organ, localization in learned.items():
            localization.localizer = "medlam"
            found[organ] = localization
    if progress:
        progress(1.0, "Localized")
    return {organ: found[organ] for organ in organs}
