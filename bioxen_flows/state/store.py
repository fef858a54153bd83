"""The state store: versioned bio-VM records, per-VM leases, the budget ledger, the audit log.

Two backends behind one interface (SQLAlchemy 2 Core): an SQLite file under
``BIOXEN_HOME`` (the embedded default) and PostgreSQL (``BIOXEN_DATABASE_URL``) for
flows that run on several workers or machines.

`StateStore` is a facade in the shape of Prefect's server models layer: each method opens
one transaction (`database.Database.transaction`) and calls the entity functions of
`vms` (records and leases), `ledger` (host budget and quotas), `audit` and `metadata`,
which take that connection. So a change, its ledger check and its audit entry commit
together or not at all; the rules each keeps are in its module. An *owner* in the store is
a quota user (the user or project whose quota a VM counts against), never a flow run.

Secrets are never stored: ``config`` and audit ``detail`` dicts containing a non-empty
``password``, ``secret``, ``token`` or ``private_key`` key (at any depth) are refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from bioxen_flows.errors import BudgetError, ConflictError, InputError, NotFoundError
from bioxen_flows.state import audit, ledger, metadata, vms
from bioxen_flows.state.database import Database
from bioxen_flows.state.vms import LEASE_TTL_SECONDS, LEASE_WAIT_SECONDS, VMRecord

_Attempt = Callable[[Connection, Any, float], VMRecord | None]


class StateStore(Database):
    """Persistent VM registry, budget ledger and audit log (SQLite or PostgreSQL)."""

    # ---- VM records -----------------------------------------------------------------
    def insert_vm(
        self, record: VMRecord, *, lease: str | None = None, detail: dict | None = None,
        audit_create: bool = True,
    ) -> VMRecord:
        """Insert a new VM, optionally leased to its creator. The host budget and the owner's
        (quota user's) quota are checked, and the ``create`` audit entry written (unless the
        creator audits it when the VM is complete), in the same transaction; a refusal is
        audited too. A duplicate id changes nothing."""
        try:
            with self.transaction() as conn:
                inserted = vms.insert(conn, record, lease=lease)
                if audit_create:
                    audit.record(conn, record.vm_id, "create", detail)
        except IntegrityError as exc:  # PRIMARY KEY: no check-then-insert race
            raise InputError(f"VM {record.vm_id!r} already exists") from exc
        except BudgetError as exc:
            self.audit(record.vm_id, "create", {**(detail or {}), "error": str(exc)},
                       outcome="refused")
            raise
        return inserted

    def find_vm(self, vm_id: str) -> VMRecord | None:
        with self.read() as conn:
            return vms.find(conn, vm_id)

    def get_vm(self, vm_id: str) -> VMRecord:
        with self.read() as conn:
            record = vms.find(conn, vm_id)
            if record is None:
                raise NotFoundError(vms.unknown(conn, vm_id))
        return record

    def list_vms(self) -> list[VMRecord]:
        with self.read() as conn:
            return vms.list_all(conn)

    def interrupted_creations(self) -> list[VMRecord]:
        """VMs whose creation never finished and never will (see `vms`)."""
        with self.read() as conn:
            return vms.interrupted_creations(conn, time.time())

    def update_vm(
        self,
        vm_id: str,
        *,
        expected_version: int | None = None,
        expected_state: str | None = None,
        lease: str | None = None,
        keep_lease: bool = False,
        action: str | None = None,
        detail: dict | None = None,
        **fields: Any,
    ) -> VMRecord:
        """Compare-and-swap: write ``fields`` and bump the version, in one transaction that
        re-reads the row (and records ``action`` in the audit log, if given). Refused with
        `ConflictError` when the version or state moved on, or another caller holds the VM's
        lease; ``lease`` (the caller's) is released unless ``keep_lease``."""
        with self.transaction() as conn:
            row = vms.locked_row(conn, vm_id)
            vms.check_writable(row, lease=lease, expected_version=expected_version,
                               expected_state=expected_state, now=time.time())
            updated = vms.apply(conn, row, fields,
                                release=not (lease is not None and keep_lease))
            if action is not None:
                audit.record(conn, vm_id, action, detail)
        return updated

    def modify(
        self,
        vm_id: str,
        change: Callable[[VMRecord], dict[str, Any]],
        *,
        wait: float = LEASE_WAIT_SECONDS,
        action: str | None = None,
    ) -> VMRecord:
        """Read-modify-write in one transaction: ``change(current)`` returns the fields to
        write (or raises, writing nothing), and ``action`` is audited in the same transaction.
        Queues up to ``wait`` s behind a lease holder."""
        def attempt(conn: Connection, row: Any, now: float) -> VMRecord | None:
            if vms.busy(row, now):
                return None
            current = vms.refuse_unfinished(vms.readable(vms.from_row(row)))
            updated = vms.apply(conn, row, change(current))
            if action is not None:
                audit.record(conn, vm_id, action, None)
            return updated

        return self._when_free(vm_id, wait, attempt)

    def acquire_lease(
        self,
        vm_id: str,
        holder: str,
        *,
        ttl: float = LEASE_TTL_SECONDS,
        wait: float = LEASE_WAIT_SECONDS,
    ) -> VMRecord:
        """Take the VM's lease, queueing up to ``wait`` s while another caller holds it.
        Returns the record as it is now (the caller's view of state and version)."""
        def attempt(conn: Connection, row: Any, now: float) -> VMRecord | None:
            return vms.take_lease(conn, row, holder, ttl=ttl, now=now)

        return self._when_free(vm_id, wait, attempt)

    def _when_free(self, vm_id: str, wait: float, attempt: _Attempt) -> VMRecord:
        """Run ``attempt`` on the VM's locked row in a write transaction until it returns a
        record (None: the VM is busy), backing off; after ``wait`` s, `ConflictError`."""
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            with self.transaction() as conn:
                row = vms.locked_row(conn, vm_id)
                record = attempt(conn, row, time.time())
                holder = row.lease_holder
            if record is not None:
                return record
            if time.monotonic() >= deadline:
                raise ConflictError(f"VM {vm_id!r} is busy: {holder} has held it for longer "
                                    f"than {wait:g} s; nothing was done, try again later")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def release_lease(self, vm_id: str, holder: str) -> None:
        """Give the lease back without writing anything (a failed or read-only operation)."""
        with self.transaction() as conn:
            vms.release_lease(conn, vm_id, holder)

    def delete_vm(
        self, vm_id: str, *, lease: str | None = None, force: bool = False,
        action: str | None = "destroy", detail: dict | None = None,
    ) -> bool:
        """Forget a VM (its allocations return to the budget) and audit ``action`` in the same
        transaction. Refused while another caller holds its lease, unless ``force``; deleting
        twice returns False."""
        with self.transaction() as conn:
            labels = audit.labels_for_listeners(conn, vm_id) if action else None
            deleted = vms.delete(conn, vm_id, lease=lease, force=force)
            if deleted and action is not None:
                audit.record(conn, vm_id, action, {**(detail or {}), "forced": force}
                             if force else detail, vm=labels)
        return deleted

    # ---- the budget ledger and quotas -----------------------------------------------
    def set_quota(
        self, owner: str, *, vms_limit: int | None = None, ribosomes: int | None = None,
        atp_percent: float | None = None, clear: bool = False,
    ) -> dict[str, Any]:
        """Set (or with ``clear`` remove) the limits of an owner (a quota user); unspecified
        limits stay as they are. A limit below current use stops new VMs and allocations,
        nothing is destroyed. Returns the owner's row of `quotas`."""
        with self.transaction() as conn:
            ledger.set_quota(conn, owner, vms_limit=vms_limit, ribosomes=ribosomes,
                             atp_percent=atp_percent, clear=clear)
            audit.record(conn, "-", "quota", {
                "owner": owner, "clear": clear, "vms": vms_limit, "ribosomes": ribosomes,
                "atp_percent": atp_percent})
        with self.read() as conn:
            return ledger.quota_of(conn, owner)

    def quotas(self) -> list[dict[str, Any]]:
        """Every owner (quota user) with a quota or a live VM: limits (None: unlimited) and
        use."""
        with self.read() as conn:
            return ledger.quota_table(conn)

    def budget(self) -> dict[str, float]:
        """The host budget, what live VMs hold, and what is left (ribosomes; ATP in % of one
        cell's maximum)."""
        with self.read() as conn:
            return ledger.host_budget(conn)

    def set_budget(self, ribosomes: int | None = None, atp_percent: float | None = None) -> dict:
        """Change the host budget; refused below what live VMs already hold."""
        with self.transaction() as conn:
            if ledger.set_budget(conn, ribosomes, atp_percent):
                audit.record(conn, "-", "budget", {"ribosomes": ribosomes,
                                                   "atp_percent": atp_percent})
        return self.budget()

    # ---- metadata -------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.read() as conn:
            return metadata.get(conn, key)

    def set_meta_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless one is there; returns the value that is."""
        with self.transaction() as conn:
            return metadata.set_if_absent(conn, key, value)

    def installation_id(self) -> str:
        """This installation's id (made once, kept in the store): what XCP-ng VMs are tagged
        with, so teardown touches only VMs this installation made."""
        return self.set_meta_if_absent("installation_id", uuid.uuid4().hex)

    # ---- audit ----------------------------------------------------------------------
    def audit(
        self, vm_id: str, action: str, detail: dict | None = None, *, outcome: str = "ok"
    ) -> None:
        """Append an entry on its own (changes audit themselves in their own transaction)."""
        with self.transaction() as conn:
            audit.record(conn, vm_id, action, detail, outcome)

    def audit_log(
        self, vm_id: str | None = None, *, since: float | None = None,
        limit: int | None = 100,
    ) -> list[dict]:
        """Entries (for one VM, since a time), the most recent ``limit``, oldest first."""
        audit.check_limit(limit)
        with self.read() as conn:
            return audit.entries(conn, vm_id, since=since, limit=limit)
