"""Guest genes draw on the host's ribosomes and energy: burden, operons, plasmids, user modules."""

from __future__ import annotations

from itertools import pairwise

import pytest

from bioxen_flows.engine.cell import Cell


def balanced(cell: Cell) -> dict:
    cell.grow(2e4, points=2)
    return cell.metrics()


def test_growth_falls_monotonically_as_reporter_expression_rises():
    growth, per_cell, synthesis = [], [], []
    for copies in (1, 2, 4, 8, 16):
        cell = Cell("ecoli")
        cell.install("gfp_reporter", copies=copies)
        m = balanced(cell)
        growth.append(m["growth_rate_per_min"])
        per_cell.append(m["protein_molecules"]["gfp"])
        synthesis.append(m["protein_synthesis_per_min"]["gfp"])
    baseline = Cell("ecoli").metrics()["growth_rate_per_min"]
    assert baseline > growth[0]
    assert all(a > b for a, b in pairwise(growth))
    assert all(a < b for a, b in pairwise(per_cell))
    # Weisse 2015: the synthesis rate of a heterologous protein peaks at intermediate
    # expression, because the burden slows the host that makes it.
    peak = synthesis.index(max(synthesis))
    assert 0 < peak < len(synthesis) - 1


def test_lac_operon_is_repressed_until_induced_and_induction_costs_growth():
    cell = Cell("ecoli")
    cell.install("lac_operon")
    repressed = balanced(cell)
    assert repressed["operon_states"] == {"lac": "repressed"}
    cell.set_operons(["lac"], induced=True)
    induced = balanced(cell)
    assert induced["operon_states"] == {"lac": "induced"}
    assert induced["protein_molecules"]["lacZ"] > 20 * repressed["protein_molecules"]["lacZ"]
    assert induced["growth_rate_per_min"] < repressed["growth_rate_per_min"]
    cell.set_operons(["lac"], induced=False)
    assert balanced(cell)["growth_rate_per_min"] == pytest.approx(
        repressed["growth_rate_per_min"], rel=1e-4
    )


def test_plasmid_copy_number_scales_transcription():
    rates = {}
    for copies in (5, 50):
        cell = Cell("syn3a")
        cell.install("rfp_plasmid", copies=copies)
        m = balanced(cell)
        assert m["plasmid_count"] == copies
        assert m["plasmid_copies"] == {"rfp": copies}
        rates[copies] = (m["protein_synthesis_per_min"]["rfp"], m["growth_rate_per_min"])
    assert rates[50][0] > 3 * rates[5][0]
    assert rates[50][1] < rates[5][1]


def test_stopping_transcription_lifts_the_burden():
    cell = Cell("syn3a")
    free = cell.metrics()["growth_rate_per_min"]
    cell.install("gfp_reporter")
    loaded = balanced(cell)["growth_rate_per_min"]
    cell.set_transcription(["gfp"], on=False)
    assert loaded < free
    assert balanced(cell)["growth_rate_per_min"] == pytest.approx(free, rel=1e-4)


def test_user_module_with_regulation(tmp_path):
    module = tmp_path / "toggle.ant"
    module.write_text(
        "// TetR represses GFP\n"
        "w_tetR = 20; n_tetR = 207;\n"
        "w_gfpx = 50; n_gfpx = 238; K_tet = 1000;\n"
        "reg_gfpx := 1/(1 + (p_tetR/K_tet)^2);\n"
    )
    plain = tmp_path / "plain.ant"
    plain.write_text("w_gfpx = 50; n_gfpx = 238;\n")
    repressed, free = Cell("ecoli"), Cell("ecoli")
    repressed.install(str(module))
    free.install(str(plain))
    gfp_repressed = balanced(repressed)["protein_molecules"]["gfpx"]
    gfp_free = balanced(free)["protein_molecules"]["gfpx"]
    assert gfp_repressed < 0.5 * gfp_free


def test_user_module_from_sbml(tmp_path, heterologous_module):
    import antimony

    assert antimony.loadAntimonyString(
        "model het\n" + heterologous_module.read_text() + "end\n"
    ) >= 0
    sbml = tmp_path / "het.xml"
    sbml.write_text(antimony.getSBMLString("het"))
    from_sbml, from_ant = Cell("ecoli"), Cell("ecoli")
    from_sbml.install(str(sbml))
    from_ant.install(str(heterologous_module))
    assert balanced(from_sbml)["growth_rate_per_min"] == pytest.approx(
        balanced(from_ant)["growth_rate_per_min"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = 5; w_x1 = 1; n_x1 = 10;", "host symbol 'a'"),
        ("lam := 1; w_x1 = 1; n_x1 = 10;", "host symbol 'lam'"),
        ("k = 1;", "no genes found"),
        ("w_x1 = 1;", "no n_x1"),
        ("w_q = 1; n_q = 3;", "invalid gene id"),
        ("import \"other.ant\"\nw_x1 = 1; n_x1 = 10;", "imports"),
    ],
)
def test_bad_user_modules_are_rejected(tmp_path, text, message):
    path = tmp_path / "bad.ant"
    path.write_text(text)
    cell = Cell("ecoli")
    with pytest.raises(ValueError, match=message):
        cell.install(str(path))
    assert cell.packages == []


def test_install_errors_change_nothing():
    cell = Cell("ecoli")
    cell.install("gfp_reporter")
    with pytest.raises(ValueError, match="already installed"):
        cell.install("gfp_reporter")
    with pytest.raises(ValueError, match="built-in packages: gfp_reporter, lac_operon"):
        cell.install("no_such_package")
    with pytest.raises(ValueError, match="copies"):
        cell.install("lac_operon", copies=0)
    with pytest.raises(ValueError, match="available: gfp"):
        cell.set_transcription(["lacZ"], on=True)
    assert [p.name for p in cell.packages] == ["gfp_reporter"]
