"""Running a flow's batch tasks, and tearing down what they made whatever happens.

`batch_pool` enters the task runner the batches go to (an `ExitStack`: the runner, and the
Prefect API shared with worker processes) and keeps every future it submits, so that a stop
request or a failure settles them before the runner closes: no batch creates a VM after
the teardown. `teardown_hook` (a flow's `on_crashed`/`on_cancellation`) and `teardown_run`
(its `finally`) destroy the VMs labelled with the run's id.

Progress reaches the CLI's bar through `watch_progress`, a context manager scoped to the
caller's context (a `ContextVar`), not a list shared by the whole process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from bioxen_flows.errors import InputError
from bioxen_flows.orchestration.batching import Batch, VMSpec, largest_first
from bioxen_flows.orchestration.parameters import with_pool
from bioxen_flows.orchestration.run_context import FLOW_RUN_LABEL
from bioxen_flows.orchestration.runners import api_shared_with_workers, in_order
from bioxen_flows.orchestration.stopping import RunStopped, terminate_pool_workers
from bioxen_flows.orchestration.tasks import (
    simulate_bio_vms,
    teardown_bio_vms,
    without_timeout,
)
from bioxen_flows.orchestration.xcpng_tasks import reap_xcpng_vms
from bioxen_flows.vm import destroy_labelled_vms, infrastructure

log = logging.getLogger(__name__)

ProgressListener = Callable[[int, int], None]
_listeners: ContextVar[tuple[ProgressListener, ...]] = ContextVar("bioxen_progress",
                                                                   default=())


@contextmanager
def watch_progress(listener: ProgressListener) -> Iterator[None]:
    """Call `listener(done, total)` as the runs started in this block finish units (VMs of
    a comparison, points of a sweep): the CLI's progress bar (the UI has the artifact)."""
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


def report_progress(done: int, total: int) -> None:
    """Tell the listeners watching this run (`watch_progress`) that `done` of `total`
    units are finished."""
    for listener in _listeners.get():
        listener(done, total)


