"""Position-keyed noise: a pure function of (seed, plane, draw, channel, position), whatever the cut, with the
statistics of independent standard normals."""
import pytest
import torch

from napari_resshift import noise
from napari_resshift.noise import positional_noise


def field(seed=0, plane=0, draw=0, channels=4, origins=((0, 0),), h=96, w=80, **kw):
    return positional_noise(seed=seed, plane=plane, draw=draw, channels=channels, origins=list(origins), h=h, w=w,
                            **kw)


def test_windows_batches_and_bands_cut_the_same_field():
    big = field(h=96, w=80)[0]
    windows = field(origins=[(5, 7), (40, 0), (0, 33)], h=24, w=31)
    for got, (y, x) in zip(windows, [(5, 7), (40, 0), (0, 33)]):
        assert torch.equal(got, big[:, y:y + 24, x:x + 31])
    assert torch.equal(field(h=96, w=80)[0], big)  # the same on a second call


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 30])  # one row per pass ... the whole batch in one (the GPU's)
def test_cpu_bands_do_not_change_the_values(monkeypatch, chunk):
    whole = field(channels=3, origins=[(3, 11), (50, 2)], h=40, w=33)
    monkeypatch.setattr(noise, "CHUNK", chunk)
    assert torch.equal(field(channels=3, origins=[(3, 11), (50, 2)], h=40, w=33), whole)


def test_a_channel_does_not_depend_on_the_channel_count_and_keys_differ():
    many = field(channels=48, h=32, w=32)
    assert torch.equal(field(channels=3, h=32, w=32), many[:, :3])
    assert many.is_contiguous(memory_format=torch.channels_last)  # the CPU engine's layout
    for other in ({"seed": 1}, {"plane": 1}, {"draw": 1}, {"seed": -1}, {"seed": 2**40}):
        changed = field(channels=48, h=32, w=32, **other)
        assert torch.corrcoef(torch.stack([changed.flatten(), many.flatten()]))[0, 1].abs() < 0.02


def test_statistics_of_independent_standard_normals():
    z = field(seed=3, channels=8, h=256, w=256)[0]  # 524k values
    n = z.numel()
    assert abs(z.mean()) < 5 / n**0.5 and abs(z.std() - 1) < 0.005
    assert abs((z**4).mean() - 3) < 0.05  # Gaussian kurtosis
    assert abs((z.abs() > 3).float().mean() - 0.0027) < 0.0006
    neighbours = {
        "x": (z[:, :, 1:], z[:, :, :-1]),
        "y": (z[:, 1:], z[:, :-1]),
        "channel pair (cos, sin)": (z[0::2], z[1::2]),
        "next pair": (z[1:-1:2], z[2::2]),
        "diagonal": (z[:, 1:, 1:], z[:, :-1, :-1]),
    }
    for name, (a, b) in neighbours.items():
        assert abs((a * b).mean()) < 0.01, name
        assert abs((a**2 * b**2).mean() - 1) < 0.03, name  # independent, not only uncorrelated (the shared radius)
    # rows and columns are hashed apart and then together: no structure across 2 x 2 quads
    quad = z[:, :-1, :-1] * z[:, 1:, 1:] * z[:, :-1, 1:] * z[:, 1:, :-1]
    assert abs(quad.mean()) < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu_within_float_rounding():
    cpu = field(channels=48, origins=[(0, 0), (1000, 4000)], h=128, w=128)
    cuda = field(channels=48, origins=[(0, 0), (1000, 4000)], h=128, w=128, device="cuda")
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-5)
