"""`bioxen results query`: DuckDB SQL over every comparison's and sweep's Parquet files."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bioxen_flows.cli import main
from bioxen_flows.engine.cell import Cell
from bioxen_flows.orchestration import sweep_report
from bioxen_flows.orchestration.design_space import design_points
from bioxen_flows.orchestration.reporting import point_latest, run_directory


def _write_sweep(out: Path, run_id: str = "5eed0000-1111-2222-3333-444455556666",
                 started: str | None = None) -> Path:
    """A sweep run directory as the flow writes it, from cells simulated here."""
    points = design_points(["syn3a"], "gfp_reporter", [1.0, 2.0], [1], [None], 1, None, 1)
    results = []
    for point in points:
        cell = Cell("syn3a")
        if point["role"] == "cell":
            cell.install("gfp_reporter", copies=point["copies"], strength=point["strength"])
        cell.grow(60)
        m = cell.metrics()
        results.append({
            "growth_rate_per_min": m["growth_rate_per_min"],
            "doubling_time_min": m["doubling_time_min"],
            "ribosomes_total": m["ribosomes_total"], "atp_percent": m["atp_percent"],
            "nutrient_molecules": m["nutrient_molecules"],
            "protein_per_cell": sum(m["protein_molecules"].values()),
            "protein_per_cell_per_hour": 60 * sum(m["protein_synthesis_per_min"].values()),
        })
    dataset = sweep_report.points_frame(points, results, [False] * len(points), run_id=run_id,
                                        run_name="sweep-test")
    run_dir = run_directory(out, "sweep-test", run_id)
    sweep_report.write_sweep(dataset, run_dir, 20.0)
    if started:  # as reporting.write_run_record writes it inside a flow run
        (run_dir / "run.json").write_text(json.dumps(
            {"complete": True, "vms_done": 4, "vms": 4, "started": started}))
    point_latest(out, run_dir)
    return run_dir


def test_query_sets_runs_side_by_side(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bioxen_flows.orchestration.compare import compare_organisms

    out = tmp_path / "results"
    runs = [compare_organisms(organisms=["syn3a"], hours=0.25, out_dir=str(out))
            for _ in range(2)]
    _write_sweep(out)

    sql = ("SELECT run_id, run_date, organism, growth_rate_per_min FROM comparisons "
           "ORDER BY run_dir")
    assert main(["results", "query", sql, "--results", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2  # one per run; `latest` is not counted twice
    assert {r["run_id"] for r in rows} == {Path(r["out_dir"]).name.rsplit("-", 1)[1]
                                           for r in runs}
    summary = pd.read_parquet(Path(runs[0]["out_dir"]) / "summary.parquet")
    assert {r["growth_rate_per_min"] for r in rows} == {summary["growth_rate_per_min"][0]}
    assert all(r["run_date"] == rows[0]["run_date"] for r in rows)
    assert rows[0]["run_date"][:10] == Path(runs[0]["out_dir"]).name[:10]

    sql = ("SELECT organism, strength, burden_percent, run_id FROM sweeps "
           "WHERE role = 'cell' ORDER BY strength")
    assert main(["results", "query", sql, "--results", str(out), "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["strength"] for r in table] == ["1.0", "2.0"]
    assert {r["organism"] for r in table} == {"syn3a"}  # from the partition folder
    assert 0 < float(table[0]["burden_percent"]) < float(table[1]["burden_percent"])

    sql = "SELECT count(*) AS n FROM comparison_timeseries"
    assert main(["results", "query", sql, "--results", str(out)]) == 0
    assert "32" in capsys.readouterr().out  # 2 runs x 16 minutes (0..15)

    # each flow run recorded its start: the newest comparison is the second run
    record = json.loads((Path(runs[1]["out_dir"]) / "run.json").read_text())
    sql = ("SELECT run_id, started_at, count(*) OVER () AS n FROM latest_comparison_timeseries "
           "LIMIT 1")
    assert main(["results", "query", sql, "--results", str(out), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == 16 and row["run_id"] == Path(runs[1]["out_dir"]).name.rsplit("-", 1)[1]
    assert pd.Timestamp(row["started_at"]) == pd.Timestamp(record["started"])
    assert record["flow_run_id"].endswith(row["run_id"])


def test_bad_queries_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    _write_sweep(out)
    assert main(["results", "query", "SELECT * FROM comparisons", "--results", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "comparisons does not exist" in err
    assert "views: latest_sweeps, runs, sweeps)" in err
    assert main(["results", "query", "SELEKT 1", "--results", str(out)]) == 1
    assert "query failed" in capsys.readouterr().err
    assert main(["results", "query", "SELECT 1", "--results", str(tmp_path / "none")]) == 1
    assert "no results folder" in capsys.readouterr().err


def _query(out: Path, sql: str, *extra: str) -> tuple[int, str, str]:
    code = main(["results", "query", sql, "--results", str(out), *extra])
    return code, *_captured.readouterr()


@pytest.fixture
def one_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    global _captured
    _captured = capsys
    out = tmp_path / "results"
    _write_sweep(out)
    return out


@pytest.mark.parametrize("sql", [
    "COPY (SELECT * FROM sweeps) TO '{outside}/copy.csv'",
    "COPY sweeps TO '{results}/copy.csv'",
    "ATTACH '{outside}/x.duckdb' AS x",
    "DROP VIEW sweeps",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '{outside}/export'",
    "CREATE TABLE t AS SELECT 1",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "SELECT 1; DROP VIEW sweeps",
])
def test_statements_other_than_one_query_are_refused(
    sql: str, one_sweep: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    sql = sql.format(outside=outside, results=one_sweep)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = _query(one_sweep, sql)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("bioxen: error: ")
    assert "only SELECT" in err or "exactly one SELECT" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    code, out, _ = _query(one_sweep, "SELECT count(*) AS n FROM sweeps", "--json")
    assert code == 0 and json.loads(out) == [{"n": 3}]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{outside}')",
    "SELECT * FROM read_csv('{results}/../outside.csv')",
    "SELECT * FROM sweeps, read_csv('{outside_csv}')",
])
def test_files_outside_the_results_folder_are_unreadable(
    sql: str, one_sweep: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.parquet"
    pd.DataFrame({"secret": ["s3cr3t"]}).to_parquet(outside)
    (tmp_path / "outside.csv").write_text("secret\ns3cr3t\n")
    sql = sql.format(outside=outside, results=one_sweep, outside_csv=tmp_path / "outside.csv")
    code, out, err = _query(one_sweep, sql)
    assert code == 1 and "s3cr3t" not in out + err and "root:" not in out + err
    assert err.count("\n") == 1 and "query failed" in err, err


def test_the_results_folder_itself_is_readable_and_the_sandbox_is_locked(one_sweep: Path) -> None:
    summary = next(one_sweep.glob("*/summary.csv"))
    code, out, _ = _query(one_sweep, f"SELECT count(*) AS n FROM read_csv('{summary}')", "--json")
    assert code == 0 and json.loads(out)[0]["n"] > 0
    sql = ("SELECT current_setting('enable_external_access') AS external, "
           "current_setting('lock_configuration') AS locked, current_setting('threads') AS t")
    code, out, _ = _query(one_sweep, sql, "--json")
    assert code == 0 and json.loads(out) == [{"external": False, "locked": True, "t": 1}]


def test_memory_is_bounded(one_sweep: Path) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    code, out, err = _query(one_sweep, "SELECT length(repeat('x', 700000000)) AS n")
    assert code == 1 and err.count("\n") == 1 and "memory" in err.lower(), err
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child
    limit_kib = 1.1 * (1 << 20)  # the query's child never grew past ~1.1 GiB
    assert peak_kib < limit_kib or peak_kib == before  # (unless an earlier child was larger)


def test_time_is_bounded(one_sweep: Path) -> None:
    start = time.monotonic()
    code, out, err = _query(one_sweep, "SELECT count(*) FROM range(1e15::BIGINT)",
                            "--timeout", "2")
    assert code == 1 and err == "bioxen: error: query stopped after 2 s (--timeout)\n"
    assert time.monotonic() - start < 15


def test_ctrl_c_stops_the_query(one_sweep: Path) -> None:
    import psutil

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cli = subprocess.Popen(
        [sys.executable, "-m", "bioxen_flows", "results", "query",
         "SELECT count(*) FROM range(1e15::BIGINT)", "--results", str(one_sweep)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.2)
            children = psutil.Process(cli.pid).children()
        assert children, "the query's process never started"
        time.sleep(1)  # the query is running
        start = time.monotonic()
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=20) == 130
        assert time.monotonic() - start < 10
        assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE
    finally:
        cli.kill()
        cli.communicate()


def test_a_killed_cli_leaves_no_query_running(one_sweep: Path) -> None:
    import psutil

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cli = subprocess.Popen(
        [sys.executable, "-m", "bioxen_flows", "results", "query",
         "SELECT count(*) FROM range(1e15::BIGINT)", "--results", str(one_sweep)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.2)
            children = psutil.Process(cli.pid).children()
        assert children, "the query's process never started"
        time.sleep(1)
        cli.kill()  # SIGKILL: the CLI runs no code of its own
        cli.wait()
        assert children[0].wait(timeout=10) is not None or not children[0].is_running()
    finally:
        cli.kill()
        for child in children:
            if child.is_running():
                child.kill()


def test_a_damaged_run_folder_is_skipped_with_a_warning(one_sweep: Path) -> None:
    broken = one_sweep / "2026-01-01-compare-organisms-dead0000"
    (broken / "points" / "organism=syn3a").mkdir(parents=True)
    (broken / "summary.parquet").write_bytes(b"this is not parquet")
    (broken / "points" / "organism=syn3a" / "part-0.parquet").write_bytes(b"PAR1garbage")
    (broken / "run.json").write_text("{not json")
    code, out, err = _query(one_sweep, "SELECT 1 AS one", "--json")
    assert code == 0 and json.loads(out) == [{"one": 1}]
    warnings = [line for line in err.splitlines() if "skipped a damaged file" in line]
    assert len(warnings) == 2, err
    assert any("summary.parquet" in w for w in warnings)
    assert any("part-0.parquet" in w for w in warnings)
    code, out, err = _query(one_sweep, "SELECT count(*) AS n FROM sweeps", "--json")
    assert code == 0 and json.loads(out) == [{"n": 3}]
    code, out, err = _query(one_sweep, "SELECT run_dir, complete FROM runs ORDER BY 1", "--json")
    assert code == 0 and [r["run_dir"] for r in json.loads(out)][0] == broken.name


def test_latest_views_take_the_newest_run(one_sweep: Path) -> None:
    _write_sweep(one_sweep.parent / "results", run_id="5eed0000-1111-2222-3333-0000000000ff",
                 started="2099-01-01T00:00:00+00:00")
    code, out, _ = _query(one_sweep, "SELECT count(*) AS n FROM sweeps", "--json")
    assert json.loads(out) == [{"n": 6}]  # the sweep ran twice: every point twice
    sql = "SELECT DISTINCT run_id, started_at FROM latest_sweeps"
    code, out, _ = _query(one_sweep, sql, "--json")
    (row,) = json.loads(out)
    assert row["run_id"].endswith("0000000000ff") and row["started_at"].startswith("2099-01-01")


_captured: pytest.CaptureFixture[str]
