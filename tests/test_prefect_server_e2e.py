"""End to end on a real Prefect server: `prefect deploy --all`, a process worker, real runs.

Slow (about 95 s on 2 cores; set BIOXEN_SKIP_SERVER_E2E=1 to skip). One module-scoped
fixture starts `prefect server start` on a free loopback port with a temporary PREFECT_HOME
and database, creates the `bioxen-process` work pool, deploys prefect.yaml from the
repository root exactly as deployments/README.md tells a user to, and starts
`prefect worker start --pool bioxen-process`. The worker's flow run processes inherit its
BIOXEN_HOME (a temporary directory) and BIOXEN_PROJECT_DIR (the pull step's target).
Teardown stops the worker, then the server, then anything they left behind.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
POOL = "bioxen-process"
COMPARE = "compare-organisms/nightly-comparison"
LIFECYCLE = "vm-lifecycle/vm-lifecycle"
SERVER_START_TIMEOUT = 180.0  # measured 9-20 s on 2 cores; other test sessions share them
CLI_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0
HOOK_ERROR = "An error was encountered while running hook"

pytestmark = pytest.mark.skipif(
    os.environ.get("BIOXEN_SKIP_SERVER_E2E") == "1", reason="BIOXEN_SKIP_SERVER_E2E=1"
)


@dataclass
class LocalPrefect:
    api_url: str
    env: dict[str, str]
    bioxen_home: Path
    tmp: Path
    logs: dict[str, Path]

    def log_text(self, name: str) -> str:
        path = self.logs[name]
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, name: str, lines: int = 60) -> str:
        return "\n".join(self.log_text(name).splitlines()[-lines:]) or f"(empty {name} log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own session (so its whole process group can be signalled)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL it and every descendant that escaped it."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in descendants:  # flow run processes run in sessions of their own
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=10)
    proc.wait(timeout=30)


def _wait_healthy(url: str, server: subprocess.Popen, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{log()}")


def _cli(local: LocalPrefect, *args: str) -> str:
    done = subprocess.run(
        _prefect(*args), cwd=REPO, env=local.env, capture_output=True, encoding="utf-8",
        timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{output}"
    return output


@pytest.fixture(scope="module")
def local_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefect]:
    """A Prefect server on loopback with both deployments and a process worker polling."""
    tmp = tmp_path_factory.mktemp("prefect_e2e")
    prefect_home, bioxen_home = tmp / "prefect_home", tmp / "bioxen_home"
    prefect_home.mkdir()
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "BIOXEN_HOME": str(bioxen_home),
        "BIOXEN_PROJECT_DIR": str(REPO),
        "PYTHONUNBUFFERED": "1",
    })
    logs = {"server": tmp / "server.log", "worker": tmp / "worker.log"}
    local = LocalPrefect(api_url, env, bioxen_home, tmp, logs)
    procs: list[subprocess.Popen] = []
    try:
        server = _spawn(
            _prefect("server", "start", "--host", "127.0.0.1", "--port", str(port)),
            env, logs["server"],
        )
        procs.append(server)
        _wait_healthy(api_url, server, lambda: local.log_tail("server"))
        _cli(local, "work-pool", "create", POOL, "--type", "process")
        _cli(local, "--no-prompt", "deploy", "--all")
        worker = _spawn(_prefect("worker", "start", "--pool", POOL), env, logs["worker"])
        procs.append(worker)
        yield local
    finally:
        for proc in reversed(procs):  # the worker first, while the server still answers it
            _stop(proc)


@pytest.fixture
def client(local_prefect: LocalPrefect, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Prefect client on the local server; BIOXEN_HOME is the worker's store."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("BIOXEN_HOME", str(local_prefect.bioxen_home))
    with temporary_settings(updates={PREFECT_API_URL: local_prefect.api_url}):
        with get_client(sync_client=True) as client:
            yield client


def _start(client: Any, deployment: str, parameters: dict[str, Any]) -> UUID:
    deployment_id = client.read_deployment_by_name(deployment).id
    return client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id


def _wait_final(client: Any, run_id: UUID, local: LocalPrefect, timeout: float = RUN_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    pytest.fail(f"flow run {run_id} not final after {timeout:.0f} s "
                f"(state {run.state}):\n{local.log_tail('worker')}")


def _eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def test_deploy_all_registers_both_deployments(local_prefect: LocalPrefect, client) -> None:
    pool = client.read_work_pool(POOL)
    assert pool.type == "process"

    nightly = client.read_deployment_by_name(COMPARE)
    assert nightly.work_pool_name == POOL
    assert nightly.entrypoint == "flows/compare_organisms.py:compare_organisms"
    assert nightly.parameters == {
        "organisms": ["syn3a", "ecoli", "minimal_cell"], "replicates": 3, "hours": 24,
        "package": "gfp_reporter", "out_dir": "bioxen_results/nightly",
    }
    [schedule] = nightly.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert {"bioxen", "nightly"} <= set(nightly.tags)
    assert nightly.description

    lifecycle = client.read_deployment_by_name(LIFECYCLE)
    assert lifecycle.work_pool_name == POOL
    assert lifecycle.entrypoint == "flows/vm_lifecycle.py:vm_lifecycle"
    assert lifecycle.parameters == {"organism": "syn3a", "program": "grow(minutes=120)"}
    assert lifecycle.schedules == []
    assert lifecycle.pull_steps == [{
        "prefect.deployments.steps.set_working_directory": {"directory": str(REPO)},
    }]


def test_worker_runs_lifecycle_and_comparison(local_prefect: LocalPrefect, client) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from bioxen_flows.vm import list_bio_vms

    out_dir = local_prefect.tmp / "compare_out"
    lifecycle_id = _start(client, LIFECYCLE, {})
    compare_id = _start(client, COMPARE, {
        "organisms": ["syn3a", "ecoli"], "replicates": 1, "hours": 0.5,
        "package": "gfp_reporter", "out_dir": str(out_dir),
    })

    for run_id in (lifecycle_id, compare_id):
        run = _wait_final(client, run_id, local_prefect)
        assert run.state.is_completed(), (
            f"{run.name}: {run.state}\n{local_prefect.log_tail('worker')}"
        )

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[compare_id]))
    )
    by_key = {a.key: a for a in artifacts}
    assert by_key["compare-organisms-summary"].type == "table"
    assert by_key["compare-organisms-report"].type == "markdown"
    assert "syn3a" in str(by_key["compare-organisms-summary"].data)

    with (out_dir / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["organism"] for row in rows) == ["ecoli", "syn3a"]
    assert (out_dir / "growth.png").stat().st_size > 0
    assert (out_dir / "timeseries.parquet").exists()

    assert local_prefect.bioxen_home.exists(), "the flow runs did not use the worker's store"
    assert list_bio_vms() == []


def test_cancelling_a_running_comparison_destroys_its_vms(
    local_prefect: LocalPrefect, client
) -> None:
    """Cancel mid-run through the API: the on_cancellation hook must leave no VM behind.

    168 simulated hours take ~0.2 s per VM, so 3 replicates would finish before the
    cancellation reaches the run; 100 replicates (303 VMs) keep it busy for minutes.
    The worker SIGTERMs the flow run process (SIGKILL after 30 s), then runs the flow's
    on_cancellation hooks in a fresh process, passing them flow=, flow_run=, state=.
    """
    from prefect.states import Cancelling

    from bioxen_flows.vm import list_bio_vms

    run_id = _start(client, COMPARE, {
        "organisms": ["syn3a", "ecoli", "minimal_cell"], "replicates": 100, "hours": 168,
        "package": "gfp_reporter", "out_dir": str(local_prefect.tmp / "cancelled_out"),
    })
    started = _eventually(lambda: bool(list_bio_vms()), timeout=RUN_TIMEOUT)
    assert started, f"no VM appeared:\n{local_prefect.log_tail('worker')}"
    client.set_flow_run_state(run_id, Cancelling())

    run = _wait_final(client, run_id, local_prefect)
    assert run.state.is_cancelled(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    # The hooks run after the process is gone; give them time (or fail fast on an error).
    _eventually(
        lambda: list_bio_vms() == [] or HOOK_ERROR in local_prefect.log_text("worker"),
        timeout=180,
    )
    log = local_prefect.log_text("worker")
    if HOOK_ERROR in log:
        pytest.fail("a flow hook failed:\n" + log[log.index(HOOK_ERROR):][:3000])
    assert list_bio_vms() == [], (
        f"VMs leaked after cancellation: {[vm['vm_id'] for vm in list_bio_vms()]}\n"
        f"{local_prefect.log_tail('worker')}"
    )
