"""Fuzzing (hypothesis) of programs and configs, and a few cases through a real `bioxen`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import RUNNING_SYN3A

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
CALLS = ["grow", "install", "set_nutrient", "start_transcription", "stop_transcription",
         "manage_operons", "print", "__import__", "os.system"]
LITERALS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12).map(repr),
    st.sampled_from(["None", "True", "[]", "['gfp']", "x", "1/0", "*[1]", "**{}", "...", ""]),
)
ARGS = st.lists(st.one_of(LITERALS, st.tuples(st.sampled_from(
    ["minutes", "package", "copies", "level", "genes", "operons", "action", "x"]), LITERALS
).map(lambda kv: f"{kv[0]}={kv[1]}")), max_size=3)
LINES = st.one_of(
    st.tuples(st.sampled_from(CALLS), ARGS).map(lambda c: f"{c[0]}({', '.join(c[1])})"),
    st.text(max_size=40),
)
PROGRAMS = st.lists(LINES, min_size=0, max_size=6).map("\n".join)


@FUZZ
@given(code=PROGRAMS)
def test_fuzzed_programs_run_or_are_refused_all_or_nothing(code):
    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.engine.programs import run_program
    from bioxen_flows.errors import BioXenError

    cell = Cell("syn3a")
    cell.grow(5)
    before = cell.snapshot()
    try:
        result = run_program(cell, code)
    except BioXenError:
        assert cell.snapshot() == before
    else:
        assert len(result["timeseries"]) <= 10_001 + 6


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=12,
)
SECTIONS = st.dictionaries(
    st.sampled_from(["resources", "simulation", "packages", "labels", "placement", "vm_type",
                     "biological_type", "genome", "xcpng_config", "x"]),
    st.one_of(JSONISH, st.fixed_dictionaries({}, optional={
        "atp_percent": JSONISH, "ribosomes": JSONISH, "stochastic": JSONISH, "seed": JSONISH,
        "nutrient": JSONISH})),
    max_size=4,
)


@FUZZ
@given(config=SECTIONS, fmt=st.sampled_from(["yaml", "json"]))
def test_fuzzed_configs_validate_or_are_refused(config, fmt, tmp_path_factory):
    from bioxen_flows.config import ConfigManager
    from bioxen_flows.errors import BioXenError

    manager = ConfigManager()
    ok, errors = manager.validate_config(config, "basic", "syn3a")
    assert isinstance(ok, bool) and all(isinstance(e, str) for e in errors)
    assert ok == (not errors)
    path = tmp_path_factory.mktemp("fuzz") / f"c.{fmt}"
    path.write_text(yaml.safe_dump(config) if fmt == "yaml" else json.dumps(config))
    try:
        manager.load_from_file(path)
    except BioXenError:
        pass


# ---- a real `bioxen` process --------------------------------------------------------------
def bioxen(*args: str, home, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bioxen_flows", *args], capture_output=True,
                          encoding="utf-8", timeout=120, input=stdin,
                          env={**os.environ, "BIOXEN_HOME": str(home)})


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bioxen: error: "), run.stderr
    return lines[0]


@pytest.mark.parametrize("argv", [
    ("execute", RUNNING_SYN3A, "grow(minutes=" + "9" * 400 + ")"),
    ("execute", RUNNING_SYN3A, "grow(minutes=1e-300)"),
    ("create", "x", "syn3a", "--config", "{files}/fifo.yaml"),
    ("create", "x", "syn3a", "--config", "{files}/zero.yaml"),
    ("monitor", RUNNING_SYN3A, "--interval", "inf"),
])
def test_refused_through_a_real_process(argv, hostile_home, hostile_files, store_dump):
    from tests.helpers import dump_store

    before = dump_store(hostile_home)
    run = bioxen(*(a.format(files=hostile_files) for a in argv), home=hostile_home)
    one_line_error(run)
    assert dump_store(hostile_home) == before


def test_a_corrupt_store_is_one_line(tmp_path):
    home = tmp_path / "corrupt"
    home.mkdir()
    (home / "state.db").write_bytes(b"this is not a database" * 100)
    assert "state store" in one_line_error(bioxen("list", home=home))


def test_json_anywhere_in_a_real_process(hostile_home):
    run = bioxen("execute", RUNNING_SYN3A, "--json", "set_nutrient(10000)", home=hostile_home)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["summary"]["nutrient_molecules"] == 10000
