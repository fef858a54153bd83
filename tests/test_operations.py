"""Operations: settings, quotas, the audit log, doctor, gc of orphaned VMs, backup/restore.

Everything runs through the real `bioxen` entry point (one process per command) against a
real store — SQLite, and PostgreSQL where the backend matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bioxen_flows.errors import BudgetError, InputError
from bioxen_flows.settings import get_settings
from bioxen_flows.state import StateStore
from tests.helpers import bioxen, data, ok, refused


# ---- settings ------------------------------------------------------------------------
def test_settings_precedence_default_file_environment(
    bioxen_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert get_settings().gc_min_age_seconds == 300.0
    bioxen_home.mkdir(parents=True, exist_ok=True)
    (bioxen_home / "settings.production.yaml").write_text(
        "gc_min_age_seconds: 60\nowner: lab-a\nlog_format: json\n")
    monkeypatch.setenv("BIOXEN_ENV", "production")
    assert (get_settings().gc_min_age_seconds, get_settings().owner) == (60.0, "lab-a")
    monkeypatch.setenv("BIOXEN_OWNER", "lab-b")
    rows = {r["name"]: r for r in data("settings")["settings"]}
    assert rows["owner"]["value"] == "lab-b" and rows["owner"]["source"] == "environment"
    assert rows["gc_min_age_seconds"]["value"] == 60.0
    assert rows["gc_min_age_seconds"]["source"].startswith("file ")
    assert rows["log_level"] == {**rows["log_level"], "value": "WARNING", "source": "default"}
    assert rows["home"]["source"] == "environment"


def test_settings_says_whether_its_file_exists(
    bioxen_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    shown = data("settings")
    absent = bioxen_home / "settings.development.yaml"
    assert shown["settings_file"] == str(absent) and shown["settings_file_exists"] is False
    text = ok("settings").stdout
    assert f"no file {absent}: defaults and environment only" in " ".join(text.split())
    bioxen_home.mkdir(parents=True, exist_ok=True)
    absent.write_text("owner: lab-a\n")
    assert data("settings")["settings_file_exists"] is True
    text = " ".join(ok("settings").stdout.split())
    assert f"settings (file: {absent})" in text and "no file" not in text


def test_settings_file_from_the_system_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "settings.development.yaml").write_text("gc_min_age_seconds: 5\n")
    monkeypatch.setenv("BIOXEN_CONFIG_DIR", str(tmp_path))
    assert get_settings().gc_min_age_seconds == 5.0


@pytest.mark.parametrize(("text", "fragment"), [
    ("home: /tmp/elsewhere\n", "environment-only"),
    ("gc_min_age: 5\n", "unknown"),
    ("- a list\n", "mapping of name: value"),
    ("gc_min_age_seconds: [\n", "settings.development.yaml:"),
    ("gc_min_age_seconds: -1\n", "BIOXEN_GC_MIN_AGE_SECONDS"),
    ("log_format: xml\n", "BIOXEN_LOG_FORMAT"),
])
def test_bad_settings_file_is_one_line(bioxen_home: Path, text: str, fragment: str) -> None:
    bioxen_home.mkdir(parents=True, exist_ok=True)
    (bioxen_home / "settings.development.yaml").write_text(text)
    with pytest.raises(InputError, match="settings|BIOXEN"):
        get_settings()
    refused(bioxen("list"), fragment)


def test_bad_environment_value_is_one_line_and_never_echoes_a_url() -> None:
    refused(bioxen("settings", env={"BIOXEN_OWNER": "a b;rm -rf"}), "BIOXEN_OWNER")
    refused(bioxen("list", env={"BIOXEN_ENV": "../etc"}), "BIOXEN_ENV")
    shown = data("settings", env={"BIOXEN_DATABASE_URL":
                                  "postgresql://bob:hunter2@127.0.0.1:5432/x"})
    text = json.dumps(shown)
    assert "hunter2" not in text and "bob:***@127.0.0.1" in text


def test_modules_read_settings_not_the_environment() -> None:
    """Only settings.py reads BIOXEN_* variables from os.environ."""
    package = Path(__file__).resolve().parents[1] / "bioxen_flows"
    readers = [
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if path.name != "settings.py" and any(
            "environ" in line and "BIOXEN_" in line
            for line in path.read_text(encoding="utf-8").splitlines())
    ]
    assert readers == []


# ---- quotas and the audit log --------------------------------------------------------
def test_vm_quota_refuses_the_third_create_and_audit_lists_it() -> None:
    ok("quota", "set", "--owner", "lab-a", "--vms", "2")
    ok("create", "a1", "syn3a", "--owner", "lab-a")
    ok("create", "a2", "ecoli", "--owner", "lab-a")
    line = refused(bioxen("create", "a3", "syn3a", "--owner", "lab-a"), "'lab-a'")
    assert "quota of 2 live VMs" in line and "2 in use" in line
    ok("create", "b1", "syn3a", "--owner", "lab-b")  # another owner is not limited
    assert [vm["vm_id"] for vm in data("list")] == ["a1", "a2", "b1"]
    creates = [(e["vm_id"], e["outcome"]) for e in data("audit") if e["action"] == "create"]
    assert creates == [("a1", "ok"), ("a2", "ok"), ("a3", "refused"), ("b1", "ok")]
    refusal = next(e for e in data("audit", "--vm", "a3"))
    assert "quota of 2" in refusal["detail"]["error"] and refusal["actor"].count("@") == 1
    quotas = {q["owner"]: q for q in data("quota")}
    assert quotas["lab-a"]["vms"] == 2 and quotas["lab-a"]["vms_limit"] == 2
    assert quotas["lab-b"]["vms_limit"] is None


def test_resource_quotas_hold_on_allocate(state_backend: str) -> None:
    store = StateStore()
    store.set_quota("lab-a", ribosomes=5000, atp_percent=150)
    from bioxen_flows.vm import create_bio_vm

    first = create_bio_vm("q1", "syn3a", config={"resources": {"ribosomes": 3000}},
                          owner="lab-a")
    second = create_bio_vm("q2", "syn3a", owner="lab-a")
    with pytest.raises(BudgetError, match="owner 'lab-a'.*quota of 5000 \\(3000 in use\\)"):
        second.allocate(ribosomes=2001)
    second.allocate(ribosomes=2000, atp_percent=100)
    with pytest.raises(BudgetError, match="quota of 150 %"):
        first.allocate(atp_percent=51)
    assert {q["owner"]: (q["ribosomes"], q["atp_percent"]) for q in store.quotas()} == {
        "lab-a": (5000, 100.0)}
    first.destroy()
    second.allocate(ribosomes=5000)  # the destroyed VM's share came back
    with pytest.raises(InputError, match="owner must be"):
        store.set_quota("lab a", vms_limit=1)
    with pytest.raises(InputError, match="VM quota"):
        store.set_quota("lab-a", vms_limit=-1)


QUOTA_WORKER = """
import sys
from bioxen_flows.errors import BudgetError
from bioxen_flows.vm import create_bio_vm
made = 0
for i in range(6):
    try:
        create_bio_vm(f"w{sys.argv[1]}-{i}", "syn3a", owner="lab-a")
        made += 1
    except BudgetError:
        pass
