"""Deployment entrypoint: destroy the VMs of a crashed flow run (see prefect.yaml)."""

from bioxen_flows.orchestration.flows import cleanup_crashed_run

__all__ = ["cleanup_crashed_run"]
