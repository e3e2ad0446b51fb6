"""Physical metadata through the pipeline: OME-TIFF units, ImageJ calibration, GeoTIFF georeferencing, OME-Zarr
multiscale transforms and omero, TIFF outputs, batch inputs; every output validated (conftest.check_ome_zarr).
"""
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from pipelines import ome, readers, upscale_zarr

from conftest import check_ome_zarr

FLAGS = ["--tile", "16", "--overlap", "4", "--chunk", "1", "--quiet", "--levels", "2"]
EPSG_UTM33N = 32633
GEOKEYS = [1, 1, 0, 4, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, EPSG_UTM33N, 3076, 0, 1, 9001]  # projected, area, m


def run(model, src, out, *extra) -> dict:
    assert upscale_zarr.main([str(src), "-o", str(out), "--model", model, *FLAGS, *extra]) == 0
    return check_ome_zarr(out)


def level0(attrs) -> tuple[list[str], list[float], list[float], dict]:
    ms = ome.read_multiscales(attrs)
    scale, translation = (t[t["type"]] for t in ms["datasets"][0]["coordinateTransformations"])
    return [a["name"] for a in ms["axes"]], scale, translation, {a["name"]: a.get("unit") for a in ms["axes"]}


def omero_of(attrs) -> dict:
    return (attrs.get("ome") or attrs)["omero"]


def pixels(shape, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 4000).astype(np.uint16)


@pytest.mark.parametrize("symbol, name", [("nm", "nanometer"), ("µm", "micrometer"), ("cm", "centimeter"),
                                          ("Å", "angstrom")])
def test_ome_tiff_units_and_channel_names(tiny_model_path, tmp_path, symbol, name):
    src = tmp_path / "in.ome.tif"
    tifffile.imwrite(src, pixels((2, 12, 14)), ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 0.8, "PhysicalSizeY": 0.6, "PhysicalSizeXUnit": symbol,
        "PhysicalSizeYUnit": symbol, "Channel": {"Name": ["DAPI", "GFP"]},
    })
    attrs = run(tiny_model_path, src, tmp_path / "out.ome.zarr")
    axes, scale, translation, units = level0(attrs)
    assert axes == ["c", "y", "x"] and units == {"c": None, "y": name, "x": name}
    np.testing.assert_allclose(scale, [1, 0.15, 0.2])
    np.testing.assert_allclose(translation, [0, -0.6 * 3 / 8, -0.8 * 3 / 8])
    assert [c["label"] for c in omero_of(attrs)["channels"]] == ["DAPI", "GFP"]


def test_tiff_output_of_a_microscopy_image_is_a_pyramidal_ome_tiff(tiny_model_path, tmp_path):
    src = tmp_path / "in.ome.tif"
    data = pixels((2, 12, 14))
    tifffile.imwrite(src, data, ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 0.8, "PhysicalSizeY": 0.6, "PhysicalSizeXUnit": "Å",
        "PhysicalSizeYUnit": "Å", "Channel": {"Name": ["DAPI", "GFP"]}})
    out = tmp_path / "out.tif"
    assert upscale_zarr.main([str(src), "-o", str(out), "--model", tiny_model_path, *FLAGS]) == 0
    again = readers.open_input(out)
    assert again.axes == "cyx" and again.units == {"y": "angstrom", "x": "angstrom"}
    assert again.scale == pytest.approx({"y": 0.15, "x": 0.2}) and [c["label"] for c in again.channels] == ["DAPI",
                                                                                                            "GFP"]
    reference = tmp_path / "out.ome.zarr"
    run(tiny_model_path, src, reference)
    np.testing.assert_array_equal(again.array[:], zarr.open_group(str(reference), mode="r")["0"][:])
    with tifffile.TiffFile(out) as t:
        assert t.is_bigtiff and t.pages[0].is_tiled and t.series[0].levels[1].shape == (2, 24, 28)


