"""Every command of README.md and CONTRIBUTING.md is checked: run on small inputs where that is cheap, else its
arguments parsed by the program's own parser, its tests collected, its shell script syntax-checked.

Each fenced ``bash`` block is split into commands (``&&`` chains, ``\\`` continuations, trailing comments), and every
command must match a rule of ``RULES``; a command without one fails the test, so a new command needs a rule. The
README's ``python`` blocks run as written. What each rule does is said in its comment: nothing here checks more than
that.
"""
from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tomllib
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "CONTRIBUTING.md")
EXAMPLE_SIDE = 48  # the set-up's example mosaic is written at this size here instead of 512 (the same code path)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def commands(block: str) -> list[str]:
    """One string per command: continuations joined, comments dropped, ``&&`` chains split."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            out.append(shlex.join(words[:end]))
            words = words[end + 1:]
    return out


def documented() -> list[tuple[str, str]]:
    return [(doc, command) for doc in DOCS for block in blocks((ROOT / doc).read_text(), "bash")
            for command in commands(block)]


# (pattern, how it is checked); the first match decides
RULES = [
    (r"^pip install ", "install"),  # the constraints file and the extras exist (pip itself needs the network)
    (r"^bash \.ci/xvfb-deps\.sh$", "syntax"),  # bash -n; CI runs it (see test_ci_runs_the_readme_test_command)
    (r"^bash training/recipes/\S+\.sh", "syntax"),  # bash -n: the recipes take hours of training
    (r"^(xvfb-run -a )?python -m pytest", "collect"),  # collected: the named files exist and -k selects tests
    (r"^(RESSHIFT_PARITY_DIRS=\S+ )python -m pytest", "collect"),
    (r"^python -m pipelines\.upscale_zarr .*--(workers|scheduler)", "parse"),  # needs a cluster
    (r"^dask (scheduler|worker) ", "dask"),  # dask's own CLI: the subcommand exists and takes the options given
    (r"^python -m pipelines\.upscale_zarr \S+ --model weights/", "parse"),  # official weights are not shipped; the
    # folder form is run with a tiny stand-in preset in tests/test_cli.py
    (r"^(python -m pipelines\.upscale_zarr|resshift-upscale)( |$)", "run"),  # on small inputs, the shipped models
    (r"^(python -m training\.finetune|resshift-finetune)( |$)", "parse"),  # a training run takes half an hour
    (r"^napari \S+\.ome\.zarr$", "napari"),  # this plugin's reader opens the file napari is given (no window)
    (r"^python scripts/make_parity_kit\.py ", "elsewhere:tests/test_kit_generality.py"),  # minutes: run there
    (r"^(xvfb-run -a )?python scripts/\S+\.py", "parse"),  # figures and shipping need trained runs or a display
]


def rule(command: str) -> str | None:
    return next((how for pattern, how in RULES if re.search(pattern, command)), None)


def test_every_documented_command_has_a_rule():
    found = documented()
    assert len(found) >= 20, found
    missing = [f"{doc}: {command}" for doc, command in found if rule(command) is None]
    assert not missing, "commands without a rule in tests/test_docs.py: " + "; ".join(missing)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = [b.strip() for b in blocks((ROOT / "README.md").read_text(), "bash")]
    assert ci in readme  # verbatim, as its own block
    assert blocks((ROOT / "CONTRIBUTING.md").read_text(), "bash")[0].strip() == ci


def test_readme_is_a_short_guide_linking_the_rest():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert not re.search(r"#\d+\b", text) and "stage " not in text.lower()
    for target in ("docs/models.md", "docs/benchmarks.md", "docs/formats.md", "CONTRIBUTING.md"):
        assert f"]({target})" in text and (ROOT / target).is_file()
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"):
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if not link.startswith("http"):
                assert (doc.parent / link).exists(), f"{doc.name}: broken link {link}"
        for anchor in re.findall(r"\]\(#([^)]+)\)", doc.read_text()):
            headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                        for h in re.findall(r"^#+ (.*)$", doc.read_text(), flags=re.M)}
            assert anchor in headings, f"{doc.name}: no section for #{anchor}"


# -- the checks ------------------------------------------------------------------------------------------------------
class Parsed(Exception):
    """Raised right after the program's own parser accepted the arguments."""


@contextmanager
def argv(words: list[str]):
    saved = sys.argv
    sys.argv = words
    try:
        yield
    finally:
        sys.argv = saved


def program(words: list[str]):
    """(a callable that runs the command as ``python ...`` or the console script would, the words after env)."""
    env = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[:2] == ["xvfb-run", "-a"]:
        words = words[2:]
    if words[:2] == ["python", "-m"]:
        return (lambda: runpy.run_module(words[2], run_name="__main__", alter_sys=True)), [words[2], *words[3:]], env
    if words[0] == "python":
        return (lambda: runpy.run_path(str(ROOT / words[1]), run_name="__main__")), words[1:], env
    (entry,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == words[0]]
    assert shutil.which(words[0]), f"{words[0]} is not installed on PATH"
    return (lambda: entry.load()()), words, env


