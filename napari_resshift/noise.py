"""Position-keyed Gaussian noise: a counter-based generator computed with tensor ops on any device.

Each value is a pure function of (seed, plane, draw, channel, y, x) in absolute latent pixels, so a tile, a chunk
or a whole image gets the same noise wherever it is cut, on whichever device. The integer part is exact (int64
arithmetic that never overflows: every product is of a value below 2**32 and a constant below 2**31), so CPU and GPU
agree bit for bit on it; only Box-Muller's log, sqrt, cos and sin round differently, by an ulp or so.
"""
from __future__ import annotations

import math

import torch

GENERATOR = "position-hash-1"  # recorded with a run: a resume refuses to mix noise from another generator
MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
# Odd multipliers below 2**31 of a two-multiply 32-bit xorshift-multiply hash (a hash-prospector result).
MUL1, MUL2 = 0x2C1B3C6D, 0x297A2D39
GOLDEN = 0x1E3779B9  # odd, below 2**31: spreads consecutive counters before they are hashed
SECOND = 0x5BD1E995  # separates the angle's hash from the radius's
CHUNK = 1 << 16  # values per CPU pass: keeps the ~30 elementwise passes in the cache


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit hash of int64 tensors holding values in [0, 2**32), in place where it can be."""
    x = x ^ (x >> 15)
    x.mul_(MUL1).bitwise_and_(MASK32)
    x ^= x >> 12
    x.mul_(MUL2).bitwise_and_(MASK32)
    x ^= x >> 15
    return x


def _splitmix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def stream_key(seed: int, plane: int, draw: int) -> int:
    """64-bit key of one (seed, plane, draw) stream, from Python integers of any size and sign."""
    key = _splitmix(0x9E3779B97F4A7C15)
    for part in (seed, plane, draw):
        key = _splitmix(key ^ ((part & MASK64) * 0x9E3779B97F4A7C15 & MASK64))
    return key


def _counters(key: int, pairs: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """[B, h, w, pairs] 32-bit counters: a hash of (key, channel pair, y) plus a hash of (key, x), both computed on
    the small row and column tensors; the full-size sum is hashed again by the caller."""
    device = ys.device
    k0, k1 = key & MASK32, key >> 32
    p = torch.arange(pairs, dtype=torch.int64, device=device)
    pair_hash = _mix((p * GOLDEN + k0) & MASK32)  # [P]
    row = _mix(pair_hash ^ _mix((ys * GOLDEN + k1) & MASK32)[..., None])  # [B, h, P]
    col = _mix((xs * GOLDEN) & MASK32 ^ k1)  # [B, w]
    return (row[:, :, None, :] + col[:, None, :, None]) & MASK32


def _box_muller(counters: torch.Tensor, out: torch.Tensor) -> None:
    """Two standard normals per counter [..., P] into ``out`` [..., P, 2]: r cos(theta) and r sin(theta), from 24-bit
    uniforms."""
    radius_bits = _mix(counters)
    angle_bits = _mix(counters ^ SECOND)
    u = ((radius_bits >> 8) + 1).to(torch.float32).mul_(2.0**-24)  # (0, 1]: no log(0)
    r = u.log_().mul_(-2.0).sqrt_()
    theta = (angle_bits >> 8).to(torch.float32).mul_(2 * math.pi * 2.0**-24)
    torch.stack([torch.cos(theta).mul_(r), theta.sin_().mul_(r)], -1, out=out)


def positional_noise(
    *,
    seed: int,
    plane: int,
    draw: int,
    channels: int,
    origins: list[tuple[int, int]] | tuple[tuple[int, int], ...],
    h: int,
    w: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal noise [B, channels, h, w] for windows at latent ``origins`` (y0, x0), channels-last.

    Channel 2p takes the cosine and 2p + 1 the sine of counter (pair p, y, x), so a channel's noise does not depend
    on how many channels there are.
    """
    device = torch.device(device)
    pairs = -(-channels // 2)
    y0 = torch.tensor([o[0] for o in origins], dtype=torch.int64, device=device)
    x0 = torch.tensor([o[1] for o in origins], dtype=torch.int64, device=device)
    ys = y0[:, None] + torch.arange(h, dtype=torch.int64, device=device)
    xs = x0[:, None] + torch.arange(w, dtype=torch.int64, device=device)
    key = stream_key(seed, plane, draw)
    out = torch.empty(len(origins), h, w, pairs, 2, device=device)
    # A GPU takes the whole batch in one pass; the CPU works through cache-sized bands of rows.
    if device.type != "cpu" or len(origins) * h * w * pairs <= CHUNK:
        _box_muller(_counters(key, pairs, ys, xs), out)
    else:
        rows = max(1, CHUNK // max(1, w * pairs))
        for b in range(len(origins)):
            for r in range(0, h, rows):
                band = slice(r, r + rows)
                _box_muller(_counters(key, pairs, ys[b:b + 1, band], xs[b:b + 1]), out[b:b + 1, band])
    noise = out.view(len(origins), h, w, 2 * pairs)[..., :channels].permute(0, 3, 1, 2)
    return noise.contiguous(memory_format=torch.channels_last)
