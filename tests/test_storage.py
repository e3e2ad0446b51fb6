"""Inputs and outputs in object storage, against real servers on the loopback only: moto's S3 server (started here on
127.0.0.1 at a free port) and a local HTTP server with range requests. A run through S3 equals the same run on a
local disk bit for bit, and so does one whose client or worker was killed (kill -9) mid-run, finished by --resume; a
TIFF over HTTP is read by the ranges it needs; every storage failure is one line, exit 2, without a credential, leaving
nothing that looks complete.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
import zarr

from napari_resshift import ome_metadata, outofcore
from pipelines import execute, ome, readers, storage, upscale_zarr

ROOT = Path(__file__).resolve().parents[1]
TILING = ["--tile", "16", "--overlap", "4", "--chunk", "1", "--seed", "3", "--quiet"]
KEY_ID, SECRET = "AKIAEXAMPLEKEYID0001", "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
BUCKET = "bkt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forget_filesystems() -> None:
    """fsspec keeps one file system per set of options: a changed environment needs fresh ones."""
    import s3fs

    storage.filesystem.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on the loopback, the standard AWS variables pointing at it, one bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log is no output of ours
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": KEY_ID,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no profile of the machine's user is read
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        for name, value in env.items():
            mp.setenv(name, value)
        forget_filesystems()
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
        forget_filesystems()
    server.stop()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers ``Range: bytes=a-b`` with 206 and counts requests and body bytes."""

    counts: ClassVar[dict] = {"requests": 0, "bytes": 0, "ranges": []}

    def log_message(self, *args):  # the test's output stays clean
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not path.is_file() or not match:
            return super().send_head()
        size = path.stat().st_size
        start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        data = source.read(getattr(self, "_left", -1))
        type(self).counts["bytes"] += len(data)
        outputfile.write(data)

    def do_GET(self):
        type(self).counts["requests"] += 1
        type(self).counts["ranges"].append((self.path, self.headers.get("Range")))
        super().do_GET()

    def do_HEAD(self):
        type(self).counts["requests"] += 1
        super().do_HEAD()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A folder served over http://127.0.0.1 with range requests; ``counts`` of what was fetched."""
    root = tmp_path_factory.mktemp("web")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", RangeHandler.counts
    server.shutdown()
    server.server_close()


VIEW = {"options": storage.Options()}  # the tests' own view of the bucket (an IAM admin's while IAM checks are on)


def s3_path(key: str) -> storage.RemotePath:
    return storage.path(f"s3://{BUCKET}/{key}", VIEW["options"])


def s3_array(key: str, data: np.ndarray, chunks=(16, 16), fmt: int = 3):
    a = zarr.open_array(storage.zarr_store(s3_path(key), read_only=False), mode="w", shape=data.shape, chunks=chunks,
                        dtype=data.dtype, zarr_format=fmt)
    a[:] = data
    return a


def stored(key: str) -> list[str]:
    location = s3_path(key)
    fs = location._fresh()
    return sorted(fs.find(location.key)) if fs.exists(location.key) else []


def everything_stored() -> bytes:
    fs = s3_path("x")._fresh()
    return b"".join(fs.cat_file(p) for p in fs.find(BUCKET))


def image(shape=(40, 40), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 200 + 1).astype("uint16")


def levels(group) -> dict:
    return {k: group[k][:] for k in sorted(group.array_keys())}


def open_s3_group(key: str):
    return zarr.open_group(storage.zarr_store(s3_path(key), read_only=True), mode="r")


# -- bit for bit against a local run ---------------------------------------------------------------------------------

