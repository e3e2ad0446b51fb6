"""Image quality metrics for validation: PSNR and SSIM on [0, 1] images.

RGB images are compared on their luma (Y of ITU-R BT.601, studio range, as SR papers report); other images per channel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> Y [B, 1, H, W] in [16/255, 235/255]."""
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=rgb.dtype, device=rgb.device) / 255
    return (rgb * weights.reshape(1, 3, 1, 1)).sum(1, keepdim=True) + 16 / 255


def _prepare(pred: torch.Tensor, target: torch.Tensor, *, rgb: bool, border: int):
    if pred.shape != target.shape:
        raise ValueError(f"metric inputs differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred, target = pred.double(), target.double()
    if rgb:
        pred, target = luma(pred), luma(target)
    if border:
        pred, target = pred[..., border:-border, border:-border], target[..., border:-border, border:-border]
    return pred, target


def psnr(pred: torch.Tensor, target: torch.Tensor, *, rgb: bool, border: int = 0) -> torch.Tensor:
    """Per image [B]: PSNR in dB (peak 1), averaged over channels when not RGB."""
    pred, target = _prepare(pred, target, rgb=rgb, border=border)
    mse = ((pred - target) ** 2).mean(dim=(-2, -1)).clamp(min=1e-12)
    return (10 * torch.log10(1 / mse)).mean(1)


def _window(dtype, device, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, *, rgb: bool, border: int = 0) -> torch.Tensor:
    """Per image [B]: SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid region), channel mean."""
    pred, target = _prepare(pred, target, rgb=rgb, border=border)
    b, c, h, w = pred.shape
    g = _window(pred.dtype, pred.device)
    if min(h, w) < g.numel():
        raise ValueError(f"SSIM needs images of at least {g.numel()} pixels, got {h}x{w}")

    def filt(x):
        x = x.reshape(b * c, 1, *x.shape[-2:])
        x = F.conv2d(x, g.reshape(1, 1, 1, -1))
        return F.conv2d(x, g.reshape(1, 1, -1, 1))

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = filt(pred), filt(target)
    var_x = filt(pred * pred) - mu_x**2
    var_y = filt(target * target) - mu_y**2
    cov = filt(pred * target) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.reshape(b, c, -1).mean(-1).mean(1)
