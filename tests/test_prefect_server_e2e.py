"""End to end on a real Prefect server: setup, the scheduler, a process worker, real runs.

Slow (about 4 minutes on 2 cores, 2 of them waiting for a zombie run to be detected; set
BIOXEN_SKIP_SERVER_E2E=1 to skip). One module-scoped fixture starts `prefect server start`
on a free loopback port with a temporary PREFECT_HOME, on a PostgreSQL database of its own
(created here, dropped after; as Prefect runs in production), with the scheduler's loop
shortened to 2 s. It runs deployments/setup.sh twice (pool, `prefect deploy --all` from the
repository root, automations; the second run must change nothing), deploys a test-only
copy of the nightly comparison whose schedule fires once, ~20 s later, and starts
`prefect worker start --pool bioxen-process`. The worker's flow run processes inherit its
BIOXEN_HOME (a temporary directory) and BIOXEN_PROJECT_DIR (the pull step's target).
Every test fails on an ERROR line or a traceback in the server's log. Teardown stops the
worker, then the server, then anything they left behind, and drops the database.

PostgreSQL: 127.0.0.1:5432, user postgres (BIOXEN_TEST_PG_DSN overrides). Unreachable, the
module is skipped, except with CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
POOL = "bioxen-process"
COMPARE = "compare-organisms/nightly-comparison"
LIFECYCLE = "vm-lifecycle/vm-lifecycle"
SCHEDULED = "compare-organisms/nightly-comparison-e2e"  # test-only, see _deploy_e2e_copy
CLEANUP = "cleanup-crashed-run/cleanup-crashed-run"
REAP = "reap-bio-vms/reap-bio-vms"
ZOMBIE_AUTOMATION = "bioxen-crash-zombie-runs"
PG_DSN = os.environ.get("BIOXEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEDULER_LOOP_S = 2
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
    scheduled_home: Path = Path()
    scheduled_out: Path = Path()
    setup_outputs: list[str] = field(default_factory=list)
    worker: subprocess.Popen | None = None

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


async def _pg(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def prefect_database() -> Iterator[str]:
    """A PostgreSQL database of this module's own for the Prefect server; dropped after."""
    name = f"bioxen_prefect_e2e_{secrets.token_hex(6)}"  # [a-z0-9_] only: safe to quote
    try:
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncio.TimeoutError) as exc:  # refused, unreachable, timed out
        message = f"PostgreSQL unreachable at {PG_DSN}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _server_errors(local: LocalPrefect) -> list[str]:
    """ERROR lines and tracebacks in the server's log (the scheduler's failures went there)."""
    return [line for line in local.log_text("server").splitlines()
            if " ERROR " in line or "| ERROR" in line or "Traceback" in line]


