"""Compose the model text of one cell and compile it with Antimony and libroadrunner.

The host model is `weisse2015.ant`; an organism appends its parameter overrides and
each installed package appends expression modules of the same form as the host's
own sectors, so guest genes compete for the same free ribosomes and energy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from importlib import resources

from bioxen_flows.errors import InputError
from bioxen_flows.model.packages import Package

MODEL_NAME = "whole_cell"
MAX_W = 1e6  # a user gene's transcription, molecules/min per copy
MAX_N = 1e6  # a user gene's length, aa
_ENERGY_BLOCK = re.compile(r"  // <energy>.*?// </energy>\n", re.S)
# libAntimony keeps global state: one caller at a time.
_ANTIMONY_LOCK = threading.Lock()


@cache
def _model_file(name: str) -> str:
    return resources.files("bioxen_flows.model").joinpath(name).read_text(encoding="utf-8")


def host_model_text() -> str:
    """The published E. coli model exactly as written in weisse2015.ant."""
    return _model_file("weisse2015.ant")


@cache
def host_parameter(name: str) -> float:
    """A parameter's value as written in the host model (e.g. the cell mass `M`, aa)."""
    match = re.search(rf"^\s*{re.escape(name)}\s*=\s*([^;]+);", host_model_text(), re.M)
    if match is None:
        raise KeyError(f"the host model sets no parameter {name!r}")
    return float(match.group(1))


def gene_module_text(package: Package) -> str:
    """Reactions for each guest gene: transcription, ribosome binding, translation, decay."""
    lines = [f"  // ---- package {package.name}: {package.description} ----"]
    if package.antimony:
        lines.append(package.antimony)
    for operon in package.operons:
        lines.append(f"  induced_{operon} = 0; leak_{operon} = {package.operon_leak!r};")
    for gene in package.genes:
        g = gene.gene_id
        lines.append(f"  species m_{g} in cell, c_{g} in cell, p_{g} in cell;")
        if not gene.user_defined:
            lines.append(f"  w_{g} = {gene.max_transcription!r}; n_{g} = {gene.length_aa};")
        factors = [f"on_{g}", f"copies_{g}"]
        if gene.operon:
            factors.append(f"(leak_{gene.operon} + (1 - leak_{gene.operon})*induced_{gene.operon})")
        if gene.user_defined and re.search(rf"\breg_{g}\s*:=", package.antimony):
            factors.append(f"max(0, min(1, reg_{g}))")
        factors.append(f"strength_{g}")
        # A module's w_G, n_G, reg_G may be rules of anything: clamped where they feed the
        # host's reactions, so transcription and translation stay physical (docs/api.md).
        w, n = (f"max(0, min({MAX_W:g}, w_{g}))", f"max(1, min({MAX_N:g}, n_{g}))") if (
            gene.user_defined) else (f"w_{g}", f"n_{g}")
        lines += [
            # copies and strength are parameters set after the model loads (the cell's
            # `package_parameters`): one compiled model serves every value of them
            f"  on_{g} = 1; copies_{g} = 1; strength_{g} = 1;",
            f"  tx_{g}: -> m_{g}; {'*'.join(factors)}*{w}*a/(theta_nr + a);",
            f"  bind_{g}: r + m_{g} -> c_{g}; k_b*r*m_{g};",
            f"  unbind_{g}: c_{g} -> r + m_{g}; k_u*c_{g};",
            f"  tl_{g}: c_{g} -> r + m_{g} + p_{g}; elong*c_{g}/{n};",
            f"  deg_m_{g}: m_{g} -> ; d_m*m_{g};",
            f"  dil_m_{g}: m_{g} -> ; lam*m_{g};",
            f"  dil_c_{g}: c_{g} -> ; lam*c_{g};",
            f"  dil_p_{g}: p_{g} -> ; lam*p_{g};",
            f"  m_{g} = 0; c_{g} = 0; p_{g} = 0;",
        ]
    return "\n".join(lines)


