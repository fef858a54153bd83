"""Design-space sweeps: axes, points, cache keys, and the flow's reuse against a Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bioxen_flows.cli import main
from bioxen_flows.engine.cell import Cell
from bioxen_flows.errors import InputError
from bioxen_flows.orchestration.design_space import design_points, parse_axis


def test_axes_are_lists_or_ranges() -> None:
    assert parse_axis("4,0.25,1,1", "strength") == [0.25, 1.0, 4.0]
    assert parse_axis("0.1:10:log3", "strength") == pytest.approx([0.1, 1.0, 10.0])
    assert parse_axis("1:20:lin5", "copies", integer=True) == [1, 6, 10, 15, 20]
    assert parse_axis("1:3:3", "copies", integer=True) == [1, 2, 3]
    for bad, message in (("0:10:log4", "log range needs bounds > 0"),
                         ("a,b", "numbers separated by commas"),
                         ("1:2:log99", "1 to 50 values"), (",", "1 to 50 values")):
        with pytest.raises(InputError, match=message):
            parse_axis(bad, "strength")


def test_points_span_the_space_with_one_control_per_organism_and_nutrient() -> None:
    points = design_points(["ecoli", "syn3a"], "gfp_reporter", [0.25, 1, 4], [1, 5, 20],
                           [None, 5e3], 1, None, 24)
    cells = [p for p in points if p["role"] == "cell"]
    controls = [p for p in points if p["role"] == "control"]
    assert len(cells) == 2 * 2 * 9 and len(controls) == 4
    assert {(p["organism"], p["nutrient"]) for p in controls} == {
        ("ecoli", None), ("ecoli", 5e3), ("syn3a", None), ("syn3a", 5e3)}
    seeded = design_points(["ecoli"], "gfp_reporter", [1], [1], [None], 3, 7, 2)
    assert [p["seed"] for p in seeded if p["role"] == "cell"] == [7, 8, 9]
    with pytest.raises(InputError, match="give a seed"):
        design_points(["ecoli"], "gfp_reporter", [1], [1], [None], 3, None, 2)
    with pytest.raises(InputError, match="organisms must be among"):
        design_points(["yeast"], "gfp_reporter", [1], [1], [None], 1, None, 2)


def test_the_cache_key_is_what_determines_the_result(tmp_path: Path) -> None:
    from bioxen_flows.orchestration.sweep import point_key

    (point,) = [p for p in design_points(["ecoli"], "gfp_reporter", [1], [5], [None], 1, None,
                                         24) if p["role"] == "cell"]
    assert point_key(point) == point_key(dict(point))
    assert point_key({**point, "replicate": 3}) == point_key(point)  # a label, not an input
    for change in ({"strength": 2.0}, {"copies": 6}, {"hours": 12.0}, {"seed": 1},
                   {"nutrient": 5e3}, {"organism": "syn3a"}):
        assert point_key({**point, **change}) != point_key(point), change
    module = tmp_path / "het.ant"
    module.write_text("w_het = 100; n_het = 300;\n")
    user = {**point, "package": str(module)}
    before = point_key(user)
    module.write_text("w_het = 100; n_het = 310;\n")  # same path, other content
    assert point_key(user) != before


def _sweep(out: Path, strengths: str) -> dict:
    return {"argv": ["sweep", "ecoli", "--package", "gfp_reporter", "--strength", strengths,
                     "--copies", "1,5", "--hours", "2", "--workers", "2", "--max-burden", "60",
                     "--out", str(out), "--json"]}


def test_result_storage_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     bioxen_home: Path) -> None:
    from bioxen_flows.orchestration.sweep import result_storage

    assert result_storage() == (bioxen_home / "prefect-results").resolve()
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", str(tmp_path / "cache"))
    assert result_storage() == (tmp_path / "cache").resolve()
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", "s3-bucket/sweeps")  # a saved block's slug
    assert result_storage() == "s3-bucket/sweeps"


def test_a_repeated_sweep_reuses_every_point(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against a Prefect server: the second identical sweep simulates nothing; an
    overlapping one simulates only its new points. The numbers are the model's."""
    out = tmp_path / "results"
    cache = tmp_path / "cache"
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", str(cache))
    runs = []
    for strengths in ("1,4", "1,4", "1,4,8"):
        assert main(_sweep(out, strengths)["argv"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    first, again, wider = runs
    assert len(list(cache.iterdir())) == 7  # one cached result per point and control
    assert (first["points"], first["reused"], first["controls_reused"]) == (4, 0, 0)
    assert (again["points"], again["reused"], again["controls_reused"]) == (4, 4, 1)
    assert (wider["points"], wider["reused"], wider["controls_reused"]) == (6, 4, 1)

    run_dir = Path(wider["out_dir"])
    assert (out / "latest").resolve() == run_dir.resolve()
    dataset = pd.read_parquet(run_dir / "points")
    assert (run_dir / "points" / "organism=ecoli").is_dir()
    cells = dataset[dataset["role"] == "cell"].set_index(["strength", "copies"])
    assert cells["reused"].sum() == 4 and not cells.loc[(8.0, 1), "reused"]
    assert {"run_id", "run_time", "burden_percent", "protein_per_cell_per_hour",
            "doubling_time_min", "ribosomes_total", "atp_percent"} <= set(dataset.columns)
    # burden rises with expression; the numbers are a fresh cell's
    burden = cells["burden_percent"]
    assert 0 < burden[(1.0, 1)] < burden[(4.0, 1)] < burden[(8.0, 1)]
    cell = Cell("ecoli")
    cell.install("gfp_reporter", copies=5, strength=4)
    cell.grow(120)
    assert cells.loc[(4.0, 5), "growth_rate_per_min"] == pytest.approx(
        cell.metrics()["growth_rate_per_min"], rel=1e-9)
    assert (run_dir / "heatmap-ecoli.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_csv(run_dir / "summary.csv")
    assert len(summary) == 6
    best = wider["best"][0]
    allowed = summary[summary["burden_percent"] <= 60]
    assert best["within_burden_limit"] and best["burden_percent"] <= 60
    assert best["protein_per_cell_per_hour"] == allowed["protein_per_cell_per_hour"].max()

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    keys = {a.key for a in artifact}
    assert {"sweep-design-space-best", "sweep-design-space-report"} <= keys


def test_bad_sweep_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "ecoli", "--strength", "0:10:log3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "log range needs bounds > 0" in err
    assert main(["sweep", "ecoli", "--replicates", "3"]) == 1
    assert "give a seed" in capsys.readouterr().err


def _swept(options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> dict:
    """`bioxen sweep OPTIONS --json` with a result cache of its own: the parsed result."""
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", str(tmp_path / "cache"))
    assert main(["sweep", *options, "--out", str(tmp_path / "out"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_equal_designs_are_computed_once(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """strength x copies enter the model only as their product: (2, 1) and (1, 2) are one
    simulation, computed once and marked in the dataset."""
    result = _swept(["syn3a", "--strength", "1,2", "--copies", "1,2", "--hours", "2",
                     "--workers", "1"], tmp_path, capsys, monkeypatch)
    assert (result["points"], result["equal_designs"]) == (4, 1)
    assert len(list((tmp_path / "cache").iterdir())) == 4  # 3 designs + the control
    cells = pd.read_parquet(Path(result["out_dir"]) / "points").query("role == 'cell'")
    twin = cells[cells["same_design_as"].notna()]
    assert len(twin) == 1
    (strength, copies) = (twin["strength"].iloc[0], twin["copies"].iloc[0])
    other = cells[(cells["strength"] == copies) & (cells["copies"] == strength)]
    assert twin["same_design_as"].iloc[0] == f"strength={copies:g},copies={int(strength)}"
    assert twin["growth_rate_per_min"].iloc[0] == other["growth_rate_per_min"].iloc[0]


def test_a_sweep_killed_mid_way_leaves_no_vm_after_gc(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """kill -9 of a sweep while its cohorts run: its workers end with it, and `bioxen gc
    --yes` at once reaps every cohort VM (their flow's process is provably gone)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from bioxen_flows.vm import list_bio_vms

    code = ("from bioxen_flows.orchestration.sweep import sweep_design_space\n"
            "sweep_design_space(organisms=['ecoli'], strengths=[0.5, 1, 2, 4, 8, 16],"
            " copies=[1, 3], seed=3, hours=24, workers=2, out_dir='out')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                            env={**os.environ, "PREFECT_API_URL": prefect_api_url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not [vm for vm in list_bio_vms() if vm["vm_id"].startswith("sw-")]:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs(workers, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [vm for vm in list_bio_vms() if vm["vm_id"].startswith("sw-")]
    capsys.readouterr()
    assert main(["gc", "--yes", "--min-age", "0"]) == 0
    assert "destroyed sw-" in capsys.readouterr().out
    assert not [vm for vm in list_bio_vms() if vm["vm_id"].startswith("sw-")]


def test_golden_section_finds_an_interior_optimum_and_the_burden_limit() -> None:
    import math

    from bioxen_flows.orchestration.sweep import refine_strength

    def evaluate(strength: float) -> tuple[float, float]:  # yield peaks at 3; burden = 10*s
        return -(math.log(strength) - math.log(3.0)) ** 2, 10.0 * strength

    strength, value, burden = refine_strength(evaluate, 1.0, 10.0, max_burden=100.0)
    assert strength == pytest.approx(3.0, rel=2e-3) and burden <= 100
    strength, value, burden = refine_strength(evaluate, 1.0, 10.0, max_burden=20.0)
    assert strength == pytest.approx(2.0, rel=2e-3) and burden <= 20  # the limit binds


def test_refine_reports_the_optimum_beside_the_grids(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [best] = _swept(["ecoli", "--strength", "0.3,1,3", "--hours", "24", "--max-burden", "20",
                     "--refine"], tmp_path, capsys, monkeypatch)["best"]
    assert best["strength"] == 0.3 and best["burden_percent"] <= 20
    assert 0.3 < best["refined_strength"] < 1.0
    assert best["burden_percent"] < best["refined_burden_percent"] <= 20
    assert best["refined_protein_per_cell_per_hour"] > best["protein_per_cell_per_hour"]
    cell = Cell("ecoli")  # the refined figures are the model's
    cell.install("gfp_reporter", strength=best["refined_strength"])
    cell.grow(1440)
    assert cell.metrics()["growth_rate_per_min"] == pytest.approx(
        best["refined_growth_rate_per_min"], rel=1e-9)
    assert "refined_strength" in pd.read_csv(tmp_path / "out" / "latest" / "best.csv")
    assert main(["sweep", "ecoli", "--seed", "1", "--refine", "--hours", "2"]) == 1
    assert "--refine needs a deterministic sweep" in capsys.readouterr().err


def test_replicated_points_report_mean_sd_and_interval(
    prefect_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _swept(["syn3a", "--strength", "1,4", "--replicates", "3", "--seed", "11",
                     "--hours", "2"], tmp_path, capsys, monkeypatch)
    summary = pd.read_csv(Path(result["out_dir"]) / "summary.csv")
    assert (summary["replicates"] == 3).all()
    for column in ("growth_rate_per_min", "protein_per_cell_per_hour", "burden_percent"):
        low, high = summary[f"{column}_ci95_low"], summary[f"{column}_ci95_high"]
        assert ((low < summary[column]) & (summary[column] < high)).all(), column
    points = pd.read_parquet(Path(result["out_dir"]) / "points").query("role == 'cell'")
    means = points.groupby("strength")["growth_rate_per_min"].mean()
    assert summary.set_index("strength")["growth_rate_per_min"].to_dict() == pytest.approx(
        means.to_dict())
