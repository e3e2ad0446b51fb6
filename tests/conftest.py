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


def check_ome_zarr(path) -> dict:
    """Every OME-Zarr output of the tests: valid for ome-zarr-models, and read back by ome-zarr-py with the same
    level-0 shape and transforms. Returns the root attributes.
    """
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from pipelines import ome

    model = ome.validate(path)
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    ms = ome.read_multiscales(attrs)
    assert type(model).__name__ == "Image" and model.ome_zarr_version == ("0.5" if "ome" in attrs else "0.4")
    node = next(iter(Reader(parse_url(str(path)))()))
    group = zarr.open_group(str(path), mode="r")
    assert node.data[0].shape == group[ms["datasets"][0]["path"]].shape
    assert node.metadata["coordinateTransformations"][0] == ms["datasets"][0]["coordinateTransformations"]
    return attrs


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """The tiny random ResShift the pipeline tests run (fast, deterministic)."""
    import torch

    from napari_resshift.loading import make_card, save_model
    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import architecture

    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    return str(save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors", make_card(model, name="tiny")))


@pytest.fixture
def messages():
    """(severity, message) of every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    seen = []

    def keep(event):
        seen.append((str(event.severity), str(event.message)))

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)


def check_overlay(viewer, lr_path, hr_path, *, scale: int) -> None:
    """Both OME-Zarrs read with ome-zarr-py into napari (pytest-napari's `make_napari_viewer()`, which keeps the
    plugin registry per test) with their own scale and translation: the output's pixel corners and centres land where
    the input's do in world coordinates."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    layers = []
    for path in (lr_path, hr_path):
        node = next(iter(Reader(parse_url(str(path)))()))
        transform, translation = node.metadata["coordinateTransformations"][0]
        data = node.data if len(node.data) > 1 else node.data[0]
        layers.append(viewer.add_image(data, multiscale=len(node.data) > 1, scale=transform["scale"],
                                       translate=translation["translation"]))
    lr, hr = layers
    h, w = (lr.data[0] if lr.multiscale else lr.data).shape[-2:]
    centre = (scale - 1) / 2  # an input pixel's centre in output pixels, past its block's first one
    pairs = [([-0.5, -0.5], [-0.5, -0.5]), ([h - 0.5, w - 0.5], [scale * h - 0.5, scale * w - 0.5]),
             ([3, 5], [3 * scale + centre, 5 * scale + centre])]
    for a, b in pairs:
        np.testing.assert_allclose(lr.data_to_world(a), hr.data_to_world(b))
