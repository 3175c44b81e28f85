"""The ``auto`` localizer: the supports' atlas (or their registration) on complete scans, the
learned one on blanked scans."""
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
    have no label maps); MedLAM on blanked ones and where registration cannot run.

    Registration is the more accurate of the two on complete scans, and the atlas's per-slice
    prompts and vote beat the registered box (scripts/measure_atlas_prompts.py); but on a scan blanked outside
    the organs' neighbourhood it has nothing to match and lands centimetres off, while the learned
    localizer (weights: default the shipped ones) keeps working. Measured on held-out training
    patients (scripts/measure_region_localizers.py), this rule beat registration alone, MedLAM
    alone, and MedLAM wherever the registered supports disagree. Every organ's
    ``Localization.localizer`` says which placed it. An organ that registration places outside a
    complete scan stays not found: the scan does not show it (MedLAM would put it somewhere inside).
    """
    def part(start: float, span: float) -> Progress | None:
        return (lambda fraction, message: progress(start + span * fraction, message)) if progress else None

    organs = list(template.organs) if organs is None else organs
    found: dict[str, Localization] = {}
    if visible_body(ct) >= BLANKED_BELOW:
        by_atlas = all(support.labels is not None for support in template.supports)
        try:
            found = (localize_by_atlas if by_atlas else localize_by_registration)(ct, template, organs,
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
