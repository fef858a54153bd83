"""A user's module as a model: compiled on its own, bounded, and tried in a cell.

A module (Antimony statements, or SBML turned into them) is compiled apart from the
cell's model so that what it defines can be checked against the host's ids, its
expressions bounded before any compiler recurses over them, and its dynamics tried in a
cell before it is accepted (`trial_module`). `packages.py` reads module files and calls
these.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from bioxen_flows.errors import InputError
from bioxen_flows.model.builder import MAX_N, MAX_W, build_model_text
from bioxen_flows.model.guest import RESERVED_IDS, RESERVED_PREFIXES, GuestGene, Package
from bioxen_flows.model.loader import (
    ANTIMONY_LOCK,
    antimony_to_sbml,
    balanced_growth_state,
    load_roadrunner,
)


def sbml_to_antimony_body(sbml: str, source: str) -> str:
    """The statements of an SBML model as Antimony, to splice into a cell's model.

    Every compartment of the module is the host's `cell` (amounts are molecules per cell),
    so its species are moved there and its own compartments dropped; a compartment whose
    size is not 1 would change what its amounts mean and is refused.
    """
    import antimony
    import libsbml

    doc = libsbml.readSBMLFromString(sbml)
    if doc.getModel() is None or doc.getNumErrors(libsbml.LIBSBML_SEV_FATAL) or doc.getNumErrors(
        libsbml.LIBSBML_SEV_ERROR
    ):
        first = doc.getError(0).getMessage().strip() if doc.getNumErrors() else "no model"
        raise InputError(f"{source}: not valid SBML: {first}")
    model = doc.getModel()
    _check_size(model, source)
    _check_sbml_only_constructs(model, source)
    references = _host_references(model)
    for comp in list(model.getListOfCompartments()):
        if comp.isSetSize() and comp.getSize() != 1:
            raise InputError(
                f"{source}: compartment {comp.getId()!r} has size {comp.getSize():g}; a module's "
                "species live in the host cell (size 1, amounts in molecules per cell)"
            )
        if model.getRule(comp.getId()) or model.getInitialAssignment(comp.getId()):
            raise InputError(f"{source}: compartment {comp.getId()!r} may not change size")
    for species in model.getListOfSpecies():
        species.setCompartment(HOST_COMPARTMENT)
    while model.getNumCompartments():
        model.removeCompartment(0)
    cell = model.createCompartment()
    cell.setId(HOST_COMPARTMENT)
    cell.setSize(1)
    cell.setConstant(True)
    cell.setSpatialDimensions(3)
    with ANTIMONY_LOCK:
        antimony.clearPreviousLoads()
        if antimony.loadSBMLString(libsbml.writeSBMLToString(doc)) < 0:
            raise InputError(f"{source}: not valid SBML: {antimony.getLastError().strip()}")
        text = antimony.getAntimonyString(antimony.getMainModuleName())
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\s*model\b", line))
    end = max(i for i, line in enumerate(lines) if re.match(r"^\s*end\s*$", line))
    own_cell = re.compile(
        rf"^\s*(compartment\s+{HOST_COMPARTMENT}|{HOST_COMPARTMENT}\s*=\s*1)\s*;\s*$"
    )
    body = [ln for ln in lines[start + 1 : end] if not own_cell.match(ln)]
    return "\n".join(_without_declarations(body, references))


def _check_sbml_only_constructs(model, source: str) -> None:  # model: libsbml.Model
    """What SBML can say and a module may not: conversion factors (they scale every
    reaction's effect on a species, BioXen's translation of the module's proteins too),
    constraints (nothing checks them while a cell runs), and function definitions or
    compartments named like a host symbol or in BioXen's namespace for packages (the
    compartments become the host's `cell`, the functions are expanded: the ids would be
    lost silently)."""
    if model.isSetConversionFactor() or any(
        species.isSetConversionFactor() for species in model.getListOfSpecies()
    ):
        raise InputError(f"{source}: conversion factors are not allowed in a module (its "
                         "amounts are molecules per cell, changed only by its reactions)")
    if model.getNumConstraints():
        raise InputError(f"{source}: constraints are not allowed in a module (nothing checks "
                         "them while a cell runs)")
    for function in model.getListOfFunctionDefinitions():
        check_free_id(function.getId(), "names a function", source)
    for comp in model.getListOfCompartments():
        if comp.getId() not in (HOST_COMPARTMENT, "default_compartment"):
            check_free_id(comp.getId(), "names a compartment", source)


def _host_references(model) -> set[str]:  # model: libsbml.Model
    """Host symbols the module only reads: SBML must declare every id it uses (a parameter
    without a value), and spliced into the cell's model as `const r;` or `r = ;` such a
    declaration would change the host's own symbol (`_without_declarations` drops it). A
    host symbol the module sets (a rule, an initial or event assignment) is not one."""
    set_somewhere = {rule.getVariable() for rule in model.getListOfRules()}
    set_somewhere.update(a.getSymbol() for a in model.getListOfInitialAssignments())
    set_somewhere.update(a.getVariable() for event in model.getListOfEvents()
                         for a in event.getListOfEventAssignments())
    host = host_symbols()
    return {p.getId() for p in model.getListOfParameters()
            if p.getId() in host and not p.isSetValue() and p.getId() not in set_somewhere}


_DECLARED = re.compile(r"^(\s*)(const|var)\s+([\w\s,]+);\s*$")
_NO_VALUE = re.compile(r"^\s*(\w+)\s*=\s*;\s*$")


def _without_declarations(lines: list[str], references: set[str]) -> list[str]:
    """Antimony's lines less its declarations (`const`, `var`, `x = ;`) of `references`."""
    kept = []
    for line in lines:
        declared, blank = _DECLARED.match(line), _NO_VALUE.match(line)
        if blank and blank.group(1) in references:
            continue
        if declared:
            ids = [i for i in re.split(r"[\s,]+", declared.group(3).strip())
                   if i not in references]
            if not ids:
                continue
            line = f"{declared.group(1)}{declared.group(2)} {', '.join(ids)};"
        kept.append(line)
    return kept


