"""Shared fixtures: every test gets its own state store; state tests run on both backends;
the end-to-end modules get a Prefect server of their own. Plain helpers: tests/helpers.py."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    PG_DSN,
    REPO,
    SCHEDULER_LOOP_S,
    LocalPrefect,
    deploy_e2e_copy,
    empty_postgres,
    free_port,
    postgres_execute,
    prefect_command,
    run_setup,
    server_errors,
    spawn,
    start_worker,
    stop_process,
    wait_healthy,
)

POSTGRES_ADMIN_URL = os.environ.get(
    "BIOXEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# Modules that run the product end to end: a Prefect server or flows, the CLI in a
# subprocess or a pseudo-terminal, a real SSH server, several processes or hosts, long
# simulations. `pytest -m "not e2e"` leaves them out (the quick loop); CI runs everything.
E2E_MODULES = frozenset({
    "test_cli", "test_cli_commands", "test_cli_interactive", "test_dask", "test_events",
    "test_flows", "test_health", "test_honest_numbers", "test_multihost", "test_operations",
    "test_prefect_events", "test_prefect_server_e2e", "test_progress", "test_readme",
    "test_results_query", "test_run_forms", "test_service_recipe", "test_state_sharing",
    "test_stochastic_engine", "test_stopping", "test_sweep", "test_xcpng_e2e", "test_xcpng_faults",
    "test_xcpng_prefect_server", "test_hostile_atomic_create",
    "test_hostile_fuzz_and_processes",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)


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


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, bioxen_home: Path
) -> str:
    """Run the test against the embedded SQLite store and against PostgreSQL."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
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


# ---- a Prefect server on loopback, one per end-to-end module (tests/helpers.py) ------------

@pytest.fixture(scope="module")
def prefect_database() -> Iterator[str]:
    """A PostgreSQL database of this module's own for the Prefect server; dropped after."""
    name = f"bioxen_prefect_e2e_{secrets.token_hex(6)}"  # [a-z0-9_] only: safe to quote
    try:
        asyncio.run(postgres_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncio.TimeoutError) as exc:  # refused, unreachable, timed out
        message = f"PostgreSQL unreachable at {PG_DSN}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(postgres_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def no_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test of the end-to-end modules (their `pytestmark`): the server logged no
    error."""
    yield
    if "local_prefect" in request.fixturenames:
        local = request.getfixturevalue("local_prefect")
        errors = server_errors(local)
        assert not errors, "the Prefect server logged errors:\n" + "\n".join(errors[:40])


@pytest.fixture(scope="module")
def local_prefect(
    tmp_path_factory: pytest.TempPathFactory, prefect_database: str
) -> Iterator[LocalPrefect]:
    """A Prefect server on loopback (PostgreSQL) set up by deployments/setup.sh, a worker."""
    tmp = tmp_path_factory.mktemp("prefect_e2e")
    prefect_home, bioxen_home = tmp / "prefect_home", tmp / "bioxen_home"
    prefect_home.mkdir()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database,
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "BIOXEN_HOME": str(bioxen_home),
        "BIOXEN_PROJECT_DIR": str(REPO),
        "PYTHONUNBUFFERED": "1",
        # setup.sh's `prefect` and `python3`: this interpreter (and PYTHONPATH's checkout)
        "PREFECT_BIN": str(Path(sys.executable).parent / "prefect"),
        "PYTHON_BIN": sys.executable,
    })
    logs = {"server": tmp / "server.log", "worker": tmp / "worker.log"}
    local = LocalPrefect(api_url, env, bioxen_home, tmp, logs,
                         scheduled_home=tmp / "scheduled_home",
                         scheduled_out=tmp / "scheduled_out")
    server = None
    try:
        server = spawn(
            prefect_command("server", "start", "--host", "127.0.0.1", "--port", str(port)),
            env, logs["server"],
        )
        wait_healthy(api_url, server, lambda: local.log_tail("server"))
        local.setup_outputs = [run_setup(local), run_setup(local)]  # the README's setup, twice
        deploy_e2e_copy(local, datetime.now(timezone.utc) + timedelta(seconds=20))
        start_worker(local)
        yield local
    finally:
        # the worker first, while the server still answers it
        for proc in (local.worker, server):
            if proc is not None:
                stop_process(proc)


@pytest.fixture
def client(local_prefect: LocalPrefect, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Prefect client on the local server; BIOXEN_HOME is the worker's store."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("BIOXEN_HOME", str(local_prefect.bioxen_home))
    with temporary_settings(updates={PREFECT_API_URL: local_prefect.api_url}):
        with get_client(sync_client=True) as client:
            yield client
