"""Issue 23, items 1 and 2: nothing the user asked to keep is destroyed by backup or export,
and restore takes only what verifies and what the API itself would have accepted.

Generated, not hand-listed: every output target that is the store or not a regular file x
(`db backup`, `export -o`); every special file as a restore source; every line cut (and
byte cuts near each) plus hypothesis byte cuts and bit flips; a table of row edits that
break one API rule each, re-signed so only the row checks can catch them; and hypothesis
edits of any field of any row to any JSON value, re-signed. Restore cases run on SQLite
and PostgreSQL, each against a store holding data; a refusal must leave it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bioxen_flows.backup import MAX_BACKUP_BYTES, TABLES, backup, restore
from bioxen_flows.errors import BioXenError, InputError
from bioxen_flows.state import StateStore
from tests.helpers import CREATED

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- backup and export onto the store or a special file: refused --------------------------
def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _symlink(target: Path) -> Callable[[Path, Path], Path]:
    def make(home: Path, scratch: Path) -> Path:
        link = scratch / "link"
        link.symlink_to(target if target.is_absolute() else home / target)
        return link
    return make


def _hardlink(home: Path, scratch: Path) -> Path:
    os.link(home / "state.db", scratch / "hard")
    return scratch / "hard"


def _fifo(home: Path, scratch: Path) -> Path:
    os.mkfifo(scratch / "fifo")
    return scratch / "fifo"


def _sock(home: Path, scratch: Path) -> Path:
    _socket(scratch / "sock")
    return scratch / "sock"


def _linked_dir(home: Path, scratch: Path) -> Path:
    (scratch / "d").symlink_to(home)
    return scratch / "d" / "state.db"


TARGETS: dict[str, Callable[[Path, Path], Path]] = {
    "store": lambda home, scratch: home / "state.db",
    "store-wal": lambda home, scratch: home / "state.db-wal",
    "store-shm": lambda home, scratch: home / "state.db-shm",
    "store-journal": lambda home, scratch: home / "state.db-journal",
    "store-via-dotdot": lambda home, scratch: home / ".." / home.name / "state.db",
    "store-via-linked-dir": _linked_dir,
    "symlink-to-store": _symlink(Path("state.db")),
    "hardlink-to-store": _hardlink,
    "fifo": _fifo,
    "symlink-to-fifo": lambda home, scratch: _symlink(_fifo(home, scratch))(home, scratch),
    "socket": _sock,
    "directory": lambda home, scratch: scratch,
    "dev-null": lambda home, scratch: Path("/dev/null"),
    "dev-full": lambda home, scratch: Path("/dev/full"),
    "dangling-symlink": _symlink(Path("/nonexistent/bioxen/x")),
    "looping-symlink": lambda home, scratch: _symlink(scratch / "link")(home, scratch),
}
COMMANDS = {"backup": lambda path: ["db", "backup", str(path)],
            "export": lambda path: ["export", CREATED, "-o", str(path)]}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short folder (a UNIX socket's path is at most 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="bx") as folder:
        yield Path(folder)


def _shape(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_mode, info.st_ino, info.st_size


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_backup_and_export_refuse_the_store_and_special_files(
    target: str, command: str, hostile_home: Path, scratch: Path, refused_cli: Callable,
) -> None:
    path = TARGETS[target](hostile_home, scratch)
    before = _shape(path), sorted(os.listdir(hostile_home)), sorted(os.listdir(scratch))
    line = refused_cli(*COMMANDS[command](path))
    assert any(word in line for word in ("state store", "not a regular file",
                                         "symbolic link", "Too many levels")), line
    after = _shape(path), sorted(os.listdir(hostile_home)), sorted(os.listdir(scratch))
    assert after == before  # the special file is still what it was; no file left behind


FLOAT_COLUMNS = [c.name for c in TABLES[3].columns if c.type.python_type is float]


@pytest.mark.parametrize("column", FLOAT_COLUMNS)
def test_a_failed_backup_leaves_the_old_file_and_no_part_file(
    column: str, tmp_path: Path
) -> None:
    """A row the format cannot hold (an infinity) fails the backup midway: the old backup
    stays byte for byte, no temporary file remains."""
    import sqlite3

    store = StateStore(tmp_path / "s.db")
    old = tmp_path / "old.jsonl"
    backup(store, old)
    content = old.read_bytes()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("INSERT INTO vms (vm_id, biological_type, vm_type, state, created_at, "
                     "config, updated_at, version) VALUES ('x', 'syn3a', 'basic', 'created', "
                     "1, '{}', 1, 1)")
        conn.execute(f"UPDATE vms SET {column} = 9e999")
    with pytest.raises(BioXenError) as info:
        backup(store, old)
    assert "\n" not in str(info.value)
    assert old.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl", "s.db", "s.db-shm",
                                                          "s.db-wal"]


# ---- restore: the stores cases run against ---------------------------------------------------
def dump(store: StateStore) -> list[tuple]:
    """Every row of every table, ordered: equal dumps mean an unchanged store."""
    rows = []
    with store.engine.connect() as conn:
        for table in TABLES:
            order = list(table.primary_key.columns)
            rows += [(table.name, *row) for row in conn.execute(select(table).order_by(*order))]
    return rows


@pytest.fixture(scope="module")
def base_backup(hostile_home: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The corpus store's backup (five VMs: running, paused, with packages), plus a quota,
    as parsed entries: header, rows, footer."""
    path = tmp_path_factory.mktemp("base") / "base.jsonl"
    backup(StateStore(hostile_home / "state.db"), path)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries.insert(-1, {"table": "quotas", "row": {"owner": "alice", "vms": 5,
                                                   "ribosomes": 50_000, "atp_percent": 300.0}})
    return entries


