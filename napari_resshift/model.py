"""A ResShift model: denoiser + optional VQ autoencoder + schedule, and the single-image procedure around them.

The configuration is kept in the official layout (``model`` / ``autoencoder`` / ``diffusion``) so it round-trips.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import diffusion
from .errors import ResShiftError
from .nets.autoencoder import VQModelTorch
from .nets.convnet import ConvDenoiser
from .nets.unet import UNetModelSwin

# Denoisers by the last part of the configuration's ``model.target`` (the official layout names a class path there).
DENOISERS = {"UNetModelSwin": UNetModelSwin, "ConvDenoiser": ConvDenoiser}


def bicubic_up(image: torch.Tensor, scale: int) -> torch.Tensor:
    """PyTorch bicubic x``scale`` (a = -0.75, align_corners False, no antialias, no clamp), as the reference."""
    return F.interpolate(image, scale_factor=scale, mode="bicubic")


def bicubic_up_packed(image: torch.Tensor, scale: int) -> torch.Tensor:
    """``pixel_unshuffle(bicubic_up(image, scale), scale)`` computed at the input size, in float32: each of the
    scale x scale output phases is a fixed separable filter of the edge-padded input (bicubic clamps its reads)."""
    kernels = _bicubic_phase_kernels(scale).to(image.device)
    with torch.autocast(image.device.type, enabled=False):
        padded = F.pad(image.float(), (2, 2, 2, 2), mode="replicate")
        return F.conv2d(padded, kernels.repeat(image.shape[1], 1, 1, 1), groups=image.shape[1])


@functools.cache
def _bicubic_phase_kernels(scale: int) -> torch.Tensor:
    """[scale², 1, 5, 5]: output pixel (scale p + r) samples the input at p + (r + 1/2) / scale - 1/2 with the
    cubic-convolution weights of taps floor - 1 .. floor + 2, all within p - 2 .. p + 2."""
    a = -0.75

    def cubic(d: float) -> float:
        d = abs(d)
        if d <= 1:
            return ((a + 2) * d - (a + 3)) * d * d + 1
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a if d < 2 else 0.0

    taps = np.zeros((scale, 5))
    for r in range(scale):
        src = (r + 0.5) / scale - 0.5
        first = math.floor(src) - 1
        for j in range(4):
            taps[r, first + j + 2] = cubic(src - first - j)
    return torch.from_numpy(np.einsum("ay,bx->abyx", taps, taps).reshape(scale * scale, 1, 5, 5)).float()


class ResShiftModel(nn.Module):
    """Denoiser, autoencoder (None in pixel mode) and schedule built from one official-layout config dict."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        unet_params = dict(self.config["model"]["params"])
        target = str(self.config["model"].get("target", "UNetModelSwin")).rsplit(".", 1)[-1]
        if target not in DENOISERS:
            raise ValueError(f"unknown denoiser {target!r}; known: {', '.join(DENOISERS)}")
        self.unet = DENOISERS[target](**unet_params)  # the official name of the denoiser slot
        ae = self.config.get("autoencoder")
        self.autoencoder = VQModelTorch(**_ae_kwargs(ae["params"])) if ae else None
        params = self.config["diffusion"]["params"]
        self.schedule = diffusion.Schedule.from_config(params)
        self.scale = int(params["sf"])
        self.scale_factor = float(params.get("scale_factor", 1.0))
        # Pixel mode may pack f x f pixel blocks into channels (space-to-depth): the same pixel-space diffusion,
        # with the denoiser running at 1/f of the HR size.
        self.pack = 1 if ae else int(self.config["model"].get("space_to_depth", 1))
        # A residual denoiser outputs x_0 - y_0 and y_0 is added back: still an x_0 prediction, learnt much faster.
        self.residual = bool(self.config["model"].get("residual", False))
        # The LR image must pad to what the denoiser's lq_size is in LR pixels.
        lq_size = int(unet_params.get("lq_size", unet_params.get("image_size", 1)))  # a conv net has none
        self.pad_multiple = max(1, lq_size // self.latent_factor)
        if self.autoencoder is not None:
            self.autoencoder.requires_grad_(False)

    def set_kappa(self, kappa: float) -> None:
        """Change the noise scale (configuration and schedule), e.g. before fine-tuning for more fidelity."""
        if not kappa > 0:
            raise ResShiftError(f"kappa must be positive, got {kappa}")
        params = self.config["diffusion"]["params"]
        params["kappa"] = float(kappa)
        self.schedule = diffusion.Schedule.from_config(params)

    def set_steps(self, steps: int) -> None:
        """Sample in ``steps`` steps instead of the trained count (the configuration keeps what it was trained with).

        A denoiser with one embedding per step (a ConvDenoiser) knows only its own count."""
        trained = self.config["model"]["params"].get("steps")
        if trained is not None and steps != trained:
            raise ResShiftError(f"this model was trained for exactly {trained} steps and cannot sample in {steps}; "
                                f"leave the steps to the model ({trained}), or use an official model for other "
                                "step counts")
        if steps < 2:
            raise ResShiftError(f"ResShift needs at least 2 steps, got {steps}; choose 2 or more (auto: the model's "
                                "own)")
        self.schedule = diffusion.Schedule.from_config(self.config["diffusion"]["params"] | {"steps": int(steps)})

    @property
    def latent_factor(self) -> int:
        """LR pixels -> latent pixels: scale / downsampling (1 for the official f4 models and packed pixel mode)."""
        if self.autoencoder is None:
            return self.scale // self.pack
        down = 2 ** (len(self.config["autoencoder"]["params"]["ddconfig"]["ch_mult"]) - 1)
        return self.scale // down

    @property
    def latent_channels(self) -> int:
        return int(self.config["model"]["params"]["out_channels"])

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """HR-sized image in [-1, 1] -> latent (no quantisation), times the latent scale factor."""
        if self.autoencoder is None:
            return F.pixel_unshuffle(image, self.pack)
        return self.autoencoder.encode(image) * self.scale_factor

    @property
    def quantize_on_decode(self) -> bool:
        """Official models snap latents to the codebook before decoding; continuous-latent models do not."""
        return bool(self.config.get("autoencoder", {}).get("quantize", True))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent -> image, snapping to the codebook first unless the configuration says the latent is continuous."""
        if self.autoencoder is None:
            return F.pixel_shuffle(latent, self.pack)
        return self.autoencoder.decode(latent / self.scale_factor, quantize=self.quantize_on_decode)

    def condition(self, lq: torch.Tensor) -> torch.Tensor:
        """y_0 in latent space: encode(bicubic_up(lq))."""
        if self.autoencoder is None and self.pack == self.scale:
            return bicubic_up_packed(lq, self.scale)
        return self.encode(bicubic_up(lq, self.scale))

    def denoiser(self, lq: torch.Tensor, z_y: torch.Tensor | None = None) -> diffusion.Denoiser:
        """The x_0-predicting network with the LQ conditioning bound (upsampled to the latent size if needed)."""
        cond = self.unet.condition(lq if self.latent_factor == 1 else bicubic_up(lq, self.latent_factor))
        if not self.residual:
            return lambda x, t: self.unet(x, t, cond)
        z_y = self.condition(lq) if z_y is None else z_y
        return lambda x, t: z_y + self.unet(x, t, cond)

    def pad(self, lq: torch.Tensor) -> torch.Tensor:
        """Reflect-pad bottom/right to the model's multiple (the reference inference offset)."""
        h, w = lq.shape[-2:]
        m = self.pad_multiple
        ph, pw = -h % m, -w % m
        if ph == 0 and pw == 0:
            return lq
        mode = "reflect" if ph < h and pw < w else "replicate"  # reflect needs the pad to be smaller than the image
        return F.pad(lq, (0, pw, 0, ph), mode=mode)

    def latent_shape(self, lq_padded: torch.Tensor) -> tuple[int, ...]:
        b, _, h, w = lq_padded.shape
        return (b, self.latent_channels, h * self.latent_factor, w * self.latent_factor)

    def super_resolve(
        self,
        lq: torch.Tensor,
        *,
        noise: diffusion.NoiseSource | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> torch.Tensor:
        """LQ batch in [-1, 1] -> HR batch in [-1, 1]: pad, condition, sample, decode, crop, clamp."""
        h, w = lq.shape[-2:]
        padded = self.pad(lq)
        if noise is None:
            noise = diffusion.generator_noise(self.latent_shape(padded), generator=generator, device=lq.device)
        z_y = self.condition(padded)
        z_0 = diffusion.sample(self.denoiser(padded, z_y), z_y, self.schedule, noise=noise, callback=callback)
        out = self.decode(z_0)
        return out[..., : h * self.scale, : w * self.scale].clamp(-1, 1)

    def loss(self, hr: torch.Tensor, lq: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, *,
             rollout: torch.Tensor | None = None, prior_noise: torch.Tensor | None = None, l1: bool = False):
        """The training objective for an (HR, LQ) batch; returns (loss, per-sample error, prediction, x_t, x_0).

        The error is squared, or absolute with ``l1``.

        Samples marked in ``rollout`` build x_t from the model's own (no-grad) x_0 prediction at the last step,
        made from x_T = y_0 + kappa sqrt(eta_T) ``prior_noise``, instead of from the truth: the later steps then
        learn to correct the first step's estimate, which is what they receive when sampling.
        """
        with torch.no_grad():
            z_start = self.encode(hr)
            z_y = self.condition(lq)
        denoise = self.denoiser(lq, z_y)
        source = None
        if rollout is not None and bool(rollout.any()):
            last = torch.full_like(t, self.schedule.steps - 1)
            x_last = diffusion.prior_sample(self.schedule, z_y, prior_noise)
            with torch.no_grad():
                guess = denoise(diffusion.scale_input(self.schedule, x_last, last), last)
            source = torch.where(rollout.view(-1, *[1] * (z_start.dim() - 1)), guess, z_start)
        weighted = bool(self.config["diffusion"]["params"].get("weighted_mse", False))
        loss, error, pred, z_t = diffusion.training_loss(
            self.schedule, denoise, z_start, z_y, t, noise, weighted=weighted, source=source, l1=l1
        )
        return loss, error, pred, z_t, z_start

    def chain_loss(self, hr: torch.Tensor, lq: torch.Tensor, draws: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean absolute error of the sampled x_0, the whole reverse chain run with gradients through every step.

        ``draws`` are the sampler's noise, in its order (``diffusion.recorded_noise``): what is scored is what
        sampling at this kappa returns, so every step learns to correct what the steps before it leave.
        """
        with torch.no_grad():
            z_start = self.encode(hr)
            z_y = self.condition(lq)
        z_0 = diffusion.sample(self.denoiser(lq, z_y), z_y, self.schedule, noise=diffusion.recorded_noise(draws))
        return (z_start - z_0).abs().mean()


def _ae_kwargs(params: dict) -> dict:
    return {"embed_dim": params["embed_dim"], "n_embed": params["n_embed"], "ddconfig": params["ddconfig"]}
