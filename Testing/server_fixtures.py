"""Real MedSAM servers for the tests, on loopback only: in this process (uvicorn on a thread, the session's model)
or as a ``medsam-segment serve`` process that a test may kill and start again."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Iterator, List, Optional

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn  # noqa: E402
from medsam_server import ServerConfig, build_server  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def server_in_thread(config: ServerConfig, model=None, cache=None, handles: Optional[dict] = None) -> Iterator[str]:
    """A server for ``config`` (its port; loopback host) on a thread of this process; yields its URL.
    ``handles["stop"]``, when a dict is given, stops it (as if its process ended: no more answers)."""
    assert config.host == "127.0.0.1", "tests serve on loopback only"
    loader = None if model is None else (lambda *args: model)
    app, runner = build_server(config, loader, cache)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if handles is not None:
        handles["stop"] = lambda: (setattr(server, "should_exit", True), thread.join(10))
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
        runner.stop()


def serve_command(port: int, *extra: str) -> List[str]:
    script = os.path.join(os.path.dirname(sys.executable), "medsam-segment")
    return [script, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra]


def start_server_process(port: int, *extra: str, log_path: Optional[str] = None,
                         new_session: bool = False) -> subprocess.Popen:
    """``medsam-segment serve`` on ``port`` (with ``new_session``, in a process group of its own, for the
    processes it starts), returned once it answers ``/v1/health`` (at most 180 s)."""
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(serve_command(port, *extra), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=new_session)
    url = f"http://127.0.0.1:{port}/v1/health"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                json.loads(answer.read())
                return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise AssertionError("the server process did not answer within 180 s")
