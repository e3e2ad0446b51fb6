"""``python -m training.finetune``: fine-tune or train a ResShift model (denoiser or autoencoder stage) on images.

Owns the command line, building the model and data from it, resuming a run, and exporting the result.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from napari_resshift.engine import DEVICE_WORDS, PRECISIONS, pick_device
from napari_resshift.errors import ArgumentParser, ResShiftError, run_cli
from napari_resshift.export import check_package_path, export_package
from napari_resshift.loading import (
    load_model,
    load_project_model,
    load_weights,
    make_card,
    read_config,
    read_state_dict,
    save_model,
    save_official,
)
from napari_resshift.model import ResShiftModel
from napari_resshift.normalization import DEFAULT_PERCENTILES, NORM_MODES
from napari_resshift.registry import CONV_SIZES, MODES, OFFICIAL_SCALE, SCALES, architecture, rescaled

from . import checkpoint, data
from .degradations import DEGRADATIONS
from .logbook import Logbook
from .stages import AutoencoderStage, DenoiserStage
from .trainer import CHECKPOINT_NAME, Settings, Trainer, resolve_precision

DEFAULTS = {
    "stage": "denoiser", "data": None, "lr_data": None, "val_data": [], "val_fraction": 0.15, "run": None,
    "resume": None, "init": None, "arch": "small", "config": None, "mode": "latent", "autoencoder": None, "kappa": None,
    "rollout": 0.0, "loss": "mse", "preset": "v3", "degradation": "bicubic", "norm": "auto", "crop": 256,
    "val_size": 256, "val_images": 8, "draw": "files", "scale": None,
    "device": "auto", "name": None, "export_official": None, "export_bioimageio": None, "no_quantize": False,
    "commitment": 0.25,
    "tensorboard": True,
    **{f.name: f.default for f in fields(Settings)},
}
# What may differ when a run is resumed: nothing that changes which batches or weights come next, except length.
RESUME_OVERRIDES = {"resume", "iterations", "device", "workers", "val_every", "checkpoint_every", "log_every",
                    "time_limit", "stop_at", "export_official", "export_bioimageio", "name", "tensorboard"}


class RecipeParser(ArgumentParser):
    """Reads ``@recipe`` files written like a command line: options and values on a line, ``#`` comments."""

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        return shlex.split(arg_line, comments=True)


