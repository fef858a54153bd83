"""BioResourceManager: allocations, monitoring, model-driven optimisation and snapshots.

Every figure comes from the VM's cell. Optimisation asks the model "what if" through
`BiologicalVM.probe_growth`, so it works the same for any infrastructure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bioxen_flows.engine import FULL_ATP_PERCENT, UNCAPPED_RIBOSOMES
from bioxen_flows.errors import InputError, NotFoundError
from bioxen_flows.settings import get_settings
from bioxen_flows.vm.base import BiologicalVM

log = logging.getLogger(__name__)

HISTORY_LIMIT = 100
KEEP_GROWTH = 0.95  # auto-optimisation keeps at least this fraction of uncapped growth

Alert = dict[str, Any]
AlertListener = Callable[[BiologicalVM, Alert], None]
_alert_listeners: list[AlertListener] = []


def add_alert_listener(listener: AlertListener) -> None:
    """Call ``listener(vm, alert)`` when a monitored VM raises an alert it had not raised at
    the previous sample (the orchestration layer sends it as a Prefect event). Added once."""
    if listener not in _alert_listeners:
        _alert_listeners.append(listener)


class BioResourceManager:
    """Resource control for one bio-VM."""

    def __init__(
        self,
        vm: BiologicalVM,
        enable_monitoring: bool = False,
        interval_seconds: float = 5.0,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.vm = vm
        self.on_alert = on_alert
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_LIMIT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if enable_monitoring:
            self.start_monitoring(interval_seconds)

    # ---- allocation -----------------------------------------------------------------
    def allocate_atp(self, percent: float) -> dict[str, Any]:
        """Cap the VM's energy supply at `percent` of its organism's maximum."""
        return self.vm.allocate(atp_percent=percent)

    def allocate_ribosomes(self, count: int) -> dict[str, Any]:
        """Cap the ribosomes (free + translating) the VM's cell may hold."""
        return self.vm.allocate(ribosomes=count)

    def get_resource_usage(self) -> dict[str, Any]:
        """What the cell uses now, in the model's units."""
        m = self.vm.get_biological_metrics()
        cap = self.vm.record.allocations.get("ribosomes")
        return {
            "timestamp": time.time(),
            "simulated_time_min": m["simulated_time_min"],
            "atp_percent": m["atp_percent"],
            "atp_cap_percent": m["atp_cap_percent"],
            "ribosomes_total": m["ribosomes_total"],
            "ribosomes_free": m["ribosomes_free"],
            "ribosomes_translating": m["ribosomes_translating"],
            "ribosome_utilization_percent": m["ribosome_utilization_percent"],
            "ribosome_allocation_used_percent": (
                100.0 * m["ribosomes_total"] / cap if cap else None
            ),
            "growth_rate_per_min": m["growth_rate_per_min"],
        }

    def get_available_resources(self) -> dict[str, Any]:
        """The VM's caps and what the host budget (the store's ledger) still has to give."""
        self.vm.refresh()
        return {**self.vm.store.budget(), "allocations": dict(self.vm.record.allocations)}

    # ---- monitoring -------------------------------------------------------------------
    def start_monitoring(self, interval_seconds: float = 5.0) -> None:
        """Sample usage every `interval_seconds` in a background thread (history of 100)."""
        if interval_seconds <= 0:
            raise InputError(f"interval_seconds must be > 0, got {interval_seconds}")
        if self._thread and self._thread.is_alive():
            raise InputError("monitoring is already running; stop_monitoring() first")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._monitor, args=(interval_seconds,), daemon=True,
            name=f"bioxen-monitor-{self.vm.vm_id}",
        )
        self._thread.start()

    def stop_monitoring(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None

    def get_resource_history(self) -> list[dict[str, Any]]:
        return list(self._history)

    def _monitor(self, interval: float) -> None:
        raised: set[str] = set()  # the kinds of the previous sample's alerts
        while not self._stop.is_set():
            try:
                sample = self.get_resource_usage()
            except NotFoundError as exc:  # the VM was destroyed under us (and nothing else:
                # a pool or SSH failure is no reason to stop quietly)
                log.warning("monitoring of VM %s stopped: %s", self.vm.vm_id, exc)
                return
            self._history.append(sample)
            alerts = alerts_for(sample)
            for alert in alerts:
                log.warning("VM %s: %s", self.vm.vm_id, alert["message"])
                if self.on_alert:
                    self.on_alert(alert)
                if alert["kind"] not in raised:
                    self._tell_listeners(alert)
            raised = {alert["kind"] for alert in alerts}
            self._stop.wait(interval)

    def _tell_listeners(self, alert: Alert) -> None:
        for listener in list(_alert_listeners):
            try:
                listener(self.vm, alert)
            except Exception:  # noqa: BLE001 (a listener never stops the monitor)
                log.warning("alert listener %r failed", listener, exc_info=True)

    # ---- optimisation -------------------------------------------------------------------
    def auto_optimize_resources(self, keep_growth: float = KEEP_GROWTH) -> dict[str, Any]:
        """Smallest caps that keep `keep_growth` of uncapped growth, found with the model.

        A grid then a refinement per resource. Energy first, with ribosomes uncapped, may
        spend half the allowed loss (keeps sqrt(keep_growth)); ribosomes are then capped as
        far as the combined growth still meets keep_growth. The result is applied.
        """
        if isinstance(keep_growth, bool) or not isinstance(keep_growth, (int, float)) or not (
            0 < keep_growth <= 1
        ):
            raise InputError(f"keep_growth must be in (0, 1], got {keep_growth}")
        (uncapped,) = self.vm.probe_growth([(FULL_ATP_PERCENT, UNCAPPED_RIBOSOMES)])
        target = keep_growth * uncapped
        atp = _smallest_meeting(
            lambda xs: self.vm.probe_growth([(x, UNCAPPED_RIBOSOMES) for x in xs]),
            low=1.0, high=100.0, target=keep_growth**0.5 * uncapped,
        )
        ribosomes_now = self.vm.get_biological_metrics()["ribosomes_total"]
        ribosomes = _smallest_meeting(
            lambda xs: self.vm.probe_growth([(atp, x) for x in xs]),
            low=1.0, high=max(2.0, 2.0 * ribosomes_now), target=target,
        )
        atp_alloc, ribosome_alloc = round(atp, 1), int(ribosomes) + 1
        achieved, atp_alone, ribosomes_alone = self.vm.probe_growth(
            [(atp_alloc, ribosome_alloc), (atp_alloc, UNCAPPED_RIBOSOMES),
             (FULL_ATP_PERCENT, ribosome_alloc)])
        self.vm.allocate(atp_percent=atp_alloc, ribosomes=ribosome_alloc)

        def kept(growth: float) -> float:
            return growth / uncapped if uncapped else 0.0

        return {
            "atp_percent": atp_alloc,
            "ribosomes": ribosome_alloc,
            # balanced growth (a copy grown to steady state): the figures the caps are for
            "uncapped_growth_rate_per_min": uncapped,
            "growth_rate_per_min": achieved,
            "growth_kept_fraction": kept(achieved),
            "atp_cap_alone_kept_fraction": kept(atp_alone),
            "ribosome_cap_alone_kept_fraction": kept(ribosomes_alone),
            # the cell as it is now, as `status` reports it (the caps act as it grows)
            "current_growth_rate_per_min": self.vm.get_biological_metrics()[
                "growth_rate_per_min"],
        }

    def get_optimization_recommendations(self) -> list[dict[str, Any]]:
        """Advice derived from the cell's state; each item carries the number behind it."""
        m = self.vm.get_biological_metrics()
        settings = get_settings()
        recs = []
        if m["atp_percent"] < settings.alert_low_atp_percent:
            recs.append(_rec("energy", "atp_percent", m["atp_percent"],
                             "elongation is energy-starved: raise the ATP allocation or nutrient"))
        cap = self.vm.record.allocations.get("ribosomes")
        if cap and m["ribosomes_total"] > settings.alert_ribosomes_percent / 100 * cap:
            recs.append(_rec("ribosomes", "ribosome_allocation_used_percent",
                             100 * m["ribosomes_total"] / cap,
                             "the ribosome cap binds growth: raise the ribosome allocation"))
        if cap and m["ribosomes_total"] < 0.5 * cap:
            recs.append(_rec("ribosomes", "ribosome_allocation_used_percent",
                             100 * m["ribosomes_total"] / cap,
                             "less than half the ribosome allocation is used: lower it and "
                             "return the rest to the host budget"))
        translating = m["ribosomes_translating"] or 1.0
        for gene, ribosomes in m["translating_ribosomes_per_gene"].items():
            share = 100 * ribosomes / translating
            if share > 10:
                recs.append(_rec("burden", f"translating_ribosomes_on_{gene}_percent", share,
                                 f"guest gene {gene} holds a large share of ribosomes: "
                                 "fewer copies or a weaker promoter would speed growth"))
        if m["nutrient_molecules"] < 1e3:
            recs.append(_rec("nutrient", "nutrient_molecules", m["nutrient_molecules"],
                             "external nutrient is low: growth is nutrient-limited"))
        return recs

    # ---- snapshots ----------------------------------------------------------------------
    def create_resource_snapshot(self) -> dict[str, Any]:
        """Full simulation state and allocations, JSON-ready."""
        return {"vm_id": self.vm.vm_id, "taken_at": time.time(), **self.vm.snapshot_state()}

    def restore_from_snapshot(self, snapshot: dict[str, Any]) -> None:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("cell"), dict):
            raise InputError("not a resource snapshot: expected {vm_id, cell, allocations}")
        allocations = snapshot.get("allocations")
        if allocations is not None and (
            not isinstance(allocations, dict) or set(allocations) - {"atp_percent", "ribosomes"}
        ):
            raise InputError("snapshot allocations may hold only atp_percent and ribosomes")
        if snapshot.get("vm_id") != self.vm.vm_id:
            raise InputError(
                f"snapshot belongs to VM {snapshot.get('vm_id')!r}, not {self.vm.vm_id!r}"
            )
        self.vm.restore_state(snapshot)


