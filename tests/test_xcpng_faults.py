"""The XCP-ng fault matrix (docs/xcpng.md): each fault, injected into the XAPI simulator or
the guest's SSH server, and what the backend does about it.

Every test ends (the `pool` fixture) with the pool holding no VM, disk or task of ours and
`bioxen xcpng gc` finding nothing. Crash and cancellation through a real Prefect server and
worker are in tests/test_xcpng_prefect_server.py.
"""

from __future__ import annotations

import time

import pytest

from bioxen_flows.errors import (
    GuestError,
    GuestTimeoutError,
    TransientInfrastructureError,
    XapiError,
)
from bioxen_flows.orchestration.flows import vm_lifecycle
from bioxen_flows.orchestration.xcpng_tasks import plan_gc
from bioxen_flows.testing.xapi_simulator import XapiSimulator
from bioxen_flows.vm import create_bio_vm, list_bio_vms, load_bio_vm
from bioxen_flows.xcpng import backend
from tests.sshd import GuestSSHServer
from tests.xcpng_pool import PASSWORD, assert_nothing_left, xcpng_config

pytest_plugins = ["tests.xcpng_pool"]  # the pool and guest fixtures


def ours(sim: XapiSimulator) -> list[dict]:
    """Every VM this test's installation has on the pool (templates included)."""
    return [v for v in sim.vms(include_templates=True) if v["name_label"].startswith("bioxen-")
            and v["name_label"] != "bioxen-guest"]


# ---- connection loss mid-provision, tagging fails after the clone ---------------------------

# Each fault: (simulator method, XAPI call, its options) and the calls the pool then counted.
FAULTS_A_RUN_SURVIVES = [
    # twice: xmlrpc.client resends once by itself, the second loss reaches the task's retry
    pytest.param("inject_reset", "Async.VM.provision", {"times": 2},
                 {"Async.VM.provision": 3, "Async.VM.clone": 1},
                 id="reset-mid-provision-is-retried"),
    # it ran; the answer was lost. xmlrpc.client resent the call; the second task met a
    # provisioned VM and was not an error
    pytest.param("inject_reset", "Async.VM.provision", {"after_call": True},
                 {"Async.VM.provision": 2, "Async.VM.clone": 1},
                 id="reset-after-provision-acted-does-not-provision-twice"),
    # xmlrpc.client resends: 2 clones; the untagged twin went at once, then ours
    pytest.param("inject_reset", "Async.VM.clone", {"after_call": True},
                 {"Async.VM.clone": 2, "VM.destroy": 2},
                 id="reset-after-the-clone-acted-leaves-no-twin"),
    # tagging fails after the clone: the first clone was destroyed at once, and retried
    pytest.param("inject_transient", "VM.add_to_other_config", {"times": 1},
                 {"Async.VM.clone": 2, "VM.destroy": 2},
                 id="tagging-failure-after-clone-discards-the-clone-and-retries"),
]


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("fault, method, options, calls", FAULTS_A_RUN_SURVIVES)
def test_a_run_survives_the_fault(pool, guest, fault, method, options, calls):
    getattr(pool, fault)(method, **options)
    out = vm_lifecycle(organism="ecoli", program="grow(5)", vm_type="xcpng",
                       config=xcpng_config(pool, guest))
    assert out["metrics"]["simulated_time_min"] == 5
    assert {name: pool.call_counts[name] for name in calls} == calls


# ---- a task that times out ------------------------------------------------------------------

def test_a_timed_out_task_is_cancelled_before_it_is_destroyed(pool, guest):
    pool.task_seconds = 1.5  # the clone takes longer than we wait for it
    cfg = xcpng_config(pool, guest, task_timeout_seconds=0.3)["xcpng_config"]
    with pytest.raises(TransientInfrastructureError, match="timed out .* cancelled"):
        backend.clone_and_tag(cfg, "slow", owner="local")
    assert pool.call_counts["task.cancel"] == 1 and pool.call_counts["task.destroy"] == 1
    time.sleep(2.0)  # long after the clone would have finished
    assert ours(pool) == []  # cancelled: no untagged clone appears later


# ---- tagging fails after the clone ------------------------------------------------------------

def test_an_untagged_clone_is_found_by_its_name_and_reaped_when_old(pool, guest, monkeypatch):
    """Tagging fails and so does discarding the clone: only the name says it is ours."""
    cfg = xcpng_config(pool, guest)["xcpng_config"]
    pool.inject_transient("VM.add_to_other_config", times=1)
    pool.inject_transient("VM.destroy", times=1)
    with pytest.raises(TransientInfrastructureError):
        backend.clone_and_tag(cfg, "untagged", owner="local")
    (clone,) = ours(pool)
    assert not any(k.startswith("bioxen_") for k in clone["other_config"])
    young = plan_gc(cfg, 3600)
    assert [(x.vm_id, x.destroy) for x in young] == [("untagged", False)]
    assert "younger than the minimum age" in young[0].reason  # VM_metrics.install_time
    (old,) = plan_gc(cfg, 0)
    assert old.destroy and old.reason.startswith("untagged clone")
    assert backend.destroy_leftovers(cfg, [old]) == [clone["name_label"]]


