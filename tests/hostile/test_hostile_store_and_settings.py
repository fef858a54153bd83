"""Issue 23, item 8: a damaged store, bad settings files, bad homes and out-of-range
operations options are one line on stderr (exit 1, no traceback, no SQL), naming the cause
and the way out.

Generated: each kind of damage x each command that reads the store (SQLite; the damage
that can be undone in place also on PostgreSQL); each bad settings file; each bad number.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from bioxen_flows.cli import main

READERS = [["list"], ["budget"], ["audit"], ["status", "v1"], ["create", "v2", "syn3a"],
           ["quota"]]
SQL_DAMAGE = {
    "no-budget-row": "DELETE FROM budget",
    "budget-row-id-2": "UPDATE budget SET id = 2",
    "schema-version-text": "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'",
    "no-schema-version": "DELETE FROM meta WHERE key = 'schema_version'",
    "no-vms-table": "DROP TABLE vms",
    "no-audit-table": "DROP TABLE audit",
    "no-budget-table": "DROP TABLE budget",
    "audit-ts-text": "UPDATE audit SET ts = 'yesterday'",
    "audit-detail-not-json": "UPDATE audit SET detail = '{not json'",
}
BYTE_DAMAGE = ["garbage", "truncated-header", "zeroed-header"]
# undone in place on PostgreSQL (the session's database is shared by the tests)
PG_DAMAGE = {
    "no-budget-row": ("DELETE FROM budget",
                      "INSERT INTO budget (id, ribosomes, atp_percent) VALUES (1, 100000, 1000)"),
    "schema-version-text": (
        "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'",
        "UPDATE meta SET value = '3' WHERE key = 'schema_version'"),
}


def one_line(capsys: pytest.CaptureFixture, argv: list[str], *, code: int = 1) -> str:
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bioxen: error: "), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, err
    assert not any(word in err for word in ("SELECT", "INSERT", "[SQL", "sqlalche.me")), err
    return lines[0]


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one VM, made once: each case damages a copy."""
    import os

    home = tmp_path_factory.mktemp("good")
    old = os.environ.get("BIOXEN_HOME")
    os.environ["BIOXEN_HOME"] = str(home)
    try:
        assert main(["create", "v1", "syn3a"]) == 0
    finally:
        if old is None:
            os.environ.pop("BIOXEN_HOME", None)
        else:
            os.environ["BIOXEN_HOME"] = old
    from bioxen_flows.state import dispose_engines

    dispose_engines()  # the WAL is folded into state.db: the copy is the whole store
    return home / "state.db"


@pytest.fixture
def damaged_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good_store: Path):
    def make(damage: str) -> Path:
        home = tmp_path / damage
        home.mkdir()
        db = home / "state.db"
        shutil.copy(good_store, db)
        if damage in SQL_DAMAGE:
            conn = sqlite3.connect(db)
            conn.execute(SQL_DAMAGE[damage])
            conn.commit()
            conn.close()
        else:
            data = bytearray(db.read_bytes())
            if damage == "garbage":
                data = bytearray(random.Random(23).randbytes(len(data)))
            elif damage == "truncated-header":
                data = data[:50]
            else:
                data[:100] = bytes(100)
            db.write_bytes(bytes(data))
        monkeypatch.setenv("BIOXEN_HOME", str(home))
        return db
    return make


@pytest.mark.parametrize("command", READERS, ids=" ".join)
@pytest.mark.parametrize("damage", [*SQL_DAMAGE, *BYTE_DAMAGE])
def test_a_damaged_sqlite_store_is_one_line_with_the_way_out(
    damaged_home, capsys, damage: str, command: list[str],
) -> None:
    damaged_home(damage)
    code = main(command)
    captured = capsys.readouterr()
    if code == 0:  # this command does not read what is damaged
        return
    assert code == 1
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err and "internal" not in lines[0]
    assert "damaged" in lines[0] and "bioxen db restore" in lines[0], lines[0]


