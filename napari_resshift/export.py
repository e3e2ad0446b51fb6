"""``python -m napari_resshift.export MODEL DIR``: a model as a BioImage.io model-zoo package (bioimageio.spec 0.5).

Owns the package: its description, the state dict of ``zoo_module.ZooUpscaler``, the engine-made test pair, the
documentation and the cover. Needs the ``bioimageio`` extra (``pip install napari-resshift[bioimageio]``).
"""
from __future__ import annotations

import argparse
import math
import string
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

from . import __version__
from .samples import cell_image
from .engine import Upscaler
from .errors import ResShiftError, run_cli
from .loading import atomic_write, load_model
from .model import ResShiftModel
from .normalization import DEFAULT_PERCENTILES
from .zoo_module import NORMALIZATION, ZooUpscaler

MARK = "napari-resshift"  # the key under ``config`` that marks a package as this program's output
RDF = "rdf.yaml"
CITATIONS = [
    ("Yue Z., Wang J., Loy C. C. ResShift: Efficient Diffusion Model for Image Super-resolution by Residual "
     "Shifting. NeurIPS 2023. arXiv:2307.12348", "10.48550/arXiv.2307.12348"),
    ("Yue Z., Wang J., Loy C. C. Efficient Diffusion Model for Image Restoration by Residual Shifting. "
     "IEEE TPAMI 2024. arXiv:2403.07319", "10.48550/arXiv.2403.07319"),
]
TAGS = ["super-resolution", "diffusion", "resshift", "image-restoration", "denoising", "2d", "pytorch",
        "microscopy", "napari", "napari-resshift"]
TEST_SIDE = 64  # LR pixels of the test image at least: small, so that a package tests in seconds
TEST_SEED = 1  # not 0: the specification refuses all-zero test tensors
NAME_CHARACTERS = set(string.ascii_letters + string.digits + "_+- ()")


def is_own_package(path: Path) -> bool:
    """Whether ``path`` (folder or .zip) holds a package this program wrote: its rdf.yaml carries our mark."""
    try:
        if path.is_dir():
            text = (path / RDF).read_text()
        else:
            with zipfile.ZipFile(path) as z:
                text = z.read(RDF).decode()
        return MARK in (yaml.safe_load(text).get("config") or {})
    except (OSError, KeyError, zipfile.BadZipFile, yaml.YAMLError, AttributeError):
        return False


def require_spec():
    """The bioimageio.spec 0.5 model module, or one line saying how to install it."""
    try:
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise ResShiftError("the BioImage.io export needs bioimageio.spec: "
                            "pip install 'napari-resshift[bioimageio]'") from None
    return v0_5


def check_package_path(path, *, overwrite: bool = False) -> Path:
    """The package path, refused when it holds anything but (with ``overwrite``) a package this program wrote."""
    require_spec()
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path
    own = is_own_package(path)
    if overwrite and own:
        return path
    raise ResShiftError(f"{path}: already holds {'a BioImage.io package' if own else 'files'}; choose a new folder "
                        "(or .zip)" + (" or allow overwriting" if own else ""))


def input_size(upscaler: Upscaler) -> tuple[int, int]:
    """(min, step) of the LR sides: outputs must outlive their cropped halo; steps of the model's pad multiple."""
    step = upscaler.model.pad_multiple
    return math.ceil((2 * upscaler.halo + 1) / step) * step, step


def make_test_image(side: int, *, rgb: bool) -> np.ndarray:
    """float32 [C, side, side]: the plugin's generated cells (three differently seeded fields for RGB)."""
    planes = [cell_image(size=side, seed=7 + c) for c in range(3 if rgb else 1)]
    return np.stack(planes).astype(np.float32)