# ---- teardown stops after VM.destroy --------------------------------------------------------

def test_disks_orphaned_by_a_broken_teardown_are_tagged_and_reaped(pool, guest):
    cfg = xcpng_config(pool, guest)
    vm = create_bio_vm("orphaner", "ecoli", "xcpng", cfg)
    pool.inject_transient("VDI.destroy", times=1, code="SR_BACKEND_FAILURE_46")
    with pytest.raises(XapiError, match="SR_BACKEND_FAILURE_46"):
        vm.destroy()
    assert pool.vms() == []  # VM.destroy happened ...
    (disk,) = pool.vdis(kind="system")  # ... its disk did not go, but carries our tags
    assert disk["other_config"]["bioxen_vm_id"] == "orphaner"
    (kept,) = plan_gc(cfg["xcpng_config"], 0)  # its record still exists: not yet
    assert (kept.kind, kept.destroy) == ("VDI", False)
    load_bio_vm("orphaner").destroy()  # the record (its VM is gone already)
    assert list_bio_vms() == []
    (orphan,) = plan_gc(cfg["xcpng_config"], 0)
    assert (orphan.kind, orphan.destroy) == ("VDI", True)
    assert "disk of no VM" in orphan.reason
    assert backend.destroy_leftovers(cfg["xcpng_config"], [orphan]) == [disk["name_label"]]


# ---- storage full --------------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("code", ["SR_FULL", "SR_BACKEND_FAILURE_44"])
def test_a_full_sr_fails_at_once_and_the_half_provisioned_vm_is_reaped(pool, guest, code):
    pool.storage_full = code
    with pytest.raises(XapiError, match="storage repository is full"):
        vm_lifecycle(organism="ecoli", vm_type="xcpng", config=xcpng_config(pool, guest))
    assert pool.call_counts["Async.VM.provision"] == 1  # not retried


# ---- TLS --------------------------------------------------------------------------------------

@pytest.fixture
def tls_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("XCPNG_PASSWORD", PASSWORD)
    with XapiSimulator(password=PASSWORD, boot_seconds=0.3, tls_dir=tmp_path / "tls") as sim:
        yield sim
        assert_nothing_left(sim)


def test_https_with_the_right_ca_file_works(tls_pool, tmp_path):
    with GuestSSHServer(tmp_path / "sshd", guest_env={"BIOXEN_HOME": str(tmp_path / "g")},
                        reachable=tls_pool.guest_reachable) as guest:
        assert tls_pool.url.startswith("https://")
        vm = create_bio_vm("tls", "ecoli", "xcpng",
                           xcpng_config(tls_pool, guest, ca_file=str(tls_pool.ca_file)))
        vm.destroy()


def test_a_wrong_ca_fails_at_once_and_is_never_retried(tls_pool, guest, tmp_path):
    from bioxen_flows.testing.xapi_simulator import write_test_ca

    wrong_ca, _, _ = write_test_ca(tmp_path / "other_ca")
    with pytest.raises(XapiError, match="does not verify.*ca_file") as caught:
        create_bio_vm("mitm", "ecoli", "xcpng",
                      xcpng_config(tls_pool, guest, ca_file=str(wrong_ca)))
    assert not isinstance(caught.value, TransientInfrastructureError)
    assert tls_pool.calls == []  # not even a login reached the pool
    assert list_bio_vms() == []


# ---- a guest that keeps running after an SSH timeout -------------------------------------------

@pytest.fixture
def openssh_guest(tmp_path, pool):
    """Like OpenSSH without a pty: a client that hangs up does not stop the guest command."""
    with GuestSSHServer(tmp_path / "sshd", guest_env={"BIOXEN_HOME": str(tmp_path / "guest")},
                        kill_on_hangup=False, reachable=pool.guest_reachable) as server:
        yield server


def test_a_guest_past_its_deadline_commits_nothing(pool, openssh_guest):
    cfg = xcpng_config(pool, openssh_guest, ssh_command_timeout_seconds=20.0)
    # libroadrunner's Gillespie: ~1 s per simulated hour (the compiled engine is too fast
    # to pass the deadline)
    cfg["simulation"] = {"stochastic": True, "seed": 7, "stochastic_engine": "roadrunner",
                         "division": False}
    vm = create_bio_vm("slow", "syn3a", "xcpng", cfg)
    vm.start()
    started = time.monotonic()
    # the guest's deadline is 10 s (20 s less the 10 s margin): it stops itself and says
    # so, before our own 20 s timeout; the server would never have stopped it
    with pytest.raises(GuestError, match=r"deadline \(10 s\) passed.*nothing of it was c"):
        vm.execute_biological_process("grow(minutes=1440)")  # ~24 s
    assert time.monotonic() - started < 20
    assert not isinstance(GuestError, GuestTimeoutError)
    gone = time.monotonic() + 5  # it has answered; let the server see it exit
    while openssh_guest._procs and time.monotonic() < gone:
        time.sleep(0.05)
    assert not openssh_guest._procs  # no guest process outlives its deadline
    assert load_bio_vm("slow").get_biological_metrics()["simulated_time_min"] == 0
    vm.destroy()


