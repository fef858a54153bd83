"""Many processes, one store: nothing a successful call wrote is lost, the budget holds
across processes, modules live with their VM, and cells stay warm while nothing changes.

Every test runs on the embedded SQLite store and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bioxen_flows.engine.hypervisor import get_hypervisor
from bioxen_flows.errors import InputError
from bioxen_flows.state import StateStore
from bioxen_flows.vm import create_bio_vm, list_bio_vms, load_bio_vm

pytestmark = pytest.mark.usefixtures("state_backend")


def bioxen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bioxen_flows.cli", *args],
        capture_output=True, encoding="utf-8", timeout=300, cwd=cwd,
    )


EXECUTOR = """
import sys
from bioxen_flows.errors import BioXenError
from bioxen_flows.vm import load_bio_vm
ok = 0
for _ in range(int(sys.argv[1])):
    try:   # a fresh load each time, as a separate `bioxen execute` would
        load_bio_vm("shared").execute_biological_process("grow(minutes=1)")
        ok += 1
    except BioXenError as exc:
        print(exc, file=sys.stderr)
print(ok)
"""


def test_concurrent_executes_lose_no_work():
    vm = create_bio_vm("shared", "syn3a")
    vm.start()
    procs = [
        subprocess.Popen([sys.executable, "-c", EXECUTOR, "10"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, encoding="utf-8")
        for _ in range(8)
    ]
    succeeded = 0
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        succeeded += int(out.split()[-1])
    assert succeeded == 80  # leases queue the callers: none has to give up
    assert load_bio_vm("shared").get_status()["simulated_time_min"] == pytest.approx(80.0)


def test_concurrent_cli_executes_advance_the_clock_by_their_sum(tmp_path: Path):
    assert bioxen("create", "shared", "ecoli", "--auto-start").returncode == 0
    script = tmp_path / "loop.sh"
    script.write_text(textwrap.dedent(f"""\
        ok=0
        for i in 1 2; do
          {sys.executable} -m bioxen_flows.cli execute shared 'grow(minutes=1)' >/dev/null \\
            && ok=$((ok+1))
        done
        echo $ok
    """))
    procs = [subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, encoding="utf-8")
             for _ in range(4)]
    exited_ok = sum(int(p.communicate(timeout=600)[0].split()[-1]) for p in procs)
    status = json.loads(bioxen("status", "shared", "--json").stdout)
    assert status["simulated_time_min"] == pytest.approx(1.0 * exited_ok)
    assert exited_ok == 8


def test_three_processes_share_one_budget():
    for i in range(3):
        assert bioxen("create", f"vm{i}", "ecoli").returncode == 0
    procs = [
        subprocess.Popen([sys.executable, "-m", "bioxen_flows.cli", "allocate", f"vm{i}",
                          "--ribosomes", "60000"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, encoding="utf-8")
        for i in range(3)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1, 1]
    for code, err in results:
        if code == 1:
            assert err.count("\n") == 1 and "exceeds the host budget" in err
    budget = json.loads(bioxen("budget", "--json").stdout)
    assert budget["ribosomes_allocated"] == 60_000
    assert budget["ribosomes_available"] == 40_000
    held = [vm["allocations"].get("ribosomes") for vm in list_bio_vms()]
    assert sorted(held, key=lambda x: x or 0) == [None, None, 60_000]
    for i in range(3):  # every process can load every VM: loading never re-checks budgets
        assert bioxen("status", f"vm{i}", "--json").returncode == 0


def test_module_lives_with_the_vm_not_the_file(tmp_path: Path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "het.ant").write_text("w_het = 100; n_het = 300;\n")
    assert bioxen("create", "m", "ecoli", "--auto-start", cwd=work).returncode == 0
    installed = bioxen("install", "m", "het.ant", cwd=work)  # a relative path
    assert installed.returncode == 0, installed.stderr
    (work / "het.ant").write_text("w_het = 1; n_het = 3;\n")  # editing it changes nothing
    ran = bioxen("execute", "m", "grow(minutes=30)", "--json", cwd=elsewhere)
    assert ran.returncode == 0, ran.stderr
    (work / "het.ant").unlink()
    status = bioxen("status", "m", "--json", cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["installed_packages"] == ["het"]
    ran_again = bioxen("execute", "m", "grow(minutes=30)", "--json", cwd=elsewhere)
    assert ran_again.returncode == 0, ran_again.stderr
    protein = json.loads(ran_again.stdout)["summary"]["protein_molecules"]["het"]
    expected = create_bio_vm("ref", "ecoli")
    expected.start()
    (tmp_path / "ref.ant").write_text("w_het = 100; n_het = 300;\n")
    expected.install_biological_package(str(tmp_path / "ref.ant"))
    reference = expected.execute_biological_process("grow(minutes=60)")
    assert protein == pytest.approx(reference["summary"]["protein_molecules"]["het"], rel=1e-6)
    assert bioxen("destroy", "m", cwd=elsewhere).returncode == 0


def test_warm_cell_is_reused_until_another_process_writes():
    vm = create_bio_vm("warm", "ecoli")
    vm.start()
    vm.execute_biological_process("grow(minutes=5)")
    hv = get_hypervisor()
    builds = hv.builds
    for _ in range(3):  # what a flow's tasks do: load by id, act, return
        again = load_bio_vm("warm")
        again.get_biological_metrics()
        again.execute_biological_process("grow(minutes=5)")
    assert hv.builds == builds
    other = subprocess.run(
        [sys.executable, "-c",
         "from bioxen_flows.vm import load_bio_vm; "
         "load_bio_vm('warm').execute_biological_process('grow(minutes=7)')"],
        capture_output=True, encoding="utf-8", timeout=300,
    )
    assert other.returncode == 0, other.stderr
    metrics = load_bio_vm("warm").get_biological_metrics()
    assert hv.builds == builds + 1  # a changed version rebuilds from the store
    assert metrics["simulated_time_min"] == pytest.approx(27.0)


def test_stale_vm_object_sees_the_state_another_caller_set():
    vm = create_bio_vm("stale", "syn3a")
    vm.start()
    stale = load_bio_vm("stale")
    vm.pause()
    with pytest.raises(InputError, match="it is paused"):
        stale.execute_biological_process("grow(minutes=1)")
    assert load_bio_vm("stale").get_status()["simulated_time_min"] == 0.0
    load_bio_vm("stale").destroy()
    with pytest.raises(InputError, match="destroyed"):
        stale.execute_biological_process("grow(minutes=1)")
    stale.destroy()  # destroying what another caller destroyed is a no-op


@pytest.mark.parametrize("bad", ["lab1\n", "lab1\n\n", " lab1", "lab/1", ""])
def test_ids_must_match_entirely(bad: str):
    create_bio_vm("lab1", "syn3a")
    with pytest.raises(InputError, match="invalid vm_id"):
        create_bio_vm(bad, "syn3a")
    assert [vm["vm_id"] for vm in list_bio_vms()] == ["lab1"]


def test_state_lives_in_postgres_not_in_bioxen_home(state_backend: str, bioxen_home: Path):
    create_bio_vm("where", "syn3a")
    if state_backend == "postgresql":
        assert not (bioxen_home / "state.db").exists()
        assert StateStore().backend == "postgresql"
        assert "BIOXEN_DATABASE_URL" in os.environ
    else:
        assert (bioxen_home / "state.db").exists()
