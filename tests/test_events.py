"""The events BioXen sends, captured by Prefect's own asserting events client on the test
server (tests/test_prefect_events.py reads them back from a real server's events API)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bioxen_flows.orchestration import events
from bioxen_flows.orchestration.reaper import Orphan, reap
from bioxen_flows.vm import create_bio_vm

RUN_ID = "0192f0e4-4b4e-7a1c-9d1e-2f3a4b5c6d7e"


@pytest.fixture
def sent(prefect_api_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The events sent during the test (drained from Prefect's events worker)."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)  # the CLI's "API configured"
    events.enable()

    def drained() -> list[Any]:
        worker.drain()
        return [e for client in AssertingEventsClient.all for e in client.events
                if e.event.startswith("bioxen.")]

    yield drained
    worker.drain()


def test_gc_sends_reaped_and_destroyed_with_the_vm_and_its_run(sent) -> None:
    create_bio_vm("orphan-1", "minimal_cell", config={"labels": {"flow_run_id": RUN_ID}})
    assert reap([Orphan("orphan-1", "its process is gone")]) == ["orphan-1"]
    mine = [e for e in sent() if e.resource.id == "bioxen.vm.orphan-1"]
    assert [e.event for e in mine] == ["bioxen.vm.created", "bioxen.vm.reaped",
                                       "bioxen.vm.destroyed"]
    reaped = mine[1]
    assert reaped.payload == {"reason": "its process is gone"}
    assert reaped.resource["bioxen.organism"] == "minimal_cell"
    assert reaped.resource["bioxen.infrastructure"] == "basic"
    assert [(r.role, r.id) for r in reaped.related] == [("flow-run", f"prefect.flow-run.{RUN_ID}")]


def test_the_cli_monitor_sends_an_alert_when_it_appears(sent, capsys) -> None:
    from bioxen_flows.cli.app import main

    vm = create_bio_vm("watched-1", "ecoli")
    vm.allocate(ribosomes=3000)  # E. coli holds ~3,190: the cap binds, > 90 % used
    assert main(["monitor", "watched-1", "--count", "2", "--interval", "0.01", "--json"]) == 0
    assert capsys.readouterr().out.count("ribosomes_near_cap") == 2  # in both samples
    alerts = [e for e in sent() if e.event.startswith("bioxen.vm.alert.")]
    assert [e.event for e in alerts] == ["bioxen.vm.alert.ribosomes-near-cap"]  # once
    assert alerts[0].payload["value"] > alerts[0].payload["threshold"] == 90
    assert alerts[0].resource["bioxen.organism"] == "ecoli"


def test_cleanup_of_a_crashed_run_is_named_tagged_and_reports_what_it_destroyed(sent) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from bioxen_flows.orchestration.flows import cleanup_crashed_run
    from bioxen_flows.vm import list_bio_vms

    @flow(name="bioxen-crash-victim")
    def victim() -> None:
        pass

    with get_client(sync_client=True) as client:
        crashed = client.create_flow_run(victim, tags=["bioxen", "ecoli", "basic"])
        client.set_flow_run_state(crashed.id, Crashed(), force=True)
        create_bio_vm("left-1", "ecoli", config={"labels": {"flow_run_id": str(crashed.id)}})
        state = cleanup_crashed_run(flow_run=f"prefect.flow-run.{crashed.id}",
                                    return_state=True)
        assert state.result() == ["left-1"] and list_bio_vms() == []
        cleanup = client.read_flow_run(state.state_details.flow_run_id)
    assert cleanup.name == f"cleanup-{str(crashed.id)[-8:]}"
    assert {"bioxen", "cleanup", "ecoli"} <= set(cleanup.tags)
    mine = [e for e in sent() if e.resource.id == "bioxen.vm.left-1"]
    assert [e.event for e in mine] == ["bioxen.vm.created", "bioxen.vm.destroyed"]
    destroyed = mine[1:]
    related = {(r.role, r.id) for r in destroyed[0].related}
    assert ("flow-run", f"prefect.flow-run.{crashed.id}") in related  # the crashed run


def test_the_resource_monitor_sends_an_alert_once_when_it_appears(sent) -> None:
    import threading

    from bioxen_flows.resources import BioResourceManager

    vm = create_bio_vm("watched-2", "ecoli")
    seen = threading.Event()
    manager = BioResourceManager(vm, on_alert=lambda alert: seen.set())
    manager.allocate_ribosomes(3000)  # the cap binds: > 90 % of it is used
    manager.start_monitoring(interval_seconds=0.01)
    assert seen.wait(10)
    while len(manager.get_resource_history()) < 5:  # the alert holds for several samples
        threading.Event().wait(0.01)
    manager.stop_monitoring()
    alerts = [e for e in sent() if e.resource.id == "bioxen.vm.watched-2"
              and e.event.startswith("bioxen.vm.alert.")]
    assert [e.event for e in alerts] == ["bioxen.vm.alert.ribosomes-near-cap"]
    assert alerts[0].resource["bioxen.organism"] == "ecoli"
