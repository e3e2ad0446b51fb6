"""Shared fixtures: parity kits found through RESSHIFT_PARITY_DIRS (default ../shared/parity)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KIT = ROOT.parent / "shared" / "parity"


def kit_dirs() -> list[Path]:
    env = os.environ.get("RESSHIFT_PARITY_DIRS")
    if env:
        return [Path(p) for p in env.split(":") if p]
    return [DEFAULT_KIT] if DEFAULT_KIT.is_dir() else []


class Kit:
    """One parity kit directory: its configuration and golden arrays."""

    def __init__(self, path: Path):
        self.path = path
        self.config = json.loads((path / "config.json").read_text())
        self.meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}

    def npz(self, name: str) -> dict:
        with np.load(self.path / f"{name}.npz") as data:
            return {k: data[k] for k in data.files}

    def __repr__(self):
        return f"Kit({self.path})"


@pytest.fixture(params=kit_dirs() or [None], ids=lambda p: str(p) if p else "no-kit", scope="session")
def kit(request) -> Kit:
    if request.param is None:
        pytest.skip("no parity kit: set RESSHIFT_PARITY_DIRS or provide ../shared/parity")
    if not (request.param / "config.json").exists():
        pytest.skip(f"{request.param} is not a parity kit (no config.json)")
    return Kit(request.param)
