"""Benchmark of object storage: the same upscaling job from and into a local disk, and from and into an S3 server on
the same machine (moto on the loopback, behind a counting proxy). Prints one table: seconds (median of --repeats),
throughput ratio S3 / local, bytes read from the server per output pixel, requests per output tile.

``python benchmarks/bench_storage.py [--size 2048] [--repeats 3] [--model PATH]``. Without ``--model`` it uses a
random model of ``architecture("tiny")`` with 64-px tiles: the model's share of the time is then small, so the ratio
shows the cost of the storage itself (a real model only brings it closer to 1).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class CountingProxy:
    """A TCP proxy on the loopback in front of the S3 server: counts the requests it forwards and the bytes the
    server sends back (headers included)."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = self.received = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.requests = self.received = 0

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source, sink, upstream: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                with self.lock:
                    if upstream:
                        self.requests += sum(data.startswith(m) for m in (b"GET ", b"PUT ", b"HEAD ", b"POST ",
                                                                          b"DELETE "))
                    else:
                        self.received += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def start_s3():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = CountingProxy(port)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1", AWS_ALLOW_HTTP="true")
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return server, proxy


def tiny_model(folder: Path) -> str:
    import torch

    from napari_resshift.loading import make_card, save_model
    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import architecture

    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    return str(save_model(model, folder / "tiny.safetensors", make_card(model, name="tiny")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", help="a model name or file (default: a random tiny model, 64-px tiles)")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlap", type=int, default=8)
    args = p.parse_args()

    import zarr

    from pipelines import storage, upscale_zarr
    from pipelines.example import mosaic

    work = Path(tempfile.mkdtemp(prefix="bench_storage_"))
    server, proxy = start_s3()
    try:
        model = args.model or tiny_model(work)
        data = mosaic(args.size, args.size, seed=0).astype("uint16")
        if data.ndim == 3:
            data = data[..., 0]
        chunks = (512, 512)
        zarr.open_array(str(work / "in.zarr"), mode="w", shape=data.shape, chunks=chunks, dtype="uint16")[:] = data
        remote_in = storage.path("s3://bench/in.zarr")
        zarr.open_array(storage.zarr_store(remote_in, read_only=False), mode="w", shape=data.shape, chunks=chunks,
                        dtype="uint16")[:] = data
        flags = ["--model", model, "--tile", str(args.tile), "--overlap", str(args.overlap), "--quiet",
                 "--torch-threads", "1"]
        # one run outside the timing: the model loads (and torch warms up) once per process, not in the first row
        assert upscale_zarr.main([str(work / "in.zarr"), "-o", str(work / "warm.ome.zarr"), *flags]) == 0
        from napari_resshift.tiling import plan_tiles

        model_tiles = len(plan_tiles(args.size, args.size, tile=args.tile, overlap=args.overlap))
        rows = {}
        for where, source, target in (("local disk", str(work / "in.zarr"), str(work / "out.ome.zarr")),
                                      ("S3 (loopback)", "s3://bench/in.zarr", "s3://bench/out.ome.zarr")):
            times, counts = [], []
            for _ in range(args.repeats):
                if not target.startswith("s3://"):
                    shutil.rmtree(target, ignore_errors=True)
                proxy.reset()
                start = time.perf_counter()
                extra = ["--overwrite"] if storage.is_url(target) and storage.path(target).exists() else []
                assert upscale_zarr.main([source, "-o", target, *flags, *extra]) == 0
                times.append(time.perf_counter() - start)
                counts.append((proxy.requests, proxy.received))
                print(f"{where}: {times[-1]:.1f} s, {proxy.requests} requests, {proxy.received} bytes", flush=True)
            group = zarr.open_group(storage.zarr_store(storage.path(target), read_only=True), mode="r")
            level0 = group["0"]
            tiles = int(np.prod([-(-n // c) for n, c in zip(level0.shape, level0.chunks)]))
            rows[where] = (statistics.median(times), counts[-1], level0.size, tiles, level0[:])
        local_t, _, pixels, tiles, local_pixels = rows["local disk"]
        s3_t, (requests, received), _, _, s3_pixels = rows["S3 (loopback)"]
        same = np.array_equal(local_pixels, s3_pixels)
        print(f"\n{args.size}x{args.size} uint16 -> {int(np.sqrt(pixels))}^2, {model_tiles} model tiles in {tiles} "
              f"output chunks, median of "
              f"{args.repeats}, model {args.model or 'tiny (random)'}; S3 output equals local: {same}")
        print(f"| {'where':<14} | {'seconds':>8} | {'throughput vs local':>19} | {'bytes read / output px':>22} | "
              f"{'requests / tile':>15} |")
        print(f"|{'-' * 16}|{'-' * 10}|{'-' * 21}|{'-' * 24}|{'-' * 17}|")
        input_bytes = sum(f.stat().st_size for f in (work / "in.zarr").rglob("*") if f.is_file())
        print(f"| {'local disk':<14} | {local_t:8.1f} | {1.0:19.2f} | {input_bytes / pixels:22.3f} | {'-':>15} |")
        print(f"| {'S3 (loopback)':<14} | {s3_t:8.1f} | {local_t / s3_t:19.2f} | {received / pixels:22.3f} | "
              f"{requests / model_tiles:15.2f} |")
        print("(local: the input's stored bytes, each read once; S3: every byte the server sent, headers and "
              "metadata included; requests: reads and writes, per model tile)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