def test_ome_tiff_unit_outside_ngff_is_converted(tiny_model_path, tmp_path):
    src = tmp_path / "in.ome.tif"
    tifffile.imwrite(src, pixels((12, 12)), ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0, "PhysicalSizeXUnit": "thou",
        "PhysicalSizeYUnit": "thou"})
    _, scale, _, units = level0(run(tiny_model_path, src, tmp_path / "out.ome.zarr"))
    assert units["x"] == "meter" and scale[1] == pytest.approx(2 * 25.4e-6 / 4)


def test_imagej_hyperstack_calibration(tiny_model_path, tmp_path):
    """Fiji's TIFF: pixels per unit in X/YResolution, z step in ``spacing``, the unit escaped (\\u00B5m), Ranges."""
    src = tmp_path / "fiji.tif"
    tifffile.imwrite(src, pixels((2, 2, 12, 13)), imagej=True, resolution=(1 / 0.2, 1 / 0.25),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "\\u00B5m", "Ranges": (0, 100, 5, 200)})
    attrs = run(tiny_model_path, src, tmp_path / "out.ome.zarr")
    axes, scale, translation, units = level0(attrs)
    assert axes == ["c", "z", "y", "x"] and units == {"c": None, "z": "micrometer", "y": "micrometer",
                                                      "x": "micrometer"}
    np.testing.assert_allclose(scale, [1, 1.5, 0.25 / 4, 0.2 / 4])
    np.testing.assert_allclose(translation[2:], [-0.25 * 3 / 8, -0.2 * 3 / 8])
    windows = [c["window"] for c in omero_of(attrs)["channels"]]
    assert [(w["start"], w["end"]) for w in windows] == [(0, 100), (5, 200)]


def write_geotiff(path: Path, data: np.ndarray, *, corner=(500000.0, 5000000.0), pixel=10.0, keys=GEOKEYS) -> Path:
    gdal = ('<GDALMetadata><Item name="DESCRIPTION" sample="0" role="description">red</Item>'
            '<Item name="DESCRIPTION" sample="1" role="description">nir</Item></GDALMetadata>')
    tifffile.imwrite(path, data, planarconfig="separate", photometric="minisblack", extratags=[
        (33550, "d", 3, (pixel, pixel, 0.0), True), (33922, "d", 6, (0, 0, 0, *corner, 0), True),
        (34735, "H", len(keys), keys, True), (42112, "s", 0, gdal, True)])
    return path


def test_geotiff_crs_transform_and_bands_into_ome_zarr_and_back_to_geotiff(tiny_model_path, tmp_path):
    data = pixels((2, 12, 16))
    src = write_geotiff(tmp_path / "scene.tif", data)
    attrs = run(tiny_model_path, src, tmp_path / "out.ome.zarr")
    geo = attrs["geo"]
    assert geo["crs"]["epsg"] == EPSG_UTM33N and geo["crs"]["units"] == "meter" and geo["bands"] == ["red", "nir"]
    assert geo["transform"] == [2.5, 0.0, 500000.0, 0.0, -2.5, 5000000.0]  # same outer corner, pixels / 4
    axes, scale, translation, units = level0(attrs)
    assert units["x"] == units["y"] == "meter" and scale == [1.0, 2.5, 2.5]
    # first output pixel centre: half an output pixel inside the corner; y is northing negated (rows grow south)
    np.testing.assert_allclose(translation, [0, -(5000000 - 1.25), 500000 + 1.25])
    assert [c["label"] for c in omero_of(attrs)["channels"]] == ["red", "nir"]

    tif = tmp_path / "scene_x4.tif"
    assert upscale_zarr.main([str(src), "-o", str(tif), "--model", tiny_model_path, *FLAGS]) == 0
    assert not (tmp_path / "scene_x4.tif.partial.ome.zarr").exists()
    with tifffile.TiffFile(tif) as t:
        keys, page = t.geotiff_metadata, t.pages[0]
        assert t.is_bigtiff and page.is_tiled and int(keys["ProjectedCSTypeGeoKey"]) == EPSG_UTM33N
        assert tuple(page.tags[34735].value) == tuple(GEOKEYS)  # the CRS keys verbatim
        np.testing.assert_array_equal(t.series[0].asarray(), zarr.open_group(str(tmp_path / "out.ome.zarr"))["0"][:])
        assert t.series[0].levels[1].shape == (2, 24, 32)
        sx, sy, _ = keys["ModelPixelScale"]
        _, _, _, x0, y0, _ = keys["ModelTiepoint"]
        assert "red" in page.tags[42112].value
    # the pixel-centre rule: input pixel (i, j)'s centre is output pixel (4i + 1.5, 4j + 1.5)'s
    for i, j in [(0, 0), (5, 7), (11, 15)]:
        assert (x0 + (4 * j + 1.5 + 0.5) * sx, y0 - (4 * i + 1.5 + 0.5) * sy) == pytest.approx(
            (500000 + (j + 0.5) * 10, 5000000 - (i + 0.5) * 10))
    assert upscale_zarr.main([str(src), "-o", str(tif), "--model", tiny_model_path, *FLAGS]) == 2  # exists
    assert upscale_zarr.main([str(src), "-o", str(tif), "--model", tiny_model_path, *FLAGS, "--resume"]) == 0