def test_every_damage_is_seen_by_some_command(damaged_home, capsys):
    """The cases above are not vacuous: every damage makes at least one command refuse."""
    for damage in [*SQL_DAMAGE, *BYTE_DAMAGE]:
        damaged_home(damage)
        codes = [main(command) for command in READERS]
        capsys.readouterr()
        assert 1 in codes, damage


@pytest.mark.parametrize("damage", sorted(PG_DAMAGE))
def test_a_damaged_postgres_store_is_one_line(state_backend, capsys, damage, monkeypatch):
    if state_backend != "postgresql":
        pytest.skip("SQLite damage is covered above")
    from bioxen_flows.state import StateStore

    store = StateStore()
    do, undo = PG_DAMAGE[damage]
    with store.engine.begin() as conn:
        conn.exec_driver_sql(do)
    from bioxen_flows.state import database as store_module

    store_module._upgraded.clear()  # as a new process: the schema is checked again
    try:
        line = one_line(capsys, ["budget"])
        assert "damaged" in line and "bioxen db restore" in line
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(undo)


# ---- settings files, homes, operations options -----------------------------------------
SETTINGS_FILES = {
    "dangling-symlink": lambda p: p.symlink_to(p.parent / "nowhere.yaml"),
    "looping-symlink": lambda p: p.symlink_to(p),
    "duplicate-key": lambda p: p.write_text("owner: alice\nowner: bob\n"),
    "duplicate-log-level": lambda p: p.write_text("log_level: INFO\nlog_level: DEBUG\n"),
}


@pytest.mark.parametrize("kind", sorted(SETTINGS_FILES))
@pytest.mark.parametrize("command", [["list"], ["settings"], ["budget"]], ids=" ".join)
def test_a_bad_settings_file_is_one_line(tmp_path, monkeypatch, capsys, kind, command):
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path))
    path = tmp_path / "settings.development.yaml"
    SETTINGS_FILES[kind](path)
    line = one_line(capsys, command)
    assert str(path) in line
    if kind.startswith("duplicate"):
        assert "duplicate key" in line
    else:
        assert "symbolic link to nothing" in line


@pytest.mark.parametrize("variable", ["BIOXEN_HOME", "BIOXEN_CONFIG_DIR"])
@pytest.mark.parametrize("value", ["~nosuchuser/x", "~no-such-user-23"])
def test_a_home_of_no_user_is_one_line(monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)
    line = one_line(capsys, ["list"])
    assert variable in line and "no such user" in line


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "-inf", "1e300"])
def test_gc_min_age_out_of_range_is_refused(capsys, value):
    assert "--min-age" in one_line(capsys, ["gc", f"--min-age={value}"])


@pytest.mark.parametrize("value", ["-1", "0", str(2**63), str(10**6 + 1)])
def test_audit_limit_out_of_range_is_refused(state_backend, capsys, value):
    assert "audit limit" in one_line(capsys, ["audit", "--limit", value])


def test_an_empty_owner_is_refused_not_defaulted(state_backend, capsys):
    assert "owner must be" in one_line(capsys, ["create", "v9", "syn3a", "--owner="])
    from bioxen_flows.state import StateStore

    assert StateStore().find_vm("v9") is None


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+pg8000", "sqlite+aiosqlite",
                                    "postgresql+psycopg2cffi", "mysql", "oracle+oracledb"])
@pytest.mark.parametrize("command", [["list"], ["budget"], ["audit"]], ids=" ".join)
def test_a_database_url_with_another_driver_is_one_line(monkeypatch, capsys, driver, command):
    """Refused before any connection (no driver import, no async I/O)."""
    monkeypatch.setenv("BIOXEN_DATABASE_URL", f"{driver}://someone@127.0.0.1:1/nothing")
    line = one_line(capsys, command)
    assert f"unsupported BIOXEN_DATABASE_URL scheme {driver!r}" in line