def alerts_for(
    sample: dict[str, Any],
    low_atp_percent: float | None = None,
    ribosomes_percent: float | None = None,
) -> list[Alert]:
    """The alerts one usage sample raises: `low_atp` when atp_percent is below
    `low_atp_percent`, `ribosomes_near_cap` when the cell holds more than `ribosomes_percent`
    of its ribosome allocation. Thresholds default to the settings (alert_low_atp_percent,
    alert_ribosomes_percent), so the monitor, the CLI and the flows agree."""
    settings = get_settings()
    low_atp = settings.alert_low_atp_percent if low_atp_percent is None else low_atp_percent
    near_cap = (settings.alert_ribosomes_percent if ribosomes_percent is None
                else ribosomes_percent)
    alerts = []
    atp = sample.get("atp_percent")
    if atp is not None and atp < low_atp:
        alerts.append({
            "kind": "low_atp", "value": atp, "threshold": low_atp,
            "message": f"atp_percent {atp:.1f} < {low_atp:g}",
        })
    used = sample.get("ribosome_allocation_used_percent")
    if used is not None and used > near_cap:
        alerts.append({
            "kind": "ribosomes_near_cap", "value": used, "threshold": near_cap,
            "message": f"ribosomes at {used:.1f} % of allocation > {near_cap:g}",
        })
    return alerts


def _smallest_meeting(
    growth_of: Callable[[list[float]], list[float]], low: float, high: float, target: float
) -> float:
    """Smallest x in [low, high] whose growth meets target (growth rises with x)."""
    for _ in range(2):
        grid = [low + (high - low) * i / 10 for i in range(11)]
        growth = growth_of(grid)
        meeting = [x for x, g in zip(grid, growth, strict=True) if g >= target]
        if not meeting:
            return high
        best = meeting[0]
        if best == grid[0]:
            return best
        low, high = grid[grid.index(best) - 1], best
    return high


def _rec(kind: str, metric: str, value: float, message: str) -> dict[str, Any]:
    return {"kind": kind, "metric": metric, "value": value, "message": message}