HOST_COMPARTMENT = "cell"
MAX_MODULE_ELEMENTS = 500  # species + parameters + reactions + rules + events + ... per module


def _check_size(model, source: str) -> None:  # model: libsbml.Model
    count = sum(
        getattr(model, f"getNum{kind}")()
        for kind in (
            "Species", "Parameters", "Reactions", "Rules", "Events", "Compartments",
            "InitialAssignments", "FunctionDefinitions", "Constraints",
        )
    )
    if count > MAX_MODULE_ELEMENTS:
        raise InputError(
            f"{source}: the module has {count:,} elements (species, parameters, reactions, "
            f"rules, events...); the limit is {MAX_MODULE_ELEMENTS:,}"
        )
    _check_math(model, source)


MAX_EXPRESSION_NODES = 500  # operators, numbers and names in one expression
MAX_EXPRESSION_DEPTH = 64  # nesting of one expression
MAX_MODULE_NODES = 10_000  # all of a module's expressions together


def _maths(model):  # model: libsbml.Model -> every (what, ASTNode) of the module
    for rule in model.getListOfRules():
        yield f"the rule for {rule.getVariable()!r}", rule.getMath()
    for assignment in model.getListOfInitialAssignments():
        yield f"the initial assignment of {assignment.getSymbol()!r}", assignment.getMath()
    for reaction in model.getListOfReactions():
        if reaction.isSetKineticLaw():
            yield f"the rate of reaction {reaction.getId()!r}", reaction.getKineticLaw().getMath()
    for event in model.getListOfEvents():
        if event.isSetTrigger():
            yield "an event's trigger", event.getTrigger().getMath()
        if event.isSetDelay():
            yield "an event's delay", event.getDelay().getMath()
        if event.isSetPriority():
            yield "an event's priority", event.getPriority().getMath()
        for assignment in event.getListOfEventAssignments():
            yield f"an event's assignment of {assignment.getVariable()!r}", assignment.getMath()
    for function in model.getListOfFunctionDefinitions():
        yield f"function {function.getId()!r}", function.getMath()
    for constraint in model.getListOfConstraints():
        yield "a constraint", constraint.getMath()


