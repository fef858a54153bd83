"""Where the simulation tasks run: worker processes on this machine.

libroadrunner holds the GIL while it integrates, so threads add no speed to simulation (two
threads reached 0.93x one thread, two processes 1.92x). The comparison and the design-space
sweep therefore run their CPU-bound batch tasks on Prefect's `ProcessPoolTaskRunner`, one
process per core by default; I/O-bound XCP-ng steps stay on threads (`io_task_runner`).
docs/api.md ("Task runners") has the measurements behind choosing it over prefect-dask's
`LocalCluster`. More than one machine: `dask_task_runner` runs the batches on a Dask
cluster whose workers share nothing with the flow but the state store (deployments/README.md,
"Dask across hosts").
"""

from __future__ import annotations

import os
import queue
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from bioxen_flows.errors import InfrastructureError, InputError
from bioxen_flows.limits import MAX_WORKERS
from bioxen_flows.orchestration.stopping import (
    STOP_POLL_S,
    exit_with_parent,
    ignore_interrupts,
    interrupts_held,
    raise_if_stopped,
    stop_requested,
)
from bioxen_flows.quick_exit import exit_after_handlers

MAX_IO_THREADS = 8  # concurrent XCP-ng provisioning calls of one run
DASK_CONNECT_TIMEOUT_S = 15
DASK_ADDRESS = re.compile(r"(tcp|tls)://[A-Za-z0-9.:\[\]-]{1,253}:\d{1,5}")


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_workers(workers: int | None) -> None:
    """Refuse a worker count that cannot run (before any flow or server starts)."""
    if workers is not None and (isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS):
        raise InputError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")


class SimulationTaskRunner(ProcessPoolTaskRunner):
    """Prefect's process pool, knowing its own size (`workers`), so that batches are sized
    and submitted from our number rather than from the pool's private state."""

    def __init__(self, workers: int | None = None) -> None:
        check_workers(workers)
        self.workers = workers or default_workers()
        super().__init__(max_workers=self.workers, initializer=start_simulation_worker)

    def duplicate(self) -> SimulationTaskRunner:
        """A fresh runner of the same size (Prefect starts each flow run on a duplicate)."""
        return type(self)(self.workers)


def simulation_task_runner(workers: int | None = None) -> TaskRunner:
    """The task runner for CPU-bound simulation tasks: `workers` processes (default: the
    machine's cores). Task parameters and results must pickle (ids, specs, frames)."""
    return SimulationTaskRunner(workers)


def runner_workers(runner: TaskRunner | None) -> int | None:
    """How many tasks `runner` runs at once, when it is one of ours (None: unknown)."""
    return runner.workers if isinstance(runner, SimulationTaskRunner) else None


def start_simulation_worker() -> None:
    """Set up a simulation worker process: Ctrl-C is the command's to handle, the worker
    ends with the flow's process (kill -9 included) and ends without tearing its
    interpreter down (~0.4 s each at the pool's close)."""
    ignore_interrupts()
    exit_with_parent()
    exit_after_handlers()


def in_order(
    submit: Callable[[int], PrefectFuture], order: Sequence[int], workers: int | None
) -> Iterator[tuple[int, PrefectFuture]]:
    """Submit the jobs `order` lists, in that order, keeping one more submitted and
    unfinished than there are `workers` (None: all at once); yield (job, future) as each
    finishes. Within `STOP_POLL_S` of a stop request (Ctrl-C), yields the jobs already
    done, then raises `RunStopped`; the jobs not yet submitted are never submitted.

    Prefect's process pool passes submissions to its workers through a pool of threads,
    which may reorder them: given all twelve batches of the stochastic bench at once, it
    started the last E. coli batch last, and the run ended 2 s after the others. Submitting
    little more than it can run keeps the costliest-first order, and the one job waiting
    lets a worker that finishes start the next at once (a submission takes a round trip
    through the flow's thread). Jobs never submitted (the caller stopped iterating) never
    run."""
    pending = deque(order)
    running: dict[PrefectFuture, int] = {}
    finished: queue.SimpleQueue[PrefectFuture] = queue.SimpleQueue()

    def fill() -> None:
        while pending and (workers is None or len(running) <= workers):
            raise_if_stopped()
            job = pending.popleft()
            with interrupts_held():  # the pool's threads and workers it starts hold Ctrl-C
                future = submit(job)
            running[future] = job
            future.add_done_callback(finished.put)

    fill()
    while running:
        try:
            future = finished.get(timeout=0 if stop_requested() else STOP_POLL_S)
        except queue.Empty:  # on a stop, only after the jobs already done were yielded
            raise_if_stopped()
            continue
        job = running.pop(future)
        if not stop_requested():
            fill()
        yield job, future


