"""The upscaling command line as a new user meets it: model names, official presets, --steps and the output's name."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

from napari_resshift import registry
from napari_resshift.loading import make_card, save_model, save_official
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import Preset, architecture
from pipelines import ome, upscale_zarr
from pipelines.example import write_example

FAST = ["--tile", "16", "--overlap", "4", "--chunk", "1", "--quiet"]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return ResShiftModel(architecture("tiny")).eval()


@pytest.fixture(scope="module")
def tiny_path(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return str(save_model(tiny_model, path, make_card(tiny_model, name="tiny")))


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "scan.zarr"
    zarr.open_array(str(path), mode="w", shape=(20, 24), dtype="uint16")[:] = (
        np.random.default_rng(0).integers(0, 4000, (20, 24)))
    return path


def params(output) -> dict:
    return zarr.open_group(str(output), mode="r").attrs.asdict()[ome.MARKER]["params"]


def test_unknown_model_lists_the_valid_names_in_one_line(small):
    proc = subprocess.run([sys.executable, "-m", "pipelines.upscale_zarr", str(small), "--model", "nosuchmodel"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("error: unknown model 'nosuchmodel'")
    assert "default" in err and "clean" in err and "v3" in err
    assert not (small.parent / "scan_x4.ome.zarr").exists()


def test_official_preset_asks_for_a_folder_of_its_published_files(small, tmp_path, tiny_model, monkeypatch, capsys):
    files = {"unet": "tiny_official_s4.pth", "autoencoder": "tiny_vq.pth"}
    monkeypatch.setitem(registry.PRESETS, "tinyoff", Preset("tinyoff", "a tiny stand-in", architecture("tiny"), files))
    assert upscale_zarr.main([str(small), "--model", "tinyoff", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tiny_official_s4.pth and tiny_vq.pth in one folder" in err
    assert "--autoencoder" not in err  # this command has no such option
    weights = tmp_path / "weights"
    save_official(tiny_model, weights)
    (weights / "config.yaml").unlink()
    (weights / "unet.pth").rename(weights / files["unet"])
    assert upscale_zarr.main([str(small), "--model", str(weights), *FAST]) == 2  # the autoencoder is not there yet
    assert "needs its autoencoder tiny_vq.pth" in capsys.readouterr().err
    (weights / "autoencoder.pth").rename(weights / files["autoencoder"])
    out = tmp_path / "official.ome.zarr"
    assert upscale_zarr.main([str(small), "--model", str(weights), "-o", str(out), *FAST]) == 0
    assert params(out)["model_name"] == "tinyoff" and zarr.open_array(str(out / "0")).shape == (80, 96)


def test_steps_are_used_recorded_and_kept_by_resume(small, tmp_path, tiny_path, capsys):
    four, three = tmp_path / "four.ome.zarr", tmp_path / "three.ome.zarr"
    assert upscale_zarr.main([str(small), "--model", tiny_path, "-o", str(four), *FAST]) == 0
    assert upscale_zarr.main([str(small), "--model", tiny_path, "-o", str(three), "--steps", "3", *FAST]) == 0
    assert params(four)["steps"] == 4 and params(three)["steps"] == 3
    assert not np.array_equal(zarr.open_array(str(four / "0"))[:], zarr.open_array(str(three / "0"))[:])
    resumed = [str(small), "--model", tiny_path, "-o", str(three), "--resume", *FAST]
    assert upscale_zarr.main(resumed + ["--steps", "5"]) == 2 and "steps" in capsys.readouterr().err
    assert upscale_zarr.main(resumed + ["--steps", "3"]) == 0


@pytest.mark.parametrize("steps, words", [("8", "trained for exactly 4 steps"), ("1", "at least 2 steps")])
def test_steps_the_model_cannot_take_are_one_line(small, steps, words, tiny_path, capsys):
    model = [] if steps == "8" else ["--model", tiny_path]  # the shipped default has one embedding per step
    assert upscale_zarr.main([str(small), "--steps", steps, *model, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err


def test_output_is_named_after_the_input_and_the_models_scale(tmp_path, tiny_path):
    pytest.importorskip("napari")
    from napari_resshift._napari._reader import read_ome_zarr

    demo = write_example(tmp_path / "demo.zarr", height=24, width=24)
    assert upscale_zarr.main([str(demo), "--model", tiny_path, *FAST]) == 0
    out = tmp_path / "demo_x4.ome.zarr"
    assert ome.read_multiscales(zarr.open_group(str(out), mode="r").attrs.asdict())["name"] == "example mosaic x4"
    ((_, kwargs, _),) = read_ome_zarr(str(out))
    assert kwargs["name"] == "example mosaic x4"  # the napari layer, beside the input's "example mosaic"
    plain = tmp_path / "scan.ome.tif"
    import tifffile

    tifffile.imwrite(plain, np.zeros((16, 16), np.uint8))
    assert upscale_zarr.main([str(plain), "--model", tiny_path, *FAST]) == 0
    assert ome.read_multiscales(zarr.open_group(str(tmp_path / "scan_x4.ome.zarr"), mode="r").attrs.asdict())[
        "name"] == "scan x4"
