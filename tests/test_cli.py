"""The README's first command, driven through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def bioxen(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bioxen_flows", *args],
        cwd=cwd, capture_output=True, encoding="utf-8", timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_compare_prints_a_table_and_writes_results(tmp_path):
    """The README's first command: Prefect's embedded (ephemeral) server, nothing set up."""
    env = {"PREFECT_HOME": str(tmp_path / "prefect_home")}
    run = bioxen("compare", "--hours", "0.5", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "ecoli" in run.stdout and "doubling_time_min" in run.stdout
    run_dir = results_dir(run.stdout, tmp_path / "bioxen_results", tmp_path)
    summary = pd.read_csv(run_dir / "summary.csv").set_index("organism")
    assert list(summary.index) == ["syn3a", "ecoli", "minimal_cell"]
    assert summary.loc["ecoli", "doubling_time_min"] == pytest.approx(28.7, abs=0.1)
    assert summary.loc["syn3a", "doubling_time_min"] == pytest.approx(105, rel=0.1)
    series = pd.read_parquet(run_dir / "timeseries.parquet")
    assert len(series) == 3 * 31
    assert (run_dir / "growth.png").exists()
    assert (tmp_path / "bioxen_results" / "latest" / "summary.csv").exists()


def results_dir(stdout: str, out: Path, cwd: Path) -> Path:
    """The run directory the command says it wrote (a new one under `out` per run)."""
    [line] = [line for line in stdout.splitlines() if line.startswith("results in ")]
    run_dir = Path(line.removeprefix("results in ").split(" (")[0])
    if not run_dir.is_absolute():  # relative to the command's working directory
        run_dir = cwd / run_dir
    assert run_dir.parent == out
    return run_dir


def test_compare_with_a_package_reports_its_burden(tmp_path, prefect_api_url):
    run = bioxen("compare", "syn3a", "--hours", "1", "--package", "gfp_reporter",
                 "--out", "out", cwd=tmp_path, env={"PREFECT_API_URL": prefect_api_url})
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(results_dir(run.stdout, tmp_path / "out", tmp_path) / "summary.csv")
    assert summary.loc[0, "burden_percent"] > 1
    assert summary.loc[0, "protein_gfp"] > 0


def test_bad_organism_exits_1_with_one_line(tmp_path):
    run = bioxen("compare", "yeast", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "bioxen: error: organisms must be among syn3a, ecoli, minimal_cell; got ['yeast']"
    ]
    assert not (tmp_path / "bioxen_results").exists()


HEARTBEAT_IN_A_CLI_RUN = """
from prefect.settings import get_current_settings
from bioxen_flows.cli.prefect_session import interactive_run
with interactive_run():
    print(get_current_settings().flows.heartbeat_frequency)
"""


@pytest.mark.parametrize("user_setting,expected", [(None, "None"), ("60", "60")])
def test_command_line_runs_send_no_heartbeats_unless_the_user_asks(user_setting, expected):
    """Stopping Prefect's heartbeat thread costs up to a second after every run; a run from
    the command line reports its own end, so it sends none, unless the user set them."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"}
    if user_setting is not None:
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = user_setting
    run = subprocess.run([sys.executable, "-c", HEARTBEAT_IN_A_CLI_RUN], env=env,
                         capture_output=True, encoding="utf-8", timeout=120, check=True)
    assert run.stdout.split() == [expected]


def test_a_reader_that_stops_early_gets_no_traceback():
    """`bioxen list --json | head -c 1` on a big store: the program ends quietly when its
    stdout closes, whether main() or the final flush meets the closed pipe."""
    from bioxen_flows.vm import create_bio_vm

    for i in range(300):
        create_bio_vm(f"vm{i:03d}", "minimal_cell")
    proc = subprocess.Popen([sys.executable, "-m", "bioxen_flows", "list", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout.read(1) == b"["
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 1)
    assert "Traceback" not in err and "Exception ignored" not in err, err