def test_s3_zarr_to_s3_ome_zarr_on_two_workers_equals_local_run(s3, tiny_model_path, tmp_path):
    """s3:// zarr -> s3:// OME-Zarr on a LocalCluster of 2 worker processes (each opens input and output by URL
    itself) equals the threaded run on a local disk; no credential anywhere in the stored output."""
    data = image()
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=data.shape, chunks=(16, 16), dtype=data.dtype)[:] = data
    s3_array("two/in.zarr", data)
    model = ["--model", tiny_model_path, *TILING, "--torch-threads", "1"]
    assert upscale_zarr.main([str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.ome.zarr"), *model]) == 0
    assert upscale_zarr.main(["s3://bkt/two/in.zarr", "-o", "s3://bkt/two/out.ome.zarr", "--workers", "2", *model]) == 0
    local, remote = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r"), open_s3_group("two/out.ome.zarr")
    got, want = levels(remote), levels(local)
    assert got.keys() == want.keys() == {"0", "1", "2"}
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    attrs = remote.attrs.asdict()
    assert ome.run_status(attrs) == "complete" and ome.read_multiscales(attrs) is not None
    assert attrs["resshift"]["params"]["input"] == "s3://bkt/two/in.zarr"
    assert not any(".resshift-done" in p for p in stored("two/out.ome.zarr"))
    blob = everything_stored()
    assert KEY_ID.encode() not in blob and SECRET.encode() not in blob


def tiled_tiff(path: Path, data: np.ndarray, tile=(16, 16)) -> Path:
    tifffile.imwrite(path, data, tile=tile, photometric="minisblack")
    return path


def test_s3_tiff_to_s3_ome_zarr_equals_local_run(s3, tiny_model_path, tmp_path):
    """A TIFF read from S3 by range requests (threaded scheduler) gives the same bits as the local file."""
    data = image((36, 44), seed=1)
    local = tiled_tiff(tmp_path / "in.tif", data)
    s3_path("tif/in.tif").fs.put_file(str(local), f"{BUCKET}/tif/in.tif")
    model = ["--model", tiny_model_path, *TILING]
    assert upscale_zarr.main([str(local), "-o", str(tmp_path / "out.ome.zarr"), *model]) == 0
    assert upscale_zarr.main(["s3://bkt/tif/in.tif", "-o", "s3://bkt/tif/out.ome.zarr", "--threads", "2", *model]) == 0
    got, want = levels(open_s3_group("tif/out.ome.zarr")), levels(zarr.open_group(str(tmp_path / "out.ome.zarr")))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_s3_output_resumes_and_refuses_like_a_local_disk(s3, tiny_model_path, capsys, monkeypatch):
    """An existing output: refused without a flag, finished by --resume (nothing to do), replaced by --overwrite;
    an interrupted one (marker 'running', chunks missing) is finished by --resume to the same bits."""
    s3_array("again/in.zarr", image((24, 24), seed=2))
    args = ["s3://bkt/again/in.zarr", "-o", "s3://bkt/again/out.ome.zarr", "--model", tiny_model_path, *TILING]
    assert upscale_zarr.main(args) == 0
    whole = levels(open_s3_group("again/out.ome.zarr"))
    capsys.readouterr()
    assert upscale_zarr.main(args) == 2
    assert "already exists; add --overwrite" in capsys.readouterr().err
    assert upscale_zarr.main([*args, "--resume"]) == 0
    assert upscale_zarr.main([*args, "--resume", "--seed", "4"]) == 2
    # a run interrupted after two chunks are recorded (the third is written, not recorded: it is computed again)
    calls = []
    touch = storage.RemotePath.touch

    def interrupted(self):
        calls.append(self)
        if len(calls) == 3:
            raise KeyboardInterrupt
        touch(self)

    monkeypatch.setattr(storage.RemotePath, "touch", interrupted)
    assert upscale_zarr.main([*args, "--overwrite"]) == 130
    monkeypatch.setattr(storage.RemotePath, "touch", touch)
    attrs = open_s3_group("again/out.ome.zarr").attrs.asdict()
    assert ome.run_status(attrs) == "running" and ome.read_multiscales(attrs) is None  # nothing looks complete
    capsys.readouterr()
    assert upscale_zarr.main(["s3://bkt/again/out.ome.zarr", "-o", "s3://bkt/again/x.ome.zarr", "--model",
                              tiny_model_path, *TILING]) == 2
    assert "unfinished" in capsys.readouterr().err
    assert upscale_zarr.main([*args, "--resume"]) == 0
    resumed = levels(open_s3_group("again/out.ome.zarr"))
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k])
    assert ome.run_status(open_s3_group("again/out.ome.zarr").attrs.asdict()) == "complete"
    assert upscale_zarr.main([*args, "--overwrite"]) == 0