def package_parameters(packages: Iterable[Package]) -> dict[str, float]:
    """The model parameters that carry each installed gene's copies and strength."""
    values: dict[str, float] = {}
    for package in packages:
        for gene in package.genes:
            values[f"copies_{gene.gene_id}"] = float(package.copies)
            values[f"strength_{gene.gene_id}"] = float(package.strength)
    return values


def build_model_text(
    parameters: Mapping[str, float] | None = None,
    packages: Iterable[Package] = (),
    stochastic: bool = False,
) -> str:
    """Host model + organism overrides + guest modules, as one Antimony model.

    A package's copies and strength are not in the text (they are 1 there): set them with
    `package_parameters` once the model is loaded, so one compiled model serves them all."""
    text = host_model_text()
    if stochastic:
        text = _ENERGY_BLOCK.sub(lambda _: _model_file("energy_qss.ant"), text, count=1)
    packages = list(packages)
    extra = [gene_module_text(p) for p in packages]
    complexes = [f"c_{g.gene_id}" for p in packages for g in p.genes]
    if complexes:
        extra.append(f"  guest_complexes := {' + '.join(complexes)};")
    if parameters:
        extra.append("  // ---- organism parameter overrides (docs/model.md) ----")
        extra += [f"  {name} = {value!r};" for name, value in parameters.items()]
    head, _, _ = text.rstrip().rpartition("end")
    return head + "\n".join(extra) + "\nend\n"


@lru_cache(maxsize=64)
def antimony_to_sbml(text: str) -> str:
    """Antimony → SBML (cached: every VM of an organism shares its model text)."""
    import antimony

    with _ANTIMONY_LOCK:
        antimony.clearPreviousLoads()
        if antimony.loadAntimonyString(text) < 0:
            raise InputError(f"model text does not compile: {antimony.getLastError().strip()}")
        return antimony.getSBMLString(MODEL_NAME)


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
    with _ANTIMONY_LOCK:
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
    from bioxen_flows.model.packages import check_free_id

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


TRIAL_ORGANISM = "ecoli"  # the fastest-growing host: the trial's reference cell
TRIAL_END_MIN = 1e6  # the longest single grow()
CLOCK_END_MIN = 1e9  # a cell's clock never passes this (engine.cell.MAX_CLOCK_MIN)
MAX_TRIAL_AMOUNT = 1e12  # molecules of any species during the trial
MAX_AMOUNT = 1e15  # what a cell snapshot holds of one species (engine.cell.MAX_AMOUNT)


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

    from bioxen_flows.engine.cell import balanced_growth_state
    from bioxen_flows.model.packages import GuestGene

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
    times = [0.0, *np.geomspace(1e-3, TRIAL_END_MIN, 46)]
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
        if amount + max(0.0, slope) * (CLOCK_END_MIN - TRIAL_END_MIN) > MAX_AMOUNT:
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

    with _ANTIMONY_LOCK:
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


def load_roadrunner(text: str):  # -> roadrunner.RoadRunner (lazy import)
    """A fresh RoadRunner instance for the model text: from the compiled-model cache when
    this user compiled it before on this host (~7 ms), else compiled (and kept there).

    Always the cache when it is on: libroadrunner's own reuse of compiled code (a compile
    in milliseconds while an instance of the model is alive) knows only instances it
    compiled itself, so after a load from the cache the next compile of the same text took
    the full 0.35 s (ODE) to 0.73 s (stochastic) — once per model in every worker."""
    import roadrunner

    from bioxen_flows.logs import quiet_numerical_libraries
    from bioxen_flows.model import compiled_cache

    quiet_numerical_libraries()

    def compile_model():  # -> roadrunner.RoadRunner
        return roadrunner.RoadRunner(antimony_to_sbml(text))

    return compiled_cache.load_or_compile(text, compile_model)
