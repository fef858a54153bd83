"""`bioxen guest`: the one command an XCP-ng guest runs, JSON request in, JSON result out.

The host never builds a shell command from user data: it runs this fixed command
and sends the request on stdin. Inside the guest the bio-VM is an ordinary `basic`
VM in the guest's own BIOXEN_HOME, so both infrastructures compute the same numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bioxen_flows.serialization import json_safe
from bioxen_flows.vm import create_bio_vm, load_bio_vm

MAX_REQUEST_BYTES = 10_000_000


def handle(request: dict[str, Any]) -> Any:
    """Carry out one request against the guest's bio-VM and return its JSON-ready result."""
    operation = request.get("operation")
    vm_id = request.get("vm_id")
    if not isinstance(vm_id, str):
        raise ValueError("request needs a string vm_id")
    if operation == "create":
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


def main() -> int:
    """Read one JSON request from stdin, write one JSON reply to stdout."""
    try:
        raw = sys.stdin.read(MAX_REQUEST_BYTES + 1)
        if len(raw) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
        request = json.loads(raw)
        if not isinstance(request, dict):
            raise ValueError("request must be a JSON object")
        reply = {"ok": True, "result": json_safe(handle(request))}
        code = 0
    except (ValueError, KeyError, TypeError) as exc:  # bad input or a refused operation
        reply = {"ok": False, "error": str(exc) or type(exc).__name__}
        code = 1
    json.dump(reply, sys.stdout)
    sys.stdout.write("\n")
    return code
