"""Writing a run's results to a folder, all or nothing, and its summary.

Files are written into a hidden staging folder beside the output folder and moved into
place only when every one of them is complete, so a failed or cancelled run leaves nothing
behind. An output folder that already holds files is used only with ``overwrite``, and even
then only URSAM's own file names are replaced; anything else in it is left alone.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from . import __version__
from .errors import URSAMError
from .io import AxialFrame, image_from_axial, write_image
from .pipeline import OrganResult

OUTPUT_FILES = ("ensemble.nii.gz", "rectified.nii.gz", "uncertainty.nii.gz", "summary.json",
                "overview.png")


def check_output_dir(outdir: Path, overwrite: bool) -> None:
    """Fail early (before any computation) if writing to ``outdir`` could destroy user files."""
    if outdir.exists() and not outdir.is_dir():
        raise URSAMError(f"{outdir} exists and is not a folder; choose another output folder.")
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise URSAMError(f"{outdir} already holds files; choose a new output folder, or add --overwrite "
                         "to replace URSAM's output files there (other files are kept).")


def check_inputs_survive(outdir: Path, names: list[str], inputs: list[str | None]) -> None:
    """Refuse an output folder in which writing ``names`` would replace one of the ``inputs``
    (e.g. ``ursam segment out/rectified.nii.gz -o out --overwrite``), or that is an input folder."""
    targets = {(outdir / name).resolve() for name in names}
    for given in inputs:
        if not given:
            continue
        path = Path(given).resolve()
        if path in targets:
            raise URSAMError(f"{given} is one of the files this run writes into {outdir}, and would be replaced "
                             "by it; choose another output folder.")
        if path.is_dir() and path == outdir.resolve():
            raise URSAMError(f"The output folder {outdir} is the input folder {given}; choose another output "
                             "folder, so that the input stays as it is.")


@contextmanager
def staged_output(outdir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder; on success its files replace those in ``outdir``."""
    check_output_dir(outdir, overwrite)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.ursam-", dir=outdir.parent))
    try:
        yield staging
        _apply_umask(staging)
        if not outdir.exists():
            os.rename(staging, outdir)
            return
        # summary.json last: its presence marks a complete folder (``ursam batch`` resumes on it)
        for file in sorted(staging.iterdir(), key=lambda f: f.name == "summary.json"):
            os.replace(file, outdir / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """Give the staged folder and files the permissions a plain mkdir/open would have
    (tempfile creates them private to the user)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def label_image(labels: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A label map on the reference grid, 8-bit when the labels fit."""
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    return image_from_axial(labels.astype(dtype), reference)


def write_results(staging: Path, maps: dict[str, np.ndarray], reference: sitk.Image) -> None:
    """The three volumes of a run, each on exactly the grid of the input CT.

    maps: axial arrays ``[z, y, x]``: ``ensemble`` and ``rectified`` label maps
    (:meth:`~URSAMLib.pipeline.SegmentationResult.label_map`) and the ``uncertainty``
    (:meth:`~URSAMLib.pipeline.SegmentationResult.uncertainty_map`).
    """
    write_image(label_image(maps["ensemble"], reference), staging / "ensemble.nii.gz")
    write_image(label_image(maps["rectified"], reference), staging / "rectified.nii.gz")
    write_image(image_from_axial(maps["uncertainty"], reference), staging / "uncertainty.nii.gz")


def organ_summary(organ: OrganResult, frame: AxialFrame, reference: sitk.Image) -> dict:
    """What a user (or a report) needs to know about one organ's result."""
    zs = sorted(organ.boxes)
    boxes = np.concatenate([np.reshape(organ.boxes[z], (-1, 4)) for z in zs])
    axial_box = [zs[0], zs[-1], int(boxes[:, 1].min()), int(boxes[:, 3].max()),
                 int(boxes[:, 0].min()), int(boxes[:, 2].max())]
    corners = frame.index_to_stored(np.array([axial_box[0::2], axial_box[1::2]]))
    ijk = [[int(round(v)) for v in corners.min(axis=0)], [int(round(v)) for v in corners.max(axis=0)]]
    voxel_ml = float(np.prod(frame.spacing)) / 1000.0
    rect = organ.rectification
    return {
        "label": organ.label,
        "prompt_slices": len(zs),
        "box_axial_zyx": axial_box,
        "box_ijk": ijk,
        "box_lps_mm": [list(reference.TransformIndexToPhysicalPoint(corner)) for corner in ijk],
        "voxels": {"ensemble": int(organ.ensemble_mask.sum()), "rectified": int(organ.mask.sum())},
        "volume_ml": {"ensemble": round(organ.ensemble_mask.sum() * voxel_ml, 2),
                      "rectified": round(organ.mask.sum() * voxel_ml, 2)},
        "mean_uncertainty_in_box": round(organ.mean_uncertainty, 5),
        "rectification": None if rect is None else rect.method,
        "threshold": None if rect is None or np.isnan(rect.threshold) else round(rect.threshold, 5),
        "uncertain_voxels": 0 if rect is None else int(rect.uncertain.sum()),
        "target_intensity": None if rect is None else rect.target_intensity,
        "background_intensity": None if rect is None else rect.background_intensity,
    }


def write_summary(path: Path, summary: dict) -> None:
    summary = {"ursam_version": __version__, **summary}
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
