"""Drive an XCP-ng guest over SSH: one fixed command, a JSON request on stdin, JSON out.

Nothing the user supplies ever reaches a shell: the command is a constant checked against a
strict pattern, and the request travels as data on stdin. The server's host key is always
verified (known_hosts, a pinned key line or a pinned SHA256 fingerprint), never added on first
use; authentication is by key only. Errors are sorted so callers know whether to retry:
`GuestConnectionError` is transient, host-key and authentication failures are permanent
(`HostKeyMismatchError`, `GuestAuthError`), a bad target or key file is an `InputError`,
and a guest that ran and failed raises `GuestError` (all from `bioxen_flows.errors`).
What travels on stdin and stdout is `bioxen_flows.xcpng.guest_protocol`'s.

Each request carries a `request_id` and a `deadline_seconds` shorter than the host's own
`command_timeout` (by `deadline_margin`, which covers the guest's start-up): the guest
abandons the request, uncommitted, at its deadline, since OpenSSH does not stop a command
when the client hangs up. A connection lost mid-request is retried with the same id, and
the guest answers a request it already carried out from its kept reply: applied once.
Replies are read up to `MAX_REPLY_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import select
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paramiko

from bioxen_flows.errors import (
    GuestAuthError,
    GuestConnectionError,
    GuestError,
    GuestTimeoutError,
    HostKeyMismatchError,
    InputError,
)
from bioxen_flows.xcpng.guest_protocol import GUEST_COMMAND, MAX_REPLY_BYTES

__all__ = ["GuestAuthError", "GuestConnectionError", "GuestError", "GuestTimeoutError",
           "HostKeyMismatchError", "SSHTarget", "host_key_fingerprint", "run_guest"]

log = logging.getLogger(__name__)

# A fixed program name and fixed words: no quotes, no $, no ;, nothing a shell would interpret.
COMMAND_PATTERN = re.compile(r"[a-z][a-z0-9 _-]*")
CHUNK = 65536
STDERR_TAIL = 2000
MAX_STDERR_BYTES = 64 * 1024  # only its tail is ever shown
CONNECT_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class SSHTarget:
    """Where and how to reach a guest; `host_key` is a public key line or `SHA256:` fingerprint."""

    host: str
    port: int = 22
    username: str
    key_path: str
    host_key: str | None = None
    known_hosts_path: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    deadline_margin: float = 10.0  # the guest stops this much (at most half) before us

    def __post_init__(self) -> None:
        if not self.host_key and not self.known_hosts_path:
            raise InputError(
                "host keys must be verified: give host_key (key line or SHA256 fingerprint) "
                "or known_hosts_path"
            )
        if not self.host or not self.username or not self.key_path:
            raise InputError("host, username and key_path are required")
        if not 0 < self.port < 65536:
            raise InputError(f"invalid SSH port {self.port}")
        if self.connect_timeout <= 0 or self.command_timeout <= 0 or self.deadline_margin < 0:
            raise InputError("timeouts must be positive")
        if self.host_key:
            _expected_fingerprint(self.host_key)  # a malformed pin fails here, not mid-flow

    @property
    def guest_deadline(self) -> float:
        """The deadline the guest is given: ours less the margin, at least half of ours."""
        return max(self.command_timeout - self.deadline_margin, self.command_timeout / 2)

    @property
    def host_key_name(self) -> str:
        """The name OpenSSH and paramiko file this host's key under."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _parse_key_line(line: str) -> paramiko.PKey:
    """An OpenSSH public key line ("ssh-ed25519 AAAA... [comment]") as a paramiko key."""
    parts = line.split()
    if len(parts) < 2:
        raise InputError(f"not an OpenSSH public key line: {line!r}")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise InputError(f"invalid public key {parts[0]!r}: {exc}") from exc


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint (as `ssh-keygen -lf` prints it)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_key_fingerprint(public_key_line: str) -> str:
    """The `SHA256:...` fingerprint of an OpenSSH public key line."""
    return _fingerprint(_parse_key_line(public_key_line))