def io_task_runner() -> TaskRunner:
    """Threads for tasks that wait on the network (XCP-ng provisioning, SSH)."""
    return ThreadPoolTaskRunner(max_workers=MAX_IO_THREADS)


def in_process_task_runner() -> TaskRunner:
    """One thread in the flow's process: for work smaller than a worker process's start."""
    return ThreadPoolTaskRunner(max_workers=1)


@contextmanager
def api_shared_with_workers() -> Iterator[None]:
    """Within this block, worker processes report to this run's Prefect API.

    Without a configured API URL a flow runs on Prefect's temporary (ephemeral) server; a
    spawned worker would start a temporary server of its own (seconds each) and its task
    runs would never reach the UI. The process pool takes the current settings at its first
    submission, so that submission must happen inside this block."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    with temporary_settings({PREFECT_API_URL: url}):
        yield


def check_dask_address(address: str | None) -> None:
    """Refuse a Dask address that cannot work, before any flow or server starts: not
    `tcp://HOST:PORT`, or a cluster on another host while the run's Prefect API would be
    a temporary server on this machine's loopback (the workers report to the flow's API)."""
    if address is None:
        return
    if not isinstance(address, str) or not DASK_ADDRESS.fullmatch(address):
        raise InputError(f"dask address must look like tcp://HOST:PORT, got {address!r}")
    from prefect.settings import get_current_settings

    host = address.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
    if not get_current_settings().api.url and host not in ("127.0.0.1", "localhost", "::1"):
        raise InputError(
            f"the Dask workers at {host} report to this run's Prefect API: set PREFECT_API_URL "
            "to a Prefect server that this machine and every worker reach by that URL")


def dask_task_runner(address: str) -> TaskRunner:
    """The simulation batches on the Dask cluster whose scheduler is at `address`
    (`tcp://host:8786`): checked first by `dask_cluster_threads`."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address,
                          client_kwargs={"timeout": f"{DASK_CONNECT_TIMEOUT_S}s"})


def dask_cluster_threads(address: str) -> int:
    """The worker threads of the Dask cluster at `address`, after checking that every
    worker uses this process's state store (the same `installation_id`, whatever address
    each reaches the database by): a worker with a store of its own would make VMs that
    the run's teardown and `bioxen gc` never see. One-line errors for a bad address, an
    unreachable scheduler, no workers, or a worker on another store."""
    check_dask_address(address)
    try:
        from distributed import Client
    except ImportError:
        raise InputError("running on Dask needs the dask extra: "
                         "pip install -e '.[dask]'") from None
    from bioxen_flows.state import StateStore

    ours = StateStore().installation_id()
    try:
        with Client(address, timeout=f"{DASK_CONNECT_TIMEOUT_S}s") as client:
            stores = client.run(_worker_store_id)
            threads = client.nthreads()
    except OSError as error:  # distributed raises OSError (TimeoutError) when unreachable
        raise InfrastructureError(f"the Dask scheduler at {address} is unreachable: "
                                  f"{error}") from None
    if not stores:
        raise InfrastructureError(f"the Dask cluster at {address} has no workers")
    strangers = sorted(worker for worker, store in stores.items() if store != ours)
    if strangers:
        raise InputError(
            f"Dask worker(s) {', '.join(strangers)} use another state store than this run: "
            "give every worker the same BIOXEN_DATABASE_URL (a PostgreSQL database) as here")
    return sum(threads.values())


def _worker_store_id() -> str:
    """(Runs on a Dask worker.) Its state store's installation id, or why it has none."""
    from bioxen_flows.state import StateStore

    try:
        return StateStore().installation_id()
    except Exception as error:  # reported to the flow as a mismatch, named
        return f"unusable: {type(error).__name__}"
