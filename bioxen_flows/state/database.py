"""Where the store is and how a caller gets a transaction on it (SQLite or PostgreSQL).

One engine (and connection pool) per database per process. `Database.transaction` is the
one way to write: a transaction that holds the write lock from its first statement
(``BEGIN IMMEDIATE`` on SQLite; PostgreSQL rows are locked by the entity functions'
``SELECT ... FOR UPDATE``), whose database errors become one-line `StoreError`\\ s, and
whose `after_commit` callbacks run once it has committed. The entity modules (`vms`,
`ledger`, `audit`, `metadata`) take the connection it yields.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError

from bioxen_flows.errors import InputError, StoreError
from bioxen_flows.settings import get_settings
from bioxen_flows.state import schema
from bioxen_flows.state.schema import SCHEMA_VERSION

_log = logging.getLogger(__name__)
RECONNECT_SECONDS = 60.0  # how long a reached PostgreSQL may be unreachable before an error
_AFTER_COMMIT = "bioxen_after_commit"  # conn.info key: this transaction's callbacks
# the drivers BioXen runs on (synchronous, installed with it); others are refused up front
DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")
_UNSUPPORTED = ("unsupported BIOXEN_DATABASE_URL scheme {!r}: use sqlite:///PATH or "
                "postgresql://USER@HOST:5432/DB")
# what a database says when its content (not the connection) is wrong
_DAMAGE = re.compile(r"not a database|malformed|corrupt|no such (table|column)|"
                     r"does not exist|already exists|duplicate column|datatype mismatch", re.I)

_reached: set[str] = set()  # PostgreSQL URLs this process has connected to
_engines: dict[tuple[str, int], Engine] = {}
_upgraded: set[tuple[str, int]] = set()  # (url, pid) whose schema this process has checked
_engines_lock = threading.Lock()


def bioxen_home() -> Path:
    """State directory; read at call time so tests and users can redirect it."""
    return get_settings().home


def database_url() -> str:
    """``BIOXEN_DATABASE_URL`` when set (``postgresql://USER@HOST:5432/DB``), else SQLite."""
    return get_settings().database()


def after_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once the transaction ``conn`` is in has committed (never when it
    rolls back). Callbacks must not raise."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


def dispose_engines() -> None:
    """Close every pooled connection of this process (before dropping a database)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _upgraded.clear()


class Database:
    """A state store's database: its URL, engine, schema check, and transactions."""

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
    def read(self) -> Iterator[Connection]:
        """A connection for reads (autobegun, never committed)."""
        with self._errors(), self._connect() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one moment (SQLite WAL read; PostgreSQL REPEATABLE
        READ) however long it lasts and whoever writes meanwhile."""
        with self._errors(), self._connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction holding the write lock (SQLite) from its first statement; its
        `after_commit` callbacks run once it has committed."""
        with self._errors(), self._connect() as conn:
            conn = conn.execution_options(immediate=True)
            conn.info.pop(_AFTER_COMMIT, None)  # left by a transaction that rolled back
            with conn.begin():
                yield conn
            callbacks = conn.info.pop(_AFTER_COMMIT, [])
        for callback in callbacks:
            callback()

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
                _log.warning("state store %s unreachable; trying again", self.display_url)
                time.sleep(delay)
                delay = min(2 * delay, 4.0)
                continue
            if self.backend == "postgresql":
                _reached.add(self.url)
            return conn

    # ---- errors ---------------------------------------------------------------------
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
        with self.transaction() as conn:
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
        with self.read() as conn:
            return schema.current_version(conn)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _engine_for(url: str) -> Engine:
    """One engine (and connection pool) per database per process; forks get their own."""
    key = (url, os.getpid())
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(url)
            _engines[key] = engine
        return engine


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername not in DRIVERS:
        raise InputError(_UNSUPPORTED.format(parsed.drivername)
                         + " (psycopg 3; async drivers are not supported)")
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
    raise InputError(_UNSUPPORTED.format(parsed.drivername))


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
