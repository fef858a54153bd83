"""Hostile process programs: each one refused by the CLI and the API, the store untouched."""

from __future__ import annotations

import pytest

from tests.helpers import RUNNING_ECOLI, RUNNING_SYN3A, WITH_GFP

BAD_NUMBERS = ["-1", "0", "-0.0", "10080.0001", "1e309", "-1e309", "'60'", "None", "True",
               "False", "[60]", "9" * 400, "-" + "9" * 400, "1e-400", "60j", "b'60'", "...",
               "(60,)", "{60}", "{'m': 60}", "-(-60)", "+60", "1/0", "60 * 2", "x", "len('a')"]
BAD_LEVELS = ["-1", "-1e-9", "1000000001", "1e400", "'1'", "None", "True", "[1]", "9" * 400]
BAD_COPIES = ["0", "-1", "1001", "1.5", "'1'", "True", "[1]", "9" * 400, "1e3"]

SYNTAX = [
    "", "   ", "# only a comment", "\n\n", "grow(", "grow)", "grow(minutes=)", "grow(60",
    "grow(minutes=60); grow(1)", "import os", "__import__('os').system('id')",
    "os.system('ls')", "grow(minutes=60).real", "x = 1", "lambda: grow(60)",
    "grow(minutes=60, extra=1)", "grow(60, 60)", "grow(*[60])", "grow(**{'minutes': 60})",
    "grow(minutes=60, minutes=60)", "grow(60, minutes=60)", "f'{1}'", "grow(f'{60}')",
    "\x00grow(60)", "grow(60)\x00", "GROW(60)", "Grow(60)", "print('hi')", "exec('1')",
    "eval('grow(60)')", "open('/etc/passwd')", "grow(60) if True else 0", "[grow(60)]",
    "(grow(60), grow(60))", "async def f(): pass", "yield 1", "del x", "global x",
    "assert False", "raise SystemExit", "while True: pass", "for i in range(9): grow(1)",
    "'''", '"""unterminated', "grow('\\N{nosuchname}')", "grow(60) + 1", "not grow(60)",
    "grow(60)[0]", "grow", "grow()", "grow(minutes=60)()", "getattr(grow, 'x')",
    "breakpoint()", "install()", "install(package=)", "install(['gfp_reporter'])",
    "install('gfp_reporter', 1, 2, 3)", "install('gfp_reporter', strength=0)",
    "install('gfp_reporter', strength=1001)", "set_nutrient()", "start_transcription()",
    "grow(" + "[" * 200 + "]" * 200 + ")", "grow(" + "(" * 300 + "60" + ")" * 300 + ")",
    "grow(60)#" + "x" * 600, "g" * 501, "grow(minutes=1e-300)",
    "grow(60)\n" * 501, "grow(minutes=10080)\n" * 11, "x" * 20_001,
    "install('gfp_reporter')\ngrow(30)\ngrow(minutes=1e-300)",
    "grow(60)\ninstall('nope')", "grow(60)\ngrow(60)\nstart_transcription(['nope'])",
    "install('gfp_reporter')\ninstall('gfp_reporter')",
    "install('nope')", "install('')", "install('" + "x" * 201 + "')",
    "install('/dev/zero.ant')", "install('/etc/passwd')", "install('../../etc/shadow.ant')",
    "install('no_such_file.xml')", "install('gfp_reporter; rm -rf /')",
    "start_transcription(['nope'])", "start_transcription([])", "start_transcription([1])",
    "start_transcription('1abc')", "start_transcription(['a b'])", "stop_transcription(['gfp'])",
    "start_transcription(['" + "a" * 65 + "'])", "manage_operons(['lac'], 'induce')",
    "set_nutrient('x')",
]

SYN3A_CASES = (
    [f"grow(minutes={v})" for v in BAD_NUMBERS]
    + [f"grow({v})" for v in BAD_NUMBERS[:8]]
    + [f"set_nutrient({v})" for v in BAD_LEVELS]
    + [f"install('gfp_reporter', copies={v})" for v in BAD_COPIES]
    + SYNTAX
)
ECOLI_CASES = [
    "start_transcription(['lacZ'])", "manage_operons(['lac'], 'toggle')",
    "manage_operons([], 'induce')", "manage_operons('lac')", "manage_operons(['gal'], 'induce')",
    "manage_operons(['lac'], None)", "manage_operons(['lac'], 'induce', 1)",
    "manage_operons(['lac'], action='INDUCE')", "grow(minutes=10080)\n" * 10 + "grow(1)",
    "install('lac_operon')", "install('rfp_plasmid', copies=1001)",
]
GFP_CASES = [
    "install('gfp_reporter')", "start_transcription(['gfp', 'nope'])",
    "stop_transcription(['gfp'])\ngrow(10)\ninstall('gfp_reporter')",
]


def _id(code: str) -> str:
    return repr(code[:40]) + (f"..{len(code)}" if len(code) > 40 else "")


CASES = (
    [(RUNNING_SYN3A, c) for c in SYN3A_CASES]
    + [(RUNNING_ECOLI, c) for c in ECOLI_CASES]
    + [(WITH_GFP, c) for c in GFP_CASES]
)


@pytest.mark.parametrize(("vm_id", "code"), CASES, ids=[f"{v}:{_id(c)}" for v, c in CASES])
def test_program_is_refused_by_cli_and_api(vm_id, code, refused_cli, refused_api):
    from bioxen_flows.vm import load_bio_vm

    if "\x00" not in code:  # argv cannot carry NUL bytes; the stdin route can
        refused_cli("execute", vm_id, code)
    if "\x00" in code or "\n" in code or len(code) % 3 == 0:  # a share also through stdin
        refused_cli("execute", vm_id, "--file", "-", stdin=code)
    vm = load_bio_vm(vm_id)
    before = vm.get_biological_metrics()
    refused_api(lambda: vm.execute_biological_process(code))
    assert vm.get_biological_metrics() == before  # the live cell rolled back too


@pytest.mark.parametrize("code", [12, None, b"grow(60)", ["grow(60)"], {"grow": 60}])
def test_program_that_is_not_text_is_refused(code, refused_api):
    from bioxen_flows.vm import load_bio_vm

    vm = load_bio_vm(RUNNING_SYN3A)
    refused_api(lambda: vm.execute_biological_process(code))


def test_json_is_accepted_anywhere_on_the_command_line(capsys, store_dump):
    import json

    from bioxen_flows.cli import main

    for argv in (["execute", WITH_GFP, "--json", "stop_transcription(['gfp'])"],
                 ["--json", "status", WITH_GFP], ["status", "--json", WITH_GFP]):
        capsys.readouterr()
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)
    assert main(["execute", WITH_GFP, "start_transcription(['gfp'])", "--json"]) == 0
