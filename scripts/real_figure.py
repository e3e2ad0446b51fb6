"""README figure: real low-resolution images (no ground truth), nearest | bicubic | each model, x4.

python scripts/real_figure.py docs/real_inputs.png IMAGE [IMAGE ...] [--models clean default] [--size 64]
Each row is the most textured SIZE x SIZE window of an image's middle plane and first channel group, as stored.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from napari_resshift.engine import Upscaler
from training.data import check_source, open_source

LABEL_HEIGHT = 18


def textured_window(path: Path, size: int) -> tuple[torch.Tensor, bool]:
    """[C, size, size] in [-1, 1]: the window of largest standard deviation on a half-size grid."""
    source = check_source(open_source(path), min_size=size, norm="auto")
    group, plane = source.groups[0], source.planes // 2
    whole = torch.from_numpy(source.normalised(plane, group, 0, 0, source.height, source.width))
    best, best_std = (0, 0), -1.0
    for y in range(0, source.height - size + 1, size // 2):
        for x in range(0, source.width - size + 1, size // 2):
            std = float(whole[:, y:y + size, x:x + size].std())
            if std > best_std:
                best, best_std = (y, x), std
    y, x = best
    return whole[:, y:y + size, x:x + size], group[1] - group[0] == 3


def to_rgb8(x: torch.Tensor) -> np.ndarray:
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    return np.round((x.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--models", nargs="+", default=["clean", "default"])
    p.add_argument("--size", type=int, default=64, help="LR window side in pixels")
    args = p.parse_args(argv)
    ups = {name: Upscaler(name, device="cpu") for name in args.models}
    columns = ["nearest", "bicubic", *args.models]
    side = args.size * 4
    sheet = Image.new("RGB", (side * len(columns), (side + LABEL_HEIGHT) * len(args.images)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, path in enumerate(args.images):
        lr, rgb = textured_window(path, args.size)
        cells = [F.interpolate(lr[None], scale_factor=4, mode="nearest")[0],
                 F.interpolate(lr[None], scale_factor=4, mode="bicubic")[0]]
        for up in ups.values():
            planes = lr if rgb else lr.expand(3, -1, -1)
            out = up.upscale_plane(planes, seed=0)
            cells.append(out if rgb else out.mean(0, keepdim=True))
        top = row * (side + LABEL_HEIGHT)
        for col, (name, cell) in enumerate(zip(columns, cells)):
            sheet.paste(Image.fromarray(to_rgb8(cell)), (col * side, top + LABEL_HEIGHT))
            draw.text((col * side + 4, top + 3), f"{name}  ({path.name[:28]})" if col == 0 else name, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
