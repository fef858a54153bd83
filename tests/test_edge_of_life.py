"""Cells at the edge of life: starved, energy-capped to almost nothing, or with their guest
genes silenced, a cell reports growth 0 (never a tiny negative), no doubling time (inf in
the API, null in JSON, "no growth" in tables), no negative amount, and can be fed again.

Each case runs on every organism, deterministic and stochastic, through the VM API (so
the state store's snapshot checks are part of it)."""

from __future__ import annotations

import json
import math

import pytest

from bioxen_flows.cli import main
from bioxen_flows.engine.cell import Cell
from bioxen_flows.resources import BioResourceManager
from bioxen_flows.vm import create_bio_vm, load_bio_vm

ORGANISMS = ("syn3a", "ecoli", "minimal_cell")
MODES = {"ode": None, "stochastic": {"simulation": {"stochastic": True, "seed": 5}}}
# short enough for a stochastic E. coli cell (~13 simulated min per CPU second)
STARVE_MIN, REFEED_MIN = 60, 30


def _vm(organism: str, mode: str, name: str):  # noqa: ANN202
    vm = create_bio_vm(f"{name}-{organism}-{mode}", organism, config=MODES[mode])
    vm.start()
    return vm


def _assert_not_growing(summary: dict) -> None:
    assert summary["growth_rate_per_min"] == 0.0
    assert summary["doubling_time_min"] == math.inf
    assert summary["atp_percent"] >= 0.0 and summary["elongation_rate_aa_per_min"] >= 0.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("organism", ORGANISMS)
def test_a_starved_cell_stops_growing_and_grows_again_when_fed(organism: str, mode: str) -> None:
    vm = _vm(organism, mode, "starved")
    starved = vm.execute_biological_process(
        f"set_nutrient(0)\ngrow(minutes={STARVE_MIN})")["summary"]
    _assert_not_growing(starved)
    again = load_bio_vm(vm.vm_id)  # the stored snapshot loads: no negative amount in it
    fed = again.execute_biological_process(
        f"set_nutrient(10000)\ngrow(minutes={REFEED_MIN})")["summary"]
    assert fed["growth_rate_per_min"] > 0.0
    assert math.isfinite(fed["doubling_time_min"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("organism", ORGANISMS)
def test_an_energy_cap_near_zero_arrests_the_cell_and_lifting_it_revives_it(
    organism: str, mode: str
) -> None:
    vm = _vm(organism, mode, "capped")
    BioResourceManager(vm).allocate_atp(0.001)
    capped = vm.execute_biological_process(f"grow(minutes={STARVE_MIN})")["summary"]
    assert capped["growth_rate_per_min"] >= 0.0
    assert capped["growth_rate_per_min"] < 0.05 * Cell(organism).metrics()["growth_rate_per_min"]
    BioResourceManager(vm).allocate_atp(100)
    revived = vm.execute_biological_process(f"grow(minutes={REFEED_MIN})")["summary"]
    assert revived["growth_rate_per_min"] > capped["growth_rate_per_min"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("organism", ORGANISMS)
def test_silenced_guest_genes_leave_a_growing_cell_with_nothing_negative(
    organism: str, mode: str
) -> None:
    """All transcription of the guest stopped (operons repressed on E. coli): its mRNA and
    protein decay towards 0, never below, and the host keeps growing."""
    vm = _vm(organism, mode, "silenced")
    if organism == "ecoli":
        program = 'install("lac_operon")\nmanage_operons(["lac"], "repress")'
    else:
        program = 'install("gfp_reporter")\nstop_transcription(["gfp"])'
    summary = vm.execute_biological_process(
        f"{program}\ngrow(minutes={STARVE_MIN})")["summary"]
    assert summary["growth_rate_per_min"] > 0.0
    assert all(v >= 0.0 for v in summary["protein_molecules"].values())


@pytest.mark.parametrize("organism", ORGANISMS)
def test_integration_noise_is_zero_in_the_cell_and_its_snapshot(organism: str) -> None:
    cell = Cell(organism)
    cell.set_nutrient(0)
    cell.grow(STARVE_MIN)
    amounts = cell.snapshot()["species"]
    assert min(amounts.values()) >= 0.0
    assert amounts["a"] == 0.0  # the energy the integrator left at ~1e-61 (or -2e-61)
    assert cell.metrics()["growth_rate_per_min"] == 0.0
    noisy = {**cell.snapshot(), "species": {**amounts, "a": -1e-100}}
    assert Cell.from_snapshot(noisy).value("a") == 0.0  # a stored snapshot of old loads too


def test_the_command_line_says_no_growth(capsys: pytest.CaptureFixture[str]) -> None:
    """Tables say "no growth" with no 40-digit number; JSON says null."""
    create_bio_vm("cli-starved", "syn3a").start()
    program = ["set_nutrient(0)", f"grow(minutes={STARVE_MIN})"]
    assert main(["execute", "cli-starved", *program]) == 0
    table = capsys.readouterr().out
    assert "no growth" in table and not any(len(w) > 20 for w in table.split())
    assert main(["execute", "cli-starved", "grow(minutes=10)", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["doubling_time_min"] is None and summary["growth_rate_per_min"] == 0.0
