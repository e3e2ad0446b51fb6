"""The crash-and-bad-input campaign as a table: every bad input to the pipeline CLI, the training CLI, the export CLI
and the Python API is refused with exit code 2 (or a ``ResShiftError``) and one line naming the problem, with no
warning or log line before it, nothing left behind, the inputs byte-identical, and no pickled or YAML code ever run.
The good inputs of the same campaigns (batches, TIFF outputs, resumes) are a second table: exit 0, only the notes
they announce, nothing half-written left, the inputs byte-identical.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile
import torch
import zarr
from PIL import Image

from napari_resshift import export
from napari_resshift.engine import Upscaler
from napari_resshift.errors import ResShiftError
from napari_resshift.loading import load_model, make_card, read_config, save_model
from napari_resshift.model import ResShiftModel
from napari_resshift.outofcore import Layout
from napari_resshift.registry import architecture
from pipelines import checks, ome, readers, tiff_output, upscale_zarr
from pipelines.example import write_example
from training import finetune

ROOT = Path(__file__).resolve().parents[1]
TILING = ["--tile", "16", "--overlap", "4", "--chunk", "1", "--seed", "3"]
MARKER = "EXECUTED"  # created by the code in a malicious pickle or YAML file if it ever runs


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    return str(save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors", make_card(model, name="tiny")))


@pytest.fixture(scope="module")
def finished(model_path, tmp_path_factory) -> Path:
    """A finished output of this pipeline (of a 24x24 input, seed 3), copied by the cases that need one."""
    root = tmp_path_factory.mktemp("finished")
    src = Env(root, model_path).zarr_input()
    assert upscale_zarr.main([str(src), "-o", str(root / "done.ome.zarr"), "--model", model_path, *TILING,
                              "--quiet"]) == 0
    assert upscale_zarr.main([str(src), "-o", str(root / "done.tif"), "--model", model_path, *TILING, "--quiet"]) == 0
    return root


class Env:
    """A case's folder: builders of inputs (good and bad) and the argument lists of the CLIs."""

    def __init__(self, root: Path, model: str, finished: Path | None = None):
        self.root, self.model, self.finished = root, model, finished
        self.out = root / "out.ome.zarr"
        self.marker = root / MARKER
        self.cleanups: list[Callable[[], None]] = []

    # -- inputs ---------------------------------------------------------------------------------------------------
    def zarr_input(self, name="in.zarr", shape=(24, 24), dtype="uint16", chunks=(8, 8), fmt=3, data=True) -> Path:
        path = self.root / name
        array = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, zarr_format=fmt)
        if data:
            array[:] = (np.random.default_rng(0).random(shape) * 200 + 1).astype(dtype)
        return path

    def chunk_file(self, src: Path, fmt=3) -> Path:
        return src / "c" / "1" / "1" if fmt == 3 else src / "1.1"

    def missing_chunk(self, fmt=3) -> Path:
        src = self.zarr_input(fmt=fmt)
        self.chunk_file(src, fmt).unlink()
        return src

    def truncated_chunk(self, fmt=3) -> Path:
        src = self.zarr_input(fmt=fmt)
        chunk = self.chunk_file(src, fmt)
        chunk.write_bytes(chunk.read_bytes()[:7])
        return src

    def tiff(self, name="in.tif", shape=(24, 24), cut: int | None = None, **kw) -> Path:
        path = self.root / name
        tifffile.imwrite(path, (np.random.default_rng(0).random(shape) * 60000).astype(np.uint16), **kw)
        if cut is not None:
            path.write_bytes(path.read_bytes()[:cut])
        return path

    def damaged_tiff_tag(self) -> Path:
        """A TIFF whose strip offsets tag is garbled: tifffile logs what it finds, then fails."""
        path = self.tiff(shape=(64, 64))
        data = bytearray(path.read_bytes())
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags["StripOffsets"]
            offset = tag.offset
        data[offset + 2:offset + 4] = b"\xff\x7f"  # a wrong field type
        path.write_bytes(bytes(data))
        return path

    def file(self, name: str, content: bytes = b"") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def picture(self, name="in.png", cut: int | None = None) -> Path:
        path = self.root / name
        Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)).save(path)
        if cut is not None:
            path.write_bytes(path.read_bytes()[:cut])
        return path

    def ome_group(self, *, attrs: dict, name="img.ome.zarr") -> Path:
        path = self.root / name
        group = zarr.open_group(str(path), mode="w")
        group.create_array("0", shape=(24, 24), chunks=(24, 24), dtype="uint16")[:] = 5
        group.attrs.update(attrs)
        return path

    def finished_output(self, name="done.ome.zarr") -> Path:
        shutil.copytree(self.finished / "done.ome.zarr", self.root / name)
        shutil.copytree(self.finished / "in.zarr", self.root / "in.zarr", dirs_exist_ok=True)
        return self.root / name

    def unfinished_output(self, name="done.ome.zarr", *, with_done_dir=True) -> Path:
        """What a kill leaves: level 0 partly written, the marker saying running."""
        path = self.finished_output(name)
        group = zarr.open_group(str(path), mode="r+")
        params = group.attrs.asdict()[ome.MARKER]["params"]
        group.attrs.put({ome.MARKER: {"status": "running", "params": params}})
        if with_done_dir:
            (path / ".resshift-done").mkdir()
            (path / ".resshift-done" / "0.0.0").touch()
        return path

    def finished_tiff(self, name="done.tif") -> Path:
        """A finished TIFF output of this pipeline (of in.zarr, seed 3), with its input."""
        shutil.copy2(self.finished / "done.tif", self.root / name)
        shutil.copytree(self.finished / "in.zarr", self.root / "in.zarr", dirs_exist_ok=True)
        return self.root / name

    def killed_tiff_run(self, name="o.tif", *, in_final_write=False) -> Path:
        """What a kill of a TIFF run leaves: its intermediate OME-Zarr unfinished, or finished with the TIFF being
        written (``in_final_write``: a half-written ``.partial`` file beside it)."""
        target = self.root / name
        staging = self.root / (name + ".partial.ome.zarr")
        if in_final_write:
            self.finished_output(staging.name)
            tiff_output.partial_path(target).write_bytes(b"II*\x00half a TIFF")
        else:
            self.unfinished_output(staging.name)
        return target

    def folder(self, name: str, files: dict[str, tuple]) -> Path:
        """A folder of small uint16 TIFFs, ``{file name: shape}``; a shape of () writes a file that is no TIFF."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, (file, shape) in enumerate(files.items()):
            if shape:
                data = (np.random.default_rng(k).random(shape) * 60000).astype(np.uint16)
                tifffile.imwrite(folder / file, data)
            else:
                (folder / file).write_bytes(b"not an image")
        return folder

    def geotiff(self, name="geo.tif", *, tiepoints=(0, 0, 0, 500000, 5000000, 0), scale=(10.0, 10.0, 0.0),
                keys=(1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)) -> Path:
        path = self.root / name
        tags = [(33922, "d", len(tiepoints), tuple(tiepoints), True), (34735, "H", len(keys), tuple(keys), True)]
        tags += [(33550, "d", 3, tuple(scale), True)] if scale else []
        tifffile.imwrite(path, (np.random.default_rng(0).random((24, 24)) * 60000).astype(np.uint16), extratags=tags)
        return path

    def full_disk(self, free: int) -> None:
        """``free`` bytes free on every disk, until the case ends."""
        from collections import namedtuple

        usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
        shutil.disk_usage = lambda _path: usage(10**12, 10**12 - free, free)
        self.cleanups.append(lambda: setattr(shutil, "disk_usage", real))

    def evil_pickle(self, name="evil.pth", *, zipped=False) -> Path:
        path = self.root / name
        payload = _Executes(str(self.marker))
        if zipped:
            torch.save({"weight": payload}, path)
        else:
            path.write_bytes(pickle.dumps(payload))
        return path

    def evil_yaml(self, name="config.yaml") -> Path:
        return self.file(name, f"model: !!python/object/apply:os.system ['touch {self.marker}']\n"
                               "diffusion: {}\n".encode())

    def readonly_dir(self) -> Path:
        folder = self.root / "readonly"
        folder.mkdir()
        if os.geteuid() != 0:
            folder.chmod(0o555)
            self.cleanups.append(lambda: folder.chmod(0o755))
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            self.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=True))
        else:
            pytest.skip("cannot make a read-only folder here (root without chattr)")
        return folder

    def images(self, name="images", count=2) -> Path:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        for i in range(count):
            Image.fromarray((np.random.default_rng(i).random((72, 72, 3)) * 255).astype(np.uint8)).save(
                folder / f"im{i}.png")
        return folder

    def run_folder(self, *, checkpoint=False, **options) -> Path:
        """A training run folder as a run killed before (or after) its first checkpoint leaves it."""
        run = self.root / "run"
        run.mkdir()
        images = self.images()
        opts = finetune.DEFAULTS | {"data": [str(images)], "run": str(run), "crop": 64, "batch": 2} | options
        files = {"train": [str(p) for p in sorted(images.glob("*.png"))], "val": [], "degradations": {}}
        (run / "run.json").write_text(json.dumps({"options": opts, "files": files}))
        if checkpoint:
            (run / "checkpoint.pt").write_bytes(b"not read")
        return run

    # -- argument lists -------------------------------------------------------------------------------------------
    def pipe(self, src, *extra) -> list[str]:
        return [str(src), "-o", str(self.out), "--model", self.model, *TILING, "--quiet", *map(str, extra)]

    def export(self, path, *extra) -> list[str]:
        return [self.model, str(path), *map(str, extra)]

    def train(self, *extra) -> list[str]:
        images = self.images()
        return ["--data", str(images), "--run", str(self.root / "run"), "--init", "scratch", "--arch", "tiny",
                "--mode", "packed", "--crop", "64", "--batch", "2", "--iterations", "1", "--val-every", "0",
                "--no-tensorboard", *map(str, extra)]


class _Executes:
    """Pickles into a call of ``touch``: loading it safely must never run it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@dataclass