def exit_code(run) -> int:
    """As the shell would see it: ``sys.exit(main())`` of ``python -m``, or the console script's return value."""
    try:
        code = run()
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code
    return code if isinstance(code, int) else 0


def parse_only(run):
    original = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse
    try:
        with pytest.raises(Parsed):
            run()
    finally:
        argparse.ArgumentParser.parse_args = original


def small_inputs(where: Path) -> None:
    """The files the documented commands name, small: a 2-D TIFF, a z stack, a folder of scans, an OME-Zarr."""
    from pipelines.example import write_example

    rng = np.random.default_rng(0)
    tifffile.imwrite(where / "scan.tif", rng.integers(0, 4000, (24, 32), dtype=np.uint16))
    tifffile.imwrite(where / "stack.tif", rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), photometric="minisblack")
    (where / "scans").mkdir()
    for k in range(2):
        tifffile.imwrite(where / "scans" / f"s{k}.tif", rng.integers(0, 255, (16, 20), dtype=np.uint8))
    write_example(where / "big.ome.zarr", height=32, width=40)
    for name in ("training", "scripts", "benchmarks", ".ci", "constraints.txt", "pyproject.toml"):
        (where / name).symlink_to(ROOT / name)
    (where / "docs").mkdir()  # scripts write their figures here, not into the repository


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    where = tmp_path_factory.mktemp("docs")
    small_inputs(where)
    return where


@pytest.fixture(scope="module")
def collected() -> list[str]:
    """Every test id of the suite, collected once in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [line for line in proc.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("doc, command", documented(), ids=lambda v: v if len(v) < 60 else v[:57] + "...")
def test_documented_command(doc, command, workdir, collected, monkeypatch):
    import pipelines.example

    how = rule(command)
    assert how is not None, f"{doc}: no rule for {command!r}"
    words = shlex.split(command)
    monkeypatch.chdir(workdir)
    if how == "install":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for word in words:
            for extra in (m.group(1).split(",") if (m := re.fullmatch(r"\.\[(.+)\]", word)) else []):
                assert extra in extras, f"no extra {extra!r} in pyproject.toml"
        if "-c" in words:
            assert (ROOT / words[words.index("-c") + 1]).is_file()
    elif how == "syntax":
        subprocess.run(["bash", "-n", str(ROOT / words[1])], check=True)
    elif how == "collect":
        words = [w for w in words if not re.match(r"^[A-Z_]+=", w) and w not in ("xvfb-run", "-a")]
        after = words[words.index("pytest") + 1:]
        files = [w for w in after if w.startswith("tests/")]
        for name in files:
            assert any(test.startswith(name + "::") for test in collected), f"{name} has no collected tests"
        if "-k" in after:
            word = after[after.index("-k") + 1]
            assert any(word in test for test in collected), f"-k {word} selects nothing"
    elif how.startswith("elsewhere:"):
        assert Path(words[1]).name in (ROOT / how.split(":", 1)[1]).read_text()
    elif how == "dask":
        usage = subprocess.run(["dask", words[1], "--help"], capture_output=True, text=True, timeout=120)
        assert usage.returncode == 0, usage.stderr
        for option in (w for w in words if w.startswith("--")):
            assert option in usage.stdout, f"dask {words[1]} has no {option}"
    elif how == "napari":
        from napari_resshift._napari._reader import get_reader

        reader = get_reader(words[1])
        assert reader is not None and reader(words[1]), f"the plugin's reader does not open {words[1]}"
    else:
        run, args, env = program(words)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        original = pipelines.example.write_example
        monkeypatch.setattr(pipelines.example, "write_example",
                            lambda path, **kw: original(path, **kw | {"height": EXAMPLE_SIDE, "width": EXAMPLE_SIDE}))
        with argv(args):
            if how == "parse":
                parse_only(run)
            else:
                assert exit_code(run) == 0, f"{command} failed"


def test_readme_python_runs_as_written(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    (code,) = blocks((ROOT / "README.md").read_text(), "python")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["result"].image.shape == (96, 128) and scope["result"].image.dtype == np.uint16
    assert tifffile.imread(workdir / "scan_x4.tif").shape == (96, 128)


def test_the_documented_outputs_are_where_the_readme_says(workdir):
    """After the commands ran (this module's order): the outputs the README names exist."""
    if not (workdir / "demo_x4.ome.zarr").exists():
        pytest.skip("run with the documented commands above it (the whole module)")
    for name in ("demo_x4.ome.zarr", "scan_x4.ome.zarr", "scan_x4.tif", "big_x4.ome.zarr", "stack_x4.ome.zarr",
                 "upscaled/s0_x4.ome.zarr", "upscaled/s1_x4.ome.zarr"):
        assert (workdir / name).exists(), name
    assert zarr.open_group(str(workdir / "demo_x4.ome.zarr"), mode="r")["0"].shape == (4 * EXAMPLE_SIDE,) * 2
