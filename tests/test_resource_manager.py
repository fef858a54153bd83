"""BioResourceManager: caps through the VM, monitoring with alerts, model-driven optimisation."""

from __future__ import annotations

import logging
import threading

import pandas as pd
import pytest

from bioxen_flows.errors import GuestAuthError, XapiError
from bioxen_flows.resources import BioResourceManager
from bioxen_flows.resources.manager import HISTORY_LIMIT, alerts_for
from bioxen_flows.vm import create_bio_vm, load_bio_vm

pytestmark = pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL


@pytest.fixture
def ecoli():
    vm = create_bio_vm("rm-ecoli", "ecoli")
    vm.start()
    yield vm
    vm.destroy()


def test_allocations_change_usage_and_availability(ecoli):
    manager = BioResourceManager(ecoli)
    free = manager.get_available_resources()
    manager.allocate_ribosomes(2000)
    manager.allocate_atp(50)
    ecoli.execute_biological_process("grow(600)")
    usage = manager.get_resource_usage()
    assert usage["ribosomes_total"] <= 2000
    assert usage["atp_cap_percent"] == pytest.approx(50)
    assert usage["ribosome_allocation_used_percent"] == pytest.approx(
        100 * usage["ribosomes_total"] / 2000
    )
    after = manager.get_available_resources()
    assert after["ribosomes_available"] == free["ribosomes_available"] - 2000
    assert after["allocations"] == {"atp_percent": 50, "ribosomes": 2000}


def test_monitoring_history_is_bounded_and_alerts_fire(ecoli):
    alerts = []
    got_alert = threading.Event()
    manager = BioResourceManager(ecoli, on_alert=lambda a: (alerts.append(a), got_alert.set()))
    manager.allocate_ribosomes(3000)  # E. coli holds ~3,190: the cap binds, > 90 % used
    manager.start_monitoring(interval_seconds=0.001)
    assert got_alert.wait(10)
    with pytest.raises(ValueError, match="already running"):
        manager.start_monitoring(0.01)
    while len(manager.get_resource_history()) < HISTORY_LIMIT:
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)
    manager.stop_monitoring()
    history = manager.get_resource_history()
    assert len(history) == HISTORY_LIMIT
    assert pd.DataFrame(history)["ribosomes_total"].notna().all()
    assert alerts[0]["kind"] == "ribosomes_near_cap" and alerts[0]["value"] > 90


def test_low_energy_alert_from_the_model(ecoli):
    manager = BioResourceManager(ecoli)
    manager.allocate_atp(1)  # an acute energy cut starves elongation within the hour
    ecoli.execute_biological_process("grow(60)")
    sample = manager.get_resource_usage()
    assert sample["atp_percent"] < 20
    assert [a["kind"] for a in alerts_for(sample)] == ["low_atp"]
    assert alerts_for(sample, low_atp_percent=sample["atp_percent"] - 1) == []
    recs = manager.get_optimization_recommendations()
    energy = [r for r in recs if r["kind"] == "energy"]
    assert energy and energy[0]["value"] == pytest.approx(sample["atp_percent"])


def test_auto_optimize_finds_smallest_caps_keeping_95_percent(ecoli):
    manager = BioResourceManager(ecoli)
    result = manager.auto_optimize_resources()
    assert 0.95 <= result["growth_kept_fraction"] <= 1.0
    assert 1 <= result["atp_percent"] < 100
    assert ecoli.record.allocations == {
        "atp_percent": result["atp_percent"], "ribosomes": result["ribosomes"]
    }
    # tighter than the optimum loses more than 5 % of growth: the search found the edge
    tighter = ecoli.probe_growth([
        (result["atp_percent"], result["ribosomes"] * 0.9),
        (result["atp_percent"] * 0.8, result["ribosomes"]),
    ])
    assert max(tighter) < 0.95 * result["uncapped_growth_rate_per_min"]


def test_recommendations_report_burden_with_its_number(ecoli):
    ecoli.install_biological_package("gfp_reporter", copies=4)
    ecoli.execute_biological_process("grow(600)")
    recs = BioResourceManager(ecoli).get_optimization_recommendations()
    burden = [r for r in recs if r["kind"] == "burden"]
    assert burden and burden[0]["metric"] == "translating_ribosomes_on_gfp_percent"
    assert 10 < burden[0]["value"] < 100


def test_snapshot_restore_gives_the_same_numbers(ecoli):
    manager = BioResourceManager(ecoli)
    manager.allocate_atp(70)
    ecoli.execute_biological_process('install("rfp_plasmid")\ngrow(30)')
    snap = manager.create_resource_snapshot()
    first = pd.DataFrame(ecoli.execute_biological_process("grow(60)")["timeseries"])
    manager.allocate_atp(20)
    ecoli.execute_biological_process('install("gfp_reporter")\ngrow(100)')
    manager.restore_from_snapshot(snap)
    assert ecoli.record.allocations == {"atp_percent": 70}
    second = pd.DataFrame(ecoli.execute_biological_process("grow(60)")["timeseries"])
    pd.testing.assert_frame_equal(first, second)


def test_snapshot_of_another_vm_is_refused(ecoli):
    other = create_bio_vm("rm-other", "ecoli")
    snap = BioResourceManager(other).create_resource_snapshot()
    with pytest.raises(ValueError, match="belongs to VM 'rm-other'"):
        BioResourceManager(ecoli).restore_from_snapshot(snap)


def test_monitoring_stops_quietly_when_the_vm_is_destroyed(ecoli, caplog, monkeypatch):
    # an earlier test in this process may have configured BioXen's own logging, which stops
    # its lines at the "bioxen_flows" logger; caplog listens at the root
    monkeypatch.setattr(logging.getLogger("bioxen_flows"), "propagate", True)
    manager = BioResourceManager(ecoli)
    load_bio_vm(ecoli.vm_id).destroy()  # by another caller
    with caplog.at_level("WARNING", logger="bioxen_flows.resources.manager"):
        manager.start_monitoring(interval_seconds=0.001)
        manager._thread.join(timeout=30)
    assert not manager._thread.is_alive()
    assert "monitoring of VM rm-ecoli stopped" in caplog.text and "destroyed" in caplog.text
    assert manager.get_resource_history() == []


@pytest.mark.parametrize("error", [GuestAuthError("SSH key authentication failed"),
                                   XapiError("PERMISSION_DENIED", "PERMISSION_DENIED"),
                                   ValueError("CVODE error: the model failed")])
def test_a_pool_ssh_or_model_failure_is_not_taken_for_a_destroyed_vm(ecoli, monkeypatch,
                                                                      caplog, error):
    """`except ValueError` once caught these and stopped monitoring as if the VM were gone."""
    raised: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))

    def failing(self):
        raise error

    manager = BioResourceManager(ecoli)
    monkeypatch.setattr(type(ecoli), "get_biological_metrics", failing)
    with caplog.at_level("WARNING", logger="bioxen_flows.resources.manager"):
        manager.start_monitoring(interval_seconds=0.001)
        manager._thread.join(timeout=30)
    assert raised == [error]  # reported as the failure it is
    assert "stopped" not in caplog.text
