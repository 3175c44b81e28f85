"""Writing images on the input grid, atomically."""
from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from ..atomic import replacing


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write an image atomically (:func:`URSAMLib.atomic.replacing`); the format follows ``path``'s suffix."""
    path = Path(path)
    with replacing(path, "".join(path.suffixes) or ".nii.gz") as temporary:
        sitk.WriteImage(image, str(temporary), compress)
