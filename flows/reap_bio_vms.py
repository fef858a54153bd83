"""Deployment entrypoint: destroy basic VMs whose flow run is over (see prefect.yaml)."""

from bioxen_flows.orchestration.reaper import reap_bio_vms

__all__ = ["reap_bio_vms"]
