"""A stand-in for the SAM backbone at the level of a whole `ursam segment` job: no torch, no
weights, seconds per run. It is URSAMSlicerLib.testing.BrightInBox (probability 0.9 for bright
pixels inside a box) with the attributes the job reports.

Run as a script it is the `ursam` command with the stand-in model, for tests that need a process
of their own (signals, a clean interpreter):

    python Testing/stand_ins.py [--pause-when-staged] segment CT -o OUT ...

``--pause-when-staged`` prints "staged" and sleeps once every output file is in the staging folder,
so a test can interrupt the run at its last moment.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "URSAM"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from URSAMSlicerLib.testing import BrightInBox  # noqa: E402


class StandInBackbone(BrightInBox):
    """BrightInBox with the report fields of :class:`URSAMLib.backbones.SamBackbone`."""

    weights, weights_sha256, weights_verified, precision = "stand-in (no weights)", "", True, "float32"


def load_stand_in(*args, **kwargs) -> StandInBackbone:
    """A loader with :func:`URSAMLib.backbones.load_backbone`'s signature."""
    return StandInBackbone()


def use_stand_in(monkeypatch) -> None:
    """Make every job in this process use the stand-in model."""
    from URSAMLib import backbones

    monkeypatch.setattr(backbones, "load_backbone", load_stand_in)


def _main(argv: list[str]) -> int:
    import time

    from URSAMLib import backbones, outputs
    from URSAMLib.cli import main

    backbones.load_backbone = load_stand_in
    if argv[:1] == ["--pause-when-staged"]:
        argv = argv[1:]
        write_summary = outputs.write_summary

        def then_pause(path, summary):
            write_summary(path, summary)
            print("staged", flush=True)
            time.sleep(60)

        outputs.write_summary = then_pause
    return main(argv)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
