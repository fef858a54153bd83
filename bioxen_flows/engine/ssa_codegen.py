"""Generate an exact stochastic simulation kernel (Gillespie's direct method) from SBML.

The cell's whole model (host, organism, packages, user modules) is read with libsbml and
written out as C: the propensity of every reaction, with every assignment rule inlined in
dependency order. Model symbols never reach the source as text: species become ``y[i]``,
parameters ``q<k>``/``p[k]``, rules local variables ``v<k>``, and numbers are written with
``repr``; expressions are walked node by node over a closed set of MathML operators. So a
module's names cannot inject code, and anything else (events, rate rules, delays,
non-integer stoichiometry...) is refused with `Unsupported`, for the caller to run that
model on libroadrunner's Gillespie instead.

The driver loop around the propensities is fixed text (`ssa_driver.c.txt`), the same for
every model.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

GROWTH_RATE = "lam"  # the host's growth rate: the rate of every dilution reaction


class Unsupported(Exception):
    """A model construct the compiled engine does not simulate (the reason is the text)."""


@dataclass(frozen=True)
class KernelSource:
    """A model's kernel: its Python source and what the caller maps in and out."""

    source: str
    species: tuple[str, ...]  # order of the state vector
    parameters: tuple[str, ...]  # order of the parameter vector
    rules: tuple[str, ...]  # order of the rule values `rule_values` returns
    reactions: tuple[str, ...]
    dilution: tuple[bool, ...]  # reaction j is X -> 0 at lam*X (replaced by division)
    digest: str  # SHA-256 of the source: the kernel's name on disk


@cache
def _driver_text() -> str:
    return resources.files("bioxen_flows.engine").joinpath("ssa_driver.c.txt").read_text()


