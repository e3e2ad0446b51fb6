"""Default tile, halo and batch per model and device, from what each costs.

- Latent models (a VQ autoencoder): its mid-block attention is global over the tile, so the autoencoder's cost per
  pixel grows with the tile (measured on 2 CPU cores for the official VQ-f4: 1.66x per pixel at 128 LR px against
  64, encode 3.4 s vs 1.8 s and decode 5.9 s vs 3.8 s per 64 x 64 equivalent). The tile is the smallest the denoiser
  takes that is at least the reference's chop (64), and the halo keeps the reference's stride ratio (56 of 64, at
  least 4 px): the same tiles as the reference loop, never more.
- Pixel-space models: the model card's tile and halo (a ConvDenoiser has no statistics over the tile, so its card
  picks large tiles), else the training crop (GroupNorm statistics may not carry over to much larger tiles) and the
  denoiser's receptive field (a UNet's coarsest attention window, a conv net's chain), at most a quarter of the tile.
- Batch: tiles per forward pass by LR pixels, a few on a CPU (beyond that, activations outgrow the caches), many on a
  GPU (it needs that much work per launch to be busy).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model import ResShiftModel

REFERENCE_CHOP, REFERENCE_STRIDE = 64, 56  # the reference CLI's tiles, in LR pixels
PIXEL_TILE = 128  # LR pixels, for a pixel-space model without a card tile or a training crop
MIN_OVERLAP = 4
# LR pixels per forward pass. CPU: 32-px tiles run about twice as fast batched by 8 on 2 cores; CUDA: enough to
# fill a large GPU with the default model (16 tiles of 128), the memory a VQ-f4 batch of 32 64-px tiles needs.
BATCH_PIXELS = {"cpu": 8 * 32 * 32, "cuda": 16 * 128 * 128}
MAX_BATCH = {"cpu": 8, "cuda": 32}


def default_tile(model: ResShiftModel, card: dict) -> int:
    """Tile side in LR pixels."""
    return planned_tile(card, latent=model.autoencoder is not None, scale=model.scale, multiple=model.pad_multiple)


def planned_tile(card: dict, *, latent: bool, scale: int, multiple: int = 1) -> int:
    """``default_tile`` from what a card (or a preset's configuration) says, before any weights are loaded."""
    if latent:
        return -(-REFERENCE_CHOP // multiple) * multiple
    trained = (card.get("training") or {}).get("crop")
    return int(card.get("tile") or (trained // scale if trained else PIXEL_TILE))


def halo(model: ResShiftModel) -> int:
    """The denoiser's reach in LR pixels: a UNet's coarsest attention window, a conv net's receptive field."""
    return model.unet.halo // max(1, model.latent_factor)


def default_overlap(model: ResShiftModel, card: dict, tile: int) -> int:
    """Halo between neighbouring tiles in LR pixels."""
    return planned_overlap(card, tile, latent=model.autoencoder is not None, reach=halo(model))


def planned_overlap(card: dict, tile: int, *, latent: bool, reach: int | None = None) -> int | None:
    """``default_overlap`` from a card; None when it rests on the network's reach and that is not given."""
    if latent and not card.get("overlap"):
        return max(MIN_OVERLAP, tile - tile * REFERENCE_STRIDE // REFERENCE_CHOP)
    reach = card.get("overlap") or reach
    return None if reach is None else max(MIN_OVERLAP, min(int(reach), tile // 4))


def batch_for(tile: int, device: torch.device | str = "cpu") -> int:
    """Tiles per forward pass: several small tiles, one large one; more on a GPU."""
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    return max(1, min(MAX_BATCH[kind], BATCH_PIXELS[kind] // (tile * tile)))
