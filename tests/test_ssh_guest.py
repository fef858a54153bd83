"""The SSH guest client against a real SSH server on loopback (tests/sshd.py).

The guest program here is a small stand-in script mapped to the command `echojson`, so these
tests exercise the transport (host keys, auth, stdin/stdout, errors, timeouts) independently
of the real `bioxen guest` command.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bioxen_flows.errors import InfrastructureError, TransientInfrastructureError
from bioxen_flows.xcpng.ssh import (
    GuestAuthError,
    GuestConnectionError,
    GuestError,
    GuestTimeoutError,
    HostKeyMismatchError,
    SSHTarget,
    host_key_fingerprint,
    run_guest,
)
from tests.sshd import GuestSSHServer, write_key_pair

GUEST_STUB = r"""
import json, os, sys, time

request = json.loads(sys.stdin.read())
operation = request.get("operation")
if operation == "echo":
    reply = {"ok": True, "received": request, "argv": sys.argv[1:],
             "marker": os.environ.get("GUEST_MARKER")}
    json.dump(reply, sys.stdout)
elif operation == "fail":
    json.dump({"ok": False, "error": request["message"]}, sys.stdout)
    sys.exit(1)
elif operation == "garbage":
    sys.stdout.write("this is not JSON")
elif operation == "flood":
    # interleaved, so a client that reads one stream at a time stalls on the other
    out_left, err_left, chunk = request["stdout_bytes"], request["stderr_bytes"], 65536
    sys.stdout.write('{"ok": true, "padding": "')
    while out_left or err_left:
        n = min(chunk, err_left)
        sys.stderr.write("e" * n)
        sys.stderr.flush()
        err_left -= n
        n = min(chunk, out_left)
        sys.stdout.write("x" * n)
        sys.stdout.flush()
        out_left -= n
    sys.stdout.write('"}')
elif operation == "sleep":
    with open(request["pid_file"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(request["seconds"])
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GuestSSHServer]:
    stub = tmp_path / "guest_stub.py"
    stub.write_text(GUEST_STUB)
    with GuestSSHServer(
        tmp_path / "sshd",
        guest_env={"GUEST_MARKER": "inside-the-guest"},
        program_map={"echojson": [sys.executable, str(stub)]},
    ) as srv:
        yield srv


def target(server: GuestSSHServer, **overrides: object) -> SSHTarget:
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "key_path": str(server.client_key_path),
        "known_hosts_path": str(server.known_hosts_path),
        "connect_timeout": 10.0,
        "command_timeout": 60.0,
    }
    fields.update(overrides)
    return SSHTarget(**fields)  # type: ignore[arg-type]


def other_host_key(tmp_path: Path) -> str:
    """The public key line of a key the server does not have."""
    write_key_pair(tmp_path / "impostor_key")
    return (tmp_path / "impostor_key.pub").read_text().strip()


def test_round_trip_carries_the_request_as_data_not_as_command(server: GuestSSHServer) -> None:
    request = {"operation": "echo", "vm_id": "cell-1", "values": [1, 2.5, None], "name": "Zellé"}
    reply = run_guest(target(server), request, command="echojson")
    assert reply["ok"] is True
    received = dict(reply["received"])
    assert len(received.pop("request_id")) == 32  # so a resent request is applied once
    assert received.pop("deadline_seconds") == 50.0  # 60 s less the 10 s start-up margin
    assert received == request
    assert reply["argv"] == []
    assert reply["marker"] == "inside-the-guest"  # guest_env reached the guest process
    assert server.commands == ["echojson"]


def test_shell_metacharacters_arrive_verbatim(server: GuestSSHServer) -> None:
    hostile = "\"; rm -rf / $(id) `whoami` | cat /etc/passwd && echo '\n"
    reply = run_guest(target(server), {"operation": "echo", "code": hostile}, command="echojson")
    assert reply["received"]["code"] == hostile
    assert server.commands == ["echojson"]


def test_fingerprint_helper_agrees_with_the_server(server: GuestSSHServer) -> None:
    assert host_key_fingerprint(server.host_key_line) == server.host_fingerprint


