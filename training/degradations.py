"""HR -> LR degradations for training: bicubic, Real-ESRGAN second order, microscopy, satellite, blind mixtures.

Each takes one HR image [C, H, W] in [0, 1] and a seeded ``torch.Generator`` and returns LR [C, H/s, W/s].
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Degradation = Callable[..., torch.Tensor]


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def log_uniform(gen: torch.Generator, low: float, high: float) -> float:
    return math.exp(uniform(gen, math.log(low), math.log(high)))


def chance(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """A normalised (possibly anisotropic, rotated) Gaussian kernel [size, size]."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of [C, H, W] with one kernel, reflecting at the borders."""
    pad = kernel.shape[-1] // 2
    if pad >= min(x.shape[-2:]):
        return x
    c = x.shape[0]
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(F.pad(x[None], (pad,) * 4, mode="reflect"), weight, groups=c)[0]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    return blur(x, gaussian_kernel(size, sigma))


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize [C, H, W]; bilinear/bicubic are antialiased when shrinking, as camera optics and libraries do."""
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(x[None], size=size, mode="area")[0]
    return F.interpolate(x[None], size=size, mode=mode, antialias=True, align_corners=False)[0]


def random_mode(gen: torch.Generator) -> str:
    return ("area", "bilinear", "bicubic")[int(torch.randint(3, (), generator=gen))]


# JPEG (ITU T.81 Annex K) base quantisation tables; the quality scaling below is the usual IJG rule.
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22,
         29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103,
         121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38


def _dct_matrix() -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float()


def _quant_table(base: list[int], quality: float) -> torch.Tensor:
    q = max(1.0, min(100.0, quality))
    factor = 5000 / q if q < 50 else 200 - 2 * q
    return torch.clamp(torch.floor((torch.tensor(base, dtype=torch.float32) * factor + 50) / 100), 1, 255).reshape(8, 8)


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    """Baseline JPEG round trip in torch: YCbCr with 4:2:0 chroma, 8x8 DCT, quantisation; gray for 1 channel."""
    c, h, w = x.shape
    ph, pw = -h % 16, -w % 16
    img = F.pad(x[None], (0, pw, 0, ph), mode="replicate")[0] * 255
    if c == 3:
        r, g, b = img
        y = 0.299 * r + 0.587 * g + 0.114 * b
        planes = [y, (b - y) * 0.564 + 128, (r - y) * 0.713 + 128]
    else:
        planes = list(img)
    d = _dct_matrix()
    out = []
    for i, plane in enumerate(planes):
        chroma = c == 3 and i > 0
        if chroma:
            plane = F.avg_pool2d(plane[None, None], 2)[0, 0]
        q = _quant_table(_CHROMA if chroma else _LUMA, quality)
        H, W = plane.shape
        blocks = (plane - 128).reshape(H // 8, 8, W // 8, 8).permute(0, 2, 1, 3)
        coeff = torch.round(d @ blocks @ d.T / q) * q
        plane = (d.T @ coeff @ d).permute(0, 2, 1, 3).reshape(H, W) + 128
        if chroma:
            plane = F.interpolate(plane[None, None], scale_factor=2, mode="bilinear", align_corners=False)[0, 0]
        out.append(plane)
    if c == 3:
        y, cb, cr = out
        out = [y + 1.403 * (cr - 128), y - 0.344 * (cb - 128) - 0.714 * (cr - 128), y + 1.773 * (cb - 128)]
    return (torch.stack(out)[:, :h, :w] / 255).clamp(0, 1)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """d^T Sigma^-1 d on a size x size grid centred on the kernel, for a rotated covariance."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """Circular low-pass (2-D sinc, the ideal filter's ringing): cutoff in radians per pixel, normalised."""
    from scipy.special import j1

    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    d = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * j1(cutoff * d) / (2 * math.pi * d)
    k[d == 0] = cutoff**2 / (4 * math.pi)
    k = torch.from_numpy(k)
    return (k / k.sum()).float()


# Real-ESRGAN's blur family and the probability of each: Gaussian, generalised Gaussian (exponent beta 0.5-4) and
# plateau (1 / (1 + q^beta), beta 1-2), each isotropic or anisotropic.
KERNEL_KINDS = (("gaussian", False, 0.45), ("gaussian", True, 0.25), ("generalized", False, 0.12),
                ("generalized", True, 0.03), ("plateau", False, 0.12), ("plateau", True, 0.03))


# The ResShift authors' test-time blur: one 13-px Gaussian, isotropic 60% / anisotropic 40%.
MILD_KERNEL_KINDS = (("gaussian", False, 0.6), ("gaussian", True, 0.4))


def random_kernel(gen: torch.Generator, *, sigma: tuple[float, float], sinc_p: float, size: int | None = None,
                  kinds: tuple = KERNEL_KINDS) -> torch.Tensor:
    """One kernel of the Real-ESRGAN family, odd size 7-21 (or ``size``); a sinc instead with probability
    ``sinc_p``."""
    size = size or 2 * int(torch.randint(3, 11, (), generator=gen)) + 1
    if chance(gen, sinc_p):
        return sinc_kernel(size, uniform(gen, math.pi / 3 if size < 13 else math.pi / 5, math.pi))
    pick, total = float(torch.rand((), generator=gen)), 0.0
    for kind, anisotropic, p in kinds:
        total += p
        if pick < total:
            break
    sx = uniform(gen, *sigma)
    sy, theta = (uniform(gen, *sigma), uniform(gen, -math.pi, math.pi)) if anisotropic else (sx, 0.0)
    q = _quadratic_form(size, sx, sy, theta)
    if kind == "gaussian":
        k = torch.exp(-0.5 * q)
    elif kind == "generalized":
        k = torch.exp(-0.5 * q ** uniform(gen, 0.5, 4.0))
    else:
        k = 1 / (1 + q ** uniform(gen, 1.0, 2.0))
    return (k / k.sum()).float()


def real_noise(x: torch.Tensor, gen: torch.Generator, *, sigma: tuple[float, float], poisson: tuple[float, float]):
    """Real-ESRGAN's noise: Gaussian (sigma in 8-bit levels) or Poisson (8-bit photon counts times a scale), half
    and half, the same for every channel (gray) with probability 0.4."""
    gray = chance(gen, 0.4)
    shape = (1, *x.shape[1:]) if gray else x.shape
    if chance(gen, 0.5):
        return x + uniform(gen, *sigma) / 255 * torch.randn(shape, generator=gen)
    base = x.mean(0, keepdim=True) if gray else x
    counts = torch.round(base.clamp(0, 1) * 255)
    return x + uniform(gen, *poisson) * (torch.poisson(counts, generator=gen) - counts) / 255


def random_resize(x: torch.Tensor, gen: torch.Generator, *, probs: tuple[float, float], low: float, high: float):
    """Up (to ``high``) with probs[0], down (to ``low``) with probs[1], else keep; a random interpolation."""
    h, w = x.shape[-2:]
    pick = float(torch.rand((), generator=gen))
    step = uniform(gen, 1.0, high) if pick < probs[0] else uniform(gen, low, 1.0) if pick < sum(probs) else 1.0
    return resize(x, (round(h * step), round(w * step)), random_mode(gen))


def bicubic(hr: torch.Tensor, scale: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Clean antialiased bicubic downscaling."""
    h, w = hr.shape[-2:]
    return resize(hr, (h // scale, w // scale), "bicubic").clamp(0, 1)


def realesrgan(hr: torch.Tensor, scale: int, gen: torch.Generator) -> torch.Tensor:
    """Real-ESRGAN's second-order model with the ResShift paper's ranges: blur (or sinc), resize, noise, JPEG;
    the same again with probability 0.5 (milder); then the final resize and a sinc (p 0.8), before or after JPEG."""
    h, w = hr.shape[-2:]
    x = blur(hr, random_kernel(gen, sigma=(0.2, 3.0), sinc_p=0.1))
    x = random_resize(x, gen, probs=(0.2, 0.7), low=0.15, high=1.5)
    x = real_noise(x, gen, sigma=(1, 30), poisson=(0.05, 3.0)).clamp(0, 1)
    x = jpeg(x, uniform(gen, 30, 95))
    if chance(gen, 0.5):
        if chance(gen, 0.8):
            x = blur(x, random_kernel(gen, sigma=(0.2, 1.5), sinc_p=0.1))
        x = random_resize(x, gen, probs=(0.3, 0.4), low=0.3, high=1.2)
        x = real_noise(x, gen, sigma=(1, 25), poisson=(0.05, 2.5)).clamp(0, 1)
    target = (h // scale, w // scale)
    sinc = sinc_kernel(21, uniform(gen, math.pi / 3, math.pi)) if chance(gen, 0.8) else None

    def final(y: torch.Tensor) -> torch.Tensor:
        y = resize(y, target, random_mode(gen))
        return blur(y, sinc) if sinc is not None else y

    if chance(gen, 0.5):
        x = jpeg(final(x).clamp(0, 1), uniform(gen, 30, 95))
    else:
        x = final(jpeg(x, uniform(gen, 30, 95)))
    return x.clamp(0, 1)


def mild_natural(hr: torch.Tensor, scale: int, gen: torch.Generator) -> torch.Tensor:
    """The ResShift authors' published test degradation, far milder than training's: one order of blur (13 px,
    sigma 0.2-0.8, sinc 10%), resize, noise (Gaussian 1-15 levels or Poisson 0.05-0.3) and JPEG 70-95; then the
    final resize, with a sinc 20% of the time."""
    h, w = hr.shape[-2:]
    x = blur(hr, random_kernel(gen, sigma=(0.2, 0.8), sinc_p=0.1, size=13, kinds=MILD_KERNEL_KINDS))
    x = random_resize(x, gen, probs=(0.2, 0.7), low=0.5, high=1.5)
    x = real_noise(x, gen, sigma=(1, 15), poisson=(0.05, 0.3)).clamp(0, 1)
    x = jpeg(x, uniform(gen, 70, 95))
    x = resize(x, (h // scale, w // scale), random_mode(gen))
    if chance(gen, 0.2):
        x = blur(x, sinc_kernel(21, uniform(gen, math.pi / 3, math.pi)))
    return x.clamp(0, 1)


def microscopy(hr: torch.Tensor, scale: int, gen: torch.Generator, *, psf: tuple[float, float] = (0.2, 0.7),
               photons: tuple[float, float] = (5, 10_000), read_noise: float = 0.03) -> torch.Tensor:
    """Gaussian PSF of random width, camera binning (scale x scale pixel sums), Poisson shot noise from 5 to 10,000
    photons at the top of the range (a dim confocal to a bright widefield image) and Gaussian read noise."""
    x = gaussian_blur(hr, uniform(gen, *psf) * scale)
    x = F.avg_pool2d(x[None], scale)[0]
    peak = log_uniform(gen, *photons)  # photons at the top of the normalised range, per LR pixel
    x = torch.poisson(x.clamp(min=0) * peak, generator=gen) / peak
    read = uniform(gen, 0.0, read_noise)
    return x + read * torch.randn(x.shape, generator=gen)


def mild_microscopy(hr: torch.Tensor, scale: int, gen: torch.Generator) -> torch.Tensor:
    """The microscopy model at its mild end: a narrow PSF, binning, 300 to 10,000 photons, little read noise."""
    return microscopy(hr, scale, gen, psf=(0.1, 0.35), photons=(300, 10_000), read_noise=0.01)


def satellite(hr: torch.Tensor, scale: int, gen: torch.Generator, *, mtf: tuple[float, float] = (0.1, 0.4),
              noise: tuple[float, float] = (0.001, 0.02), quality: tuple[float, float] = (75, 95)) -> torch.Tensor:
    """Optics/detector MTF as a Gaussian set by its value at the LR Nyquist frequency, pixel averaging, sensor
    noise, and mild JPEG compression half of the time (as delivered products often are)."""
    mtf_at_nyquist = uniform(gen, *mtf)
    nyquist = 1 / (2 * scale)  # cycles per HR pixel
    sigma = math.sqrt(-math.log(mtf_at_nyquist) / (2 * math.pi**2 * nyquist**2))
    x = F.avg_pool2d(gaussian_blur(hr, sigma)[None], scale)[0]
    x = x + uniform(gen, *noise) * torch.randn(x.shape, generator=gen)
    return jpeg(x.clamp(0, 1), uniform(gen, *quality)) if chance(gen, 0.5) else x


def mild_satellite(hr: torch.Tensor, scale: int, gen: torch.Generator) -> torch.Tensor:
    """The satellite model at its mild end: a sharp MTF (0.3-0.6 at Nyquist), low noise, JPEG 85-95 half the time."""
    return satellite(hr, scale, gen, mtf=(0.3, 0.6), noise=(0.0005, 0.006), quality=(85, 95))


DEGRADATIONS: dict[str, Degradation] = {
    "bicubic": bicubic,
    "realesrgan": realesrgan,
    "microscopy": microscopy,
    "satellite": satellite,
    "mild-natural": mild_natural,
    "mild-microscopy": mild_microscopy,
    "mild-satellite": mild_satellite,
}

# The blind real-world mixture of the default model: each domain's own degradation, or clean bicubic LR for a share
# of the crops so that clean inputs are not over-smoothed.
DOMAIN_DEGRADATIONS = {"natural": "realesrgan", "microscopy": "microscopy", "satellite": "satellite"}
CLEAN_SHARE = 0.3


def blind(domain: str) -> Degradation:
    own = DEGRADATIONS[DOMAIN_DEGRADATIONS[domain]]

    def degrade(hr: torch.Tensor, scale: int, gen: torch.Generator) -> torch.Tensor:
        return bicubic(hr, scale) if chance(gen, CLEAN_SHARE) else own(hr, scale, gen)

    degrade.__doc__ = f"The blind mixture for {domain}: {DOMAIN_DEGRADATIONS[domain]}, or bicubic ({CLEAN_SHARE:.0%})."
    return degrade


DEGRADATIONS |= {f"blind-{domain}": blind(domain) for domain in DOMAIN_DEGRADATIONS}