def test_a_request_whose_reply_was_lost_is_applied_once(pool, openssh_guest):
    vm = create_bio_vm("once", "ecoli", "xcpng", xcpng_config(pool, openssh_guest))
    vm.start()
    openssh_guest.lose_replies = 1
    result = vm.execute_biological_process("grow(minutes=5)")
    assert openssh_guest.commands.count("bioxen guest") >= 2  # the request went twice
    assert result["summary"]["simulated_time_min"] == 5
    assert vm.get_biological_metrics()["simulated_time_min"] == 5  # ... and ran once
    vm.destroy()


# ---- a retry after a rollback -------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_api_url")
def test_a_retry_after_the_guest_cell_failed_uses_a_vm_that_exists(pool, guest):
    """SSH fails while the guest cell is created (every resend too): the task is retried.
    The VM the earlier tasks provisioned must still be there (the guest only answers while
    it exists), and it is reused, not provisioned again."""
    boots = []
    real = pool.guest_reachable

    def reachable(ip: str) -> bool:
        boots.append(real(ip))
        return boots[-1]

    guest.reachable = reachable
    guest.refuse_connections = 3  # one create_bio_vms attempt: 3 connections
    out = vm_lifecycle(organism="ecoli", program="grow(5)", vm_type="xcpng",
                       config=xcpng_config(pool, guest))
    assert out["metrics"]["simulated_time_min"] == 5
    assert pool.call_counts["Async.VM.clone"] == 1  # provisioned once, reused on retry
    assert boots and all(boots)  # every connection found its VM alive


# ---- the transport and error classification ------------------------------------------------------

def test_ignore_ssl_keeps_the_timeout_and_a_slow_pool_is_transient(tls_pool):
    from bioxen_flows.xcpng import xapi

    endpoint = xapi.XapiEndpoint(url=tls_pool.url, username="root", ignore_ssl=True,
                                 timeout_seconds=0.5)
    with xapi.xapi_session(endpoint, PASSWORD) as x:  # unverified, as asked
        assert x.VM.get_all()
    tls_pool.slow_methods["session.login_with_password"] = 2.0
    started = time.monotonic()
    with pytest.raises(TransientInfrastructureError, match="cannot reach XAPI"):
        with xapi.xapi_session(endpoint, PASSWORD):
            pass
    assert time.monotonic() - started < 1.5  # the transport's timeout, not the answer
    tls_pool.clear_faults()


def test_destroy_vm_treats_only_a_missing_vm_as_gone(pool, guest):
    vm = create_bio_vm("denied", "ecoli", "xcpng", xcpng_config(pool, guest))
    pool.inject_permanent("VM.get_by_uuid", "PERMISSION_DENIED")
    with pytest.raises(XapiError, match="PERMISSION_DENIED"):
        vm.destroy()
    assert len(pool.vms()) == 1  # not mistaken for "already gone"
    pool.clear_faults()
    load_bio_vm("denied").destroy()
    assert list_bio_vms() == []


# ---- a create that fails before anything was cloned ----------------------------------------

@pytest.mark.parametrize("password", [None, "wrong"])
def test_a_create_that_never_reached_the_pool_warns_of_no_vm(pool, guest, password, tmp_path,
                                                             monkeypatch, capsys):
    """No password, or a refused login: the pool was never asked for a clone, so the one
    line says why and nothing about cleaning up a VM that was never made."""
    import json

    from bioxen_flows.cli import main

    if password is None:
        monkeypatch.delenv("XCPNG_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("XCPNG_PASSWORD", password)
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(xcpng_config(pool, guest)))
    capsys.readouterr()
    assert main(["create", "r1", "syn3a", "--vm-type", "xcpng", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bioxen: error: "), err
    assert "clean up" not in err and "reap-xcpng-vms" not in err
    assert pool.call_counts.get("Async.VM.clone", 0) == 0
    assert list_bio_vms() == []


def test_a_create_that_failed_after_the_clone_still_reaps_it(pool, guest):
    pool.storage_full = "SR_FULL"
    with pytest.raises(XapiError, match="storage repository is full"):
        create_bio_vm("r2", "syn3a", vm_type="xcpng", config=xcpng_config(pool, guest))
    assert pool.call_counts["Async.VM.clone"] == 1
    assert ours(pool) == [] and list_bio_vms() == []