def cover(lr: np.ndarray, hr: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the input (nearest-neighbour x4) beside the output, on the input's percentile window."""
    from PIL import Image

    low, high = np.percentile(lr, (0.5, 99.8))
    up = lr.repeat(hr.shape[-2] // lr.shape[-2], -2).repeat(hr.shape[-1] // lr.shape[-1], -1)
    both = np.concatenate([up, hr], -1)
    both = np.clip((both - low) / (high - low) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(both[0] if both.shape[0] == 1 else np.moveaxis(both, 0, -1)).save(path)


def package_name(card: dict) -> str:
    """The zoo's name: its characters only, and within the 64 it recommends."""
    name = "".join(c if c in NAME_CHARACTERS else "-" for c in str(card.get("name", "custom")))[:30]
    return f"ResShift x{card.get('scale', 4)} super-resolution ({name})"


def documentation(card: dict, *, steps: int, halo: int, scale: int, tile: int, overlap: int, seed: int,
                  rgb: bool) -> str:
    """The package's README.md: what goes in and out, how, how to validate, what to cite, the weights' sources."""
    training = card.get("training") or {}
    trained = (f"Trained for {training['iterations']} iterations on {training.get('degradation', 'its data')}."
               if training.get("iterations") else "")
    summary = " ".join([str(card.get("description") or f"A ResShift x{scale} super-resolution model").rstrip(".")
                        + ".", trained]).strip()
    channels = "RGB, upscaled as one triplet" if rgb else "one channel (multichannel images: channel by channel)"
    low, high = DEFAULT_PERCENTILES
    sources = training.get("licence_note")
    citations = "\n".join(f"- {text} (doi:{doi})" for text, doi in CITATIONS)
    return f"""# {package_name(card)}

{summary}
Exported by napari-resshift {__version__} from its model `{card.get('name', 'custom')}` ({card.get('mode')} mode).

## Inputs and outputs

- `image`: (batch, channel, y, x), float32, any intensity units; {channels}.
- `seed`: (batch,), int64: the sampler's noise. The same image and seed give the same output.
- `upscaled`: (batch, channel, {scale}y, {scale}x), float32, in the input's intensity units.

The module runs napari-resshift's own engine. Per image and channel, the {low} and {high} percentiles map to
[-1, 1], the model's range, and back. The image is cut into tiles of {tile} px overlapping by {overlap} px; each
is sampled in {steps} diffusion steps with position-keyed noise, and the tiles are blended. The normalisation is
inside the module: mapping the output back needs the input's percentiles, which no processing step of the
specification provides. The halo, {halo} input px ({halo * scale} output px), is the denoiser's receptive field:
crop that much from each side of an output tile when tiling outside the module.

The weights are a `pytorch_state_dict` of `napari_resshift.zoo_module.ZooUpscaler`; the environment that runs
them needs napari-resshift (`pip install napari-resshift`).

## Validation

The test output is napari-resshift's result for the included generated cell image with seed {seed};
`bioimageio test {RDF}` recreates it. To validate the model on your own data, reduce high-resolution images
{scale}x by area averaging, upscale them with this model and compare with the originals (PSNR, SSIM), next to
bicubic interpolation.

## Citation

{citations}

## Licence

The code is BSD-3-Clause (napari-resshift).{f' Training data: {sources}.' if sources else ''}
"""


def environment() -> str:
    return yaml.safe_dump({
        "name": "napari-resshift",
        "channels": ["conda-forge", "nodefaults"],
        "dependencies": ["python>=3.10", "pip", f"pytorch>={torch.__version__.split('+')[0]}",
                         {"pip": [f"napari-resshift>={__version__}"]}],
    }, sort_keys=False)


def tensors(bio, stage: Path, *, rgb: bool, size: tuple[int, int], scale: int, halo: int) -> tuple[list, list]:
    """Input (``image``, ``seed``) and output (``upscaled``) descriptions, with the test tensors in ``stage``."""
    channels = [bio.Identifier(c) for c in (("red", "green", "blue") if rgb else ("gray",))]
    low, step = size
    space = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=low, step=step)) for a in "yx"]
    up = [bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), scale=1 / scale, halo=halo * scale,
                                      size=bio.SizeReference(tensor_id=bio.TensorId("image"), axis_id=a))
          for a in "yx"]
    def tensor(kind, name: str, test: str, dtype: str, description: str, axes: list):
        return kind(id=bio.TensorId(name), description=description, axes=[bio.BatchAxis(), *axes],
                    test_tensor=bio.FileDescr(source=stage / f"{test}.npy"),
                    data=bio.IntervalOrRatioDataDescr(type=dtype))

    channel = bio.ChannelAxis(channel_names=channels)
    inputs = [tensor(bio.InputTensorDescr, "image", "test_input", "float32", "image in any intensity units",
                     [channel, *space]),
              tensor(bio.InputTensorDescr, "seed", "test_seed", "int64", "the sampler's noise seed, one per image", [])]
    outputs = [tensor(bio.OutputTensorDescr, "upscaled", "test_output", "float32",
                      f"x{scale} image in the input's intensity units", [channel, *up])]
    return inputs, outputs


