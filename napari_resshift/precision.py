"""Choosing the compute precision: half-precision autocast only where it measurably keeps the output.

``auto`` on CUDA is the first of bf16 and fp16 whose output on a calibration tile stays within ``MIN_PSNR_DB`` of
fp32's, fp32 otherwise; the measurement takes one tile through the model once per precision when it is loaded. On a
CPU that computes bf16 natively (AVX512-BF16 or AMX) every model gets bf16 on the same condition: a 2-core AMX Xeon
ran ``default`` 2.8x faster at 58.5 dB from fp32, the official v3 took a 64-px tile in 4.8 s against 8.0 s on 2
AVX512-BF16 cores. Without native bf16 a CPU emulates it ~10x slower than fp32, so there ``auto`` is fp32 unmeasured.
``native_bf16`` is the package's one test of that capability (inference and training).
"""
from __future__ import annotations

import math

import torch

from .noise import positional_noise

MIN_PSNR_DB = 40.0  # on [-1, 1] outputs: a mean error under 1% of the range, invisible in 8 bits
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def calibration_tile(size: int) -> torch.Tensor:
    """[1, 3, size, size] in [-1, 1]: smooth gradients, edges and fine texture, the same on every device."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    texture = positional_noise(seed=0, plane=0, draw=0, channels=3, origins=[(0, 0)], h=size, w=size)[0]
    image = torch.stack([torch.sin(7 * x + 3 * y), (x > 0.5).float() * 2 - 1, torch.cos(11 * x * y)])
    return (0.8 * image + 0.2 * texture).clamp(-1, 1)[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] images (peak-to-peak 2)."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


@torch.inference_mode()
def half_psnr(model, device: torch.device, *, size: int, precisions=tuple(HALF)) -> dict[str, float]:
    """PSNR of each half precision's output against fp32's, for one calibration tile of ``size`` LR pixels."""
    lr = calibration_tile(size).to(device)
    f = model.latent_factor
    side = math.ceil(size / model.pad_multiple) * model.pad_multiple * f

    def noise(k):
        return positional_noise(seed=0, plane=0, draw=k, channels=model.latent_channels, origins=[(0, 0)], h=side,
                                w=side, device=device)

    reference = model.super_resolve(lr, noise=noise)
    scores = {}
    for name in precisions:
        with torch.autocast(device.type, dtype=HALF[name]):
            scores[name] = psnr(model.super_resolve(lr, noise=noise), reference)
    return scores


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick(model, device: torch.device, *, size: int) -> str:
    """The precision ``auto`` means for this model on this device."""
    if device.type == "cuda":
        candidates = tuple(HALF)
    elif device.type == "cpu" and native_bf16():
        candidates = ("bf16",)
    else:
        return "fp32"
    for name, score in half_psnr(model, device, size=size, precisions=candidates).items():
        if score >= MIN_PSNR_DB:
            return name
    return "fp32"
