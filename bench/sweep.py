"""A design-space sweep flow against the ideal sequential loop over the same points.

3 organisms x 50 promoter strengths (0.05-20, log-spaced) x 7 copy numbers = 1,050 points
(plus 3 controls), each cell grown 24 simulated hours. The baseline is the best a user can
write by hand: one process that compiles each organism's model with the package once and,
per point, returns the cell to its start, sets copies and strength and grows it
(`Cell.restore`, `Cell.tune_package`, `Cell.grow`). The flow runs against a running Prefect
server (PREFECT_API_URL) with a fresh result cache, so every point is simulated, in
cohorts (one VM each) on worker processes; it also writes the dataset, heatmaps and
artifacts. Then: the same sweep with 210 points (10 strengths), for the marginal cost of a
point ((T_1050 - T_210) / 840) against one model compile measured here, and the 1,050-point
sweep again, all reused.

Goals: flow / loop <= 0.6 on 2 cores; marginal point / compile <= 0.05; re-run / first
<= 0.1.

    prefect server start &   export PREFECT_API_URL=http://127.0.0.1:4200/api
    python bench/sweep.py [--workers N] [--scale]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ORGANISMS = ["syn3a", "ecoli", "minimal_cell"]
STRENGTHS = [float(f"{s:.6g}") for s in np.geomspace(0.05, 20, 50)]
FEW_STRENGTHS = STRENGTHS[::5]
COPIES = [1, 2, 3, 5, 8, 13, 21]
HOURS = 24.0


def ideal_loop(strengths: list[float]) -> float:
    """Seconds for every point and control in this process, each organism's model compiled
    once (no compiled-model cache) and reused for all its points."""
    from bioxen_flows.engine.cell import Cell

    os.environ["BIOXEN_MODEL_CACHE"] = "false"
    started = time.perf_counter()
    for organism in ORGANISMS:
        Cell(organism).grow(HOURS * 60)  # the control
        cell = Cell(organism)
        cell.install("gfp_reporter")
        start = cell.snapshot()
        for strength in strengths:
            for copies in COPIES:
                cell.restore(start)
                cell.tune_package("gfp_reporter", copies=copies, strength=strength)
                cell.grow(HOURS * 60)
                cell.metrics()
    elapsed = time.perf_counter() - started
    del os.environ["BIOXEN_MODEL_CACHE"]
    return elapsed


def one_compile() -> float:
    """Seconds to compile one organism's model with the package (median of 3)."""
    import roadrunner

    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.model.loader import antimony_to_sbml

    cell = Cell("ecoli")
    cell.install("gfp_reporter")
    head, _, _ = cell.model_text().rpartition("end")
    times = []
    for k in range(3):  # a new text each time: libroadrunner reuses code it compiled
        sbml = antimony_to_sbml(f"{head}  bench_compile_{k} = {k};\nend\n")
        began = time.perf_counter()
        roadrunner.RoadRunner(sbml)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def flow_run(out: str, strengths: list[float], workers: int | None) -> tuple[float, dict]:
    from bioxen_flows.orchestration.sweep import sweep_design_space

    started = time.perf_counter()
    result = sweep_design_space(organisms=ORGANISMS, strengths=strengths, copies=COPIES,
                                hours=HOURS, out_dir=out, workers=workers)
    return time.perf_counter() - started, result


def scale(workers: int | None) -> int:
    """The documented limit: 3 organisms x 50 strengths x 33 copies (4,950 points and 3
    controls), 24 h: wall time, peak memory of the flow's process and of its largest
    worker."""
    import resource

    copies = list(range(1, 34))
    with tempfile.TemporaryDirectory(prefix="bioxen-bench-scale-") as tmp:
        os.environ["BIOXEN_HOME"] = os.path.join(tmp, "home")
        from bioxen_flows.orchestration.sweep import sweep_design_space

        started = time.perf_counter()
        result = sweep_design_space(organisms=ORGANISMS, strengths=STRENGTHS, copies=copies,
                                    hours=HOURS, out_dir=os.path.join(tmp, "out"),
                                    workers=workers)
        wall = time.perf_counter() - started
        heatmap = os.path.getsize(result["paths"]["heatmap_ecoli"])
    flow_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{result['points']} points + {result['controls']} controls, {HOURS:g} h each: "
          f"{wall:.1f} s wall; peak RSS: flow {flow_mib:.0f} MiB, largest worker "
          f"{worker_mib:.0f} MiB; heatmap-ecoli.png {heatmap / 1024:.0f} KiB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    parser.add_argument("--scale", action="store_true",
                        help="instead: a 4,950-point sweep's wall time and peak memory")
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        print("bench/sweep.py: set PREFECT_API_URL to a running Prefect server", file=sys.stderr)
        return 2
    from bioxen_flows.cli.prefect_session import no_telemetry

    no_telemetry()
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    if args.scale:
        return scale(args.workers)
    with tempfile.TemporaryDirectory(prefix="bioxen-bench-sweep-") as tmp:
        os.environ["BIOXEN_HOME"] = os.path.join(tmp, "home-small")  # fresh store and cache
        compile_s = one_compile()
        loop = ideal_loop(STRENGTHS)
        small, _ = flow_run(os.path.join(tmp, "out-small"), FEW_STRENGTHS, args.workers)
        os.environ["BIOXEN_HOME"] = os.path.join(tmp, "home")  # fresh again
        first, result = flow_run(os.path.join(tmp, "out"), STRENGTHS, args.workers)
        again, repeat = flow_run(os.path.join(tmp, "out"), STRENGTHS, args.workers)
    points = len(ORGANISMS) * len(STRENGTHS) * len(COPIES)
    few = len(ORGANISMS) * len(FEW_STRENGTHS) * len(COPIES)
    marginal = (first - small) / (points - few)
    print(f"{points} points + {len(ORGANISMS)} controls ({', '.join(ORGANISMS)}), {HOURS:g} "
          f"simulated h each, {os.cpu_count()} CPUs; equal designs computed once: "
          f"{result.get('equal_designs', 0)}")
    print(f"  ideal sequential loop (one compile per organism)  {loop:8.1f} s "
          f"({loop / (points + 3) * 1e3:.2f} ms per point)")
    print(f"  sweep flow, all new                               {first:8.1f} s   "
          f"ratio {first / loop:.3f}   (goal <= 0.6, limit 0.5)")
    print(f"  sweep flow, {few} points, all new                  {small:8.1f} s")
    print(f"  marginal point {marginal * 1e3:.2f} ms / one model compile "
          f"{compile_s * 1e3:.0f} ms = {marginal / compile_s:.3f}   (goal <= 0.05)")
    print(f"  sweep flow again, all cached                      {again:8.1f} s   "
          f"ratio {again / first:.3f} of the first   (goal <= 0.1)   reused "
          f"{repeat['reused']} of {repeat['points']}")
    return 0 if result["reused"] == 0 and repeat["reused"] == points else 1


if __name__ == "__main__":
    sys.exit(main())
