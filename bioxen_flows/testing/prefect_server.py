"""A real `prefect server start` for benchmarks: its own PREFECT_HOME, a free port on the
address given, waited for until it answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bioxen_flows.cli.prefect_session import NO_TELEMETRY

START_TIMEOUT_S = 120


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_prefect_server(
    home: Path, host: str = "127.0.0.1"
) -> tuple[subprocess.Popen, str, float]:
    """Start the server on `host`; returns (process, API URL, seconds it took to answer).
    The caller terminates the process."""
    import httpx

    port = free_port(host)
    env = {**os.environ, "PREFECT_HOME": str(home), **NO_TELEMETRY}
    env.pop("PREFECT_API_URL", None)
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://{host}:{port}/api"
    while time.perf_counter() - began < START_TIMEOUT_S:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - began
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited with {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"prefect server did not answer within {START_TIMEOUT_S} s")
