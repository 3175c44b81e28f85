"""Writing images on the input grid, atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import SimpleITK as sitk


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write an image atomically: to a temporary file beside ``path``, then rename."""
    path = Path(path)
    suffix = "".join(path.suffixes) or ".nii.gz"
    handle, temporary = tempfile.mkstemp(prefix=".ursam-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, compress)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
