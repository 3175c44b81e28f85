"""What several subcommands share: argument types, the speed options, warnings and the progress bar."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..dicom_out import parse_kinds
from ..prompts import BoxMargin
from ..runtime import CHOICES


def add_speed_options(parser) -> None:
    parser.add_argument("--runtime", choices=CHOICES, default="auto",
                        help="what runs the networks: auto (default: on a CPU the fastest installed inference "
                        "runtime that matches PyTorch, built and cached on first use; PyTorch on a GPU), torch, "
                        "openvino, onnxruntime (docs/performance.md)")
    parser.add_argument("--no-embedding-cache", dest="embedding_cache", action="store_false",
                        help="do not keep slice embeddings in the URSAM cache folder (by default a later run on "
                        "the same CT with other organs, n or ratio reuses them and runs only the decoder)")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def box_margin(text: str):
    try:
        return BoxMargin.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give z,y,x in mm (e.g. 5,10,10mm) or whole voxels (e.g. 2,10,10)") from None


def dicom_kinds(text: str) -> tuple[str, ...]:
    try:
        return parse_kinds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def window(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give two numbers, e.g. -160,240") from None
    if not low < high:
        raise argparse.ArgumentTypeError("LOW must be below HIGH")
    return low, high



def warn(message: str) -> None:
    """A doubt that does not stop the run: one line on stderr, even with --quiet."""
    print(f"ursam: warning: {message}", file=sys.stderr, flush=True)


def with_progress_bar(quiet: bool, title: str, run):
    if quiet:
        return run(None)
    with tqdm(total=1.0, desc=title, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
              " {postfix}", file=sys.stderr) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.n = fraction
            bar.set_postfix_str(message, refresh=True)

        return run(progress)
