"""The Prefect global concurrency limit of live VMs (``bioxen-vms`` by default).

A flow holds one slot per VM for as long as its VMs live, taken once for the whole run
(not per task: per-task concurrency calls were what stalled runs with 503s). When all slots
are taken, a run waits for them instead of failing on the owner's quota; the slots show on
the UI's Concurrency page. A run with more VMs than the limit takes the whole limit (it
runs alone rather than never). Where the limit does not exist (the embedded server), flows
run without it and make no concurrency calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bioxen_flows.settings import get_settings

WAIT_SECONDS = 6 * 3600.0  # a run queued longer than this fails (TimeoutError), as it should
# The slots' lease, renewed while the run lives: a run killed with SIGKILL frees its slots
# when it lapses. Prefect's default (300 s) held a killed run's slots, and the runs queued
# behind them, for five minutes; 60 s is the shortest the server accepts.
SLOT_LEASE_S = 60.0


def _limit(name: str) -> int | None:
    """The limit's size, or None when it does not exist or is disabled."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
    return limit.limit if limit.active else None


@contextmanager
def vm_slots(count: int) -> Iterator[None]:
    """Hold ``count`` slots of the VM limit (at most all of them) while the block runs."""
    from prefect.concurrency.sync import concurrency

    name = get_settings().vm_concurrency_limit
    size = _limit(name)
    if size is None or count <= 0:
        yield
        return
    with concurrency(name, occupy=min(count, size), strict=False,
                     timeout_seconds=WAIT_SECONDS, lease_duration=SLOT_LEASE_S,
                     raise_on_lease_renewal_failure=False):
        yield
