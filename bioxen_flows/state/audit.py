"""The audit log: who changed what, from which flow run, and whether it was refused.

Append-only: there is no function that changes or deletes an entry. Every function takes
the caller's connection, so an entry commits (or rolls back) with the change it records.
Listeners (the orchestration layer's Prefect events) hear each entry once its transaction
has committed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, select, text

from bioxen_flows.errors import InputError
from bioxen_flows.processes import HOST
from bioxen_flows.run_identity import current_flow_run_id
from bioxen_flows.state.database import after_commit
from bioxen_flows.state.encoding import check_no_secrets, dump
from bioxen_flows.state.schema import Damage, audit, vms
from bioxen_flows.validation import check_int

_log = logging.getLogger(__name__)
MAX_AUDIT_LIMIT = 1_000_000  # entries one listing shows; `bioxen audit --jsonl` streams all


@dataclass(frozen=True)
class AuditEntry:
    """One committed audit entry, as audit listeners receive it. ``vm`` is the VM's row as
    the change found it (organism, infrastructure, owner, labels), None when it has none."""

    vm_id: str
    action: str
    outcome: str
    detail: dict
    vm: dict | None


AuditListener = Callable[[AuditEntry], None]
_audit_listeners: list[AuditListener] = []


def add_audit_listener(listener: AuditListener) -> None:
    """Call ``listener(entry)`` for every audit entry once its transaction has committed (in
    the committing thread; it must not raise or block). The one place every VM change goes
    through: the orchestration layer turns them into Prefect events. Added once."""
    if listener not in _audit_listeners:
        _audit_listeners.append(listener)


def remove_audit_listener(listener: AuditListener) -> None:
    if listener in _audit_listeners:
        _audit_listeners.remove(listener)


def _notify(entry: AuditEntry) -> None:
    for listener in list(_audit_listeners):
        try:
            listener(entry)
        except Exception:  # noqa: BLE001 (a listener never fails the committed change)
            _log.warning("audit listener %r failed", listener, exc_info=True)


def actor() -> dict[str, str | None]:
    """Who is acting: OS user and host, and the flow run when inside one."""
    from bioxen_flows.settings import os_user

    return {"actor": f"{os_user()}@{HOST}"[:160], "flow_run_id": current_flow_run_id()}


def record(conn: Connection, vm_id: str, action: str, detail: dict | None,
           outcome: str = "ok", vm: dict | None = None) -> None:
    """Append an entry (``vm_id`` "-": about no VM). With audit listeners, they hear it once
    the transaction commits, with ``vm`` (the VM as it was; read here when not given)."""
    check_no_secrets(detail, "audit detail")
    conn.execute(audit.insert().values(
        ts=time.time(), vm_id=vm_id, action=action, detail=dump(detail or {}),
        outcome=outcome, **actor()))
    if _audit_listeners:
        if vm is None and vm_id != "-":
            vm = vm_labels(conn, vm_id)
        entry = AuditEntry(vm_id, action, outcome, dict(detail or {}), vm)
        after_commit(conn, lambda: _notify(entry))


def labels_for_listeners(conn: Connection, vm_id: str) -> dict | None:
    """`vm_labels`, read only when someone listens (before a change that removes the VM)."""
    return vm_labels(conn, vm_id) if _audit_listeners else None


def vm_labels(conn: Connection, vm_id: str) -> dict | None:
    """What an audit listener says about a VM: organism, infrastructure, owner (its quota
    user), the labels of its config (e.g. the flow run that made it). None when there is
    no such VM."""
    row = conn.execute(select(vms.c.biological_type, vms.c.vm_type, vms.c.owner, vms.c.config)
                       .where(vms.c.vm_id == vm_id)).first()
    if row is None:
        return None
    try:
        labels = (json.loads(row.config or "{}") or {}).get("labels") or {}
    except (ValueError, AttributeError):
        labels = {}
    return {"biological_type": row.biological_type, "vm_type": row.vm_type,
            "owner": row.owner, "labels": labels if isinstance(labels, dict) else {}}


def check_limit(limit: int | None) -> int | None:
    """How many entries one listing may show (None: all)."""
    if limit is not None:
        try:
            check_int("the audit limit", limit, 1, MAX_AUDIT_LIMIT)
        except InputError as exc:
            raise InputError(f"{exc} (export everything with `bioxen audit --jsonl`)") from None
    return limit


def entries(conn: Connection, vm_id: str | None = None, *, since: float | None = None,
            limit: int | None = 100) -> list[dict]:
    """Entries (for one VM, since a time), the most recent ``limit``, oldest first."""
    check_limit(limit)
    query = select(audit).order_by(audit.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    if vm_id is not None:
        query = query.where(audit.c.vm_id == vm_id)
    if since is not None:
        query = query.where(audit.c.ts >= since)
    found = []
    for row in reversed(conn.execute(query).all()):
        try:
            found.append({**row._asdict(), "ts": float(row.ts),
                          "detail": json.loads(row.detail or "{}")})
        except (TypeError, ValueError):
            raise Damage(f"audit entry {row.id} is unreadable") from None
    return found


def continue_ids(conn: Connection) -> None:
    """After entries were inserted with their own ids (a restore), new entries follow the
    highest (PostgreSQL's sequence; SQLite's INTEGER PRIMARY KEY does so by itself)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT setval('audit_id_seq', "
                          "COALESCE((SELECT MAX(id) FROM audit), 0) + 1, false)"))
