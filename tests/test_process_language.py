"""Tests for the process language: valid programs, organism gating, ranges and hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioxen_flows.engine.process_language import (
    ALLOWED_CALLS,
    ProcessCall,
    ProcessLanguageError,
    parse_process,
)

SYN3A_ALLOWED = (
    "allowed calls: grow, install, set_nutrient, start_transcription, stop_transcription"
)


def test_allowed_calls_table() -> None:
    assert set(ALLOWED_CALLS) == {"syn3a", "minimal_cell", "ecoli"}
    assert ALLOWED_CALLS["syn3a"] == ALLOWED_CALLS["minimal_cell"]
    assert ALLOWED_CALLS["ecoli"] - ALLOWED_CALLS["syn3a"] == {"manage_operons"}
    assert ALLOWED_CALLS["syn3a"] - ALLOWED_CALLS["ecoli"] == {
        "start_transcription", "stop_transcription"
    }


def test_allowed_calls_come_from_the_profiles_and_match_capabilities() -> None:
    """profiles.yaml is the one table: every call it allows exists, and the calls follow
    the capabilities the VM API checks (gene switches with transcription_control, operons
    with operons)."""
    from bioxen_flows.engine.process_language import _SPECS
    from bioxen_flows.organisms.profiles import organism_profiles

    for organism, profile in organism_profiles().items():
        assert ALLOWED_CALLS[organism] == profile.process_calls
        assert profile.process_calls <= set(_SPECS), organism
        caps = profile.capabilities
        assert ("start_transcription" in profile.process_calls) == caps.transcription_control
        assert ("manage_operons" in profile.process_calls) == caps.operons


@pytest.mark.parametrize("organism", ["syn3a", "minimal_cell"])
def test_valid_program_common_calls(organism: str) -> None:
    code = """
# set up the cell
install("lac_reporter")
install(package="pkg/extra.ant", copies=3)

set_nutrient(1e6)   # molecules per cell
start_transcription(["dnaA", "ftsZ_1"])
grow(minutes=30)
    stop_transcription("dnaA")