def generate(sbml: str) -> KernelSource:
    """The kernel source of an SBML model, or `Unsupported` with the reason."""
    import libsbml

    doc = libsbml.readSBMLFromString(sbml)
    if doc.getModel() is None or doc.getNumErrors(libsbml.LIBSBML_SEV_ERROR):
        raise Unsupported("the model is not valid SBML")
    converter = libsbml.ConversionProperties()
    converter.addOption("expandFunctionDefinitions", True)
    if doc.convert(converter) != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise Unsupported("its function definitions cannot be expanded")
    model = doc.getModel()
    for what, count in (
        ("events", model.getNumEvents()),
        ("rate or algebraic rules",
         sum(1 for r in model.getListOfRules() if not r.isAssignment())),
    ):
        if count:
            raise Unsupported(f"the model has {what}")
    constants: dict[str, float] = {}
    for comp in model.getListOfCompartments():
        if model.getRule(comp.getId()) or model.getInitialAssignment(comp.getId()):
            raise Unsupported(f"compartment {comp.getId()!r} changes size")
        if not comp.isSetSize() or comp.getSize() != 1:
            raise Unsupported(f"compartment {comp.getId()!r} is not of size 1")
        constants[comp.getId()] = 1.0
    species = tuple(
        s.getId() for s in model.getListOfSpecies()
        if not s.getBoundaryCondition() and not s.getConstant()
        and model.getRule(s.getId()) is None
    )
    fixed_species = [s for s in model.getListOfSpecies() if s.getId() not in species]
    rule_of = {r.getVariable(): r for r in model.getListOfRules()}
    parameters = tuple(
        p.getId() for p in model.getListOfParameters() if p.getId() not in rule_of
    ) + tuple(s.getId() for s in fixed_species if s.getId() not in rule_of)
    names: dict[str, str] = {}
    names.update({s: f"y[{i}]" for i, s in enumerate(species)})
    names.update({p: f"p[{k}]" for k, p in enumerate(parameters)})
    order = _rule_order(rule_of)
    names.update({v: f"v{k}" for k, v in enumerate(order)})
    for name, value in constants.items():
        names.setdefault(name, repr(value))

    local_names = {**names, **{p: f"q{k}" for k, p in enumerate(parameters)}}
    rule_lines = [
        f"const double v{k} = {_expr(rule_of[v].getMath(), names)};" for k, v in enumerate(order)
    ]
    rate_lines = [
        f"const double v{k} = {_expr(rule_of[v].getMath(), local_names)};"
        for k, v in enumerate(order)
    ]
    reactions, dilution, stoich, laws = [], [], [], []
    index = {s: i for i, s in enumerate(species)}
    for j, reaction in enumerate(model.getListOfReactions()):
        if not reaction.isSetKineticLaw() or reaction.getKineticLaw().getMath() is None:
            raise Unsupported(f"reaction {reaction.getId()!r} has no rate law")
        law = reaction.getKineticLaw()
        local = dict(local_names)
        for parameter in law.getListOfLocalParameters():
            local[parameter.getId()] = repr(float(parameter.getValue()))
        changes: dict[int, int] = {}
        for sign, refs in ((-1, reaction.getListOfReactants()), (1, reaction.getListOfProducts())):
            for ref in refs:
                amount = ref.getStoichiometry() if ref.isSetStoichiometry() else 1.0
                if ref.getId() and (model.getRule(ref.getId())
                                    or model.getInitialAssignment(ref.getId())):
                    raise Unsupported(f"reaction {reaction.getId()!r} has variable stoichiometry")
                if amount != int(amount) or not math.isfinite(amount):
                    raise Unsupported(
                        f"reaction {reaction.getId()!r} has non-integer stoichiometry"
                    )
                if ref.getSpecies() in index:
                    i = index[ref.getSpecies()]
                    changes[i] = changes.get(i, 0) + sign * int(amount)
        reactions.append(reaction.getId())
        stoich.append({i: d for i, d in changes.items() if d})
        dilution.append(_is_dilution(reaction, law.getMath()))
        laws.append(f"a[{j}] = {_expr(law.getMath(), local)};")

    pointer, targets, deltas = [0], [], []
    for changes in stoich:
        for i, d in sorted(changes.items()):
            targets.append(i)
            deltas.append(d)
        pointer.append(len(targets))
    rule_store = [f"out[{k}] = v{k};" for k in range(len(order))] or [
        "(void)y; (void)p; (void)t; (void)out;"]
    read = set().union(*(_locals(line) for line in rate_lines + laws))
    load = [f"const double q{k} = p[{k}];" for k in range(len(parameters)) if f"q{k}" in read]
    driver = _driver_text()
    assert "//<PARAMETERS>" in driver and "//<RATES>" in driver
    driver = (driver.replace("//<PARAMETERS>", _indent(load, 4))
              .replace("//<RATES>", _indent(rate_lines + laws, 8)))
    source = "\n".join([
        "/* Generated by bioxen_flows.engine.ssa_codegen; do not edit. */",
        "#include <math.h>",
        "#include <stdint.h>",
        f"#define N_SPECIES {len(species)}",
        f"#define N_REACTIONS {len(reactions)}",
        f"#define N_RULES {len(order)}",
        f"static const int STOICH_POINTER[] = {_c_list(pointer)};",
        f"static const int STOICH_SPECIES[] = {_c_list(targets)};",
        f"static const double STOICH_DELTA[] = {_c_list([float(d) for d in deltas])};",
        f"static const unsigned char DILUTION[] = {_c_list([int(d) for d in dilution])};",
        "",
        "/* Hill coefficients and the cap's exponent are small whole numbers: multiply. */",
        "static inline double power(double x, double e) {",
        "    if (e == 2.0) return x * x;",
        "    if (e == 4.0) { const double x2 = x * x; return x2 * x2; }",
        "    if (e == 8.0) { const double x2 = x * x, x4 = x2 * x2; return x4 * x4; }",
        "    return pow(x, e);",
        "}",
        "",
        "static void rule_values(const double *y, const double *p, double t, double *out) {",
        _indent(rule_lines + rule_store, 4),
        "}",
        "",
        driver,
    ]) + "\n"
    return KernelSource(
        source=source, species=species, parameters=parameters, rules=tuple(order),
        reactions=tuple(reactions), dilution=tuple(dilution),
        digest=hashlib.sha256(source.encode()).hexdigest(),
    )


