"""The embedded BioXen hypervisor: the live cells of one process, kept warm between calls.

Cells are expensive (a model compile), records are cheap. The state store is the truth;
the hypervisor holds each VM's cell tagged with the record version it matches and hands
it out again while the version is unchanged, so a flow's tasks reuse one cell instead of
rebuilding it from the snapshot. A changed version (another process wrote the VM)
rebuilds it. Cells are keyed by the VM's incarnation (store, id and creation time), so a
VM destroyed and created again under the same id never meets its predecessor's cell. The
host budget is not kept here: it lives in the store, where every process
and machine sees the same ledger.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and libroadrunner load only when a cell is built
    from bioxen_flows.engine.cell import Cell

MAX_LIVE_CELLS = 1_024  # least recently used cells beyond this are dropped (rebuilt on demand)


@dataclass
class _Entry:
    version: int
    cell: Cell
    lock: threading.RLock = field(default_factory=threading.RLock)


class Hypervisor:
    """Live cells by VM id, each with the version it reflects and a lock (roadrunner
    instances are not thread-safe: one caller at a time per cell)."""

    def __init__(self, max_cells: int = MAX_LIVE_CELLS) -> None:
        self.max_cells = max_cells
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.builds = 0  # cells built from a record (the warm cache's misses)

    @contextmanager
    def use(self, key: str, version: int, build: Callable[[], Cell]) -> Iterator[Cell]:
        """The cell of VM incarnation ``key`` at ``version``, locked for the caller; built
        only on a miss."""
        entry = self._entry(key, version, build)
        with entry.lock:
            yield entry.cell

    def _entry(self, key: str, version: int, build: Callable[[], Cell]) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.version == version:
                self._entries.move_to_end(key)
                return entry
        cell = build()  # outside the lock: other VMs' callers need not wait for a compile
        with self._lock:
            self.builds += 1
            entry = self._entries.get(key)
            if entry is None or entry.version != version:
                entry = _Entry(version, cell)
                self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_cells:
                self._entries.popitem(last=False)
            return entry

    def holds(self, key: str, version: int) -> bool:
        """Whether the cell of ``key`` at ``version`` is warm here."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.version == version

    def retag(self, key: str, old_version: int, new_version: int) -> None:
        """The caller wrote the cell's state as ``new_version``: keep it warm under that."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.version == old_version:
                entry.version = new_version

    def remove_cell(self, key: str) -> None:
        """Forget a VM's cell (destroyed, or changed and not saved); harmless if absent."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every cell (e.g. when switching to another store)."""
        with self._lock:
            self._entries.clear()

    @property
    def vm_ids(self) -> list[str]:
        """The ids of the VMs whose cells are live here."""
        with self._lock:
            return [key.split("|")[1] for key in self._entries]


_default: Hypervisor | None = None
_default_lock = threading.Lock()


def get_hypervisor() -> Hypervisor:
    """The process-wide hypervisor that all basic VMs of this process share."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Hypervisor()
        return _default
