"""The bio-VM interface: lifecycle, persistence and organism-specific calls.

`BiologicalVM` owns what every infrastructure shares — the state machine, the
persistent record, organism capabilities, performance tracking — and leaves the
cell itself to subclasses (in-process engine for `basic`, a guest over SSH for `xcpng`).
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bioxen_flows.errors import InputError, TransientInfrastructureError  # noqa: F401 (re-exported)
from bioxen_flows.performance import performance_monitor
from bioxen_flows.state import StateStore, VMRecord

# state -> states reachable from it (destroy is allowed from every state and is idempotent)
TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"created": "running", "stopped": "running"},
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "stop": {"running": "stopped", "paused": "stopped"},
}


@dataclass(frozen=True)
class OrganismCapabilities:
    """Which organism-specific calls an organism supports (composition, not subclasses)."""

    transcription_control: bool
    essential_genes: bool
    operons: bool
    plasmids: bool


CAPABILITIES: dict[str, OrganismCapabilities] = {
    "syn3a": OrganismCapabilities(True, True, False, False),
    "minimal_cell": OrganismCapabilities(True, True, False, False),
    "ecoli": OrganismCapabilities(False, False, True, True),
}


class BiologicalVM(abc.ABC):
    """A simulated cell with a VM lifecycle; every change is written to the state store."""

    vm_type: str = ""

    def __init__(self, record: VMRecord, store: StateStore) -> None:
        self.record = record
        self.store = store
        self.capabilities = CAPABILITIES[record.biological_type]

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
        """Free the cell and its allocations and forget the VM; calling it again is a no-op."""
        if self.record.state == "destroyed":
            return
        with performance_monitor.track("destroy"):
            self._release_cell()
            self.store.delete_vm(self.vm_id)
            self.store.audit(self.vm_id, "destroy")
            self.record.state = "destroyed"

    def _transition(self, action: str) -> None:
        allowed = TRANSITIONS[action]
        self._require_live()
        if self.state not in allowed:
            sources = " or ".join(allowed)
            raise InputError(
                f"cannot {action} VM {self.vm_id!r}: it is {self.state} (needs {sources})"
            )
        now = time.time()
        fields: dict[str, Any] = {"state": allowed[self.state]}
        if fields["state"] == "running":
            fields["running_since"] = now
        elif self.record.running_since is not None:
            fields["uptime_seconds"] = self.record.uptime_seconds + now - self.record.running_since
            fields["running_since"] = None
        with performance_monitor.track(action):
            self.record = self.store.update_vm(self.vm_id, expected_state=self.state, **fields)
            self.store.audit(self.vm_id, action)

    def _require_live(self) -> None:
        if self.state == "destroyed":
            raise InputError(f"VM {self.vm_id!r} is destroyed")

    def _require_running(self, what: str) -> None:
        self._require_live()
        if self.state != "running":
            raise InputError(f"cannot {what} on VM {self.vm_id!r}: it is {self.state}, not running")

    # ---- biology ----------------------------------------------------------------------
    def execute_biological_process(self, code: str) -> dict[str, Any]:
        """Run a process program (see engine.process_language); the VM must be running."""
        self._require_running("execute a process")
        with performance_monitor.track("execute_biological_process"):
            result = self._run_program(code)
            self.save()
        return result

    def install_biological_package(self, name_or_path: str, copies: int | None = None) -> dict:
        """Install a built-in package or a user module; returns what was installed."""
        self._require_live()
        with performance_monitor.track("install_biological_package"):
            installed = self._install(name_or_path, copies)
            self.save()
        return installed

    def get_biological_metrics(self) -> dict[str, Any]:
        self._require_live()
        with performance_monitor.track("get_biological_metrics"):
            return self._metrics()

    def get_status(self) -> dict[str, Any]:
        self._require_live()
        metrics = self._metrics()
        uptime = self.record.uptime_seconds
        if self.record.running_since is not None:
            uptime += time.time() - self.record.running_since
        return {
            "vm_id": self.vm_id,
            "state": self.state,
            "biological_type": self.get_biological_type(),
            "vm_type": self.get_vm_type(),
            "uptime_seconds": uptime,
            "simulated_time_min": metrics["simulated_time_min"],
            "allocations": dict(self.record.allocations),
            "installed_packages": metrics["installed_packages"],
        }

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
        config = {**self.record.config, "genome": {
            "genbank_file": str(genbank_file),
            "essentiality_file": str(essentiality_file) if essentiality_file else None,
        }}
        self.record = self.store.update_vm(self.vm_id, config=config)
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
            supported = [o for o, c in CAPABILITIES.items() if getattr(c, capability)]
            raise InputError(
                f"{method} is supported by {', '.join(supported)}; "
                f"VM {self.vm_id!r} is {self.get_biological_type()}"
            )

    # ---- resources ----------------------------------------------------------------------
    def allocate(
        self, atp_percent: float | None = None, ribosomes: int | None = None, reset: bool = False
    ) -> dict:
        """Set caps on the cell (`reset` lifts earlier ones first); the host budget is checked
        before anything changes."""
        self._require_live()
        with performance_monitor.track("allocate"):
            allocations = self._allocate(atp_percent, ribosomes, reset)
            self.record = self.store.update_vm(self.vm_id, allocations=allocations)
            self.save()
        return allocations

    def snapshot_state(self) -> dict[str, Any]:
        """The cell's full simulation state plus allocations (JSON-ready)."""
        self._require_live()
        return {"cell": self._cell_snapshot(), "allocations": dict(self.record.allocations)}

    def restore_state(self, snapshot: dict[str, Any]) -> None:
        self._require_live()
        self._restore_cell(snapshot["cell"])
        allocations = snapshot.get("allocations") or {}
        self._allocate(allocations.get("atp_percent"), allocations.get("ribosomes"), reset=True)
        self.record = self.store.update_vm(self.vm_id, allocations=allocations)
        self.save()

    def save(self) -> None:
        """Write the cell's simulation state to the store (other processes load it from there)."""
        self.record = self.store.update_vm(self.vm_id, snapshot=self._cell_snapshot())

    # ---- what an infrastructure provides --------------------------------------------------
    @abc.abstractmethod
    def _run_program(self, code: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _install(self, name_or_path: str, copies: int | None) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _metrics(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _allocate(
        self, atp_percent: float | None, ribosomes: int | None, reset: bool = False
    ) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _cell_snapshot(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _restore_cell(self, snapshot: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        """Balanced growth (1/min) this cell would reach under each (atp %, ribosomes) cap.

        The VM itself is untouched: the model is asked "what if", which is how the resource
        manager searches allocations instead of applying fixed percentages.
        """

    @abc.abstractmethod
    def _release_cell(self) -> None: ...


def _as_list(ids: list[str] | str) -> list[str]:
    items = [ids] if isinstance(ids, str) else ids
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise InputError(f"expected an id or a list of ids, got {type(ids).__name__}")
    return list(items)
