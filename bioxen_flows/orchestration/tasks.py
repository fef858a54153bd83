"""Prefect tasks over the bio-VM API: one verb_noun task per lifecycle step.

Tasks take and return VM ids (strings), never VM objects: every task loads its VMs
from the state store, so the same tasks run on threads, processes or Dask workers.
A task handles a batch of VMs, because one simulation step is often cheaper than a
task run's own overhead.

`simulate_bio_vms` runs a batch's create -> start -> execute -> collect as nested task
runs inside one worker: the UI shows each step, and the cells built at creation stay warm
in that worker's hypervisor for the steps after it (a worker process has its own cache, so
steps spread over workers would rebuild every cell). It returns the batch's tidy rows.

Every task changes or reads live VM state, so none is cached (`NO_CACHE`): Prefect's
default policy would return a stored result for a second call with the same inputs in
the same run (a second teardown would destroy nothing). Each has a timeout, so a stuck
step fails the run instead of holding it (and its VMs) forever.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bioxen_flows import progress
from bioxen_flows.errors import InputError
from bioxen_flows.logs import vm_context
from bioxen_flows.orchestration import events, retry
from bioxen_flows.orchestration.batching import VMSpec
from bioxen_flows.orchestration.reporting import batch_timeseries
from bioxen_flows.orchestration.run_context import FLOW_RUN_LABEL, run_tag
from bioxen_flows.serialization import json_safe
from bioxen_flows.vm import create_bio_vm, destroy_labelled_vms, infrastructure, load_bio_vm

# Upper bounds for one batch (the default batch is 3 VMs): a whole-cell simulation of 168
# simulated hours takes well under a minute per VM; XCP-ng provisioning a few minutes.
SETUP_TIMEOUT_S = 30 * 60
PROCESS_TIMEOUT_S = 2 * 60 * 60

events.enable()  # every process that runs these tasks reports VM changes as Prefect events


def batch_run_name() -> str:
    """Task run name: the task and its batch, each said once: `simulate-bio-vms-ecoli-batch1`
    (a batch's label), else the VMs (`start-bio-vms-cmp-1a2b3c4d-syn3a-0..2`: the ids name
    the organism), else the run's short tag; shown in the UI instead of `-1eb`."""
    from prefect.runtime import task_run

    params = task_run.parameters or {}
    head = task_run.task_name or "task"
    if params.get("label"):
        return f"{head}-{params['label']}"
    specs = params.get("specs") or []
    ids = [s.vm_id for s in specs] if specs else list(params.get("vm_ids") or [])
    if not ids:  # a whole run's VMs: its short tag, as its VMs are named (cmp-<tag>-...)
        owner = str(params.get("owner") or "")
        return f"{head}-{run_tag(owner)}" if owner else head
    return f"{head}-{ids[0]}" + (f"..{ids[-1].rsplit('-', 1)[-1]}" if len(ids) > 1 else "")


def with_stochastic_engine(
    config: dict[str, Any] | None, engine: str, division: bool
) -> dict[str, Any]:
    """`config` with the stochastic engine and division set for every VM (checked here, so
    a bad choice fails the run before any VM is made)."""
    from bioxen_flows.config.models import SimulationConfig

    simulation = {"stochastic_engine": engine, "division": division}
    try:
        SimulationConfig(stochastic=True, seed=0, **simulation)
    except ValueError as error:
        raise InputError(f"stochastic_engine/division: {error}") from None
    config = dict(config or {})
    config["simulation"] = {**config.get("simulation", {}), **simulation}
    return config


@task(
    name="create-bio-vms",
    task_run_name=batch_run_name,
    cache_policy=NO_CACHE,
    timeout_seconds=SETUP_TIMEOUT_S,
    **retry.VM_STEP.task_options(),
)
def create_bio_vms(specs: list[VMSpec], owner: str) -> list[str]:
    """Create the VMs, labelled with their owner so teardown can always find them."""
    from prefect.runtime import task_run

    log = get_run_logger()
    retried = (task_run.run_count or 1) > 1
    created = []
    for spec in specs:
        if retried and _exists(spec.vm_id):  # a retry resumes instead of failing on duplicates
            created.append(spec.vm_id)
            continue
        replace_lost_attempt(spec.vm_id, owner)
        config = dict(spec.config)
        placement = config.pop("placement", None)  # the backend's, passed apart from config
        config = {**config, "labels": {**config.get("labels", {}), FLOW_RUN_LABEL: owner}}
        with vm_context(spec.vm_id):  # log lines of this VM name it
            create_bio_vm(spec.vm_id, spec.organism, spec.vm_type, config, placement=placement)
            log.info("created %s VM %s (%s)", spec.vm_type, spec.vm_id, spec.organism)
        created.append(spec.vm_id)
    return created


@task(name="start-bio-vms", task_run_name=batch_run_name, cache_policy=NO_CACHE,
      timeout_seconds=SETUP_TIMEOUT_S, **retry.VM_STEP.task_options())
def start_bio_vms(vm_ids: list[str]) -> list[str]:
    for vm_id in vm_ids:
        vm = load_bio_vm(vm_id)
        if vm.state != "running":
            vm.start()
    get_run_logger().info("started %s", ", ".join(vm_ids))
    return vm_ids