def export_package(model: ResShiftModel, card: dict, path, *, seed: int = TEST_SEED, rgb: bool = False,
                   overwrite: bool = False) -> Path:
    """Write ``model`` as a BioImage.io package: a folder, or a zip file when ``path`` ends in .zip."""
    if seed == 0:
        raise ResShiftError("seed 0 cannot be a test input: the specification refuses all-zero test tensors; "
                            "choose another seed")
    path = check_package_path(path, overwrite=overwrite)
    bio = require_spec()
    from bioimageio.spec import ValidationContext, save_bioimageio_package, save_bioimageio_package_as_folder

    upscaler = Upscaler(model, card=card, device="cpu")
    scale, halo = upscaler.scale, upscaler.halo
    tile, overlap = upscaler.tiling()
    low, step = input_size(upscaler)
    side = low + step * math.ceil(max(0, TEST_SIDE - low) / step)
    lr = make_test_image(side, rgb=rgb)
    hr = upscaler.upscale(lr, channel_axis=0, rgb=rgb, seed=seed, norm=NORMALIZATION, dtype=np.float32).image
    kwargs = {"config": model.config, "name": str(card.get("name", "custom")), "tile": tile, "overlap": overlap,
              "rgb": rgb}
    module = ZooUpscaler(**kwargs)
    module.model.load_state_dict(model.state_dict())

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        np.save(stage / "test_input.npy", lr[None])
        np.save(stage / "test_seed.npy", np.array([seed], np.int64))
        np.save(stage / "test_output.npy", hr[None])
        torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, stage / "weights.pt")
        (stage / "README.md").write_text(
            documentation(card, steps=model.schedule.steps, halo=halo, scale=scale, tile=tile, overlap=overlap,
                          seed=seed, rgb=rgb))
        (stage / "environment.yaml").write_text(environment())
        cover(lr, hr, stage / "cover.png")

        with ValidationContext(root=stage, perform_io_checks=True):
            inputs, outputs = tensors(bio, stage, rgb=rgb, size=(low, step), scale=scale, halo=halo)
            descr = bio.ModelDescr(
                name=package_name(card),
                description=(f"ResShift x{scale} diffusion super-resolution, {model.schedule.steps} steps: "
                             + str(card.get("description") or card.get("name", "custom"))),
                authors=[bio.Author(name="napari-resshift developers")],
                cite=[bio.CiteEntry(text=text, doi=bio.Doi(doi)) for text, doi in CITATIONS],
                license=bio.LicenseId("BSD-3-Clause"),
                tags=TAGS,
                documentation=bio.FileDescr(source=stage / "README.md"),
                covers=[bio.FileDescr(source=stage / "cover.png")],
                inputs=inputs,
                outputs=outputs,
                weights=bio.WeightsDescr(pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                    source=stage / "weights.pt",
                    architecture=bio.ArchitectureFromLibraryDescr(
                        callable=bio.Identifier(ZooUpscaler.__name__), import_from=ZooUpscaler.__module__,
                        kwargs=kwargs),
                    pytorch_version=bio.Version(torch.__version__.split("+")[0]),
                    dependencies=bio.FileDescr(source=stage / "environment.yaml"))),
                config={MARK: {"version": __version__, "model": card.get("name", "custom"), "seed": seed,
                               "normalization": {"mode": NORMALIZATION, "percentiles": list(DEFAULT_PERCENTILES),
                                                 "scope": "per image and channel"},
                               "tile": tile, "overlap": overlap, "halo": halo}},
            )
        if path.suffix.lower() == ".zip":  # through a temporary file: a failed export leaves an older package intact
            atomic_write(path, lambda tmp: save_bioimageio_package(descr, output_path=Path(tmp)))
        else:
            save_bioimageio_package_as_folder(descr, output_path=path)
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m napari_resshift.export",
                                description="Write a model as a BioImage.io model-zoo package (bioimageio.spec 0.5).")
    p.add_argument("model", help="a shipped model name (default, clean) or a model path")
    p.add_argument("path", help="the package folder, or a .zip file")
    p.add_argument("--autoencoder", help="the autoencoder file of an official .pth denoiser")
    p.add_argument("--preset", default="v3", help="official preset of an official .pth (default v3)")
    p.add_argument("--rgb", action="store_true", help="an RGB package (channels upscaled as one triplet); "
                                                      "default: one channel")
    p.add_argument("--seed", type=int, default=TEST_SEED, help=f"seed of the test output (default {TEST_SEED})")
    p.add_argument("--overwrite", action="store_true", help="replace a package this command wrote before")
    return p


def run(argv=None) -> int:
    opts = parser().parse_args(argv)
    model, card = load_model(opts.model, autoencoder=opts.autoencoder, preset=opts.preset)
    path = export_package(model, card, opts.path, seed=opts.seed, rgb=opts.rgb, overwrite=opts.overwrite)
    print(f"exported: {path}")
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv, interrupted="interrupted: the package may be incomplete; export it again")


if __name__ == "__main__":
    sys.exit(main())
