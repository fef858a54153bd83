"""Which flow run this code runs in, for the layers that may not import Prefect.

The audit log (state) and JSON log lines (logs) record the current flow run. Only the
orchestration layer imports Prefect, so it registers a provider here (reading
``prefect.runtime``) and the lower layers ask `current_flow_run_id`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# The VM label naming the flow run that made a VM (the state store's "owner" is the quota
# user, not this). `bioxen gc`, the teardown hooks, the events and XCP-ng tags read it.
FLOW_RUN_LABEL = "flow_run_id"
NO_RUN = "local"  # the run id of work done outside any flow run

FlowRunIdProvider = Callable[[], object]
_provider: FlowRunIdProvider | None = None


def set_flow_run_id_provider(provider: FlowRunIdProvider | None) -> None:
    """Ask ``provider()`` for the current flow run's id (None or "" outside one); None
    removes it. The orchestration layer sets it when it is imported."""
    global _provider
    _provider = provider


def current_flow_run_id() -> str | None:
    """The current flow run's id: the provider's, else ``PREFECT__FLOW_RUN_ID`` (set in a
    flow-run process), else None."""
    if _provider is not None:
        run_id = _provider()
        if run_id:
            return str(run_id)
    return os.environ.get("PREFECT__FLOW_RUN_ID") or None