def _indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in lines)


def _c_list(values: list) -> str:
    return "{" + ", ".join(repr(v) for v in values or [0]) + "}"


def _locals(line: str) -> set[str]:
    return set(re.findall(r"\bq[0-9]+\b", line))


def _rule_order(rule_of: dict) -> list[str]:
    """Assignment rules in an order where each comes after every rule it reads."""
    reads = {}
    for variable, rule in rule_of.items():
        reads[variable] = {n for n in _names(rule.getMath()) if n in rule_of}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(v: str, depth: int = 0) -> None:
        if state.get(v) == 2:
            return
        if state.get(v) == 1 or depth > len(rule_of):
            raise Unsupported(f"the assignment rules around {v!r} form a loop")
        state[v] = 1
        for w in sorted(reads[v]):
            visit(w, depth + 1)
        state[v] = 2
        order.append(v)

    for v in rule_of:
        visit(v)
    return order


def _names(node) -> set[str]:  # node: libsbml.ASTNode
    found, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        if n.isName():
            found.add(n.getName())
        stack += [n.getChild(i) for i in range(n.getNumChildren())]
    return found


def _is_dilution(reaction, law) -> bool:
    """X -> 0 at lam*X: growth's dilution, which a dividing cell has by partitioning."""
    if reaction.getNumReactants() != 1 or reaction.getNumProducts() != 0:
        return False
    import libsbml

    target = reaction.getReactant(0).getSpecies()
    if law.getType() != libsbml.AST_TIMES or law.getNumChildren() != 2:
        return False
    factors = {law.getChild(i).getName() for i in range(2) if law.getChild(i).isName()}
    return factors == {GROWTH_RATE, target}


_BINARY = {"AST_PLUS": "+", "AST_MINUS": "-", "AST_TIMES": "*", "AST_DIVIDE": "/"}
_RELATIONAL = {
    "AST_RELATIONAL_EQ": "==", "AST_RELATIONAL_NEQ": "!=", "AST_RELATIONAL_GT": ">",
    "AST_RELATIONAL_GEQ": ">=", "AST_RELATIONAL_LT": "<", "AST_RELATIONAL_LEQ": "<=",
}
_FUNCTIONS = {
    "AST_FUNCTION_ABS": "fabs", "AST_FUNCTION_EXP": "exp", "AST_FUNCTION_LN": "log",
    "AST_FUNCTION_FLOOR": "floor", "AST_FUNCTION_CEILING": "ceil", "AST_FUNCTION_SIN": "sin",
    "AST_FUNCTION_COS": "cos", "AST_FUNCTION_TAN": "tan", "AST_FUNCTION_TANH": "tanh",
    "AST_FUNCTION_SINH": "sinh", "AST_FUNCTION_COSH": "cosh", "AST_FUNCTION_ARCSIN": "asin",
    "AST_FUNCTION_ARCCOS": "acos", "AST_FUNCTION_ARCTAN": "atan",
}
MAX_DEPTH = 200  # the builder bounds a module's nesting at 64


def _number(value: float) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return repr(float(value))


