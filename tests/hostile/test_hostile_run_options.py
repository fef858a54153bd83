"""Issue 23, item 8: every bad `compare`/`sweep` option is refused before Prefect starts.

Generated: each bad value of each option shared by both commands x {compare, sweep}, plus
each command's own options, plus hypothesis draws of out-of-range numbers. Every case must
exit 1 with exactly one line on stderr, no traceback, nothing from Prefect (no server was
started, no flow ran) and the store unchanged.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioxen_flows.cli import main


@pytest.fixture(scope="module")
def odd_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Special and wrong files the options are pointed at."""
    root = tmp_path_factory.mktemp("odd")
    (root / "a_file").write_text("x\n")
    (root / "folder.ant").mkdir()
    os.mkfifo(root / "fifo.ant")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "empty.ant").write_text("")
    with open(root / "big.ant", "wb") as big:  # sparse: 1.5 GiB that take no disk
        big.truncate(1536 * 1024 * 1024)
    return {"file": str(root / "a_file"), "dir_ant": str(root / "folder.ant"),
            "fifo": str(root / "fifo.ant"), "dangling": str(root / "dangling"),
            "under_file": str(root / "a_file" / "sub"), "empty_ant": str(root / "empty.ant"),
            "big_ant": str(root / "big.ant")}


# (option, value) bad for both commands; "{name}" names a path from `odd_paths`
SHARED_BAD = {
    "--hours": ["0", "-1", "nan", "inf", "1e-300", "0.001", "1e9"],
    "--package": ["nope", "/dev/null", "{dir_ant}", "{fifo}", "{file}", "{empty_ant}",
                  "{dangling}", "{big_ant}"],
    "--out": ["/dev/null", "{file}", "{under_file}", "{dangling}", "/proc/bioxen_out"],
    "--workers": ["0", "257"],
}
COMPARE_BAD = {
    "--atp": ["0", "nan", "101", "-5", "inf"],
    "--ribosomes": ["0", "-1", str(10**13)],
    "--replicates": ["0", "101"],
    "--seed": ["-1", str(2**63), str(10**30)],
    "--vm-type": ["xcpng"],  # without --config
}
SWEEP_BAD = {
    "--copies": ["2.5", "0", "1001", "nan", "1:inf:lin3", "1,2.5"],
    "--strength": ["1:inf:lin3", "0", "-1", "nan", "1e9", "-1e308:1e308:lin3", "x"],
    "--nutrient": ["-1", "inf", "1e10"],
    "--max-burden": ["-1", "101", "nan"],
    "--replicates": ["0"],
}
ARGS = {"compare": ["compare", "syn3a"], "sweep": ["sweep", "syn3a"]}


def _cases() -> list[tuple[str, str, str]]:
    cases = [(cmd, opt, value) for cmd, (opt, values) in itertools.product(
        ARGS, SHARED_BAD.items()) for value in values]
    cases += [("compare", opt, v) for opt, values in COMPARE_BAD.items() for v in values]
    cases += [("sweep", opt, v) for opt, values in SWEEP_BAD.items() for v in values]
    cases += [(cmd, "organisms", "syn3a syn3a") for cmd in ARGS]  # a duplicate organism
    return cases


CASES = _cases()


def refused_before_prefect(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run `bioxen argv`; assert the one-line refusal; return the line."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 1, (argv, out, err)
    assert len(lines) == 1 and lines[0].startswith("bioxen: error: "), (argv, err)
    assert "Traceback" not in err and "prefect" not in (out + err).lower(), (argv, out, err)
    assert out == ""
    return lines[0]


@pytest.mark.parametrize(("command", "option", "value"), CASES,
                         ids=[f"{c}-{o}={v}" for c, o, v in CASES])
def test_bad_option_is_one_line_before_prefect(
    command: str, option: str, value: str, odd_paths: dict[str, str],
    capsys: pytest.CaptureFixture, store_dump: Callable[[], list[str]],
) -> None:
    before = store_dump()
    if option == "organisms":
        argv = [command, *value.split()]
    else:
        argv = [*ARGS[command], f"{option}={value.format(**odd_paths)}"]
    line = refused_before_prefect(capsys, argv)
    if option != "organisms":  # the line names the option or the value it refuses
        assert option.lstrip("-").split("-")[0] in line.lower() \
            or value.format(**odd_paths) in line, line
    assert store_dump() == before


def test_a_package_that_is_no_file_is_said_to_be_neither(capsys):
    line = refused_before_prefect(capsys, ["sweep", "syn3a", "--package", "nope"])
    assert "neither a built-in package" in line and "nor an existing file" in line


def test_a_duplicate_organism_says_what_to_do(capsys):
    line = refused_before_prefect(capsys, ["compare", "syn3a", "ecoli", "syn3a"])
    assert "syn3a given more than once" in line and "--replicates" in line


def test_a_stochastic_comparison_longer_than_a_day_is_refused_before_any_worker(capsys):
    """It used to start the run and fail in every worker ("a stochastic cell may grow at
    most 1,440 simulated minutes")."""
    for extra in (["--seed", "3"], ["--replicates", "2"]):
        line = refused_before_prefect(capsys, ["compare", "ecoli", "--hours", "48", *extra])
        assert "stochastic comparison grows each cell at most 24 h" in line, line
        assert "--deterministic" in line


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(ARGS)),
       hours=st.floats(allow_nan=True, allow_infinity=True).filter(
           lambda h: not (1 / 60 <= h <= 168)))  # both commands' valid range
