"""The `basic` infrastructure's host: the cell runs in this process on the embedded hypervisor.

The cell is built lazily, from the record's snapshot, only when a call needs the model;
state-only calls (status, start, stop, destroy) never compile one. The hypervisor keeps it
warm while the record's version is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bioxen_flows.engine import FULL_ATP_PERCENT, UNCAPPED_RIBOSOMES, snapshot_under_caps
from bioxen_flows.engine.hypervisor import Hypervisor, get_hypervisor
from bioxen_flows.state import StateStore
from bioxen_flows.vm.host import CurrentRecord

if TYPE_CHECKING:  # the engine (numpy, libroadrunner) is imported only to build a cell
    from bioxen_flows.engine.cell import Cell

BALANCE_MIN = 2e4  # simulated minutes that bring a capped cell to balanced growth


class LocalHost:
    """A bio-VM's cell on this process's hypervisor (a `CellHost`)."""

    def __init__(
        self, current: CurrentRecord, store: StateStore, hypervisor: Hypervisor | None = None
    ) -> None:
        self.current = current
        self.store_url = store.url
        self.hypervisor = hypervisor or get_hypervisor()

    @contextmanager
    def _cell(self) -> Iterator[Cell]:
        """The cell at this record's version, locked for the caller."""
        with self.hypervisor.use(self.cache_key, self.current().version, self._build) as cell:
            yield cell

    @property
    def cache_key(self) -> str:
        """This VM's incarnation: the same id created again is another VM."""
        record = self.current()
        return cell_key(self.store_url, record.vm_id, record.created_at)

    def _build(self) -> Cell:
        """The cell as the record says: from its snapshot, or new (balanced growth), with
        the recorded caps. Loading never re-checks or changes allocations."""
        from bioxen_flows.engine.cell import Cell

        record = self.current()
        if record.snapshot:
            cell = Cell.from_snapshot(record.snapshot)
        else:
            simulation = record.config.get("simulation") or {}
            cell = Cell(
                record.biological_type,
                stochastic=bool(simulation.get("stochastic", False)),
                seed=simulation.get("seed"),
                stochastic_engine=simulation.get("stochastic_engine", "compiled"),
                division=simulation.get("division"),
            )
            if simulation.get("nutrient") is not None:
                cell.set_nutrient(float(simulation["nutrient"]))
        _set_caps(cell, record.allocations)
        return cell

    @property
    def cell(self) -> Cell:
        """The live cell (for inspection; use the VM's methods to change it)."""
        with self._cell() as cell:
            return cell

    def create_cell(self) -> None:
        """Nothing to do now: the first call that needs the cell builds it from the record."""

    def run_program(self, code: str) -> dict[str, Any]:
        from bioxen_flows.engine.programs import run_program

        with self._cell() as cell:
            return run_program(cell, code)

    def install(self, name_or_path: str, copies: int | None) -> dict[str, Any]:
        with self._cell() as cell:
            package = cell.install(name_or_path, copies=copies)
        return {
            "package": package.name,
            "genes": [g.gene_id for g in package.genes],
            "operons": list(package.operons),
            "copies": package.copies,
        }

    def metrics(self) -> dict[str, Any]:
        with self._cell() as cell:
            return cell.metrics()

    def apply_caps(self, allocations: dict[str, Any]) -> None:
        if not self._warm():
            return  # the record holds the caps; the next build applies them
        with self._cell() as cell:
            _set_caps(cell, allocations)

    def snapshot_under_caps(self, allocations: dict[str, Any]) -> dict[str, Any] | None:
        """Caps on a cell that is not warm here (every CLI call) are written without
        building it: the stored state is unchanged but for the caps."""
        snapshot = self.current().snapshot
        if self._warm() or not snapshot or not isinstance(snapshot.get("metrics"), dict):
            return None
        return snapshot_under_caps(snapshot,
                                   allocations.get("atp_percent", FULL_ATP_PERCENT),
                                   allocations.get("ribosomes", UNCAPPED_RIBOSOMES))

    def _warm(self) -> bool:
        return self.hypervisor.holds(self.cache_key, self.current().version)

    def live_status(self) -> dict[str, Any]:
        """The record says it all: its snapshot is the cell's state."""
        return {}

    def snapshot(self) -> dict[str, Any]:
        with self._cell() as cell:
            return cell.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self._cell() as cell:
            cell.restore(snapshot)

    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        """Balanced growth (1/min) of a copy of this cell under each (atp %, ribosomes) cap."""
        from bioxen_flows.engine.cell import Cell

        snap = self.snapshot()
        probe = Cell.from_snapshot({**snap, "stochastic": False})
        start = probe.snapshot()
        growth = []
        for atp_percent, ribosomes in caps:
            probe.restore(start)
            probe.set_caps(atp_percent=atp_percent, ribosomes=ribosomes)
            probe.grow(BALANCE_MIN, points=2)
            growth.append(probe.metrics()["growth_rate_per_min"])
        return growth

    def explore_designs(
        self, designs: Sequence[tuple[str | None, int, float]], minutes: float
    ) -> Iterator[dict[str, Any]]:
        """The final metrics of a copy of this cell with each (package, copies, strength)
        installed (package None: as it is) and grown `minutes`, one at a time; the VM is
        untouched. Each design starts from the cell as it is now; designs of one package
        share its loaded model (copies and strength are parameters), so only the first
        design of a package loads one: a design costs its simulation, not a compile."""
        from bioxen_flows.engine.cell import Cell

        copy = Cell.from_snapshot(self.snapshot())
        starts = {None: copy.snapshot()}
        for package, copies, strength in designs:
            if package not in starts:
                copy.restore(starts[None])
                copy.install(package)
                starts[package] = copy.snapshot()
            copy.restore(starts[package])
            if package is not None:
                installed = copy.packages[-1].name
                copy.tune_package(installed, copies=copies, strength=strength)
            copy.grow(minutes)
            yield copy.metrics()

    def release(self) -> None:
        self.hypervisor.remove_cell(self.cache_key)

    def committed(self, old_version: int) -> None:
        self.hypervisor.retag(self.cache_key, old_version, self.current().version)

    def discard(self) -> None:
        self.hypervisor.remove_cell(self.cache_key)


def cell_key(store_url: str, vm_id: str, created_at: float) -> str:
    return f"{store_url}|{vm_id}|{created_at!r}"


def forget_cell(store_url: str, vm_id: str, created_at: float) -> None:
    """Drop a VM's warm cell from this process's hypervisor, if it holds one."""
    get_hypervisor().remove_cell(cell_key(store_url, vm_id, created_at))


def _set_caps(cell: Cell, allocations: dict[str, Any]) -> None:
    cell.set_caps(
        atp_percent=allocations.get("atp_percent", FULL_ATP_PERCENT),
        ribosomes=allocations.get("ribosomes", UNCAPPED_RIBOSOMES),
    )
