"""Progress that moves (issue 26): the compare bar advances within a VM (simulated minutes
grown in the worker processes), shows an ETA from its first seconds, and log lines print
above it instead of onto it; `bioxen sweep` has a bar of points."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest

from bioxen_flows import progress
from bioxen_flows.engine.cell import Cell

pexpect = pytest.importorskip("pexpect")
BAR = re.compile(r"(\d+\.\d)/(\d+) (VMs|points) \x1b\[33m(\d:\d\d:\d\d)\x1b\[0m ETA "
                 r"\x1b\[36m([-:\d]+)")


def test_a_growing_cell_reports_its_simulated_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    with progress.collecting() as folder:
        assert os.environ[progress.ENV] == str(folder)
        cell = Cell("syn3a", seed=3)
        cell.grow(30)
        cell.grow(15)
        assert progress.minutes_done(folder) == pytest.approx(45)
        Cell("ecoli").grow(60)  # a deterministic cell too
        assert progress.minutes_done(folder) == pytest.approx(105)
    assert not folder.exists() and progress.ENV not in os.environ
    Cell("syn3a").grow(10)  # no folder: nothing written, nothing fails


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    child = pexpect.spawn(sys.executable, ["-m", "bioxen_flows", *args], encoding="utf-8",
                          timeout=300, dimensions=(40, 120), env={**os.environ, **env})
    seen = io.StringIO()
    child.logfile_read = seen
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen.getvalue()[-2000:]
    return seen.getvalue()


def test_the_compare_bar_moves_within_a_vm_with_an_eta_and_logs_above_it(
    prefect_api_url: str, tmp_path: Path
) -> None:
    raw = _run_on_a_terminal(
        ["--log-level", "INFO", "compare", "ecoli", "--replicates", "2", "--hours", "24",
         "--seed", "3", "--workers", "2", "--out", str(tmp_path / "out")],
        {"PREFECT_API_URL": prefect_api_url, "COLUMNS": "120"})
    shown = [(float(done), int(total), eta) for done, total, _, _, eta in BAR.findall(raw)]
    assert shown and all(total == 2 for _, total, _ in shown)
    within = sorted({done for done, _, _ in shown if 0 < done < 1})
    # the first VMs' minutes, before any VM finished (a cell reports every 0.5 s, so an idle
    # machine that grows a 24-h E. coli cell in ~2.5 s shows one or two such values)
    assert within, shown
    first_eta = next(done for done, _, eta in shown if eta != "-:--:--")
    assert first_eta < 2.0  # an ETA before the run is done (on a fast machine, the first
    # VM may end before rich has two samples to estimate a rate from)
    # a log line starts on a cleared line (above the bar), never right after the bar's text
    assert re.search(r"\x1b\[2K\d\d:\d\d:\d\d\.\d{3} \| INFO +\| Flow run '[^']+' - "
                     r"comparing ecoli", raw)
    assert not re.search(r"-:--:--(\x1b\[0m)?\d\d:\d\d:\d\d\.\d{3} \|", raw)


def test_a_sweep_has_a_bar_of_points(prefect_api_url: str, tmp_path: Path) -> None:
    raw = _run_on_a_terminal(
        ["sweep", "ecoli", "--package", "gfp_reporter", "--strength", "1,4", "--copies", "1",
         "--hours", "2", "--out", str(tmp_path / "out")],
        {"PREFECT_API_URL": prefect_api_url, "COLUMNS": "120"})
    shown = [(float(done), int(total), unit) for done, total, unit, _, _ in BAR.findall(raw)]
    assert shown and {(total, unit) for _, total, unit in shown} == {(3, "points")}
    assert max(done for done, _, _ in shown) > 0


def test_monitor_shows_the_clock_of_a_program_running_in_another_process() -> None:
    import json
    import subprocess

    from tests.helpers import data, ok

    ok("create", "s1", "ecoli", "--seed", "1", "--auto-start")
    program = subprocess.Popen([sys.executable, "-m", "bioxen_flows", "execute", "s1",
                                "grow(minutes=1440)"], stdout=subprocess.DEVNULL)
    seen = []
    try:
        while program.poll() is None:
            sample = json.loads(ok("monitor", "s1", "--json", "--count", "1").stdout)
            seen.append((sample["program_running"], sample["simulated_time_min"]))
    finally:
        program.wait(timeout=120)
    assert program.returncode == 0
    running = [minutes for is_running, minutes in seen if is_running]
    assert running and all(0 <= m < 1440 for m in running), seen
    assert any(m > 0 for m in running), seen  # the clock moved while the program ran
    after = data("monitor", "s1", "--count", "1")
    assert after["program_running"] is False and after["simulated_time_min"] == 1440
