"""pipelines.upscale_zarr end to end on tiny generated images: every input kind, layout and dtype, OME metadata."""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_resshift.engine import Upscaler
from napari_resshift.loading import make_card, save_model
from napari_resshift.model import ResShiftModel
from napari_resshift.normalization import Normalization
from napari_resshift.registry import architecture
from pipelines import ome, upscale_zarr

from conftest import check_ome_zarr

TILE, OVERLAP = 16, 4


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    return str(save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors", make_card(model, name="tiny")))


def upscale(model_path, src, out, *extra):
    """Run the CLI in-process; return the level-0 array and the root attributes."""
    argv = [str(src), "-o", str(out), "--model", model_path, "--tile", str(TILE), "--overlap", str(OVERLAP), "--chunk", "1",
            "--quiet", "--seed", "3", *extra]
    assert upscale_zarr.main(argv) == 0
    group = zarr.open_group(str(out), mode="r")
    return group["0"][:], check_ome_zarr(out)


def engine_reference(model_path, plane, *, norm, plane_offset=0, rgb=False, channel_axis=None, dtype=None):
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))  # the CLI's setting: same threads, same bits
    up = Upscaler(model_path, device="cpu")
    return up.upscale(plane, seed=3, tile=TILE, overlap=OVERLAP, norm=norm, plane_offset=plane_offset, rgb=rgb,
                      channel_axis=channel_axis, dtype=dtype).image


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]:
        h.update(f.read_bytes())
    return h.hexdigest()


def image(shape, dtype, seed=0):
    x = np.random.default_rng(seed).random(shape)
    if np.dtype(dtype).kind == "f":
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return (info.min + x * (min(info.max, 30000) - info.min)).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_zarr_v3_dtypes_equal_the_engine(model_path, tmp_path, dtype):
    data = image((18, 22), dtype)
    src = tmp_path / "in.zarr"
    zarr.open_array(str(src), mode="w", shape=data.shape, chunks=(8, 8), dtype=dtype, zarr_format=3)[:] = data
    before = digest(src)
    out, attrs = upscale(model_path, src, tmp_path / "out.zarr")
    assert out.dtype == np.dtype(dtype) and out.shape == (72, 88)
    norm = Normalization.from_dict(attrs["resshift"]["params"]["normalization"])
    np.testing.assert_array_equal(out, engine_reference(model_path, data, norm=norm))
    assert digest(src) == before


def test_zarr_v2_zyx_with_axes_flag_and_float_output(model_path, tmp_path):
    data = image((2, 16, 17), "uint16")
    src = tmp_path / "in.zarr"
    zarr.open_array(str(src), mode="w", shape=data.shape, chunks=(1, 16, 16), dtype="uint16", zarr_format=2)[:] = data
    assert upscale_zarr.main([str(src), "-o", str(tmp_path / "x.zarr"), "--model", model_path, "--quiet"]) == 2
    out, attrs = upscale(model_path, src, tmp_path / "out.zarr", "--axes", "zyx", "--dtype", "float32", "--levels", "2")
    assert out.shape == (2, 64, 68) and out.dtype == np.float32
    norm = Normalization.from_dict(attrs["resshift"]["params"]["normalization"])
    ref = engine_reference(model_path, data[1], norm=norm, plane_offset=1, dtype=np.float32)
    np.testing.assert_array_equal(out[1], ref)
    level1 = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["1"][:]
    np.testing.assert_allclose(level1, out.reshape(2, 32, 2, 34, 2).mean((2, 4)), rtol=1e-6)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_tczyx_metadata_round_trip(model_path, tmp_path, version):
    """Scale / translation / units from the input's OME metadata; output pixel centres stay aligned."""
    data = image((1, 2, 1, 12, 14), "uint16")
    fmt = ome.pick_format(version)
    src = tmp_path / "in.ome.zarr"
    g = zarr.open_group(str(src), mode="w", zarr_format=fmt.zarr_format)
    g.create_array("0", shape=data.shape, chunks=(1, 1, 1, 12, 14), dtype="uint16")[:] = data
    units = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
    g.attrs.update(fmt.attrs(ome.multiscales(
        "tczyx", levels=1, scale={"t": 2.0, "z": 1.5, "y": 0.4, "x": 0.5}, units=units,
        translation={"y": 10.0, "x": -3.0}, name="in",
    )))
    out, attrs = upscale(model_path, src, tmp_path / "out.zarr", "--format", version)
    assert out.shape == (1, 2, 1, 48, 56)
    ms = ome.read_multiscales(attrs)
    assert ("ome" in attrs) == (version == "0.5")
    assert [a["name"] for a in ms["axes"]] == list("tczyx")
    assert ms["axes"][4]["unit"] == "micrometer" and ms["axes"][0]["unit"] == "second"
    scale, translation = (t[t["type"]] for t in ms["datasets"][0]["coordinateTransformations"])
    assert scale == [2.0, 1.0, 1.5, 0.1, 0.125]
    np.testing.assert_allclose(translation, [0, 0, 0, 10 - 0.4 * 3 / 8, -3 - 0.5 * 3 / 8])
    # first HR pixel centre + (s - 1) / 2 HR pixels = first LR pixel centre
    assert translation[3] + scale[3] * 1.5 == pytest.approx(10.0)
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"][3] == pytest.approx(0.2)
    # an independent reader agrees
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(tmp_path / "out.zarr")))()))
    assert node.data[0].shape == (1, 2, 1, 48, 56)
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == scale
    # channels are normalised separately and each is a plane of its own
    norm = Normalization.from_dict(attrs["resshift"]["params"]["normalization"])
    assert len(norm.low) == 2
    one = Normalization(norm.mode, (norm.low[1],), (norm.high[1],))
    ref = engine_reference(model_path, data[0, 1, 0], norm=one, plane_offset=1)
    np.testing.assert_array_equal(out[0, 1, 0], ref)


