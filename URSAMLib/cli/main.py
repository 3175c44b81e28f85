"""The ``ursam`` command line.

``ursam segment`` runs UR-SAM on one CT; ``ursam backbones`` lists the models;
``ursam download-weights`` fetches (and verifies) weights for users with internet;
``ursam build-template`` and ``ursam train-localizer`` prepare automatic prompting.
User mistakes end with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager

from .. import __version__
from ..errors import Cancelled, URSAMError
from . import batch, evaluate, segment, tools

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130
CANCELLED_NOTE = "no output was written."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, for reports
    try:
        with _termination_cancels():
            return args.handler(args)
    except URSAMError as error:
        print(f"ursam: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        # Resumable commands keep their finished work, so say so instead of "nothing written".
        print(f"ursam: cancelled; {getattr(args, 'cancelled_note', CANCELLED_NOTE)}", file=sys.stderr)
        return EXIT_CANCELLED


@contextmanager
def _termination_cancels():
    """Treat SIGTERM (a job scheduler's or a closing terminal's 'stop') like Ctrl-C: as an exception,
    so that the staged outputs are removed on the way out. The default action would kill the process
    on the spot and leave the half-written staging folder beside the output folder."""
    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return

    def cancel(signum, frame):
        raise Cancelled()

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2) like every other user mistake,
    instead of the usage text followed by the error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"ursam: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="ursam", description="Uncertainty-rectified Segment Anything "
                                     "for organ segmentation in CT (UR-SAM).")
    parser.add_argument("--version", action="version", version=f"ursam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment.add_parser(commands)
    batch.add_parser(commands)
    tools.add_parsers(commands)
    evaluate.add_parser(commands)
    tools.add_sample_data_parser(commands)
    return parser