def _expected_fingerprint(host_key: str) -> str:
    """The fingerprint a pin (key line or `SHA256:` fingerprint) requires."""
    pin = host_key.strip()
    if pin.startswith("SHA256:"):
        if len(pin) <= len("SHA256:") or " " in pin:
            raise InputError(f"invalid SHA256 host key fingerprint: {pin!r}")
        return pin
    return host_key_fingerprint(pin)


class _VerifyPolicy(paramiko.RejectPolicy):
    """Called by paramiko, before authentication, for a host it holds no key for.

    Without a fingerprint it rejects, like RejectPolicy. With one it accepts only the key
    whose fingerprint matches. This is verification against a pinned value, not
    trust-on-first-use: nothing is added to any host key store, and any other key raises.
    """

    def __init__(self, fingerprint: str | None) -> None:
        self.fingerprint = fingerprint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        if self.fingerprint is None:
            raise HostKeyMismatchError(f"host {hostname} is not in known_hosts; refusing")
        presented = _fingerprint(key)
        if presented != self.fingerprint:
            raise HostKeyMismatchError(
                f"host key of {hostname} is {presented}, expected {self.fingerprint}; refusing"
            )


def _client_for(target: SSHTarget) -> paramiko.SSHClient:
    """A client that trusts exactly the configured host keys; config errors are InputErrors."""
    client = paramiko.SSHClient()
    fingerprint_pin: str | None = None
    if target.known_hosts_path:
        path = os.path.expanduser(target.known_hosts_path)
        if not os.path.isfile(path):
            raise InputError(f"known_hosts file not found: {path}")
        client.load_host_keys(path)  # read only: unknown hosts are rejected, never added
    if target.host_key:
        pin = target.host_key.strip()
        if pin.startswith("SHA256:"):
            fingerprint_pin = pin
        else:
            key = _parse_key_line(pin)  # paramiko itself enforces it, before authentication
            client.get_host_keys().add(target.host_key_name, key.get_name(), key)
    client.set_missing_host_key_policy(_VerifyPolicy(fingerprint_pin))
    return client


def _load_private_key(key_path: str) -> paramiko.PKey:
    """Our private key, loaded up front so a bad file is a clear permanent error."""
    path = os.path.expanduser(key_path)
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise InputError(f"cannot load SSH private key {path}: {exc}") from exc


def _exchange(
    channel: paramiko.Channel, payload: bytes, timeout: float
) -> tuple[bytes, bytes, int]:
    """Send stdin and read stdout and stderr together, so neither side can block the other.

    Done means: exit status known, channel at EOF or closed, and both buffers drained
    (some servers send the exit status before the last output).
    """
    deadline = time.monotonic() + timeout
    pending = memoryview(payload)
    stdin_open = True
    out, err = bytearray(), bytearray()
    while True:
        if stdin_open and pending and channel.send_ready():
            try:
                pending = pending[channel.send(pending[:CHUNK]) :]
            except OSError:  # the guest closed its stdin; its exit status will say why
                pending = pending[len(pending) :]
        if stdin_open and not pending:
            stdin_open = False
            try:
                channel.shutdown_write()
            except (OSError, EOFError):
                pass
        while channel.recv_ready():
            out += channel.recv(CHUNK)
            if len(out) > MAX_REPLY_BYTES:
                raise GuestError(f"guest reply exceeds {MAX_REPLY_BYTES} bytes; refused",
                                 None, _tail(err))
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(CHUNK)
            del err[:-MAX_STDERR_BYTES]
        finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(out), bytes(err), channel.recv_exit_status()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GuestTimeoutError(
                f"guest command did not finish within {timeout:g} s", None, _tail(err)
            )
        # the channel's fd wakes us on output; the cap catches send window and exit status
        select.select([channel], [], [], min(remaining, 0.02 if stdin_open else 0.1))


