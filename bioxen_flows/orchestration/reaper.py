"""Crash recovery for basic VMs: find and destroy the VMs of flow runs that are over.

A flow labels each VM it creates with its flow run id and the identity of the process
running the flow (``host:pid:start``). A VM is an orphan when that flow run is in a terminal
state in the Prefect API, or when that process is gone from this host (``kill -9`` of a
``bioxen compare`` leaves its VMs and the API thinks the run is still running): then at
once, at any age. A run found over in the API counts only once the VM is
``gc_min_age_seconds`` old. VMs made by hand (no labels) are never reaped; a process on
another host is never taken for dead. `plan_reap` also says why each other VM was skipped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run

from bioxen_flows.errors import NotFoundError
from bioxen_flows.logs import configure_logging
from bioxen_flows.orchestration import events
from bioxen_flows.orchestration.naming import tag_flow_run
from bioxen_flows.orchestration.run_context import (
    FLOW_RUN_LABEL,
    PROCESS_LABEL,
    RunState,
    flow_run_states,
    is_run_id,
)
from bioxen_flows.processes import HOST, process_is_gone
from bioxen_flows.settings import get_settings
from bioxen_flows.state import StateStore
from bioxen_flows.vm import infrastructure


def end_unfinished_task_runs(flow_run_id: str, state: str, message: str) -> int:
    """Put the task runs of a stopped or crashed flow run that never ended (their worker
    was stopped under them) into `state` ("Cancelled" or "Crashed"), so the UI does not
    show them running forever. Returns how many; 0 without a reachable API."""
    if not is_run_id(flow_run_id):
        return 0
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Crashed

    make = {"Cancelled": Cancelled, "Crashed": Crashed}[state]
    unfinished = [StateType.PENDING, StateType.SCHEDULED, StateType.RUNNING, StateType.PAUSED,
                  StateType.CANCELLING]
    ended = 0
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))))
            for run in runs:
                client.set_task_run_state(run.id, make(message=message), force=True)
                ended += 1
    except Exception:  # noqa: BLE001 (best effort: the VMs, not the UI, are what matters)
        logging.getLogger(__name__).debug("could not end task runs of %s", flow_run_id,
                                          exc_info=True)
    return ended


@dataclass(frozen=True)
class Orphan:
    vm_id: str
    reason: str


@dataclass(frozen=True)
class Skipped:
    """A labelled VM gc left alone: `why` is "too young", "owner running" or "owner
    unknown"; `eligible_at` (epoch s) when age alone holds it back, else None (it becomes
    an orphan when its run ends or its process is gone)."""

    vm_id: str
    why: str
    detail: str
    eligible_at: float | None = None


def _run_states(run_ids: set[str]) -> dict[str, RunState | None]:
    """Each flow run's state in the Prefect API (None: unknown there or unreachable)."""
    try:
        return flow_run_states(run_ids)
    except Exception:  # noqa: BLE001 (no API: decide by the process alone)
        return dict.fromkeys(run_ids)


def find_orphans(
    store: StateStore | None = None, *, min_age_seconds: float | None = None
) -> list[Orphan]:
    """The basic VMs whose owning flow run is over or whose owning process is gone."""
    return plan_reap(store, min_age_seconds=min_age_seconds)[0]


