"""Hostile SBML modules: every SBML construct that can touch a host or generated symbol.

Each module is built here with libsbml (a gene `het`: w_het, n_het) plus one construct
aimed at the cell's model (`r`, `lam`, `ribosome_cap`, ...) or at the ids BioXen generates
for the gene (`m_het`, `copies_het`, `tx_het`, `p_het`, ...). Each is refused in one line
(exit 1, never an internal error), the store and the cell unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RUNNING_ECOLI, RUNNING_SYN3A


def _module(build: Callable[[Any], object]) -> str:
    """An SBML L3V2 module: compartment `cell`, the gene's w_het and n_het, then `build`."""
    import libsbml

    doc = libsbml.SBMLDocument(3, 2)
    model = doc.createModel()
    model.setId("hostile")
    cell = model.createCompartment()
    cell.setId("cell")
    cell.setSize(1)
    cell.setConstant(True)
    for pid, value in (("w_het", 100), ("n_het", 300)):
        _param(model, pid, value, constant=True)
    build(model)
    return libsbml.writeSBMLToString(doc)


def _math(formula: str) -> Any:
    import libsbml

    ast = libsbml.parseL3Formula(formula)
    assert ast is not None, formula
    return ast


def _param(model: Any, pid: str, value: float | None = None, constant: bool = False) -> Any:
    param = model.createParameter()
    param.setId(pid)
    param.setConstant(constant)
    if value is not None:
        param.setValue(value)
    return param


def _species(model: Any, sid: str) -> Any:
    species = model.createSpecies()
    species.setId(sid)
    species.setCompartment("cell")
    species.setInitialAmount(0)
    species.setHasOnlySubstanceUnits(True)
    species.setBoundaryCondition(False)
    species.setConstant(False)
    return species


def _reaction(model: Any, rid: str, product: str, law: str,
              local: tuple[str, float] | None = None) -> Any:
    reaction = model.createReaction()
    reaction.setId(rid)
    reaction.setReversible(False)
    ref = reaction.createProduct()
    ref.setSpecies(product)
    ref.setStoichiometry(1)
    ref.setConstant(True)
    kinetics = reaction.createKineticLaw()
    if local:
        parameter = kinetics.createLocalParameter()
        parameter.setId(local[0])
        parameter.setValue(local[1])
    kinetics.setMath(_math(law))
    return reaction


def _protein(model: Any) -> None:
    """The gene's protein p_het made by a reaction of the module's (which it may do)."""
    _species(model, "p_het")
    _reaction(model, "J9", "p_het", "1")


def _rule(kind: str, variable: str, formula: str, declare: str | None = "param"):
    def build(model: Any) -> None:
        if declare == "param":
            _param(model, variable)
        elif declare == "species":
            _species(model, variable)
        elif declare == "protein":
            _protein(model)
        rule = model.createAssignmentRule() if kind == "assignment" else model.createRateRule()
        rule.setVariable(variable)
        rule.setMath(_math(formula))
    return build


def _algebraic(formula: str, *declare: str):
    def build(model: Any) -> None:
        for pid in declare:
            _param(model, pid)
        model.createAlgebraicRule().setMath(_math(formula))
    return build


def _event(target: str, value: str, *, eid: str | None = "E9", trigger: str = "time > 1",
           delay: str | None = None, priority: str | None = None,
           declare: str | None = "param", reads: tuple[str, ...] = ()):
    def build(model: Any) -> None:
        for pid in reads:  # host symbols it reads: SBML declares them, without a value
            _param(model, pid, constant=True)
        if declare == "param":
            _param(model, target)
        elif declare == "species":
            _species(model, target)
        elif declare == "protein":
            _protein(model)
        elif declare == "own":
            _param(model, target, 1)
        event = model.createEvent()
        if eid:
            event.setId(eid)
        event.setUseValuesFromTriggerTime(True)
        condition = event.createTrigger()
        condition.setMath(_math(trigger))
        condition.setPersistent(True)
        condition.setInitialValue(False)
        if delay:
            event.createDelay().setMath(_math(delay))
        if priority:
            event.createPriority().setMath(_math(priority))
        assignment = event.createEventAssignment()
        assignment.setVariable(target)
        assignment.setMath(_math(value))
    return build


def _initial(symbol: str, formula: str, declare: str | None = "param"):
    def build(model: Any) -> None:
        if declare == "param":
            _param(model, symbol)
        elif declare == "protein":
            _protein(model)
        elif declare == "compartment":
            model.getCompartment(symbol).setConstant(False)
        assignment = model.createInitialAssignment()
        assignment.setSymbol(symbol)
        assignment.setMath(_math(formula))
    return build