def _tail(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")[-STDERR_TAIL:].strip()


def _reply(out: bytes, err: bytes, status: int) -> dict[str, Any]:
    """The guest's JSON result, or GuestError with the guest's own message."""
    try:
        reply = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        reply = None
    if status != 0:
        if isinstance(reply, dict) and isinstance(reply.get("error"), str):
            message = reply["error"]
        else:
            message = _tail(err) or f"guest command exited with status {status}"
        raise GuestError(message, status, _tail(err))
    if not isinstance(reply, dict):
        raise GuestError(
            f"guest replied with malformed JSON ({len(out)} bytes)", status, _tail(err)
        )
    if reply.get("ok") is False:
        raise GuestError(str(reply.get("error", "guest reported failure")), status, _tail(err))
    return reply


def run_guest(target: SSHTarget, request: dict, command: str = GUEST_COMMAND) -> dict:
    """Run the fixed guest `command` with `request` as JSON on stdin; return its JSON reply.

    The request gets an id and the guest's deadline; a lost connection is retried (with
    backoff, `CONNECT_ATTEMPTS` in all) under the same id, so it is applied at most once."""
    if not COMMAND_PATTERN.fullmatch(command):
        raise InputError(f"guest command must match {COMMAND_PATTERN.pattern}: {command!r}")
    request = {"request_id": uuid.uuid4().hex, **request,
               "deadline_seconds": target.guest_deadline}
    for attempt in range(1, CONNECT_ATTEMPTS):
        try:
            return _run_once(target, request, command)
        except GuestConnectionError as exc:
            log.warning("guest request failed (%s); resending it (attempt %d of %d)",
                        exc, attempt + 1, CONNECT_ATTEMPTS)
            time.sleep(0.5 * 2 ** (attempt - 1))
    return _run_once(target, request, command)  # the last attempt: its error is the caller's


def _run_once(target: SSHTarget, request: dict, command: str) -> dict:
    payload = json.dumps(request).encode("utf-8")
    operation = request.get("operation")
    operation = operation[:64] if isinstance(operation, str) else "?"  # never the body
    where = f"{target.username}@{target.host_key_name}"
    pkey = _load_private_key(target.key_path)
    client = _client_for(target)
    started = time.monotonic()
    try:
        # one deadline for each stage of the handshake; only our key, never an agent's
        deadlines = dict.fromkeys(
            ("timeout", "banner_timeout", "auth_timeout", "channel_timeout"),
            target.connect_timeout)
        client.connect(target.host, port=target.port, username=target.username, pkey=pkey,
                       look_for_keys=False, allow_agent=False, **deadlines)
        transport = client.get_transport()
        assert transport is not None
        if target.host_key:  # a pin wins even when known_hosts also knows this host
            presented = _fingerprint(transport.get_remote_server_key())
            wanted = _expected_fingerprint(target.host_key)
            if presented != wanted:
                raise HostKeyMismatchError(
                    f"host key of {target.host_key_name} is {presented}, expected {wanted}"
                )
        channel = transport.open_session(timeout=target.connect_timeout)
        channel.exec_command(command)
        out, err, status = _exchange(channel, payload, target.command_timeout)
    except paramiko.BadHostKeyException as exc:
        raise HostKeyMismatchError(
            f"host key of {exc.hostname} is {_fingerprint(exc.key)}, "
            f"expected {_fingerprint(exc.expected_key)}; refusing"
        ) from None
    except paramiko.AuthenticationException as exc:
        raise GuestAuthError(f"SSH key authentication failed for {where}: {exc}") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        log.warning("guest %r on %s: connection failed: %s", operation, where, exc)
        raise GuestConnectionError(f"SSH connection to {where} failed: {exc}") from exc
    finally:
        client.close()
    elapsed = time.monotonic() - started
    if status == -1:  # closed without an exit status: the connection, not the guest, failed
        raise GuestConnectionError(f"SSH channel to {where} closed before the guest finished")
    log.info("guest %r on %s: exit %d in %.2f s", operation, where, status, elapsed)
    return _reply(out, err, status)