def parser() -> argparse.ArgumentParser:
    p = RecipeParser(
        prog="python -m training.finetune",
        description="Fine-tune a ResShift model on your images, or train one (autoencoder, then denoiser). "
        "Arguments can also be read from a recipe file: python -m training.finetune @recipe.args",
        fromfile_prefix_chars="@",
        argument_default=argparse.SUPPRESS,  # defaults live in DEFAULTS, so a resume can tell what was given
    )
    d = DEFAULTS
    p.add_argument("--stage", choices=("denoiser", "autoencoder"), help=f"what to train (default {d['stage']})")
    io = p.add_argument_group("data")
    io.add_argument("--data", nargs="+", help="folders, image files (PNG/JPEG/TIFF) or zarr/OME-Zarr stores; "
                    "DEGRADATION=PATH gives a path its own degradation (e.g. blind-microscopy=my_tiffs/)")
    io.add_argument("--lr-data", help="folder of real LR images, matched to --data by file name (paired training)")
    io.add_argument("--val-data", nargs="+", help="held-out images, also as DEGRADATION=PATH (default: --val-fraction "
                    "of each --data)")
    io.add_argument("--val-fraction", type=float, help=f"files of each --data held out (default {d['val_fraction']})")
    io.add_argument("--degradation", choices=sorted(DEGRADATIONS), help=f"HR->LR model (default {d['degradation']})")
    io.add_argument("--draw", choices=("files", "entries"),
                    help="how a crop's image is drawn: every training file alike, or every --data entry alike and then "
                         "a file in it, so that a small source is not drowned by a large one; an entry listed k times "
                         f"gets k shares (default {d['draw']})")
    io.add_argument("--norm", choices=NORM_MODES,
                    help="intensity normalisation, as at inference (default auto: range for 8-bit, else percentile)")
    io.add_argument("--crop", type=int, help=f"HR crop side in pixels (default {d['crop']})")
    m = p.add_argument_group("model")
    m.add_argument("--init", help="default | PATH (model file or folder) | scratch (default: default; "
                                  "scratch for --stage autoencoder)")
    m.add_argument("--arch", choices=("tiny", "small", "fast", *CONV_SIZES),
                   help=f"size preset for --init scratch; conv and conv-tiny are packed-mode ConvDenoisers "
                        f"(default {d['arch']})")
    m.add_argument("--config", help="official-layout config (.yaml/.json) for --init scratch")
    m.add_argument("--mode", choices=MODES, help="for --init scratch: latent (VQ-f4 autoencoder), pixel, or packed "
                   "(pixel-space diffusion on scale x scale blocks, no autoencoder; the shipped models') "
                   f"(default {d['mode']})")
    m.add_argument("--scale", type=int, choices=SCALES, help="the model's scale: for --init scratch, or to train a "
                   "packed --init model at another scale, keeping every weight whose shape stays (default: the "
                   f"model's own; {OFFICIAL_SCALE} from scratch)")
    m.add_argument("--autoencoder", help="autoencoder weights: a --stage autoencoder run's model.safetensors "
                                         "or an official .pth")
    m.add_argument("--preset", help="official preset for an official .pth given to --init (default v3)")
    m.add_argument("--kappa", type=float, help="train (and export) with this noise scale instead of the model's: "
                   "lower is closer to the posterior mean (fidelity), higher gives more generated detail")
    m.add_argument("--rollout", type=share, help="share (0-1) of the non-final steps whose x_t is built from the "
                   "model's own first estimate instead of the truth, so later steps learn to correct it (default 0: "
                   "the reference objective)")
    m.add_argument("--loss", choices=("mse", "l1", "chain"), help="error of the x_0 prediction: mse (the reference "
                   "objective), l1 (mean absolute error, as plain super-resolution CNNs train), or chain (mean "
                   "absolute error of the sampled result: the whole chain at --kappa, trained through every step; "
                   "--rollout does not apply) (default mse)")
    t = p.add_argument_group("optimisation")
    t.add_argument("--iterations", type=int, help=f"optimiser steps (default {d['iterations']})")
    t.add_argument("--batch", type=int, help=f"images per step (default {d['batch']})")
    t.add_argument("--micro-batch", type=int, help="images per forward pass; gradients accumulate to --batch")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {d['lr']})")
    t.add_argument("--min-lr", type=float, help=f"learning rate at the end of the cosine (default {d['min_lr']})")
    t.add_argument("--warmup", type=int, help=f"linear warmup steps (default {d['warmup']})")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    t.add_argument("--clip", type=float, help=f"gradient-norm clip, 0 = off (default {d['clip']})")
    t.add_argument("--ema", type=float, help=f"EMA decay of exported weights, 0 = off (default {d['ema']})")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="auto: bf16 on a CPU with native bf16 (AMX, AVX512-BF16), else fp32; bf16 (or fp16 with loss "
                        "scaling) on CUDA")
    t.add_argument("--compile", action="store_true", help="torch.compile the trained network")
    t.add_argument("--seed", type=int, help="seed for initialisation, crops, degradations and noise (default 0)")
    t.add_argument("--no-quantize", action="store_true", help="autoencoder stage: train (and later decode) "
                   "without codebook quantisation; the default follows the architecture")
    t.add_argument("--commitment", type=float, help="autoencoder stage: commitment loss weight (default 0.25)")
    r = p.add_argument_group("run")
    r.add_argument("--run", help="output folder: checkpoint, logs, samples, model.safetensors")
    r.add_argument("--resume", help="continue the run in this folder exactly where its checkpoint stopped")
    r.add_argument("--device", help=f"{DEVICE_WORDS}; cuda:N for GPU N (default auto)")
    r.add_argument("--workers", type=int, help="data-loading processes (default 0: in the training process)")
    r.add_argument("--log-every", type=int, help=f"iterations between loss records (default {d['log_every']})")
    r.add_argument("--val-every", type=int, help=f"iterations between validations, 0 = off (default {d['val_every']})")
    r.add_argument("--val-images", type=int, help=f"held-out crops validated (default {d['val_images']})")
    r.add_argument("--val-size", type=int, help=f"HR side of the validation crops (default {d['val_size']})")
    r.add_argument("--checkpoint-every", type=int, help=f"iterations between checkpoints (default "
                                                         f"{d['checkpoint_every']})")
    r.add_argument("--time-limit", type=float, help="minutes of training in this call, then checkpoint and export")
    r.add_argument("--stop-at", type=int, help="stop at this iteration, then checkpoint and export; the LR schedule "
                   "stays that of --iterations, so --resume goes on where it stopped")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="CSV logs only")
    r.add_argument("--name", help="model name in the card (default: the run folder's name)")
    r.add_argument("--export-official", help="also write unet.pth / autoencoder.pth / config.yaml to this folder")
    r.add_argument("--export-bioimageio", help="also write a BioImage.io model-zoo package to this folder (or .zip)")
    return p


