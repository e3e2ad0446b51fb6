"""The optimisation loop: micro-batching, precision, EMA, warmup + cosine LR, clipping, checkpoints, validation.

Everything random comes from the batch index or saved RNG states, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from napari_resshift.engine import check_precision
from napari_resshift.errors import ResShiftError
from napari_resshift.precision import native_bf16

from . import checkpoint
from .data import CropSampler, ValItem
from .logbook import Logbook

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "napari-resshift-training"


@dataclass
class Settings:
    iterations: int = 1000
    batch: int = 4
    micro_batch: int | None = None  # None: the whole batch at once
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup: int = 100
    weight_decay: float = 0.0
    clip: float = 1.0  # gradient-norm limit; 0 turns clipping off
    ema: float = 0.999  # 0 turns the EMA off
    precision: str = "auto"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    val_every: int = 500  # 0: no validation
    checkpoint_every: int = 100
    workers: int = 0
    time_limit: float | None = None  # minutes of this call
    stop_at: int | None = None  # stop at this iteration; the LR schedule stays that of ``iterations``

    @property
    def accumulation(self) -> int:
        micro = self.micro_batch or self.batch
        if micro < 1 or self.batch % micro:
            raise ResShiftError(f"--batch {self.batch} is not a multiple of --micro-batch {micro}")
        return self.batch // micro


def lr_factor(iteration: int, *, warmup: int, iterations: int, floor: float) -> float:
    """Linear warmup to 1, then a cosine down to ``floor`` at the last iteration."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    progress = min(1.0, (iteration - warmup) / max(1, iterations - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type != "cuda":
            # natively bf16 trains about twice as fast as fp32 (238 vs 409 ms per step); emulated, several times slower
            return "bf16" if device.type == "cpu" and native_bf16() else "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ResShiftError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on this device")
    check_precision(precision)
    return precision


