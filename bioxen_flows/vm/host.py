"""What a bio-VM needs from the place its cell lives: the `CellHost` protocol.

`BiologicalVM` owns the lifecycle, the record and the organism's calls; a host owns the
cell. There is one host per infrastructure (`vm.infrastructures`): the embedded
hypervisor in this process (`vm.local.LocalHost`) or a guest in an XCP-ng VM driven over
SSH (`vm.guest.GuestHost`). A host reads the VM's record through a callable, so it
always sees the version the VM holds now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from bioxen_flows.state import StateStore, VMRecord

CurrentRecord = Callable[[], VMRecord]


class CellHost(Protocol):
    """The cell of one bio-VM, wherever it runs."""

    def create_cell(self) -> None:
        """Make the cell of a VM being created (with its recorded caps)."""

    def run_program(self, code: str) -> dict[str, Any]: ...

    def install(self, name_or_path: str, copies: int | None) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...

    def apply_caps(self, allocations: dict[str, Any]) -> None:
        """Make the cell's caps equal ``allocations`` (absent keys: uncapped)."""

    def snapshot_under_caps(self, allocations: dict[str, Any]) -> dict[str, Any] | None:
        """The record's snapshot with new caps, made without the cell (None: ask the cell)."""

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, snapshot: dict[str, Any]) -> None: ...

    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        """Balanced growth (1/min) the cell would reach under each (atp %, ribosomes) cap;
        the cell itself is untouched."""

    def explore_designs(
        self, designs: Sequence[tuple[str | None, int, float]], minutes: float
    ) -> Iterator[dict[str, Any]]: ...

    def live_status(self) -> dict[str, Any]:
        """Status fields the host knows better than the record (the guest's clock)."""

    def release(self) -> None:
        """Free the cell (and whatever holds it) for good: the VM is being destroyed."""

    def committed(self, old_version: int) -> None:
        """The record moved from ``old_version`` to its current version by this caller."""

    def discard(self) -> None:
        """An operation failed after it may have changed the cell: forget those changes."""


HostFactory = Callable[[CurrentRecord, StateStore], CellHost]
