"""Templates: a few labelled support scans from which organs are localized in a new CT.

A template is a folder::

    TEMPLATE_DIR/
      template.json           manifest (format "ursam-template", version 1)
      supports/<name>-<build>.nii.gz  each support CT resampled to 3 mm isotropic (HU, int16)
      supports/<name>-<build>_labels.nii.gz  its label map on that grid (uint8; older templates may lack it)

The manifest lists the organs (name → label value in the supports' label maps), the body
region, and per support its extreme points: for every organ the six voxels of the mask
that lie furthest along -x, +x, -y, +y, -z, +z, in LPS millimetres and in the support's
voxel indices (i, j, k). The localizers (:mod:`URSAMLib.localize`) need nothing else.
Optionally it names a companion template of blanked scans (``blanked``, :func:`link_blanked`) and the
rectification measured best per organ (``rectification``, :func:`set_rectification`).
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import __version__, atomic
from .errors import URSAMError
from .io import AIR_THRESHOLD_HU, AIR_VALUE_HU, axial_array, read_ct, read_label_map, write_image
from .rectify import METHODS

TEMPLATE_FORMAT = "ursam-template"
TEMPLATE_VERSION = 1
TEMPLATE_SPACING_MM = 3.0  # the paper's localization resolution


def extreme_points(mask: np.ndarray) -> np.ndarray:
    """The six extreme points of a mask ``[z, y, x]``: ``6 x 3`` voxel coordinates ``(z, y, x)``.

    Row order: min x, max x, min y, max y, min z, max z. Each point is the organ voxel on that
    extreme plane nearest to the plane's centroid: it lies on the organ (not on a box corner,
    nor between the arms of a U-shaped organ such as the mandible).
    """
    coords = np.argwhere(mask)
    points = []
    for axis in (2, 1, 0):
        for pick in (coords[:, axis].min(), coords[:, axis].max()):
            plane = coords[coords[:, axis] == pick]
            points.append(plane[np.argmin(((plane - plane.mean(axis=0)) ** 2).sum(axis=1))])
    return np.array(points, dtype=float)


def resample_isotropic(image: sitk.Image, spacing: float = TEMPLATE_SPACING_MM,
                       default: float = AIR_VALUE_HU) -> sitk.Image:
    """The CT resampled (linear) to ``spacing`` mm isotropic voxels, same origin and direction."""
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing,) * 3,
                         image.GetDirection(), default, sitk.sitkInt16)


BODY_CROP_MARGIN = 8
"""Voxels of air kept around the body when a support is cropped (24 mm at 3 mm): registration and
the learned localizer see the body's outline."""


def crop_to_body(image: sitk.Image, margin: int = BODY_CROP_MARGIN) -> sitk.Image:
    """``image`` cropped to the box of its voxels above :data:`URSAMLib.io.AIR_THRESHOLD_HU` plus ``margin`` voxels;
    the physical position of every kept voxel is unchanged (the origin moves with the crop)."""
    body = np.argwhere(sitk.GetArrayFromImage(image) > AIR_THRESHOLD_HU)[:, ::-1]  # (i, j, k)
    if not len(body):
        return image
    low = np.maximum(body.min(axis=0) - margin, 0)
    high = np.minimum(body.max(axis=0) + margin + 1, image.GetSize())
    return sitk.RegionOfInterest(image, [int(v) for v in high - low], [int(v) for v in low])


@dataclass
class Support:
    """One labelled support scan of a template."""

    name: str
    image: Path
    """The support CT at 3 mm (absolute path)."""
    points_mm: dict[str, np.ndarray]
    """Organ → ``6 x 3`` extreme points in LPS mm (row order of :func:`extreme_points`)."""
    labels: Path | None = None
    """The support's label map on the grid of ``image`` (absolute path), if the template keeps it."""

    def read(self) -> sitk.Image:
        return sitk.ReadImage(str(self.image), sitk.sitkFloat32)

    def read_labels(self) -> sitk.Image | None:
        return sitk.ReadImage(str(self.labels), sitk.sitkUInt8) if self.labels else None


