"""The Prefect global concurrency limit of live VMs (``bioxen-vms`` by default).

A flow holds one slot per VM for as long as its VMs live, taken once for the whole run
(not per task: per-task concurrency calls were what stalled runs with 503s). When all slots
are taken, a run waits for them instead of failing on the owner's quota; the slots show on
the UI's Concurrency page. Where the limit does not exist (the embedded server), flows run
without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bioxen_flows.settings import get_settings

WAIT_SECONDS = 6 * 3600.0  # a run queued longer than this fails (TimeoutError), as it should


@contextmanager
def vm_slots(count: int) -> Iterator[None]:
    """Hold ``count`` slots of the VM limit while the block runs."""
    from prefect.concurrency.sync import concurrency

    with concurrency(get_settings().vm_concurrency_limit, occupy=count, strict=False,
                     timeout_seconds=WAIT_SECONDS, raise_on_lease_renewal_failure=False):
        yield