@pytest.fixture(autouse=True)
def no_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test here: the server logged no error."""
    yield
    if "local_prefect" in request.fixturenames:
        local = request.getfixturevalue("local_prefect")
        errors = _server_errors(local)
        assert not errors, "the Prefect server logged errors:\n" + "\n".join(errors[:40])


def _setup(local: LocalPrefect) -> str:
    """deployments/setup.sh, as the README runs it (pool, deploy --all, automations)."""
    done = subprocess.run(
        [str(REPO / "deployments" / "setup.sh")], cwd=local.tmp, env=local.env,
        capture_output=True, encoding="utf-8", timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"deployments/setup.sh failed:\n{output}"
    return output


def _deploy_e2e_copy(local: LocalPrefect, first_run: datetime) -> None:
    """A test-only copy of the nightly comparison, deployed from a copy of prefect.yaml.

    Same flow, entrypoint, pool, pull step and concurrency limit; small parameters, its own
    BIOXEN_HOME and out_dir, and an hourly schedule anchored at `first_run`, so the server's
    scheduler creates a run the worker picks up during this test (and no other).
    """
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [nightly] = [d for d in project["deployments"] if d["name"] == "nightly-comparison"]
    pool = dict(nightly["work_pool"])
    env = {**pool["job_variables"].get("env", {}), "BIOXEN_HOME": str(local.scheduled_home)}
    copy = {
        **nightly,
        "name": "nightly-comparison-e2e",
        "parameters": {"organisms": ["syn3a", "ecoli"], "replicates": 1, "hours": 0.5,
                       "package": "gfp_reporter", "out_dir": str(local.scheduled_out)},
        "schedules": [{"interval": 3600, "anchor_date": first_run.isoformat(),
                       "timezone": "UTC", "active": True}],
        "work_pool": {**pool, "job_variables": {**pool["job_variables"], "env": env}},
    }
    project["deployments"] = [copy]
    path = local.tmp / "prefect.e2e.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    _cli(local, "--no-prompt", "deploy", "--prefect-file", str(path), "--all")


def _start_worker(local: LocalPrefect) -> subprocess.Popen:
    local.worker = _spawn(_prefect("worker", "start", "--pool", POOL), local.env,
                          local.logs["worker"])
    return local.worker


@pytest.fixture(scope="module")
def local_prefect(
    tmp_path_factory: pytest.TempPathFactory, prefect_database: str
) -> Iterator[LocalPrefect]:
    """A Prefect server on loopback (PostgreSQL) set up by deployments/setup.sh, a worker."""
    tmp = tmp_path_factory.mktemp("prefect_e2e")
    prefect_home, bioxen_home = tmp / "prefect_home", tmp / "bioxen_home"
    prefect_home.mkdir()
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database,
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "BIOXEN_HOME": str(bioxen_home),
        "BIOXEN_PROJECT_DIR": str(REPO),
        "PYTHONUNBUFFERED": "1",
        # setup.sh's `prefect` and `python3`: this interpreter (and PYTHONPATH's checkout)
        "PREFECT_BIN": str(Path(sys.executable).parent / "prefect"),
        "PYTHON_BIN": sys.executable,
    })
    logs = {"server": tmp / "server.log", "worker": tmp / "worker.log"}
    local = LocalPrefect(api_url, env, bioxen_home, tmp, logs,
                         scheduled_home=tmp / "scheduled_home",
                         scheduled_out=tmp / "scheduled_out")
    server = None
    try:
        server = _spawn(
            _prefect("server", "start", "--host", "127.0.0.1", "--port", str(port)),
            env, logs["server"],
        )
        _wait_healthy(api_url, server, lambda: local.log_tail("server"))
        local.setup_outputs = [_setup(local), _setup(local)]  # the README's setup, twice
        _deploy_e2e_copy(local, datetime.now(timezone.utc) + timedelta(seconds=20))
        _start_worker(local)
        yield local
    finally:
        # the worker first, while the server still answers it
        for proc in (local.worker, server):
            if proc is not None:
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


def _start_busy_comparison(client: Any, local: LocalPrefect, out: str) -> UUID:
    """Start a comparison that keeps the worker busy for minutes (303 VMs x 168 h, in
    worker processes); return once its first VMs exist and it is running."""
    from bioxen_flows.vm import list_bio_vms

    run_id = _start(client, COMPARE, {
        "organisms": ["syn3a", "ecoli", "minimal_cell"], "replicates": 100, "hours": 168,
        "deterministic": True, "package": "gfp_reporter", "out_dir": str(local.tmp / out),
    })
    assert _eventually(lambda: bool(list_bio_vms()), timeout=RUN_TIMEOUT), (
        f"no VM appeared:\n{local.log_tail('worker')}"
    )
    assert client.read_flow_run(run_id).state.is_running()
    return run_id


def _eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def test_setup_registers_the_deployments_and_can_run_twice(
    local_prefect: LocalPrefect, client
) -> None:
    first, second = local_prefect.setup_outputs
    assert "created automation bioxen-crash-zombie-runs" in first
    assert f"work pool {POOL} exists" in second  # the second run creates nothing twice
    assert "updated automation bioxen-crash-zombie-runs" in second

    pool = client.read_work_pool(POOL)
    assert pool.type == "process"
    [zombie] = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert zombie.enabled and zombie.trigger.posture == "Proactive"
    assert zombie.trigger.after == {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}

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
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    form = nightly.parameter_openapi_schema["properties"]
    assert "burden_percent" in form["package"]["description"]  # the UI form's help text
    assert form["replicates"]["description"]

    cleanup = client.read_deployment_by_name(CLEANUP)
    assert {"bioxen", "bioxen-ops"} <= set(cleanup.tags)
    [trigger] = client.read_resource_related_automations(f"prefect.deployment.{cleanup.id}")
    assert trigger.trigger.expect == {"prefect.flow-run.Crashed"}

    reap = client.read_deployment_by_name(REAP)
    assert reap.entrypoint == "flows/reap_bio_vms.py:reap_bio_vms"
    [every] = reap.schedules
    assert every.active and every.schedule.interval == timedelta(minutes=15)
    assert {"bioxen", "bioxen-ops"} <= set(reap.tags) and every.schedule.timezone == "UTC"
    limit = client.read_global_concurrency_limit_by_name("bioxen-vms")
    assert limit.limit == 100 and limit.active
    assert "global concurrency limit bioxen-vms exists" in second

    lifecycle = client.read_deployment_by_name(LIFECYCLE)
    assert lifecycle.work_pool_name == POOL
    assert lifecycle.entrypoint == "flows/vm_lifecycle.py:vm_lifecycle"
    assert lifecycle.parameters == {"organism": "syn3a", "program": "grow(minutes=120)"}
    assert lifecycle.schedules == []
    assert lifecycle.pull_steps == [{
        "prefect.deployments.steps.set_working_directory": {"directory": str(REPO)},
    }]


def test_scheduler_creates_nightly_runs_and_the_worker_completes_one(
    local_prefect: LocalPrefect, client
) -> None:
    """The bug this guards: with SQLAlchemy 2.1 every scheduler cycle failed (bulk DML) and
    no scheduled run was ever created, while the deployment looked active in the UI."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    def scheduled(deployment: str) -> list[Any]:
        deployment_id = client.read_deployment_by_name(deployment).id
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
            sort="EXPECTED_START_TIME_ASC",
        )

    assert _eventually(lambda: len(scheduled(COMPARE)) >= 3, timeout=60), (
        f"no scheduled runs of the nightly comparison:\n{local_prefect.log_tail('server')}"
    )
    nightly_runs = scheduled(COMPARE)
    times = [run.expected_start_time for run in nightly_runs]
    assert all((t.hour, t.minute) == (2, 0) for t in times), times
    assert times == sorted(times) and len(set(times)) == len(times)

    # the test-only copy's first run is due ~20 s after setup: the worker must complete it
    assert _eventually(lambda: bool(scheduled(SCHEDULED)), timeout=60)
    first = scheduled(SCHEDULED)[0]
    assert first.auto_scheduled
    run = _wait_final(client, first.id, local_prefect)
    assert run.state.is_completed(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    assert run.name == "syn3a-ecoli-x1-0.5h"
    latest = local_prefect.scheduled_out / "latest"
    assert latest.resolve().name.endswith(str(run.id).replace("-", "")[-8:])  # its run tag
    with (latest / "summary.csv").open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["role"] == "cell"]
        assert [row["organism"] for row in rows] == ["syn3a", "ecoli"]


