"""The store's tables and its numbered migrations, identical on SQLite and PostgreSQL.

Each migration is a list of SQLAlchemy Core DDL steps (or plain portable SQL), applied in
order inside one transaction; ``meta.schema_version`` says how far a database has come.
Migration 1 is the layout of the first release; databases it created upgrade in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)

from bioxen_flows.errors import StoreError


class Damage(StoreError):
    """Content this version cannot read (the message is the cause); the store says where
    and the way out."""


DEFAULT_RIBOSOME_BUDGET = 100_000  # ribosomes the host hands out (~30 E. coli cells' worth)
DEFAULT_ATP_BUDGET_PERCENT = 1_000.0  # energy share: ten cells at 100 % of their maximum

metadata = MetaData()

vms = Table(
    "vms", metadata,
    Column("vm_id", String(64), primary_key=True),
    Column("biological_type", String(32), nullable=False),
    Column("vm_type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("config", Text, nullable=False),
    Column("snapshot", Text),
    Column("uptime_seconds", Float, nullable=False, default=0.0),
    Column("running_since", Float),
    Column("updated_at", Float, nullable=False),
    # migration 2: versioned records, per-VM leases, the budget ledger as columns
    Column("version", Integer, nullable=False, default=1),
    Column("lease_holder", String(128)),
    Column("lease_expires", Float),
    Column("ribosomes", Integer),
    Column("atp_percent", Float),
    # migration 3: the owner (user or project) whose quota the VM counts against
    Column("owner", String(64)),
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float),
    Column("vm_id", String(64)),
    Column("action", String(32)),
    Column("detail", Text),
    # migration 3: who did it, from which flow run, and whether it was refused
    Column("actor", String(160)),
    Column("flow_run_id", String(64)),
    Column("outcome", String(16)),
)

quotas = Table(
    "quotas", metadata,
    Column("owner", String(64), primary_key=True),
    Column("vms", Integer),  # NULL: no limit
    Column("ribosomes", Integer),
    Column("atp_percent", Float),
)

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text),
)

budget = Table(
    "budget", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("ribosomes", Integer, nullable=False),
    Column("atp_percent", Float, nullable=False),
)


def _v1(conn: Connection) -> None:
    """The first release's layout (allocations as a JSON column)."""
    statements = (
        """CREATE TABLE IF NOT EXISTS vms(
            vm_id VARCHAR(64) PRIMARY KEY, biological_type VARCHAR(32) NOT NULL,
            vm_type VARCHAR(16) NOT NULL, state VARCHAR(16) NOT NULL,
            created_at FLOAT NOT NULL, config TEXT NOT NULL, allocations TEXT NOT NULL,
            snapshot TEXT, uptime_seconds FLOAT NOT NULL DEFAULT 0, running_since FLOAT,
            updated_at FLOAT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS vms_created ON vms(created_at)",
        """CREATE TABLE IF NOT EXISTS audit(
            id INTEGER PRIMARY KEY, ts FLOAT, vm_id VARCHAR(64), action VARCHAR(32),
            detail TEXT)""",
        "CREATE INDEX IF NOT EXISTS audit_vm ON audit(vm_id, id)",
        "CREATE TABLE IF NOT EXISTS meta(key VARCHAR(64) PRIMARY KEY, value TEXT)",
    )
    for statement in statements:
        conn.execute(text(statement))
    if conn.dialect.name == "postgresql":  # INTEGER PRIMARY KEY autoincrements only on SQLite
        conn.execute(text("CREATE SEQUENCE IF NOT EXISTS audit_id_seq OWNED BY audit.id"))
        conn.execute(text("ALTER TABLE audit ALTER COLUMN id SET DEFAULT nextval('audit_id_seq')"))


def _v2(conn: Connection) -> None:
    """Versions, leases and the ledger: allocations move from JSON into two columns."""
    for column in ("version INTEGER NOT NULL DEFAULT 1", "lease_holder VARCHAR(128)",
                   "lease_expires FLOAT", "ribosomes INTEGER", "atp_percent FLOAT"):
        conn.execute(text(f"ALTER TABLE vms ADD COLUMN {column}"))
    old = text("SELECT vm_id, allocations FROM vms")
    for vm_id, allocations in conn.execute(old).all():
        try:
            values = json.loads(allocations or "{}") or {}
        except ValueError:
            values = {}
        conn.execute(
            vms.update().where(vms.c.vm_id == vm_id).values(
                ribosomes=values.get("ribosomes"), atp_percent=values.get("atp_percent")
            )
        )
    conn.execute(text("ALTER TABLE vms DROP COLUMN allocations"))
    budget.create(conn, checkfirst=True)
    conn.execute(budget.insert().values(
        id=1, ribosomes=DEFAULT_RIBOSOME_BUDGET, atp_percent=DEFAULT_ATP_BUDGET_PERCENT
    ))


def _v3(conn: Connection) -> None:
    """Owners and quotas; the audit log records actor, flow run and outcome."""
    conn.execute(text("ALTER TABLE vms ADD COLUMN owner VARCHAR(64)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS vms_owner ON vms(owner)"))
    for column in ("actor VARCHAR(160)", "flow_run_id VARCHAR(64)", "outcome VARCHAR(16)"):
        conn.execute(text(f"ALTER TABLE audit ADD COLUMN {column}"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts)"))
    quotas.create(conn, checkfirst=True)


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The schema version a database is at (0: empty)."""
    if not conn.dialect.has_table(conn, "meta"):
        return 0
    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Damage(f"its schema version {str(value)[:20]!r} is not a number") from None


def upgrade(conn: Connection) -> list[int]:
    """Apply the pending migrations in the caller's transaction; returns their numbers."""
    start = current_version(conn)
    applied = []
    for number in range(start + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[number - 1](conn)
        applied.append(number)
    if applied:
        if start == 0:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        else:
            conn.execute(meta.update().where(meta.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
    return applied