def _function(fid: str):
    def build(model: Any) -> None:
        function = model.createFunctionDefinition()
        function.setId(fid)
        function.setMath(_math("lambda(x, 2 * x)"))
        _param(model, "k")
        rule = model.createAssignmentRule()
        rule.setVariable("k")
        rule.setMath(_math(f"{fid}(3)"))
    return build


def _constraint(formula: str, *declare: str):
    def build(model: Any) -> None:
        for pid in declare:
            _param(model, pid, constant=True)
        model.createConstraint().setMath(_math(formula))
    return build


def _local(reaction_id: str, local_id: str):
    """A reaction whose local parameter Antimony promotes to `<reaction>_<local>`."""
    def build(model: Any) -> None:
        _species(model, "p_het")
        _reaction(model, reaction_id, "p_het", local_id, local=(local_id, 1e6))
    return build


def _compartment(cid: str, size: float = 1, rule: str | None = None):
    def build(model: Any) -> None:
        compartment = model.getCompartment(cid) or model.createCompartment()
        compartment.setId(cid)
        compartment.setSize(size)
        compartment.setConstant(rule is None)
        if rule:
            rate = model.createRateRule()
            rate.setVariable(cid)
            rate.setMath(_math(rule))
    return build


def _conversion(where: str, factor: str, declare_host: bool = False):
    def build(model: Any) -> None:
        if declare_host:
            _param(model, factor, constant=True)
        else:
            _param(model, factor, 1e6, constant=True)
        _protein(model)
        if where == "model":
            model.setConversionFactor(factor)
        else:
            model.getSpecies("p_het").setConversionFactor(factor)
    return build


HOST = "host symbol"
GENERATED = "BioXen generates"
NAMESPACE = "namespace for packages"
# (case, module, what the one line says)
CASES: list[tuple[str, Callable[[Any], object], str]] = [
    # assignment rules
    ("assignment_rule_cap", _rule("assignment", "ribosome_cap", "1e12"), HOST),
    ("assignment_rule_growth", _rule("assignment", "lam", "0.5"), HOST),
    ("assignment_rule_host_species", _rule("assignment", "s_i", "1e9", "species"), HOST),
    ("assignment_rule_generated", _rule("assignment", "copies_het", "1000"), GENERATED),
    ("assignment_rule_protein", _rule("assignment", "p_het", "1e9", "species"), GENERATED),
    ("assignment_rule_other_gene", _rule("assignment", "reg_gfp", "1"), NAMESPACE),
    # rate rules
    ("rate_rule_energy", _rule("rate", "atp_scale", "1"), HOST),
    ("rate_rule_host_species", _rule("rate", "s0", "1e6", "species"), HOST),
    ("rate_rule_generated_mrna", _rule("rate", "m_het", "1e6", "species"), GENERATED),
    ("rate_rule_protein", _rule("rate", "p_het", "1e6", "species"), GENERATED),
    # algebraic rules
    ("algebraic_rule_host", _algebraic("r - 1", "r"), "algebraic rules"),
    ("algebraic_rule_own", _algebraic("x - 1", "x"), "algebraic rules"),
    # events: assignments, with triggers, delays and priorities
    ("event_sets_cap", _event("ribosome_cap", "1e12"), HOST),
    ("event_trigger_reads_host_sets_host", _event("gamma_max", "1e6", trigger="r > 0",
                                                                 reads=("r",)), HOST),
    ("event_delay_sets_host", _event("atp_scale", "1", delay="10"), HOST),
    ("event_priority_sets_host", _event("K_gamma", "1e-9", priority="1"), HOST),
    ("event_sets_host_species", _event("s0", "1e9", declare="species"), HOST),
    ("event_without_id_sets_host", _event("r", "0", eid=None), HOST),
    ("event_sets_generated", _event("on_het", "5"), GENERATED),
    ("event_sets_protein", _event("p_het", "1e9", declare="protein"), GENERATED),
    ("event_id_host", _event("k", "2", eid="lam", declare="own"), HOST),
    ("event_id_generated", _event("k", "2", eid="tx_het", declare="own"), GENERATED),
    ("event_resizes_cell", _event("cell", "5", declare=None), "not valid SBML"),
    # initial assignments
    ("initial_assignment_host", _initial("r", "1e6"), HOST),
    ("initial_assignment_generated", _initial("copies_het", "1000"), GENERATED),
    ("initial_assignment_protein", _initial("p_het", "n_het * 1e6", "protein"), GENERATED),
    ("initial_assignment_cell", _initial("cell", "5", "compartment"), "may not change size"),
    # function definitions
    ("function_named_host", _function("lam"), HOST),
    ("function_named_generated", _function("tx_het"), NAMESPACE),
    ("function_named_in_namespace", _function("w_x"), NAMESPACE),
    # constraints
    ("constraint_on_host", _constraint("ribosome_cap < 1", "ribosome_cap"), "constraints"),
    ("constraint_on_own", _constraint("w_het > 0"), "constraints"),
    # local parameters, promoted by Antimony to <reaction>_<local>
    ("local_parameter_becomes_host", _local("tx", "r"), HOST),
    ("local_parameter_becomes_generated", _local("deg", "m_het"), GENERATED),
    # compartments
    ("compartment_cell_resized", _compartment("cell", 2), "has size 2"),
    ("compartment_named_host", _compartment("r"), HOST),
    ("compartment_named_generated", _compartment("m_het"), NAMESPACE),
    ("compartment_grows", _compartment("box", rule="1"), "may not change size"),
    # conversion factors
    ("conversion_factor_model", _conversion("model", "cf"), "conversion factors"),
    ("conversion_factor_protein", _conversion("species", "cf"), "conversion factors"),
    ("conversion_factor_host", _conversion("species", "r", declare_host=True),
     "conversion factors"),
]


