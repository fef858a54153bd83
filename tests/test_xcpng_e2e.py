"""XCP-ng end to end: the XAPI simulator, a real SSH server on loopback, `bioxen guest` inside.

Production code cannot tell the simulator from xapi nor the SSH server from a guest's sshd.
The SSH server accepts a connection only while the simulator has a running, booted VM at
that address, so talking to a destroyed VM fails as it would on a pool. Every test ends by
checking that the pool holds no VM, disk or task of ours and that gc finds nothing.
"""

from __future__ import annotations

import pandas as pd
import pytest

from bioxen_flows.errors import (
    BudgetError,
    HostKeyMismatchError,
    TransientInfrastructureError,
    XapiError,
)
from bioxen_flows.orchestration.flows import vm_lifecycle
from bioxen_flows.state import StateStore
from bioxen_flows.testing.xapi_simulator import XapiSimulator
from bioxen_flows.vm import create_bio_vm, list_bio_vms, load_bio_vm
from tests.sshd import GuestSSHServer
from tests.xcpng_pool import PASSWORD, gc, xcpng_config

pytest_plugins = ["tests.xcpng_pool"]  # the pool and guest fixtures
PROGRAM = 'install("gfp_reporter")\nstart_transcription(["gfp"])\ngrow(minutes=45)'


def test_api_lifecycle_matches_a_basic_vm(pool, guest):
    remote = create_bio_vm("remote", "syn3a", "xcpng", xcpng_config(pool, guest))
    local = create_bio_vm("local", "syn3a")
    assert remote.get_vm_type() == "xcpng" and len(pool.vms()) == 1
    for vm in (remote, local):
        vm.start()
        vm.allocate(atp_percent=70)
    remote_result = remote.execute_biological_process(PROGRAM)
    local_result = local.execute_biological_process(PROGRAM)
    pd.testing.assert_frame_equal(
        pd.DataFrame(remote_result["timeseries"]), pd.DataFrame(local_result["timeseries"])
    )
    assert remote.get_biological_metrics() == local.get_biological_metrics()
    assert load_bio_vm("remote").get_status()["state"] == "running"
    assert StateStore().budget()["atp_percent_allocated"] == 140  # one ledger for both
    with pytest.raises(BudgetError):  # an XCP-ng VM is refused by the same ledger
        remote.allocate(ribosomes=100_001)
    assert guest.commands and set(guest.commands) == {"bioxen guest"}
    remote.destroy()
    local.destroy()
    assert list_bio_vms() == []


@pytest.mark.usefixtures("prefect_api_url")
def test_lifecycle_flow_on_xcpng_equals_basic(pool, guest):
    remote = vm_lifecycle(organism="syn3a", program=PROGRAM, vm_type="xcpng",
                          config=xcpng_config(pool, guest))
    local = vm_lifecycle(organism="syn3a", program=PROGRAM)
    assert remote["metrics"] == local["metrics"]
    assert pd.DataFrame(remote["timeseries"]).equals(pd.DataFrame(local["timeseries"]))
    assert list_bio_vms() == []


@pytest.mark.usefixtures("prefect_api_url")
def test_transient_clone_fault_is_retried(pool, guest):
    pool.inject_transient("VM.clone", times=1)
    out = vm_lifecycle(organism="ecoli", program="grow(5)", vm_type="xcpng",
                       config=xcpng_config(pool, guest))
    assert out["metrics"]["simulated_time_min"] == 5
    assert pool.call_counts["Async.VM.clone"] == 2


@pytest.mark.usefixtures("prefect_api_url")
def test_vm_still_booting_is_retried(pool, guest):
    pool.inject_transient("VM.start", times=1, code="VM_BAD_POWER_STATE",
                          args=["OpaqueRef:x", "halted", "running"])
    out = vm_lifecycle(organism="syn3a", program="grow(5)", vm_type="xcpng",
                       config=xcpng_config(pool, guest))
    assert out["metrics"]["simulated_time_min"] == 5
    assert pool.call_counts["Async.VM.start"] == 2


