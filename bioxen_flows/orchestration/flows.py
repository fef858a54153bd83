"""Prefect flows: the multi-organism comparison and one VM's lifecycle.

Teardown is guaranteed three ways: a `finally` in the flow body (failures), and
`on_crashed` / `on_cancellation` hooks (a killed or cancelled run). All three destroy
the VMs labelled with the flow run's id, so none is leaked even if the task that
created it never returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
from itertools import islice
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_run
from prefect.task_runners import ThreadPoolTaskRunner

from bioxen_flows.orchestration import reporting
from bioxen_flows.orchestration.tasks import (
    OWNER_LABEL,
    collect_biological_metrics,
    create_bio_vms,
    execute_biological_process,
    start_bio_vms,
    teardown_bio_vms,
    vm_spec,
)
from bioxen_flows.orchestration.xcpng_tasks import (
    boot_xcpng_vm,
    clone_xcpng_vm,
    provision_xcpng_disks,
    reap_xcpng_vms,
)
from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.vm import destroy_labelled_vms

DEFAULT_ORGANISMS = ("syn3a", "ecoli", "minimal_cell")
MAX_WORKERS = 4


def _teardown_hook(flow, flow_run, state) -> None:  # noqa: ANN001 (Prefect hook signature)
    """State hook: destroy the run's VMs when the run crashed or was cancelled.

    Prefect calls hooks by keyword (flow=, flow_run=, state=) when a worker runs them.
    """
    owner = str(flow_run.id)
    destroy_labelled_vms(OWNER_LABEL, owner)
    cfg = ((flow_run.parameters or {}).get("config") or {}).get("xcpng_config")
    if cfg:
        from bioxen_flows.xcpng.backend import reap_vms

        reap_vms(cfg, keep=lambda tags: tags.get("owner") != owner)


def _settle(futures: list[PrefectFuture]) -> None:
    """Cancel the batches that have not started, then wait for the running ones, so that
    no task creates a VM after teardown and a cancelled run stops within seconds."""
    for future in futures:
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is not None:
            wrapped.cancel()  # a no-op for a task that is running or done
    for future in futures:
        try:
            future.wait()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            continue


def _owner() -> str:
    return str(current_run.get_id() or "local")


@flow(
    name="compare-organisms",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS),
    on_crashed=[_teardown_hook],
    on_cancellation=[_teardown_hook],
    log_prints=True,
)
def compare_organisms(
    organisms: list[str] | None = None,
    replicates: int = 1,
    hours: float = 2.0,
    package: str | None = None,
    atp_percent: float | None = None,
    ribosomes: int | None = None,
    seed: int | None = None,
    out_dir: str = "bioxen_results",
    vm_type: str = "basic",
    batch_size: int = 3,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Grow `replicates` cells of each organism (default: all three) for `hours`, compare.

    With a `package`, each organism also gets a control VM without it (same caps, same
    seed) and the summary reports the package's burden. A `seed` switches on the
    stochastic mode (replicate r uses seed + r). `config` is merged into every VM's config
    (e.g. `{"xcpng_config": {...}}` for vm_type "xcpng"). Results: tidy time series and
    summary as Parquet + CSV, a PNG plot, and Prefect artifacts.
    """
    organisms = list(organisms or DEFAULT_ORGANISMS)
    check_compare_parameters(organisms, replicates, hours, batch_size)
    log = get_run_logger()
    owner = _owner()
    run_tag = re.sub(r"[^A-Za-z0-9]", "", owner)[:8] or "local"
    specs = []
    for organism in organisms:
        for rep in range(replicates):
            specs.append(vm_spec(
                f"cmp-{run_tag}-{organism}-{rep}", organism, vm_type=vm_type, replicate=rep,
                package=package, atp_percent=atp_percent, ribosomes=ribosomes,
                seed=None if seed is None else seed + rep, config=config,
            ))
        if package:
            specs.append(vm_spec(
                f"cmp-{run_tag}-{organism}-control", organism, vm_type=vm_type, role="control",
                atp_percent=atp_percent, ribosomes=ribosomes, seed=seed, config=config,
            ))
    log.info("comparing %s: %d VMs in batches of %d", ", ".join(organisms), len(specs), batch_size)
    submitted: list[PrefectFuture] = []
    try:
        futures = []
        for batch in _batches(specs, batch_size):
            with tags(batch[0]["organism"], vm_type):
                created = create_bio_vms.submit(batch, owner)
                started = start_bio_vms.submit(created)
                ran = execute_biological_process.submit(started, _program(batch[0], hours))
                collected = collect_biological_metrics.submit(started, wait_for=[ran])
            submitted += [created, started, ran, collected]
            futures.append((ran, collected))
        results, metrics = {}, {}
        for ran, collected in futures:
            results.update(ran.result())
            metrics.update(collected.result())
        series = reporting.timeseries_frame(specs, results)
        summary = reporting.summary_frame(specs, metrics)
        png = reporting.plot_png(series)
        paths = reporting.write_results(series, summary, png, Path(out_dir))
        reporting.publish_artifacts(summary, png, key="compare-organisms")
    finally:
        _settle(submitted)  # a batch still creating VMs must not outlive the teardown
        _teardown(owner, vm_type, config)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {
        "summary": summary.astype(object).where(summary.notna(), None).to_dict("records"),
        "paths": {k: str(v) for k, v in paths.items()},
        "vms": len(specs),
    }


@flow(
    name="vm-lifecycle",
    on_crashed=[_teardown_hook],
    on_cancellation=[_teardown_hook],
)
def vm_lifecycle(
    organism: str = "syn3a",
    program: str = "grow(minutes=60)",
    vm_type: str = "basic",
    vm_id: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One VM through create -> start -> process program -> metrics -> teardown."""
    owner = _owner()
    vm_id = vm_id or f"life-{re.sub(r'[^A-Za-z0-9]', '', owner)[:8]}-{organism}"
    spec = vm_spec(vm_id, organism, vm_type=vm_type, config=config)
    try:
        with tags(organism, vm_type):
            if vm_type == "xcpng":  # each provisioning step is its own, retryable task
                cfg = _xcpng_config(config)
                vm = provision_xcpng_disks(cfg, clone_xcpng_vm(cfg, vm_id, owner))
                spec["config"]["placement"] = boot_xcpng_vm(cfg, vm)
            created = create_bio_vms([spec], owner)
            started = start_bio_vms(created)
            result = execute_biological_process(started, program)[vm_id]
            metrics = collect_biological_metrics(started)[vm_id]
    finally:
        _teardown(owner, vm_type, config)
    return {"vm_id": vm_id, "metrics": metrics, "timeseries": result["timeseries"]}


@flow(name="reap-xcpng-vms")
def reap_leaked_xcpng_vms(xcpng_config: dict[str, Any]) -> list[str]:
    """Destroy XCP-ng VMs tagged by BioXen whose owner (a VM record or a flow run) is gone."""
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


def _program(spec: dict[str, Any], hours: float) -> str:
    """The process program for a batch (json.dumps escapes the package name as a literal)."""
    lines = [f"install({json.dumps(spec['package'])})"] if spec["package"] else []
    return "\n".join([*lines, f"grow(minutes={hours * 60!r})"])


def _batches(specs: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Batches of one organism, role and package each, so one program fits the batch."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for spec in specs:
        groups.setdefault((spec["organism"], spec["role"]), []).append(spec)
    batches = []
    for group in groups.values():
        it = iter(group)
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
