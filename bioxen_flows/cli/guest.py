"""`bioxen guest`: the one command an XCP-ng guest runs, JSON request in, JSON result out.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bioxen_flows.serialization import json_safe
from bioxen_flows.vm import create_bio_vm, load_bio_vm

MAX_REQUEST_BYTES = 10_000_000
KEPT_REPLIES = 200  # replies kept for resent requests (the newest)
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")




def handle(request: dict[str, Any]) -> Any:
    """Carry out one request against the guest's bio-VM and return its JSON-ready result."""
    operation = request.get("operation")
    vm_id = request.get("vm_id")
    if not isinstance(vm_id, str):
        raise ValueError("request needs a string vm_id")
    if operation == "create":  # the host's record is new: a cell left from before is stale
        _destroy_stale(vm_id)
        config = {
            "resources": request.get("resources") or {},
            "simulation": request.get("simulation") or {},
        }
        vm = create_bio_vm(vm_id, request["biological_type"], "basic", config)
        vm.start()  # the guest's cell runs whenever the XCP-ng VM exists
        return vm.get_status()
    vm = load_bio_vm(vm_id)
    if operation == "run":
        return vm.execute_biological_process(request["code"])
    if operation == "install":
        return vm.install_biological_package(_package_source(vm_id, request), request.get("copies"))
    if operation == "metrics":
        return vm.get_biological_metrics()
    if operation == "allocate":
        return vm.allocate(
            request.get("atp_percent"), request.get("ribosomes"), reset=bool(request.get("reset"))
        )
    if operation == "snapshot":
        return vm.snapshot_state()["cell"]
    if operation == "restore":
        vm.restore_state({"cell": request["snapshot"], "allocations": vm.record.allocations})
        return {"restored": True}
    if operation == "probe":
        return vm.probe_growth([tuple(c) for c in request["caps"]])
    if operation == "destroy":
        vm.destroy()
        return {"destroyed": vm_id}
    raise ValueError(f"unknown guest operation {operation!r}")


def _destroy_stale(vm_id: str) -> None:
    from bioxen_flows.state import StateStore

    if StateStore().find_vm(vm_id) is not None:
        load_bio_vm(vm_id).destroy()


def _package_source(vm_id: str, request: dict[str, Any]) -> str:
    """A built-in package name, or a user module the host sent as text (saved in the guest)."""
    if "module_text" not in request:
        return str(request["package"])
    from bioxen_flows.state import bioxen_home

    suffix = ".xml" if request.get("module_format") == "sbml" else ".ant"
    name = Path(str(request["package"])).stem
    if not name.isidentifier():
        raise ValueError(f"invalid module name {name!r}")
    folder = bioxen_home() / "modules" / vm_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    path.write_text(str(request["module_text"]), encoding="utf-8")
    return str(path)


def _replies() -> Path:
    from bioxen_flows.state import bioxen_home

    return bioxen_home() / "guest_replies"


def _kept_reply(request_id: str | None) -> dict[str, Any] | None:
    if request_id is None:
        return None
    path = _replies() / f"{request_id}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _keep_reply(request_id: str | None, reply: dict[str, Any]) -> None:
    """Keep a successful reply under its request id (atomically), and only the newest."""
    if request_id is None:
        return
    folder = _replies()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{request_id}.tmp"
    tmp.write_text(json.dumps(reply), encoding="utf-8")
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


def _checked(request: Any) -> tuple[str | None, float | None]:
    if not isinstance(request, dict):
        raise ValueError("request must be a JSON object")
    request_id, deadline = request.get("request_id"), request.get("deadline_seconds")
    if request_id is not None and not (
            isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)):
        raise ValueError("request_id must be 8-64 characters from A-Z a-z 0-9 _ -")
    if deadline is not None and not (
            isinstance(deadline, (int, float)) and 0 < deadline <= 86_400):
        raise ValueError("deadline_seconds must be a number in (0, 86400]")
    return request_id, deadline


def main() -> int:
    """Read one JSON request from stdin, write one JSON reply to stdout."""
    try:
        request = _read_request()
        request_id, deadline = _checked(request)
        with _only_one(request_id):  # a resent request waits for the first to finish
            reply = _kept_reply(request_id)
            if reply is None and deadline is None:
                reply = {"ok": True, "result": json_safe(handle(request))}
                _keep_reply(request_id, reply)
            elif reply is None:
                reply = _run_until(request, request_id or uuid.uuid4().hex, deadline)
    except (ValueError, KeyError, TypeError) as exc:  # bad input or a refused operation
        reply = {"ok": False, "error": str(exc) or type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 (the host always gets a JSON reply, never exit 70)
        reply = {"ok": False, "error": f"guest failed: {type(exc).__name__}: {exc}"[:500]}
    json.dump(reply, sys.stdout)
    sys.stdout.write("\n")
    return 0 if reply["ok"] else 1


MAX_REQUEST_DEPTH = 32  # nesting of arrays and objects in a request


def _no_constant(name: str) -> None:
    raise ValueError(f"request holds {name}; numbers must be finite")


def _read_request() -> Any:
    """One bounded JSON request: at most MAX_REQUEST_BYTES, nesting at most
    MAX_REQUEST_DEPTH (checked before parsing: json recurses), no NaN or Infinity."""
    stream = getattr(sys.stdin, "buffer", None)  # a text stream when stdin is replaced
    raw = (stream or sys.stdin).read(MAX_REQUEST_BYTES + 1)
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"request too large (the limit is {MAX_REQUEST_BYTES:,} bytes)")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    depth = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_REQUEST_DEPTH:
                raise ValueError(f"request nested deeper than {MAX_REQUEST_DEPTH} levels")
        elif mark in "]}":
            depth -= 1
    return json.loads(text, parse_constant=_no_constant)


def _run_until(request: dict[str, Any], request_id: str, deadline: float) -> dict[str, Any]:
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
            _keep_reply(request_id, {"ok": True, "result": json_safe(handle(request))})
        except (ValueError, KeyError, TypeError) as exc:
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
        message = failed.read_text(encoding="utf-8")
        failed.unlink()
        return {"ok": False, "error": message}
    return {"ok": False, "error": f"the request's deadline ({deadline:g} s) passed before it "
            "finished; it was stopped and nothing of it was committed"}
