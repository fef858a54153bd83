"""The compiled exact stochastic engine: the same process as libroadrunner's Gillespie,
cells that divide at the model's growth rate, reproducible across processes, compiled once
per machine, and refusing what it cannot run with one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bioxen_flows.engine import ssa, ssa_codegen
from bioxen_flows.engine.cell import Cell
from bioxen_flows.errors import InputError

ORGANISMS = ("ecoli", "syn3a", "minimal_cell")
# CI-sized ensembles: libroadrunner's Gillespie is the slow side (E. coli ~15 simulated
# minutes per CPU second). bench/stochastic.py --validate runs the larger ensembles of
# docs/model.md.
REPLICATES = 16
MINUTES = {"ecoli": 10, "syn3a": 40, "minimal_cell": 45}
SLOW = ("ribosomes_total", "transporters", "housekeeping", "growth_rate_per_min")


def _ensemble(organism: str, engine: str) -> dict[str, np.ndarray]:
    """Per replicate: the final value of each slow quantity, and every per-minute sample
    of the free ribosomes after the first five minutes (they turn over in seconds)."""
    finals: dict[str, list[float]] = {name: [] for name in SLOW}
    free: list[np.ndarray] = []
    for replicate in range(REPLICATES):
        cell = Cell(organism, stochastic=True, seed=1000 + replicate, stochastic_engine=engine,
                    division=False, burn_in=False)
        frame = cell.grow(MINUTES[organism]).to_frame()
        for name in SLOW:
            finals[name].append(float(frame[name].iloc[-1]))
        free.append(frame["ribosomes_free"].to_numpy()[5:])
    return {**{k: np.array(v) for k, v in finals.items()}, "ribosomes_free": np.concatenate(free)}


@pytest.mark.parametrize("organism", ORGANISMS)
def test_the_compiled_engine_simulates_the_same_process_as_libroadrunner(organism: str) -> None:
    """Same model, same start, fixed size: ensemble means within 3 standard errors, and the
    free-ribosome pool (hundreds of nearly independent samples) with the same mean and CV
    within 15 %."""
    compiled, reference = (_ensemble(organism, e) for e in ("compiled", "roadrunner"))
    for name in (*SLOW, "ribosomes_free"):
        a, b = compiled[name], reference[name]
        se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert abs(a.mean() - b.mean()) <= 3 * se + 1e-12 * abs(b.mean()), (name, a.mean(),
                                                                              b.mean(), se)
    a, b = compiled["ribosomes_free"], reference["ribosomes_free"]
    cv_a, cv_b = a.std(ddof=1) / a.mean(), b.std(ddof=1) / b.mean()
    assert abs(cv_a - cv_b) <= 0.15 * cv_b, (cv_a, cv_b)


@pytest.mark.parametrize(("organism", "minutes"),
                         [("ecoli", 1500), ("syn3a", 5000), ("minimal_cell", 8000)])
def test_a_dividing_lineage_grows_at_the_models_growth_rate(organism: str, minutes: int) -> None:
    """ln 2 over the mean interdivision time is within 3 % of the deterministic model's
    growth rate; the cell's size follows its mass (a sawtooth between ~0.7 and ~1.4)."""
    cell = Cell(organism, stochastic=True, seed=11)
    series = cell.grow(minutes).to_frame()
    lam_ode = Cell(organism).metrics()["growth_rate_per_min"]
    gaps = np.diff(cell.division_times)
    assert gaps.size >= 15
    assert math.log(2) / gaps.mean() == pytest.approx(lam_ode, rel=0.03)
    metrics = cell.metrics()
    assert metrics["divisions"] == len(cell.division_times) == series["generation"].iloc[-1]
    assert 0.5 < series["cell_size"].min() < 0.85 < 1.2 < series["cell_size"].max() < 1.6
    drops = np.flatnonzero(np.diff(series["generation"].to_numpy()))
    ribosomes = series["ribosomes_total"].to_numpy()
    assert all(ribosomes[i + 1] < 0.75 * ribosomes[i] for i in drops)  # halved at division


