"""The flows' run forms (the JSON schema Prefect's UI renders), run names and tags, and the
store's audit listener that lifecycle events come from. No server needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema

from bioxen_flows.config.models import XCPngConfig
from bioxen_flows.model.guest import BUILTIN_PACKAGES
from bioxen_flows.orchestration.automations import load_automations
from bioxen_flows.orchestration.compare import compare_organisms
from bioxen_flows.orchestration.flows import cleanup_crashed_run, vm_lifecycle
from bioxen_flows.orchestration.parameters import XCPngPool, with_pool
from bioxen_flows.orchestration.reaper import reap_bio_vms
from bioxen_flows.orchestration.sweep import sweep_design_space
from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.state import AuditEntry, add_audit_listener, remove_audit_listener
from bioxen_flows.vm import create_bio_vm, load_bio_vm
from tests.xcpng_pool import pool  # noqa: F401 (the simulated pool fixture)

REPO = Path(__file__).resolve().parents[1]
FLOWS = (compare_organisms, vm_lifecycle, sweep_design_space, reap_bio_vms, cleanup_crashed_run)
POOL = {"credentials_block": "lab-pool", "template": "bioxen-guest", "ssh_user": "bioxen",
        "ssh_key_path": "/keys/id_ed25519", "ssh_host_key": "SHA256:" + "A" * 43}


def _form(flow: Any) -> dict[str, Any]:
    return parameter_schema(flow).model_dump()["properties"]


def _has_null(schema: Any) -> bool:
    if isinstance(schema, dict):
        return schema.get("type") == "null" or any(_has_null(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_null(v) for v in schema)
    return False


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_field_is_described_and_none_is_a_choice_of_type_none(flow: Any) -> None:
    for name, field in _form(flow).items():
        assert field.get("description"), f"{flow.name}.{name} has no help text"
        assert not _has_null(field), f"{flow.name}.{name} offers 'None' as a type: {field}"


def test_organisms_infrastructure_and_packages_are_choices_from_where_they_are_defined():
    organisms = get_supported_biological_types()  # organisms/profiles.yaml
    compare, lifecycle, sweep = _form(compare_organisms), _form(vm_lifecycle), \
        _form(sweep_design_space)
    assert compare["organisms"]["items"]["enum"] == organisms
    assert sweep["organisms"]["items"]["enum"] == organisms
    assert lifecycle["organism"]["enum"] == organisms
    assert compare["vm_type"]["enum"] == lifecycle["vm_type"]["enum"] == ["basic", "xcpng"]
    assert compare["stochastic_engine"]["enum"] == ["compiled", "roadrunner"]
    builtin, path = compare["package"]["anyOf"]
    assert builtin["enum"] == sorted(BUILTIN_PACKAGES) and path["type"] == "string"
    assert sweep["package"]["anyOf"][0]["enum"] == sorted(BUILTIN_PACKAGES)
    assert compare["alert_low_atp_percent"]["maximum"] == 100


def test_the_xcpng_pool_is_a_form_with_credentials_by_block_name():
    form = _form(compare_organisms)["xcpng_pool"]
    assert form["type"] == "object"
    assert set(form["required"]) == {"credentials_block", "template", "ssh_user",
                                     "ssh_key_path"}
    assert all(f.get("description") for f in form["properties"].values())
    assert not {"password", "url", "username"} & set(form["properties"])
    assert _form(vm_lifecycle)["xcpng_pool"]["properties"] == form["properties"]
    # the pool fills the VM config's xcpng_config; the old mapping still passes through
    config = with_pool({"simulation": {"seed": 1}}, POOL)
    assert config["simulation"] == {"seed": 1}
    assert config["xcpng_config"] == {**POOL, "ssh_port": 22, "boot_timeout_seconds": 300.0}
    XCPngConfig.model_validate(config["xcpng_config"])  # what the VM factory checks
    assert with_pool({"xcpng_config": POOL}, None) == {"xcpng_config": POOL}
    with pytest.raises(ValueError, match="password"):
        XCPngPool.model_validate({**POOL, "password": "secret"})


def test_a_flow_run_with_a_bad_organism_is_still_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="organisms must be among syn3a, ecoli, minimal_cell"):
        compare_organisms(organisms=["yeast"], out_dir=str(tmp_path))


@pytest.mark.parametrize("value", [-1, 100.5, float("nan")])
def test_an_alert_threshold_outside_0_to_100_is_refused(value, monkeypatch):
    from bioxen_flows.errors import InputError
    from bioxen_flows.orchestration.events import alert_thresholds

    monkeypatch.setenv("BIOXEN_ALERT_BURDEN_PERCENT", "35")
    assert alert_thresholds(50, None, None) == {"low_atp": 50, "ribosomes": 90.0,
                                                "burden": 35.0}
    with pytest.raises(InputError, match="alert threshold low_atp must be a percentage"):
        alert_thresholds(value, None, None)


def test_deployments_name_timezones_and_tag_every_run_bioxen():
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for deployment in project["deployments"]:
        assert "bioxen" in deployment["tags"], deployment["name"]
        for schedule in deployment["schedules"]:
            assert schedule["timezone"] == "UTC", deployment["name"]
    automations = {a.name: a for a in load_automations(REPO / "deployments" / "automations.yaml")}
    low_atp = automations["bioxen-low-atp-cancels-run"]
    assert low_atp.trigger.expect == {"bioxen.vm.alert.low-atp"}
    assert low_atp.trigger.for_each == {"related:flow-run:prefect.resource.id"}
    assert [a.type for a in low_atp.actions] == ["cancel-flow-run"]
    burden = automations["bioxen-burden-exceeded-notify"]
    assert [a.type for a in burden.actions] == ["send-notification"]


def test_the_store_tells_its_audit_listeners_each_committed_change_once():
    entries: list[AuditEntry] = []
    add_audit_listener(entries.append)
    try:
        vm = create_bio_vm("heard-1", "syn3a", config={"labels": {"flow_run_id": "run-1"}})
        vm.start()
        with pytest.raises(ValueError, match="cannot resume"):
            load_bio_vm("heard-1").resume()  # refused: nothing committed, nothing heard
        vm.pause()
        vm.destroy()
    finally:
        remove_audit_listener(entries.append)
    lifecycle = [(e.action, e.outcome) for e in entries if e.vm_id == "heard-1"]
    assert lifecycle == [("create", "ok"), ("start", "ok"), ("pause", "ok"), ("destroy", "ok")]
    for entry in entries:
        assert entry.vm["biological_type"] == "syn3a" and entry.vm["vm_type"] == "basic"
        assert entry.vm["labels"]["flow_run_id"] == "run-1" and entry.vm["owner"]


@pytest.mark.usefixtures("prefect_api_url")
def test_a_cancelled_run_given_the_typed_pool_has_its_clones_reaped(pool) -> None:  # noqa: F811
    """The state hook of a cancelled xcpng run reads the pool from `xcpng_pool` too (its
    credentials from the block on the server): the run's clone is gone from the pool (the
    `pool` fixture asserts that nothing of ours is left)."""
    from types import SimpleNamespace
    from uuid import uuid4

    from bioxen_flows.orchestration.execution import teardown_hook
    from bioxen_flows.xcpng import backend
    from bioxen_flows.xcpng.credentials import XCPngCredentials
    from tests.xcpng_pool import PASSWORD

    XCPngCredentials(url=pool.url, username="root", password=PASSWORD).save(
        "lab-pool", overwrite=True)
    run_id = str(uuid4())
    backend.clone_and_tag(XCPngPool(**POOL).xcpng_config(), "pooled-1", owner=run_id)
    assert len(pool.vms(include_templates=True)) > 1  # the template and our clone
    teardown_hook(None, SimpleNamespace(id=run_id, parameters={"xcpng_pool": POOL}), None)
