"""Prefect flows: the multi-organism comparison and one VM's lifecycle.

Teardown is guaranteed three ways: a `finally` in the flow body (failures), and
`on_crashed` / `on_cancellation` hooks (a killed or cancelled run). All three destroy
the VMs labelled with the flow run's id, so none is leaked even if the task that
created it never returned. A run whose process died with its worker (kill -9, a lost
machine) runs no hook: the server marks it Crashed when its heartbeats stop
(deployments/automations.yaml) and the `cleanup-crashed-run` deployment, triggered by that
state, runs `cleanup_crashed_run` to destroy its VMs.

Each comparison writes to a directory of its own under `out_dir`
(`<UTC date>-<flow run name>-<run tag>`) and points `<out_dir>/latest` at it, so
runs that share an `out_dir` never overwrite each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import pandas as pd
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_run
from prefect.states import Cancelled
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from bioxen_flows.errors import InputError
from bioxen_flows.logs import configure_logging
from bioxen_flows.model.builder import host_parameter
from bioxen_flows.orchestration import events, reporting
from bioxen_flows.orchestration.limits import vm_slots
from bioxen_flows.orchestration.naming import tag_flow_run
from bioxen_flows.orchestration.parameters import (
    Infrastructure,
    Mapping,
    OptionalInt,
    OptionalText,
    Organism,
    Organisms,
    Package,
    Percent,
    Pool,
    StochasticEngine,
    with_pool,
)
from bioxen_flows.orchestration.reaper import (
    end_unfinished_task_runs,
    run_tag,
    with_run_labels,
)
from bioxen_flows.orchestration.runners import (
    api_shared_with_workers,
    dask_cluster_threads,
    dask_task_runner,
    default_workers,
    in_order,
    in_process_task_runner,
    io_task_runner,
    simulation_task_runner,
)
from bioxen_flows.orchestration.stopping import RunStopped, terminate_pool_workers
from bioxen_flows.orchestration.tasks import (
    OWNER_LABEL,
    collect_biological_metrics,
    create_bio_vms,
    execute_biological_process,
    simulate_bio_vms,
    start_bio_vms,
    teardown_bio_vms,
    vm_spec,
    with_stochastic_engine,
    without_timeout,
)
from bioxen_flows.orchestration.xcpng_tasks import (
    boot_xcpng_vm,
    clone_xcpng_vm,
    provision_xcpng_disks,
    reap_xcpng_vms,
)
from bioxen_flows.organisms.profiles import get_profile, get_supported_biological_types
from bioxen_flows.vm import destroy_labelled_vms

DEFAULT_ORGANISMS = ("syn3a", "ecoli", "minimal_cell")
# A whole run's upper bound; the nightly comparison (12 VMs, 24 simulated hours) takes
# well under a minute, 100 replicates x 3 organisms x 168 hours about an hour.
COMPARE_TIMEOUT_S = 6 * 60 * 60
LIFECYCLE_TIMEOUT_S = 2 * 60 * 60
# Batches per worker: more gives finer progress and load balance, fewer less task overhead.
BATCHES_PER_WORKER = 4
MAX_SEED = 2**31 - 1  # a drawn base seed; replicate r uses base + r
# Deterministic work below this many VM x simulated hours runs in the flow's process: an
# ODE cell grows 24 h in ~10 ms, while starting a worker process (imports, model compile)
# takes seconds (bench/flows.py measures both sides).
INLINE_MAX_VM_HOURS = 1_000

ProgressListener = Callable[[int, int], None]
_progress_listeners: list[ProgressListener] = []


@contextmanager
def watch_progress(listener: ProgressListener) -> Iterator[None]:
    """Call `listener(vms_done, vms_total)` as the comparisons run in this process finish
    batches (the CLI's progress bar; the UI has the progress artifact)."""
    _progress_listeners.append(listener)
    try:
        yield
    finally:
        _progress_listeners.remove(listener)


def _compare_run_name() -> str:
    """`syn3a-ecoli-x3-24h`: organisms, replicates and simulated hours, readable in the UI."""
    params = current_run.parameters or {}
    organisms = params.get("organisms") or DEFAULT_ORGANISMS
    return (f"{'-'.join(map(str, organisms))}-x{params.get('replicates', 1)}"
            f"-{float(params.get('hours', 2.0)):g}h")


def _lifecycle_run_name() -> str:
    params = current_run.parameters or {}
    return f"lifecycle-{params.get('organism', 'syn3a')}-{params.get('vm_type', 'basic')}"


def _teardown_hook(flow, flow_run, state) -> None:  # noqa: ANN001 (Prefect hook signature)
    """State hook: destroy the run's VMs when the run crashed or was cancelled.

    Prefect calls hooks by keyword (flow=, flow_run=, state=) when a worker runs them.
    """
    owner = str(flow_run.id)
    destroy_labelled_vms(OWNER_LABEL, owner)
    params = flow_run.parameters or {}
    cfg = (with_pool(params.get("config"), params.get("xcpng_pool")) or {}).get("xcpng_config")
    if cfg:
        from bioxen_flows.xcpng.backend import reap_vms

        reap_vms(cfg, keep=lambda tags: tags.get("owner") != owner)


def _settle(futures: list[PrefectFuture]) -> None:
    """Cancel the batches that have not started, then wait for the running ones, so that
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
            logging.getLogger(__name__).debug("a batch ended abruptly", exc_info=True)


def _owner() -> str:
    return str(current_run.get_id() or "local")


@flow(
    name="compare-organisms",
    flow_run_name=_compare_run_name,
    timeout_seconds=COMPARE_TIMEOUT_S,
    task_runner=simulation_task_runner(),
    on_crashed=[_teardown_hook],
    on_cancellation=[_teardown_hook],
    log_prints=True,
)
def compare_organisms(
    organisms: Organisms = None,
    replicates: int = 1,
    hours: float = 2.0,
    package: Package = None,
    atp_percent: Percent = None,
    ribosomes: OptionalInt = None,
    seed: OptionalInt = None,
    deterministic: bool = False,
    out_dir: str = "bioxen_results",
    vm_type: Infrastructure = "basic",
    batch_size: OptionalInt = None,
    csv: bool = False,
    config: Mapping = None,
    stochastic_engine: StochasticEngine = "compiled",
    division: bool = True,
    xcpng_pool: Pool = None,
    alert_low_atp_percent: Percent = None,
    alert_ribosomes_percent: Percent = None,
    alert_burden_percent: Percent = None,
    dask_address: OptionalText = None,
) -> dict[str, Any]:
    """Grow `replicates` cells of each organism for `hours` and compare them.

    Results go to a new directory `<out_dir>/<UTC date>-<flow run name>-<run tag>`
    (tidy time series and summary as Parquet, the summary also as CSV, growth.png),
    `<out_dir>/latest` points at it, and the run publishes the compare-organisms-summary
    (table), compare-organisms-report (markdown with the plot) and
    compare-organisms-progress artifacts. The simulation batches run in worker processes
    (one per core; `compare_organisms.with_options(task_runner=simulation_task_runner(n))`
    for n).

    Args:
        organisms: Organisms to compare, among syn3a, ecoli and minimal_cell (default: all
            three).
        replicates: Cells per organism (1-100). More than one are stochastic (Gillespie)
            with distinct seeds, so the summary's sd and 95 % interval show cell-to-cell
            variation; see `deterministic`.
        hours: Simulated hours each cell grows (> 0, at most 168).
        package: Guest package installed in every cell (e.g. gfp_reporter). Each organism
            then also gets a control cell without it, and the summary reports the
            package's burden_percent (growth lost relative to the control).
        atp_percent: Energy supply cap, % of the organism's maximum (default: uncapped).
        ribosomes: Ribosome cap per cell, molecules (default: uncapped).
        seed: Base seed of the stochastic mode: replicate r uses seed + r, the control
            seed. Default: drawn at random for stochastic runs and recorded in the results
            (the `seed` column). Giving a seed makes even one replicate stochastic.
        deterministic: Deterministic (ODE) cells: replicates are then identical copies, so
            ask for one (the CLI's --deterministic does).
        out_dir: Folder for the results; each run writes a subdirectory of its own.
            Relative paths are relative to the working directory (for deployments, the
            checkout).
        vm_type: Infrastructure: basic (in-process engine) or xcpng (a VM on an XCP-ng
            pool).
        batch_size: VMs per batch task (1-100; default: about four batches of equal work
            per worker, a stochastic E. coli cell counting as several Syn3A cells).
        csv: Also write the time series as CSV (slow for long runs; Parquet is always
            written).
        config: Merged into every VM's config, e.g. {"xcpng_config": {...}} for xcpng.
        stochastic_engine: Engine of stochastic cells: compiled (the exact direct method
            compiled from the model, ~35x faster) or roadrunner (libroadrunner's Gillespie,
            the reference; needs division false).
        division: Stochastic cells grow and divide (binomial partitioning); false keeps
            a cell of fixed size where growth only dilutes.
        xcpng_pool: The XCP-ng pool for vm_type xcpng, its credentials by block name
            (instead of config={"xcpng_config": {...}}, which still works).
        alert_low_atp_percent: A VM whose atp_percent ends below this emits
            bioxen.vm.alert.low-atp (default: the alert_low_atp_percent setting, 20).
        alert_ribosomes_percent: A VM holding more than this % of its ribosome cap emits
            bioxen.vm.alert.ribosomes-near-cap (default: the setting, 90).
        alert_burden_percent: A package costing an organism more than this % of its
            growth emits bioxen.run.burden-exceeded (default: the setting, 20).
        dask_address: Run the batches on the Dask cluster whose scheduler is here
            (tcp://HOST:8786) instead of this machine's worker processes. Its workers must
            use this run's state store (the same PostgreSQL BIOXEN_DATABASE_URL) and reach
            its Prefect API; results come back through Dask.

    Returns:
        The summary rows, the run directory (out_dir), the file paths, the VM count and
        the seeds used (None when deterministic).
    """
    began = time.perf_counter()
    configure_logging()
    organisms = list(organisms or DEFAULT_ORGANISMS)
    check_compare_parameters(organisms, replicates, hours, batch_size or 1)
    if deterministic and seed is not None:
        raise ValueError("give either seed (stochastic) or deterministic, not both")
    log = get_run_logger()
    owner = _owner()
    config = with_run_labels(with_pool(config, xcpng_pool), owner)  # for `bioxen gc`
    thresholds = events.alert_thresholds(alert_low_atp_percent, alert_ribosomes_percent,
                                         alert_burden_percent)
    stochastic = not deterministic and (seed is not None or replicates > 1)
    if stochastic and seed is None:
        seed = secrets.randbelow(MAX_SEED)
    if stochastic:
        config = with_stochastic_engine(config, stochastic_engine, division)
    specs = comparison_specs(organisms, replicates, owner, vm_type=vm_type, package=package,
                             atp_percent=atp_percent, ribosomes=ribosomes,
                             seed=seed if stochastic else None, config=config)
    if dask_address and vm_type == "xcpng":
        raise InputError("dask_address runs basic VMs; XCP-ng VMs are driven from the flow")
    cluster = dask_cluster_threads(dask_address) if dask_address else None
    workers = cluster or getattr(task_runner_of_this_run(), "_max_workers", None) \
        or default_workers()
    inline = not cluster and _runs_inline(vm_type, specs, hours)
    # where the batches run: a Dask cluster when given, threads for XCP-ng (network
    # waits), the flow's thread for small deterministic work, else the flow's task runner
    # (None: worker processes)
    runner = (dask_task_runner(dask_address) if dask_address
              else io_task_runner() if vm_type == "xcpng"
              else in_process_task_runner() if inline else None)
    if batch_size:
        sizes: dict[str, int] | None = {s["organism"]: batch_size for s in specs}
    else:  # one thread has no batches to balance: a batch per role
        sizes = None if inline else auto_batch_sizes(specs, workers, stochastic)
    batches = label_batches(batch_specs(specs, sizes))
    by_id = {s["vm_id"]: s for s in specs}
    tag_flow_run([*organisms, vm_type])
    log.info("comparing %s: %d VMs (%s) in %d batches of up to %d", ", ".join(organisms),
             len(specs), f"stochastic, seeds from {seed}" if stochastic else "deterministic",
             len(batches), max(map(len, (b for b, _ in batches))))
    submitted: list[PrefectFuture] = []
    reporting.preload_plotting()
    with vm_slots(len(specs)):  # one slot per VM while they live (a full pool: wait)
        try:
            progress = reporting.ProgressArtifact("compare-organisms", len(specs))
            first_batch = time.perf_counter()
            done = run_batches(batches, owner, lambda b: batch_program(b, hours), runner,
                               submitted, on_done=lambda n: _report(progress, n),
                               on_metrics=lambda m: events.alert_on(m, by_id, owner, thresholds),
                               workers=cluster)
            last_batch = time.perf_counter()
            if done.stopped:  # Ctrl-C: running batches are dropped, not waited for
                terminate_pool_workers(task_runner_of_this_run() if runner is None else None)
            finished = [s for s in specs if s["vm_id"] in done.metrics]
            run_dir = reporting.run_directory(
                Path(out_dir), current_run.get_name() or "compare-organisms", owner
            )
            paths: dict[str, Path] = {}
            if finished:
                series = reporting.tidy_timeseries(done.frames)
                summary = reporting.summary_frame(finished, done.metrics)
                events.burden_alerts(summary, package, owner, thresholds["burden"])
                png = reporting.plot_png(series)
                paths = reporting.write_results(series, summary, png, run_dir, csv=csv)
            paths["run_json"] = reporting.write_run_record(
                run_dir, complete=not done.stopped, vms_done=len(finished), vms=len(specs))
            if done.stopped:
                latest = None  # `latest` keeps pointing at the last complete run
            else:
                latest = reporting.point_latest(Path(out_dir), run_dir)
                reporting.publish_artifacts(summary, png, key="compare-organisms")
        finally:
            _settle(submitted)  # a batch still creating VMs must not outlive the teardown
            _teardown(owner, vm_type, config)
    if done.stopped:
        end_unfinished_task_runs(owner, "Cancelled", "the flow run was stopped")
        kept = (f"partial results ({len(finished)} of {len(specs)} VMs) in {run_dir}"
                if finished else "no VM had finished, nothing kept")
        log.info("stopped by the user: %s; every VM destroyed", kept)
        return Cancelled(message=f"{kept}; every VM destroyed")
    log.info("results in %s (%s now points there); %.2f s before the first batch, "
             "%.2f s of batches, %.2f s of results and teardown", run_dir, latest,
             first_batch - began, last_batch - first_batch, time.perf_counter() - last_batch)
    return {
        "summary": summary.astype(object).where(summary.notna(), None).to_dict("records"),
        "out_dir": str(run_dir),
        "latest": str(latest),
        "paths": {k: str(v) for k, v in paths.items()},
        "vms": len(specs),
        "seeds": {s["vm_id"]: s["config"]["simulation"].get("seed") for s in specs},
    }


def comparison_specs(
    organisms: list[str], replicates: int, owner: str, *, vm_type: str = "basic",
    package: str | None = None, atp_percent: float | None = None,
    ribosomes: int | None = None, seed: int | None = None,
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The VMs of a comparison: `replicates` cells per organism (stochastic with seed + r
    when `seed` is given) and, with a package, control cells without it (`control_count`;
    control r has seed + r)."""
    tag = run_tag(owner)
    specs = []
    for organism in organisms:
        for rep in range(replicates):
            specs.append(vm_spec(
                f"cmp-{tag}-{organism}-{rep}", organism, vm_type=vm_type, replicate=rep,
                package=package, atp_percent=atp_percent, ribosomes=ribosomes,
                seed=None if seed is None else seed + rep, config=config,
            ))
        controls = control_count(replicates, stochastic=seed is not None) if package else 0
        for rep in range(controls):
            suffix = "" if controls == 1 else f"-{rep}"
            specs.append(vm_spec(
                f"cmp-{tag}-{organism}-control{suffix}", organism, vm_type=vm_type,
                role="control", replicate=rep, atp_percent=atp_percent, ribosomes=ribosomes,
                seed=None if seed is None else seed + rep, config=config,
            ))
    return specs


def control_count(replicates: int, stochastic: bool) -> int:
    """Control cells per organism: as many as cells when they are stochastic (the burden
    then has a 95 % interval; one stochastic control would be one noisy draw), one when
    deterministic (copies would be identical)."""
    return replicates if stochastic else 1


@dataclass
class BatchResults:
    """What the batches of a run returned: tidy frames in batch order, metrics by VM id,
    and whether the run was stopped (Ctrl-C) before every batch finished."""

    frames: list[pd.DataFrame]
    metrics: dict[str, dict[str, Any]]
    stopped: bool = False


def run_batches(
    batches: list[tuple[list[dict[str, Any]], str]],
    owner: str,
    code_for: Callable[[list[dict[str, Any]]], str],
    runner: TaskRunner | None,
    submitted: list[PrefectFuture],
    on_done: Callable[[int], None] | None = None,
    on_metrics: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    workers: int | None = None,
) -> BatchResults:
    """Run every batch through `simulate_bio_vms` (the program `code_for(batch)`) and
    gather their tidy rows (in batch order) and metrics. The costliest batches start first,
    so that no worker is left with a long one while the others are idle. A stop request
    (Ctrl-C) ends the wait at once: what finished is returned, marked `stopped`.

    `runner` None: the flow's task runner (worker processes by default); else that runner
    (e.g. threads for XCP-ng, whose steps wait on the network). Each future is appended to
    `submitted` as soon as it exists, so the caller can settle them whatever happens.
    `on_done(n)` is called with the number of VMs finished so far as each batch completes,
    `on_metrics(metrics)` with that batch's metrics by VM id.
    `workers`: how many batches run at once on `runner` (default: its process count).
    """
    io_runner = runner.__enter__() if runner is not None else None
    sharing = api_shared_with_workers() if runner is None else nullcontext()
    in_processes = runner is None and isinstance(task_runner_of_this_run(), ProcessPoolTaskRunner)
    simulate = simulate_bio_vms if in_processes else without_timeout(simulate_bio_vms)
    workers = workers or getattr(runner or task_runner_of_this_run(), "_max_workers", None)

    def submit(index: int) -> PrefectFuture:
        batch, label = batches[index]
        params = {"specs": batch, "owner": owner, "code": code_for(batch), "label": label}
        future = (io_runner.submit(simulate, params) if io_runner is not None
                  else simulate.submit(**params))
        submitted.append(future)
        return future

    order = largest_first([batch for batch, _ in batches])
    if in_processes:
        _compile_ahead([s for i in order for s in batches[i][0]])
    frames: dict[int, pd.DataFrame] = {}
    metrics: dict[str, dict[str, Any]] = {}
    stopped = False
    try:
        done = 0
        with sharing:
            for index, future in in_order(submit, order, workers):
                frame, batch_metrics = future.result()
                frames[index] = frame
                metrics.update(batch_metrics)
                if on_metrics is not None:
                    on_metrics(batch_metrics)
                done += len(batches[index][0])
                if on_done is not None:
                    on_done(done)
    except RunStopped:
        stopped = True
    finally:
        if io_runner is not None:
            if stopped:  # threads cannot be killed: drop what has not started
                _settle(submitted)
            io_runner.__exit__(None, None, None)
    return BatchResults([frames[i] for i in sorted(frames)], metrics, stopped)


def _compile_ahead(specs: list[dict[str, Any]]) -> None:
    """While the worker processes start (~2 s of imports), compile the models their cells
    load first into the compiled-model cache, on a thread of the flow's process, in the
    order the workers will need them: they then load each in ~7 ms instead of compiling it
    (0.3-0.6 s, the other worker waiting on the first). Skipped when the cache is off."""
    from bioxen_flows.engine.cell import cache_models
    from bioxen_flows.model.compiled_cache import cache_dir

    if cache_dir() is None:
        return
    kinds = dict.fromkeys((s["organism"], _is_stochastic(s)) for s in specs)

    def compile_quietly() -> None:
        try:
            cache_models(kinds)
        except Exception:  # a worker compiling the same model reports the failure
            logging.getLogger(__name__).debug("compiling ahead failed", exc_info=True)

    threading.Thread(target=compile_quietly, name="bioxen-compile-ahead", daemon=True).start()


def _is_stochastic(spec: dict[str, Any]) -> bool:
    return bool((spec["config"].get("simulation") or {}).get("stochastic"))


def simulation_work(organism: str) -> float:
    """Relative cost of simulating a cell of `organism`, for ordering batches: a Gillespie
    run's events scale with the amino acids the cell polymerizes per minute, mass x growth
    rate (~8x more in E. coli than in Syn3A; bench/engine.py measures ~5x the CPU time)."""
    profile = get_profile(organism)
    return profile.parameters.get("M", host_parameter("M")) / profile.doubling_time_target_min


def largest_first(batches: list[list[dict[str, Any]]]) -> list[int]:
    """The batches' indexes, costliest first (ties keep their order)."""
    return sorted(range(len(batches)),
                  key=lambda i: -sum(simulation_work(s["organism"]) for s in batches[i]))


def _runs_inline(vm_type: str, specs: list[dict[str, Any]], hours: float) -> bool:
    """Whether this comparison's batches run on the flow's thread: deterministic basic work
    too small to repay starting worker processes (when the flow has them)."""
    small = not any(map(_is_stochastic, specs)) and len(specs) * hours < INLINE_MAX_VM_HOURS
    return (vm_type != "xcpng" and small
            and isinstance(task_runner_of_this_run(), ProcessPoolTaskRunner))


def task_runner_of_this_run() -> Any:
    """The task runner the running flow was given (None outside a flow run)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.task_runner if context is not None else None


def auto_batch_sizes(
    specs: list[dict[str, Any]], workers: int, stochastic: bool = False
) -> dict[str, int]:
    """VMs per batch for each organism: batches of about equal work, about
    `BATCHES_PER_WORKER` per worker, 1 to 100 VMs each. A stochastic cell's work is its
    organism's `simulation_work` (an E. coli cell costs several Syn3A cells), an ODE cell's
    the same in every organism. Equal batches let the workers finish together with few task
    runs: each costs ~60 ms of a worker and of the server, a stochastic cell seconds."""
    weight = {o: simulation_work(o) if stochastic else 1.0 for o in {s["organism"] for s in specs}}
    target = sum(weight[s["organism"]] for s in specs) / (workers * BATCHES_PER_WORKER)
    return {o: max(1, min(100, int(target // w))) for o, w in weight.items()}


def _report(progress: reporting.ProgressArtifact, done: int) -> None:
    progress.update(done)
    report_progress(done, progress.total)


def report_progress(done: int, total: int) -> None:
    """Tell the listeners of this process (`watch_progress`) that `done` of `total` units
    (VMs of a comparison, points of a sweep) are finished."""
    for listener in list(_progress_listeners):
        listener(done, total)


@flow(
    name="vm-lifecycle",
    flow_run_name=_lifecycle_run_name,
    timeout_seconds=LIFECYCLE_TIMEOUT_S,
    on_crashed=[_teardown_hook],
    on_cancellation=[_teardown_hook],
)
def vm_lifecycle(
    organism: Organism = "syn3a",
    program: str = "grow(minutes=60)",
    vm_type: Infrastructure = "basic",
    vm_id: OptionalText = None,
    config: Mapping = None,
    xcpng_pool: Pool = None,
    alert_low_atp_percent: Percent = None,
    alert_ribosomes_percent: Percent = None,
) -> dict[str, Any]:
    """One VM through create -> start -> process program -> metrics -> teardown.

    Args:
        organism: syn3a, ecoli or minimal_cell.
        program: Process program, one call per line, e.g. grow(minutes=60) or
            install("gfp_reporter").
        vm_type: Infrastructure: basic (in-process engine) or xcpng.
        vm_id: The VM's id (default: derived from the flow run id).
        config: The VM's config, e.g. {"xcpng_config": {...}} for xcpng.
        xcpng_pool: The XCP-ng pool for vm_type xcpng, its credentials by block name
            (instead of config={"xcpng_config": {...}}, which still works).
        alert_low_atp_percent: The VM emits bioxen.vm.alert.low-atp when its atp_percent
            ends below this (default: the alert_low_atp_percent setting).
        alert_ribosomes_percent: The VM emits bioxen.vm.alert.ribosomes-near-cap when it
            holds more than this % of its ribosome cap (default: the setting).
    """
    configure_logging()
    owner = _owner()
    config = with_run_labels(with_pool(config, xcpng_pool), owner)
    thresholds = events.alert_thresholds(alert_low_atp_percent, alert_ribosomes_percent, None)
    vm_id = vm_id or f"life-{run_tag(owner)}-{organism}"
    spec = vm_spec(vm_id, organism, vm_type=vm_type, config=config)
    with vm_slots(1):
        try:
            tag_flow_run([organism, vm_type])
            if vm_type == "xcpng":  # each provisioning step is its own, retryable task
                cfg = _xcpng_config(config)
                vm = provision_xcpng_disks(cfg, clone_xcpng_vm(cfg, vm_id, owner))
                spec["config"]["placement"] = boot_xcpng_vm(cfg, vm)
            created = create_bio_vms([spec], owner)
            started = start_bio_vms(created)
            result = execute_biological_process(started, program)[vm_id]
            metrics = collect_biological_metrics(started)[vm_id]
            events.alert_on({vm_id: metrics}, {vm_id: spec}, owner, thresholds)
        finally:
            _teardown(owner, vm_type, config)
    return {"vm_id": vm_id, "metrics": metrics, "timeseries": result["timeseries"]}


def _cleanup_run_name() -> str:
    """`cleanup-<run tag>`: the crashed run's short tag, as its VMs and results are named
    (not `cleanup-prefect.flow-run.<uuid>`)."""
    target = str((current_run.parameters or {}).get("flow_run", ""))
    return f"cleanup-{run_tag(target.rsplit('.', 1)[-1])}"


@flow(name="cleanup-crashed-run", flow_run_name=_cleanup_run_name,
      timeout_seconds=30 * 60)
def cleanup_crashed_run(flow_run: str) -> list[str]:
    """Destroy the VMs of a flow run that died without running its hooks.

    Triggered by the `cleanup-crashed-run` deployment when a bioxen run becomes Crashed
    (prefect.yaml); idempotent, so a run whose own hook already cleaned up costs nothing.

    Args:
        flow_run: The crashed flow run's id, or its event resource id
            (prefect.flow-run.<id>).
    """
    from prefect.client.orchestration import get_client

    run_id = flow_run.rsplit(".", 1)[-1]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    known = set(get_supported_biological_types())
    tag_flow_run(["cleanup", *(t for t in run.tags if t in known)])  # the crashed run's organisms
    if run.state is not None and not run.state.is_final():
        raise RuntimeError(f"flow run {run_id} is {run.state.name}, not finished: keeping its VMs")
    destroyed = destroy_labelled_vms(OWNER_LABEL, str(run.id))
    _teardown_hook(None, run, run.state)  # XCP-ng clones it never registered, if any
    # its task runs died with its process: without this the UI shows them running forever
    cancelled = run.state is not None and run.state.is_cancelled()
    end_unfinished_task_runs(str(run.id), "Cancelled" if cancelled else "Crashed",
                             f"its flow run ended {run.state.name if run.state else 'unknown'}")
    get_run_logger().info("destroyed %d VM(s) of flow run %s: %s",
                          len(destroyed), run.id, ", ".join(destroyed))
    return destroyed


def _reap_xcpng_run_name() -> str:
    """`reap-xcpng-<pool block or host>`: which pool it cleaned."""
    cfg = (current_run.parameters or {}).get("xcpng_config") or {}
    pool = cfg.get("credentials_block") or urlparse(str(cfg.get("url") or "")).hostname
    return f"reap-xcpng-{pool or 'pool'}"


@flow(name="reap-xcpng-vms", flow_run_name=_reap_xcpng_run_name)
def reap_leaked_xcpng_vms(xcpng_config: dict[str, Any]) -> list[str]:
    """Destroy XCP-ng VMs tagged by BioXen whose owner (a VM record or a flow run) is gone."""
    tag_flow_run(["xcpng", "reap"])
    return reap_xcpng_vms(xcpng_config)


def _teardown(owner: str, vm_type: str, config: dict[str, Any] | None) -> None:
    """Destroy the run's bio-VMs, and on XCP-ng any VM it cloned but never registered."""
    try:
        teardown_bio_vms(owner)
    finally:
        if vm_type == "xcpng":
            reap_xcpng_vms(_xcpng_config(config), owner)


def _xcpng_config(config: dict[str, Any] | None) -> dict[str, Any]:
    cfg = (config or {}).get("xcpng_config")
    if not cfg:
        raise ValueError("vm_type 'xcpng' needs config={'xcpng_config': {...}}")
    return cfg


def batch_program(batch: list[dict[str, Any]], hours: float) -> str:
    """The process program of a batch (one package per batch; json.dumps escapes the
    package name as a literal): install it, then grow for `hours`."""
    package = batch[0]["package"]
    lines = [f"install({json.dumps(package)})"] if package else []
    return "\n".join([*lines, f"grow(minutes={hours * 60!r})"])


def label_batches(
    batches: list[list[dict[str, Any]]],
) -> list[tuple[list[dict[str, Any]], str]]:
    """Each batch with a label for its task runs: organism(s), role, batch number
    (`syn3a-batch1`, `ecoli-control-batch1`, `ecoli-syn3a-batch1`)."""
    counts: dict[tuple, int] = {}
    out = []
    for batch in batches:
        organisms = "-".join(sorted({s["organism"] for s in batch}))
        key = (organisms, batch[0]["role"])
        counts[key] = counts.get(key, 0) + 1
        role = "" if key[1] == "cell" else f"-{key[1]}"
        out.append((batch, f"{organisms}{role}-batch{counts[key]}"))
    return out


def batch_specs(
    specs: list[dict[str, Any]], sizes: dict[str, int] | None
) -> list[list[dict[str, Any]]]:
    """Batches of one role and package each, so one program fits the batch. With `sizes`,
    also of one organism (a worker reuses the organism's compiled model), `sizes[organism]`
    VMs each; without, one batch per role (six task runs however many organisms)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for spec in specs:
        key = (spec["organism"] if sizes else "", spec["role"])
        groups.setdefault(key, []).append(spec)
    batches = []
    for group in groups.values():
        it = iter(group)
        size = sizes[group[0]["organism"]] if sizes else len(group)
        while chunk := list(islice(it, size)):
            batches.append(chunk)
    return batches


def check_compare_parameters(
    organisms: list[str], replicates: int, hours: float, batch: int = 1
) -> None:
    """Refuse bad parameters before any VM (or a Prefect server) is started."""
    known = get_supported_biological_types()
    unknown = [o for o in organisms if o not in known]
    if not organisms or unknown:
        raise ValueError(f"organisms must be among {', '.join(known)}; got {organisms}")
    if not 1 <= replicates <= 100:
        raise ValueError(f"replicates must be between 1 and 100, got {replicates}")
    if not 0 < hours <= 168:
        raise ValueError(f"hours must be > 0 and <= 168, got {hours}")
    if not 1 <= batch <= 100:
        raise ValueError(f"batch_size must be between 1 and 100, got {batch}")
