"""Biological packages as a user names them: a built-in by name, or a module from a file.

The packages themselves are data (`guest.py`); a user's module is read here, its text
checked, then compiled, bounded and tried in a cell (`modules.py`) before it is accepted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from bioxen_flows.errors import InputError
from bioxen_flows.model.builder import MAX_N, MAX_W
from bioxen_flows.model.guest import (
    BUILTIN_PACKAGES,
    GENERATED_PREFIXES,
    RESERVED_IDS,
    RESERVED_PREFIXES,
    GuestGene,
    Package,
    check_gene_id,
)
from bioxen_flows.model.modules import (
    compile_module,
    host_symbols,
    sbml_to_antimony_body,
    trial_module,
)


def resolve_package(name_or_path: str | Path, copies: int | None = None) -> Package:
    """A built-in package by name, or a user module from an .ant/.sbml/.xml file."""
    key = str(name_or_path)
    if key in BUILTIN_PACKAGES:
        package = BUILTIN_PACKAGES[key]
    elif Path(key).suffix.lower() in {".ant", ".txt", ".sbml", ".xml"}:
        package = load_user_module(Path(key))
    else:
        raise InputError(
            f"unknown package {key!r}; built-in packages: {', '.join(BUILTIN_PACKAGES)}; "
            "or give a path to an Antimony (.ant) or SBML (.xml/.sbml) module"
        )
    return package if copies is None else package.with_copies(copies)


MAX_MODULE_BYTES = 64 * 1024  # an Antimony module file
MAX_SBML_MODULE_BYTES = 1024 * 1024  # an SBML module file (XML is verbose)
# Words that would open or close a model, import another file or define a function:
# a module is one flat list of statements spliced into the cell's model.
_STRUCTURE_WORDS = re.compile(r"\b(model|module|import|end|function)\b")
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/|#[^\n]*", re.S)


def module_size_limit(path: str | Path) -> int:
    """The most bytes a module file may hold: read no more, wherever it is read."""
    sbml = Path(path).suffix.lower() in {".sbml", ".xml"}
    return MAX_SBML_MODULE_BYTES if sbml else MAX_MODULE_BYTES


def load_user_module(path: Path) -> Package:
    """Read a user's expression module.

    Convention: for each gene G the module defines `w_G` (transcription, molecules/min)
    and `n_G` (length, aa); it may define `reg_G := ...` (0..1, multiplies transcription,
    e.g. repression by another guest protein `p_H`) and further reactions on its proteins.
    It may read host symbols (a, r, lam, elong, ...) but never define them: the module is
    compiled on its own (Antimony -> SBML, read with libsbml) and every parameter value,
    rule, event assignment, initial assignment, species, reaction and compartment it
    defines is checked against the host model's ids (`check_module_symbols`).
    """
    from bioxen_flows.files import read_text_file

    path = Path(os.path.abspath(path))  # relative: where the user stood when installing
    is_sbml = path.suffix.lower() in {".sbml", ".xml"}
    text = read_text_file(path, max_bytes=module_size_limit(path), what="package file")
    if is_sbml:
        body = sbml_to_antimony_body(text, source=str(path))
    else:
        body = _strip_model_wrapper(text, source=str(path))
    return user_module(path.stem, body, source=str(path))


def user_module(name: str, body: str, source: str) -> Package:
    """A user module from its Antimony statements, compiled and checked. Read from its file
    once, at install; a VM stores the text by content, so later loads never read the file."""
    for lineno, line in enumerate(_COMMENTS.sub("", body).splitlines(), start=1):
        word = _STRUCTURE_WORDS.search(line)
        if word:
            raise InputError(
                f"{source}: line {lineno}: {word.group(1)!r}: nested models, functions and "
                "imports are not allowed (a module is a list of statements)"
            )
    _check_statement_sizes(body, source)
    model = compile_module(body, source=source)
    _check_values(model, source)
    package = Package(
        name=name,
        description=f"user module from {Path(source).name}",
        genes=tuple(_module_genes(model, source)),
        antimony=body,
        source=source,
        defines=MappingProxyType(_module_definitions(model, source)),
    )
    check_module_symbols(package, host_symbols())
    declared = {symbol: how for symbol, how in _declared_ids(body).items()
                if symbol not in package.defines}
    check_module_symbols(replace(package, defines=MappingProxyType(declared)), host_symbols())
    check_module_dynamics(package)
    return package


def _module_genes(model, path: str) -> list[GuestGene]:  # model: libsbml.Model
    """Genes G with parameters w_G and n_G that the module gives values."""
    genes = []
    for param in model.getListOfParameters():
        pid = param.getId()
        if not pid.startswith("w_") or not (param.isSetValue() or model.getRule(pid)):
            continue
        gene_id = pid[2:]
        check_gene_id(gene_id, source=str(path))
        n = model.getParameter(f"n_{gene_id}")
        if n is None or not (n.isSetValue() or model.getRule(n.getId())):
            raise InputError(f"{path}: gene {gene_id!r} has w_{gene_id} but no n_{gene_id}")
        if param.isSetValue() and not 0 <= param.getValue() <= MAX_W:
            raise InputError(f"{path}: w_{gene_id} must be from 0 to {MAX_W:,.0f} molecules/min")
        if n.isSetValue() and not 1 <= n.getValue() <= MAX_N:
            raise InputError(f"{path}: n_{gene_id} must be from 1 to {MAX_N:,.0f} aa")
        genes.append(GuestGene(gene_id, 0, 0.0, user_defined=True))
    if not genes:
        raise InputError(
            f"{path}: no genes found; declare each gene G with w_G (molecules/min) and n_G (aa)"
        )
    return genes


def _module_definitions(model, path: str) -> dict[str, str]:  # model: libsbml.Model
    """Every id the module defines, with how (for the error message)."""
    import libsbml

    defined: dict[str, str] = {}
    for param in model.getListOfParameters():
        if param.isSetValue():
            defined.setdefault(param.getId(), "gives a value to")
    for species in model.getListOfSpecies():
        defined.setdefault(species.getId(), "declares as a species")
    for comp in model.getListOfCompartments():
        if comp.getId() == "default_compartment":  # Antimony's home for undeclared species
            continue
        if comp.isSetSize() and comp.getSize() != 1:
            raise InputError(
                f"{path}: compartment {comp.getId()!r} has size {comp.getSize():g}; a module's "
                "species live in the host cell (size 1, amounts in molecules per cell)"
            )
        if comp.getId() != "cell":
            defined.setdefault(comp.getId(), "declares as a compartment")
    for rule in model.getListOfRules():
        if rule.getTypeCode() == libsbml.SBML_ALGEBRAIC_RULE:
            raise InputError(f"{path}: algebraic rules are not allowed in a module")
        defined[rule.getVariable()] = "sets with a rule"
    for assignment in model.getListOfInitialAssignments():
        defined[assignment.getSymbol()] = "sets with an initial assignment"
    for event in model.getListOfEvents():
        if event.getId():
            defined.setdefault(event.getId(), "names an event")
        for assignment in event.getListOfEventAssignments():
            defined[assignment.getVariable()] = "sets in an event"
    for reaction in model.getListOfReactions():
        defined.setdefault(reaction.getId(), "names a reaction")
        for ref in (*reaction.getListOfReactants(), *reaction.getListOfProducts()):
            # a rule or an assignment that sets the species too is what is reported (and
            # refused on a protein p_G, which only reactions may change)
            if defined.get(ref.getSpecies(), "declares as a species") == "declares as a species":
                defined[ref.getSpecies()] = "changes in a reaction"
    for function in model.getListOfFunctionDefinitions():
        defined.setdefault(function.getId(), "names a function")
    return defined


# `const a, b;`, `var a;` and `a = ;` re-declare ids of the model the module is spliced
# into: on a host symbol they are refused (`const r;` held the host's free ribosomes
# constant: 13 % more ribosomes than the plain cell after 600 min)
_DECLARATION = re.compile(r"^\s*(const|var)\s+([A-Za-z_][\w\s,]*)$")
_NO_VALUE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*$")


def _declared_ids(body: str) -> dict[str, str]:
    """Ids the module's text declares with `const`/`var` or gives no value (`a = ;`)."""
    declared: dict[str, str] = {}
    for line in _COMMENTS.sub("", body).splitlines():
        for statement in line.split(";"):
            match = _DECLARATION.match(statement)
            if match:
                for symbol in re.split(r"[\s,]+", match.group(2).strip()):
                    declared.setdefault(symbol, f"declares with {match.group(1)!r}")
            elif _NO_VALUE.match(statement):
                declared.setdefault(_NO_VALUE.match(statement).group(1),
                                    "declares without a value")
    declared.pop("cell", None)  # the host's compartment, constant, size 1, as declared there
    return declared


