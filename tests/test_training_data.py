"""Training data, degradations and metrics on generated images: readers, crops, pairs, bad-data errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image

from napari_resshift import normalization
from napari_resshift.errors import ResShiftError
from napari_resshift.loading import make_card, save_model
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture
from training import data, degradations, finetune, metrics


def pattern(h=96, w=96, *, phase=0.0, dtype=np.uint8, peak=None):
    yy, xx = np.mgrid[0:h, 0:w]
    wave = 0.5 + 0.4 * np.sin(xx / 3.0 + phase) * np.cos(yy / 5.0 - phase)
    peak = peak or (np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 1.0)
    return (wave * peak).astype(dtype)


# -- readers -------------------------------------------------------------------------------------------------------
def test_reads_rgb_png_16bit_png_multichannel_stack_and_zarr(tmp_path):
    import zarr

    rgb = np.stack([pattern(), pattern(phase=1), pattern(phase=2)], -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(pattern(dtype=np.uint16)).save(tmp_path / "deep.png")
    tifffile.imwrite(tmp_path / "cyx.tif", np.stack([pattern(dtype=np.uint16, phase=p) for p in range(3)]),
                     metadata={"axes": "CYX"}, photometric="minisblack")
    tifffile.imwrite(tmp_path / "tzyx.tif", np.stack([[pattern(dtype=np.uint16, phase=t + z) for z in range(2)]
                                                      for t in range(3)]), metadata={"axes": "TZYX"})
    zarr.save_array(str(tmp_path / "plain.zarr"), np.stack([pattern(phase=p) for p in range(4)]))
    found = data.find_images(tmp_path)
    assert [f.name for f in found] == ["cyx.tif", "deep.png", "plain.zarr", "rgb.png", "tzyx.tif"]
    sources = {f.name: data.check_source(data.open_source(f), min_size=64, norm="auto") for f in found}
    assert sources["rgb.png"].groups == [(0, 3)] and sources["rgb.png"].planes == 1
    assert sources["deep.png"].array.dtype == np.uint16 and sources["deep.png"].groups == [(0, 1)]
    assert sources["cyx.tif"].groups == [(0, 1), (1, 2), (2, 3)] and sources["cyx.tif"].planes == 1
    assert sources["tzyx.tif"].planes == 6 and sources["tzyx.tif"].groups == [(0, 1)]
    assert sources["plain.zarr"].planes == 4
    # plane 4 of T x Z = (t 2, z 0)
    plane = sources["tzyx.tif"].read(4, (0, 1), 0, 0, 96, 96)[0]
    np.testing.assert_array_equal(plane, pattern(dtype=np.uint16, phase=2))
    crop = sources["cyx.tif"].normalised(0, (1, 2), 10, 20, 32, 32)
    assert crop.shape == (1, 32, 32) and crop.dtype == np.float32 and crop.min() >= -1 and crop.max() <= 1


def test_a_fourth_sample_is_alpha_only_when_it_looks_like_transparency(tmp_path):
    """RGB + near infrared (tagged as alpha, as NAIP files are) gives four channels; a real alpha is dropped."""
    bands = np.stack([pattern(phase=p) for p in range(4)], -1)
    tifffile.imwrite(tmp_path / "rgbn.tif", bands, photometric="rgb", extrasamples=["unassalpha"])
    rgba = bands.copy()
    rgba[..., 3] = 255
    rgba[:20, :30, 3] = 0
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert data.open_source(tmp_path / "rgbn.tif").groups == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert data.open_source(tmp_path / "rgba.tif").groups == [(0, 3)]
    assert normalization.is_rgba(rgba.astype(np.float32) / 255, 2) and normalization.is_rgba(rgba[..., :3], 2)
    assert not normalization.is_rgba(bands.astype(np.float32) / 255, 2)
    assert not normalization.is_rgba(np.moveaxis(bands, -1, 0), 0) and normalization.is_rgba(np.moveaxis(rgba, -1, 0), 0)


def test_ome_zarr_axes_are_read_from_metadata(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    array = np.stack([pattern(dtype=np.uint16, phase=c) for c in range(2)])[None]  # t c y x
    root.create_array("0", data=array)
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "tcyx"],
                                  "datasets": [{"path": "0"}]}]
    source = data.check_source(data.open_source(tmp_path / "img.ome.zarr"), min_size=64, norm="auto")
    assert source.axes == "TCYX" and source.groups == [(0, 1), (1, 2)] and source.planes == 1


def test_normalisation_is_the_engines(tmp_path):
    """A 16-bit gray image gets exactly what Upscaler.upscale(norm='auto') fits for it."""
    image = pattern(dtype=np.uint16, peak=3000)
    tifffile.imwrite(tmp_path / "a.tif", image)
    source = data.check_source(data.open_source(tmp_path / "a.tif"), min_size=64, norm="auto")
    assert source.norm == normalization.fit(image[None], mode="auto", channel_axis=0)
    expected = normalization.fit(image[None], mode="auto", channel_axis=0).forward(image[None], channel_axis=0)
    np.testing.assert_array_equal(source.normalised(0, (0, 1), 0, 0, 96, 96), np.clip(expected, -1, 1))


def test_sampler_is_a_pure_function_of_seed_and_index_and_replicates_gray(tmp_path):
    tifffile.imwrite(tmp_path / "g.tif", pattern(128, 128, dtype=np.uint16))
    pairs = data.load_pairs([tmp_path / "g.tif"], crop=64, scale=4, norm="auto")
    sampler = data.CropSampler(pairs, crop=64, scale=4, micro_batch=2, degradation="microscopy", seed=3)
    a, b, c = sampler[5], sampler[5], sampler[6]
    assert a["hr"].shape == (2, 3, 64, 64) and a["lq"].shape == (2, 3, 16, 16)
    assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lq"], b["lq"]) and a["seed"] == b["seed"]
    assert not torch.equal(a["hr"], c["hr"])
    assert torch.equal(a["hr"][:, 0], a["hr"][:, 2]) and torch.equal(a["lq"][:, 0], a["lq"][:, 1])


def test_paired_crops_stay_aligned_through_flips_and_rotations(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    lr = hr.reshape(32, 4, 32, 4).mean((1, 3)).round().astype(np.uint8)
    Image.fromarray(hr).save(tmp_path / "hr" / "x.png")
    Image.fromarray(lr).save(tmp_path / "lr" / "x.png")
    pairs = data.load_pairs([tmp_path / "hr" / "x.png"], crop=64, scale=4, norm="auto", lr_root=tmp_path / "lr")
    sampler = data.CropSampler(pairs, crop=64, scale=4, micro_batch=4, degradation="bicubic", seed=0)
    for k in range(3):
        batch = sampler[k]
        pooled = F.avg_pool2d(batch["hr"], 4)
        assert (pooled - batch["lq"]).abs().max() <= 1.01 / 127.5


def test_split_holds_out_a_fraction_of_each_data_path(tmp_path):
    for domain in ("a", "b"):
        (tmp_path / domain).mkdir()
        for i in range(7):
            Image.fromarray(pattern(phase=i)).save(tmp_path / domain / f"{i}.png")
    opts = finetune.resolve_options(["--data", str(tmp_path / "a"), str(tmp_path / "b"), "--run", str(tmp_path / "r")])
    files = finetune.split_data(opts)
    assert len(files["train"]) == 12 and len(files["val"]) == 2
    assert {p.split("/")[-2] for p in files["val"]} == {"a", "b"}
    assert not set(files["train"]) & set(files["val"])


def test_drawing_entries_gives_each_data_entry_the_same_share_however_many_files_it_holds(tmp_path):
    for name, count in (("big", 12), ("small", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(pattern(64, 64, phase=i)).save(tmp_path / name / f"{i}.png")
    args = ["--data", str(tmp_path / "big"), str(tmp_path / "small"), str(tmp_path / "small"), "--run",
            str(tmp_path / "r"), "--val-fraction", "0"]
    files = finetune.split_data(finetune.resolve_options(args))
    assert files["train_entries"] == [0] * 12 + [1, 2]
    pairs = data.load_pairs([Path(f) for f in files["train"]], crop=32, scale=4, norm="auto")
    assert pairs[12].hr is pairs[13].hr  # a file listed twice is read once

    def drawn(groups, n=3000):
        sampler = data.CropSampler(pairs, crop=32, scale=4, micro_batch=1, degradation="bicubic", seed=0,
                                   groups=groups)
        rng = np.random.default_rng(1)
        return np.mean([sampler.pick(rng) >= 12 for _ in range(n)])

    assert abs(drawn(None) - 2 / 14) < 0.03  # by files: the small folder's two listings, 2 of 14 files
    assert abs(drawn(files["train_entries"]) - 2 / 3) < 0.03  # by entries: two of three entries
    opts = finetune.resolve_options(args + ["--draw", "entries"])
    assert opts.draw == "entries"


def test_split_by_sources_holds_out_whole_sources_and_by_files_keeps_the_first_release(tmp_path):
    from training.recipes import split

    for domain in split.DOMAINS:
        for source in ("first_a", "first_b", *sorted(split.LATER_SOURCES[domain])[:3]):
            (tmp_path / domain / source).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(pattern(32, 32, phase=i)).save(tmp_path / domain / source / f"{source}{i}.png")
        for source in sorted(split.HELD_OUT_SOURCES[domain]):
            (tmp_path / domain / source).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pattern(32, 32)).save(tmp_path / domain / source / "x.png")
    by_sources, by_files = split.split(tmp_path, by="sources"), split.split(tmp_path, by="files")
    for domain in split.DOMAINS:
        root = tmp_path / domain
        sides = {side: {split.source_of(p, root) for p in by_sources[domain][side]} for side in ("train", "val")}
        assert sides["val"] == split.HELD_OUT_SOURCES[domain] and not sides["train"] & sides["val"]
        files = {split.source_of(p, root) for side in ("train", "val") for p in by_files[domain][side]}
        assert files == {"first_a", "first_b"} and by_files[domain]["val"]  # later sources are not in it
        held = by_sources[domain]["val"][0]
        assert split.placed_name(held, root, by="sources") == f"{held.parent.name}/{held.parent.name}__{held.name}"
    assert split.source_of(tmp_path / "satellite" / "naip_nd_2009.tif", tmp_path / "satellite") == "naip_nd"


# -- degradations --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", ["natural", "microscopy", "satellite"])
def test_mild_degradations_lose_less_than_the_heavy_ones(domain):
    hr = torch.from_numpy(np.stack([pattern(96, 96, phase=p) for p in range(3)]).astype(np.float32) / 255)

    def error(name):
        lrs = [degradations.DEGRADATIONS[name](hr, 4, torch.Generator().manual_seed(s)) for s in range(30)]
        return np.mean([float((lr - degradations.bicubic(hr, 4)).abs().mean()) for lr in lrs])

    heavy = error(degradations.DOMAIN_DEGRADATIONS[domain])
    assert error(f"mild-{domain}") < 0.9 * heavy
@pytest.mark.parametrize("name", sorted(degradations.DEGRADATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_degradations_are_seeded_and_shrink_by_the_scale(name, channels):
    hr = torch.from_numpy(pattern(64, 96).astype(np.float32) / 255)[None].expand(channels, -1, -1).contiguous()
    run = lambda seed: degradations.DEGRADATIONS[name](hr, 4, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    assert a.shape == (channels, 16, 24) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert name == "bicubic" or not torch.equal(a, c)
    bic = degradations.bicubic(hr, 4)
    assert abs(float(a.mean()) - float(bic.mean())) < 0.08  # brightness survives blur, noise and JPEG


def test_jpeg_round_trip_loses_more_at_low_quality():
    x = torch.from_numpy(np.stack([pattern(64, 64, phase=p) for p in range(3)]).astype(np.float32) / 255)
    err = {q: float((degradations.jpeg(x, q) - x).abs().mean()) for q in (95, 10)}
    assert err[95] < 0.02 < err[10]


def test_blur_kernels_of_the_real_esrgan_family_are_normalised_and_symmetric():
    for seed in range(40):
        k = degradations.random_kernel(torch.Generator().manual_seed(seed), sigma=(0.2, 3.0), sinc_p=0.3)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert abs(float(k.sum()) - 1) < 1e-5 and torch.allclose(k, torch.rot90(k, 2), atol=1e-6)


def test_sinc_filter_is_a_low_pass_with_its_cutoff():
    k = degradations.sinc_kernel(21, np.pi / 3).double()
    response = torch.fft.fft2(k, s=(64, 64)).abs()
    freqs = torch.fft.fftfreq(64) * 2 * np.pi  # radians per pixel
    radius = torch.sqrt(freqs[:, None] ** 2 + freqs[None, :] ** 2)
    assert abs(float(response[0, 0]) - 1) < 1e-6
    assert float(response[radius < np.pi / 6].min()) > 0.85  # pass band
    assert float(response[radius > np.pi / 2].max()) < 0.15  # stop band


def test_blind_mixture_is_the_domains_degradation_or_clean_bicubic():
    hr = torch.from_numpy(np.stack([pattern(64, 64, phase=p) for p in range(3)]).astype(np.float32) / 255)
    clean = degradations.bicubic(hr, 4)
    for domain, own in degradations.DOMAIN_DEGRADATIONS.items():
        runs = [degradations.DEGRADATIONS[f"blind-{domain}"](hr, 4, torch.Generator().manual_seed(s))
                for s in range(120)]
        share = np.mean([torch.equal(r, clean) for r in runs])
        assert abs(share - degradations.CLEAN_SHARE) < 0.1, (domain, share)
        assert own in degradations.DEGRADATIONS


def test_a_data_path_can_name_its_own_degradation(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(pattern(64, 64, phase=i)).save(tmp_path / name / f"{i}.png")
    opts = finetune.resolve_options(["--data", f"blind-microscopy={tmp_path / 'a'}", str(tmp_path / "b"), "--run",
                                     str(tmp_path / "r"), "--val-fraction", "0"])
    files = finetune.split_data(opts)
    own = {f for f, d in zip(files["train"], files["train_degradations"]) if d == "blind-microscopy"}
    assert own == {str(p) for p in (tmp_path / "a").iterdir()}
    assert files["train_degradations"].count(None) == 2
    pairs = data.load_pairs([Path(f) for f in files["train"]], crop=32, scale=4, norm="auto",
                            degradations=files["train_degradations"])
    own = [p for p in pairs if p.degradation]
    sampler = data.CropSampler(own, crop=32, scale=4, micro_batch=8, degradation="bicubic", seed=0)
    batch = sampler[0]
    clean = torch.stack([data.degrade(h, name="bicubic", scale=4, generator=None) for h in batch["hr"]])
    assert not torch.allclose(batch["lq"], clean, atol=1e-3)  # the path's mixture, not the run's bicubic
    opts.data = [f"bicubic={tmp_path / 'a'}", f"microscopy={tmp_path / 'a'}"]  # one folder through two
    files = finetune.split_data(opts)
    assert sorted(zip(files["train"], files["train_degradations"])) == sorted(
        (str(p), d) for p in (tmp_path / "a").iterdir() for d in ("bicubic", "microscopy"))
    opts.data = [f"blurry={tmp_path / 'a'}"]
    with pytest.raises(ResShiftError, match="unknown degradation 'blurry'"):
        finetune.split_data(opts)


# -- metrics -------------------------------------------------------------------------------------------------------
def test_psnr_and_ssim_known_values():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.8
    assert torch.allclose(metrics.psnr(x + 0.1, x, rgb=False), torch.full((2,), 20.0, dtype=torch.float64))
    assert torch.allclose(metrics.ssim(x, x, rgb=False), torch.ones(2, dtype=torch.float64))
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ours = metrics.ssim(noisy, x, rgb=False)
    assert float(ours.max()) < 0.95
    skimage_metrics = pytest.importorskip("skimage.metrics")
    reference = skimage_metrics.structural_similarity(
        noisy[0, 0].double().numpy(), x[0, 0].double().numpy(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0)
    assert abs(float(ours[0]) - reference) < 1e-6
    rgb = x.expand(-1, 3, -1, -1)
    # Y of a gray RGB image is 16/255 + 219/255 * gray, so an offset of 0.1 becomes 0.1 * 219/255
    expected = 20 - 20 * np.log10(219 / 255)
    assert np.allclose(metrics.psnr(rgb + 0.1, rgb, rgb=True).numpy(), expected)


# -- bad data: one clear line before training ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    """A random tiny latent model whose autoencoder the denoiser stage loads frozen."""
    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    return save_model(model, tmp_path_factory.mktemp("donor") / "tiny.safetensors", make_card(model, name="tiny"))


def write_bad(kind: str, folder):
    folder.mkdir()
    if kind == "empty":
        (folder / "notes.txt").write_text("no images here")
        return "no images found"
    Image.fromarray(pattern()).save(folder / "good.png")
    if kind == "unreadable":
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
        return "cannot be read as an image"
    if kind == "small":
        Image.fromarray(pattern(40, 50)).save(folder / "small.png")
        return "smaller than the 64-pixel training crop"
    if kind == "constant":
        tifffile.imwrite(folder / "flat.tif", np.full((80, 80), 7, np.uint16))
        return "every pixel has the same value"
    if kind == "nan":
        image = pattern(dtype=np.float32)
        image[3, 4] = np.nan
        tifffile.imwrite(folder / "nan.tif", image)
        return "contains NaN"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty", "unreadable", "small", "constant", "nan"])
def test_bad_data_is_one_clear_line_before_training(kind, tmp_path, donor, capsys):
    expected = write_bad(kind, tmp_path / "data")
    run = tmp_path / "run"
    code = finetune.main(["--data", str(tmp_path / "data"), "--run", str(run), "--init", "scratch", "--arch", "tiny",
                          "--autoencoder", str(donor), "--crop", "64", "--iterations", "2", "--no-tensorboard"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and expected in err, err
    assert not (run / "checkpoint.pt").exists()


def test_held_out_images_need_the_validation_crop_not_the_training_crop(tmp_path, donor, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    Image.fromarray(pattern()).save(tmp_path / "train" / "big.png")
    Image.fromarray(pattern(48, 56)).save(tmp_path / "val" / "small.png")
    args = ["--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"), "--init", "scratch", "--arch",
            "tiny", "--autoencoder", str(donor), "--crop", "64", "--batch", "1", "--iterations", "1",
            "--no-tensorboard"]
    assert finetune.main([*args, "--run", str(tmp_path / "too_small"), "--val-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "smaller than the 64-pixel validation crop" in err and "--val-size" in err, err
    assert finetune.main([*args, "--run", str(tmp_path / "fits"), "--val-size", "48"]) == 0
    assert (tmp_path / "fits" / "model.safetensors").exists()


def test_missing_path_and_bad_resume_options_are_errors(tmp_path, capsys):
    assert finetune.main(["--data", str(tmp_path / "nowhere"), "--run", str(tmp_path / "r")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(ResShiftError, match="not a training run folder"):
        finetune.resolve_options(["--resume", str(tmp_path)])
    (tmp_path / "run.json").write_text('{"options": {"crop": 128}, "files": {}}')
    assert finetune.resolve_options(["--resume", str(tmp_path), "--crop", "128", "--iterations", "9"]).iterations == 9
    with pytest.raises(ResShiftError, match="--crop cannot change when resuming"):
        finetune.resolve_options(["--resume", str(tmp_path), "--crop", "256"])


def test_a_run_from_before_per_entry_degradations_resumes_with_them(tmp_path):
    files = {"train": ["a.png", "b.png"], "val": ["c.png"], "degradations": {"b.png": "microscopy"}}
    (tmp_path / "run.json").write_text(json.dumps({"files": files}))
    assert finetune.stored_files(tmp_path) == {"train": ["a.png", "b.png"], "val": ["c.png"],
                                               "train_degradations": [None, "microscopy"], "val_degradations": [None]}


def test_scaled_copies_shrink_each_image_and_skip_copies_below_the_minimum_side(tmp_path):
    from PIL import Image

    from training.recipes.scaled_copies import scaled_copies

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 50, 3), dtype=np.uint8)).save(src / "a.png")
    before = (src / "a.png").read_bytes()
    assert scaled_copies(src, tmp_path / "dst", [0.6, 0.8], min_side=35) == 1
    assert Image.open(tmp_path / "dst" / "a_x8.png").size == (40, 80)
    assert (src / "a.png").read_bytes() == before


def test_scaled_copies_refuse_scales_that_would_not_shrink_or_would_share_a_name(tmp_path, capsys):
    from training.recipes.scaled_copies import main

    (tmp_path / "src").mkdir()
    for scales in (["0.75", "0.8"], ["1.5"]):
        with pytest.raises(SystemExit):
            main([str(tmp_path / "src"), str(tmp_path / "dst"), "--scales", *scales])
        assert "at most one per tenth" in capsys.readouterr().err and not (tmp_path / "dst").exists()