class Case:
    name: str
    kind: str  # pipeline | train | api
    build: Callable[[Env], object]  # argv for a CLI, a callable for the API
    words: str  # what the one line must name


def P(name, build, words):
    return Case(name, "pipeline", build, words)


def T(name, build, words):
    return Case(name, "train", build, words)


def A(name, build, words):
    return Case(name, "api", build, words)


def E(name, build, words):
    return Case(name, "export", build, words)


# the output a 24x24 uint16 input makes (96x96, 3 levels) in bytes: an OME-Zarr alone fits in 30 kB, with its TIFF not
OUTPUT_BYTES = (96 * 96 + 48 * 48 + 24 * 24) * 2


def upscale(e: Env, image, **kw):
    """The API call, bound now (the model is loaded here, not in the checked call)."""
    return partial(Upscaler(e.model, device="cpu").upscale, image, **kw)


GRAY = np.full((12, 12), 100, np.uint16)

CASES = [
    # -- the pipeline: inputs --------------------------------------------------------------------------------------
    P("no input", lambda e: ["--quiet"], "no input given"),
    P("missing input", lambda e: e.pipe(e.root / "nope.zarr"), "no such file"),
    P("unknown suffix", lambda e: e.pipe(e.file("in.bmp", b"BM")), "not a zarr array"),
    P("empty tiff", lambda e: e.pipe(e.file("empty.tif")), "cannot be read"),
    P("text as tiff", lambda e: e.pipe(e.file("notes.tif", b"not a tiff at all")), "cannot be read"),
    P("tiff cut in its header", lambda e: e.pipe(e.tiff(cut=40)), "cannot be read"),
    P("truncated tiff strip", lambda e: e.pipe(e.tiff(shape=(64, 64), cut=5000)), "cannot be read"),
    P("damaged tiff tag, no log line", lambda e: e.pipe(e.damaged_tiff_tag()), "a damaged TIFF"),
    P("empty png", lambda e: e.pipe(e.file("empty.png")), "cannot be read"),
    P("random bytes png", lambda e: e.pipe(e.file("r.png", np.random.default_rng(0).bytes(300))), "cannot be read"),
    P("truncated png", lambda e: e.pipe(e.picture(cut=200)), "cannot be read"),
    P("truncated jpeg", lambda e: e.pipe(e.picture("in.jpg", cut=300)), "cannot be read"),
    P("empty folder", lambda e: e.pipe(e.file("folder.zarr/.keep").parent), "cannot be read"),
    P("broken zarr.json", lambda e: e.pipe(e.file("broken.zarr/zarr.json", b"{not json").parent), "cannot be read"),
    P("missing chunk v3", lambda e: e.pipe(e.missing_chunk()), "1 of 9 chunks are not stored"),
    P("missing chunk v2", lambda e: e.pipe(e.missing_chunk(fmt=2)), "1 of 9 chunks are not stored"),
    P("never written zarr", lambda e: e.pipe(e.zarr_input(data=False)), "9 of 9 chunks are not stored"),
    P("truncated chunk v3", lambda e: e.pipe(e.truncated_chunk()), "cannot be read"),
    P("truncated chunk v2", lambda e: e.pipe(e.truncated_chunk(fmt=2)), "cannot be read"),
    P("1-D array", lambda e: e.pipe(e.zarr_input(shape=(20,), chunks=(10,))), "1-D"),
    P("empty array", lambda e: e.pipe(e.zarr_input(shape=(0, 20), chunks=(8, 8), data=False)), "empty"),
    P("3-D without axes", lambda e: e.pipe(e.zarr_input(shape=(3, 8, 8))), "--axes"),
    P("4-D without axes", lambda e: e.pipe(e.zarr_input(shape=(2, 2, 8, 8), chunks=(1, 1, 8, 8))), "--axes"),
    P("--axes of wrong length", lambda e: e.pipe(e.zarr_input(), "--axes", "zyx"), "names 3 axes"),
    P("--axes unknown letter", lambda e: e.pipe(e.zarr_input(shape=(3, 8, 8)), "--axes", "qyx"), "not understood"),
    P("--axes repeated", lambda e: e.pipe(e.zarr_input(shape=(3, 8, 8)), "--axes", "yyx"), "not understood"),
    P("--axes without x", lambda e: e.pipe(e.zarr_input(shape=(3, 8, 8)), "--axes", "tzy"), "not understood"),
    P("--rgb on gray", lambda e: e.pipe(e.zarr_input(), "--rgb"), "--rgb needs a c axis"),
    P("complex pixels", lambda e: e.pipe(e.zarr_input(dtype="complex64")), "not supported"),
    P("int64 pixels", lambda e: e.pipe(e.zarr_input(dtype="int64")), "not supported"),
    P("group without multiscales", lambda e: e.pipe(e.ome_group(attrs={"note": 1})), "without OME-Zarr"),
    P("unknown OME version", lambda e: e.pipe(e.ome_group(attrs={"ome": {"version": "0.9", "multiscales": [{}]}})),
      "without OME-Zarr"),
    P("unfinished output as input", lambda e: e.pipe(e.unfinished_output()), "unfinished upscaling output"),
    P("its level-0 array as input", lambda e: e.pipe(e.unfinished_output() / "0"), "unfinished upscaling output"),
    # -- the pipeline: outputs -------------------------------------------------------------------------------------
    P("output exists", lambda e: e.pipe(e.zarr_input(), "-o", e.file("taken/x").parent), "already exists"),
    P("--overwrite a foreign folder", lambda e: e.pipe(e.zarr_input(), "-o", e.file("mydocs/thesis.txt", b"x").parent,
                                                        "--overwrite"), "not an output of this pipeline"),
    P("--overwrite a file", lambda e: e.pipe(e.zarr_input(), "-o", e.file("notes.ome.zarr", b"x"), "--overwrite"),
      "not an output of this pipeline"),
    P("output of an unknown kind", lambda e: e.pipe(e.zarr_input(), "-o", e.file("notes.txt", b"x"), "--overwrite"),
      "cannot write '.txt' files"),
    P("--overwrite a foreign zarr", lambda e: e.pipe(e.zarr_input(), "-o", e.zarr_input("other.zarr"),
                                                      "--overwrite"), "no 'resshift' marker"),
    P("--resume a foreign folder", lambda e: e.pipe(e.zarr_input(), "-o", e.file("mine/a.txt").parent, "--resume"),
      "cannot resume"),
    P("output is the input", lambda e: e.pipe(e.zarr_input(), "-o", e.root / "in.zarr"), "may not be the input"),
    P("output inside the input", lambda e: e.pipe(e.zarr_input(), "-o", e.root / "in.zarr" / "x.zarr"),
      "inside it"),
    P("output contains the input", lambda e: e.pipe(e.zarr_input("d/in.zarr"), "-o", e.root / "d"),
      "would contain the input"),
    P("output folder missing", lambda e: e.pipe(e.zarr_input(), "-o", e.root / "no" / "out.zarr"), "does not exist"),
    P("read-only output folder", lambda e: e.pipe(e.zarr_input(), "-o", e.readonly_dir() / "out.zarr"),
      "cannot write there"),
    P("--resume other settings, unfinished", lambda e: e.pipe(
        e.root / "in.zarr", "-o", e.unfinished_output(), "--resume", "--seed", "4"), "other settings (seed)"),
    P("--resume other settings, finished", lambda e: e.pipe(
        e.root / "in.zarr", "-o", e.finished_output(), "--resume", "--seed", "4"), "other settings (seed)"),
    P("--resume other torch threads", lambda e: e.pipe(
        e.root / "in.zarr", "-o", e.finished_output(), "--resume", "--torch-threads", 99), "torch_threads"),
    P("--example into an existing path", lambda e: ["--example", str(e.file("ex/x").parent)], "already exists"),
    P("--example --overwrite a foreign folder", lambda e: ["--example", str(e.file("mydocs/thesis.txt", b"x").parent),
                                                           "--overwrite"], "not an example"),
    # -- the pipeline: batches, TIFF outputs and what --resume compares ---------------------------------------------
    P("empty glob", lambda e: e.pipe(e.root / "scans" / "*.tif"), "no images found"),
    P("folder of only our outputs", lambda e: e.pipe((e.finished_output("scans/a_x4.ome.zarr"),
                                                      e.root / "scans")[1]), "other than outputs of this pipeline"),
    P("batch -o onto a file", lambda e: e.pipe(e.folder("scans", {"a.tif": (24, 24)}), "-o", e.file("out", b"x")),
      "is a file"),
    P("batch -o onto a zarr", lambda e: e.pipe(e.folder("scans", {"a.tif": (24, 24)}), "-o", e.zarr_input("o.zarr")),
      "is a zarr"),
    P("batch -o a new TIFF name", lambda e: e.pipe(e.folder("scans", {"a.tif": (24, 24)}), "-o", e.root / "x.tif"),
      "names a file"),
    P("batch of same-named files from two folders into one -o", lambda e: (
        e.folder("d1", {"scan.tif": (24, 24)}), e.folder("d2", {"scan.tif": (24, 24)}),
        e.pipe(e.root / "d*" / "scan.tif", "-o", e.root / "outs"))[2], "would write the same output"),
    P("batch with a model that cannot load, once", lambda e: e.pipe(
        e.folder("scans", {"a.tif": (24, 24), "b.tif": (24, 24)}), "-o", e.root / "outs", "--model",
        e.root / "none.safetensors"), "no such file"),
    P("batch with --tile 0, once", lambda e: e.pipe(e.folder("scans", {"a.tif": (24, 24), "b.tif": (24, 24)}), "-o",
                                                    e.root / "outs", "--tile", 0), "--tile 0"),
    P("batch into a read-only folder", lambda e: e.pipe(e.folder("scans", {"a.tif": (24, 24)}), "-o",
                                                        e.readonly_dir()), "cannot write there"),
    P("--resume another input's output", lambda e: e.pipe(e.tiff("other.tif"), "-o", e.finished_output(), "--resume"),
      "other settings (input: another file"),
    P("--resume after the input changed", lambda e: (e.finished_output(), os.utime(e.root / "in.zarr" / "zarr.json"),
                                                     e.pipe(e.root / "in.zarr", "-o", e.root / "done.ome.zarr",
                                                            "--resume"))[2], "or changed since"),
    P("--resume another input's unfinished output", lambda e: e.pipe(e.tiff("other.tif"), "-o", e.unfinished_output(),
                                                                      "--resume"), "was started with other settings"),
    P("--resume onto a user's TIFF", lambda e: e.pipe(e.tiff(), "-o", e.tiff("mine.tif"), "--resume"),
      "not an output of this pipeline; cannot resume"),
    P("--overwrite a user's TIFF", lambda e: e.pipe(e.tiff(), "-o", e.tiff("mine.tif"), "--overwrite"),
      "--overwrite only replaces those"),
    P("-o OUT.TIF onto a user's TIFF", lambda e: e.pipe(e.tiff(), "-o", e.tiff("OUT.TIF")), "already exists"),
    P("--resume a finished TIFF output, other seed", lambda e: e.pipe(e.root / "in.zarr", "-o", e.finished_tiff(),
                                                                       "--resume", "--seed", 7),
      "was made with other settings (seed)"),
    P("--resume a finished TIFF output, other levels", lambda e: e.pipe(e.root / "in.zarr", "-o", e.finished_tiff(),
                                                                         "--resume", "--levels", 2),
      "other settings (levels)"),
    P("--resume a finished TIFF output, other input", lambda e: (e.finished_tiff(), e.pipe(
        e.tiff("other.tif"), "-o", e.root / "done.tif", "--resume"))[1], "other settings (input"),
    P("--resume a killed TIFF run, other seed", lambda e: e.pipe(e.root / "in.zarr", "-o", e.killed_tiff_run(),
                                                                  "--resume", "--seed", 4), "was started with other"),
    P("killed TIFF run without --resume", lambda e: e.pipe(e.root / "in.zarr", "-o", e.killed_tiff_run()),
      "add --resume to finish it"),
    P("killed in the TIFF's final write, without --resume", lambda e: e.pipe(
        e.root / "in.zarr", "-o", e.killed_tiff_run(in_final_write=True)), "add --resume to finish it"),
    P("--format 0.4 with -o x.tif", lambda e: e.pipe(e.zarr_input(), "-o", e.root / "x.tif", "--format", "0.4"),
      "--format 0.4 sets the OME-Zarr version"),
    P("--format 0.5 with -o X.TIFF", lambda e: e.pipe(e.zarr_input(), "-o", e.root / "X.TIFF", "--format", "0.5"),
      "drop --format"),
    P("disk too small for a TIFF and its OME-Zarr", lambda e: (e.full_disk(OUTPUT_BYTES + 4000), e.pipe(
        e.zarr_input(), "-o", e.root / "o.tif"))[1], "the TIFF and the OME-Zarr it is made from"),
    P("--overwrite the intermediate of a user's TIFF name", lambda e: e.pipe(
        e.zarr_input(), "-o", (e.file("o.tif.partial.ome.zarr/notes.txt", b"mine"), e.root / "o.tif")[1],
        "--overwrite"), "no 'resshift' marker"),
    P("--tile 0", lambda e: e.pipe(e.zarr_input(), "--tile", 0), "--tile 0"),
    P("--tile -5", lambda e: e.pipe(e.zarr_input(), "--tile", -5), "--tile -5"),
    P("--overlap -1", lambda e: e.pipe(e.zarr_input(), "--overlap", -1), "--overlap -1"),
    P("--overlap >= --tile", lambda e: e.pipe(e.zarr_input(), "--overlap", 16), "larger than the overlap"),
    P("--chunk 0", lambda e: e.pipe(e.zarr_input(), "--chunk", 0), "--chunk 0"),
    P("--chunk -1", lambda e: e.pipe(e.zarr_input(), "--chunk", -1), "--chunk -1"),
    P("--levels 0", lambda e: e.pipe(e.zarr_input(), "--levels", 0), "--levels 0"),
    P("--threads 0", lambda e: e.pipe(e.zarr_input(), "--threads", 0), "--threads 0"),
    P("--workers 0", lambda e: e.pipe(e.zarr_input(), "--workers", 0), "--workers 0"),
    P("--workers -1", lambda e: e.pipe(e.zarr_input(), "--workers", -1), "--workers -1"),
    P("--torch-threads 0", lambda e: e.pipe(e.zarr_input(), "--torch-threads", 0), "--torch-threads 0"),
    P("--dtype foo", lambda e: e.pipe(e.zarr_input(), "--dtype", "foo"), "not a pixel type"),
    P("--dtype complex64", lambda e: e.pipe(e.zarr_input(), "--dtype", "complex64"), "not an image pixel type"),
    P("--dtype U8", lambda e: e.pipe(e.zarr_input(), "--dtype", "U8"), "not an image pixel type"),
    P("--dtype int64", lambda e: e.pipe(e.zarr_input(), "--dtype", "int64"), "not supported"),
    P("--tile abc", lambda e: e.pipe(e.zarr_input(), "--tile", "abc"), "invalid int value"),
    P("--format 0.3", lambda e: e.pipe(e.zarr_input(), "--format", "0.3"), "invalid choice"),
    P("--norm bogus", lambda e: e.pipe(e.zarr_input(), "--norm", "bogus"), "invalid choice"),
    P("--precision fp64", lambda e: e.pipe(e.zarr_input(), "--precision", "fp64"), "invalid choice"),
    P("unknown flag", lambda e: e.pipe(e.zarr_input(), "--sharpen"), "unrecognized arguments"),
    P("--precision fp16 on the CPU", lambda e: e.pipe(e.zarr_input(), "--precision", "fp16", "--device", "cpu"),
      "fp16 is not supported on the CPU"),
    P("--device cuda without a GPU", lambda e: e.pipe(e.zarr_input(), "--device", "cuda"), "no CUDA GPU"),
    P("--device banana", lambda e: e.pipe(e.zarr_input(), "--device", "banana"), "unknown device"),
    P("--scheduler nota://x", lambda e: e.pipe(e.zarr_input(), "--scheduler", "nota://x"), "not a dask scheduler"),
    P("--scheduler unreachable", lambda e: e.pipe(e.zarr_input(), "--scheduler", "tcp://127.0.0.1:9"),
      "cannot connect"),
    # -- the pipeline: models --------------------------------------------------------------------------------------
    P("--model missing", lambda e: e.pipe(e.zarr_input(), "--model", e.root / "none.safetensors"), "no such file"),
    P("--model empty file", lambda e: e.pipe(e.zarr_input(), "--model", e.file("m.pth")), "empty"),
    P("--model random bytes .pth", lambda e: e.pipe(e.zarr_input(), "--model",
                                                     e.file("r.pth", np.random.default_rng(1).bytes(900))),
      "not a PyTorch checkpoint"),
    P("--model plain pickle, no warning", lambda e: e.pipe(e.zarr_input(), "--model",
                                                            e.file("p.pth", pickle.dumps({"a": 1}, protocol=4))),
      "not a PyTorch checkpoint"),
    P("--model code-carrying pickle", lambda e: e.pipe(e.zarr_input(), "--model", e.evil_pickle()), "pickled code"),
    P("--model code-carrying torch file", lambda e: e.pipe(e.zarr_input(), "--model", e.evil_pickle(zipped=True)),
      "pickled code"),
    P("--model truncated safetensors", lambda e: e.pipe(e.zarr_input(), "--model",
                                                         e.file("t.safetensors", Path(e.model).read_bytes()[:500])),
      "not a readable safetensors"),
    P("--model folder with code in its YAML", lambda e: (e.evil_yaml("m/config.yaml"),
                                                        e.pipe(e.zarr_input(), "--model", e.root / "m"))[1],
      "not a valid configuration"),
    P("--model empty folder", lambda e: e.pipe(e.zarr_input(), "--model", e.file("m/.keep").parent),
      "no model.safetensors"),
    P("--model official preset without files", lambda e: e.pipe(e.zarr_input(), "--model", "v3"),
      "needs the official weights"),
    # -- training --------------------------------------------------------------------------------------------------
    T("no --data", lambda e: ["--run", str(e.root / "run")], "give --data and --run"),
    T("--data missing", lambda e: e.train("--data", e.root / "nope"), "no such file or folder"),
    T("--data without images", lambda e: e.train("--data", e.file("docs/a.txt", b"x").parent), "no images found"),
    T("--data corrupt png", lambda e: e.train("--data", e.file("bad/x.png", b"\x89PNG broken")), "x.png"),
    T("--data too small", lambda e: e.train("--crop", 128), "128"),
    T("--val-fraction 1.5", lambda e: e.train("--val-fraction", 1.5), "--val-fraction 1.5"),
    T("--val-fraction -0.1", lambda e: e.train("--val-fraction", -0.1), "--val-fraction -0.1"),
    T("--workers -1", lambda e: e.train("--workers", -1), "--workers -1"),
    T("--lr -1", lambda e: e.train("--lr", -1), "--lr -1"),
    T("--lr 0", lambda e: e.train("--lr", 0), "--lr 0"),
    T("--iterations 0", lambda e: e.train("--iterations", 0), "--iterations 0"),
    T("--batch 0", lambda e: e.train("--batch", 0), "--batch 0"),
    T("--micro-batch 3 of --batch 2", lambda e: e.train("--micro-batch", 3), "not a multiple"),
    T("--ema 1", lambda e: e.train("--ema", 1), "--ema 1"),
    T("--checkpoint-every 0", lambda e: e.train("--checkpoint-every", 0), "--checkpoint-every 0"),
    T("--crop not a multiple", lambda e: e.train("--crop", 60), "must be a multiple"),
    T("--rollout 2", lambda e: e.train("--rollout", 2), "not between 0 and 1"),
    T("--degradation unknown", lambda e: e.train("--degradation", "sharpen"), "invalid choice"),
    T("--precision fp16 on the CPU", lambda e: e.train("--precision", "fp16", "--device", "cpu"), "needs a CUDA GPU"),
    T("--device cuda without a GPU", lambda e: e.train("--device", "cuda"), "no CUDA GPU"),
    T("missing recipe file", lambda e: [f"@{e.root / 'none.args'}"], "none.args"),
    T("--init missing", lambda e: e.train("--init", e.root / "none.safetensors"), "no such file"),
    T("--init code-carrying pickle", lambda e: e.train("--init", e.evil_pickle()), "pickled code"),
    T("--config with code in its YAML", lambda e: e.train("--config", e.evil_yaml()), "not a valid configuration"),
    T("--config missing", lambda e: e.train("--config", e.root / "none.yaml"), "no such configuration"),
    T("--config without sections", lambda e: e.train("--config", e.file("c.json", b"{}")), "'model' and 'diffusion'"),
    T("--run already holds a run", lambda e: e.train("--run", e.run_folder(checkpoint=True)), "already holds a run"),
    T("--resume missing folder", lambda e: ["--resume", str(e.root / "nope")], "not a training run folder"),
    T("--resume before the first checkpoint", lambda e: ["--resume", str(e.run_folder())],
      "stopped before its first checkpoint"),
    T("--resume with another --lr", lambda e: ["--resume", str(e.run_folder()), "--lr", "0.5"],
      "--lr cannot change"),
    # -- the export CLI --------------------------------------------------------------------------------------------
    E("export into a foreign folder", lambda e: e.export(e.file("mydocs/thesis.txt", b"x").parent),
      "already holds files"),
    E("export onto a foreign zip", lambda e: e.export(e.file("photos.zip", b"PK\x05\x06" + bytes(18))),
      "already holds files"),
    E("export onto a foreign ZIP in capitals", lambda e: e.export(e.file("PHOTOS.ZIP", b"PK\x05\x06" + bytes(18)),
                                                                  "--overwrite"), "already holds files"),
    E("export of a code-carrying pickle", lambda e: [str(e.evil_pickle()), str(e.root / "pkg.zip")], "pickled code"),
    E("export of v3 without weights", lambda e: ["v3", str(e.root / "pkg.zip")], "needs the official weights"),
    E("export with test seed 0", lambda e: e.export(e.root / "pkg.zip", "--seed", 0), "seed 0"),
    # -- the Python API --------------------------------------------------------------------------------------------
    A("upscale(tile=0)", lambda e: upscale(e, GRAY, tile=0), "tile (0 px)"),
    A("upscale(tile=-8)", lambda e: upscale(e, GRAY, tile=-8), "tile (-8 px)"),
    A("upscale(overlap=-1)", lambda e: upscale(e, GRAY, tile=16, overlap=-1), "overlap (-1 px)"),
    A("upscale(channel_axis=5)", lambda e: upscale(e, np.zeros((3, 8, 8)), channel_axis=5),
      "channel_axis 5"),
    A("upscale(1-D)", lambda e: upscale(e, np.zeros(8, np.uint8)), "expected a 2-D image"),
    A("upscale(4-D)", lambda e: upscale(e, np.zeros((2, 2, 8, 8), np.uint8)), "expected a 2-D"),
    A("upscale(empty)", lambda e: upscale(e, np.zeros((0, 8), np.uint8)), "empty"),
    A("upscale(complex)", lambda e: upscale(e, np.zeros((8, 8), np.complex64)), "not supported"),
    A("upscale(objects)", lambda e: upscale(e, np.full((8, 8), None)), "not supported"),
    A("upscale(dtype=complex64)", lambda e: upscale(e, GRAY, dtype="complex64"), "not supported"),
    A("Upscaler(device=cuda)", lambda e: partial(Upscaler, e.model, device="cuda"), "no CUDA GPU"),
    A("Upscaler(precision=fp64)", lambda e: partial(Upscaler, e.model, device="cpu", precision="fp64"),
      "unknown precision"),
    A("Upscaler(precision=fp16) on the CPU", lambda e: partial(Upscaler, e.model, device="cpu", precision="fp16"),
      "fp16 is not supported"),
    A("load_model(missing)", lambda e: partial(load_model, e.root / "none.pth"), "no such file"),
    A("load_model(random bytes)", lambda e: partial(load_model, e.file("r.pth", np.random.default_rng(2).bytes(64))),
      "not a PyTorch checkpoint"),
    A("load_model(code-carrying pickle)", lambda e: partial(load_model, e.evil_pickle()), "pickled code"),
    A("load_model(safetensors without card)", lambda e: partial(load_model, _bare_safetensors(e)), "no model card"),
    A("load_model(unknown preset)", lambda e: partial(load_model, "bicsr"), "needs the official weights"),
    A("read_config(code in YAML)", lambda e: partial(read_config, e.evil_yaml()), "not a valid configuration"),
    A("open_input(missing)", lambda e: partial(readers.open_input, e.root / "none.tif"), "no such file"),
    A("open_input(unfinished level 0)", lambda e: partial(readers.open_input, e.unfinished_output() / "0"),
      "unfinished upscaling output"),
    A("Layout(unknown axes)", lambda e: partial(Layout, "yxq", (4, 4, 4), 4, 16, 4), "not understood"),
    A("Layout(tile <= overlap)", lambda e: partial(Layout, "yx", (4, 4), 4, 4, 4), "must be larger than overlap"),
    A("write_example(existing)", lambda e: partial(write_example, e.file("ex/x").parent), "already exists"),
]


