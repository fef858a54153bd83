"""Scale-out: the same comparison and sweep on one Dask worker host, then on two.

Hosts are Linux namespaces (`bioxen_flows.testing.multihost`, needs root): a scheduler
and two worker hosts, each worker one single-threaded process pinned to its own core with
`taskset` (worker 1 on CPU 0, worker 2 on CPU 1), with its own tmpfs for homes and
caches. PostgreSQL (the shared state store, a fresh database) and a Prefect server are
reached over the bridge. The flow runs in this process. Each workload first runs once to
warm the workers' model and kernel caches (what a long-lived cluster has), then is timed
with 1 worker and with 2.

- a stochastic comparison: E. coli and Syn3A, 8 replicates each, 24 simulated hours;
- a 1,000-point deterministic sweep: Syn3A and E. coli x 25 promoter strengths x 20 copy
  numbers, 24 h, every point new (a fresh result cache per run).

Goal: speed-up (T1 / T2) >= 1.8 with 2 workers. On a 2-core machine the flow, the
scheduler, the Prefect server and PostgreSQL share the two cores with the workers, so
this is a lower bound of what separate machines give.

    python bench/scale.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bioxen_flows.testing.multihost import (  # noqa: E402
    DaskHosts,
    TestBed,
    bridged_url,
    unavailable,
)
from bioxen_flows.testing.prefect_server import start_prefect_server  # noqa: E402

ADMIN_URL = os.environ.get("BIOXEN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def cpu_seconds(bed: TestBed, hosts: list[str]) -> float:
    """CPU seconds used so far by the process trees started on `hosts`."""
    import psutil

    total = 0.0
    for host in hosts:
        for started in bed.processes[host]:
            try:
                root = psutil.Process(started.pid)
                for process in [root, *root.children(recursive=True)]:
                    times = process.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    return total


def timed(label: str, run, bed: TestBed, workers: list[str]) -> float:  # noqa: ANN001
    """Wall seconds of `run()`; prints them with how busy the workers' cores were."""
    cpu = cpu_seconds(bed, workers)
    began = time.perf_counter()
    run()
    elapsed = time.perf_counter() - began
    busy = (cpu_seconds(bed, workers) - cpu) / (elapsed * len(workers))
    print(f"  {label}: {elapsed:.1f} s, worker cores {100 * busy:.0f} % busy", flush=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    args = parser.parse_args()
    why = unavailable()
    if why:
        raise SystemExit(f"bench/scale.py: {why}")
    import psycopg

    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from bioxen_flows.cli.prefect_session import no_telemetry

    no_telemetry()
    name = f"bioxen_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    work = Path(tempfile.mkdtemp(prefix="bioxen-scale-"))
    replicates, hours = (3, 6.0) if args.quick else (8, 24.0)
    strengths = [float(f"{s:.6g}") for s in np.geomspace(0.05, 20, 5 if args.quick else 25)]
    copies = list(range(1, (4 if args.quick else 20) + 1))
    server = None
    try:
        with TestBed(work / "hosts", ["sched", "w1", "w2"]) as bed:
            server, api, _ = start_prefect_server(work / "prefect", host=bed.gateway)
            from sqlalchemy.engine import make_url

            db = bed.forward(make_url(database).port or 5432)
            hosts = DaskHosts(bed, "sched", bridged_url(database, db), api)
            os.environ.update(BIOXEN_DATABASE_URL=database, PREFECT_API_URL=api,
                              BIOXEN_HOME=str(work / "flow-home"))
            from bioxen_flows.orchestration.compare import compare_organisms
            from bioxen_flows.orchestration.sweep import sweep_design_space

            def compare(tag: str) -> None:
                compare_organisms(organisms=["ecoli", "syn3a"], replicates=replicates,
                                  hours=hours, seed=1, out_dir=str(work / tag),
                                  dask_address=hosts.address)

            def sweep(tag: str) -> None:
                os.environ["BIOXEN_RESULT_STORAGE"] = str(work / f"cache-{tag}")
                sweep_design_space(organisms=["syn3a", "ecoli"], strengths=strengths,
                                   copies=copies, hours=24.0, out_dir=str(work / tag),
                                   dask_address=hosts.address)

            points = 2 * len(strengths) * len(copies)
            print(f"stochastic comparison: 2 organisms x {replicates} replicates x {hours:g} h; "
                  f"sweep: {points} points x 24 h", flush=True)
            hosts.start_worker("w1", cpu=0)
            hosts.wait_for_workers(1)
            w1, w12 = ["w1"], ["w1", "w2"]
            timed("warm-up (1 worker: caches)", lambda: (compare("warm"), sweep("warm")),
                  bed, w1)
            one = {"compare": timed("comparison, 1 worker", lambda: compare("c1"), bed, w1),
                   "sweep": timed("sweep, 1 worker", lambda: sweep("s1"), bed, w1)}
            hosts.start_worker("w2", cpu=1)
            hosts.wait_for_workers(2)
            timed("warm-up (worker 2)", lambda: (compare("warm2"), sweep("warm2")), bed, w12)
            two = {"compare": timed("comparison, 2 workers", lambda: compare("c2"), bed, w12),
                   "sweep": timed("sweep, 2 workers", lambda: sweep("s2"), bed, w12)}
        print("\n| workload | 1 worker (s) | 2 workers (s) | speed-up | goal |")
        print("|---|---|---|---|---|")
        for key, label in (("compare", "stochastic comparison"), ("sweep", f"{points}-pt sweep")):
            ratio = one[key] / two[key]
            print(f"| {label} | {one[key]:.1f} | {two[key]:.1f} | {ratio:.2f} | "
                  f"{'met' if ratio >= 1.8 else 'NOT met'} (>= 1.8) |")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        from bioxen_flows.state import dispose_engines

        dispose_engines()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
