"""The one place the CLI talks to a Prefect session: the telemetry opt-out, the API its
flows report to (a temporary server when none is configured), the settings of a run
started from the command line, and how a cancelled run is reported.

Prefect is imported inside the functions, so only commands that run flows pay for it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bioxen_flows.cli import output

NO_TELEMETRY = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def no_telemetry() -> None:
    """An offline lab machine should not try to send Prefect telemetry (unless the user
    set the variable). Call it before Prefect is imported."""
    for name, value in NO_TELEMETRY.items():
        os.environ.setdefault(name, value)


@contextmanager
def on_prefect_api(quiet: bool = False) -> Iterator[None]:
    """Within this block, flows report to the configured Prefect API or, without one, to a
    temporary server started here (and said so on stderr unless `quiet`). Its worker
    processes inherit the URL from the environment."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, server_s = _start_prefect_api()
    if api_url is None:
        yield
        return
    if not quiet:
        from bioxen_flows.logs import notice

        notice(f"started Prefect's temporary server in {server_s:.1f} s "
               "(set PREFECT_API_URL to use a running one)")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _start_prefect_api() -> tuple[str | None, float]:
    """Start Prefect's temporary server unless an API is configured: (its URL, start s).

    Started here rather than by the flow, so its start (seconds on a fresh machine) is
    reported apart from the comparison's own time, and the worker processes share it.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None, 0.0
    began = time.perf_counter()
    server = _temporary_server_class()()
    server.start()
    return server.api_url, time.perf_counter() - began


def _temporary_server_class() -> type:
    """Prefect's temporary server, started so that it dies with this command (kill -9
    included) and a terminal's Ctrl-C reaches only the command (orchestration/stopping)."""
    import subprocess
    from functools import partial
    from types import SimpleNamespace

    import prefect.server.api.server as server_module

    from bioxen_flows.orchestration.stopping import helper_process_options

    class TemporaryServer(server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect builds the command; only how the process is started differs
            real = server_module.subprocess
            server_module.subprocess = SimpleNamespace(  # type: ignore[assignment]
                Popen=partial(subprocess.Popen, **helper_process_options()))
            try:
                return super()._run_uvicorn_command()
            finally:
                server_module.subprocess = real

    return TemporaryServer


@contextmanager
def interactive_run() -> Iterator[None]:
    """Prefect settings for a flow run started from this command line: no flow heartbeats,
    unless the user set their frequency. Heartbeats let the server detect a run whose
    worker died (the deployments in prefect.yaml set 30 s); this process reports its own
    end, and stopping Prefect's heartbeat thread takes up to a second after every run."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def stopped(state: Any, as_json: bool) -> int:
    """A run stopped by Ctrl-C/SIGTERM (or cancelled from the UI): one line saying what it
    kept, exit code 130."""
    from bioxen_flows.orchestration.stopping import EXIT_INTERRUPTED

    message = state.message or "the run was cancelled"
    if as_json:
        output.print_json({"state": "Cancelled", "message": message})
    print(f"bioxen: cancelled: {message}", file=sys.stderr)
    return EXIT_INTERRUPTED
