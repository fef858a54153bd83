"""Parser and validator for the bio-VM process language.

A process program is one call per line, e.g. ``grow(minutes=60)``. Programs come from users,
so nothing is ever evaluated: each line is parsed with :mod:`ast` and only literal arguments
are accepted. Size limits are enforced before parsing so that huge or deeply nested input
never reaches the parser. Parsing is all-or-nothing: any bad line rejects the whole program.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from bioxen_flows.errors import InputError
from bioxen_flows.limits import (
    IDENTIFIER,
    MAX_COPIES,
    MAX_GROW_MINUTES,
    MAX_NUTRIENT,
    MAX_PROGRAM_MINUTES,
    MAX_PROGRAM_MINUTES_STOCHASTIC,
    MAX_STRENGTH,
    MIN_COPIES,
)
from bioxen_flows.organisms.profiles import get_profile, organism_profiles

MAX_CODE_CHARS = 20_000
MAX_LINES = 500
MAX_LINE_CHARS = 500

_REQUIRED = object()


def allowed_calls(biological_type: str) -> frozenset[str]:
    """The calls a program for this organism may use (`process_calls` in profiles.yaml)."""
    return get_profile(biological_type).process_calls


# organism -> its allowed calls, for listing them (built from profiles.yaml, not a copy)
ALLOWED_CALLS: dict[str, frozenset[str]] = {
    key: profile.process_calls for key, profile in organism_profiles().items()
}


class ProcessLanguageError(InputError):
    """A program was rejected; ``line`` is the 1-based line number when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass(frozen=True)
class ProcessCall:
    """One validated call: arguments are bound by name, converted and defaults filled."""

    line: int
    name: str
    args: dict[str, object]
    source: str


@dataclass(frozen=True)
class _Param:
    """One parameter: ``kind`` picks the type check, bounds/choices give the rule."""

    name: str
    kind: str  # "float", "int", "str", "ids" or "choice"
    default: object = _REQUIRED
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    choices: tuple[str, ...] = ()


_SPECS: dict[str, tuple[_Param, ...]] = {
    "grow": (_Param("minutes", "float", low=0, low_inclusive=False, high=MAX_GROW_MINUTES),),
    # copies=None keeps the package's own copy number (e.g. 15 for rfp_plasmid)
    # strength=None keeps the package's promoters; 2.0 doubles its transcription rates
    "install": (_Param("package", "str"),
                _Param("copies", "int", default=None, low=MIN_COPIES, high=MAX_COPIES),
                _Param("strength", "float", default=None, low=0, low_inclusive=False,
                       high=MAX_STRENGTH)),
    "start_transcription": (_Param("genes", "ids"),),
    "stop_transcription": (_Param("genes", "ids"),),
    "manage_operons": (
        _Param("operons", "ids"),
        _Param("action", "choice", choices=("induce", "repress")),
    ),
    "set_nutrient": (_Param("level", "float", low=0, high=MAX_NUTRIENT),),
}

_NODE_LABELS: dict[type, str] = {
    ast.Name: "a variable name",
    ast.Call: "a call",
    ast.Attribute: "an attribute access",
    ast.Subscript: "a subscript",
    ast.JoinedStr: "an f-string",
    ast.Lambda: "a lambda",
    ast.BinOp: "an arithmetic expression",
    ast.ListComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Dict: "a dict",
}
_LITERALS = "only literals are allowed (numbers, strings, booleans, lists of strings)"


class _Reject(Exception):
    """Internal: a line-level problem; the caller adds the line number."""


