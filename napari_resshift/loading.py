"""Safe checkpoint reading, the one model loader, and saving in the project's and the official layouts.

Every failure a user can cause is reported as one ``ResShiftError`` line naming the file and the fix.
"""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ResShiftError, first_line
from .model import ResShiftModel
from .registry import PRESETS, SHIPPED

CARD_FORMAT = "napari-resshift-model"
DERIVED_BUFFERS = ("attn_mask", "relative_position_index")  # constants the network rebuilds itself
PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth file, unwrapped from ``{'state_dict': ...}`` and training prefixes."""
    path = Path(path)
    if not path.is_file():
        raise ResShiftError(f"{path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise ResShiftError(f"{path}: the file is empty; copy or download it again")
    if path.suffix == ".safetensors":
        try:
            obj = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ResShiftError(f"{path}: not a readable safetensors file ({exc}); it may be truncated") from None
    else:
        obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ResShiftError(f"{path}: holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ResShiftError(f"{path}: holds no weight tensors; is it a model checkpoint?")
    return strip_prefixes(tensors)


def _torch_load(path: Path):
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome is said in one line below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _carries_code(path, exc):
            raise ResShiftError(
                f"{path}: refused, the file contains pickled code, not just weights; "
                "re-save it with torch.save(model.state_dict()) or as safetensors"
            ) from None
        raise ResShiftError(f"{path}: not a PyTorch checkpoint, or truncated; copy or download it again") from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways deep inside torch
        raise ResShiftError(f"{path}: not a PyTorch checkpoint or truncated ({first_line(exc)})") from None


def _carries_code(path: Path, exc: Exception) -> bool:
    """Whether torch refused the file for the objects it would build (code) rather than for being no pickle at all.

    A zip checkpoint names the refused global; a plain pickle is scanned, never run, for the opcodes that import
    or call something."""
    if zipfile.is_zipfile(path):
        return "GLOBAL" in str(exc) or "Unsupported global" in str(exc)
    try:
        ops = {op.name for op, _arg, _pos in pickletools.genops(path.read_bytes())}
    except Exception:  # noqa: BLE001 - not even a pickle stream: random bytes or another format
        return False
    return bool(ops & {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX"})


def strip_prefixes(state: dict) -> dict:
    """Drop ``module.`` (multi-GPU) and ``_orig_mod.`` (torch.compile) prefixes, detected from the first key."""
    first = next(iter(state))
    prefix = ""
    for p in PREFIXES:
        if first[len(prefix):].startswith(p):
            prefix += p
    if not prefix:
        return state
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def load_weights(module: torch.nn.Module, state: dict, *, path, what: str) -> None:
    """Strictly load ``state`` into ``module``; derived attention buffers may be absent or differ."""
    expected = module.state_dict()
    given = {k: v for k, v in state.items() if not k.endswith(DERIVED_BUFFERS)}
    needed = [k for k in expected if not k.endswith(DERIVED_BUFFERS)]
    missing = [k for k in needed if k not in given]
    extra = [k for k in given if k not in expected]
    if missing and len(missing) == len(needed):
        raise ResShiftError(
            f"{path}: not a {what} checkpoint (first key {next(iter(state))!r}); "
            f"check which file you passed as the {what}"
        )
    if missing:
        raise ResShiftError(
            f"{path}: {len(missing)} {what} weights are missing (first: {missing[0]!r}); "
            "the file was made for another configuration: choose the matching preset or model card"
        )
    if extra:
        raise ResShiftError(
            f"{path}: {len(extra)} unexpected {what} weights (first: {extra[0]!r}); "
            "the file was made for another configuration: choose the matching preset or model card"
        )
    for key in needed:
        if given[key].shape != expected[key].shape:
            raise ResShiftError(
                f"{path}: {what} weight {key!r} has shape {tuple(given[key].shape)} but the configuration "
                f"expects {tuple(expected[key].shape)}; choose the matching preset or model card"
            )
        if given[key].is_floating_point() and not torch.isfinite(given[key]).all():
            raise ResShiftError(f"{path}: {what} weight {key!r} contains NaN or Inf; the file is corrupt")
    module.load_state_dict(given, strict=False)


def read_config(path: Path) -> dict:
    """An official-layout configuration from .json or .yaml."""
    if not path.is_file():
        raise ResShiftError(f"{path}: no such configuration file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            config = yaml.safe_load(text)
        else:
            config = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parser error is the same user problem
        raise ResShiftError(f"{path}: not a valid configuration file ({first_line(exc)})") from None
    if not isinstance(config, dict) or "model" not in config or "diffusion" not in config:
        raise ResShiftError(f"{path}: a configuration needs 'model' and 'diffusion' sections")
    return config


def build_model(config: dict, *, source) -> ResShiftModel:
    try:
        return ResShiftModel(config).eval()
    except (KeyError, TypeError, ValueError) as exc:
        raise ResShiftError(f"{source}: invalid model configuration ({exc})") from None


def load_official(unet_path, autoencoder_path=None, *, config: dict | str = "v3") -> ResShiftModel:
    """Official denoiser (+ autoencoder) files with a preset name or an official-layout config dict."""
    if isinstance(config, str):
        if config not in PRESETS or PRESETS[config].config is None:
            official = sorted(n for n, p in PRESETS.items() if p.config)
            raise ResShiftError(f"unknown official preset {config!r}; choose one of {', '.join(official)}")
        config = PRESETS[config].config
    unet = read_state_dict(unet_path)  # a bad file is refused before the network is built
    model = build_model(config, source=unet_path)
    load_weights(model.unet, unet, path=unet_path, what="denoiser")
    if model.autoencoder is not None:
        if autoencoder_path is None:
            raise ResShiftError(f"{unet_path}: this model needs its autoencoder file (autoencoder_vq_f4.pth) too")
        load_weights(model.autoencoder, read_state_dict(autoencoder_path), path=autoencoder_path, what="autoencoder")
    return model


def load_model(spec=None, *, autoencoder=None, preset: str = "v3") -> tuple[ResShiftModel, dict]:
    """The one entry point: ``None`` (the default), a shipped or official preset name, a model file, or a directory.

    Accepted: a project ``.safetensors`` (card inside), an official ``.pth`` denoiser (+ ``autoencoder``,
    configured by ``preset``), or a directory holding ``model.safetensors`` or ``config.yaml|json`` with the
    official ``unet.pth`` / ``autoencoder.pth`` pair. Returns the model in eval mode and its card.
    """
    if spec is None or spec in SHIPPED:
        name = spec or "default"
        path = Path(str(PRESETS[name].packaged_path()))
        if not path.is_file():
            raise ResShiftError(f"the {name} model is not installed with this package; reinstall it or pass a model "
                                "path")
        return load_project_model(path)
    check_spec(spec)
    path = Path(spec)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return load_project_model(path / "model.safetensors")
        if (found := official_files(path)) is not None:
            preset, unet, ae = found
            model = load_official(unet, ae, config=preset)
            return model, make_card(model, name=preset, tile=model.pad_multiple, provenance={"source": str(path)})
        for name in ("config.yaml", "config.yml", "config.json"):
            if (path / name).is_file():
                config = read_config(path / name)
                unet = path / config["model"].get("ckpt_path", "unet.pth")
                ae = path / config["autoencoder"].get("ckpt_path", "autoencoder.pth") if config.get("autoencoder") else None
                model = load_official(unet, ae, config=config)
                return model, make_card(model, name=path.name, tile=model.pad_multiple, provenance={"source": str(path)})
        raise ResShiftError(f"{path}: no model.safetensors, config.yaml with unet.pth, or official ResShift weights "
                            "under their published names in this folder")
    if path.suffix == ".safetensors":
        return load_project_model(path)
    model = load_official(path, autoencoder, config=preset)
    return model, make_card(
        model, name=path.stem, tile=model.pad_multiple, provenance={"source": str(path), "preset": preset}
    )


def model_names() -> str:
    """The names ``--model`` (or ``Upscaler``) takes, in words."""
    official = ", ".join(n for n, p in PRESETS.items() if p.config)
    return f"{', '.join(SHIPPED)} (shipped) or {official} (official weights you download)"


def check_spec(spec) -> None:
    """Refuse, in one line, a model name that is no preset and no existing path, and a bare official preset name
    (its weights are never shipped nor downloaded)."""
    if not isinstance(spec, str) or spec in SHIPPED:
        return
    if spec in PRESETS:
        files = PRESETS[spec].files
        raise ResShiftError(
            f"model {spec!r} needs the official weights (ResShift releases on github.com/zsyOAOA/ResShift), not "
            f"shipped: put {files['unet']} and {files['autoencoder']} in one folder and give that folder as "
            "the model"
        )
    if not Path(spec).exists():
        bare = Path(spec).name == spec and not Path(spec).suffix
        what = f"unknown model {spec!r}" if bare else f"{spec}: no such file or folder"
        raise ResShiftError(f"{what}; choose {model_names()}, or give a model file or folder")


def official_files(folder: Path) -> tuple[str, Path, Path] | None:
    """(preset, denoiser, autoencoder) for a folder holding one official preset's files under their published
    names; None when it holds none."""
    found = [(name, folder / p.files["unet"], folder / p.files["autoencoder"])
             for name, p in PRESETS.items() if p.config and (folder / p.files["unet"]).is_file()]
    if len(found) > 1:
        names = ", ".join(f[0] for f in found)
        raise ResShiftError(f"{folder}: holds the weights of several official models ({names}); keep one denoiser "
                            "per folder")
    if not found:
        return None
    name, unet, ae = found[0]
    if not ae.is_file():
        raise ResShiftError(f"{folder}: {unet.name} needs its autoencoder {ae.name} beside it; download it there")
    return found[0]


def make_card(model: ResShiftModel, *, name: str, normalization: dict | None = None, **extra) -> dict:
    """The JSON model card stored with the weights."""
    return {
        "format": CARD_FORMAT,
        "version": 1,
        "name": name,
        "scale": model.scale,
        "mode": "latent" if model.autoencoder is not None else ("packed" if model.pack > 1 else "pixel"),
        "config": model.config,
        "normalization": normalization or {"mode": "range"},
        **extra,
    }


def read_card(path) -> dict:
    """The model card of a ``.safetensors`` file written by :func:`save_model`, read from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ResShiftError(f"{path}: not a readable safetensors file ({exc}); it may be truncated") from None
    try:
        card = json.loads(meta["card"])
    except (KeyError, json.JSONDecodeError):
        raise ResShiftError(f"{path}: no model card in this safetensors file; export it with training.finetune") from None
    if card.get("format") != CARD_FORMAT:
        raise ResShiftError(f"{path}: model card format {card.get('format')!r} is not {CARD_FORMAT!r}")
    return card


