"""Load on one MedSAM server: CLIENTS clients x REQUESTS requests each, new volumes and box moves mixed, on
127.0.0.1; prints the latency percentiles of a box move and of a new volume, and the bytes each client uploaded
against the whole volumes' size (issue 17). Starts its own ``medsam-segment serve`` process and stops it.

    python benchmarks/server_load.py [--clients 4] [--requests 20] [--replicas 1] [--out docs/results/server]

Every result is checked against a local run of the same boxes (the same masks, or the script fails).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from MedSAMSegmentLib import demo, pipeline
from MedSAMSegmentLib import io as image_io
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet
from MedSAMSegmentLib.remote.remote_client import RemoteSegmentation
from MedSAMSegmentLib.service import ModelSpec, SegmentationService

SPEC = ModelSpec("lite", None, "cpu")
SETTINGS = pipeline.SegmentationSettings()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(port: int, replicas: int) -> subprocess.Popen:
    script = os.path.join(os.path.dirname(sys.executable), "medsam-segment")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a private Ray on 127.0.0.1
    log = open(os.path.join(tempfile.gettempdir(), f"medsam-server-load-{port}.log"), "wb")  # noqa: SIM115
    print(f"server log: {log.name}", flush=True)
    process = subprocess.Popen([script, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                                "--replicas", str(replicas)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2).read()
            return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit("the server did not start within 180 s")


def plan(client: int, requests: int, volumes: int):
    """``(kind, volume, keys)``: a new volume every fifth request (the client's first on it), box moves between."""
    rng = np.random.default_rng(client)
    steps = []
    for n in range(requests):
        volume = (client * 2 + n // 5) % volumes
        dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
        keys = KeyBoxSet(0, [KeyBox(4, (266.0 + dx, 229.0 + dy, 322.0 + dx, 280.0 + dy)),
                             KeyBox(10, (262.0, 228.0, 329.0, 286.0))])
        steps.append(("new volume" if n % 5 == 0 else "box move", volume, keys))
    return steps


def percentiles(values) -> str:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"{p50:.2f} | {p90:.2f} | {p99:.2f} | {max(values):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=1, help="serve --replicas (2 or more: Ray Serve)")
    parser.add_argument("--out", default=None, help="write report.md (report-replicas-N.md) here")
    args = parser.parse_args()

    image = image_io.read_image(demo.DEMO_IMAGE)
    volumes = [np.roll(image.array, shift, axis=2) for shift in range(0, 3 * 2 * args.clients, 3)]
    plans = [plan(c, args.requests, len(volumes)) for c in range(args.clients)]
    timings, sent, failures, masks = [], [0] * args.clients, [], {}
    port = free_port()
    server = start_server(port, args.replicas)
    url = f"http://127.0.0.1:{port}"

    def client(index: int) -> None:
        remote = RemoteSegmentation(url)
        for n, (kind, volume, keys) in enumerate(plans[index]):
            started = time.perf_counter()
            try:
                if not remote.has_volume(f"v{volume}"):
                    remote.put_volume(f"v{volume}", volumes[volume])
                masks[(index, n)] = remote.segment(f"v{volume}", keys, SPEC, SETTINGS).result.mask
                timings.append((kind, time.perf_counter() - started))
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(f"client {index} request {n}: {exc}")
        sent[index] = remote.connection.bytes_sent
        remote.close()

    started = time.perf_counter()
    try:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server stops Serve and its private Ray, if any
        try:
            server.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit("lost requests:\n" + "\n".join(failures))

    from MedSAMSegmentLib.models import load_model

    model = load_model("lite", device="cpu")
    local = SegmentationService(model_loader=lambda *a: model, kept_volumes=len(volumes))
    for v, array in enumerate(volumes):
        local.put_volume(f"v{v}", array)
    for (index, n), mask in masks.items():
        _, volume, keys = plans[index][n]
        if not np.array_equal(mask, local.segment(f"v{volume}", np.eye(4), keys, SPEC, SETTINGS).result.mask):
            raise SystemExit(f"client {index} request {n}: the server's mask differs from the local run's")

    whole = sum(volumes[v].nbytes for v in {v for steps in plans for _, v, _ in steps})
    lines = [
        f"# One MedSAM server under load ({args.clients} clients x {args.requests} requests, "
        f"{'one process' if args.replicas == 1 else f'{args.replicas} replicas on Ray Serve'})", "",
        f"Made with `python benchmarks/server_load.py --clients {args.clients} --requests {args.requests} "
        f"--replicas {args.replicas}` on "
        f"{datetime.date.today()}, {os.cpu_count()} logical CPUs ({platform.machine()}), LiteMedSAM on the CPU, "
        "server and clients on this machine (127.0.0.1). The bundled CT lesion, shifted to make "
        f"{len(volumes)} different volumes; key boxes on slices 4 and 10 (7 of 16 slices); a new volume every "
        "fifth request, box moves (up to 3 px) between. Every result was equal to a local run of the same boxes.",
        "", "| request | count | p50 s | p90 s | p99 s | max s |", "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("new volume", "box move"):
        values = [t for k, t in timings if k == kind]
        lines.append(f"| {kind} | {len(values)} | {percentiles(values)} |")
    lines += ["", f"- {len(masks)} of {args.clients * args.requests} requests answered, none lost, in {wall:.1f} s",
              f"- uploaded by the clients together: {sum(sent)} bytes; the raw volumes they used: {whole} bytes "
              f"({sum(sent) / whole:.1%})",
              "- a new volume sends the 7 slices in the key-box range, normalised to 8 bits and compressed; a box "
              "move sends only the boxes"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = "report.md" if args.replicas == 1 else f"report-replicas-{args.replicas}.md"
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as handle:
            handle.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
