"""The progress callback that every long step (segmentation, localization, training, evaluation) takes."""
from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]
"""``progress(fraction, message)``: ``fraction`` in [0, 1] of the step done, ``message`` what it is doing."""
