"""The state store: versioned bio-VM records, per-VM leases, the budget ledger, the audit log.

Two backends behind one interface (SQLAlchemy 2 Core): an SQLite file under
``BIOXEN_HOME`` (the embedded default) and PostgreSQL (``BIOXEN_DATABASE_URL``) for
flows that run on several workers or machines.

Concurrency, the rules every caller relies on:

- **Versioned records.** Every write is a compare-and-swap on the VM's ``version`` in one
  transaction that re-reads the row; a write whose version or lease no longer matches
  raises `ConflictError` and changes nothing. Nothing that returned success is overwritten.
- **Leases serialize work on one VM.** A caller that runs a program takes the VM's lease
  (waiting up to ``wait`` seconds), runs, and releases it in the write that saves the result.
  A lease expires after its TTL, or at once when its holder was a process on this host that
  no longer exists (``kill -9``).
- **The ledger is in the same transaction.** A write that changes allocations locks the
  budget (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL) and sums the
  other VMs' allocations before it commits, so the host budget holds across processes and
  machines.

Secrets are never stored: ``config`` and audit ``detail`` dicts containing a non-empty
``password``, ``secret``, ``token`` or ``private_key`` key (at any depth) are refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError

from bioxen_flows.errors import BudgetError, ConflictError, InputError, NotFoundError, StoreError
from bioxen_flows.processes import HOST as _HOST
from bioxen_flows.processes import process_identity, process_is_gone
from bioxen_flows.settings import get_settings
from bioxen_flows.state import schema
from bioxen_flows.state.schema import SCHEMA_VERSION, audit, budget, meta, quotas, vms
from bioxen_flows.vm_types import VM_TYPES

_log = logging.getLogger(__name__)
SECRET_KEYS = frozenset({"password", "secret", "token", "private_key"})
# "creating": inserted, its cell (packages, caps) not yet built; the creator holds its lease
# and turns it into "created" with the audit entry in one write. One whose creator is gone
# is an interrupted creation: never started, reaped by gc (`interrupted_creations`).
STATES = ("creating", "created", "running", "paused", "stopped")
LEASE_TTL_SECONDS = 600.0  # longest a program may hold a VM; bounded programs finish well within
_AUDITED = "bioxen_audited"  # conn.info key: this transaction's audit entries
MAX_AUDIT_LIMIT = 1_000_000  # entries one listing shows; `bioxen audit --jsonl` streams all
LEASE_WAIT_SECONDS = 120.0  # how long a caller queues for a busy VM before a ConflictError


def bioxen_home() -> Path:
    """State directory; read at call time so tests and users can redirect it."""
    return get_settings().home


def database_url() -> str:
    """``BIOXEN_DATABASE_URL`` when set (``postgresql://USER@HOST:5432/DB``), else SQLite."""
    return get_settings().database()


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
    owner: str | None = None  # the user or project whose quota the VM counts against


_UPDATABLE = frozenset({
    "state", "config", "allocations", "snapshot", "uptime_seconds", "running_since",
})


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


def _notify(entries: list[AuditEntry]) -> None:
    for entry in entries:
        for listener in list(_audit_listeners):
            try:
                listener(entry)
            except Exception:  # noqa: BLE001 (a listener never fails the committed change)
                _log.warning("audit listener %r failed", listener, exc_info=True)


def _check_no_secrets(value: Any, where: str) -> None:
    """Refuse secrets before they reach disk: the database is not a secret store."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS and item not in (None, ""):
                raise InputError(
                    f"refusing to store {key!r} in {where}: secrets are never persisted; "
                    "the password must come from the environment or a Prefect Secret block"
                )
            _check_no_secrets(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_no_secrets(item, where)


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, allow_nan=False)


def _row_values(record: VMRecord) -> dict[str, Any]:
    _check_no_secrets(record.config, "VM config")
    return {
        "vm_id": record.vm_id,
        "biological_type": record.biological_type,
        "vm_type": record.vm_type,
        "state": record.state,
        "created_at": record.created_at,
        "config": _dump(record.config),
        "snapshot": _dump(record.snapshot),
        "uptime_seconds": record.uptime_seconds,
        "running_since": record.running_since,
        "updated_at": record.updated_at,
        "version": record.version,
        "ribosomes": record.allocations.get("ribosomes"),
        "atp_percent": record.allocations.get("atp_percent"),
        "owner": record.owner,
    }


def _from_row(row: Any) -> VMRecord:
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
        config = json.loads(row.config) if row.config is not None else None
        snapshot = json.loads(row.snapshot) if row.snapshot is not None else None
        if not isinstance(config, dict):
            raise ValueError(f"config is {type(config).__name__}, not a mapping")
        if snapshot is not None and not isinstance(snapshot, dict):
            raise ValueError(f"snapshot is {type(snapshot).__name__}, not a mapping")
        if row.state not in STATES:
            raise ValueError(f"unknown state {row.state!r}")
        if row.vm_type not in VM_TYPES:
            raise ValueError(f"unknown vm_type {row.vm_type!r}")
    except ValueError as exc:
        return VMRecord(**{**base, "state": "damaged", "config": {}, "damaged": str(exc)})
    return VMRecord(**base, config=config, snapshot=snapshot)


def readable(record: VMRecord) -> VMRecord:
    """The record, or a `StoreError` saying how to remove it when it is damaged."""
    if record.damaged:
        raise StoreError(f"VM {record.vm_id!r} is damaged ({record.damaged}); "
                         f"remove it with `bioxen destroy --force {record.vm_id}`")
    return record


def actor() -> dict[str, str | None]:
    """Who is acting: OS user and host, and the Prefect flow run when inside one."""
    from bioxen_flows.settings import os_user

    return {"actor": f"{os_user()}@{_HOST}"[:160], "flow_run_id": current_flow_run_id()}


def current_flow_run_id() -> str | None:
    """The current flow run's id, without importing Prefect into processes that do not use it."""
    import sys

    if "prefect" in sys.modules:
        from prefect.runtime import flow_run

        run_id = flow_run.get_id()
        if run_id:
            return str(run_id)
    return os.environ.get("PREFECT__FLOW_RUN_ID") or None


def check_owner(owner: str) -> str:
    """An owner label: 1-64 of A-Z a-z 0-9 _ . - (it appears in messages and quotas)."""
    if not isinstance(owner, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", owner):
        raise InputError(f"owner must be 1-64 characters from A-Z a-z 0-9 _ . -, got {owner!r}")
    return owner


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


def _refuse_unfinished(record: VMRecord) -> VMRecord:
    """The record, unless its creation never finished (its creator is gone or it would
    hold the lease): such a VM has no packages, caps or guest, so it is never used."""
    if record.state == "creating":
        raise InputError(
            f"VM {record.vm_id!r} is not provisioned: its creation did not finish; remove "
            f"it with `bioxen gc --yes` (XCP-ng: `bioxen xcpng gc --yes`) or "
            f"`bioxen destroy --force {record.vm_id}`")
    return record


RECONNECT_SECONDS = 60.0  # how long a reached PostgreSQL may be unreachable before an error
_reached: set[str] = set()  # PostgreSQL URLs this process has connected to
_engines: dict[tuple[str, int], Engine] = {}
_upgraded: set[tuple[str, int]] = set()
_engines_lock = threading.Lock()


def _engine_for(url: str) -> Engine:
    """One engine (and connection pool) per database per process; forks get their own."""
    key = (url, os.getpid())
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(url)
            _engines[key] = engine
        return engine


# the drivers BioXen runs on (synchronous, installed with it); others are refused up front
DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername not in DRIVERS:
        raise InputError(
            f"unsupported BIOXEN_DATABASE_URL scheme {parsed.drivername!r}: use sqlite:///PATH "
            "or postgresql://USER@HOST:5432/DB (psycopg 3; async drivers are not supported)")
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy issues BEGIN itself (below)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            _enable_wal(cursor)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front: read-check-write cannot interleave
            immediate = conn.get_execution_options().get("immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # the user's plain URL: use psycopg 3
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=8)
    raise InputError(
        f"unsupported BIOXEN_DATABASE_URL scheme {parsed.drivername!r}: use sqlite:///PATH "
        "or postgresql://USER@HOST:5432/DB"
    )


def _enable_wal(cursor: Any) -> None:
    """WAL is a property of the database file, set once. Switching needs a moment with no
    other connection, and SQLite reports 'locked' at once instead of waiting, so processes
    racing to create the store retry briefly."""
    deadline = time.monotonic() + 30
    while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class StateStore:
    """Persistent VM registry, budget ledger and audit log (SQLite or PostgreSQL)."""

    def __init__(self, url: str | Path | None = None) -> None:
        if isinstance(url, Path) or (url is not None and "://" not in str(url)):
            url = f"sqlite:///{Path(url)}"
        self.url = url or database_url()
        try:
            make_url(self.url)
        except ArgumentError:  # the URL itself is not echoed: it may hold a password
            raise InputError(
                "BIOXEN_DATABASE_URL is not a database URL: use sqlite:///PATH or "
                "postgresql://USER@HOST:5432/DB"
            ) from None
        try:
            self.engine = _engine_for(self.url)
            key = (self.url, os.getpid())
            if key not in _upgraded:
                self.upgrade()
                _upgraded.add(key)
        except DBAPIError as exc:
            raise self._store_error(exc) from exc

    # ---- where it is ---------------------------------------------------------------
    @property
    def backend(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def path(self) -> Path | None:
        """The SQLite file (None on PostgreSQL)."""
        return Path(make_url(self.url).database or "") if self.backend == "sqlite" else None

    @property
    def display_url(self) -> str:
        """The URL with any password masked (for messages and logs)."""
        from bioxen_flows.redaction import mask_url

        return mask_url(self.url)

    # ---- transactions ---------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._errors(), self._connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction holding the write lock (SQLite) from its first statement."""
        with self._errors(), self._connect() as conn:
            conn = conn.execution_options(immediate=True)
            conn.info.pop(_AUDITED, None)  # left by a transaction that rolled back
            with conn.begin():
                yield conn
            committed = conn.info.pop(_AUDITED, [])
        if committed:
            _notify(committed)

    def _connect(self) -> Connection:
        """A connection. A PostgreSQL server this process has reached before and cannot
        reach now (a network blip between hosts of a cluster) is tried again for up to
        `RECONNECT_SECONDS`: nothing was sent yet, so nothing is half-written. A server
        never reached (a wrong URL) fails at once."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        delay = 0.25
        while True:
            try:
                conn = self.engine.connect()
            except OperationalError:
                if self.url not in _reached or time.monotonic() + delay > deadline:
                    raise
                logging.getLogger(__name__).warning(
                    "state store %s unreachable; trying again", self.display_url)
                time.sleep(delay)
                delay = min(2 * delay, 4.0)
                continue
            if self.backend == "postgresql":
                _reached.add(self.url)
            return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError:  # a constraint the caller relies on (e.g. duplicate ids)
            raise
        except schema.Damage as exc:
            raise self.damaged(str(exc)) from None
        except DBAPIError as exc:
            raise self._store_error(exc) from exc

    def _store_error(self, exc: DBAPIError) -> StoreError:
        """One line: damaged (the way out is a backup) or unreachable (the cause)."""
        text = _first_line(exc)
        if isinstance(exc, OperationalError) and not _DAMAGE.search(text):
            return StoreError(f"cannot use the state store at {self.display_url}: {text}")
        return self.damaged(text)

    def damaged(self, cause: str) -> StoreError:
        """The error for a store whose content this version cannot read, with the way out."""
        return StoreError(
            f"state store {self.display_url} is damaged ({cause[:200]}); move it aside and "
            "restore a backup into an empty store with `bioxen db restore FILE`")

    # ---- schema ---------------------------------------------------------------------
    def upgrade(self) -> list[int]:
        """Apply pending migrations (one transaction, one process at a time)."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
            version = schema.current_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the state store {self.display_url} is at schema {version}, newer than "
                    f"this BioXen ({SCHEMA_VERSION}); upgrade bioxen-flows"
                )
            return schema.upgrade(conn)

    def schema_version(self) -> int:
        with self._read() as conn:
            return schema.current_version(conn)

    # ---- VM records -----------------------------------------------------------------
    def insert_vm(
        self, record: VMRecord, *, lease: str | None = None, detail: dict | None = None,
        audit_create: bool = True,
    ) -> VMRecord:
        """Insert a new VM, optionally leased to its creator. The host budget and the owner's
        quota are checked, and the ``create`` audit entry written (unless the creator audits
        it when the VM is complete), in the same transaction; a refusal is audited too. A
        duplicate id changes nothing."""
        values = _row_values(dataclasses.replace(record, version=1))
        if lease is not None:
            values.update(lease_holder=lease, lease_expires=time.time() + LEASE_TTL_SECONDS)
        try:
            with self._write() as conn:
                self._check_ledger(conn, record, record.allocations, new=True)
                conn.execute(vms.insert().values(**values))
                if audit_create:
                    self._audit_row(conn, record.vm_id, "create", detail)
        except IntegrityError as exc:  # PRIMARY KEY: no check-then-insert race
            raise InputError(f"VM {record.vm_id!r} already exists") from exc
        except BudgetError as exc:
            self.audit(record.vm_id, "create", {**(detail or {}), "error": str(exc)},
                       outcome="refused")
            raise
        return dataclasses.replace(record, version=1)

    def find_vm(self, vm_id: str) -> VMRecord | None:
        with self._read() as conn:
            row = conn.execute(select(vms).where(vms.c.vm_id == vm_id)).first()
        return None if row is None else _from_row(row)

    def get_vm(self, vm_id: str) -> VMRecord:
        record = self.find_vm(vm_id)
        if record is None:
            raise NotFoundError(self._unknown(vm_id))
        return record

    def interrupted_creations(self) -> list[VMRecord]:
        """VMs whose creation never finished and never will: still "creating", and their
        creator's lease is free (its process is gone, or the lease expired)."""
        now = time.time()
        with self._read() as conn:
            rows = conn.execute(select(vms).where(vms.c.state == "creating")
                                .order_by(vms.c.created_at, vms.c.vm_id)).all()
        return [_from_row(row) for row in rows if not _creator_works(row, now)]

    def _unknown(self, vm_id: str) -> str:
        with self._read() as conn:
            ids = list(conn.execute(
                select(vms.c.vm_id).order_by(vms.c.created_at).limit(11)).scalars())
            total = conn.execute(select(func.count()).select_from(vms)).scalar()
        known = ", ".join(ids[:10]) + (f", ... ({total} total)" if total and total > 10 else "")
        return f"no VM {vm_id!r}; known VMs: {known or 'none'}"

    def list_vms(self) -> list[VMRecord]:
        with self._read() as conn:
            rows = conn.execute(select(vms).order_by(vms.c.created_at, vms.c.vm_id)).all()
        return [_from_row(row) for row in rows]

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
        with self._write() as conn:
            current = self._locked_row(conn, vm_id)
            now = time.time()
            if lease is not None and current.lease_holder != lease:
                raise ConflictError(
                    f"VM {vm_id!r} changed hands: this caller's lease expired and "
                    f"{current.lease_holder or 'no one'} holds it now; nothing was written"
                )
            if lease is None and _busy(current, now):
                raise ConflictError(
                    f"VM {vm_id!r} is busy: {current.lease_holder} is running on it; "
                    "nothing was written"
                )
            if expected_version is not None and current.version != expected_version:
                raise ConflictError(
                    f"VM {vm_id!r} changed under this caller: version {current.version} "
                    f"(state {current.state}), expected {expected_version}; nothing was written"
                )
            if expected_state is not None and current.state != expected_state:
                raise ConflictError(
                    f"VM {vm_id!r} is {current.state}, expected {expected_state}; "
                    "nothing was written"
                )
            updated = self._apply(conn, current, fields,
                                  release=not (lease is not None and keep_lease))
            if action is not None:
                self._audit_row(conn, vm_id, action, detail)
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
            if _busy(row, now):
                return None
            updated = self._apply(conn, row, change(_refuse_unfinished(readable(_from_row(row)))))
            if action is not None:
                self._audit_row(conn, vm_id, action, None)
            return updated

        return self._when_free(vm_id, wait, attempt)

    def _when_free(
        self,
        vm_id: str,
        wait: float,
        attempt: Callable[[Connection, Any, float], VMRecord | None],
    ) -> VMRecord:
        """Run ``attempt`` on the VM's locked row in a write transaction until it returns a
        record (None: the VM is busy), backing off; after ``wait`` s, `ConflictError`."""
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            with self._write() as conn:
                row = self._locked_row(conn, vm_id)
                record = attempt(conn, row, time.time())
                holder = row.lease_holder
            if record is not None:
                return record
            if time.monotonic() >= deadline:
                raise ConflictError(f"VM {vm_id!r} is busy: {holder} has held it for longer "
                                    f"than {wait:g} s; nothing was done, try again later")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _apply(
        self, conn: Connection, row: Any, fields: dict[str, Any], *, release: bool = True
    ) -> VMRecord:
        """Write ``fields`` over ``row`` as the next version (caller's transaction)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown VM field(s): {', '.join(sorted(unknown))}")
        record = readable(_from_row(row))
        updated = dataclasses.replace(
            record, **fields, updated_at=time.time(), version=row.version + 1
        )
        if "allocations" in fields and fields["allocations"] != record.allocations:
            self._check_ledger(conn, updated, updated.allocations, new=False)
        values = _row_values(updated)
        del values["vm_id"], values["created_at"]
        if release:
            values.update(lease_holder=None, lease_expires=None)
        conn.execute(vms.update().where(vms.c.vm_id == row.vm_id).values(**values))
        return updated

    def _locked_row(self, conn: Connection, vm_id: str) -> Any:
        query = select(vms).where(vms.c.vm_id == vm_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f"no VM {vm_id!r} (destroyed by another caller?)")
        return row

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
            if _busy(row, now) and row.lease_holder != holder:
                return None
            # a damaged or half-made VM is refused before it is leased
            record = _refuse_unfinished(readable(_from_row(row)))
            conn.execute(vms.update().where(vms.c.vm_id == vm_id).values(
                lease_holder=holder, lease_expires=now + ttl))
            return record

        return self._when_free(vm_id, wait, attempt)

    def release_lease(self, vm_id: str, holder: str) -> None:
        """Give the lease back without writing anything (a failed or read-only operation)."""
        with self._write() as conn:
            conn.execute(vms.update().where(vms.c.vm_id == vm_id)
                         .where(vms.c.lease_holder == holder)
                         .values(lease_holder=None, lease_expires=None))

    def delete_vm(
        self, vm_id: str, *, lease: str | None = None, force: bool = False,
        action: str | None = "destroy", detail: dict | None = None,
    ) -> bool:
        """Forget a VM (its allocations return to the budget) and audit ``action`` in the same
        transaction. Refused while another caller holds its lease, unless ``force``; deleting
        twice returns False."""
        with self._write() as conn:
            query = select(vms.c.lease_holder, vms.c.lease_expires).where(vms.c.vm_id == vm_id)
            row = conn.execute(query).first()
            if row is None:
                return False
            if not force and row.lease_holder != lease and _busy(row, time.time()):
                raise ConflictError(f"VM {vm_id!r} is busy: {row.lease_holder} is running on "
                                    "it; nothing was destroyed")
            labels = _vm_labels(conn, vm_id) if _audit_listeners and action else None
            deleted = conn.execute(vms.delete().where(vms.c.vm_id == vm_id)).rowcount > 0
            if deleted and action is not None:
                self._audit_row(conn, vm_id, action, {**(detail or {}), "forced": force}
                                if force else detail, vm=labels)
            return deleted

    # ---- the budget ledger ----------------------------------------------------------
    @staticmethod
    def _ledger(
        conn: Connection, *, lock: bool = False, exclude: str | None = None
    ) -> tuple[Any, Any]:
        """The budget row and the (ribosomes, ATP %) live VMs hold (but ``exclude``).
        ``lock`` takes the budget row's lock on PostgreSQL, which serializes every ledger
        change; SQLite's write transaction already holds the whole database."""
        query = select(budget).where(budget.c.id == 1)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        limits = conn.execute(query).first()
        if limits is None:
            raise schema.Damage("it has no host budget row")
        used = select(func.coalesce(func.sum(vms.c.ribosomes), 0),
                      func.coalesce(func.sum(vms.c.atp_percent), 0.0))
        if exclude is not None:
            used = used.where(vms.c.vm_id != exclude)
        return limits, conn.execute(used).one()

    def _check_ledger(
        self, conn: Connection, record: VMRecord, allocations: dict, *, new: bool
    ) -> None:
        """Refuse a new VM or allocations that would exceed the host budget or the owner's
        quota (caller's transaction, holding the ledger lock)."""
        limits, used = self._ledger(conn, lock=True, exclude=record.vm_id)
        self._check_budget(limits, used, allocations)
        if record.owner is not None:
            self._check_quota(conn, record, allocations, new=new)

    @staticmethod
    def _check_budget(limits: Any, used: Any, allocations: dict) -> None:
        ribosomes = allocations.get("ribosomes")
        if ribosomes is not None and used[0] + ribosomes > limits.ribosomes:
            raise BudgetError(
                f"ribosome allocation of {ribosomes} exceeds the host budget: "
                f"{limits.ribosomes - used[0]} of {limits.ribosomes} available"
            )
        atp = allocations.get("atp_percent")
        if atp is not None and used[1] + atp > limits.atp_percent + 1e-9:
            raise BudgetError(
                f"ATP allocation of {atp:g} % exceeds the host budget: "
                f"{limits.atp_percent - used[1]:g} % of {limits.atp_percent:g} % available"
            )

    @staticmethod
    def _check_quota(conn: Connection, record: VMRecord, allocations: dict, *, new: bool) -> None:
        owner = record.owner
        quota = conn.execute(select(quotas).where(quotas.c.owner == owner)).first()
        if quota is None:
            return
        count, ribosomes, atp = conn.execute(
            select(func.count(), func.coalesce(func.sum(vms.c.ribosomes), 0),
                   func.coalesce(func.sum(vms.c.atp_percent), 0.0))
            .where(vms.c.owner == owner).where(vms.c.vm_id != record.vm_id)).one()
        fix = f"raise it with `bioxen quota set --owner {owner} ...` or free some"
        if new and quota.vms is not None and count + 1 > quota.vms:
            raise BudgetError(f"owner {owner!r} is at its quota of {quota.vms} live VMs "
                              f"({count} in use); {fix}")
        wanted = allocations.get("ribosomes")
        if wanted is not None and quota.ribosomes is not None \
                and ribosomes + wanted > quota.ribosomes:
            raise BudgetError(f"ribosome allocation of {wanted} exceeds owner {owner!r}'s quota "
                              f"of {quota.ribosomes} ({ribosomes} in use); {fix}")
        wanted = allocations.get("atp_percent")
        if wanted is not None and quota.atp_percent is not None \
                and atp + wanted > quota.atp_percent + 1e-9:
            raise BudgetError(f"ATP allocation of {wanted:g} % exceeds owner {owner!r}'s quota "
                              f"of {quota.atp_percent:g} % ({atp:g} % in use); {fix}")

    # ---- quotas ---------------------------------------------------------------------
    def set_quota(
        self, owner: str, *, vms_limit: int | None = None, ribosomes: int | None = None,
        atp_percent: float | None = None, clear: bool = False,
    ) -> dict[str, Any]:
        """Set (or with ``clear`` remove) an owner's limits; unspecified limits stay as they
        are. A limit below current use stops new VMs and allocations, nothing is destroyed."""
        check_owner(owner)
        for name, value, kind, top in (("VM", vms_limit, int, 10**6),
                                       ("ribosome", ribosomes, int, 10**12),
                                       ("ATP", atp_percent, (int, float), 1e9)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)
                                      or not 0 <= value <= top):
                raise InputError(f"{name} quota must be a number in 0..{top:g}, got {value!r}")
        with self._write() as conn:
            current = conn.execute(select(quotas).where(quotas.c.owner == owner)).first()
            if clear:
                conn.execute(quotas.delete().where(quotas.c.owner == owner))
            else:
                values = {"vms": vms_limit, "ribosomes": ribosomes,
                          "atp_percent": None if atp_percent is None else float(atp_percent)}
                values = {k: v for k, v in values.items() if v is not None}
                if current is None:
                    conn.execute(quotas.insert().values(owner=owner, **values))
                elif values:
                    conn.execute(quotas.update().where(quotas.c.owner == owner).values(**values))
            self._audit_row(conn, "-", "quota", {
                "owner": owner, "clear": clear, "vms": vms_limit, "ribosomes": ribosomes,
                "atp_percent": atp_percent})
        return next((q for q in self.quotas() if q["owner"] == owner),
                    {"owner": owner, "vms_limit": None, "ribosomes_limit": None,
                     "atp_percent_limit": None})

    def quotas(self) -> list[dict[str, Any]]:
        """Every owner with a quota or a live VM: limits (None: unlimited) and use."""
        use = (select(vms.c.owner, func.count().label("n"),
                      func.coalesce(func.sum(vms.c.ribosomes), 0).label("ribosomes"),
                      func.coalesce(func.sum(vms.c.atp_percent), 0.0).label("atp"))
               .where(vms.c.owner.is_not(None)).group_by(vms.c.owner))
        with self._read() as conn:
            used = {row.owner: row for row in conn.execute(use)}
            limits = {row.owner: row for row in conn.execute(select(quotas))}
        rows = []
        for owner in sorted(set(used) | set(limits)):
            limit, u = limits.get(owner), used.get(owner)
            rows.append({
                "owner": owner,
                "vms": int(u.n) if u else 0,
                "vms_limit": limit.vms if limit else None,
                "ribosomes": int(u.ribosomes) if u else 0,
                "ribosomes_limit": limit.ribosomes if limit else None,
                "atp_percent": float(u.atp) if u else 0.0,
                "atp_percent_limit": limit.atp_percent if limit else None,
            })
        return rows

    def budget(self) -> dict[str, float]:
        """The host budget, what live VMs hold, and what is left (ribosomes; ATP in % of one
        cell's maximum)."""
        with self._read() as conn:
            limits, used = self._ledger(conn)
        return {
            "ribosome_budget": int(limits.ribosomes),
            "ribosomes_allocated": int(used[0]),
            "ribosomes_available": int(limits.ribosomes - used[0]),
            "atp_budget_percent": float(limits.atp_percent),
            "atp_percent_allocated": float(used[1]),
            "atp_percent_available": float(limits.atp_percent - used[1]),
        }

    def set_budget(self, ribosomes: int | None = None, atp_percent: float | None = None) -> dict:
        """Change the host budget; refused below what live VMs already hold."""
        if ribosomes is not None and (isinstance(ribosomes, bool) or not isinstance(
                ribosomes, int) or not 1 <= ribosomes <= 10**12):
            raise InputError(f"ribosome budget must be an integer in 1..1e12, got {ribosomes!r}")
        if atp_percent is not None and (isinstance(atp_percent, bool) or not isinstance(
                atp_percent, (int, float)) or not 0 < atp_percent <= 1e9):
            raise InputError(f"ATP budget must be a percentage in (0, 1e9], got {atp_percent!r}")
        with self._write() as conn:
            _, used = self._ledger(conn, lock=True)
            changes: dict[str, Any] = {}
            if ribosomes is not None:
                if ribosomes < used[0]:
                    raise BudgetError(f"ribosome budget {ribosomes} is below the {used[0]} "
                                      "ribosomes live VMs hold; free some first")
                changes["ribosomes"] = ribosomes
            if atp_percent is not None:
                if atp_percent < used[1] - 1e-9:
                    raise BudgetError(f"ATP budget {atp_percent:g} % is below the {used[1]:g} % "
                                      "live VMs hold; free some first")
                changes["atp_percent"] = float(atp_percent)
            if changes:
                conn.execute(budget.update().where(budget.c.id == 1).values(**changes))
                self._audit_row(conn, "-", "budget", {"ribosomes": ribosomes,
                                                      "atp_percent": atp_percent})
        return self.budget()

    # ---- metadata -------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless one is there; returns the value that is."""
        with self._write() as conn:
            current = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            if current is not None:
                return current
            conn.execute(meta.insert().values(key=key, value=value))
            return value

    def installation_id(self) -> str:
        """This installation's id (made once, kept in the store): what XCP-ng VMs are tagged
        with, so teardown touches only VMs this installation made."""
        return self.set_meta_if_absent("installation_id", uuid.uuid4().hex)

    # ---- audit ----------------------------------------------------------------------
    def audit(
        self, vm_id: str, action: str, detail: dict | None = None, *, outcome: str = "ok"
    ) -> None:
        """Append an entry on its own (changes audit themselves in their own transaction)."""
        with self._write() as conn:
            self._audit_row(conn, vm_id, action, detail, outcome)

    @staticmethod
    def _audit_row(conn: Connection, vm_id: str, action: str, detail: dict | None,
                   outcome: str = "ok", vm: dict | None = None) -> None:
        """The log is append-only: the store has no call that changes or deletes entries.
        With audit listeners, the entry is also kept for them (``vm``: the VM as it was,
        read here when not given) until the transaction commits."""
        _check_no_secrets(detail, "audit detail")
        conn.execute(audit.insert().values(
            ts=time.time(), vm_id=vm_id, action=action, detail=_dump(detail or {}),
            outcome=outcome, **actor()))
        if _audit_listeners:
            if vm is None and vm_id != "-":
                vm = _vm_labels(conn, vm_id)
            conn.info.setdefault(_AUDITED, []).append(
                AuditEntry(vm_id, action, outcome, dict(detail or {}), vm))

    def audit_log(
        self, vm_id: str | None = None, *, since: float | None = None,
        limit: int | None = 100,
    ) -> list[dict]:
        """Entries (for one VM, since a time), the most recent ``limit``, oldest first."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_AUDIT_LIMIT):
            raise InputError(f"the audit limit must be a whole number from 1 to "
                             f"{MAX_AUDIT_LIMIT:,}, got {limit!r} (export everything with "
                             "`bioxen audit --jsonl`)")
        query = select(audit).order_by(audit.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        if vm_id is not None:
            query = query.where(audit.c.vm_id == vm_id)
        if since is not None:
            query = query.where(audit.c.ts >= since)
        with self._read() as conn:
            rows = conn.execute(query).all()
        entries = []
        for row in reversed(rows):
            try:
                entries.append({**row._asdict(), "ts": float(row.ts),
                                "detail": json.loads(row.detail or "{}")})
            except (TypeError, ValueError):
                raise self.damaged(f"audit entry {row.id} is unreadable") from None
        return entries


def _vm_labels(conn: Connection, vm_id: str) -> dict | None:
    """What an audit listener says about a VM: organism, infrastructure, owner, the labels
    of its config (e.g. the flow run that made it). None when there is no such VM."""
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


def _busy(row: Any, now: float) -> bool:
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
    return holder.partition(":")[0] == _HOST or (row.lease_expires or 0.0) > now


# what a database says when its content (not the connection) is wrong
_DAMAGE = re.compile(r"not a database|malformed|corrupt|no such (table|column)|"
                     r"does not exist|already exists|duplicate column|datatype mismatch", re.I)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def dispose_engines() -> None:
    """Close every pooled connection of this process (before dropping a database)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _upgraded.clear()
