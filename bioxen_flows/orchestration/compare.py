"""The `compare-organisms` flow: grow replicate cells of several organisms and compare them.

Teardown is guaranteed three ways: a `finally` in the flow body (failures), and
`on_crashed` / `on_cancellation` hooks (a killed or cancelled run). All three destroy
the VMs labelled with the flow run's id, so none is leaked even if the task that
created it never returned. A run whose process died with its worker (kill -9, a lost
machine) runs no hook: the server marks it Crashed when its heartbeats stop
(deployments/automations.yaml) and the `cleanup-crashed-run` deployment, triggered by that
state, runs `flows.cleanup_crashed_run` to destroy its VMs.

Each comparison writes to a directory of its own under `out_dir`
(`<UTC date>-<flow run name>-<run tag>`) and points `<out_dir>/latest` at it, so
runs that share an `out_dir` never overwrite each other.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Cancelled
from prefect.task_runners import ProcessPoolTaskRunner

from bioxen_flows.errors import InputError
from bioxen_flows.limits import (
    MAX_DRAWN_SEED,
    MAX_HOURS,
    MAX_PROGRAM_MINUTES_STOCHASTIC,
    MAX_REPLICATES,
)
from bioxen_flows.logs import configure_logging
from bioxen_flows.orchestration import events, reporting
from bioxen_flows.orchestration.batching import (
    MAX_BATCH_SIZE,
    VMSpec,
    auto_batch_sizes,
    batch_program,
    batch_specs,
    comparison_specs,
    label_batches,
)
from bioxen_flows.orchestration.concurrency import vm_slots
from bioxen_flows.orchestration.execution import (
    BatchRunner,
    report_progress,
    run_batches,
    task_runner_of_this_run,
    teardown_hook,
    teardown_run,
)
from bioxen_flows.orchestration.naming import tag_flow_run
from bioxen_flows.orchestration.parameters import (
    Infrastructure,
    Mapping,
    OptionalInt,
    OptionalText,
    Organisms,
    Package,
    Percent,
    Pool,
    StochasticEngine,
    with_pool,
)
from bioxen_flows.orchestration.reaper import end_unfinished_task_runs
from bioxen_flows.orchestration.run_context import (
    current_run_id,
    run_name,
    run_parameters,
    with_run_labels,
)
from bioxen_flows.orchestration.runners import (
    MAX_IO_THREADS,
    dask_cluster_threads,
    dask_task_runner,
    default_workers,
    in_process_task_runner,
    io_task_runner,
    runner_workers,
    simulation_task_runner,
)
from bioxen_flows.orchestration.tasks import with_stochastic_engine
from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.validation import check_int, check_number
from bioxen_flows.vm import infrastructure

# profiles.yaml lists the organisms, in the order a comparison shows them
DEFAULT_ORGANISMS = tuple(get_supported_biological_types())
# A whole run's upper bound; the nightly comparison (12 VMs, 24 simulated hours) takes
# well under a minute, 100 replicates x 3 organisms x 168 hours about an hour.
COMPARE_TIMEOUT_S = 6 * 60 * 60
# Deterministic work below this many VM x simulated hours runs in the flow's process: an
# ODE cell grows 24 h in ~10 ms, while starting a worker process (imports, model compile)
# takes seconds (bench/flows.py measures both sides).
INLINE_MAX_VM_HOURS = 1_000


def _compare_run_name() -> str:
    """`syn3a-ecoli-x3-24h`: organisms, replicates and simulated hours, readable in the UI."""
    params = run_parameters()
    organisms = params.get("organisms") or DEFAULT_ORGANISMS
    return (f"{'-'.join(map(str, organisms))}-x{params.get('replicates', 1)}"
            f"-{float(params.get('hours', 2.0)):g}h")


@flow(
    name="compare-organisms",
    flow_run_name=_compare_run_name,
    timeout_seconds=COMPARE_TIMEOUT_S,
    task_runner=simulation_task_runner(),
    on_crashed=[teardown_hook],
    on_cancellation=[teardown_hook],
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
    stochastic = not deterministic and (seed is not None or replicates > 1)
    check_compare_parameters(organisms, replicates, hours, batch_size or 1,
                             stochastic=stochastic)
    if deterministic and seed is not None:
        raise InputError("give either seed (stochastic) or deterministic, not both")
    log = get_run_logger()
    owner = current_run_id()
    config = with_run_labels(with_pool(config, xcpng_pool), owner)  # for `bioxen gc`
    thresholds = events.alert_thresholds(alert_low_atp_percent, alert_ribosomes_percent,
                                         alert_burden_percent)
    if stochastic and seed is None:
        seed = secrets.randbelow(MAX_DRAWN_SEED)
    if stochastic:
        config = with_stochastic_engine(config, stochastic_engine, division)
    specs = comparison_specs(organisms, replicates, owner, vm_type=vm_type, package=package,
                             atp_percent=atp_percent, ribosomes=ribosomes,
                             seed=seed if stochastic else None, config=config)
    if dask_address and not infrastructure(vm_type).in_process:
        raise InputError("dask_address runs basic VMs; XCP-ng VMs are driven from the flow")
    cluster = dask_cluster_threads(dask_address) if dask_address else None
    own_workers = runner_workers(task_runner_of_this_run())
    workers = cluster or own_workers or default_workers()
    inline = not cluster and _runs_inline(vm_type, specs, hours)
    # where the batches run: a Dask cluster when given, threads for XCP-ng (network
    # waits), the flow's thread for small deterministic work, else the flow's task runner
    # (worker processes)
    where = (BatchRunner(dask_task_runner(dask_address), cluster) if dask_address
             else BatchRunner(io_task_runner(), MAX_IO_THREADS) if infrastructure(vm_type).io_bound
             else BatchRunner(in_process_task_runner(), 1) if inline
             else BatchRunner(None, own_workers))
    if batch_size:
        sizes: dict[str, int] | None = {s.organism: batch_size for s in specs}
    else:  # one thread has no batches to balance: a batch per role
        sizes = None if inline else auto_batch_sizes([s.organism for s in specs], workers,
                                                     stochastic)
    batches = label_batches(batch_specs(specs, sizes))
    by_id = {s.vm_id: s for s in specs}
    tag_flow_run([*organisms, vm_type])
    log.info("comparing %s: %d VMs (%s) in %d batches of up to %d", ", ".join(organisms),
             len(specs), f"stochastic, seeds from {seed}" if stochastic else "deterministic",
             len(batches), max(len(b.specs) for b in batches))
    reporting.preload_plotting()
    with vm_slots(len(specs)):  # one slot per VM while they live (a full pool: wait)
        try:
            progress = reporting.ProgressArtifact("compare-organisms", len(specs))
            first_batch = time.perf_counter()
            # Ctrl-C: running batches are dropped, not waited for (done.stopped)
            done = run_batches(batches, owner, lambda b: batch_program(b, hours), where,
                               on_done=lambda n: _report(progress, n),
                               on_metrics=lambda m: events.alert_on(m, by_id, owner, thresholds))
            last_batch = time.perf_counter()
            finished = [s for s in specs if s.vm_id in done.metrics]
            run_dir = reporting.run_directory(
                Path(out_dir), run_name("compare-organisms"), owner)
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
        finally:  # run_batches settled every batch: none creates a VM after this
            teardown_run(owner, vm_type, config)
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
        "seeds": {s.vm_id: s.seed for s in specs},
    }


def _runs_inline(vm_type: str, specs: list[VMSpec], hours: float) -> bool:
    """Whether this comparison's batches run on the flow's thread: deterministic basic work
    too small to repay starting worker processes (when the flow has them)."""
    small = not any(s.stochastic for s in specs) and len(specs) * hours < INLINE_MAX_VM_HOURS
    return (infrastructure(vm_type).in_process and small
            and isinstance(task_runner_of_this_run(), ProcessPoolTaskRunner))


def _report(progress: reporting.ProgressArtifact, done: int) -> None:
    progress.update(done)
    report_progress(done, progress.total)


def check_compare_parameters(
    organisms: list[str], replicates: int, hours: float, batch: int = 1, *,
    stochastic: bool = False,
) -> None:
    """Refuse bad parameters before any VM (or a Prefect server) is started; a stochastic
    cell's program is bounded too (it would otherwise fail in every worker)."""
    known = get_supported_biological_types()
    unknown = [o for o in organisms if o not in known]
    if not organisms or unknown:
        raise InputError(f"organisms must be among {', '.join(known)}; got {organisms}")
    check_int("replicates", replicates, 1, MAX_REPLICATES)
    check_number("hours", hours, 0, MAX_HOURS, low_open=True)
    check_int("batch_size", batch, 1, MAX_BATCH_SIZE)
    if stochastic and hours * 60 > MAX_PROGRAM_MINUTES_STOCHASTIC:
        raise InputError(f"a stochastic comparison grows each cell at most "
                         f"{MAX_PROGRAM_MINUTES_STOCHASTIC / 60:g} h, got {hours:g}; "
                         "use --deterministic for longer runs")
