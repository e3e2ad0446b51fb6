"""Benchmarks and the shipping script run end to end on the CPU (small models, tiny inputs)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line][1:]


def test_bench_official_quick_compares_the_cli_with_the_naive_loop(capsys):
    import bench_official

    bench_official.main(["--quick", "--arch", "tiny", "--device", "cpu"])
    naive, cli = rows(capsys.readouterr().out)
    assert naive[1].startswith("naive") and cli[1].startswith("cli")
    assert int(cli[2]) <= int(naive[2]) == 1  # tiles
    assert float(cli[6]) > 0 and float(naive[6]) > 0 and float(cli[7]) > 100  # out-Mpx/s, peak RSS MB
    assert cli[3] == "64 (8) x 2"  # the latent default, recorded by the CLI


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU path")
def test_bench_gpu_quick_says_there_is_no_gpu_and_still_runs(capsys):
    import bench_gpu

    bench_gpu.main(["--models", "default"])
    assert "no CUDA GPU" in capsys.readouterr().out
    bench_gpu.main(["--quick", "--models", "default"])
    out = capsys.readouterr().out
    (row,) = rows(out)
    assert row[:5] == ["default", "128x128", "1", "256 (16) x 1", "fp32"] and 0 < float(row[7])
    assert 0 < float(row[8].rstrip("%")) <= 100  # busy fraction


def test_bench_quality_scores_a_model_again_at_each_noise_scale_asked(tmp_path, capsys):
    import numpy as np
    import tifffile

    import bench_quality

    yy, xx = np.mgrid[:64, :64] / 64
    folder = tmp_path / "natural"
    folder.mkdir()
    for i in range(2):
        image = np.stack([np.sin(7 * xx + i), np.cos(5 * yy * xx), np.sin(9 * yy - i)], -1) * 0.4 + 0.5
        tifffile.imwrite(folder / f"{i}.tif", (image * 255).astype(np.uint8))
    bench_quality.main([f"natural={folder}", "--models", "clean", "--kappa", "0.005", "--size", "64",
                        "--json", str(tmp_path / "q.json")])
    scores = json.loads((tmp_path / "q.json").read_text())["tables"]["bicubic"]["natural"]
    domains = capsys.readouterr().out.split("| domain | source")[0]
    assert [r[2] for r in rows(domains)] == ["bicubic", "lanczos", "clean", "clean@kappa=0.005"]
    assert scores["clean"]["psnr"] != scores["clean@kappa=0.005"]["psnr"]  # another noise scale, another sample


def test_bench_quality_reports_each_source_and_the_mild_degradation(tmp_path, capsys):
    import numpy as np
    import tifffile

    import bench_quality

    yy, xx = np.mgrid[:64, :64] / 64
    for i, source in enumerate(("cameraA", "cameraA", "scopeB")):
        (tmp_path / "natural" / source).mkdir(parents=True, exist_ok=True)
        image = np.stack([np.sin(7 * xx + i), np.cos(5 * yy * xx), np.sin(9 * yy - i)], -1) * 0.4 + 0.5
        tifffile.imwrite(tmp_path / "natural" / source / f"{i}.tif", (image * 255).astype(np.uint8))
    bench_quality.main([f"natural={tmp_path / 'natural'}", "--models", "clean", "--size", "64", "--lr", "bicubic",
                        "mild", "--json", str(tmp_path / "q.json")])
    report = json.loads((tmp_path / "q.json").read_text())
    for kind in ("bicubic", "mild"):
        by_source = report["sources"][kind]["natural"]
        assert {k: v["images"] for k, v in by_source.items()} == {"cameraA": 2, "scopeB": 1}
        mean = (2 * by_source["cameraA"]["clean"] + by_source["scopeB"]["clean"]) / 3
        assert mean == pytest.approx(report["tables"][kind]["natural"]["clean"]["psnr"])
    assert report["tables"]["bicubic"]["natural"]["bicubic"]["psnr"] != report["tables"]["mild"]["natural"][
        "bicubic"]["psnr"]  # another LR
    per_source = [r for r in rows(capsys.readouterr().out) if r[1] in ("cameraA", "scopeB")]
    assert len(per_source) == 4 and all(r[0] == "natural" for r in per_source)


def test_ship_model_samples_at_a_new_kappa_and_the_stages_keep_the_one_they_trained_with(tmp_path, monkeypatch):
    import torch

    from napari_resshift.loading import load_model, load_project_model, save_model

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import ship_model

    model, card = load_model("clean")
    trained_with = card["config"]["diffusion"]["params"]["kappa"]
    run = {k: card["training"][k] for k in ("degradation", "iterations", "wall_time_s", "lr", "ema", "batch", "crop",
                                            "rollout", "precision", "data", "hardware")}
    source = save_model(model, tmp_path / "run.safetensors", card | {"training": run | {"init": "run0 (clean)"}})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "MANIFEST.tsv").write_text("relative_path\tlicense\nnatural/T91/a.png\tMIT\n")
    (tmp_path / "q.json").write_text('{"tables": {}}')
    (tmp_path / "speed.txt").write_text("| model | s |\n")
    monkeypatch.setattr(ship_model, "WEIGHTS", tmp_path)
    ship_model.main(["clean", str(source), "--quality", str(tmp_path / "q.json"), "--speed",
                     str(tmp_path / "speed.txt"), "--tile", "256", "--overlap", "16", "--recipe", "r.sh",
                     "--description", "d", "--kappa", "0.005", "--data", str(tmp_path / "data")])
    shipped, shipped_card = load_project_model(tmp_path / "clean.safetensors")
    assert trained_with != 0.005 and shipped.schedule.kappa == 0.005 and "kappa 0.005" in str(shipped_card)
    assert shipped_card["training"]["stages"] == [shipped_card["training"]["stages"][0] | {"kappa": trained_with}]
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), model.state_dict().values()))


def test_ship_model_records_the_split_by_sources_and_the_other_splits_numbers(tmp_path, monkeypatch):
    from napari_resshift.loading import load_model, load_project_model, save_model

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import ship_model

    model, card = load_model("clean")
    sources = "runs/clean/sources192/train"
    run = {k: card["training"][k] for k in ("degradation", "iterations", "wall_time_s", "lr", "ema", "batch", "crop",
                                            "rollout", "precision", "hardware")}
    run["data"] = [f"{sources}/natural/cq100", f"{sources}/satellite/titiler"]
    source = save_model(model, tmp_path / "run.safetensors", card | {"training": run | {"init": "run0 (clean)"}})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "MANIFEST.tsv").write_text(
        "relative_path\tlicense\nnatural/cq100/a.png\tCC0\nsatellite/titiler/TCI.tif\tMIT\nmicroscopy/x/y.tif\tBSD\n")
    (tmp_path / "q.json").write_text('{"tables": {"bicubic": {}}}')
    (tmp_path / "f.json").write_text('{"tables": {"blind": {}}}')
    (tmp_path / "speed.txt").write_text("| model | s |\n")
    monkeypatch.setattr(ship_model, "WEIGHTS", tmp_path)
    ship_model.main(["clean", str(source), "--quality", str(tmp_path / "q.json"), "--split", "sources",
                     "--quality-other", str(tmp_path / "f.json"), "--speed", str(tmp_path / "speed.txt"), "--tile",
                     "256", "--overlap", "16", "--recipe", "r.sh", "--description", "d", "--data",
                     str(tmp_path / "data")])
    _, shipped = load_project_model(tmp_path / "clean.safetensors")
    assert "--by sources" in shipped["metrics"]["split"] and "bicubic" in shipped["metrics"]["tables"]
    assert "--by files" in shipped["metrics_other_split"]["split"] and "blind" in shipped["metrics_other_split"][
        "tables"]
    assert shipped["training"]["split"] == shipped["metrics"]["split"]
    assert set(shipped["training"]["data_licences"]) == {"natural/cq100", "satellite"}  # its domains, no others
    assert "4x4 HR block is 48 channels" in shipped["architecture"]["packing"]


def test_bench_speed_runs_each_model_at_each_precision_against_its_fp32_output(capsys):
    import bench_speed

    bench_speed.main(["--models", "clean", "--precision", "fp32", "bf16", "--size", "16", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "native bf16: " in out
    fp32, bf16 = rows(out)
    assert fp32[:2] == ["clean", "fp32 = fp32"] and bf16[:2] == ["clean", "bf16 = bf16"]
    assert fp32[-2:] == ["1.00x", "-"] and 30 < float(bf16[-1]) < 100  # bf16 differs from fp32, but little


def test_bench_quality_scores_an_x2_model_at_x2_and_refuses_it_at_x4(tmp_path, capsys):
    import numpy as np
    import tifffile

    import bench_quality
    from napari_resshift.loading import make_card, save_model
    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import architecture

    model = ResShiftModel(architecture("conv-tiny", mode="packed", scale=2)).eval()
    path = save_model(model, tmp_path / "x2.safetensors", make_card(model, name="x2"))
    yy, xx = np.mgrid[:64, :64] / 64
    (tmp_path / "natural").mkdir()
    tifffile.imwrite(tmp_path / "natural" / "a.tif", ((np.sin(9 * xx * yy) * 0.4 + 0.5) * 255).astype(np.uint8))
    bench_quality.main([f"natural={tmp_path / 'natural'}", "--models", f"x2={path}", "--scale", "2", "--size", "64",
                        "--json", str(tmp_path / "q.json")])
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["benchmark"].startswith("benchmarks/bench_quality.py, x2") and "x2" in report["tables"]["bicubic"][
        "natural"]
    with pytest.raises(SystemExit):
        bench_quality.main([f"natural={tmp_path / 'natural'}", "--models", str(path), "--size", "64"])
    assert "a x2 model; bench it with --scale 2" in capsys.readouterr().err
