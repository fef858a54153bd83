"""`xcpng` bio-VMs: the cell runs in a guest VM on an XCP-ng pool, driven over SSH.

The guest runs the same engine as a `basic` VM (`bioxen guest`, one fixed command,
JSON on stdin/stdout), so a caller cannot tell the two apart except by speed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bioxen_flows.state import StateStore, VMRecord
from bioxen_flows.vm.base import BiologicalVM

GUEST_COMMAND = "bioxen guest"
log = logging.getLogger(__name__)


class XCPngBiologicalVM(BiologicalVM):
    """A bio-VM whose cell lives in an XCP-ng guest provisioned for it."""

    vm_type = "xcpng"
    stores_snapshot = False  # the guest keeps the cell's state in its own store

    def __init__(self, record: VMRecord, store: StateStore) -> None:
        from bioxen_flows.xcpng.backend import pool_config
        from bioxen_flows.xcpng.ssh import SSHTarget

        super().__init__(record, store)
        self.xcpng_config: dict[str, Any] = record.config["xcpng_config"]
        placement = record.config.get("placement") or {}
        cfg = pool_config(self.xcpng_config)
        # A record without a guest address (provisioning never finished) can still be destroyed.
        self.target = None if "ip" not in placement else SSHTarget(
            host=placement["ip"], port=cfg.ssh_port, username=cfg.ssh_user,
            key_path=cfg.ssh_key_path, host_key=cfg.ssh_host_key,
            known_hosts_path=cfg.known_hosts_path,
            command_timeout=cfg.ssh_command_timeout_seconds,
        )

    def guest(self, operation: str, **fields: Any) -> Any:
        """One request to `bioxen guest` in the VM; returns its result."""
        from bioxen_flows.xcpng.ssh import run_guest

        if self.target is None:
            raise ValueError(f"XCP-ng VM {self.vm_id!r} has no guest address: it was never "
                             "provisioned completely; destroy it and create it again")
        request = {"operation": operation, "vm_id": self.vm_id, **fields}
        return run_guest(self.target, request, command=GUEST_COMMAND)["result"]

    def create_guest_cell(self) -> None:
        """Create the cell inside the guest (once, right after provisioning)."""
        simulation = self.record.config.get("simulation") or {}
        self.guest("create", biological_type=self.get_biological_type(), simulation=simulation)

    def _run_program(self, code: str) -> dict[str, Any]:
        result = self.guest("run", code=code)
        result["summary"] = _with_infinity(result["summary"])
        return result

    def _install(self, name_or_path: str, copies: int | None) -> dict[str, Any]:
        path = Path(name_or_path)
        if path.suffix.lower() in {".ant", ".txt", ".sbml", ".xml"}:
            from bioxen_flows.files import read_text_file
            from bioxen_flows.model.packages import module_size_limit

            sbml = path.suffix.lower() in {".sbml", ".xml"}
            text = read_text_file(path, max_bytes=module_size_limit(path), what="package file")
            return self.guest("install", package=path.stem, copies=copies, module_text=text,
                              module_format="sbml" if sbml else "antimony")
        return self.guest("install", package=name_or_path, copies=copies)

    def _metrics(self) -> dict[str, Any]:
        return _with_infinity(self.guest("metrics"))

    def get_status(self) -> dict[str, Any]:
        """The record's status; clock and packages from the guest, which holds the cell."""
        status = super().get_status()
        if self.target is not None:
            metrics = self._metrics()
            status["simulated_time_min"] = metrics["simulated_time_min"]
            status["installed_packages"] = metrics["installed_packages"]
        return status

    def _apply_caps(self, allocations: dict[str, Any]) -> None:
        self.guest("allocate", atp_percent=allocations.get("atp_percent"),
                   ribosomes=allocations.get("ribosomes"), reset=True)

    def _cell_snapshot(self) -> dict[str, Any]:
        return self.guest("snapshot")

    def _restore_cell(self, snapshot: dict[str, Any]) -> None:
        self.guest("restore", snapshot=snapshot)

    def probe_growth(self, caps: Sequence[tuple[float, float]]) -> list[float]:
        return self.guest("probe", caps=[list(c) for c in caps])

    def _release_cell(self) -> None:
        """Destroy the guest's cell (if the guest still answers), then the XCP-ng VM."""
        from bioxen_flows.xcpng.backend import destroy_vm, reap_vms

        if self.target is not None:
            try:
                self.guest("destroy")
            except Exception as exc:  # the VM itself goes next; nothing of the cell survives it
                log.warning("guest of VM %s did not answer destroy: %s", self.vm_id, exc)
        placement = self.record.config.get("placement") or {}
        if placement.get("vm_uuid"):
            destroy_vm(self.xcpng_config, placement["vm_uuid"], self.vm_id)
        else:  # never fully provisioned: find the clone by its tag
            reap_vms(self.xcpng_config, keep=lambda tags: tags.get("vm_id") != self.vm_id)

    def _committed(self, old_version: int) -> None:
        """Nothing is cached on the host: the guest holds the live cell."""

    def _discard_changes(self) -> None:
        """The guest runs each request all or nothing; the host holds nothing to drop."""


def _with_infinity(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON carried a non-growing cell's doubling time as null; callers expect inf."""
    if metrics.get("doubling_time_min") is None:
        metrics = {**metrics, "doubling_time_min": math.inf}
    return metrics
