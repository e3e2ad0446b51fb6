"""The widget's Qt-free parts: output placement, the consistency map, running statistics, out-of-core axes."""
import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Image  # noqa: E402

from napari_resshift._napari import _big_layers, _consistency, _in_memory, _job, _output_layers  # noqa: E402
from napari_resshift.errors import ResShiftError  # noqa: E402


@pytest.mark.parametrize("rotate", [0.0, 30.0])
def test_hr_block_centre_maps_to_its_lr_pixel(rotate):
    layer = Image(np.zeros((3, 10, 12)), scale=(4.0, 0.5, 2.0), translate=(7.0, 1.0, -3.0), rotate=rotate)
    s = 4
    place = _output_layers.geometry(_job.layer_state(layer), scale=s, stack_ndim=1, plane=None)
    out = Image(np.zeros((3, 40, 48)), **place)
    for z, y, x in [(0, 0, 0), (2, 9, 11), (1, 4, 7)]:
        centre = (z, s * y + (s - 1) / 2, s * x + (s - 1) / 2)
        np.testing.assert_allclose(out.data_to_world(centre), layer.data_to_world((z, y, x)), atol=1e-9)
    if rotate == 0.0:  # the formula: t − scale·(s−1)/(2s) on the spatial axes
        np.testing.assert_allclose(place["translate"], [7.0, 1.0 - 0.5 * 3 / 8, -3.0 - 2.0 * 3 / 8])
        np.testing.assert_allclose(place["scale"], [4.0, 0.125, 0.5])


def test_single_plane_is_placed_at_its_own_position():
    layer = Image(np.zeros((5, 8, 8)), scale=(3.0, 1.0, 1.0))
    place = _output_layers.geometry(_job.layer_state(layer), scale=2, stack_ndim=1, plane=(4,))
    assert place["translate"][0] == 12.0


def test_area_downsample_is_the_block_mean_in_row_slices():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65535, (300 * 4, 8 * 4), dtype=np.uint16)  # more rows than one slice
    down = _consistency.area_downsample(image, 4)
    np.testing.assert_allclose(down, image.reshape(300, 4, 8, 4).mean(axis=(1, 3)), rtol=1e-6)
    rgb = rng.random((8, 12, 4)).astype(np.float32)
    lr = rng.random((2, 3, 4)).astype(np.float32)
    cons = _consistency.consistency_map(rgb, lr, scale=4, rgb=True)
    expected = np.abs(rgb.reshape(2, 4, 3, 4, 4).mean(axis=(1, 3)) - lr)[..., :3].mean(-1)
    np.testing.assert_allclose(cons, expected, rtol=1e-5)


def test_running_mean_and_std_match_numpy():
    samples = np.random.default_rng(1).normal(5, 2, (6, 4, 4)).astype(np.float32)
    stats = _in_memory.Welford()
    for s in samples:
        stats.add(s)
    np.testing.assert_allclose(stats.mean, samples.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std(), samples.std(0, ddof=1), rtol=1e-4)


def test_current_plane_job_follows_the_viewer_step():
    layer = Image(np.zeros((2, 3, 8, 8), np.uint8))
    job = _job.make_job(layer, current_step=(1, 2, 0, 0), whole_stack=False)
    assert job.planes == [(1, 2)] and job.stack_ndim == 2 and job.plane_shape == (8, 8)
    assert len(_job.make_job(layer, whole_stack=True).planes) == 6


def test_out_of_core_axes_names():
    def job(shape, labels=None, rgb=False):
        layer = Image(np.zeros(shape, np.uint8), rgb=rgb, axis_labels=labels)
        return _job.make_job(layer)

    assert _big_layers.axes_of(job((8, 8))) == "yx"
    assert _big_layers.axes_of(job((2, 8, 8))) == "zyx"
    assert _big_layers.axes_of(job((2, 3, 8, 8), labels=("t", "c", "y", "x"))) == "zcyx"
    assert _big_layers.axes_of(job((2, 8, 8, 3), rgb=True)) == "zyxc"
    with pytest.raises(ResShiftError, match="at most two"):
        _big_layers.axes_of(job((2, 2, 2, 8, 8)))


def test_labels_and_tiny_layers_are_refused():
    from napari.layers import Labels

    with pytest.raises(ResShiftError, match="labels layer"):
        _job.check_layer(Labels(np.zeros((8, 8), int), name="mask"))
    with pytest.raises(ResShiftError, match="1×8 pixels"):
        _job.check_layer(Image(np.zeros((1, 8)), name="strip"))


def test_the_core_imports_nothing_from_the_napari_front_end():
    import ast
    from pathlib import Path

    import napari_resshift

    root = Path(napari_resshift.__file__).parent
    for path in root.rglob("*.py"):
        if "_napari" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}"] + [a.name for a in node.names]
            assert not any("_napari" in n or n.split(".")[0] == "napari" for n in names), (path.name, names)