@dataclass
class Good:
    name: str
    build: Callable[[Env], object]  # argv of the pipeline CLI, or a callable of the API
    check: Callable[[Env, str], None]  # what must hold afterwards (given the standard output)
    note: str = ""  # the one note or warning line it must print, if any
    replaces: tuple[str, ...] = ()  # paths (relative to the case's folder) it may change: outputs, intermediates


def level0(path: Path) -> np.ndarray:
    """Level 0 of an output of ours, an OME-Zarr or a TIFF (then checked to carry our marker)."""
    if path.is_dir():
        assert ome.run_status(zarr.open_group(str(path), mode="r").attrs.asdict()) == "complete"
        return zarr.open_group(str(path), mode="r")["0"][:]
    assert tiff_output.read_marker(path)["status"] == "complete"
    return tifffile.imread(path)


def same_as_finished(e: Env, path: Path) -> None:
    np.testing.assert_array_equal(level0(path), level0(e.finished / "done.ome.zarr"))


def stored(path: Path) -> dict:
    return checks.own_run(path)["params"]


def geo_keys(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        return tif.geotiff_metadata or {}


def batch_run(e: Env, folder: Path, *extra) -> None:
    assert upscale_zarr.main(e.pipe(folder, *extra)) == 0


def memmap(e: Env) -> np.memmap:
    path = e.root / "plane.u16"
    (np.random.default_rng(0).random((24, 24)) * 60000).astype(np.uint16).tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(24, 24))