def sign(entries: list[dict], *, resign: bool = True) -> bytes:
    """A backup file of ``entries`` (header, rows, footer) with a footer that matches."""
    body = b"".join((json.dumps(e) + "\n").encode() for e in entries[:-1])
    if not resign:
        return body + (json.dumps(entries[-1]) + "\n").encode()
    counts = dict.fromkeys((t.name for t in TABLES), 0)
    for entry in entries[1:-1]:
        if isinstance(entry, dict) and entry.get("table") in counts:
            counts[entry["table"]] += 1
    end = {"bioxen_backup_end": {"rows": counts, "sha256": hashlib.sha256(body).hexdigest()}}
    return body + (json.dumps(end) + "\n").encode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def victim(request: pytest.FixtureRequest, base_backup: list[dict],
           tmp_path_factory: pytest.TempPathFactory) -> StateStore:
    """A store on each backend holding the base backup: what a refusal must leave alone."""
    if request.param == "postgresql":
        store = StateStore(request.getfixturevalue("postgres_url"))
    else:
        store = StateStore(tmp_path_factory.mktemp("victim") / "victim.db")
    path = tmp_path_factory.mktemp("seed") / "seed.jsonl"
    path.write_bytes(sign(base_backup))
    restore(store, path, replace=True)
    return store


@pytest.fixture
def refused_restore(victim: StateStore, tmp_path: Path) -> Callable[[bytes | Path], str]:
    """Restore ``data`` (bytes, or a path as is) over the victim: refused in one line,
    the store unchanged."""
    def run(data: bytes | Path) -> str:
        path = data if isinstance(data, Path) else tmp_path / "case.jsonl"
        if not isinstance(data, Path):
            path.write_bytes(data)
        before = dump(victim)
        with pytest.raises(BioXenError) as info:
            restore(victim, path, replace=True)
        message = str(info.value)
        assert "\n" not in message and len(message) < 400, message[:500]
        assert dump(victim) == before, "store changed by a refused restore"
        return message
    return run


