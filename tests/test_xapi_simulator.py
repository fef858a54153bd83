"""The XAPI simulator, driven only through the official XenAPI client, as production code is."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import XenAPI

from bioxen_flows.testing.xapi_simulator import STALE_IP, XapiSimulator

TEMPLATE = "bioxen-guest"


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    with XapiSimulator(boot_seconds=0.4) as simulator:
        yield simulator


def login(sim: XapiSimulator, password: str = "secret") -> XenAPI.Session:
    session = XenAPI.Session(sim.url)
    session.login_with_password("root", password, "1.0", "bioxen-tests")
    return session


def details(excinfo: pytest.ExceptionInfo[XenAPI.Failure]) -> list[str]:
    return list(excinfo.value.details)


def template(x: Any) -> str:
    """The real template: same name as its snapshot, but not a snapshot."""
    (ref,) = [r for r in x.VM.get_by_name_label(TEMPLATE) if not x.VM.get_is_a_snapshot(r)]
    return ref


def wait_task(x: Any, task: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll a task to completion, destroy it, return its final record."""
    deadline = time.monotonic() + timeout
    while x.task.get_status(task) == "pending":
        assert time.monotonic() < deadline, "task never finished"
        time.sleep(0.02)
    record = x.task.get_record(task)
    x.task.destroy(task)
    return record


def task_value(record: dict[str, Any]) -> str:
    assert record["status"] == "success", record["error_info"]
    return ET.fromstring(record["result"]).text if record["result"] else ""


def fix_disks(x: Any, vm: str) -> None:
    """What a client must do: drop the template's foreign sr= so provision uses the default SR."""
    provision = ET.fromstring(x.VM.get_other_config(vm)["disks"])
    for disk in provision.iter("disk"):
        disk.attrib.pop("sr", None)
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", ET.tostring(provision, encoding="unicode"))


def install(x: Any, name: str) -> str:
    """clone + fix disks + provision + start, all asynchronously; returns the VM ref."""
    vm = task_value(wait_task(x, x.Async.VM.clone(template(x), name)))
    fix_disks(x, vm)
    assert task_value(wait_task(x, x.Async.VM.provision(vm))) == ""
    assert task_value(wait_task(x, x.Async.VM.start(vm, False, False))) == ""
    return vm


