"""StateStore: durable bio-VM records shared safely between processes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bioxen_flows.state import StateStore, VMRecord, bioxen_home


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
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateStore:
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "home"))
    return StateStore()


def run_python(code: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(db)],
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_default_path_under_bioxen_home(store: StateStore, tmp_path: Path) -> None:
    assert bioxen_home() == tmp_path / "home"
    assert store.path == tmp_path / "home" / "state.db"
    assert store.path.exists()
    assert (store.path.parent.stat().st_mode & 0o777) == 0o700


def test_round_trip_nested_json(store: StateStore) -> None:
    snapshot = {"species": {"ribosomes": 1234.5, "mRNA": [1, 2, 3]}, "t": 60.0, "ok": None}
    record = make_record("vm1", snapshot=snapshot, uptime_seconds=12.5, running_since=99.0)
    store.insert_vm(record)
    loaded = store.get_vm("vm1")
    assert loaded == record
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


def test_update_and_expected_state(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    before = store.get_vm("vm1")
    updated = store.update_vm("vm1", expected_state="created", state="running", running_since=5.0)
    assert updated.state == "running"
    assert store.get_vm("vm1") == updated
    assert updated.updated_at >= before.updated_at

    with pytest.raises(ValueError, match="'running'.*expected 'paused'"):
        store.update_vm("vm1", expected_state="paused", state="stopped", allocations={})
    assert store.get_vm("vm1") == updated

    with pytest.raises(TypeError, match="colour"):
        store.update_vm("vm1", colour="blue")
    with pytest.raises(TypeError):
        store.update_vm("vm1", vm_id="other")
    with pytest.raises(ValueError, match="no VM 'ghost'"):
        store.update_vm("ghost", state="running")


def test_expected_state_race_has_one_winner(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    wins: list[int] = []
    losses: list[int] = []

    def start(index: int) -> None:
        try:
            store.update_vm(
                "vm1", expected_state="created", state="running", allocations={"w": index}
            )
            wins.append(index)
        except ValueError:
            losses.append(index)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(losses) == 7
    assert store.get_vm("vm1").allocations == {"w": wins[0]}


def test_delete_idempotent(store: StateStore) -> None:
    store.insert_vm(make_record("vm1"))
    assert store.delete_vm("vm1") is True
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
    assert store.audit_log() == []
    assert store.get_vm("vm2").config == make_record("x").config
    assert b"hunter2" not in b"".join(p.read_bytes() for p in store.path.parent.iterdir())


def test_empty_secret_values_allowed(store: StateStore) -> None:
    store.insert_vm(make_record("vm1", config={"password": "", "token": None}))
    assert store.get_vm("vm1").config == {"password": "", "token": None}


def test_wal_mode_and_schema(store: StateStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            "1",
        )
    StateStore(store.path)  # reopening is idempotent
    assert integrity(store.path) == "ok"


def test_cross_process(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    created = run_python(
        """
        import sys, time
        from pathlib import Path
        from bioxen_flows.state import StateStore, VMRecord
        StateStore(Path(sys.argv[1])).insert_vm(VMRecord(
            vm_id="shared", biological_type="ecoli", vm_type="basic", state="created",
            created_at=time.time(), config={"genes": 4300}, allocations={}))
        """,
        db,
    )
    assert created.returncode == 0, created.stderr
    updated = run_python(
        """
        import sys
        from pathlib import Path
        from bioxen_flows.state import StateStore
        store = StateStore(Path(sys.argv[1]))
        store.update_vm("shared", expected_state="created", state="running",
                        snapshot={"t": 30.0, "species": {"ribosomes": 20000}})
        store.audit("shared", "start")
        """,
        db,
    )
    assert updated.returncode == 0, updated.stderr
    record = StateStore(db).get_vm("shared")
    assert record.state == "running"
    assert record.config == {"genes": 4300}
    assert record.snapshot == {"t": 30.0, "species": {"ribosomes": 20000}}
    assert [e["action"] for e in StateStore(db).audit_log("shared")] == ["start"]


WORKER = """
import sys, time
from pathlib import Path
from bioxen_flows.state import StateStore, VMRecord
db, worker, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
store = StateStore(db)
for i in range(50):
    vm_id = f"w{worker}-{i:02d}"
    store.insert_vm(VMRecord(vm_id=vm_id, biological_type="syn3a", vm_type="basic",
                             state="created", created_at=time.time(), config={"i": i},
                             allocations={}))
    store.update_vm(vm_id, expected_state="created", state="running",
                    allocations={"worker": worker, "i": i}, snapshot={"t": float(i)})
    store.audit(vm_id, "start", {"worker": worker})
"""


def test_concurrent_processes(tmp_path: Path) -> None:
    db, go = tmp_path / "state.db", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(w), str(go)],
            stderr=subprocess.PIPE,
            encoding="utf-8",
        )
        for w in range(4)
    ]
    time.sleep(0.5)  # let all four start, then release them together on a fresh database
    go.touch()
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    store = StateStore(db)
    records = {r.vm_id: r for r in store.list_vms()}
    assert len(records) == 200
    for w in range(4):
        for i in range(50):
            record = records[f"w{w}-{i:02d}"]
            assert record.state == "running"
            assert record.allocations == {"worker": w, "i": i}
            assert record.snapshot == {"t": float(i)}
    assert len(store.audit_log(limit=1000)) == 200
    assert integrity(db) == "ok"


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_crash_mid_write_keeps_previous_value(tmp_path: Path, how: str) -> None:
    if how == "sigkill" and not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    db = tmp_path / "state.db"
    store = StateStore(db)
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
        db,
    )
    assert result.returncode != 0
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 1_000_000  # the uncommitted write really reached the disk
    record = store.get_vm("vm1")
    assert record.snapshot == {"t": 1.0}
    assert record.state == "created"
    assert integrity(db) == "ok"
    store.update_vm("vm1", expected_state="created", state="running")  # lock was released
    assert store.get_vm("vm1").state == "running"
