"""Plain helpers the test modules share (fixtures live in conftest.py): the `bioxen`
command in a process of its own, the hostile corpus's VMs, and a Prefect server on loopback
for the end-to-end modules. Test modules import from here, never from each other."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SYN3A_GENBANK = REPO.parent / "shared" / "data" / "syn3A.gb"


# ---- the `bioxen` command, one process per call ------------------------------------------

def bioxen(*args: str, input: str | None = None, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bioxen_flows", *args], capture_output=True, encoding="utf-8",
        timeout=120, input=input, cwd=cwd, env={**os.environ.copy(), **(env or {})},
    )


def ok(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    run = bioxen(*args, **kwargs)
    assert run.returncode == 0, run.stderr
    return run


def data(*args: str, **kwargs: Any) -> Any:
    """A read command's --json output, parsed."""
    return json.loads(ok(*args, "--json", **kwargs).stdout)


def refused(run: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1, exactly one 'bioxen: error:' line on stderr, no traceback."""
    assert run.returncode == 1, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("bioxen: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# ---- the state store -----------------------------------------------------------------------

def empty_postgres(url: str) -> None:
    """Back to a fresh store: no VMs, no audit, no quotas, the default budget (schema kept)."""
    from bioxen_flows.state import StateStore
    from bioxen_flows.state.schema import DEFAULT_ATP_BUDGET_PERCENT, DEFAULT_RIBOSOME_BUDGET

    store = StateStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE vms, audit, quotas")
        conn.exec_driver_sql("DELETE FROM meta WHERE key <> 'schema_version'")
        conn.exec_driver_sql(
            f"UPDATE budget SET ribosomes = {DEFAULT_RIBOSOME_BUDGET}, "
            f"atp_percent = {DEFAULT_ATP_BUDGET_PERCENT}"
        )


# ---- the hostile corpus (tests/hostile) ------------------------------------------------------

# VMs the cases act on: (vm_id, organism, what is done to it at set-up)
RUNNING_SYN3A = "syn"  # running, grown 60 min (its clock is above 0)
RUNNING_ECOLI = "eco"  # running, lac_operon installed
WITH_GFP = "gfpvm"  # running syn3a with gfp_reporter installed
PAUSED = "paused1"
CREATED = "created1"


def dump_store(home: Path) -> list[str]:
    """The whole store as SQL statements (the store writes timestamps only on change),
    less the audit log's record of refusals (a refusal is audited; it changes nothing else)."""
    path = home / "state.db"
    conn = sqlite3.connect(path)
    try:
        return [line for line in conn.iterdump()
                if not (line.startswith('INSERT INTO "audit"') and line.endswith(",'refused');"))]
    finally:
        conn.close()


# ---- a Prefect server on loopback (the end-to-end modules) ------------------------------------

POOL = "bioxen-process"
COMPARE = "compare-organisms/nightly-comparison"
LIFECYCLE = "vm-lifecycle/vm-lifecycle"
PG_DSN = os.environ.get("BIOXEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEDULER_LOOP_S = 2
SERVER_START_TIMEOUT = 180.0  # measured 9-20 s on 2 cores; other test sessions share them
CLI_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0
HOOK_ERROR = "An error was encountered while running hook"


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own session (so its whole process group can be signalled)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )


def stop_process(proc: subprocess.Popen, grace: float = 20.0) -> None:
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


def wait_healthy(url: str, server: subprocess.Popen, log: Callable[[], str]) -> None:
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


def prefect_cli(local: LocalPrefect, *args: str) -> str:
    done = subprocess.run(
        prefect_command(*args), cwd=REPO, env=local.env, capture_output=True, encoding="utf-8",
        timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{output}"
    return output


async def postgres_execute(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def server_errors(local: LocalPrefect) -> list[str]:
    """ERROR lines and tracebacks in the server's log (the scheduler's failures went there)."""
    return [line for line in local.log_text("server").splitlines()
            if " ERROR " in line or "| ERROR" in line or "Traceback" in line]


def run_setup(local: LocalPrefect) -> str:
    """deployments/setup.sh, as the README runs it (pool, deploy --all, automations)."""
    done = subprocess.run(
        [str(REPO / "deployments" / "setup.sh")], cwd=local.tmp, env=local.env,
        capture_output=True, encoding="utf-8", timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"deployments/setup.sh failed:\n{output}"
    return output


def deploy_e2e_copy(local: LocalPrefect, first_run: datetime) -> None:
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
    prefect_cli(local, "--no-prompt", "deploy", "--prefect-file", str(path), "--all")


def start_worker(local: LocalPrefect) -> subprocess.Popen:
    local.worker = spawn(prefect_command("worker", "start", "--pool", POOL), local.env,
                          local.logs["worker"])
    return local.worker


def start_run(client: Any, deployment: str, parameters: dict[str, Any]) -> UUID:
    deployment_id = client.read_deployment_by_name(deployment).id
    return client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id


def wait_final(client: Any, run_id: UUID, local: LocalPrefect, timeout: float = RUN_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    pytest.fail(f"flow run {run_id} not final after {timeout:.0f} s "
                f"(state {run.state}):\n{local.log_tail('worker')}")


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


# The marks of a module that runs a real Prefect server (its worker, its automations):
# end to end, no server error may pass unseen, and BIOXEN_SKIP_SERVER_E2E=1 skips it.
SERVER_E2E = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("no_server_errors"),
    pytest.mark.skipif(
        os.environ.get("BIOXEN_SKIP_SERVER_E2E") == "1", reason="BIOXEN_SKIP_SERVER_E2E=1"
    ),
]
