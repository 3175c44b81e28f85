"""One CT of a cohort and the label maps that go with it: what ``ursam batch`` segments and ``ursam
evaluate`` scores (each finds its cases by its own rules: :func:`URSAMLib.batch.find_cases`,
:func:`URSAMLib.evaluation.find_cases`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """``name``: unique in the cohort (its output folder, its report rows); ``ct``: a file or a DICOM folder."""

    name: str
    ct: Path
    prompt_labels: Path | None = None
    """The label map the box prompts are made from, if any."""
    reference: Path | None = None
    """The label map the result is scored against, if any."""
