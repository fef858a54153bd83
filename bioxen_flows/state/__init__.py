"""Durable VM state: bio-VMs outlive the process that created them."""

from bioxen_flows.state.store import (
    StateStore,
    VMRecord,
    bioxen_home,
    database_url,
    new_lease_holder,
)

__all__ = ["StateStore", "VMRecord", "bioxen_home", "database_url", "new_lease_holder"]
