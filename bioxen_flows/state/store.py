"""SQLite-backed store of bio-VMs, so one process can resume what another created.

Every operation opens a short-lived connection: no connection is shared across threads or
processes, and WAL plus ``BEGIN IMMEDIATE`` transactions mean concurrent writers queue on
the lock instead of corrupting the file, and a crash mid-write loses only that write.

Secrets are never stored: ``config`` and audit ``detail`` dicts containing a non-empty
``password``, ``secret``, ``token`` or ``private_key`` key (at any depth) are refused. Such
values must come from the environment or a Prefect Secret block at run time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioxen_flows.errors import InputError, NotFoundError

SCHEMA_VERSION = 1
SECRET_KEYS = frozenset({"password", "secret", "token", "private_key"})
_JSON_FIELDS = ("config", "allocations", "snapshot")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vms(
        vm_id TEXT PRIMARY KEY,
        biological_type TEXT NOT NULL,
        vm_type TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        config TEXT NOT NULL,
        allocations TEXT NOT NULL,
        snapshot TEXT,
        uptime_seconds REAL NOT NULL DEFAULT 0,
        running_since REAL,
        updated_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS vms_created ON vms(created_at)",
    """CREATE TABLE IF NOT EXISTS audit(
        id INTEGER PRIMARY KEY, ts REAL, vm_id TEXT, action TEXT, detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS audit_vm ON audit(vm_id, id)",
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)",
)


def bioxen_home() -> Path:
    """State directory; read at call time so tests and users can redirect it."""
    return Path(os.environ.get("BIOXEN_HOME", "~/.bioxen")).expanduser()


@dataclass
class VMRecord:
    """One bio-VM as persisted; JSON columns round-trip as plain dicts."""

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


_COLUMNS = tuple(f.name for f in dataclasses.fields(VMRecord))
_UPDATABLE = frozenset(_COLUMNS) - {"vm_id"}


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


def _to_row(record: VMRecord) -> tuple:
    _check_no_secrets(record.config, "VM config")
    values = dataclasses.asdict(record)
    for name in _JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.dumps(values[name], sort_keys=True)
    return tuple(values[name] for name in _COLUMNS)


def _from_row(row: sqlite3.Row) -> VMRecord:
    values = {name: row[name] for name in _COLUMNS}
    for name in _JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return VMRecord(**values)


class StateStore:
    """Persistent VM registry plus audit log in ``bioxen_home() / "state.db"``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else bioxen_home() / "state.db"
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._enable_wal()
        with self._write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _enable_wal(self) -> None:
        """WAL is a property of the database file, set once. Switching needs a moment with no
        other connection, and SQLite reports 'locked' at once instead of waiting for it, so
        processes racing to create the store retry briefly."""
        deadline = time.monotonic() + 30
        while True:
            with self._connect() as conn:
                try:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                        return
                    conn.execute("PRAGMA journal_mode=WAL")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
            time.sleep(0.05)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short connection per operation: nothing is shared across threads/processes."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """IMMEDIATE takes the write lock up front, so read-modify-write cannot interleave."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def insert_vm(self, record: VMRecord) -> None:
        row = _to_row(record)
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO vms({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                    row,
                )
        except sqlite3.IntegrityError as exc:  # PRIMARY KEY: no check-then-insert race
            raise InputError(f"VM {record.vm_id!r} already exists") from exc

    def find_vm(self, vm_id: str) -> VMRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM vms WHERE vm_id = ?", (vm_id,)).fetchone()
        return None if row is None else _from_row(row)

    def get_vm(self, vm_id: str) -> VMRecord:
        record = self.find_vm(vm_id)
        if record is None:
            raise NotFoundError(self._unknown(vm_id))
        return record

    def _unknown(self, vm_id: str) -> str:
        with self._connect() as conn:
            ids = [r[0] for r in conn.execute("SELECT vm_id FROM vms ORDER BY created_at")]
        known = ", ".join(ids[:10]) + (f", ... ({len(ids)} total)" if len(ids) > 10 else "")
        return f"no VM {vm_id!r}; known VMs: {known or 'none'}"

    def list_vms(self) -> list[VMRecord]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM vms ORDER BY created_at, vm_id").fetchall()
        return [_from_row(row) for row in rows]

    def update_vm(
        self, vm_id: str, *, expected_state: str | None = None, **fields: Any
    ) -> VMRecord:
        """Atomic read-modify-write; ``expected_state`` makes lifecycle transitions race-safe."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown VM field(s): {', '.join(sorted(unknown))}")
        with self._write() as conn:
            row = conn.execute("SELECT * FROM vms WHERE vm_id = ?", (vm_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no VM {vm_id!r}")
            current = _from_row(row)
            if expected_state is not None and current.state != expected_state:
                raise InputError(f"VM {vm_id!r} is {current.state!r}, expected {expected_state!r}")
            updated = dataclasses.replace(current, **{"updated_at": time.time(), **fields})
            values = dict(zip(_COLUMNS, _to_row(updated), strict=True))
            del values["vm_id"]
            conn.execute(
                f"UPDATE vms SET {', '.join(f'{name} = ?' for name in values)} WHERE vm_id = ?",
                (*values.values(), vm_id),
            )
        return updated

    def delete_vm(self, vm_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM vms WHERE vm_id = ?", (vm_id,)).rowcount > 0

    def audit(self, vm_id: str, action: str, detail: dict | None = None) -> None:
        _check_no_secrets(detail, "audit detail")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO audit(ts, vm_id, action, detail) VALUES (?, ?, ?, ?)",
                (time.time(), vm_id, action, json.dumps(detail or {}, sort_keys=True)),
            )

    def audit_log(self, vm_id: str | None = None, limit: int = 100) -> list[dict]:
        """The most recent ``limit`` entries, oldest first."""
        where, args = ("WHERE vm_id = ?", (vm_id,)) if vm_id is not None else ("", ())
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [{**dict(row), "detail": json.loads(row["detail"])} for row in reversed(rows)]
