"""Training checkpoints: atomic writes, safe reads, RNG state capture, and unwrapping compiled-model keys.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with ``weights_only=True``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from napari_resshift.errors import ResShiftError, first_line
from napari_resshift.loading import atomic_write

WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DataParallel wrappers


def save(state: dict, path: Path) -> None:
    """Atomic: the previous checkpoint survives any crash."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> dict:
    if not path.is_file():
        raise ResShiftError(f"{path}: no checkpoint here; was the run started with this folder as --run?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user problem
        raise ResShiftError(f"{path}: unreadable checkpoint ({first_line(exc)})") from None


def unwrap_keys(state: dict) -> dict:
    """Drop wrapper prefixes wherever they occur (``unet._orig_mod.x`` -> ``unet.x``)."""
    out = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.replace(prefix, "")
        out[key] = value
    return out


def rng_state() -> dict:
    """Global RNG states of python, numpy and torch (CPU and CUDA) as tensors and plain values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
