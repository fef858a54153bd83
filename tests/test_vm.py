"""The bio-VM API: factory, lifecycle, organism-specific calls, persistence across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pandas as pd
import pytest

from bioxen_flows.engine.hypervisor import get_hypervisor
from bioxen_flows.errors import InputError
from bioxen_flows.organisms.genome import EssentialityUnavailableError
from bioxen_flows.state import StateStore
from bioxen_flows.vm import (
    create_bio_vm,
    get_supported_biological_types,
    get_supported_vm_types,
    list_bio_vms,
    load_bio_vm,
)
from bioxen_flows.vm.local import LocalHost
from tests.helpers import SYN3A_GENBANK

pytestmark = pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL


def test_supported_types():
    assert get_supported_biological_types() == ["syn3a", "ecoli", "minimal_cell"]
    assert get_supported_vm_types() == ["basic", "xcpng"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("vm 1", "syn3a"), "invalid vm_id"),
        (("x" * 65, "syn3a"), "invalid vm_id"),
        (("vm1", "yeast"), "choose one of: syn3a, ecoli, minimal_cell"),
        (("vm1", "syn3a", "kvm"), "choose one of: basic, xcpng"),
        (("vm1", "syn3a", "xcpng"), "xcpng_config"),
        (("vm1", "syn3a", "basic", {"resources": {"atp_percent": 150}}), "resources.atp_percent"),
    ],
)
def test_bad_create_calls_create_nothing(args, message):
    with pytest.raises(ValueError, match=message):
        create_bio_vm(*args)
    assert list_bio_vms() == []
    assert "vm1" not in get_hypervisor().vm_ids


def test_duplicate_vm_id_is_refused():
    create_bio_vm("dup", "syn3a")
    with pytest.raises(ValueError, match="already exists"):
        create_bio_vm("dup", "ecoli")
    assert [v["biological_type"] for v in list_bio_vms()] == ["syn3a"]


def test_vms_share_one_hypervisor():
    a, b = create_bio_vm("a", "syn3a"), create_bio_vm("b", "ecoli")
    assert isinstance(a.host, LocalHost) and a.infrastructure.in_process
    assert a.host.hypervisor is b.host.hypervisor is get_hypervisor()


def test_lifecycle_and_illegal_transitions():
    vm = create_bio_vm("life", "ecoli")
    assert vm.get_status()["state"] == "created"
    with pytest.raises(ValueError, match="cannot pause VM 'life': it is created"):
        vm.pause()
    vm.start()
    vm.pause()
    with pytest.raises(ValueError, match="it is paused, not running"):
        vm.execute_biological_process("grow(10)")
    clock = vm.get_status()["simulated_time_min"]
    vm.resume()
    vm.execute_biological_process("grow(10)")
    assert vm.get_status()["simulated_time_min"] == clock + 10
    vm.stop()
    with pytest.raises(ValueError, match="it is stopped"):
        vm.resume()
    vm.start()
    vm.destroy()
    vm.destroy()  # idempotent
    assert vm.state == "destroyed"
    with pytest.raises(ValueError, match="destroyed"):
        vm.start()
    assert list_bio_vms() == []
    assert "life" not in get_hypervisor().vm_ids


def test_destroy_frees_allocations():
    vm = create_bio_vm("alloc", "ecoli")
    vm.allocate(atp_percent=50, ribosomes=2000)
    before = StateStore().budget()["ribosomes_allocated"]
    vm.destroy()
    assert StateStore().budget()["ribosomes_allocated"] == before - 2000


def test_status_and_metrics():
    vm = create_bio_vm("stat", "syn3a", config={"resources": {"atp_percent": 80}})
    vm.start()
    result = vm.execute_biological_process('install("gfp_reporter")\ngrow(minutes=120)')
    assert len(pd.DataFrame(result["timeseries"])) == 121
    status = vm.get_status()
    assert status["allocations"] == {"atp_percent": 80}
    assert status["installed_packages"] == ["gfp_reporter"]
    assert status["simulated_time_min"] == 120
    assert status["uptime_seconds"] >= 0
    assert vm.get_biological_type() == "syn3a" and vm.get_vm_type() == "basic"
    metrics = vm.get_biological_metrics()
    assert metrics["atp_cap_percent"] == pytest.approx(80)
    assert metrics["protein_molecules"]["gfp"] > 0


def test_organism_specific_methods():
    syn3a, ecoli = create_bio_vm("s", "syn3a"), create_bio_vm("e", "ecoli")
    syn3a.start()
    ecoli.start()
    syn3a.install_biological_package("gfp_reporter")
    syn3a.execute_biological_process('stop_transcription(["gfp"])')
    syn3a.start_transcription(["gfp"])
    assert syn3a.get_biological_metrics()["transcription_on"] == {"gfp": True}
    ecoli.install_biological_package("lac_operon")
    ecoli.install_biological_package("rfp_plasmid", copies=12)
    ecoli.manage_operons(["lac"], "induce")
    assert ecoli.get_biological_metrics()["operon_states"] == {"lac": "induced"}
    assert ecoli.get_plasmid_count() == 12
    with pytest.raises(ValueError, match="manage_operons is supported by ecoli"):
        syn3a.manage_operons(["lac"], "induce")
    with pytest.raises(ValueError, match="get_plasmid_count is supported by ecoli"):
        syn3a.get_plasmid_count()
    with pytest.raises(ValueError, match="start_transcription is supported by syn3a, minimal"):
        ecoli.start_transcription(["rfp"])
    with pytest.raises(ValueError, match="get_essential_genes is supported by syn3a"):
        ecoli.get_essential_genes()
    with pytest.raises(ValueError, match="action"):
        ecoli.manage_operons(["lac"], 'induce"); grow(1e4')


def test_essential_genes_only_from_loaded_data(tmp_path):
    if not SYN3A_GENBANK.exists():
        pytest.skip("Syn3A GenBank record not available")
    vm = create_bio_vm("ess", "syn3a")
    with pytest.raises(EssentialityUnavailableError, match="never guessed"):
        vm.get_essential_genes()
    table = tmp_path / "ess.csv"
    table.write_text(
        "locus_tag,essentiality\nJCVISYN3A_0001,essential\nJCVISYN3A_0002,quasi\n"
    )
    summary = vm.attach_genome(str(SYN3A_GENBANK), str(table))
    assert summary["protein_coding"] == 455
    assert [g["locus_tag"] for g in vm.get_essential_genes()] == ["JCVISYN3A_0001"]
    again = load_bio_vm("ess")
    assert len(again.get_essential_genes(include_quasi=True)) == 2


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_vm_created_in_one_process_is_run_and_destroyed_by_others():
    run_python(
        "from bioxen_flows.vm import create_bio_vm\n"
        "vm = create_bio_vm('xproc', 'ecoli', config={'resources': {'ribosomes': 2500}})\n"
        "vm.start()\n"
        "vm.execute_biological_process('install(\"gfp_reporter\")\\ngrow(30)')\n"
    )
    out = run_python(
        "import json\nfrom bioxen_flows.vm import load_bio_vm, list_bio_vms\n"
        "print(json.dumps([v['vm_id'] for v in list_bio_vms()]))\n"
        "vm = load_bio_vm('xproc')\n"
        "r = vm.execute_biological_process('grow(30)')\n"
        "print(json.dumps(vm.get_status()))\n"
    )
    listed, status = (json.loads(line) for line in out.strip().splitlines())
    assert listed == ["xproc"]
    assert status["state"] == "running"
    assert status["simulated_time_min"] == 60
    assert status["allocations"] == {"ribosomes": 2500}
    assert status["installed_packages"] == ["gfp_reporter"]
    # the same numbers as one process doing all of it
    here = create_bio_vm("local", "ecoli", config={"resources": {"ribosomes": 2500}})
    here.start()
    here.execute_biological_process('install("gfp_reporter")\ngrow(30)\ngrow(30)')
    there = load_bio_vm("xproc").get_biological_metrics()
    assert there["protein_molecules"]["gfp"] == pytest.approx(
        here.get_biological_metrics()["protein_molecules"]["gfp"], rel=1e-6
    )
    run_python("from bioxen_flows.vm import load_bio_vm\nload_bio_vm('xproc').destroy()")
    assert [v["vm_id"] for v in list_bio_vms()] == ["local"]


def test_two_processes_on_different_vms_at_once():
    code = (
        "import sys\nfrom bioxen_flows.vm import create_bio_vm\n"
        "vm = create_bio_vm(sys.argv[1], 'syn3a')\nvm.start()\n"
        "for _ in range(10):\n    vm.execute_biological_process('grow(5)')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"p{i}"], stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    times = {v["vm_id"]: v["simulated_time_min"] for v in list_bio_vms()}
    assert times == {"p0": 50, "p1": 50}


def test_bad_input_corpus_leaves_the_database_unchanged():
    vm = create_bio_vm("corpus", "ecoli")
    vm.start()
    vm.execute_biological_process("grow(10)")
    store = StateStore()
    before = store.get_vm("corpus")
    for bad in [
        lambda: vm.execute_biological_process("__import__('os').system('id')"),
        lambda: vm.execute_biological_process("grow(10)\nmanage_operons(['nope'], 'induce')"),
        lambda: vm.install_biological_package("no_such_package"),
        lambda: vm.allocate(atp_percent=0),
        lambda: vm.allocate(ribosomes=10**9),
        lambda: vm.start(),
        lambda: create_bio_vm("corpus", "ecoli"),
    ]:
        with pytest.raises(ValueError):
            bad()
    after = store.get_vm("corpus")
    assert (after.state, after.allocations, after.snapshot) == (
        before.state, before.allocations, before.snapshot
    )


def test_concurrent_threads_on_one_vm_serialize():
    vm = create_bio_vm("threads", "syn3a")
    vm.start()
    threads = [
        threading.Thread(target=vm.execute_biological_process, args=("grow(5)",))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert vm.get_status()["simulated_time_min"] == 40


@pytest.mark.parametrize(
    ("organism", "program"),
    [
        ("syn3a", 'install("gfp_reporter")\nstart_transcription(["gfp"])\ngrow(minutes=60)'),
        ("minimal_cell", 'install("rfp_plasmid", copies=5)\ngrow(minutes=60)'),
        ("ecoli", 'install("lac_operon")\nmanage_operons(["lac"], "induce")\ngrow(minutes=60)'),
    ],
)
def test_seed_usage_create_allocate_start_execute_metrics_destroy(organism, program):
    from bioxen_flows.performance import performance_monitor
    from bioxen_flows.resources import BioResourceManager

    calls_before = performance_monitor.stats().get("execute_biological_process", {}).get(
        "calls", 0
    )
    vm = create_bio_vm(f"seed_{organism}", organism)
    resources = BioResourceManager(vm)
    resources.allocate_atp(70)
    resources.allocate_ribosomes(5000)
    vm.start()
    result = vm.execute_biological_process(program)
    metrics = vm.get_biological_metrics()
    assert metrics["simulated_time_min"] == 60
    assert metrics["growth_rate_per_min"] == pytest.approx(
        result["summary"]["growth_rate_per_min"]
    )
    assert sum(metrics["protein_molecules"].values()) > 0
    vm.destroy()
    stats = performance_monitor.stats()
    assert stats["execute_biological_process"]["calls"] == calls_before + 1
    assert stats["destroy"]["successes"] >= 1
    assert list_bio_vms() == []


def test_config_nutrient_sets_the_medium():
    vm = create_bio_vm("medium", "syn3a", config={"simulation": {"nutrient": 500.0}})
    assert vm.get_biological_metrics()["nutrient_molecules"] == 500


# ---- the registry of infrastructures ----------------------------------------------------------
def test_the_registry_is_the_one_list_of_vm_types():
    from typing import get_args

    from bioxen_flows.config.models import VMConfig
    from bioxen_flows.vm import infrastructure, infrastructure_names
    from bioxen_flows.vm_types import VM_TYPES

    assert infrastructure_names() == VM_TYPES == ("basic", "xcpng")
    assert get_args(VMConfig.model_fields["vm_type"].annotation) == VM_TYPES
    assert [infrastructure(n).name for n in VM_TYPES] == list(VM_TYPES)
    assert infrastructure("basic").in_process and not infrastructure("basic").provisioned
    assert infrastructure("xcpng").provisioned and infrastructure("xcpng").io_bound
    with pytest.raises(InputError, match="choose one of: basic, xcpng"):
        infrastructure("kvm")


def test_placement_is_typed_and_recorded_as_a_mapping():
    from bioxen_flows.xcpng.placement import Placement

    placement = Placement(vm_ref="OpaqueRef:1", vm_uuid="u-1", ip="10.0.0.2")
    assert Placement.from_record(placement.as_dict()) == placement
    assert Placement.from_record({"vm_uuid": "u-1"}) == Placement(vm_uuid="u-1")
    assert Placement.from_record(None) == Placement()
    with pytest.raises(InputError, match="unknown placement field"):
        Placement.from_record({"ip": "10.0.0.2", "host": "x"})


def test_a_huge_module_file_for_a_guest_is_refused_unread(tmp_path, monkeypatch):
    """The XCP-ng host reads a module before sending it to the guest: bounded, by fstat,
    before a byte of it is read (it once used an unbounded read_text)."""
    import os

    from bioxen_flows.vm.guest import GuestHost

    huge = tmp_path / "huge.ant"
    with open(huge, "wb") as handle:
        handle.truncate(3 << 29)  # 1.5 GiB, sparse: costs no disk
    read = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    host = object.__new__(GuestHost)
    monkeypatch.setattr(GuestHost, "guest", lambda *a, **k: pytest.fail("sent to the guest"))
    with pytest.raises(InputError, match="limit"):
        host.install(str(huge), None)
    assert read == []
