"""StateStore: durable bio-VM records shared safely between processes."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bioxen_flows.errors import (
    BudgetError,
    ConflictError,
    InputError,
    NotFoundError,
    StoreError,
)
from bioxen_flows.state import StateStore, VMRecord, bioxen_home
from bioxen_flows.state.schema import SCHEMA_VERSION


def make_record(vm_id: str, created_at: float | None = None, **overrides) -> VMRecord:
    fields = dict(
        vm_id=vm_id,
        biological_type="syn3a",
        vm_type="basic",
        state="created",
        created_at=time.time() if created_at is None else created_at,
        config={"resources": {"ribosomes": 80, "genes": ["dnaA", "ftsZ"]}, "seed": 7},
        allocations={"ribosomes": 80, "atp_percent": 25.0},
    )
    fields.update(overrides)
    return VMRecord(**fields)


@pytest.fixture
def store(state_backend: str) -> StateStore:
    """The store of this test, on SQLite and on PostgreSQL (see conftest.state_backend)."""
    return StateStore()


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateStore:
    """For what only the SQLite file has (WAL, crash of a writer, file permissions)."""
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "home"))
    return StateStore()


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter with this test's environment (BIOXEN_HOME / DATABASE_URL)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_default_path_under_bioxen_home(sqlite_store: StateStore, tmp_path: Path) -> None:
    store = sqlite_store
    assert bioxen_home() == tmp_path / "home"
    assert store.backend == "sqlite"
    assert store.path == tmp_path / "home" / "state.db"
    assert store.path.exists()
    assert (store.path.parent.stat().st_mode & 0o777) == 0o700


def test_round_trip_nested_json(store: StateStore) -> None:
    snapshot = {"species": {"ribosomes": 1234.5, "mRNA": [1, 2, 3]}, "t": 60.0, "ok": None}
    record = make_record("vm1", snapshot=snapshot, uptime_seconds=12.5, running_since=99.0)
    store.insert_vm(record)
    loaded = store.get_vm("vm1")
    assert loaded == dataclasses.replace(record, version=1)
    assert loaded.snapshot == snapshot
    assert store.find_vm("missing") is None


def test_list_ordered_by_created_at(store: StateStore) -> None:
    for vm_id, created in [("b", 2.0), ("c", 3.0), ("a", 1.0)]:
        store.insert_vm(make_record(vm_id, created_at=created))
    assert [r.vm_id for r in store.list_vms()] == ["a", "b", "c"]


def test_duplicate_insert(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    with pytest.raises(ValueError, match="'vm1' already exists"):
        store.insert_vm(make_record("vm1", state="running"))
    assert store.get_vm("vm1").state == "created"


def test_get_unknown_lists_known_ids(store: StateStore) -> None:
    with pytest.raises(ValueError, match="known VMs: none"):
        store.get_vm("ghost")
    store.insert_vm(make_record("alpha", created_at=1.0))
    store.insert_vm(make_record("beta", created_at=2.0))
    with pytest.raises(ValueError, match="no VM 'ghost'; known VMs: alpha, beta"):
        store.get_vm("ghost")


def test_update_is_a_compare_and_swap(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    before = store.get_vm("vm1")
    assert before.version == 1
    updated = store.update_vm("vm1", expected_version=1, state="running", running_since=5.0)
    assert (updated.state, updated.version) == ("running", 2)
    assert store.get_vm("vm1") == updated
    assert updated.updated_at >= before.updated_at

    with pytest.raises(ConflictError, match="version 2 .*expected 1"):
        store.update_vm("vm1", expected_version=1, state="stopped")
    with pytest.raises(ConflictError, match="is running, expected paused"):
        store.update_vm("vm1", expected_state="paused", state="stopped")
    assert store.get_vm("vm1") == updated

    with pytest.raises(InputError, match="colour"):
        store.update_vm("vm1", colour="blue")
    with pytest.raises(TypeError):
        store.update_vm("vm1", vm_id="other")
    with pytest.raises(NotFoundError, match="no VM 'ghost'"):
        store.update_vm("ghost", state="running")


def test_compare_and_swap_race_has_one_winner(store: StateStore) -> None:
    store.insert_vm(make_record("vm1", allocations={}))
    wins: list[int] = []
    losses: list[int] = []

    def start(index: int) -> None:
        try:
            store.update_vm("vm1", expected_version=1, state="running",
                            allocations={"ribosomes": index + 1})
            wins.append(index)
        except ConflictError:
            losses.append(index)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(losses) == 7
    record = store.get_vm("vm1")
    assert record.allocations == {"ribosomes": wins[0] + 1}
    assert record.version == 2


def test_lease_serializes_writers(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    store.acquire_lease("vm1", "host:1:a")
    with pytest.raises(ConflictError, match="busy: host:1:a"):
        store.update_vm("vm1", state="running")
    with pytest.raises(ConflictError, match="busy"):
        store.acquire_lease("vm1", "host:2:b", wait=0.2)
    with pytest.raises(ConflictError, match="busy"):
        store.delete_vm("vm1")
    with pytest.raises(ConflictError, match="changed hands"):
        store.update_vm("vm1", lease="host:2:b", state="running")
    record = store.update_vm("vm1", lease="host:1:a", state="running")  # releases it
    assert record.version == 2
    assert store.acquire_lease("vm1", "host:2:b", wait=0).version == 2
    store.release_lease("vm1", "host:2:b")
    assert store.update_vm("vm1", state="paused").version == 3


def test_expired_lease_is_taken_over(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    store.acquire_lease("vm1", "elsewhere:1:a", ttl=0.05)
    time.sleep(0.1)
    store.acquire_lease("vm1", "elsewhere:2:b", wait=0)
    with pytest.raises(ConflictError, match="changed hands"):  # the old holder's late write
        store.update_vm("vm1", lease="elsewhere:1:a", state="running")
    assert store.get_vm("vm1").state == "created"


def test_lease_of_a_dead_local_process_is_taken_over(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    died = run_python("""
        import os
        from bioxen_flows.state import StateStore, new_lease_holder
        StateStore().acquire_lease("vm1", new_lease_holder())
        os._exit(9)   # like kill -9: the lease is never given back
    """)
    assert died.returncode == 9, died.stderr
    assert store.find_vm("vm1") is not None
    assert store.acquire_lease("vm1", "me:1:x", wait=0).vm_id == "vm1"
    store.acquire_lease("vm1", "me:1:x", wait=0)  # the holder may take it again


def test_delete_idempotent(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    assert store.budget()["ribosomes_allocated"] == 80
    assert store.delete_vm("vm1") is True
    assert store.budget()["ribosomes_allocated"] == 0
    assert store.delete_vm("vm1") is False
    assert store.find_vm("vm1") is None
    store.insert_vm(make_record("vm1"))  # id reusable after deletion


def test_audit_log(store: StateStore) -> None:
    store.audit("vm1", "create", {"biological_type": "syn3a"})
    store.audit("vm2", "create")
    store.audit("vm1", "start", {"at": 1.5})
    entries = store.audit_log("vm1")
    assert [(e["action"], e["detail"]) for e in entries] == [
        ("create", {"biological_type": "syn3a"}),
        ("start", {"at": 1.5}),
    ]
    assert all(e["vm_id"] == "vm1" and e["ts"] > 0 for e in entries)
    assert [e["vm_id"] for e in store.audit_log()] == ["vm1", "vm2", "vm1"]
    assert [e["action"] for e in store.audit_log(limit=2)] == ["create", "start"]


@pytest.mark.parametrize("key", ["password", "secret", "token", "private_key", "Password"])
def test_secrets_refused_at_any_depth(store: StateStore, key: str) -> None:
    config = {"storage": {"backends": [{"kind": "postgres", key: "hunter2"}]}}
    with pytest.raises(ValueError, match="environment or a Prefect Secret block"):
        store.insert_vm(make_record("vm1", config=config))
    assert store.list_vms() == []

    store.insert_vm(make_record("vm2"))
    with pytest.raises(ValueError, match="Prefect Secret"):
        store.update_vm("vm2", config=config)
    with pytest.raises(ValueError, match="Prefect Secret"):
        store.audit("vm2", "configure", {"db": {key: "hunter2"}})
    assert [(e["vm_id"], e["action"]) for e in store.audit_log()] == [("vm2", "create")]
    assert store.get_vm("vm2").config == make_record("x").config
    if store.backend == "sqlite":
        assert b"hunter2" not in b"".join(p.read_bytes() for p in store.path.parent.iterdir())


def test_empty_secret_values_allowed(store: StateStore) -> None:
    store.insert_vm(make_record("vm1", config={"password": "", "token": None}))
    assert store.get_vm("vm1").config == {"password": "", "token": None}


def test_wal_mode_and_schema(sqlite_store: StateStore) -> None:
    store = sqlite_store
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    StateStore(store.path)  # reopening is idempotent
    assert store.upgrade() == []
    assert integrity(store.path) == "ok"


V1_SCHEMA = """
CREATE TABLE vms(vm_id TEXT PRIMARY KEY, biological_type TEXT NOT NULL, vm_type TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, config TEXT NOT NULL,
    allocations TEXT NOT NULL, snapshot TEXT, uptime_seconds REAL NOT NULL DEFAULT 0,
    running_since REAL, updated_at REAL NOT NULL);
