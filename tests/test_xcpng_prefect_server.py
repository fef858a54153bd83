"""XCP-ng flows crashed and cancelled on a real Prefect server and process worker.

The server, its PostgreSQL database and the worker come from conftest.py
(its module-scoped fixtures, instantiated again for this module). The pool is the XAPI
simulator on loopback; the flow run reaches it through an `XCPngCredentials` block saved on
that server (the worker's environment holds no password). The simulated guest never finishes
booting, so each run is caught mid-provision. Each test ends with the pool holding no VM,
disk or task of ours and gc finding nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from bioxen_flows.testing.xapi_simulator import XapiSimulator
from tests.helpers import (
    HOOK_ERROR,
    LIFECYCLE,
    RUN_TIMEOUT,
    SERVER_E2E,
    LocalPrefect,
    eventually,
    start_run,
    wait_final,
)
from tests.xcpng_pool import PASSWORD, assert_nothing_left

pytestmark = SERVER_E2E
BLOCK = "e2e-pool"


@pytest.fixture
def pool(client: Any) -> Iterator[XapiSimulator]:
    from bioxen_flows.xcpng.credentials import XCPngCredentials

    with XapiSimulator(password=PASSWORD, boot_seconds=3600) as sim:
        XCPngCredentials(url=sim.url, username="root", password=PASSWORD).save(
            BLOCK, overwrite=True)
        yield sim
        assert_nothing_left(sim)


def lifecycle_parameters() -> dict[str, Any]:
    return {"organism": "ecoli", "vm_type": "xcpng", "config": {"xcpng_config": {
        "credentials_block": BLOCK, "template": "bioxen-guest", "ssh_user": "bioxen",
        "ssh_key_path": "/nonexistent", "ssh_host_key": "SHA256:" + "A" * 43,
        "boot_timeout_seconds": 3600}}}


def booting(sim: XapiSimulator) -> bool:
    """The run has cloned, provisioned and started its VM and waits for the guest's IP."""
    return any(vm["power_state"] == "Running" for vm in sim.vms())


def flow_run_process(local: LocalPrefect, run_id: Any) -> psutil.Process:
    """The worker's child process that executes `run_id`."""
    for proc in psutil.Process(local.worker.pid).children(recursive=True):
        try:
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == str(run_id):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no process runs flow run {run_id}:\n{local.log_tail('worker')}")


def wait_until_clean(sim: XapiSimulator, local: LocalPrefect, log_start: int,
                     run_process: psutil.Process | None = None) -> None:
    """Until our VM is reaped and the run's process (where the state hooks run, after the
    flow's own teardown) has exited, so that no hook is still talking to this test's pool
    when the next test starts. Only the worker log written since `log_start` is ours."""
    from bioxen_flows.state import StateStore
    from bioxen_flows.xcpng.xapi import name_prefix

    prefix = name_prefix(StateStore().installation_id())  # the worker's installation

    def clean() -> bool:
        return not [vm for vm in sim.vms(include_templates=True)
                    if vm["name_label"].startswith(prefix)] and not sim.vdis(kind="system")

    def ours() -> str:
        return local.log_text("worker")[log_start:]

    eventually(lambda: clean() or HOOK_ERROR in ours(), timeout=120)
    if run_process is not None:
        psutil.wait_procs([run_process], timeout=120)
    log = ours()
    if HOOK_ERROR in log:
        pytest.fail("a flow hook failed:\n" + log[log.index(HOOK_ERROR):][:3000])


def test_cancelling_an_xcpng_run_mid_provision_leaves_nothing_on_the_pool(
    local_prefect: LocalPrefect, client: Any, pool: XapiSimulator
) -> None:
    from prefect.states import Cancelling

    log_start = len(local_prefect.log_text("worker"))
    run_id = start_run(client, LIFECYCLE, lifecycle_parameters())
    assert eventually(lambda: booting(pool), timeout=RUN_TIMEOUT), local_prefect.log_tail("worker")
    process = flow_run_process(local_prefect, run_id)
    client.set_flow_run_state(run_id, Cancelling())
    run = wait_final(client, run_id, local_prefect)
    assert run.state.is_cancelled(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    wait_until_clean(pool, local_prefect, log_start, process)
    assert PASSWORD not in repr(client.read_flow_run(run_id).parameters)


def test_a_crashed_xcpng_run_leaves_nothing_on_the_pool(
    local_prefect: LocalPrefect, client: Any, pool: XapiSimulator
) -> None:
    """SIGTERM to the flow run's process (a stopped container, a shutdown): the run is
    Crashed and its on_crashed hook reaps the VM it was booting."""
    log_start = len(local_prefect.log_text("worker"))
    run_id = start_run(client, LIFECYCLE, lifecycle_parameters())
    assert eventually(lambda: booting(pool), timeout=RUN_TIMEOUT), local_prefect.log_tail("worker")
    process = flow_run_process(local_prefect, run_id)
    process.terminate()
    run = wait_final(client, run_id, local_prefect)
    assert run.state.is_crashed(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    wait_until_clean(pool, local_prefect, log_start, process)


def test_an_xcpng_run_killed_with_its_worker_is_reaped_by_the_cleanup_deployment(
    local_prefect: LocalPrefect, client: Any, pool: XapiSimulator
) -> None:
    """kill -9 of the worker and the flow run's process: no hook runs. The server marks
    the run Crashed when its heartbeats stop, and the cleanup-crashed-run deployment (run
    by the restarted worker) reaps the VM it was booting, by its owner tag."""
    from tests.helpers import start_worker

    log_start = len(local_prefect.log_text("worker"))
    run_id = start_run(client, LIFECYCLE, lifecycle_parameters())
    assert eventually(lambda: booting(pool), timeout=RUN_TIMEOUT), local_prefect.log_tail("worker")
    worker = psutil.Process(local_prefect.worker.pid)
    victims = [worker, *worker.children(recursive=True)]
    for proc in victims:
        proc.kill()  # SIGKILL: no hook, no final state
    psutil.wait_procs(victims, timeout=30)
    local_prefect.worker.wait(timeout=30)
    assert booting(pool)  # the zombie's VM is still there

    start_worker(local_prefect)  # what systemd's Restart=on-failure does
    assert eventually(lambda: client.read_flow_run(run_id).state.is_crashed(), timeout=300), (
        f"still {client.read_flow_run(run_id).state}\n{local_prefect.log_tail('server')}"
    )
    assert eventually(lambda: not pool.vms(), timeout=RUN_TIMEOUT), local_prefect.log_tail(
        "worker")
    wait_until_clean(pool, local_prefect, log_start)