@pytest.mark.usefixtures("prefect_api_url")
def test_vm_requires_sr_fails_at_once(pool, guest):
    pool.inject_permanent("VM.provision", "VM_REQUIRES_SR", "OpaqueRef:x", "OpaqueRef:NULL")
    with pytest.raises(XapiError, match="VM_REQUIRES_SR"):
        vm_lifecycle(organism="syn3a", vm_type="xcpng", config=xcpng_config(pool, guest))
    assert pool.call_counts["Async.VM.provision"] == 1


@pytest.mark.usefixtures("prefect_api_url")
def test_missing_template_fails_at_once_with_advice(pool, guest):
    with pytest.raises(XapiError, match="no template named 'nope'.*bioxen-guest"):
        vm_lifecycle(organism="ecoli", vm_type="xcpng",
                     config=xcpng_config(pool, guest, template="nope"))
    assert pool.call_counts["VM.get_by_name_label"] == 1  # not retried


@pytest.mark.usefixtures("prefect_api_url")
def test_sr_full_fails_at_once_and_the_clone_is_reaped(pool, guest):
    pool.inject_permanent("VM.provision", "SR_FULL")
    with pytest.raises(XapiError, match="SR_FULL.*storage repository is full"):
        vm_lifecycle(organism="ecoli", vm_type="xcpng", config=xcpng_config(pool, guest))
    assert pool.call_counts["Async.VM.provision"] + pool.call_counts["VM.provision"] == 1


def test_bad_credentials_fail_with_actionable_message(pool, guest, monkeypatch):
    monkeypatch.setenv("XCPNG_PASSWORD", "wrong")
    with pytest.raises(XapiError, match="SESSION_AUTHENTICATION_FAILED.*password"):
        create_bio_vm("denied", "ecoli", "xcpng", xcpng_config(pool, guest))
    assert list_bio_vms() == []


def test_missing_password_is_a_clear_error(pool, guest, monkeypatch):
    monkeypatch.delenv("XCPNG_PASSWORD")
    with pytest.raises(ValueError, match="XCPNG_PASSWORD"):
        create_bio_vm("nopw", "ecoli", "xcpng", xcpng_config(pool, guest))
    assert list_bio_vms() == []


def test_login_on_a_pool_member_follows_the_redirect(pool, guest):
    with XapiSimulator(password=PASSWORD) as member:
        member.slave_redirect_to(pool.address)
        vm = create_bio_vm("redirected", "ecoli", "xcpng",
                           xcpng_config(pool, guest, url=member.url))
        assert len(pool.vms()) == 1 and member.vms() == []
        vm.destroy()


def test_vm_that_never_reports_an_ip_is_torn_down(pool, guest):
    pool.never_report_ip = True
    with pytest.raises(TransientInfrastructureError, match="no usable IP"):
        create_bio_vm("silent", "ecoli", "xcpng",
                      xcpng_config(pool, guest, boot_timeout_seconds=1.0))
    assert list_bio_vms() == []


def test_stale_template_ip_is_never_used(pool, guest):
    vm = create_bio_vm("fresh", "ecoli", "xcpng", xcpng_config(pool, guest))
    assert vm.host.target.host == "127.0.0.1"  # not the template's old 192.0.2.66
    vm.destroy()


def test_wrong_host_key_is_refused_and_cleaned_up(pool, guest, tmp_path):
    with GuestSSHServer(tmp_path / "other") as impostor:
        cfg = xcpng_config(pool, guest, ssh_host_key=impostor.host_key_line)
        with pytest.raises(HostKeyMismatchError, match="host key"):
            create_bio_vm("mitm", "ecoli", "xcpng", cfg)
    assert guest.commands == []  # the guest command never ran
    assert list_bio_vms() == []


