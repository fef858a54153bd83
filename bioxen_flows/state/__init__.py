"""Durable VM state: bio-VMs outlive the process that created them."""

from bioxen_flows.state.store import StateStore, VMRecord, bioxen_home

__all__ = ["StateStore", "VMRecord", "bioxen_home"]
