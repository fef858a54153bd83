"""The bio-VM: lifecycle, persistence and organism-specific calls, on any infrastructure.

`BiologicalVM` owns what every infrastructure shares — the state machine, the
persistent record, organism capabilities, performance tracking — and holds a host for the
cell itself (`vm.host.CellHost`): the in-process engine for `basic`, a guest over SSH for
`xcpng`. Which host a VM gets is the registry's answer (`vm.infrastructures`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bioxen_flows.errors import InputError, NotFoundError
from bioxen_flows.logs import vm_context
from bioxen_flows.organisms.profiles import get_profile, organisms_with
from bioxen_flows.performance import performance_monitor
from bioxen_flows.state import StateStore, VMRecord, new_lease_holder
from bioxen_flows.vm.host import CellHost
from bioxen_flows.vm.infrastructures import infrastructure

# state -> states reachable from it (destroy is allowed from every state and is idempotent)
TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"created": "running", "stopped": "running"},
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "stop": {"running": "stopped", "paused": "stopped"},
}


class BiologicalVM:
    """A simulated cell with a VM lifecycle; every change is written to the state store.

    The cell lives in `host`, which the VM's infrastructure provides (`infrastructure`)."""

    def __init__(self, record: VMRecord, store: StateStore, host: CellHost | None = None) -> None:
        self.record = record
        self.store = store
        self.capabilities = get_profile(record.biological_type).capabilities  # profiles.yaml
        self.infrastructure = infrastructure(record.vm_type)
        self.host = host or self.infrastructure.host(lambda: self.record, store)

    # ---- identity -------------------------------------------------------------------
    @property
    def vm_id(self) -> str:
        return self.record.vm_id

    @property
    def state(self) -> str:
        return self.record.state

    def get_biological_type(self) -> str:
        return self.record.biological_type

    def get_vm_type(self) -> str:
        return self.record.vm_type

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.vm_id} {self.get_biological_type()} {self.state}>"

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._transition("start")

    def pause(self) -> None:
        self._transition("pause")

    def resume(self) -> None:
        self._transition("resume")

    def stop(self) -> None:
        self._transition("stop")

    def destroy(self) -> None:
        """Free the cell and its allocations and forget the VM; calling it again is a no-op.

        Waits for a program another caller is running on the VM to finish first."""
        if self.record.state == "destroyed":
            return
        holder = new_lease_holder()
        try:
            self.record = self.store.acquire_lease(self.vm_id, holder)
        except NotFoundError:  # destroyed by another caller: the outcome asked for
            self.record.state = "destroyed"
            return
        with performance_monitor.track("destroy"):
            try:
                self.host.release()
            except BaseException:
                self.store.release_lease(self.vm_id, holder)
                raise
            self.store.delete_vm(self.vm_id, lease=holder)
            self.record.state = "destroyed"

    def _transition(self, action: str) -> None:
        """One compare-and-swap on the VM's current state (re-read in the transaction)."""
        allowed = TRANSITIONS[action]
        self._require_live()

        def change(current: VMRecord) -> dict[str, Any]:
            if current.state not in allowed:
                raise InputError(
                    f"cannot {action} VM {self.vm_id!r}: it is {current.state} "
                    f"(needs {' or '.join(allowed)})"
                )
            now = time.time()
            fields: dict[str, Any] = {"state": allowed[current.state]}
            if fields["state"] == "running":
                fields["running_since"] = now
            elif current.running_since is not None:
                fields["uptime_seconds"] = current.uptime_seconds + now - current.running_since
                fields["running_since"] = None
            return fields

        with performance_monitor.track(action), vm_context(self.vm_id):
            old = self.record.version
            self.record = self.store.modify(self.vm_id, change, action=action)
            self.host.committed(old)

    @contextmanager
    def _exclusive(self, what: str) -> Iterator[str]:
        """Hold the VM's lease while changing its cell: other callers queue behind it.

        Re-reads the record (state, version) first, so a stale VM object acts on the VM as
        it is now. A failure of any kind gives the lease back and drops the changed cell."""
        self._require_live()
        holder = new_lease_holder()
        try:
            self.record = self.store.acquire_lease(self.vm_id, holder)
        except NotFoundError:
            self.record.state = "destroyed"
            raise NotFoundError(f"cannot {what}: VM {self.vm_id!r} is destroyed") from None
        try:
            with vm_context(self.vm_id):  # log lines of this operation name the VM
                yield holder
        except BaseException:
            self.host.discard()
            self.store.release_lease(self.vm_id, holder)
            raise

    def _commit(self, lease: str, action: str | None = None, detail: dict | None = None,
                **fields: Any) -> None:
        """Write the cell's state (and ``fields``) as the VM's next version, auditing
        ``action`` in the same transaction; frees the lease.

        The snapshot also keeps the cell's metrics at that state (`recorded_metrics`), so
        reading them later needs no model."""
        if self.infrastructure.in_process:  # else the guest keeps the cell's state
            from bioxen_flows.serialization import json_safe

            fields["snapshot"] = {**self.host.snapshot(),
                                  "metrics": json_safe(self.host.metrics())}
        self._write(lease, action=action, detail=detail, **fields)

    def recorded_metrics(self) -> dict[str, Any] | None:
        """The metrics stored with the VM's current version (None if it has none): what
        `get_biological_metrics` computes, without building the cell (non-finite numbers,
        e.g. the doubling time of a cell that does not grow, are None)."""
        snapshot = self.record.snapshot
        metrics = snapshot.get("metrics") if isinstance(snapshot, dict) else None
        return dict(metrics) if isinstance(metrics, dict) else None

    def _write(self, lease: str, keep_lease: bool = False, **fields: Any) -> None:
        old = self.record.version
        self.record = self.store.update_vm(self.vm_id, lease=lease, keep_lease=keep_lease,
                                           **fields)
        self.host.committed(old)

    def _require_live(self) -> None:
        if self.state == "destroyed":  # a destroyed VM is a missing one, whoever asks
            raise NotFoundError(f"VM {self.vm_id!r} is destroyed")

    def _require_running(self, what: str) -> None:
        self._require_live()
        if self.state != "running":
            raise InputError(
                f"cannot {what} on VM {self.vm_id!r}: it is {self.state}, not running"
            )

    def refresh(self) -> None:
        """Re-read the record, so reads reflect what other callers wrote since."""
        self._require_live()
        try:
            self.record = self.store.get_vm(self.vm_id)
        except NotFoundError:
            self.record.state = "destroyed"
            raise NotFoundError(f"VM {self.vm_id!r} is destroyed") from None

    # ---- biology ----------------------------------------------------------------------
    def execute_biological_process(self, code: str) -> dict[str, Any]:
        """Run a process program (see engine.process_language); the VM must be running.
        All or nothing: a program that fails anywhere leaves the VM as it was."""
        with self._exclusive("execute a process") as lease:
            self._require_running("execute a process")
            with performance_monitor.track("execute_biological_process"):
                result = self.host.run_program(code)
                calls = [str(call)[:200] for call in (result.get("calls") or [])[:50]]
                self._commit(lease, "execute", {"calls": calls})
        return result

    def install_biological_package(self, name_or_path: str, copies: int | None = None) -> dict:
        """Install a built-in package or a user module; returns what was installed.

        A user module's text is stored with the VM: later loads never read the file again."""
        with self._exclusive("install a package") as lease:
            with performance_monitor.track("install_biological_package"):
                installed = self.host.install(name_or_path, copies)
                self._commit(lease, "install", {"package": installed.get("package"),
                                                "copies": installed.get("copies")})
        return installed

    def get_biological_metrics(self) -> dict[str, Any]:
        self.refresh()
        with performance_monitor.track("get_biological_metrics"):
            return self.host.metrics()

    def get_status(self) -> dict[str, Any]:
        """Lifecycle, clock, allocations and packages, from the record alone (no model)."""
        self.refresh()
        uptime = self.record.uptime_seconds
        if self.record.running_since is not None:
            uptime += time.time() - self.record.running_since
        snapshot = self.record.snapshot or {}
        status = {
            "vm_id": self.vm_id,
            "state": self.state,
            "biological_type": self.get_biological_type(),
            "vm_type": self.get_vm_type(),
            "version": self.record.version,
            "uptime_seconds": uptime,
            "simulated_time_min": float(snapshot.get("time", 0.0)),
            "allocations": dict(self.record.allocations),
            "installed_packages": [p.get("name") for p in snapshot.get("packages") or []],
        }
        return {**status, **self.host.live_status()}

    # organism-specific ------------------------------------------------------------------
    def start_transcription(self, gene_ids: list[str]) -> dict[str, Any]:
        self._require_capability("transcription_control", "start_transcription")
        # json.dumps gives an escaped list literal; the program is parsed, never evaluated
        return self.execute_biological_process(
            f"start_transcription({json.dumps(_as_list(gene_ids))})"
        )

    def get_essential_genes(self, include_quasi: bool = False) -> list[dict[str, Any]]:
        """Essential genes from the genome and essentiality table attached to this VM."""
        self._require_capability("essential_genes", "get_essential_genes")
        from bioxen_flows.organisms.genome import (
            EssentialityUnavailableError,
            load_essentiality_csv,
            load_genbank,
        )

        genome_cfg = self.record.config.get("genome") or {}
        if not genome_cfg.get("genbank_file") or not genome_cfg.get("essentiality_file"):
            raise EssentialityUnavailableError(
                f"VM {self.vm_id!r} has no essentiality data: attach a GenBank file and an "
                "essentiality CSV (locus_tag,essentiality) with attach_genome(); essentiality "
                "is never guessed"
            )
        genome = load_genbank(genome_cfg["genbank_file"]).with_essentiality(
            load_essentiality_csv(genome_cfg["essentiality_file"])
        )
        return [g.__dict__ for g in genome.essential_genes(include_quasi=include_quasi)]

    def attach_genome(self, genbank_file: str, essentiality_file: str | None = None) -> dict:
        """Attach a genome annotation (and optionally essentiality data) to the VM."""
        from bioxen_flows.organisms.genome import load_essentiality_csv, load_genbank

        self._require_live()
        genome = load_genbank(genbank_file)
        if essentiality_file:
            genome = genome.with_essentiality(load_essentiality_csv(essentiality_file))
        config = {"genome": {
            "genbank_file": str(genbank_file),
            "essentiality_file": str(essentiality_file) if essentiality_file else None,
        }}
        self.record = self.store.modify(self.vm_id, lambda current: {
            "config": {**current.config, "genome": config["genome"]}
        })
        return genome.summary()

    def manage_operons(self, operon_ids: list[str], action: str) -> dict[str, Any]:
        self._require_capability("operons", "manage_operons")
        return self.execute_biological_process(
            f"manage_operons({json.dumps(_as_list(operon_ids))}, {json.dumps(action)})"
        )

    def get_plasmid_count(self) -> int:
        self._require_capability("plasmids", "get_plasmid_count")
        return int(self.get_biological_metrics()["plasmid_count"])

    def _require_capability(self, capability: str, method: str) -> None:
        if not getattr(self.capabilities, capability):
            supported = organisms_with(capability)
            raise InputError(
                f"{method} is supported by {', '.join(supported)}; "
                f"VM {self.vm_id!r} is {self.get_biological_type()}"
            )

    # ---- resources ----------------------------------------------------------------------
    def allocate(
        self, atp_percent: float | None = None, ribosomes: int | None = None, reset: bool = False
    ) -> dict:
        """Set caps on the cell (`reset` lifts earlier ones first). The host budget is checked
        in the store, in the same transaction that records the allocation; a refusal changes
        nothing."""
        check_allocation(atp_percent, ribosomes)
        with self._exclusive("allocate") as lease:
            with performance_monitor.track("allocate"):
                previous = dict(self.record.allocations)
                allocations = {} if reset else dict(previous)
                if atp_percent is not None:
                    allocations["atp_percent"] = float(atp_percent)
                if ribosomes is not None:
                    allocations["ribosomes"] = int(ribosomes)
                self._set_allocations(lease, allocations, previous)
                self._commit_allocation(lease, allocations)
        return allocations

    def _commit_allocation(self, lease: str, allocations: dict[str, Any]) -> None:
        stored = self.host.snapshot_under_caps(allocations)
        if stored is None:
            self._commit(lease, "allocate", dict(allocations))
        else:  # written without building the cell
            self._write(lease, action="allocate", detail=dict(allocations), snapshot=stored)

    def _set_allocations(self, lease: str, allocations: dict, previous: dict) -> None:
        """Record the allocation (budget-checked), then apply it to the cell; if the cell
        refuses, the ledger gets the previous allocation back."""
        self._write(lease, keep_lease=True, allocations=allocations)
        try:
            self.host.apply_caps(allocations)
        except BaseException:
            self._write(lease, keep_lease=True, allocations=previous)
            raise

    def snapshot_state(self) -> dict[str, Any]:
        """The cell's full simulation state plus allocations (JSON-ready)."""
        self.refresh()
        return {"cell": self.host.snapshot(), "allocations": dict(self.record.allocations)}

    def restore_state(self, snapshot: dict[str, Any]) -> None:
        """Return the VM to a snapshot taken by `snapshot_state` (cell and allocations)."""
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("cell"), dict):
            raise InputError("a snapshot is a mapping with a 'cell' mapping (see snapshot_state)")
        allocations = snapshot.get("allocations") or {}
        if not isinstance(allocations, dict):
            raise InputError("snapshot 'allocations' must be a mapping")
        check_allocation(allocations.get("atp_percent"), allocations.get("ribosomes"))
        with self._exclusive("restore a snapshot") as lease:
            previous = dict(self.record.allocations)
            self.host.restore(snapshot["cell"])
            self._set_allocations(lease, dict(allocations), previous)
            self._commit(lease, "restore", dict(allocations))

    def save(self) -> None:
        """Write the cell's simulation state to the store (other processes load it from there)."""
        with self._exclusive("save") as lease:
            self._commit(lease)

    def complete_creation(self, lease: str, detail: dict[str, Any]) -> None:
        """The second write of a creation (see `vm.factory`): make the cell with its caps
        and the config's packages, then record the VM as ``created``, audited with
        ``detail``. The creator holds `lease`; on a failure the creator forgets the VM."""
        self.host.create_cell()
        for package in self.record.config.get("packages") or []:
            self.host.install(package, None)
        self._commit(lease, "create", detail, state="created")

    # ---- what-if questions to the model (the VM is untouched) -----------------------------
    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        """Balanced growth (1/min) this cell would reach under each (atp %, ribosomes) cap.

        The VM itself is untouched: the model is asked "what if", which is how the resource
        manager searches allocations instead of applying fixed percentages.
        """
        self.refresh()
        return self.host.probe_growth(caps)

    def explore_designs(
        self, designs: Sequence[tuple[str | None, int, float]], minutes: float
    ) -> Iterator[dict[str, Any]]:
        """The final metrics of a copy of this running cell with each (package, copies,
        strength) installed (package None: as it is) and grown `minutes`, one at a time;
        the VM is untouched. (Basic VMs: one model load per package, see `LocalHost`.)"""
        self.refresh()
        self._require_running("explore designs")
        yield from self.host.explore_designs(designs, minutes)


def check_allocation(atp_percent: float | None, ribosomes: int | None) -> None:
    """Refuse allocation values the model cannot take, before anything changes."""
    if atp_percent is not None and (
        isinstance(atp_percent, bool) or not isinstance(atp_percent, (int, float))
        or not math.isfinite(atp_percent) or not 0 < atp_percent <= 100
    ):
        raise InputError(f"ATP allocation must be a percentage in (0, 100], got {atp_percent!r}")
    if ribosomes is not None and (
        isinstance(ribosomes, bool) or not isinstance(ribosomes, int)
        or not 1 <= ribosomes <= 10**9
    ):
        raise InputError(
            f"ribosome allocation must be a positive integer (at most 1e9), got {ribosomes!r}"
        )


def _as_list(ids: list[str] | str) -> list[str]:
    items = [ids] if isinstance(ids, str) else ids
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise InputError(f"expected an id or a list of ids, got {type(ids).__name__}")
    return list(items)
