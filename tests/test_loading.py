"""Model loading: official layout round trip, wrapper/prefix variants, and one clear line per bad checkpoint."""
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from napari_resshift.errors import ResShiftError
from napari_resshift.loading import load_model, load_official, make_card, read_state_dict, save_model, save_official
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    model = ResShiftModel(architecture("tiny")).eval()
    for p in model.parameters():  # zero-initialised layers would hide wiring mistakes
        p.data.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def official_dir(tiny, tmp_path_factory):
    return save_official(tiny, tmp_path_factory.mktemp("official"))


def sample(model, seed=3):
    lq = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return model.super_resolve(lq, generator=torch.Generator().manual_seed(seed))


def test_official_round_trip_is_exact(tiny, official_dir, tmp_path):
    loaded, card = load_model(official_dir)
    assert card["scale"] == 4
    assert torch.equal(sample(loaded), sample(tiny))
    again = save_official(loaded, tmp_path / "again")
    for name in ("unet.pth", "autoencoder.pth"):
        a = torch.load(official_dir / name, weights_only=True)
        b = torch.load(again / name, weights_only=True)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the official layout loads strictly into fresh networks, derived buffers included
    fresh = ResShiftModel(architecture("tiny"))
    fresh.unet.load_state_dict(torch.load(official_dir / "unet.pth", weights_only=True), strict=True)
    fresh.autoencoder.load_state_dict(torch.load(official_dir / "autoencoder.pth", weights_only=True), strict=True)


def test_project_format_round_trip(tiny, tmp_path):
    card = make_card(tiny, name="tiny", provenance={"test": True})
    path = save_model(tiny, tmp_path / "m.safetensors", card)
    loaded, card2 = load_model(path)
    assert card2["name"] == "tiny" and card2["provenance"] == {"test": True}
    assert json.loads((tmp_path / "m.json").read_text())["name"] == "tiny"
    assert torch.equal(sample(loaded), sample(tiny))
    with pytest.raises(ResShiftError, match="already exists"):
        save_model(tiny, path, card)


@pytest.mark.parametrize("mode", ["pixel", "packed"])
def test_pixel_mode_round_trip(tmp_path, mode):
    model = ResShiftModel(architecture("tiny", mode=mode)).eval()
    assert model.autoencoder is None
    save_official(model, tmp_path)
    loaded, card = load_model(tmp_path)
    assert card["mode"] == mode
    assert torch.equal(sample(loaded), sample(model))


def test_packed_mode_is_lossless_pixel_diffusion():
    """Packing 4x4 blocks into channels is a permutation: decode(encode(x)) == x, the denoiser runs at LR size."""
    model = ResShiftModel(architecture("tiny", mode="packed")).eval()
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    z = model.encode(hr)
    assert z.shape == (2, 48, 16, 16) and torch.equal(model.decode(z), hr)
    assert torch.equal(torch.sort(z.flatten(1)).values, torch.sort(hr.flatten(1)).values)
    assert model.latent_factor == 1 and model.pad_multiple == 16


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"_orig_mod." + k: v for k, v in sd.items()},
        lambda sd: {"state_dict": {"module._orig_mod." + k: v for k, v in sd.items()}},
    ],
    ids=["plain", "state_dict", "module", "orig_mod", "wrapped-module-orig_mod"],
)
def test_wrapper_and_prefix_variants_load(tiny, official_dir, tmp_path, wrap):
    sd = torch.load(official_dir / "unet.pth", weights_only=True)
    torch.save(wrap(sd), tmp_path / "unet.pth")
    (tmp_path / "autoencoder.pth").write_bytes((official_dir / "autoencoder.pth").read_bytes())
    (tmp_path / "config.yaml").write_text((official_dir / "config.yaml").read_text())
    loaded, _ = load_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.unet.parameters(), tiny.unet.parameters()))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/resshift-pwned",))


def bad_checkpoints(official_dir, tmp_path):
    """(name, path of a bad denoiser file, expected message fragment)."""
    sd = torch.load(official_dir / "unet.pth", weights_only=True)
    ae = torch.load(official_dir / "autoencoder.pth", weights_only=True)
    key = next(k for k in sd if k.endswith("weight"))
    cases = {
        "missing-file": (tmp_path / "nope.pth", "no such file"),
        "empty": (b"", "empty"),
        "truncated": ((official_dir / "unet.pth").read_bytes()[:5000], "truncated"),
        "not-a-checkpoint": (b"hello, I am a text file\n" * 10, "not a PyTorch checkpoint"),
        "pickle-with-code": (pickle.dumps({"x": Evil()}), "pickled code"),
        "torch-save-of-code": (Evil(), "pickled code"),
        "other-architecture": (ae, "not a denoiser checkpoint"),
        "missing-keys": ({k: v for k, v in sd.items() if k != key}, "missing"),
        "extra-keys": (sd | {"extra.weight": torch.zeros(3)}, "unexpected"),
        "shape-mismatch": (sd | {key: torch.zeros(7, 7)}, "has shape"),
        "nan-weights": (sd | {key: torch.full_like(sd[key], float("nan"))}, "NaN"),
        "not-a-state-dict": ([1, 2, 3], "not a state dict"),
        "no-tensors": ({"epoch": 3}, "no weight tensors"),
    }
    for name, (content, msg) in cases.items():
        path = tmp_path / f"{name}.pth"
        if name == "missing-file":
            path = content
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, Evil):
            path.write_bytes(pickle.dumps(content))
        else:
            torch.save(content, path)
        yield name, path, msg


def test_bad_checkpoints_give_one_line(official_dir, tmp_path):
    seen = 0
    for name, path, msg in bad_checkpoints(official_dir, tmp_path):
        with pytest.raises(ResShiftError) as err:
            load_official(path, official_dir / "autoencoder.pth", config=architecture("tiny"))
        text = str(err.value)
        assert "\n" not in text, name
        assert msg in text, f"{name}: {text}"
        seen += 1
    assert seen >= 10
    assert not os.path.exists("/tmp/resshift-pwned"), "a pickle with code was executed"


def test_bad_safetensors_and_configs(official_dir, tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ResShiftError, match="safetensors"):
        load_model(tmp_path / "bad.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "nocard.safetensors"))
    with pytest.raises(ResShiftError, match="no model card"):
        load_model(tmp_path / "nocard.safetensors")
    with pytest.raises(ResShiftError, match="unknown official preset"):
        load_model(official_dir / "unet.pth", preset="v9")
    with pytest.raises(ResShiftError, match="needs the official weights"):
        load_model("v3")
    with pytest.raises(ResShiftError, match="autoencoder file"):
        load_official(official_dir / "unet.pth", config=architecture("tiny"))
    (tmp_path / "cfgdir").mkdir()
    (tmp_path / "cfgdir" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ResShiftError, match="not a valid configuration"):
        load_model(tmp_path / "cfgdir")


def test_read_state_dict_strips_prefix_from_first_key_only(tmp_path):
    torch.save({"module.a": torch.ones(1), "module.b": torch.zeros(1)}, tmp_path / "x.pth")
    assert set(read_state_dict(tmp_path / "x.pth")) == {"a", "b"}