def test_division_off_keeps_a_cell_of_fixed_size() -> None:
    cell = Cell("syn3a", stochastic=True, seed=3, division=False)
    series = cell.grow(300).to_frame()
    assert (series["cell_size"] == 1.0).all() and (series["generation"] == 0).all()
    assert "divisions" not in cell.metrics()


def test_replicates_start_from_different_states_after_burn_in() -> None:
    starts = {Cell("syn3a", stochastic=True, seed=s).grow(1).column("ribosomes_total")[0]
              for s in range(6)}
    assert len(starts) >= 5  # not the shared deterministic state (499)


SNAPSHOT_THEN_GROW = textwrap.dedent("""
    import json, sys
    from bioxen_flows.engine.cell import Cell
    cell = Cell.from_snapshot(json.loads(sys.stdin.read()))
    print(json.dumps(cell.grow(40).values.tolist()))
""")


def test_a_snapshot_restored_in_another_process_replays_the_same_trajectory() -> None:
    cell = Cell("ecoli", stochastic=True, seed=21)
    cell.install("gfp_reporter")
    cell.grow(25)
    snap = json.loads(json.dumps(cell.snapshot()))
    here = cell.grow(40).values.tolist()
    there = subprocess.run([sys.executable, "-c", SNAPSHOT_THEN_GROW], input=json.dumps(snap),
                           capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(there.stdout) == here


COUNT_COMPILES = textwrap.dedent("""
    from bioxen_flows.engine import ssa
    from bioxen_flows.engine.cell import Cell
    cell = Cell("minimal_cell", stochastic=True, seed=2)
    cell.install("gfp_reporter", strength=3)
    cell.grow(5)
    print(ssa.compiles(), len(ssa._KERNELS))
""")


def _compiles_in_new_process(home: Path) -> list[int]:
    env = {**__import__("os").environ, "BIOXEN_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", COUNT_COMPILES], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return [int(n) for n in out.split()]


def test_a_kernel_compiles_once_per_machine_and_a_damaged_one_is_compiled_again(
    tmp_path: Path,
) -> None:
    assert _compiles_in_new_process(tmp_path) == [1, 1]  # a new machine: compiled
    assert _compiles_in_new_process(tmp_path) == [0, 1]  # then loaded, in any process
    (library,) = tmp_path.glob("ssa-kernels/*/ssa_*.so")
    library.write_bytes(library.read_bytes()[:1000])  # truncated
    assert _compiles_in_new_process(tmp_path) == [1, 1]  # refused, compiled again
    assert _compiles_in_new_process(tmp_path) == [0, 1]


def _sbml(body: str) -> str:
    from bioxen_flows.model.loader import antimony_to_sbml

    return antimony_to_sbml(f"model whole_cell\n compartment cell = 1;\n{body}\nend\n")


@pytest.mark.parametrize("law", ["3 - S", "1e308 * 1e308 * S", "(S - 5) / (S - 5)"])
def test_a_rate_that_goes_negative_infinite_or_nan_is_one_line_and_changes_nothing(
    law: str,
) -> None:
    kernel = ssa.kernel_for(_sbml(f" species S in cell; S = 5; J: -> S; {law};"))
    amounts = np.array([5.0])
    with pytest.raises(InputError, match="'J' became negative, NaN or infinite") as bad:
        ssa.run_kernel(kernel, amounts, np.zeros(len(kernel.parameters)),
                       np.linspace(0, 10, 11), seed=1, max_events=1000, division=None,
                       lineage=None, check=None)
    assert "\n" not in str(bad.value)
    assert amounts.tolist() == [5.0]


def test_model_names_never_reach_the_generated_source() -> None:
    source = ssa_codegen.generate(_sbml(
        " species evil_species_name in cell; evil_parameter_name = 2;"
        " evil_rule_name := evil_parameter_name * evil_species_name;"
        " evil_reaction_name: -> evil_species_name; evil_rule_name + 1;"
    )).source
    assert "evil" not in source


@pytest.mark.parametrize(("body", "reason"), [
    (" species S in cell; S = 1; J: -> S; 1; at (time > 5): S = 0;", "events"),
    (" species S in cell; S = 1; x = 0; x' = 1; J: -> S; x;", "rate or algebraic rules"),
    (" species S in cell; S = 1; J: -> 2.5 S; 1;", "non-integer stoichiometry"),
])
def test_what_the_compiled_engine_cannot_run_is_named(body: str, reason: str) -> None:
    with pytest.raises(ssa.Unsupported, match=reason):
        ssa_codegen.generate(_sbml(body))


def test_roadrunner_engine_with_division_is_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="division=False"):
        Cell("syn3a", stochastic=True, seed=1, stochastic_engine="roadrunner", division=True)
    reference = Cell("syn3a", stochastic=True, seed=1, stochastic_engine="roadrunner")
    assert not reference.division  # the reference runs a cell of fixed size
    with pytest.raises(InputError, match="stochastic_engine must be one of"):
        Cell("syn3a", stochastic=True, seed=1, stochastic_engine="tau-leaping")


