"""The `xcpng` infrastructure's host: the cell runs in a guest VM on an XCP-ng pool, over SSH.

The guest runs the same engine as a `basic` VM (`bioxen guest`, one fixed command,
`xcpng.guest_protocol` requests on stdin), so a caller cannot tell the two apart except by
speed. Provisioning the guest (`provision_guest`) is the first step of creating such a VM.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bioxen_flows.errors import InfrastructureError, InputError
from bioxen_flows.run_identity import FLOW_RUN_LABEL, NO_RUN
from bioxen_flows.state import StateStore, VMRecord
from bioxen_flows.vm.host import CurrentRecord
from bioxen_flows.xcpng.guest_protocol import GUEST_COMMAND, GuestReply, GuestRequest, Operation
from bioxen_flows.xcpng.placement import Placement

log = logging.getLogger(__name__)
MODULE_SUFFIXES = {".ant": "antimony", ".txt": "antimony", ".sbml": "sbml", ".xml": "sbml"}


class GuestHost:
    """A bio-VM's cell in the XCP-ng guest provisioned for it (a `CellHost`)."""

    def __init__(self, current: CurrentRecord, store: StateStore) -> None:
        from bioxen_flows.xcpng.backend import pool_config
        from bioxen_flows.xcpng.ssh import SSHTarget

        self.current = current
        record = current()
        self.vm_id = record.vm_id
        self.xcpng_config: dict[str, Any] = record.config["xcpng_config"]
        self.placement = Placement.from_record(record.config.get("placement"))
        cfg = pool_config(self.xcpng_config)
        # A record without a guest address (provisioning never finished) can still be destroyed.
        self.target = None if self.placement.ip is None else SSHTarget(
            host=self.placement.ip, port=cfg.ssh_port, username=cfg.ssh_user,
            key_path=cfg.ssh_key_path, host_key=cfg.ssh_host_key,
            known_hosts_path=cfg.known_hosts_path,
            command_timeout=cfg.ssh_command_timeout_seconds,
        )

    def guest(self, operation: Operation, **arguments: Any) -> Any:
        """One request to `bioxen guest` in the VM; returns its result."""
        from bioxen_flows.xcpng.ssh import run_guest

        if self.target is None:  # the VM cannot be used (refused before anything changes)
            raise InputError(
                f"XCP-ng VM {self.vm_id!r} has no guest address: it was never provisioned "
                "completely; destroy it and create it again")
        request = GuestRequest(operation, self.vm_id, arguments)
        reply = run_guest(self.target, request.to_json(), command=GUEST_COMMAND)
        try:
            return GuestReply.from_json(reply).result
        except InputError as exc:
            raise InfrastructureError(f"guest of VM {self.vm_id!r}: {exc}") from None

    def create_cell(self) -> None:
        """Create the cell inside the guest (once, right after provisioning), with its caps."""
        record = self.current()
        self.guest(Operation.CREATE, biological_type=record.biological_type,
                   simulation=record.config.get("simulation") or {})
        if record.allocations:
            self.apply_caps(record.allocations)

    def run_program(self, code: str) -> dict[str, Any]:
        result = self.guest(Operation.RUN, code=code)
        result["summary"] = _with_infinity(result["summary"])
        return result

    def install(self, name_or_path: str, copies: int | None) -> dict[str, Any]:
        """A built-in package by name; a module file is read here (size-checked, never
        blocking) and sent as text."""
        path = Path(name_or_path)
        module_format = MODULE_SUFFIXES.get(path.suffix.lower())
        if module_format is None:
            return self.guest(Operation.INSTALL, package=name_or_path, copies=copies)
        return self.guest(Operation.INSTALL, package=path.stem, copies=copies,
                          module_text=read_module(path), module_format=module_format)

    def metrics(self) -> dict[str, Any]:
        return _with_infinity(self.guest(Operation.METRICS))

    def apply_caps(self, allocations: dict[str, Any]) -> None:
        self.guest(Operation.ALLOCATE, atp_percent=allocations.get("atp_percent"),
                   ribosomes=allocations.get("ribosomes"), reset=True)

    def snapshot_under_caps(self, allocations: dict[str, Any]) -> dict[str, Any] | None:
        """The record keeps no snapshot: the guest holds the cell's state."""
        return None

    def snapshot(self) -> dict[str, Any]:
        return self.guest(Operation.SNAPSHOT)

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.guest(Operation.RESTORE, snapshot=snapshot)

    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        return self.guest(Operation.PROBE, caps=[list(c) for c in caps])

    def explore_designs(
        self, designs: Sequence[tuple[str | None, int, float]], minutes: float
    ) -> Iterator[dict[str, Any]]:
        raise InputError(f"VM {self.vm_id!r} runs on XCP-ng: design exploration runs on "
                         "basic VMs (a sweep creates its own)")

    def live_status(self) -> dict[str, Any]:
        """The guest holds the cell: its clock and packages come from there."""
        if self.target is None:
            return {}
        metrics = self.metrics()
        return {"simulated_time_min": metrics["simulated_time_min"],
                "installed_packages": metrics["installed_packages"]}

    def release(self) -> None:
        """Destroy the guest's cell (if the guest still answers), then the XCP-ng VM."""
        from bioxen_flows.xcpng.backend import destroy_vm

        if self.target is not None:
            try:
                self.guest(Operation.DESTROY)
            except Exception as exc:  # the VM itself goes next; nothing of the cell survives it
                log.warning("guest of VM %s did not answer destroy: %s", self.vm_id, exc)
        if self.placement.vm_uuid:
            destroy_vm(self.xcpng_config, self.placement.vm_uuid, self.vm_id)
        else:  # never fully provisioned: find the clone by its tag
            reap_guest(self.current())

    def committed(self, old_version: int) -> None:
        """Nothing is cached on the host: the guest holds the live cell."""

    def discard(self) -> None:
        """The guest runs each request all or nothing; the host holds nothing to drop."""


def read_module(path: Path) -> str:
    """A module file's text, refused unread when it is too large, not a regular file, or
    would block (a FIFO, a device)."""
    from bioxen_flows.files import read_text_file
    from bioxen_flows.model.packages import module_size_limit

    return read_text_file(path, max_bytes=module_size_limit(path), what="package file")


def provision_guest(
    record: VMRecord, store: StateStore, lease: str, placement: Placement | None,
    before_clone: Callable[[], None],
) -> VMRecord:
    """Provision the record's guest VM (unless a flow already did, step by step) and record
    where it runs; `before_clone` is called once the pool may hold a clone of it."""
    from bioxen_flows.xcpng.backend import provision_vm

    config = record.config
    owner = (config.get("labels") or {}).get(FLOW_RUN_LABEL, NO_RUN)
    placement = placement or provision_vm(config["xcpng_config"], record.vm_id, owner,
                                          before_clone=before_clone)
    return store.update_vm(record.vm_id, lease=lease, keep_lease=True,
                           config={**config, "placement": placement.as_dict()})


def reap_guest(record: VMRecord) -> None:
    """Destroy whatever of this VM is on the pool, found by its tag (no placement needed)."""
    from bioxen_flows.xcpng.backend import reap_vms

    reap_vms(record.config["xcpng_config"], keep=lambda tags: tags.get("vm_id") != record.vm_id)


def _with_infinity(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON carried a non-growing cell's doubling time as null; callers expect inf."""
    if metrics.get("doubling_time_min") is None:
        metrics = {**metrics, "doubling_time_min": math.inf}
    return metrics