@pytest.mark.parametrize("how", ["known_hosts", "key_line", "fingerprint"])
def test_each_way_of_verifying_the_host_key_connects(server: GuestSSHServer, how: str) -> None:
    pins = {
        "known_hosts": {},
        "key_line": {"known_hosts_path": None, "host_key": server.host_key_line},
        "fingerprint": {"known_hosts_path": None, "host_key": server.host_fingerprint},
    }
    reply = run_guest(target(server, **pins[how]), {"operation": "echo"}, command="echojson")
    assert reply["received"]["operation"] == "echo"
    assert server.auth_attempts == ["bioxen"]


@pytest.mark.parametrize(
    "how", ["known_hosts", "key_line", "fingerprint", "unknown_host", "pin_overrides_known_hosts"]
)
def test_a_wrong_host_key_is_refused_before_the_guest_runs(
    server: GuestSSHServer, tmp_path: Path, how: str
) -> None:
    impostor = other_host_key(tmp_path)
    wrong_known_hosts = tmp_path / "wrong_known_hosts"
    wrong_known_hosts.write_text(f"[127.0.0.1]:{server.port} {impostor}\n")
    other_host = tmp_path / "other_host_known_hosts"
    other_host.write_text(f"[127.0.0.1]:{server.port + 1} {server.host_key_line}\n")
    overrides = {
        "known_hosts": {"known_hosts_path": str(wrong_known_hosts)},
        "key_line": {"known_hosts_path": None, "host_key": impostor},
        "fingerprint": {"known_hosts_path": None, "host_key": host_key_fingerprint(impostor)},
        "unknown_host": {"known_hosts_path": str(other_host)},
        "pin_overrides_known_hosts": {"host_key": host_key_fingerprint(impostor)},
    }[how]
    with pytest.raises(HostKeyMismatchError) as caught:
        run_guest(target(server, **overrides), {"operation": "echo"}, command="echojson")
    assert not isinstance(caught.value, TransientInfrastructureError)
    assert server.commands == []
    if how != "pin_overrides_known_hosts":  # that one is caught after auth, still before exec
        assert server.auth_attempts == [], "our key was offered to an unverified host"


def test_host_keys_must_be_configured(server: GuestSSHServer) -> None:
    with pytest.raises(ValueError, match="host keys must be verified"):
        target(server, known_hosts_path=None, host_key=None)
    with pytest.raises(ValueError, match="public key"):
        target(server, host_key="not-a-key")


def test_a_key_the_server_does_not_authorize_is_a_permanent_error(
    server: GuestSSHServer, tmp_path: Path
) -> None:
    write_key_pair(tmp_path / "stranger_key")
    with pytest.raises(GuestAuthError, match=f"bioxen@\\[127.0.0.1\\]:{server.port}") as caught:
        run_guest(
            target(server, key_path=str(tmp_path / "stranger_key")),
            {"operation": "echo"},
            command="echojson",
        )
    assert isinstance(caught.value, InfrastructureError)  # permanent: never retried
    assert not isinstance(caught.value, (TransientInfrastructureError, ValueError))
    assert server.commands == []


def test_guest_failure_carries_the_guest_message(server: GuestSSHServer) -> None:
    request = {"operation": "fail", "message": "unknown guest operation 'frobnicate'"}
    with pytest.raises(GuestError) as caught:
        run_guest(target(server), request, command="echojson")
    assert caught.value.exit_status == 1
    assert caught.value.message == "unknown guest operation 'frobnicate'"


def test_unknown_program_fails_with_its_stderr(server: GuestSSHServer) -> None:
    with pytest.raises(GuestError, match="command not found") as caught:
        run_guest(target(server), {"operation": "echo"}, command="nosuchprogram")
    assert caught.value.exit_status == 127


def test_malformed_reply_is_a_guest_error(server: GuestSSHServer) -> None:
    with pytest.raises(GuestError, match="malformed JSON") as caught:
        run_guest(target(server), {"operation": "garbage"}, command="echojson")
    assert caught.value.exit_status == 0


def test_large_stdout_and_stderr_do_not_deadlock(server: GuestSSHServer) -> None:
    # 3 MB of stderr is more than paramiko's 2 MB channel window: a client that left stderr
    # unread until stdout ended would stall; the brief's minimum is 1 MB.
    request = {"operation": "flood", "stdout_bytes": 5 * 2**20, "stderr_bytes": 3 * 2**20}
    reply = run_guest(target(server, command_timeout=60.0), request, command="echojson")
    assert len(reply["padding"]) == 5 * 2**20
    assert set(reply["padding"]) == {"x"}


