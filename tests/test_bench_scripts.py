"""The official and GPU benchmarks' quick modes run end to end on the CPU (small models, tiny inputs)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


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