@task(name="execute-biological-process", task_run_name=batch_run_name, cache_policy=NO_CACHE,
      timeout_seconds=PROCESS_TIMEOUT_S)
def execute_biological_process(vm_ids: list[str], code: str) -> dict[str, dict[str, Any]]:
    """Run one process program on each VM; returns each VM's time series and summary."""
    log = get_run_logger()
    results = {}
    for vm_id in vm_ids:
        with vm_context(vm_id):  # log lines of this VM's program name it
            results[vm_id] = load_bio_vm(vm_id).execute_biological_process(code)
            summary = results[vm_id]["summary"]
            log.info("%s: %.1f simulated min, doubling %.1f min, atp_percent %.1f", vm_id,
                     summary["simulated_time_min"], summary["doubling_time_min"],
                     summary["atp_percent"])
    return results


@task(name="collect-biological-metrics", task_run_name=batch_run_name, cache_policy=NO_CACHE,
      timeout_seconds=SETUP_TIMEOUT_S)
def collect_biological_metrics(vm_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each VM's current metrics (JSON-ready: infinities become None)."""
    return {vm_id: json_safe(load_bio_vm(vm_id).get_biological_metrics()) for vm_id in vm_ids}


def without_timeout(step: Task) -> Task:
    """`step` for a thread: Prefect enforces a task's timeout only on a process's main
    thread, and elsewhere warns once per task run instead; the flow's timeout (and the XAPI
    and SSH timeouts of XCP-ng steps) bound it there. (`with_options` cannot unset one.)"""
    copy = step.with_options()
    copy.timeout_seconds = None
    return copy


@task(name="simulate-bio-vms", task_run_name=batch_run_name, cache_policy=NO_CACHE,
      timeout_seconds=PROCESS_TIMEOUT_S)
def simulate_bio_vms(
    specs: list[VMSpec], owner: str, code: str, label: str
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """One batch from creation to teardown in this worker, each step a task run of its own
    (named `<step>-<label>`, e.g. `create-bio-vms-syn3a-batch1`). A batch that fails
    leaves its VMs to the flow's own teardown, which always runs.

    Returns the batch's tidy time series rows and each VM's final metrics.
    """
    progress.logs_to_folder()  # a bar on the CLI's terminal: logs above it, not onto it
    on_main_thread = threading.current_thread() is threading.main_thread()
    create, start, execute, collect, teardown = (
        t.with_options(task_run_name=f"{t.name}-{label}") if on_main_thread
        else without_timeout(t.with_options(task_run_name=f"{t.name}-{label}"))
        for t in (create_bio_vms, start_bio_vms, execute_biological_process,
                  collect_biological_metrics, teardown_bio_vms)
    )
    started = start(create(specs, owner))
    results = execute(started, code)
    metrics = collect(started)
    teardown(owner, started)  # frees the worker's cells as soon as the batch is done
    return batch_timeseries(specs, results), metrics


@task(name="teardown-bio-vms", task_run_name=batch_run_name, cache_policy=NO_CACHE,
      timeout_seconds=SETUP_TIMEOUT_S, **retry.VM_STEP.task_options())
def teardown_bio_vms(owner: str, vm_ids: list[str] | None = None) -> list[str]:
    """Destroy every VM the owner created, whatever state it is in; with `vm_ids`, only
    those (a batch, done with its VMs: no scan of the store)."""
    if vm_ids is None:
        destroyed = destroy_labelled_vms(FLOW_RUN_LABEL, owner)
    else:
        destroyed = []
        for vm_id in vm_ids:
            vm = load_bio_vm(vm_id)
            if (vm.record.config.get("labels") or {}).get(FLOW_RUN_LABEL) == owner:
                vm.destroy()
                destroyed.append(vm_id)
    get_run_logger().info("destroyed %d VM(s): %s", len(destroyed), ", ".join(destroyed))
    return destroyed


def replace_lost_attempt(vm_id: str, owner: str) -> bool:
    """Destroy the VM `vm_id` when this run (`owner`) already made it: an earlier attempt of
    its batch was lost with its worker (Dask runs a lost worker's tasks again elsewhere,
    and a run's VM ids are its own), so this attempt makes it again. Its lease, held by the
    lost process, is overridden; the destruction is audited with the reason. Returns
    whether there was one. A VM of this id owned by anyone else is left alone (creating it
    then fails: the id is taken)."""
    from bioxen_flows.state import StateStore
    from bioxen_flows.vm.factory import force_destroy_vm

    store = StateStore()
    record = store.find_vm(vm_id)
    if record is None or (record.config.get("labels") or {}).get(FLOW_RUN_LABEL) != owner:
        return False
    store.audit(vm_id, "gc", {"reason": "an earlier attempt of its batch was lost with its "
                                        "worker; made again"})
    if infrastructure(record.vm_type).in_process:  # nothing outside the record: no lease
        force_destroy_vm(vm_id, store=store)
    else:
        load_bio_vm(vm_id).destroy()
    get_run_logger().warning("%s: made again (an earlier attempt of this batch was lost "
                             "with its worker)", vm_id)
    return True


def _exists(vm_id: str) -> bool:
    from bioxen_flows.state import StateStore

    return StateStore().find_vm(vm_id) is not None
