"""Process programs run against the model, all or nothing; results feed pandas directly."""

from __future__ import annotations

import pandas as pd
import pytest

from bioxen_flows.engine.cell import Cell
from bioxen_flows.engine.process_language import ProcessLanguageError
from bioxen_flows.engine.programs import run_program

PROGRAM = """
# a reporter, induced lac operon, then two hours of growth
install("gfp_reporter")
install("lac_operon")
manage_operons(["lac"], "induce")
grow(minutes=120)
"""


def test_program_returns_time_series_and_summary():
    cell = Cell("ecoli")
    result = run_program(cell, PROGRAM)
    frame = pd.DataFrame(result["timeseries"])
    assert len(frame) == 121
    assert frame["time_min"].iloc[-1] == pytest.approx(120)
    assert {"growth_rate_per_min", "atp_percent", "protein_gfp", "protein_lacZ"} <= set(frame)
    assert frame["protein_lacZ"].is_monotonic_increasing
    summary = result["summary"]
    assert summary["simulated_time_min"] == pytest.approx(120)
    assert summary["operon_states"] == {"lac": "induced"}
    assert summary["growth_rate_per_min"] == pytest.approx(frame["growth_rate_per_min"].iloc[-1])
    assert result["calls"][0] == 'install("gfp_reporter")'


def test_syn3a_transcription_control_and_nutrient():
    cell = Cell("syn3a")
    result = run_program(
        cell,
        'install("gfp_reporter")\nstop_transcription("gfp")\ngrow(60)\n'
        "set_nutrient(level=1000)\ngrow(60)",
    )
    frame = pd.DataFrame(result["timeseries"])
    assert frame["protein_gfp"].iloc[-1] == 0
    assert result["summary"]["nutrient_molecules"] == 1000
    # starving the cell slows it down
    assert frame["growth_rate_per_min"].iloc[-1] < frame["growth_rate_per_min"].iloc[0]


def test_runtime_error_rolls_back_the_whole_program():
    cell = Cell("ecoli")
    before = cell.metrics()
    with pytest.raises(ValueError, match=r"line 3: .*operon .nope.; available: none"):
        run_program(cell, 'install("gfp_reporter")\ngrow(30)\nmanage_operons(["nope"], "induce")')
    after = cell.metrics()
    assert after["installed_packages"] == [] and after["simulated_time_min"] == 0
    assert after["growth_rate_per_min"] == pytest.approx(before["growth_rate_per_min"])


def test_hostile_program_is_rejected_before_anything_runs():
    cell = Cell("ecoli")
    with pytest.raises(ProcessLanguageError, match="line 2"):
        run_program(cell, "grow(30)\n__import__('os').system('touch /tmp/x')")
    assert cell.time == 0


def test_organism_gating_lists_allowed_calls():
    with pytest.raises(ProcessLanguageError, match="allowed calls: grow, install"):
        run_program(Cell("syn3a"), 'manage_operons(["lac"], "induce")')


def test_snapshot_restore_reproduces_the_same_numbers():
    cell = Cell("ecoli")
    run_program(cell, 'install("rfp_plasmid", copies=20)\ngrow(30)')
    snap = cell.snapshot()
    first = cell.grow(45).to_frame()
    cell.restore(snap)
    second = cell.grow(45).to_frame()
    pd.testing.assert_frame_equal(first, second)
    clone = Cell.from_snapshot(snap)
    pd.testing.assert_frame_equal(first, clone.grow(45).to_frame(), rtol=1e-9)


def run_stochastic(seed: int) -> pd.DataFrame:
    cell = Cell("syn3a", stochastic=True, seed=seed)
    return pd.DataFrame(run_program(cell, 'install("gfp_reporter")\ngrow(10)')["timeseries"])


def test_stochastic_mode_is_reproducible_with_a_seed():
    a, b, c = run_stochastic(7), run_stochastic(7), run_stochastic(8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    # counts are whole molecules and growth stays near the deterministic value
    assert (a["protein_gfp"] % 1 == 0).all()
    ode = Cell("syn3a")
    ode.install("gfp_reporter")
    ode.grow(10)
    assert a["growth_rate_per_min"].iloc[-1] == pytest.approx(
        ode.metrics()["growth_rate_per_min"], rel=0.15
    )


def test_stochastic_mode_needs_a_seed():
    with pytest.raises(ValueError, match="seed"):
        Cell("syn3a", stochastic=True)


def test_stochastic_snapshot_restore_replays_the_same_trajectory():
    cell = Cell("syn3a", stochastic=True, seed=3)
    cell.install("gfp_reporter")
    cell.grow(5)
    snap = cell.snapshot()
    first = cell.grow(5).to_frame()
    cell.grow(5)
    cell.restore(snap)
    pd.testing.assert_frame_equal(first, cell.grow(5).to_frame())
    pd.testing.assert_frame_equal(first, Cell.from_snapshot(snap).grow(5).to_frame())


def test_install_in_a_program_keeps_the_package_copy_number():
    cell = Cell("ecoli")
    summary = run_program(cell, 'install("rfp_plasmid")\ngrow(5)')["summary"]
    assert summary["plasmid_count"] == 15
    other = Cell("ecoli")
    assert run_program(other, 'install("rfp_plasmid", 40)')["summary"]["plasmid_count"] == 40
