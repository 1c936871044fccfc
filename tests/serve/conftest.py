"""Fixtures for the server tests: ``restyle-rt serve`` on the toy artifacts, loopback only, always stopped.

The server tests need the ``[serve]`` extra (PyTriton, numpy<2, tritonclient); without it they skip with the reason.
CI runs them in their own virtual environment (see ``.ci/run``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90


def serve_available() -> str:
    """'' when the server tests can run here, else why not."""
    try:
        import numpy as np
        import pytriton  # noqa: F401
        import tritonclient.http  # noqa: F401
    except ImportError as e:
        return f"needs the [serve] extra ({e.name} missing); CI runs these in the serve venv"
    if int(np.__version__.split(".")[0]) >= 2:
        return f"PyTriton 0.7 needs numpy<2 (have {np.__version__}); CI runs these in the serve venv"
    return ""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """A ``restyle-rt serve`` subprocess on free loopback ports (its own session, so it can always be reaped)."""

    def __init__(self, artifacts: Path, log: Path, *extra: str):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log_path = log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [
            sys.executable,
            "-m",
            "restyle_rt.cli",
            "serve",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.http),
            "--grpc-port",
            str(self.grpc),
            "--metrics-port",
            str(self.metrics),
            *extra,
        ]
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"127.0.0.1:{self.http}"

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def wait_ready(self) -> float:
        import tritonclient.http as hc

        t0 = time.monotonic()
        client = hc.InferenceServerClient(self.url)
        try:
            while time.monotonic() - t0 < START_TIMEOUT_S:
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
                try:
                    if client.is_server_ready() and client.is_model_ready("restyle"):
                        return time.monotonic() - t0
                except Exception:  # connection refused while starting
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        pytest.fail(f"serve not ready after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``; SIGKILL the whole session if it hangs. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:  # the tritonserver child shares the session; never leave it behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def servers(toy, tmp_path_factory):
    """Two servers on the toy artifacts, started together: ``main`` (100 ms batching window) and ``tight``
    (queue of 2, 1.5 s window, so held requests fill the queue deterministically)."""
    why = serve_available()
    if why:
        pytest.skip(why)
    logs = tmp_path_factory.mktemp("serve-logs")
    procs = {
        "main": ServerProcess(toy[0], logs / "main.log", "--max-queue-delay-us", "100000", "--threads", "1"),
        "tight": ServerProcess(
            toy[0],
            logs / "tight.log",
            "--max-queue-size",
            "2",
            "--max-queue-delay-us",
            "1500000",
            "--threads",
            "1",
            "--drain-timeout",
            "10",
        ),
    }
    try:
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            p.terminate()
