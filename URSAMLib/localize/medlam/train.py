"""Self-supervised training of the MedLAM-style network (``ursam train-localizer``) on unlabelled CT.

Every step draws pairs of 64^3 patches (3 mm voxels) from the same scan:

* the scan is first scaled by a random factor per axis (0.85-1.15, as patients differ in size)
  — a *virtual* volume in which both patches are cut, so their offset is exact;
* patch a is centred on a random body voxel; patch b near it (within +-24 voxels per axis,
  so the two overlap) for half the pairs, else on another random body voxel of the scan;
* each patch gets its own intensity augmentation (contrast, brightness, noise).

RDR learns the offset a → b in mm (MSE); MSS learns, for anchor voxels of one patch that
also lie in the other, to find them among all cells of the other patch's feature map at
each stride (cross-entropy on cosine similarity, :func:`URSAMLib.localize.medlam.net.mss_loss`).

Randomness is drawn per step from ``(seed, step)``, so a run resumed from a checkpoint
continues exactly as an uninterrupted one would, and worker processes can draw the next steps'
patches while the network trains on this one (the same batches as without workers).
Checkpoints hold model, optimizer, step, settings and network configuration as tensors and
plain types (``weights_only`` loadable).
"""
from __future__ import annotations

import os
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ...atomic import torch_save
from ...errors import URSAMError
from ...formats import IMAGE_SUFFIXES
from ...io import AIR_THRESHOLD_HU, AIR_VALUE_HU, read_ct
from .infer import (WEIGHTS_FORMAT, WEIGHTS_VERSION, normalize_hu, read_payload,
                     save_weights, volume_at_3mm)
from ...progress import Progress

if TYPE_CHECKING:
    import torch

    from .net import MedLAMConfig


@dataclass(frozen=True)
class TrainSettings:
    """How to train; stored in checkpoints so that a resumed run continues identically."""

    steps: int = 2000
    batch: int = 4
    """Patch pairs per step (the network sees 2 x batch patches)."""
    learning_rate: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 100
    anchors: int = 16
    """MSS anchor voxels per pair, direction and stride."""
    near_fraction: float = 0.5
    near_range: int = 24
    """Near pairs: offset up to this many voxels per axis."""
    scale_range: float = 0.15
    temperature: float = 0.1
    mss_weight: float = 1.0

    RESUMABLE_CHANGES = ("steps", "checkpoint_every")
    """What may differ when resuming; everything else must match the checkpoint."""


