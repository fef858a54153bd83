"""The `sweep-design-space` flow: which chassis, promoter and copy number give the most
protein for the least growth lost?

Each point of the design space (organism x promoter strength x copy number x nutrient,
and replicate) is one cell grown for `hours`, plus one control (no package) per organism
and nutrient that the burden is measured against.

**Reuse.** A point's result is kept in Prefect's result store under a key made of
everything that determines it and nothing else (`point_fingerprint`): the model text's
hash, the organism's parameters, the package's content, the point's parameters and seed,
and the engine's versions. Results persist in the result storage of `result_storage()` (a
local folder by default), so a later sweep that overlaps this one simulates only its new
points. Points already in the store are read by the flow (~0.1 ms each), so a sweep that
is all reuse starts no worker. New points go to the worker processes of
`simulation_task_runner` in **cohorts**: one VM per cohort (points of one organism,
nutrient and seed, about equal work, a few per worker, costliest first) runs its points
one after another on one loaded model (`BasicVM.explore_designs`). Copies and strength are
model parameters set after load (`model/builder.py`), so no point compiles a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from bioxen_flows import __version__
from bioxen_flows.errors import InputError
from bioxen_flows.limits import MAX_STRENGTH
from bioxen_flows.logs import vm_context
from bioxen_flows.orchestration import reporting, sweep_report
from bioxen_flows.orchestration.batching import auto_batch_sizes, largest_first
from bioxen_flows.orchestration.concurrency import vm_slots
from bioxen_flows.orchestration.design_space import design_points
from bioxen_flows.orchestration.execution import batch_pool, report_progress, teardown_hook
from bioxen_flows.orchestration.naming import tag_flow_run
from bioxen_flows.orchestration.parameters import (
    Counts,
    Numbers,
    OptionalInt,
    OptionalText,
    OrganismList,
    PackageName,
    StochasticEngine,
)
from bioxen_flows.orchestration.reaper import end_unfinished_task_runs
from bioxen_flows.orchestration.run_context import (
    FLOW_RUN_LABEL,
    current_run_id,
    run_name,
    run_parameters,
    run_tag,
    with_run_labels,
)
from bioxen_flows.orchestration.runners import (
    check_workers,
    dask_cluster_threads,
    dask_task_runner,
    default_workers,
    simulation_task_runner,
)
from bioxen_flows.orchestration.stopping import RunStopped
from bioxen_flows.orchestration.tasks import (
    replace_lost_attempt,
    teardown_bio_vms,
    with_stochastic_engine,
)
from bioxen_flows.serialization import json_safe

SWEEP_TIMEOUT_S = 12 * 60 * 60


def result_storage() -> str | Path:
    """Where cached point results live: the `result_storage` setting
    (`BIOXEN_RESULT_STORAGE`), a folder (default `<home>/prefect-results`) or a saved Prefect
    storage block `type/name` (e.g. `s3-bucket/sweeps`) for workers on several machines."""
    from bioxen_flows.settings import get_settings

    settings = get_settings()
    value = (settings.result_storage or "").strip()
    if re.fullmatch(r"[a-z0-9-]+/[A-Za-z0-9_-]+", value):
        return value
    return (Path(value).expanduser() if value else settings.home / "prefect-results").resolve()


@lru_cache(maxsize=256)
def _package_fingerprint(package: str, content_sha: str) -> tuple[str, Any]:
    from bioxen_flows.model.guest import BUILTIN_PACKAGES
    from bioxen_flows.model.packages import resolve_package

    if package in BUILTIN_PACKAGES:
        pkg = BUILTIN_PACKAGES[package]
        return repr(pkg), pkg
    return content_sha, resolve_package(package)


def _module_bytes(path: str) -> bytes:
    """A module file's bytes, size-checked before reading and never blocking."""
    from bioxen_flows.files import read_bytes_file
    from bioxen_flows.model.packages import module_size_limit

    return read_bytes_file(path, max_bytes=module_size_limit(path), what="package file")


