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
            factors.append(f"reg_{g}")
        if package.strength != 1:  # only then, so unswept cells keep their model text
            lines.append(f"  strength_{g} = {package.strength!r};")
            factors.append(f"strength_{g}")
        lines += [
            f"  on_{g} = 1; copies_{g} = {package.copies};",
            f"  tx_{g}: -> m_{g}; {'*'.join(factors)}*w_{g}*a/(theta_nr + a);",
            f"  bind_{g}: r + m_{g} -> c_{g}; k_b*r*m_{g};",
            f"  unbind_{g}: c_{g} -> r + m_{g}; k_u*c_{g};",
            f"  tl_{g}: c_{g} -> r + m_{g} + p_{g}; elong*c_{g}/n_{g};",
            f"  deg_m_{g}: m_{g} -> ; d_m*m_{g};",
            f"  dil_m_{g}: m_{g} -> ; lam*m_{g};",
            f"  dil_c_{g}: c_{g} -> ; lam*c_{g};",
            f"  dil_p_{g}: p_{g} -> ; lam*p_{g};",
            f"  m_{g} = 0; c_{g} = 0; p_{g} = 0;",
        ]
    return "\n".join(lines)


def build_model_text(
    parameters: Mapping[str, float] | None = None,
    packages: Iterable[Package] = (),
    stochastic: bool = False,
) -> str:
    """Host model + organism overrides + guest modules, as one Antimony model."""
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
    return "\n".join(body)


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