def test_worker_runs_lifecycle_and_comparison(local_prefect: LocalPrefect, client) -> None:
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

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

    result_dir = out_dir / "latest"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-syn3a-ecoli-x1-0\.5h-[0-9a-f]{8}",
                        result_dir.resolve().name)
    with (result_dir / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["organism"] for row in rows if row["role"] == "cell") == ["ecoli", "syn3a"]
    assert list(rows[0])[:2] == ["organism", "burden_percent"]
    assert (result_dir / "growth.png").stat().st_size > 0
    assert (result_dir / "timeseries.parquet").exists()
    task_names = {t.name for t in client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[compare_id])))}
    assert "execute-biological-process-ecoli-syn3a-batch1" in task_names, task_names

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

    run_id = _start_busy_comparison(client, local_prefect, "cancelled_out")
    log_before = len(local_prefect.log_text("worker"))
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
    after = local_prefect.log_text("worker")[log_before:]
    assert "| ERROR" not in after and "Traceback" not in after, after[-4000:]  # a normal cancel


def test_a_killed_flow_run_is_crashed_and_nothing_of_it_survives(
    local_prefect: LocalPrefect, client
) -> None:
    """kill -9 of the flow run's process (its worker lives on): no hook can run. Its
    simulation workers end with it at once, so no VM is created for it afterwards; the
    server's bioxen-crash-zombie-runs automation marks it Crashed once its heartbeats (30 s)
    stop for 90 s; that state triggers the cleanup-crashed-run deployment, which destroys
    its VMs without waiting on leases (their holders are dead) and ends its task runs.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from bioxen_flows.state import LEASE_WAIT_SECONDS
    from bioxen_flows.vm import list_bio_vms

    run_id = _start_busy_comparison(client, local_prefect, "zombie_out")
    worker = psutil.Process(local_prefect.worker.pid)
    of_run = {p.pid: p for p in worker.children(recursive=True)
              if p.environ().get("PREFECT__FLOW_RUN_ID") == str(run_id)}
    [flow_process] = [p for p in of_run.values() if p.ppid() not in of_run]  # the top one
    simulation_workers = flow_process.children(recursive=True)
    assert simulation_workers
    flow_process.kill()  # SIGKILL: no hook, no final state, no goodbye
    created = {vm["vm_id"] for vm in list_bio_vms()}
    gone, alive = psutil.wait_procs(simulation_workers, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert created, "the run had no VM left to clean up"

    def crashed() -> bool:  # the worker sees its exit status (the next test: no worker)
        assert {vm["vm_id"] for vm in list_bio_vms()} <= created  # no VM after the kill
        return client.read_flow_run(run_id).state.is_crashed()

    assert _eventually(crashed, timeout=300), (
        f"still {client.read_flow_run(run_id).state}\n{local_prefect.log_tail('server')}"
    )
    assert _eventually(lambda: list_bio_vms() == [], timeout=RUN_TIMEOUT), (
        f"{len(list_bio_vms())} of {len(created)} VMs left\n{local_prefect.log_tail('worker')}"
    )
    [cleanup] = [r for r in client.read_flow_runs()
                 if r.parameters.get("flow_run") == f"prefect.flow-run.{run_id}"]
    cleanup = _wait_final(client, cleanup.id, local_prefect)
    assert cleanup.state.is_completed()
    assert cleanup.total_run_time.total_seconds() < LEASE_WAIT_SECONDS  # no lease waited on
    # (the server may have heard of none: workers report through the killed process)
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    assert all(t.state.is_final() for t in tasks), [t.state.name for t in tasks]


def test_a_run_killed_with_its_worker_is_crashed_and_its_vms_destroyed(
    local_prefect: LocalPrefect, client
) -> None:
    """kill -9 of the worker and the flow run process: no hook can run. The server's
    bioxen-crash-zombie-runs automation marks the run Crashed once its heartbeats (30 s)
    stop for 90 s; that state triggers the cleanup-crashed-run deployment, which a
    restarted worker (systemd's Restart=) runs, and the VMs are destroyed.
    """
    from bioxen_flows.vm import list_bio_vms

    run_id = _start_busy_comparison(client, local_prefect, "zombie_out")
    worker = psutil.Process(local_prefect.worker.pid)
    victims = [worker, *worker.children(recursive=True)]
    for proc in victims:
        proc.kill()  # SIGKILL: no hook, no final state, no goodbye
    psutil.wait_procs(victims, timeout=30)
    local_prefect.worker.wait(timeout=30)
    leaked = len(list_bio_vms())
    assert leaked > 0
    assert client.read_flow_run(run_id).state.is_running()  # the zombie

    _start_worker(local_prefect)  # what Restart=on-failure does
    assert _eventually(lambda: client.read_flow_run(run_id).state.is_crashed(), timeout=300), (
        f"still {client.read_flow_run(run_id).state}\n{local_prefect.log_tail('server')}"
    )
    assert "heartbeat" in client.read_flow_run(run_id).state.message
    assert _eventually(lambda: list_bio_vms() == [], timeout=RUN_TIMEOUT), (
        f"{len(list_bio_vms())} of {leaked} VMs left\n{local_prefect.log_tail('worker')}"
    )
    [cleanup] = [r for r in client.read_flow_runs()
                 if r.parameters.get("flow_run") == f"prefect.flow-run.{run_id}"]
    assert _wait_final(client, cleanup.id, local_prefect).state.is_completed()


def test_the_gc_deployment_destroys_orphans_through_the_worker(
    local_prefect: LocalPrefect, client
) -> None:
    """The reap-bio-vms deployment (scheduled every 15 minutes) run now: it destroys a VM
    whose flow process is gone and leaves one made by hand."""
    from bioxen_flows.orchestration.reaper import FLOW_RUN_LABEL, PROCESS_LABEL
    from bioxen_flows.processes import HOST
    from bioxen_flows.state import StateStore
    from bioxen_flows.vm import create_bio_vm, list_bio_vms, load_bio_vm

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = create_bio_vm("orphan-e2e", "syn3a", config={"labels": {
        FLOW_RUN_LABEL: "00000000-0000-0000-0000-000000000000",
        PROCESS_LABEL: f"{HOST}:{gone.pid}:-"}})
    create_bio_vm("by-hand-e2e", "syn3a")
    # older than gc_min_age_seconds (300 s by default), as a leaked VM would be
    from sqlalchemy import update

    from bioxen_flows.state.schema import vms

    with StateStore().engine.begin() as conn:
        conn.execute(update(vms).where(vms.c.vm_id == orphan.vm_id)
                     .values(created_at=time.time() - 3600))
    run = _wait_final(client, _start(client, REAP, {}), local_prefect)
    assert run.state.is_completed(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    assert [vm["vm_id"] for vm in list_bio_vms()] == ["by-hand-e2e"]
    [entry] = [e for e in StateStore().audit_log("orphan-e2e") if e["action"] == "gc"]
    assert "is gone" in entry["detail"]["reason"] and entry["flow_run_id"] == str(run.id)
    load_bio_vm("by-hand-e2e").destroy()  # later tests expect the worker's store empty
