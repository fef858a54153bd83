"""Prefect flows of one VM or one clean-up: a VM's lifecycle, the clean-up of a crashed run,
and the reaping of leaked XCP-ng VMs. (The comparison is in `compare`, the design-space
sweep in `sweep`, the reaping of basic VMs in `reaper`.)

A run whose process died with its worker (kill -9, a lost machine) runs no hook: the server
marks it Crashed when its heartbeats stop (deployments/automations.yaml) and the
`cleanup-crashed-run` deployment, triggered by that state, runs `cleanup_crashed_run` to
destroy its VMs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from prefect import flow, get_run_logger

from bioxen_flows.errors import InputError
from bioxen_flows.logs import configure_logging
from bioxen_flows.orchestration import events
from bioxen_flows.orchestration.batching import vm_spec
from bioxen_flows.orchestration.concurrency import vm_slots
from bioxen_flows.orchestration.execution import teardown_hook, teardown_run, xcpng_config
from bioxen_flows.orchestration.naming import tag_flow_run
from bioxen_flows.orchestration.parameters import (
    Infrastructure,
    Mapping,
    OptionalText,
    Organism,
    Percent,
    Pool,
    with_pool,
)
from bioxen_flows.orchestration.reaper import end_unfinished_task_runs
from bioxen_flows.orchestration.run_context import (
    FLOW_RUN_LABEL,
    current_run_id,
    read_flow_run,
    run_parameters,
    run_tag,
    with_run_labels,
)
from bioxen_flows.orchestration.tasks import (
    collect_biological_metrics,
    create_bio_vms,
    execute_biological_process,
    start_bio_vms,
)
from bioxen_flows.orchestration.xcpng_tasks import (
    boot_xcpng_vm,
    clone_xcpng_vm,
    provision_xcpng_disks,
    reap_xcpng_vms,
)
from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.vm import destroy_labelled_vms, infrastructure

LIFECYCLE_TIMEOUT_S = 2 * 60 * 60


def _lifecycle_run_name() -> str:
    params = run_parameters()
    return f"lifecycle-{params.get('organism', 'syn3a')}-{params.get('vm_type', 'basic')}"


@flow(
    name="vm-lifecycle",
    flow_run_name=_lifecycle_run_name,
    timeout_seconds=LIFECYCLE_TIMEOUT_S,
    on_crashed=[teardown_hook],
    on_cancellation=[teardown_hook],
)
def vm_lifecycle(
    organism: Organism = "syn3a",
    program: str = "grow(minutes=60)",
    vm_type: Infrastructure = "basic",
    vm_id: OptionalText = None,
    config: Mapping = None,
    xcpng_pool: Pool = None,
    alert_low_atp_percent: Percent = None,
    alert_ribosomes_percent: Percent = None,
) -> dict[str, Any]:
    """One VM through create -> start -> process program -> metrics -> teardown.

    Args:
        organism: syn3a, ecoli or minimal_cell.
        program: Process program, one call per line, e.g. grow(minutes=60) or
            install("gfp_reporter").
        vm_type: Infrastructure: basic (in-process engine) or xcpng.
        vm_id: The VM's id (default: derived from the flow run id).
        config: The VM's config, e.g. {"xcpng_config": {...}} for xcpng.
        xcpng_pool: The XCP-ng pool for vm_type xcpng, its credentials by block name
            (instead of config={"xcpng_config": {...}}, which still works).
        alert_low_atp_percent: The VM emits bioxen.vm.alert.low-atp when its atp_percent
            ends below this (default: the alert_low_atp_percent setting).
        alert_ribosomes_percent: The VM emits bioxen.vm.alert.ribosomes-near-cap when it
            holds more than this % of its ribosome cap (default: the setting).
    """
    configure_logging()
    owner = current_run_id()
    config = with_run_labels(with_pool(config, xcpng_pool), owner)
    thresholds = events.alert_thresholds(alert_low_atp_percent, alert_ribosomes_percent, None)
    vm_id = vm_id or f"life-{run_tag(owner)}-{organism}"
    spec = vm_spec(vm_id, organism, vm_type=vm_type, config=config)
    with vm_slots(1):
        try:
            tag_flow_run([organism, vm_type])
            if infrastructure(vm_type).provisioned:  # each step is its own, retryable task
                cfg = xcpng_config(config)
                vm = provision_xcpng_disks(cfg, clone_xcpng_vm(cfg, vm_id, owner))
                spec = spec.placed(boot_xcpng_vm(cfg, vm))
            created = create_bio_vms([spec], owner)
            started = start_bio_vms(created)
            result = execute_biological_process(started, program)[vm_id]
            metrics = collect_biological_metrics(started)[vm_id]
            events.alert_on({vm_id: metrics}, {vm_id: spec}, owner, thresholds)
        finally:
            teardown_run(owner, vm_type, config)
    return {"vm_id": vm_id, "metrics": metrics, "timeseries": result["timeseries"]}


def _cleanup_run_name() -> str:
    """`cleanup-<run tag>`: the crashed run's short tag, as its VMs and results are named
    (not `cleanup-prefect.flow-run.<uuid>`)."""
    target = str(run_parameters().get("flow_run", ""))
    return f"cleanup-{run_tag(target.rsplit('.', 1)[-1])}"


@flow(name="cleanup-crashed-run", flow_run_name=_cleanup_run_name,
      timeout_seconds=30 * 60)
def cleanup_crashed_run(flow_run: str) -> list[str]:
    """Destroy the VMs of a flow run that died without running its hooks.

    Triggered by the `cleanup-crashed-run` deployment when a bioxen run becomes Crashed
    (prefect.yaml); idempotent, so a run whose own hook already cleaned up costs nothing.

    Args:
        flow_run: The crashed flow run's id, or its event resource id
            (prefect.flow-run.<id>).
    """
    run_id = flow_run.rsplit(".", 1)[-1]
    run = read_flow_run(run_id)
    known = set(get_supported_biological_types())
    tag_flow_run(["cleanup", *(t for t in run.tags if t in known)])  # the crashed run's organisms
    if run.state is not None and not run.state.is_final():
        raise InputError(f"flow run {run_id} is {run.state.name}, not finished: keeping its VMs")
    destroyed = destroy_labelled_vms(FLOW_RUN_LABEL, str(run.id))
    teardown_hook(None, run, run.state)  # XCP-ng clones it never registered, if any
    # its task runs died with its process: without this the UI shows them running forever
    cancelled = run.state is not None and run.state.is_cancelled()
    end_unfinished_task_runs(str(run.id), "Cancelled" if cancelled else "Crashed",
                             f"its flow run ended {run.state.name if run.state else 'unknown'}")
    get_run_logger().info("destroyed %d VM(s) of flow run %s: %s",
                          len(destroyed), run.id, ", ".join(destroyed))
    return destroyed


def _reap_xcpng_run_name() -> str:
    """`reap-xcpng-<pool block or host>`: which pool it cleaned."""
    cfg = run_parameters().get("xcpng_config") or {}
    pool = cfg.get("credentials_block") or urlparse(str(cfg.get("url") or "")).hostname
    return f"reap-xcpng-{pool or 'pool'}"


@flow(name="reap-xcpng-vms", flow_run_name=_reap_xcpng_run_name)
def reap_leaked_xcpng_vms(xcpng_config: dict[str, Any]) -> list[str]:
    """Destroy XCP-ng VMs tagged by BioXen whose owner (a VM record or a flow run) is gone."""
    tag_flow_run(["xcpng", "reap"])
    return reap_xcpng_vms(xcpng_config)
