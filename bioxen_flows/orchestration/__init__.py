"""Prefect tasks and flows (the only layer that imports Prefect)."""

import sys

from bioxen_flows.run_identity import set_flow_run_id_provider


def _prefect_flow_run_id() -> str | None:
    """The flow run Prefect says this code runs in; never imports Prefect itself (a process
    that has not loaded it runs no flow)."""
    if "prefect" not in sys.modules:
        return None
    from prefect.runtime import flow_run

    return flow_run.get_id()


set_flow_run_id_provider(_prefect_flow_run_id)  # the audit log and JSON log lines ask it