@pytest.mark.parametrize(("name", "build", "says"), CASES, ids=[c[0] for c in CASES])
def test_sbml_construct_on_a_host_or_generated_symbol_is_refused(
    name, build, says, tmp_path, refused_cli, refused_api
):
    from bioxen_flows.vm import load_bio_vm

    path = tmp_path / f"{name}.xml"
    path.write_text(_module(build))
    line = refused_cli("install", RUNNING_ECOLI, str(path))
    assert says in line, line
    vm = load_bio_vm(RUNNING_ECOLI)
    before = vm.get_biological_metrics()
    assert says in refused_api(lambda: vm.install_biological_package(str(path)))
    assert vm.get_biological_metrics() == before


@pytest.mark.parametrize("name", ["event_sets_cap", "conversion_factor_protein"])
def test_sbml_refusals_hold_inside_a_program(name, tmp_path, refused_cli):
    path = tmp_path / f"{name}.xml"
    path.write_text(_module(dict((c[0], c[1]) for c in CASES)[name]))
    refused_cli("execute", RUNNING_SYN3A, f"install({str(path)!r})\ngrow(minutes=60)")


# `const r;`, `var ribosome_cap;` and `r = ;` re-declare the host's ids in the model the
# module is spliced into (`const r` held the host's free ribosomes at 10 while a plain
# cell's went to 24); Antimony modules say them directly
DECLARATIONS = [
    ("const_host.ant", "const r;", HOST), ("var_host.ant", "var ribosome_cap, k9;", HOST),
    ("blank_host.ant", "r = ;", HOST), ("const_generated.ant", "const m_het;", GENERATED),
    ("event_and_reaction_on_protein.ant", "J9: -> p_het; 1\nE9: at (time > 1): p_het = 1e9;",
     GENERATED),
]


@pytest.mark.parametrize(("name", "text", "says"), DECLARATIONS, ids=[d[0] for d in DECLARATIONS])
def test_antimony_declarations_of_host_symbols_are_refused(
    name, text, says, tmp_path, refused_cli
):
    path = tmp_path / name
    path.write_text("w_het = 100; n_het = 300;\n" + text + "\n")
    assert says in refused_cli("install", RUNNING_ECOLI, str(path))


def test_an_sbml_module_may_read_host_symbols_in_its_events(tmp_path: Path) -> None:
    """SBML declares what it reads (here `r`, `lam`, a parameter without a value): such a
    declaration is a reference to the host's symbol and is not spliced into the cell."""
    import re

    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.model.packages import load_user_module

    def build(model: Any) -> None:
        _event("k", "lam * 2", trigger="r > 0", delay="1 / (1 + lam)", priority="r",
               declare="own", reads=("r", "lam"))(model)
        _protein(model)

    path = tmp_path / "reads_host.xml"
    path.write_text(_module(build))
    package = load_user_module(path)
    # spliced as `const r, lam;` these would have held the host's free ribosomes constant
    assert not re.search(r"\b(const|var)\b[^;]*\b(r|lam)\b", package.antimony)
    assert not re.search(r"^\s*(r|lam)\s*=\s*;", package.antimony, re.M)
    cell, plain = Cell("ecoli"), Cell("ecoli")
    cell.install(str(path))
    cell.grow(60)
    plain.grow(60)
    grown, control = cell.metrics(), plain.metrics()
    assert grown["protein_molecules"]["het"] > 0
    assert 0 < grown["growth_rate_per_min"] <= control["growth_rate_per_min"]
