"""`bioxen results query`: DuckDB SQL over every comparison's and sweep's Parquet files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from bioxen_flows.cli import main
from bioxen_flows.engine.cell import Cell
from bioxen_flows.orchestration import sweep_report
from bioxen_flows.orchestration.design_space import design_points
from bioxen_flows.orchestration.reporting import point_latest, run_directory


def _write_sweep(out: Path) -> Path:
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
    run_id = "5eed0000-1111-2222-3333-444455556666"
    dataset = sweep_report.points_frame(points, results, [False] * len(points), run_id=run_id,
                                        run_name="sweep-test")
    run_dir = run_directory(out, "sweep-test", run_id)
    sweep_report.write_sweep(dataset, run_dir, 20.0)
    point_latest(out, run_dir)
    return run_dir


def test_query_sets_runs_side_by_side(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bioxen_flows.orchestration.flows import compare_organisms

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


def test_bad_queries_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    _write_sweep(out)
    assert main(["results", "query", "SELECT * FROM comparisons", "--results", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "comparisons does not exist" in err and "views: sweeps" in err
    assert main(["results", "query", "SELEKT 1", "--results", str(out)]) == 1
    assert "query failed" in capsys.readouterr().err
    assert main(["results", "query", "SELECT 1", "--results", str(tmp_path / "none")]) == 1
    assert "no results folder" in capsys.readouterr().err
