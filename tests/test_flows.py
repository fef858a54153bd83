"""Prefect flows on a real (test) Prefect server: results, artifacts, guaranteed teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from bioxen_flows.errors import TransientInfrastructureError
from bioxen_flows.orchestration import tasks as bioxen_tasks
from bioxen_flows.orchestration.compare import compare_organisms
from bioxen_flows.orchestration.flows import vm_lifecycle
from bioxen_flows.vm import list_bio_vms
from bioxen_flows.vm.base import BiologicalVM

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def read_artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    return {a.key: a for a in found}


@pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL
def test_comparison_agrees_with_the_engine_and_publishes_results(tmp_path):
    result = compare_organisms(
        organisms=["ecoli", "syn3a"], replicates=2, hours=0.5, deterministic=True,
        package="gfp_reporter", out_dir=str(tmp_path / "out"), csv=True,
    )
    run_dir = Path(result["out_dir"])
    assert run_dir.parent == tmp_path / "out"
    assert run_dir.name.endswith(result_run_suffix(result))
    assert (tmp_path / "out" / "latest").resolve() == run_dir.resolve()
    summary = pd.read_parquet(run_dir / "summary.parquet").set_index(["organism", "role"])
    assert list(summary.index) == [("ecoli", "cell"), ("ecoli", "control"),
                                   ("syn3a", "cell"), ("syn3a", "control")]
    assert summary.loc[("ecoli", "cell"), "replicates"] == 2  # deterministic: equal copies
    assert summary.loc[("ecoli", "cell"), "growth_rate_per_min_sd"] == pytest.approx(0, abs=1e-12)
    control = summary.loc[("ecoli", "control"), "growth_rate_per_min"]
    assert control == pytest.approx(0.02411, rel=1e-3)  # doubling 28.7 min, as the engine says
    burden = summary["burden_percent"]
    assert 0 < burden[("syn3a", "cell")] < burden[("ecoli", "cell")]
    assert burden[[("ecoli", "control"), ("syn3a", "control")]].isna().all()
    series = pd.read_parquet(run_dir / "timeseries.parquet")
    assert len(series) == 6 * 31  # (2 cells + 1 control) x 2 organisms x 31 minutes
    assert list(series.columns[:6]) == ["organism", "replicate", "vm_id", "role", "package",
                                        "seed"]
    assert series["seed"].isna().all()
    assert {"time_min", "growth_rate_per_min", "atp_percent", "protein_gfp"} <= set(series)
    assert (run_dir / "growth.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(run_dir / "summary.csv").shape[0] == 4
    assert len(pd.read_csv(run_dir / "timeseries.csv")) == len(series)  # asked for: csv=True
    assert result["vms"] == 6
    artifacts = read_artifacts(["compare-organisms-summary", "compare-organisms-report",
                                "compare-organisms-progress"])
    assert "data:image/png;base64," in artifacts["compare-organisms-report"].data
    assert artifacts["compare-organisms-progress"].data == 100.0  # every VM finished
    table = json.loads(artifacts["compare-organisms-summary"].data)
    assert list(table[0])[:2] == ["organism", "burden_percent"]  # the key number first
    for row in table:
        for value in row.values():
            if isinstance(value, float) and value:
                assert float(f"{value:.4g}") == value  # 4 significant figures
    assert list_bio_vms() == []


@pytest.mark.parametrize("runner", ["inline", "threads"])
def test_no_task_warns_of_a_timeout_it_cannot_enforce(tmp_path, caplog, runner):
    """Small comparisons run on the flow's thread, XCP-ng's on threads: Prefect cannot
    enforce task timeouts there and would warn once per task run (18 lines by default)."""
    flow = compare_organisms if runner == "inline" else compare_organisms.with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=2))
    with caplog.at_level("WARNING"):
        result = flow(organisms=["syn3a", "minimal_cell"], hours=0.1, out_dir=str(tmp_path))
    assert result["vms"] == 2
    assert not [r for r in caplog.records if "timeout" in r.getMessage().lower()], \
        [r.getMessage() for r in caplog.records]


def test_replicates_are_stochastic_with_recorded_distinct_seeds(tmp_path):
    """More than one replicate: Gillespie cells with seeds base + r, kept in the results;
    the summary's sd and 95 % interval describe their spread."""
    result = compare_organisms(organisms=["syn3a"], replicates=3, hours=0.25, seed=11,
                               out_dir=str(tmp_path))
    run_dir = Path(result["out_dir"])
    series = pd.read_parquet(run_dir / "timeseries.parquet")
    seeds = series.groupby("vm_id")["seed"].first()
    assert sorted(seeds) == [11, 12, 13]
    assert sorted(result["seeds"].values()) == [11, 12, 13]
    finals = series.groupby("vm_id")["ribosomes_total"].last()
    assert finals.nunique() > 1  # distinct seeds, distinct cells
    (row,) = result["summary"]
    assert row["replicates"] == 3
    assert row["ribosomes_total_sd"] == pytest.approx(finals.std(ddof=1))
    half = 4.302653 * finals.std(ddof=1) / 3 ** 0.5  # t(0.975, 2 df) * sd / sqrt(n)
    assert row["ribosomes_total_ci95_low"] == pytest.approx(finals.mean() - half)
    assert row["ribosomes_total_ci95_high"] == pytest.approx(finals.mean() + half)
    assert not (run_dir / "timeseries.csv").exists()  # CSV only when asked for
    again = compare_organisms(organisms=["syn3a"], replicates=2, hours=0.25,
                              out_dir=str(tmp_path))
    drawn = sorted(again["seeds"].values())
    assert drawn[1] == drawn[0] + 1  # a drawn base seed, recorded
    assert list_bio_vms() == []