@pytest.mark.usefixtures("prefect_api_url")
def test_gc_lists_then_destroys_only_this_installations_leftovers(
    pool, guest, bioxen_home, tmp_path, monkeypatch
):
    import yaml

    from bioxen_flows.xcpng import backend

    config_file = tmp_path / "pool.yaml"
    config_file.write_text(yaml.safe_dump(xcpng_config(pool, guest)))
    cfg = xcpng_config(pool, guest)["xcpng_config"]
    backend.provision_vm(cfg, "orphan", owner="00000000-0000-0000-0000-000000000000")
    kept = create_bio_vm("kept", "ecoli", "xcpng", xcpng_config(pool, guest))
    assert len(pool.vms()) == 2

    # a second installation (another BIOXEN_HOME, same pool) sees nothing of ours
    monkeypatch.setenv("BIOXEN_GC_MIN_AGE_SECONDS", "0")
    other = gc(config_file, tmp_path / "other_home", "--yes")
    assert other == {"leftovers": [], "destroyed": []}
    assert len(pool.vms()) == 2

    # ours: young things stay whatever their owner; the record keeps "kept" alive
    monkeypatch.setenv("BIOXEN_GC_MIN_AGE_SECONDS", "3600")
    young = gc(config_file, bioxen_home)["leftovers"]
    assert {(x["vm_id"], x["action"]) for x in young} == {("orphan", "keep"), ("kept", "keep")}
    assert "younger than the minimum age" in next(
        x["reason"] for x in young if x["vm_id"] == "orphan")

    monkeypatch.setenv("BIOXEN_GC_MIN_AGE_SECONDS", "0")
    listed = gc(config_file, bioxen_home)  # without --yes: a list, nothing destroyed
    verdicts = {x["vm_id"]: (x["action"], x["reason"]) for x in listed["leftovers"]}
    assert verdicts["orphan"] == ("destroy", "owner 00000000-0000-0000-0000-000000000000 is gone")
    assert verdicts["kept"] == ("keep", "bio-VM kept exists in this installation's store")
    assert listed["destroyed"] == [] and len(pool.vms()) == 2

    done = gc(config_file, bioxen_home, "--yes")
    assert [name.rsplit("-", 1)[-1] for name in done["destroyed"]] == ["orphan"]
    assert [v["name_label"].rsplit("-", 1)[-1] for v in pool.vms()] == ["kept"]
    kept.destroy()


def test_a_flow_reaps_only_its_own_vms_of_this_installation(pool, guest, tmp_path, monkeypatch):
    """Another installation's VM with the same owner and vm_id is not touched."""
    from bioxen_flows.xcpng import backend

    cfg = xcpng_config(pool, guest)["xcpng_config"]
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "other_home"))
    backend.clone_and_tag(cfg, "same", owner="run-1")
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "bioxen_home"))
    backend.clone_and_tag(cfg, "same", owner="run-1")
    assert backend.reap_vms(cfg, keep=lambda tags: tags.get("owner") != "run-1") == ["same"]
    (theirs,) = pool.vms(include_templates=True)[-1:]
    assert theirs["name_label"].startswith("bioxen-") and "bioxen_owner" in theirs["other_config"]
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "other_home"))
    assert backend.reap_vms(cfg, keep=lambda tags: False) == ["same"]
    monkeypatch.setenv("BIOXEN_HOME", str(tmp_path / "bioxen_home"))