print(made)
"""


def test_quota_holds_across_concurrent_processes(state_backend: str) -> None:
    StateStore().set_quota("lab-a", vms_limit=5)
    workers = [subprocess.Popen([sys.executable, "-c", QUOTA_WORKER, str(n)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(4)]
    made = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        made.append(int(out))
    assert sum(made) == 5
    assert len(StateStore().list_vms()) == 5
    refusals = [e for e in StateStore().audit_log(limit=None) if e["outcome"] == "refused"]
    assert len(refusals) == 24 - 5


def test_every_state_change_is_audited_with_actor_and_parameters() -> None:
    ok("budget", "--ribosomes", "90000")
    ok("create", "v1", "ecoli", "--auto-start")
    ok("allocate", "v1", "--atp", "80", "--ribosomes", "3000")
    ok("install", "v1", "gfp_reporter")
    ok("execute", "v1", "grow(minutes=5)")
    for action in ("pause", "resume", "stop"):
        ok(action, "v1")
    ok("destroy", "v1")
    entries = data("audit")
    assert [e["action"] for e in entries] == [
        "budget", "create", "start", "allocate", "install", "execute", "pause", "resume",
        "stop", "destroy"]
    by_action = {e["action"]: e for e in entries}
    assert by_action["allocate"]["detail"] == {"atp_percent": 80.0, "ribosomes": 3000}
    assert by_action["install"]["detail"]["package"] == "gfp_reporter"
    assert by_action["execute"]["detail"] == {"calls": ["grow(minutes=5)"]}
    assert by_action["budget"]["detail"]["ribosomes"] == 90000
    assert all(e["outcome"] == "ok" and "@" in e["actor"] and e["time"].endswith("+00:00")
               for e in entries)
    # --since and the JSON-lines export
    later = data("audit", "--since", entries[6]["time"])
    assert [e["action"] for e in later] == ["pause", "resume", "stop", "destroy"]
    lines = ok("audit", "--jsonl", "--vm", "v1").stdout.splitlines()
    assert [json.loads(line)["action"] for line in lines][:2] == ["create", "start"]
    refused(bioxen("audit", "--since", "yesterday"), "ISO 8601")


def test_a_flow_run_is_the_actor_of_what_its_tasks_change(prefect_api_url: str) -> None:
    from bioxen_flows.orchestration.flows import vm_lifecycle

    vm_lifecycle("syn3a", program="grow(minutes=5)", vm_id="flowvm")
    entries = StateStore().audit_log("flowvm")
    assert {e["action"] for e in entries} >= {"create", "start", "execute", "destroy"}
    run_ids = {e["flow_run_id"] for e in entries}
    assert len(run_ids) == 1 and None not in run_ids


# ---- doctor ----------------------------------------------------------------------------
def test_doctor_passes_on_a_fresh_install(prefect_api_url: str) -> None:
    report = json.loads(ok("doctor", "--json",
                           env={"PREFECT_API_URL": prefect_api_url}).stdout)
    assert report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"engine", "store", "prefect", "disk"}
    assert "0.0241" in checks["engine"]["detail"]
    assert "schema 3" in checks["store"]["detail"]
    assert prefect_api_url in checks["prefect"]["detail"]


def test_doctor_fails_with_the_reason_when_the_store_is_unreachable(
    prefect_api_url: str
) -> None:
    run = bioxen("doctor", "--json", env={
        "PREFECT_API_URL": prefect_api_url,
        "BIOXEN_DATABASE_URL": "postgresql://bioxen:s3cret@127.0.0.1:1/none"})
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    store = next(c for c in report["checks"] if c["name"] == "store")
    assert report["ok"] is False and store["ok"] is False
    assert "cannot use the state store" in store["detail"] and "refused" in store["detail"]
    assert "s3cret" not in run.stdout + run.stderr
    assert all(c["ok"] for c in report["checks"] if c["name"] != "store")


def test_doctor_reports_a_prefect_api_that_does_not_answer() -> None:
    run = bioxen("doctor", env={"PREFECT_API_URL": "http://127.0.0.1:1/api"})
    assert run.returncode == 1
    assert any(line.startswith("FAIL prefect") for line in run.stdout.splitlines())


# ---- gc of orphaned basic VMs ------------------------------------------------------------
def test_gc_after_kill_9_of_a_comparison(prefect_api_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    compare = subprocess.Popen(
        [sys.executable, "-m", "bioxen_flows", "compare", "--replicates", "2", "--workers", "4",
         "--hours", "24", "--seed", "1", "--out", str(tmp_path / "out")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        # 6 VMs in all; about one per worker lives at once (a batch tears its VMs down)
        while len(StateStore().list_vms()) < 4 and time.monotonic() < deadline:
            assert compare.poll() is None, "the comparison ended before it was killed"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        if compare.poll() is None:
            os.killpg(compare.pid, signal.SIGKILL)
        compare.wait()
    leaked = sorted(vm["vm_id"] for vm in data("list"))
    assert len(leaked) >= 4
    ok("create", "mine", "syn3a")  # made by hand: never gc's
    # at once, default minimum age, no Prefect API: the dead process settles it, so no
    # temporary server is started (it would make a database in PREFECT_HOME)
    quiet = {"PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    listed = data("gc", env=quiet)
    assert listed["dry_run"] is True
    assert sorted(o["vm_id"] for o in listed["orphans"]) == leaked
    assert all("is gone" in o["reason"] or "interrupted" in o["reason"]
               for o in listed["orphans"])
    assert listed["skipped"] == []
    assert len(data("list")) == len(leaked) + 1  # a dry run destroys nothing
    shown = ok("gc", "--yes", env=quiet).stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in shown if line.startswith("destroyed")] \
        == [o["vm_id"] for o in listed["orphans"]]  # one line each, as it goes
    assert shown[0].endswith(f"[1/{len(leaked)}]")
    assert [vm["vm_id"] for vm in data("list")] == ["mine"]
    assert sorted(e["vm_id"] for e in data("audit") if e["action"] == "gc") == leaked
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()


def test_gc_says_what_it_skips_and_why(prefect_api_url: str) -> None:
    """Too young (run over, younger than the minimum age: when it becomes eligible), owner
    running (its process lives here), owner unknown (a process on another host, a run the
    API does not know): listed, never reaped."""
    from prefect import flow

    from bioxen_flows.orchestration.reaper import FLOW_RUN_LABEL, PROCESS_LABEL
    from bioxen_flows.processes import process_identity
    from bioxen_flows.vm import create_bio_vm

    @flow
    def finished() -> str:
        from prefect.runtime import flow_run

        return str(flow_run.get_id())

    run_id = finished()
    create_bio_vm("young", "syn3a", config={"labels": {FLOW_RUN_LABEL: run_id}})
    create_bio_vm("alive", "syn3a", config={"labels": {PROCESS_LABEL: process_identity()}})
    create_bio_vm("remote", "syn3a", config={"labels": {
        PROCESS_LABEL: "another-host:1:1", FLOW_RUN_LABEL: "0b9d3a52-0000-4000-8000-000000000000"}})
    env = {"PREFECT_API_URL": prefect_api_url, "BIOXEN_GC_MIN_AGE_SECONDS": "600"}
    listed = data("gc", env=env)
    assert listed["orphans"] == []
    why = {s["vm_id"]: s for s in listed["skipped"]}
    assert {k: v["why"] for k, v in why.items()} == {
        "young": "too young", "alive": "owner running", "remote": "owner unknown"}
    assert 590 < why["young"]["eligible_at"] - time.time() <= 600
    assert "another host" in why["remote"]["detail"]
    text = ok("gc", env=env).stdout
    assert "skipped young: too young" in text and "eligible in" in text
    assert "no orphaned VMs (3 skipped)" in text
    done = data("gc", "--yes", env=env)
    assert done["destroyed"] == [] and len(data("list")) == 3
    now = data("gc", "--yes", "--min-age", "0", env=env)  # the run is over: reaped now
    assert now["destroyed"] == ["young"]


def test_gc_reaps_the_vms_of_a_finished_flow_run(prefect_api_url: str) -> None:
    from prefect import flow

    from bioxen_flows.orchestration.reaper import FLOW_RUN_LABEL, find_orphans, reap
    from bioxen_flows.vm import create_bio_vm

    @flow
    def finished() -> str:
        from prefect.runtime import flow_run

        return str(flow_run.get_id())

    run_id = finished()
    create_bio_vm("leaked", "syn3a", config={"labels": {FLOW_RUN_LABEL: run_id}})
    create_bio_vm("unknown-run", "syn3a", config={"labels": {FLOW_RUN_LABEL: "not-a-uuid"}})
    orphans = find_orphans(min_age_seconds=0)
    assert [(o.vm_id, o.reason) for o in orphans] == [
        ("leaked", f"flow run {run_id} is Completed")]
    assert reap(orphans) == ["leaked"]
    assert [r.vm_id for r in StateStore().list_vms()] == ["unknown-run"]


# ---- backup and restore ------------------------------------------------------------------
WRITER = """
import sys, time
from bioxen_flows.vm import create_bio_vm
for i in range(int(sys.argv[1])):
    vm = create_bio_vm(f"bg{i}", "syn3a")
    vm.start()
    vm.execute_biological_process("grow(minutes=1)")
