"""Issue 23, item 8: libroadrunner's and SUNDIALS' (CVODE) own log lines never reach
stdout (`--json` stays parseable) nor precede bioxen's one error line on stderr.

Each case runs `bioxen execute` in a fresh process (the libraries' log state is global).
A module that makes CVODE fail is refused at install by a trial integration, so the
failure happens (and the libraries would speak) during that install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STIFF_MODULE = "w_het = 100; n_het = 300;\nspecies zz = 1;\nJz: -> zz; 1e200*zz*zz;\n"


@pytest.fixture
def failing_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A running E. coli VM, and stiff.ant (a module on which CVODE fails) beside it."""
    home = tmp_path / "home"
    monkeypatch.setenv("BIOXEN_HOME", str(home))
    from bioxen_flows.vm import create_bio_vm

    module = tmp_path / "stiff.ant"
    module.write_text(STIFF_MODULE)
    vm = create_bio_vm("stiff1", "ecoli")
    vm.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNLOGGER_")}
    return {**env, "STIFF_INSTALL": f"install({json.dumps(str(module))})"}


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "text"])
def test_integrator_failure_is_bioxens_one_line_only(failing_vm, json_output):
    argv = [sys.executable, "-m", "bioxen_flows.cli", "execute", "stiff1",
            failing_vm["STIFF_INSTALL"]]
    result = subprocess.run([*argv, *(["--json"] if json_output else [])], env=failing_vm,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bioxen: error: "), result.stderr
    assert "integrate" in lines[0]  # bioxen's own words for what the library said


def test_the_libraries_can_be_heard_when_asked(failing_vm):
    """SUNLOGGER_ERROR_FILENAME=stderr brings SUNDIALS' line back (so the case above
    would fail if the libraries were not quieted: they print, by default)."""
    env = {**failing_vm, "SUNLOGGER_ERROR_FILENAME": "/dev/stderr"}
    result = subprocess.run([sys.executable, "-m", "bioxen_flows.cli", "execute", "stiff1",
                             failing_vm["STIFF_INSTALL"]], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) > 1 and "[ERROR]" in result.stderr
