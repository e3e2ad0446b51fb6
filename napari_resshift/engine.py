"""The upscaling engine the front-ends share: device and precision, channel handling, normalisation, tiling.

``Upscaler.upscale`` takes a numpy image of any supported dtype and returns the upscaled image and a record of how.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import allocator, diffusion, normalization, precision as precisions, tileplan
from .errors import ResShiftError
from .loading import load_model
from .model import ResShiftModel
from .noise import positional_noise
from .tiling import Tile, blend_tiles

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: fp32, or half precision on a GPU where measured harmless
DEVICES = ("auto", "cpu", "cuda", "mps")  # what the front-ends offer; pick_device also takes cuda:N
DEVICE_WORDS = f"{', '.join(DEVICES[:-1])} or {DEVICES[-1]}"  # for help texts and errors


def check_precision(precision: str) -> None:
    """Refuse, in one line, a precision that is none of ``PRECISIONS`` (inference and training alike)."""
    if precision not in PRECISIONS:
        raise ResShiftError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device that is absent is an error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ResShiftError("device 'cuda' was asked for but no CUDA GPU is available; choose the device auto or cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ResShiftError("device 'mps' was asked for but is not available; choose the device auto or cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ResShiftError(f"unknown device {device!r}; use {DEVICE_WORDS}") from None


@dataclass
class Result:
    """An upscaled image and how it was made (goes into layer and file metadata)."""

    image: np.ndarray
    info: dict


class Cancelled(Exception):
    """Raised from a progress callback to stop a run; nothing partial is returned."""


class Upscaler:
    """A loaded model on a device, ready to upscale images, planes and tiles."""

    def __init__(
        self,
        model: ResShiftModel | str | None = None,
        *,
        card: dict | None = None,
        device: str = "auto",
        precision: str = "auto",
        autoencoder=None,
        steps: int | None = None,
    ):
        if model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            model, card = load_model(model, autoencoder=autoencoder)
        if steps is not None:  # before the precision is calibrated on it
            model.set_steps(steps)
        self.card = card or {}
        self.device = pick_device(device)
        if self.device.type == "cpu":
            allocator.keep_freed_memory()
        check_precision(precision)
        if precision == "fp16" and self.device.type == "cpu":
            raise ResShiftError("fp16 is not supported on the CPU; use bf16 or fp32")
        memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        if precision == "auto":
            precision = precisions.pick(self.model, self.device, size=self.default_tile)
        self.precision = precision

    @property
    def scale(self) -> int:
        return self.model.scale

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def default_tile(self) -> int:
        """Tile side in LR pixels for this model (see ``tileplan``)."""
        return tileplan.default_tile(self.model, self.card)

    def tiling(self, *, tile: int | None = None, overlap: int | None = None) -> tuple[int, int]:
        """(tile, overlap) in LR pixels, the defaults filled in."""
        tile = self.default_tile if tile is None else tile
        overlap = self.default_overlap(tile) if overlap is None else overlap
        if tile < 1 or overlap < 0 or tile <= overlap:
            raise ResShiftError(f"the tile ({tile} px) must be positive and larger than the overlap ({overlap} px)")
        return tile, overlap

    @property
    def halo(self) -> int:
        """The denoiser's reach in LR pixels (see ``tileplan.halo``)."""
        return tileplan.halo(self.model)

    def default_overlap(self, tile: int) -> int:
        """Halo in LR pixels for this model and tile (see ``tileplan``)."""
        return tileplan.default_overlap(self.model, self.card, tile)

    def batch(self, tile: int) -> int:
        """Tiles per forward pass on this device."""
        return tileplan.batch_for(tile, self.device)

    @torch.inference_mode()
    def super_resolve(self, lr: torch.Tensor, *, noise: diffusion.NoiseSource, callback=None) -> torch.Tensor:
        """LR batch [B, 3, h, w] in [-1, 1] -> HR batch on the CPU, float32."""
        lr = lr.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
        with self.autocast():
            out = self.model.super_resolve(
                lr, noise=lambda k: noise(k).to(self.device).contiguous(memory_format=self.memory_format),
                callback=callback)
        return out.float().cpu()

    def tile_noise(self, tiles: list[Tile], *, seed: int, plane: int) -> diffusion.NoiseSource:
        """Noise [B, C, h, w] for same-shaped tiles, made on the model's device and keyed by absolute latent
        position, so it does not depend on the tiling."""
        f = self.model.latent_factor
        m = self.model.pad_multiple
        h, w = math.ceil(tiles[0].h / m) * m, math.ceil(tiles[0].w / m) * m
        origins = [(t.y0 * f, t.x0 * f) for t in tiles]
        return lambda k: positional_noise(
            seed=seed, plane=plane, draw=k, channels=self.model.latent_channels, origins=origins, h=h * f, w=w * f,
            device=self.device,
        )

    def upscale_tiles(self, patches: torch.Tensor, tiles: list[Tile], *, seed: int, plane: int) -> torch.Tensor:
        """Same-shaped tiles [B, 3, h, w] at LR positions ``tiles`` -> HR [B, 3, sh, sw] in one batch, each with
        its position-keyed noise."""
        return self.super_resolve(patches, noise=self.tile_noise(tiles, seed=seed, plane=plane))

    def upscale_plane(
        self,
        lr: torch.Tensor,
        *,
        seed: int = 0,
        plane: int = 0,
        tile: int | None = None,
        overlap: int | None = None,
        box=None,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """One RGB plane [3, H, W] in [-1, 1] -> HR [3, sH, sW] (or the HR ``box`` of it), tiled and blended."""
        tile, overlap = self.tiling(tile=tile, overlap=overlap)

        def run(patches: torch.Tensor, tiles: list[Tile]) -> torch.Tensor:
            return self.upscale_tiles(patches, tiles, seed=seed, plane=plane)

        return blend_tiles(run, lr, scale=self.scale, tile=tile, overlap=overlap, box=box, batch=self.batch(tile),
                           on_tile=on_tile)

    def upscale(
        self,
        image,
        *,
        channel_axis: int | None = None,
        rgb: bool | None = None,
        seed: int = 0,
        tile: int | None = None,
        overlap: int | None = None,
        norm: normalization.Normalization | str = "auto",
        dtype=None,
        plane_offset: int = 0,
        box: tuple[int, int, int, int] | None = None,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> Result:
        """Upscale a 2-D image: gray (H, W), RGB(A) (H, W, 3|4) or multichannel with ``channel_axis``.

        ``box`` = (y0, x0, y1, x1) in HR pixels returns only that region, equal to the same region of the whole
        result (only the tiles that reach it are computed; ``norm`` should then be fitted on the whole image).

        RGB goes through the model as a triplet; every other channel goes through alone, replicated to RGB, and
        the output is the mean of the three outputs. Alpha is upscaled bicubically. The result has the input's
        dtype unless ``dtype`` is given (e.g. ``np.float32``).
        """
        image = np.asarray(image)
        dtype = normalization.check_dtype(image.dtype if dtype is None else dtype)
        if image.ndim == 3 and channel_axis is None and rgb is not False and image.shape[-1] in (3, 4):
            channel_axis, rgb = image.ndim - 1, True
        if image.ndim != (2 if channel_axis is None else 3):
            raise ResShiftError(f"expected a 2-D image with an optional channel axis, got shape {image.shape}")
        if channel_axis is not None and not -image.ndim <= channel_axis < image.ndim:
            raise ResShiftError(f"channel_axis {channel_axis} does not exist in an image of shape {image.shape}")
        planes = image[None] if channel_axis is None else np.moveaxis(image, channel_axis, 0)
        if min(planes.shape[1:]) < 1 or planes.size == 0:
            raise ResShiftError(f"the image is empty (shape {image.shape}); nothing to upscale")
        rgb = bool(rgb) and planes.shape[0] in (3, 4)
        if not isinstance(norm, normalization.Normalization):
            norm = normalization.fit(planes, mode=norm, channel_axis=0)
        x = np.nan_to_num(norm.forward(planes, channel_axis=0), nan=0.0, posinf=1.0, neginf=-1.0)
        x = torch.from_numpy(x)
        groups = [x[:3]] if rgb else [c[None].expand(3, -1, -1) for c in x]
        total = len(groups)
        outputs = []
        for g, group in enumerate(groups):
            report = (lambda d, n, g=g: on_tile(g * n + d, total * n)) if on_tile else None
            hr = self.upscale_plane(
                group, seed=seed, plane=plane_offset + g, tile=tile, overlap=overlap, box=box, on_tile=report
            )
            outputs.append(hr if rgb else hr.mean(0, keepdim=True))
        out = torch.cat(outputs, 0)
        if rgb and x.shape[0] == 4:  # alpha is not image content: interpolate it
            alpha = torch.nn.functional.interpolate(x[None, 3:], scale_factor=self.scale, mode="bicubic")[0]
            if box is not None:
                alpha = alpha[:, box[0]:box[2], box[1]:box[3]]
            out = torch.cat([out, alpha.clamp(-1, 1)], 0)
        result = norm.inverse(out.numpy(), dtype, channel_axis=0)
        result = result[0] if channel_axis is None else np.moveaxis(result, 0, channel_axis)
        tile, overlap = self.tiling(tile=tile, overlap=overlap)
        return Result(result, self.record(seed=seed, tile=tile, overlap=overlap) | {"normalization": norm.to_dict()})

    def record(self, *, seed: int, tile: int, overlap: int) -> dict:
        """How a result is made, as every front-end stores it (layer metadata, the output's attributes)."""
        return {
            "model": self.card.get("name", "custom"),
            "scale": self.scale,
            "steps": self.model.schedule.steps,
            "seed": seed,
            "tile": tile,
            "overlap": overlap,
            "batch": self.batch(tile),
            "device": str(self.device),
            "precision": self.precision,
        }
