"""Load on one state store: N client processes run whole VM lifecycles for a fixed time.

Each client loops: create a VM (its owner's quota and the host budget are checked),
start it, run ``grow(minutes=10)``, allocate ribosomes, run on a VM every client shares
(its lease serializes them), destroy. The ribosome budget is set below what all clients
would ask for at once, so some allocations are refused. Printed per backend: operations per
second, p50/p95/p99 latency per operation, errors by kind — only clean refusals
(BudgetError) and conflicts (ConflictError) are allowed — and a final consistency check: no
VM left half-made, no lease held, the ledger equal to the sum of the VMs' allocations.

    python bench/load.py                 # 16 clients, 60 s, SQLite then PostgreSQL
    python bench/load.py --clients 4 --seconds 10 --backends sqlite
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

PG_ADMIN = os.environ.get("BIOXEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SHARED = "shared-0"
RIBOSOMES_PER_ALLOCATION = 3000


def client(number: int, seconds: float, env: dict[str, str], out: str) -> None:
    """One client process: lifecycles until the deadline; writes its samples as JSON."""
    os.environ.update(env)
    from bioxen_flows.errors import BudgetError, ConflictError
    from bioxen_flows.vm import create_bio_vm, load_bio_vm

    samples: list[tuple[str, float]] = []
    errors: dict[str, int] = {}
    unexpected: list[str] = []

    def timed(name: str, call, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            result = call(*args, **kwargs)
        except (BudgetError, ConflictError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return None
        except Exception as exc:  # noqa: BLE001 (counted and reported: the bench fails)
            unexpected.append(f"{name}: {type(exc).__name__}: {exc}")
            return None
        samples.append((name, time.perf_counter() - started))
        return result

    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        vm_id = f"c{number}-{i}"
        i += 1
        vm = timed("create", create_bio_vm, vm_id, "syn3a", owner=f"team-{number % 4}")
        if vm is None:  # refused (quota): wait a little, as a user would
            time.sleep(0.05)
            continue
        timed("start", vm.start)
        timed("execute", vm.execute_biological_process, "grow(minutes=10)")
        timed("allocate", vm.allocate, ribosomes=RIBOSOMES_PER_ALLOCATION)
        shared = timed("load_shared", load_bio_vm, SHARED)
        if shared is not None:
            timed("execute_shared", shared.execute_biological_process, "grow(minutes=1)")
        timed("destroy", vm.destroy)
    Path(out).write_text(json.dumps({"samples": samples, "errors": errors,
                                     "unexpected": unexpected}))


def _check_consistency() -> list[str]:
    from bioxen_flows.state import StateStore

    store = StateStore()
    problems = []
    records = store.list_vms()
    for record in records:
        if record.damaged or record.snapshot is None:
            problems.append(f"{record.vm_id} is half-made ({record.damaged or 'no snapshot'})")
    if [r.vm_id for r in records] != [SHARED]:
        problems.append(f"VMs left behind: {[r.vm_id for r in records if r.vm_id != SHARED]}")
    ledger = store.budget()
    held = sum(r.allocations.get("ribosomes", 0) for r in records)
    if ledger["ribosomes_allocated"] != held:
        problems.append(f"ledger says {ledger['ribosomes_allocated']} ribosomes, VMs hold {held}")
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        from bioxen_flows.state.schema import vms

        leased = conn.execute(select(func.count()).select_from(vms)
                              .where(vms.c.lease_holder.is_not(None))).scalar()
    if leased:
        problems.append(f"{leased} lease(s) still held")
    quotas = {q["owner"]: q for q in store.quotas()}
    if any(q["vms"] > (q["vms_limit"] or 10**9) for q in quotas.values()):
        problems.append(f"a quota was exceeded: {quotas}")
    return problems


def run(backend: str, clients: int, seconds: float) -> bool:
    import pandas as pd

    from bioxen_flows.state import StateStore, dispose_engines
    from bioxen_flows.vm import create_bio_vm

    home = tempfile.mkdtemp(prefix="bioxen-load-")
    env = {"BIOXEN_HOME": home}
    database = None
    if backend == "postgresql":
        import psycopg

        database = f"bioxen_load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        env["BIOXEN_DATABASE_URL"] = f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"
    os.environ.update(env)
    if backend == "sqlite":
        os.environ.pop("BIOXEN_DATABASE_URL", None)
    try:
        store = StateStore()
        # below what all clients ask for at once: some allocations are refused
        store.set_budget(ribosomes=RIBOSOMES_PER_ALLOCATION * clients // 2)
        for team in range(4):
            # one VM fewer than the team's clients: some creates are refused
            store.set_quota(f"team-{team}", vms_limit=max(1, clients // 4 - 1))
        create_bio_vm(SHARED, "syn3a").start()
        context = multiprocessing.get_context("spawn")
        outs = [os.path.join(home, f"client-{n}.json") for n in range(clients)]
        started = time.perf_counter()
        procs = [context.Process(target=client, args=(n, seconds, env, outs[n]))
                 for n in range(clients)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - started
        results = [json.loads(Path(out).read_text()) for out in outs if Path(out).exists()]
        frame = pd.DataFrame([s for r in results for s in r["samples"]],
                             columns=["operation", "seconds"])
        table = frame.groupby("operation")["seconds"].agg(
            n="count",
            p50=lambda s: s.quantile(0.50) * 1000,
            p95=lambda s: s.quantile(0.95) * 1000,
            p99=lambda s: s.quantile(0.99) * 1000,
        )
        table["per_s"] = table["n"] / wall
        errors: dict[str, int] = {}
        for r in results:
            for kind, n in r["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
        unexpected = [u for r in results for u in r["unexpected"]]
        problems = _check_consistency()
        print(f"\n== {backend}: {clients} clients, {seconds:g} s "
              f"(wall {wall:.1f} s), {len(frame)} operations, {len(frame) / wall:.1f} ops/s")
        print(table.to_string(float_format=lambda v: f"{v:,.1f}",
                              header=["n", "p50 ms", "p95 ms", "p99 ms", "ops/s"]))
        print(f"clean refusals and conflicts: {errors or 'none'}")
        print(f"unexpected errors: {len(unexpected)}" + "".join(
            f"\n  {u}" for u in unexpected[:10]))
        print("consistency: " + ("ok (no half-made VM, no lease held, ledger = allocations)"
                                 if not problems else "; ".join(problems)))
        crashed = [p.exitcode for p in procs if p.exitcode != 0]
        if crashed or len(results) != clients:
            print(f"client processes failed: exit codes {crashed}")
        return not unexpected and not problems and not crashed and len(results) == clients
    finally:
        dispose_engines()
        if database is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    ok = [run(backend, args.clients, args.seconds) for backend in args.backends]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
