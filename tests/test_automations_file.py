"""The automations file is user input: read bounded, refused in one line when it is not one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bioxen_flows.errors import InputError
from bioxen_flows.orchestration.automations import declared_automations

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_automations_are_read() -> None:
    declared = declared_automations(REPO / "deployments" / "automations.yaml")
    assert declared and all("name" in a for a in declared)


@pytest.mark.parametrize("kind", ["fifo", "huge", "not_yaml", "directory"])
def test_a_file_that_is_not_an_automations_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "automations.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # never waited on
    elif kind == "huge":
        with open(path, "wb") as f:  # sparse: 2 GiB taking no disk, never read
            f.truncate(2 << 30)
    elif kind == "not_yaml":
        path.write_text("automations: [unclosed\n")
    else:
        path.mkdir()
    with pytest.raises(InputError, match="automations"):
        declared_automations(path)
