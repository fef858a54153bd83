"""The embedded BioXen hypervisor: owns the cells of one process and their shared budget.

An allocation is a cap that changes a cell's dynamics (see Cell.set_caps); the
hypervisor's job is the accounting: the sum of allocations never exceeds the host
budget, also when many threads allocate at once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from bioxen_flows.engine import FULL_ATP_PERCENT, UNCAPPED_RIBOSOMES
from bioxen_flows.engine.cell import Cell
from bioxen_flows.errors import BudgetError, InputError

DEFAULT_RIBOSOME_BUDGET = 100_000  # ribosomes the host can hand out (~30 E. coli cells' worth)
DEFAULT_ATP_BUDGET_PERCENT = 1_000.0  # energy share: ten cells at 100 % of their maximum


@dataclass(frozen=True)
class Allocation:
    """A VM's caps: energy supply (% of its organism's maximum) and most ribosomes."""

    atp_percent: float | None = None
    ribosomes: int | None = None


class Hypervisor:
    """Cells by VM id, plus the allocation ledger guarded by one lock."""

    def __init__(
        self,
        ribosome_budget: int = DEFAULT_RIBOSOME_BUDGET,
        atp_budget_percent: float = DEFAULT_ATP_BUDGET_PERCENT,
    ) -> None:
        if ribosome_budget < 1 or atp_budget_percent <= 0:
            raise InputError("host budgets must be positive")
        self.ribosome_budget = int(ribosome_budget)
        self.atp_budget_percent = float(atp_budget_percent)
        self.lock = threading.RLock()  # held by callers that change several caps at once
        self._cells: dict[str, Cell] = {}
        self._allocations: dict[str, Allocation] = {}

    # ---- cells ----------------------------------------------------------------------
    def create_cell(
        self, vm_id: str, biological_type: str, *, stochastic: bool = False, seed: int | None = None
    ) -> Cell:
        cell = Cell(biological_type, stochastic=stochastic, seed=seed)
        return self.adopt_cell(vm_id, cell)

    def adopt_cell(self, vm_id: str, cell: Cell) -> Cell:
        """Register a cell built elsewhere (e.g. restored from a snapshot)."""
        with self.lock:
            if vm_id in self._cells:
                raise InputError(f"a cell for VM {vm_id!r} already exists on this hypervisor")
            self._cells[vm_id] = cell
            self._allocations[vm_id] = Allocation()
        return cell

    def cell(self, vm_id: str) -> Cell:
        try:
            return self._cells[vm_id]
        except KeyError:
            raise InputError(f"no cell for VM {vm_id!r} on this hypervisor") from None

    def remove_cell(self, vm_id: str) -> None:
        """Drop a cell and free its allocation; removing twice is harmless."""
        with self.lock:
            self._cells.pop(vm_id, None)
            self._allocations.pop(vm_id, None)

    @property
    def vm_ids(self) -> list[str]:
        return list(self._cells)

    # ---- allocations ----------------------------------------------------------------
    def allocate_atp(self, vm_id: str, percent: float) -> Allocation:
        """Cap a VM's energy supply at `percent` (0 < p <= 100) of its organism's maximum."""
        if not _is_number(percent) or not 0 < percent <= 100:
            raise InputError(f"ATP allocation must be a percentage in (0, 100], got {percent!r}")
        with self.lock:
            current = self._allocation(vm_id)
            used = sum(a.atp_percent or 0.0 for k, a in self._allocations.items() if k != vm_id)
            if used + percent > self.atp_budget_percent + 1e-9:
                raise BudgetError(
                    f"ATP allocation of {percent} % exceeds the host budget: "
                    f"{self.atp_budget_percent - used:g} % available"
                )
            self._cells[vm_id].set_caps(atp_percent=float(percent))
            new = Allocation(float(percent), current.ribosomes)
            self._allocations[vm_id] = new
            return new

    def allocate_ribosomes(self, vm_id: str, count: int) -> Allocation:
        """Cap the ribosomes (free + translating) a VM's cell may hold."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"ribosome allocation must be a positive integer, got {count!r}")
        with self.lock:
            current = self._allocation(vm_id)
            used = sum(a.ribosomes or 0 for k, a in self._allocations.items() if k != vm_id)
            if used + count > self.ribosome_budget:
                raise BudgetError(
                    f"ribosome allocation of {count} exceeds the host budget: "
                    f"{self.ribosome_budget - used} available"
                )
            self._cells[vm_id].set_caps(ribosomes=count)
            new = Allocation(current.atp_percent, count)
            self._allocations[vm_id] = new
            return new

    def release(self, vm_id: str) -> None:
        """Lift a VM's caps and return its share to the budget."""
        with self.lock:
            self._allocation(vm_id)
            self._cells[vm_id].set_caps(atp_percent=FULL_ATP_PERCENT, ribosomes=UNCAPPED_RIBOSOMES)
            self._allocations[vm_id] = Allocation()

    def allocation(self, vm_id: str) -> Allocation:
        with self.lock:
            return self._allocation(vm_id)

    def _allocation(self, vm_id: str) -> Allocation:
        if vm_id not in self._allocations:
            raise InputError(f"no cell for VM {vm_id!r} on this hypervisor")
        return self._allocations[vm_id]

    def usage(self) -> dict[str, float]:
        """Budget in use and still available (ribosomes; ATP in % of one cell's maximum)."""
        with self.lock:
            ribosomes = sum(a.ribosomes or 0 for a in self._allocations.values())
            atp = sum(a.atp_percent or 0.0 for a in self._allocations.values())
        return {
            "ribosomes_allocated": ribosomes,
            "ribosomes_available": self.ribosome_budget - ribosomes,
            "atp_percent_allocated": atp,
            "atp_percent_available": self.atp_budget_percent - atp,
        }


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_default: Hypervisor | None = None
_default_lock = threading.Lock()


def get_hypervisor() -> Hypervisor:
    """The process-wide hypervisor that all basic VMs of this process share."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Hypervisor()
        return _default