def _check_math(model, source: str) -> None:  # model: libsbml.Model
    """Expressions bounded in size and depth before any compiler sees them: libroadrunner's
    code generator recurses over an expression and crashed on a 12,000-term sum."""
    total = 0
    for what, math in _maths(model):
        if math is None:
            continue
        nodes, stack = 0, [(math, 1)]
        while stack:  # iterative: a deep expression must not exhaust Python's stack either
            node, depth = stack.pop()
            nodes += 1
            if depth > MAX_EXPRESSION_DEPTH or nodes > MAX_EXPRESSION_NODES:
                raise InputError(
                    f"{source}: {what} is too large; an expression may have at most "
                    f"{MAX_EXPRESSION_NODES} terms and {MAX_EXPRESSION_DEPTH} levels of nesting"
                )
            stack += [(node.getChild(i), depth + 1) for i in range(node.getNumChildren())]
        total += nodes
        if total > MAX_MODULE_NODES:
            raise InputError(
                f"{source}: the module's expressions have more than {MAX_MODULE_NODES:,} terms "
                "together; split the module"
            )


# A cell's bounds (engine/cell.py checks its grows and snapshots against them): a module
# is tried against them before it is accepted, so no accepted module can break them.
MAX_GROW_MIN = 1e6  # the longest single grow()
MAX_CLOCK_MIN = 1e9  # a cell's clock (minutes); about 1,900 years
MAX_AMOUNT = 1e15  # molecules per cell a snapshot may hold of one species
TRIAL_ORGANISM = "ecoli"  # the fastest-growing host: the trial's reference cell
MAX_TRIAL_AMOUNT = 1e12  # molecules of any species during the trial


def trial_module(package: Package) -> None:
    """Refuse a user module whose cell leaves the physical range: its model (in E. coli, from
    balanced growth, ODE) is run for 1e6 min; every amount must stay in [0, 1e12], its genes'
    w_G in [0, 1e6], n_G in [1, 1e6] and reg_G in [0, 1], every reaction of the module keep a
    rate >= 0 (a stochastic run needs propensities), the integrator succeed, and amounts
    extrapolated at their final rate to the clock's end (1e9 min) stay <= 1e15. So no
    accepted module can make a cell's snapshot invalid."""
    genes = tuple(g.gene_id for g in package.genes if g.user_defined)
    problem = _trial(package.antimony, genes)
    if problem:
        raise InputError(f"{package.source}: {problem}")


@lru_cache(maxsize=128)
def _trial(body: str, genes: tuple[str, ...]) -> str | None:
    import numpy as np

    module = compile_module(body, source="module")
    host = host_symbols()
    # Symbols read but not defined (another package's protein p_H): 0 in the trial cell.
    read_only = [
        param.getId() for param in module.getListOfParameters()
        if not param.isSetValue() and param.getId() not in host
        and module.getRule(param.getId()) is None
        and module.getInitialAssignment(param.getId()) is None
        and not any(event.getEventAssignment(param.getId()) for event in module.getListOfEvents())
    ]
    trial = Package(
        name="trial", description="trial run of a user module",
        genes=tuple(GuestGene(g, 0, 0.0, user_defined=True) for g in genes),
        antimony="\n".join([f"  {name} = 0;" for name in read_only] + [body]),
        source="trial",
    )
    try:
        rr = load_roadrunner(build_model_text(None, [trial]))
    except Exception as exc:  # noqa: BLE001 (a module that does not load is refused)
        return f"the cell's model does not load with the module: {str(exc).splitlines()[0]}"
    species = rr.model.getFloatingSpeciesIds()
    for name, value in balanced_growth_state(TRIAL_ORGANISM).items():
        if name in species:
            rr.setValue(name, value)
    reactions = rr.model.getReactionIds()
    own = [i for i, r in enumerate(reactions) if module.getReaction(r) is not None]
    # What the module sets for its genes: clamped in the model, and kept in range too, since
    # a cell's metrics read them as they are.
    names = set(rr.model.getGlobalParameterIds())
    settings = [(f"{kind}_{g}", low, high) for g in genes
                for kind, low, high in (("w", 0, MAX_W), ("n", 1, MAX_N), ("reg", 0, 1))
                if f"{kind}_{g}" in names]
    times = [0.0, *np.geomspace(1e-3, MAX_GROW_MIN, 46)]
    for start, end in zip(times, times[1:], strict=False):
        try:
            rr.simulate(start, end, 2)
        except Exception:  # noqa: BLE001 (CVODE's failures are RuntimeErrors)
            return f"the cell's model fails to integrate with the module (at {start:g} min)"
        amounts = rr.model.getFloatingSpeciesAmounts()
        bad = [(s, a) for s, a in zip(species, amounts, strict=True)
               if not -1e-6 <= a <= MAX_TRIAL_AMOUNT]
        if bad:
            return (f"in a trial run, species {bad[0][0]!r} reaches {bad[0][1]:.3g} at "
                    f"{end:.3g} min; amounts must stay from 0 to {MAX_TRIAL_AMOUNT:g} molecules")
        for name, low, high in settings:
            value = rr.getValue(name)
            if not low <= value <= high:
                return (f"in a trial run, {name} is {value:.3g} at {end:.3g} min; it must stay "
                        f"from {low:g} to {high:g}")
        rates = rr.getReactionRates()
        negative = [reactions[i] for i in own if not rates[i] >= 0]
        if negative:
            return (f"in a trial run, reaction {negative[0]!r} has a negative rate at "
                    f"{end:.3g} min; write a reversible reaction as two, each with a rate >= 0")
    slopes = rr.model.getFloatingSpeciesConcentrationRates()  # cell size 1
    for name, amount, slope in zip(species, amounts, slopes, strict=True):
        if amount + max(0.0, slope) * (MAX_CLOCK_MIN - MAX_GROW_MIN) > MAX_AMOUNT:
            return (f"in a trial run, species {name!r} keeps growing ({slope:.3g}/min) and "
                    f"would pass {MAX_AMOUNT:g} molecules before the clock's end")
    return None


