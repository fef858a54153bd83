"""A simulated XCP-ng pool and guest for tests: the XAPI simulator and a real SSH server.

Fixtures `pool` (an XapiSimulator; on exit it asserts that nothing of ours is left and gc
finds nothing) and `guest` (a GuestSSHServer running `bioxen guest`, reachable only while
the pool runs a VM at its address); `xcpng_config(pool, guest)` builds the config.
"""

from __future__ import annotations

import pytest

from bioxen_flows.orchestration.xcpng_tasks import plan_gc
from bioxen_flows.state import StateStore
from bioxen_flows.testing.xapi_simulator import XapiSimulator
from bioxen_flows.xcpng.xapi import name_prefix
from tests.sshd import GuestSSHServer

PASSWORD = "pw-7f3e9c2b1a-never-logged"


def assert_nothing_left(sim: XapiSimulator) -> None:
    """No VM of ours (not even an unprovisioned clone, still a template), no disk, no task,
    and `bioxen xcpng gc` (with no minimum age) finds nothing."""
    assert sim.vms() == []
    prefix = name_prefix(StateStore().installation_id())
    assert [v["name_label"] for v in sim.vms(include_templates=True)
            if v["name_label"].startswith(prefix)] == []
    assert sim.vdis(kind="system") == []
    assert [v for v in sim.vdis() if "bioxen_installation" in v["other_config"]] == []
    assert sim.tasks() == []
    cfg = {"url": sim.url, "username": "root", "template": "bioxen-guest", "ssh_user": "x",
           "ssh_key_path": "/nonexistent", "ssh_host_key": "SHA256:" + "A" * 43,
           "password_env": "SIMULATOR_ADMIN_PASSWORD"}
    if sim.ca_file:
        cfg["ca_file"] = str(sim.ca_file)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SIMULATOR_ADMIN_PASSWORD", sim.password)
        assert plan_gc(cfg, 0.0) == []


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setenv("XCPNG_PASSWORD", PASSWORD)
    with XapiSimulator(password=PASSWORD, boot_seconds=0.3) as sim:
        yield sim
        assert_nothing_left(sim)


@pytest.fixture
def guest(tmp_path, pool):
    """The guest: `bioxen guest` (this package's CLI) runs in its own BIOXEN_HOME, reachable
    only while the pool runs a VM that reported this address."""
    with GuestSSHServer(tmp_path / "sshd", guest_env={"BIOXEN_HOME": str(tmp_path / "guest")},
                        reachable=pool.guest_reachable) as s:
        yield s


def xcpng_config(pool: XapiSimulator, guest: GuestSSHServer, **overrides) -> dict:
    return {"xcpng_config": {
        "url": pool.url, "username": "root", "template": "bioxen-guest",
        "ssh_user": guest.username, "ssh_key_path": str(guest.client_key_path),
        "ssh_host_key": guest.host_key_line, "ssh_port": guest.port, **overrides,
    }}


def gc(config_file, home, *extra: str) -> dict:
    """`bioxen xcpng gc --config FILE --json ...` in-process, as the installation at `home`."""
    import contextlib
    import io
    import json

    from bioxen_flows.cli import main

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out):
        env.setenv("BIOXEN_HOME", str(home))
        assert main(["xcpng", "gc", "--config", str(config_file), "--json", *extra]) == 0
    return json.loads(out.getvalue())
