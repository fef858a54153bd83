"""Backup and restore of the state store as verified, portable JSON lines.

One format for both backends, so a backup of an SQLite store restores into PostgreSQL and
back. The backup is taken in one read transaction (a snapshot: SQLite WAL read, PostgreSQL
REPEATABLE READ), so processes writing meanwhile never make it inconsistent. Leases are not
restored: the processes that held them are not coming back.

Line 1 is a header ``{"bioxen_backup": 2, "schema_version": N, "backend": ..., "created_at":
..., "tables": [...]}``; then one ``{"table": NAME, "row": {...}}`` per row; the last line is
a footer ``{"bioxen_backup_end": {"rows": {TABLE: N, ...}, "sha256": HEX}}``, the hash of
every byte before it. A file that was cut short, edited or damaged does not verify.

Restore reads the file twice, streaming (memory stays bounded by one line and one batch):
first it checks the footer's hash, then, in one transaction, it checks every row with the
rules the API itself applies (the store's entity functions and bounds, the VM and engine
checks: this module sits above `vm`, since a restored VM must be one BioXen can rebuild)
and inserts it. Any failure rolls everything back; the error is one line naming the line
number and field, never the row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from bioxen_flows.errors import BioXenError, InputError
from bioxen_flows.files import open_regular_file
from bioxen_flows.limits import VM_ID
from bioxen_flows.output_files import atomic_output, check_output_path, store_files
from bioxen_flows.state import audit as audit_log
from bioxen_flows.state import ledger, metadata
from bioxen_flows.state import vms as vm_records
from bioxen_flows.state.database import Database
from bioxen_flows.state.encoding import check_no_secrets
from bioxen_flows.state.schema import SCHEMA_VERSION, audit, budget, meta, quotas, vms

FORMAT = 2
TABLES: tuple[Table, ...] = (meta, budget, quotas, vms, audit)
MAX_LINE_BYTES = 16 * 1024 * 1024  # a VM row with its snapshot is well under this
MAX_BACKUP_BYTES = 4 * 1024**3
BATCH_ROWS = 500  # rows inserted per statement: bounds memory on restore


# ---- backup ---------------------------------------------------------------------------------
def backup(store: Database, path: Path) -> dict[str, int]:
    """Write a consistent, verifiable copy of ``store`` to ``path`` (atomically: a failure
    leaves any old file there as it was); returns rows per table. The store's own files
    and anything that is not a regular file are refused."""
    target = check_output_path(path, protected=store_files(store.path), what="backup file")
    counts = dict.fromkeys((t.name for t in TABLES), 0)
    digest = hashlib.sha256()
    with atomic_output(target, what="backup file", private=True) as out:
        def write(entry: dict[str, Any]) -> None:
            line = (json.dumps(entry, allow_nan=False) + "\n").encode()
            digest.update(line)
            out.write(line)

        with store.snapshot() as conn:
            version = metadata.get(conn, "schema_version")
            write({"bioxen_backup": FORMAT, "schema_version": int(version),
                   "backend": store.backend, "created_at": time.time(),
                   "tables": [t.name for t in TABLES]})
            for table in TABLES:
                rows = conn.execution_options(stream_results=True, yield_per=BATCH_ROWS)
                for row in rows.execute(select(table)).mappings():  # never all at once
                    try:
                        write({"table": table.name, "row": dict(row)})
                    except (ValueError, TypeError):  # inf; bytes where text belongs
                        raise store.damaged(f"a {table.name} row holds a value that is "
                                            "not a finite number or text") from None
                    counts[table.name] += 1
        out.write((json.dumps({"bioxen_backup_end": {
            "rows": counts, "sha256": digest.hexdigest()}}) + "\n").encode())
    return counts


# ---- reading --------------------------------------------------------------------------------
def _lines(stream: BinaryIO, path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, is it the last line), each line complete and bounded."""
    previous: tuple[int, bytes] | None = None
    for number, line in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), 1):
        if len(line) > MAX_LINE_BYTES:
            raise InputError(f"{path}:{number}: a line longer than {MAX_LINE_BYTES:,} bytes")
        if not line.endswith(b"\n"):
            raise InputError(f"{path}:{number}: the file ends mid-line (cut short?)")
        if previous is not None:
            yield (*previous, False)
        previous = (number, line)
    if previous is None:
        raise InputError(f"{path}: empty; not a BioXen backup")
    yield (*previous, True)


