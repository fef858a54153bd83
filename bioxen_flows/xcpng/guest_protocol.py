"""The guest protocol: what the host asks `bioxen guest` in an XCP-ng VM, and its answer.

One JSON object goes to the guest command's stdin, one comes back on its stdout. Both ends
import this module — the client (`vm.guest.GuestHost`, over `xcpng.ssh.run_guest`) and the
agent (`cli.guest`) — so the operations, the shape of a request and of a reply, and the
limits on their size are written once.

On the wire a request is flat: ``{"operation", "vm_id", <the operation's arguments>,
"request_id", "deadline_seconds"}``; a reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bioxen_flows.errors import InputError

GUEST_COMMAND = "bioxen guest"  # the one command the host runs in a guest
MAX_REQUEST_BYTES = 10_000_000  # a request's JSON (a module's text is the largest part)
MAX_REQUEST_DEPTH = 32  # nesting of arrays and objects in a request (json.loads recurses)
MAX_REPLY_BYTES = 64 * 1024 * 1024  # a week of a cell's time series is a few MB
MAX_DEADLINE_SECONDS = 86_400
MAX_ERROR_CHARS = 500  # an error reply's message about a crash is cut to this
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
ENVELOPE = ("operation", "vm_id", "request_id", "deadline_seconds")


class Operation(str, Enum):
    """What a request asks the guest to do with its bio-VM (a `basic` VM in the guest)."""

    CREATE = "create"  # a new cell (one left under the same id is stale and goes first)
    RUN = "run"  # a process program
    INSTALL = "install"  # a built-in package, or a user module sent as text
    METRICS = "metrics"
    ALLOCATE = "allocate"  # set the caps (reset: lift the others)
    SNAPSHOT = "snapshot"  # the cell's state
    RESTORE = "restore"  # back to a snapshot
    PROBE = "probe"  # balanced growth under (atp %, ribosomes) caps; the cell is untouched
    DESTROY = "destroy"


# the arguments an operation cannot do without (it reads others when present)
REQUIRED: dict[Operation, tuple[str, ...]] = {
    Operation.CREATE: ("biological_type",),
    Operation.RUN: ("code",),
    Operation.INSTALL: ("package",),
    Operation.RESTORE: ("snapshot",),
    Operation.PROBE: ("caps",),
}


@dataclass(frozen=True)
class GuestRequest:
    """One request: an operation on the guest's VM `vm_id` with its arguments.

    `request_id` and `deadline_seconds` are set by the transport (`run_guest`): the id
    makes a resent request apply once, the deadline stops it before the host gives up."""

    operation: Operation
    vm_id: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    deadline_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object sent on the guest's stdin."""
        data: dict[str, Any] = {"operation": self.operation.value, "vm_id": self.vm_id,
                                **self.arguments}
        if self.request_id is not None:
            data["request_id"] = self.request_id
        if self.deadline_seconds is not None:
            data["deadline_seconds"] = self.deadline_seconds
        return data

    @classmethod
    def from_json(cls, data: Any) -> GuestRequest:
        """The request a parsed JSON object holds; anything malformed is an `InputError`."""
        if not isinstance(data, dict):
            raise InputError("request must be a JSON object")
        request_id, deadline = data.get("request_id"), data.get("deadline_seconds")
        if request_id is not None and not (
                isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)):
            raise InputError("request_id must be 8-64 characters from A-Z a-z 0-9 _ -")
        if deadline is not None and (
                isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                or not 0 < deadline <= MAX_DEADLINE_SECONDS):
            raise InputError(
                f"deadline_seconds must be a number in (0, {MAX_DEADLINE_SECONDS}]")
        vm_id = data.get("vm_id")
        if not isinstance(vm_id, str):
            raise InputError("request needs a string vm_id")
        try:
            operation = Operation(data.get("operation"))
        except ValueError:
            raise InputError(f"unknown guest operation {data.get('operation')!r}") from None
        arguments = {k: v for k, v in data.items() if k not in ENVELOPE}
        missing = [name for name in REQUIRED.get(operation, ()) if name not in arguments]
        if missing:
            raise InputError(f"guest operation {operation.value!r} needs {', '.join(missing)}")
        return cls(operation, vm_id, arguments, request_id, deadline)


@dataclass(frozen=True)
class GuestReply:
    """The guest's answer: a JSON-ready result, or the error that refused the request."""

    ok: bool
    result: Any = None
    error: str = ""

    @classmethod
    def success(cls, result: Any) -> GuestReply:
        return cls(True, result)

    @classmethod
    def failure(cls, error: str) -> GuestReply:
        return cls(False, error=error)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the guest's stdout."""
        return {"ok": True, "result": self.result} if self.ok else {"ok": False,
                                                                      "error": self.error}

    @classmethod
    def from_json(cls, data: Any) -> GuestReply:
        """The reply a parsed JSON object holds; anything else is an `InputError`."""
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise InputError("a guest reply is a JSON object with a boolean 'ok'")
        if data["ok"]:
            if "result" not in data:
                raise InputError("a successful guest reply carries a 'result'")
            return cls.success(data["result"])
        return cls.failure(str(data.get("error") or "guest reported failure"))