@dataclass
class Template:
    folder: Path
    organs: dict[str, int]
    body_region: str
    supports: list[Support]
    blanked: "Template | None" = None
    """Supports of the same region whose CTs are blanked outside the organs' neighbourhood (air
    elsewhere, as OpenKBP ships part of its scans), named by the manifest's ``blanked`` key (a
    folder relative to this one, see :func:`link_blanked`). Registration matches a blanked CT only to
    blanked supports: the ``auto`` localizer uses them for such CTs."""
    rectification: dict[str, str] = field(default_factory=dict)
    """Organ → the rectification measured best for it with this template's prompts (a key of
    :data:`URSAMLib.rectify.METHODS`; the manifest's optional ``rectification``): runs with method
    ``per-organ`` use it. Organs not named get UR-SAM's."""
    _typical_ml: dict[str, float] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Template":
        folder = Path(folder)
        manifest_path = folder / "template.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise URSAMError(f"{folder} is not an URSAM template (no template.json); build one with "
                             "'ursam build-template'.") from None
        except json.JSONDecodeError as error:
            raise URSAMError(f"{manifest_path} is damaged ({error}); rebuild the template.") from None
        if manifest.get("format") != TEMPLATE_FORMAT or manifest.get("version") != TEMPLATE_VERSION:
            raise URSAMError(f"{manifest_path} is not a version-{TEMPLATE_VERSION} URSAM template; "
                             "rebuild it with this version of 'ursam build-template'.")
        supports = []
        for entry in manifest["supports"]:
            files = [folder / entry[key] for key in ("image", "labels") if entry.get(key)]
            for path in files:
                if not path.is_file():
                    raise URSAMError(f"Template file {path} is missing; rebuild the template.")
            supports.append(Support(entry["name"], files[0],
                                    {organ: np.array(p["mm"]) for organ, p in entry["extreme_points"].items()},
                                    files[1] if len(files) > 1 else None))
        blanked = cls.load(folder / manifest["blanked"]) if manifest.get("blanked") else None
        rectification = dict(manifest.get("rectification", {}))
        _check_rectification(rectification, manifest["organs"], manifest_path)
        return cls(folder, dict(manifest["organs"]), manifest.get("body_region", ""), supports, blanked,
                   rectification)

    def typical_volumes_ml(self) -> dict[str, float]:
        """Organ → its median volume in ml over the supports whose label map the template keeps
        (organs absent from every label map are left out); read once per loaded template."""
        if self._typical_ml is not None:
            return self._typical_ml
        volumes: dict[str, list[float]] = {}
        for support in self.supports:
            labels = support.read_labels()
            if labels is None:
                continue
            counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel())
            voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
            for organ, value in self.organs.items():
                if value < len(counts) and counts[value]:
                    volumes.setdefault(organ, []).append(float(counts[value]) * voxel_ml)
        self._typical_ml = {organ: float(np.median(v)) for organ, v in volumes.items()}
        return self._typical_ml


def build_template(images: list[str], labels: list[str], classes: dict[int, str], folder: str | os.PathLike,
                   organs: list[str] | None = None, body_region: str = "", overwrite: bool = False,
                   compact: bool = False, sources: list[str] | None = None) -> Template:
    """Build a template from labelled CTs (the paper uses 5).

    images/labels: paths, pairwise on the same grid. classes: label value → organ name.
    organs: the organs to include (default: all of ``classes`` found in every support).
    Every included organ must be present in every support; errors name the file.
    compact: crop each support to its body (:func:`crop_to_body`), as the built-in templates do.
    Each support's label map is kept on its 3 mm grid (uint8) for the atlas localizer.
    sources: how the manifest names each support's origin (default: the absolute paths of ``images`` and ``labels``).
    """
    if len(images) != len(labels):
        raise URSAMError(f"Give one label map per image ({len(images)} images, {len(labels)} label maps).")
    if not images:
        raise URSAMError("A template needs at least one labelled support scan (the paper uses 5).")
    folder = Path(folder)
    if (folder / "template.json").exists() and not overwrite:
        raise URSAMError(f"{folder} already holds a template; choose another folder or add --overwrite.")
    names = [Path(p).name.split(".")[0] for p in images]
    if len(set(names)) != len(names):
        names = [f"support{i + 1}_{n}" for i, n in enumerate(names)]
    wanted = _wanted_organs(classes, organs)

    loaded = []
    for image_path, label_path in zip(images, labels):
        ct = read_ct(image_path)
        label_image = read_label_map(label_path, ct)
        label_array, frame = axial_array(label_image, np.uint16)
        present = {name for value, name in wanted.items() if (label_array == value).any()}
        loaded.append((ct, label_array, frame, present, label_path))
    if organs is None:  # default: what every support has
        common = set.intersection(*(p for *_, p, _ in loaded))
        wanted = {v: n for v, n in wanted.items() if n in common}
        if not wanted:
            raise URSAMError("No organ of the class map is present in every support scan; check the labels.")
    for *_, present, label_path in loaded:
        missing = [n for n in wanted.values() if n not in present]
        if missing:
            raise URSAMError(f"{label_path} has no voxels of {', '.join(missing)}; every support must contain "
                             "every template organ (choose other supports or fewer --organs).")

    # All or nothing: the new support images get names of their own, and the manifest that points
    # to them replaces the old one in a single rename. A build that fails or is cancelled before
    # that leaves any previous template exactly as it was (its files are removed only afterwards).
    previous = _support_files(folder)
    build = uuid.uuid4().hex[:8]
    (folder / "supports").mkdir(parents=True, exist_ok=True)
    entries, written = [], []
    try:
        for name, (ct, label_array, frame, _, label_path), image_path in zip(names, loaded, images):
            points = {}
            for value, organ in wanted.items():
                zyx = extreme_points(label_array == value)
                ijk = frame.index_to_stored(zyx)
                mm = np.array([ct.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in ijk])
                points[organ] = {"mm": np.round(mm, 3).tolist(), "voxel_ijk": np.round(ijk, 2).tolist()}
            relative = f"supports/{name}-{build}.nii.gz"
            support_image = resample_isotropic(ct)
            if compact:
                support_image = crop_to_body(support_image)
            written.append(folder / relative)
            write_image(support_image, folder / relative)
            # The label map on the support's 3 mm grid (uint8, a few hundred kB): the atlas localizer
            # carries it onto the query CT.
            entry = {"name": name, "image": relative, "labels": f"supports/{name}-{build}_labels.nii.gz"}
            written.append(folder / entry["labels"])
            write_image(_labels_on(label_path, ct, support_image, wanted), folder / entry["labels"])
            if sources:
                entry["source"] = sources[len(entries)]
            else:
                entry.update(source_image=str(Path(image_path).resolve()),
                             source_labels=str(Path(label_path).resolve()))
            entries.append({**entry, "spacing_mm": list(ct.GetSpacing()), "extreme_points": points})
        manifest = {"format": TEMPLATE_FORMAT, "version": TEMPLATE_VERSION, "ursam_version": __version__,
                    "body_region": body_region, "spacing_mm": TEMPLATE_SPACING_MM,
                    "point_order": ["-x (right)", "+x (left)", "-y (anterior)", "+y (posterior)",
                                    "-z (inferior)", "+z (superior)"],
                    "organs": {name: value for value, name in wanted.items()}, "supports": entries}
        atomic.write_json(folder / "template.json", manifest, indent=1)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    for path in previous:
        path.unlink(missing_ok=True)
    return Template.load(folder)


