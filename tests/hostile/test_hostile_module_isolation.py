"""Hostile user modules, round 2 (issue 23, item 6): generated cases.

A module keeps to its own species whatever the order of installation, what it sets is
clamped where it feeds the host, its expressions are bounded before any compiler sees
them, and no accepted module can drive an amount out of a snapshot's range.
"""

from __future__ import annotations

import functools
import itertools

import pytest

from tests.helpers import RUNNING_SYN3A

GENE = "w_het = 100; n_het = 300;\n"
ORGANISMS = ["ecoli", "syn3a", "minimal_cell"]


def _one_line_refusal(fn) -> str:
    from bioxen_flows.errors import InputError

    with pytest.raises(InputError) as info:
        fn()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def _module(body: str, name: str = "hostile"):
    from bioxen_flows.model.packages import user_module

    return user_module(name, body, source=f"{name}.ant")


@functools.cache
def _plain_cell_metrics(organism: str) -> dict:
    """An uncapped cell of the organism without guest genes, grown like the cases below."""
    from bioxen_flows.engine.cell import Cell

    cell = Cell(organism)
    cell.grow(600)
    return cell.metrics()


@functools.cache
def _builtin_symbols() -> dict[str, list[str]]:
    """Every id the builder defines for each built-in package (read from its compiled text),
    so the cases follow the builder rather than a hand-kept list."""
    from bioxen_flows.model.builder import gene_module_text
    from bioxen_flows.model.guest import BUILTIN_PACKAGES
    from bioxen_flows.model.modules import compile_module

    symbols = {}
    for name, package in BUILTIN_PACKAGES.items():
        for variant in (package, package.with_strength(2.0)):
            model = compile_module(gene_module_text(variant), source=name)
            ids = {s.getId() for s in model.getListOfSpecies()}
            ids |= {r.getId() for r in model.getListOfReactions()}
            ids |= {p.getId() for p in model.getListOfParameters() if p.isSetValue()}
            symbols.setdefault(name, set()).update(ids)
    return {name: sorted(ids) for name, ids in symbols.items()}


# ---- 1. another package's namespace, installed before or after ------------------------------
TEMPLATES = {
    "feed": GENE + "species {s}; J9: -> {s}; 1e6\n",
    "drain": GENE + "J9: {s} -> ; 1e6\n",
    "value": GENE + "{s} = 5;\n",
    "rule": GENE + "{s} := 5 + 0*time;\n",
    "rate_rule": GENE + "{s}' = 1;\n",
    "event": GENE + "E9: at (time > 1): {s} = 5;\n",
    "initial": GENE + "k9 = 5; {s} = k9;\n",
}
NAMESPACE_CASES = [
    (package, symbol, template)
    for package, symbols in _builtin_symbols().items()
    for symbol in symbols
    for template in TEMPLATES
]


@pytest.mark.parametrize(("package", "symbol", "template"), NAMESPACE_CASES,
                         ids=[f"{p}-{s}-{t}" for p, s, t in NAMESPACE_CASES])
def test_module_may_not_define_a_builtin_packages_ids(package, symbol, template):
    """Refused when the module is read: before the package is installed, or after."""
    message = _one_line_refusal(lambda: _module(TEMPLATES[template].format(s=symbol)))
    assert symbol in message


FIRST_SYMBOL = {"gfp_reporter": "m_gfp", "lac_operon": "induced_lac", "rfp_plasmid": "p_rfp"}
ORDER_CASES = [  # lac_operon is inducible only on ecoli
    case for case in itertools.product(ORGANISMS, FIRST_SYMBOL, ["feed", "rule", "value"])
    if case[1] != "lac_operon" or case[0] == "ecoli"
]


@pytest.mark.parametrize(("organism", "package", "template"), ORDER_CASES)
def test_module_installed_first_cannot_drive_a_later_package(organism, package, template,
                                                            tmp_path):
    """Issue 23: `species m_gfp; J9: -> m_gfp; 1e6` then gfp_reporter gave 80,770 GFP instead
    of 4,372. The module is refused and the package then expresses as in a clean cell."""
    from bioxen_flows.engine.cell import Cell

    path = tmp_path / "first.ant"
    path.write_text(TEMPLATES[template].format(s=FIRST_SYMBOL[package]))
    cell, clean = Cell(organism), Cell(organism)
    _one_line_refusal(lambda: cell.install(str(path)))
    for c in (cell, clean):
        c.install(package)
        c.grow(120)
    assert cell.metrics() == clean.metrics()


