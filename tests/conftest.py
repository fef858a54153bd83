"""Shared fixtures: cells are cheap (~0.2 s) but the model compile is shared via caches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SYN3A_GENBANK = Path(__file__).resolve().parents[2] / "shared" / "data" / "syn3A.gb"


@pytest.fixture
def heterologous_module(tmp_path: Path) -> Path:
    """The paper's heterologous gene: w_p = 100 molecules/min, 300 aa, unregulated."""
    path = tmp_path / "het.ant"
    path.write_text("// Weisse 2015 heterologous protein p\nw_het = 100; n_het = 300;\n")
    return path


@pytest.fixture(autouse=True)
def bioxen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state database; nothing touches ~/.bioxen."""
    home = tmp_path / "bioxen_home"
    monkeypatch.setenv("BIOXEN_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One Prefect test server for the whole session (it takes ~10 s to start)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())