def _expr(node, names: dict[str, str], depth: int = 0) -> str:  # node: libsbml.ASTNode
    """One MathML expression as a C expression over y[i], q<k> or p[k], v<k> and t."""
    import libsbml

    if depth > MAX_DEPTH:
        raise Unsupported("an expression is nested too deeply")
    tag = _ast_tags().get(node.getType(), "")
    children = [node.getChild(i) for i in range(node.getNumChildren())]

    def sub(child) -> str:
        return _expr(child, names, depth + 1)

    def truth(child) -> str:
        return f"({sub(child)} != 0.0)"

    if tag == "AST_INTEGER":
        return _number(node.getInteger())
    if tag in ("AST_REAL", "AST_REAL_E", "AST_RATIONAL"):
        return _number(node.getReal())
    if tag == "AST_NAME_TIME":
        return "t"
    if tag == "AST_NAME":
        name = node.getName()
        if name not in names:
            raise Unsupported(f"the model reads {name!r}, which nothing defines")
        return names[name]
    if tag in ("AST_CONSTANT_PI", "AST_CONSTANT_E"):
        return _number(math.pi if tag.endswith("PI") else math.e)
    if tag in ("AST_CONSTANT_TRUE", "AST_CONSTANT_FALSE"):
        return "1.0" if tag.endswith("TRUE") else "0.0"
    if tag in _BINARY:
        op = _BINARY[tag]
        if not children:
            return "0.0" if op == "+" else "1.0"
        if len(children) == 1:
            return f"(-{sub(children[0])})" if op == "-" else sub(children[0])
        return "(" + f" {op} ".join(sub(c) for c in children) + ")"
    if tag in ("AST_POWER", "AST_FUNCTION_POWER"):
        return f"power({sub(children[0])}, {sub(children[1])})"
    if tag == "AST_FUNCTION_ROOT":
        degree = sub(children[0]) if len(children) == 2 else "2.0"
        return f"pow({sub(children[-1])}, 1.0 / {degree})"
    if tag == "AST_FUNCTION_LOG":
        base = sub(children[0]) if len(children) == 2 else "10.0"
        return f"(log({sub(children[-1])}) / log({base}))"
    if tag in _FUNCTIONS and len(children) == 1:
        return f"{_FUNCTIONS[tag]}({sub(children[0])})"
    if tag in ("AST_FUNCTION_MAX", "AST_FUNCTION_MIN") and children:
        fn = "fmax" if tag.endswith("MAX") else "fmin"
        out = sub(children[0])
        for child in children[1:]:
            out = f"{fn}({out}, {sub(child)})"
        return out
    if tag in _RELATIONAL:
        op = _RELATIONAL[tag]
        pairs = [f"({sub(a)} {op} {sub(b)})" for a, b in zip(children, children[1:], strict=False)]
        return "((double)(" + " && ".join(pairs or ["1"]) + "))"
    if tag in ("AST_LOGICAL_AND", "AST_LOGICAL_OR"):
        op = " && " if tag.endswith("AND") else " || "
        empty = "1" if tag.endswith("AND") else "0"
        return "((double)(" + (op.join(truth(c) for c in children) or empty) + "))"
    if tag == "AST_LOGICAL_NOT" and len(children) == 1:
        return f"((double)!{truth(children[0])})"
    if tag == "AST_LOGICAL_XOR":
        return "((double)((" + " + ".join(f"(int){truth(c)}" for c in children) + ") % 2))"
    if tag == "AST_FUNCTION_PIECEWISE":
        out = sub(children[-1]) if len(children) % 2 else "NAN"
        for k in range(len(children) // 2 - 1, -1, -1):
            out = f"({truth(children[2 * k + 1])} ? {sub(children[2 * k])} : {out})"
        return out
    raise Unsupported(f"the model uses {libsbml.formulaToL3String(node)[:60]!r}")


@cache
def _ast_tags() -> dict[int, str]:
    import libsbml

    return {getattr(libsbml, name): name for name in _AST_NAMES}


_AST_NAMES = (
    "AST_INTEGER", "AST_REAL", "AST_REAL_E", "AST_RATIONAL", "AST_NAME", "AST_NAME_TIME",
    "AST_CONSTANT_PI", "AST_CONSTANT_E", "AST_CONSTANT_TRUE", "AST_CONSTANT_FALSE",
    "AST_PLUS", "AST_MINUS", "AST_TIMES", "AST_DIVIDE", "AST_POWER", "AST_FUNCTION_POWER",
    "AST_FUNCTION_ROOT", "AST_FUNCTION_LOG", *_FUNCTIONS, "AST_FUNCTION_MAX",
    "AST_FUNCTION_MIN", *_RELATIONAL, "AST_LOGICAL_AND", "AST_LOGICAL_OR", "AST_LOGICAL_NOT",
    "AST_LOGICAL_XOR", "AST_FUNCTION_PIECEWISE",
)