def find_images(items: list[str | os.PathLike], pattern: str = "*") -> list[Path]:
    """CT files from paths and folders (a folder gives its image files matching ``pattern``), sorted
    and without duplicates."""
    found: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            inside = sorted(p for p in item.glob(pattern) if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
            if not inside:
                raise URSAMError(f"{item} holds no image file matching {pattern!r} ({', '.join(IMAGE_SUFFIXES)}).")
            found += inside
        elif item.is_file():
            found.append(item)
        else:
            raise URSAMError(f"{item} does not exist; give CT files or folders with --images.")
    return list(dict.fromkeys(p.resolve() for p in found))


def load_training_volume(path: str | os.PathLike, spacing: float = 3.0) -> np.ndarray:
    """A CT at ``spacing`` mm as an axial HU array ``[z, y, x]`` (int16), cropped to the box of its
    body (voxels above -500 HU) plus 4 voxels, where patch centres are drawn."""
    hu, _, _ = volume_at_3mm(read_ct(path), spacing)
    body = hu > AIR_THRESHOLD_HU
    if hu.max() < 100 and hu.min() >= 0:
        raise URSAMError(f"{path} looks like a label map (values {hu.min():.0f}..{hu.max():.0f}), not a CT in HU; "
                         "give only CT scans (e.g. with --pattern '*_ct.nii.gz').")
    if not body.any():
        raise URSAMError(f"{path} has no voxel above {AIR_THRESHOLD_HU:.0f} HU; give CT scans in Hounsfield units.")
    coords = np.argwhere(body)
    low, high = np.maximum(coords.min(0) - 4, 0), coords.max(0) + 5
    return np.round(hu[low[0]:high[0], low[1]:high[1], low[2]:high[2]]).astype(np.int16)


@dataclass
class PairBatch:
    """One training step's data. Patches ``B x P x P x P`` (normalised intensities), offsets ``B x 3``
    (integer voxels (z, y, x) of the virtual volume, from a's centre to b's), and per MSS stride
    and pair the anchor cells ``M x 3`` drawn in a (for a → b) and in b (for b → a)."""

    patches_a: np.ndarray
    patches_b: np.ndarray
    offsets: np.ndarray
    anchors_a: list[list[np.ndarray]]
    anchors_b: list[list[np.ndarray]]


class PatchPairSampler:
    """Draws :class:`PairBatch` es from 3 mm HU volumes (:func:`load_training_volume`)."""

    def __init__(self, volumes: list[np.ndarray], config: "MedLAMConfig", settings: TrainSettings):
        from .net import FEATURE_STRIDES

        self.volumes, self.config, self.settings, self.strides = volumes, config, settings, FEATURE_STRIDES
        # Body voxels on a 2-voxel lattice: enough centres, an eighth of the memory.
        self.body = [(np.argwhere(v[::2, ::2, ::2] > AIR_THRESHOLD_HU) * 2).astype(np.int16) for v in volumes]

    def batch(self, step: int) -> PairBatch:
        rng = np.random.default_rng([self.settings.seed, step])
        size, near = self.config.patch, self.settings.near_range
        a, b, offsets = [], [], []
        near_pairs = int(np.ceil(self.settings.batch * self.settings.near_fraction))
        for i in range(self.settings.batch):
            k = int(rng.integers(len(self.volumes)))
            scale = 1 + rng.uniform(-self.settings.scale_range, self.settings.scale_range, 3)
            centre_a = np.rint(self._body_voxel(k, rng) / scale).astype(int)
            if i < near_pairs:  # a fixed share, so that every step has MSS anchors
                centre_b = centre_a + rng.integers(-near, near + 1, 3)
            else:
                centre_b = np.rint(self._body_voxel(k, rng) / scale).astype(int)
            a.append(self._augment(virtual_patch(self.volumes[k], centre_a, scale, size), rng))
            b.append(self._augment(virtual_patch(self.volumes[k], centre_b, scale, size), rng))
            offsets.append(centre_b - centre_a)
        offsets = np.array(offsets)
        anchors_a = [[self._anchors(pa, d, s, rng) for pa, d in zip(a, offsets)] for s in self.strides]
        anchors_b = [[self._anchors(pb, -d, s, rng) for pb, d in zip(b, offsets)] for s in self.strides]
        return PairBatch(np.stack(a), np.stack(b), offsets, anchors_a, anchors_b)

    def _body_voxel(self, k: int, rng: np.random.Generator) -> np.ndarray:
        body = self.body[k]
        return body[rng.integers(len(body))] + rng.uniform(0, 2, 3)  # anywhere in the lattice cell

    def _augment(self, hu_patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        patch = normalize_hu(hu_patch, self.config.hu_window)
        patch = patch * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)
        return (patch + rng.normal(0, 0.01, patch.shape)).astype(np.float32)

    def _anchors(self, patch: np.ndarray, offset: np.ndarray, stride: int, rng: np.random.Generator) -> np.ndarray:
        """Cells ``M x 3`` of the stride-``stride`` map of ``patch`` whose centre voxel lies in the body
        and, moved by ``-offset``, inside the other patch (empty when the patches do not overlap)."""
        n = patch.shape[0] // stride
        cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
        centres = cells * stride + (stride - 1) // 2
        other = centres - offset
        inside = np.all((other >= 0) & (other < patch.shape[0]), axis=1)
        in_body = patch[tuple(centres.T)] > 0.2  # about -600 HU: not air
        candidates = cells[inside & in_body]
        if len(candidates) > self.settings.anchors:
            candidates = candidates[rng.choice(len(candidates), self.settings.anchors, replace=False)]
        return candidates


def virtual_patch(volume: np.ndarray, centre: np.ndarray, scale: np.ndarray, size: int) -> np.ndarray:
    """A ``size``^3 patch (HU, float32) of ``volume`` ``[z, y, x]`` scaled by ``1 / scale`` per axis.

    Patch voxel ``u`` samples the volume at ``scale * (centre + u - size // 2)`` (linear
    interpolation, air outside): ``centre`` is in voxels of the scaled (virtual) volume.
    """
    coords = [s * (c + np.arange(size) - size // 2) for c, s in zip(centre, scale)]
    low = np.array([int(np.floor(c.min())) for c in coords])
    high = np.array([int(np.floor(c.max())) + 2 for c in coords])  # +2: the upper neighbour, exclusive
    block = _crop(volume, low, high).astype(np.float32)
    for axis, c in enumerate(coords):
        index = np.floor(c).astype(int) - low[axis]
        weight = (c - np.floor(c)).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = size
        weight = weight.reshape(shape)
        block = np.take(block, index, axis) * (1 - weight) + np.take(block, index + 1, axis) * weight
    return block


def _crop(volume: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``volume[low:high]`` per axis, with air where the range leaves the volume."""
    out = np.full(tuple(high - low), AIR_VALUE_HU, dtype=volume.dtype)
    src_low, src_high = np.maximum(low, 0), np.minimum(high, volume.shape)
    if np.all(src_high > src_low):
        dst = tuple(slice(a - lo, b - lo) for a, b, lo in zip(src_low, src_high, low))
        out[dst] = volume[tuple(slice(a, b) for a, b in zip(src_low, src_high))]
    return out


def training_loss(model, batch: PairBatch, settings: TrainSettings, device: str = "cpu"
                  ) -> tuple["torch.Tensor", float, float]:
    """``(loss, rdr, mss)``: the loss to minimise (RDR MSE + mss_weight x MSS cross-entropy) and its parts."""
    import torch

    from .net import FEATURE_STRIDES, mss_loss, rdr_loss

    config = model.config
    n = len(batch.offsets)
    patches = torch.from_numpy(np.concatenate([batch.patches_a, batch.patches_b]))[:, None].to(device)
    positions, maps = model(patches)
    offsets_mm = torch.as_tensor(batch.offsets * config.spacing_mm, dtype=torch.float32, device=device)
    rdr = rdr_loss(positions[:n], positions[n:], offsets_mm, config.distance_scale_mm)
    terms = []
    for level, stride, anchors_a, anchors_b in zip(maps, FEATURE_STRIDES, batch.anchors_a, batch.anchors_b):
        # One group per pair and direction: anchors of a found in b, anchors of b found in a.
        shifts = batch.offsets / stride  # cell c of a is cell c - shift of b
        groups = [(i, n + i, anchors_a[i], anchors_a[i] - shifts[i]) for i in range(n)]
        groups += [(n + i, i, anchors_b[i], anchors_b[i] + shifts[i]) for i in range(n)]
        groups = [g for g in groups if len(g[2])]
        if not groups:
            continue
        most = max(len(g[2]) for g in groups)
        vectors = level.new_zeros(len(groups), most, level.shape[1])
        cells_in_target = torch.zeros(len(groups), most, 3, device=device)
        valid = torch.zeros(len(groups), most, dtype=torch.bool, device=device)
        for g, (source, _, cells, in_target) in enumerate(groups):
            vectors[g, :len(cells)] = level[source][:, cells[:, 0], cells[:, 1], cells[:, 2]].T
            cells_in_target[g, :len(cells)] = torch.as_tensor(in_target, dtype=torch.float32)
            valid[g, :len(cells)] = True
        targets = level[torch.as_tensor([g[1] for g in groups], device=device)]
        terms.append(mss_loss(vectors, targets, cells_in_target, valid, settings.temperature))
    mss = torch.stack(terms).mean() if terms else positions.sum() * 0.0
    return rdr + settings.mss_weight * mss, rdr.item(), mss.item()


_WORKER_SAMPLER: PatchPairSampler | None = None


def _start_worker(sampler: PatchPairSampler) -> None:
    import signal

    global _WORKER_SAMPLER
    _WORKER_SAMPLER = sampler
    # Ctrl-C is the training process's to handle, once: a worker ignores it. It was born with SIGINT
    # blocked (see _submit), so none reached it before this line.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _submit(pool, step: int):
    """``pool.submit`` with SIGINT blocked: a worker the pool forks now inherits the block, so a Ctrl-C
    cannot kill it before its initializer ignores SIGINT; here it is only deferred, not lost."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # no fork there either
        return pool.submit(_worker_batch, step)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(_worker_batch, step)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_batch(step: int) -> PairBatch:
    return _WORKER_SAMPLER.batch(step)


def batches(sampler: PatchPairSampler, first: int, last: int, workers: int = 0) -> Iterator[PairBatch]:
    """The batches of steps ``first`` .. ``last - 1`` in order; with ``workers`` > 0 they are drawn by
    that many processes, at most two per worker ahead of the training loop (a batch is 2 x batch
    patches of 64^3 float32: 16 MB for 8 pairs). On a GPU, drawing patches (numpy, one core) and not
    the network limits a single process: measured 4.7 steps/s of 8 pairs on an H200."""
    if workers <= 0:
        for step in range(first, last):
            yield sampler.batch(step)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # fork shares the volumes with the workers instead of pickling them (spawn where there is no fork)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_start_worker,
                             initargs=(sampler,)) as pool:
        pending, next_step = deque(), first
        try:
            while pending or next_step < last:
                while next_step < last and len(pending) < 2 * workers:
                    pending.append(_submit(pool, next_step))
                    next_step += 1
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def checkpoint_path(weights: str | os.PathLike) -> Path:
    """Where training keeps its checkpoint: beside the weights, ``NAME.ckpt.pth``."""
    weights = Path(weights)
    return weights.with_name(weights.name.removesuffix(".pth") + ".ckpt.pth")


def train(images: list[Path], output: str | os.PathLike, settings: TrainSettings | None = None,
          config: "MedLAMConfig | None" = None, resume: str | os.PathLike | None = None, device: str = "cpu",
          progress: Progress | None = None, workers: int = 0) -> list[tuple[int, float, float, float]]:
    """Train on ``images`` (unlabelled CT files) and write the weights to ``output``.

    Every ``settings.checkpoint_every`` steps (and at the end) the full state goes to
    :func:`checkpoint_path`; ``resume`` continues from such a checkpoint with its settings
    and configuration (only ``steps`` and ``checkpoint_every`` may change) and the same images.
    ``workers``: processes that draw the patches ahead (0: this process); the result is the same.
    Returns the loss history ``(step, loss, rdr, mss)`` of the steps run by this call.
    """
    import torch

    from .net import MedLAMConfig, build_network

    settings = settings or TrainSettings()
    names = [Path(p).name for p in images]
    state = None
    if resume is not None:
        state = read_payload(resume, "MedLAM checkpoint")
        if "optimizer" not in state:
            raise URSAMError(f"{resume} holds weights only, not a training checkpoint; resume from "
                             f"{checkpoint_path(resume).name}.")
        saved = TrainSettings(**state["settings"])
        changed = [f.name for f in fields(TrainSettings) if f.name not in TrainSettings.RESUMABLE_CHANGES
                   and getattr(saved, f.name) != getattr(settings, f.name)]
        if changed:
            raise URSAMError(f"{resume} was trained with other settings ({', '.join(changed)}); resume with the "
                             "checkpoint's settings (leave those options out).")
        if state["images"] != names:
            raise URSAMError(f"{resume} was trained on other images ({len(state['images'])} files); resume "
                             "with the same --images.")
        saved_config = MedLAMConfig.from_dict(state["config"])
        if config is not None and config != saved_config:
            raise URSAMError(f"{resume} holds a network of width {saved_config.width}, patch {saved_config.patch}; "
                             "resume without --width.")
        config = saved_config
    config = config or MedLAMConfig()
    if settings.steps < 1 or settings.batch < 1 or settings.checkpoint_every < 1:
        raise URSAMError("--steps, --batch and --checkpoint-every must be at least 1.")
    if not images:
        raise URSAMError("No training images given.")

    volumes = []
    for k, path in enumerate(images):
        if progress:
            progress(0.0, f"Loading {k + 1}/{len(images)}: {Path(path).name}")
        volumes.append(load_training_volume(path, config.spacing_mm))
    sampler = PatchPairSampler(volumes, config, settings)

    torch.manual_seed(settings.seed)
    model = build_network(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    first = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first = int(state["step"])
    history = []
    with closing(batches(sampler, first, settings.steps, workers)) as drawn:  # stops the workers on any exit
        for step, batch in enumerate(drawn, start=first):
            loss, rdr, mss = training_loss(model, batch, settings, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append((step + 1, loss.item(), rdr, mss))
            if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
                torch_save({"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "config": config.as_dict(),
                                   "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "step": step + 1, "settings": asdict(settings), "images": names},
                                  checkpoint_path(output))
            if progress:
                recent = np.mean([h[1:] for h in history[-20:]], axis=0)
                progress((step + 1) / settings.steps, f"step {step + 1}/{settings.steps} loss {recent[0]:.3f} "
                         f"(RDR {recent[1]:.3f}, MSS {recent[2]:.3f})")
    save_weights(output, model, {"steps": settings.steps, "images": len(images), "settings": asdict(settings)})
    return history