def share(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def resolve_options(argv) -> argparse.Namespace:
    """Command line over the stored run options (on --resume) over DEFAULTS."""
    given = vars(parser().parse_args(argv))
    if "resume" not in given:
        if "data" not in given or "run" not in given:
            raise ResShiftError("give --data and --run (or --resume RUN_DIR to continue a run)")
        return argparse.Namespace(**(DEFAULTS | given))
    run_dir = Path(given["resume"])
    if not (run_dir / "run.json").is_file():
        raise ResShiftError(f"{run_dir}: not a training run folder (no run.json); check the --resume path")
    stored = DEFAULTS | json.loads((run_dir / "run.json").read_text())["options"]
    stored |= {"stop_at": None, "time_limit": None}  # limits hold for the call that gives them; a resume goes on
    changed = sorted(k for k, v in given.items() if k not in RESUME_OVERRIDES and v != stored[k])
    if changed:
        raise ResShiftError(f"--{changed[0].replace('_', '-')} cannot change when resuming; start a new --run")
    return argparse.Namespace(**(stored | given | {"run": str(run_dir)}))


# (option, lowest value, whether the lowest value itself is allowed); None values mean "not given" and pass
LIMITS = (("iterations", 1, True), ("batch", 1, True), ("micro_batch", 1, True), ("lr", 0, False),
          ("min_lr", 0, True), ("warmup", 0, True), ("weight_decay", 0, True), ("clip", 0, True), ("ema", 0, True),
          ("workers", 0, True), ("log_every", 1, True), ("val_every", 0, True), ("checkpoint_every", 1, True),
          ("val_images", 1, True), ("val_size", 1, True), ("crop", 1, True), ("time_limit", 0, False),
          ("stop_at", 1, True), ("val_fraction", 0, True), ("kappa", 0, False), ("commitment", 0, True))
BELOW_ONE = ("val_fraction", "ema")  # shares: all of the files cannot be held out, an EMA of 1 never moves


def check_options(opts: argparse.Namespace) -> None:
    """Every number in its range, before any file is read or written."""
    for name, low, inclusive in LIMITS:
        value = getattr(opts, name)
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')} {value}"
        if value < low or (value == low and not inclusive):
            raise ResShiftError(f"{flag} is not allowed; it must be {'at least' if inclusive else 'above'} {low}")
        if name in BELOW_ONE and value >= 1:
            raise ResShiftError(f"{flag} is not allowed; it must be below 1")


def settings_of(opts: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(opts, f.name) for f in fields(Settings)})


# -- model ---------------------------------------------------------------------------------------------------------
def with_autoencoder(config: dict, path: str) -> tuple[dict, dict]:
    """(config with the autoencoder section of ``path``'s model card if it has one, autoencoder weights)."""
    if Path(path).suffix == ".safetensors":
        donor, card = load_project_model(Path(path))
        if donor.autoencoder is None:
            raise ResShiftError(f"{path}: a pixel-mode model, it has no autoencoder")
        ae_config = card["config"]["autoencoder"]
        if ae_config["params"]["embed_dim"] != config["model"]["params"]["in_channels"]:
            raise ResShiftError(
                f"{path}: its {ae_config['params']['embed_dim']}-channel latent does not fit this denoiser's "
                f"{config['model']['params']['in_channels']} channels; use the same --arch for both stages"
            )
        return config | {"autoencoder": ae_config}, donor.autoencoder.state_dict()
    return config, read_state_dict(path)


