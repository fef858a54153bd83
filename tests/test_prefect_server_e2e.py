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

import csv
import re
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import psutil
import pytest

from tests.helpers import (
    COMPARE,
    HOOK_ERROR,
    LIFECYCLE,
    POOL,
    REPO,
    RUN_TIMEOUT,
    SERVER_E2E,
    LocalPrefect,
    eventually,
    start_run,
    start_worker,
    wait_final,
)

SCHEDULED = "compare-organisms/nightly-comparison-e2e"  # test-only: helpers.deploy_e2e_copy
CLEANUP = "cleanup-crashed-run/cleanup-crashed-run"
REAP = "reap-bio-vms/reap-bio-vms"
ZOMBIE_AUTOMATION = "bioxen-crash-zombie-runs"

pytestmark = SERVER_E2E


def _start_busy_comparison(client: Any, local: LocalPrefect, out: str) -> UUID:
    """Start a comparison that keeps the worker busy for minutes (303 VMs x 168 h, in
    worker processes); return once its first VMs exist and it is running."""
    from bioxen_flows.vm import list_bio_vms

    run_id = start_run(client, COMPARE, {
        "organisms": ["syn3a", "ecoli", "minimal_cell"], "replicates": 100, "hours": 168,
        "deterministic": True, "package": "gfp_reporter", "out_dir": str(local.tmp / out),
    })
    assert eventually(lambda: bool(list_bio_vms()), timeout=RUN_TIMEOUT), (
        f"no VM appeared:\n{local.log_tail('worker')}"
    )
    assert client.read_flow_run(run_id).state.is_running()
    return run_id


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

    assert eventually(lambda: len(scheduled(COMPARE)) >= 3, timeout=60), (
        f"no scheduled runs of the nightly comparison:\n{local_prefect.log_tail('server')}"
    )
    nightly_runs = scheduled(COMPARE)
    times = [run.expected_start_time for run in nightly_runs]
    assert all((t.hour, t.minute) == (2, 0) for t in times), times
    assert times == sorted(times) and len(set(times)) == len(times)

    # the test-only copy's first run is due ~20 s after setup: the worker must complete it
    assert eventually(lambda: bool(scheduled(SCHEDULED)), timeout=60)
    first = scheduled(SCHEDULED)[0]
    assert first.auto_scheduled
    run = wait_final(client, first.id, local_prefect)
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
    lifecycle_id = start_run(client, LIFECYCLE, {})
    compare_id = start_run(client, COMPARE, {
        "organisms": ["syn3a", "ecoli"], "replicates": 1, "hours": 0.5,
        "package": "gfp_reporter", "out_dir": str(out_dir),
    })

    for run_id in (lifecycle_id, compare_id):
        run = wait_final(client, run_id, local_prefect)
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

    run = wait_final(client, run_id, local_prefect)
    assert run.state.is_cancelled(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    # The hooks run after the process is gone; give them time (or fail fast on an error).
    eventually(
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

    assert eventually(crashed, timeout=300), (
        f"still {client.read_flow_run(run_id).state}\n{local_prefect.log_tail('server')}"
    )
    assert eventually(lambda: list_bio_vms() == [], timeout=RUN_TIMEOUT), (
        f"{len(list_bio_vms())} of {len(created)} VMs left\n{local_prefect.log_tail('worker')}"
    )
    [cleanup] = [r for r in client.read_flow_runs()
                 if r.parameters.get("flow_run") == f"prefect.flow-run.{run_id}"]
    cleanup = wait_final(client, cleanup.id, local_prefect)
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

    start_worker(local_prefect)  # what Restart=on-failure does
    assert eventually(lambda: client.read_flow_run(run_id).state.is_crashed(), timeout=300), (
        f"still {client.read_flow_run(run_id).state}\n{local_prefect.log_tail('server')}"
    )
    assert "heartbeat" in client.read_flow_run(run_id).state.message
    assert eventually(lambda: list_bio_vms() == [], timeout=RUN_TIMEOUT), (
        f"{len(list_bio_vms())} of {leaked} VMs left\n{local_prefect.log_tail('worker')}"
    )
    [cleanup] = [r for r in client.read_flow_runs()
                 if r.parameters.get("flow_run") == f"prefect.flow-run.{run_id}"]
    assert wait_final(client, cleanup.id, local_prefect).state.is_completed()


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
    run = wait_final(client, start_run(client, REAP, {}), local_prefect)
    assert run.state.is_completed(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    assert [vm["vm_id"] for vm in list_bio_vms()] == ["by-hand-e2e"]
    [entry] = [e for e in StateStore().audit_log("orphan-e2e") if e["action"] == "gc"]
    assert "is gone" in entry["detail"]["reason"] and entry["flow_run_id"] == str(run.id)
    load_bio_vm("by-hand-e2e").destroy()  # later tests expect the worker's store empty
