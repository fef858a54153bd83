"""A design-space sweep flow against a sequential engine loop over the same points.

3 organisms x 10 promoter strengths x 5 copy numbers (150 points, plus 3 controls), each
cell grown 24 simulated hours. The baseline is what a user writes without BioXen Flows:
one process, a loop of `Cell(...).install(...).grow(1440)` over every point (and control).
The flow runs against a running Prefect server (PREFECT_API_URL) with a fresh result
cache, so every point is simulated; it also creates and destroys a VM per point in the
state store and writes the dataset, heatmaps and artifacts. A second, identical flow run
shows reuse. Goal: flow wall / loop wall <= 0.75 on 2 cores.

    prefect server start &   export PREFECT_API_URL=http://127.0.0.1:4200/api
    python bench/sweep.py [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ORGANISMS = ["syn3a", "ecoli", "minimal_cell"]
STRENGTHS = [0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0]
COPIES = [1, 2, 5, 10, 20]
HOURS = 24.0
GOAL = 0.75


def sequential_loop() -> float:
    """Every point and control simulated one after another in this process (seconds),
    compiling each model itself as a bare libroadrunner user would (no compiled-model
    cache, which would otherwise hand the flow every model compiled)."""
    from bioxen_flows.engine.cell import Cell

    os.environ["BIOXEN_MODEL_CACHE"] = "false"
    started = time.perf_counter()
    for organism in ORGANISMS:
        Cell(organism).grow(HOURS * 60)  # the control
        for strength in STRENGTHS:
            for copies in COPIES:
                cell = Cell(organism)
                cell.install("gfp_reporter", copies=copies, strength=strength)
                cell.grow(HOURS * 60)
                cell.metrics()
    elapsed = time.perf_counter() - started
    del os.environ["BIOXEN_MODEL_CACHE"]
    return elapsed


def flow_run(out: str, workers: int | None) -> tuple[float, dict]:
    from bioxen_flows.orchestration.sweep import sweep_design_space

    started = time.perf_counter()
    result = sweep_design_space(organisms=ORGANISMS, strengths=STRENGTHS, copies=COPIES,
                                hours=HOURS, out_dir=out, workers=workers)
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        print("bench/sweep.py: set PREFECT_API_URL to a running Prefect server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bioxen-bench-sweep-") as tmp:
        os.environ["BIOXEN_HOME"] = os.path.join(tmp, "home")  # fresh store and result cache
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        loop = sequential_loop()
        first, result = flow_run(os.path.join(tmp, "out"), args.workers)
        again, repeat = flow_run(os.path.join(tmp, "out"), args.workers)
    points = len(ORGANISMS) * len(STRENGTHS) * len(COPIES)
    print(f"{points} points + {len(ORGANISMS)} controls, {HOURS:g} simulated h each, "
          f"{os.cpu_count()} CPUs")
    print(f"  sequential engine loop          {loop:8.1f} s")
    print(f"  sweep flow (all new)            {first:8.1f} s   ratio {first / loop:.3f}"
          f"   (goal <= {GOAL})   reused {result['reused']}")
    print(f"  sweep flow again (all cached)   {again:8.1f} s   ratio {again / first:.3f} "
          f"of the first run   reused {repeat['reused']} of {repeat['points']}")
    return 0 if result["reused"] == 0 and repeat["reused"] == points else 1


if __name__ == "__main__":
    sys.exit(main())