CREATE INDEX vms_created ON vms(created_at);
CREATE TABLE audit(id INTEGER PRIMARY KEY, ts REAL, vm_id TEXT, action TEXT, detail TEXT);
CREATE INDEX audit_vm ON audit(vm_id, id);
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO vms VALUES ('old', 'ecoli', 'basic', 'running', 1.0, '{"labels": {}}',
    '{"ribosomes": 3000, "atp_percent": 40.0}', NULL, 5.0, NULL, 2.0);
INSERT INTO audit(ts, vm_id, action, detail) VALUES (1.0, 'old', 'create', '{}');
"""


def test_first_release_store_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
    store = StateStore(db)
    record = store.get_vm("old")
    assert record.allocations == {"ribosomes": 3000, "atp_percent": 40.0}
    assert (record.state, record.version, record.uptime_seconds) == ("running", 1, 5.0)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.budget()["ribosomes_allocated"] == 3000
    assert [e["action"] for e in store.audit_log("old")] == ["create"]


def test_store_newer_than_the_code_is_refused(store: StateStore) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    try:
        with pytest.raises(StoreError, match="schema 99, newer than this BioXen"):
            store.upgrade()
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'")


def test_unreachable_database_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOXEN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="cannot use the state store at postgresql.*refused"):
        StateStore()
    monkeypatch.setenv("BIOXEN_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(InputError, match="unsupported BIOXEN_DATABASE_URL"):
        StateStore()


def test_damaged_rows_are_isolated(store: StateStore) -> None:
    from bioxen_flows.vm import create_bio_vm, force_destroy_vm, list_bio_vms, load_bio_vm

    create_bio_vm("good", "syn3a")
    store.insert_vm(make_record("bad"))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE vms SET config = 'null' WHERE vm_id = 'bad'")
    listed = {vm["vm_id"]: vm for vm in list_bio_vms()}
    assert listed["bad"]["state"] == "damaged"
    assert "config is NoneType" in listed["bad"]["damaged"]
    assert listed["good"]["state"] == "created" and listed["good"]["damaged"] is None
    with pytest.raises(StoreError, match="destroy --force bad"):
        load_bio_vm("bad")
    with pytest.raises(StoreError, match="damaged"):
        store.update_vm("bad", state="running")
    assert force_destroy_vm("bad") is True
    assert [vm["vm_id"] for vm in list_bio_vms()] == ["good"]
    assert force_destroy_vm("bad") is False


def test_budget_is_checked_where_allocations_are_written(store: StateStore) -> None:
    store.set_budget(ribosomes=1_000, atp_percent=100)
    store.insert_vm(make_record("a", allocations={"ribosomes": 600, "atp_percent": 60.0}))
    with pytest.raises(BudgetError, match="400 of 1000 available"):
        store.insert_vm(make_record("b", allocations={"ribosomes": 500}))
    assert store.find_vm("b") is None
    store.insert_vm(make_record("b", allocations={}))
    with pytest.raises(BudgetError, match="ATP allocation of 50 %"):
        store.update_vm("b", allocations={"atp_percent": 50.0})
    store.update_vm("b", allocations={"ribosomes": 400, "atp_percent": 40.0})
    with pytest.raises(BudgetError, match="below the 1000 ribosomes"):
        store.set_budget(ribosomes=999)
    assert store.budget() == {
        "ribosome_budget": 1000, "ribosomes_allocated": 1000, "ribosomes_available": 0,
        "atp_budget_percent": 100.0, "atp_percent_allocated": 100.0,
        "atp_percent_available": 0.0,
    }
    with pytest.raises(InputError):
        store.set_budget(ribosomes=-1)


def test_cross_process(store: StateStore) -> None:
    created = run_python("""
        import time
        from bioxen_flows.state import StateStore, VMRecord
        StateStore().insert_vm(VMRecord(
            vm_id="shared", biological_type="ecoli", vm_type="basic", state="created",
            created_at=time.time(), config={"genes": 4300}, allocations={}))
    """)
    assert created.returncode == 0, created.stderr
    updated = run_python("""
        from bioxen_flows.state import StateStore
        store = StateStore()
        store.update_vm("shared", expected_version=1, state="running",
                        snapshot={"t": 30.0, "species": {"ribosomes": 20000}}, action="start")
    """)
    assert updated.returncode == 0, updated.stderr
    record = store.get_vm("shared")
    assert (record.state, record.version) == ("running", 2)
    assert record.config == {"genes": 4300}
    assert record.snapshot == {"t": 30.0, "species": {"ribosomes": 20000}}
    assert [e["action"] for e in store.audit_log("shared")] == ["create", "start"]


WORKER = """
import sys, time
from pathlib import Path
from bioxen_flows.state import StateStore, VMRecord
worker, go = int(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
store = StateStore()
for i in range(50):
    vm_id = f"w{worker}-{i:02d}"
    store.insert_vm(VMRecord(vm_id=vm_id, biological_type="syn3a", vm_type="basic",
                             state="created", created_at=time.time(), config={"i": i},
                             allocations={}))
    store.update_vm(vm_id, expected_version=1, state="running",
                    allocations={"ribosomes": 1 + worker * 100 + i}, snapshot={"t": float(i)},
                    action="start", detail={"worker": worker})
"""


def test_concurrent_processes(store: StateStore, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(go)],
            stderr=subprocess.PIPE,
            encoding="utf-8",
        )
        for w in range(4)
    ]
    time.sleep(0.5)  # let all four start, then release them together
    go.touch()
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    records = {r.vm_id: r for r in store.list_vms()}
    assert len(records) == 200
    for w in range(4):
        for i in range(50):
            record = records[f"w{w}-{i:02d}"]
            assert (record.state, record.version) == ("running", 2)
            assert record.allocations == {"ribosomes": 1 + w * 100 + i}
            assert record.snapshot == {"t": float(i)}
    assert len(store.audit_log(limit=1000)) == 400  # each VM's create and start
    if store.backend == "sqlite":
        assert integrity(store.path) == "ok"


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_crash_mid_write_keeps_previous_value(sqlite_store: StateStore, how: str) -> None:
    store = sqlite_store
    db = store.path
    store.insert_vm(make_record("vm1", snapshot={"t": 1.0}))
    crash = "os._exit(1)" if how == "exit" else "os.kill(os.getpid(), signal.SIGKILL)"
    # A large uncommitted snapshot with a tiny page cache forces pages into the WAL file.
    result = run_python(
        f"""
        import json, os, signal, sqlite3, sys
        big = json.dumps({{"t": 2.0, "pad": "x" * 2_000_000}})
        conn = sqlite3.connect(sys.argv[1], isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA cache_size=1")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE vms SET snapshot = ?, state = 'running' WHERE vm_id = 'vm1'",
                     (big,))
        {crash}
        """,
        str(db),
    )
    assert result.returncode != 0
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 1_000_000  # the uncommitted write really reached the disk
    record = store.get_vm("vm1")
    assert record.snapshot == {"t": 1.0}
    assert record.state == "created"
    assert integrity(db) == "ok"
    store.update_vm("vm1", expected_version=1, state="running")  # the lock was released
    assert store.get_vm("vm1").state == "running"