def test_tiff_and_ome_tiff(model_path, tmp_path):
    data = image((2, 14, 15), "uint16")
    src = tmp_path / "in.ome.tif"
    tifffile.imwrite(src, data, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3})
    before = digest(src)
    out, attrs = upscale(model_path, src, tmp_path / "out.zarr")
    assert out.shape == (2, 56, 60)
    ms = ome.read_multiscales(attrs)
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx([1.0, 0.075, 0.075])
    assert digest(src) == before
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, data[0], bigtiff=True)
    out, _ = upscale(model_path, big, tmp_path / "out2.zarr")
    assert out.shape == (56, 60)


@pytest.mark.parametrize("suffix, mode", [(".png", "RGBA"), (".jpg", "RGB"), (".png", "L")])
def test_pictures_rgb_and_gray(model_path, tmp_path, suffix, mode):
    from PIL import Image

    channels = {"RGBA": 4, "RGB": 3, "L": 1}[mode]
    data = image((15, 17, channels), "uint8")[..., : channels] if channels > 1 else image((15, 17), "uint8")
    if channels == 4:  # a real alpha: opaque but for a clear corner and its soft edge
        data[..., 3] = 255
        data[:4, :5, 3] = 0
        data[4, :6, 3] = 128
    src = tmp_path / f"in{suffix}"
    Image.fromarray(data, mode).save(src)
    out, attrs = upscale(model_path, src, tmp_path / "out.zarr")
    params = attrs["resshift"]["params"]
    if channels > 1:  # OME order puts channels first
        assert out.shape == (channels, 60, 68) and params["rgb"]
        norm = Normalization.from_dict(params["normalization"])
        stored = np.asarray(Image.open(src))
        ref = engine_reference(model_path, stored, norm=norm, rgb=True, channel_axis=2)
        np.testing.assert_array_equal(out, np.moveaxis(ref, -1, 0))
    else:
        assert out.shape == (60, 68)


def test_pyramidal_rgb_nir_tiff_goes_band_by_band(model_path, tmp_path):
    """A NAIP-like GeoTIFF: an overview level, and a near-infrared 4th sample tagged as alpha by its writer."""
    data = image((20, 18, 4), "uint8")
    pyramid, flat = tmp_path / "pyramid.tif", tmp_path / "flat.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(data, photometric="rgb", extrasamples=["unassalpha"], tile=(16, 16))
        tif.write(data[::2, ::2], photometric="rgb", extrasamples=["unassalpha"], subfiletype=1, tile=(16, 16))
    tifffile.imwrite(flat, data, photometric="rgb", extrasamples=["unassalpha"])
    out, attrs = upscale(model_path, pyramid, tmp_path / "pyramid.zarr")
    assert out.shape == (4, 80, 72) and not attrs["resshift"]["params"]["rgb"]  # the full-resolution level
    np.testing.assert_array_equal(out, upscale(model_path, flat, tmp_path / "flat.zarr")[0])
    forced, attrs = upscale(model_path, flat, tmp_path / "forced.zarr", "--rgb")
    assert attrs["resshift"]["params"]["rgb"]
    bicubic = torch.nn.functional.interpolate(torch.from_numpy(data[None, None, :, :, 3]).float(), scale_factor=4,
                                              mode="bicubic").clamp(0, 255).round()[0, 0].numpy()
    assert np.abs(forced[3] - bicubic).mean() < 1 < np.abs(out[3] - bicubic).mean()  # a band, not interpolated