def test_the_base_backup_restores_and_round_trips(victim: StateStore, base_backup: list[dict],
                                                 tmp_path: Path) -> None:
    """Not vacuous: the file the cases damage restores, and a backup of the result equals it."""
    path = tmp_path / "good.jsonl"
    path.write_bytes(sign(base_backup))
    counts = restore(victim, path, replace=True)
    assert counts["vms"] == 5 and counts["quotas"] == 1 and counts["budget"] == 1
    again = tmp_path / "again.jsonl"
    backup(victim, again)
    rows = [json.loads(line) for line in again.read_text().splitlines()[1:-1]]
    expected = [e for e in base_backup[1:-1]]
    norm = lambda e: (e["table"], json.dumps({**e["row"], "lease_holder": None,  # noqa: E731
                                              "lease_expires": None}
                                             if e["table"] == "vms" else e["row"],
                                             sort_keys=True))
    assert sorted(map(norm, rows)) == sorted(map(norm, expected))
    assert all(not r.damaged for r in victim.list_vms())


# ---- special files and sizes as the restore source ------------------------------------------
def _big(path: Path) -> Path:
    with open(path, "wb") as handle:  # sparse: costs no disk
        handle.truncate(MAX_BACKUP_BYTES + 1)
    return path


SOURCES: dict[str, Callable[[Path], Path]] = {
    "fifo": lambda d: (os.mkfifo(d / "f"), d / "f")[1],
    "socket": lambda d: (_socket(d / "s"), d / "s")[1],
    "directory": lambda d: d,
    "dev-zero": lambda d: Path("/dev/zero"),
    "dev-null": lambda d: Path("/dev/null"),
    "symlink-to-fifo": lambda d: (os.mkfifo(d / "f"), (d / "l").symlink_to(d / "f"),
                                  d / "l")[2],
    "too-big-sparse": lambda d: _big(d / "big.jsonl"),
    "empty": lambda d: ((d / "e").write_bytes(b""), d / "e")[1],
    "missing": lambda d: d / "missing.jsonl",
    "dangling-symlink": lambda d: ((d / "l").symlink_to(d / "nothing"), d / "l")[1],
    "binary-garbage": lambda d: ((d / "g").write_bytes(bytes(range(256)) * 8), d / "g")[1],
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_restore_refuses_special_and_oversized_sources(
    source: str, scratch: Path, refused_restore: Callable
) -> None:
    message = refused_restore(SOURCES[source](scratch))  # a FIFO must not hang
    assert "backup" in message


# ---- truncated and tampered files -------------------------------------------------------------
def test_every_line_cut_is_refused(base_backup: list[dict], refused_restore: Callable) -> None:
    """Cut at every line boundary, one byte before and one after (3 x lines cases)."""
    data = sign(base_backup)
    ends = [i + 1 for i, byte in enumerate(data) if byte == 0x0A][:-1]
    cuts = sorted({cut for end in ends for cut in (end - 1, end, end + 1)})
    for cut in cuts:
        message = refused_restore(data[:cut])
        assert any(w in message for w in ("cut short", "mid-line", "footer", "not a BioXen")), \
            (cut, message)
    assert len(cuts) >= 3 * len(base_backup) - 6


@FUZZ
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_byte_cuts_are_refused(fraction: float, base_backup: list[dict],
                               refused_restore: Callable) -> None:
    data = sign(base_backup)
    refused_restore(data[:int(len(data) * fraction)])


@FUZZ
@given(position=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
       bit=st.integers(min_value=0, max_value=7))
def test_bit_flips_are_refused(position: float, bit: int, base_backup: list[dict],
                               refused_restore: Callable) -> None:
    data = bytearray(sign(base_backup))
    data[int(len(data) * position)] ^= 1 << bit
    refused_restore(bytes(data))


def test_an_edit_without_a_new_checksum_is_refused(base_backup: list[dict],
                                                   refused_restore: Callable) -> None:
    entries = json.loads(json.dumps(base_backup))
    budget_row = next(e for e in entries if e.get("table") == "budget")
    budget_row["row"]["ribosomes"] = 10**12
    assert "checksum" in refused_restore(sign(entries, resign=False))


def test_a_backup_from_an_older_version_is_refused_in_one_line(
    base_backup: list[dict], refused_restore: Callable
) -> None:
    old = [{**base_backup[0], "bioxen_backup": 1}, *base_backup[1:-1]]
    body = b"".join((json.dumps(e) + "\n").encode() for e in old)
    assert "older BioXen" in refused_restore(body)


# ---- rows that break one API rule each (re-signed: only the row checks can catch them) -----
SECRET = "Backup-S3cret-9f2c"

# (table, field, value); a VM case edits the first VM row. None as table-level edits below.
ROW_EDITS: list[tuple[str, str, Any]] = [
    *[("vms", "vm_id", v) for v in ("../../etc\nx", "a" * 5000, "", "a b", "x/y", None, 7)],
    *[("vms", "owner", v) for v in ("ali\nce", "o" * 65, "", "-lead", 3)],
    *[("quotas", "owner", v) for v in ("bob\nx", "", "q" * 65)],
    *[("quotas", f, v) for f in ("vms", "ribosomes", "atp_percent") for v in (-1, "ten")],
    ("quotas", "vms", 10**7), ("quotas", "atp_percent", 1e12),
    *[("vms", "ribosomes", v) for v in (1e9, -1e6, -1_000_000, 0, 10**9 + 1, 10**9, "500")],
    *[("vms", "atp_percent", v) for v in (101, -1, 0, "50", 1e308)],
    *[("budget", f, v) for f, v in (("id", 2), ("ribosomes", 0), ("ribosomes", -1),
                                    ("ribosomes", "lots"), ("ribosomes", 10**13),
                                    ("atp_percent", 0), ("atp_percent", 1e30),
                                    ("atp_percent", "x"))],
    *[("meta", "value", v) for v in ("999", "abc", "", None)],
    ("meta", "key", "schema\nversion"),
    *[("vms", f, "now") for f in ("created_at", "updated_at", "uptime_seconds", "version",
                                  "running_since")],
    *[("audit", f, "yesterday") for f in ("id", "ts")],
    ("audit", "id", 0), ("audit", "id", True), ("vms", "version", 0),
    ("vms", "created_at", -5.0), ("vms", "uptime_seconds", -1),
    *[("vms", "state", v) for v in ("hacked", "", None)],
    *[("vms", "vm_type", v) for v in ("kvm", None)],
    *[("vms", "biological_type", v) for v in ("dragon", "../x")],
    *[("vms", "config", v) for v in ("{not json", "[]", "null", '{"resources": {"ribosomes": -4}}',
                                     '{"unknown_key": 1}', '{"placement": {"ip": "1.2.3.4"}}',
                                     json.dumps({"xcpng_config": {"password": SECRET}}),
                                     json.dumps({"labels": {"token": SECRET}}), None)],
    *[("vms", "snapshot", v) for v in ("[1, 2]", "{bad", json.dumps({"secret": SECRET}))],
    *[("vms", "snapshot", patch) for patch in (  # the engine's own snapshot rules
        {"species": {"z": 1e20}}, {"species": {"z": -5}}, {"settings": {"../x": 1}},
        {"time": -1}, {"biological_type": "ecoli"}, {"biological_type": "dragon"},
        {"packages": [{"name": "x", "copies": 10**6}]}, {"stochastic": "yes"})],
    *[("audit", "detail", v) for v in (json.dumps({"password": SECRET}),
                                       json.dumps({"a": [{"token": SECRET}]}),
                                       json.dumps({"private_key": "-----BEGIN"}),
                                       "{not json", "[]")],
    ("audit", "actor", f"root@host {SECRET}"),  # a secret this process knows (registered)
    ("audit", "action", "x\ny"), ("audit", "vm_id", "v" * 65), ("audit", "outcome", 5),
    ("vms", "lease_holder", "h" * 200), ("vms", "no_such_column", 1),
]
TABLE_EDITS: dict[str, Callable[[list[dict]], list[dict]]] = {
    "no-meta-row": lambda e: [x for x in e if x.get("table") != "meta"],
    "no-budget-row": lambda e: [x for x in e if x.get("table") != "budget"],
    "two-budget-rows": lambda e: [*e[:-1], next(x for x in e if x.get("table") == "budget"),
                                  e[-1]],
    "vm-twice": lambda e: [*e[:-1], next(x for x in e if x.get("table") == "vms"), e[-1]],
    "audit-id-twice": lambda e: [*e[:-1], next(x for x in e if x.get("table") == "audit"),
                                 e[-1]],
    "unknown-table": lambda e: [*e[:-1], {"table": "vms; DROP TABLE vms", "row": {}}, e[-1]],
    "row-not-a-mapping": lambda e: [*e[:-1], {"table": "vms", "row": [1, 2]}, e[-1]],
    "extra-key": lambda e: [*e[:-1], {"table": "meta", "row": {"key": "k", "value": "v"},
                                      "x": 1}, e[-1]],
    "line-not-an-object": lambda e: [*e[:-1], [1, 2, 3], e[-1]],
    "missing-column": lambda e: [*e[:-1], {"table": "quotas", "row": {"owner": "z"}}, e[-1]],
    "vms-over-budget": lambda e: [{**x, "row": {**x["row"], "ribosomes": 1000}}
                                  if x.get("table") in ("budget", "vms") else x for x in e],
    "header-tables-reordered": lambda e: [{**e[0], "tables": e[0]["tables"][::-1]}, *e[1:]],
    "header-schema-999": lambda e: [{**e[0], "schema_version": 999}, *e[1:]],
    "header-format-abc": lambda e: [{**e[0], "bioxen_backup": "abc"}, *e[1:]],
}


def _edited(entries: list[dict], table: str, field: str, value: Any) -> list[dict]:
    entries = json.loads(json.dumps(entries))
    row = next(e for e in entries[1:-1] if e.get("table") == table
               and (field != "snapshot" or e["row"].get("snapshot")))
    if isinstance(value, dict):  # a patch of the snapshot the row holds
        value = json.dumps({**json.loads(row["row"][field]), **value})
    row["row"][field] = value
    return entries


@pytest.mark.parametrize(("table", "field", "value"), ROW_EDITS,
                         ids=[f"{t}.{f}={str(v)[:24]!r}" for t, f, v in ROW_EDITS])
def test_rows_that_break_an_api_rule_are_refused(
    table: str, field: str, value: Any, base_backup: list[dict], refused_restore: Callable
) -> None:
    from bioxen_flows.redaction import register_secret

    register_secret(SECRET)
    message = refused_restore(sign(_edited(base_backup, table, field, value)))
    assert ".jsonl:" in message  # names the line
    assert field in message or "budget" in message or "repeats" in message, message
    for text in (value if isinstance(value, str) and field != "snapshot" else "", SECRET,
                 "alice", "../x"):
        if len(text) >= 4 and text not in ("None", "abc"):
            assert text not in message, message  # never echoes the row


@pytest.mark.parametrize("edit", sorted(TABLE_EDITS))
def test_backups_missing_or_repeating_rows_are_refused(
    edit: str, base_backup: list[dict], refused_restore: Callable
) -> None:
    refused_restore(sign(TABLE_EDITS[edit](json.loads(json.dumps(base_backup)))))


# ---- fuzz: any field of any row set to any JSON value, re-signed ----------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6)
FIELD_VALUES = JSON_VALUES | JSON_VALUES.map(lambda v: json.dumps(v))  # text columns hold JSON


@FUZZ
@given(data=st.data())
def test_restore_fuzz_refuses_cleanly_or_leaves_a_usable_store(
    data: st.DataObject, victim: StateStore, base_backup: list[dict], tmp_path: Path
) -> None:
    entries = json.loads(json.dumps(base_backup))
    index = data.draw(st.integers(min_value=1, max_value=len(entries) - 2), label="row")
    row = entries[index]["row"]
    field = data.draw(st.sampled_from(sorted(row)), label="field")
    row[field] = data.draw(FIELD_VALUES, label="value")
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(sign(entries))
    before = dump(victim)
    try:
        restore(victim, path, replace=True)
    except InputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400, str(exc)[:500]
        assert dump(victim) == before
        event("refused")
        return
    event("accepted")
    # accepted: every command that reads the store works, and the ledger holds
    assert all(not record.damaged for record in victim.list_vms())
    assert victim.budget()["ribosomes_available"] >= 0
    assert victim.budget()["atp_percent_available"] >= -1e-9
    victim.quotas()
    victim.audit_log(limit=5)
    assert victim.schema_version() == base_backup[0]["schema_version"]