def at_scale(model: ResShiftModel, card: dict, scale: int, origin: str) -> tuple[ResShiftModel, str]:
    """A packed model's network at another scale: every tensor whose shape stays is kept (the LR encoder and the
    step blocks), the rest (the layers that read and write the packed blocks) start anew; residual, so the new
    model starts at x_0 = y_0 where its output layer starts at zero."""
    try:
        config = rescaled(card["config"], scale)
    except KeyError as exc:
        raise ResShiftError(f"--scale {scale}: {exc.args[0]}") from None
    new = ResShiftModel(config)
    old = model.state_dict()
    state = new.state_dict()
    kept = [k for k, v in state.items() if k in old and old[k].shape == v.shape]
    new.load_state_dict({**state, **{k: old[k] for k in kept}})
    restarted = sorted({k.rsplit(".", 1)[0] for k in state if k not in kept})
    start_at_bicubic(new)
    return new.eval(), (f"{origin} at x{model.scale}, made x{scale}: {len(kept)} of {len(state)} tensors kept, "
                        f"new: {', '.join(restarted)}")


def start_at_bicubic(model: ResShiftModel) -> None:
    """A residual denoiser whose output layer is zero predicts x_0 = y_0 (bicubic)."""
    if model.residual:
        last = model.unet.out[-1] if isinstance(model.unet.out, torch.nn.Sequential) else model.unet.out
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)


def build_model(opts: argparse.Namespace) -> tuple[ResShiftModel, str]:
    """The model to train and a description of where it came from."""
    init = opts.init or ("scratch" if opts.stage == "autoencoder" else "default")
    if init != "scratch":
        model, card = load_model(None if init == "default" else init, autoencoder=opts.autoencoder,
                                 preset=opts.preset)
        if opts.stage == "autoencoder" and model.autoencoder is None:
            raise ResShiftError(f"{init}: a pixel-mode model has no autoencoder to train")
        origin = f"{init} ({card.get('name', 'model')})"
        if opts.scale in (None, model.scale):
            return model, origin
        return at_scale(model, card, opts.scale, origin)
    try:
        config = read_config(Path(opts.config)) if opts.config else architecture(
            opts.arch, mode=opts.mode, scale=opts.scale or OFFICIAL_SCALE)
    except KeyError as exc:
        raise ResShiftError(f"--scale {opts.scale}: {exc.args[0]}") from None
    ae_state = None
    if config.get("autoencoder") and opts.stage == "denoiser":
        if not opts.autoencoder:
            raise ResShiftError("a latent model trained from scratch needs --autoencoder (train one first with "
                                "--stage autoencoder), or use --mode packed")
        config, ae_state = with_autoencoder(config, opts.autoencoder)
    if opts.stage == "autoencoder" and not config.get("autoencoder"):
        raise ResShiftError("--stage autoencoder needs a latent-mode model; use --mode latent")
    torch.manual_seed(opts.seed)
    model = ResShiftModel(config)
    start_at_bicubic(model)
    if ae_state is not None:
        load_weights(model.autoencoder, checkpoint.unwrap_keys(ae_state), path=opts.autoencoder, what="autoencoder")
    return model.eval(), f"scratch ({opts.config or opts.arch})"


# -- data ----------------------------------------------------------------------------------------------------------
def data_entry(entry: str) -> tuple[str | None, Path]:
    """``PATH`` or ``DEGRADATION=PATH`` -> (degradation or None, path)."""
    name, sep, path = entry.partition("=")
    if not sep or Path(entry).exists():
        return None, Path(entry)
    return data.check_degradation(name), Path(path)