def foreign_ome_zarr_04(e: Env) -> Path:
    """An OME-Zarr 0.4 image written by ome-zarr-py, not by this project."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    path = e.root / "foreign.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = (np.random.default_rng(0).random((24, 24)) * 60000).astype(np.uint16)
    write_image(data, group, axes="yx", fmt=FormatV04(), scale_factors=[2], storage_options={"chunks": (24, 24)})
    return path


def mixed_folder(e: Env) -> Path:
    folder = e.folder("mixed", {"flat.tif": (24, 24)})
    tifffile.imwrite(folder / "stack.ome.tif", (np.random.default_rng(1).random((2, 24, 24)) * 60000).astype(
        np.uint16), ome=True, metadata={"axes": "ZYX"})
    Image.fromarray((np.random.default_rng(2).random((24, 24, 3)) * 255).astype(np.uint8)).save(folder / "rgb.png")
    return folder


def our_outputs_beside(e: Env) -> Path:
    folder = e.folder("scans", {"a.tif": (24, 24)})
    for name in ("a_x4.tif", "a_x4.ome.zarr"):
        assert upscale_zarr.main(e.pipe(folder / "a.tif", "-o", folder / name)) == 0
    return folder


GCPS = (0, 0, 0, 10.0, 50.0, 0, 24, 0, 0, 11.0, 50.0, 0, 0, 24, 0, 10.0, 49.0, 0, 24, 24, 0, 11.0, 49.0, 0)
WGS84 = (1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326)  # geographic, EPSG:4326


def scaled_gcps(gcps, *, point=False) -> list[list[float]]:
    rows = np.reshape(np.asarray(gcps, float), (-1, 6)).copy()
    rows[:, :2] = (rows[:, :2] + 0.5) * 4 - 0.5 if point else rows[:, :2] * 4
    return rows.tolist()


GOOD = [
    Good("-o OUT.TIF in capitals", lambda e: e.pipe(e.zarr_input(), "-o", e.root / "OUT.TIF"),
         lambda e, _: level0(e.root / "OUT.TIF")),
    Good("killed TIFF run, --resume finishes it", lambda e: e.pipe(e.root / "in.zarr", "-o", e.killed_tiff_run(),
                                                                    "--resume"),
         lambda e, _: same_as_finished(e, e.root / "o.tif"), replaces=("o.tif.partial.ome.zarr",)),
    Good("killed in the TIFF's final write, --resume writes it", lambda e: e.pipe(
        e.root / "in.zarr", "-o", e.killed_tiff_run(in_final_write=True), "--resume"),
         lambda e, _: same_as_finished(e, e.root / "o.tif"), replaces=("o.tif.partial.ome.zarr", "o.tif.partial")),
    Good("--overwrite our finished TIFF output", lambda e: e.pipe(e.root / "in.zarr", "-o", e.finished_tiff(),
                                                                   "--overwrite", "--seed", 7),
         lambda e, _: stored(e.root / "done.tif")["seed"] == 7 or pytest.fail("not replaced"), replaces=("done.tif",)),
    Good("--resume our finished TIFF output, same settings", lambda e: e.pipe(e.root / "in.zarr", "-o",
                                                                               e.finished_tiff(), "--resume"),
         lambda e, out: "already complete" in out or pytest.fail(out)),
    Good("--resume our finished OME-Zarr output from a copied input", lambda e: e.pipe(
        e.root / "in.zarr", "-o", e.finished_output(), "--resume"),
         lambda e, out: "already complete" in out or pytest.fail(out)),
    Good("two inputs, one output name: told apart", lambda e: e.pipe(
        e.folder("scans", {"scan.tif": (24, 24), "scan.tiff": (24, 24)}), "-o", e.root / "outs"),
         lambda e, _: [stored(e.root / "outs" / f"{n}_x4.ome.zarr")["input_id"] == readers.input_identity(
             readers.open_input(e.root / "scans" / n).spec) or pytest.fail(n) for n in ("scan.tif", "scan.tiff")],
         note="told apart by their full names"),
    Good("our TIFF and OME-Zarr outputs among the inputs are skipped", lambda e: e.pipe(
        our_outputs_beside(e), "-o", e.root / "outs"),
         lambda e, _: sorted(p.name for p in (e.root / "outs").iterdir()) == ["a_x4.ome.zarr"] or pytest.fail(),
         note="skipping 2 output(s) of this pipeline"),
    Good("an existing output folder with a dot in its name", lambda e: e.pipe(
        e.folder("scans", {"a.tif": (24, 24)}), "-o", (e.root / "out_v1.2").mkdir() or e.root / "out_v1.2"),
         lambda e, _: level0(e.root / "out_v1.2" / "a_x4.ome.zarr")),
    Good("a new output folder with a dot in its name", lambda e: e.pipe(
        e.folder("scans", {"a.tif": (24, 24)}), "-o", e.root / "out_v1.3"),
         lambda e, _: level0(e.root / "out_v1.3" / "a_x4.ome.zarr")),
    Good("unicode and spaces in paths", lambda e: e.pipe(
        e.folder("données brutes", {"scan é 1.tif": (24, 24)}) / "scan é 1.tif", "-o",
        (e.root / "sortie ü").mkdir() or e.root / "sortie ü" / "résultat x4.ome.zarr"),
         lambda e, _: level0(e.root / "sortie ü" / "résultat x4.ome.zarr")),
    Good("a foreign OME-Zarr 0.4", lambda e: e.pipe(foreign_ome_zarr_04(e)),
         lambda e, _: level0(e.out).shape == (96, 96) or pytest.fail()),
    Good("a folder of 2D, 3D and RGB images", lambda e: e.pipe(mixed_folder(e), "-o", e.root / "outs"),
         lambda e, _: [level0(e.root / "outs" / f"{n}_x4.ome.zarr").shape == shape or pytest.fail(n)
                       for n, shape in (("flat", (96, 96)), ("stack", (2, 96, 96)), ("rgb", (3, 96, 96)))]),
    Good("--resume of a batch after deleting one output", lambda e: (
        batch_run(e, e.folder("scans", {"a.tif": (24, 24), "b.tif": (24, 24)}), "-o", e.root / "outs"),
        shutil.rmtree(e.root / "outs" / "a_x4.ome.zarr"),
        e.pipe(e.root / "scans", "-o", e.root / "outs", "--resume"))[2],
         lambda e, out: (level0(e.root / "outs" / "a_x4.ome.zarr"), out.count("already complete") == 1
                         or pytest.fail(out))),
    Good("a GeoTIFF with ground control points only, to a TIFF", lambda e: e.pipe(
        e.geotiff(tiepoints=GCPS, scale=None, keys=WGS84), "-o", e.root / "geo_x4.tif"),
         lambda e, _: (np.reshape(geo_keys(e.root / "geo_x4.tif")["ModelTiepoint"], (-1, 6)).tolist()
                       == scaled_gcps(GCPS) and int(geo_keys(e.root / "geo_x4.tif")["GeographicTypeGeoKey"]) == 4326
                       or pytest.fail())),
    Good("a GeoTIFF with ground control points only, to an OME-Zarr", lambda e: e.pipe(
        e.geotiff(tiepoints=GCPS, scale=None, keys=WGS84)),
         lambda e, _: zarr.open_group(str(e.out), mode="r").attrs["geo"]["gcps"] == scaled_gcps(GCPS)
         or pytest.fail()),
    Good("a pixel-is-point GeoTIFF with ground control points", lambda e: e.pipe(
        e.geotiff(tiepoints=GCPS, scale=None, keys=WGS84[:3] + (3, 1025, 0, 1, 2) + WGS84[4:]), "-o",
        e.root / "geo_x4.tif"),
         lambda e, _: np.reshape(geo_keys(e.root / "geo_x4.tif")["ModelTiepoint"], (-1, 6)).tolist()
         == scaled_gcps(GCPS, point=True) or pytest.fail()),
    Good("a damaged GeoKeyDirectory: one warning, not copied", lambda e: e.pipe(
        e.geotiff(keys=(1, 1, 0, 5, 1024, 0, 1, 2)), "-o", e.root / "geo_x4.tif"),
         lambda e, _: geo_keys(e.root / "geo_x4.tif") == {} or pytest.fail(),
         note="its GeoKeyDirectory is damaged (says 5 keys, holds 1)"),
    Good("a read-only memory-mapped array", lambda e: partial(Upscaler(e.model, device="cpu").upscale, memmap(e),
                                                              tile=16, overlap=4),
         lambda e, _: None),
]


def _bare_safetensors(e: Env) -> Path:
    from safetensors.torch import save_file

    path = e.root / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file's content hash and every folder, by path: what a refused run must leave exactly as it was."""
    found = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
    return found