# ---- 2. what a module sets is clamped where it feeds the host --------------------------------
SETTINGS = [
    "reg_het := -5 + 0*time", "reg_het := -1e9 + 0*time", "reg_het := 1e9 + 0*time",
    "reg_het := 100/(time - 3)", "w_het := -1e3 + 0*time", "w_het := 1e12 + 0*time",
    "n_het := -5 + 0*time", "n_het := 1e-9 + 0*time", "n_het := 0*time",
]


def _setting_module(setting: str) -> str:
    base = {"w": "w_het = 100;", "n": "n_het = 300;"}
    kept = [line for key, line in base.items() if not setting.startswith(f"{key}_")]
    return " ".join(kept) + f"\n{setting};\n"


BOUND_CASES = list(itertools.product(ORGANISMS, SETTINGS))


@pytest.mark.parametrize(("organism", "setting"), BOUND_CASES)
def test_module_settings_cannot_push_the_host_past_physical_bounds(organism, setting, tmp_path):
    """Issue 23: `reg_het := -5` grew E. coli at 0.0384/min (max 0.0241) with 41,076 ribosomes
    (3,189); `w_het := -1e3` gave 223,868. Refused, or clamped: growth and ribosomes never
    above the uncapped cell's without guest genes."""
    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.errors import InputError

    path = tmp_path / "bounds.ant"
    path.write_text(_setting_module(setting))
    cell = Cell(organism)
    try:
        cell.install(str(path))
    except InputError as exc:
        assert "\n" not in str(exc)
    cell.grow(600)
    got, plain = cell.metrics(), _plain_cell_metrics(organism)
    assert 0 <= got["growth_rate_per_min"] <= plain["growth_rate_per_min"] * (1 + 1e-6)
    assert 0 <= got["ribosomes_total"] <= plain["ribosomes_total"] * (1 + 1e-6)
    assert all(0 <= v <= 1e15 for v in got["protein_molecules"].values())
    Cell.from_snapshot(cell.snapshot())  # still a valid cell


# ---- 3. expressions bounded in size and depth before compiling -------------------------------
def _sum(n: int) -> str:
    return "k9 := " + "+".join(["time"] * n) + ";\n"


def _nested(n: int) -> str:
    return "k9 := " + "(" * n + "time" + ")" * n + ";\n"


def _calls(n: int) -> str:
    return "k9 := " + "sin(" * n + "time" + ")" * n + ";\n"


def _product(n: int) -> str:
    return "species z; J9: -> z; " + "*".join(["lam"] * n) + "\n"


SHAPES = {"sum": _sum, "nested": _nested, "calls": _calls, "product": _product}
TOO_BIG = {"sum": [501, 1200, 2500, 12000], "nested": [65, 200, 5000],
           "calls": [65, 300, 3000], "product": [501, 2001, 6000]}
SIZE_CASES = [(shape, n) for shape, sizes in TOO_BIG.items() for n in sizes]


@pytest.mark.parametrize(("shape", "n"), SIZE_CASES)
def test_oversized_expression_is_refused_before_compiling(shape, n, tmp_path, refused_api):
    """Issue 23: a 60 KB module `k9 := time+time+...` (12,000 terms) crashed libroadrunner."""
    from bioxen_flows.vm import load_bio_vm

    path = tmp_path / "big_expression.ant"
    path.write_text(GENE + SHAPES[shape](n))
    assert "too large" in _one_line_refusal(lambda: _module(path.read_text()))
    vm = load_bio_vm(RUNNING_SYN3A)
    before = vm.get_biological_metrics()
    refused_api(lambda: vm.install_biological_package(str(path)))
    assert vm.get_biological_metrics() == before
    vm.execute_biological_process("grow(minutes=1)")  # the VM still works


def test_many_expressions_together_are_bounded():
    body = GENE + "".join(f"k{i} := " + "+".join(["time"] * 60) + ";\n" for i in range(200))
    assert "together" in _one_line_refusal(lambda: _module(body))