def _literal(node: ast.expr) -> object:
    """Return the value of a literal node; anything that would need evaluation is rejected."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, str, bool, type(None)):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        return -node.operand.value  # negative numbers should get a range error, not a syntax one
    if isinstance(node, (ast.List, ast.Tuple)):
        if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            return [e.value for e in node.elts]
        raise _Reject(f"list elements must be string literals; {_LITERALS}")
    label = _NODE_LABELS.get(type(node), type(node).__name__)
    if isinstance(node, ast.Constant):
        label = f"a {type(node.value).__name__} value"
    raise _Reject(f"{label} is not allowed as an argument; {_LITERALS}")


def _bound(value: float | None) -> object:
    """A bound as the user writes it: 1000, not 1000.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check(call: str, p: _Param, value: object) -> object:
    """Type-check, convert and range-check one bound argument."""
    where = f"{call}({p.name}=...)"
    if value is None and p.default is None:
        return None
    if p.kind in ("float", "int"):
        wanted = (int, float) if p.kind == "float" else (int,)
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "a number" if p.kind == "float" else "an integer"
            raise _Reject(f"{where} must be {kind}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _Reject(f"{where} must be finite, got {value!r}")
        low_ok = p.low is None or (value >= p.low if p.low_inclusive else value > p.low)
        if not low_ok or (p.high is not None and value > p.high):
            low_op = ">=" if p.low_inclusive else ">"
            shown = value if isinstance(value, float) or abs(value) < 10**20 else "a huge integer"
            raise _Reject(f"{where} must be {low_op} {_bound(p.low)} and <= {_bound(p.high)}, "
                          f"got {shown!r}")
        return float(value) if p.kind == "float" else value
    if p.kind == "ids":
        ids = [value] if isinstance(value, str) else value
        if not isinstance(ids, list) or not ids:
            raise _Reject(f"{where} must be a non-empty list of ids, got {value!r}")
        for item in ids:
            if not IDENTIFIER.fullmatch(item):
                raise _Reject(
                    f"{where}: {item!r} is not a valid id "
                    "(letter, then up to 63 letters, digits or underscores)"
                )
        return list(ids)
    if not isinstance(value, str):
        raise _Reject(f"{where} must be a string, got {value!r}")
    if p.kind == "choice" and value not in p.choices:
        raise _Reject(f"{where} must be one of {', '.join(p.choices)}, got {value!r}")
    if p.kind == "str" and not 0 < len(value) <= 200:
        raise _Reject(f"{where} must be a non-empty string of at most 200 characters")
    return value


def _bind(name: str, call: ast.Call) -> dict[str, object]:
    """Bind positional and keyword literals to the call's parameters, then validate them."""
    params = _SPECS[name]
    by_name = {p.name: p for p in params}
    raw: dict[str, object] = {}
    if any(isinstance(a, ast.Starred) for a in call.args):
        raise _Reject(f"{name}(): *args are not allowed; {_LITERALS}")
    if len(call.args) > len(params):
        raise _Reject(f"{name}() takes at most {len(params)} argument(s), got {len(call.args)}")
    for p, node in zip(params, call.args, strict=False):  # fewer args than params is fine
        raw[p.name] = _literal(node)
    for kw in call.keywords:
        if kw.arg is None:
            raise _Reject(f"{name}(): **kwargs are not allowed; {_LITERALS}")
        if kw.arg not in by_name:
            raise _Reject(f"{name}() got an unexpected argument {kw.arg!r}")
        if kw.arg in raw:
            raise _Reject(f"{name}() got argument {kw.arg!r} more than once")
        raw[kw.arg] = _literal(kw.value)
    args: dict[str, object] = {}
    for p in params:
        if p.name in raw:
            args[p.name] = _check(name, p, raw[p.name])
        elif p.default is _REQUIRED:
            raise _Reject(f"{name}() is missing required argument {p.name!r}")
        else:
            args[p.name] = p.default
    return args


def _parse_line(text: str, biological_type: str) -> tuple[str, dict[str, object]]:
    """Parse one stripped, non-empty line into (call name, validated args)."""
    allowed = allowed_calls(biological_type)
    allowed_text = f"allowed calls: {', '.join(sorted(allowed))}"
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as exc:
        raise _Reject(f"not a valid call ({exc.msg}); {allowed_text}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _Reject(f"not a valid call ({type(exc).__name__}); {allowed_text}") from None
    if len(tree.body) != 1:
        raise _Reject("exactly one call per line is allowed")
    stmt = tree.body[0]
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
        raise _Reject(f"expected a call such as grow(minutes=60); {allowed_text}")
    func = stmt.value.func
    if not isinstance(func, ast.Name):
        raise _Reject(f"call must be a bare name (no attributes or expressions); {allowed_text}")
    if func.id not in allowed:
        raise _Reject(f"{func.id!r} is not available for {biological_type}; {allowed_text}")
    return func.id, _bind(func.id, stmt.value)


def parse_process(
    code: str, biological_type: str, *, stochastic: bool = False
) -> list[ProcessCall]:
    """Parse and validate a whole program; raise ProcessLanguageError on the first bad line.

    The program's total simulated time is bounded too (`MAX_PROGRAM_MINUTES`, or
    `MAX_PROGRAM_MINUTES_STOCHASTIC` for a Gillespie cell), so its cost is known up front.
    """
    if biological_type not in organism_profiles():
        valid = ", ".join(sorted(organism_profiles()))
        raise InputError(f"unknown biological_type {biological_type!r}; valid: {valid}")
    if not isinstance(code, str):
        raise ProcessLanguageError(f"code must be a str, got {type(code).__name__}")
    if len(code) > MAX_CODE_CHARS:
        raise ProcessLanguageError(f"code is longer than {MAX_CODE_CHARS} characters")
    lines = code.splitlines()
    if len(lines) > MAX_LINES:
        raise ProcessLanguageError(f"code has more than {MAX_LINES} lines")
    calls: list[ProcessCall] = []
    for number, raw_line in enumerate(lines, start=1):
        if len(raw_line) > MAX_LINE_CHARS:
            raise ProcessLanguageError(f"line is longer than {MAX_LINE_CHARS} characters", number)
        if "\x00" in raw_line:
            raise ProcessLanguageError("null bytes are not allowed", number)
        text = raw_line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            name, args = _parse_line(text, biological_type)
        except _Reject as exc:
            raise ProcessLanguageError(str(exc), number) from None
        calls.append(ProcessCall(line=number, name=name, args=args, source=text))
    if not calls:
        raise ProcessLanguageError("no process calls")
    limit = MAX_PROGRAM_MINUTES_STOCHASTIC if stochastic else MAX_PROGRAM_MINUTES
    total = 0.0
    for call in calls:
        if call.name == "grow":
            total += call.args["minutes"]  # type: ignore[operator]
            if total > limit:
                mode = "a stochastic cell" if stochastic else "a program"
                raise ProcessLanguageError(
                    f"{mode} may grow at most {limit:,} simulated minutes in total; "
                    f"this one reaches {total:,.6g} here (split it into several programs)",
                    call.line,
                )
    return calls
