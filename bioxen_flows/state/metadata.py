"""Installation-wide values kept in the store (``meta``: the schema version, the
installation id), as functions of the caller's connection."""

from __future__ import annotations

from sqlalchemy import Connection, select

from bioxen_flows.state.schema import meta


def get(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()


def set_if_absent(conn: Connection, key: str, value: str) -> str:
    """Store ``value`` under ``key`` unless one is there; returns the value that is."""
    current = get(conn, key)
    if current is not None:
        return current
    conn.execute(meta.insert().values(key=key, value=value))
    return value