def test_comparison_runs_its_batches_in_worker_processes(tmp_path):
    """Stochastic work goes to the process pool: the step tasks ran in other processes,
    nested under one simulate task per batch, each cell built once in its worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from bioxen_flows.orchestration.runners import simulation_task_runner

    flow = compare_organisms.with_options(task_runner=simulation_task_runner(2))
    result = flow(organisms=["minimal_cell", "syn3a"], replicates=2, hours=0.1,
                  batch_size=2, out_dir=str(tmp_path))
    assert result["vms"] == 4
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["minimal_cell-syn3a-x2-0.1h"])), limit=1)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))
    names = {t.name for t in tasks}
    assert {"create-bio-vms-syn3a-batch1", "start-bio-vms-syn3a-batch1",
            "execute-biological-process-minimal_cell-batch1",
            "collect-biological-metrics-minimal_cell-batch1"} <= names, names
    assert sum(n.startswith("simulate-bio-vms-") for n in names) == 2
    assert all(not t.tags for t in tasks)  # no per-task concurrency slots
    assert {"minimal_cell", "syn3a", "basic"} <= set(run.tags)  # on the flow run instead
    assert list_bio_vms() == []


def test_costliest_batches_start_first_as_measured():
    """Batches start in order of estimated work, which ranks the organisms as their
    stochastic cells' CPU time does (so no worker is left alone with a long batch)."""
    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.orchestration.batching import largest_first, simulation_work

    organisms = ["minimal_cell", "syn3a", "ecoli"]
    cpu = {}
    for organism in organisms:
        cell = Cell(organism, stochastic=True, seed=3)
        cell.grow(1)  # burn-in and kernel load, off the clock
        began = time.process_time()
        cell.grow(600)
        cpu[organism] = time.process_time() - began
    assert sorted(organisms, key=simulation_work) == sorted(organisms, key=cpu.get), cpu
    batches = [[o] * n for o, n in
               [("minimal_cell", 2), ("ecoli", 1), ("syn3a", 1), ("ecoli", 2), ("syn3a", 1)]]
    assert largest_first(batches) == [3, 1, 0, 2, 4]  # two minimal cells outweigh a Syn3A