def split_data(opts: argparse.Namespace) -> dict:
    """Training and validation files, each with the degradation its --data entry names (None: the run's): each
    --data path is split on its own, so every domain is held out; a path listed twice with two degradations is
    drawn through both."""
    train, val, entries = [], [], []

    def find(entry: str) -> list[tuple[str, str | None]]:
        degradation, path = data_entry(entry)
        return [(str(f), degradation) for f in data.find_images(path)]

    for index, entry in enumerate(opts.data):
        files = find(entry)
        kept, held = (files, []) if opts.val_data else data.split_files(files, fraction=opts.val_fraction,
                                                                          seed=opts.seed)
        train, val, entries = train + kept, val + held, entries + [index] * len(kept)
    for entry in opts.val_data:
        val += find(entry)
    return {"train": [f for f, _ in train], "val": [f for f, _ in val], "train_entries": entries,
            "train_degradations": [d for _, d in train], "val_degradations": [d for _, d in val]}


def stored_files(run_dir: Path) -> dict:
    """A run's files as split_data gives them; runs from before per-entry degradations kept a path -> name map."""
    files = json.loads((run_dir / "run.json").read_text())["files"]
    if "degradations" in files:
        own = files.pop("degradations")
        files |= {f"{part}_degradations": [own.get(f) for f in files[part]] for part in ("train", "val")}
    return files


def check_crop(opts: argparse.Namespace, model: ResShiftModel) -> None:
    multiple = model.scale * model.pad_multiple
    if opts.crop < multiple or opts.crop % multiple:
        raise ResShiftError(f"--crop {opts.crop} must be a multiple of {multiple} for this model")


# -- export --------------------------------------------------------------------------------------------------------
def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores"


def trained_degradations(opts: argparse.Namespace, files: dict) -> str:
    """The degradations the training files went through: their own, and the run's for files without one."""
    used = {d or opts.degradation for d in files["train_degradations"]}
    return ", ".join(sorted(used))


def training_record(opts: argparse.Namespace, files: dict, *, stage, origin: str, settings, precision: str) -> dict:
    """What a model card says of the run's training, fixed for the whole run; ``reached`` adds how far it got. Kept
    in every checkpoint, so a snapshot of a running training carries it too (scripts/snapshot.py)."""
    return {
        "stage": stage.name,
        "init": origin,
        "degradation": "paired LR data" if opts.lr_data else trained_degradations(opts, files),
        "quantized_decoding": bool(stage.model.config.get("autoencoder", {}).get("quantize", True)),
        "batch": settings.batch,
        "crop": opts.crop,
        "lr": settings.lr,
        "ema": settings.ema,
        "rollout": opts.rollout,
        "loss": opts.loss,
        "precision": precision,
        "seed": settings.seed,
        "hardware": hardware(),
        "torch": torch.__version__,
        "data": list(opts.data) + ([opts.lr_data] if opts.lr_data else []),
        "validation_data": list(opts.val_data) or f"{opts.val_fraction:.0%} of the files of each --data path",
        "train_files": len(set(files["train"])),  # a folder listed k times counts once
        "val_files": len(set(files["val"])),
    }


def reached(record: dict, *, iteration: int, elapsed: float, metrics: dict) -> dict:
    """A training record with the iteration, wall time and validation metrics a run (or its checkpoint) reached."""
    return record | {"iterations": iteration, "wall_time_s": round(elapsed, 1), "metrics": metrics}


def export(trainer: Trainer, opts: argparse.Namespace) -> tuple[Path, dict]:
    model = trainer.stage.model
    card = make_card(
        model,
        name=opts.name or Path(opts.run).name,
        normalization={"mode": opts.norm, "percentiles": list(DEFAULT_PERCENTILES), "scope": "per image and channel"},
        training=reached(trainer.extra["training"], iteration=trainer.iteration, elapsed=trainer.elapsed,
                         metrics=trainer.last_metrics),
    )
    path = save_model(model, Path(opts.run) / "model.safetensors", card, overwrite=True)
    if opts.export_official:
        save_official(model, opts.export_official, overwrite=True)
    if opts.export_bioimageio:  # replaces only a package of ours: the path was empty when the run started
        export_package(model, card, opts.export_bioimageio, overwrite=True)
    return path, card


@dataclass
class Outcome:
    model: ResShiftModel  # holds the exported weights
    card: dict
    path: Path
    trainer: Trainer


