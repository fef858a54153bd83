"""VM records and their leases, as functions of the caller's connection.

- **Versioned records.** Every write re-reads the row (``FOR UPDATE`` on PostgreSQL) and
  bumps its ``version``; `check_writable` refuses a write whose version, state or lease
  moved on, so nothing that returned success is overwritten.
- **Leases serialize work on one VM.** A caller that runs a program takes the VM's lease,
  runs, and releases it in the write that saves the result. A lease expires after its TTL,
  or at once when its holder was a process on this host that no longer exists
  (``kill -9``).
- **Allocations go through the ledger** (`ledger.check_allocation`) in the same
  transaction as the write that changes them.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from bioxen_flows.errors import ConflictError, InputError, NotFoundError, StoreError
from bioxen_flows.processes import HOST, process_identity, process_is_gone
from bioxen_flows.state import ledger
from bioxen_flows.state.encoding import check_no_secrets, dump
from bioxen_flows.state.schema import vms
from bioxen_flows.vm_types import VM_TYPES

# "creating": inserted, its cell (packages, caps) not yet built; the creator holds its lease
# and turns it into "created" with the audit entry in one write. One whose creator is gone
# is an interrupted creation: never started, reaped by gc (`interrupted_creations`).
STATES = ("creating", "created", "running", "paused", "stopped")
LEASE_TTL_SECONDS = 600.0  # longest a program may hold a VM; bounded programs finish well within
LEASE_WAIT_SECONDS = 120.0  # how long a caller queues for a busy VM before a ConflictError


@dataclass
class VMRecord:
    """One bio-VM as persisted. ``damaged`` names why a row could not be read (else None)."""

    vm_id: str
    biological_type: str
    vm_type: str
    state: str
    created_at: float
    config: dict
    allocations: dict
    snapshot: dict | None = None
    uptime_seconds: float = 0.0  # running time accumulated before ``running_since``
    running_since: float | None = None
    updated_at: float = field(default_factory=time.time)
    version: int = 1
    damaged: str | None = None
    owner: str | None = None  # the quota user (user or project) the VM counts against


UPDATABLE = frozenset({
    "state", "config", "allocations", "snapshot", "uptime_seconds", "running_since",
})


# ---- rows and records -----------------------------------------------------------------------
def _row_values(record: VMRecord) -> dict[str, Any]:
    check_no_secrets(record.config, "VM config")
    return {
        "vm_id": record.vm_id,
        "biological_type": record.biological_type,
        "vm_type": record.vm_type,
        "state": record.state,
        "created_at": record.created_at,
        "config": dump(record.config),
        "snapshot": dump(record.snapshot),
        "uptime_seconds": record.uptime_seconds,
        "running_since": record.running_since,
        "updated_at": record.updated_at,
        "version": record.version,
        "ribosomes": record.allocations.get("ribosomes"),
        "atp_percent": record.allocations.get("atp_percent"),
        "owner": record.owner,
    }


class _Unreadable(Exception):
    """Why a row is damaged (the message)."""


def from_row(row: Any) -> VMRecord:
    """A record, or one marked ``damaged`` (state 'damaged') naming what is wrong with it."""
    allocations = {
        k: v for k, v in (("atp_percent", row.atp_percent), ("ribosomes", row.ribosomes))
        if v is not None
    }
    base = dict(
        vm_id=row.vm_id, biological_type=row.biological_type, vm_type=row.vm_type,
        state=row.state, created_at=row.created_at, allocations=allocations,
        uptime_seconds=row.uptime_seconds or 0.0, running_since=row.running_since,
        updated_at=row.updated_at, version=row.version, owner=row.owner,
    )
    try:
        try:
            config = json.loads(row.config) if row.config is not None else None
            snapshot = json.loads(row.snapshot) if row.snapshot is not None else None
        except ValueError as exc:
            raise _Unreadable(str(exc)) from None
        if not isinstance(config, dict):
            raise _Unreadable(f"config is {type(config).__name__}, not a mapping")
        if snapshot is not None and not isinstance(snapshot, dict):
            raise _Unreadable(f"snapshot is {type(snapshot).__name__}, not a mapping")
        if row.state not in STATES:
            raise _Unreadable(f"unknown state {row.state!r}")
        if row.vm_type not in VM_TYPES:
            raise _Unreadable(f"unknown vm_type {row.vm_type!r}")
    except _Unreadable as exc:
        return VMRecord(**{**base, "state": "damaged", "config": {}, "damaged": str(exc)})
    return VMRecord(**base, config=config, snapshot=snapshot)


def readable(record: VMRecord) -> VMRecord:
    """The record, or a `StoreError` saying how to remove it when it is damaged."""
    if record.damaged:
        raise StoreError(f"VM {record.vm_id!r} is damaged ({record.damaged}); "
                         f"remove it with `bioxen destroy --force {record.vm_id}`")
    return record


def refuse_unfinished(record: VMRecord) -> VMRecord:
    """The record, unless its creation never finished (its creator is gone or it would
    hold the lease): such a VM has no packages, caps or guest, so it is never used."""
    if record.state == "creating":
        raise InputError(
            f"VM {record.vm_id!r} is not provisioned: its creation did not finish; remove "
            f"it with `bioxen gc --yes` (XCP-ng: `bioxen xcpng gc --yes`) or "
            f"`bioxen destroy --force {record.vm_id}`")
    return record


# ---- leases ---------------------------------------------------------------------------------
def new_lease_holder() -> str:
    """A lease holder id: the process's identity (``host:pid:start``, so a dead local holder
    is noticed even when its pid was reused) plus a nonce."""
    return f"{process_identity()}:{uuid.uuid4().hex[:12]}"


def _holder_is_dead(holder: str | None) -> bool:
    """A lease holder (``host:pid:start:nonce``, or an older ``host:pid:nonce``) that was a
    process of this host and is gone."""
    if not holder:
        return False
    parts = holder.split(":")
    start = parts[2] if len(parts) == 4 else ""
    return process_is_gone(":".join([parts[0], parts[1] if len(parts) > 1 else "", start]))


def busy(row: Any, now: float) -> bool:
    """Another caller holds the lease: it has not expired and its holder is not a dead
    process of this host."""
    return (
        row.lease_holder is not None
        and (row.lease_expires or 0.0) > now
        and not _holder_is_dead(row.lease_holder)
    )


def _creator_works(row: Any, now: float) -> bool:
    """The creator of a "creating" row may still finish it: it is a live process of this
    host (however long it takes), or another host's whose lease has not expired."""
    holder = row.lease_holder
    if not holder or _holder_is_dead(holder):
        return False
    return holder.partition(":")[0] == HOST or (row.lease_expires or 0.0) > now


