"""Automatic precision (fp32 on a CPU; half precision on CUDA only where measured harmless) and one GPU per worker."""
import math

import pytest
import torch

from napari_resshift import precision
from napari_resshift.engine import Upscaler
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture
from pipelines import execute


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResShiftModel(architecture("tiny")).eval()


def test_auto_is_fp32_on_the_cpu_and_a_measured_choice_on_cuda(model, monkeypatch):
    assert Upscaler(model, device="cpu").precision == "fp32"
    cuda = torch.device("cuda")
    monkeypatch.setattr(precision, "half_psnr", lambda m, d, size: {"bf16": 38.0, "fp16": 44.0})
    assert precision.pick(model, cuda, size=16) == "fp16"
    monkeypatch.setattr(precision, "half_psnr", lambda m, d, size: {"bf16": 39.9, "fp16": 12.0})
    assert precision.pick(model, cuda, size=16) == "fp32"
    monkeypatch.setattr(precision, "half_psnr", lambda m, d, size: {"bf16": 40.0, "fp16": 50.0})
    assert precision.pick(model, cuda, size=16) == "bf16"
    assert precision.pick(model, torch.device("cpu"), size=16) == "fp32"


def test_the_measurement_compares_half_precision_with_fp32(model):
    scores = precision.half_psnr(model, torch.device("cpu"), size=16, precisions=("bf16",))  # CPUs autocast bf16
    assert 10 < scores["bf16"] < math.inf  # different, and close
    a = precision.calibration_tile(24)
    assert a.shape == (1, 3, 24, 24) and a.abs().max() <= 1 and torch.equal(a, precision.calibration_tile(24))
    assert precision.psnr(a, a) == math.inf and abs(precision.psnr(a, a + 0.02) - 10 * math.log10(4 / 0.0004)) < 1e-3


def test_each_worker_takes_its_own_gpu(monkeypatch):
    assert execute.worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert execute.worker_device("auto") == "auto"  # not in a dask worker: the default device
    import distributed

    monkeypatch.setattr(distributed, "get_worker", lambda: type("W", (), {"name": 4})())
    assert execute.worker_device("cuda") == "cuda:1" and execute.worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert execute.worker_device("cuda") == "cuda"