def test_pixel_is_point_geotiff_keeps_its_convention(tiny_model_path, tmp_path):
    """GTRasterTypeGeoKey = PixelIsPoint: the tiepoint is the first pixel's centre, in the input and in the output."""
    keys = GEOKEYS[:8] + [1025, 0, 1, 2] + GEOKEYS[12:]
    src = write_geotiff(tmp_path / "points.tif", pixels((2, 12, 16)), keys=keys)
    attrs = run(tiny_model_path, src, tmp_path / "out.ome.zarr")
    assert attrs["geo"]["raster_type"] == "point"
    assert attrs["geo"]["transform"] == [2.5, 0.0, 500000.0 - 5, 0.0, -2.5, 5000000.0 + 5]  # corner-based
    np.testing.assert_allclose(level0(attrs)[2][1:], [-(5000000 + 5 - 1.25), 500000 - 5 + 1.25])
    tif = tmp_path / "points_x4.tif"
    assert upscale_zarr.main([str(src), "-o", str(tif), "--model", tiny_model_path, *FLAGS]) == 0
    with tifffile.TiffFile(tif) as t:
        assert int(t.geotiff_metadata["GTRasterTypeGeoKey"]) == 2
        assert t.geotiff_metadata["ModelTiepoint"][3:5] == pytest.approx([500000 - 5 + 1.25, 5000000 + 5 - 1.25])


def test_ome_zarr_multiscale_level_transform_and_omero(tiny_model_path, tmp_path):
    src = tmp_path / "in.ome.zarr"
    group = zarr.open_group(str(src), mode="w", zarr_format=3)
    group.create_array("0", shape=(2, 12, 14), chunks=(1, 12, 14), dtype="uint16")[:] = pixels((2, 12, 14))
    ms = ome.multiscales("cyx", levels=1, scale={"y": 2.0, "x": 2.0}, translation={"y": 1.0, "x": 1.0},
                         units={"y": "micrometer", "x": "micrometer"}, name="in")
    ms["coordinateTransformations"] = [{"type": "scale", "scale": [1.0, 0.1, 0.1]},
                                       {"type": "translation", "translation": [0.0, 5.0, -2.0]}]
    channels = [{"label": "nuclei", "color": "0000FF", "window": {"min": 0, "max": 65535, "start": 10, "end": 900}},
                {"label": "actin", "color": "00FF00", "window": {"min": 0, "max": 65535, "start": 20, "end": 800}}]
    group.attrs.update(ome.pick_format("0.5").attrs(ms, omero={"channels": channels}))
    for version in ("0.4", "0.5"):
        attrs = run(tiny_model_path, src, tmp_path / f"out{version}.ome.zarr", "--format", version)
        _, scale, translation, units = level0(attrs)
        # the input's pixels are 2 * 0.1 = 0.2 um with centres at 1 * 0.1 + 5 = 5.1 (y) and 1 * 0.1 - 2 = -1.9 (x)
        np.testing.assert_allclose(scale, [1, 0.05, 0.05])
        np.testing.assert_allclose(translation, [0, 5.1 - 0.2 * 3 / 8, -1.9 - 0.2 * 3 / 8])
        assert units["x"] == "micrometer"
        assert [{k: c[k] for k in ("label", "color", "window")} for c in omero_of(attrs)["channels"]] == channels
        assert ome.read_multiscales(attrs)["type"] == "local_mean"
    assert (tmp_path / "out0.4.ome.zarr" / "0" / "0" / "0" / "0").is_file()  # '/' chunk keys, as ome-zarr-py writes