def take_lease(conn: Connection, row: Any, holder: str, *, ttl: float, now: float
               ) -> VMRecord | None:
    """Lease the locked ``row`` to ``holder`` and return its record; None while another
    caller holds it. A damaged or half-made VM is refused before it is leased."""
    if busy(row, now) and row.lease_holder != holder:
        return None
    record = refuse_unfinished(readable(from_row(row)))
    conn.execute(vms.update().where(vms.c.vm_id == row.vm_id).values(
        lease_holder=holder, lease_expires=now + ttl))
    return record


def release_lease(conn: Connection, vm_id: str, holder: str) -> None:
    """Give ``holder``'s lease back without writing anything else."""
    conn.execute(vms.update().where(vms.c.vm_id == vm_id)
                 .where(vms.c.lease_holder == holder)
                 .values(lease_holder=None, lease_expires=None))


# ---- reading --------------------------------------------------------------------------------
def find(conn: Connection, vm_id: str) -> VMRecord | None:
    row = conn.execute(select(vms).where(vms.c.vm_id == vm_id)).first()
    return None if row is None else from_row(row)


def list_all(conn: Connection) -> list[VMRecord]:
    """Every VM, oldest first."""
    rows = conn.execute(select(vms).order_by(vms.c.created_at, vms.c.vm_id)).all()
    return [from_row(row) for row in rows]


def interrupted_creations(conn: Connection, now: float) -> list[VMRecord]:
    """VMs whose creation never finished and never will: still "creating", and their
    creator's lease is free (its process is gone, or the lease expired)."""
    rows = conn.execute(select(vms).where(vms.c.state == "creating")
                        .order_by(vms.c.created_at, vms.c.vm_id)).all()
    return [from_row(row) for row in rows if not _creator_works(row, now)]