def fresh_ip(x: Any, vm: str, since: datetime, timeout: float) -> str | None:
    """A client's correct wait: only metrics updated after `since` count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = x.VM.get_guest_metrics(vm)
        if metrics != "OpaqueRef:NULL":
            record = x.VM_guest_metrics.get_record(metrics)
            updated = datetime.strptime(record["last_updated"].value, "%Y%m%dT%H:%M:%SZ")
            if updated.replace(tzinfo=timezone.utc) >= since and record["networks"].get("0/ip"):
                return record["networks"]["0/ip"]
        time.sleep(0.05)
    return None


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)


def test_login_succeeds_and_logout_ends_the_session(sim: XapiSimulator) -> None:
    session = login(sim)
    assert [s["ref"] for s in sim.sessions()] == [session.handle]
    assert session.xenapi.pool.get_master(session.xenapi.pool.get_all()[0])
    session.xenapi.session.logout()
    assert sim.sessions() == []


def test_wrong_password_and_injected_login_failure(sim: XapiSimulator) -> None:
    with pytest.raises(XenAPI.Failure) as exc:
        login(sim, password="wrong")
    assert details(exc) == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
    sim.fail_login_with("SESSION_AUTHENTICATION_FAILED")
    with pytest.raises(XenAPI.Failure) as exc:
        login(sim)
    assert details(exc) == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
    sim.fail_login_with(None)
    assert login(sim).handle.startswith("OpaqueRef:")


def test_slave_redirects_to_master_where_login_works() -> None:
    with XapiSimulator() as master, XapiSimulator() as slave:
        slave.slave_redirect_to(master.address)
        with pytest.raises(XenAPI.Failure) as exc:
            login(slave)
        code, address = details(exc)
        assert (code, address) == ("HOST_IS_SLAVE", master.address)
        session = XenAPI.Session(f"http://{address}")
        session.login_with_password("root", "secret", "1.0", "bioxen-tests")
        assert len(master.sessions()) == 1 and slave.sessions() == []


def test_template_lookup_returns_template_and_distinguishable_snapshot(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    refs = x.VM.get_by_name_label(TEMPLATE)
    records = [x.VM.get_record(r) for r in refs]
    assert len(refs) == 2 and all(r["is_a_template"] for r in records)
    assert sorted(r["is_a_snapshot"] for r in records) == [False, True]
    real = x.VM.get_record(template(x))
    assert real["snapshots"] and real["snapshot_of"] == "OpaqueRef:NULL"
    sr_uuid = ET.fromstring(real["other_config"]["disks"]).find("disk").get("sr")
    assert sr_uuid not in [x.SR.get_uuid(sr) for sr in x.SR.get_all()]
    cds = [x.VBD.get_record(b) for b in real["VBDs"]]
    assert [b["type"] for b in cds] == ["CD"]
    assert x.SR.get_record(x.VDI.get_SR(cds[0]["VDI"]))["content_type"] == "iso"
    dom0 = [r for r in x.VM.get_all_records().values() if r["is_control_domain"]]
    assert len(dom0) == 1 and sim.vms() == []


def test_ints_are_strings_and_power_states_capitalised_on_the_wire(sim: XapiSimulator) -> None:
    session = login(sim)
    raw = getattr(session, "VM.get_record")(session.handle, template(session.xenapi))
    assert raw["Status"] == "Success"
    record = raw["Value"]
    assert record["memory_static_max"] == "1073741824" and record["VCPUs_max"] == "1"
    assert record["power_state"] == "Halted" and record["is_a_template"] is True
    assert record["guest_metrics"].startswith("OpaqueRef:")
    x = session.xenapi
    assert all(isinstance(x.VDI.get_virtual_size(v), str) for v in x.VDI.get_all())
    assert x.host.get_API_version_major(x.pool.get_master(x.pool.get_all()[0])) == "2"
    bogus = getattr(session, "VM.get_all")("OpaqueRef:bogus")
    assert bogus == {"Status": "Failure",
                     "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bogus"]}


def test_xapi_errors_for_bad_calls(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.frobnicate(template(x))
    assert details(exc) == ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.get_record("OpaqueRef:nope")
    assert details(exc) == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.clone(template(x))
    assert details(exc) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.clone", "3", "2"]
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.start(template(x), False, False)
    assert details(exc) == ["VM_IS_TEMPLATE", template(x), "start"]
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.add_to_other_config(template(x), "disks", "<provision/>")
    assert details(exc) == ["MAP_DUPLICATE_KEY", "VM", "other_config", template(x), "disks"]


def test_expired_session_is_renewed_by_the_client(sim: XapiSimulator) -> None:
    session = login(sim)
    old = session.handle
    sim.expire_sessions()
    assert session.xenapi.VM.get_all()  # XenAPI saw SESSION_INVALID and logged in again
    assert session.handle != old and [s["ref"] for s in sim.sessions()] == [session.handle]


def test_clone_provision_start_async_and_tasks_destroyed(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    vm = install(x, "bio-1")
    record = x.VM.get_record(vm)
    assert record["power_state"] == "Running" and record["is_a_template"] is False
    assert "disks" not in record["other_config"]
    vbds = {x.VBD.get_type(b): x.VBD.get_record(b) for b in record["VBDs"]}
    assert set(vbds) == {"Disk", "CD"} and vbds["Disk"]["bootable"] is True
    disk = x.VDI.get_record(vbds["Disk"]["VDI"])
    default_sr = x.pool.get_default_SR(x.pool.get_all()[0])
    assert disk["SR"] == default_sr and disk["virtual_size"] == "8589934592"
    assert disk["type"] == "system"
    assert [v["ref"] for v in sim.vms()] == [vm] and sim.tasks() == []
    assert sim.call_counts["Async.VM.clone"] == 1


def test_clone_stays_a_template_and_provision_rejects_foreign_sr(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    vm = x.VM.clone(template(x), "bio-raw")
    assert x.VM.get_is_a_template(vm) is True and sim.vms() == []
    assert len(sim.vms(include_templates=True)) == 3
    assert [x.VBD.get_type(b) for b in x.VM.get_VBDs(vm)] == ["CD"]  # no disk until provision
    record = wait_task(x, x.Async.VM.provision(vm))
    assert record["status"] == "failure"
    assert record["error_info"] == ["UUID_INVALID", "SR", sim.missing_sr_uuid]
    assert sim.vdis(kind="system") == []


def test_guest_metrics_are_stale_before_boot_and_fresh_after() -> None:
    with XapiSimulator(boot_seconds=0.6, guest_ip="10.1.2.3") as sim:
        x = login(sim).xenapi
        since = now()
        vm = install(x, "bio-boot")
        stale = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(vm))
        assert stale["networks"]["0/ip"] == STALE_IP
        assert stale["last_updated"].value == "20230101T00:00:00Z"
        assert fresh_ip(x, vm, since, timeout=0.2) is None  # a correct client keeps waiting
        assert fresh_ip(x, vm, since, timeout=3.0) == "10.1.2.3"
        fresh = x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm))
        assert fresh["0/ipv4/0"] == "10.1.2.3" and fresh["0/ipv6/0"].startswith("fe80::")


def test_no_stale_metrics_means_null_until_boot() -> None:
    with XapiSimulator(boot_seconds=0.3) as sim:
        sim.stale_guest_metrics = False
        x = login(sim).xenapi
        since = now()
        vm = install(x, "bio-null")
        assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
        assert fresh_ip(x, vm, since, timeout=3.0) == "127.0.0.1"


def test_never_report_ip() -> None:
    with XapiSimulator(boot_seconds=0.1) as sim:
        sim.never_report_ip = True
        x = login(sim).xenapi
        since = now()
        vm = install(x, "bio-silent")
        assert fresh_ip(x, vm, since, timeout=0.8) is None
        assert x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm)) == {}
        assert x.VM.get_power_state(vm) == "Running"


def test_power_state_errors_are_lowercase(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    vm = install(x, "bio-power")
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.start(vm, False, False)
    assert details(exc) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.destroy(vm)
    assert details(exc) == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.hard_shutdown(vm)
    code, ref, expected, actual = details(exc)
    assert (code, ref, actual) == ("VM_BAD_POWER_STATE", vm, "halted")
    assert "running" in expected.split(", ")
    record = wait_task(x, x.Async.VM.hard_shutdown(vm))
    assert record["status"] == "failure" and record["error_info"][0] == "VM_BAD_POWER_STATE"


def test_transient_fault_then_success(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    sim.inject_transient("VM.clone", times=2)
    for _ in range(2):
        record = wait_task(x, x.Async.VM.clone(template(x), "bio-retry"))
        assert record["status"] == "failure"
        assert record["error_info"] == ["OTHER_OPERATION_IN_PROGRESS", "VM.clone", template(x)]
    vm = task_value(wait_task(x, x.Async.VM.clone(template(x), "bio-retry")))
    assert x.VM.get_name_label(vm) == "bio-retry"
    sim.inject_transient("VM.start", code="VM_BAD_POWER_STATE",
                         args=["OpaqueRef:x", "halted", "running"])
    fix_disks(x, vm)
    x.VM.provision(vm)
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.start(vm, False, False)
    assert details(exc) == ["VM_BAD_POWER_STATE", "OpaqueRef:x", "halted", "running"]
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"


def test_permanent_sr_full_on_provision(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    sim.inject_permanent("VM.provision", "SR_FULL")
    vm = x.VM.clone(template(x), "bio-full")
    fix_disks(x, vm)
    for _ in range(2):
        record = wait_task(x, x.Async.VM.provision(vm))
        assert record["status"] == "failure" and record["error_info"][0] == "SR_FULL"
        assert len(record["error_info"]) == 3
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.provision(vm)
    assert details(exc)[0] == "SR_FULL"
    sim.clear_faults()
    sim.inject_permanent("VM.provision", "VM_REQUIRES_SR", "OpaqueRef:vm", "OpaqueRef:sr")
    with pytest.raises(XenAPI.Failure) as exc:
        x.VM.provision(vm)
    assert details(exc) == ["VM_REQUIRES_SR", "OpaqueRef:vm", "OpaqueRef:sr"]
    assert sim.vdis(kind="system") == []


def test_destroy_keeps_vdis_until_vdi_destroy_and_iso_stays(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    vm = install(x, "bio-gone")
    disk_vdis = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(vm) if x.VBD.get_type(b) == "Disk"]
    (iso,) = [v["ref"] for v in sim.vdis(kind="iso")]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    assert vm not in x.VM.get_all() and sim.vms() == []
    assert [v["ref"] for v in sim.vdis(kind="system")] == disk_vdis
    assert x.VDI.get_VBDs(disk_vdis[0]) == []
    x.VDI.destroy(disk_vdis[0])
    assert disk_vdis[0] not in x.VDI.get_all()
    with pytest.raises(XenAPI.Failure) as exc:
        x.VDI.destroy(iso)
    assert details(exc) == ["VDI_IN_USE", iso, "destroy"]
    assert [v["ref"] for v in sim.vdis(kind="iso")] == [iso]


def test_twenty_concurrent_clients_clone_and_start() -> None:
    # ~30 calls per client at 50 ms each: 1.5 s per client, 30 s if the server were serial
    with XapiSimulator(boot_seconds=0.5, latency_seconds=0.05) as sim:

        def one(i: int) -> tuple[str, str | None]:
            session = login(sim)
            x = session.xenapi
            since = now()
            vm = install(x, f"bio-{i}")
            ip = fresh_ip(x, vm, since, timeout=10.0)
            session.xenapi.session.logout()
            return vm, ip

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(one, range(20)))
        elapsed = time.monotonic() - started
        calls = sum(sim.call_counts.values())
    assert len({vm for vm, _ in results}) == 20
    assert [ip for _, ip in results] == ["127.0.0.1"] * 20
    assert sorted(v["name_label"] for v in sim.vms()) == sorted(f"bio-{i}" for i in range(20))
    assert all(v["power_state"] == "Running" for v in sim.vms())
    assert sim.tasks() == [] and sim.sessions() == []
    assert calls * sim.latency_seconds > 2 * elapsed  # requests overlapped
    assert elapsed < 10.0, f"20 clients took {elapsed:.1f} s: the server is not concurrent"


def test_clone_copies_vifs_and_gets_its_own_install_time(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    tmpl = template(x)
    vm = task_value(wait_task(x, x.Async.VM.clone(tmpl, "with-nic")))
    (vif,) = x.VM.get_VIFs(vm)
    (template_vif,) = x.VM.get_VIFs(tmpl)
    assert x.VIF.get_network(vif) == x.VIF.get_network(template_vif)
    assert x.VIF.get_MAC(vif) != x.VIF.get_MAC(template_vif)
    assert vif in x.network.get_VIFs(x.VIF.get_network(vif))
    installed = x.VM_metrics.get_install_time(x.VM.get_metrics(vm))
    assert str(installed) > str(x.VM_metrics.get_install_time(x.VM.get_metrics(tmpl)))
    x.VM.destroy(vm)
    assert vif not in x.network.get_VIFs(x.VIF.get_network(template_vif))


def test_provision_clears_is_a_template_first_and_owns_its_disks(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    full = task_value(wait_task(x, x.Async.VM.clone(template(x), "full")))
    fix_disks(x, full)
    sim.storage_full = "SR_BACKEND_FAILURE_44"
    record = wait_task(x, x.Async.VM.provision(full))
    assert record["error_info"][0] == "SR_BACKEND_FAILURE_44"
    assert x.VM.get_is_a_template(full) is False  # as xapi: the first thing provision does
    assert x.VM.get_VBDs(full) != [] and all(
        x.VBD.get_type(b) == "CD" for b in x.VM.get_VBDs(full))  # no disk was made
    sim.storage_full = None
    ok = install(x, "ok")
    disks = [b for b in x.VM.get_VBDs(ok) if x.VBD.get_type(b) == "Disk"]
    assert disks and all(x.VBD.get_other_config(b) == {"owner": "true"} for b in disks)


def test_a_reset_connection_reaches_the_client_as_a_socket_error(sim: XapiSimulator) -> None:
    x = login(sim).xenapi
    sim.inject_reset("VM.get_all", times=2)  # xmlrpc.client resends once by itself
    with pytest.raises(OSError):
        x.VM.get_all()
    assert sim.call_counts["VM.get_all"] == 2
    assert x.VM.get_all()  # the next call is answered


def test_https_mode_verifies_against_its_ca(tmp_path) -> None:
    import ssl

    from bioxen_flows.xcpng import xapi

    with XapiSimulator(tls_dir=tmp_path) as tls:
        assert tls.url.startswith("https://") and tls.ca_file is not None
        good = xapi.XapiEndpoint(url=tls.url, username="root", ca_file=str(tls.ca_file))
        with xapi.xapi_session(good, "secret") as x:
            assert x.VM.get_all()
        session = XenAPI.Session(tls.url)  # the system's CAs: refused
        with pytest.raises(ssl.SSLCertVerificationError):
            session.login_with_password("root", "secret", "1.0", "bioxen-tests")
