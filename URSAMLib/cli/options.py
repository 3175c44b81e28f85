"""What several subcommands share besides their options (:mod:`.parents`): argument types, warnings and
the progress bar."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..dicom_out import parse_kinds
from ..prompts import BoxMargin


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