def test_expressions_within_bounds_are_accepted():
    _module(GENE + _sum(40) + "k8 := " + "(" * 20 + "time" + ")" * 20 + ";\n")


# ---- 4. amounts the model could drive out of range -------------------------------------------
def _chain(n: int) -> str:
    lines = ["species z0 = 10;"]
    lines += [f"species z{i}; J{i}: z{i - 1} -> 2 z{i}; z{i - 1}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


OUT_OF_RANGE = {
    "start_huge": "species z = 1e20;", "start_1e13": "species z = 1e13;",
    "start_negative": "species z = -5;", "start_nan": "species z = NaN;",
    "start_inf": "species z = INF;", "param_inf": "k9 = INF;",
    "producer_1e9": "species z; J9: -> z; 1e9", "producer_1e7": "species z; J9: -> z; 1e7",
    "producer_slow_forever": "species z; J9: -> z; 2e6",
    "autocatalytic": "species z = 1; J9: z -> 2 z; 0.1*z",
    "negative_rate": "species z = 100; J9: -> z; -5",
    "negative_later": "species z = 1e6; J9: -> z; 1 - time/10",
    "negative_drain": "species z = 10; J9: z -> ; -0.01*z",
    "rate_rule": "species z; z' = 1e9;",
    "event_huge": "species z; E9: at (time > 5): z = 1e20;",
    "event_negative": "species z = 5; E9: at (time > 5): z = -1;",
    "initial_assignment": "species z; k9 = 1e10; z = k9*k9;",
    "protein_producer": "J9: -> p_het; 1e12",
    "protein_negative": "J9: p_het -> ; -1",
    "chain_60": _chain(60), "chain_240": _chain(240),
}
AMOUNT_CASES = list(itertools.product(["ecoli", "syn3a"], OUT_OF_RANGE))


@pytest.mark.parametrize(("organism", "case"), AMOUNT_CASES)
def test_module_that_would_drive_amounts_out_of_range_is_refused(organism, case, tmp_path):
    """Issue 23: `species z = 1e20` (or -5, a fast producer, a 240-species chain, a negative
    rate) was accepted, then every command failed on the cell's snapshot."""
    from bioxen_flows.engine.cell import Cell

    path = tmp_path / f"{case}.ant"
    path.write_text(GENE + OUT_OF_RANGE[case] + "\n")
    cell = Cell(organism)
    before = cell.snapshot()
    _one_line_refusal(lambda: cell.install(str(path)))
    assert cell.snapshot() == before
    cell.grow(10)
    Cell.from_snapshot(cell.snapshot())


def test_the_issues_modules_are_refused_through_the_cli(tmp_path, refused_cli):
    for case in ("start_huge", "start_negative", "producer_1e9", "negative_rate", "chain_240"):
        path = tmp_path / f"{case}.ant"
        path.write_text(GENE + OUT_OF_RANGE[case] + "\n")
        refused_cli("install", RUNNING_SYN3A, str(path))


def test_producers_accepted_only_if_they_stay_in_range():
    """Generated rates: whatever the trial accepts, a cell survives a full grow(1e6) with a
    valid snapshot."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.errors import InputError

    @settings(max_examples=12, deadline=None, derandomize=True)
    @given(rate=st.floats(1e-3, 1e10), decay=st.sampled_from(["0", "lam*z", "1e-6*z"]))
    def check(rate: float, decay: str) -> None:
        body = GENE + f"species z; J9: -> z; {rate!r}; J10: z -> ; {decay}\n"
        try:
            package = _module(body)
        except InputError:
            return
        cell = Cell("syn3a")
        cell.install(package)
        cell.grow(1e6, points=2)
        Cell.from_snapshot(cell.snapshot())

    check()


def test_a_module_reading_another_packages_protein_is_still_accepted(tmp_path):
    """The documented use: regulation by another guest protein p_H (read, never set)."""
    from bioxen_flows.engine.cell import Cell

    path = tmp_path / "repressed.ant"
    path.write_text(GENE + "reg_het := 1/(1 + (p_gfp/1000)^2);\n")
    cell = Cell("ecoli")
    cell.install("gfp_reporter")
    cell.install(str(path))
    cell.grow(600)
    assert 0 < cell.metrics()["protein_molecules"]["het"]
