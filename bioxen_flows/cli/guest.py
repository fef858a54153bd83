"""`bioxen guest`: the one command an XCP-ng guest runs, JSON request in, JSON result out.

The request and reply are those of `bioxen_flows.xcpng.guest_protocol`, which the host's
client imports too.

The host never builds a shell command from user data: it runs this fixed command
and sends the request on stdin. Inside the guest the bio-VM is an ordinary `basic`
VM in the guest's own BIOXEN_HOME, so both infrastructures compute the same numbers.

The guest does not rely on SSH to stop it: OpenSSH without a pty lets a command run on
after the client hangs up. A request carries `deadline_seconds`; the operation runs in a
child process that is killed when it passes (an uncommitted store transaction rolls back)
and the reply says so. A request also carries a `request_id`: the reply of a request that
succeeded is kept, so the host may resend a request whose answer it lost and it is
applied once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bioxen_flows.errors import InputError
from bioxen_flows.files import read_text_file
from bioxen_flows.serialization import json_safe
from bioxen_flows.vm import create_bio_vm, load_bio_vm
from bioxen_flows.xcpng.guest_protocol import (
    MAX_ERROR_CHARS,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_DEPTH,
    GuestReply,
    GuestRequest,
    Operation,
)

KEPT_REPLIES = 200  # replies kept for resent requests (the newest)
BAD_INPUT = (ValueError, KeyError, TypeError)  # a refused request: its message is the reply


def handle(request: GuestRequest) -> Any:
    """Carry out one request against the guest's bio-VM and return its JSON-ready result."""
    operation, vm_id, args = request.operation, request.vm_id, request.arguments
    if operation is Operation.CREATE:  # the host's record is new: a stale cell goes
        _destroy_stale(vm_id)
        config = {
            "resources": args.get("resources") or {},
            "simulation": args.get("simulation") or {},
        }
        vm = create_bio_vm(vm_id, args["biological_type"], "basic", config)
        vm.start()  # the guest's cell runs whenever the XCP-ng VM exists
        return vm.get_status()
    vm = load_bio_vm(vm_id)
    if operation is Operation.RUN:
        return vm.execute_biological_process(args["code"])
    if operation is Operation.INSTALL:
        return vm.install_biological_package(_package_source(vm_id, args), args.get("copies"))
    if operation is Operation.METRICS:
        return vm.get_biological_metrics()
    if operation is Operation.ALLOCATE:
        return vm.allocate(
            args.get("atp_percent"), args.get("ribosomes"), reset=bool(args.get("reset"))
        )
    if operation is Operation.SNAPSHOT:
        return vm.snapshot_state()["cell"]
    if operation is Operation.RESTORE:
        vm.restore_state({"cell": args["snapshot"], "allocations": vm.record.allocations})
        return {"restored": True}
    if operation is Operation.PROBE:
        return vm.probe_growth([tuple(c) for c in args["caps"]])
    vm.destroy()  # Operation.DESTROY, the last one
    return {"destroyed": vm_id}


def _destroy_stale(vm_id: str) -> None:
    from bioxen_flows.state import StateStore

    if StateStore().find_vm(vm_id) is not None:
        load_bio_vm(vm_id).destroy()


def _package_source(vm_id: str, request: Mapping[str, Any]) -> str:
    """A built-in package name, or a user module the host sent as text (saved in the guest)."""
    if "module_text" not in request:
        return str(request["package"])
    from bioxen_flows.state import bioxen_home

    suffix = ".xml" if request.get("module_format") == "sbml" else ".ant"
    name = Path(str(request["package"])).stem
    if not name.isidentifier():
        raise InputError(f"invalid module name {name!r}")
    folder = bioxen_home() / "modules" / vm_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    path.write_text(str(request["module_text"]), encoding="utf-8")
    return str(path)


def _replies() -> Path:
    from bioxen_flows.state import bioxen_home

    return bioxen_home() / "guest_replies"


def _kept_reply(request_id: str | None) -> GuestReply | None:
    if request_id is None:
        return None
    path = _replies() / f"{request_id}.json"
    if not path.is_file():
        return None
    return GuestReply.from_json(json.loads(read_text_file(
        path, max_bytes=MAX_REPLY_BYTES, what="kept reply")))


