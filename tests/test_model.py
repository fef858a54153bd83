"""The cell model reproduces Weisse et al. 2015 and the calibrated organism targets."""

from __future__ import annotations

import math

import pytest

from bioxen_flows.engine.cell import Cell
from bioxen_flows.model.builder import host_model_text
from bioxen_flows.model.loader import antimony_to_sbml
from bioxen_flows.organisms.profiles import get_profile, get_supported_biological_types


def test_ecoli_reaches_published_steady_state():
    cell = Cell("ecoli")
    cell.grow(1e5, points=2)
    m = cell.metrics()
    assert m["growth_rate_per_min"] == pytest.approx(0.02411, rel=1e-3)
    assert m["doubling_time_min"] == pytest.approx(28.7, abs=0.1)
    assert m["ribosomes_total"] == pytest.approx(3190, rel=0.01)
    assert m["elongation_rate_aa_per_min"] == pytest.approx(762, rel=0.005)


def test_bare_roadrunner_on_host_text_gives_the_same_numbers():
    import roadrunner

    rr = roadrunner.RoadRunner(antimony_to_sbml(host_model_text()))
    rr.simulate(0, 1e5, 2)
    assert rr["lam"] == pytest.approx(0.02411, rel=1e-3)
    assert rr["ribosomes_total"] == pytest.approx(Cell("ecoli").metrics()["ribosomes_total"])


def test_heterologous_gene_wp_100_halves_growth(heterologous_module):
    cell = Cell("ecoli")
    cell.install(str(heterologous_module))
    cell.grow(1e5, points=2)
    assert cell.metrics()["growth_rate_per_min"] == pytest.approx(0.0112, rel=0.02)


def test_protein_yield_peaks_at_intermediate_expression(heterologous_module):
    """Weisse 2015: growth falls monotonically with heterologous expression while the
    protein made per cell per hour rises, peaks near w_p = 100, and falls again
    (docs/model.md, figure weisse2015_burden.png)."""
    growth, yields = [], []
    for strength in (0.1, 1.0, 10.0):  # w_p = 10, 100, 1000
        cell = Cell("ecoli")
        cell.install(str(heterologous_module), strength=strength)
        cell.grow(1e5, points=2)
        m = cell.metrics()
        growth.append(m["growth_rate_per_min"])
        yields.append(m["protein_synthesis_per_min"]["het"])
    assert growth[0] > growth[1] > growth[2]
    assert yields[1] > 1.5 * yields[0] and yields[1] > 1.5 * yields[2]


@pytest.mark.parametrize(
    ("organism", "doubling", "ribosomes"),
    [("syn3a", 105.0, 500.0), ("minimal_cell", 180.0, None), ("ecoli", 28.7, 3190.0)],
)
def test_calibrated_targets(organism, doubling, ribosomes):
    m = Cell(organism).metrics()
    assert m["doubling_time_min"] == pytest.approx(doubling, rel=0.10)
    assert get_profile(organism).doubling_time_target_min == doubling
    if ribosomes is not None:
        assert m["ribosomes_total"] == pytest.approx(ribosomes, rel=0.10)


def test_profiles_carry_sourced_facts():
    assert set(get_supported_biological_types()) == {"syn3a", "ecoli", "minimal_cell"}
    syn3a = get_profile("syn3a")
    assert (syn3a.genome_bp, syn3a.protein_coding_genes, syn3a.rna_genes) == (543379, 455, 38)
    assert get_profile("minimal_cell").genes == 473
    assert get_profile("ecoli").essential_gene_candidates == 303
    for organism in get_supported_biological_types():
        assert get_profile(organism).references, organism
    with pytest.raises(ValueError, match="syn3a, ecoli, minimal_cell"):
        get_profile("yeast")


def test_only_documented_parameters_differ_from_ecoli():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text(encoding="utf-8")
    for organism in ("syn3a", "minimal_cell"):
        for name, value in get_profile(organism).parameters.items():
            assert f"`{name}`" in doc and f"{value:g}" in doc, (organism, name)


def test_doubling_time_is_ln2_over_growth_rate():
    m = Cell("syn3a").metrics()
    assert m["doubling_time_min"] == pytest.approx(math.log(2) / m["growth_rate_per_min"])
    assert 0 < m["atp_percent"] < 100
    assert m["ribosome_utilization_percent"] == pytest.approx(
        100 * m["ribosomes_translating"] / m["ribosomes_total"]
    )
