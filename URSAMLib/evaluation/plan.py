"""`ursam evaluate`: UR-SAM and the paper's comparison methods over labelled CTs, scored.

Per patient there is exactly one :func:`~URSAMLib.pipeline.segment_variants` call, so every
method and setting of a patient shares its slice embeddings (and identical boxes are decoded
once). Its variants are prompt sources x augmentation settings:

* ``auto``: the template's localized 3-D box, extended by the box margin (default 5, 10, 10 mm), on every slice
  (only with a template); ``box3d``: the same from the reference labels (perfect
  localization); ``slice``: a tight box per slice from the labels; ``manual``: ``slice``
  widened by a random 0..jitter pixels per side (MedSAM's simulated manual prompting);
* ``<main>-refine``: the main source (``auto``, else ``box3d``) with slice-wise refinement;
* with the sweep, the main source at every Table I setting (n = 1, and n in {3, 5, 7} x
  ratio in {0.005, 0.01, 0.03, 0.05, 0.1}).

Methods that differ only in rectification come from ``rerectify`` on the same ensemble;
"one-box" is the un-augmented box alone (row 0 of every augmentation). Each organ is scored
from its own crop (variants and organs never interact) against the reference labels.
Results are cached per patient in ``REPORT/cases/<patient>.json``: a rerun skips patients
already done with the same configuration.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from ..metrics import HD95_DEFINITION
from ..pipeline import Settings
from ..prompts import DEFAULT_BOX_MARGIN, BoxMargin


RECTIFICATIONS = ("ensemble", "unc-fpc", "unc-fnc", "unc-fpnc", "fixed", "ursam", "per-organ")
"""Scored on every run; ``per-organ`` (the default) equals ``ursam`` except for organs whose prompts
carry a template's measured choice (automatic prompts of a built-in region)."""
ALL_METHODS = ("one-box",) + RECTIFICATIONS
SWEEP_NUM_AUG = (3, 5, 7)
SWEEP_RATIOS = (0.005, 0.01, 0.03, 0.05, 0.1)
JITTER_REFERENCE_PX = 512
"""``--jitter`` is in pixels of a 512-pixel slice (the paper's images) and scaled to the slice's
longest side, like the augmentation ratio: 20 px would be 11 cm on a 128-pixel head-and-neck
slice of 5.4 mm pixels, but is 2 cm on a 512-pixel slice of 1 mm pixels."""


@dataclass(frozen=True)
class EvalConfig:
    """Everything that changes a patient's results (the cache is valid only for the same)."""

    organs: tuple[str, ...] = ()
    """Organ names to evaluate (empty: every class of the class map)."""
    settings: Settings = Settings()
    """UR-SAM's parameters of the main runs, exactly as ``ursam segment`` takes them; the sweep,
    refinement and manual prompting change only what they vary (:meth:`run_settings`)."""
    jitter: int = 20
    """Manual prompting: each side widened by 0..jitter px of a 512-px slice (scaled)."""
    margin: BoxMargin = DEFAULT_BOX_MARGIN
    """3-D box extension (default 5,10,10 mm: the paper's [2, 10, 10] voxels in physical size)."""
    refine: bool = True
    backbone: str = "litemedsam"
    checkpoint: str | None = None
    precision: str = "float32"
    window: tuple[float, float] | None = None
    localizer: str = "registration"
    localizer_weights: str | None = None

    def run_settings(self, **changes) -> Settings:
        """The main runs' settings with ``changes`` (e.g. ``num_aug=1``), checked."""
        return replace(self.settings, **changes).validate()

    def key(self, template: str | None, sweep: bool) -> dict:
        """JSON-able identity of a patient's run (template folder, whether it had the sweep, and
        the HD95 definition its rows were scored with)."""
        return json.loads(json.dumps({**asdict(self), "template": template, "sweep": sweep,
                                      "hd95": HD95_DEFINITION}))


@dataclass(frozen=True)
class Variant:
    """One run of a patient: a prompt source at one setting, and the methods scored on it."""

    key: str
    prompt: str
    """``auto``, ``box3d``, ``slice`` or ``manual``."""
    settings: Settings
    methods: tuple[str, ...]
    setting: str
    """Human-readable setting, e.g. ``n=3, r=0.01`` or ``refined``."""


def setting_name(num_aug: int, ratio: float) -> str:
    return "no augmentation" if num_aug == 1 else f"n={num_aug}, r={ratio:g}"


def plan_variants(config: EvalConfig, has_template: bool, sweep: bool) -> list[Variant]:
    """The variants of one patient's run (see the module docstring)."""
    main = "auto" if has_template else "box3d"
    base = config.run_settings()
    default = setting_name(base.num_aug, base.ratio)
    variants = []
    if has_template:
        variants.append(Variant("auto", "auto", base, ALL_METHODS, default))
    variants.append(Variant("box3d", "box3d", base, ALL_METHODS, default))
    if config.refine:
        variants.append(Variant(f"{main}-refine", main, config.run_settings(refine=True), ALL_METHODS,
                                f"{default}, refined"))
    variants.append(Variant("slice", "slice", base, ALL_METHODS, default))
    variants.append(Variant("manual", "manual", config.run_settings(num_aug=1), ("one-box",), "one box"))
    if sweep:
        variants.append(Variant(f"{main}@n1", main, config.run_settings(num_aug=1), ("ensemble", "ursam"),
                                setting_name(1, 0.0)))
        for n in SWEEP_NUM_AUG:
            for ratio in SWEEP_RATIOS:
                if (n, ratio) != (base.num_aug, base.ratio):  # the default run is the main variant
                    variants.append(Variant(f"{main}@n{n}r{ratio:g}", main, config.run_settings(num_aug=n, ratio=ratio),
                                            ("ensemble", "ursam"), setting_name(n, ratio)))
    return variants