def _keep_reply(request_id: str | None, reply: GuestReply) -> None:
    """Keep a successful reply under its request id (atomically), and only the newest."""
    if request_id is None:
        return
    folder = _replies()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{request_id}.tmp"
    tmp.write_text(json.dumps(reply.to_json()), encoding="utf-8")
    tmp.replace(folder / f"{request_id}.json")
    kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in kept[:-KEPT_REPLIES]:
        old.unlink(missing_ok=True)
        (folder / f".{old.stem}.lock").unlink(missing_ok=True)


@contextmanager
def _only_one(request_id: str | None) -> Iterator[None]:
    """Hold the request's lock: two copies of one request never run at the same time."""
    if request_id is None:
        yield
        return
    folder = _replies()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{request_id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def main() -> int:
    """Read one JSON request from stdin, write one JSON reply to stdout."""
    try:
        request = GuestRequest.from_json(_read_request())
        request_id, deadline = request.request_id, request.deadline_seconds
        with _only_one(request_id):  # a resent request waits for the first to finish
            reply = _kept_reply(request_id)
            if reply is None and deadline is None:
                reply = GuestReply.success(json_safe(handle(request)))
                _keep_reply(request_id, reply)
            elif reply is None:
                reply = _run_until(request, request_id or uuid.uuid4().hex, deadline)
    except BAD_INPUT as exc:  # bad input or a refused operation
        reply = GuestReply.failure(str(exc) or type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 (the host always gets a JSON reply, never exit 70)
        reply = GuestReply.failure(_crash(exc))
    json.dump(reply.to_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0 if reply.ok else 1


def _crash(exc: BaseException) -> str:
    return f"guest failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def _no_constant(name: str) -> None:
    raise InputError(f"request holds {name}; numbers must be finite")


def _read_request() -> Any:
    """One bounded JSON request: at most MAX_REQUEST_BYTES, nesting at most
    MAX_REQUEST_DEPTH (checked before parsing: json recurses), no NaN or Infinity."""
    stream = getattr(sys.stdin, "buffer", None)  # a text stream when stdin is replaced
    raw = (stream or sys.stdin).read(MAX_REQUEST_BYTES + 1)
    if len(raw) > MAX_REQUEST_BYTES:
        raise InputError(f"request too large (the limit is {MAX_REQUEST_BYTES:,} bytes)")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    depth = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_REQUEST_DEPTH:
                raise InputError(f"request nested deeper than {MAX_REQUEST_DEPTH} levels")
        elif mark in "]}":
            depth -= 1
    return json.loads(text, parse_constant=_no_constant)


def _run_until(request: GuestRequest, request_id: str, deadline: float) -> GuestReply:
    """Carry the request out in a child process that is killed at the deadline.

    A Python-level alarm would wait for a long libroadrunner call to return; SIGKILL does
    not, and a store transaction that was not committed is rolled back. The child keeps its
    reply before exiting, so a child killed after it committed still has its answer read."""
    folder = _replies()
    folder.mkdir(parents=True, exist_ok=True)
    failed = folder / f".{request_id}.failed"
    ends = time.monotonic() + deadline
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            _keep_reply(request_id, GuestReply.success(json_safe(handle(request))))
        except BAD_INPUT as exc:
            failed.write_text(str(exc) or type(exc).__name__, encoding="utf-8")
        except BaseException as exc:  # noqa: BLE001 (reported by the parent as a crash)
            failed.write_text(f"guest failed: {type(exc).__name__}: {exc}", encoding="utf-8")
            code = 70
        os._exit(code)
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() >= ends:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    reply = _kept_reply(request_id)
    if reply is not None:
        return reply
    if failed.is_file():
        message = read_text_file(failed, max_bytes=MAX_REPLY_BYTES, what="failure note")
        failed.unlink()
        return GuestReply.failure(message)
    return GuestReply.failure(f"the request's deadline ({deadline:g} s) passed before it "
                              "finished; it was stopped and nothing of it was committed")
