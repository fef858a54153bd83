"""The comparison flow against a plain sequential loop over the engine, on a real server.

Starts `prefect server start` on a free loopback port (its own PREFECT_HOME), then measures,
each side in this one run:

1. stochastic, 3 organisms x 4 replicates x 2 h and x 24 h: flow wall / loop over `Cell`
   (goal <= 0.65 on 2 cores; the limit is 0.5). The flow runs on the default task runner
   (`simulation_task_runner`: a process pool) and, for the choice documented in
   docs/api.md, on prefect-dask's LocalCluster with as many single-threaded workers.
2. deterministic, 3 x 100 x 24 h: orchestration overhead per VM, (flow - loop) / VMs
   (goal <= 10 ms).
3. `bioxen compare` (3 VMs x 2 h) as a user runs it against that server: wall (goal <= 3 s);
   and the same command with no server configured, whose temporary server start it reports
   apart.

The loop does what the flow computes for each VM: build the cell, grow it, take its time
series as records and its final metrics. Run: python bench/flows.py [--skip-dask]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORGANISMS = ["syn3a", "ecoli", "minimal_cell"]


def loop(replicates: int, hours: float, seed: int | None) -> float:
    """Seconds for the plain sequential loop over the engine (compiling its models itself,
    as a bare libroadrunner user would: no compiled-model cache)."""
    from bioxen_flows.engine.cell import Cell

    os.environ["BIOXEN_MODEL_CACHE"] = "false"
    began = time.perf_counter()
    for organism in ORGANISMS:
        for r in range(replicates):
            cell = Cell(organism, stochastic=seed is not None,
                        seed=None if seed is None else seed + r)
            cell.grow(hours * 60).to_records()
            cell.metrics()
    elapsed = time.perf_counter() - began
    del os.environ["BIOXEN_MODEL_CACHE"]
    return elapsed


def flow(replicates: int, hours: float, seed: int | None, out: Path, runner=None) -> float:
    """Seconds for the comparison flow (wall, as its caller sees it), starting with an
    empty compiled-model cache (its worker processes fill and share it)."""
    from bioxen_flows.orchestration.compare import compare_organisms

    shutil.rmtree(Path(os.environ["BIOXEN_HOME"]) / "model-cache", ignore_errors=True)
    run = compare_organisms if runner is None else compare_organisms.with_options(
        task_runner=runner)
    began = time.perf_counter()
    result = run(organisms=ORGANISMS, replicates=replicates, hours=hours, seed=seed,
                 deterministic=seed is None, out_dir=str(out))
    elapsed = time.perf_counter() - began
    assert result["vms"] == len(ORGANISMS) * replicates
    return elapsed


def cli(out: Path, env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "bioxen_flows", "compare", "--out", str(out)],
                         env=env, capture_output=True, encoding="utf-8", timeout=600)
    elapsed = time.perf_counter() - began
    if run.returncode != 0:
        raise SystemExit(f"bioxen compare failed: {run.stderr[-2000:]}")
    return elapsed, run.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-dask", action="store_true", help="skip the LocalCluster run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bioxen-bench-flows-"))
    os.environ["BIOXEN_HOME"] = str(tmp / "home")
    from bioxen_flows.cli.prefect_session import no_telemetry

    no_telemetry()
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from bioxen_flows.testing.prefect_server import start_prefect_server

    server, url, server_s = start_prefect_server(tmp / "prefect")
    os.environ["PREFECT_API_URL"] = url
    print(f"prefect server on {url}: up in {server_s:.1f} s; cores: {os.cpu_count()}")
    try:
        from bioxen_flows.orchestration.runners import default_workers

        workers = default_workers()
        for hours in (2.0, 24.0):  # at 2 h the compiled engine's work is ~5 s: the
            # workers' start dominates; at 24 h the simulation does
            print(f"\n1. stochastic, 3 organisms x 4 replicates x {hours:g} h")
            t_loop = loop(4, hours, seed=1)
            t_flow = flow(4, hours, 1, tmp / "out")
            print(f"  sequential loop over Cell     {t_loop:7.2f} s")
            print(f"  flow, process pool ({workers} workers) {t_flow:7.2f} s   "
                  f"ratio flow/loop {t_flow / t_loop:.3f}  (goal <= 0.65, limit 0.5)")
            if not args.skip_dask:
                from prefect_dask import DaskTaskRunner

                dask = DaskTaskRunner(cluster_kwargs={
                    "n_workers": workers, "threads_per_worker": 1, "processes": True,
                    "dashboard_address": None})
                t_dask = flow(4, hours, 1, tmp / "out", runner=dask)
                print(f"  flow, dask LocalCluster       {t_dask:7.2f} s   "
                      f"ratio flow/loop {t_dask / t_loop:.3f}")

        print("\n2. deterministic, 3 organisms x 100 VMs x 24 h")
        vms = 300
        t_loop = loop(100, 24.0, seed=None)
        t_flow = flow(100, 24.0, None, tmp / "out")
        print(f"  sequential loop over Cell     {t_loop:7.2f} s ({t_loop / vms * 1e3:.1f} ms/VM)")
        print(f"  flow                          {t_flow:7.2f} s   overhead (flow - loop) / VMs "
              f"{(t_flow - t_loop) / vms * 1e3:.1f} ms  (goal <= 10 ms)")

        print("\n3. bioxen compare, 3 VMs x 2 h")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t_cli, _ = cli(tmp / "cli", env)
        print(f"  against the running server    {t_cli:7.2f} s wall  (goal <= 3 s)")
        bare = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        bare["PREFECT_HOME"] = str(tmp / "ephemeral")
        t_eph, err = cli(tmp / "cli", bare)
        started = re.search(r"temporary server in ([0-9.]+) s", err)
        server_part = float(started.group(1)) if started else float("nan")
        print(f"  no server configured          {t_eph:7.2f} s wall, of which the temporary "
              f"server's start {server_part:.1f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