def result_run_suffix(result: dict) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(limit=1, sort="START_TIME_DESC")
    return f"{run.name}-{str(run.id).replace('-', '')[-8:]}"  # the run tag


def test_runs_are_named_and_described_for_the_ui(tmp_path):
    """Flow and task run names say what runs; the parameter form has descriptions."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    compare_organisms(organisms=["ecoli", "syn3a"], replicates=1, hours=0.25,
                      package="gfp_reporter", out_dir=str(tmp_path))
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["ecoli-syn3a-x1-0.25h"])), limit=1)
        names = {t.name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
            id={"any_": [run.id]}))}
    # inline (small deterministic work): one batch per role, named by its organisms
    assert {"create-bio-vms-ecoli-syn3a-batch1", "execute-biological-process-ecoli-syn3a-batch1",
            "collect-biological-metrics-ecoli-syn3a-control-batch1"} <= names, names
    assert sum(n.startswith("simulate-bio-vms-") for n in names) == 2
    assert any(n.startswith("teardown-bio-vms-") for n in names), names
    properties = compare_organisms.parameters.properties
    assert "control cell" in properties["package"]["description"]
    assert properties["out_dir"]["description"]
    assert vm_lifecycle.parameters.properties["program"]["description"]


@pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL
def test_two_comparisons_at_once_with_one_out_dir_both_keep_their_results(tmp_path):
    """Two runs started together into the same out_dir: two directories, both complete."""
    out = tmp_path / "shared"
    params = [dict(organisms=["syn3a", "ecoli"], replicates=1, hours=0.25),
              dict(organisms=["minimal_cell"], replicates=1, hours=0.25)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: compare_organisms(**p, out_dir=str(out)), params))
    dirs = [Path(r["out_dir"]) for r in results]
    assert len(set(dirs)) == 2 and all(d.parent == out for d in dirs)
    for run_dir, p in zip(dirs, params, strict=True):
        summary = pd.read_csv(run_dir / "summary.csv")
        assert list(summary["organism"]) == p["organisms"]
        assert (run_dir / "growth.png").stat().st_size > 0
    assert (out / "latest").resolve() in {d.resolve() for d in dirs}
    assert sorted(p.name for p in out.iterdir()) == sorted([*(d.name for d in dirs), "latest"])
    assert list_bio_vms() == []


def test_comparison_without_package_reports_engine_doubling(tmp_path):
    from bioxen_flows.orchestration.execution import watch_progress

    seen = []
    with watch_progress(lambda done, total: seen.append((done, total))):
        result = compare_organisms(organisms=["ecoli", "syn3a"], hours=0.25, batch_size=1,
                                   out_dir=str(tmp_path))
    assert seen == [(1, 2), (2, 2)]  # one call per finished batch, VMs done of total
    row = result["summary"][0]
    assert Path(result["out_dir"]).parent == tmp_path
    assert row["doubling_time_min"] == pytest.approx(28.7, abs=0.1)
    assert "burden_percent" not in row


@pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL
def test_lifecycle_flow_runs_one_vm_and_tears_it_down():
    out = vm_lifecycle(
        organism="ecoli",
        program='install("lac_operon")\nmanage_operons(["lac"], "induce")\ngrow(minutes=30)',
    )
    assert out["metrics"]["operon_states"] == {"lac": "induced"}
    assert pd.DataFrame(out["timeseries"])["time_min"].iloc[-1] == 30
    assert list_bio_vms() == []


@pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL
def test_process_error_still_tears_down(tmp_path):
    with pytest.raises(ValueError, match="unknown package"):
        compare_organisms(organisms=["syn3a", "ecoli"], hours=0.25,
                          package="no_such_package", out_dir=str(tmp_path))
    assert list_bio_vms() == []


def test_metric_collection_failure_still_tears_down(tmp_path, monkeypatch):
    def broken_sensor(self):
        raise RuntimeError("metric collection failed")

    monkeypatch.setattr(BiologicalVM, "get_biological_metrics", broken_sensor)
    with pytest.raises(RuntimeError, match="metric collection failed"):
        vm_lifecycle(organism="syn3a")
    on_threads = compare_organisms.with_options(task_runner=ThreadPoolTaskRunner())
    with pytest.raises(RuntimeError, match="metric collection failed"):  # (patched here only)
        on_threads(organisms=["syn3a"], replicates=2, hours=0.25, out_dir=str(tmp_path))
    assert list_bio_vms() == []


def test_bad_parameters_fail_before_any_vm(tmp_path):
    with pytest.raises(ValueError, match="organisms must be among"):
        compare_organisms(organisms=["yeast"], out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="hours"):
        compare_organisms(organisms=["ecoli"], hours=0, out_dir=str(tmp_path))
    assert list_bio_vms() == []


def test_transient_faults_retry_and_bad_input_does_not(monkeypatch):
    calls = []
    faults = [TransientInfrastructureError("host busy")]  # the first call hits a busy host
    real_create = bioxen_tasks.create_bio_vm

    def flaky_create(*args, **kwargs):
        calls.append(args[0])
        if faults:
            raise faults.pop()
        return real_create(*args, **kwargs)

    monkeypatch.setattr(bioxen_tasks, "create_bio_vm", flaky_create)
    assert vm_lifecycle(organism="syn3a", vm_id="flaky")["vm_id"] == "flaky"
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ValueError, match="invalid vm_id"):
        vm_lifecycle(organism="syn3a", vm_id="bad id")
    assert len(calls) == 1  # a ValueError is not retried
    assert list_bio_vms() == []


@pytest.mark.usefixtures("state_backend")  # SQLite and PostgreSQL
def test_killed_flow_run_leaves_no_vm(prefect_api_url, bioxen_home):
    """SIGTERM mid-run: Prefect marks the run Crashed and the on_crashed hook tears down."""
    code = (
        "from bioxen_flows.orchestration.compare import compare_organisms\n"
        "compare_organisms(organisms=['ecoli', 'syn3a'], replicates=6, hours=24, "
        "batch_size=1, out_dir='out')\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "BIOXEN_HOME": str(bioxen_home)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8")
    deadline = time.monotonic() + 90
    while not list_bio_vms():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no VM appeared"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert list_bio_vms() == []


def test_automatic_batches_hold_about_equal_work():
    """Four stochastic replicates per organism on two workers: an E. coli cell is a batch of
    its own, the cheaper organisms' cells share batches; ODE cells batch by count."""
    from bioxen_flows.orchestration.batching import (
        auto_batch_sizes,
        batch_specs,
        comparison_specs,
        simulation_work,
    )

    specs = comparison_specs(["syn3a", "ecoli", "minimal_cell"], 4, "run", seed=1)
    sizes = auto_batch_sizes([s.organism for s in specs], workers=2, stochastic=True)
    assert sizes["ecoli"] == 1 and sizes["syn3a"] > 1 and sizes["minimal_cell"] >= sizes["syn3a"]
    batches = batch_specs(specs, sizes)
    assert sorted(s.vm_id for b in batches for s in b) == sorted(s.vm_id for s in specs)
    assert len(batches) < len(specs)
    work = [sum(simulation_work(s.organism) for s in b) for b in batches]
    assert max(work) <= 1.01 * simulation_work("ecoli")  # no batch outweighs one E. coli cell
    ode = auto_batch_sizes([s.organism for s in comparison_specs(["syn3a", "ecoli"], 100, "run")],
                           workers=2)
    assert ode == {"syn3a": 25, "ecoli": 25}