def unknown(conn: Connection, vm_id: str) -> str:
    """The message for an id no VM has: it names the first VMs there are."""
    ids = list(conn.execute(select(vms.c.vm_id).order_by(vms.c.created_at).limit(11)).scalars())
    total = conn.execute(select(func.count()).select_from(vms)).scalar()
    known = ", ".join(ids[:10]) + (f", ... ({total} total)" if total and total > 10 else "")
    return f"no VM {vm_id!r}; known VMs: {known or 'none'}"


def locked_row(conn: Connection, vm_id: str) -> Any:
    """The VM's row, locked for this transaction (PostgreSQL; SQLite's write transaction
    holds the whole database)."""
    query = select(vms).where(vms.c.vm_id == vm_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFoundError(f"no VM {vm_id!r} (destroyed by another caller?)")
    return row


# ---- writing --------------------------------------------------------------------------------
def insert(conn: Connection, record: VMRecord, *, lease: str | None = None) -> VMRecord:
    """Insert a new VM at version 1 (leased to ``lease`` when given), within the host budget
    and its owner's quota. A duplicate id raises SQLAlchemy's `IntegrityError`."""
    record = dataclasses.replace(record, version=1)
    values = _row_values(record)
    if lease is not None:
        values.update(lease_holder=lease, lease_expires=time.time() + LEASE_TTL_SECONDS)
    ledger.check_allocation(conn, record.vm_id, record.owner, record.allocations, new=True)
    conn.execute(vms.insert().values(**values))
    return record


def check_writable(row: Any, *, lease: str | None, expected_version: int | None,
                   expected_state: str | None, now: float) -> None:
    """Refuse (`ConflictError`) a write to the locked ``row`` when the caller's lease was
    lost, another caller holds it, or its version or state moved on."""
    vm_id = row.vm_id
    if lease is not None and row.lease_holder != lease:
        raise ConflictError(
            f"VM {vm_id!r} changed hands: this caller's lease expired and "
            f"{row.lease_holder or 'no one'} holds it now; nothing was written"
        )
    if lease is None and busy(row, now):
        raise ConflictError(
            f"VM {vm_id!r} is busy: {row.lease_holder} is running on it; nothing was written"
        )
    if expected_version is not None and row.version != expected_version:
        raise ConflictError(
            f"VM {vm_id!r} changed under this caller: version {row.version} "
            f"(state {row.state}), expected {expected_version}; nothing was written"
        )
    if expected_state is not None and row.state != expected_state:
        raise ConflictError(
            f"VM {vm_id!r} is {row.state}, expected {expected_state}; nothing was written"
        )


def apply(conn: Connection, row: Any, fields: dict[str, Any], *, release: bool = True
          ) -> VMRecord:
    """Write ``fields`` over the locked ``row`` as the next version (releasing its lease
    unless told not to); changed allocations are checked against the ledger."""
    unknown_fields = set(fields) - UPDATABLE
    if unknown_fields:
        raise InputError(f"unknown VM field(s): {', '.join(sorted(unknown_fields))}")
    record = readable(from_row(row))
    updated = dataclasses.replace(
        record, **fields, updated_at=time.time(), version=row.version + 1
    )
    if "allocations" in fields and fields["allocations"] != record.allocations:
        ledger.check_allocation(conn, updated.vm_id, updated.owner, updated.allocations,
                                new=False)
    values = _row_values(updated)
    del values["vm_id"], values["created_at"]
    if release:
        values.update(lease_holder=None, lease_expires=None)
    conn.execute(vms.update().where(vms.c.vm_id == row.vm_id).values(**values))
    return updated


def delete(conn: Connection, vm_id: str, *, lease: str | None = None, force: bool = False
           ) -> bool:
    """Forget a VM (its allocations return to the budget); refused while another caller
    holds its lease, unless ``force``. False when there is no such VM."""
    row = conn.execute(select(vms.c.lease_holder, vms.c.lease_expires)
                       .where(vms.c.vm_id == vm_id)).first()
    if row is None:
        return False
    if not force and row.lease_holder != lease and busy(row, time.time()):
        raise ConflictError(f"VM {vm_id!r} is busy: {row.lease_holder} is running on "
                            "it; nothing was destroyed")
    return conn.execute(vms.delete().where(vms.c.vm_id == vm_id)).rowcount > 0


def clear_leases(row: dict[str, Any]) -> dict[str, Any]:
    """A row as restored: the processes that held leases are not coming back."""
    return {**row, "lease_holder": None, "lease_expires": None}