def _labels_on(label_path: str, ct: sitk.Image, grid: sitk.Image, wanted: dict[int, str]) -> sitk.Image:
    """The template organs of a support's label map on ``grid`` (nearest neighbour, uint8), other
    labels set to 0."""
    labels = read_label_map(label_path, ct)
    array = sitk.GetArrayFromImage(labels)
    kept = np.where(np.isin(array, list(wanted)), array, 0).astype(np.uint8)
    image = sitk.GetImageFromArray(kept)
    image.CopyInformation(labels)
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def link_blanked(folder: str | os.PathLike, blanked: str) -> Template:
    """Name ``blanked`` (a template folder relative to ``folder``, built from blanked scans of the
    same region) in the manifest of the template in ``folder`` as its blanked supports."""
    folder = Path(folder)
    companion = Template.load(folder / blanked)  # a user error now, not at the first blanked CT
    if companion.body_region != Template.load(folder).body_region:
        raise URSAMError(f"{folder / blanked} is a template of {companion.body_region or 'no region'}, not of "
                         f"{Template.load(folder).body_region or 'no region'} like {folder}.")
    manifest = json.loads((folder / "template.json").read_text())
    atomic.write_json(folder / "template.json", {**manifest, "blanked": blanked}, indent=1)
    return Template.load(folder)


def set_rectification(folder: str | os.PathLike, choices: dict[str, str]) -> Template:
    """Record in the manifest of the template in ``folder`` the rectification measured best for each
    organ with its prompts (``choices``: organ → a key of :data:`URSAMLib.rectify.METHODS`; organs left
    out get UR-SAM's), which runs with method ``per-organ`` use."""
    folder = Path(folder)
    _check_rectification(choices, Template.load(folder).organs, folder / "template.json")
    manifest = json.loads((folder / "template.json").read_text())
    atomic.write_json(folder / "template.json", {**manifest, "rectification": dict(choices)}, indent=1)
    return Template.load(folder)


def _check_rectification(choices: dict[str, str], organs, where: Path) -> None:
    wrong = [organ for organ, method in choices.items() if organ not in organs or method not in METHODS]
    if wrong:
        raise URSAMError(f"{where} names a rectification for {', '.join(wrong)} that is not an organ of the "
                         f"template or not one of {', '.join(METHODS)}; fix or rebuild the template.")


def _support_files(folder: Path) -> list[Path]:
    """The support images (and label maps) an existing template in ``folder`` refers to (none if
    there is none)."""
    try:
        manifest = json.loads((folder / "template.json").read_text())
        return [folder / entry[key] for entry in manifest.get("supports", []) for key in ("image", "labels")
                if entry.get(key) and Path(entry[key]).parts[:1] == ("supports",)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _wanted_organs(classes: dict[int, str], organs: list[str] | None) -> dict[int, str]:
    if organs is None:
        return dict(classes)
    by_name = {n: v for v, n in classes.items()}
    unknown = [o for o in organs if o not in by_name]
    if unknown:
        raise URSAMError(f"{', '.join(unknown)} not in the class map; it names: {', '.join(by_name)}.")
    return {by_name[o]: o for o in organs}
