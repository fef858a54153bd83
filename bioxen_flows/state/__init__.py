"""Durable VM state: bio-VMs outlive the process that created them.

`StateStore` is the facade callers use; the entity functions it composes live in `vms`
(records and leases), `ledger` (host budget and owners' quotas; an owner is a quota user),
`audit` and `metadata`, each taking a connection from `database.Database.transaction`.
"""

from bioxen_flows.state.audit import (
    AuditEntry,
    AuditListener,
    add_audit_listener,
    remove_audit_listener,
)
from bioxen_flows.state.database import bioxen_home, database_url, dispose_engines
from bioxen_flows.state.ledger import check_owner
from bioxen_flows.state.store import StateStore
from bioxen_flows.state.vms import (
    LEASE_TTL_SECONDS,
    LEASE_WAIT_SECONDS,
    STATES,
    VMRecord,
    new_lease_holder,
    readable,
)

__all__ = [
    "LEASE_TTL_SECONDS",
    "LEASE_WAIT_SECONDS",
    "STATES",
    "AuditEntry",
    "AuditListener",
    "StateStore",
    "VMRecord",
    "add_audit_listener",
    "bioxen_home",
    "check_owner",
    "database_url",
    "dispose_engines",
    "new_lease_holder",
    "readable",
    "remove_audit_listener",
]