def fresh_process_state() -> None:
    """As in a new process: inputs an earlier case left open (the readers' cache) are closed now, not in this case."""
    import gc

    readers._open_array.cache_clear()
    gc.collect()


def call_cli(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


MAINS = {"pipeline": upscale_zarr.main, "train": finetune.main, "export": export.main}


def test_the_campaign_has_at_least_180_cases():
    assert len(CASES) + len(GOOD) >= 180 and len({(c.kind, c.name) for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"pipeline", "train", "export", "api"}
    assert len({g.name for g in GOOD}) == len(GOOD)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.kind}: {c.name}")
def test_bad_input_is_one_line_and_changes_nothing(case, model_path, finished, tmp_path, capsys, caplog):
    env = Env(tmp_path, model_path, finished)
    try:
        built = case.build(env)
        before = snapshot(tmp_path, Path(model_path).parent)
        fresh_process_state()
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", DeprecationWarning)  # of libraries to their developers
            if case.kind == "api":
                with pytest.raises(ResShiftError) as raised:
                    built()
                code, err = 2, f"error: {raised.value}\n"
            else:
                code = call_cli(MAINS[case.kind], built)
                err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert case.words.lower() in err.lower(), err
        assert "Traceback" not in err
        assert not [str(w.message) for w in caught], "a warning before the error line"
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], "a log line"
        assert not env.marker.exists(), "code in an input file ran"
        assert snapshot(tmp_path, Path(model_path).parent) == before, "the run changed or left files"
    finally:
        for undo in env.cleanups:
            undo()