def test_bioformats2raw_layout_names_the_image_to_pass(tiny_model_path, tmp_path, capsys):
    src = tmp_path / "b2r.ome.zarr"
    root = zarr.open_group(str(src), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    image = root.create_group("0")
    image.create_array("0", shape=(12, 12), dtype="uint16")[:] = np.arange(144, dtype=np.uint16).reshape(12, 12)
    image.attrs.update(ome.pick_format("0.4").attrs(ome.multiscales("yx", levels=1, scale={}, translation={},
                                                                    units={}, name="series 0")))
    assert upscale_zarr.main([str(src), "-o", str(tmp_path / "o.zarr"), "--model", tiny_model_path, *FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bioformats2raw" in err and str(src / "0") in err
    run(tiny_model_path, src / "0", tmp_path / "o.zarr")


def test_unknown_output_extension_is_one_line(tiny_model_path, tmp_path, capsys):
    src = tmp_path / "in.zarr"
    zarr.open_array(str(src), mode="w", shape=(12, 12), dtype="uint16")
    assert upscale_zarr.main([str(src), "-o", str(tmp_path / "out.png"), "--model", tiny_model_path, *FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and ".tif" in err and not (tmp_path / "out.png").exists()


def test_folder_and_glob_of_inputs_one_output_each_resumable(tiny_model_path, tmp_path, capsys, monkeypatch):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    for k in range(2):
        tifffile.imwrite(inputs / f"s{k}.tif", pixels((12, 12), seed=k))
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "up"
    assert upscale_zarr.main([str(inputs), "-o", str(out), "--model", tiny_model_path, *FLAGS]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s0_x4.ome.zarr", "s1_x4.ome.zarr"]
    for p in out.iterdir():
        check_ome_zarr(p)
    run(tiny_model_path, inputs / "s0.tif", tmp_path / "one.zarr")
    np.testing.assert_array_equal(zarr.open_group(str(out / "s0_x4.ome.zarr"))["0"][:],
                                  zarr.open_group(str(tmp_path / "one.zarr"))["0"][:])
    capsys.readouterr()
    tifffile.imwrite(inputs / "s2.tif", pixels((12, 12), seed=2))
    pattern = str(inputs / "s*.tif")
    assert upscale_zarr.main([pattern, "-o", str(out), "--model", tiny_model_path, *FLAGS, "--resume"]) == 0
    assert capsys.readouterr().out.count("already complete") == 2 and (out / "s2_x4.ome.zarr").is_dir()
    # outputs written beside their inputs are never taken for inputs by the next batch
    assert upscale_zarr.main([str(inputs), "--model", tiny_model_path, *FLAGS]) == 0
    assert upscale_zarr.main([str(inputs), "--model", tiny_model_path, *FLAGS, "--resume"]) == 0
    assert sorted(p.name for p in inputs.glob("*_x4*")) == [f"s{k}_x4.ome.zarr" for k in range(3)]