grow(2.5)
"""
    calls = parse_process(code, organism)
    assert [c.name for c in calls] == [
        "install",
        "install",
        "set_nutrient",
        "start_transcription",
        "grow",
        "stop_transcription",
        "grow",
    ]
    assert [c.line for c in calls] == [3, 4, 6, 7, 8, 9, 10]
    assert calls[0].args == {"package": "lac_reporter", "copies": None, "strength": None}
    assert calls[1].args == {"package": "pkg/extra.ant", "copies": 3, "strength": None}
    assert calls[2].args == {"level": 1e6}
    assert calls[3].args == {"genes": ["dnaA", "ftsZ_1"]}
    assert calls[4].args == {"minutes": 30.0} and isinstance(calls[4].args["minutes"], float)
    assert calls[5] == ProcessCall(
        line=9,
        name="stop_transcription",
        args={"genes": ["dnaA"]},
        source='stop_transcription("dnaA")',
    )
    assert calls[6].args == {"minutes": 2.5}
    assert calls[2].source == "set_nutrient(1e6)   # molecules per cell"


def test_ecoli_manage_operons() -> None:
    calls = parse_process(
        "manage_operons(['lacZYA', 'trp'], 'induce')\n"
        "manage_operons(operons=('ara',), action='repress')",
        "ecoli",
    )
    assert calls[0].args == {"operons": ["lacZYA", "trp"], "action": "induce"}
    assert calls[1].args == {"operons": ["ara"], "action": "repress"}
    assert calls[1].line == 2


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("grow(10080)", {"minutes": 10080.0}),
        ("set_nutrient(0)", {"level": 0.0}),
        ("set_nutrient(level=1000000000)", {"level": 1e9}),
        ("install('x', 1000)", {"package": "x", "copies": 1000, "strength": None}),
        ("install('x', strength=1000)", {"package": "x", "copies": None, "strength": 1000.0}),
        ("start_transcription('a')", {"genes": ["a"]}),
        (f"start_transcription(['A{'1' * 63}'])", {"genes": ["A" + "1" * 63]}),
    ],
)
def test_boundary_values_accepted(code: str, expected: dict[str, object]) -> None:
    (call,) = parse_process(code, "syn3a")
    assert call.args == expected


@pytest.mark.parametrize("organism", ["syn3a", "minimal_cell"])
def test_manage_operons_gated(organism: str) -> None:
    code = "grow(1)\n# comment\nmanage_operons(['lac'], 'induce')"
    with pytest.raises(ProcessLanguageError) as info:
        parse_process(code, organism)
    assert str(info.value) == (
        f"line 3: 'manage_operons' is not available for {organism}; {SYN3A_ALLOWED}"
    )
    assert info.value.line == 3


def test_unknown_call_lists_allowed_for_ecoli() -> None:
    with pytest.raises(ProcessLanguageError, match=r"^line 1: 'divide'.*manage_operons"):
        parse_process("divide()", "ecoli")


def test_unknown_biological_type() -> None:
    with pytest.raises(ValueError, match="ecoli, minimal_cell, syn3a") as info:
        parse_process("grow(1)", "yeast")
    assert not isinstance(info.value, ProcessLanguageError)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("grow(-5)", "line 1: grow(minutes=...) must be > 0 and <= 10080, got -5"),
        ("grow(0)", "grow(minutes=...) must be > 0 and <= 10080, got 0"),
        ("grow(10080.5)", "got 10080.5"),
        ("grow(1e999)", "grow(minutes=...) must be finite"),
        ("grow(True)", "grow(minutes=...) must be a number, got True"),
        ("grow('5')", "grow(minutes=...) must be a number, got '5'"),
        ("grow(None)", "grow(minutes=...) must be a number, got None"),
        ("install('x', 0)", "install(copies=...) must be >= 1 and <= 1000, got 0"),
        ("install('x', copies=-3)", "install(copies=...) must be >= 1 and <= 1000, got -3"),
        ("install('x', 1001)", "got 1001"),
        ("install('x', 2.0)", "install(copies=...) must be an integer, got 2.0"),
        ("install('')", "install(package=...) must be a non-empty string"),
        (f"install('{'a' * 201}')", "must be a non-empty string of at most 200 characters"),
        ("install(5)", "install(package=...) must be a string, got 5"),
        ("set_nutrient(-1)", "set_nutrient(level=...) must be >= 0 and <= 1000000000, got -1"),
        ("set_nutrient(2e9)", "got 2000000000.0"),
        ("start_transcription([])", "must be a non-empty list of ids"),
        ("start_transcription('1abc')", "'1abc' is not a valid id"),
        ("start_transcription(['ok', 'bad-id'])", "'bad-id' is not a valid id"),
        (f"start_transcription(['{'a' * 65}'])", "is not a valid id"),
        ("start_transcription(3)", "must be a non-empty list of ids, got 3"),
    ],
)
def test_argument_errors(code: str, message: str) -> None:
    with pytest.raises(ProcessLanguageError) as info:
        parse_process(code, "syn3a")
    assert message in str(info.value)
    assert str(info.value).startswith("line 1: ")
    assert info.value.line == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("grow()", "grow() is missing required argument 'minutes'"),
        ("install(copies=2)", "install() is missing required argument 'package'"),
        ("grow(1, 2)", "grow() takes at most 1 argument(s), got 2"),
        ("grow(hours=1)", "grow() got an unexpected argument 'hours'"),
        ("grow(1, minutes=2)", "grow() got argument 'minutes' more than once"),
        ("grow(minutes=1, minutes=2)", "grow() got argument 'minutes' more than once"),
        ("manage_operons(['lac'], 'toggle')", "must be one of induce, repress, got 'toggle'"),
        ("manage_operons(['lac'])", "missing required argument 'action'"),
    ],
)
def test_binding_errors(code: str, message: str) -> None:
    with pytest.raises(ProcessLanguageError) as info:
        parse_process("grow(1)\n" + code, "ecoli")
    assert str(info.value).startswith("line 2: ")
    assert message in str(info.value)


def test_manage_operons_action_error_names_parameter() -> None:
    with pytest.raises(ProcessLanguageError, match=r"manage_operons\(action=\.\.\.\)"):
        parse_process("manage_operons('lac', 'toggle')", "ecoli")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("grow(x)", "a variable name is not allowed as an argument; only literals"),
        ('grow(f"{1}")', "an f-string is not allowed"),
        ("grow(1+1)", "an arithmetic expression is not allowed"),
        ("grow(minutes=__import__('os'))", "a call is not allowed"),
        ("install([c for c in 'ab'])", "a comprehension is not allowed"),
        ("grow(*[1])", "*args are not allowed"),
        ("grow(**{'minutes': 1})", "**kwargs are not allowed"),
        ("install(b'pkg')", "a bytes value is not allowed"),
        ("start_transcription([1, 2])", "list elements must be string literals"),
    ],
)
def test_non_literal_arguments_explain_what_is_allowed(code: str, message: str) -> None:
    with pytest.raises(ProcessLanguageError) as info:
        parse_process(code, "syn3a")
    assert str(info.value).startswith("line 1: ")
    assert message in str(info.value)


HOSTILE = [
    "__import__('os').system('x')",
    "os.system('ls')",
    "grow(minutes=__import__('os'))",
    "(lambda: 1)()",
    "grow(x)",
    'grow(f"{1}")',
    "grow(1); grow(2)",
    "; rm -rf /",
    "grow(1) && rm -rf /",
    "import os",
    "x = 1",
    "grow(*[1])",
    "grow(**{'minutes': 1})",
    "install([c for c in 'ab'])",
    "grow(1+1)",
    "grow(minutes=1)[0]",
    "exec('print(1)')",
    "eval('1')",
    "open('/etc/passwd')",
    "grow.__class__",
    "grow(--5)",
    "grow(-True)",
    "grow(1j)",
    "install(b'pkg')",
    "grow(...)",
    "grow((yield))",
    "grow(x := 1)",
    "install({'a': 1})",
    "grow(1) \\",
    "'grow(1)'",
    "install(" + "[" * 150 + "]" * 150 + ")",
    "grow(1)\x00",
    "grow(\x001)",
]


@pytest.mark.parametrize("line", HOSTILE, ids=[repr(h)[:40] for h in HOSTILE])
def test_hostile_line_rejected_with_line_number(line: str) -> None:
    with pytest.raises(ProcessLanguageError) as info:
        parse_process("grow(1)\ngrow(2)\n" + line, "ecoli")
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")


@pytest.mark.parametrize(
    ("code", "message", "line"),
    [
        ("install('" + "a" * 1_000_000 + "')", "code is longer than 20000 characters", None),
        ("grow(1)\n" * 10_000, "code is longer than 20000 characters", None),
        ("grow(1)\n" * 501, "code has more than 500 lines", None),
        ("(" * 10_000 + ")" * 10_000, "line 1: line is longer than 500 characters", 1),
        ("grow(1)\ninstall('" + "a" * 600 + "')", "line 2: line is longer than 500", 2),
        ("# " + "x" * 600, "line 1: line is longer than 500", 1),
        ("grow(1)\x00", "line 1: null bytes are not allowed", 1),
    ],
    ids=[
        "1MB-string",
        "10000-lines",
        "501-lines",
        "parens",
        "600-char-line",
        "long-comment",
        "nul",
    ],
)
def test_size_limits_checked_before_parsing(code: str, message: str, line: int | None) -> None:
    with pytest.raises(ProcessLanguageError) as info:
        parse_process(code, "syn3a")
    assert message in str(info.value)
    assert info.value.line == line


def test_limits_are_inclusive() -> None:
    assert len(parse_process("grow(1)\n" * 500, "syn3a")) == 500
    line = "install('" + "a" * 200 + "')  # " + "c" * (500 - 215)
    assert len(line) == 500
    assert parse_process(line, "syn3a")[0].args["package"] == "a" * 200


@pytest.mark.parametrize("code", ["", "   \n\n", "# only a comment\n  # another"])
def test_empty_program(code: str) -> None:
    with pytest.raises(ProcessLanguageError, match="no process calls"):
        parse_process(code, "syn3a")


def test_non_string_code_rejected() -> None:
    with pytest.raises(ProcessLanguageError, match="code must be a str"):
        parse_process(b"grow(1)", "syn3a")  # type: ignore[arg-type]


def test_all_or_nothing_nothing_runs(tmp_path: Path) -> None:
    """A hostile line 3 rejects the whole program, and its payload is never evaluated."""
    marker = tmp_path / "pwned"
    code = f"grow(1)\ninstall('ok')\nopen({str(marker)!r}, 'w')\ngrow(5)"
    result: list[ProcessCall] | None = None
    with pytest.raises(ProcessLanguageError) as info:
        result = parse_process(code, "syn3a")
    assert result is None
    assert info.value.line == 3
    assert "'open' is not available" in str(info.value)
    assert not marker.exists()


def test_code_inside_string_literal_stays_data(tmp_path: Path) -> None:
    """A string argument is kept verbatim; the language never evaluates it."""
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    (call,) = parse_process(f"install({payload!r})", "syn3a")
    assert call.args["package"] == payload
    assert not marker.exists()


def test_error_is_value_error_with_line_attribute() -> None:
    with pytest.raises(ValueError) as info:
        parse_process("grow(1)\n\ngrow(0)", "syn3a")
    assert isinstance(info.value, ProcessLanguageError)
    assert info.value.line == 3