"""


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_backup_while_others_write_restores_the_same_vms_and_clocks(
    state_backend: str, target: str, tmp_path: Path, postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok("create", "keep", "ecoli", "--auto-start")
    ok("execute", "keep", "grow(minutes=42)")
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), "30"],
                              stderr=subprocess.PIPE, text=True)
    try:
        while len(StateStore().list_vms()) < 3:
            time.sleep(0.05)
        backup = tmp_path / "store.jsonl"
        counts = data("db", "backup", str(backup))["rows"]
    finally:
        assert writer.wait(timeout=300) == 0, writer.stderr.read() if writer.stderr else ""
    before = {vm["vm_id"]: vm for vm in data("list")}
    # restore into an empty store of the other kind
    if target == "postgresql":
        from tests.helpers import empty_postgres

        empty_postgres(postgres_url)
        monkeypatch.setenv("BIOXEN_DATABASE_URL", postgres_url)
    else:
        monkeypatch.delenv("BIOXEN_DATABASE_URL", raising=False)
        monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "restored"))
    ok("db", "restore", str(backup))
    after = {vm["vm_id"]: vm for vm in data("list")}
    assert len(after) == counts["vms"] and 3 <= len(after) <= 31
    assert after["keep"]["simulated_time_min"] == pytest.approx(42.0)
    assert after["keep"]["state"] == before["keep"]["state"] == "running"
    for vm_id, vm in after.items():  # each VM as one of the writer's steps left it
        assert (vm["state"], vm["simulated_time_min"]) in {
            ("created", 0.0), ("running", 0.0), ("running", 1.0)} or vm_id == "keep" \
            or (vm["state"], vm["simulated_time_min"]) == ("creating", 0.0)  # caught mid-create
    # a creation the backup caught half-made comes back as one gc reaps (its creator is gone)
    assert {r.vm_id for r in StateStore().interrupted_creations()} == {
        vm_id for vm_id, vm in after.items() if vm["state"] == "creating"}
    # each VM with its own snapshot intact: the backup was one consistent snapshot
    ok("execute", "keep", "grow(minutes=8)")
    assert data("status", "keep")["simulated_time_min"] == pytest.approx(50.0)
    assert len(data("audit", "--limit", "100000")) == counts["audit"] + 2  # restore, execute
    refused(bioxen("db", "restore", str(backup)), "not empty")


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hello": 1}\n')
    refused(bioxen("db", "restore", str(bad)), "not a BioXen backup")
    bad.write_text(json.dumps({"bioxen_backup": 1, "schema_version": 3}) + "\n"
                   + '{"table": "vms; DROP TABLE vms", "row": {}}\n')
    refused(bioxen("db", "restore", str(bad)), "from an older BioXen")
    bad.write_text(json.dumps({"bioxen_backup": 2, "schema_version": 99}) + "\n")
    refused(bioxen("db", "restore", str(bad)), "schema 99")
    refused(bioxen("db", "restore", str(tmp_path / "missing.jsonl")), "missing.jsonl")
    assert data("list") == []


# ---- logs ------------------------------------------------------------------------------------
def test_json_logs_name_vm_and_flow_run_and_never_a_secret(
    prefect_api_url: str, tmp_path: Path, postgres_url: str
) -> None:
    from tests.helpers import empty_postgres

    empty_postgres(postgres_url)
    planted = "Pl4ntedS3cret"
    # trust auth ignores the password, so a URL carrying one still connects
    url = postgres_url.replace("postgres@", f"postgres:{planted}@")
    env = {"PREFECT_API_URL": prefect_api_url, "BIOXEN_DATABASE_URL": url,
           "BIOXEN_LOG_LEVEL": "DEBUG"}
    run = bioxen("--log-format", "json", "compare", "syn3a", "--hours", "0.5",
                 "--out", str(tmp_path / "out"), env=env)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert len(lines) >= 5 and all({"time", "level", "message", "vm_id", "flow_run_id"}
                                   <= set(line) for line in lines)
    assert len({line["flow_run_id"] for line in lines if line["flow_run_id"]}) == 1
    assert any(line["vm_id"] for line in lines)
    # the secret is nowhere: console, results, the store, Prefect's logs
    results = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert planted not in run.stdout + run.stderr and planted.encode() not in results
    backup = tmp_path / "store.jsonl"
    ok("db", "backup", str(backup), env=env)
    assert planted not in backup.read_text()


def test_json_logs_are_json_from_the_first_line(prefect_api_url: str, tmp_path: Path) -> None:
    """Prefect's own first lines ("Beginning flow run", "View at") and bioxen's notices too:
    Prefect's console handler is set up with our JSON formatter (logs.PREFECT_JSON_ENV)."""
    run = bioxen("--log-format", "json", "compare", "syn3a", "--hours", "0.1",
                 "--out", str(tmp_path / "out"), env={"PREFECT_API_URL": prefect_api_url})
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # each one JSON
    assert "Beginning flow run" in lines[0]["message"]
    assert lines[0]["logger"] == "prefect.flow_runs" and lines[0]["flow_run_id"]
    assert any(line["message"].startswith("View at ") for line in lines)


