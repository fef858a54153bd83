"""Shared fixtures: every test gets its own state store; state tests run on both backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SYN3A_GENBANK = Path(__file__).resolve().parents[2] / "shared" / "data" / "syn3A.gb"
POSTGRES_ADMIN_URL = os.environ.get(
    "BIOXEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def heterologous_module(tmp_path: Path) -> Path:
    """The paper's heterologous gene: w_p = 100 molecules/min, 300 aa, unregulated."""
    path = tmp_path / "het.ant"
    path.write_text("// Weisse 2015 heterologous protein p\nw_het = 100; n_het = 300;\n")
    return path


@pytest.fixture(autouse=True)
def bioxen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state database (and no cells cached from another test's);
    nothing touches ~/.bioxen."""
    from bioxen_flows.engine.hypervisor import get_hypervisor

    home = tmp_path / "bioxen_home"
    monkeypatch.setenv("BIOXEN_HOME", str(home))
    monkeypatch.delenv("BIOXEN_DATABASE_URL", raising=False)
    get_hypervisor().clear()
    return home


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test session's own on the local PostgreSQL, dropped after it.

    Unreachable PostgreSQL fails the run under CI (CI=true) and skips elsewhere."""
    import psycopg

    name = f"bioxen_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from bioxen_flows.state import dispose_engines

    dispose_engines()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_postgres(url: str) -> None:
    """Back to a fresh store: no VMs, no audit, no quotas, the default budget (schema kept)."""
    from bioxen_flows.state import StateStore
    from bioxen_flows.state.schema import DEFAULT_ATP_BUDGET_PERCENT, DEFAULT_RIBOSOME_BUDGET

    store = StateStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE vms, audit, quotas")
        conn.exec_driver_sql("DELETE FROM meta WHERE key <> 'schema_version'")
        conn.exec_driver_sql(
            f"UPDATE budget SET ribosomes = {DEFAULT_RIBOSOME_BUDGET}, "
            f"atp_percent = {DEFAULT_ATP_BUDGET_PERCENT}"
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, bioxen_home: Path
) -> str:
    """Run the test against the embedded SQLite store and against PostgreSQL."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        _empty_postgres(url)
        monkeypatch.setenv("BIOXEN_DATABASE_URL", url)
    return request.param


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One Prefect test server for the whole session (it takes ~10 s to start)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())