def _json(line: bytes, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        raise InputError(f"{path}:{number}: not a JSON line") from None


def _header(line: bytes, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or "bioxen_backup" not in header:
        raise InputError(f"{path}: not a BioXen backup (JSON lines with a bioxen_backup "
                         "header, from `bioxen db backup`)")
    version = header["bioxen_backup"]
    if version == 1:
        raise InputError(f"{path}: a backup in format 1, from an older BioXen (no row counts "
                         "or checksum, so it cannot be verified); take a new backup")
    if version != FORMAT:
        raise InputError(f"{path}: backup format {str(version)[:20]!r}; this BioXen reads "
                         f"format {FORMAT}")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path}: a backup of schema {str(header.get('schema_version'))[:20]}, "
                         f"this BioXen restores schema {SCHEMA_VERSION}")
    if header.get("tables") != [t.name for t in TABLES]:
        raise InputError(f"{path}:1: the header's table list is not this BioXen's")
    return header


def _verify(stream: BinaryIO, path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Pass 1: the header and the footer's row counts, once the hash matches."""
    digest = hashlib.sha256()
    header: dict[str, Any] = {}
    for number, line, last in _lines(stream, path):
        if number == 1:
            header = _header(line, path)
        if last:
            footer = _json(line, path, number) if number > 1 else None
            end = footer.get("bioxen_backup_end") if isinstance(footer, dict) else None
            if not isinstance(end, dict) or not isinstance(end.get("sha256"), str) \
                    or not isinstance(end.get("rows"), dict):
                raise InputError(f"{path}: no footer (the file was cut short or edited)")
            if not hmac.compare_digest(digest.hexdigest(), end["sha256"]):
                raise InputError(f"{path}: the checksum does not match (the file was changed "
                                 "or damaged)")
            return header, end["rows"]
        digest.update(line)
    raise InputError(f"{path}: no footer (the file was cut short or edited)")  # _lines
    # always yields a last line, so this is never reached; said for the type checker


# ---- the API's rules, per row -----------------------------------------------------------------
class _Bad(Exception):
    """A field that breaks a rule: (field, rule); the value is never part of the message."""


def _check_types(table: Table, row: dict[str, Any]) -> None:
    """Every column present, of its column's type and size (the schema is the rule)."""
    if set(row) != {c.name for c in table.columns}:
        extra = sorted(set(row) ^ {c.name for c in table.columns})
        raise _Bad(str(extra[0])[:64], "unknown or missing column")
    for column in table.columns:
        _check_value(column, row[column.name])


def _check_value(column: Column, value: Any) -> None:
    if value is None:
        if not column.nullable or column.primary_key:
            raise _Bad(column.name, "must not be empty")
        return
    if isinstance(column.type, Integer):
        if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**63:
            raise _Bad(column.name, "must be a whole number")
    elif isinstance(column.type, Float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise _Bad(column.name, "must be a finite number")
    elif not isinstance(value, str):
        raise _Bad(column.name, "must be text")
    elif isinstance(column.type, String) and column.type.length is not None \
            and len(value) > column.type.length:
        raise _Bad(column.name, f"longer than {column.type.length} characters")
    elif not value.isprintable():
        raise _Bad(column.name, "holds control characters (newlines, escapes)")


def _check_secret_free(row: dict[str, Any]) -> None:
    """No secret this process knows (the database password, ...) in any text field."""
    from bioxen_flows.redaction import redact

    for name, value in row.items():
        if isinstance(value, str) and redact(value) != value:
            raise _Bad(name, "holds a secret; secrets are never stored")


def _json_mapping(row: dict[str, Any], name: str, where: str) -> dict[str, Any] | None:
    if row[name] is None:
        return None
    try:
        value = json.loads(row[name])
    except ValueError:
        raise _Bad(name, "is not JSON") from None
    if not isinstance(value, dict):
        raise _Bad(name, "is not a JSON mapping")
    try:
        check_no_secrets(value, where)
    except InputError:
        raise _Bad(name, "holds a secret (password, secret, token or private_key); "
                         "secrets are never stored") from None
    return value


def _check_owner(row: dict[str, Any]) -> None:
    """An owner (a quota user) as `ledger.check_owner` accepts it."""
    try:
        ledger.check_owner(row["owner"])
    except InputError:
        raise _Bad("owner", "must be 1-64 characters from A-Z a-z 0-9 _ . -") from None


def _check_vm(row: dict[str, Any]) -> None:
    from bioxen_flows.config import ConfigManager
    from bioxen_flows.organisms.profiles import get_supported_biological_types
    from bioxen_flows.vm.base import check_allocation

    if not VM_ID.fullmatch(row["vm_id"]):
        raise _Bad("vm_id", "must be 1-64 characters from A-Z a-z 0-9 _ . -")
    if row["owner"] is not None:
        _check_owner(row)
    if row["biological_type"] not in get_supported_biological_types():
        raise _Bad("biological_type", "is not a supported organism")
    config = _json_mapping(row, "config", "VM config")
    _check_snapshot(_json_mapping(row, "snapshot", "VM snapshot"), row["biological_type"])
    damaged = vm_records.from_row(SimpleNamespace(**row)).damaged
    if damaged:
        raise _Bad("state" if "state" in damaged else "vm_type", "is not a valid value")
    ok, errors = ConfigManager().validate_config(config, row["vm_type"], row["biological_type"])
    if not ok:
        raise _Bad("config", f"is not a valid VM config ({errors[0][:120]!r})")
    for field, allocation in (("ribosomes", (None, row["ribosomes"])),
                              ("atp_percent", (row["atp_percent"], None))):
        try:
            check_allocation(*allocation)
        except InputError:
            raise _Bad(field, "is out of the allocation's range") from None
    for name in ("created_at", "updated_at", "uptime_seconds"):
        if row[name] < 0:
            raise _Bad(name, "must not be negative")
    if row["version"] < 1:
        raise _Bad("version", "must be at least 1")


def _check_snapshot(snapshot: dict[str, Any] | None, biological_type: str) -> None:
    """The engine's own snapshot rules (amounts, settings, packages), and the VM's organism."""
    from bioxen_flows.engine.cell import validate_snapshot

    if snapshot is None:
        return
    try:
        validate_snapshot(snapshot)
    except InputError as exc:  # its first words name the part, never the value
        part = re.match(r"(a )?cell snapshot(: \w+| lacks [\w, ]+)?", str(exc))
        raise _Bad("snapshot", f"is not a cell snapshot ({part.group(0) if part else 'invalid'})"
                   ) from None
    if snapshot["biological_type"] != biological_type:
        raise _Bad("snapshot", "is a cell of another organism than the VM")


def _bounded(row: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> None:
    """Numbers within the bounds the API's setters enforce (None: no limit)."""
    for name, (low, high) in bounds.items():
        if row[name] is not None and not low <= row[name] <= high:
            raise _Bad(name, f"must be from {low:g} to {high:g}")


def _check_row(table: Table, row: Any) -> None:
    if not isinstance(row, dict):
        raise _Bad("row", "is not a mapping")
    _check_types(table, row)
    _check_secret_free(row)
    if table is meta:
        if row["key"] == "schema_version" and row["value"] != str(SCHEMA_VERSION):
            raise _Bad("value", f"schema version must be {SCHEMA_VERSION}")
    elif table is budget:
        if row["id"] != 1:
            raise _Bad("id", "the host budget is the one row with id 1")
        _bounded(row, ledger.BUDGET_BOUNDS)
    elif table is quotas:
        _check_owner(row)
        _bounded(row, ledger.QUOTA_BOUNDS)
    elif table is vms:
        _check_vm(row)
    elif table is audit:
        if row["id"] < 1:
            raise _Bad("id", "must be at least 1")
        _json_mapping(row, "detail", "audit detail")


# ---- restore --------------------------------------------------------------------------------
def restore(store: Database, path: Path, *, replace: bool = False) -> dict[str, int]:
    """Load a verified backup into ``store`` in one transaction, or change nothing. A store
    holding VMs or audit entries is refused unless ``replace`` (then everything in it is
    replaced)."""
    path = Path(path).expanduser()
    with open_regular_file(path, max_bytes=MAX_BACKUP_BYTES, what="backup file") as stream:
        _, expected = _verify(stream, path)
        stream.seek(0)
        with store.transaction() as conn:
            if not replace:
                used = sum(conn.execute(select(func.count()).select_from(t)).scalar() or 0
                           for t in (vms, audit))
                if used:
                    raise InputError(f"the store {store.display_url} is not empty: restore "
                                     "into a new one, or pass --yes to replace its contents")
            for table in reversed(TABLES):
                conn.execute(delete(table))
            counts = _load(conn, stream, path)
            if counts != expected:
                raise InputError(f"{path}: the rows do not match the footer's counts")
            _check_whole(conn, path)
            audit_log.continue_ids(conn)  # ids were inserted explicitly
    return counts


def _load(conn: Connection, stream: BinaryIO, path: Path) -> dict[str, int]:
    """Pass 2: check and insert every row in batches; the hash is checked again at the end
    (the file may have changed since pass 1)."""
    by_name = {t.name: t for t in TABLES}
    counts = dict.fromkeys(by_name, 0)
    pending: dict[str, list[tuple[int, dict[str, Any]]]] = {name: [] for name in by_name}
    digest = hashlib.sha256()
    for number, line, last in _lines(stream, path):
        if last:
            footer = _json(line, path, number)
            end = footer.get("bioxen_backup_end") if isinstance(footer, dict) else None
            end = end if isinstance(end, dict) else {}
            if not hmac.compare_digest(digest.hexdigest(), str(end.get("sha256"))):
                raise InputError(f"{path}: the file changed while it was restored")
            break
        digest.update(line)
        if number == 1:
            continue
        entry = _json(line, path, number)
        name = entry.get("table") if isinstance(entry, dict) else None
        if name not in by_name or set(entry) != {"table", "row"}:
            raise InputError(f"{path}:{number}: not a backup row (unknown table or keys)")
        table = by_name[name]
        try:
            _check_row(table, entry["row"])
        except _Bad as bad:
            field, rule = bad.args
            raise InputError(f"{path}:{number}: {name}.{field}: {rule}") from None
        except BioXenError as exc:  # a validator's own refusal: its first line only
            raise InputError(f"{path}:{number}: {name}: {str(exc).splitlines()[0][:160]}") \
                from None
        pending[name].append((number, entry["row"]))
        counts[name] += 1
        if len(pending[name]) >= BATCH_ROWS:
            _insert(conn, table, pending[name], path)
    for name, rows in pending.items():
        _insert(conn, by_name[name], rows, path)
    return counts


def _insert(conn: Connection, table: Table, rows: list[tuple[int, dict[str, Any]]],
            path: Path) -> None:
    if not rows:
        return
    values = [row for _, row in rows]
    if table is vms:
        values = [vm_records.clear_leases(row) for row in values]
    try:
        with conn.begin_nested():
            conn.execute(insert(table), values)
    except IntegrityError:
        raise InputError(f"{path}:{rows[0][0]}-{rows[-1][0]}: {table.name}: a row repeats "
                         "the id (key) of another") from None
    rows.clear()


def _check_whole(conn: Connection, path: Path) -> None:
    """What single rows cannot show: the one budget and schema row, VMs within the budget."""
    if conn.execute(select(func.count()).select_from(budget)).scalar() != 1:
        raise InputError(f"{path}: the backup has no host budget row")
    if metadata.get(conn, "schema_version") is None:
        raise InputError(f"{path}: the backup has no schema_version meta row")
    limits, used = ledger.usage(conn)
    if used[0] > limits.ribosomes or used[1] > limits.atp_percent + 1e-9:
        raise InputError(f"{path}: its VMs hold more than its host budget "
                         f"({used[0]:,} ribosomes of {limits.ribosomes:,}, {used[1]:g} % ATP "
                         f"of {limits.atp_percent:g} %)")