@pytest.mark.usefixtures("prefect_api_url")
def test_password_never_reaches_logs_results_or_state(pool, guest, bioxen_home, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    out = vm_lifecycle(organism="syn3a", program="grow(5)", vm_type="xcpng",
                       config=xcpng_config(pool, guest))
    assert PASSWORD not in repr(out)
    assert PASSWORD not in caplog.text
    for path in bioxen_home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        for run in runs:
            assert PASSWORD not in repr(run.parameters)
        logs = client.read_logs()
        assert all(PASSWORD not in log.message for log in logs)


def test_half_provisioned_record_can_still_be_destroyed(pool, guest):
    """A record whose provisioning never finished (no guest address) is destroyable."""
    import time

    from bioxen_flows.state import StateStore, VMRecord
    from bioxen_flows.xcpng import backend

    cfg = xcpng_config(pool, guest)
    backend.clone_and_tag(cfg["xcpng_config"], "half", owner="local")
    now = time.time()
    StateStore().insert_vm(VMRecord(
        vm_id="half", biological_type="ecoli", vm_type="xcpng", state="created",
        created_at=now, config=cfg, allocations={}, snapshot=None, updated_at=now,
    ))
    vm = load_bio_vm("half")
    with pytest.raises(ValueError, match="never provisioned completely"):
        vm.get_biological_metrics()
    vm.destroy()
    assert list_bio_vms() == []  # and the pool fixture checks the clone is gone


def test_teardown_refuses_a_vm_this_installation_did_not_make(pool, guest):
    """A record pointed at a template (or another installation's VM) never destroys it."""
    import time

    from bioxen_flows.errors import InfrastructureError
    from bioxen_flows.state import VMRecord
    from bioxen_flows.vm import force_destroy_vm

    template = next(v for v in pool.vms(include_templates=True)
                    if v["is_a_template"] and not v["is_a_snapshot"])
    cfg = xcpng_config(pool, guest)
    now = time.time()
    StateStore().insert_vm(VMRecord(
        vm_id="intruder", biological_type="ecoli", vm_type="xcpng", state="created",
        created_at=now, config={**cfg, "placement": {"vm_uuid": template["uuid"]}},
        allocations={}, snapshot=None, updated_at=now,
    ))
    with pytest.raises(InfrastructureError, match="does not carry this installation's"):
        load_bio_vm("intruder").destroy()
    assert force_destroy_vm("intruder") is True
    still = [v for v in pool.vms(include_templates=True) if v["uuid"] == template["uuid"]]
    assert still and still[0]["is_a_template"]
    assert list_bio_vms() == []


@pytest.mark.usefixtures("prefect_api_url")
def test_credentials_block_registers_saves_loads_and_drives_a_flow(
    pool, guest, bioxen_home, caplog
):
    """The XCPngCredentials block type is registered the Prefect way (`prefect block
    register -m ...`), saved and loaded; a flow given its name never sees the password."""
    import logging
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from bioxen_flows.xcpng.credentials import XCPngCredentials

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m",
         "bioxen_flows.xcpng.credentials"], env=env, capture_output=True, encoding="utf-8",
        errors="replace", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        assert client.read_block_type_by_slug("xcp-ng-credentials").name == "XCP-ng Credentials"

    XCPngCredentials(url=pool.url, username="root", password=PASSWORD).save(
        "sim-pool", overwrite=True)
    loaded = XCPngCredentials.load("sim-pool")
    assert loaded.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(loaded) and PASSWORD not in str(loaded.model_dump())
    with loaded.get_session() as x:
        assert len(x.VM.get_all()) >= 1

    caplog.set_level(logging.DEBUG)
    cfg = xcpng_config(pool, guest)
    for key in ("url", "username"):
        del cfg["xcpng_config"][key]
    cfg["xcpng_config"]["credentials_block"] = "sim-pool"
    cfg["xcpng_config"]["password_env"] = "NO_SUCH_VARIABLE"  # the block's password is used
    out = vm_lifecycle(organism="syn3a", program="grow(5)", vm_type="xcpng", config=cfg)
    assert out["metrics"]["simulated_time_min"] == 5
    assert PASSWORD not in repr(out) and PASSWORD not in caplog.text
    with get_client(sync_client=True) as client:
        assert all(PASSWORD not in repr(run.parameters) for run in client.read_flow_runs())
        assert all(PASSWORD not in log.message for log in client.read_logs())
    for path in bioxen_home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_config_names_the_block_or_the_pool_not_both(pool, guest):
    cfg = xcpng_config(pool, guest)
    cfg["xcpng_config"]["credentials_block"] = "sim-pool"
    with pytest.raises(ValueError, match="either credentials_block or url"):
        create_bio_vm("both", "ecoli", "xcpng", cfg)
    assert list_bio_vms() == []