def test_a_notice_follows_the_log_format(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    from bioxen_flows.logs import configure_logging, notice

    monkeypatch.delenv("PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER", raising=False)
    try:
        configure_logging("json", "WARNING")
        notice("started something")
        assert json.loads(capsys.readouterr().err)["message"] == "started something"
    finally:
        configure_logging("text", "WARNING")
    notice("started something")
    assert capsys.readouterr().err == "started something\n"


def test_the_redaction_filter_masks_registered_secrets(capsys: pytest.CaptureFixture) -> None:
    import logging

    from bioxen_flows.logs import configure_logging
    from bioxen_flows.redaction import register_secret

    configure_logging("json", "INFO")
    try:
        register_secret("hunter2-xcpng")
        log = logging.getLogger("bioxen_flows.test")
        log.info("password is %s", "hunter2-xcpng")
        try:
            raise RuntimeError("failed with hunter2-xcpng")
        except RuntimeError:
            log.exception("oops")
        err = capsys.readouterr().err
    finally:
        configure_logging("text", "WARNING")
    assert "hunter2-xcpng" not in err and err.count("***") >= 2
    assert [json.loads(line)["level"] for line in err.splitlines()] == ["INFO", "ERROR"]


def test_runs_wait_for_vm_slots_of_the_global_concurrency_limit(
    prefect_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one slot, two lifecycle runs started together hold their VMs one after the other."""
    import threading
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from bioxen_flows.orchestration.flows import vm_lifecycle

    name = f"bioxen-vms-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("BIOXEN_VM_CONCURRENCY_LIMIT", name)
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    try:
        runs = [threading.Thread(target=vm_lifecycle, kwargs={
            "organism": "syn3a", "program": "grow(minutes=1440)", "vm_id": f"slot{n}"})
            for n in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=300)
        entries = StateStore().audit_log(limit=None)
        live, most = 0, 0
        for entry in entries:
            if entry["action"] == "create" and entry["outcome"] == "ok":
                live += 1
            elif entry["action"] == "destroy":
                live -= 1
            most = max(most, live)
        assert {e["vm_id"] for e in entries if e["action"] == "destroy"} == {"slot0", "slot1"}
        assert most == 1
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


def test_doctor_checks_the_xcpng_pool_when_configured(
    prefect_api_url: str, tmp_path: Path
) -> None:
    import yaml

    from bioxen_flows.testing.xapi_simulator import XapiSimulator

    with XapiSimulator(password="pool-pw-1234") as sim:
        config = tmp_path / "pool.yaml"
        config.write_text(yaml.safe_dump({"xcpng_config": {
            "url": sim.url, "username": "root", "template": "bioxen-guest", "ssh_user": "x",
            "ssh_key_path": "/nonexistent", "ssh_host_key": "SHA256:" + "A" * 43,
            "password_env": "POOL_PW"}}))
        env = {"PREFECT_API_URL": prefect_api_url, "POOL_PW": "pool-pw-1234"}
        report = json.loads(ok("doctor", "--json", "--xcpng-config", str(config),
                               env=env).stdout)
        xcpng = next(c for c in report["checks"] if c["name"] == "xcpng")
        assert xcpng["ok"] and "1 host(s)" in xcpng["detail"] and sim.url in xcpng["detail"]
        run = bioxen("doctor", "--json", "--xcpng-config", str(config),
                     env={**env, "POOL_PW": "wrong-password"})
        assert run.returncode == 1
        xcpng = next(c for c in json.loads(run.stdout)["checks"] if c["name"] == "xcpng")
        assert not xcpng["ok"] and "wrong-password" not in run.stdout + run.stderr
        assert sim.sessions() == []  # every session it opened was logged out
