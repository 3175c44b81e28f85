"""Automatic prompts: where each organ of a template lies in a new CT.

Modules, each depending only on those before it: :mod:`.common` (what a localizer returns, boxes,
implausible sizes), :mod:`.registration` (affine registration of the supports), :mod:`.atlas` (the
supports' label maps registered and fused: per-slice prompts and a multi-atlas vote), :mod:`.medlam`
(the learned localizer: ``net``, ``infer``, ``train``), :mod:`.auto` (registration or MedLAM by
scan), :mod:`.registry` (the localizers by name; a CT's organs turned into box prompts).
The names below are re-exported so that ``from URSAMLib.localize import X`` keeps working.
"""
from .atlas import localize_by_atlas
from .auto import BLANKED_BELOW, localize_automatically, visible_body
from .common import (OUTSIDE_IMAGE, PLAUSIBLE_SIZE_FACTOR, SIZE_SLACK_MM, Localization, box_iou, fuse_supports,
                     reject_implausible)
from .medlam.infer import localize_by_medlam
from .registration import localize_by_registration, register_affine
from .registry import LOCALIZERS, TemplatePrompts, check_localizer, no_organ_found, prompts_from_template

__all__ = ["BLANKED_BELOW", "LOCALIZERS", "OUTSIDE_IMAGE", "PLAUSIBLE_SIZE_FACTOR", "SIZE_SLACK_MM", "Localization",
           "TemplatePrompts", "box_iou", "check_localizer", "fuse_supports", "localize_automatically",
           "localize_by_atlas", "localize_by_medlam", "localize_by_registration", "no_organ_found",
           "prompts_from_template", "register_affine", "reject_implausible", "visible_body"]
