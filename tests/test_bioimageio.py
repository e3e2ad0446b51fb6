"""BioImage.io export: the default model's package validates offline, the engine reproduces its test output, the
module built from its weights does too (bioimageio.core's test_model where installed), and training exports one."""
import socket
import zipfile

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("bioimageio.spec")

from bioimageio.spec import load_description  # noqa: E402

from napari_resshift import export, zoo_module  # noqa: E402
from napari_resshift.engine import Upscaler  # noqa: E402
from napari_resshift.errors import ResShiftError  # noqa: E402
from napari_resshift.loading import load_model  # noqa: E402
from training import finetune  # noqa: E402


def refuse(*args, **kwargs):
    raise OSError("the tests run offline")


@pytest.fixture(scope="module")
def offline():
    """Any network connection fails: validation and tests must not need one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield


@pytest.fixture(scope="module")
def package(offline, tmp_path_factory):
    model, card = load_model("default")
    return export.export_package(model, card, tmp_path_factory.mktemp("zoo") / "default")


def arrays(path, *names):
    return [np.load(path / f"{name}.npy") for name in names]


def engine_output(upscaler: Upscaler, image: np.ndarray, seed: int, *, rgb: bool = False) -> np.ndarray:
    return upscaler.upscale(image, channel_axis=0, rgb=rgb, seed=seed, norm="percentile", dtype=np.float32).image


def test_default_package_validates_offline_with_halo_scale_citation_and_licence(package):
    descr = load_description(package / export.RDF, perform_io_checks=True)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    upscaler = Upscaler("default", device="cpu")
    image, seed = descr.inputs
    assert [a.id for a in image.axes] == ["batch", "channel", "y", "x"] and [a.id for a in seed.axes] == ["batch"]
    assert seed.dtype == "int64" and image.dtype == "float32"
    low = image.axes[2].size.min
    for axis in descr.outputs[0].axes[2:]:
        assert axis.scale == 1 / upscaler.scale and axis.halo == upscaler.halo * upscaler.scale == 200
        assert axis.size.tensor_id == "image" and axis.size.axis_id == axis.id
        assert upscaler.scale * low - 2 * axis.halo >= 1  # the smallest input outlives its cropped halo
    assert {str(c.doi) for c in descr.cite} == {"10.48550/arXiv.2307.12348", "10.48550/arXiv.2403.07319"}
    assert descr.license == "BSD-3-Clause" and [a.name for a in descr.authors] == ["napari-resshift developers"]
    assert "super-resolution" in descr.tags and descr.covers and descr.documentation is not None
    weights = descr.weights.pytorch_state_dict
    assert weights.architecture.import_from == "napari_resshift.zoo_module"
    assert weights.architecture.callable == "ZooUpscaler"


def test_the_engine_reproduces_the_test_output_and_the_seed_matters(package):
    image, seed, expected = arrays(package, "test_input", "test_seed", "test_output")
    assert image.shape[:2] == (1, 1) and expected.shape == (1, 1, 4 * image.shape[2], 4 * image.shape[3])
    upscaler = Upscaler("default", device="cpu")
    got = engine_output(upscaler, image[0], int(seed[0]))
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))
    other = engine_output(upscaler, image[0], int(seed[0]) + 1)
    assert np.abs(other - expected[0]).max() > 1e-3 * float(np.abs(expected).max())


def test_the_module_from_the_package_weights_reproduces_it_per_seed(package):
    rdf = yaml.safe_load((package / export.RDF).read_text())
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    module = getattr(zoo_module, arch["callable"])(**arch["kwargs"])
    module.load_state_dict(torch.load(package / "weights.pt", weights_only=True))  # strict: every weight there
    image, seed, expected = arrays(package, "test_input", "test_seed", "test_output")
    crop = image[..., 5:, 3:]  # a second image: the same content, another size
    with torch.no_grad():
        out = module(torch.from_numpy(image), torch.from_numpy(seed)).numpy()
        pair = module(torch.from_numpy(np.concatenate([crop, crop])), torch.tensor([3, 4])).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))
    upscaler = Upscaler("default", device="cpu")
    for got, s in zip(pair, (3, 4)):
        np.testing.assert_allclose(got, engine_output(upscaler, crop[0], s), rtol=1e-5, atol=1e-3)
    assert np.abs(pair[0] - pair[1]).max() > 1.0


def test_bioimageio_core_test_model_passes(package, offline):
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(package / export.RDF)
    assert summary.status == "passed", summary.format()


def test_occupied_targets_and_a_zero_seed_are_refused_with_one_line(package, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert export.main(["default", str(foreign)]) == 2
    assert export.main(["default", str(package)]) == 2  # ours, but overwriting was not asked for
    assert export.main(["default", str(foreign), "--overwrite"]) == 2  # not ours: never replaced
    assert export.main(["default", str(tmp_path / "new"), "--seed", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "already holds files" in lines[0] and "allow overwriting" in lines[1] and "seed 0" in lines[3]
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and not (tmp_path / "new").exists()


def test_an_rgb_zip_package_of_a_tiny_model_validates_and_reproduces(tiny_model_path, tmp_path, offline):
    model, card = load_model(tiny_model_path)
    path = export.export_package(model, card, tmp_path / "tiny.zip", rgb=True, seed=5)
    descr = load_description(path, perform_io_checks=True)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    assert descr.inputs[0].axes[1].channel_names == ["red", "green", "blue"]
    with zipfile.ZipFile(path) as z:
        z.extractall(tmp_path / "unzipped")
    image, expected = arrays(tmp_path / "unzipped", "test_input", "test_output")
    got = engine_output(Upscaler(tiny_model_path, device="cpu"), image[0], 5, rgb=True)
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))
    assert export.is_own_package(path)


def test_a_zip_name_in_capitals_is_a_zip_package(tiny_model_path, tmp_path, offline, capsys):
    """``pkg.ZIP`` is a zip file, as ``pkg.zip`` is, not a folder of that name."""
    assert export.main([tiny_model_path, str(tmp_path / "pkg.ZIP")]) == 0
    path = tmp_path / "pkg.ZIP"
    assert path.is_file() and zipfile.is_zipfile(path) and export.is_own_package(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg.ZIP"]  # no temporary file left
    assert export.main([tiny_model_path, str(path)]) == 2  # ours, but overwriting was not asked for
    assert export.main([tiny_model_path, str(path), "--overwrite"]) == 0 and zipfile.is_zipfile(path)


def tiny_run(images, run, *extra) -> list[str]:
    return ["--data", str(images), "--run", str(run), "--init", "scratch", "--arch", "tiny", "--mode", "packed",
            "--crop", "64", "--batch", "2", "--iterations", "2", "--val-fraction", "0", "--val-every", "0",
            "--no-tensorboard", *extra]


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(2):
        wave = 0.5 + 0.4 * np.sin(xx / (3.0 + i)) * np.cos(yy / 4.0 - i)
        Image.fromarray((np.stack([wave] * 3, -1) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_training_exports_a_package_of_the_trained_weights(images, tmp_path, offline):
    zoo = tmp_path / "zoo"
    outcome = finetune.train(tiny_run(images, tmp_path / "run", "--export-bioimageio", str(zoo)))
    descr = load_description(zoo / export.RDF, perform_io_checks=True)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    image, seed, expected = arrays(zoo, "test_input", "test_seed", "test_output")
    got = engine_output(Upscaler(outcome.path, device="cpu"), image[0], int(seed[0]))
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))


def test_training_refuses_an_occupied_package_path_before_it_starts(images, tmp_path):
    occupied = tmp_path / "zoo"
    occupied.mkdir()
    (occupied / "data.tif").write_bytes(b"not ours")
    with pytest.raises(ResShiftError, match="already holds files"):
        finetune.train(tiny_run(images, tmp_path / "run", "--export-bioimageio", str(occupied)))
    assert not (tmp_path / "run").exists() and (occupied / "data.tif").read_bytes() == b"not ours"