def test_jobs_start_in_the_order_given_one_waiting_beyond_the_workers():
    """`in_order` submits costliest-first jobs one at a time as others finish (so a pool
    cannot reorder them), keeps one waiting for the next free worker, and never submits
    the jobs left when its caller stops."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from bioxen_flows.orchestration.runners import in_order

    started: list[int] = []

    @task(cache_policy=NO_CACHE)
    def job(i: int) -> int:
        started.append(i)
        time.sleep(0.05)
        return i

    @flow
    def run_jobs() -> tuple[list[int], list[int], int]:
        submitted: list[int] = []
        finished: list[int] = []
        futures: list = []
        most_in_flight = 0
        with ThreadPoolTaskRunner(max_workers=1) as pool:
            def submit(i: int):
                nonlocal most_in_flight
                submitted.append(i)
                unfinished = sum(not f.wrapped_future.done() for f in futures)
                most_in_flight = max(most_in_flight, unfinished + 1)
                futures.append(pool.submit(job, {"i": i}))
                return futures[-1]

            for i, future in in_order(submit, [7, 3, 9, 1, 8, 0, 2, 6, 4, 5], 1):
                finished.append(future.result())
                assert i == finished[-1]
                if len(finished) == 4:
                    break
        return submitted, finished, most_in_flight

    submitted, finished, most_in_flight = run_jobs()
    assert submitted == [7, 3, 9, 1, 8, 0, 2, 6, 4, 5][:len(submitted)]
    assert started == submitted[:len(started)]  # started in the order given
    assert most_in_flight == 2  # one running, one waiting
    assert len(submitted) <= 4 + 2 < 10  # the rest were never submitted


def test_burden_has_a_95_percent_interval_from_replicated_controls(tmp_path):
    """Stochastic cells get as many controls; the interval is the delta method's with
    Welch's degrees of freedom, checked here against the formula; one stochastic cell and
    control give no interval and say so."""
    import math

    from scipy import stats

    from bioxen_flows.orchestration.reporting import burden_lines

    result = compare_organisms(organisms=["syn3a"], replicates=3, hours=1.0, seed=4,
                               package="gfp_reporter", out_dir=str(tmp_path))
    assert result["vms"] == 6
    series = pd.read_parquet(result["paths"]["timeseries_parquet"])
    final = series[series["time_min"] == series["time_min"].max()]
    growth = final.groupby("role")["growth_rate_per_min"]
    m, s, n = growth.mean(), growth.std(), growth.size()
    assert list(n) == [3, 3]
    ratio = m["cell"] / m["control"]
    a, b = (s["cell"] ** 2 / (n["cell"] * m["cell"] ** 2),
            s["control"] ** 2 / (n["control"] * m["control"] ** 2))
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)
    half = 100 * stats.t.ppf(0.975, df) * ratio * math.sqrt(a + b)
    [row] = [r for r in result["summary"] if r["role"] == "cell"]
    assert row["burden_percent"] == pytest.approx(100 * (1 - ratio), rel=1e-9)
    assert row["burden_percent_ci95_low"] == pytest.approx(row["burden_percent"] - half, rel=1e-9)
    assert row["burden_percent_ci95_high"] == pytest.approx(row["burden_percent"] + half, rel=1e-9)
    assert half > 0
    summary = pd.DataFrame(result["summary"])
    [line] = burden_lines(summary, stochastic=True)
    assert "95 % interval" in line and "3 cells, 3 controls" in line

    single = compare_organisms(organisms=["syn3a"], replicates=1, hours=1.0, seed=4,
                               package="gfp_reporter", out_dir=str(tmp_path))
    assert single["vms"] == 2
    [row] = [r for r in single["summary"] if r["role"] == "cell"]
    assert row["burden_percent_ci95_low"] is None  # null in JSON, not NaN
    [line] = burden_lines(pd.DataFrame(single["summary"]), stochastic=True)
    assert "no interval" in line and "--replicates 3" in line