def test_drawn_bad_hours(capsys, command, hours):
    refused_before_prefect(capsys, [*ARGS[command], f"--hours={hours!r}"])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(atp=st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda a: math.isnan(a) or not 0 < a <= 100))
def test_drawn_bad_atp(capsys, atp):
    refused_before_prefect(capsys, ["compare", "syn3a", f"--atp={atp!r}"])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(copies=st.floats(min_value=1, max_value=1000).filter(lambda c: c != int(c)))
def test_drawn_fractional_copies(capsys, copies):
    refused_before_prefect(capsys, ["sweep", "syn3a", f"--copies={copies!r}"])


def test_an_unwritable_out_folder_is_refused(capsys, tmp_path):
    """/proc's root takes no new files, even for root; a folder under it cannot be made."""
    line = refused_before_prefect(capsys, ["compare", "syn3a", "--out", "/proc/bioxen/x"])
    assert "cannot write in /proc" in line


def test_good_options_pass_the_checks(odd_paths, tmp_path, heterologous_module):
    """The checks refuse only what is bad (without running a flow)."""
    import argparse

    from bioxen_flows.cli.validate import check_compare, check_sweep

    out = tmp_path / "new" / "results"
    check_compare(argparse.Namespace(
        organisms=["syn3a", "ecoli"], replicates=2, hours=0.5, package=str(heterologous_module),
        atp=50.0, ribosomes=1000, seed=7, deterministic=False, workers=2, out=out,
        vm_type="basic", config=None, stochastic_engine="roadrunner", no_division=True))
    check_sweep(argparse.Namespace(
        organisms=["syn3a"], package="gfp_reporter", strength="0.5:2:log3", copies="1,5",
        nutrient=None, replicates=1, seed=None, hours=1.0, max_burden=20.0, out=str(out),
        workers=None, stochastic_engine="compiled", no_division=False))
    assert not out.exists()  # checking writes nothing there
    assert Path(odd_paths["file"]).read_text() == "x\n"


# ---- bioxen export: its output file checked before any model is built ---------------------
EXPORT_BAD = ["/dev/null", "{fifo}", "{dir_ant}", "{under_file}", "{dangling}", "/proc/x.xml",
              "/nonexistent-folder/x.xml", "{store}", "{store}-wal", "{store_link}"]


@pytest.mark.parametrize("output", EXPORT_BAD)
def test_export_output_is_checked_first(output, odd_paths, hostile_home, tmp_path, capsys,
                                        store_dump):
    from tests.helpers import CREATED

    link = tmp_path / "model.xml"
    link.symlink_to(hostile_home / "state.db")
    paths = {**odd_paths, "store": str(hostile_home / "state.db"), "store_link": str(link)}
    before = store_dump()
    line = refused_before_prefect(capsys, ["export", CREATED, "-o", output.format(**paths)])
    assert "--output" in line
    assert store_dump() == before
    assert (hostile_home / "state.db").read_bytes()[:16] == b"SQLite format 3\x00"


# ---- the stochastic engine and refinement: conflicting choices are one line -------------
ENGINE_CONFLICTS = [
    ["compare", "syn3a", "--replicates", "2", "--stochastic-engine", "roadrunner"],
    ["sweep", "syn3a", "--seed", "1", "--stochastic-engine", "roadrunner"],
    ["create", "engine-vm", "syn3a", "--seed", "1", "--stochastic-engine", "roadrunner"],
]


@pytest.mark.parametrize("argv", ENGINE_CONFLICTS, ids=[a[0] for a in ENGINE_CONFLICTS])
def test_the_reference_engine_without_no_division_is_one_line(argv, hostile_home, capsys):
    line = refused_before_prefect(capsys, argv)
    assert "add --no-division" in line


def test_refining_a_stochastic_sweep_is_one_line(hostile_home, capsys):
    code = main(["sweep", "syn3a", "--seed", "1", "--refine", "--hours", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--refine needs a deterministic sweep" in err


@pytest.mark.parametrize("engine", ["tau-leaping", "", "compiled;rm -rf /", "ROADRUNNER"])
def test_an_unknown_engine_is_refused_by_the_parser(engine, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["compare", "syn3a", "--stochastic-engine", engine])
    assert refused.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
