"""The options that several subcommands share, each defined once as an argparse parent parser.

Defaults are the code's own: :class:`~URSAMLib.pipeline.Settings` for the augmentation and the
rectification, :class:`~URSAMLib.job.SegmentJob` for a run's model and prompts, the box margin of
:mod:`URSAMLib.prompts`. ``segment`` and ``batch`` take the same parents, so they cannot drift apart.
"""
from __future__ import annotations

import argparse
from dataclasses import fields

from ..backbones import PRECISIONS
from ..job import PROMPT_MODES, SegmentJob
from ..pipeline import Settings
from ..prompts import DEFAULT_BOX_MARGIN
from ..rectify import LOWER_BOUNDS, METHOD_CHOICES
from ..runtime import CHOICES as RUNTIMES
from .options import box_margin, dicom_kinds, non_negative_int, window

SETTINGS = Settings()
JOB = SegmentJob(ct="", output="")


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def model_parent() -> argparse.ArgumentParser:
    """Which network runs, where and how: --backbone, --checkpoint, --window, --device, --precision,
    --runtime, --no-embedding-cache."""
    parent = _parent()
    parent.add_argument("--backbone", default=JOB.backbone,
                        help=f"{JOB.backbone} (default), sam-vit-b, medsam-vit-b ('ursam backbones' lists them)")
    parent.add_argument("--checkpoint", help="weights file for the backbone")
    parent.add_argument("--window", type=window, metavar="LOW,HIGH",
                        help="CT window in HU mapped to [0, 1] (default: the backbone's)")
    parent.add_argument("--device", default=JOB.device, help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    parent.add_argument("--precision", choices=PRECISIONS, default=JOB.precision,
                        help="bfloat16 computes in bfloat16 (OpenVINO on a CPU, autocast in PyTorch): about 1.7x "
                        "faster on CPUs with AVX512-BF16/AMX, masks slightly different (docs/performance.md) "
                        f"(default {JOB.precision})")
    parent.add_argument("--runtime", choices=RUNTIMES, default=JOB.runtime,
                        help="what runs the networks: auto (default: on a CPU the fastest installed inference "
                        "runtime that matches PyTorch, built and cached on first use; PyTorch on a GPU), torch, "
                        "openvino, onnxruntime (docs/performance.md)")
    parent.add_argument("--no-embedding-cache", dest="embedding_cache", action="store_false",
                        help="do not keep slice embeddings in the URSAM cache folder (by default a later run on "
                        "the same CT with other organs, n or ratio reuses them and runs only the decoder)")
    return parent


def augmentation_parent() -> argparse.ArgumentParser:
    """UR-SAM's parameters: --num-aug, --ratio, --seed, --alpha-h, --lower-bound, --prior-weight, --max-zoom,
    --box-margin."""
    parent = _parent()
    parent.add_argument("--num-aug", type=int, default=SETTINGS.num_aug,
                        help=f"augmented boxes per slice (default {SETTINGS.num_aug})")
    parent.add_argument("--ratio", type=float, default=SETTINGS.ratio,
                        help=f"box perturbation, fraction of the slice size (default {SETTINGS.ratio})")
    parent.add_argument("--seed", type=int, default=SETTINGS.seed,
                        help=f"seed of the box augmentation (default {SETTINGS.seed})")
    parent.add_argument("--alpha-h", type=float, default=SETTINGS.alpha_h,
                        help=f"upper intensity factor of the rectification (default {SETTINGS.alpha_h})")
    parent.add_argument("--lower-bound", choices=LOWER_BOUNDS, default=SETTINGS.lower_bound,
                        help="rectification lower bound: (I_t + I_b)/2 (midpoint, the default) or the paper's "
                        "(I_t - I_b)/2")
    parent.add_argument("--prior-weight", type=float, default=SETTINGS.prior_weight, metavar="W",
                        help="with atlas prompts, the weight of the atlas vote as a member of the ensemble (default "
                        f"{SETTINGS.prior_weight:g}; 0: SAM alone, as in the paper)")
    parent.add_argument("--max-zoom", type=float, default=SETTINGS.max_zoom, metavar="Z",
                        help="show the model each slice as the square around its prompt boxes with context, "
                        f"enlarged at most Z times (default {SETTINGS.max_zoom:g}; 1: the whole slice)")
    parent.add_argument("--box-margin", type=box_margin, default=DEFAULT_BOX_MARGIN, metavar="Z,Y,X[mm]",
                        help="extension of each side of a 3-D box prompt, in mm (5,10,10mm, the default: the "
                        "paper's [2, 10, 10] voxels in physical size) or in voxels (2,10,10)")
    return parent


def job_parent(labels: tuple[str, str, str]) -> argparse.ArgumentParser:
    """What one segmentation job is asked (``segment``, and ``batch`` for each case): the prompt source,
    the organs, the rectification method, extra outputs. ``labels``: the flag, metavar and help of the
    label-map prompt source (``--prompt-labels`` for one CT, a pattern for a cohort)."""
    parent = _parent()
    source = parent.add_argument_group("prompt source (exactly one)")
    flag, metavar, text = labels
    source.add_argument(flag, metavar=metavar, help=text)
    source.add_argument("--region", metavar="REGION",
                        help="automatic prompts from a built-in template: head-and-neck or abdomen "
                        "('ursam templates' lists them); nothing else is needed")
    source.add_argument("--template", metavar="TEMPLATE_DIR",
                        help="automatic prompts: localize organs with your own template ('ursam build-template')")
    parent.add_argument("--classes", metavar="CLASSES.json", help='label value → organ name, e.g. {"1": "spleen"}')
    parent.add_argument("--localizer",
                        help="how --region/--template localize organs: atlas (the template scans' label maps "
                        "registered and fused: a box per slice and part, and a multi-atlas vote), registration "
                        "(each organ's registered 3-D box), medlam (the paper's learned landmark model, trained "
                        "weights ship with URSAM) or auto (atlas, medlam on blanked scans). Default: the region's "
                        "choice ('ursam templates'), registration for --template")
    parent.add_argument("--localizer-weights", metavar="WEIGHTS",
                        help="your own weights for medlam/auto ('ursam train-localizer'; default: the shipped ones)")
    parent.add_argument("--prompt-mode", choices=PROMPT_MODES, default=JOB.prompt_mode,
                        help="slice: a box per slice from the labels (manual prompting); box3d: the labels' "
                        "3-D box extended by --box-margin on every slice (perfect localization)")
    parent.add_argument("--organs", help="comma-separated organ names (default: every class present in the "
                        "labels, or every organ of the template)")
    parent.add_argument("--box-jitter", type=non_negative_int, default=JOB.box_jitter, metavar="PX",
                        help=f"slice mode: widen each box side by a random 0..PX pixels (default {JOB.box_jitter})")
    parent.add_argument("--checkpoint-sha256", metavar="HEX",
                        help="SHA-256 the checkpoint must have (e.g. from 'sha256sum'): verifies weights that "
                        "URSAM's catalogue does not know, such as MedSAM's")
    parent.add_argument("--method", choices=METHOD_CHOICES, default=SETTINGS.method,
                        help=f"rectification (default {SETTINGS.method}: per organ the rule a built-in template chose "
                        "by measurement, else ursam: the paper's class-specific threshold + Algorithm 1)")
    parent.add_argument("--dicom-out", type=dicom_kinds, default=JOB.dicom_out, metavar="KINDS",
                        help="for a DICOM series: also write DICOM objects, any of seg (DICOM SEG of the rectified "
                        "organs), seg-ensemble, rtstruct (RT Structure Set), uncertainty (Parametric Map), "
                        "e.g. seg,rtstruct,uncertainty")
    return parent


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` given on the command line (fields without an option keep their default)."""
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)})