class EMA:
    """Exponential moving average of parameters, with the usual (1 + n) / (10 + n) ramp for early steps."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in module.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for k, p in module.named_parameters():
            if k in self.shadow:
                p.copy_(self.shadow[k])

    @contextlib.contextmanager
    def applied(self, module: torch.nn.Module):
        backup = {k: p.detach().clone() for k, p in module.named_parameters() if k in self.shadow}
        self.copy_to(module)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in module.named_parameters():
                    if k in backup:
                        p.copy_(backup[k])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        shadow = checkpoint.unwrap_keys(state["shadow"])
        for k in self.shadow:
            self.shadow[k].copy_(shadow[k])


class Trainer:
    """Trains ``stage.module`` on batches from ``sampler``; reports to ``logbook``; checkpoints to ``run_dir``."""

    def __init__(self, stage, settings: Settings, *, sampler: CropSampler, val_items: list[ValItem],
                 device: torch.device, run_dir: Path, logbook: Logbook | None = None, extra: dict | None = None):
        self.stage, self.settings, self.sampler, self.val_items = stage, settings, sampler, val_items
        self.device, self.run_dir, self.logbook, self.extra = device, run_dir, logbook, extra or {}
        self.precision = resolve_precision(settings.precision, device)
        stage.model.to(device)
        self.params = [p for p in stage.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.lr, weight_decay=settings.weight_decay)
        schedule = partial(lr_factor, warmup=settings.warmup, iterations=settings.iterations,
                           floor=min(1.0, settings.min_lr / settings.lr))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.ema = EMA(stage.module, settings.ema) if settings.ema > 0 else None
        self.iteration, self.elapsed, self.last_metrics = 0, 0.0, {}
        if settings.compile:
            stage.compile()

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage.name,
            "iteration": self.iteration,
            "elapsed_s": self.elapsed,
            "settings": json.dumps(asdict(self.settings)),
            "config": json.dumps(self.stage.model.config),
            "extra": json.dumps(self.extra),
            "metrics": json.dumps(self.last_metrics),
            "model": self.stage.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": checkpoint.rng_state(),
            "sampler": {"seed": self.sampler.seed, "next_batch": self.iteration * self.settings.accumulation},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or state.get("stage") != self.stage.name:
            raise ResShiftError(f"the checkpoint is not a {self.stage.name} training checkpoint of this project")
        with self.stage.eager():
            self.stage.model.load_state_dict(checkpoint.unwrap_keys(state["model"]))
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.iteration, self.elapsed = int(state["iteration"]), float(state["elapsed_s"])
        self.last_metrics = json.loads(state["metrics"])
        self.sampler.seed = int(state["sampler"]["seed"])

    def save_checkpoint(self) -> Path:
        path = self.run_dir / CHECKPOINT_NAME
        checkpoint.save(self.state_dict(), path)
        tqdm.write(f"checkpoint: iteration {self.iteration} saved to {path}")
        return path

    # -- loop ----------------------------------------------------------------------------------------------------
    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def batches(self, first: int, count: int):
        if self.settings.workers == 0:
            return (self.sampler[k] for k in range(first, first + count))
        loader = torch.utils.data.DataLoader(
            self.sampler, batch_size=None, sampler=range(first, first + count), num_workers=self.settings.workers,
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader)

    def step(self, batches) -> tuple[float, float]:
        """One optimiser step over ``accumulation`` micro-batches; returns (mean loss, gradient norm)."""
        accumulation = self.settings.accumulation
        self.stage.train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accumulation):
            batch = next(batches)
            with self.autocast():
                loss = self.stage.loss(batch, self.device)
            if not torch.isfinite(loss):
                raise ResShiftError(
                    f"the loss became {float(loss)} at iteration {self.iteration + 1}; lower --lr or use "
                    f"--precision fp32 (the last good checkpoint in {self.run_dir} is kept)"
                )
            self.scaler.scale(loss / accumulation).backward()
            total += float(loss.detach()) / accumulation
        self.scaler.unscale_(self.optimizer)
        limit = self.settings.clip if self.settings.clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, limit))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.stage.module)
        self.iteration += 1
        return total, grad_norm

    def validate(self) -> dict:
        if not self.val_items:
            return {}
        self.stage.model.eval()
        weights = self.ema.applied(self.stage.module) if self.ema else contextlib.nullcontext()
        with weights:
            scores, rows = self.stage.evaluate(self.val_items, seed=self.settings.seed, device=self.device)
        self.last_metrics = {k: round(v, 4) for k, v in scores.items()}
        if self.logbook is not None:
            self.logbook.record(self.iteration, group="val", elapsed_s=round(self.elapsed, 1), **scores)
            self.logbook.grid(self.iteration, rows[:4])
        tqdm.write(f"validation at {self.iteration}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return scores

    def run(self) -> None:
        s = self.settings
        remaining = max(0, s.iterations - self.iteration)
        batches = self.batches(self.iteration * s.accumulation, remaining * s.accumulation)
        started = time.monotonic() - self.elapsed
        deadline = None if s.time_limit is None else time.monotonic() + s.time_limit * 60
        with tqdm(total=s.iterations, initial=self.iteration, desc=self.stage.name, unit="it",
                  dynamic_ncols=True, smoothing=0.1) as bar:
            end = s.iterations if s.stop_at is None else min(s.iterations, s.stop_at)
            while self.iteration < end:
                loss, grad_norm = self.step(batches)
                self.elapsed = time.monotonic() - started
                lr = self.scheduler.get_last_lr()[0]
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                done = self.iteration == end
                out_of_time = deadline is not None and time.monotonic() > deadline
                if self.logbook is not None and (self.iteration % s.log_every == 0 or done):
                    self.logbook.record(self.iteration, group="train", elapsed_s=round(self.elapsed, 1),
                                        loss=loss, lr=lr, grad_norm=grad_norm)
                if self.iteration % s.checkpoint_every == 0 or done or out_of_time:
                    self.save_checkpoint()
                if s.val_every and (self.iteration % s.val_every == 0 or done or out_of_time):
                    self.validate()
                if out_of_time:
                    tqdm.write(f"time limit of {s.time_limit} min reached at iteration {self.iteration}")
                    break

    def final_weights(self) -> None:
        """Leave the module holding what is exported: uncompiled, with the EMA weights when there is an EMA."""
        self.stage.uncompile()
        if self.ema is not None:
            self.ema.copy_to(self.stage.module)
        self.stage.model.eval()
