"""BioXen's Prefect events: VM lifecycle, resource alerts and package burden.

Every VM change is recorded once, in the state store's audit log; `enable()` subscribes to
it (`add_audit_listener`), so each committed `create`, `start`, `pause`, `resume`, `stop`,
`destroy` and `gc` becomes `bioxen.vm.created` ... `bioxen.vm.reaped`, wherever the change
was made (a flow, a task in a worker process, the CLI). Alerts and burden are emitted by the
flows that compute them (`emit_vm_alerts`, `emit_burden_exceeded`); the resource monitor's
and the CLI monitor's alerts when they appear.

The VM is the resource (`bioxen.vm.<id>`, labelled `bioxen.organism`,
`bioxen.infrastructure`, `bioxen.owner`); the flow run that made it is a related resource
(role `flow-run`), and inside a flow or task run Prefect adds the run, its flow, deployment
and tags. Events are only sent when a Prefect API is configured (PREFECT_API_URL), and never
block or fail the operation: Prefect's events worker sends them from a background thread,
and one it cannot deliver (the server is down) is dropped with a log line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger
from prefect.runtime import flow_run as current_run

from bioxen_flows.errors import InputError
from bioxen_flows.orchestration.run_context import FLOW_RUN_LABEL, is_run_id
from bioxen_flows.resources.manager import add_alert_listener, alerts_for
from bioxen_flows.settings import get_settings
from bioxen_flows.state import AuditEntry, add_audit_listener

if TYPE_CHECKING:
    import pandas as pd

    from bioxen_flows.orchestration.batching import VMSpec

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = {
    "create": "bioxen.vm.created",
    "start": "bioxen.vm.started",
    "pause": "bioxen.vm.paused",
    "resume": "bioxen.vm.resumed",
    "stop": "bioxen.vm.stopped",
    "destroy": "bioxen.vm.destroyed",
    "gc": "bioxen.vm.reaped",
}
ALERT_EVENTS = {
    "low_atp": "bioxen.vm.alert.low-atp",
    "ribosomes_near_cap": "bioxen.vm.alert.ribosomes-near-cap",
}
BURDEN_EVENT = "bioxen.run.burden-exceeded"


HEALTH_TIMEOUT_S = 2.0
_reachable: dict[str, bool] = {}  # API URL -> answered /health (checked once per process)


def api_configured() -> bool:
    """Whether a Prefect API is configured (PREFECT_API_URL, from the environment or the
    active profile) and answered its health check: without one, events would have nowhere
    to go, and Prefect's events worker would spend seconds retrying when the process exits.
    Checked once per process and URL."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return False
    if url not in _reachable:
        _reachable[url] = _answers(url)
        if not _reachable[url]:
            log.warning("Prefect API %s does not answer: no BioXen events are sent", url)
    return _reachable[url]


def _answers(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S).is_success
    except httpx.HTTPError:
        return False


def enable() -> None:
    """Turn the store's audit entries and the resource monitor's alerts into events from
    now on (idempotent)."""
    add_audit_listener(on_audit)
    add_alert_listener(on_monitor_alert)


def on_audit(entry: AuditEntry) -> None:
    """Audit listener: a committed lifecycle change as its `bioxen.vm.*` event."""
    name = LIFECYCLE_EVENTS.get(entry.action)
    if name is None or entry.outcome != "ok":
        return
    payload = {k: v for k, v in entry.detail.items() if k in ("reason", "forced", "allocations")}
    emit(name, vm_resource(entry.vm_id, entry.vm), related_to(entry.vm), payload)


def vm_resource(vm_id: str, vm: dict[str, Any] | None) -> dict[str, str]:
    """The event resource of a VM: `bioxen.vm.<id>` with its organism, infrastructure and
    owner as labels (filterable in the event feed and in automation triggers)."""
    resource = {"prefect.resource.id": f"bioxen.vm.{vm_id}", "prefect.resource.name": vm_id}
    if vm:
        resource.update({"bioxen.organism": str(vm.get("biological_type") or ""),
                         "bioxen.infrastructure": str(vm.get("vm_type") or ""),
                         "bioxen.owner": str(vm.get("owner") or "")})
    return resource


def related_to(vm: dict[str, Any] | None) -> list[dict[str, str]]:
    """The flow run whose VM it is (its `flow_run_id` label), as a related resource: so an
    event sent by the CLI's gc still names the run, and automations can count per run."""
    run_id = ((vm or {}).get("labels") or {}).get(FLOW_RUN_LABEL)
    if not is_run_id(str(run_id)):
        return []
    return [{"prefect.resource.id": f"prefect.flow-run.{run_id}",
             "prefect.resource.role": "flow-run"}]


