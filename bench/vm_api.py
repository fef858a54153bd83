"""The VM API's cost: memory per live basic VM, and a VM's whole life against one model load.

1. RSS per live basic VM with 300 alive (created and started in this process, their cells
   warm on the hypervisor): (RSS with 300 - RSS before) / 300 (goal <= 3 MiB).
2. create + start + destroy of one basic VM (state store on SQLite, warm engine) / one bare
   `roadrunner.RoadRunner(sbml)` load of the same organism's model, with one instance of it
   alive (libroadrunner then reuses the compiled code, as the engine does); medians of
   interleaved repetitions.

Run: python bench/vm_api.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import psutil

ALIVE, REPS = 300, 30
ORGANISMS = ("syn3a", "ecoli", "minimal_cell")


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    os.environ["BIOXEN_HOME"] = tempfile.mkdtemp(prefix="bioxen-bench-vm-api-")
    import roadrunner

    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.model.builder import antimony_to_sbml
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


if __name__ == "__main__":
    main()
