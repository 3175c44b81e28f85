"""The learned localizer of the paper: MedLAM-style landmark localization (``--localizer medlam``).

UR-SAM takes its box prompts from MedLAM (Lei et al., MedLSAM): a 3-D network trained without
labels to (1) regress the offset between two patches of a scan (RDR) and (2) give every voxel
a multi-scale feature vector that matches the same anatomy in another scan (MSS). Given a
template (a few labelled support scans, :mod:`URSAMLib.template`), each organ's six extreme
points are found in a query CT by, for every support and every point:

1. **RDR**: start at the centre of the query's body; move by the offset predicted between the
   patch there and the support patch around the point; repeat a few times;
2. **MSS**: in a neighbourhood of that coarse position, take the voxel whose multi-scale
   features are most similar (cosine, summed over scales) to the support point's.

The supports' estimates are fused by their median and their agreement is scored as by the
registration localizer (:func:`URSAMLib.localize.common.fuse_supports`).

All arrays here are axial ``[z, y, x]`` volumes resampled to 3 mm (:func:`volume_at_3mm`);
points are ``K x 3`` continuous voxel coordinates ``(z, y, x)`` of such a volume unless said
otherwise. Weights are a plain state dict plus the network's configuration, loaded with
``torch.load(weights_only=True)``; training is in :mod:`URSAMLib.localize.medlam.train`.
torch is imported only when the localizer runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from ...atomic import torch_save
from ...errors import URSAMError
from ...organs import check_known
from ...io import AIR_THRESHOLD_HU, AxialFrame, axial_array
from ..common import Localization, axial_points, fuse_supports
from ...progress import Progress
from ...template import Template, resample_isotropic
from ...weights import default_cache_dir

if TYPE_CHECKING:
    import torch

    from .net import MedLAMConfig, MedLAMNet

WEIGHTS_FORMAT = "ursam-medlam"
WEIGHTS_VERSION = 1
DEFAULT_WEIGHTS_NAME = "medlam.pth"


def default_weights_path() -> Path:
    """Where ``ursam train-localizer`` writes by default: ``$URSAM_CACHE/medlam.pth`` or
    ``~/.cache/ursam/medlam.pth`` (``--localizer medlam`` uses the shipped weights unless given
    ``--localizer-weights``)."""
    return default_cache_dir() / DEFAULT_WEIGHTS_NAME


# ---------------------------------------------------------------------------------------
# Volumes and patches.

def volume_at_3mm(image: sitk.Image, spacing: float = 3.0) -> tuple[np.ndarray, sitk.Image, AxialFrame]:
    """The CT resampled to ``spacing`` mm isotropic: its axial HU array ``[z, y, x]`` (float32),
    the resampled image and that image's axial frame (to map points back to mm)."""
    resampled = image if np.allclose(image.GetSpacing(), spacing) else resample_isotropic(image, spacing)
    hu, frame = axial_array(resampled, np.float32)
    return hu, resampled, frame


def normalize_hu(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU mapped linearly from ``window`` onto [0, 1] (float32, clipped): air 0."""
    low, high = window
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def extract_patches(volume: np.ndarray, centres: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Cubic patches ``N x size x size x size`` (float32) of ``volume`` ``[z, y, x]``.

    centres: ``N x 3`` integer voxels (z, y, x), clipped into the volume; patch voxel ``u`` is
    volume voxel ``centre + u - size // 2`` (the centre is patch voxel ``size // 2``). Outside
    the volume the patch holds ``fill``.
    """
    centres = np.clip(np.asarray(centres, dtype=int).reshape(-1, 3), 0, np.array(volume.shape) - 1)
    half = size // 2
    padded = np.pad(volume, [(half, size - half)] * 3, constant_values=fill)
    patches = np.empty((len(centres), size, size, size), dtype=np.float32)
    for n, (z, y, x) in enumerate(centres):  # padded index c + half is volume voxel c
        patches[n] = padded[z:z + size, y:y + size, x:x + size]
    return patches


def body_centre(hu: np.ndarray) -> np.ndarray:
    """The centroid ``(z, y, x)`` of the voxels above -500 HU (the body; the volume's centre if none)."""
    body = np.argwhere(hu > AIR_THRESHOLD_HU)
    return body.mean(axis=0) if len(body) else (np.array(hu.shape) - 1) / 2.0


# ---------------------------------------------------------------------------------------
# Weights.

def save_weights(path: str | os.PathLike, model: "MedLAMNet", info: dict | None = None) -> None:
    """Write the model as ``{"format", "version", "config", "info", "model": state dict}``
    (tensors and plain types only, so it loads with ``weights_only=True``), atomically."""
    payload = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "config": model.config.as_dict(),
               "info": dict(info or {}), "model": {k: v.detach().cpu().contiguous() for k, v in
                                                   model.state_dict().items()}}
    torch_save(payload, path)