def emit_vm_alerts(vm_id: str, vm: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
    """The alerts a VM raised (`alerts_for`) as `bioxen.vm.alert.*` events; `vm` says what
    it is (biological_type, vm_type, owner, labels: as the store's audit entries do)."""
    for alert in alerts:
        emit(ALERT_EVENTS[alert["kind"]], vm_resource(vm_id, vm), related_to(vm),
             {"value": alert["value"], "threshold": alert["threshold"],
              "message": alert["message"]})


def on_monitor_alert(vm: Any, alert: dict[str, Any]) -> None:
    """Alert listener of `BioResourceManager` monitoring (and the CLI's `monitor`)."""
    emit_vm_alerts(vm.vm_id, record_labels(vm.record), [alert])


def record_labels(record: Any) -> dict[str, Any]:
    """What an event says about a VM, from its store record."""
    return {"biological_type": record.biological_type, "vm_type": record.vm_type,
            "owner": record.owner, "labels": (record.config or {}).get("labels") or {}}


def spec_labels(spec: VMSpec, run_id: str) -> dict[str, Any]:
    """What an event says about a VM of a flow, from its spec."""
    return {"biological_type": spec.organism, "vm_type": spec.vm_type,
            "owner": get_settings().owner, "labels": {FLOW_RUN_LABEL: run_id}}


def emit_burden_exceeded(
    run_id: str, run_name: str, organism: str, package: str, burden_percent: float,
    threshold: float,
) -> None:
    """`bioxen.run.burden-exceeded`: a comparison's package costs its host organism more
    than `threshold` % of its growth. The resource is the comparison (`bioxen.run.<id>`)."""
    resource = {"prefect.resource.id": f"bioxen.run.{run_id}",
                "prefect.resource.name": run_name, "bioxen.organism": organism,
                "bioxen.package": package}
    emit(BURDEN_EVENT, resource, related_to({"labels": {FLOW_RUN_LABEL: run_id}}),
         {"organism": organism, "package": package, "burden_percent": burden_percent,
          "threshold": threshold})


def alert_thresholds(
    low_atp: float | None, ribosomes: float | None, burden: float | None
) -> dict[str, float]:
    """A run's alert thresholds: its parameters, else the settings (BIOXEN_ALERT_*); a
    parameter outside 0-100 % is refused before any VM is made."""
    settings = get_settings()
    thresholds = {
        "low_atp": settings.alert_low_atp_percent if low_atp is None else low_atp,
        "ribosomes": settings.alert_ribosomes_percent if ribosomes is None else ribosomes,
        "burden": settings.alert_burden_percent if burden is None else burden,
    }
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value <= 100:
            raise InputError(f"alert threshold {name} must be a percentage from 0 to 100, "
                             f"got {value!r}")
    return thresholds


def alert_on(metrics: dict[str, dict[str, Any]], specs: dict[str, VMSpec],
             owner: str, thresholds: dict[str, float]) -> None:
    """The alerts each VM's final metrics raise, logged and emitted as Prefect events."""
    for vm_id, vm_metrics in metrics.items():
        spec = specs[vm_id]
        cap = (spec.config.get("resources") or {}).get("ribosomes")
        total = vm_metrics.get("ribosomes_total")
        sample = {"atp_percent": vm_metrics.get("atp_percent"),
                  "ribosome_allocation_used_percent":
                      100.0 * total / cap if cap and total is not None else None}
        alerts = alerts_for(sample, thresholds["low_atp"], thresholds["ribosomes"])
        for alert in alerts:
            get_run_logger().warning("VM %s: %s", vm_id, alert["message"])
        emit_vm_alerts(vm_id, spec_labels(spec, owner), alerts)


def burden_alerts(summary: pd.DataFrame, package: str | None, owner: str,
                  threshold: float) -> None:
    """`bioxen.run.burden-exceeded` for each organism whose package burden passes
    `threshold` %."""
    if not package or "burden_percent" not in summary:
        return
    for row in summary[summary["burden_percent"] > threshold].itertuples():
        get_run_logger().warning("%s: %s costs %.1f %% of growth > %g %%", row.organism,
                                 package, row.burden_percent, threshold)
        emit_burden_exceeded(owner, current_run.get_name() or "compare-organisms",
                             row.organism, package, float(row.burden_percent), threshold)


def emit(name: str, resource: dict[str, str], related: list[dict[str, str]],
         payload: dict[str, Any]) -> None:
    """Send one event if a Prefect API is configured; never raises."""
    try:
        if not api_configured():
            return
        from prefect.events import emit_event

        emit_event(name, resource=resource, related=related, payload=payload)
    except Exception:  # noqa: BLE001 (an event never fails the operation it reports)
        log.debug("could not emit %s", name, exc_info=True)