def point_fingerprint(point: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines a point's result (and nothing that does not, such as the
    VM id or the run): what its cache key is made of."""
    from bioxen_flows.model.builder import build_model_text
    from bioxen_flows.organisms.profiles import get_profile

    profile = get_profile(point["organism"])
    packages = []
    package_id = None
    if point["package"]:
        content = hashlib.sha256(
            b"" if _is_builtin(point["package"]) else _module_bytes(point["package"])
        ).hexdigest()
        package_id, pkg = _package_fingerprint(point["package"], content)
        packages = [pkg.with_copies(point["copies"]).with_strength(point["strength"])]
    text = build_model_text(profile.parameters, packages, stochastic=point["seed"] is not None)
    return {
        "model_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "organism": {"name": profile.biological_type, "parameters": dict(profile.parameters)},
        "package": package_id,
        "point": {k: point[k] for k in
                  ("role", "strength", "copies", "nutrient", "hours", "seed")},
        # a stochastic point is also a function of its engine (ODE points' keys unchanged)
        **({"stochastic": {k: point.get(k, default) for k, default in STOCHASTIC_DEFAULTS}}
           if point["seed"] is not None else {}),
        "engine": _engine_versions(),
    }


STOCHASTIC_DEFAULTS = (("stochastic_engine", "compiled"), ("division", True))


def point_key(point: dict[str, Any]) -> str:
    blob = json.dumps(point_fingerprint(point), sort_keys=True, default=str)
    return "bioxen-point-" + hashlib.sha256(blob.encode()).hexdigest()


@lru_cache(maxsize=1)
def _engine_versions() -> dict[str, str]:
    return {"bioxen": __version__, **{
        name: metadata.version(name) for name in ("libroadrunner", "antimony")
    }}


def _is_builtin(package: str) -> bool:
    from bioxen_flows.model.guest import BUILTIN_PACKAGES

    return package in BUILTIN_PACKAGES


def point_program(point: dict[str, Any]) -> str:
    """The process program of a point (json.dumps writes the package as a literal)."""
    lines = []
    if point["role"] == "cell":
        lines.append(f"install({json.dumps(point['package'])}, copies={point['copies']!r}, "
                     f"strength={point['strength']!r})")
    return "\n".join([*lines, f"grow(minutes={point['hours'] * 60!r})"])


def _simulation(point: dict[str, Any]) -> dict[str, Any]:
    """The VM config's `simulation` of a point (what its cohort's VM shares)."""
    simulation: dict[str, Any] = {}
    if point["seed"] is not None:
        simulation.update(stochastic=True, seed=point["seed"],
                          **{k: point.get(k, default) for k, default in STOCHASTIC_DEFAULTS})
    if point["nutrient"] is not None:
        simulation["nutrient"] = point["nutrient"]
    return simulation


def _point_result(m: dict[str, Any]) -> dict[str, Any]:
    """What a point keeps of its cell's final metrics (units in the names)."""
    return json_safe({
        "growth_rate_per_min": m["growth_rate_per_min"],
        "doubling_time_min": m["doubling_time_min"],
        "ribosomes_total": m["ribosomes_total"],
        "atp_percent": m["atp_percent"],
        "nutrient_molecules": m["nutrient_molecules"],
        "protein_per_cell": sum(m["protein_molecules"].values()),
        "protein_per_cell_per_hour": 60.0 * sum(m["protein_synthesis_per_min"].values()),
    })


def _cohort_run_name() -> str:
    from prefect.runtime import task_run

    return f"simulate-cohort-{(task_run.parameters or {}).get('label', 'cohort')}"


@task(name="simulate-cohort", task_run_name=_cohort_run_name, cache_policy=NO_CACHE,
      timeout_seconds=SWEEP_TIMEOUT_S)