def test_example_then_default_output_and_refusals(model_path, tmp_path, capsys, monkeypatch):
    demo = tmp_path / "demo.zarr"
    assert upscale_zarr.main(["--example", str(demo)]) == 0
    assert zarr.open_group(str(demo), mode="r")["0"].dtype == np.uint16
    check_ome_zarr(demo)
    from napari_resshift.registry import Preset

    monkeypatch.setattr(Preset, "packaged_path", lambda self: tmp_path / "missing.safetensors")
    code = upscale_zarr.main([str(demo), "--quiet"])
    assert code == 2 and "default model is not installed" in capsys.readouterr().err
    small = tmp_path / "small.zarr"
    zarr.open_array(str(small), mode="w", shape=(12, 12), dtype="uint16")[:] = 7
    upscale(model_path, small, tmp_path / "small_x4.ome.zarr")
    args = [str(small), "--model", model_path, "--quiet", "--tile", "16", "--overlap", "4", "--chunk", "1", "--seed", "3"]
    assert upscale_zarr.main(args) == 2  # default output exists now
    assert "already exists" in capsys.readouterr().err
    assert upscale_zarr.main(args + ["--resume"]) == 0 and "already complete" in capsys.readouterr().out
    assert upscale_zarr.main(args + ["--overwrite"]) == 0
    assert upscale_zarr.main(args + ["-o", str(small / "inside.zarr")]) == 2
    assert "inside" in capsys.readouterr().err


def _bad_inputs(tmp_path: Path, model_path: str) -> dict:
    one_d = tmp_path / "one_d.zarr"
    zarr.open_array(str(one_d), mode="w", shape=(10,), dtype="uint8")
    empty = tmp_path / "empty.zarr"
    zarr.open_array(str(empty), mode="w", shape=(0, 10), dtype="uint8")
    cube = tmp_path / "cube.zarr"
    zarr.open_array(str(cube), mode="w", shape=(5, 10, 10), dtype="uint8")
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    text = tmp_path / "notes.tif"
    text.write_text("not a tiff")
    pages = tmp_path / "pages.tif"
    tifffile.imwrite(pages, np.zeros((5, 10, 10), np.uint8), metadata=None)  # axes IYX: a sequence of what?
    unfinished = tmp_path / "unfinished.zarr"
    ome.mark_running(zarr.open_group(str(unfinished), mode="w"), {})
    return {
        "one_d": ([str(one_d)], "1-D"),
        "empty": ([str(empty)], "empty"),
        "unknown axes": ([str(cube)], "--axes"),
        "axes flag": ([str(cube), "--axes", "qyx"], "not understood"),
        "unnamed tiff axis": ([str(pages)], "here tyx or zyx or cyx"),
        "missing": ([str(tmp_path / "nope.zarr")], "no such file"),
        "unreadable": ([str(broken)], "cannot be read"),
        "not a tiff": ([str(text)], "cannot be read"),
        "unfinished output": ([str(unfinished)], "--resume"),
        "bad model": ([str(cube), "--axes", "zyx", "--model", str(tmp_path / "none.safetensors")], "no such"),
    }


def test_bad_inputs_are_one_clear_line(model_path, tmp_path, capsys):
    for name, (argv, words) in _bad_inputs(tmp_path, model_path).items():
        if "--model" not in argv:
            argv = argv + ["--model", model_path]
        assert upscale_zarr.main(argv + ["-o", str(tmp_path / "o.zarr"), "--quiet"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (name, err)
        assert not (tmp_path / "o.zarr").exists(), name


def test_nonfinite_inputs_are_reported_and_zeroed(model_path, tmp_path, capsys):
    data = image((14, 14), "float32")
    data[3, 4], data[5, 6] = np.nan, np.inf
    src = tmp_path / "nan.zarr"
    zarr.open_array(str(src), mode="w", shape=data.shape, dtype="float32")[:] = data
    out, _ = upscale(model_path, src, tmp_path / "out.zarr")
    assert "2 NaN/Inf" in capsys.readouterr().err and np.isfinite(out).all()


def test_full_disk_is_refused(model_path, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    src = tmp_path / "in.zarr"
    zarr.open_array(str(src), mode="w", shape=(12, 12), dtype="uint16")[:] = 1
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 100, 100))
    assert upscale_zarr.main([str(src), "-o", str(tmp_path / "o.zarr"), "--model", model_path, "--quiet"]) == 2
    assert "GB are free" in capsys.readouterr().err and not (tmp_path / "o.zarr").exists()
