"""Training images: finding files and zarr arrays, reading them as 2-D planes, checking them, sampling crops.

An image is viewed as planes x channels x H x W; a channel trains alone (replicated to RGB, the engine's convention)
unless it belongs to an RGB triplet. Intensities are normalised per image and channel as inference does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_resshift import normalization, reading
from napari_resshift.errors import ResShiftError, first_line

from .degradations import DEGRADATIONS

TEXTURE_TRIES = 4  # crops drawn before settling for the most textured one (microscopy is mostly background)
MIN_TEXTURE = 0.02  # std in [-1, 1] units below which a crop counts as background


@dataclass
class Source:
    """One image: its array (numpy or zarr, read lazily), one axis letter per dimension, channel groups, norm.

    Axes: Y and X, optionally C; every other letter is a plane axis (Z, T, ...), flattened into one plane index.
    """

    path: str
    array: Any
    axes: str
    groups: list[tuple[int, int]]
    norm: normalization.Normalization | None = None

    def size(self, axis: str) -> int:
        return int(self.array.shape[self.axes.index(axis)]) if axis in self.axes else 1

    @property
    def height(self) -> int:
        return self.size("Y")

    @property
    def width(self) -> int:
        return self.size("X")

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n, a in zip(self.array.shape, self.axes) if a not in "CYX")

    @property
    def planes(self) -> int:
        return math.prod(self.plane_shape)

    def read(self, plane: int, group: tuple[int, int], y: int, x: int, h: int, w: int) -> np.ndarray:
        """Stored values [channels of group, h, w]."""
        plane_index = iter(np.unravel_index(plane, self.plane_shape) if self.plane_shape else ())
        spans = {"Y": slice(y, y + h), "X": slice(x, x + w), "C": slice(*group)}
        block = np.asarray(self.array[tuple(spans[a] if a in spans else int(next(plane_index)) for a in self.axes)])
        kept = [a for a in self.axes if a in "CYX"]
        if "C" not in kept:
            block, kept = block[None], ["C", *kept]
        return np.transpose(block, [kept.index(a) for a in "CYX"])

    def normalised(self, plane: int, group: tuple[int, int], y: int, x: int, h: int, w: int) -> np.ndarray:
        """float32 [c, h, w] in [-1, 1]: the image's normalisation, clipped like the model's output."""
        norm = normalization.Normalization(self.norm.mode, self.norm.low[slice(*group)], self.norm.high[slice(*group)])
        return np.clip(norm.forward(self.read(plane, group, y, x, h, w), channel_axis=0), -1, 1)


@dataclass
class Pair:
    """An HR source and, for real paired data, its LR source (None: LR is made by a degradation: the pair's own
    if it names one, else the run's)."""

    hr: Source
    lr: Source | None = None
    degradation: str | None = None


@dataclass
class ValItem:
    hr: torch.Tensor  # [1, 3, H, W] in [-1, 1]
    lq: torch.Tensor  # [1, 3, H/s, W/s]
    rgb: bool
    name: str


def find_images(path: Path) -> list[Path]:
    """Image files and zarr stores at ``path`` (a file, a store, or a folder searched recursively)."""
    if not path.exists():
        raise ResShiftError(f"{path}: no such file or folder; check the --data path")
    if reading.is_zarr(path) or path.is_file():
        return [path]
    found, stack = [], [path]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            if reading.is_zarr(entry):
                found.append(entry)
            elif entry.is_dir():
                stack.append(entry)
            elif entry.suffix.lower() in reading.IMAGE_SUFFIXES:
                found.append(entry)
    if not found:
        raise ResShiftError(f"{path}: no images found (looked for {', '.join(reading.IMAGE_SUFFIXES)} files and zarr "
                            "stores); check --data")
    return sorted(found)


def open_source(path: Path) -> Source:
    """Open a zarr store, or read an image file whole (crops are drawn from it again and again); anything unreadable
    becomes one clear error line. A colour image (the pipeline's rule; of a zarr, 8-bit only) trains as RGB, every
    other channel alone."""
    try:
        image = reading.open_image(path, whole=True)
        axes = (image.axes or "?" * (image.array.ndim - 2) + "yx").upper().replace("?", "Q")  # other letters: planes
        rgb = image.rgb and normalization.is_rgba(image.array, axes.index("C"))
        rgb = rgb and (image.array.dtype == np.uint8 or not path.is_dir())  # a zarr's colour is guessed: 8-bit only
    except Exception as exc:  # noqa: BLE001 - every reader failure is the same user problem
        raise ResShiftError(f"{path}: cannot be read as an image ({first_line(exc)}); remove or convert it") from None
    if "Y" not in axes or "X" not in axes:
        raise ResShiftError(f"{path}: no Y and X axes found (axes {axes!r}); save it as a 2-D image or stack")
    channels = image.array.shape[axes.index("C")] if "C" in axes else 1
    return Source(str(path), image.array, axes, [(0, 3)] if rgb else [(c, c + 1) for c in range(channels)])


def _sampled(array) -> np.ndarray:
    """The whole array if in memory, else an evenly strided subset (zarr stores can be larger than memory)."""
    if isinstance(array, np.ndarray):
        return array
    step = max(1, int(np.ceil((array.size / 4_000_000) ** (1 / array.ndim))))
    return np.asarray(array[(slice(None, None, step),) * array.ndim])


def check_source(source: Source, *, min_size: int, norm: str, role: str = "training") -> Source:
    """Reject what cannot train (too small for the ``role`` crop, NaN, constant); drop constant channels; fit the
    normalisation."""
    path = source.path
    try:
        normalization.check_dtype(source.array.dtype)
    except ResShiftError as exc:
        raise ResShiftError(f"{path}: {exc}") from None
    if source.height < min_size or source.width < min_size:
        raise ResShiftError(
            f"{path}: {source.width}x{source.height} pixels is smaller than the {min_size}-pixel {role} crop; "
            f"remove it or lower {'--crop' if role == 'training' else '--val-size'}"
        )
    values = _sampled(source.array)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ResShiftError(f"{path}: contains NaN or infinite values; clean or remove it")
    if "C" in source.axes:
        per_channel = np.moveaxis(values, source.axes.index("C"), 0).reshape(values.shape[source.axes.index("C")], -1)
    else:
        per_channel = values.reshape(1, -1)
    varies = per_channel.min(1) != per_channel.max(1)
    if not varies.any():
        raise ResShiftError(f"{path}: every pixel has the same value ({per_channel.flat[0]}); remove it")
    groups = [g for g in source.groups if varies[g[0] : g[1]].any()]
    channel_axis = source.axes.index("C") if "C" in source.axes else None
    fitted = normalization.fit(source.array, mode=norm, channel_axis=channel_axis)
    return Source(source.path, source.array, source.axes, groups, fitted)


def _match_lr(hr_path: Path, lr_files: dict[str, Path], lr_root: Path) -> Path:
    if hr_path.stem not in lr_files:
        raise ResShiftError(f"{hr_path}: no LR file with the same name in {lr_root}; paired data needs one per HR")
    return lr_files[hr_path.stem]


def load_pairs(paths: list[Path], *, crop: int, scale: int, norm: str, lr_root: Path | None = None,
               degradations: list[str | None] | None = None, role: str = "training") -> list[Pair]:
    """Checked sources of ``paths`` (with their LR files under ``lr_root``), each at least ``crop`` pixels a side;
    ``degradations[i]`` is path i's own degradation (None: the run's)."""
    pairs, degradations = [], degradations or [None] * len(paths)
    lr_files = {p.stem: p for p in find_images(lr_root)} if lr_root is not None else {}
    opened: dict[Path, Source] = {}  # a file listed with several degradations is read once
    for path, degradation in zip(paths, degradations, strict=True):
        if path not in opened:
            opened[path] = check_source(open_source(path), min_size=crop, norm=norm, role=role)
        hr = opened[path]
        lr = None
        if lr_root is not None:
            lr_path = _match_lr(path, lr_files, lr_root)
            lr = check_source(open_source(lr_path), min_size=crop // scale, norm=norm, role=role)
            if lr.height * scale > hr.height or hr.height >= (lr.height + 1) * scale or lr.width * scale > hr.width:
                raise ResShiftError(
                    f"{lr_path}: {lr.width}x{lr.height} is not 1/{scale} of its HR {hr.width}x{hr.height}; "
                    f"paired data must match the model's x{scale}"
                )
            if lr.planes != hr.planes or len(lr.groups) != len(hr.groups):
                raise ResShiftError(f"{lr_path}: has other planes or channels than its HR {path}")
        pairs.append(Pair(hr, lr, degradation))
    return pairs


def split_files(files: list, *, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out about ``fraction`` of the files (at least one when there are two or more), chosen by ``seed``."""
    if fraction <= 0 or len(files) < 2:
        return files, []
    count = min(len(files) - 1, max(1, round(len(files) * fraction)))
    order = np.random.default_rng(seed).permutation(len(files))
    held = set(order[:count].tolist())
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


def replicate_rgb(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[0] == 3 else x.expand(3, -1, -1)


def check_degradation(name: str) -> str:
    if name not in DEGRADATIONS:
        raise ResShiftError(f"unknown degradation {name!r}; choose one of {', '.join(DEGRADATIONS)}")
    return name


def degrade(hr: torch.Tensor, *, name: str, scale: int, generator: torch.Generator) -> torch.Tensor:
    """[c, H, W] in [-1, 1] -> LR in about [-1, 1] through a named degradation working on [0, 1]."""
    return DEGRADATIONS[name]((hr + 1) / 2, scale, generator) * 2 - 1


class CropSampler(torch.utils.data.Dataset):
    """Micro-batch ``k`` of a run is a pure function of (seed, k): resuming or adding workers changes nothing.

    Each item: a random image (uniform over files, or with ``groups``, one group id per pair, uniform over groups
    and then over the group's files), plane and channel group, a crop preferring texture over background, a random
    flip and 90-degree rotation, then LR from the degradation (or the paired LR crop).
    """

    def __init__(self, pairs: list[Pair], *, crop: int, scale: int, micro_batch: int, degradation: str, seed: int,
                 groups: list[int] | None = None):
        for name in {degradation, *(p.degradation for p in pairs if p.degradation)}:
            check_degradation(name)
        self.pairs, self.crop, self.scale = pairs, crop, scale
        self.micro_batch, self.degradation, self.seed = micro_batch, degradation, seed
        self.weights = None
        if groups is not None:
            ids, counts = np.unique(groups, return_counts=True)
            size = dict(zip(ids.tolist(), counts.tolist()))
            self.weights = np.array([1.0 / (len(size) * size[g]) for g in groups])

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, int(k)])
        items = [self.item(rng) for _ in range(self.micro_batch)]
        return {
            "hr": torch.stack([hr for hr, _ in items]),
            "lq": torch.stack([lq for _, lq in items]),
            "seed": int(rng.integers(2**62)),
            "index": int(k),
        }

    def pick(self, rng: np.random.Generator) -> int:
        """The index of the next crop's pair."""
        if self.weights is None:
            return int(rng.integers(len(self.pairs)))
        return int(rng.choice(len(self.pairs), p=self.weights))

    def item(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[self.pick(rng)]
        plane = int(rng.integers(pair.hr.planes))
        group_index = int(rng.integers(len(pair.hr.groups)))
        hr, lq = self.crop_pair(pair, plane, group_index, rng)
        flip, turns = bool(rng.integers(2)), int(rng.integers(4))

        def augment(x: torch.Tensor) -> torch.Tensor:
            return torch.rot90(torch.flip(x, (-1,)) if flip else x, turns, (-2, -1))

        hr = augment(hr)
        if lq is None:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            lq = degrade(hr, name=pair.degradation or self.degradation, scale=self.scale, generator=gen)
        else:
            lq = augment(lq)
        return replicate_rgb(hr).contiguous(), replicate_rgb(lq).contiguous()

    def crop_pair(self, pair: Pair, plane: int, group_index: int, rng: np.random.Generator):
        s, size = self.scale, self.crop
        grid = s if pair.lr is not None else 1  # paired crops start on LR pixel boundaries
        best, best_std = None, -1.0
        for _ in range(TEXTURE_TRIES):
            y = int(rng.integers((pair.hr.height - size) // grid + 1)) * grid
            x = int(rng.integers((pair.hr.width - size) // grid + 1)) * grid
            hr = pair.hr.normalised(plane, pair.hr.groups[group_index], y, x, size, size)
            std = float(hr.std())
            if std > best_std:
                best, best_std = (y, x, hr), std
            if std > MIN_TEXTURE:
                break
        y, x, hr = best
        if pair.lr is None:
            return torch.from_numpy(hr), None
        lq = pair.lr.normalised(plane, pair.lr.groups[group_index], y // s, x // s, size // s, size // s)
        return torch.from_numpy(hr), torch.from_numpy(lq)


def validation_items(pairs: list[Pair], *, size: int, scale: int, degradation: str, seed: int, count: int):
    """Fixed centre crops (middle plane) of the held-out images with LR made once from a fixed seed."""
    items = []
    slots = [(p, g) for g in range(max(len(p.hr.groups) for p in pairs)) for p in pairs if g < len(p.hr.groups)]
    for i, (pair, g) in enumerate(slots[:count]):
        side = min(size, pair.hr.height, pair.hr.width) // scale * scale
        y, x = (pair.hr.height - side) // 2 // scale * scale, (pair.hr.width - side) // 2 // scale * scale
        plane = pair.hr.planes // 2
        hr = torch.from_numpy(pair.hr.normalised(plane, pair.hr.groups[g], y, x, side, side))
        if pair.lr is None:
            gen = torch.Generator().manual_seed(seed + i)
            lq = degrade(hr, name=pair.degradation or degradation, scale=scale, generator=gen)
        else:
            lq = torch.from_numpy(pair.lr.normalised(plane, pair.lr.groups[g], y // scale, x // scale,
                                                     side // scale, side // scale))
        name = f"{Path(pair.hr.path).name}[plane {plane}, channel {pair.hr.groups[g][0]}]"
        items.append(ValItem(replicate_rgb(hr)[None], replicate_rgb(lq)[None], hr.shape[0] == 3, name))
    return items