RACE = textwrap.dedent("""
    import sys, time
    from bioxen_flows.engine import ssa
    from bioxen_flows.model.loader import antimony_to_sbml
    sbml = antimony_to_sbml("model whole_cell\\n compartment cell = 1; species S in cell; S = 0;"
                            " J: -> S; 2.5; K: S -> ; 0.5*S;\\nend\\n")
    while time.time() < float(sys.argv[1]):
        time.sleep(0.001)
    ssa.kernel_for(sbml)
    print(ssa.compiles())
""")


def test_processes_that_need_the_same_new_kernel_compile_it_once(tmp_path: Path) -> None:
    import os
    import time

    env = {**os.environ, "BIOXEN_HOME": str(tmp_path)}
    start = str(time.time() + 3.0)  # after every interpreter has started
    runs = [subprocess.Popen([sys.executable, "-c", RACE, start], env=env, text=True,
                             stdout=subprocess.PIPE) for _ in range(3)]
    compiled = [int(run.communicate(timeout=120)[0]) for run in runs]
    assert sorted(compiled) == [0, 0, 1]


@pytest.mark.parametrize("change", [
    {"stochastic_engine": "tau-leaping"}, {"stochastic_engine": ["compiled"]},
    {"division": "yes"}, {"burned_in": 1},
    {"lineage": {"birth_mass": -1.0, "generation": 0, "birth_time": 0.0, "divisions": 0,
                 "division_times": []}},
    {"lineage": {"birth_mass": 1e8, "generation": True, "birth_time": 0.0, "divisions": 0,
                 "division_times": []}},
    {"lineage": {"birth_mass": 1e8, "generation": 0, "birth_time": 0.0, "divisions": 0,
                 "division_times": [float("nan")]}},
    {"lineage": {"birth_mass": 1e8, "generation": 0, "birth_time": 0.0, "divisions": 0,
                 "division_times": [1.0] * 100_000}},
    {"lineage": {"birth_mass": 1e8, "generation": 0, "birth_time": 0.0, "divisions": 0,
                 "division_times": [], "extra": 1}},
    {"lineage": "born yesterday"},
])
def test_a_hostile_snapshot_of_a_dividing_cell_is_one_line_and_changes_nothing(change) -> None:
    cell = Cell("syn3a", stochastic=True, seed=3)
    cell.grow(5)
    before = cell.snapshot()
    with pytest.raises(InputError) as refused:
        cell.restore({**before, **change})
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError):
        Cell.from_snapshot({**before, **change})
    assert cell.snapshot() == before


@pytest.mark.parametrize("simulation", [
    {"stochastic": True, "seed": 1, "stochastic_engine": "gillespie"},
    {"stochastic": True, "seed": 1, "stochastic_engine": "roadrunner", "division": True},
    {"stochastic": True, "seed": 1, "division": "often"},
])
def test_a_vm_config_with_a_bad_engine_choice_is_refused(bioxen_home, simulation) -> None:
    from bioxen_flows.errors import BioXenError
    from bioxen_flows.vm import create_bio_vm

    with pytest.raises(BioXenError) as refused:
        create_bio_vm("bad-engine", "syn3a", "basic", {"simulation": simulation})
    assert "stochastic_engine" in str(refused.value) or "division" in str(refused.value)
