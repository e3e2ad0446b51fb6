"""Where a run reports: metrics.csv, TensorBoard scalars, and PNG sample grids under RUN_DIR/samples.

On resume, rows and events after the checkpoint's iteration are dropped, so the logs match the weights.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

COLUMNS = ("iteration", "elapsed_s", "loss", "lr", "grad_norm", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic")


class Logbook:
    def __init__(self, run_dir: Path, *, resume_at: int | None = None, tensorboard: bool = True):
        self.run_dir = run_dir
        self.csv_path = run_dir / "metrics.csv"
        kept = []
        if resume_at is not None and self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["iteration"]) <= resume_at]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.csv_path)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_at + 1 if resume_at is not None else None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def record(self, iteration: int, *, group: str, **values: float) -> None:
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow({"iteration": iteration, **values})
        if self.writer is not None:
            for key, value in values.items():
                if key != "elapsed_s":
                    self.writer.add_scalar(f"{group}/{key}", value, iteration)

    def grid(self, iteration: int, rows: list[list[torch.Tensor]]) -> Path:
        """Rows of [3, H, W] images in [-1, 1] side by side, 4 px apart, written as an 8-bit PNG."""
        from PIL import Image

        gap = 4
        width = max(sum(im.shape[-1] for im in row) + gap * (len(row) - 1) for row in rows)
        strips = []
        for row in rows:
            parts = []
            for im in row:
                parts += [im.float().clamp(-1, 1), torch.ones(3, im.shape[-2], gap)]
            strip = torch.cat(parts[:-1], -1)
            strips += [F.pad(strip, (0, width - strip.shape[-1]), value=1.0), torch.ones(3, gap, width)]
        image = torch.cat(strips[:-1], -2)
        array = ((image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        path = self.run_dir / "samples" / f"iter_{iteration:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array)).save(path)
        if self.writer is not None:
            self.writer.add_image("samples", array, iteration, dataformats="HWC")
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