def load_project_model(path: Path) -> tuple[ResShiftModel, dict]:
    """A ``.safetensors`` file written by :func:`save_model`: the card is in its metadata."""
    state = read_state_dict(path)
    card = read_card(path)
    model = build_model(card["config"], source=path)
    unet = {k[5:]: v for k, v in state.items() if k.startswith("unet.")}
    load_weights(model.unet, unet or state, path=path, what="denoiser")
    if model.autoencoder is not None:
        ae = {k[12:]: v for k, v in state.items() if k.startswith("autoencoder.")}
        load_weights(model.autoencoder, ae, path=path, what="autoencoder")
    return model, card


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename, so a power cut cannot leave an empty file
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; a model or checkpoint is ordinary data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _weights(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if not k.endswith(DERIVED_BUFFERS)}


def save_model(model: ResShiftModel, path, card: dict, *, overwrite: bool = False) -> Path:
    """Project format: one safetensors file with the card in its metadata, plus the card as readable JSON."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ResShiftError(f"{path}: already exists; choose another name or allow overwriting")
    tensors = {f"unet.{k}": v for k, v in _weights(model.unet).items()}
    if model.autoencoder is not None:
        tensors |= {f"autoencoder.{k}": v for k, v in _weights(model.autoencoder).items()}
    meta = {"card": json.dumps(card)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    return path


def save_official(model: ResShiftModel, directory, *, overwrite: bool = False) -> Path:
    """The reference layout: plain state dicts ``unet.pth`` / ``autoencoder.pth`` and ``config.yaml``."""
    import yaml

    directory = Path(directory)
    if (directory / "unet.pth").exists() and not overwrite:
        raise ResShiftError(f"{directory}: already holds unet.pth; choose another folder or allow overwriting")
    config = json.loads(json.dumps(model.config))
    config["model"]["ckpt_path"] = "unet.pth"
    config["model"].setdefault("target", "models.unet.UNetModelSwin")
    sd = {k: v.detach().cpu() for k, v in model.unet.state_dict().items()}
    atomic_write(directory / "unet.pth", lambda tmp: torch.save(sd, tmp))
    if model.autoencoder is not None:
        config["autoencoder"]["ckpt_path"] = "autoencoder.pth"
        config["autoencoder"].setdefault("target", "ldm.models.autoencoder.VQModelTorch")
        ae = {k: v.detach().cpu() for k, v in model.autoencoder.state_dict().items()}
        atomic_write(directory / "autoencoder.pth", lambda tmp: torch.save(ae, tmp))
    atomic_write(directory / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(config, sort_keys=False)))
    return directory
