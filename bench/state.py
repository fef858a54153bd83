"""State-layer benchmark: the VM lifecycle's cost per backend, and what the warm cache saves.

Per backend (the embedded SQLite store, then PostgreSQL on 127.0.0.1:5432 in a scratch
database dropped afterwards), in one run:

- create + start + execute(grow 60) + destroy, per VM, in ms (median of --vms VMs);
- a warm load (the cell is cached at the record's version) ÷ a cold load (cache miss: the
  cell is rebuilt from the stored snapshot) — goal <= 0.1;
- with --contention: 8 processes x 20 `bioxen execute shared 'grow(minutes=1)'` on one VM;
  the VM's clock must equal 1 min x the number of executes that exited 0.

    python bench/state.py [--vms 30] [--contention] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ADMIN_URL = os.environ.get("BIOXEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def backend(name: str) -> Iterator[None]:
    """Point the store at a fresh SQLite file or a scratch PostgreSQL database."""
    with tempfile.TemporaryDirectory() as home:
        os.environ["BIOXEN_HOME"] = home
        os.environ.pop("BIOXEN_DATABASE_URL", None)
        if name == "sqlite":
            yield
            return
        import psycopg

        db = f"bioxen_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        os.environ["BIOXEN_DATABASE_URL"] = f"{ADMIN_URL.rsplit('/', 1)[0]}/{db}"
        try:
            yield
        finally:
            from bioxen_flows.state import dispose_engines

            dispose_engines()
            os.environ.pop("BIOXEN_DATABASE_URL")
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def lifecycle_ms(vms: int) -> float:
    from bioxen_flows.vm import create_bio_vm

    def one(i: int) -> None:
        vm = create_bio_vm(f"bench-{i}", "ecoli")
        vm.start()
        vm.execute_biological_process("grow(minutes=60)")
        vm.destroy()

    one(-1)  # compile the organism's model once, as any long-running process has
    return 1e3 * statistics.median(timed(lambda i=i: one(i)) for i in range(vms))


def warm_over_cold(repeats: int) -> tuple[float, float, float, float]:
    """Median load (load + metrics) in ms: warm (the cell is cached at the record's version),
    miss (no cell, but libroadrunner's compiled model is still alive in the process) and
    cold (neither: the model is compiled again, as a process that never held this VM
    does); and warm / cold."""
    from bioxen_flows.engine.hypervisor import get_hypervisor
    from bioxen_flows.model import loader
    from bioxen_flows.vm import create_bio_vm, load_bio_vm

    vm = create_bio_vm("bench-cache", "ecoli")
    vm.start()
    vm.execute_biological_process('install("gfp_reporter")\ngrow(minutes=60)')

    def load() -> None:
        load_bio_vm("bench-cache").get_biological_metrics()

    def miss() -> None:
        get_hypervisor().clear()  # the next load rebuilds the cell from the stored snapshot
        load()

    def cold() -> None:
        get_hypervisor().clear()
        loader.forget(texts=False)  # and no live instance keeps the compiled model
        load()

    load()
    warm_s = statistics.median(timed(load) for _ in range(repeats))
    miss_s = statistics.median(timed(miss) for _ in range(repeats))
    cold_s = statistics.median(timed(cold) for _ in range(repeats))
    vm.destroy()
    return 1e3 * warm_s, 1e3 * miss_s, 1e3 * cold_s, warm_s / cold_s


LOOP = textwrap.dedent("""\
    ok=0
    for i in $(seq 20); do
      "$1" -m bioxen_flows.cli execute shared 'grow(minutes=1)' >/dev/null 2>&1 && ok=$((ok+1))
    done
    echo $ok
""")


def contention() -> tuple[int, float]:
    """8 processes x 20 CLI executes on one VM: (executes that exited 0, the VM's clock)."""
    from bioxen_flows.vm import create_bio_vm, load_bio_vm

    create_bio_vm("shared", "syn3a").start()
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as script:
        script.write(LOOP)
    procs = [subprocess.Popen(["bash", script.name, sys.executable], stdout=subprocess.PIPE,
                              encoding="utf-8") for _ in range(8)]
    ok = sum(int(p.communicate()[0].split()[-1]) for p in procs)
    os.unlink(script.name)
    vm = load_bio_vm("shared")
    clock = vm.get_status()["simulated_time_min"]
    vm.destroy()
    return ok, clock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--contention", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    rows = []
    for name in args.backends.split(","):
        with backend(name):
            row = {"backend": name, "lifecycle_ms_per_vm": round(lifecycle_ms(args.vms), 1)}
            warm, miss, cold, ratio = warm_over_cold(args.repeats)
            row.update(warm_load_ms=round(warm, 2), miss_load_ms=round(miss, 2),
                       cold_load_ms=round(cold, 2), warm_over_cold=round(ratio, 3))
            if args.contention:
                ok, clock = contention()
                row.update(executes_exit_0=ok, clock_min=clock, lost_min=round(ok - clock, 6))
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = all(r["warm_over_cold"] <= 0.1 for r in rows) and all(
        r.get("lost_min", 0) == 0 for r in rows)
    print(f"warm/cold goal <= 0.1 and no lost work: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
