"""`bioxen export`: the exported model is the VM's model, as two other simulators see it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bioxen_flows.cli import main
from bioxen_flows.engine.cell import Cell
from bioxen_flows.engine.export import export_model
from bioxen_flows.errors import InputError
from bioxen_flows.resources import BioResourceManager
from bioxen_flows.vm import create_bio_vm, load_bio_vm

COLUMNS = {"growth_rate_per_min": "lam", "ribosomes_total": "ribosomes_total",
           "energy_molecules": "a", "protein_gfp": "p_gfp", "mrna_gfp": "m_gfp"}


def test_bare_libroadrunner_reproduces_the_vms_next_hour(tmp_path: Path) -> None:
    """The SBML written by `bioxen export` continues the VM: the next 60 simulated minutes
    of a fresh libroadrunner agree with the VM's own to 1e-6 relative."""
    import roadrunner

    vm = create_bio_vm("exp1", "ecoli")
    vm.start()
    BioResourceManager(vm).allocate_atp(80)
    vm.execute_biological_process(
        'install("gfp_reporter", copies=5, strength=2.5)\nset_nutrient(5000)\ngrow(minutes=45)'
    )
    out = tmp_path / "exp1.xml"
    assert main(["export", "exp1", "--format", "sbml", "--output", str(out)]) == 0

    series = load_bio_vm("exp1").execute_biological_process("grow(minutes=60)")["timeseries"]
    rr = roadrunner.RoadRunner(out.read_text())
    result = rr.simulate(0, 60, 61, selections=["time", *COLUMNS.values()])
    assert len(series) == 61
    for column, symbol in COLUMNS.items():
        vm_values = np.array([row[column] for row in series])
        np.testing.assert_allclose(result[symbol], vm_values, rtol=1e-6, err_msg=column)
    # the caps and the nutrient travelled as parameters
    assert rr.getValue("atp_scale") == pytest.approx(0.8)
    assert rr.getValue("s0") == 5000
    assert rr.getValue("strength_gfp") == 2.5 and rr.getValue("copies_gfp") == 5


def test_antimony_export_is_the_same_model(capsys: pytest.CaptureFixture[str]) -> None:
    vm = create_bio_vm("exp2", "syn3a")
    vm.start()
    vm.execute_biological_process('install("rfp_plasmid")\ngrow(minutes=30)')
    assert main(["export", "exp2", "--format", "antimony"]) == 0
    text = capsys.readouterr().out
    assert "species m_rfp in cell" in text and "copies_rfp = 15" in text
    assert "state at simulated minute 30" in text
    import antimony

    assert antimony.loadAntimonyString(text) >= 0


@pytest.mark.parametrize("organism", ["ecoli", "syn3a", "minimal_cell"])
def test_copasi_reaches_the_same_steady_state(organism: str) -> None:
    """An independent simulator (COPASI, through basico) starting from a state far from
    balanced growth (every amount halved) finds the steady state libroadrunner gives."""
    import basico

    cell = Cell(organism)  # starts in balanced growth, computed with libroadrunner
    expected = cell.metrics()
    snapshot = cell.snapshot()
    snapshot["species"] = {name: 0.5 * value for name, value in snapshot["species"].items()}
    model = basico.load_model_from_string(export_model(snapshot, "sbml"))
    try:
        start = basico.get_parameters(model=model).loc["lam", "initial_value"]
        assert start < 0.5 * expected["growth_rate_per_min"]  # really away from it
        assert basico.run_steadystate(model=model) == 1  # 1: a steady state was found
        values = basico.get_parameters(model=model)["value"]
    finally:
        basico.remove_datamodel(model)
    assert values["lam"] == pytest.approx(expected["growth_rate_per_min"], rel=1e-4)
    assert values["ribosomes_total"] == pytest.approx(expected["ribosomes_total"], rel=1e-4)


def test_bad_format_and_unknown_vm_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="format must be one of sbml, antimony"):
        export_model(Cell("ecoli").snapshot(), "matlab")
    assert main(["export", "nope"]) == 1
    assert "no VM 'nope'" in capsys.readouterr().err