def check_module_symbols(package: Package, taken: Iterable[str]) -> None:
    """Refuse a user module that defines any id in `taken` (the host model's, or those of
    the packages already installed) or one the builder generates for its genes; its genes'
    proteins `p_G` may take part in its reactions, nothing more."""
    taken = set(taken)
    own_proteins = {f"p_{g.gene_id}" for g in package.genes}
    generated = {f"{prefix}{g.gene_id}" for g in package.genes for prefix in GENERATED_PREFIXES}
    own_genes = {f"{x}_{g.gene_id}" for g in package.genes for x in ("w", "n", "reg")}
    for symbol, how in sorted(package.defines.items()):
        if symbol in own_proteins and how in ("declares as a species", "changes in a reaction"):
            continue
        if symbol in taken:
            raise InputError(
                f"{package.source}: host symbol {symbol!r} is defined by the cell's model; "
                f"the module {how} it, but a module may only read host symbols"
            )
        if symbol in generated or symbol in own_proteins:
            raise InputError(
                f"{package.source}: BioXen generates {symbol!r} for the module's gene; the module "
                f"{how} it, but may define only w_G, n_G, reg_G and its own symbols"
            )
        if symbol not in own_genes and (
            symbol in RESERVED_IDS or symbol.startswith(RESERVED_PREFIXES)
        ):
            raise InputError(
                f"{package.source}: {symbol!r} is in BioXen's namespace for packages' genes "
                f"({', '.join(RESERVED_PREFIXES[:4])}, ...); the module {how} it, but may "
                "define only w_G, n_G, reg_G of its own genes G and ids outside that namespace"
            )


