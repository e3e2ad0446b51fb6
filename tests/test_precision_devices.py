"""Automatic precision (half precision on CUDA, and bf16 on CPUs with native bf16, only where measured harmless;
fp32 otherwise) and one GPU per worker."""
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


def measured(**scores):
    return lambda m, d, size, precisions: {name: scores[name] for name in precisions}


def test_auto_is_a_measured_choice_on_cuda(model, monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(precision, "half_psnr", measured(bf16=38.0, fp16=44.0))
    assert precision.pick(model, cuda, size=16) == "fp16"
    monkeypatch.setattr(precision, "half_psnr", measured(bf16=39.9, fp16=12.0))
    assert precision.pick(model, cuda, size=16) == "fp32"
    monkeypatch.setattr(precision, "half_psnr", measured(bf16=40.0, fp16=50.0))
    assert precision.pick(model, cuda, size=16) == "bf16"


def test_auto_on_a_cpu_is_bf16_with_native_bf16_and_a_passing_tile_for_every_model(model, monkeypatch):
    cpu = torch.device("cpu")
    scores = precision.half_psnr(model, cpu, size=64, precisions=("bf16",))
    expected = "bf16" if precision.native_bf16() and scores["bf16"] >= precision.MIN_PSNR_DB else "fp32"
    assert Upscaler(model, device="cpu").precision == expected
    packed = ResShiftModel(architecture("tiny", mode="packed")).eval()
    monkeypatch.setattr(precision, "half_psnr", measured(bf16=60.0))
    monkeypatch.setattr(precision, "native_bf16", lambda: True)  # forced present: measured, and taken
    assert precision.pick(model, cpu, size=16) == "bf16"
    assert precision.pick(packed, cpu, size=16) == "bf16"
    assert Upscaler(packed, device="cpu").precision == "bf16"
    monkeypatch.setattr(precision, "half_psnr", measured(bf16=39.9))  # the calibration tile fails: fp32
    assert precision.pick(model, cpu, size=16) == "fp32" and precision.pick(packed, cpu, size=16) == "fp32"
    monkeypatch.setattr(precision, "native_bf16", lambda: False)  # forced absent: emulated, ~10x slower, unmeasured
    monkeypatch.setattr(precision, "half_psnr", None)
    assert precision.pick(model, cpu, size=16) == "fp32" and precision.pick(packed, cpu, size=16) == "fp32"
    assert Upscaler(packed, device="cpu").precision == "fp32"


def test_training_asks_the_same_capability_check(monkeypatch):
    from training import trainer

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(trainer, "native_bf16", precision.native_bf16)
    assert trainer.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(trainer, "native_bf16", lambda: False)
    assert trainer.resolve_precision("auto", cpu) == "fp32" and trainer.resolve_precision("bf16", cpu) == "bf16"
    assert trainer.native_bf16 is not None and "cpu_has_bf16" not in vars(trainer)


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
