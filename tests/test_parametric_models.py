"""A package's copies and strength are model parameters set after the model loads: one
compiled model per (organism, package set, mode), with results equal to a model compiled
with the values written into its text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import roadrunner

from bioxen_flows.engine.cell import Cell
from bioxen_flows.model.loader import antimony_to_sbml
from bioxen_flows.model.packages import user_module

MODULE = "  w_foo = 3.5; n_foo = 250;"


def _package(kind: str):  # -> a Package, or a built-in's name
    return user_module("foo_mod", MODULE, source="test") if kind == "user" else kind


def _recompiled(cell: Cell, start: dict[str, float], minutes: float) -> np.ndarray:
    """The cell's model compiled with its copies and strengths written into the text (as
    every point of a sweep once was), run from the same state."""
    text = cell.model_text()
    for package in cell.packages:
        for gene in package.genes:
            g = gene.gene_id
            text = text.replace(f"copies_{g} = 1; strength_{g} = 1;",
                                f"copies_{g} = {package.copies}; "
                                f"strength_{g} = {package.strength!r};")
    assert not re.search(r"strength_\w+ = 1;", text)
    rr = roadrunner.RoadRunner(antimony_to_sbml(text))
    for name, value in start.items():
        rr.setValue(name, value)
    return np.asarray(rr.simulate(0, minutes, int(minutes) + 1, selections=cell._selections))


@pytest.mark.parametrize("organism", ["ecoli", "syn3a", "minimal_cell"])
@pytest.mark.parametrize(("kind", "copies", "strength"),
                         [("gfp_reporter", 3, 2.5), ("rfp_plasmid", 20, 0.7), ("user", 4, 1.7)])
def test_parameters_set_after_load_equal_values_compiled_into_the_model(
    organism: str, kind: str, copies: int, strength: float
) -> None:
    cell = Cell(organism)
    cell.install(_package(kind), copies=copies, strength=strength)
    start = cell._species_amounts()
    here = cell.grow(600).values
    reference = _recompiled(cell, start, 600)
    assert np.allclose(here, reference, rtol=1e-9, atol=0)


def test_cells_of_other_copies_and_strengths_share_one_model_text() -> None:
    texts = set()
    for copies, strength in ((1, 1.0), (5, 2.0), (40, 0.25)):
        cell = Cell("ecoli")
        cell.install("gfp_reporter", copies=copies, strength=strength)
        texts.add(cell.model_text())
        assert cell.value("copies_gfp") == copies and cell.value("strength_gfp") == strength
    assert len(texts) == 1


SWEEP_IN_A_NEW_PROCESS = textwrap.dedent("""
    import roadrunner
    from bioxen_flows.engine.cell import Cell
    compiles = []
    RoadRunner = roadrunner.RoadRunner
    def counting(*args):
        if args:
            compiles.append(1)
        return RoadRunner(*args)
    roadrunner.RoadRunner = counting
    for strength in (0.5, 1.0, 2.0, 4.0, 8.0):
        for copies in (1, 3):
            cell = Cell("syn3a")
            cell.install("gfp_reporter", copies=copies, strength=strength)
            cell.grow(60)
    print(len(compiles))
""")


def test_ten_design_points_compile_one_model(tmp_path) -> None:
    """What a sweep's points cost: before, each (strength, copies) compiled its own model
    (~130-310 ms); now the organism's model with the package compiles once."""
    env = {**os.environ, "BIOXEN_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", SWEEP_IN_A_NEW_PROCESS], env=env, check=True,
                         capture_output=True, encoding="utf-8", timeout=300)
    assert int(run.stdout.split()[-1]) == 2  # the host model (balanced growth) + with gfp


def test_a_snapshot_and_an_export_keep_copies_and_strength() -> None:
    from bioxen_flows.engine.export import export_model

    cell = Cell("syn3a")
    cell.install("gfp_reporter", copies=6, strength=3.0)
    restored = Cell.from_snapshot(cell.snapshot())
    assert restored.value("copies_gfp") == 6 and restored.value("strength_gfp") == 3.0
    assert np.array_equal(restored.grow(30).values, cell.grow(30).values)
    antimony = export_model(cell.snapshot(), "antimony")
    assert "copies_gfp = 6.0;" in antimony and "strength_gfp = 3.0;" in antimony


@pytest.mark.parametrize("simulation", [{}, {"stochastic": True, "seed": 5}])
def test_designs_explored_on_one_model_equal_a_vm_per_design(bioxen_home, simulation) -> None:
    """A sweep cohort's points (one VM, one loaded model, copies and strength set per point)
    give what a VM per point running its own program gives."""
    from bioxen_flows.vm import create_bio_vm

    designs = [("gfp_reporter", 1, 0.5), ("gfp_reporter", 4, 2.0), (None, 1, 1.0),
               ("rfp_plasmid", 10, 1.5)]
    cohort = create_bio_vm("cohort", "syn3a", "basic", {"simulation": simulation})
    cohort.start()
    explored = list(cohort.explore_designs(designs, 90))
    for k, (package, copies, strength) in enumerate(designs):
        vm = create_bio_vm(f"single-{k}", "syn3a", "basic", {"simulation": simulation})
        vm.start()
        program = (f'install("{package}", copies={copies}, strength={strength})\n'
                   if package else "")
        alone = vm.execute_biological_process(program + "grow(minutes=90)")["summary"]
        for key in ("growth_rate_per_min", "ribosomes_total", "protein_molecules"):
            assert explored[k][key] == pytest.approx(alone[key], rel=1e-9), (k, key)
    assert cohort.get_biological_metrics()["simulated_time_min"] == 0  # untouched
