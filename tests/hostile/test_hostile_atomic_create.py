"""Issue 23, item 3: `kill -9` of `bioxen create` at any point leaves either no VM, a
complete one (packages, caps, audit entry), or a "creating" record that cannot be started
and that `bioxen gc --yes` reaps, giving its allocation back to the budget.

Kill points: the moment the "creating" record appears (found by polling the store), and
delays drawn from a seeded generator (so a failure can be re-run exactly). Both backends.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bioxen_flows.cli import main
from bioxen_flows.state import StateStore

RIBOSOMES = 2000
RANDOM_DELAYS = [round(random.Random(23).uniform(0.0, 2.0), 3) for _ in range(3)]
KILL_POINTS = ["record-inserted", *(f"after-{d}s" for d in RANDOM_DELAYS)]


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Not the corpus's shared store: these cases create VMs."""
    home = tmp_path / "home"
    monkeypatch.setenv("BIOXEN_HOME", str(home))
    return home


def _kill_create(home: Path, vm_id: str, point: str) -> None:
    """Start `bioxen create` with a package and SIGKILL it at `point`."""
    config = home.parent / "vm.yaml"
    config.write_text(f"packages: [gfp_reporter]\nresources: {{ribosomes: {RIBOSOMES}}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bioxen_flows.cli", "create", vm_id, "syn3a",
         "--config", str(config)],
        env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if point == "record-inserted":
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if StateStore().find_vm(vm_id) is not None:
                        break
                except Exception:  # noqa: BLE001 (the store may be being created right now)
                    pass
                time.sleep(0.005)
        else:
            time.sleep(float(point.removeprefix("after-").removesuffix("s")))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_create_leaves_nothing_gc_cannot_reap(state_backend, own_home, point, capsys):
    vm_id = "killed1"
    _kill_create(own_home, vm_id, point)
    store = StateStore()
    record = store.find_vm(vm_id)
    if record is not None and record.state == "creating":
        # half-made: it holds its allocation until gc, and cannot be used meanwhile
        assert store.budget()["ribosomes_allocated"] == RIBOSOMES
        capsys.readouterr()
        assert main(["start", vm_id]) == 1
        assert "not provisioned" in capsys.readouterr().err
        assert main(["gc", "--yes"]) == 0
        assert f"destroyed {vm_id}: its creation was interrupted" in capsys.readouterr().out
        record = store.find_vm(vm_id)
        assert record is None
    if record is None:
        assert store.budget()["ribosomes_allocated"] == 0
        assert [e for e in store.audit_log(vm_id) if e["action"] == "create"
                and e["outcome"] == "ok"] == []
    else:  # complete: everything the create promised is there, in one write
        assert record.state == "created"
        assert record.allocations == {"ribosomes": RIBOSOMES}
        assert record.config["packages"] == ["gfp_reporter"]
        assert record.snapshot["packages"] == [{"copies": 1, "name": "gfp_reporter"}]
        assert "p_gfp" in record.snapshot["species"]
        assert [e["outcome"] for e in store.audit_log(vm_id) if e["action"] == "create"] \
            == ["ok"]
        assert store.budget()["ribosomes_allocated"] == RIBOSOMES
        assert main(["gc", "--yes"]) == 0  # a complete VM made by hand is never reaped
        assert store.find_vm(vm_id) is not None
    assert store.interrupted_creations() == []


def test_the_record_inserted_point_is_reached(state_backend, own_home):
    """The deterministic kill point does hit the window between the two writes (else the
    cases above would only ever test the two easy outcomes)."""
    _kill_create(own_home, "killed2", "record-inserted")
    record = StateStore().find_vm("killed2")
    assert record is not None and record.state == "creating"
    assert [r.vm_id for r in StateStore().interrupted_creations()] == ["killed2"]