def task_runner_of_this_run() -> TaskRunner | None:
    """The task runner the running flow was given (None outside a flow run)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.task_runner if context is not None else None


def settle(futures: Sequence[PrefectFuture]) -> None:
    """Cancel the tasks that have not started, then wait for the running ones, so that
    no task creates a VM after teardown and a cancelled run stops within seconds."""
    for future in futures:
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is not None and not wrapped.done():
            wrapped.cancel()  # a no-op for a task that is running (Dask: dropped)
    for future in futures:
        try:
            future.wait()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            continue
        except Exception:  # a worker stopped under it (Ctrl-C): its VMs go in the teardown
            log.debug("a batch ended abruptly", exc_info=True)


class BatchPool:
    """The tasks a run submitted to one task runner (`runner` None: the flow's own)."""

    def __init__(self, runner: TaskRunner | None) -> None:
        self.runner = runner
        self._futures: list[PrefectFuture] = []

    def submit(self, task: Task, params: dict[str, Any]) -> PrefectFuture:
        future = (self.runner.submit(task, params) if self.runner is not None
                  else task.submit(**params))
        self._futures.append(future)
        return future

    def finished(
        self, submit: Callable[[int], PrefectFuture], order: Sequence[int], workers: int | None
    ) -> Iterator[tuple[int, PrefectFuture]]:
        """`runners.in_order` on this pool. On a stop request (Ctrl-C) the running tasks
        are dropped, not waited for: process workers are ended, the rest settled; then
        `RunStopped` is raised."""
        try:
            yield from in_order(submit, order, workers)
        except RunStopped:
            terminate_pool_workers(self.runner if self.runner is not None
                                   else task_runner_of_this_run())
            self.settle()
            raise

    def settle(self) -> None:
        settle(self._futures)


@contextmanager
def batch_pool(runner: TaskRunner | None, *, share_api: bool) -> Iterator[BatchPool]:
    """A `BatchPool` on `runner` (entered here; None: the flow's task runner), the Prefect
    API shared with worker processes when `share_api`. A failure settles what was
    submitted before the runner closes."""
    with ExitStack() as stack:
        if share_api:
            stack.enter_context(api_shared_with_workers())
        pool = BatchPool(stack.enter_context(runner) if runner is not None else None)
        try:
            yield pool
        except BaseException:
            pool.settle()
            raise


@dataclass(frozen=True)
class BatchRunner:
    """Where a run's batches go (`runner` None: the flow's task runner) and how many run at
    once (`workers` None: all submitted at once)."""

    runner: TaskRunner | None
    workers: int | None


@dataclass
class BatchResults:
    """What the batches of a run returned: tidy frames in batch order, metrics by VM id,
    and whether the run was stopped (Ctrl-C) before every batch finished."""

    frames: list[pd.DataFrame]
    metrics: dict[str, dict[str, Any]]
    stopped: bool = False


def run_batches(
    batches: list[Batch],
    owner: str,
    code_for: Callable[[list[VMSpec]], str],
    where: BatchRunner,
    on_done: Callable[[int], None] | None = None,
    on_metrics: Callable[[dict[str, dict[str, Any]]], None] | None = None,
) -> BatchResults:
    """Run every batch through `simulate_bio_vms` (the program `code_for(batch)`) and
    gather their tidy rows (in batch order) and metrics. The costliest batches start first,
    so that no worker is left with a long one while the others are idle. A stop request
    (Ctrl-C) ends the wait at once: what finished is returned, marked `stopped`; a failure
    settles the batches still running before it propagates.

    `on_done(n)` is called with the number of VMs finished so far as each batch completes,
    `on_metrics(metrics)` with that batch's metrics by VM id.
    """
    in_processes = where.runner is None and isinstance(task_runner_of_this_run(),
                                                       ProcessPoolTaskRunner)
    simulate = simulate_bio_vms if in_processes else without_timeout(simulate_bio_vms)
    order = largest_first([[s.organism for s in batch.specs] for batch in batches])
    if in_processes:
        _compile_ahead([s for i in order for s in batches[i].specs])
    frames: dict[int, pd.DataFrame] = {}
    metrics: dict[str, dict[str, Any]] = {}
    stopped = False
    done = 0
    with batch_pool(where.runner, share_api=where.runner is None) as pool:
        def submit(index: int) -> PrefectFuture:
            batch = batches[index]
            return pool.submit(simulate, {"specs": batch.specs, "owner": owner,
                                          "code": code_for(batch.specs),
                                          "label": batch.label})

        try:
            for index, future in pool.finished(submit, order, where.workers):
                frame, batch_metrics = future.result()
                frames[index] = frame
                metrics.update(batch_metrics)
                if on_metrics is not None:
                    on_metrics(batch_metrics)
                done += len(batches[index].specs)
                if on_done is not None:
                    on_done(done)
        except RunStopped:
            stopped = True
    return BatchResults([frames[i] for i in sorted(frames)], metrics, stopped)


def _compile_ahead(specs: list[VMSpec]) -> None:
    """While the worker processes start (~2 s of imports), compile the models their cells
    load first into the compiled-model cache, on a thread of the flow's process, in the
    order the workers will need them: they then load each in ~7 ms instead of compiling it
    (0.3-0.6 s, the other worker waiting on the first). Skipped when the cache is off."""
    from bioxen_flows.engine.cell import cache_models
    from bioxen_flows.model.compiled_cache import cache_dir

    if cache_dir() is None:
        return
    kinds = dict.fromkeys((s.organism, s.stochastic) for s in specs)

    def compile_quietly() -> None:
        try:
            cache_models(kinds)
        except Exception:  # a worker compiling the same model reports the failure
            log.debug("compiling ahead failed", exc_info=True)

    threading.Thread(target=compile_quietly, name="bioxen-compile-ahead", daemon=True).start()


def teardown_hook(flow, flow_run, state) -> None:  # noqa: ANN001 (Prefect hook signature)
    """State hook: destroy the run's VMs when the run crashed or was cancelled (and its
    XCP-ng clones, when its parameters name a pool).

    Prefect calls hooks by keyword (flow=, flow_run=, state=) when a worker runs them.
    """
    run_id = str(flow_run.id)
    destroy_labelled_vms(FLOW_RUN_LABEL, run_id)
    params = flow_run.parameters or {}
    cfg = (with_pool(params.get("config"), params.get("xcpng_pool")) or {}).get("xcpng_config")
    if cfg:
        from bioxen_flows.xcpng.backend import reap_vms

        reap_vms(cfg, keep=lambda tags: tags.get("owner") != run_id)


def teardown_run(owner: str, vm_type: str, config: dict[str, Any] | None) -> None:
    """Destroy the run's bio-VMs, and on XCP-ng any VM it cloned but never registered."""
    try:
        teardown_bio_vms(owner)
    finally:
        if infrastructure(vm_type).provisioned:
            reap_xcpng_vms(xcpng_config(config), owner)


def xcpng_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The pool config a run's VM config names (refused when it names none)."""
    cfg = (config or {}).get("xcpng_config")
    if not cfg:
        raise InputError("vm_type 'xcpng' needs config={'xcpng_config': {...}}")
    return cfg
