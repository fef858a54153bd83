"""The VM API's cost: memory per live basic VM, and a VM's whole life against one model load.

1. RSS per live basic VM with 300 alive (created and started in this process, their cells
   warm on the hypervisor): (RSS with 300 - RSS before) / 300 (goal <= 3 MiB).
2. create + start + destroy of one basic VM (state store on SQLite, warm engine) / one bare
   `roadrunner.RoadRunner(sbml)` load of the same organism's model, with one instance of it
   alive (libroadrunner then reuses the compiled code, as the engine does); medians of
   interleaved repetitions.
3. The light CLI: `bioxen status|list|stop|start|allocate|destroy` on a store of 1,000 VMs
   (goal <= 0.15 s each; none compiles a model), against the floor every such command pays:
   an interpreter that imports SQLAlchemy (the store) and pydantic-settings (the settings).

Run: python bench/vm_api.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

ALIVE, REPS, STORE_VMS, CLI_REPS = 300, 30, 1000, 5
ORGANISMS = ("syn3a", "ecoli", "minimal_cell")


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    os.environ["BIOXEN_HOME"] = tempfile.mkdtemp(prefix="bioxen-bench-vm-api-")
    import roadrunner

    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.model.loader import antimony_to_sbml
    from bioxen_flows.state import StateStore
    from bioxen_flows.vm import create_bio_vm

    store = StateStore()
    for organism in ORGANISMS:  # imports, compiled models, store schema: not per-VM costs
        warm = create_bio_vm(f"warm-{organism}", organism, store=store)
        warm.start()
        warm.destroy()
    before = rss_mib()
    vms = []
    for i in range(ALIVE):
        vm = create_bio_vm(f"alive-{i}", ORGANISMS[i % 3], store=store)
        vm.start()
        vms.append(vm)
    per_vm = (rss_mib() - before) / ALIVE
    print(f"RSS per live basic VM, {ALIVE} alive: {per_vm:.2f} MiB  (goal <= 3 MiB)")
    for vm in vms:
        vm.destroy()

    sbml = antimony_to_sbml(Cell("syn3a").model_text())
    keep = roadrunner.RoadRunner(sbml)  # noqa: F841 (kept alive: compiled code is reused)
    t_vm, t_load = [], []
    for i in range(-2, REPS):
        t0 = time.perf_counter()
        vm = create_bio_vm(f"life-{i}", "syn3a", store=store)
        vm.start()
        vm.destroy()
        t1 = time.perf_counter()
        roadrunner.RoadRunner(sbml)
        t2 = time.perf_counter()
        if i >= 0:
            t_vm.append(t1 - t0)
            t_load.append(t2 - t1)
    vm_ms, load_ms = statistics.median(t_vm) * 1e3, statistics.median(t_load) * 1e3
    print(f"create+start+destroy {vm_ms:.2f} ms, bare RoadRunner load {load_ms:.2f} ms: "
          f"ratio {vm_ms / load_ms:.2f}")

    for i in range(STORE_VMS - len(store.list_vms())):
        create_bio_vm(f"store-{i}", ORGANISMS[i % 3], store=store)
    light_cli()


def wall(args: list[str]) -> float:
    """Median wall seconds of a command run CLI_REPS times."""
    times = []
    for _ in range(CLI_REPS):
        began = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def light_cli() -> None:
    bioxen = [sys.executable, "-m", "bioxen_flows"]
    floor = wall([sys.executable, "-c", "import sqlalchemy, pydantic_settings"])
    bare = wall([sys.executable, "-c", "pass"])
    print(f"\nlight CLI on a store of {STORE_VMS} VMs (median of {CLI_REPS}); bare interpreter "
          f"{bare:.3f} s, interpreter + SQLAlchemy + pydantic-settings {floor:.3f} s")
    commands = [["status", "store-1"], ["list"], ["start", "store-1"], ["stop", "store-1"],
                ["allocate", "store-1", "--atp", "50"], ["destroy", "store-2"]]
    for command in commands:
        if command[0] == "destroy":  # once: a destroyed VM cannot be destroyed again
            began = time.perf_counter()
            subprocess.run(bioxen + command, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - began
        elif command[0] in ("start", "stop"):  # alternate, so each run changes state
            seconds = statistics.median(
                _toggle(bioxen, command[1], command[0]) for _ in range(CLI_REPS))
        else:
            seconds = wall(bioxen + command)
        print(f"  {' '.join(command):<28} {seconds:.3f} s  (goal <= 0.15 s)  "
              f"floor ratio {seconds / floor:.2f}")


def _toggle(bioxen: list[str], vm_id: str, action: str) -> float:
    """Seconds of `action` on `vm_id`, after putting it in the state the action needs."""
    other = "stop" if action == "start" else "start"
    subprocess.run([*bioxen, other, vm_id], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.perf_counter()
    subprocess.run([*bioxen, action, vm_id], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