def simulate_cohort(points: list[dict[str, Any]], vm_id: str, labels: dict[str, str],
                    storage: str | Path | None,
                    label: str) -> list[tuple[dict[str, Any], bool]]:
    """Many points on one VM: created, started, destroyed at the end (so ownership, gc,
    quotas and the VM limit hold as for any VM); its points run one after another on a
    copy of its fresh cell (`explore_designs`), the package's model loaded once and its
    copies and strength set per point, so no point compiles or loads a model. Each result
    is written to the result store under the point's own key as soon as it is known (a
    stopped sweep keeps it; a later sweep reuses it); a point another run made meanwhile is
    read instead. Returns (result, reused) per point. `storage` None (a worker on another
    host than the flow's result folder): nothing read or written, the flow writes them.
    `labels` name the run and the flow's process, for `bioxen gc`."""
    from prefect.results import ResultStore, resolve_result_storage

    from bioxen_flows import progress
    from bioxen_flows.vm import create_bio_vm

    progress.logs_to_folder()  # a bar on the CLI's terminal: logs above it, not onto it
    store = (ResultStore(result_storage=resolve_result_storage(storage))
             if storage is not None else None)
    outcomes: dict[int, tuple[dict[str, Any], bool]] = {}
    for n, point in enumerate(points):  # made meanwhile by another run: read, not redone
        if store is not None and store.exists(point_key(point)):
            outcomes[n] = (store.read(point_key(point)).result, True)
    todo = [n for n in range(len(points)) if n not in outcomes]
    designs = [(points[n]["package"] if points[n]["role"] == "cell" else None,
                points[n]["copies"] or 1, points[n]["strength"] or 1.0) for n in todo]
    with vm_context(vm_id):
        replace_lost_attempt(vm_id, labels[FLOW_RUN_LABEL])
        vm = create_bio_vm(vm_id, points[0]["organism"], "basic", {
            "labels": labels, "simulation": _simulation(points[0])})
        try:
            vm.start()
            results = vm.explore_designs(designs, points[0]["hours"] * 60)
            for n, metrics in zip(todo, results, strict=True):
                result = _point_result(metrics)
                if store is not None:
                    store.write(result, key=point_key(points[n]))
                outcomes[n] = (result, False)
        finally:
            vm.destroy()
    return [outcomes[n] for n in range(len(points))]


REFINE_TOLERANCE = 1e-3  # golden-section stops when the log-strength bracket is this narrow
GOLDEN = (5 ** 0.5 - 1) / 2