def test_replies_are_bounded_in_size(
    server: GuestSSHServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bioxen_flows.xcpng import ssh

    monkeypatch.setattr(ssh, "MAX_REPLY_BYTES", 2**20)
    request = {"operation": "flood", "stdout_bytes": 3 * 2**20, "stderr_bytes": 0}
    with pytest.raises(GuestError, match="exceeds 1048576 bytes"):
        run_guest(target(server), request, command="echojson")


def test_a_lost_connection_is_resent_under_the_same_id(server: GuestSSHServer) -> None:
    server.lose_replies = 1
    reply = run_guest(target(server), {"operation": "echo", "vm_id": "x"}, command="echojson")
    assert reply["ok"] is True
    assert server.commands == ["echojson", "echojson"]  # sent twice ...
    # ... and the stub echoed the same id both times (the real guest then answers the
    # second from its kept reply: tests/test_xcpng_e2e.py)


def test_command_timeout_stops_waiting_and_the_guest(
    server: GuestSSHServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "guest.pid"
    request = {"operation": "sleep", "seconds": 120, "pid_file": str(pid_file)}
    started = time.monotonic()
    with pytest.raises(GuestTimeoutError):
        run_guest(target(server, command_timeout=1.5), request, command="echojson")
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the guest process outlived the closed channel"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = tmp_path / "key"
    key_line = write_key_pair(key).export_public_key().decode().strip()
    closed = SSHTarget(
        host="127.0.0.1",
        port=port,
        username="bioxen",
        key_path=str(key),
        host_key=key_line,
        connect_timeout=5.0,
    )
    with pytest.raises(GuestConnectionError) as caught:
        run_guest(closed, {"operation": "echo"}, command="echojson")
    assert isinstance(caught.value, TransientInfrastructureError)


@pytest.mark.parametrize("command", ["echojson; id", "echojson $(id)", "Echojson", "echo\n"])
def test_only_plain_fixed_commands_are_sent(server: GuestSSHServer, command: str) -> None:
    with pytest.raises(ValueError, match="guest command must match"):
        run_guest(target(server), {"operation": "echo"}, command=command)
    assert server.commands == []


# ---- the guest protocol both ends share ---------------------------------------------------------
def test_a_guest_request_round_trips_flat_on_the_wire():
    from bioxen_flows.xcpng.guest_protocol import GuestRequest, Operation

    request = GuestRequest(Operation.INSTALL, "g1", {"package": "gfp_reporter", "copies": 2},
                           request_id="a" * 32, deadline_seconds=60.0)
    wire = request.to_json()
    assert wire == {"operation": "install", "vm_id": "g1", "package": "gfp_reporter",
                    "copies": 2, "request_id": "a" * 32, "deadline_seconds": 60.0}
    assert GuestRequest.from_json(wire) == request


@pytest.mark.parametrize(("wire", "message"), [
    ([1], "JSON object"),
    ({"operation": "metrics"}, "string vm_id"),
    ({"operation": "rm", "vm_id": "g1"}, "unknown guest operation 'rm'"),
    ({"operation": "run", "vm_id": "g1"}, "'run' needs code"),
    ({"operation": "metrics", "vm_id": "g1", "request_id": "short"}, "request_id"),
    ({"operation": "metrics", "vm_id": "g1", "deadline_seconds": 0}, "deadline_seconds"),
])
def test_a_malformed_guest_request_is_bad_input(wire, message):
    from bioxen_flows.errors import InputError
    from bioxen_flows.xcpng.guest_protocol import GuestRequest

    with pytest.raises(InputError, match=message):
        GuestRequest.from_json(wire)


def test_a_guest_reply_round_trips():
    from bioxen_flows.errors import InputError
    from bioxen_flows.xcpng.guest_protocol import GuestReply

    for reply in (GuestReply.success({"x": 1}), GuestReply.failure("refused")):
        assert GuestReply.from_json(reply.to_json()) == reply
    with pytest.raises(InputError):
        GuestReply.from_json({"ok": True})