def compile_module(body: str, source: str):  # -> libsbml.Model (lazy import)
    """A module's statements compiled on their own (Antimony -> SBML -> libsbml).

    Symbols the module only reads (host species, its genes' proteins) come out as
    parameters without a value; what it defines carries a value, a rule, an event
    assignment, an initial assignment, or is a species, reaction or compartment.
    """
    import antimony
    import libsbml

    with ANTIMONY_LOCK:
        antimony.clearPreviousLoads()
        if antimony.loadAntimonyString(f"model {_MODULE_NAME}\n{body}\nend\n") < 0:
            raise InputError(f"{source}: does not compile: {antimony.getLastError().strip()}")
        names = list(antimony.getModuleNames())
        if names != ["__main", _MODULE_NAME]:
            raise InputError(f"{source}: a module must be one list of statements")
        sbml = antimony.getSBMLString(_MODULE_NAME)
    doc = libsbml.readSBMLFromString(sbml)
    model = doc.getModel()
    if model is None:
        raise InputError(f"{source}: does not compile to SBML")
    _check_size(model, source)
    return model


_MODULE_NAME = "bioxen_user_module"


@cache
def host_symbols() -> frozenset[str]:
    """Every id the host model defines, in both simulation modes (a module may read these,
    never define them)."""
    import libsbml

    ids: set[str] = {"time"}
    for stochastic in (False, True):
        doc = libsbml.readSBMLFromString(antimony_to_sbml(build_model_text(stochastic=stochastic)))
        model = doc.getModel()
        for listing in (
            model.getListOfSpecies(), model.getListOfParameters(), model.getListOfCompartments(),
            model.getListOfReactions(), model.getListOfEvents(),
            model.getListOfFunctionDefinitions(),
        ):
            ids.update(item.getId() for item in listing)
        ids.update(rule.getVariable() for rule in model.getListOfRules())
    return frozenset(ids)


def check_free_id(symbol: str, how: str, source: str) -> None:
    """Refuse an id that is the host model's or in BioXen's namespace for packages' genes
    (for SBML ids that never reach the spliced model: function and compartment ids)."""
    if symbol in host_symbols():
        raise InputError(f"{source}: host symbol {symbol!r} is defined by the cell's model; "
                         f"the module {how} it, but a module may only read host symbols")
    if symbol in RESERVED_IDS or symbol.startswith(RESERVED_PREFIXES):
        raise InputError(f"{source}: {symbol!r} is in BioXen's namespace for packages' genes "
                         f"({', '.join(RESERVED_PREFIXES[:4])}, ...); the module {how} it")