def refine_strength(
    evaluate: Callable[[float], tuple[float, float]], low: float, high: float,
    max_burden: float,
) -> tuple[float, float, float]:
    """Golden-section search on log strength in [low, high] for the most yield whose burden
    is at most `max_burden` (`evaluate(strength) -> (yield, burden %)`); a strength over the
    limit counts as no yield, so the search also finds the limit when the optimum lies past
    it. Returns (strength, yield, burden) of the best strength evaluated."""
    seen: dict[float, tuple[float, float]] = {}

    def score(x: float) -> float:
        strength = math.exp(x)
        if strength not in seen:
            seen[strength] = evaluate(strength)
        value, burden = seen[strength]
        return value if burden <= max_burden else -math.inf

    a, b = math.log(low), math.log(high)
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = score(c), score(d)
    while b - a > REFINE_TOLERANCE:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = score(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = score(d)
    score(math.log(low)), score(math.log(high))  # the bracket's ends are candidates too
    allowed = {s: v for s, v in seen.items() if v[1] <= max_burden}
    strength = max(allowed, key=lambda s: allowed[s][0])
    return strength, *allowed[strength]


def _refiner(dataset: Any, package: str, strengths: list[float], hours: float,
             max_burden: float, labels: dict[str, str],
             tag: str) -> Callable[[Any], dict[str, float]]:
    """The refinement of one best grid point (a row of `sweep_report.best_points`): its
    organism's VM, created for it, evaluates strengths between the grid's neighbours."""
    from bioxen_flows.vm import create_bio_vm

    grid = sorted(set(strengths))
    controls = dataset[dataset["role"] == "control"].groupby(
        ["organism", "nutrient_molecules"])["growth_rate_per_min"].mean()

    def refine(row: Any) -> dict[str, float]:
        k = grid.index(row["strength"])
        step = grid[1] / grid[0] if len(grid) > 1 else 2.0
        low = grid[k - 1] if k > 0 else row["strength"] / step
        high = min(MAX_STRENGTH, grid[k + 1] if k + 1 < len(grid) else row["strength"] * step)
        control = controls[(row["organism"], row["nutrient_molecules"])]
        vm = create_bio_vm(f"sw-{tag}-refine-{row['organism']}", row["organism"], "basic", {
            "labels": labels, "simulation": {"nutrient": float(row["nutrient_molecules"])}})
        growth: dict[float, float] = {}
        try:
            vm.start()

            def evaluate(strength: float) -> tuple[float, float]:
                design = [(package, int(row["copies"]), strength)]
                result = _point_result(next(iter(vm.explore_designs(design, hours * 60))))
                growth[strength] = result["growth_rate_per_min"]
                return result[sweep_report.YIELD], 100.0 * (1 - growth[strength] / control)

            strength, value, burden = refine_strength(evaluate, low, high, max_burden)
        finally:
            vm.destroy()
        return {"refined_strength": strength, f"refined_{sweep_report.YIELD}": value,
                "refined_burden_percent": burden,
                "refined_growth_rate_per_min": growth[strength]}

    return refine


def equal_designs(points: list[dict[str, Any]]) -> dict[int, int]:
    """Points whose design equals an earlier point's, mapped to it: a built-in package's
    genes are transcribed at copies x strength x w (model/builder.py), so two points with
    the same product (and everything else equal) are the same simulation, computed once.
    User modules may read their copies or strength otherwise, so their points never are."""
    first: dict[str, int] = {}
    twins: dict[int, int] = {}
    for i, point in enumerate(points):
        if point["role"] != "cell" or not _is_builtin(point["package"]):
            continue
        design = {**point, "strength": point["strength"] * point["copies"], "copies": 1,
                  "replicate": None, "vm_id": None}
        key = json.dumps(design, sort_keys=True, default=str)
        twins.update({i: first[key]} if key in first else {})
        first.setdefault(key, i)
    return twins


def _design_label(point: dict[str, Any]) -> str:
    return f"strength={point['strength']:g},copies={point['copies']}"


def _cohorts(points: list[dict[str, Any]], new: list[int], workers: int) -> list[list[int]]:
    """The new points' indexes in cohorts that can share a VM (same organism, nutrient and
    seed) and hold about equal work, about BATCHES_PER_WORKER per worker."""
    stochastic = any(points[i]["seed"] is not None for i in new)
    sizes = auto_batch_sizes([points[i]["organism"] for i in new], workers, stochastic)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in new:
        p = points[i]
        groups.setdefault((p["organism"], p["nutrient"], p["seed"]), []).append(i)
    return [group[k:k + sizes[key[0]]] for key, group in groups.items()
            for k in range(0, len(group), sizes[key[0]])]


def _sweep_run_name() -> str:
    """`sweep-ecoli-syn3a-gfp_reporter-18pts-24h`, readable in the UI."""
    p = run_parameters()
    organisms = p.get("organisms") or []
    package = Path(str(p.get("package") or "package")).stem
    n = (len(p.get("strengths") or [1]) * len(p.get("copies") or [1])
         * len(p.get("nutrients") or [None]) * int(p.get("replicates") or 1) * len(organisms))
    return f"sweep-{'-'.join(organisms)}-{package}-{n}pts-{float(p.get('hours', 24)):g}h"


@flow(name="sweep-design-space", flow_run_name=_sweep_run_name, timeout_seconds=SWEEP_TIMEOUT_S,
      task_runner=ThreadPoolTaskRunner(max_workers=8),
      on_crashed=[teardown_hook], on_cancellation=[teardown_hook], log_prints=True)
def sweep_design_space(
    organisms: OrganismList,
    package: PackageName = "gfp_reporter",
    strengths: Numbers = None,
    copies: Counts = None,
    nutrients: Numbers = None,
    replicates: int = 1,
    seed: OptionalInt = None,
    hours: float = 24.0,
    max_burden: float = 20.0,
    out_dir: str = "bioxen_results",
    workers: OptionalInt = None,
    stochastic_engine: StochasticEngine = "compiled",
    division: bool = True,
    refine: bool = False,
    dask_address: OptionalText = None,
) -> dict[str, Any]:
    """Grow one VM per point of organisms x strengths x copies x nutrients (x replicates).

    Writes to `<out_dir>/<UTC date>-<run name>-<run tag>/` (and points
    `<out_dir>/latest` there): the tidy Parquet dataset `points/` partitioned by organism,
    `summary.csv`, `heatmap-<organism>.png` and `best.md`; publishes the
    sweep-design-space-best (table) and sweep-design-space-report (markdown) artifacts.

    Args:
        organisms: Chassis to compare, among syn3a, ecoli and minimal_cell.
        package: Built-in package name or the path of an Antimony/SBML module.
        strengths: Promoter strengths, multipliers on the package's transcription rates
            (default [1]).
        copies: Gene copy numbers (default [1]).
        nutrients: External nutrient levels, molecules (default: the model's 1e4).
        replicates: Stochastic replicates per point (needs a seed; default 1).
        seed: Stochastic mode; replicate r uses seed + r. Default: ODE.
        hours: Simulated hours each VM grows (default 24).
        max_burden: Burden limit, %: the best point of an organism is the one with the
            highest protein per cell per hour whose burden is at most this.
        out_dir: Folder for the results; each run writes a subdirectory of its own.
        workers: Worker processes for new points (default: one per CPU).
        stochastic_engine: Engine of stochastic points: compiled (default) or roadrunner
            (libroadrunner's Gillespie, the reference; needs division false).
        division: Stochastic cells grow and divide (false: a cell of fixed size).
        refine: Refine each organism's best grid point: golden-section search on log
            strength between the grid's neighbouring strengths, at the best point's copies,
            for the most protein per cell per hour within max_burden (deterministic sweeps).
        dask_address: Simulate new points on the Dask cluster whose scheduler is here
            (tcp://HOST:8786); its workers share this run's state store. Results come back
            through Dask and this flow writes them to its result storage (workers write
            there themselves only when it is a storage block, shared by every host).
    """
    check_workers(workers)
    if not 0 <= max_burden <= 100:
        raise InputError(f"max_burden must be between 0 and 100 %, got {max_burden:g}")
    if refine and seed is not None:
        raise InputError("refine needs a deterministic sweep (a stochastic yield is noisy): "
                         "drop the seed or the refinement")
    log = get_run_logger()
    owner = current_run_id()
    tag = run_tag(owner)
    tag_flow_run([*organisms, "sweep"])
    # the run and this process: `bioxen gc` reaps a cohort's VM once either is gone
    labels = with_run_labels(None, owner)["labels"]
    if package and not _is_builtin(package):
        package = str(Path(package).resolve())  # worker processes may stand elsewhere
    points = design_points(organisms, package, list(strengths or [1.0]),
                           [int(c) for c in copies or [1]], list(nutrients or [None]),
                           replicates, seed, hours)
    if seed is not None:
        with_stochastic_engine(None, stochastic_engine, division)  # refuses a bad pair
        for point in points:
            point.update(stochastic_engine=stochastic_engine, division=division)
    storage = result_storage()
    from prefect.results import ResultStore, resolve_result_storage

    store = ResultStore(result_storage=resolve_result_storage(storage))
    twin = equal_designs(points)  # index -> the equal design computed in its place
    outcomes: dict[int, tuple[dict[str, Any], bool]] = {
        i: (store.read(point_key(p)).result, True) for i, p in enumerate(points)
        if i not in twin and store.exists(point_key(p))}  # read here: ~0.1 ms a point
    cached = [i in twin or i in outcomes for i in range(len(points))]
    log.info("sweeping %d points (%d in the cache, %d equal to another point's design: "
             "strength and copies enter the model only as their product)",
             len(points), sum(cached) - len(twin), len(twin))
    reporting.preload_plotting()
    stopped = False
    report_progress(sum(cached), len(points))  # points from the cache are done at once
    new = [i for i, hit in enumerate(cached) if not hit]  # only these start workers
    cluster = dask_cluster_threads(dask_address) if dask_address and new else None
    n_workers = min(cluster or workers or default_workers(), len(new))
    # one slot of the VM limit per VM alive at once: a cohort's per worker (a full pool:
    # wait), as the comparison holds one per VM
    slots = vm_slots(n_workers) if n_workers else nullcontext()
    try:
        if new:
            cohorts = _cohorts(points, new, n_workers)
            # workers on other hosts cannot write a folder of this one: the flow does
            shared = not dask_address or isinstance(storage, str)
            runner = (dask_task_runner(dask_address) if dask_address
                      else simulation_task_runner(n_workers))
            with slots, batch_pool(runner, share_api=True) as pool:
                def submit(index: int) -> PrefectFuture:
                    cohort = cohorts[index]
                    return pool.submit(simulate_cohort, {
                        "points": [points[i] for i in cohort], "labels": labels,
                        "vm_id": f"sw-{tag}-c{index + 1}",
                        "storage": storage if shared else None,
                        "label": f"{points[cohort[0]]['organism']}-{index + 1}"})

                order = largest_first([[points[i]["organism"] for i in c] for c in cohorts])
                try:
                    for index, future in pool.finished(submit, order, n_workers):
                        results = future.result()
                        if not shared:
                            for i, (result, reused) in zip(cohorts[index], results, strict=True):
                                if not reused:
                                    store.write(result, key=point_key(points[i]))
                        outcomes.update(zip(cohorts[index], results, strict=True))
                        report_progress(len(twin) + len(outcomes), len(points))
                except RunStopped:  # Ctrl-C: running cohorts are dropped, not waited for
                    # (the points they finished are in the result store: the next run reuses
                    # them)
                    stopped = True
        if stopped:  # what stopped cohorts finished is in the store
            for i in new:
                if i not in outcomes and store.exists(point_key(points[i])):
                    outcomes[i] = (store.read(point_key(points[i])).result, False)
    finally:
        teardown_bio_vms(owner)  # VMs of points that failed half-way
    outcomes.update({i: outcomes[j] for i, j in twin.items() if j in outcomes})
    for i in twin:
        points[i]["same_design_as"] = _design_label(points[twin[i]])
    done = sorted(outcomes)
    name = run_name("sweep-design-space")
    run_dir = reporting.run_directory(Path(out_dir), name, owner)
    dataset = sweep_report.points_frame([points[i] for i in done],
                                        [outcomes[i][0] for i in done],
                                        [outcomes[i][1] for i in done], run_id=owner,
                                        run_name=name) if done else None
    if stopped:
        if dataset is not None:  # the points, not a best point of a grid half done
            sweep_report.write_points(dataset, run_dir)
        reporting.write_run_record(run_dir, complete=False, vms_done=len(done), vms=len(points))
        end_unfinished_task_runs(owner, "Cancelled", "the flow run was stopped")
        kept = (f"partial results ({len(done)} of {len(points)} points, all kept in the "
                f"cache for the next run) in {run_dir}" if done else "no point had finished")
        log.info("stopped by the user: %s; every VM destroyed", kept)
        return Cancelled(message=f"{kept}; every VM destroyed")
    cells = [i for i, p in enumerate(points) if p["role"] == "cell"]
    reused_flags = [outcomes[i][1] for i in range(len(points))]
    reused = sum(reused_flags[i] for i in cells)
    controls_reused = sum(reused_flags) - reused
    refiner = None
    if refine:
        refiner = _refiner(dataset, package, list(strengths or [1.0]), hours, max_burden,
                           labels, tag)
    with vm_slots(1) if refiner else nullcontext():  # the refinement's one VM at a time
        report = sweep_report.write_sweep(dataset, run_dir, max_burden, refiner)
    reporting.write_run_record(run_dir, complete=True, vms_done=len(points), vms=len(points))
    latest = reporting.point_latest(Path(out_dir), run_dir)
    sweep_report.publish_artifacts(report, max_burden, key="sweep-design-space")
    log.info("%d of %d points (and %d of %d controls) reused from the cache; results in %s",
             reused, len(cells), controls_reused, len(points) - len(cells), run_dir)
    return {
        "points": len(cells),
        "reused": reused,
        "controls": len(points) - len(cells),
        "controls_reused": controls_reused,
        "equal_designs": len(twin),
        "out_dir": str(run_dir),
        "latest": str(latest),
        "best": report["best"].astype(object).where(report["best"].notna(), None)
        .to_dict("records"),
        "paths": {k: str(v) for k, v in report["paths"].items()},
    }