def read_payload(path: str | os.PathLike, what: str = "MedLAM weights") -> dict:
    """Load a MedLAM weights or checkpoint file safely (``weights_only=True``) as a dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise URSAMError(f"{what} {path} do not exist; train them with 'ursam train-localizer -o {path}' "
                         "or give the right path with --localizer-weights.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have many types; all mean "not a safe weights file"
        raise URSAMError(f"Could not load {path} as {what} ({type(error).__name__}): it is not a PyTorch "
                         "file, is damaged, or contains code objects.") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise URSAMError(f"{path} is not a MedLAM weights file of URSAM; train one with "
                         "'ursam train-localizer'.")
    if payload.get("version") != WEIGHTS_VERSION:
        raise URSAMError(f"{path} is MedLAM weights version {payload.get('version')}; this URSAM reads version "
                         f"{WEIGHTS_VERSION}. Train them again with this version.")
    return payload


def load_weights(path: str | os.PathLike, device: str = "cpu") -> "MedLAMNet":
    """The trained network of a weights (or checkpoint) file, in eval mode on ``device``."""
    from .net import MedLAMConfig, build_network

    payload = read_payload(path)
    try:
        model = build_network(MedLAMConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise URSAMError(f"{path} does not fit the MedLAM network ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160]}); train the weights again.") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------
# Inference.

class PatchEncoder:
    """Runs a trained network on patches of a normalised 3 mm volume, a batch at a time."""

    def __init__(self, model: "MedLAMNet", batch: int = 8):
        self.model, self.batch = model, batch
        self.config: MedLAMConfig = model.config
        self.device = next(model.parameters()).device

    def encode(self, volume: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, list["torch.Tensor"]]:
        """RDR vectors ``N x 3`` and MSS maps (per stride ``N x C x n x n x n``, L2-normalised on the
        CPU) of the patches of ``volume`` (normalised, ``[z, y, x]``) centred at ``centres`` ``N x 3``."""
        import torch
        import torch.nn.functional as F

        positions, features = [], []
        with torch.no_grad():
            for start in range(0, len(centres), self.batch):
                patches = extract_patches(volume, centres[start:start + self.batch], self.config.patch)
                p, maps = self.model(torch.from_numpy(patches)[:, None].to(self.device))
                positions.append(p.cpu().numpy())
                features.append([F.normalize(m.float(), dim=1).cpu().contiguous() for m in maps])
        return np.concatenate(positions), [torch.cat(level) for level in zip(*features)]


def rdr_search(encoder: PatchEncoder, volume: np.ndarray, target_positions: np.ndarray, start: np.ndarray,
               iterations: int = 3) -> np.ndarray:
    """Coarse positions ``K x 3`` (integer voxels) of K points in ``volume`` by RDR.

    target_positions: ``K x 3`` the RDR vectors of patches centred on the points (in the
    support); start: ``(z, y, x)`` where every search begins. Each iteration moves a point
    by the offset predicted between the patch at its current position and its target,
    ``distance_scale_mm * (target - p(current)) / spacing_mm`` voxels, kept inside the volume.
    """
    config = encoder.config
    current = np.tile(np.rint(start).astype(int), (len(target_positions), 1))
    upper = np.array(volume.shape) - 1
    for _ in range(iterations):
        unique, inverse = np.unique(current, axis=0, return_inverse=True)  # the first step is shared
        positions, _ = encoder.encode(volume, unique)
        step = (target_positions - positions[inverse.ravel()]) * config.distance_scale_mm / config.spacing_mm
        current = np.clip(np.rint(current + step).astype(int), 0, upper)
    return current


def sample_features(maps: list["torch.Tensor"], points_in_patch: np.ndarray, patch: int) -> list["torch.Tensor"]:
    """Feature vectors (per stride ``N x C``, L2-normalised) at ``points_in_patch`` ``N x 3``.

    maps: per stride ``N x C x n x n x n`` (patch n belongs to point n); points are continuous
    patch voxels (z, y, x). Cell c of stride s covers voxels ``s*c .. s*c + s - 1``, so voxel u
    lies at cell coordinate ``(u + 0.5) / s - 0.5``; features are interpolated trilinearly.
    """
    import torch
    import torch.nn.functional as F

    vectors = []
    for level in maps:
        n = level.shape[-1]
        cells = (torch.as_tensor(points_in_patch, dtype=torch.float32) + 0.5) * n / patch - 0.5
        grid = (2 * cells / (n - 1) - 1).flip(-1)  # grid_sample wants (x, y, z) in [-1, 1]
        sampled = F.grid_sample(level, grid[:, None, None, None, :], mode="bilinear", align_corners=True)
        vectors.append(F.normalize(sampled.reshape(level.shape[:2]), dim=1))
    return vectors


def mss_refine(encoder: PatchEncoder, volume: np.ndarray, coarse: np.ndarray, support_vectors: list["torch.Tensor"],
               radius: int = 8) -> np.ndarray:
    """Refined positions ``K x 3`` (integer voxels): for each point, the voxel within ``radius``
    voxels (per axis) of its coarse position whose multi-scale features are most similar to
    ``support_vectors`` (per stride ``K x C``, normalised): cosine similarity per stride,
    interpolated to voxels, summed over strides; voxels outside the volume are excluded."""
    import torch
    import torch.nn.functional as F

    if radius == 0:  # nothing to search: RDR only
        return coarse
    patch = encoder.config.patch
    half = patch // 2
    _, maps = encoder.encode(volume, coarse)
    total = torch.zeros(len(coarse), patch, patch, patch)
    for level, vectors in zip(maps, support_vectors):
        similarity = torch.einsum("kcdhw,kc->kdhw", level, vectors)[:, None]
        total += F.interpolate(similarity, size=(patch,) * 3, mode="trilinear", align_corners=False)[:, 0]
    window = slice(half - radius, half + radius + 1)
    local = total[:, window, window, window].numpy()
    offsets = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * 3, indexing="ij"), -1)
    refined = []
    for k, scores in enumerate(local):
        candidates = coarse[k] + offsets
        inside = np.all((candidates >= 0) & (candidates < np.array(volume.shape)), axis=-1)
        scores = np.where(inside, scores, -np.inf)
        refined.append(candidates[np.unravel_index(np.argmax(scores), scores.shape)])
    return np.array(refined)


def localize_points(encoder: PatchEncoder, query: np.ndarray, support: np.ndarray, support_points: np.ndarray,
                    start: np.ndarray, iterations: int = 3, radius: int = 8) -> np.ndarray:
    """Where ``support_points`` ``K x 3`` (voxels of the normalised 3 mm ``support``) lie in the
    normalised 3 mm ``query``: ``K x 3`` voxels (z, y, x), RDR from ``start`` then MSS."""
    centres = np.rint(support_points).astype(int)
    target_positions, support_maps = encoder.encode(support, centres)
    in_patch = support_points - centres + encoder.config.patch // 2
    vectors = sample_features(support_maps, in_patch, encoder.config.patch)
    coarse = rdr_search(encoder, query, target_positions, start, iterations)
    return mss_refine(encoder, query, coarse, vectors, radius).astype(float)


def _to_query_axial(points: np.ndarray, image_3mm: sitk.Image, frame_3mm: AxialFrame, ct: sitk.Image,
                    frame: AxialFrame) -> np.ndarray:
    """Points ``K x 3`` in axial voxels of the 3 mm volume → axial voxels of the original CT."""
    ijk = frame_3mm.index_to_stored(points)
    mm = np.array([image_3mm.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in ijk])
    return axial_points(mm, ct, frame)


def localize_by_medlam(ct: sitk.Image, template: Template, organs: list[str] | None = None,
                       progress: Progress | None = None, weights: str | os.PathLike | None = None,
                       device: str = "auto", iterations: int = 3, radius: int = 8) -> dict[str, Localization]:
    """Localize ``organs`` (default: all of the template's) in ``ct`` with trained MedLAM weights.

    weights: the file written by ``ursam train-localizer`` (default: the weights that ship with
    URSAM, :func:`URSAMLib.builtin.localizer_weights`).
    iterations: RDR steps; radius: MSS neighbourhood half-side in 3 mm voxels (8: +-24 mm).
    Returns, per organ, the median over supports of the extreme points in axial voxels
    ``(z, y, x)`` of ``ct``, the box through them and the supports' agreement.
    """
    from ...backbones import resolve_device

    organs = list(template.organs) if organs is None else organs
    check_known(organs, template.organs, "the template")
    if weights is None:
        from ...builtin import localizer_weights

        weights = localizer_weights()
    model = load_weights(weights, resolve_device(device))
    encoder = PatchEncoder(model)
    window = model.config.hu_window
    frame = AxialFrame.of(ct)
    query_hu, query_3mm, query_frame = volume_at_3mm(ct, model.config.spacing_mm)
    query = normalize_hu(query_hu, window)
    start = body_centre(query_hu)
    mapped: dict[str, list[np.ndarray]] = {o: [] for o in organs}
    for k, support in enumerate(template.supports):
        if progress:
            progress(k / len(template.supports), f"Matching support {support.name}")
        support_hu, support_3mm, support_frame = volume_at_3mm(support.read(), model.config.spacing_mm)
        points = np.concatenate([axial_points(support.points_mm[o], support_3mm, support_frame) for o in organs])
        found = localize_points(encoder, query, normalize_hu(support_hu, window), points, start, iterations, radius)
        found = _to_query_axial(found, query_3mm, query_frame, ct, frame)
        for n, organ in enumerate(organs):
            mapped[organ].append(found[6 * n:6 * n + 6])
    results = {o: fuse_supports(o, template.organs[o], np.stack(mapped[o]), frame.shape) for o in organs}
    if progress:
        progress(1.0, "Localized")
    return results