_TOKEN = re.compile(r"[A-Za-z0-9_.]+|[^\sA-Za-z0-9_.]")
MAX_STATEMENT_TOKENS = 2000  # names, numbers and symbols in one statement
MAX_NESTING = 64  # parentheses


def _check_statement_sizes(body: str, source: str) -> None:
    """A cheap bound on the text before Antimony parses it (a 12,000-term sum took seconds
    there, then crashed libroadrunner); the compiled expressions are bounded again exactly
    (`modules._check_math`)."""
    for lineno, line in enumerate(_COMMENTS.sub("", body).splitlines(), start=1):
        for statement in line.split(";"):
            depth = deepest = 0
            for char in statement:
                depth += (char == "(") - (char == ")")
                deepest = max(deepest, depth)
            if deepest > MAX_NESTING or len(_TOKEN.findall(statement)) > MAX_STATEMENT_TOKENS:
                raise InputError(
                    f"{source}: line {lineno}: the statement is too large; at most "
                    f"{MAX_STATEMENT_TOKENS} terms and {MAX_NESTING} levels of parentheses"
                )


MAX_MODULE_AMOUNT = 1e12  # molecules per cell: a module species' initial amount


def _check_values(model, source: str) -> None:  # model: libsbml.Model
    """Initial amounts in [0, MAX_MODULE_AMOUNT] and finite parameter values: a cell snapshot
    holds at most 1e15 of a species, so an accepted module may never start out of range."""
    import math

    for species in model.getListOfSpecies():
        for is_set, value in ((species.isSetInitialAmount(), species.getInitialAmount),
                              (species.isSetInitialConcentration(),
                               species.getInitialConcentration)):
            if is_set and not 0 <= value() <= MAX_MODULE_AMOUNT:
                raise InputError(
                    f"{source}: species {species.getId()!r} starts at {value():g}; a module's "
                    f"amounts must be from 0 to {MAX_MODULE_AMOUNT:g} molecules"
                )
    for param in model.getListOfParameters():
        if param.isSetValue() and not math.isfinite(param.getValue()):
            raise InputError(f"{source}: parameter {param.getId()!r} is not a finite number")


def check_module_dynamics(package: Package) -> None:
    """A trial run of the module in the host cell (see `modules.trial_module`), once per
    module text and process."""
    trial_module(package)


def _strip_model_wrapper(text: str, source: str = "module") -> str:
    """Accept either a bare list of statements or a single `model ... end` block."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^\s*model\b", line)]
    if not starts:
        return text
    ends = [i for i, line in enumerate(lines) if re.match(r"^\s*end\s*$", line)]
    if len(starts) != 1 or not ends:
        raise InputError(
            f"{source}: a module file must hold statements or exactly one model ... end block"
        )
    return "\n".join(lines[starts[0] + 1 : ends[-1]])

