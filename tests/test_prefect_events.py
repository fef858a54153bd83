"""BioXen's Prefect events and the automations that act on them, on a real Prefect server.

The server, its PostgreSQL database, deployments/setup.sh and the process worker come from
tests/test_prefect_server_e2e.py (its module-scoped fixtures, instantiated again for this
module). Events are read back through the server's events API. The burden notification
goes through a CustomWebhookNotificationBlock to an HTTP receiver on loopback. One test
needs no server: with the API down, VM commands still succeed at once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    COMPARE,
    HOOK_ERROR,
    REPO,
    SERVER_E2E,
    LocalPrefect,
    eventually,
    start_run,
    wait_final,
)

pytestmark = SERVER_E2E
CLI_TIMEOUT = 180.0


def _bioxen(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python -m bioxen_flows ARGS` in a process of its own, as a user runs `bioxen`."""
    return subprocess.run(
        [sys.executable, "-m", "bioxen_flows", *args], cwd=REPO, env=env, capture_output=True,
        encoding="utf-8", timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )


def _events(client: Any, prefix: str, since: datetime) -> list[Any]:
    """bioxen events whose resource id starts with `prefix`, oldest first."""
    from prefect.events.filters import (
        EventFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    page = client.read_events(filter=EventFilter(
        occurred=EventOccurredFilter(since=since),
        resource=EventResourceFilter(id_prefix=[prefix])), limit=50)
    events = list(page.events)
    while page.next_page:  # a run of many VMs sends more than one page
        page = client.read_events_page(page.next_page)
        events.extend(page.events)
    return sorted(events, key=lambda e: e.occurred)


def _related_run(event: Any) -> str | None:
    ids = [r.id for r in event.related if r.role == "flow-run"]
    return ids[0].rsplit(".", 1)[-1] if ids else None


class Receiver:
    """An HTTP endpoint on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver(local_prefect: LocalPrefect) -> Iterator[Receiver]:
    """The receiver, a webhook block pointing at it, and the automations applied again
    (setup.sh skipped the burden notification while no block was saved)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from bioxen_flows.orchestration.automations import apply_automations

    receiver = Receiver()
    first = local_prefect.setup_outputs[0]
    assert "automation bioxen-burden-exceeded-notify skipped: no notification block" in first
    assert "created automation bioxen-low-atp-cancels-run" in first
    with temporary_settings(updates={PREFECT_API_URL: local_prefect.api_url}):
        CustomWebhookNotificationBlock(
            name="bioxen-e2e", url=receiver.url,
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
        ).save("bioxen-notify", overwrite=True)
        applied = apply_automations(REPO / "deployments" / "automations.yaml")
    assert applied["bioxen-burden-exceeded-notify"] == "created", applied
    assert applied["bioxen-low-atp-cancels-run"] == "updated", applied
    yield receiver
    receiver.close()


def test_vm_commands_do_not_wait_for_a_prefect_api_that_is_down(tmp_path: Path) -> None:
    """The API configured but down: create, start and destroy succeed and no event is
    waited for (Prefect's events worker would retry for seconds at exit)."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_HOME": str(tmp_path / "prefect"), "BIOXEN_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO)}
    began = time.monotonic()
    for args in (("create", "down-1", "ecoli"), ("start", "down-1"), ("destroy", "down-1")):
        done = _bioxen(env, *args)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "EventsWorker" not in done.stderr, done.stderr
    assert "does not answer: no BioXen events are sent" in done.stderr
    elapsed = time.monotonic() - began
    print(f"create + start + destroy with the API down: {elapsed:.1f} s")


def test_compare_from_the_cli_emits_lifecycle_and_low_atp_events(
    local_prefect: LocalPrefect, client: Any, receiver: Receiver
) -> None:
    """The issue's command: BIOXEN_ALERT_LOW_ATP_PERCENT=50 bioxen compare ecoli --atp 5
    --hours 1 --deterministic against the server. A second comparison with a package and
    BIOXEN_ALERT_BURDEN_PERCENT=1 sends its burden through the webhook block."""
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    env = {**local_prefect.env, "PYTHONPATH": str(REPO), "BIOXEN_ALERT_LOW_ATP_PERCENT": "50"}
    out = local_prefect.tmp / "cli_out"
    done = _bioxen(env, "compare", "ecoli", "--atp", "5", "--hours", "1", "--deterministic",
                   "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    tag = re.search(r"-([0-9a-f]{8})\b", (out / "latest").resolve().name).group(1)
    vm = f"bioxen.vm.cmp-{tag}-ecoli-0"

    def names() -> list[str]:
        return [e.event for e in _events(client, vm, since)]

    wanted = {"bioxen.vm.created", "bioxen.vm.started", "bioxen.vm.destroyed",
              "bioxen.vm.alert.low-atp"}
    assert eventually(lambda: wanted <= set(names()), timeout=30), names()
    events = _events(client, vm, since)
    [alert] = [e for e in events if e.event == "bioxen.vm.alert.low-atp"]
    assert alert.payload["threshold"] == 50 and alert.payload["value"] < 50
    assert alert.resource["bioxen.organism"] == "ecoli"
    assert alert.resource["bioxen.infrastructure"] == "basic"
    assert alert.resource["bioxen.owner"]
    run_ids = {_related_run(e) for e in events}
    assert len(run_ids) == 1 and None not in run_ids  # each names the run
    [run_id] = run_ids
    run = client.read_flow_run(run_id)
    assert run.name == "ecoli-x1-1h" and {"bioxen", "ecoli", "basic"} <= set(run.tags)

    burden_env = {**env, "BIOXEN_ALERT_BURDEN_PERCENT": "1"}
    done = _bioxen(burden_env, "compare", "syn3a", "--hours", "1", "--deterministic",
                   "--package", "gfp_reporter", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert eventually(lambda: any("syn3a" in m.get("subject", "") for m in receiver.received),
                      timeout=60), receiver.received
    [message] = [m for m in receiver.received if "syn3a" in m["subject"]]
    assert message["subject"] == "BioXen: gfp_reporter burden in syn3a"
    assert re.search(r"costs syn3a \d+\.\d % of its growth \(threshold 1\.0 %\)",
                     message["body"]), message


def test_sustained_low_atp_cancels_the_run_and_its_vms_are_destroyed(
    local_prefect: LocalPrefect, client: Any, receiver: Receiver
) -> None:
    """A deployment run of 60 energy-starved VMs (ATP cap 5 %, alert threshold 50 %), one
    batch after another: after 3 low-atp alerts the automation cancels it, long before its
    last batch, and every VM it made is destroyed."""
    from bioxen_flows.vm import list_bio_vms

    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    run_id = start_run(client, COMPARE, {
        "organisms": ["ecoli"], "replicates": 60, "hours": 1, "deterministic": True,
        "atp_percent": 5, "batch_size": 1, "alert_low_atp_percent": 50,
        "out_dir": str(local_prefect.tmp / "starved_out"),
    })
    began = time.monotonic()
    run = wait_final(client, run_id, local_prefect)
    final = time.monotonic() - began
    assert run.state.is_cancelled(), f"{run.state}\n{local_prefect.log_tail('worker')}"
    assert {"bioxen", "ecoli", "basic"} <= set(run.tags)

    prefix = "bioxen.vm.cmp-" + re.sub(r"[^0-9a-f]", "", str(run_id))[-8:]
    events = _events(client, prefix, since)
    alerts = [e for e in events if e.event == "bioxen.vm.alert.low-atp"]
    assert len(alerts) >= 3 and {_related_run(e) for e in alerts} == {str(run_id)}
    created = {e.resource.id for e in events if e.event == "bioxen.vm.created"}
    assert 3 <= len(created) < 60, "cancelled after its first alerts, not at the end"
    print(f"cancelled by the automation {final:.1f} s after the run was started: "
          f"{len(created)} of 60 VMs created, {len(alerts)} low-atp alerts")

    eventually(lambda: list_bio_vms() == [] or HOOK_ERROR in local_prefect.log_text("worker"),
               timeout=120)
    assert list_bio_vms() == [], local_prefect.log_tail("worker")

    def destroyed() -> set[str]:
        return {e.resource.id for e in _events(client, prefix, since)
                if e.event == "bioxen.vm.destroyed"}

    assert eventually(lambda: destroyed() >= created, timeout=30), created - destroyed()