def plan_reap(
    store: StateStore | None = None, *, min_age_seconds: float | None = None
) -> tuple[list[Orphan], list[Skipped]]:
    """The orphans, and every labelled VM left alone with why.

    A VM whose flow's process is provably gone (this host, pid and start time) is an
    orphan at any age: nothing can still be starting it. Otherwise its flow run's state is
    looked up in the Prefect API (only then: no server is started for a decision the
    process settles): a run over is an orphan once the VM is `min_age_seconds` old (a
    retried run reuses its id). A process on another host is never taken for dead; such
    a VM waits for its run's state ("owner unknown" while the API does not know it)."""
    store = store or StateStore()
    min_age = get_settings().gc_min_age_seconds if min_age_seconds is None else min_age_seconds
    now = time.time()
    # a creation whose creator is gone is never finished: reaped at any age, labels or not
    orphans = [Orphan(r.vm_id, "its creation was interrupted (its creator is gone)")
               for r in store.interrupted_creations() if infrastructure(r.vm_type).in_process]
    undecided = []
    for record in store.list_vms():
        labels = record.config.get("labels") or {}
        if not infrastructure(record.vm_type).in_process or record.state == "creating" \
                or not (FLOW_RUN_LABEL in labels or PROCESS_LABEL in labels):
            continue
        process = labels.get(PROCESS_LABEL)
        if process_is_gone(process):
            orphans.append(Orphan(record.vm_id, f"its process {process} is gone"))
        else:
            undecided.append((record, labels))
    run_ids = {labels[FLOW_RUN_LABEL] for _, labels in undecided if FLOW_RUN_LABEL in labels}
    states = _run_states(run_ids) if run_ids else {}
    skipped = []
    for record, labels in undecided:
        run_id, process = labels.get(FLOW_RUN_LABEL), labels.get(PROCESS_LABEL)
        state = states.get(run_id) if run_id else None
        local = bool(process) and str(process).partition(":")[0] == HOST
        if state and state.final:
            if now - record.created_at >= min_age:
                orphans.append(Orphan(record.vm_id, f"flow run {run_id} is {state.name}"))
            else:
                skipped.append(Skipped(record.vm_id, "too young",
                                       f"flow run {run_id} is {state.name}; gc_min_age_seconds "
                                       f"is {min_age:g}", record.created_at + min_age))
        elif local or state:
            owner = (f"flow run {run_id} is {state.name}" if state
                     else f"its process {process} runs on this host")
            skipped.append(Skipped(record.vm_id, "owner running", owner))
        else:
            where = (f"its process {process} is on another host" if process
                     else "it names no process")
            skipped.append(Skipped(record.vm_id, "owner unknown",
                                   f"{where} and the Prefect API does not know flow run "
                                   f"{run_id or '-'}"))
    return orphans, skipped


def reap(orphans: list[Orphan], store: StateStore | None = None,
         on_reaped: Callable[[Orphan], None] | None = None) -> list[str]:
    """Destroy the orphans (each audited as ``gc`` with its reason); returns those destroyed.
    `on_reaped(orphan)` is called as each one goes (progress for long reaps)."""
    from bioxen_flows.vm.factory import force_destroy_vm, load_bio_vm

    store = store or StateStore()
    destroyed = []
    for orphan in orphans:
        store.audit(orphan.vm_id, "gc", {"reason": orphan.reason})
        try:
            load_bio_vm(orphan.vm_id, store=store).destroy()
        except NotFoundError:
            continue
        except Exception:  # a VM that cannot be rebuilt must still not leak
            force_destroy_vm(orphan.vm_id, store=store)
        destroyed.append(orphan.vm_id)
        if on_reaped is not None:
            on_reaped(orphan)
    return destroyed


def _reap_run_name() -> str:
    """`reap-20261205-1045Z` (`reap-dry-run-...`): when it ran, instead of a random name."""
    dry = bool((current_run.parameters or {}).get("dry_run"))
    return f"reap-{'dry-run-' if dry else ''}{time.strftime('%Y%m%d-%H%MZ', time.gmtime())}"


@flow(name="reap-bio-vms", flow_run_name=_reap_run_name)
def reap_bio_vms(dry_run: bool = False) -> list[dict[str, Any]]:
    """Scheduled crash recovery (prefect.yaml: every 15 minutes): destroy orphaned basic VMs.

    Args:
        dry_run: List the orphans without destroying them.
    """
    configure_logging()
    events.enable()  # each VM it reaps: bioxen.vm.reaped, bioxen.vm.destroyed
    tag_flow_run(["reap"])
    orphans = find_orphans()
    if not dry_run:
        reap(orphans)
    log = get_run_logger()
    for orphan in orphans:
        log.info("%s %s: %s", "would destroy" if dry_run else "destroyed", orphan.vm_id,
                 orphan.reason)
    log.info("%d orphaned VM(s)%s", len(orphans), " (dry run)" if dry_run else "")
    return [asdict(orphan) for orphan in orphans]