def train(argv=None) -> Outcome:
    """Everything the command does, returning the trained model instead of an exit code."""
    opts = resolve_options(argv)
    check_options(opts)
    run_dir = Path(opts.run)
    resuming = opts.resume is not None
    if resuming and not (run_dir / CHECKPOINT_NAME).exists():
        raise ResShiftError(
            f"{run_dir}: the run stopped before its first checkpoint (every {opts.checkpoint_every} iterations), so "
            "there is nothing to resume; start it again with its original command (the same --run)"
        )
    if not resuming and (run_dir / CHECKPOINT_NAME).exists():
        raise ResShiftError(
            f"{run_dir}: already holds a run; continue it with --resume {run_dir} or pick another --run"
        )
    if opts.export_official and not resuming and (Path(opts.export_official) / "unet.pth").exists():
        raise ResShiftError(f"{opts.export_official}: already holds unet.pth; choose another --export-official folder")
    if opts.export_bioimageio and not resuming:
        check_package_path(opts.export_bioimageio)
    settings = settings_of(opts)
    micro = settings.batch // settings.accumulation  # raises early on a --batch that --micro-batch does not divide
    device = pick_device(opts.device)
    precision = resolve_precision(settings.precision, device)  # refused here, before the run folder is written
    random.seed(opts.seed)
    np.random.seed(opts.seed % 2**32)
    torch.manual_seed(opts.seed)

    files = stored_files(run_dir) if resuming else split_data(opts)
    state = checkpoint.load(run_dir / CHECKPOINT_NAME) if resuming else None
    if state is not None:
        model, origin = ResShiftModel(json.loads(state["config"])).eval(), json.loads(state["extra"])["init"]
    else:
        model, origin = build_model(opts)
        if opts.kappa is not None:
            model.set_kappa(opts.kappa)
    check_crop(opts, model)

    lr_root = Path(opts.lr_data) if opts.lr_data else None
    load = dict(crop=opts.crop, scale=model.scale, norm=opts.norm, lr_root=lr_root)
    train_pairs = data.load_pairs([Path(f) for f in files["train"]], degradations=files["train_degradations"], **load)
    val_pairs = data.load_pairs([Path(f) for f in files["val"]], degradations=files["val_degradations"],
                                **{**load, "crop": min(opts.crop, opts.val_size)}, role="validation")
    print(f"data: {len(train_pairs)} training and {len(val_pairs)} validation images", flush=True)

    sampler = data.CropSampler(train_pairs, crop=opts.crop, scale=model.scale, micro_batch=micro,
                               degradation=opts.degradation, seed=opts.seed,
                               groups=files["train_entries"] if opts.draw == "entries" else None)
    val_items = data.validation_items(val_pairs, size=opts.val_size, scale=model.scale, degradation=opts.degradation,
                                      seed=opts.seed, count=opts.val_images) if val_pairs else []
    stage = (AutoencoderStage(model, quantize=False if opts.no_quantize else None, commitment=opts.commitment)
             if opts.stage == "autoencoder" else DenoiserStage(model, rollout=opts.rollout, loss=opts.loss))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        options = {k: v for k, v in vars(opts).items() if k != "resume"}
        (run_dir / "run.json").write_text(json.dumps({"options": options, "files": files}, indent=2) + "\n")
    logbook = Logbook(run_dir, resume_at=state["iteration"] if state else None, tensorboard=opts.tensorboard)
    record = training_record(opts, files, stage=stage, origin=origin, settings=settings, precision=precision)
    trainer = Trainer(stage, settings, sampler=sampler, val_items=val_items, device=device, run_dir=run_dir,
                      logbook=logbook, extra={"init": origin, "training": record})
    if state is not None:
        trainer.load_state_dict(state)
        print(f"resumed at iteration {trainer.iteration} of {settings.iterations}", flush=True)
    try:
        trainer.run()
    finally:
        logbook.close()
    trainer.final_weights()
    path, card = export(trainer, opts)
    also = [p for p in (opts.export_official, opts.export_bioimageio) if p]
    print(f"exported: {path}" + "".join(f" and {p}" for p in also), flush=True)
    return Outcome(model, card, path, trainer)


def main(argv=None) -> int:
    return run_cli(
        train, argv,
        interrupted="interrupted: the last checkpoint is intact; continue with --resume RUN_DIR",
    )


if __name__ == "__main__":
    sys.exit(main())