@pytest.mark.parametrize("case", GOOD, ids=lambda g: f"good: {g.name}")
def test_good_input_is_done_with_only_its_note_and_no_input_changed(case, model_path, finished, tmp_path, capsys):
    env = Env(tmp_path, model_path, finished)
    try:
        built = case.build(env)
        before = snapshot(tmp_path)
        capsys.readouterr()
        code = (built(), 0)[1] if callable(built) else call_cli(upscale_zarr.main, built)
        out, err = capsys.readouterr()
        assert code == 0, err
        assert err.count("\n") == (1 if case.note else 0) and case.note in err and "Traceback" not in err, err
        after = snapshot(tmp_path)
        mine = [str(tmp_path / name) for name in case.replaces]
        changed = [p for p in before if after.get(p) != before[p] and not p.startswith(tuple(mine))]
        assert not changed, "an input changed"
        assert not [p for p in after if p.endswith(".partial") or ".partial." in p or ".resshift-done" in p]
        case.check(env, out)
    finally:
        for undo in env.cleanups:
            undo()


@pytest.mark.parametrize("bad", [["b.tif"], ["a.tif", "c.tif"]], ids=["one bad file", "two bad files"])
def test_a_batch_upscales_the_good_files_and_names_every_bad_one(bad, model_path, tmp_path, capsys):
    """A corrupt file among good ones: the rest are upscaled, then one line names every file that failed."""
    env = Env(tmp_path, model_path)
    names = ["a.tif", "b.tif", "c.tif", "d.tif"]
    folder = env.folder("scans", {n: () if n in bad else (24, 24) for n in names})
    before = snapshot(folder)
    capsys.readouterr()
    assert upscale_zarr.main(env.pipe(folder, "-o", tmp_path / "outs")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{len(bad)} of 4 inputs failed" in err and all(str(folder / n) in err for n in bad), err
    assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == sorted(
        n.replace(".tif", "_x4.ome.zarr") for n in names if n not in bad)
    for p in (tmp_path / "outs").iterdir():
        level0(p)
    assert snapshot(folder) == before


def test_a_disk_full_while_the_tiff_is_written_names_it_and_leaves_no_partial(model_path, tmp_path, capsys,
                                                                               monkeypatch):
    """The disk fills up during the TIFF's final write: one line naming the TIFF, no ``.partial``, the finished
    OME-Zarr kept, and --resume then writes the TIFF."""
    import errno

    env = Env(tmp_path, model_path)
    src, out = env.zarr_input(), tmp_path / "o.tif"
    written = tifffile.TiffWriter.write

    def fills_up(self, *args, **kwargs):
        written(self, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", fills_up)
    capsys.readouterr()
    assert upscale_zarr.main(env.pipe(src, "-o", out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: No space left on device") and err.count("\n") == 1, err
    assert "--resume" in err and not out.exists() and not tiff_output.partial_path(out).exists()
    assert checks.own_status(tmp_path / "o.tif.partial.ome.zarr") == "complete"
    monkeypatch.undo()
    expected = level0(tmp_path / "o.tif.partial.ome.zarr")
    assert upscale_zarr.main(env.pipe(src, "-o", out, "--resume")) == 0
    np.testing.assert_array_equal(level0(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "o.tif"]


def test_an_unreachable_scheduler_fails_fast_in_one_line_as_a_process(model_path, tmp_path):
    """As a user sees it: the real stderr (dask's own logging included), a short connect timeout, no output."""
    import time

    env = Env(tmp_path, model_path)
    argv = env.pipe(env.zarr_input(), "--scheduler", "tcp://127.0.0.1:9")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipelines.upscale_zarr", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot connect" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 40 and not env.out.exists()


def test_missing_chunks_with_the_flag_are_reported_and_recorded(model_path, tmp_path, capsys):
    env = Env(tmp_path, model_path)
    src = env.missing_chunk()
    assert upscale_zarr.main(env.pipe(src, "--missing-chunks", "fill")) == 0
    assert "1 of 9 chunks" in capsys.readouterr().err
    assert zarr.open_group(str(env.out), mode="r").attrs["resshift"]["params"]["missing_chunks"] == 1


def test_overwrite_replaces_an_output_of_ours(model_path, finished, tmp_path):
    env = Env(tmp_path, model_path, finished)
    out = env.finished_output()
    assert upscale_zarr.main(env.pipe(env.root / "in.zarr", "-o", out, "--overwrite", "--seed", "4")) == 0
    assert zarr.open_group(str(out), mode="r").attrs["resshift"]["params"]["seed"] == 4


def test_example_overwrite_replaces_an_example(tmp_path):
    path = write_example(tmp_path / "demo.zarr", height=32, width=32)
    assert write_example(path, height=48, width=32, overwrite=True) == path
    assert zarr.open_group(str(path), mode="r")["0"].shape == (48, 32)


def test_resume_without_the_done_folder_finishes(model_path, finished, tmp_path):
    """A kill between the marker and the folder of finished chunks: --resume computes everything."""
    env = Env(tmp_path, model_path, finished)
    out = env.unfinished_output(with_done_dir=False)
    assert upscale_zarr.main(env.pipe(env.root / "in.zarr", "-o", out, "--resume")) == 0
    done = zarr.open_group(str(out), mode="r")
    reference = zarr.open_group(str(finished / "done.ome.zarr"), mode="r")
    assert ome.run_status(done.attrs.asdict()) == "complete"
    np.testing.assert_array_equal(done["0"][:], reference["0"][:])
