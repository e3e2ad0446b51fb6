"""The sampler as one torch module for BioImage.io packages: (image, seed) -> the engine's upscaled image.

It is the packages' ``pytorch_state_dict`` architecture; every call goes through ``engine.Upscaler.upscale``, so a
package computes exactly what napari-resshift computes (normalisation, tiling, noise, the 4-step sampler).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .engine import Upscaler
from .model import ResShiftModel

NORMALIZATION = "percentile"  # per image and channel: a package's float input has no dtype range to go by


class ZooUpscaler(nn.Module):
    """``forward(image [B, C, Y, X] float32, seed [B] int64) -> [B, C, sY, sX]`` in the input's intensities.

    Channels go through one by one (``rgb=False``) or, for an RGB package, as one triplet, as in the engine.
    """

    def __init__(self, config: dict, *, name: str, tile: int, overlap: int, rgb: bool = False):
        super().__init__()
        self.model = ResShiftModel(config).eval()
        self.card = {"name": name, "tile": tile, "overlap": overlap}
        self.rgb = rgb

    def forward(self, image: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        # Built per call on the input's device: the consumer moves this module after loading the state dict.
        upscaler = Upscaler(self.model, card=self.card, device=str(image.device))
        seeds = seed.reshape(-1).tolist()
        seeds = seeds * len(image) if len(seeds) == 1 else seeds
        outputs = [
            upscaler.upscale(sample.detach().cpu().numpy(), channel_axis=0, rgb=self.rgb, seed=int(s),
                             norm=NORMALIZATION, dtype=np.float32).image
            for sample, s in zip(image, seeds, strict=True)
        ]
        return torch.from_numpy(np.stack(outputs)).to(image.device)
