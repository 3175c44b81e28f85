"""The MedLAM-style network: a small 3-D encoder shared by two heads, and their losses.

* **RDR** (relative distance regression): the encoder's coarsest map, flattened, is projected
  onto a 3-vector ``p`` per patch; the predicted offset from patch a's centre to patch b's
  centre is ``distance_scale_mm * (p_b - p_a)`` in mm along the axial axes ``(z, y, x)``.
  Because the offset is a difference of per-patch vectors, a support point's ``p`` can be
  computed once and compared with any query patch.
* **MSS** (multi-scale similarity): a light top-down decoder gives feature maps at strides 8,
  4 and 2 of the 64^3 patch (24, 12 and 6 mm cells at 3 mm); a voxel is matched across
  scans by the cosine similarity of its feature vectors at all three scales.

This module needs torch at import; :mod:`URSAMLib.localize.medlam.infer` and :mod:`URSAMLib.localize.medlam.train`
import it only when a model is built, so ``import URSAMLib`` works without torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_STRIDES = (8, 4, 2)
"""Strides of the MSS feature maps, coarse to fine, in voxels of the 3 mm volume."""


@dataclass(frozen=True)
class MedLAMConfig:
    """Everything needed to rebuild a network from its weights file (plain types only)."""

    width: int = 8
    """Channels of the first level; levels have width x (1, 2, 4, 8)."""
    patch: int = 64
    """Patch side in voxels (the paper: 64 at 3 mm)."""
    spacing_mm: float = 3.0
    distance_scale_mm: float = 100.0
    """RDR offsets are regressed in units of this many mm (keeps targets near 1)."""
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    """HU mapped linearly onto [0, 1] (air 0), clipped outside."""

    def as_dict(self) -> dict:
        values = asdict(self)
        values["hu_window"] = list(self.hu_window)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "MedLAMConfig":
        values = dict(values)
        values["hu_window"] = tuple(values["hu_window"])
        return cls(**values)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    # No normalisation layer: the network is small enough to train without one, a patch's
    # features then do not depend on what else is in the patch or the batch, and on CPUs
    # instance/group norm cost 30-50 % of a training step (they copy channels-last tensors).
    conv = nn.Conv3d(in_channels, out_channels, 3, stride, 1)
    nn.init.kaiming_normal_(conv.weight, a=0.1, nonlinearity="leaky_relu")
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.LeakyReLU(0.1, inplace=True))


class MedLAMNet(nn.Module):
    """Input ``N x 1 x P x P x P`` (P = config.patch, intensities in [0, 1]).

    :meth:`forward` returns ``(positions, features)``: positions ``N x 3`` (RDR vectors, axial
    ``(z, y, x)``, units of ``distance_scale_mm``) and the MSS feature maps, one per stride in
    :data:`FEATURE_STRIDES`, each ``N x C_s x P/s x P/s x P/s``, not normalised.
    """

    def __init__(self, config: MedLAMConfig):
        super().__init__()
        self.config = config
        w = config.width
        if config.patch % 16:
            raise ValueError(f"patch side must be a multiple of 16, not {config.patch}")
        # Straight to stride 2: a full-resolution level would about double the cost on CPUs.
        # The finest MSS map then has 6 mm cells; matching interpolates it to 3 mm voxels.
        self.level1 = nn.Sequential(_conv(1, w, 2), _conv(w, w))              # stride 2
        self.level2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))  # stride 4
        self.level3 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))  # stride 8
        self.level4 = nn.Sequential(_conv(4 * w, 8 * w, 2), _conv(8 * w, 8 * w))  # stride 16
        bottleneck = 8 * w * (config.patch // 16) ** 3
        # Flattened, not pooled: where things lie inside the patch is what tells its position.
        self.position_head = nn.Sequential(nn.Linear(bottleneck, 16 * w), nn.LeakyReLU(0.1, inplace=True),
                                           nn.Linear(16 * w, 3))
        self.lateral = nn.ModuleList([nn.Conv3d(c, 2 * w, 1) for c in (8 * w, 4 * w, 2 * w, w)])
        self.smooth = nn.ModuleList([_conv(2 * w, 2 * w) for _ in FEATURE_STRIDES])

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Channels-last: oneDNN's 3-D convolution backward is up to 25x faster in it on CPUs.
        e1 = self.level1(patches.contiguous(memory_format=torch.channels_last_3d))
        e2 = self.level2(e1)
        e3 = self.level3(e2)
        e4 = self.level4(e3)
        positions = self.position_head(e4.flatten(1))
        features, top = [], self.lateral[0](e4)
        for lateral, smooth, skip in zip(self.lateral[1:], self.smooth, (e3, e2, e1)):
            top = smooth(lateral(skip) + F.interpolate(top, scale_factor=2, mode="nearest"))
            features.append(top)
        return positions, features


def build_network(config: MedLAMConfig) -> MedLAMNet:
    """A freshly initialised network (seed torch first for a reproducible one), channels-last."""
    return MedLAMNet(config).to(memory_format=torch.channels_last_3d)


def rdr_loss(positions_a: torch.Tensor, positions_b: torch.Tensor, offsets_mm: torch.Tensor,
             distance_scale_mm: float) -> torch.Tensor:
    """Mean squared error of the predicted offsets a → b (``N x 3`` mm, axial (z, y, x)), in
    units of ``distance_scale_mm``."""
    return F.mse_loss(positions_b - positions_a, offsets_mm / distance_scale_mm)


def mss_loss(anchor_features: torch.Tensor, target_maps: torch.Tensor, anchor_cells_in_target: torch.Tensor,
             valid: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Cross-entropy of where anchor voxels of one patch match in another patch's feature map.

    G groups (a patch pair and direction) of up to M anchors each:
    anchor_features: ``G x M x C`` feature vectors of the anchors in their own patch;
    target_maps: ``G x C x n x n x n`` the other patch's map at the same stride;
    anchor_cells_in_target: ``G x M x 3`` where each anchor truly lies in that map, in
        continuous cell coordinates (z, y, x); valid: ``G x M`` which anchors exist.
    The softmax over the map's cells of cosine similarity / temperature should put its mass on
    the cells within 1 cell of the true position (positives); cells 1 to 2 cells away are
    left out (neighbours look alike), farther ones are the negatives.
    """
    groups, _, n = target_maps.shape[0], target_maps.shape[1], target_maps.shape[-1]
    logits = torch.bmm(F.normalize(anchor_features, dim=2),
                       F.normalize(target_maps, dim=1).reshape(groups, target_maps.shape[1], -1)) / temperature
    with torch.no_grad():  # squared cell distances G x M x n^3, summed axis by axis
        axis = torch.arange(n, dtype=torch.float32, device=target_maps.device)
        squared = [(anchor_cells_in_target[..., a, None].float() - axis) ** 2 for a in range(3)]
        distance2 = (squared[0][..., :, None, None] + squared[1][..., None, :, None]
                     + squared[2][..., None, None, :]).flatten(2)
        positive = distance2 <= 1.0
        considered = positive | (distance2 >= 4.0)
    minus_inf = torch.finfo(logits.dtype).min
    per_anchor = (torch.logsumexp(logits.masked_fill(~considered, minus_inf), 2)
                  - torch.logsumexp(logits.masked_fill(~positive, minus_inf), 2))
    return per_anchor[valid].mean()