class DroppingProxy:
    """A TCP proxy in front of the S3 server that, once ``after`` chunk writes of level 0 went through, closes every
    connection and refuses new ones: the storage vanishes in the middle of a run."""

    def __init__(self, target: str, *, after: int):
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.after, self.writes, self.dropped, self.open = after, 0, False, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dropped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.open += [client, server]
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _pipe(self, source, sink) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if re.match(rb"PUT /bkt/[^ ]*/0/c/", data):
                    self.writes += 1
                    if self.writes > self.after:
                        self.drop()
                        return
                sink.sendall(data)

    def drop(self) -> None:
        self.dropped = True
        for s in [self.listener, *self.open]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_connection_dropped_mid_run_then_resume_equals_an_uninterrupted_run(s3, tiny_model_path, tmp_path, capsys):
    """The storage vanishes after two chunks are written: one line naming the problem and --resume, exit 2, an output
    that does not look complete; --resume once it is back computes the rest, equal to a local run bit for bit."""
    data = image((40, 40), seed=5)
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=data.shape, chunks=(16, 16), dtype=data.dtype)[:] = data
    s3_array("drop/in.zarr", data)
    model = ["--model", tiny_model_path, *TILING]
    assert upscale_zarr.main([str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.ome.zarr"), *model]) == 0
    proxy = DroppingProxy(s3["AWS_ENDPOINT_URL"], after=2)
    args = ["s3://bkt/drop/in.zarr", "-o", "s3://bkt/drop/out.ome.zarr", *model]
    capsys.readouterr()
    assert upscale_zarr.main([*args, "--storage-options", json.dumps({"endpoint_url": proxy.url})]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert proxy.dropped and len(err) == 1 and "--resume" in err[0] and "storage" in err[0], err
    assert KEY_ID not in err[0] and SECRET not in err[0]
    attrs = open_s3_group("drop/out.ome.zarr").attrs.asdict()
    assert ome.run_status(attrs) == "running" and ome.read_multiscales(attrs) is None
    assert upscale_zarr.main([*args, "--resume"]) == 0
    got, want = levels(open_s3_group("drop/out.ome.zarr")), levels(zarr.open_group(str(tmp_path / "out.ome.zarr")))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


# -- kill -9 mid-run ---------------------------------------------------------------------------------------------------

KILL_SHAPE = (2, 40, 40)  # zyx: 2 planes of 4 x 4 chunks, a block each: one per worker, long enough to be killed
KILL_CHUNKS = 32


@pytest.fixture(scope="module")
def kill_job(s3, tiny_model_path, tmp_path_factory):
    """The kill tests' input in the bucket, their flags, and the levels of the same job run locally, uninterrupted."""
    data = image(KILL_SHAPE, seed=7)
    root = tmp_path_factory.mktemp("kill")
    zarr.open_array(str(root / "in.zarr"), mode="w", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype)[:] = data
    s3_array("kill/in.zarr", data, chunks=(1, 16, 16))
    flags = ["--model", tiny_model_path, "--axes", "zyx", *TILING, "--torch-threads", "1"]
    assert upscale_zarr.main([str(root / "in.zarr"), "-o", str(root / "whole.ome.zarr"), *flags]) == 0
    return flags, levels(zarr.open_group(str(root / "whole.ome.zarr"), mode="r"))


def pipeline_process(args: list[str], log: Path) -> subprocess.Popen:
    """The CLI in a session of its own, so that one killpg ends it and its LocalCluster's worker processes together;
    the environment (AWS_*) points it at the test's S3 server."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with log.open("w") as out:  # a file, not a pipe: dask's log lines can never block the run
        return subprocess.Popen([sys.executable, "-m", "pipelines.upscale_zarr", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_done(key: str, proc: subprocess.Popen, log: Path, *, at_least: int, timeout: float = 300) -> int:
    """Poll the bucket until ``at_least`` chunks of the output at ``key`` are recorded done, the run still going."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (n := len(stored(f"{key}/{execute.DONE_DIR}"))) >= at_least:
            return n
        time.sleep(0.25)
    raise AssertionError(f"no {at_least} chunks done while the run went on (exit {proc.poll()}):\n{log.read_text()}")


def alive_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` still running (zombies, which write nothing, left aside)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state not in "ZX":
                alive.append(int(stat.parent.name))
    return alive


def test_client_killed_mid_run_then_resume_equals_an_uninterrupted_run(kill_job, tmp_path, capsys, monkeypatch):
    """kill -9 of the CLI with its LocalCluster's 2 worker processes while chunks go to s3://: nothing of the run
    lives on, the output does not look complete and is refused as an input and without --resume; --resume computes
    only the chunks not recorded done, and every level equals the uninterrupted local run bit for bit."""
    flags, whole = kill_job
    args = ["s3://bkt/kill/in.zarr", "-o", "s3://bkt/kill/client.ome.zarr", *flags]
    log = tmp_path / "cli.log"
    proc = pipeline_process([*args, "--workers", "2"], log)
    try:
        wait_for_done("kill/client.ome.zarr", proc, log, at_least=2)
    finally:
        kill_group(proc)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while alive_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive_in_group(proc.pid), "a worker of the killed run lives on"
    finished = len(stored(f"kill/client.ome.zarr/{execute.DONE_DIR}"))
    assert 0 < finished < KILL_CHUNKS, finished
    attrs = open_s3_group("kill/client.ome.zarr").attrs.asdict()
    assert ome.run_status(attrs) == "running" and ome.read_multiscales(attrs) is None
    assert ome_metadata.unfinished(attrs)  # what napari's reader refuses
    capsys.readouterr()
    assert upscale_zarr.main(args) == 2
    assert "add --overwrite to replace it or --resume to finish it" in capsys.readouterr().err
    assert upscale_zarr.main(["s3://bkt/kill/client.ome.zarr", "-o", "s3://bkt/kill/x.ome.zarr", *flags]) == 2
    assert "unfinished" in capsys.readouterr().err
    computed = []
    compute_block = outofcore.compute_block

    def counting(upscaler, prepared, *a, **kw):
        computed.extend(prepared.todo)
        return compute_block(upscaler, prepared, *a, **kw)

    monkeypatch.setattr(outofcore, "compute_block", counting)
    # in this process on dask's threads: the bits depend on --torch-threads only, fixed by the first run
    assert upscale_zarr.main([*args, "--resume"]) == 0
    assert len(computed) == KILL_CHUNKS - finished
    group = open_s3_group("kill/client.ome.zarr")
    got = levels(group)
    assert got.keys() == whole.keys() == {"0", "1", "2"}
    for k in whole:
        np.testing.assert_array_equal(got[k], whole[k])
    assert ome.run_status(group.attrs.asdict()) == "complete"
    assert not stored(f"kill/client.ome.zarr/{execute.DONE_DIR}")


def test_worker_killed_mid_run_is_rescheduled_and_the_output_equals_an_uninterrupted_run(kill_job, tmp_path):
    """kill -9 of one of the 2 worker processes of a cluster (--scheduler) while it computes a block into s3://:
    the scheduler takes that block back and runs it again (the worker's nanny starts a fresh one), the run ends
    normally, its chunks written anew over whatever the killed worker left, and every level equals the
    uninterrupted local run bit for bit."""
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class TakenBack(SchedulerPlugin):
        """Tasks taken from a worker that left while computing them (processing -> released happens only then)."""

        def __init__(self):
            self.keys = []

        def transition(self, key, start, finish, *args, **kwargs):
            if (start, finish) == ("processing", "released"):
                self.keys.append(key)

    flags, whole = kill_job
    log = tmp_path / "cli.log"
    taken = TakenBack()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        cluster.scheduler.add_plugin(taken)
        args = ["s3://bkt/kill/in.zarr", "-o", "s3://bkt/kill/worker.ome.zarr", *flags]
        proc = pipeline_process([*args, "--scheduler", cluster.scheduler_address], log)
        try:
            wait_for_done("kill/worker.ome.zarr", proc, log, at_least=2)
            busy = sorted(w for w, keys in client.processing().items() if keys)
            assert busy, "no worker is computing"
            os.kill(client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
            code = proc.wait(timeout=600)
        finally:
            kill_group(proc)
    said = log.read_text()
    assert code == 0 and "Traceback" not in said and "error:" not in said, said
    assert taken.keys, "the killed worker's block was not taken back"
    group = open_s3_group("kill/worker.ome.zarr")
    got = levels(group)
    for k in whole:
        np.testing.assert_array_equal(got[k], whole[k])
    assert ome.run_status(group.attrs.asdict()) == "complete"
    assert not stored(f"kill/worker.ome.zarr/{execute.DONE_DIR}")


def test_glob_of_s3_tiffs_is_a_batch(s3, tiny_model_path):
    """A quoted glob of URLs: each match upscaled on its own, its output beside it in the bucket."""
    fs = s3_path("x").fs
    for k in range(2):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, image((24, 24), seed=k), tile=(16, 16), photometric="minisblack")
        fs.pipe_file(f"{BUCKET}/batch/scan{k}.tif", buffer.getvalue())
    assert upscale_zarr.main(["s3://bkt/batch/*.tif", "--model", tiny_model_path, *TILING]) == 0
    outputs = sorted({p.split("/")[2] for p in stored("batch") if ".ome.zarr" in p})
    assert len(outputs) == 2 and all(name.startswith(("scan0_x", "scan1_x")) for name in outputs), outputs
    for name in outputs:
        assert ome.run_status(open_s3_group(f"batch/{name}").attrs.asdict()) == "complete"


# -- range requests --------------------------------------------------------------------------------------------------

def test_http_tiff_read_fetches_only_the_ranges_it_needs(web):
    """A 2048x2048 uint16 tiled TIFF (8 MiB) over HTTP: opening it and reading one 128x128 window fetches the
    header, the tile offsets and the few blocks holding those tiles, a small fraction of the file."""
    root, url, counts = web
    data = np.arange(2048 * 2048, dtype="uint16").reshape(2048, 2048)
    path = tiled_tiff(root / "big.tif", data, tile=(128, 128))
    size = path.stat().st_size
    counts.update(requests=0, bytes=0, ranges=[])
    opened = readers.open_input(f"{url}/big.tif")
    np.testing.assert_array_equal(opened.array[1024:1152, 512:640], data[1024:1152, 512:640])
    assert all(r is not None for p, r in counts["ranges"] if p == "/big.tif"), counts  # never the whole file
    assert counts["bytes"] <= 8 * storage.TIFF_BLOCK + 128 * 128 * 2, counts
    assert counts["bytes"] < size / 10 and counts["requests"] <= 16, (counts, size)


def test_http_zarr_and_ome_zarr_inputs_open(web, tmp_path):
    """A zarr v2 array and an OME-Zarr 0.4 image on a plain web server open by URL (no listing needed)."""
    root, url, _ = web
    data = image((20, 24))
    zarr.open_array(str(root / "v2.zarr"), mode="w", shape=data.shape, chunks=(8, 8), dtype=data.dtype,
                    zarr_format=2)[:] = data
    opened = readers.open_input(f"{url}/v2.zarr")
    np.testing.assert_array_equal(opened.array[:], data)
    assert opened.axes == "yx"
    from ome_zarr.writer import write_image

    write_image(data, zarr.open_group(str(root / "img.ome.zarr"), mode="w", zarr_format=2), axes="yx",
                scaler=None)
    opened = readers.open_input(f"{url}/img.ome.zarr")
    assert opened.axes == "yx" and opened.array.shape == data.shape
    np.testing.assert_array_equal(opened.array[:], data)


# -- one line for every storage failure ------------------------------------------------------------------------------

def missing_port() -> str:
    return f"http://127.0.0.1:{free_port()}"


def cases(web_url: str, model: str) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, what the line must say)."""
    m = ["--model", model, *TILING]

    def opts(options: dict) -> list[str]:
        return ["--storage-options", json.dumps(options)]

    return {
        "input bucket missing": (["s3://nobucket/in.zarr", *m], "bucket 'nobucket' does not exist"),
        "input key missing": (["s3://bkt/nothing.zarr", *m], "nothing is stored there"),
        "input http file missing": ([f"{web_url}/nothing.tif", *m], "nothing is stored there"),
        "output bucket missing": (["s3://bkt/bad/in.zarr", "-o", "s3://nobucket/out.ome.zarr", *m],
                                  "bucket 'nobucket' does not exist"),
        "output names only a bucket": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt2", *m], "names a bucket"),
        "tiff output on a url": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt/out.tif", *m], "TIFF cannot be written"),
        "output on a web server": (["s3://bkt/bad/in.zarr", "-o", f"{web_url}/out.ome.zarr", *m],
                                   "web server cannot be written"),
        "output is the input": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt/bad/in.zarr", *m], "may not be the input"),
        "output inside the input": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt/bad/in.zarr/x.ome.zarr", *m],
                                    "may not be the input or lie inside it"),
        "output exists, not ours": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt/bad/foreign.zarr", *m],
                                    "already exists"),
        "overwrite of a foreign output": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt/bad/foreign.zarr", "--overwrite",
                                           *m], "not an output of this pipeline"),
        "resume of a foreign output": (["s3://bkt/bad/in.zarr", "-o", "s3://bkt/bad/foreign.zarr", "--resume", *m],
                                       "not an output of this pipeline"),
        "glob of web urls": ([f"{web_url}/*.tif", *m], "a web server cannot be listed"),
        "glob of urls matching nothing": (["s3://bkt/bad/*.png", *m], "no images found"),
        "unsupported scheme": (["ftp://127.0.0.1/in.zarr", *m], "ftp:// is not supported"),
        "storage options not json": (["s3://bkt/bad/in.zarr", *m, *["--storage-options", "{anon: true"]],
                                     "--storage-options is not JSON"),
        "storage options not an object": (["s3://bkt/bad/in.zarr", *m, *["--storage-options", "[1]"]],
                                          "must be a JSON object"),
        "unreachable endpoint": (["s3://bkt/bad/in.zarr", *m, *opts({"endpoint_url": missing_port()})],
                                 "cannot reach the storage endpoint"),
        "unreachable web server": ([f"{missing_port()}/in.tif", *m], "cannot reach the storage endpoint"),
        "web zarr cannot be listed": ([f"{web_url}/v2.zarr", "-o", "s3://bkt/bad/web.ome.zarr", *m],
                                      "--missing-chunks fill"),
        "gs without gcsfs": (["gs://bucket/in.zarr", *m], "gcsfs"),
        "unfinished output as input": (["s3://bkt/bad/running.ome.zarr", *m], "unfinished"),
    }


@pytest.fixture(scope="module")
def bad_inputs(s3, web):
    """What the cases need in the bucket and on the web server."""
    root, url, _ = web
    s3_array("bad/in.zarr", image((24, 24)))
    s3_array("bad/foreign.zarr", image((8, 8)))
    running = zarr.open_group(storage.zarr_store(s3_path("bad/running.ome.zarr"), read_only=False), mode="w")
    running.create_array("0", shape=(8, 8), dtype="uint16", chunks=(8, 8))
    ome.mark_running(running, {"input": "x"})
    if not (root / "v2.zarr").exists():
        zarr.open_array(str(root / "v2.zarr"), mode="w", shape=(8, 8), chunks=(8, 8), dtype="uint16",
                        zarr_format=2)[:] = 1
    return url


def check_refused(argv, said, capsys, *, secrets=(KEY_ID, SECRET)):
    before = everything_stored()
    keys = stored("")
    assert upscale_zarr.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], err
    assert not any(s in err for s in secrets), err
    # nothing half-valid left: the bucket holds exactly what it held
    assert stored("") == keys and everything_stored() == before
    return lines[0]


@pytest.mark.parametrize("name", list(cases("http://x", "m")))
def test_storage_failure_is_one_line(name, bad_inputs, tiny_model_path, capsys):
    argv, said = cases(bad_inputs, tiny_model_path)[name]
    check_refused(argv, said, capsys)


# -- credentials and permissions: moto with IAM checks on ------------------------------------------------------------

@pytest.fixture(scope="module")
def iam_users(s3):
    """IAM users of the server: one that may only read, one that may do anything."""
    import boto3

    client = boto3.client("iam")
    users = {}
    for name, actions in (("reader", ["s3:GetObject", "s3:ListBucket"]), ("admin", ["s3:*"])):
        client.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        client.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = client.create_access_key(UserName=name)["AccessKey"]
        users[name] = (key["AccessKeyId"], key["SecretAccessKey"])
    return users


@pytest.fixture
def iam(iam_users):
    """Requests checked against the IAM users during the test (the tests' own view is the admin's)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = ActionAuthenticatorMixin.request_count
    VIEW["options"] = storage.Options(json.dumps({"key": iam_users["admin"][0], "secret": iam_users["admin"][1]}))
    try:
        yield iam_users
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous
        VIEW["options"] = storage.Options()
        forget_filesystems()


def credentials(key_id: str, secret: str) -> list[str]:
    return ["--storage-options", json.dumps({"key": key_id, "secret": secret})]


def test_wrong_secret_is_one_line_without_it(bad_inputs, iam, tiny_model_path, capsys):
    key_id, secret = iam["admin"]
    wrong = secret[:-4] + "XXXX"
    argv = ["s3://bkt/bad/in.zarr", "--model", tiny_model_path, *TILING, *credentials(key_id, wrong)]
    check_refused(argv, "AWS_SECRET_ACCESS_KEY", capsys, secrets=(KEY_ID, SECRET, wrong, secret))


def test_unknown_key_from_the_environment_is_one_line(bad_inputs, iam, tiny_model_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "no-such-secret-value")
    forget_filesystems()
    argv = ["s3://bkt/bad/in.zarr", "--model", tiny_model_path, *TILING]
    check_refused(argv, "AWS_SECRET_ACCESS_KEY", capsys, secrets=("AKIANOSUCHKEY0000000", "no-such-secret-value"))


def test_bucket_without_write_permission_is_refused_before_writing(bad_inputs, iam, tiny_model_path, capsys):
    """A user that may read the input but not write: refused at the start, nothing written. (moto's IAM check also
    refuses the signature of its own listings, so the line may say the credentials were refused rather than that
    the write was denied; either names what to check.)"""
    key_id, secret = iam["reader"]
    argv = ["s3://bkt/bad/in.zarr", "-o", "s3://bkt/bad/denied.ome.zarr", "--model", tiny_model_path, *TILING,
            *credentials(key_id, secret)]
    check_refused(argv, "AWS_SECRET_ACCESS_KEY", capsys, secrets=(KEY_ID, SECRET, key_id, secret))


def test_credentials_never_recorded(s3):
    """The record of a run names the URL without user, password or query; messages lose every known secret."""
    assert storage.redact("https://user:pw@host/a.tif?X-Amz-Signature=abc") == "https://host/a.tif?***"
    options = storage.parse_options(json.dumps({"s3": {"key": "K-123456", "secret": "S-abcdefg"}}))
    assert "S-abcdefg" not in repr(options) and "S-abcdefg" not in repr(readers.InputSpec("s3://b/k", "tiff",
                                                                                            options=options))
    assert storage.scrub(f"x S-abcdefg {SECRET} {KEY_ID} https://u:p@h/") == "x *** *** *** https://***@h/"
    assert storage.path("s3://b/k.zarr", options).fs.key == "K-123456"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET


# -- napari -----------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="napari.Viewer needs a display (run under Xvfb)")
def test_napari_reader_opens_a_remote_ome_zarr_as_the_local_one(s3, tiny_model_path, tmp_path, monkeypatch,
                                                                make_napari_viewer):
    """The plugin's reader takes an s3:// OME-Zarr (credentials and endpoint from the environment): the same lazy
    pyramid, scale, translation and units as the same output on a local disk; an unfinished one is claimed and
    refused, as on a local disk."""
    from napari_resshift._napari import _reader

    s3_array("view/in.zarr", image((24, 24), seed=5))
    remote = "s3://bkt/view/out.ome.zarr"
    local = tmp_path / "out.ome.zarr"
    for where in (remote, str(local)):
        assert upscale_zarr.main(["s3://bkt/view/in.zarr", "-o", where, "--model", tiny_model_path,
                                  "--levels", "2", *TILING]) == 0
    read = {}
    for where in (remote, str(local)):
        reader = _reader.get_reader(where)
        assert reader is not None, where
        ((data, kwargs, kind),) = reader(where)
        read[where] = ([np.asarray(level) for level in data], kwargs)
    (remote_levels, remote_kwargs), (local_levels, local_kwargs) = read[remote], read[str(local)]
    assert len(remote_levels) == 2
    for a, b in zip(remote_levels, local_levels):
        np.testing.assert_array_equal(a, b)
    same = ("scale", "translate", "units", "axis_labels", "multiscale")
    assert {k: remote_kwargs[k] for k in same} == {k: local_kwargs[k] for k in same}
    assert remote_kwargs["metadata"] == {"ome_zarr": remote}
    (layer,) = make_napari_viewer().open(remote, plugin="napari-resshift")  # as a user opens it in napari
    assert layer.name == "in x4" and layer.data[0].shape == local_levels[0].shape

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    group = zarr.open_group(storage.zarr_store(s3_path("view/out.ome.zarr"), read_only=False), mode="r+")
    ome.mark_running(group, group.attrs[ome.MARKER]["params"])  # as a run interrupted before its end leaves it
    assert _reader.get_reader(remote)(remote) == _reader.REFUSED
    assert len(shown) == 1 and "unfinished" in shown[0] and "--resume" in shown[0] and SECRET not in shown[0]
