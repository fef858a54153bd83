"""Backup and restore of the state store as portable JSON lines.

One format for both backends, so a backup of an SQLite store restores into PostgreSQL and
back. The backup is taken in one read transaction (a snapshot: SQLite WAL read, PostgreSQL
REPEATABLE READ), so processes writing meanwhile never make it inconsistent. Leases are not
restored: the processes that held them are not coming back.

Line 1 is a header ``{"bioxen_backup": 1, "schema_version": N, ...}``; every other line is
``{"table": NAME, "row": {...}}``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, text

from bioxen_flows.errors import InputError, StoreError
from bioxen_flows.state.schema import SCHEMA_VERSION, audit, budget, meta, quotas, vms
from bioxen_flows.state.store import StateStore

FORMAT = 1
TABLES: tuple[Table, ...] = (meta, budget, quotas, vms, audit)
MAX_LINE_BYTES = 64 * 1024 * 1024  # a VM row with its snapshot is well under this


def backup(store: StateStore, path: Path) -> dict[str, int]:
    """Write a consistent copy of ``store`` to ``path`` (atomically); returns rows per table."""
    path = Path(path).expanduser()
    counts = dict.fromkeys((t.name for t in TABLES), 0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out, store.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                version = conn.execute(select(meta.c.value).where(
                    meta.c.key == "schema_version")).scalar()
                out.write(json.dumps({"bioxen_backup": FORMAT, "schema_version": int(version),
                                      "created_at": time.time(), "source": store.backend}) + "\n")
                for table in TABLES:
                    for row in conn.execute(select(table)).mappings():
                        out.write(json.dumps({"table": table.name, "row": dict(row)},
                                             allow_nan=False) + "\n")
                        counts[table.name] += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts


def _read(path: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in TABLES}
    columns = {t.name: {c.name for c in t.columns} for t in TABLES}
    with open(Path(path).expanduser(), encoding="utf-8") as lines:
        try:
            header = json.loads(lines.readline(MAX_LINE_BYTES))
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("bioxen_backup") != FORMAT:
            raise InputError(f"{path}: not a BioXen backup (JSON lines with a bioxen_backup "
                             "header, from `bioxen db backup`)")
        if header.get("schema_version") != SCHEMA_VERSION:
            raise InputError(f"{path}: a backup of schema {header.get('schema_version')}, this "
                             f"BioXen restores schema {SCHEMA_VERSION}")
        for number, line in enumerate(iter(lambda: lines.readline(MAX_LINE_BYTES), ""), 2):
            try:
                entry = json.loads(line)
                table, row = entry["table"], entry["row"]
                if table not in rows or not isinstance(row, dict) or set(row) - columns[table]:
                    raise ValueError(f"unknown table or columns: {table!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{number}: not a backup row ({exc})") from None
            rows[table].append(row)
    return header, rows


def restore(store: StateStore, path: Path, *, replace: bool = False) -> dict[str, int]:
    """Load a backup into ``store`` in one transaction. A store holding VMs or audit entries
    is refused unless ``replace`` (then everything in it is replaced)."""
    header, rows = _read(path)
    with store.engine.connect() as conn:
        conn = conn.execution_options(immediate=True)
        with conn.begin():
            if not replace:
                used = sum(conn.execute(select(func.count()).select_from(t)).scalar() or 0
                           for t in (vms, audit))
                if used:
                    raise InputError(f"the store {store.display_url} is not empty: restore "
                                     "into a new one, or pass --yes to replace its contents")
            for table in reversed(TABLES):
                conn.execute(delete(table))
            for table in TABLES:
                values = rows[table.name]
                if table is vms:
                    values = [{**row, "lease_holder": None, "lease_expires": None}
                              for row in values]
                if values:
                    conn.execute(insert(table), values)
            if conn.dialect.name == "postgresql":  # ids were inserted explicitly
                conn.execute(text("SELECT setval('audit_id_seq', "
                                  "COALESCE((SELECT MAX(id) FROM audit), 0) + 1, false)"))
            if not rows["budget"]:
                raise StoreError(f"{path}: the backup has no budget row")
    return {name: len(values) for name, values in rows.items()}
