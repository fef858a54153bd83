"""Prefect tasks and flows (the only layer that imports Prefect)."""

from bioxen_flows.orchestration.run_context import flow_run_id_if_loaded
from bioxen_flows.run_identity import set_flow_run_id_provider

set_flow_run_id_provider(flow_run_id_if_loaded)  # the audit log and JSON log lines ask it
