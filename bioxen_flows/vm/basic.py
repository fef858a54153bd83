"""`basic` bio-VMs: the cell runs in this process on the embedded hypervisor."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from bioxen_flows.engine.cell import Cell
from bioxen_flows.engine.hypervisor import Hypervisor, get_hypervisor
from bioxen_flows.engine.programs import run_program
from bioxen_flows.state import StateStore, VMRecord
from bioxen_flows.vm.base import BiologicalVM

BALANCE_MIN = 2e4  # simulated minutes that bring a capped cell to balanced growth


class BasicBiologicalVM(BiologicalVM):
    """A bio-VM whose cell lives on this process's hypervisor."""

    vm_type = "basic"

    def __init__(
        self, record: VMRecord, store: StateStore, hypervisor: Hypervisor | None = None
    ) -> None:
        super().__init__(record, store)
        self.hypervisor = hypervisor or get_hypervisor()
        # roadrunner instances are not thread-safe: one caller at a time per cell
        self._lock = threading.RLock()
        if record.snapshot:
            cell = Cell.from_snapshot(record.snapshot)
        else:
            simulation = record.config.get("simulation") or {}
            cell = Cell(
                record.biological_type,
                stochastic=bool(simulation.get("stochastic", False)),
                seed=simulation.get("seed"),
            )
            if simulation.get("nutrient") is not None:
                cell.set_nutrient(float(simulation["nutrient"]))
        self.hypervisor.adopt_cell(record.vm_id, cell)
        self._allocate(
            record.allocations.get("atp_percent"), record.allocations.get("ribosomes"), reset=True
        )

    @property
    def cell(self) -> Cell:
        return self.hypervisor.cell(self.vm_id)

    def _run_program(self, code: str) -> dict[str, Any]:
        with self._lock:
            return run_program(self.cell, code)

    def _install(self, name_or_path: str, copies: int | None) -> dict[str, Any]:
        with self._lock:
            package = self.cell.install(name_or_path, copies=copies)
        return {
            "package": package.name,
            "genes": [g.gene_id for g in package.genes],
            "operons": list(package.operons),
            "copies": package.copies,
        }

    def _metrics(self) -> dict[str, Any]:
        with self._lock:
            return self.cell.metrics()

    def _allocate(
        self, atp_percent: float | None, ribosomes: int | None, reset: bool = False
    ) -> dict[str, Any]:
        hv = self.hypervisor
        with self._lock, hv.lock:  # both caps or neither
            previous = hv.allocation(self.vm_id)
            try:
                if reset:
                    hv.release(self.vm_id)
                if ribosomes is not None:
                    hv.allocate_ribosomes(self.vm_id, ribosomes)
                if atp_percent is not None:
                    hv.allocate_atp(self.vm_id, atp_percent)
            except ValueError:
                hv.release(self.vm_id)
                if previous.ribosomes is not None:
                    hv.allocate_ribosomes(self.vm_id, previous.ribosomes)
                if previous.atp_percent is not None:
                    hv.allocate_atp(self.vm_id, previous.atp_percent)
                raise
            allocation = hv.allocation(self.vm_id)
        return {
            key: value
            for key, value in (("atp_percent", allocation.atp_percent),
                               ("ribosomes", allocation.ribosomes))
            if value is not None
        }

    def _cell_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.cell.snapshot()

    def _restore_cell(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self.cell.restore(snapshot)

    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        """Balanced growth (1/min) of a copy of this cell under each (atp %, ribosomes) cap."""
        with self._lock:
            snap = self.cell.snapshot()
        probe = Cell.from_snapshot({**snap, "stochastic": False})
        start = probe.snapshot()
        growth = []
        for atp_percent, ribosomes in caps:
            probe.restore(start)
            probe.set_caps(atp_percent=atp_percent, ribosomes=ribosomes)
            probe.grow(BALANCE_MIN, points=2)
            growth.append(probe.metrics()["growth_rate_per_min"])
        return growth

    def _release_cell(self) -> None:
        self.hypervisor.remove_cell(self.vm_id)
