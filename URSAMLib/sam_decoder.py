"""SAM's prompt encoder and mask decoder as one module, shared by PyTorch inference
(:mod:`URSAMLib.backbones`) and the exported inference runtimes (:mod:`URSAMLib.runtime`).

torch is imported lazily so that ``import URSAMLib`` works where torch is not installed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def prompt_decoder(model) -> "torch.nn.Module":
    """Prompt encoder + mask decoder of a SAM-architecture ``model`` as one module:
    (embedding ``1 x 256 x 64 x 64``, boxes ``N x 4`` model pixels) → ``N x 1 x 256 x 256`` logits,
    SAM's single-mask output (``multimask_output=False``).

    It computes what ``MaskDecoder.forward`` computes, with less work (maps agree to ~1e-6):

    * SAM copies the image side (embedding + dense prompt) once per box before the two-way
      transformer. Box prompts add the same dense embedding (no mask) to every box, so the image
      enters once, as a batch of 1, and broadcasting shares the first layer's image-side
      projections (token→image keys and values, image→token queries) among the boxes: they are
      the costliest matrix products of that layer.
    * Only the first mask token's mask (the single-mask output) is made; SAM makes four and the
      IoU prediction, then keeps one.
    """
    import torch

    class PromptDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.prompt_encoder, self.mask_decoder = model.prompt_encoder, model.mask_decoder

        def forward(self, embedding, boxes):
            sparse, dense = self.prompt_encoder(points=None, boxes=boxes[:, None], masks=None)
            decoder = self.mask_decoder
            tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
            tokens = torch.cat((tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
            hs, image = decoder.transformer(embedding + dense[:1], self.prompt_encoder.get_dense_pe(), tokens)
            count, channels, height, width = hs.shape[0], *embedding.shape[1:]
            upscaled = decoder.output_upscaling(image.transpose(1, 2).reshape(count, channels, height, width))
            weights = decoder.output_hypernetworks_mlps[0](hs[:, 1])  # token 0 is the IoU token
            masks = weights[:, None] @ upscaled.flatten(2)
            return masks.reshape(count, 1, *upscaled.shape[2:])

    return PromptDecoder().eval()
