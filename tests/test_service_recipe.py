"""The systemd recipe (deployments/systemd/) works as written.

- `systemd-analyze verify` accepts both units (with /opt/bioxen-flows pointed at a
  directory whose .venv/bin/prefect exists, as it would on the target machine);
- the units say what the recipe relies on: the worker Wants= (not Requires=) the server,
  a stop timeout and kill mode that let runs finish, the server's port and UI API URL
  from settings, a writable UI directory;
- the server, started with the unit's own Environment= lines and ExecStart arguments while
  the installed prefect package is mounted read-only (what ProtectSystem=strict does to a
  venv under /opt), serves the UI: index 200 with HTML, and the UI's settings name the
  unit's API URL.

The read-only mount needs a private mount namespace (`unshare -m`, root or
CAP_SYS_ADMIN); where that is not possible, that test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deployments" / "systemd"
CHECKOUT = "/opt/bioxen-flows"
STATE = "/var/lib/bioxen"
START_TIMEOUT = 180.0

# Runs inside the new mount namespace: bind the prefect package read-only, then become the
# server. Paths arrive as arguments; nothing is interpolated into a shell.
READ_ONLY_THEN_EXEC = """
import errno, os, subprocess, sys
package = sys.argv[1]
subprocess.run(["mount", "--bind", package, package], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", package], check=True)
try:
    os.mkdir(os.path.join(package, ".write-probe"))
    sys.exit("the prefect package is still writable")
except OSError as exc:
    if exc.errno != errno.EROFS:
        raise
print("prefect package mounted read-only", flush=True)
os.execv(sys.argv[2], sys.argv[2:])
"""


def unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (repeated keys such as Environment= kept in order)."""
    values: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def environment(values: dict[str, list[str]]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in values.get("Environment", []))


def test_units_say_what_the_recipe_relies_on():
    server, worker = unit("prefect-server.service"), unit("prefect-worker.service")
    server_env, worker_env = environment(server), environment(worker)
    port = server_env["PREFECT_SERVER_API_PORT"]
    assert server_env["PREFECT_UI_API_URL"] == f"http://127.0.0.1:{port}/api"
    assert worker_env["PREFECT_API_URL"] == f"http://127.0.0.1:{port}/api"
    assert "--port" not in server["ExecStart"][0]  # one place to change the port
    assert server_env["PREFECT_UI_STATIC_DIRECTORY"].startswith(STATE + "/")
    assert STATE in server["ReadWritePaths"][0]
    assert "Requires" not in worker and "prefect-server.service" in worker["Wants"][0]
    assert worker["KillMode"] == ["mixed"]
    assert worker["TimeoutStopSec"] == ["15min"]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A stand-in for /opt/bioxen-flows: .venv/bin/prefect is this interpreter's prefect."""
    venv_bin = tmp_path / "opt" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for script in ("prefect", "bioxen"):
        (venv_bin / script).symlink_to(Path(sys.executable).parent / script)
    return tmp_path / "opt"


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path, checkout: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    copies = []
    for name in ("prefect-server.service", "prefect-worker.service", "bioxen-gc.service",
                 "bioxen-gc.timer"):
        copy = tmp_path / name
        copy.write_text((UNITS / name).read_text().replace(CHECKOUT, str(checkout)))
        copies.append(str(copy))
    done = subprocess.run([analyze, "verify", *copies], cwd=tmp_path, capture_output=True,
                          encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, accept: str = "text/html") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):  # not listening yet
        return 0, ""


def _can_mount_privately() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    done = subprocess.run([unshare, "-m", "--propagation", "private", "true"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def test_server_unit_serves_the_ui_with_a_read_only_venv(tmp_path: Path):
    if not _can_mount_privately():
        pytest.skip("no private mount namespace here (unshare -m needs CAP_SYS_ADMIN)")
    import prefect

    package = str(Path(prefect.__file__).parent)
    server = unit("prefect-server.service")
    state, port = tmp_path / "state", _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    for key, value in environment(server).items():
        value = value.replace(STATE, str(state)).replace(":4200", f":{port}")
        env[key] = str(port) if key == "PREFECT_SERVER_API_PORT" else value
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    (state / "prefect-server").mkdir(parents=True)  # StateDirectory= creates /var/lib/bioxen
    exec_start = shlex.split(server["ExecStart"][0])
    assert exec_start[0].endswith("/.venv/bin/prefect")
    command = [sys.executable, "-m", "prefect", *exec_start[1:]]

    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", sys.executable, "-c",
             READ_ONLY_THEN_EXEC, package, *command],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while _get(f"{base}/api/health", "application/json")[0] != 200:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        status, page = _get(f"{base}/")
        assert status == 200, log.read_text(errors="replace")
        assert "<html" in page.lower() and "<script" in page.lower()
        status, settings = _get(f"{base}/ui-settings", "application/json")
        assert status == 200
        assert json.loads(settings)["api_url"] == f"http://127.0.0.1:{port}/api"
        text = log.read_text(errors="replace")
        assert "prefect package mounted read-only" in text
        assert "Read-only file system" not in text and "Traceback" not in text, text
        assert any((state / "prefect-server" / "ui").rglob("index.html"))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
